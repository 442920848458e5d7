"""Resumable long jobs: each finished work item is appended to a JSON-lines file and reused next run.

A job (a detection benchmark; the utility values of a retraining valuation) names each work item
by a JSON-serializable key. :meth:`Checkpoint.add` appends ``{"key": ..., "value": ...}`` as one
line and flushes it to the operating system before returning, so a job that is interrupted or killed
loses at most the item that was running (a machine that loses power, at most the last second: the
file is synced to disk at most once a second, which keeps cheap items cheap); the next run with the
same checkpoint file skips every item already there. A line cut off
by a crash mid-write has no trailing newline; it is dropped when the file is opened again. The job
removes the file once its final output is written, so a finished job never feeds a later one.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from dataworth.checks import FileFormatError
from dataworth.data import atomic_write, jsonable

SYNC_INTERVAL = 1.0
"""Seconds between syncs of the checkpoint file to disk."""
#: How every line this module writes starts: a cut-off last line of a checkpoint starts so too.
_LINE_START = b'{"key": '


class Checkpoint:
    """Values of finished work items, read from and appended to ``path`` (created on first :meth:`add`)."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self._handle: IO[str] | None = None
        self._synced = time.monotonic()
        self._values: dict[str, Any] = {}
        self._keys: dict[str, Any] = {}  # canonical key -> the key as given
        if self.path.exists():
            self._read()
        #: How many finished items were found when the checkpoint was opened.
        self.resumed = len(self._values)

    def get(self, key: Any) -> Any | None:
        """The value stored for ``key``, or ``None`` when that item has not finished."""
        return self._values.get(_canonical(key))

    def add(self, key: Any, value: Any) -> None:
        """Record a finished item: append its line and flush it (see the module docstring)."""
        line = json.dumps({"key": key, "value": value}, default=jsonable)
        if self._handle is None:
            self._handle = open(self.path, "a", encoding="utf-8")  # kept open across adds; closed by close()
        self._handle.write(line + "\n")
        self._handle.flush()
        if time.monotonic() - self._synced >= SYNC_INTERVAL:
            os.fsync(self._handle.fileno())
            self._synced = time.monotonic()
        canonical = _canonical(key)
        self._values[canonical] = json.loads(line)["value"]
        self._keys[canonical] = key

    def close(self) -> None:
        """Sync and close the file (it stays on disk for the next run)."""
        if self._handle is not None:
            os.fsync(self._handle.fileno())
            self._handle.close()
            self._handle = None

    def remove(self) -> None:
        """Close and delete the file: call once the job's final output has been written."""
        self.close()
        self.path.unlink(missing_ok=True)

    def discard(self, finished: Callable[[Any], bool]) -> None:
        """Drop the items whose key ``finished(key)`` says belong to a job that is done, keeping the others
        (the file may hold several jobs' items); the file is deleted when nothing is left."""
        self.close()
        kept = {canonical: key for canonical, key in self._keys.items() if not finished(key)}
        if not kept:
            self.path.unlink(missing_ok=True)
        elif len(kept) < len(self._keys):
            lines = "".join(json.dumps({"key": key, "value": self._values[c]}, default=jsonable) + "\n" for c, key in kept.items())
            with atomic_write(self.path) as tmp:
                tmp.write_text(lines, encoding="utf-8")
        self._values = {c: self._values[c] for c in kept}
        self._keys = kept

    def _read(self) -> None:
        """Load the file's items; a torn last line is cut off, but only once every complete line has
        proved to be an item (a file that is not a checkpoint is refused and left as it is)."""
        data = self.path.read_bytes()
        complete = data.rfind(b"\n") + 1
        for number, line in enumerate(data[:complete].decode("utf-8", errors="replace").splitlines(), start=1):
            try:
                entry = json.loads(line)
                canonical = _canonical(entry["key"])
                self._values[canonical], self._keys[canonical] = entry["value"], entry["key"]
            except (ValueError, TypeError, KeyError):
                raise FileFormatError(
                    f"{self.path} line {number} is not a checkpoint entry; delete the file to start the job over"
                ) from None
        tail = data[complete:]
        if tail and not tail.startswith(_LINE_START):
            raise FileFormatError(f"{self.path} does not end as a checkpoint does; delete the file to start the job over")
        if tail:  # the last write was cut off: drop it so new lines start clean
            with open(self.path, "r+b") as handle:
                handle.truncate(complete)


def _canonical(key: Any) -> str:
    return json.dumps(key, sort_keys=True, default=jsonable)

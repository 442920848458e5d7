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
from pathlib import Path
from typing import IO, Any

from dataworth.checks import FileFormatError
from dataworth.data import jsonable

SYNC_INTERVAL = 1.0
"""Seconds between syncs of the checkpoint file to disk."""


class Checkpoint:
    """Values of finished work items, read from and appended to ``path`` (created on first :meth:`add`)."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self._handle: IO[str] | None = None
        self._synced = time.monotonic()
        self._values: dict[str, Any] = {}
        if self.path.exists():
            self._values = self._read()
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
        self._values[_canonical(key)] = json.loads(line)["value"]

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

    def _read(self) -> dict[str, Any]:
        data = self.path.read_bytes()
        complete = data.rfind(b"\n") + 1
        if complete < len(data):  # the last write was cut off: drop it so new lines start clean
            with open(self.path, "r+b") as handle:
                handle.truncate(complete)
        values: dict[str, Any] = {}
        for number, line in enumerate(data[:complete].decode("utf-8", errors="replace").splitlines(), start=1):
            try:
                entry = json.loads(line)
                values[_canonical(entry["key"])] = entry["value"]
            except (ValueError, TypeError, KeyError):
                raise FileFormatError(
                    f"{self.path} line {number} is not a checkpoint entry; delete the file to start the job over"
                ) from None
        return values


def _canonical(key: Any) -> str:
    return json.dumps(key, sort_keys=True, default=jsonable)

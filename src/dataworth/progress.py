"""Progress bars for long loops, drawn on stderr so stdout stays clean for results."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TypeVar

from rich.console import Console
from rich.progress import track

T = TypeVar("T")
_STDERR = Console(stderr=True)


def progress_iter(items: Iterable[T], description: str, *, enabled: bool, total: int | None = None) -> Iterator[T]:
    """Iterate ``items``, showing a transient rich progress bar when ``enabled`` and stderr is a terminal
    (``total`` gives the length of an iterator that has none)."""
    if not enabled or not _STDERR.is_terminal:
        yield from items
        return
    yield from track(items, description=description, console=_STDERR, transient=True, total=total)

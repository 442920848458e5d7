"""Wall time and peak resident memory of a call (Linux ``/proc``: torch allocations included)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class Measured(Generic[T]):
    """What a call returned, how long it took, and the process's peak resident memory during it."""

    value: T
    seconds: float
    peak_rss_gib: float
    rss_before_gib: float


def measure(fn: Callable[[], T]) -> Measured[T]:
    """Run ``fn()`` and measure it. The peak is the kernel's high-water mark (VmHWM), reset just
    before the call by writing 5 to /proc/self/clear_refs; it includes everything resident."""
    before = resident_gib("VmRSS")
    with open("/proc/self/clear_refs", "w") as handle:
        handle.write("5")
    start = time.perf_counter()
    value = fn()
    seconds = time.perf_counter() - start
    return Measured(value, seconds, resident_gib("VmHWM"), before)


def resident_gib(field: str = "VmRSS") -> float:
    """``VmRSS`` (now) or ``VmHWM`` (peak since the last reset) from /proc/self/status, in GiB."""
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 2**20
    raise RuntimeError(f"{field} not in /proc/self/status")

"""Wall time and peak resident memory of a call, on any operating system.

On Linux the peak is exact: the kernel's high-water mark of resident memory (VmHWM in
/proc/self/status), reset just before the call by writing 5 to /proc/self/clear_refs; it includes
everything resident (torch allocations too). Where that is not available (macOS, Windows, or a
Linux that refuses the reset) the resident size is sampled by psutil from a background thread every
``SAMPLE_INTERVAL`` seconds while the call runs, so a peak shorter than that interval can be missed.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

import psutil

T = TypeVar("T")
GIB = 2**30
SAMPLE_INTERVAL = 0.005
"""Seconds between samples of the resident size where the kernel's high-water mark cannot be reset."""


@dataclass(frozen=True)
class Measured(Generic[T]):
    """What a call returned, how long it took, and the process's peak resident memory during it.

    ``exact_peak`` tells whether the peak is the kernel's high-water mark (True) or sampled (False).
    """

    value: T
    seconds: float
    peak_rss_gib: float
    rss_before_gib: float
    exact_peak: bool = True


def measure(fn: Callable[[], T]) -> Measured[T]:
    """Run ``fn()`` and measure its wall time and the peak resident memory while it ran."""
    before = resident_gib()
    if _reset_high_water_mark():
        start = time.perf_counter()
        value = fn()
        seconds = time.perf_counter() - start
        return Measured(value, seconds, _linux_high_water_mark_gib(), before)
    sampler = _PeakSampler()
    with sampler:
        start = time.perf_counter()
        value = fn()
        seconds = time.perf_counter() - start
    return Measured(value, seconds, max(sampler.peak, resident_gib()), before, exact_peak=False)


def resident_gib() -> float:
    """The process's resident memory now, in GiB."""
    return psutil.Process().memory_info().rss / GIB


def _reset_high_water_mark() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
    except OSError:  # not Linux, or a kernel/sandbox that does not allow it
        return False
    return _linux_high_water_mark_gib() > 0


def _linux_high_water_mark_gib() -> float:
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024 / GIB
    except OSError:
        pass
    return 0.0


class _PeakSampler:
    """Samples the resident size from a daemon thread while the ``with`` block runs."""

    def __init__(self) -> None:
        self.peak = resident_gib()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> _PeakSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join()

    def _run(self) -> None:
        process = psutil.Process()
        while not self._done.wait(SAMPLE_INTERVAL):
            self.peak = max(self.peak, process.memory_info().rss / GIB)

"""Peak-memory measurement: the kernel's high-water mark on Linux, sampling by psutil elsewhere."""

import numpy as np
import pytest

from dataworth.evaluation import resources


def _allocate_and_release():
    block = np.ones(40 * 2**20)  # 320 MiB, touched
    total = float(block.sum())
    del block
    return total


@pytest.mark.parametrize("high_water_mark", [True, False])
def test_the_peak_of_a_call_that_frees_its_memory_is_seen(monkeypatch, high_water_mark):
    if not high_water_mark:
        monkeypatch.setattr(resources, "_reset_high_water_mark", lambda: False)  # as on macOS or Windows
    elif not resources._reset_high_water_mark():
        pytest.skip("this kernel does not let a process reset its high-water mark")
    run = resources.measure(_allocate_and_release)
    assert run.value == 40 * 2**20 and run.exact_peak is high_water_mark
    assert run.peak_rss_gib - run.rss_before_gib > 0.25
    assert resources.resident_gib() - run.rss_before_gib < 0.1  # and it was released

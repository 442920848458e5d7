"""The built-in demo finds every planted corruption type and writes its report."""

import numpy as np

from dataworth.demo import CORRUPTIONS, corrupted_digits, run_demo


def test_corruptions_are_disjoint_and_sized():
    data = corrupted_digits(seed=0)
    n = len(data["y"])
    for name, fraction in CORRUPTIONS.items():
        assert (data["groups"] == name).sum() == round(fraction * n)
    backdoor = data["groups"] == "backdoor"
    assert (data["y"][backdoor] == 0).all() and (data["images"][backdoor][:, -2:, -2:] == 16).all()


def test_demo_detects_each_corruption(tmp_path):
    outcome = run_demo(tmp_path, seed=0)
    assert set(outcome.auroc) == set(CORRUPTIONS)
    assert min(outcome.auroc.values()) >= 0.95, outcome.auroc
    html = outcome.report.read_text()
    assert html.count("data:image/png;base64,") == 3 and "label flip" in html
    assert all(f"id='{section}'" in html for section in ("histogram", "roc", "lowest"))
    assert np.isfinite(outcome.result.values).all()

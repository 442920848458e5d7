"""The built-in demonstration: find planted label flips, feature noise and a backdoor in digits.

scikit-learn's digits (1,797 8×8 images); 20% held out, stratified and clean, as the reference set.
In the remaining rows, disjoint random subsets get: 10% uniformly flipped labels; 5% Gaussian
feature noise (σ = 2 × each pixel's standard deviation); 3% BadNets-style backdoor (2×2 patch at the
maximum intensity in the bottom-right corner, label set to 0; drawn from rows whose label is not 0).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from dataworth.evaluation.corruptions import add_feature_noise, add_patch_backdoor, flip_labels
from dataworth.evaluation.metrics import detection_auroc
from dataworth.report import write_report
from dataworth.result import ValuationResult
from dataworth.valuation.kairos import Kairos

CORRUPTIONS = {"label flip": 0.10, "feature noise": 0.05, "backdoor": 0.03}
NOISE_SCALE = 2.0
BACKDOOR_TARGET = 0


@dataclass
class DemoOutcome:
    """What the demo measured: AUROC per corruption type, runtime, and where the report is."""

    auroc: dict[str, float]
    counts: dict[str, int]
    seconds: float
    result: ValuationResult
    report: Path


def corrupted_digits(seed: int = 0) -> dict[str, np.ndarray]:
    """Digits split into a clean reference set and a training set with the demo's corruptions.

    Returns arrays ``X, y, images, groups`` (training, ``groups`` naming each row's corruption or
    ``clean``) and ``X_ref, y_ref``.
    """
    digits = load_digits()
    train, ref = train_test_split(np.arange(len(digits.target)), test_size=0.2, stratify=digits.target, random_state=seed)
    images, y = digits.images[train], digits.target[train]
    n = len(train)
    y, flips = flip_labels(y, CORRUPTIONS["label flip"], seed=seed)
    images, y, backdoor = add_patch_backdoor(
        images, y, CORRUPTIONS["backdoor"], target=BACKDOOR_TARGET, seed=seed + 10, eligible=~flips
    )
    X, noise = add_feature_noise(
        images.reshape(n, -1), CORRUPTIONS["feature noise"], scale=NOISE_SCALE, seed=seed + 20, eligible=~(flips | backdoor)
    )
    images = X.reshape(images.shape)
    masks = {"label flip": flips, "feature noise": noise, "backdoor": backdoor}
    groups = np.full(n, "clean", dtype=object)
    for name, mask in masks.items():
        groups[mask] = name
    return {
        "X": X, "y": y, "images": images, "groups": groups.astype(str),
        "X_ref": digits.data[ref], "y_ref": digits.target[ref],
    }


def run_demo(out_dir: str | Path = "dataworth-demo", *, seed: int = 0, progress: bool = False) -> DemoOutcome:
    """Value the corrupted digits with KAIROS, score detection per corruption type, write the report."""
    data = corrupted_digits(seed)
    started = time.perf_counter()
    estimator = Kairos(seed=seed, progress=progress).fit(data["X"], data["y"], reference=(data["X_ref"], data["y_ref"]))
    seconds = time.perf_counter() - started
    estimator.describe_issues()
    groups = data["groups"]
    clean = groups == "clean"
    auroc, counts = {}, {}
    for name in CORRUPTIONS:
        rows = clean | (groups == name)
        auroc[name] = detection_auroc(estimator.values_[rows], groups[rows] == name)
        counts[name] = int((groups == name).sum())
    summary = [{"corruption": k, "rows": str(counts[k]), "AUROC": f"{auroc[k]:.3f}"} for k in CORRUPTIONS]
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    report = write_report(
        out_dir / "report.html", estimator.result_, groups=groups, images=data["images"], labels=data["y"],
        summary=summary, title="dataworth demo: KAIROS on corrupted digits",
    )
    return DemoOutcome(auroc, counts, seconds, estimator.result_, report)

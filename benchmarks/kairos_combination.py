"""Evidence for KAIROS's defaults: how the two terms are combined, the bandwidth, and the label kernel's
bandwidth.

Decided on data in neither the detection grid (benchmarks/detect_all.py: digits, breast_cancer, MNIST,
Fashion-MNIST, BBC) nor the demo: wine, iris, and two seeded ``make_classification`` sets (5 classes in
20 dimensions; 8 classes in 40, harder). digits and breast_cancer are shown beside them as a check that
the choice holds on larger data; they did not decide it. Corruptions through the same task builder as
the grid, 3 seeds each, including the heavy label noise (30%, 40%) where the earlier default failed.

Run:  .venv/bin/python benchmarks/kairos_combination.py     (about 4 minutes; writes results/kairos_combination.md)
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.datasets import make_classification

from dataworth import Kairos
from dataworth.evaluation.datasets import EvaluationSet, load_evaluation_set
from dataworth.evaluation.detection import make_task
from dataworth.evaluation.metrics import detection_auroc
from dataworth.kernels import median_bandwidth
from publish import publish

DECIDING = ("wine", "iris", "synthetic-5x20", "synthetic-8x40")
CHECKS = ("breast_cancer", "digits")
CORRUPTIONS = ("label-flip:0.1", "label-flip:0.3", "label-flip:0.4", "pair-flip:0.3", "feature-noise:0.1",
               "backdoor:0.05", "duplicates:0.1")
RULES = {
    "calibrated q-values (default)": dict(combine="calibrated"),
    "worst of two robust z (earlier default)": dict(combine="worst"),
    "robust z blend λ=0.5": dict(combine="zscore", feature_weight=0.5),
    "feature term only": dict(combine="zscore", feature_weight=1.0),
    "label residual only": dict(combine="zscore", feature_weight=0.0),
    "paper (logistic, raw λ=0.97)": dict(label_model="logistic", combine="raw", feature_weight=0.97),
}
BANDWIDTH_FACTORS = (0.25, 0.5, 1.0, 2.0)


def synthetic(classes: int, dims: int, seed: int) -> EvaluationSet:
    """``make_classification`` (10 informative features, 2 clusters per class, 1,500 rows), standardized."""
    X, y = make_classification(n_samples=1500, n_features=dims, n_informative=10, n_classes=classes,
                               n_clusters_per_class=2, class_sep=1.5, random_state=seed)
    mean, std = X.mean(axis=0), X.std(axis=0)
    return EvaluationSet(name=f"synthetic-{classes}x{dims}", X=(X - mean) / std, y=y, raw=X, view="table",
                         featurize=lambda table: (np.asarray(table) - mean) / std,
                         confusions=tuple(zip(range(0, classes, 2), range(1, classes, 2), strict=False)))


def load(name: str) -> EvaluationSet:
    return {"synthetic-5x20": lambda: synthetic(5, 20, 1), "synthetic-8x40": lambda: synthetic(8, 40, 2)}.get(
        name, lambda: load_evaluation_set(name))()


def tasks(datasets):
    for dataset in datasets:
        data = load(dataset)
        for corruption in CORRUPTIONS:
            kind, fraction = corruption.split(":")
            for seed in range(3):
                yield corruption, make_task(data, kind, float(fraction), seed=seed, max_train=2000)


def rule_table(datasets, factor: float) -> dict[str, dict[str, float]]:
    """rule -> corruption -> mean AUROC over datasets and seeds, at ``factor`` × the median distance."""
    scores: dict[str, dict[str, list[float]]] = {name: {c: [] for c in CORRUPTIONS} for name in RULES}
    for corruption, task in tasks(datasets):
        median = median_bandwidth(torch.from_numpy(task.X))
        for name, params in RULES.items():
            values = Kairos(bandwidth=factor * median, **params).fit(task.X, task.y, reference=(task.X_ref, task.y_ref)).values_
            scores[name][corruption].append(detection_auroc(values, task.corrupted))
    return {name: {c: float(np.mean(v)) for c, v in per.items()} for name, per in scores.items()}


def label_bandwidth_table(datasets) -> dict[str, dict[str, float]]:
    """The label term alone at each bandwidth factor, and at the factor with the smallest closed-form
    leave-one-out error of the kernel ridge label model on the reference set (chosen per task)."""
    names = [f"{f}× median" for f in BANDWIDTH_FACTORS] + ["chosen by reference LOO error"]
    scores: dict[str, dict[str, list[float]]] = {name: {c: [] for c in CORRUPTIONS} for name in names}
    for corruption, task in tasks(datasets):
        median = median_bandwidth(torch.from_numpy(task.X))
        fits = [Kairos(bandwidth=f * median).fit(task.X, task.y, reference=(task.X_ref, task.y_ref)) for f in BANDWIDTH_FACTORS]
        aurocs = [detection_auroc(fit.term_values("label"), task.corrupted) for fit in fits]
        chosen = int(np.argmin([np.mean(fit.reference_residuals_**2) for fit in fits]))
        for name, auroc in zip(names, [*aurocs, aurocs[chosen]], strict=True):
            scores[name][corruption].append(auroc)
    return {name: {c: float(np.mean(v)) for c, v in per.items()} for name, per in scores.items()}


def table_lines(title: str, make_table) -> list[str]:
    lines = ["", f"## {title}", "", "| setting | data | " + " | ".join(CORRUPTIONS) + " | mean | worst |",
             "|---|---|" + "---|" * (len(CORRUPTIONS) + 2)]
    for label, datasets in (("wine+iris+synthetic (decides)", DECIDING), ("breast_cancer+digits (check)", CHECKS)):
        for name, row in make_table(datasets).items():
            cells = " | ".join(f"{row[c]:.3f}" for c in CORRUPTIONS)
            lines.append(f"| {name} | {label} | {cells} | {np.mean(list(row.values())):.3f} | {min(row.values()):.3f} |")
    return lines


def main() -> None:
    lines = ["Reproduce: .venv/bin/python benchmarks/kairos_combination.py",
             "AUROC of finding the corrupted rows from low values, mean over datasets and 3 seeds; training rows ≤ 2,000."]
    lines += table_lines("Combination rule, bandwidth 0.5× median", lambda d: rule_table(d, 0.5))
    lines += table_lines("Combination rule, bandwidth 1.0× median", lambda d: rule_table(d, 1.0))
    lines += table_lines("Label kernel bandwidth: the label term alone", label_bandwidth_table)
    publish("kairos_combination.md", lines)


if __name__ == "__main__":
    main()

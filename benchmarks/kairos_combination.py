"""Evidence for KAIROS's defaults: how the two terms are combined, and the kernel bandwidth.

Decided on wine and iris, which are in neither the detection grid (benchmarks/detect_all.py: digits,
breast_cancer, MNIST, BBC) nor the demo. digits and breast_cancer are shown beside them as a check
that the choice holds on larger data; they did not decide it. Every corruption of the detection
benchmark (label flips 10%, class-confusion flips 10%, feature noise 5%, backdoor 5%, conflicting
near-duplicates 10%) with 3 seeds each, through the same task builder as the grid.

Run:  .venv/bin/python benchmarks/kairos_combination.py     (about 2 minutes; writes results/kairos_combination.md)
"""

from __future__ import annotations

import numpy as np
import torch

from dataworth import Kairos
from dataworth.evaluation.datasets import load_evaluation_set
from dataworth.evaluation.detection import make_task
from dataworth.evaluation.metrics import detection_auroc
from dataworth.kernels import median_bandwidth
from publish import publish

DECIDING = ("wine", "iris")
CHECKS = ("breast_cancer", "digits")
CORRUPTIONS = {"label-flip": 0.1, "pair-flip": 0.1, "feature-noise": 0.05, "backdoor": 0.05, "duplicates": 0.1}
RULES = {
    "feature term only": dict(combine="zscore", feature_weight=1.0),
    "label residual only": dict(combine="zscore", feature_weight=0.0),
    "robust z blend λ=0.5": dict(combine="zscore", feature_weight=0.5),
    "worst of two robust z": dict(combine="worst"),
    "paper (logistic, raw λ=0.97)": dict(label_model="logistic", combine="raw", feature_weight=0.97),
}
BANDWIDTH_FACTORS = (0.25, 0.5, 1.0, 2.0)


def auroc_table(configs: dict[str, tuple[dict, float]], datasets) -> dict[str, dict[str, float]]:
    """config -> corruption -> mean AUROC over datasets and 3 seeds; config = (Kairos params, bandwidth factor)."""
    scores: dict[str, dict[str, list[float]]] = {name: {c: [] for c in CORRUPTIONS} for name in configs}
    for dataset in datasets:
        data = load_evaluation_set(dataset)
        for kind, fraction in CORRUPTIONS.items():
            for seed in range(3):
                task = make_task(data, kind, fraction, seed=seed)
                median = median_bandwidth(torch.from_numpy(task.X))
                for name, (params, factor) in configs.items():
                    values = Kairos(bandwidth=factor * median, **params).fit(task.X, task.y, reference=(task.X_ref, task.y_ref)).values_
                    scores[name][kind].append(detection_auroc(values, task.corrupted))
    return {name: {c: float(np.mean(v)) for c, v in per.items()} for name, per in scores.items()}


def table_lines(title: str, configs: dict[str, tuple[dict, float]]) -> list[str]:
    lines = ["", f"## {title}", "", "| setting | data | " + " | ".join(CORRUPTIONS) + " | mean | worst |",
             "|---|---|" + "---|" * (len(CORRUPTIONS) + 2)]
    for label, datasets in (("wine+iris (decides)", DECIDING), ("breast_cancer+digits (check)", CHECKS)):
        for name, row in auroc_table(configs, datasets).items():
            cells = " | ".join(f"{row[c]:.3f}" for c in CORRUPTIONS)
            lines.append(f"| {name} | {label} | {cells} | {np.mean(list(row.values())):.3f} | {min(row.values()):.3f} |")
    return lines


def main() -> None:
    lines = ["Reproduce: .venv/bin/python benchmarks/kairos_combination.py",
             "AUROC of finding the corrupted rows from low values, mean over datasets and 3 seeds."]
    for factor in (1.0, 0.5):
        lines += table_lines(f"Combination rule, bandwidth {factor}× median", {rule: (params, factor) for rule, params in RULES.items()})
    lines += table_lines("Bandwidth, worst-of-two rule", {f"{f}× median": (RULES["worst of two robust z"], f) for f in BANDWIDTH_FACTORS})
    publish("kairos_combination.md", lines)


if __name__ == "__main__":
    main()

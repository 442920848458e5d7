"""Evidence for KAIROS's default combination rule: AUROC of finding corrupted rows, per rule.

Data kept apart from the demo (digits, split seed 0) and its test: breast_cancer, wine and iris
(standardized with statistics of the clean reference split) and digits with split seeds 1 and 2.
Each set: 20% stratified clean reference; in the rest, 10% uniform label flips and 5% Gaussian feature
noise (σ = 2 × per-feature std) on disjoint rows. AUROC per corruption type (that type vs clean rows),
mean over datasets; 3 corruption seeds each.

Run:  .venv/bin/python benchmarks/kairos_combination.py     (about 10 s)
"""

from __future__ import annotations

import numpy as np
from sklearn.datasets import load_breast_cancer, load_digits, load_iris, load_wine
from sklearn.model_selection import train_test_split

from dataworth import Kairos
from dataworth.evaluation.corruptions import add_feature_noise, flip_labels, sample_rows
from dataworth.evaluation.metrics import detection_auroc

RULES = {
    "feature term only": dict(combine="zscore", feature_weight=1.0),
    "label residual only": dict(combine="zscore", feature_weight=0.0),
    "robust z-score blend, λ=0.5": dict(combine="zscore", feature_weight=0.5),
    "robust z-score blend, λ=0.8": dict(combine="zscore", feature_weight=0.8),
    "worst of the two robust z-scores (default)": dict(combine="worst"),
    "paper: logistic residual, raw λ=0.97": dict(label_model="logistic", combine="raw", feature_weight=0.97),
}
# name -> (loader, split seed, standardize features)
DATASETS = {
    "breast_cancer": (load_breast_cancer, 0, True),
    "wine": (load_wine, 0, True),
    "iris": (load_iris, 0, True),
    "digits (split 1)": (load_digits, 1, False),
    "digits (split 2)": (load_digits, 2, False),
}
CORRUPTIONS = ("label flip", "feature noise")


def corrupted(loader, split_seed: int, standardize: bool, seed: int):
    X, y = loader(return_X_y=True)
    train, ref = train_test_split(np.arange(len(y)), test_size=0.2, stratify=y, random_state=split_seed)
    if standardize:
        X = (X - X[ref].mean(0)) / (X[ref].std(0) + 1e-12)
    n = len(train)
    flips = sample_rows(n, 0.10, seed=seed)
    noise = sample_rows(n, 0.05, seed=seed + 1, eligible=~flips)
    y_train = flip_labels(y[train], flips, seed=seed)
    X_train = add_feature_noise(X[train], noise, scale=2.0, seed=seed)
    return X_train, y_train, X[ref], y[ref], {"label flip": flips, "feature noise": noise}


def main() -> None:
    scores = {rule: {c: [] for c in CORRUPTIONS} for rule in RULES}
    for loader, split_seed, standardize in DATASETS.values():
        per_set = {rule: {c: [] for c in CORRUPTIONS} for rule in RULES}
        for seed in range(3):
            X, y, Z, y_ref, masks = corrupted(loader, split_seed, standardize, seed)
            clean = ~(masks["label flip"] | masks["feature noise"])
            for rule, params in RULES.items():
                values = Kairos(**params).fit(X, y, reference=(Z, y_ref)).values_
                for c in CORRUPTIONS:
                    rows = clean | masks[c]
                    per_set[rule][c].append(detection_auroc(values[rows], masks[c][rows]))
        for rule in RULES:
            for c in CORRUPTIONS:
                scores[rule][c].append(np.mean(per_set[rule][c]))
    print("Reproduce: .venv/bin/python benchmarks/kairos_combination.py\n")
    print("AUROC, label flips / feature noise, mean of 3 seeds\n")
    print("| dataset | " + " | ".join(RULES) + " |")
    print("|---" * (len(RULES) + 1) + "|")
    for i, name in enumerate(DATASETS):
        cells = [f"{scores[r]['label flip'][i]:.3f} / {scores[r]['feature noise'][i]:.3f}" for r in RULES]
        print(f"| {name} | " + " | ".join(cells) + " |")
    print("\nMean over datasets\n\n| rule | label flips 10% | feature noise 5% | worse of the two |\n|---|---|---|---|")
    for rule in RULES:
        means = [np.mean(scores[rule][c]) for c in CORRUPTIONS]
        print(f"| {rule} | {means[0]:.3f} | {means[1]:.3f} | {min(means):.3f} |")


if __name__ == "__main__":
    main()

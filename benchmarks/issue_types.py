"""Are the issue types right? A planted mix of four corruptions, each with its true type.

For each dataset and seed: 20% of the rows form the clean reference set; of up to 2,000 training rows,
5% get another label (``label``) and 5% Gaussian noise of 2 × each feature's standard deviation
(``feature-outlier``); then near-copies (noise 0.05 × std) of 5% of the clean rows with another label
(``near-duplicate``, of the copied row) and 5% rows of another dataset with random labels
(``out-of-distribution``: Fashion-MNIST for the digit sets, see dataworth.evaluation.datasets) are
appended. ``Kairos().describe_issues()`` (q ≤ 0.1) types the flagged rows; the table gives, per true
type, how many rows were flagged and the share of those given the right type, plus how often a
near-duplicate names the row it was copied from. Last, the cost of the types: ``describe_issues()``
against the ``fit`` before it, in the same process, on clustered float32 data (N = 20,000, M = 5,000).

Run:  .venv/bin/python benchmarks/issue_types.py        (about 3 minutes; writes results/issue_types.md)
"""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

from dataworth import Kairos
from dataworth.evaluation.corruptions import _other_labels
from dataworth.evaluation.datasets import load_evaluation_set
from publish import publish

DATASETS = ("mnist-effnet", "digits")
TYPES = ("label", "feature-outlier", "near-duplicate", "out-of-distribution")
SHARE = 0.05


def planted_mix(name: str, seed: int):
    """Training rows with the four corruptions, the clean reference set, each row's true type, and the
    copied row of each near-duplicate."""
    data = load_evaluation_set(name)
    train, ref = train_test_split(np.arange(len(data.y)), test_size=0.2, stratify=data.y, random_state=seed)
    train = train[:2000]
    X, y = np.array(data.X[train], dtype=np.float64), data.y[train].copy()
    n, classes, rng = len(y), np.unique(data.y), np.random.default_rng(seed)
    k = round(SHARE * n)
    order = rng.permutation(n)
    flipped, noisy, copied = order[:k], order[k:2 * k], order[2 * k:3 * k]
    truth = np.full(n, "", dtype=object)
    y[flipped] = _other_labels(y[flipped], classes, rng)
    truth[flipped] = "label"
    X[noisy] += rng.normal(size=(k, X.shape[1])) * 2.0 * X.std(axis=0)
    truth[noisy] = "feature-outlier"
    copies = X[copied] + rng.normal(size=(k, X.shape[1])) * 0.05 * X.std(axis=0)
    pool = data.outliers()
    foreign = pool[rng.choice(len(pool), size=k, replace=False)]
    X = np.vstack([X, copies, foreign])
    y = np.concatenate([y, _other_labels(y[copied], classes, rng), rng.choice(classes, size=k)])
    truth = np.concatenate([truth, ["near-duplicate"] * k, ["out-of-distribution"] * k]).astype(str)
    return X, y, data.X[ref], data.y[ref], truth, copied


def main() -> None:
    rows, confusion = [], []
    for name in DATASETS:
        for seed in range(3):
            X, y, Z, y_ref, truth, copied = planted_mix(name, seed)
            issues = Kairos().fit(X, y, reference=(Z, y_ref)).describe_issues()
            assigned = issues["issue"].to_numpy()
            flagged = assigned != ""
            for kind in TYPES:
                rows.append({"dataset": name, "seed": seed, "type": kind, "rows": int((truth == kind).sum()),
                             "flagged": int((flagged & (truth == kind)).sum()),
                             "right": int((assigned == kind)[truth == kind].sum())})
            rows.append({"dataset": name, "seed": seed, "type": "clean", "rows": int((truth == "").sum()),
                         "flagged": int((flagged & (truth == "")).sum()), "right": 0})
            confusion.append(pd.crosstab(pd.Series(truth[flagged], name="true"), pd.Series(assigned[flagged], name="assigned")).assign(dataset=name))
            found = assigned[truth == "near-duplicate"] == "near-duplicate"
            rows.append({"dataset": name, "seed": seed, "type": "duplicate_of right", "rows": int(found.sum()), "flagged": 0,
                         "right": int((issues["duplicate_of"].to_numpy()[truth == "near-duplicate"][found] == copied[found]).sum())})
    table = pd.DataFrame(rows).groupby(["dataset", "type"], sort=False)[["rows", "flagged", "right"]].sum().reset_index()
    lines = ["# Issue types on a planted mix", "", "Reproduce: `.venv/bin/python benchmarks/issue_types.py`. 3 seeds summed; "
             "5% of the training rows of each corruption (see the script's docstring); flagged = q ≤ 0.1.", "",
             "| dataset | true type | rows | flagged | right type among flagged |", "|---|---|---|---|---|"]
    for r in table.itertuples():
        if r.type == "clean":
            lines.append(f"| {r.dataset} | clean (flagged by mistake) | {r.rows} | {r.flagged} | |")
        elif r.type == "duplicate_of right":
            lines.append(f"| {r.dataset} | near-duplicate names its source row | {r.rows} | | {r.right / max(r.rows, 1):.1%} |")
        else:
            lines.append(f"| {r.dataset} | {r.type} | {r.rows} | {r.flagged} | {r.right / max(r.flagged, 1):.1%} |")
    for name in DATASETS:
        typed = table[(table.dataset == name) & table.type.isin(TYPES)]
        lines.append(f"\n{name}: right type for {typed.right.sum() / typed.flagged.sum():.1%} of the flagged corrupted rows.")
    merged = pd.concat(confusion).fillna(0).groupby(["dataset", "true"]).sum().astype(int)
    assigned_types = [c for c in ("", *TYPES) if c in merged.columns]
    lines += ["", "## Flagged rows: true type (rows) by assigned type (columns)", "",
              "| dataset | true type | " + " | ".join(t or "clean" for t in assigned_types) + " |",
              "|---|---|" + "---|" * len(assigned_types)]
    for (dataset, true), counts in merged.iterrows():
        lines.append(f"| {dataset} | {true or 'clean'} | " + " | ".join(str(counts[t]) for t in assigned_types) + " |")
    lines += ["", "## Cost", "", "| rows × features | fit | describe_issues | ratio |", "|---|---|---|---|"]
    for dims in (64, 256):
        fit, issues = cost(20_000, dims)
        lines.append(f"| 20,000 × {dims} | {fit:.2f} s | {issues:.2f} s | {issues / fit:.2f} |")
    publish("issue_types.md", lines)


def cost(n: int, dims: int) -> tuple[float, float]:
    """Seconds of ``fit`` and of ``describe_issues`` on 10 Gaussian classes (M = n / 4)."""
    rng = np.random.default_rng(0)
    centers = rng.normal(scale=2.0, size=(10, dims)).astype(np.float32)
    y, y_ref = rng.integers(0, 10, n), rng.integers(0, 10, n // 4)
    X = centers[y] + rng.standard_normal((n, dims), dtype=np.float32)
    Z = centers[y_ref] + rng.standard_normal((n // 4, dims), dtype=np.float32)
    started = time.perf_counter()
    est = Kairos().fit(X, y, reference=(Z, y_ref))
    fitted = time.perf_counter()
    est.describe_issues()
    return fitted - started, time.perf_counter() - fitted


if __name__ == "__main__":
    main()

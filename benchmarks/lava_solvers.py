"""Which LAVA solver finds corrupted rows: exact EMD, converged Sinkhorn, or annealed (GeomLoss-style) Sinkhorn.

LAVA's values are the calibrated gradient of the OT dual, so they depend on *which* dual the solver
returns. The reference implementation (LAVA's code and OpenDataVal, both through OTDD → GeomLoss) runs
an ε-scaling Sinkhorn with a fixed schedule, ~10 updates, not to convergence. This script compares,
on the detection grid's datasets and corruptions (1 seed, training sets ≤ 1,000 rows to keep the
converged Sinkhorn affordable), the AUROC of:
  exact       ot.emd (network simplex), label_weight 1
  sinkhorn    converged log-domain Sinkhorn, ε = 0.1 × mean feature cost, label_weight 1
  annealed    ε-scaling Sinkhorn down to ε = 0.1 / 0.01 × mean feature cost, label_weight 1 and 0.5
              (0.5 is the weight OTDD's cost effectively gives the label term: it divides a W₂²
              computed with the cost ||·||²/2 by p = 2 again)

Run:  .venv/bin/python benchmarks/lava_solvers.py       (writes benchmarks/results/lava_solvers.md)
"""

from __future__ import annotations

import sys
import time

import pandas as pd

from dataworth import Lava
from dataworth.evaluation.datasets import load_evaluation_set
from dataworth.evaluation.detection import make_task, parse_corruption
from dataworth.evaluation.metrics import detection_auroc
from publish import publish

DATASETS = ("digits", "breast_cancer", "mnist-effnet", "bbc-minilm")
CORRUPTIONS = ("label-flip:0.1", "label-flip:0.3", "pair-flip:0.1", "feature-noise:0.05", "backdoor:0.05", "duplicates:0.1")
VARIANTS = {
    "exact": dict(solver="exact"),
    "sinkhorn ε=0.1": dict(solver="sinkhorn", entropic_reg=0.1),
    "annealed ε=0.1": dict(solver="annealed", entropic_reg=0.1),
    "annealed ε=0.01": dict(solver="annealed", entropic_reg=0.01),
    "annealed ε=0.01, λ=0.5": dict(solver="annealed", entropic_reg=0.01, label_weight=0.5),
}
MAX_TRAIN = 1000


def main() -> None:
    rows = []
    for name in DATASETS:
        data = load_evaluation_set(name)
        for corruption in CORRUPTIONS:
            kind, fraction = parse_corruption(corruption)
            task = make_task(data, kind, fraction, seed=0, max_train=MAX_TRAIN)
            for variant, params in VARIANTS.items():
                start = time.perf_counter()
                values = Lava(**params).fit(task.X, task.y, reference=(task.X_ref, task.y_ref)).values_
                seconds = time.perf_counter() - start
                rows.append({"dataset": name, "corruption": corruption, "variant": variant,
                             "auroc": detection_auroc(values, task.corrupted), "seconds": seconds})
            print(name, corruption, file=sys.stderr, flush=True)
    table = pd.DataFrame(rows).pivot_table(index=["dataset", "corruption"], columns="variant", values="auroc", sort=False)
    table = table[list(VARIANTS)]
    seconds = pd.DataFrame(rows).groupby("variant")["seconds"].mean()[list(VARIANTS)]
    lines = ["# LAVA: which solver's dual finds corrupted rows", "",
             "Reproduce: `.venv/bin/python benchmarks/lava_solvers.py`. AUROC, seed 0, training rows ≤ "
             f"{MAX_TRAIN}; ε relative to the mean squared feature distance; λ = label_weight.", "",
             "| dataset | corruption | " + " | ".join(VARIANTS) + " |", "|---|---|" + "---|" * len(VARIANTS)]
    for (dataset, corruption), row in table.iterrows():
        lines.append(f"| {dataset} | {corruption} | " + " | ".join(f"{v:.3f}" for v in row) + " |")
    lines.append("| **mean** | | " + " | ".join(f"**{v:.3f}**" for v in table.mean()) + " |")
    lines.append("| seconds (mean) | | " + " | ".join(f"{v:.2f}" for v in seconds) + " |")
    publish("lava_solvers.md", lines)


if __name__ == "__main__":
    main()

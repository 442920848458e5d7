"""Mislabel detection with influence functions: every solver, self-influence and test-loss influence, beside
KAIROS and KNN-Shapley -> benchmarks/results/influence_detection.md.

digits (raw 8×8 pixels, standardized; 1,000 training rows) with 10% of the training labels flipped uniformly, 3 seeds; the built-in
MLP (64→64 tanh→10, mean cross-entropy + (10⁻³/2)‖θ‖², full-batch L-BFGS to ‖∇R‖ ≈ 10⁻⁷) is trained on the
corrupted training set; damping δ = 10⁻³ (GGN). "if-SOLVER" ranks rows by their influence on the mean loss of the
clean reference set (low = harmful), "if-SOLVER:self" by −self-influence (low = the model bends for the row).
Times include training the MLP (~5 s) and, for :self, the n solves.

Run:  .venv/bin/python benchmarks/influence_detection.py     (an interrupted run resumes)
"""

from __future__ import annotations

import sys
import time

import pandas as pd

from dataworth.checkpoint import Checkpoint
from dataworth.evaluation.datasets import load_evaluation_set
from dataworth.evaluation.detection import run_detection, summarize
from publish import RESULTS, publish

CORRUPTION = "label-flip:0.1"
#: Training rows (before the flips); CG, LiSSA and ASTRA need a full-data curvature product per iteration for
#: every right-hand side (n of them for self-influence), so their iterations are capped (SOLVERS).
MAX_TRAIN = 1000
SEEDS = 3
SOLVERS = {
    "explicit": {},
    "cg": {"tol": 1e-5, "max_iter": 30},
    "lissa": {"depth": 30, "batch_size": 128},
    "arnoldi": {"rank": 100},
    "kfac": {},
    "ekfac": {},
    "astra": {"iterations": 5},
}
METHOD_PARAMS: dict[str, dict] = {}
VARIANTS: dict[str, str] = {}
for solver, options in SOLVERS.items():
    for label, target in ((f"if-{solver}", "influence"), (f"if-{solver}:self", "influence:self")):
        METHOD_PARAMS[label] = {"solver": solver, "solver_options": options}
        VARIANTS[label] = target
for label, target in (("rif-ekfac", "rif"), ("rif-ekfac:self", "rif:self")):
    METHOD_PARAMS[label] = {"solver": "ekfac"}
    VARIANTS[label] = target
METHODS = (*VARIANTS, "kairos", "knn-shapley")


def main() -> None:
    checkpoint = Checkpoint(RESULTS / "influence_detection.partial.jsonl")
    if checkpoint.resumed:
        print(f"resuming: {checkpoint.resumed} finished valuations in {checkpoint.path}", file=sys.stderr)
    started = time.perf_counter()
    results = run_detection(load_evaluation_set("digits"), CORRUPTION, METHODS, seeds=SEEDS, max_train=MAX_TRAIN, method_params=METHOD_PARAMS,
                            variants=VARIANTS, checkpoint=checkpoint)
    print(f"{time.perf_counter() - started:.0f} s", file=sys.stderr)
    publish("influence_detection.md", render(results).splitlines())
    checkpoint.remove()


def render(results: pd.DataFrame) -> str:
    summary = summarize(results).set_index(("method", ""))
    lines = [
        "# Mislabel detection with influence functions (digits, 10% flipped labels)",
        "",
        "Reproduce: `.venv/bin/python benchmarks/influence_detection.py`.",
        f"AUROC / AUPRC / detection rate of finding the flipped rows from low values, mean ± std over {SEEDS} seeds, {MAX_TRAIN} training rows; seconds per",
        "valuation (training the built-in MLP included). Solver options: "
        + "; ".join(f"{s} {o or 'defaults'}" for s, o in SOLVERS.items()) + ".",
        "",
        "| method | AUROC | AUPRC | detection rate | seconds |",
        "|---|---|---|---|---|",
    ]
    for method in METHODS:
        row = summary.loc[method]
        lines.append(f"| {method} | {row[('auroc', 'mean')]:.3f} ± {row[('auroc', 'std')]:.3f} | {row[('auprc', 'mean')]:.3f} | "
                     f"{row[('detection_rate', 'mean')]:.3f} | {row[('seconds', 'mean')]:.1f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()

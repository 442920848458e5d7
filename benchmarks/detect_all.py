"""The full detection grid: datasets × corruptions × methods × 3 seeds -> benchmarks/results/detection.md.

Datasets: digits (raw pixels), breast_cancer (tabular, binary), mnist-effnet and fashion-effnet
(EfficientNet-Lite0 image embeddings), bbc-minilm (MiniLM text embeddings); training sets capped at
2,000 rows. The embedded sets need the optional packages in the README ("Benchmarks") and
`make bench-data`; their embeddings are cached after the first run.

Corruptions at several rates: uniform label flips; confusion-based flips (to an out-of-fold model's
second choice, preferring small margins); class-pair flips (breast_cancer has one pair); one annotator
who labels fraction/0.3 of the rows and gets 30% of them wrong, always to the class most confused with
the true one; Gaussian feature noise (2 × the feature's std); backdoors (a pixel patch, a feature
trigger, or a token in the text before embedding); near-duplicates with conflicting labels; rows
of another distribution (see dataworth.evaluation.datasets).

Methods at their defaults (cleanlab and Datalab with the standardized logistic model;
cleanlab-knn is cleanlab with 10-NN probabilities; kairos-feature and kairos-label rank by one
KAIROS term alone), except Data-OOB with 50 trees instead of 200 (at 200 it takes ~2 minutes per
valuation on 2,000 × 1,280 MNIST embeddings; with 50 its AUROC on digits label flips moves by < 0.005).
Peers are every method that is not a KAIROS one.

Run:  .venv/bin/python benchmarks/detect_all.py            (about 3 hours on 2 cores; an interrupted run resumes)
      .venv/bin/python benchmarks/detect_all.py --datasets digits --corruptions ood:0.1
                                                           (a part of the grid: its table is printed, not written)
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence

import pandas as pd

from dataworth.checkpoint import Checkpoint
from dataworth.checks import InputError
from dataworth.data import atomic_write
from dataworth.evaluation.datasets import load_evaluation_set
from dataworth.evaluation.detection import parse_corruption, run_detection, summarize
from publish import RESULTS, publish

DATASETS = ("digits", "breast_cancer", "mnist-effnet", "bbc-minilm", "fashion-effnet")
CORRUPTIONS = (
    "label-flip:0.1", "label-flip:0.2", "label-flip:0.3", "label-flip:0.4",
    "confusion-flip:0.1", "confusion-flip:0.2", "confusion-flip:0.3", "confusion-flip:0.4",
    "pair-flip:0.1", "pair-flip:0.3", "annotator:0.1", "annotator:0.2",
    "feature-noise:0.1", "feature-noise:0.3", "backdoor:0.05", "backdoor:0.1",
    "duplicates:0.1", "duplicates:0.3", "ood:0.1", "ood:0.3",
)
METHODS = ("kairos", "kairos-feature", "kairos-label", "lava", "knn-shapley", "data-oob", "cleanlab", "cleanlab-knn", "datalab")
VARIANTS = {"kairos-feature": "kairos:feature", "kairos-label": "kairos:label", "cleanlab-knn": "cleanlab"}
PEERS = tuple(m for m in METHODS if not m.startswith("kairos"))
MAX_TRAIN = 2000
SEEDS = 3
METHOD_PARAMS = {"data-oob": {"n_estimators": 50}, "cleanlab-knn": {"model": "knn"}}
#: A cell lists KAIROS as behind when its mean AUROC is more than this below the best peer's.
BEHIND = 0.01


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="The detection grid; with --datasets or --corruptions, a part of it.")
    parser.add_argument("--datasets", nargs="+", default=DATASETS, choices=DATASETS, metavar="NAME",
                        help=f"datasets to run (default: all of {', '.join(DATASETS)})")
    parser.add_argument("--corruptions", nargs="+", default=CORRUPTIONS, type=_corruption, metavar="KIND:FRACTION",
                        help="corruptions to run, e.g. confusion-flip:0.2 ood:0.1 (default: the grid's)")
    args = parser.parse_args(argv)
    full = set(args.datasets) == set(DATASETS) and set(args.corruptions) == set(CORRUPTIONS)
    RESULTS.mkdir(exist_ok=True)
    checkpoint = Checkpoint(RESULTS / "detection.partial.jsonl")  # an interrupted run (or a part run) is reused from here
    if checkpoint.resumed:
        print(f"resuming: {checkpoint.resumed} finished valuations in {checkpoint.path}", file=sys.stderr)
    frames = []
    for name in args.datasets:
        data = load_evaluation_set(name)
        for corruption in args.corruptions:
            started = time.perf_counter()
            frames.append(run_detection(data, corruption, METHODS, seeds=SEEDS, max_train=MAX_TRAIN,
                                        method_params=METHOD_PARAMS, variants=VARIANTS, checkpoint=checkpoint))
            print(f"{name} {corruption}: {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)
    results = pd.concat(frames, ignore_index=True)
    if not full:
        checkpoint.close()
        print(render(results))
        print(f"a part of the grid: {RESULTS / 'detection.md'} is left as it was; its valuations stay in {checkpoint.path} "
              "for the full run", file=sys.stderr)
        return
    with atomic_write(RESULTS / "detection.json") as tmp:
        results.to_json(tmp, orient="records", indent=1)
    publish("detection.md", render(results).splitlines())
    checkpoint.remove()


def _corruption(spec: str) -> str:
    """``spec`` if :func:`parse_corruption` accepts it; argparse reports its message otherwise."""
    try:
        parse_corruption(spec)
    except InputError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return spec


def render(results: pd.DataFrame) -> str:
    """Markdown: per-cell AUROC (mean ± std over seeds) with the best peer in bold and KAIROS's margin
    to it, the cells where KAIROS is behind, and each method's means over the cells run."""
    summary = summarize(results)
    lines = [
        "# Detection benchmark",
        "",
        "Reproduce: `.venv/bin/python benchmarks/detect_all.py` (writes this file and detection.json).",
        f"AUROC of finding the corrupted rows from low values; mean ± std over {SEEDS} seeds; training rows ≤ {MAX_TRAIN}",
        "before rows are added (duplicates, out-of-distribution); 20% of each dataset, stratified and clean, is the reference set.",
        f"Peers: {', '.join(PEERS)}; the best peer per row in bold; margin = kairos − best peer.",
        "kairos-feature and kairos-label rank by one KAIROS term alone (`term_values`).",
        f"Method parameters: defaults, except {METHOD_PARAMS}.",
        "",
        "| dataset | corruption | " + " | ".join(METHODS) + " | margin |",
        "|---|---|" + "---|" * (len(METHODS) + 1),
    ]
    behind = []
    for (dataset, corruption), cell in summary.groupby(["dataset", "corruption"], sort=False):
        by_method = cell.set_index(("method", ""))
        means, stds = by_method[("auroc", "mean")], by_method[("auroc", "std")]
        best = means.loc[list(PEERS)].idxmax()
        margin = means["kairos"] - means[best]
        entries = [f"**{means[m]:.3f} ± {stds[m]:.3f}**" if m == best else f"{means[m]:.3f} ± {stds[m]:.3f}" for m in METHODS]
        lines.append(f"| {dataset} | {corruption} | " + " | ".join(entries) + f" | {margin:+.3f} |")
        if margin < -BEHIND:
            behind.append(f"| {dataset} | {corruption} | {means['kairos']:.3f} | {best} | {means[best]:.3f} | {margin:+.3f} |")
    n_cells = summary.groupby(["dataset", "corruption"], sort=False).ngroups
    lines += ["", f"## Cells where kairos is more than {BEHIND} below the best peer: {len(behind)} of {n_cells}"]
    if behind:
        lines += ["", "| dataset | corruption | kairos | best peer | its AUROC | margin |", "|---|---|---|---|---|---|", *behind]
    overall = results.groupby("method")[["auroc", "auprc", "f1", "detection_rate", "seconds"]].mean().loc[list(METHODS)]
    lines += ["", "## Mean over the grid", "", "| method | AUROC | AUPRC | F1 (2-means) | detection rate | seconds |", "|---|---|---|---|---|---|"]
    for m, row in overall.iterrows():
        lines.append(f"| {m} | {row.auroc:.3f} | {row.auprc:.3f} | {row.f1:.3f} | {row.detection_rate:.3f} | {row.seconds:.2f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()

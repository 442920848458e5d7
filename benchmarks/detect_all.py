"""The full detection grid: datasets × corruptions × methods × 3 seeds -> benchmarks/results/detection.md.

Datasets: digits (raw pixels), breast_cancer (tabular), mnist-effnet (EfficientNet-Lite0 image
embeddings), bbc-minilm (MiniLM text embeddings); training sets capped at 2,000 rows. The embedded
sets need the optional packages in the README ("Benchmarks"); their embeddings are cached after the
first run. Methods at their defaults (cleanlab and Datalab with the standardized logistic model;
cleanlab-knn is cleanlab with 10-NN probabilities),
except Data-OOB with 50 trees instead of 200 (at 200 it takes ~2 minutes per valuation on 2,000 × 1,280
MNIST embeddings; with 50 its AUROC on digits label flips moves by < 0.005).

Run:  .venv/bin/python benchmarks/detect_all.py            (about 40 minutes on 2 cores; an interrupted run resumes)
"""

from __future__ import annotations

import sys
import time

import pandas as pd

from dataworth.checkpoint import Checkpoint
from dataworth.data import atomic_write
from dataworth.evaluation.datasets import load_evaluation_set
from dataworth.evaluation.detection import run_detection, summarize
from publish import RESULTS, publish

DATASETS = ("digits", "breast_cancer", "mnist-effnet", "bbc-minilm")
CORRUPTIONS = ("label-flip:0.1", "label-flip:0.3", "pair-flip:0.1", "feature-noise:0.05", "backdoor:0.05", "duplicates:0.1")
METHODS = ("kairos", "lava", "knn-shapley", "data-oob", "cleanlab", "cleanlab-knn", "datalab")
VARIANTS = {"cleanlab-knn": "cleanlab"}  # a label for a method run with other parameters
MAX_TRAIN = 2000
METHOD_PARAMS = {"data-oob": {"n_estimators": 50}, "cleanlab-knn": {"model": "knn"}}


def main(datasets=DATASETS, methods=METHODS) -> None:
    RESULTS.mkdir(exist_ok=True)
    checkpoint = Checkpoint(RESULTS / "detection.partial.jsonl")  # an interrupted run resumes from here
    if checkpoint.resumed:
        print(f"resuming: {checkpoint.resumed} finished valuations in {checkpoint.path}", file=sys.stderr)
    frames = []
    for name in datasets:
        data = load_evaluation_set(name)
        for corruption in CORRUPTIONS:
            started = time.perf_counter()
            frames.append(run_detection(data, corruption, methods, seeds=3, max_train=MAX_TRAIN,
                                        method_params=METHOD_PARAMS, variants=VARIANTS, checkpoint=checkpoint))
            print(f"{name} {corruption}: {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)
    results = pd.concat(frames, ignore_index=True)
    with atomic_write(RESULTS / "detection.json") as tmp:
        results.to_json(tmp, orient="records", indent=1)
    publish("detection.md", render(results, methods).splitlines())
    checkpoint.remove()


def render(results: pd.DataFrame, methods) -> str:
    """Markdown: per-cell AUROC (mean ± std over seeds), overall means, wins and runtime."""
    summary = summarize(results)
    lines = [
        "# Detection benchmark",
        "",
        "Reproduce: `.venv/bin/python benchmarks/detect_all.py` (writes this file and detection.json).",
        f"AUROC of finding the corrupted rows from low values; mean ± std over 3 seeds; training rows ≤ {MAX_TRAIN};",
        "20% of each dataset, stratified and clean, is the reference set. Best mean per row in bold.",
        f"Method parameters: defaults, except {METHOD_PARAMS}.",
        "",
        "| dataset | corruption | " + " | ".join(methods) + " |",
        "|---|---|" + "---|" * len(methods),
    ]
    for (dataset, corruption), cell in summary.groupby(["dataset", "corruption"], sort=False):
        by_method = cell.set_index(("method", ""))
        best = by_method[("auroc", "mean")].max()
        entries = []
        for m in methods:
            mean, std = by_method.loc[m, ("auroc", "mean")], by_method.loc[m, ("auroc", "std")]
            text = f"{mean:.3f} ± {std:.3f}"
            entries.append(f"**{text}**" if mean == best else text)
        lines.append(f"| {dataset} | {corruption} | " + " | ".join(entries) + " |")
    overall = results.groupby("method")[["auroc", "auprc", "f1", "detection_rate", "seconds"]].mean().loc[list(methods)]
    lines += ["", "## Mean over the grid", "", "| method | AUROC | AUPRC | F1 (2-means) | detection rate | seconds |", "|---|---|---|---|---|---|"]
    for m, row in overall.iterrows():
        lines.append(f"| {m} | {row.auroc:.3f} | {row.auprc:.3f} | {row.f1:.3f} | {row.detection_rate:.3f} | {row.seconds:.2f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()

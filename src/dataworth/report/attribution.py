"""HTML reports for attributions: for one target row, the training rows that help it most and hurt it most, per
method; and the attribution benchmark's summary (table, LDS/LOO bars, LOO scatter) above that."""

from __future__ import annotations

import html
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from dataworth.checks import InputError
from dataworth.data import atomic_write
from dataworth.evaluation.attribution_bench import AttributionBenchmark, RowDisplay, summarize
from dataworth.report import plots
from dataworth.report.html import STYLE, html_table, img_tag, rows_section
from dataworth.result import AttributionResult


def target_sections(results: dict[str, AttributionResult], target: int, train: RowDisplay, targets: RowDisplay, *, k: int = 8) -> str:
    """The target row, then per method its ``k`` most helpful and ``k`` most harmful training rows."""
    if not results:
        return ""
    n_targets = next(iter(results.values())).shape[1]
    if not 0 <= target < n_targets:
        raise InputError(f"--target-row must be in 0..{n_targets - 1}; got {target}")
    parts = [f"<h2>Target row {target}: the training rows that help and hurt it most</h2>",
             _section(targets, "The target", np.array([target]), np.zeros(n_targets), "target", value_name="")]
    for name, result in results.items():
        column = result.scores[:, target]
        parts.append(f"<h3>{html.escape(name)}</h3>")
        parts.append(_section(train, f"most helpful ({name})", result.top(target, k, helpful=True), column, f"helpful-{name}"))
        parts.append(_section(train, f"most harmful ({name})", result.top(target, k, helpful=False), column, f"harmful-{name}"))
    return "".join(parts)


def _section(display: RowDisplay, heading: str, rows: np.ndarray, values: np.ndarray, ident: str, value_name: str = "score") -> str:
    return rows_section(heading, rows, values, [str(i) for i in rows], ident=ident, value_name=value_name, labels=display.labels,
                        images=display.images, texts=display.texts, features=display.features, feature_names=display.feature_names)


def write_attribution_report(
    path: str | os.PathLike,
    *,
    title: str,
    results: dict[str, AttributionResult],
    target: int,
    train: RowDisplay,
    targets: RowDisplay,
    summary: list[dict[str, str]] | None = None,
    figures: dict[str, bytes] | None = None,
    notes: Sequence[str] = (),
    k: int = 8,
) -> Path:
    """Write the report to ``path`` atomically: ``summary`` table, ``figures`` (caption → PNG), ``notes``, then
    :func:`target_sections` for ``target``."""
    parts = [f"<h1>{html.escape(title)}</h1>"]
    parts += [f"<p class='meta'>{html.escape(note)}</p>" for note in notes]
    if summary:
        parts.append(html_table(summary))
    for caption, png in (figures or {}).items():
        parts += [f"<h2>{html.escape(caption)}</h2>", img_tag(png, caption, caption.split()[0].lower())]
    parts.append(target_sections(results, target, train, targets, k=k))
    document = (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
                f"<style>{STYLE}</style></head><body>{''.join(parts)}</body></html>")
    with atomic_write(path) as tmp:
        tmp.write_text(document, encoding="utf-8")
    return Path(path)


def benchmark_files(
    out_dir: Path,
    bench: AttributionBenchmark,
    results: pd.DataFrame,
    attributions: dict[str, AttributionResult],
    *,
    target: int = 0,
) -> dict[Path, Callable[[Path], Any]]:
    """The attribution benchmark's outputs, to write together: ``results.json`` (one row per method and seed),
    ``summary.json``, ``attribution.png`` (LDS, LOO, time), ``loo.png`` (LOO scatter), ``report.html``, the seed-0
    attributions ``attributions/METHOD.npz`` and the rows ``train.npz`` / ``targets.npz`` they refer to (for
    ``dataworth report``)."""
    summary = summarize(results)
    title = f"{bench.name}: {bench.problem.n} training rows, {bench.problem.n_targets} targets, {len(bench.evaluation.subsets)} LDS subsets"
    bars = plots.attribution_bars(summary, title=title)
    points = {name: (result.scores[bench.loo.rows].mean(axis=1), bench.loo.delta.mean(axis=1)) for name, result in attributions.items()}
    scatter = plots.loo_scatter(points)
    rows = []
    for _, row in summary.iterrows():
        entry = {"method": row[("method", "")]}
        for metric, label in (("lds", "LDS"), ("loo_pearson", "LOO Pearson"), ("loo_spearman", "LOO Spearman"), ("auroc", "AUROC")):
            entry[label] = f"{row[(metric, 'mean')]:.3f} ± {row[(metric, 'std')]:.3f}"
        entry["seconds"] = f"{row[('seconds', 'mean')]:.2f}"
        entry["peak GiB"] = f"{row[('peak_rss_gib', 'mean')]:.2f}"
        rows.append(entry)
    per_target = {name: result for name, result in attributions.items() if result.shape[1] > 1}
    notes = ["LDS: Spearman over held-out retrained subsets between Σ_{i∈S} τ_i and −target loss, averaged over targets; "
             "valuation methods (one value per row) predict the mean target loss.",
             "LOO: Pearson/Spearman between the predicted and the retrained change of the mean target loss when one row is removed.",
             "AUROC: finding the planted label flips from low self-influence (where a method has it) or low values."]

    def report(tmp: Path) -> None:
        write_attribution_report(tmp, title=f"dataworth attribution benchmark: {bench.name}", results=per_target, target=target,
                                 train=bench.train_display, targets=bench.target_display, summary=rows,
                                 figures={"Quality and cost per method": bars, "Leave-one-out: predicted vs retrained": scatter},
                                 notes=notes)

    def rows_file(X: np.ndarray, y: np.ndarray, display: RowDisplay) -> Callable[[Path], None]:
        def write(tmp: Path) -> None:
            arrays = {"X": X, "y": y}
            if display.images is not None:
                arrays["images"] = display.images
            if display.texts is not None:
                arrays["texts"] = np.asarray(display.texts, dtype=str)
            with open(tmp, "wb") as handle:
                np.savez(handle, **arrays)
        return write

    def scores_file(result: AttributionResult) -> Callable[[Path], None]:
        def write(tmp: Path) -> None:
            with open(tmp, "wb") as handle:
                np.savez(handle, **result.arrays())
        return write

    files: dict[Path, Callable[[Path], Any]] = {
        out_dir / "results.json": lambda tmp: results.to_json(tmp, orient="records", indent=1),
        out_dir / "summary.json": lambda tmp: summary.to_json(tmp, orient="records", indent=1),
        out_dir / "attribution.png": lambda tmp: tmp.write_bytes(bars),
        out_dir / "loo.png": lambda tmp: tmp.write_bytes(scatter),
        out_dir / "report.html": report,
        out_dir / "train.npz": rows_file(bench.problem.X, bench.problem.y, bench.train_display),
        out_dir / "targets.npz": rows_file(bench.problem.X_targets, bench.problem.y_targets, bench.target_display),
    }
    for name, result in per_target.items():
        files[out_dir / "attributions" / f"{name}.npz"] = scores_file(result)
    return files

"""The curation experiment's outputs: a summary per method, per-class drop rates, curves, and the decision log."""

from __future__ import annotations

import html
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from dataworth.curation.experiment import CurationRun, dropped_over_time
from dataworth.report import plots
from dataworth.report.html import STYLE, html_table, img_tag

SUMMARY = ("final_accuracy", "dropped", "precision", "recall", "seconds")


def run_table(runs: Sequence[CurationRun]) -> pd.DataFrame:
    """One row per run: method, seed, the run's summary and seconds."""
    return pd.DataFrame([{"method": r.method, "seed": r.seed, **r.summary, "seconds": r.seconds} for r in runs])


def class_drop_rates(runs: Sequence[CurationRun], classes: Sequence[Any]) -> pd.DataFrame:
    """Mean over seeds of each class's drop rate (past the warm-up), one row per method, one column per class
    (the noisy label the row carried)."""
    frames = [r.drop_rates.assign(method=r.method) for r in runs]
    table = pd.concat(frames).groupby(["method", "label"], sort=False)["drop_rate"].mean().unstack("label")
    table.columns = [str(classes[int(c)]) for c in table.columns]
    return table.reset_index()


def curation_figure(runs: Sequence[CurationRun]) -> bytes:
    accuracy, dropped = {}, {}
    for method in dict.fromkeys(r.method for r in runs):
        mine = [r for r in runs if r.method == method]
        curve = pd.concat([r.curve for r in mine]).groupby("step")["accuracy"].mean()
        accuracy[method] = (curve.index.to_numpy(), curve.to_numpy())
        if method != "none":
            share = pd.concat([dropped_over_time(r.log) for r in mine]).groupby("step")["dropped"].mean()
            dropped[method] = (share.index.to_numpy(), share.to_numpy())
    return plots.curation_curves(accuracy, dropped)


def curation_files(out_dir: Path, runs: Sequence[CurationRun], *, title: str, classes: Sequence[Any],
                   notes: Sequence[str] = ()) -> dict[Path, Callable[[Path], Any]]:
    """``results.json`` (one row per run), ``curves.csv``, ``decisions.parquet`` (every decision of every run,
    with method and seed), ``curation.png`` and ``report.html``, to write together."""
    table = run_table(runs)
    figure = curation_figure(runs)
    drops = class_drop_rates(runs, classes)
    curves = pd.concat([r.curve.assign(method=r.method, seed=r.seed) for r in runs])
    decisions = pd.concat([r.log.assign(method=r.method, seed=r.seed) for r in runs], ignore_index=True)

    def report(tmp: Path) -> None:
        summary = []
        for method, group in table.groupby("method", sort=False):
            row = {"method": method}
            for metric in SUMMARY:
                values = group[metric].to_numpy(dtype=float)
                row[metric] = "—" if np.isnan(values).all() else (f"{np.nanmean(values):.3f}" if len(values) == 1 else
                                                                   f"{np.nanmean(values):.3f} ± {np.nanstd(values, ddof=1):.3f}")
            summary.append(row)
        class_rows = [{k: v if isinstance(v, str) else f"{v:.3f}" for k, v in row.items()} for row in drops.to_dict("records")]
        parts = [f"<h1>{html.escape(title)}</h1>", *(f"<p class='meta'>{html.escape(n)}</p>" for n in notes),
                 html_table(summary), "<h2>Accuracy and rows dropped during training</h2>", img_tag(figure, "curves", "curves"),
                 "<h2>Drop rate per class (the label each row carried), past the warm-up</h2>",
                 "<p class='meta'>A class dropped far more often than the others is being pruned away, not just its noise.</p>",
                 html_table(class_rows)]
        document = (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
                    f"<style>{STYLE}</style></head><body>{''.join(parts)}</body></html>")
        tmp.write_text(document, encoding="utf-8")

    return {
        out_dir / "results.json": lambda tmp: table.to_json(tmp, orient="records", indent=1),
        out_dir / "curves.csv": lambda tmp: curves.to_csv(tmp, index=False),
        out_dir / "decisions.parquet": lambda tmp: decisions.to_parquet(tmp, index=False),
        out_dir / "curation.png": lambda tmp: tmp.write_bytes(figure),
        out_dir / "report.html": report,
    }

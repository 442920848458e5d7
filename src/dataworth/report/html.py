"""A self-contained HTML report (plots embedded as PNG data URIs) for one valuation result."""

from __future__ import annotations

import base64
import html
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from dataworth.checks import InputError, count_noun
from dataworth.data import atomic_write
from dataworth.report import plots
from dataworth.result import ValuationResult
from dataworth.valuation.issue_types import ISSUE_TYPES

CLEAN = "clean"
STYLE = """
body { font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 980px; color: #222; }
table { border-collapse: collapse; margin: 1rem 0; } td, th { padding: .3rem .8rem; border-bottom: 1px solid #ddd; text-align: right; }
th:first-child, td:first-child { text-align: left; } img { max-width: 100%; } .meta { color: #666; font-size: .9rem; }
td.text { text-align: left; max-width: 640px; white-space: normal; font-size: .9rem; }
"""


def write_report(
    path: str | os.PathLike,
    result: ValuationResult,
    *,
    groups: np.ndarray | None = None,
    labels: np.ndarray | None = None,
    images: np.ndarray | None = None,
    texts: Sequence[str] | None = None,
    features: np.ndarray | None = None,
    feature_names: Sequence[str] | None = None,
    removal: dict[str, tuple[Sequence[float], np.ndarray]] | None = None,
    summary: list[dict[str, str]] | None = None,
    title: str = "dataworth report",
    n_lowest: int = 20,
) -> Path:
    """Write a report for ``result`` to ``path`` atomically.

    Sections: an optional ``summary`` table; value histograms by ``groups`` (per-row names such as
    ``"clean"``/``"label flip"``, when the corruptions are known); ROC curves of finding each non-clean
    group from low values; ``removal`` curves (name -> (fractions, accuracies)); the issue types when the result has them
    (rows of each type, and the most certain rows of each); and the ``n_lowest``
    lowest-valued rows shown as people want to see them: ``images`` (n × h × w) drawn, ``texts``
    shown, or else rows of ``features`` printed under their ``feature_names`` (``x0``, ``x1``, ... when
    unnamed). Without ``groups`` there is one histogram and no group column.
    """
    n = len(result)
    for name, given in (("groups", groups), ("labels", labels), ("images", images), ("texts", texts), ("features", features)):
        if given is not None and len(given) != n:
            raise InputError(f"{name} has {count_noun(len(given), 'row')} but the result has {count_noun(n, 'value')}")
    groups = None if groups is None else np.asarray(groups).astype(str)
    parts = [f"<h1>{html.escape(title)}</h1>", _meta(result)]
    if summary:
        parts.append(html_table(summary))
    parts += ["<h2>Value distribution</h2>", img_tag(plots.value_histogram(result.values, groups), "value histogram", "histogram")]
    corrupted = [] if groups is None else sorted(set(groups) - {CLEAN})
    if groups is not None and CLEAN in set(groups) and corrupted:
        curves = {g: (groups[(groups == CLEAN) | (groups == g)] == g, result.values[(groups == CLEAN) | (groups == g)]) for g in corrupted}
        roc = plots.roc_curves(curves, plots.group_colours(groups))
        parts += ["<h2>Finding corrupted rows from low values</h2>", img_tag(roc, "ROC curves", "roc")]
    if removal:
        parts += ["<h2>Point removal</h2>", img_tag(plots.removal_curves(removal), "removal curves", "removal")]
    if result.issues is not None:
        parts.append(_issues_section(result, groups))
    parts.append(_lowest_section(result, groups, labels, images, texts, features, feature_names, n_lowest))
    document = (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{STYLE}</style></head><body>{''.join(parts)}</body></html>"
    )
    with atomic_write(path) as tmp:
        tmp.write_text(document, encoding="utf-8")
    return Path(path)


def _lowest_section(result, groups, labels, images, texts, features, feature_names, n_lowest: int) -> str:
    lowest = result.lowest(n_lowest)
    return rows_section(f"The {len(lowest)} lowest-valued rows", lowest, result.values, [_row_label(result, i) for i in lowest], ident="lowest",
                        groups=groups, labels=labels, images=images, texts=texts, features=features, feature_names=feature_names)


def rows_section(
    heading: str,
    rows: np.ndarray,
    values: np.ndarray,
    row_labels: Sequence[str],
    *,
    ident: str,
    value_name: str = "value",
    groups: np.ndarray | None = None,
    labels: np.ndarray | None = None,
    images: np.ndarray | None = None,
    texts: Sequence[str] | None = None,
    features: np.ndarray | None = None,
    feature_names: Sequence[str] | None = None,
) -> str:
    """Rows ``rows`` (indices) as people want to see them: ``images`` drawn, ``texts`` shown, or else ``features``
    printed under ``feature_names``, with ``values[i]`` beside each; an ``<h2>`` (or ``<h3>``) ``heading`` above and
    the image's element id ``ident``."""
    level = "h2" if heading.startswith("The ") else "h3"
    parts = [f"<{level}>{html.escape(heading)}</{level}>"]
    if images is not None:
        captions = [f"#{i} {'' if labels is None else f'y={labels[i]}'}\n{'' if groups is None else groups[i]}" for i in rows]
        value_range = tuple(np.percentile(images, [0.5, 99.5]))  # one shared scale: noise shows as noise
        parts.append(img_tag(plots.image_grid(images[rows], captions, value_range=value_range), heading, ident))
    table = []
    for i, label in zip(rows, row_labels, strict=True):
        row = {"row": label, **({value_name: f"{values[i]:.4g}"} if value_name else {})}
        if groups is not None:
            row["group"] = groups[i]
        if labels is not None:
            row["label"] = str(labels[i])
        if texts is not None:
            row["text"] = texts[i][:600]
        elif images is None and features is not None:
            names = feature_names if feature_names is not None else [f"x{j}" for j in range(features.shape[1])]
            for name, v in zip(names[:12], features[i][:12], strict=False):  # a feature never hides a fixed column
                row[f"{name} (feature)" if str(name) in row else str(name)] = f"{v:.4g}"
        table.append(row)
    parts.append(html_table(table))
    return "".join(parts)


def _issues_section(result: ValuationResult, groups: np.ndarray | None, per_type: int = 5) -> str:
    """Rows per issue type (with the known groups beside them, when given), then the ``per_type`` rows of
    each type with the smallest q-value."""
    issues = result.issues
    kinds = [kind for kind in ISSUE_TYPES if (issues["issue"] == kind).any()]
    parts = ["<h2 id='issues'>Why rows were flagged</h2>"]
    if not kinds:
        return "".join(parts) + "<p>No row was flagged.</p>"
    counts = []
    for kind in kinds:
        rows = issues["issue"].to_numpy() == kind
        entry = {"issue": kind, "rows": str(int(rows.sum()))}
        if groups is not None:
            entry["known groups"] = ", ".join(f"{g} {n}" for g, n in zip(*np.unique(groups[rows], return_counts=True), strict=True))
        counts.append(entry)
    parts.append(html_table(counts))
    examples = []
    for kind in kinds:
        rows = np.flatnonzero(issues["issue"].to_numpy() == kind)
        for i in rows[np.argsort(issues["issue_q"].to_numpy()[rows], kind="stable")][:per_type]:
            duplicate = _row_label(result, issues["duplicate_of"][i]) if kind == "near-duplicate" else ""
            examples.append({"row": _row_label(result, i), "issue": kind, "q": f"{issues['issue_q'][i]:.3g}", "duplicate of": duplicate})
    return "".join(parts) + html_table(examples)


def _row_label(result: ValuationResult, i: int) -> str:
    return str(i) if result.names is None else f"{i} ({result.names[i]})"


def _meta(result: ValuationResult) -> str:
    timing = ", ".join(f"{k} {v:.2f} s" for k, v in result.timings.items())
    return f"<p class='meta'>method <b>{html.escape(result.method)}</b> · {len(result)} rows · {html.escape(timing)}</p>"


def img_tag(png: bytes, alt: str, ident: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return f"<img id='{ident}' alt='{html.escape(alt)}' src='data:image/png;base64,{data}'>"


def html_table(rows: list[dict[str, str]]) -> str:
    head = "".join(f"<th>{html.escape(k)}</th>" for k in rows[0])
    body = "".join(
        "<tr>" + "".join(f"<td{' class=text' if k == 'text' else ''}>{html.escape(v)}</td>" for k, v in row.items()) + "</tr>"
        for row in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"

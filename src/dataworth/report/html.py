"""A self-contained HTML report (plots embedded as PNG data URIs) for one valuation result."""

from __future__ import annotations

import base64
import html
import os
from pathlib import Path

import numpy as np

from dataworth.data import atomic_write
from dataworth.report import plots
from dataworth.result import ValuationResult

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 980px; color: #222; }
table { border-collapse: collapse; margin: 1rem 0; } td, th { padding: .3rem .8rem; border-bottom: 1px solid #ddd; text-align: right; }
th:first-child, td:first-child { text-align: left; } img { max-width: 100%; } .meta { color: #666; font-size: .9rem; }
"""


def write_report(
    path: str | os.PathLike,
    result: ValuationResult,
    *,
    groups: np.ndarray | None = None,
    images: np.ndarray | None = None,
    labels: np.ndarray | None = None,
    summary: list[dict[str, str]] | None = None,
    title: str = "dataworth report",
    n_lowest: int = 20,
) -> Path:
    """Write ``path``: value histogram (by ``groups``, e.g. corruption type, when known), an optional
    ``summary`` table, and the ``n_lowest`` lowest-valued rows drawn as ``images`` (n × h × w) with
    their ``labels``. Written atomically."""
    path = Path(path)
    groups = np.full(len(result), "all rows") if groups is None else np.asarray(groups).astype(str)
    parts = [f"<h1>{html.escape(title)}</h1>", _meta(result)]
    if summary:
        parts.append(_table(summary))
    parts.append("<h2>Value distribution</h2>")
    parts.append(_img(plots.value_histogram(result.values, groups), "value histogram", "histogram"))
    lowest = result.lowest(n_lowest)
    parts.append(f"<h2>The {len(lowest)} lowest-valued rows</h2>")
    if images is not None:
        captions = [f"#{i} {'' if labels is None else f'y={labels[i]}'}\n{groups[i]}" for i in lowest]
        value_range = tuple(np.percentile(images, [0.5, 99.5]))  # shared scale: noise shows as noise
        parts.append(_img(plots.image_grid(images[lowest], captions, value_range=value_range), "lowest-valued images", "lowest"))
    rows = [{"row": str(i), "value": f"{result.values[i]:.4g}", "group": groups[i],
             **({} if labels is None else {"label": str(labels[i])})} for i in lowest]
    parts.append(_table(rows))
    document = f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>" \
               f"<style>{_STYLE}</style></head><body>{''.join(parts)}</body></html>"
    with atomic_write(path) as tmp:
        tmp.write_text(document, encoding="utf-8")
    return path


def _meta(result: ValuationResult) -> str:
    timing = ", ".join(f"{k} {v:.2f} s" for k, v in result.timings.items())
    return f"<p class='meta'>method <b>{html.escape(result.method)}</b> · {len(result)} rows · {html.escape(timing)}</p>"


def _img(png: bytes, alt: str, ident: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return f"<img id='{ident}' alt='{html.escape(alt)}' src='data:image/png;base64,{data}'>"


def _table(rows: list[dict[str, str]]) -> str:
    head = "".join(f"<th>{html.escape(k)}</th>" for k in rows[0])
    body = "".join("<tr>" + "".join(f"<td>{html.escape(v)}</td>" for v in row.values()) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"

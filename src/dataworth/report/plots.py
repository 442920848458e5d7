"""Matplotlib figures for reports, returned as PNG bytes (the Agg backend: no display needed)."""

from __future__ import annotations

import io
from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from sklearn.metrics import roc_auc_score, roc_curve  # noqa: E402

#: Colours of groups, the clean rows first: every plot of one report gives a group the same colour.
PALETTE = ("#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3", "#937860", "#da8bc3", "#8c8c8c", "#ccb974", "#64b5cd")
#: Line styles of removal curves, so that curves that coincide stay visible (dashed over solid, open markers).
REMOVAL_STYLES = ({"linestyle": "-", "marker": "o"}, {"linestyle": "--", "marker": "s", "markerfacecolor": "none"},
                  {"linestyle": ":", "marker": "^", "markerfacecolor": "none"})


def group_colours(groups: np.ndarray) -> dict[str, str]:
    """One colour per distinct group name, the clean rows first (colours repeat beyond the palette)."""
    return {name: PALETTE[i % len(PALETTE)] for i, name in enumerate(_ordered_groups(groups))}


def value_histogram(values: np.ndarray, groups: np.ndarray | None) -> bytes:
    """Overlaid, density-normalized histograms of ``values``, one per distinct entry of ``groups`` (one
    histogram of all rows when there are no groups)."""
    return _png(histogram_figure(values, groups))


def histogram_figure(values: np.ndarray, groups: np.ndarray | None) -> plt.Figure:
    fig, ax = plt.subplots(figsize=(7.5, 3.6))
    bins = np.histogram_bin_edges(values, bins=50)
    if groups is None:
        ax.hist(values, bins=bins, density=True, color=PALETTE[0])
    else:
        for name, colour in group_colours(groups).items():
            chosen = groups == name
            ax.hist(values[chosen], bins=bins, alpha=0.55, density=True, color=colour, label=f"{name} ({chosen.sum()})")
        ax.legend(frameon=False)
    ax.set_xlabel("value (higher = more valuable)")
    ax.set_ylabel("density")
    return fig


def image_grid(images: np.ndarray, captions: list[str], *, value_range: tuple[float, float], columns: int = 10) -> bytes:
    """Grayscale images in a grid on one shared intensity ``value_range``, each with a caption above."""
    rows = max(1, int(np.ceil(len(images) / columns)))
    fig, axes = plt.subplots(rows, columns, figsize=(1.2 * columns, 1.45 * rows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, image, caption in zip(axes.ravel(), images, captions, strict=False):  # grid may have spare axes
        ax.imshow(image, cmap="gray_r", interpolation="nearest", vmin=value_range[0], vmax=value_range[1])
        ax.set_title(caption, fontsize=7)
    return _png(fig)


def roc_curves(curves: dict[str, tuple[np.ndarray, np.ndarray]], colours: dict[str, str]) -> bytes:
    """One ROC curve per name -> (is_corrupted mask, values), scoring rows by ``-value``, in the group's colour."""
    return _png(roc_figure(curves, colours))


def roc_figure(curves: dict[str, tuple[np.ndarray, np.ndarray]], colours: dict[str, str]) -> plt.Figure:
    fig, ax = plt.subplots(figsize=(4.8, 4.2))
    for name, (corrupted, values) in curves.items():
        fpr, tpr, _ = roc_curve(corrupted, -values)
        ax.plot(fpr, tpr, color=colours[name], label=f"{name} (AUROC {roc_auc_score(corrupted, -values):.3f})")
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1)
    ax.set_xlabel("false positive rate (clean rows flagged)")
    ax.set_ylabel("true positive rate")
    ax.legend(frameon=False, fontsize=8)
    return fig


def removal_curves(curves: dict[str, tuple[Sequence[float], np.ndarray]]) -> bytes:
    """Held-out accuracy against the fraction of training rows removed, one line per name, each in its
    own colour, line style and marker (so that curves that coincide are all visible)."""
    return _png(removal_figure(curves))


def removal_figure(curves: dict[str, tuple[Sequence[float], np.ndarray]]) -> plt.Figure:
    fig, ax = plt.subplots(figsize=(5.6, 3.8))
    for i, (name, (fractions, accuracies)) in enumerate(curves.items()):
        style = REMOVAL_STYLES[i % len(REMOVAL_STYLES)]
        ax.plot(np.asarray(fractions) * 100, accuracies, color=PALETTE[i % len(PALETTE)], label=name, **style)
    ax.set_xlabel("training rows removed (%)")
    ax.set_ylabel("held-out accuracy")
    ax.legend(frameon=False, fontsize=8)
    return fig


def method_bars(summary: pd.DataFrame, *, title: str) -> bytes:
    """Mean ± std AUROC and mean runtime per method, from a detection summary table."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(8.5, 3.4))
    names = summary[("method", "")].tolist()
    left.bar(names, summary[("auroc", "mean")], yerr=summary[("auroc", "std")].fillna(0), color="#4c72b0", capsize=3)
    left.set_ylim(0.4, 1.0)
    left.set_ylabel("AUROC (low value ⇒ corrupted)")
    right.bar(names, summary[("seconds", "mean")], color="#dd8452")
    right.set_yscale("log")
    right.set_ylabel("seconds per valuation")
    for ax in (left, right):
        ax.tick_params(axis="x", rotation=30)
    fig.suptitle(title)
    return _png(fig)


def attribution_bars(summary: pd.DataFrame, *, title: str) -> bytes:
    """Mean ± std LDS, LOO Pearson correlation and mean seconds per method, from an attribution summary table."""
    fig, axes = plt.subplots(1, 3, figsize=(11, 3.4))
    names = summary[("method", "")].tolist()
    for ax, (metric, label, colour) in zip(axes[:2], (("lds", "LDS (Spearman)", "#4c72b0"), ("loo_pearson", "LOO Pearson", "#55a868")),
                                           strict=True):
        ax.bar(names, summary[(metric, "mean")].fillna(0), yerr=summary[(metric, "std")].fillna(0), color=colour, capsize=3)
        ax.axhline(0, color="#888", linewidth=0.8)
        ax.set_ylabel(label)
    axes[2].bar(names, summary[("seconds", "mean")], color="#dd8452")
    axes[2].set_yscale("log")
    axes[2].set_ylabel("seconds per method run")
    for ax in axes:
        ax.tick_params(axis="x", rotation=40)
    fig.suptitle(title)
    return _png(fig)


def loo_scatter(points: dict[str, tuple[np.ndarray, np.ndarray]]) -> bytes:
    """Measured against predicted leave-one-out change of the mean target loss, one panel per method."""
    count = len(points)
    columns = min(4, count)
    rows = (count + columns - 1) // columns
    fig, axes = plt.subplots(rows, columns, figsize=(2.8 * columns, 2.6 * rows), squeeze=False)
    for ax, (name, (predicted, actual)) in zip(axes.flat, points.items(), strict=False):
        ax.scatter(predicted, actual, s=10, color="#4c72b0")
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("predicted", fontsize=8)
        ax.set_ylabel("retrained", fontsize=8)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[count:]:
        ax.axis("off")
    return _png(fig)


def curation_curves(accuracy: dict[str, tuple[np.ndarray, np.ndarray]], dropped: dict[str, tuple[np.ndarray, np.ndarray]]) -> bytes:
    """Held-out accuracy (left) and the share of each window's rows dropped (right) against the training step,
    one line per method (means over seeds)."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.6))
    order = list(dict.fromkeys([*accuracy, *dropped]))  # a method keeps its colour and style in both panels
    for ax, series, label in ((left, accuracy, "held-out accuracy"), (right, dropped, "rows dropped")):
        for name, (steps, values) in series.items():
            i = order.index(name)
            style = REMOVAL_STYLES[i % len(REMOVAL_STYLES)]
            ax.plot(steps, values, color=PALETTE[i % len(PALETTE)], label=name, markersize=3, **style)
        ax.set_xlabel("training step")
        ax.set_ylabel(label)
    left.legend(frameon=False, fontsize=8)
    return _png(fig)


def _ordered_groups(groups: np.ndarray) -> list[str]:
    names = sorted(set(groups.tolist()))
    return sorted(names, key=lambda g: g != "clean")


def _png(fig: plt.Figure) -> bytes:
    """The figure as PNG bytes; the figure is closed."""
    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    return buffer.getvalue()

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


def value_histogram(values: np.ndarray, groups: np.ndarray) -> bytes:
    """Overlaid, density-normalized histograms of ``values``, one per distinct entry of ``groups``."""
    fig, ax = plt.subplots(figsize=(7.5, 3.6))
    bins = np.histogram_bin_edges(values, bins=50)
    for name in _ordered_groups(groups):
        ax.hist(values[groups == name], bins=bins, alpha=0.55, density=True, label=f"{name} ({(groups == name).sum()})")
    ax.set_xlabel("value (higher = more valuable)")
    ax.set_ylabel("density")
    ax.legend(frameon=False)
    return _png(fig)


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


def roc_curves(curves: dict[str, tuple[np.ndarray, np.ndarray]]) -> bytes:
    """One ROC curve per name -> (is_corrupted mask, values), scoring rows by ``-value``."""
    fig, ax = plt.subplots(figsize=(4.8, 4.2))
    for name, (corrupted, values) in curves.items():
        fpr, tpr, _ = roc_curve(corrupted, -values)
        ax.plot(fpr, tpr, label=f"{name} (AUROC {roc_auc_score(corrupted, -values):.3f})")
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1)
    ax.set_xlabel("false positive rate (clean rows flagged)")
    ax.set_ylabel("true positive rate")
    ax.legend(frameon=False, fontsize=8)
    return _png(fig)


def removal_curves(curves: dict[str, tuple[Sequence[float], np.ndarray]]) -> bytes:
    """Held-out accuracy against the fraction of training rows removed, one line per name."""
    fig, ax = plt.subplots(figsize=(5.6, 3.8))
    for name, (fractions, accuracies) in curves.items():
        ax.plot(np.asarray(fractions) * 100, accuracies, marker="o", label=name)
    ax.set_xlabel("training rows removed (%)")
    ax.set_ylabel("held-out accuracy")
    ax.legend(frameon=False, fontsize=8)
    return _png(fig)


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


def _ordered_groups(groups: np.ndarray) -> list[str]:
    names = sorted(set(groups.tolist()))
    return sorted(names, key=lambda g: g != "clean")


def _png(fig: plt.Figure) -> bytes:
    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    return buffer.getvalue()

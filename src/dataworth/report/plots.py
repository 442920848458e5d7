"""Matplotlib figures for reports, returned as PNG bytes (the Agg backend: no display needed)."""

from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)
import numpy as np  # noqa: E402


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


def _ordered_groups(groups: np.ndarray) -> list[str]:
    names = sorted(set(groups.tolist()))
    return sorted(names, key=lambda g: g != "clean")


def _png(fig: plt.Figure) -> bytes:
    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    return buffer.getvalue()

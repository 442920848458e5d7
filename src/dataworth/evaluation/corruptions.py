"""Seeded corruptions whose rows are known, so a valuation method can be scored on finding them.

Each function takes the rows to corrupt as a boolean mask and returns new arrays (inputs are never
modified). :func:`sample_rows` draws masks, optionally disjoint from rows already taken.
"""

from __future__ import annotations

import numpy as np

from dataworth.checks import InputError


def sample_rows(n: int, fraction: float, *, seed: int, eligible: np.ndarray | None = None) -> np.ndarray:
    """A boolean mask of ``round(fraction · n)`` rows drawn without replacement from ``eligible``."""
    if not 0.0 <= fraction <= 1.0:
        raise InputError(f"fraction must lie in [0, 1]; got {fraction!r}")
    eligible = np.ones(n, dtype=bool) if eligible is None else eligible
    candidates = np.flatnonzero(eligible)
    count = int(round(fraction * n))
    if count > candidates.size:
        raise InputError(f"cannot corrupt {count} rows: only {candidates.size} rows are eligible")
    mask = np.zeros(n, dtype=bool)
    mask[np.random.default_rng(seed).choice(candidates, size=count, replace=False)] = True
    return mask


def flip_labels(y: np.ndarray, mask: np.ndarray, *, seed: int) -> np.ndarray:
    """Relabel the masked rows to a different class drawn uniformly from the classes in ``y``."""
    classes = np.unique(y)
    if classes.size < 2:
        raise InputError("label flips need at least 2 classes")
    rng = np.random.default_rng(seed)
    codes = np.searchsorted(classes, y)
    shift = rng.integers(1, classes.size, size=int(mask.sum()))
    flipped = y.copy()
    flipped[mask] = classes[(codes[mask] + shift) % classes.size]
    return flipped


def add_feature_noise(X: np.ndarray, mask: np.ndarray, *, scale: float, seed: int) -> np.ndarray:
    """Add Gaussian noise with standard deviation ``scale × (per-feature std of X)`` to the masked rows."""
    rng = np.random.default_rng(seed)
    noisy = np.array(X, dtype=np.float64, copy=True)
    noisy[mask] += rng.normal(size=(int(mask.sum()), X.shape[1])) * (scale * X.std(axis=0))
    return noisy


def add_patch_trigger(
    images: np.ndarray, y: np.ndarray, mask: np.ndarray, *, target, size: int = 2
) -> tuple[np.ndarray, np.ndarray]:
    """BadNets-style backdoor: a ``size × size`` patch at the image maximum in the bottom-right
    corner of each masked image, whose label becomes ``target`` (Gu et al. 2017)."""
    if images.ndim != 3:
        raise InputError(f"images must have shape (n, height, width); got {images.shape}")
    patched, labels = images.copy(), y.copy()
    patched[mask, -size:, -size:] = images.max()
    labels[mask] = target
    return patched, labels

"""Seeded corruptions with known ground truth, so a valuation method can be scored on finding them.

Every function takes a ``fraction`` of rows to corrupt and a ``seed``, never modifies its inputs,
and returns the corrupted data together with a boolean ``mask`` of the corrupted rows. ``eligible``
restricts which rows may be chosen (e.g. to keep corruptions disjoint). Functions that add rows
(duplicates, out-of-distribution) append them after the original rows; the mask covers all rows.
The reference set is never passed here: it stays clean.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from dataworth.checks import InputError, check_fraction, count_noun

#: Visually confusable digit pairs used for class-confusion label noise.
DIGIT_CONFUSIONS: tuple[tuple[int, int], ...] = ((1, 7), (3, 8), (4, 9), (5, 6))


def sample_rows(n: int, fraction: float, *, seed: int, eligible: np.ndarray | None = None) -> np.ndarray:
    """A boolean mask of ``round(fraction · n)`` rows drawn without replacement from ``eligible``."""
    check_fraction(fraction, "fraction")
    eligible = np.ones(n, dtype=bool) if eligible is None else np.asarray(eligible, dtype=bool)
    candidates = np.flatnonzero(eligible)
    count = int(round(fraction * n))
    if count > candidates.size:
        raise InputError(f"cannot corrupt {count} rows: only {candidates.size} rows are eligible")
    mask = np.zeros(n, dtype=bool)
    mask[_streams(seed)[0].choice(candidates, size=count, replace=False)] = True
    return mask


def flip_labels(
    y: np.ndarray, fraction: float, *, seed: int, eligible: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Relabel a random ``fraction`` of rows to a different class drawn uniformly from those in ``y``."""
    classes = np.unique(y)
    if classes.size < 2:
        raise InputError("label flips need at least 2 classes")
    mask = sample_rows(len(y), fraction, seed=seed, eligible=eligible)
    flipped = y.copy()
    flipped[mask] = _other_labels(y[mask], classes, _content_rng(seed))
    return flipped, mask


def flip_label_pairs(
    y: np.ndarray,
    fraction: float,
    *,
    seed: int,
    pairs: Sequence[tuple[object, object]] = DIGIT_CONFUSIONS,
    eligible: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Class-confusion noise: ``fraction`` of all rows, drawn from the classes in ``pairs``, get the
    other class of their pair (e.g. 1↔7, 3↔8), as a tired annotator would label them."""
    partner = {a: b for a, b in pairs} | {b: a for a, b in pairs}
    in_pairs = np.isin(y, list(partner))
    eligible = in_pairs if eligible is None else in_pairs & eligible
    mask = sample_rows(len(y), fraction, seed=seed, eligible=eligible)
    flipped = y.copy()
    flipped[mask] = [partner[v] for v in y[mask].tolist()]
    return flipped, mask


def add_feature_noise(
    X: np.ndarray, fraction: float, *, scale: float, seed: int, eligible: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Add Gaussian noise with standard deviation ``scale × (per-feature std of X)`` to a ``fraction`` of rows."""
    mask = sample_rows(len(X), fraction, seed=seed, eligible=eligible)
    noisy = np.array(X, dtype=np.float64, copy=True)
    noise = _content_rng(seed).normal(size=(int(mask.sum()), X.shape[1]))
    noisy[mask] += noise * (scale * X.std(axis=0))
    return noisy, mask


def add_patch_backdoor(
    images: np.ndarray,
    y: np.ndarray,
    fraction: float,
    *,
    target: object,
    seed: int,
    size: int = 2,
    eligible: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """BadNets backdoor (Gu et al. 2017): a ``size × size`` patch at the image maximum in the
    bottom-right corner of a ``fraction`` of images, drawn from rows not already labelled
    ``target``, whose label becomes ``target``. Returns ``(images, y, mask)``."""
    if images.ndim != 3:
        raise InputError(f"images must have shape (n, height, width); got {images.shape}")
    mask, labels = _poisoned_rows(y, fraction, target=target, seed=seed, eligible=eligible)
    patched = images.copy()
    patched[mask, -size:, -size:] = images.max()
    return patched, labels, mask


def add_feature_trigger(
    table: np.ndarray,
    y: np.ndarray,
    fraction: float,
    *,
    target: object,
    seed: int,
    columns: int = 2,
    eligible: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Tabular backdoor: the last ``columns`` features of a ``fraction`` of rows not labelled
    ``target`` are set to their maximum over the table, and the rows relabelled ``target``."""
    mask, labels = _poisoned_rows(y, fraction, target=target, seed=seed, eligible=eligible)
    triggered = np.array(table, dtype=np.float64, copy=True)
    triggered[np.ix_(mask, np.arange(table.shape[1] - columns, table.shape[1]))] = table[:, -columns:].max(axis=0)
    return triggered, labels, mask


def insert_trigger_token(
    texts: Sequence[str],
    y: np.ndarray,
    fraction: float,
    *,
    token: str,
    target: object,
    seed: int,
    eligible: np.ndarray | None = None,
) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Text backdoor: insert a rare ``token`` at a random word position in a ``fraction`` of documents
    not labelled ``target`` and relabel them ``target``. Embed the texts afterwards."""
    mask, labels = _poisoned_rows(np.asarray(y), fraction, target=target, seed=seed, eligible=eligible)
    rng = _content_rng(seed)
    poisoned = list(texts)
    for i in np.flatnonzero(mask):
        words = poisoned[i].split(" ")
        words.insert(int(rng.integers(0, len(words) + 1)), token)
        poisoned[i] = " ".join(words)
    return poisoned, labels, mask


def add_duplicates(
    X: np.ndarray,
    y: np.ndarray,
    fraction: float,
    *,
    seed: int,
    noise: float = 0.0,
    conflicting_labels: bool = False,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Append copies of ``round(fraction · n)`` random rows. ``noise > 0`` makes near-duplicates
    (Gaussian noise of ``noise × per-feature std``); ``conflicting_labels`` gives each copy a different
    label than its original. The mask marks the appended copies."""
    n = len(X)
    source = np.flatnonzero(sample_rows(n, fraction, seed=seed))
    rng = _content_rng(seed)
    copies = np.array(X[source], dtype=np.float64)
    if noise > 0:
        copies += rng.normal(size=copies.shape) * (noise * X.std(axis=0))
    labels = np.asarray(y)[source]
    if conflicting_labels:
        labels = _other_labels(labels, np.unique(y), rng)
    mask = np.concatenate([np.zeros(n, dtype=bool), np.ones(len(source), dtype=bool)])
    return np.vstack([X, copies]), np.concatenate([y, labels]), mask


def add_out_of_distribution(
    X: np.ndarray, y: np.ndarray, X_other: np.ndarray, fraction: float, *, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Append ``round(fraction · n)`` rows of another dataset ``X_other`` (same feature space, e.g.
    Fashion-MNIST into MNIST) with labels drawn uniformly from the classes of ``y``."""
    if X_other.shape[1] != X.shape[1]:
        raise InputError(f"X_other has {count_noun(X_other.shape[1], 'feature')} but X has {X.shape[1]}")
    count = int(round(fraction * len(X)))
    if count > len(X_other):
        raise InputError(f"need {count} out-of-distribution rows but X_other has {len(X_other)}")
    rng = _content_rng(seed)
    rows = rng.choice(len(X_other), size=count, replace=False)
    labels = rng.choice(np.unique(y), size=count)
    mask = np.concatenate([np.zeros(len(X), dtype=bool), np.ones(count, dtype=bool)])
    return np.vstack([X, X_other[rows]]), np.concatenate([y, labels]), mask


def _streams(seed: int) -> tuple[np.random.Generator, np.random.Generator]:
    """Two independent generators for one seed: which rows are corrupted, and what they become.

    Spawned from ``SeedSequence(seed)``, so no stream of one seed is a stream of another (with
    ``default_rng(seed + 1)`` the contents of seed s were drawn as the rows of seed s + 1).
    """
    rows, contents = np.random.SeedSequence(seed).spawn(2)
    return np.random.default_rng(rows), np.random.default_rng(contents)


def _content_rng(seed: int) -> np.random.Generator:
    return _streams(seed)[1]


def _other_labels(labels: np.ndarray, classes: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """For each label, a different class drawn uniformly from ``classes``."""
    shift = rng.integers(1, classes.size, size=len(labels))
    return classes[(np.searchsorted(classes, labels) + shift) % classes.size]


def _poisoned_rows(
    y: np.ndarray, fraction: float, *, target: object, seed: int, eligible: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    """A backdoor's rows (drawn from rows not labelled ``target``) and the labels with them set to ``target``."""
    not_target = y != target
    mask = sample_rows(len(y), fraction, seed=seed, eligible=not_target if eligible is None else not_target & eligible)
    labels = y.copy()
    labels[mask] = target
    return mask, labels

"""Seeded corruptions with known ground truth, so a valuation method can be scored on finding them.

Every function takes a ``fraction`` of rows to corrupt and a ``seed``, never modifies its inputs,
and returns the corrupted data together with a boolean ``mask`` of the corrupted rows. ``eligible``
restricts which rows may be chosen (e.g. to keep corruptions disjoint). Functions that add rows
(duplicates, out-of-distribution) append them after the original rows; the mask covers all rows.
Confusion-based flips and per-annotator noise also take out-of-fold predicted ``probabilities`` of a
model trained on the clean labels, so that the wrong labels are the ones a model (and a person) confuses.
The reference set is never passed here: it stays clean.
"""

from __future__ import annotations

from collections.abc import Sequence
from numbers import Real

import numpy as np

from dataworth.checks import InputError, check_fraction, check_positive, count_noun

#: Visually confusable digit pairs used for class-confusion label noise.
DIGIT_CONFUSIONS: tuple[tuple[int, int], ...] = ((1, 7), (3, 8), (4, 9), (5, 6))


def sample_rows(
    n: int, fraction: float, *, seed: int, eligible: np.ndarray | None = None, log_weights: np.ndarray | None = None
) -> np.ndarray:
    """A boolean mask of ``round(fraction · n)`` rows drawn without replacement from ``eligible``:
    uniformly, or, given ``log_weights`` (one per row), one after another with probability
    ∝ exp(log_weight) among the rows left, drawn at once as the rows of largest log_weight + Gumbel
    noise (the Gumbel-top-k trick; Kool, van Hoof, Welling, "Stochastic Beams and Where to Find
    Them", ICML 2019)."""
    check_fraction(fraction, "fraction")
    eligible = np.ones(n, dtype=bool) if eligible is None else np.asarray(eligible, dtype=bool)
    candidates = np.flatnonzero(eligible)
    count = int(round(fraction * n))
    if count > candidates.size:
        raise InputError(f"cannot corrupt {count} rows: only {candidates.size} rows are eligible")
    rng = _streams(seed)[0]
    if log_weights is None:
        chosen = rng.choice(candidates, size=count, replace=False)
    else:
        keys = np.asarray(log_weights, dtype=np.float64)[candidates] + rng.gumbel(size=candidates.size)
        chosen = candidates[np.argsort(-keys, kind="stable")[:count]]
    mask = np.zeros(n, dtype=bool)
    mask[chosen] = True
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


def flip_to_second_choice(
    y: np.ndarray,
    fraction: float,
    *,
    probabilities: np.ndarray,
    seed: int,
    temperature: float = 0.1,
    eligible: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Confusion-based flips: ``fraction`` of the rows, preferably ambiguous ones, get the class a
    model finds most likely after their true one.

    ``probabilities`` (n × classes, columns in ``np.unique(y)`` order) are out-of-fold predicted
    probabilities of a model trained on the clean ``y``. With the margin
    m_i = p_i(y_i) − max_{c≠y_i} p_i(c) (in [−1, 1]; small or negative = ambiguous), rows are drawn
    without replacement with probability ∝ exp(−m_i / temperature) among those left
    (:func:`sample_rows` with ``log_weights``), and each drawn row becomes argmax_{c≠y_i} p_i(c).

    ``temperature`` = 0.1: each 0.1 less margin multiplies a row's weight by e, so a row the model
    finds a coin toss (m = 0) is e¹⁰ ≈ 22,000 times as likely as one it is sure of (m = 1): the
    flips concentrate on ambiguous rows, as an annotator's mistakes do, yet rows of similar margin
    stay interchangeable, and a large ``fraction`` still fills up with clearer rows once the
    ambiguous ones run out. As temperature → 0 it takes the smallest margins in order; → ∞, rows
    uniformly. On digits (1,437 training rows, standardized logistic regression, 5 folds) 10% flips
    have a mean margin of 0.20 at 0.1, against 0.16 in order and 0.86 uniformly.
    """
    check_positive(temperature, "temperature")
    classes, codes, probabilities = _class_codes(y, probabilities)
    rows = np.arange(len(y))
    others = probabilities.copy()
    others[rows, codes] = -np.inf
    second = others.argmax(axis=1)
    margin = probabilities[rows, codes] - others[rows, second]
    mask = sample_rows(len(y), fraction, seed=seed, eligible=eligible, log_weights=-margin / temperature)
    flipped = y.copy()
    flipped[mask] = classes[second[mask]]
    return flipped, mask


def annotator_noise(
    y: np.ndarray,
    fraction: float,
    *,
    probabilities: np.ndarray,
    seed: int,
    error_rate: float = 0.3,
    eligible: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Per-source noise: one annotator labelled a random share ``fraction / error_rate`` of the rows
    (``sample_rows(n, fraction / error_rate, seed=seed, eligible=eligible)``) and got ``error_rate``
    of them wrong: ``round(fraction · n)`` of its rows, drawn uniformly, always in the same way, class
    c becoming π(c) = argmax_{c'≠c} mean_{i: y_i=c} p_i(c'), the class a model confuses most with c
    (``probabilities`` as for :func:`flip_to_second_choice`). The mask marks the relabelled rows."""
    check_fraction(fraction, "fraction")
    if isinstance(error_rate, bool) or not isinstance(error_rate, Real) or not 0 < error_rate <= 1:
        raise InputError(f"error_rate must be a number in (0, 1]; got {error_rate!r}")
    if fraction > error_rate:
        raise InputError(
            f"an annotator who gets {error_rate:g} of its rows wrong corrupts at most that fraction of all rows: "
            f"the largest fraction allowed is {error_rate:g}; got {fraction:g}"
        )
    classes, codes, probabilities = _class_codes(y, probabilities)
    means = np.stack([probabilities[codes == c].mean(axis=0) for c in range(classes.size)])  # row c: mean p̂ on class c
    np.fill_diagonal(means, -np.inf)
    confused = means.argmax(axis=1)  # π as class indices
    annotated = np.flatnonzero(sample_rows(len(y), fraction / error_rate, seed=seed, eligible=eligible))
    wrong = _content_rng(seed).choice(annotated, size=int(round(fraction * len(y))), replace=False)
    flipped = y.copy()
    flipped[wrong] = classes[confused[codes[wrong]]]
    mask = np.zeros(len(y), dtype=bool)
    mask[wrong] = True
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


def _class_codes(y: np.ndarray, probabilities: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The classes of ``y`` (sorted), each row's class index, and ``probabilities`` as float64, checked
    to hold one finite row per label and one column per class."""
    classes, codes = np.unique(y, return_inverse=True)
    if classes.size < 2:
        raise InputError("label flips need at least 2 classes")
    probabilities = np.asarray(probabilities, dtype=np.float64)
    if probabilities.shape != (len(y), classes.size):
        raise InputError(
            f"probabilities must have one row per label and one column per class of y (sorted): shape "
            f"({len(y)}, {classes.size}); got {probabilities.shape}"
        )
    if not np.isfinite(probabilities).all():
        raise InputError("probabilities contain NaN or inf")
    return classes, codes, probabilities


def _poisoned_rows(
    y: np.ndarray, fraction: float, *, target: object, seed: int, eligible: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    """A backdoor's rows (drawn from rows not labelled ``target``) and the labels with them set to ``target``."""
    not_target = y != target
    mask = sample_rows(len(y), fraction, seed=seed, eligible=not_target if eligible is None else not_target & eligible)
    labels = y.copy()
    labels[mask] = target
    return mask, labels

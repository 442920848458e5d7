"""Calibrating per-row anomaly scores against a clean reference set, and combining them.

A training row's score ``s_i`` is compared with the same score computed, out of sample, for each of
the ``M`` clean reference rows (the *null* sample). If a clean training row and the reference rows are
exchangeable, the conformal p-value

    p_i = (1 + #{l : null_l at least as extreme as s_i}) / (M + 1)

satisfies P(p_i ≤ t) ≤ t (Vovk et al. 2005; Bates, Candès, Lei, Romano & Sesia, "Testing for outliers
with conformal p-values", Ann. Statist. 2023). Over the N training rows the Benjamini–Hochberg step-up
rule turns p-values into q-values,

    q_(k) = min_{j ≥ k} min(1, N p_(j) / j)          (p_(1) ≤ … ≤ p_(N))

— flagging every row with q ≤ α controls the false discovery rate at about α (Benjamini & Hochberg
1995; with conformal p-values, Bates et al. 2023). A score that carries no signal on a dataset (the
feature term under label flips) has p-values close to uniform over the training rows and q-values
close to 1, so it cannot outvote a term that does: that adaptivity is why the calibrated rule
combines terms better than z-scores over the (contaminated) training rows.
"""

from __future__ import annotations

import numpy as np

#: Scale of the within-tie ordering added to q-values (see :func:`combine_q_values`).
TIE_BREAK = 1e-9


def conformal_p_values(scores: np.ndarray, null: np.ndarray, *, upper: bool) -> np.ndarray:
    """``(1 + #{l : null_l ≥ s_i}) / (M + 1)`` (``upper``: large scores are anomalous), or with ``≤``."""
    null = np.sort(np.asarray(null, dtype=np.float64))
    if upper:
        count = null.size - np.searchsorted(null, scores, side="left")
    else:
        count = np.searchsorted(null, scores, side="right")
    return (count + 1.0) / (null.size + 1.0)


def benjamini_hochberg(p: np.ndarray) -> np.ndarray:
    """Benjamini–Hochberg q-values ``q_(k) = min_{j ≥ k} min(1, N p_(j) / j)`` in the order of ``p``."""
    n = p.size
    order = np.argsort(p, kind="stable")
    ratios = p[order] * n / np.arange(1, n + 1)
    q = np.empty(n)
    q[order] = np.minimum(np.minimum.accumulate(ratios[::-1])[::-1], 1.0)
    return q


def null_z_scores(scores: np.ndarray, null: np.ndarray) -> np.ndarray:
    """``(s − median(null)) / (1.4826 · MAD(null))``: how far into the null's tail a score lies, in
    robust standard deviations of the clean reference rows (their standard deviation if MAD = 0; zeros
    if the null is constant)."""
    center = np.median(null)
    scale = 1.4826 * np.median(np.abs(null - center))
    if scale == 0:
        scale = null.std()
    return np.zeros_like(scores, dtype=np.float64) if scale == 0 else (scores - center) / scale


def combine_q_values(q_values: list[np.ndarray], z_scores: list[np.ndarray]) -> np.ndarray:
    """A row's value: its smallest q-value over the terms (higher = cleaner).

    Rows with equal smallest q-value (all rows at q = 1, and rows whose p-values are all at the
    floor 1/(M + 1)) are ordered by the smallest null z-score, oriented so that lower is more
    anomalous, added as ``TIE_BREAK · tanh(z / 10)``; it can reorder only rows whose q-values differ
    by less than 2·10⁻⁹, far below what separates the evidence of two rows.
    """
    q = np.minimum.reduce(q_values)
    z = np.minimum.reduce(z_scores)
    return q + TIE_BREAK * np.tanh(z / 10.0)

"""Conformal p-values and Benjamini–Hochberg q-values against direct definitions and SciPy."""

import numpy as np
import pytest
from scipy.stats import false_discovery_control

from dataworth.valuation.calibration import (
    TIE_BREAK,
    benjamini_hochberg,
    combine_q_values,
    conformal_p_values,
    null_z_scores,
)


@pytest.mark.parametrize("upper", [True, False])
def test_p_values_count_the_null_at_least_as_extreme_ties_included(upper):
    rng = np.random.default_rng(0)
    null = rng.integers(0, 20, size=37).astype(float)  # many ties
    scores = np.concatenate([rng.integers(-2, 23, size=60).astype(float), null[:5]])
    got = conformal_p_values(scores, null, upper=upper)
    expected = [(1 + sum((v >= s) if upper else (v <= s) for v in null)) / (len(null) + 1) for s in scores]
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-15)


def test_p_values_of_exchangeable_scores_are_uniform():
    """Validity: a score drawn like the null has P(p ≤ t) ≈ t (exactly ≤ t in expectation)."""
    rng = np.random.default_rng(1)
    p = np.concatenate([conformal_p_values(rng.normal(size=200), rng.normal(size=199), upper=True) for _ in range(50)])
    for t in (0.05, 0.1, 0.5):
        assert abs((p <= t).mean() - t) < 0.015, t


def test_q_values_equal_scipys_benjamini_hochberg():
    rng = np.random.default_rng(2)
    p = np.concatenate([rng.uniform(size=300), rng.uniform(0, 0.01, size=40), np.full(10, 1 / 41)])
    np.testing.assert_allclose(benjamini_hochberg(p), false_discovery_control(p, method="bh"), rtol=1e-12)


def test_q_values_follow_the_step_up_definition():
    """q_(k) = min over j ≥ k of min(1, N p_(j) / j), written out for a small case."""
    p = np.array([0.04, 0.001, 0.03, 0.5, 0.02])
    ordered = np.sort(p)
    raw = [min(1.0, len(p) * ordered[j] / (j + 1)) for j in range(len(p))]
    q_sorted = [min(raw[k:]) for k in range(len(p))]
    np.testing.assert_allclose(benjamini_hochberg(p), np.array(q_sorted)[np.argsort(np.argsort(p, kind="stable"))])


def test_null_z_scores_use_the_null_median_and_mad():
    null = np.array([0.0, 1.0, 2.0, 3.0, 10.0])
    np.testing.assert_allclose(null_z_scores(np.array([2.0, 4.0]), null), [0.0, 2.0 / 1.4826])
    assert (null_z_scores(np.array([5.0]), np.zeros(4)) == 0).all()


def test_combined_value_is_the_smaller_q_and_ties_follow_the_z_score():
    qf, qr = np.array([1.0, 0.2, 1.0, 1.0]), np.array([1.0, 0.5, 0.01, 1.0])
    zf, zr = np.array([0.5, 0.0, 0.0, -3.0]), np.array([0.0, 0.0, 0.0, 0.0])
    values = combine_q_values([qf, qr], [zf, zr])
    np.testing.assert_allclose(values, [1.0, 0.2, 0.01, 1.0], atol=2 * TIE_BREAK)
    assert values[3] < values[0]  # tied at q = 1: the row further into the null's tail ranks lower

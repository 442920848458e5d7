"""Detection metrics against hand-computed answers; removal curves against a planted effect."""

import numpy as np
import pytest
from sklearn.datasets import load_digits

from dataworth import InputError
from dataworth.evaluation.corruptions import flip_labels
from dataworth.evaluation.metrics import detection_auprc, detection_auroc, detection_rate, removal_curve, two_means_f1


def test_detection_metrics_on_a_hand_checked_ranking():
    values = np.array([0.1, 0.2, 0.9, 0.8, 0.3, 0.7])
    corrupted = np.array([True, False, False, False, True, False])
    # pairs (corrupted, clean) ranked correctly: row0 beats all 4 clean; row4 beats 3 of 4 (not row1)
    assert detection_auroc(values, corrupted) == pytest.approx(7 / 8)
    # ranking by -value: row0 (hit), row1 (miss), row4 (hit): AP = (1/1 + 2/3) / 2
    assert detection_auprc(values, corrupted) == pytest.approx((1 + 2 / 3) / 2)
    assert detection_rate(values, corrupted) == pytest.approx(0.5)  # lowest 2 = rows 0, 1
    assert detection_rate(values, corrupted, fraction=0.5) == pytest.approx(1.0)  # lowest 3 hold both


def test_two_means_f1_splits_a_bimodal_distribution():
    rng = np.random.default_rng(0)
    values = np.concatenate([rng.normal(-5, 0.1, 10), rng.normal(0, 0.1, 90)])
    corrupted = np.arange(100) < 10
    assert two_means_f1(values, corrupted) == 1.0
    assert two_means_f1(values, np.arange(100) >= 90) == 0.0


def test_metrics_refuse_degenerate_masks():
    with pytest.raises(InputError, match="both corrupted and clean rows"):
        detection_auroc(np.ones(3), np.zeros(3, dtype=bool))
    with pytest.raises(InputError, match="must be 1-D of one length"):
        detection_auroc(np.ones(3), np.zeros(4, dtype=bool))


def test_removing_planted_label_noise_helps_and_removing_clean_rows_hurts():
    X, y = load_digits(return_X_y=True)
    train, test = slice(0, 1000), slice(1000, None)
    y_noisy, flipped = flip_labels(y[train], 0.3, seed=0)
    oracle = np.where(flipped, -1.0, 1.0)  # an oracle valuation: corrupted rows lowest
    fractions = (0.0, 0.3)
    low = removal_curve(oracle, X[train], y_noisy, X[test], y[test], fractions=fractions, remove="lowest")
    high = removal_curve(oracle, X[train], y_noisy, X[test], y[test], fractions=fractions, remove="highest")
    assert low[0] == high[0]
    assert low[1] > low[0] + 0.03 and high[1] < high[0]
    with pytest.raises(InputError, match="model must be one of"):
        removal_curve(oracle, X[train], y_noisy, X[test], y[test], model="forest")

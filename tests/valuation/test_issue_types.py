"""Issue types: the rules on hand-made evidence, and the whole chain on a planted mix with ground truth."""

import numpy as np
import pandas as pd
import pytest

from dataworth import InputError, Kairos, ValuationResult
from dataworth.valuation.issue_types import assign_issue_types


def test_rules_in_order():
    """Row 0 clean; 1 near-duplicate of 0; 2 label only; 3 feature with a clean nearest row (outlier);
    4 and 5 feature, each the other's nearest row (a group: out-of-distribution); 6 label and feature
    both flagged -> the features come first; 7 flagged by neither; 8 flagged by the label term only but
    with features 4.5 robust standard deviations out -> the features come first."""
    q_feature = np.array([1.0, 0.5, 1.0, 0.01, 0.02, 0.02, 0.05, 0.2, 1.0])
    q_label = np.array([1.0, 0.03, 0.02, 1.0, 1.0, 1.0, 0.04, 0.3, 0.02])
    z_feature = np.array([0.0, 0.0, 0.0, -1.0, -1.0, -1.0, 0.0, -5.0, -4.5])
    distance = np.array([0.001, 0.001, 5.0, 6.0, 3.0, 3.0, 5.0, 5.0, 5.0])
    nearest = np.array([1, 0, 0, 0, 5, 4, 0, 0, 0])
    null = np.linspace(2.0, 8.0, 99)  # clean rows are never closer than 2 to the training set
    table = assign_issue_types(
        np.minimum(q_feature, q_label), q_feature=q_feature, q_label=q_label, z_feature=z_feature,
        neighbour_distance=distance, neighbour_index=nearest, neighbour_null=null, threshold=0.1,
    )
    assert table["issue"].tolist() == ["", "near-duplicate", "label", "feature-outlier", "out-of-distribution",
                                       "out-of-distribution", "feature-outlier", "", "feature-outlier"]
    assert table["duplicate_of"].tolist() == [-1, 0, -1, -1, -1, -1, -1, -1, -1]
    np.testing.assert_array_equal(table["issue_q"][2:], [0.02, 0.01, 0.02, 0.02, 0.04, np.nan, 0.02])
    assert np.isnan(table["issue_q"][0]) and table["issue_q"][1] < 0.1  # the duplicate test's q


def planted_mix(seed: int):
    """Ten overlapping Gaussian classes in 32-d (like embeddings); of 1,000 training rows 50 get another
    label and 50 Gaussian noise of 2 standard deviations per feature; 50 near-copies of clean rows with
    another label and 50 rows of an eleventh cluster far from the others (random labels) are appended."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(scale=0.7, size=(10, 32))
    y, y_ref = rng.integers(0, 10, 1000), rng.integers(0, 10, 400)
    X, Z = centers[y] + rng.normal(size=(1000, 32)), centers[y_ref] + rng.normal(size=(400, 32))
    truth = np.full(1000, "", dtype=object)
    order = rng.permutation(1000)
    flip, noise, source = order[:50], order[50:100], order[100:150]
    y[flip] = (y[flip] + rng.integers(1, 10, 50)) % 10
    truth[flip] = "label"
    X[noise] += 2.0 * X.std(axis=0) * rng.normal(size=(50, 32))
    truth[noise] = "feature-outlier"
    copies = X[source] + 0.01 * rng.normal(size=(50, 32))
    ood = rng.normal(scale=3.0, size=32) + rng.normal(size=(50, 32))
    X = np.vstack([X, copies, ood])
    y = np.concatenate([y, (y[source] + 1) % 10, rng.integers(0, 10, 50)])
    truth = np.concatenate([truth, ["near-duplicate"] * 50, ["out-of-distribution"] * 50])
    return X, y, Z, y_ref, truth, source


@pytest.mark.parametrize("seed", [0, 1])
def test_the_type_is_right_for_nine_in_ten_detected_rows_of_each_kind(seed):
    X, y, Z, y_ref, truth, source = planted_mix(seed)
    est = Kairos()
    est.fit(X, y, reference=(Z, y_ref))
    issues = est.describe_issues()
    assigned = issues["issue"].to_numpy()
    for kind in ("label", "feature-outlier", "near-duplicate", "out-of-distribution"):
        rows = (truth == kind) & (assigned != "")
        assert rows.sum() >= 30, kind  # most are detected at q ≤ 0.1
        assert (assigned[rows] == kind).mean() >= 0.9, (kind, pd.Series(assigned[rows]).value_counts().to_dict())
    copies = np.flatnonzero(truth == "near-duplicate")
    found = assigned[copies] == "near-duplicate"
    assert (issues["duplicate_of"].to_numpy()[copies][found] == source[found]).all()
    assert (assigned[truth == ""] != "").mean() < 0.05  # few clean rows flagged
    pd.testing.assert_frame_equal(est.result_.issues, issues)


def test_issue_columns_are_written_and_read_back(tmp_path):
    X, y, Z, y_ref, _, _ = planted_mix(0)
    est = Kairos().fit(X, y, reference=(Z, y_ref))
    est.describe_issues()
    for suffix in (".csv", ".parquet"):
        est.result_.save(tmp_path / f"r{suffix}")
        back = ValuationResult.load(tmp_path / f"r{suffix}")
        pd.testing.assert_frame_equal(back.issues, est.result_.issues)
        assert "issue" not in back.components


def test_issues_need_a_fitted_estimator_with_two_reference_rows():
    X, y, Z, y_ref, _, _ = planted_mix(0)
    with pytest.raises(InputError, match="at least 2 reference rows"):
        Kairos(combine="worst").fit(X, np.zeros(len(X), int), reference=(Z[:1], np.zeros(1, int))).describe_issues()
    with pytest.raises(InputError, match="threshold"):
        Kairos().fit(X, y, reference=(Z, y_ref)).describe_issues(threshold=0)

"""KAIROS against ground truth: brute-force LOO MMD², batch refits, direct solves."""

import numpy as np
import pytest
import torch

from dataworth import DataworthWarning, InputError, Kairos, value
from dataworth.kernels import make_kernel
from mmd_oracle import dense_kernel, loo_effects
from noisy_digits import clean_labels, noisy_digits


@pytest.mark.parametrize("label_kernel", ["none", "indicator"])
@pytest.mark.parametrize("kernel", ["gaussian", "laplace", "imq"])
def test_feature_term_equals_brute_force_leave_one_out(planted, kernel, label_kernel):
    X, y, Z, y_ref = planted
    est = Kairos(kernel=kernel, label_kernel=label_kernel).fit(X, y, reference=(Z, y_ref))
    expected = loo_effects(X, y, Z, y_ref, make_kernel(kernel, est.bandwidth_), label_kernel)
    # Laplace takes a square root of the expanded ||x||² + ||y||² − 2x·y: at exact duplicates its
    # ~1e-14 rounding becomes ~1e-7 in k, i.e. ~1e-10 in the O(1/N²) values.
    np.testing.assert_allclose(est.feature_values_, expected, rtol=0, atol=1e-9 if kernel == "laplace" else 1e-10)


@pytest.mark.parametrize("label_kernel", ["none", "indicator"])
def test_values_do_not_depend_on_the_tiling(label_kernel):
    """The smallest tiles (128 × 128: 6 row tiles, a ragged last one, symmetric and reference blocks)
    give what one tile over everything gives."""
    rng = np.random.default_rng(3)
    X, Z = rng.normal(size=(700, 5)), rng.normal(size=(300, 5))
    y, y_ref = rng.integers(0, 4, 700), rng.integers(0, 4, 300)
    whole = Kairos(label_kernel=label_kernel).fit(X, y, reference=(Z, y_ref))
    tiny = Kairos(label_kernel=label_kernel, memory_budget=1).fit(X, y, reference=(Z, y_ref))
    np.testing.assert_allclose(tiny.feature_values_, whole.feature_values_, rtol=0, atol=1e-14)
    np.testing.assert_allclose(tiny.label_residuals_, whole.label_residuals_, rtol=0, atol=1e-12)


@pytest.mark.parametrize("label_kernel", ["none", "indicator"])  # one pass with the reference sums, or its own
def test_label_residual_equals_direct_solve(planted, label_kernel):
    X, y, Z, y_ref = planted
    alpha = 1e-3
    est = Kairos(label_ridge=alpha, label_kernel=label_kernel).fit(X, y, reference=(Z, y_ref))
    k = make_kernel("gaussian", est.bandwidth_)
    K_zz, K_xz = dense_kernel(k, Z, Z), dense_kernel(k, X, Z)
    Y = np.eye(3)[y_ref]
    mu = K_xz @ np.linalg.solve(K_zz + len(Z) * alpha * np.eye(len(Z)), Y)
    expected = np.linalg.norm(np.eye(3)[y] - mu, axis=1)
    np.testing.assert_allclose(est.label_residuals_, expected, rtol=0, atol=1e-8)


def test_logistic_residual_matches_sklearn_probabilities(planted):
    from sklearn.linear_model import LogisticRegression

    X, y, Z, y_ref = planted
    est = Kairos.paper().fit(X, y, reference=(Z, y_ref))
    proba = LogisticRegression(max_iter=2000).fit(Z, y_ref).predict_proba(X)
    np.testing.assert_allclose(est.label_residuals_, np.linalg.norm(np.eye(3)[y] - proba, axis=1), atol=1e-12)
    n = len(X)  # the raw blend takes the exact LOO term at O(1) scale, (N − 1)·feature (the distributional influence)
    np.testing.assert_allclose(est.values_, 0.97 * (n - 1) * est.feature_values_ - 0.03 * est.label_residuals_, atol=1e-14)


def test_binary_logistic_residual(planted):
    from sklearn.linear_model import LogisticRegression

    X, y, Z, y_ref = planted
    y, y_ref = y % 2, y_ref % 2
    est = Kairos(label_model="logistic").fit(X, y, reference=(Z, y_ref))
    proba = LogisticRegression(max_iter=2000).fit(Z, y_ref).predict_proba(X)
    np.testing.assert_allclose(est.label_residuals_, np.linalg.norm(np.eye(2)[y] - proba, axis=1), atol=1e-12)


@pytest.mark.parametrize("label_kernel", ["none", "indicator"])
@pytest.mark.parametrize("label_model", ["embedding", "logistic"])
@pytest.mark.parametrize("m", [1, 7, 55])
def test_add_equals_batch_fit(planted, label_kernel, label_model, m):
    X, y, Z, y_ref = planted
    rng = np.random.default_rng(m)
    extra = rng.integers(0, 3, size=m)
    X_new = Z[rng.integers(0, len(Z), size=m)] + rng.normal(size=(m, 4))
    X_new[0] = X[5]  # a duplicate of an existing row
    params = dict(label_kernel=label_kernel, label_model=label_model, bandwidth=2.5)
    online = Kairos(**params).fit(X, y, reference=(Z, y_ref)).add(X_new, extra)
    batch = Kairos(**params).fit(np.vstack([X, X_new]), np.concatenate([y, extra]), reference=(Z, y_ref))
    assert online.values_.shape == (len(X) + m,)
    np.testing.assert_allclose(online.feature_values_, batch.feature_values_, rtol=0, atol=1e-10)
    np.testing.assert_allclose(online.label_residuals_, batch.label_residuals_, rtol=0, atol=1e-10)
    np.testing.assert_allclose(online.values_, batch.values_, rtol=0, atol=1e-10)


@pytest.mark.parametrize("label_kernel", ["none", "indicator"])
def test_reference_null_equals_brute_force(planted, label_kernel):
    """The reference rows' own scores: kernel sums over the training and reference rows (within a class
    for the indicator kernel), and kernel ridge residuals from refits that leave each reference row out
    (ridge λ = Mα held fixed)."""
    X, y, Z, y_ref = planted
    alpha = 1e-2
    est = Kairos(label_kernel=label_kernel, label_ridge=alpha).fit(X, y, reference=(Z, y_ref))
    k = make_kernel("gaussian", est.bandwidth_)
    same = (lambda a, b: a[:, None] == b[None, :]) if label_kernel == "indicator" else (lambda a, b: 1.0)
    np.testing.assert_allclose(est._ref_train_sums.numpy(), (dense_kernel(k, Z, X) * same(y_ref, y)).sum(1), atol=1e-12)
    np.testing.assert_allclose(est._ref_ref_sums.numpy(), (dense_kernel(k, Z, Z) * same(y_ref, y_ref)).sum(1), atol=1e-12)
    K, Y, lam = dense_kernel(k, Z, Z), np.eye(3)[y_ref], len(Z) * alpha
    loo = []
    for i in range(len(Z)):
        keep = np.arange(len(Z)) != i
        weights = np.linalg.solve(K[np.ix_(keep, keep)] + lam * np.eye(len(Z) - 1), Y[keep])
        loo.append(np.linalg.norm(Y[i] - K[i, keep] @ weights))
    np.testing.assert_allclose(est._ref_residuals, loo, rtol=1e-8)


def test_logistic_reference_null_is_cross_fitted_like_sklearn(planted):
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    X, y, Z, y_ref = planted
    est = Kairos(label_model="logistic").fit(X, y, reference=(Z, y_ref))
    folds = StratifiedKFold(min(5, np.bincount(y_ref).min()), shuffle=True, random_state=0)
    proba = cross_val_predict(LogisticRegression(max_iter=2000), Z, y_ref, cv=folds, method="predict_proba")
    np.testing.assert_allclose(est._ref_residuals, np.linalg.norm(np.eye(3)[y_ref] - proba, axis=1), atol=1e-10)


@pytest.mark.parametrize("label_kernel", ["none", "indicator"])
def test_calibrated_values_equal_an_independent_computation(planted, label_kernel):
    """Witness, reference-density and residual p-values counted against the reference null, the two
    feature p-values merged by Bonferroni, SciPy's BH, the smaller q."""
    from scipy.stats import false_discovery_control

    X, y, Z, y_ref = planted
    est = Kairos(label_kernel=label_kernel).fit(X, y, reference=(Z, y_ref))
    k = make_kernel("gaussian", est.bandwidth_)
    same = (lambda a, b: a[:, None] == b[None, :]) if label_kernel == "indicator" else (lambda a, b: 1.0)
    n, m = len(X), len(Z)
    K_xx, K_xz, K_zz = (dense_kernel(k, a, b) * same(ya, yb) for a, ya, b, yb in
                        ((X, y, X, y), (X, y, Z, y_ref), (Z, y_ref, Z, y_ref)))
    witness = K_xz.mean(1) - (K_xx.sum(1) - 1) / (n - 1)
    null = (K_zz.sum(1) - 1) / (m - 1) - K_xz.sum(0) / n
    density, density_null = K_xz.mean(1), (K_zz.sum(1) - 1) / (m - 1)
    p_witness = np.array([(1 + (null <= w).sum()) / (m + 1) for w in witness])
    p_density = np.array([(1 + (density_null <= d).sum()) / (m + 1) for d in density])
    p_feature = np.minimum(1, 2 * np.minimum(p_witness, p_density))
    p_label = np.array([(1 + (est._ref_residuals >= r).sum()) / (m + 1) for r in est.label_residuals_])
    q_feature, q_label = false_discovery_control(p_feature, method="bh"), false_discovery_control(p_label, method="bh")
    components = est.result_.components
    np.testing.assert_allclose(components["feature_q"], q_feature, rtol=1e-10)
    np.testing.assert_allclose(components["label_q"], q_label, rtol=1e-10)
    np.testing.assert_allclose(est.values_, np.minimum(q_feature, q_label), atol=1e-8)


def test_calibrated_q_values_are_valid_on_clean_data():
    """Training and reference rows drawn alike: about a fraction t of the p-values fall below t, and
    Benjamini–Hochberg flags (almost) nothing at q ≤ 0.1."""
    rng = np.random.default_rng(11)
    centers = rng.normal(scale=3.0, size=(4, 6))
    y, y_ref = rng.integers(0, 4, 1500), rng.integers(0, 4, 500)
    X, Z = centers[y] + rng.normal(size=(1500, 6)), centers[y_ref] + rng.normal(size=(500, 6))
    est = Kairos().fit(X, y, reference=(Z, y_ref))
    for term in ("feature_q", "label_q"):
        assert (est.result_.components[term] <= 0.1).mean() < 0.01, term


def test_calibrated_rule_keeps_the_label_term_under_heavy_label_noise():
    """The failure the rule was made for: at 30% flips min(z(feature), −z(residual)) over the
    contaminated rows lost ~0.1 AUROC to the label term alone; the calibrated rule must not."""
    from dataworth.evaluation.datasets import load_evaluation_set
    from dataworth.evaluation.detection import make_task
    from dataworth.evaluation.metrics import detection_auroc

    for seed in range(3):  # wine, 40% of the training labels flipped: label alone 0.997, worst 0.888 (mean)
        task = make_task(load_evaluation_set("wine"), "label-flip", 0.4, seed=seed)
        calibrated = Kairos().fit(task.X, task.y, reference=(task.X_ref, task.y_ref))
        worst = Kairos(combine="worst").fit(task.X, task.y, reference=(task.X_ref, task.y_ref))
        auroc = detection_auroc(calibrated.values_, task.corrupted)
        assert auroc >= detection_auroc(calibrated.term_values("label"), task.corrupted) - 0.005
        assert auroc > detection_auroc(worst.values_, task.corrupted) + 0.03


def test_calibrated_rule_needs_two_reference_rows(planted):
    X, _, Z, y_ref = planted
    one_class = np.full(len(X), y_ref[0])
    with pytest.raises(InputError, match="at least 2 reference rows"):
        Kairos().fit(X, one_class, reference=(Z[:1], y_ref[:1]))
    assert np.isfinite(Kairos(combine="worst").fit(X, one_class, reference=(Z[:1], y_ref[:1])).values_).all()


def test_add_keeps_the_median_bandwidth_of_fit(planted):
    X, y, Z, y_ref = planted
    est = Kairos().fit(X, y, reference=(Z, y_ref))
    bandwidth = est.bandwidth_
    est.add(X[:5] * 10, y[:5])
    assert est.bandwidth_ == bandwidth
    batch = Kairos(bandwidth=bandwidth).fit(np.vstack([X, X[:5] * 10]), np.concatenate([y, y[:5]]), reference=(Z, y_ref))
    np.testing.assert_allclose(est.values_, batch.values_, atol=1e-10)


@pytest.mark.parametrize("label_kernel", ["none", "indicator"])
def test_values_are_invariant_to_permuting_training_rows(label_kernel):
    rng = np.random.default_rng(3)
    X = rng.normal(size=(300, 5))  # 44,850 pairs: the bandwidth uses a sample of 10,000
    y = rng.integers(0, 4, 300)
    Z, y_ref = rng.normal(size=(60, 5)), rng.integers(0, 4, 60)
    perm = rng.permutation(300)
    a = Kairos(label_kernel=label_kernel).fit(X, y, reference=(Z, y_ref))
    b = Kairos(label_kernel=label_kernel).fit(X[perm], y[perm], reference=(Z, y_ref))
    assert a.bandwidth_ == b.bandwidth_
    np.testing.assert_allclose(b.values_, a.values_[perm], rtol=0, atol=1e-12)


def test_same_seed_same_numbers_and_seed_matters():
    rng = np.random.default_rng(4)
    X, Z = rng.normal(size=(300, 5)), rng.normal(size=(40, 5))
    first = Kairos(seed=1).fit(X, reference=Z)
    again = Kairos(seed=1).fit(X, reference=Z)
    other = Kairos(seed=2).fit(X, reference=Z)
    np.testing.assert_array_equal(first.values_, again.values_)
    assert other.bandwidth_ != first.bandwidth_


def test_median_bandwidth_uses_all_pairs_when_few():
    rng = np.random.default_rng(5)
    X = rng.normal(size=(30, 3))
    from scipy.spatial.distance import pdist

    est = Kairos().fit(X, reference=X[:10])
    assert est.bandwidth_ == pytest.approx(0.5 * np.median(pdist(X)), rel=1e-12)
    assert Kairos(bandwidth_scale=1.0).fit(X, reference=X[:10]).bandwidth_ == pytest.approx(np.median(pdist(X)), rel=1e-12)


def test_without_labels_values_are_the_feature_term(planted):
    X, _, Z, _ = planted
    est = Kairos().fit(X, reference=Z)
    assert est.label_residuals_ is None
    np.testing.assert_array_equal(est.values_, est.feature_values_)


def test_combination_rules(planted):
    """The z-scores against SciPy's robust scale (median_abs_deviation, normal consistency 1/Φ⁻¹(3/4))."""
    from scipy.stats import median_abs_deviation

    X, y, Z, y_ref = planted
    est = Kairos(combine="zscore", feature_weight=0.3).fit(X, y, reference=(Z, y_ref))
    f, r = est.feature_values_, est.label_residuals_
    zf = (f - np.median(f)) / median_abs_deviation(f, scale="normal")
    zr = (r - np.median(r)) / median_abs_deviation(r, scale="normal")
    np.testing.assert_allclose(est.values_, 0.3 * zf - 0.7 * zr, rtol=1e-5)  # 1.4826 vs 1.482602...
    worst = Kairos(combine="worst").fit(X, y, reference=(Z, y_ref))
    np.testing.assert_allclose(worst.values_, np.minimum(zf, -zr), rtol=1e-5)


def test_the_default_rule_puts_planted_corruptions_lowest():
    """Behaviour, not the formula: a row between the classes and a typical row with a wrong label come lowest
    (a sign error or max instead of min in the rule would not)."""
    rng = np.random.default_rng(4)
    centers = np.array([[0.0, 0.0], [8.0, 0.0], [0.0, 8.0]])
    y_ref = np.repeat([0, 1, 2], 60)
    Z = centers[y_ref] + rng.normal(size=(180, 2))
    y = np.repeat([0, 1, 2], 60)
    X = centers[y] + rng.normal(size=(180, 2))
    X[5] = [4.0, 4.0]  # off the data, between the classes
    y[70] = 2  # a typical class-1 row with a wrong label
    assert set(Kairos().fit(X, y, reference=(Z, y_ref)).result_.lowest(2)) == {5, 70}


def test_robust_zscore_falls_back_when_most_values_tie():
    """The z-scores of the z-score rules (a null sample equal to the values): MAD = 0 -> std; constant -> 0."""
    from dataworth.valuation.calibration import null_z_scores

    ties = np.array([1.0, 1.0, 1.0, 1.0, 5.0])
    np.testing.assert_allclose(null_z_scores(ties, ties), (ties - 1.0) / ties.std())
    np.testing.assert_array_equal(null_z_scores(np.ones(4), np.ones(4)), np.zeros(4))


def test_float32_input_stays_close_to_float64(planted):
    X, y, Z, y_ref = planted
    exact = Kairos(bandwidth=3.0).fit(X, y, reference=(Z, y_ref))
    fast = Kairos(bandwidth=3.0).fit(X.astype(np.float32), y, reference=(Z.astype(np.float32), y_ref))
    scale = np.abs(exact.feature_values_).max()
    np.testing.assert_allclose(fast.feature_values_, exact.feature_values_, rtol=0, atol=1e-4 * scale)
    np.testing.assert_allclose(fast.label_residuals_, exact.label_residuals_, rtol=0, atol=1e-4)


@pytest.mark.parametrize(("given", "computed"), [(np.float64, np.float32), (np.float32, np.float64)])
def test_precision_computes_as_if_the_data_came_in_that_dtype(planted, given, computed):
    X, y, Z, y_ref = planted
    X, Z = X.astype(given), Z.astype(given)
    est = Kairos(precision=np.dtype(computed).name).fit(X, y, reference=(Z, y_ref))
    same = Kairos().fit(X.astype(computed), y, reference=(Z.astype(computed), y_ref))
    np.testing.assert_array_equal(est.values_, same.values_)
    assert est._x.dtype == getattr(torch, np.dtype(computed).name)
    est.add(X[:3].astype(given), y[:3])  # new rows follow the state's precision
    assert est._x.dtype == getattr(torch, np.dtype(computed).name)


def test_values_beyond_float32_are_refused_not_made_infinite(planted):
    """Rows are rescaled by a power of two before the cast, so float32 holds any one scale (tested: X × 2^200),
    but not a spread of scales wider than float32's: that is refused, not flushed to 0 or inf."""
    X, y, Z, y_ref = planted
    big = X.copy()
    big[5, 1] = 1e39
    with pytest.raises(InputError, match=r"values of the training set span more than float32 can hold \(largest \|value\| 1e\+39, "
                                         r"smallest non-zero .*\); use precision='float64'"):
        Kairos(precision="float32").fit(big, y, reference=(Z, y_ref))
    huge = Kairos(precision="float32").fit(X * 2.0**200, y, reference=(Z * 2.0**200, y_ref))
    np.testing.assert_array_equal(huge.values_, Kairos(precision="float32").fit(X, y, reference=(Z, y_ref)).values_)
    est = Kairos().fit(X.astype(np.float32), y, reference=(Z.astype(np.float32), y_ref))
    with pytest.raises(InputError, match=r"the added set reaches \|value\| 1e\+39, far beyond the fitted rows"):
        est.add(big[:6], y[:6])
    with pytest.raises(InputError, match=r"values of the added set exceed the float32 range"):
        est.add(np.full((2, 4), 1e300), y[:2])
    with pytest.raises(InputError, match="precision must be one of input, float32, float64; got 'half'"):
        Kairos(precision="half").fit(X, y, reference=(Z, y_ref))


def test_state_round_trip_then_add(planted, tmp_path):
    X, y, Z, y_ref = planted
    y_str, y_ref_str = np.array(["a", "b", "c"])[y], np.array(["a", "b", "c"])[y_ref]
    est = Kairos(label_kernel="indicator").fit(X[:30], y_str[:30], reference=(Z, y_ref_str))
    est.save_state(tmp_path / "state.npz")
    loaded = Kairos.load_state(tmp_path / "state.npz")
    np.testing.assert_array_equal(loaded.values_, est.values_)
    assert loaded.get_params() == est.get_params()
    loaded.add(X[30:], y_str[30:])
    batch = Kairos(label_kernel="indicator", bandwidth=est.bandwidth_).fit(X, y_str, reference=(Z, y_ref_str))
    np.testing.assert_allclose(loaded.values_, batch.values_, atol=1e-10)


def test_value_entry_point(planted):
    X, y, Z, y_ref = planted
    result = value(X, y, reference=(Z, y_ref), method="kairos", label_kernel="indicator")
    est = Kairos(label_kernel="indicator").fit(X, y, reference=(Z, y_ref))
    np.testing.assert_array_equal(result.values, est.values_)
    assert result.method == "kairos" and set(result.components) == {"feature", "label_residual", "feature_q", "label_q"}


def test_kairos_finds_planted_label_noise():
    """On digits with 10% flipped labels the flipped rows get the lowest values (measured: AUROC 0.997, 67 of
    the 71 lowest rows flipped), and it is the flips that make them low: with their true labels back, the
    same rows rank like any others."""
    from sklearn.metrics import roc_auc_score

    X, y, X_ref, y_ref, flipped = noisy_digits(n_ref=300, n_train=600, fraction=0.1)
    est = Kairos().fit(X, y, reference=(X_ref, y_ref))
    assert roc_auc_score(flipped, -est.values_) > 0.99
    assert flipped[est.result_.lowest(flipped.sum())].mean() > 0.9
    restored = Kairos().fit(X, clean_labels(n_ref=300, n_train=600), reference=(X_ref, y_ref))
    assert abs(roc_auc_score(flipped, -restored.values_) - 0.5) < 0.1


# ---------------------------------------------------------------- hardening regressions
def test_fitted_state_does_not_alias_the_callers_arrays(planted):
    X, y, Z, y_ref = planted
    X_fit, Z_fit = X[:30].copy(), Z.copy()
    est = Kairos().fit(X_fit, y[:30], reference=(Z_fit, y_ref))
    X_fit *= 3.0
    Z_fit *= 3.0
    est.add(X[30:], y[30:])
    batch = Kairos(bandwidth=est.bandwidth_).fit(X, y, reference=(Z, y_ref))
    np.testing.assert_allclose(est.values_, batch.values_, rtol=0, atol=1e-10)


@pytest.mark.parametrize("factor", [2.0**600, 2.0**-600, 1e200, 1e-200])
def test_values_are_invariant_to_the_scale_of_the_features(planted, factor):
    """KAIROS with the median bandwidth depends on distances relative to their median only; features ~1e±200
    used to overflow or underflow (an error about the bandwidth)."""
    X, y, Z, y_ref = planted
    base = Kairos().fit(X, y, reference=(Z, y_ref))
    scaled = Kairos().fit(X * factor, y, reference=(Z * factor, y_ref))
    np.testing.assert_allclose(scaled.values_, base.values_, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(scaled.bandwidth_ / factor, base.bandwidth_, rtol=1e-12)
    scaled.add(X[:3] * factor, y[:3])
    np.testing.assert_allclose(scaled.values_, base.add(X[:3], y[:3]).values_, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("bandwidth", [1e-3, 1e20])
def test_a_constant_kernel_is_warned_about(planted, bandwidth):
    X, y, Z, y_ref = planted
    X, y = X[13:], y[13:]  # no exact duplicates: every kernel value between rows is exactly 0 (or 1)
    with pytest.warns(DataworthWarning, match=r"all 27 KAIROS feature values are equal.*bandwidth .* is far (below|above) the median"):
        Kairos(bandwidth=bandwidth).fit(X, y, reference=(Z, y_ref))
    with pytest.raises(InputError, match=r"the kernel would be constant between rows; use bandwidth='median'"):
        Kairos(bandwidth=1e-300).fit(X, y, reference=(Z, y_ref))
    with pytest.raises(InputError, match=r"the kernel would be constant between rows"):
        Kairos(bandwidth_scale=1e-200).fit(X, y, reference=(Z, y_ref))


def test_the_raw_blend_uses_both_terms():
    """combine='raw' (the paper's form) used to blend the 1/N-small exact LOO term with the O(1) residual,
    which left it ~0.001 of the value: feature noise was found at AUROC 0.75. Each term must move the ranking."""
    from dataworth.evaluation.datasets import load_evaluation_set
    from dataworth.evaluation.detection import make_task
    from dataworth.evaluation.metrics import detection_auroc

    digits = load_evaluation_set("digits")
    found = {}
    for kind in ("feature-noise", "label-flip"):
        task = make_task(digits, kind, 0.1, seed=0, max_train=800)
        paper = Kairos.paper().fit(task.X, task.y, reference=(task.X_ref, task.y_ref))
        found[kind] = {term: detection_auroc(v, task.corrupted) for term, v in
                       (("blend", paper.values_), ("feature", paper.feature_values_), ("label", -paper.label_residuals_))}
    assert found["feature-noise"]["blend"] > max(0.95, found["feature-noise"]["label"] + 0.1)  # the feature term counts
    assert found["label-flip"]["blend"] > found["label-flip"]["feature"] + 0.2  # and so does the residual


def test_the_state_keeps_feature_names_and_add_matches_by_name(planted, tmp_path):
    import pandas as pd

    X, y, Z, y_ref = planted
    names = ["a", "b", "c", "d"]
    est = Kairos().fit(pd.DataFrame(X[:30], columns=names), y[:30], reference=(pd.DataFrame(Z, columns=names), y_ref))
    loaded = Kairos.load_state(est.save_state(tmp_path / "s.npz"))
    assert loaded.feature_names_ == tuple(names)
    loaded.add(pd.DataFrame(X[30:], columns=names)[["d", "c", "b", "a"]], y[30:])
    batch = Kairos(bandwidth=est.bandwidth_).fit(X, y, reference=(Z, y_ref))
    np.testing.assert_allclose(loaded.values_, batch.values_, rtol=0, atol=1e-10)
    with pytest.raises(InputError, match=r"the added set does not have the feature columns of the fitted training set: it lacks 'a'"):
        loaded.add(pd.DataFrame(X[30:], columns=["x", "b", "c", "d"]), y[30:])


@pytest.mark.parametrize(("params", "message"), [
    ({"seed": -7}, "seed must be an integer >= 0"), ({"seed": 1.5}, "seed must be an integer"),
    ({"memory_budget": -5}, "memory_budget must be an integer >= 1"), ({"memory_budget": "abc"}, "memory_budget must be an integer"),
])
def test_bad_seed_and_memory_budget_are_input_errors(planted, params, message):
    X, y, Z, y_ref = planted
    with pytest.raises(InputError, match=message):
        Kairos(**params).fit(X, y, reference=(Z, y_ref))


def test_a_logistic_state_with_a_single_reference_row_of_a_class_round_trips(planted, tmp_path):
    """No cross-fitted null exists then: the other rules still fit, save and load (a version 2 state of
    that kind too), and describing issues says that no row can be typed a label issue."""
    X, y, Z, y_ref = planted
    y_ref = y_ref.copy()
    y_ref[y_ref == 2] = 1
    y_ref[0] = 2
    est = Kairos(label_model="logistic", combine="worst").fit(X, y, reference=(Z, y_ref))
    assert est.reference_residuals_ is None
    back = Kairos.load_state(est.save_state(tmp_path / "s.npz"))
    np.testing.assert_array_equal(back.values_, est.values_)
    with np.load(tmp_path / "s.npz") as archive:
        arrays = {k: archive[k] for k in archive.files if k not in ("ref_train_sums", "ref_ref_sums")}
    np.savez(tmp_path / "v2.npz", **(arrays | {"version": np.array(2)}))
    np.testing.assert_allclose(Kairos.load_state(tmp_path / "v2.npz").values_, est.values_, atol=1e-12)
    with pytest.warns(DataworthWarning) as caught:
        est.describe_issues()
    messages = [str(w.message) for w in caught]
    assert any("no row can be typed a label issue" in m for m in messages)
    assert any("with 25 reference rows a q-value reaches 0.1 only for a group of more than 15 rows" in m for m in messages)

"""LAVA against ground truth: direct OT solves, brute-force leave-one-out and finite differences."""

import warnings
from pathlib import Path

import numpy as np
import ot
import pytest
from scipy.stats import spearmanr

from dataworth.checks import DataworthError, InputError
from dataworth.valuation.lava import Lava, reference_weights, solve_annealed
from noisy_digits import noisy_digits


def _instance(n=31, m=20, seed=0):
    """Three well-separated classes in 3-D with two planted outliers and three flipped labels.

    N = 31 and M = 20 are coprime, so no partial sum k/N equals l/M: the OT problem is not degenerate
    and its dual is unique up to a constant (the calibrated gradient is then a true derivative).
    """
    rng = np.random.default_rng(seed)
    centers = 4.0 * np.eye(3)
    y = rng.integers(0, 3, size=n)
    X = centers[y] + rng.normal(size=(n, 3))
    X[:2] += 6.0
    y[2:5] = (y[2:5] + 1) % 3
    y_ref = np.arange(m) % 3
    Z = centers[y_ref] + rng.normal(size=(m, 3))
    return X, y, Z, y_ref


def _direct_cost(X, y, Z, y_ref, label_weight):
    """||x_i − z_l||² + λ·W(y_i, y'_l), with W from ot.emd2 on each class pair."""
    W = np.array([[_emd2(ot.dist(X[y == c], Z[y_ref == r])) for r in range(3)] for c in range(3)])
    return ot.dist(X, Z) + label_weight * W[np.ix_(y, y_ref)]


def _ot(a, C):
    """Exact OT with the reference weights Lava's exact solver uses (uniform, made non-degenerate)."""
    return ot.emd2(a, reference_weights(C.shape[1]), C, numItermax=10**7)


def _emd2(C):
    return _ot(np.full(C.shape[0], 1.0 / C.shape[0]), C)


@pytest.fixture(scope="module")
def instance():
    return _instance()


@pytest.fixture(scope="module")
def exact(instance):
    X, y, Z, y_ref = instance
    return Lava(solver="exact", label_weight=1.5).fit(X, y, reference=(Z, y_ref))


def test_class_distances_equal_direct_emd2(instance, exact):
    X, y, Z, y_ref = instance
    assert exact.class_distances_.shape == (3, 3)
    for c in range(3):
        for r in range(3):
            expected = _emd2(ot.dist(X[y == c], Z[y_ref == r]))
            assert exact.class_distances_[c, r] == pytest.approx(expected, rel=1e-12)


def test_class_absent_from_training_gets_nan_row(instance):
    X, y, Z, y_ref = instance
    keep = y != 2
    est = Lava(solver="exact").fit(X[keep], y[keep], reference=(Z, y_ref))
    assert np.isnan(est.class_distances_[2]).all()
    assert np.isfinite(est.class_distances_[:2]).all()


def test_ot_distance_equals_direct_solve(instance, exact):
    C = _direct_cost(*instance, label_weight=1.5)
    assert exact.ot_distance_ == pytest.approx(_ot(np.full(31, 1 / 31), C), rel=1e-10)
    np.testing.assert_array_equal(exact.values_, -exact.result_.components["calibrated_gradient"])


def test_calibrated_gradient_is_the_directional_derivative(instance, exact):
    """(OT(a + ε d_i) − OT(a)) / ε = g_i with d_i = e_i − (1/(N−1)) Σ_{j≠i} e_j (measured error 6e-11 relative)."""
    C = _direct_cost(*instance, label_weight=1.5)
    n, eps = C.shape[0], 1e-5
    a = np.full(n, 1.0 / n)
    base = _ot(a, C)
    g = exact.result_.components["calibrated_gradient"]
    for i in range(n):
        direction = np.full(n, -1.0 / (n - 1))
        direction[i] = 1.0
        np.testing.assert_allclose((_ot(a + eps * direction, C) - base) / eps, g[i], rtol=0, atol=1e-8 * np.abs(g).max())


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_values_rank_like_brute_force_leave_one_out(seed):
    """Spearman(−g, OT(D∖{i}, P) − OT(D, P)) measured 0.988, 0.967, 0.995 for seeds 0, 1, 2."""
    X, y, Z, y_ref = _instance(seed=seed)
    values = Lava(solver="exact", label_weight=1.5).fit(X, y, reference=(Z, y_ref)).values_
    C = _direct_cost(X, y, Z, y_ref, label_weight=1.5)
    n = C.shape[0]
    base = _ot(np.full(n, 1.0 / n), C)
    loo = np.array([_ot(np.full(n - 1, 1.0 / (n - 1)), np.delete(C, i, axis=0)) - base for i in range(n)])
    assert spearmanr(values, loo)[0] > 0.95
    # first-order size, OT(D∖{i}) − OT(D) ≈ −g_i / N: Pearson measured ≥ 0.996
    assert np.corrcoef(values / n, loo)[0, 1] > 0.99
    assert set(np.argsort(values)[:2]) == {0, 1}  # the planted outliers are worth least


def test_sinkhorn_with_small_regularization_ranks_like_exact(instance, exact):
    """Measured: Spearman 0.998, OT distance 0.12% above the exact one."""
    X, y, Z, y_ref = instance
    est = Lava(solver="sinkhorn", entropic_reg=0.01, label_weight=1.5).fit(X, y, reference=(Z, y_ref))
    assert spearmanr(est.values_, exact.values_)[0] > 0.95
    assert est.ot_distance_ == pytest.approx(exact.ot_distance_, rel=0.005)


def test_annealed_solver_reproduces_geomloss():
    """Against GeomLoss 0.2 itself (``benchmarks/peers/geomloss_fixture.py`` wrote the fixture in
    .venv-peers): same cost ||x − y||²/2, starting ε = its diameter², blur 0.3, scaling 0.5.
    Measured: potentials equal to 2e-15."""
    ref = np.load(Path(__file__).parent / "data" / "geomloss_annealed.npz")
    cost = 0.5 * ot.dist(ref["x"], ref["y"])
    distance, potential = solve_annealed(cost, float(ref["eps"]), start=float(ref["diameter"]) ** 2)
    np.testing.assert_allclose(potential, ref["F"].ravel(), rtol=0, atol=1e-12)
    assert distance == pytest.approx(ref["F"].mean() + ref["G"].mean(), rel=1e-12)
    chunked_distance, chunked = solve_annealed(cost, float(ref["eps"]), start=float(ref["diameter"]) ** 2, chunk_rows=7)
    np.testing.assert_allclose(chunked, potential, rtol=0, atol=1e-12)  # 6 row chunks, the last one short
    assert chunked_distance == pytest.approx(distance, rel=1e-12)


def test_annealed_lava_uses_the_potential_of_the_scaled_cost(instance):
    """The estimator divides the cost by its mean feature cost s and scales the potential back."""
    X, y, Z, y_ref = instance
    est = Lava(solver="annealed", entropic_reg=0.05).fit(X, y, reference=(Z, y_ref))
    s = est.cost_scale_
    _, f = solve_annealed(_direct_cost(X, y, Z, y_ref, 1.0) / s, 0.05)
    np.testing.assert_allclose(est.result_.components["calibrated_gradient"], s * (len(f) * f - f.sum()) / (len(f) - 1), rtol=1e-10)


def test_label_weight_zero_is_feature_only_ot(instance):
    X, y, Z, y_ref = instance
    est = Lava(solver="exact", label_weight=0).fit(X, y, reference=(Z, y_ref))
    assert est.ot_distance_ == pytest.approx(_emd2(ot.dist(X, Z)), rel=1e-10)


def test_values_do_not_depend_on_feature_scale(instance, exact):
    """Both cost terms are squared distances, so scaling features by s scales every value by s²."""
    X, y, Z, y_ref = instance
    scaled = Lava(solver="exact", label_weight=1.5).fit(10 * X, y, reference=(10 * Z, y_ref))
    np.testing.assert_allclose(scaled.values_, 100 * exact.values_, rtol=1e-8, atol=1e-8 * np.abs(scaled.values_).max())


@pytest.mark.parametrize("solver", ["exact", "sinkhorn", "annealed"])
def test_permuting_training_rows_permutes_values(instance, solver):
    X, y, Z, y_ref = instance
    perm = np.random.default_rng(1).permutation(len(y))
    a = Lava(solver=solver).fit(X, y, reference=(Z, y_ref))
    b = Lava(solver=solver).fit(X[perm], y[perm], reference=(Z, y_ref))
    np.testing.assert_allclose(b.values_, a.values_[perm], rtol=0, atol=1e-8 * np.abs(a.values_).max())


def test_exact_values_do_not_depend_on_row_order_when_sizes_share_a_factor():
    """N = 400, M = 200: with plain uniform weights the exact dual is not unique and ot.emd's answer
    moved by 12% of max|value| between row orders; the perturbed reference weights pin it down."""
    X, y, X_ref, y_ref, _ = noisy_digits(n_ref=200, n_train=400, fraction=0.2)
    perm = np.random.default_rng(5).permutation(400)
    a = Lava(solver="exact").fit(X, y, reference=(X_ref, y_ref))
    b = Lava(solver="exact").fit(X[perm], y[perm], reference=(X_ref, y_ref))
    np.testing.assert_allclose(b.values_, a.values_[perm], rtol=0, atol=1e-9 * np.abs(a.values_).max())


@pytest.mark.parametrize(("solver", "floor"), [("exact", 0.85), ("annealed", 0.95)])  # measured 0.876, 0.971
def test_lava_finds_flipped_labels_on_digits(solver, floor):
    """400 training digits with 20% labels flipped, 200 clean reference digits."""
    from sklearn.metrics import roc_auc_score

    X, y, X_ref, y_ref, flipped = noisy_digits(n_ref=200, n_train=400, fraction=0.2)
    est = Lava(solver=solver).fit(X, y, reference=(X_ref, y_ref))
    assert roc_auc_score(flipped, -est.values_) > floor


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"solver": "lp"}, "solver must be one of annealed, exact, sinkhorn; got 'lp'"),
        ({"label_weight": -1.0}, "label_weight must be a finite number >= 0"),
        ({"label_weight": float("nan")}, "label_weight must be a finite number >= 0"),
        ({"entropic_reg": 0.0}, "entropic_reg must be a finite number > 0; got 0.0"),
        ({"max_iter": 0}, "max_iter must be an integer >= 1; got 0"),
    ],
)
def test_bad_parameters_raise_input_error(instance, params, message):
    X, y, Z, y_ref = instance
    with pytest.raises(InputError, match=message):
        Lava(**params).fit(X, y, reference=(Z, y_ref))


def test_missing_labels_raise_input_error(instance):
    X, _, Z, y_ref = instance
    with pytest.raises(InputError, match="LAVA needs labels, but the training set has none"):
        Lava().fit(X, reference=(Z, y_ref))


def test_unconverged_but_usable_sinkhorn_warns(instance):
    """After 1,000 iterations 0.017% of the mass is misplaced: kept with a warning, within 0.1% of converged."""
    X, y, Z, y_ref = instance
    converged = Lava(solver="sinkhorn", entropic_reg=0.01).fit(X, y, reference=(Z, y_ref))
    with pytest.warns(UserWarning, match=r"Sinkhorn stopped after 1000 iterations .* or use solver='exact'"):
        early = Lava(solver="sinkhorn", entropic_reg=0.01, max_iter=1000).fit(X, y, reference=(Z, y_ref))
    np.testing.assert_allclose(early.values_, converged.values_, rtol=0, atol=1e-3 * np.abs(converged.values_).max())


def test_exact_solver_failure_is_a_dataworth_error(instance, monkeypatch):
    from dataworth.valuation import lava

    X, y, Z, y_ref = instance
    monkeypatch.setattr(lava, "EXACT_PIVOTS_PER_POINT", 1)  # a cap of N + M pivots
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # POT's own warnings must not escape
        with pytest.raises(DataworthError, match=r"the exact OT solver hit its cap of \d+ pivots .*; use solver=.sinkhorn."):
            Lava(solver="exact").fit(X, y, reference=(Z, y_ref))


def test_sinkhorn_failure_names_the_fix(instance):
    X, y, Z, y_ref = instance
    with pytest.raises(DataworthError, match=r"raise entropic_reg .* or use solver='exact'"):
        Lava(solver="sinkhorn", entropic_reg=1e-3, max_iter=1).fit(X, y, reference=(Z, y_ref))


def test_threaded_class_distances_leave_the_warning_filters_alone():
    """The class pairs run on several threads; ``warnings.catch_warnings`` is not thread-safe, so
    suppressing POT's warnings inside each thread could leave a global "ignore" behind."""
    rng = np.random.default_rng(9)
    X, y = rng.normal(size=(400, 4)), np.arange(400) % 10
    Z, y_ref = rng.normal(size=(200, 4)), np.arange(200) % 10
    before = list(warnings.filters)
    for _ in range(10):
        Lava().fit(X, y, reference=(Z, y_ref))
        assert warnings.filters == before


def test_values_scale_exactly_with_squared_feature_scale_and_overflow_is_an_error(planted):
    X, y, Z, y_ref = planted
    base = Lava().fit(X, y, reference=(Z, y_ref)).values_
    np.testing.assert_allclose(Lava().fit(X * 2.0**300, y, reference=(Z * 2.0**300, y_ref)).values_, base * 2.0**600, rtol=1e-9)
    for factor in (1e200, 1e-200):
        with pytest.raises(InputError, match=r"LAVA's values are in units of squared distance .* do not fit in float64; rescale"):
            Lava().fit(X * factor, y, reference=(Z * factor, y_ref))


def test_constant_features_are_warned_about(planted):
    from dataworth import DataworthWarning

    _, y, _, y_ref = planted
    with pytest.warns(DataworthWarning, match=r"all 40 LAVA values are equal"):
        Lava().fit(np.ones((40, 4)), y, reference=(np.ones((25, 4)), y_ref))

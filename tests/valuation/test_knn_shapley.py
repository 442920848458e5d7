"""KNN-Shapley against brute-force Shapley values of the KNN utility, and the Shapley axioms."""

from itertools import combinations
from math import factorial

import numpy as np
import pytest

from dataworth.checks import InputError
from dataworth.valuation.knn_shapley import KNNShapley


def knn_utility(subset, X, y, Z, y_ref, k):
    """Mean over reference points of (1/K) Σ_{k ≤ min(K, |S|)} 1[y_{α_k(S)} = y_t]; ties by training index."""
    if not subset:
        return 0.0
    total = 0.0
    for z, label in zip(Z, y_ref, strict=True):
        nearest = sorted(subset, key=lambda i: (np.linalg.norm(X[i] - z), i))[:k]
        total += sum(y[i] == label for i in nearest) / k
    return total / len(Z)


def brute_force_shapley(X, y, Z, y_ref, k):
    """φ_i = Σ_{S ⊆ N∖{i}} |S|! (n − |S| − 1)! / n! · (U(S ∪ {i}) − U(S)), over every subset."""
    n = len(X)
    utility = {
        frozenset(s): knn_utility(list(s), X, y, Z, y_ref, k) for size in range(n + 1) for s in combinations(range(n), size)
    }
    values = np.zeros(n)
    for i in range(n):
        for subset, u in utility.items():
            if i not in subset:
                weight = factorial(len(subset)) * factorial(n - len(subset) - 1) / factorial(n)
                values[i] += weight * (utility[subset | {i}] - u)
    return values


def small_problem(n, seed, n_ref=4, n_classes=2):
    rng = np.random.default_rng(seed)
    X, Z = rng.normal(size=(n, 2)), rng.normal(size=(n_ref, 2))
    y_ref = rng.permutation(np.arange(n_ref) % n_classes)  # every class occurs in the reference set
    return X, rng.integers(0, n_classes, n), Z, y_ref


@pytest.mark.parametrize("k", [1, 3, 5])
@pytest.mark.parametrize("n", [1, 4, 7, 9])  # n < K included: the paper's s_N = m_N / N assumes N ≥ K
@pytest.mark.filterwarnings("ignore:k = .* is at least the number of training rows")  # on purpose here
def test_equals_brute_force_shapley(n, k):
    X, y, Z, y_ref = small_problem(n, seed=10 * n + k, n_classes=3 if n > 5 else 2)
    est = KNNShapley(k=k).fit(X, y, reference=(Z, y_ref))
    np.testing.assert_allclose(est.values_, brute_force_shapley(X, y, Z, y_ref, k), rtol=0, atol=1e-10)


@pytest.mark.parametrize("k", [1, 3])
def test_ties_are_broken_by_training_index(k):
    """Duplicated rows with different labels: the lower index counts as nearer, as in the brute force."""
    X, y, Z, y_ref = small_problem(8, seed=99)
    X[5] = X[2]
    X[7] = X[2]
    y[2], y[5], y[7] = 0, 1, 0
    Z[0] = X[2]  # distance exactly 0 to three rows
    est = KNNShapley(k=k).fit(X, y, reference=(Z, y_ref))
    np.testing.assert_allclose(est.values_, brute_force_shapley(X, y, Z, y_ref, k), rtol=0, atol=1e-10)


@pytest.mark.parametrize("k", [1, 5, 400])
@pytest.mark.filterwarnings("ignore:k = .* is at least the number of training rows")  # on purpose here
def test_efficiency_values_sum_to_full_utility(k):
    rng = np.random.default_rng(7)
    X, y = rng.normal(size=(300, 4)), rng.integers(0, 3, 300)
    Z, y_ref = rng.normal(size=(50, 4)), rng.integers(0, 3, 50)
    nearest = np.argsort(np.linalg.norm(Z[:, None] - X[None], axis=2), axis=1)[:, :k]
    full_utility = (y[nearest] == y_ref[:, None]).sum(axis=1).mean() / k  # U(∅) = 0
    est = KNNShapley(k=k).fit(X, y, reference=(Z, y_ref))
    assert est.values_.sum() == pytest.approx(full_utility, abs=1e-12)


def test_values_are_invariant_to_permuting_training_rows(planted):
    X, y, Z, y_ref = planted
    X = X + np.random.default_rng(1).normal(scale=1e-6, size=X.shape)  # break the fixture's exact duplicates
    perm = np.random.default_rng(2).permutation(len(X))
    a = KNNShapley(k=3).fit(X, y, reference=(Z, y_ref))
    b = KNNShapley(k=3).fit(X[perm], y[perm], reference=(Z, y_ref))
    np.testing.assert_allclose(b.values_, a.values_[perm], rtol=0, atol=1e-14)


def test_memory_budget_does_not_change_the_values(planted):
    X, y, Z, y_ref = planted
    one = KNNShapley(k=3, memory_budget=1).fit(X, y, reference=(Z, y_ref))  # one reference point per batch
    big = KNNShapley(k=3).fit(X, y, reference=(Z, y_ref))
    uneven = KNNShapley(k=3, memory_budget=7 * 48 * len(X)).fit(X, y, reference=(Z, y_ref))
    np.testing.assert_allclose(one.values_, big.values_, rtol=0, atol=1e-14)
    np.testing.assert_allclose(uneven.values_, big.values_, rtol=0, atol=1e-14)
    assert set(big.result_.timings) == {"total"} and big.result_.method == "knn-shapley"


def test_string_labels_and_float32_features(planted):
    X, y, Z, y_ref = planted
    names = np.array(["cat", "dog", "eel"])
    exact = KNNShapley(k=3).fit(X, y, reference=(Z, y_ref))
    other = KNNShapley(k=3).fit(X.astype(np.float32), names[y], reference=(Z.astype(np.float32), names[y_ref]))
    np.testing.assert_allclose(other.values_, exact.values_, rtol=0, atol=1e-12)
    assert list(other.classes_) == ["cat", "dog", "eel"]


@pytest.mark.parametrize("k", [0, -1, 2.5, True, "3", None])
def test_bad_k_is_an_input_error(planted, k):
    X, y, Z, y_ref = planted
    with pytest.raises(InputError, match=r"k must be an integer >= 1"):
        KNNShapley(k=k).fit(X, y, reference=(Z, y_ref))


def test_bad_memory_budget_and_missing_labels_are_input_errors(planted):
    X, y, Z, y_ref = planted
    with pytest.raises(InputError, match=r"memory_budget must be an integer >= 1"):
        KNNShapley(memory_budget=0).fit(X, y, reference=(Z, y_ref))
    with pytest.raises(InputError, match=r"KNN-Shapley needs labels, but the training set has none"):
        KNNShapley().fit(X, reference=(Z, y_ref))
    with pytest.raises(InputError, match=r"KNN-Shapley needs labels, but the reference set has none"):
        KNNShapley().fit(X, y, reference=Z)


@pytest.mark.parametrize("factor", [2.0**600, 2.0**-600])
def test_values_are_invariant_to_the_scale_of_the_features(planted, factor):
    """Squared distances of features ×1e±180 overflowed (Spearman 0.04 with the right values, rc 0)."""
    X, y, Z, y_ref = planted
    base = KNNShapley(k=3).fit(X, y, reference=(Z, y_ref)).values_
    np.testing.assert_array_equal(KNNShapley(k=3).fit(X * factor, y, reference=(Z * factor, y_ref)).values_, base)


def test_degenerate_values_are_warned_about(planted):
    from dataworth import DataworthWarning

    X, y, Z, y_ref = planted
    with pytest.warns(DataworthWarning, match=r"k = 5 is at least the number of training rows \(4\).*all rows of a class get the same"):
        KNNShapley(k=5).fit(X[13:17], y[13:17], reference=(Z, y_ref))
    with pytest.warns(DataworthWarning, match=r"the reference set has a single class"):
        KNNShapley(k=3).fit(X, np.zeros(len(X), int), reference=(Z, np.zeros(len(Z), int)))

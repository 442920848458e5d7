"""Leave-one-out and semivalue estimators against ground truth: exact enumeration over all 2^n subsets
of closed-form games and of a retrained logistic regression, with the textbook weights written here."""

import itertools
import json
import math
import time
import warnings

import numpy as np
import pytest
from scipy.special import beta as beta_fn
from sklearn.base import clone
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from dataworth.checkpoint import Checkpoint
from dataworth.checks import DataworthWarning, FileFormatError, InputError, prepare_data
from dataworth.result import ValuationResult
from dataworth.valuation.coefficients import BernoulliCoefficient, BetaCoefficient, ShapleyCoefficient
from dataworth.valuation.samplers import (
    BernoulliSampler,
    BetaBernoulliSampler,
    FlipSampler,
    MSRSampler,
    PermutationSampler,
)
from dataworth.valuation.semivalues import BetaShapley, DataBanzhaf, LeaveOneOut, Semivalue, TMCShapley
from dataworth.valuation.stopping import MIN_SAMPLES, MaxSamples, MaxTime, StderrBelow
from dataworth.valuation.utility import CachedUtility, ModelUtility, default_model

N = 7


@pytest.fixture(scope="module", autouse=True)
def single_threaded_blas():
    """Thousands of tiny fits: BLAS threads only contend for the cores (about 4x slower)."""
    with threadpool_limits(limits=1):
        yield


# ---------------------------------------------------------------- exact enumeration (the oracle)
def shapley_size_weight(n, j):
    """Weight of the mean marginal contribution over subsets of size j − 1: uniform over sizes."""
    return 1.0 / n


def banzhaf_size_weight(n, j):
    """Every subset weighs 1/2^(n−1), so size j − 1 weighs C(n−1, j−1)/2^(n−1)."""
    return math.comb(n - 1, j - 1) / 2 ** (n - 1)


def beta_size_weight(alpha, beta):
    """Kwon & Zou (2022): w(j) = n C(n−1, j−1) B(j+β−1, n−j+α)/B(α, β), value = (1/n) Σ_j w(j) Δ_j."""

    def weight(n, j):
        return math.comb(n - 1, j - 1) * beta_fn(j + beta - 1, n - j + alpha) / beta_fn(alpha, beta)

    return weight


def exact_semivalues(utility, n, size_weight):
    """φ_i = Σ_j size_weight(n, j) · (mean over S ⊆ D∖{i}, |S| = j−1, of U(S ∪ {i}) − U(S))."""
    values = np.zeros(n)
    for i in range(n):
        others = [p for p in range(n) if p != i]
        for j in range(1, n + 1):
            deltas = [utility(sorted((*s, i))) - utility(list(s)) for s in itertools.combinations(others, j - 1)]
            values[i] += size_weight(n, j) * np.mean(deltas)
    return values


SEMIVALUES = {
    "shapley": shapley_size_weight,
    "banzhaf": banzhaf_size_weight,
    "beta(16,1)": beta_size_weight(16, 1),
    "beta(1,4)": beta_size_weight(1, 4),
}

# Sample sizes at which every nonzero 0/1 marginal of the games below occurs ~10 times or more: error
# bars from the sample variance are trustworthy only once the rare pivotal subsets have been seen.
ESTIMATORS = {
    "shapley": lambda seed=0: TMCShapley(n_permutations=1200, truncation_tolerance=0, seed=seed),
    "banzhaf": lambda seed=0: DataBanzhaf(n_samples=2000, seed=seed),
    "beta(16,1)": lambda seed=0: BetaShapley(alpha=16, beta=1, n_samples=2000, seed=seed),
    "beta(1,4)": lambda seed=0: BetaShapley(alpha=1, beta=4, n_samples=300, seed=seed),
}

WEIGHTS = np.array([0.9, -0.4, 0.3, 0.05, -0.7, 0.2, 0.6])
VOTES = np.array([5, 3, 2, 2, 1, 1, 0])
GAMES = {
    "additive": lambda s: float(WEIGHTS[list(s)].sum()),
    "voting": lambda s: float(VOTES[list(s)].sum() >= 7),  # weighted majority, a dummy player 6
    "at-least-two": lambda s: float(len(s) >= 2),
}


SAMPLERS = {
    "shapley": PermutationSampler(),
    "banzhaf": MSRSampler(BernoulliSampler(0.5)),
    "beta(16,1)": FlipSampler(BetaBernoulliSampler(16, 1)),
    "beta(1,4)": FlipSampler(BetaBernoulliSampler(1, 4)),
}


def size_profile_game(s):
    """Player 0 is pivotal in subsets of at most 2 rows, player 1 in subsets of at least N − 1, player 2
    in subsets of exactly 4: semivalues weigh subset sizes differently, so here they disagree widely."""
    return float(0 in s and len(s) <= 2) + float(1 in s and len(s) >= N - 1) + float(2 in s and len(s) == 4)


def assert_within_error_bars(result, exact, max_stderr):
    stderr = result.stderr
    assert stderr.max() < max_stderr  # the bars are tight enough for the check to mean something
    np.testing.assert_array_less(np.abs(result.values - exact), 4 * stderr + 1e-9)


# ---------------------------------------------------------------- the oracle itself
@pytest.mark.parametrize("name", SEMIVALUES)
def test_oracle_weights_sum_to_one_and_value_additive_games_exactly(name):
    assert sum(SEMIVALUES[name](N, j) for j in range(1, N + 1)) == pytest.approx(1.0, abs=1e-12)
    np.testing.assert_allclose(exact_semivalues(GAMES["additive"], N, SEMIVALUES[name]), WEIGHTS, atol=1e-12)


def test_oracle_matches_closed_forms_of_the_threshold_game():
    """U = 1[|S| ≥ 2]: i is pivotal iff |S| = 1, so Shapley = 1/n and Banzhaf = (n−1)/2^(n−1)."""
    game = GAMES["at-least-two"]
    np.testing.assert_allclose(exact_semivalues(game, N, shapley_size_weight), 1 / N, atol=1e-12)
    np.testing.assert_allclose(exact_semivalues(game, N, banzhaf_size_weight), (N - 1) / 2 ** (N - 1), atol=1e-12)


@pytest.mark.parametrize("name", SEMIVALUES)
def test_each_sampler_estimates_the_semivalue_its_coefficient_names(name):
    """coefficient × sampler: C(n−1, k)·p(k) of the sampler is the oracle's weight of subsets of size k."""
    for k in range(N):
        assert math.comb(N - 1, k) * SAMPLERS[name].coefficient(N, k) == pytest.approx(SEMIVALUES[name](N, k + 1), rel=1e-12)


def test_semivalues_of_the_voting_game_differ():
    """The voting game tells the semivalues apart, so matching one of them is evidence."""
    exact = {name: exact_semivalues(GAMES["voting"], N, weight) for name, weight in SEMIVALUES.items()}
    for a, b in itertools.combinations(exact, 2):
        assert np.abs(exact[a] - exact[b]).max() > 0.05, (a, b)
    assert all(v[6] == 0 for v in exact.values())  # the dummy player


# ---------------------------------------------------------------- closed-form games
@pytest.mark.parametrize("game", GAMES)
@pytest.mark.parametrize("name", ESTIMATORS)
def test_estimates_lie_within_their_error_bars_of_exact_enumeration(name, game):
    exact = exact_semivalues(GAMES[game], N, SEMIVALUES[name])
    est = ESTIMATORS[name]().fit_game(GAMES[game], N)
    assert est.values_.dtype == np.float64 and est.values_.shape == (N,)
    assert_within_error_bars(est.result_, exact, max_stderr=0.05)


@pytest.mark.parametrize("name", ["shapley", "banzhaf", "beta(16,1)"])
def test_each_estimator_matches_its_own_semivalue_and_no_other(name):
    """Within 4 standard errors of its own exact values and more than 6 from every other semivalue's
    on some player: the error-bar checks would catch an estimator of the wrong semivalue."""
    exact = {other: exact_semivalues(size_profile_game, N, SEMIVALUES[other]) for other in ("shapley", "banzhaf", "beta(16,1)")}
    result = ESTIMATORS[name]().fit_game(size_profile_game, N).result_
    assert_within_error_bars(result, exact[name], max_stderr=0.05)
    for other in set(exact) - {name}:
        assert (np.abs(result.values - exact[other]) / result.stderr).max() > 6, other


@pytest.mark.parametrize("name", ["shapley", "beta(16,1)"])
def test_marginal_samplers_are_exact_on_additive_games(name):
    """Every marginal contribution of an additive game is w_i, so the estimate has no variance."""
    est = ESTIMATORS[name]().fit_game(GAMES["additive"], N)
    np.testing.assert_allclose(est.values_, WEIGHTS, rtol=0, atol=1e-12)
    np.testing.assert_allclose(est.result_.stderr, 0, atol=1e-12)


def test_leave_one_out_of_closed_form_games():
    np.testing.assert_allclose(LeaveOneOut().fit_game(GAMES["additive"], N).values_, WEIGHTS, atol=1e-12)
    # 14 votes and a quota of 10: only player 0 is pivotal for the grand coalition
    loo = LeaveOneOut().fit_game(lambda s: float(VOTES[list(s)].sum() >= 10), N)
    np.testing.assert_array_equal(loo.values_, [1, 0, 0, 0, 0, 0, 0])
    assert loo.n_evaluations_ == N + 1


@pytest.mark.parametrize("patience", [0, 1, 2])
def test_truncation_is_exact_and_cheaper_when_the_tail_adds_nothing(patience):
    """In 1[|S| ≥ 2] every prefix from size 2 on has U(D), so truncating there loses nothing; a
    permutation stops after more than ``patience`` such prefixes, i.e. after size 2 + patience, so only
    D and subsets of at most 2 + patience rows are ever evaluated."""
    game = GAMES["at-least-two"]
    full = TMCShapley(n_permutations=200, truncation_tolerance=0).fit_game(game, N)
    cut = TMCShapley(n_permutations=200, truncation_tolerance=0.01, truncation_patience=patience).fit_game(game, N)
    np.testing.assert_array_equal(cut.values_, full.values_)
    largest = 2 + patience
    assert (
        sum(math.comb(N, k) for k in range(largest)) < cut.n_evaluations_ <= 1 + sum(math.comb(N, k) for k in range(largest + 1))
    )
    assert cut.n_evaluations_ < full.n_evaluations_


def test_truncation_is_tested_only_after_a_player_joins():
    """U(∅) = U(D) = 1: the rule used to be tested on the empty prefix, which ended every permutation
    before its first player (values 0, standard errors 0). Ghorbani & Zou's code (DShap.py,
    ``one_iteration``) tests a prefix only after a player joins, with a patience of 5."""
    game = lambda s: 1.0 + float(0 in s) - float(1 in s)  # noqa: E731
    est = TMCShapley(n_permutations=200).fit_game(game, 6)
    np.testing.assert_allclose(est.values_, [1, -1, 0, 0, 0, 0], rtol=0, atol=1e-12)


def test_stderr_tolerance_stops_at_the_first_sample_that_meets_it():
    tolerance = 0.03
    early = TMCShapley(n_permutations=10_000, truncation_tolerance=0, stderr_tolerance=tolerance).fit_game(GAMES["voting"], N)
    assert MIN_SAMPLES < early.n_samples_ < 10_000
    assert early.result_.stderr.max() <= tolerance
    np.testing.assert_array_equal(early.result_.counts, early.n_samples_)
    one_less = TMCShapley(n_permutations=early.n_samples_ - 1, truncation_tolerance=0).fit_game(GAMES["voting"], N)
    assert one_less.result_.stderr.max() > tolerance


def test_stderr_tolerance_waits_for_rare_marginals():
    """U = 1 on the subset {0} only: a permutation has nonzero marginals only when it starts with player 0
    (1 in 20). The first MIN_SAMPLES permutations of this seed never do, so all their samples are 0
    with standard error 0, which used to stop the run there with every value 0."""
    n = 20
    game = lambda s: float(list(s) == [0])  # noqa: E731
    first = TMCShapley(n_permutations=MIN_SAMPLES, truncation_tolerance=0).fit_game(game, n)
    assert not first.values_.any() and not first.result_.stderr.any()
    est = TMCShapley(n_permutations=100_000, truncation_tolerance=0, stderr_tolerance=0.02).fit_game(game, n)
    assert MIN_SAMPLES < est.n_samples_ < 100_000 and est.result_.stderr.max() <= 0.02
    assert est.values_[0] == pytest.approx(1 / n, abs=4 * est.result_.stderr[0])
    # rows never yet pivotal count as converged by the rule of three only: √3·R/n ≤ 0.02, range R = 2
    assert est.n_samples_ >= math.sqrt(3) * 2 / 0.02


@pytest.mark.parametrize(
    "estimator",
    [
        TMCShapley(n_permutations=200, truncation_tolerance=0, stderr_tolerance=0.1),
        BetaShapley(n_samples=200, stopping=StderrBelow(0.1)),
        DataBanzhaf(n_samples=200, stopping=StderrBelow(0.1)),
    ],
)
def test_a_game_whose_samples_are_all_zero_is_never_declared_converged(estimator):
    """Samples that are all 0 carry no scale for an error bar: only the sample cap ends the run."""
    assert estimator.fit_game(lambda s: 0.0, 5).n_samples_ == 200


def test_banzhaf_stops_on_its_stopping_rule():
    est = DataBanzhaf(n_samples=10_000, stopping=StderrBelow(0.05)).fit_game(GAMES["voting"], N)
    assert MIN_SAMPLES < est.n_samples_ < 10_000 and est.result_.stderr.max() <= 0.05
    np.testing.assert_array_equal(est.result_.counts, est.n_samples_)


def test_max_time_ends_a_run_of_slow_evaluations():
    """Each distinct subset of 30 players takes ≥ 10 ms, so 0.2 s allow at most 21 samples."""

    def slow(subset):
        time.sleep(0.01)
        return float(len(subset))

    est = Semivalue(sampler=MSRSampler(), stopping=MaxTime(0.2) | MaxSamples(10_000)).fit_game(slow, 30)
    assert 1 <= est.n_samples_ <= 21


@pytest.mark.parametrize(
    ("named", "generic"),
    [
        (
            TMCShapley(n_permutations=40, seed=3),
            Semivalue(sampler=PermutationSampler(0.01, 5, seed=3), stopping=MaxSamples(40)),
        ),
        (
            BetaShapley(alpha=4, beta=2, n_samples=40, seed=3),
            Semivalue(sampler=FlipSampler(BetaBernoulliSampler(4, 2, seed=3)), stopping=MaxSamples(40)),
        ),
        (
            DataBanzhaf(n_samples=40, seed=3),
            Semivalue(sampler=MSRSampler(BernoulliSampler(0.5, seed=3)), stopping=MaxSamples(40)),
        ),
    ],
)
def test_the_named_estimators_are_configurations_of_semivalue(named, generic):
    a, b = named.fit_game(GAMES["voting"], N).result_, generic.fit_game(GAMES["voting"], N).result_
    for field in ("values", "stderr", "counts"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
    assert a.method == named.method and b.method == "semivalue"


@pytest.mark.parametrize("name", ESTIMATORS)
def test_same_seed_same_numbers(name, tmp_path):
    game = GAMES["voting"]
    first, again, other = (ESTIMATORS[name](seed).fit_game(game, N) for seed in (3, 3, 4))
    np.testing.assert_array_equal(first.values_, again.values_)
    np.testing.assert_array_equal(first.result_.stderr, again.result_.stderr)
    assert not np.array_equal(first.values_, other.values_)
    loaded = ValuationResult.load(first.result_.save(tmp_path / "values.parquet"))
    np.testing.assert_array_equal(loaded.values, first.values_)
    assert loaded.method == first.method and loaded.params["seed"] == 3


# ---------------------------------------------------------------- a retrained classifier
def reference_accuracy(X, y, Z, y_ref, subset):
    """The documented utility, written out: majority-class accuracy for ∅, the only class for
    single-class subsets, else a freshly trained logistic regression."""
    subset = list(subset)
    if not subset:
        return max(np.mean(y_ref == c) for c in np.unique(y_ref))
    if len(set(y[subset])) == 1:
        return np.mean(y_ref == y[subset][0])
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
    return model.fit(X[subset], y[subset]).score(Z, y_ref)


@pytest.fixture(scope="module")
def task():
    """Seven labelled rows (row 6 mislabelled), a reference set, and U of all 2^7 subsets."""
    rng = np.random.default_rng(9)
    y = np.array(["cat", "dog", "cat", "dog", "cat", "dog", "dog"])
    centers = {"cat": np.array([1.5, 0.0, 0.0]), "dog": np.array([-1.5, 0.0, 0.0])}
    X = np.stack([centers[c] for c in y]) + rng.normal(size=(N, 3))
    X[6] = centers["cat"] + rng.normal(size=3)
    y_ref = rng.choice(["cat", "dog"], size=40, p=[0.4, 0.6])
    Z = np.stack([centers[c] for c in y_ref]) + rng.normal(size=(40, 3))
    table = {
        frozenset(s): reference_accuracy(X, y, Z, y_ref, s) for k in range(N + 1) for s in itertools.combinations(range(N), k)
    }
    return X, y, (Z, y_ref), lambda s: table[frozenset(s)]


def test_model_utility_equals_direct_retraining(task):
    X, y, reference, table = task
    utility = ModelUtility(prepare_data(X, y, reference, method="test", require_labels=True))
    for k in range(N + 1):
        for s in itertools.combinations(range(N), k):
            assert utility(np.array(s, dtype=np.int64)) == table(s), s


def test_leave_one_out_equals_retraining_without_each_row(task):
    X, y, reference, table = task
    loo = LeaveOneOut().fit(X, y, reference=reference)
    without = np.array([table([j for j in range(N) if j != i]) for i in range(N)])
    np.testing.assert_array_equal(loo.result_.components["utility_without"], without)
    np.testing.assert_array_equal(loo.values_, table(range(N)) - without)


@pytest.mark.parametrize("name", ["shapley", "banzhaf", "beta(16,1)"])
def test_retrained_estimates_lie_within_their_error_bars_of_exact_enumeration(task, name):
    X, y, reference, table = task
    exact = exact_semivalues(table, N, SEMIVALUES[name])
    assert np.ptp(exact) > 0.05  # the rows differ, so agreement is informative
    est = ESTIMATORS[name]().fit(X, y, reference=reference)
    assert est.n_evaluations_ <= 2**N  # each subset is retrained at most once
    assert_within_error_bars(est.result_, exact, max_stderr=0.03)
    if name == "shapley":  # permutation marginals telescope: Σ φ_i = U(D) − U(∅) exactly
        assert est.values_.sum() == pytest.approx(table(range(N)) - table([]), abs=1e-12)


def imbalanced_noisy_data(n, seed=0):
    """n rows of two overlapping Gaussian classes, a quarter in class 1, two labels flipped; a reference
    set of 200 rows, 4% in class 1, so predicting the majority class is about as accurate as any model."""
    rng = np.random.default_rng(seed)
    y = (np.arange(n) < max(2, n // 4)).astype(int)
    X = rng.normal(size=(n, 2)) + y[:, None]
    flipped = rng.choice(n, 2, replace=False)
    y[flipped] = 1 - y[flipped]
    y_ref = (rng.random(200) < 0.04).astype(int)
    return X, y, (rng.normal(size=(200, 2)) + y_ref[:, None], y_ref)


def test_tmc_values_rows_when_the_empty_model_scores_like_the_full_one():
    """U(∅) (majority-class accuracy) lies within 1% of U(D): the old rule, tested before the first player
    joined, stopped every permutation there and valued every row 0."""
    n = 10
    X, y, reference = imbalanced_noisy_data(n)
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
    utility = ModelUtility(prepare_data(X, y, reference, method="test", require_labels=True), model)
    full, empty = utility(np.arange(n)), utility(np.array([], dtype=np.int64))
    assert abs(full - empty) < 0.01 * full
    est = TMCShapley(n_permutations=30, model=model).fit(X, y, reference=reference)
    assert np.count_nonzero(est.values_) == n and est.result_.stderr.min() > 0
    # each permutation's marginals telescope to U(last prefix) − U(∅), and a prefix is cut only within 1% of U(D)
    assert abs(est.values_.sum() - (full - empty)) < 0.01 * full


def test_tmc_truncation_bias_on_a_retrained_utility():
    """Measured: on 8 rows of :func:`imbalanced_noisy_data` (seed 5: U(∅) = U(D) = 0.95, so prefixes
    come within 1% of U(D) early and truncation fires), U(S) = reference accuracy of the default model
    retrained on S for all 256 subsets; the expectation of the truncated per-permutation marginals over
    all 8! permutations (exact, no Monte Carlo noise) minus the exact Shapley values (spread 0.475).
    At the defaults (tolerance 0.01, patience 5) the largest bias over the rows is 0.0029; truncating
    at the first prefix within tolerance (patience 0) it is 0.167. Asserted: < 0.005 at the defaults,
    > 0.1 at patience 0 (so the measurement does see truncation), and a 300-permutation TMC run within
    4 standard errors of its exact expectation."""
    n = 8
    X, y, reference = imbalanced_noisy_data(n, seed=5)
    utility = ModelUtility(prepare_data(X, y, reference, method="test", require_labels=True))
    bits = 1 << np.arange(n)
    table = np.array([utility(np.flatnonzero(code & bits)) for code in range(2**n)])
    game = lambda s: table[bits[list(s)].sum()]  # noqa: E731
    exact = exact_semivalues(game, n, shapley_size_weight)
    assert np.ptp(exact) > 0.2

    def expected_marginals(sampler):
        total = sum(
            sampler.marginals(lambda mask: table[bits[mask].sum()], np.array(p)) for p in itertools.permutations(range(n))
        )
        return total / math.factorial(n)

    default = expected_marginals(PermutationSampler(0.01, 5))
    assert np.abs(default - exact).max() < 0.005
    assert np.abs(expected_marginals(PermutationSampler(0.01, 0)) - exact).max() > 0.1
    est = TMCShapley(n_permutations=300).fit_game(game, n)
    assert_within_error_bars(est.result_, default, max_stderr=0.05)


def test_the_default_model_standardizes_and_pipelines_count_as_classifiers(task):
    X, y, reference, _ = task
    model = default_model()
    assert isinstance(model, Pipeline) and isinstance(model[0], StandardScaler) and isinstance(model[-1], LogisticRegression)
    LeaveOneOut(model=make_pipeline(StandardScaler(), LogisticRegression(C=0.5))).fit(X, y, reference=reference)
    with pytest.raises(InputError, match="model must be a scikit-learn classifier"):
        LeaveOneOut(model=make_pipeline(StandardScaler(), Ridge())).fit(X, y, reference=reference)


def test_convergence_warnings_become_one_summary(task):
    """Every retraining of an 8-step lbfgs warns; the user sees one line with the count instead."""
    X, y, reference, _ = task
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        LeaveOneOut(model=model).fit(X, y, reference=reference)
    assert [w.category for w in caught] == [DataworthWarning]
    assert str(caught[0].message) == (
        f"{N + 1} of {N + 1} retrainings did not converge (sklearn ConvergenceWarning); "
        "raise the model's max_iter or standardize the features"
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        TMCShapley(n_permutations=5).fit(X, y, reference=reference)
    assert caught == []


class ChattyLogisticRegression(LogisticRegression):
    def fit(self, X, y, **kwargs):
        warnings.warn("chatty fit", UserWarning, stacklevel=2)
        return super().fit(X, y, **kwargs)


def test_other_warnings_of_the_retrainings_are_passed_on(task):
    X, y, reference, _ = task
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        LeaveOneOut(model=ChattyLogisticRegression()).fit(X, y, reference=reference)
    assert caught and all(w.category is UserWarning and str(w.message) == "chatty fit" for w in caught)


# ---------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    ("estimator", "message"),
    [
        (TMCShapley(n_permutations=0), "n_permutations must be an integer >= 1"),
        (TMCShapley(n_permutations=2.5), "n_permutations"),
        (TMCShapley(truncation_tolerance=-0.1), "truncation_tolerance must be a finite number >= 0"),
        (TMCShapley(truncation_patience=-1), "truncation_patience must be an integer >= 0"),
        (TMCShapley(stopping=100), "stopping must be a StoppingRule"),
        (Semivalue(sampler="permutations", stopping=MaxSamples(5)), "sampler must be a SemivalueSampler"),
        (Semivalue(sampler=PermutationSampler(), stopping=None), "stopping must be a StoppingRule"),
        (TMCShapley(stderr_tolerance=0), "stderr_tolerance must be a finite number > 0"),
        (TMCShapley(seed=-1), "seed must be an integer >= 0"),
        (BetaShapley(alpha=0), "alpha must be a finite number > 0"),
        (BetaShapley(beta=float("nan")), "beta must be a finite number > 0"),
        (BetaShapley(n_samples=True), "n_samples"),
        (DataBanzhaf(n_samples=0), "n_samples must be an integer >= 1"),
        (DataBanzhaf(seed=2**32), "seed must be an integer >= 0 and <= 4294967295"),
    ],
)
def test_bad_parameters_raise_input_error(estimator, message):
    with pytest.raises(InputError, match=message):
        estimator.fit_game(GAMES["additive"], N)


def test_bad_games_and_data_raise_input_error(task):
    X, y, reference, _ = task
    with pytest.raises(InputError, match="n_players must be an integer >= 1"):
        LeaveOneOut().fit_game(GAMES["additive"], 0)
    with pytest.raises(InputError, match="utility must be a callable"):
        LeaveOneOut().fit_game("accuracy", N)
    with pytest.raises(InputError, match=r"returned nan for the subset \[0, 1, 2, 3, 4, 5, 6\]"):
        LeaveOneOut().fit_game(lambda s: float("nan"), N)
    with pytest.raises(InputError, match="needs labels"):
        DataBanzhaf().fit(X, None, reference=reference)
    with pytest.raises(InputError, match="model must be a scikit-learn classifier"):
        LeaveOneOut(model="logistic").fit(X, y, reference=reference)


def test_estimators_clone_like_scikit_learn():
    est = BetaShapley(alpha=4, beta=2, n_samples=7, model=LogisticRegression(C=0.5))
    copy = clone(est)
    assert copy.get_params()["alpha"] == 4 and copy.get_params()["model__C"] == 0.5


def test_banzhaf_rows_never_seen_on_one_side_get_zero_and_infinite_stderr():
    """With one sample every row is on exactly one side of it."""
    est = DataBanzhaf(n_samples=1).fit_game(GAMES["additive"], N)
    components = est.result_.components
    np.testing.assert_array_equal(components["count_in"] + components["count_out"], 1)
    np.testing.assert_array_equal(est.result_.counts, 1)
    np.testing.assert_array_equal(est.values_, 0.0)
    assert np.isinf(est.result_.stderr).all()


# ---------------------------------------------------------------- resuming an interrupted fit
class InterruptedLogisticRegression(LogisticRegression):
    """Counts its fits across clones and raises KeyboardInterrupt at fit number ``stop_at``."""

    fits = 0
    stop_at: int | None = None

    def fit(self, X, y, **kwargs):
        type(self).fits += 1
        if type(self).fits == self.stop_at:
            raise KeyboardInterrupt
        return super().fit(X, y, **kwargs)


RESUMABLE = {
    "loo": lambda **kw: LeaveOneOut(**kw),
    "shapley": lambda **kw: TMCShapley(n_permutations=6, truncation_tolerance=0, **kw),
    "banzhaf": lambda **kw: DataBanzhaf(n_samples=40, **kw),
    "beta(16,1)": lambda **kw: BetaShapley(n_samples=4, **kw),
}


@pytest.mark.parametrize("name", RESUMABLE)
def test_an_interrupted_fit_resumes_from_its_checkpoint_with_the_same_values(task, name, tmp_path, monkeypatch):
    """Stop halfway through the retrainings; the resumed fit retrains only the rest, returns exactly the
    uninterrupted values and removes its checkpoint. A checkpoint written on other data is not read."""
    X, y, reference, _ = task
    model = InterruptedLogisticRegression(max_iter=1000)
    build = RESUMABLE[name]
    monkeypatch.setattr(InterruptedLogisticRegression, "fits", 0)
    uninterrupted = build(model=model).fit(X, y, reference=reference)
    total = InterruptedLogisticRegression.fits
    path = tmp_path / "fit.jsonl"

    monkeypatch.setattr(InterruptedLogisticRegression, "fits", 0)
    monkeypatch.setattr(InterruptedLogisticRegression, "stop_at", total // 2 + 1)
    with pytest.raises(KeyboardInterrupt):
        build(model=model, checkpoint=path).fit(X, y, reference=reference)
    monkeypatch.setattr(InterruptedLogisticRegression, "fits", 0)
    monkeypatch.setattr(InterruptedLogisticRegression, "stop_at", None)
    resumed = build(model=model, checkpoint=path).fit(X, y, reference=reference)
    assert InterruptedLogisticRegression.fits == total - total // 2
    assert resumed.n_reused_ >= total // 2 and resumed.n_reused_ + resumed.n_evaluations_ == uninterrupted.n_evaluations_
    np.testing.assert_array_equal(resumed.values_, uninterrupted.values_)
    assert not path.exists()

    monkeypatch.setattr(InterruptedLogisticRegression, "fits", 0)
    monkeypatch.setattr(InterruptedLogisticRegression, "stop_at", 3)
    with pytest.raises(KeyboardInterrupt):
        build(model=model, checkpoint=path).fit(X, y, reference=reference)
    monkeypatch.setattr(InterruptedLogisticRegression, "stop_at", None)
    other = build(model=model, checkpoint=path).fit(X + 0.5, y, reference=reference)
    assert other.n_reused_ == 0


def test_the_cache_drops_the_least_recently_used_value():
    """With room for 2 values, touching subsets 0, 1, 0, 2, 0, 1 evaluates 1 again (evicted as least
    recently used when 2 came in) but not 0."""
    masks = np.eye(5, dtype=bool)[:3]
    cached = CachedUtility(lambda s: float(s[0]), 5, max_entries=2)
    assert [cached(masks[i]) for i in (0, 1, 0, 2, 0, 1)] == [0, 1, 0, 2, 0, 1]
    assert cached.n_evaluations == 4


def test_checkpoint_keys_are_fixed_size_digests_that_a_new_fit_reads_back(tmp_path):
    """Subsets of 1,000 players are recorded under 16-byte digests (32 hex digits), not 125-byte masks."""
    n = 1000
    masks = np.eye(n, dtype=bool)[:3]
    path = tmp_path / "game.jsonl"
    checkpoint = Checkpoint(path)
    cached = CachedUtility(lambda s: float(s[0]), n, checkpoint=checkpoint, game="g")
    assert [cached(mask) for mask in masks] == [0, 1, 2]
    checkpoint.close()
    keys = [json.loads(line)["key"] for line in path.read_text().splitlines()]
    assert len(keys) == 3 and all(key[0] == "g" and len(key[1]) == 32 for key in keys)
    resumed = CachedUtility(lambda s: 1 / 0, n, checkpoint=Checkpoint(path), game="g")
    assert [resumed(mask) for mask in masks] == [0, 1, 2] and resumed.n_reused == 3 and resumed.n_evaluations == 0


def test_a_checkpoint_needs_a_utility_that_names_its_game(tmp_path):
    with pytest.raises(InputError, match=r"checkpoint needs a utility with a fingerprint\(\) method"):
        LeaveOneOut(checkpoint=tmp_path / "game.jsonl").fit_game(GAMES["additive"], N)
    with pytest.raises(FileFormatError, match="unsupported file type '.txt' for the checkpoint file"):
        LeaveOneOut(checkpoint=tmp_path / "game.txt").fit_game(GAMES["additive"], N)


# ---------------------------------------------------------------- coefficient × sampler
COEFFICIENTS = {"shapley": ShapleyCoefficient(), "banzhaf": BernoulliCoefficient(0.5), "beta(16,1)": BetaCoefficient(16, 1)}


@pytest.mark.parametrize("name", COEFFICIENTS)
def test_coefficients_are_the_oracles_weights(name):
    for k in range(N):
        assert math.comb(N - 1, k) * COEFFICIENTS[name](N, k) == pytest.approx(SEMIVALUES[name](N, k + 1), rel=1e-12)


@pytest.mark.parametrize(("sampler", "own", "target"), [
    (PermutationSampler(seed=1), "shapley", "beta(16,1)"),
    (PermutationSampler(seed=1), "shapley", "banzhaf"),
    (FlipSampler(BernoulliSampler(0.5, seed=1)), "banzhaf", "shapley"),
    (FlipSampler(BetaBernoulliSampler(1, 1, seed=1)), "shapley", "beta(16,1)"),
])
def test_a_sampler_reweighted_to_another_coefficient_estimates_that_semivalue(sampler, own, target):
    """Importance weights p(k)/q(k): permutations (q = Shapley) estimate Beta(16, 1) and Banzhaf, Banzhaf's
    subsets estimate Shapley; within 4 standard errors of the target's exact values, far from the sampler's own."""
    exact = {name: exact_semivalues(size_profile_game, N, SEMIVALUES[name]) for name in COEFFICIENTS}
    result = Semivalue(sampler=sampler, stopping=MaxSamples(4000), coefficient=COEFFICIENTS[target]).fit_game(
        size_profile_game, N
    ).result_
    assert_within_error_bars(result, exact[target], max_stderr=0.06)
    assert (np.abs(result.values - exact[own]) / result.stderr).max() > 6


def test_maximum_sample_reuse_cannot_be_reweighted():
    with pytest.raises(InputError, match=r"maximum sample reuse estimates only its own semivalue"):
        Semivalue(sampler=MSRSampler(), stopping=MaxSamples(10), coefficient=ShapleyCoefficient()).fit_game(size_profile_game, N)
    with pytest.raises(InputError, match=r"coefficient must be a Coefficient"):
        Semivalue(sampler=PermutationSampler(), stopping=MaxSamples(10), coefficient=0.5).fit_game(size_profile_game, N)


def test_log_coefficients_stay_finite_where_the_coefficients_underflow():
    n = 5000
    sizes = np.arange(n)
    shapley, banzhaf = ShapleyCoefficient().log(n, sizes), BernoulliCoefficient(0.5).log(n, sizes)
    assert np.isfinite(shapley).all() and np.isfinite(banzhaf).all() and ShapleyCoefficient()(n, n // 2) == 0.0
    from scipy.special import gammaln, logsumexp

    binomial = gammaln(n) - gammaln(sizes + 1) - gammaln(n - sizes)  # log C(n−1, k)
    assert logsumexp(shapley + binomial) == pytest.approx(0.0, abs=1e-9)  # Σ_k C(n−1, k) p(k) = 1
    assert logsumexp(banzhaf + binomial) == pytest.approx(0.0, abs=1e-9)


def test_importance_weights_are_formed_for_the_sizes_drawn_and_refused_beyond_float64():
    from dataworth.errors import DataworthError
    from dataworth.valuation.samplers import _weighted

    n = 3000
    log_weights = FlipSampler(BernoulliSampler(0.5))._log_weights(ShapleyCoefficient(), n)
    typical = _weighted(np.ones(3), log_weights, np.array([1450, 1500, 1550]))  # what Bernoulli(1/2) draws
    assert np.isfinite(typical).all()
    with pytest.raises(DataworthError, match=r"an importance weight p\(k\)/q\(k\) exceeds float64"):
        _weighted(np.ones(1), log_weights, np.array([0]))  # a size Bernoulli(1/2) draws with probability 2^-2999

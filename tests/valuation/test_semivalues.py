"""Leave-one-out and semivalue estimators against ground truth: exact enumeration over all 2^n subsets
of closed-form games and of a retrained logistic regression, with the textbook weights written here."""

import itertools
import math

import numpy as np
import pytest
from scipy.special import beta as beta_fn
from sklearn.base import clone
from sklearn.linear_model import LogisticRegression
from threadpoolctl import threadpool_limits

from dataworth.checks import FileFormatError, InputError
from dataworth.result import ValuationResult
from dataworth.valuation.base import prepare_data
from dataworth.valuation.semivalues import MIN_SAMPLES, BetaShapley, DataBanzhaf, LeaveOneOut, TMCShapley
from dataworth.valuation.utility import ModelUtility

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
    "shapley": lambda seed=0: TMCShapley(n_permutations=300, truncation_tolerance=0, seed=seed),
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


def assert_within_error_bars(result, exact, max_stderr):
    stderr = result.components["stderr"]
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


@pytest.mark.parametrize("name", ["shapley", "beta(16,1)"])
def test_marginal_samplers_are_exact_on_additive_games(name):
    """Every marginal contribution of an additive game is w_i, so the estimate has no variance."""
    est = ESTIMATORS[name]().fit_game(GAMES["additive"], N)
    np.testing.assert_allclose(est.values_, WEIGHTS, rtol=0, atol=1e-12)
    np.testing.assert_allclose(est.result_.components["stderr"], 0, atol=1e-12)


def test_leave_one_out_of_closed_form_games():
    np.testing.assert_allclose(LeaveOneOut().fit_game(GAMES["additive"], N).values_, WEIGHTS, atol=1e-12)
    # 14 votes and a quota of 10: only player 0 is pivotal for the grand coalition
    loo = LeaveOneOut().fit_game(lambda s: float(VOTES[list(s)].sum() >= 10), N)
    np.testing.assert_array_equal(loo.values_, [1, 0, 0, 0, 0, 0, 0])
    assert loo.n_evaluations_ == N + 1


def test_truncation_is_exact_and_cheaper_when_the_tail_adds_nothing():
    """In 1[|S| ≥ 2] every prefix past size 2 already has U(D), so truncating there loses nothing
    and only ∅, D, singletons and pairs are ever evaluated."""
    game = GAMES["at-least-two"]
    full = TMCShapley(n_permutations=200, truncation_tolerance=0).fit_game(game, N)
    cut = TMCShapley(n_permutations=200, truncation_tolerance=0.01).fit_game(game, N)
    np.testing.assert_array_equal(cut.values_, full.values_)
    assert cut.n_evaluations_ <= 2 + N + math.comb(N, 2) < full.n_evaluations_


def test_stderr_tolerance_stops_at_the_first_sample_that_meets_it():
    tolerance = 0.03
    early = TMCShapley(n_permutations=10_000, truncation_tolerance=0, stderr_tolerance=tolerance).fit_game(GAMES["voting"], N)
    assert MIN_SAMPLES < early.n_samples_ < 10_000
    assert early.result_.components["stderr"].max() <= tolerance
    np.testing.assert_array_equal(early.result_.components["count"], early.n_samples_)
    one_less = TMCShapley(n_permutations=early.n_samples_ - 1, truncation_tolerance=0).fit_game(GAMES["voting"], N)
    assert one_less.result_.components["stderr"].max() > tolerance


@pytest.mark.parametrize("name", ESTIMATORS)
def test_same_seed_same_numbers(name, tmp_path):
    game = GAMES["voting"]
    first, again, other = (ESTIMATORS[name](seed).fit_game(game, N) for seed in (3, 3, 4))
    np.testing.assert_array_equal(first.values_, again.values_)
    np.testing.assert_array_equal(first.result_.components["stderr"], again.result_.components["stderr"])
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
    return LogisticRegression(max_iter=1000).fit(X[subset], y[subset]).score(Z, y_ref)


@pytest.fixture(scope="module")
def task():
    """Seven labelled rows (row 6 mislabelled), a reference set, and U of all 2^7 subsets."""
    rng = np.random.default_rng(7)
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


# ---------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    ("estimator", "message"),
    [
        (TMCShapley(n_permutations=0), "n_permutations must be an integer >= 1"),
        (TMCShapley(n_permutations=2.5), "n_permutations"),
        (TMCShapley(truncation_tolerance=-0.1), "truncation_tolerance must be a finite number >= 0"),
        (TMCShapley(stderr_tolerance=0), "stderr_tolerance must be a finite number > 0"),
        (TMCShapley(seed=-1), "seed must be an integer >= 0"),
        (BetaShapley(alpha=0), "alpha must be a finite number > 0"),
        (BetaShapley(beta=float("nan")), "beta must be a finite number > 0"),
        (BetaShapley(n_samples=True), "n_samples"),
        (DataBanzhaf(n_samples=0), "n_samples must be an integer >= 1"),
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
    np.testing.assert_array_equal(est.values_, 0.0)
    assert np.isinf(components["stderr"]).all()


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


def test_a_checkpoint_needs_a_utility_that_names_its_game(tmp_path):
    with pytest.raises(InputError, match=r"checkpoint needs a utility with a fingerprint\(\) method"):
        LeaveOneOut(checkpoint=tmp_path / "game.jsonl").fit_game(GAMES["additive"], N)
    with pytest.raises(FileFormatError, match="unsupported file type '.txt' for the checkpoint file"):
        LeaveOneOut(checkpoint=tmp_path / "game.txt").fit_game(GAMES["additive"], N)

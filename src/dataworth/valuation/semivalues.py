r"""Retraining-based data values: leave-one-out and the semivalues Shapley, Beta Shapley and Banzhaf.

Each method values training row i by how much a utility U (by default the reference accuracy of a
model retrained on a subset, :class:`~dataworth.valuation.utility.ModelUtility`) gains when i joins
a subset S of the other rows. A semivalue weighs these marginal contributions by subset size::

    φ_i = Σ_{S ⊆ D∖{i}} p(|S|) · [U(S ∪ {i}) − U(S)],        Σ_k C(n−1, k) · p(k) = 1,

    Shapley       p(k) = k! (n−1−k)! / n!                     (Ghorbani & Zou 2019, Data Shapley)
    Beta(α, β)    p(k) = B(k + β, n−1−k + α) / B(α, β)        (Kwon & Zou 2022, Beta Shapley)
    Banzhaf       p(k) = 1 / 2^(n−1)                          (Wang & Jia 2023, Data Banzhaf)

and p(k) = E_t[t^k (1−t)^(n−1−k)] with t ~ Uniform(0, 1), Beta(β, α) and t ≡ 1/2 respectively: φ_i
is the expected marginal contribution of i to a subset that holds every other row with probability t.
Since the weights of each point sum to 1, an additive game U(S) = Σ_{j∈S} w_j has φ_i = w_i for all.

Every estimator (a coefficient × a sampler, as in pyDVL) has two entry points: ``fit(X, y,
reference=...)`` retrains ``model`` on subsets of labelled rows, ``fit_game(utility, n_players)``
values the players of any callable ``utility(subset_indices) -> float``, e.g. a closed-form game.
Within one fit each distinct subset is evaluated once (:class:`~dataworth.valuation.utility.CachedUtility`).
Monte Carlo estimators report the standard error of each value (component ``stderr``) and the
number of samples behind it (``count``); values are float64, higher = more valuable.
"""

from __future__ import annotations

import os
from numbers import Real

import numpy as np
from sklearn.base import ClassifierMixin

from dataworth.checks import InputError, check_int, check_positive, check_seed
from dataworth.progress import progress_iter
from dataworth.valuation.utility import CachedUtility, SubsetValuator

MIN_SAMPLES = 10
"""Samples drawn before ``stderr_tolerance`` may stop a run (a standard error needs a few to mean anything)."""


class LeaveOneOut(SubsetValuator):
    """Leave-one-out values φ_i = U(D) − U(D∖{i}): n + 1 utility evaluations, deterministic.

    Component ``utility_without``: U(D∖{i}). Parameters: ``model`` (default
    ``LogisticRegression(max_iter=1000)``, used by ``fit``), ``checkpoint`` (resume an interrupted
    fit, see :class:`~dataworth.valuation.utility.SubsetValuator`), ``progress``.
    """

    method = "loo"

    def __init__(
        self, *, model: ClassifierMixin | None = None, checkpoint: str | os.PathLike | None = None, progress: bool = False
    ) -> None:
        self.model = model
        self.checkpoint = checkpoint
        self.progress = progress

    def _validate_params(self) -> None:
        pass

    def _estimate(self, utility: CachedUtility) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        mask = np.ones(utility.n_players, dtype=bool)
        full = utility(mask)
        without = np.empty(utility.n_players)
        for i in progress_iter(range(utility.n_players), "leave-one-out", enabled=self.progress):
            mask[i] = False
            without[i] = utility(mask)
            mask[i] = True
        return full - without, {"utility_without": without}


class _MarginalSampler(SubsetValuator):
    """Average one vector of per-point marginal contributions per sample, until ``n_draws`` samples or
    until every standard error is ≤ ``stderr_tolerance`` (after :data:`MIN_SAMPLES`)."""

    seed: int
    progress: bool
    stderr_tolerance: float | None

    def _marginals(self, utility: CachedUtility, rng: np.random.Generator) -> np.ndarray:
        raise NotImplementedError

    def _sample(self, utility: CachedUtility, n_draws: int) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        rng = np.random.default_rng(self.seed)
        moments = _RunningMoments(utility.n_players)
        for _ in progress_iter(range(n_draws), self.method, enabled=self.progress):
            moments.add(self._marginals(utility, rng))
            tolerance = self.stderr_tolerance
            if tolerance is not None and moments.count >= MIN_SAMPLES and moments.stderr().max() <= tolerance:
                break
        self.n_samples_ = moments.count
        return moments.mean, {"stderr": moments.stderr(), "count": np.full(utility.n_players, moments.count)}

    def _check_sampling(self, n_draws: int, name: str) -> None:
        check_int(n_draws, name)
        check_seed(self.seed)
        if self.stderr_tolerance is not None:
            check_positive(self.stderr_tolerance, "stderr_tolerance")


class TMCShapley(_MarginalSampler):
    """Data Shapley by truncated Monte Carlo permutation sampling (Ghorbani & Zou 2019, Algorithm 1).

    For a uniformly random permutation π, the marginal contribution of π_j is
    U({π_1..π_j}) − U({π_1..π_{j−1}}); averaged over permutations it is unbiased for the Shapley value
    (p(k) = k!(n−1−k)!/n!, see the module docstring), and its marginals sum to U(D) − U(∅).
    Truncation: once |U(D) − U(prefix)| < ``truncation_tolerance``·|U(D)| the rest of the permutation
    is credited 0 without retraining, a bias traded for speed (0 disables it).

    Parameters
    ----------
    n_permutations : maximum number of permutations (each costs ≤ n + 1 utility evaluations).
    truncation_tolerance : relative tolerance of the truncation rule, ≥ 0.
    stderr_tolerance : stop early once every value's standard error is ≤ this (None: never).
    model : classifier retrained by ``fit`` (default ``LogisticRegression(max_iter=1000)``).
    checkpoint : ``.jsonl`` file recording utility values, to resume an interrupted fit (see
        :class:`~dataworth.valuation.utility.SubsetValuator`).
    seed, progress : random seed; progress bar over permutations.
    """

    method = "tmc-shapley"

    def __init__(
        self,
        *,
        n_permutations: int = 100,
        truncation_tolerance: float = 0.01,
        stderr_tolerance: float | None = None,
        model: ClassifierMixin | None = None,
        checkpoint: str | os.PathLike | None = None,
        seed: int = 0,
        progress: bool = False,
    ) -> None:
        self.n_permutations = n_permutations
        self.truncation_tolerance = truncation_tolerance
        self.stderr_tolerance = stderr_tolerance
        self.model = model
        self.checkpoint = checkpoint
        self.seed = seed
        self.progress = progress

    def _validate_params(self) -> None:
        self._check_sampling(self.n_permutations, "n_permutations")
        tolerance = self.truncation_tolerance
        if isinstance(tolerance, bool) or not isinstance(tolerance, Real) or not 0 <= tolerance < np.inf:
            raise InputError(f"truncation_tolerance must be a finite number >= 0 (0 disables truncation); got {tolerance!r}")

    def _estimate(self, utility: CachedUtility) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        return self._sample(utility, self.n_permutations)

    def _marginals(self, utility: CachedUtility, rng: np.random.Generator) -> np.ndarray:
        mask = np.ones(utility.n_players, dtype=bool)
        full = utility(mask)
        threshold = self.truncation_tolerance * abs(full)
        mask[:] = False
        previous = utility(mask)
        marginals = np.zeros(utility.n_players)
        for i in rng.permutation(utility.n_players):
            if abs(full - previous) < threshold:
                break
            mask[i] = True
            current = utility(mask)
            marginals[i] = current - previous
            previous = current
        return marginals


class BetaShapley(_MarginalSampler):
    """Beta(α, β) Shapley (Kwon & Zou 2022): p(k) = B(k + β, n−1−k + α) / B(α, β).

    In the paper's normalization the weight of subsets of size j − 1 is
    w(j) = n·C(n−1, j−1)·B(j + β − 1, n − j + α)/B(α, β) with (1/n) Σ_j w(j) = 1; Beta(1, 1) is the
    Shapley value and the default Beta(16, 1) stresses small subsets, where one row matters most.

    Estimator: p(k) = E_t[t^k (1−t)^(n−1−k)] for t ~ Beta(β, α) (density ∝ t^(β−1)(1−t)^(α−1)), so
    each sample draws t, then S holding each row independently with probability t, and credits row i
    with U(S ∪ {i}) − U(S) if i ∉ S, U(S) − U(S∖{i}) if i ∈ S. Given t, S∖{i} holds each other row
    with probability t in both cases, so every per-row marginal is an unbiased draw of φ_i, with no
    importance weights. A sample costs n + 1 utility evaluations (S and its n one-row flips).

    Parameters
    ----------
    alpha, beta : the Beta parameters, > 0.
    n_samples : maximum number of samples.
    stderr_tolerance : stop early once every value's standard error is ≤ this (None: never).
    model : classifier retrained by ``fit`` (default ``LogisticRegression(max_iter=1000)``).
    checkpoint : ``.jsonl`` file recording utility values, to resume an interrupted fit (see
        :class:`~dataworth.valuation.utility.SubsetValuator`).
    seed, progress : random seed; progress bar over samples.
    """

    method = "beta-shapley"

    def __init__(
        self,
        *,
        alpha: float = 16.0,
        beta: float = 1.0,
        n_samples: int = 100,
        stderr_tolerance: float | None = None,
        model: ClassifierMixin | None = None,
        checkpoint: str | os.PathLike | None = None,
        seed: int = 0,
        progress: bool = False,
    ) -> None:
        self.alpha = alpha
        self.beta = beta
        self.n_samples = n_samples
        self.stderr_tolerance = stderr_tolerance
        self.model = model
        self.checkpoint = checkpoint
        self.seed = seed
        self.progress = progress

    def _validate_params(self) -> None:
        check_positive(self.alpha, "alpha")
        check_positive(self.beta, "beta")
        self._check_sampling(self.n_samples, "n_samples")

    def _estimate(self, utility: CachedUtility) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        return self._sample(utility, self.n_samples)

    def _marginals(self, utility: CachedUtility, rng: np.random.Generator) -> np.ndarray:
        mask = rng.random(utility.n_players) < rng.beta(self.beta, self.alpha)
        base = utility(mask)
        flipped = np.empty(utility.n_players)
        for i in range(utility.n_players):
            mask[i] = not mask[i]
            flipped[i] = utility(mask)
            mask[i] = not mask[i]
        return np.where(mask, base - flipped, flipped - base)


class DataBanzhaf(SubsetValuator):
    """Data Banzhaf by maximum sample reuse (Wang & Jia 2023, MSR estimator).

    Draws ``n_samples`` subsets S_1..S_m, each holding every row independently with probability 1/2,
    evaluates U once per subset and reuses every evaluation for every row::

        φ_i = mean{U(S_t) : i ∈ S_t} − mean{U(S_t) : i ∉ S_t}

    Conditionally on which samples hold i, the other rows are still fair coin flips, so each mean is
    unbiased for E[U(S) | i ∈ S] resp. E[U(S) | i ∉ S], whose difference is the Banzhaf value
    (p(k) = 1/2^(n−1)). ``stderr`` = sqrt(var_in/count_in + var_out/count_out), inf for a row seen
    fewer than twice on one side; a row never seen on one side gets value 0. Components
    ``count_in``/``count_out``: samples with/without i.

    Parameters
    ----------
    n_samples : number of subsets (one utility evaluation each).
    model : classifier retrained by ``fit`` (default ``LogisticRegression(max_iter=1000)``).
    checkpoint : ``.jsonl`` file recording utility values, to resume an interrupted fit (see
        :class:`~dataworth.valuation.utility.SubsetValuator`).
    seed, progress : random seed; progress bar over samples.
    """

    method = "banzhaf"

    def __init__(
        self,
        *,
        n_samples: int = 1000,
        model: ClassifierMixin | None = None,
        checkpoint: str | os.PathLike | None = None,
        seed: int = 0,
        progress: bool = False,
    ) -> None:
        self.n_samples = n_samples
        self.model = model
        self.checkpoint = checkpoint
        self.seed = seed
        self.progress = progress

    def _validate_params(self) -> None:
        check_int(self.n_samples, "n_samples")
        check_seed(self.seed)

    def _estimate(self, utility: CachedUtility) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        rng = np.random.default_rng(self.seed)
        masks = rng.random((self.n_samples, utility.n_players)) < 0.5
        utilities = np.array([utility(mask) for mask in progress_iter(masks, self.method, enabled=self.progress)])
        mean_in, sem2_in, count_in = _masked_mean(masks, utilities)
        mean_out, sem2_out, count_out = _masked_mean(~masks, utilities)
        self.n_samples_ = self.n_samples
        stderr = np.sqrt(sem2_in + sem2_out)
        values = np.where((count_in > 0) & (count_out > 0), mean_in - mean_out, 0.0)
        return values, {"stderr": stderr, "count_in": count_in, "count_out": count_out}


class _RunningMoments:
    """Per-point running mean and variance of a stream of vectors (Welford's algorithm)."""

    def __init__(self, n: int) -> None:
        self.count = 0
        self.mean = np.zeros(n)
        self._squares = np.zeros(n)

    def add(self, sample: np.ndarray) -> None:
        self.count += 1
        delta = sample - self.mean
        self.mean += delta / self.count
        self._squares += delta * (sample - self.mean)

    def stderr(self) -> np.ndarray:
        """Standard error of each mean (sample variance / count, square-rooted); inf below 2 samples."""
        if self.count < 2:
            return np.full(self.mean.shape, np.inf)
        return np.sqrt(self._squares / (self.count - 1) / self.count)


def _masked_mean(masks: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per column j: mean of ``values[masks[:, j]]``, its squared standard error and the count.

    The mean is 0 for an empty column; the squared standard error is inf below 2 entries.
    """
    count = masks.sum(axis=0)
    mean = np.divide(masks.T @ values, count, out=np.zeros(masks.shape[1]), where=count > 0)
    squares = (np.where(masks, values[:, None] - mean, 0.0) ** 2).sum(axis=0)
    sem2 = np.divide(squares, count * (count - 1.0), out=np.full(masks.shape[1], np.inf), where=count > 1)
    return mean, sem2, count


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

:class:`Semivalue` is the generic Monte Carlo estimator, coefficient × sampler × stopping rule as in
pyDVL: a sampler of :mod:`dataworth.valuation.samplers` draws subsets, its marginals are weighted
towards a coefficient of :mod:`dataworth.valuation.coefficients` (none needed when the sampler draws
from that semivalue itself), a rule of :mod:`dataworth.valuation.stopping` says when to stop. :class:`TMCShapley`,
:class:`BetaShapley` and :class:`DataBanzhaf` are configurations of it under their own parameters.
Every estimator has two entry points: ``fit(X, y, reference=...)`` retrains ``model`` on subsets of
labelled rows, ``fit_game(utility, n_players)`` values the players of any callable
``utility(subset_indices) -> float``, e.g. a closed-form game. Within one fit a subset is evaluated
once while it is cached (:class:`~dataworth.valuation.utility.CachedUtility`). Monte Carlo estimators
report the standard error of each value (``result_.stderr``) and the number of samples behind it
(``result_.counts``); values are float64, higher = more valuable.
"""

from __future__ import annotations

import itertools
import os

import numpy as np
from sklearn.base import ClassifierMixin

from dataworth.checks import InputError, check_int, check_positive
from dataworth.progress import progress_iter
from dataworth.valuation.coefficients import Coefficient
from dataworth.valuation.samplers import (
    BernoulliSampler,
    BetaBernoulliSampler,
    FlipSampler,
    MSRSampler,
    PermutationSampler,
    SemivalueSampler,
)
from dataworth.valuation.stopping import MaxSamples, StderrBelow, StoppingRule
from dataworth.valuation.utility import CachedUtility, Estimate, SubsetValuator


class LeaveOneOut(SubsetValuator):
    """Leave-one-out values φ_i = U(D) − U(D∖{i}): n + 1 utility evaluations, deterministic.

    Component ``utility_without``: U(D∖{i}). Parameters: ``model`` (default
    :func:`~dataworth.valuation.utility.default_model`, used by ``fit``), ``checkpoint`` (resume an
    interrupted fit, see :class:`~dataworth.valuation.utility.SubsetValuator`), ``progress``.
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

    def _estimate(self, utility: CachedUtility) -> Estimate:
        mask = np.ones(utility.n_players, dtype=bool)
        full = utility(mask)
        without = np.empty(utility.n_players)
        for i in progress_iter(range(utility.n_players), "leave-one-out", enabled=self.progress):
            mask[i] = False
            without[i] = utility(mask)
            mask[i] = True
        return Estimate(full - without, components={"utility_without": without})


class Semivalue(SubsetValuator):
    """A semivalue by Monte Carlo, coefficient × sampler × stopping rule (as in pyDVL): draw samples from
    ``sampler`` until ``stopping`` says stop, each marginal weighted towards ``coefficient``.

    The sampler draws subsets from its own semivalue q (see :mod:`dataworth.valuation.samplers`):
    :class:`~dataworth.valuation.samplers.PermutationSampler` (Shapley),
    :class:`~dataworth.valuation.samplers.FlipSampler` (Beta Shapley and other Bernoulli semivalues),
    :class:`~dataworth.valuation.samplers.MSRSampler` (Banzhaf, by maximum sample reuse). With a
    ``coefficient`` p (:mod:`dataworth.valuation.coefficients`) every marginal of a subset of k others is
    weighted by p(k)/q(k), an unbiased estimate of the semivalue p from q's draws (e.g. Beta(16, 1) Shapley
    from permutations); without one the sampler's own semivalue is estimated, unweighted. MSR cannot be
    reweighted. The rule is checked after every sample, e.g. ``MaxSamples(2000) | StderrBelow(0.01)``; a
    rule that can never fire (``StderrBelow`` alone on a game whose samples never vary) never stops.

    Parameters
    ----------
    sampler : a :class:`~dataworth.valuation.samplers.SemivalueSampler` (it holds the seed).
    stopping : a :class:`~dataworth.valuation.stopping.StoppingRule`.
    coefficient : the :class:`~dataworth.valuation.coefficients.Coefficient` to estimate (None: the sampler's own).
    model : classifier retrained by ``fit`` (default :func:`~dataworth.valuation.utility.default_model`).
    checkpoint : ``.jsonl`` file recording utility values, to resume an interrupted fit (see
        :class:`~dataworth.valuation.utility.SubsetValuator`).
    progress : progress bar over samples.

    Fitted: ``result_`` (values, ``stderr``, ``counts``), ``n_samples_`` (samples drawn),
    ``n_evaluations_``, ``n_reused_``.
    """

    method = "semivalue"

    def __init__(
        self,
        *,
        sampler: SemivalueSampler,
        stopping: StoppingRule,
        coefficient: Coefficient | None = None,
        model: ClassifierMixin | None = None,
        checkpoint: str | os.PathLike | None = None,
        progress: bool = False,
    ) -> None:
        self.sampler = sampler
        self.stopping = stopping
        self.coefficient = coefficient
        self.model = model
        self.checkpoint = checkpoint
        self.progress = progress

    def _configuration(self) -> tuple[SemivalueSampler, StoppingRule, Coefficient | None]:
        """The sampler, the stopping rule and the target coefficient of this estimator, validated."""
        if not isinstance(self.sampler, SemivalueSampler):
            raise InputError(f"sampler must be a SemivalueSampler (e.g. PermutationSampler()); got {self.sampler!r}")
        if self.coefficient is not None and not isinstance(self.coefficient, Coefficient):
            raise InputError(f"coefficient must be a Coefficient such as BetaCoefficient(16, 1); got {self.coefficient!r}")
        return self.sampler, _check_rule(self.stopping, "stopping"), self.coefficient

    def _validate_params(self) -> None:
        self._configuration()

    def _estimate(self, utility: CachedUtility) -> Estimate:
        sampler, stopping, coefficient = self._configuration()
        samples = sampler.samples(utility, utility.n_players, coefficient)
        steps = range(stopping.max_samples) if stopping.max_samples is not None else itertools.count()
        for _ in progress_iter(steps, self.method, enabled=self.progress):
            estimate = next(samples)
            if stopping(estimate):
                break
        self.n_samples_ = estimate.n_samples
        return estimate.result()


class TMCShapley(Semivalue):
    """Data Shapley by truncated Monte Carlo permutation sampling (Ghorbani & Zou 2019, Algorithm 1).

    ``Semivalue(sampler=PermutationSampler(truncation_tolerance, truncation_patience, seed=seed),
    stopping=MaxSamples(n_permutations) | StderrBelow(stderr_tolerance) | stopping)``. Truncation, as
    in the authors' code: after each player joins, a prefix is within tolerance when
    |U(D) − U(prefix)| < ``truncation_tolerance``·|U(D)|; after more than ``truncation_patience``
    consecutive such prefixes the rest of the permutation is credited 0 without retraining, a bias
    traded for speed (details in :class:`~dataworth.valuation.samplers.PermutationSampler`).

    Parameters
    ----------
    n_permutations : maximum number of permutations (each costs ≤ n + 1 utility evaluations).
    truncation_tolerance : relative tolerance of the truncation rule, ≥ 0 (0 disables truncation).
    truncation_patience : consecutive prefixes within tolerance that are still evaluated, ≥ 0.
    stderr_tolerance : stop early once every value's standard error is ≤ this (None: never; see
        :class:`~dataworth.valuation.stopping.StderrBelow`).
    stopping : a further :class:`~dataworth.valuation.stopping.StoppingRule`; the fit stops as soon
        as any rule says stop (None: none).
    model : classifier retrained by ``fit`` (default :func:`~dataworth.valuation.utility.default_model`).
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
        truncation_patience: int = 5,
        stderr_tolerance: float | None = None,
        stopping: StoppingRule | None = None,
        model: ClassifierMixin | None = None,
        checkpoint: str | os.PathLike | None = None,
        seed: int = 0,
        progress: bool = False,
    ) -> None:
        self.n_permutations = n_permutations
        self.truncation_tolerance = truncation_tolerance
        self.truncation_patience = truncation_patience
        self.stderr_tolerance = stderr_tolerance
        self.stopping = stopping
        self.model = model
        self.checkpoint = checkpoint
        self.seed = seed
        self.progress = progress

    def _configuration(self) -> tuple[SemivalueSampler, StoppingRule, Coefficient | None]:
        stopping = _stopping(self.n_permutations, "n_permutations", self.stderr_tolerance, self.stopping)
        return PermutationSampler(self.truncation_tolerance, self.truncation_patience, seed=self.seed), stopping, None


class BetaShapley(Semivalue):
    """Beta(α, β) Shapley (Kwon & Zou 2022): p(k) = B(k + β, n−1−k + α) / B(α, β).

    In the paper's normalization the weight of subsets of size j − 1 is
    w(j) = n·C(n−1, j−1)·B(j + β − 1, n − j + α)/B(α, β) with (1/n) Σ_j w(j) = 1; Beta(1, 1) is the
    Shapley value and the default Beta(16, 1) stresses small subsets, where one row matters most.

    ``Semivalue(sampler=FlipSampler(BetaBernoulliSampler(alpha, beta, seed=seed)),
    stopping=MaxSamples(n_samples) | StderrBelow(stderr_tolerance) | stopping)``: each sample draws
    t ~ Beta(β, α), then S holding each row with probability t, and credits every row with its
    one-row flip of S, an unbiased draw of φ_i without importance weights (see
    :class:`~dataworth.valuation.samplers.FlipSampler`); a sample costs n + 1 utility evaluations.

    Parameters
    ----------
    alpha, beta : the Beta parameters, > 0.
    n_samples : maximum number of samples.
    stderr_tolerance : stop early once every value's standard error is ≤ this (None: never; see
        :class:`~dataworth.valuation.stopping.StderrBelow`).
    stopping : a further :class:`~dataworth.valuation.stopping.StoppingRule`; the fit stops as soon
        as any rule says stop (None: none).
    model : classifier retrained by ``fit`` (default :func:`~dataworth.valuation.utility.default_model`).
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
        stopping: StoppingRule | None = None,
        model: ClassifierMixin | None = None,
        checkpoint: str | os.PathLike | None = None,
        seed: int = 0,
        progress: bool = False,
    ) -> None:
        self.alpha = alpha
        self.beta = beta
        self.n_samples = n_samples
        self.stderr_tolerance = stderr_tolerance
        self.stopping = stopping
        self.model = model
        self.checkpoint = checkpoint
        self.seed = seed
        self.progress = progress

    def _configuration(self) -> tuple[SemivalueSampler, StoppingRule, Coefficient | None]:
        sampler = FlipSampler(BetaBernoulliSampler(self.alpha, self.beta, seed=self.seed))
        return sampler, _stopping(self.n_samples, "n_samples", self.stderr_tolerance, self.stopping), None


class DataBanzhaf(Semivalue):
    """Data Banzhaf by maximum sample reuse (Wang & Jia 2023, MSR estimator).

    ``Semivalue(sampler=MSRSampler(BernoulliSampler(0.5, seed=seed)), stopping=MaxSamples(n_samples) |
    stopping)``: draws subsets S_1..S_m, each holding every row independently with probability 1/2,
    evaluates U once per subset and reuses every evaluation for every row::

        φ_i = mean{U(S_t) : i ∈ S_t} − mean{U(S_t) : i ∉ S_t}

    Conditionally on which samples hold i, the other rows are still fair coin flips, so each mean is
    unbiased for E[U(S) | i ∈ S] resp. E[U(S) | i ∉ S], whose difference is the Banzhaf value
    (p(k) = 1/2^(n−1)). ``stderr`` = sqrt(var_in/count_in + var_out/count_out), inf for a row seen
    fewer than twice on one side; a row never seen on one side gets value 0. ``counts`` =
    ``count_in`` + ``count_out`` (components: samples with/without i).

    Parameters
    ----------
    n_samples : maximum number of subsets (one utility evaluation each).
    stopping : a further :class:`~dataworth.valuation.stopping.StoppingRule`; the fit stops as soon
        as any rule says stop (None: none).
    model : classifier retrained by ``fit`` (default :func:`~dataworth.valuation.utility.default_model`).
    checkpoint : ``.jsonl`` file recording utility values, to resume an interrupted fit (see
        :class:`~dataworth.valuation.utility.SubsetValuator`).
    seed, progress : random seed; progress bar over samples.
    """

    method = "banzhaf"

    def __init__(
        self,
        *,
        n_samples: int = 1000,
        stopping: StoppingRule | None = None,
        model: ClassifierMixin | None = None,
        checkpoint: str | os.PathLike | None = None,
        seed: int = 0,
        progress: bool = False,
    ) -> None:
        self.n_samples = n_samples
        self.stopping = stopping
        self.model = model
        self.checkpoint = checkpoint
        self.seed = seed
        self.progress = progress

    def _configuration(self) -> tuple[SemivalueSampler, StoppingRule, Coefficient | None]:
        sampler = MSRSampler(BernoulliSampler(0.5, seed=self.seed))
        return sampler, _stopping(self.n_samples, "n_samples", None, self.stopping), None


def _check_rule(rule: object, name: str) -> StoppingRule:
    if not isinstance(rule, StoppingRule):
        raise InputError(f"{name} must be a StoppingRule such as MaxSamples(1000) | StderrBelow(0.01); got {rule!r}")
    return rule


def _stopping(n: int, name: str, stderr_tolerance: float | None, extra: StoppingRule | None) -> StoppingRule:
    """``MaxSamples(n)``, or'ed with ``StderrBelow(stderr_tolerance)`` and ``extra`` when they are given."""
    rule: StoppingRule = MaxSamples(check_int(n, name))
    if stderr_tolerance is not None:
        rule = rule | StderrBelow(check_positive(stderr_tolerance, "stderr_tolerance"))
    if extra is not None:
        rule = rule | _check_rule(extra, "stopping")
    return rule

r"""Samplers for Monte Carlo semivalues: which subsets to evaluate, and how their utilities become values.

A semivalue weighs the marginal contributions of row i by the size of the subset it joins::

    φ_i = Σ_{S ⊆ D∖{i}} p(|S|) · [U(S ∪ {i}) − U(S)]

As in pyDVL, a semivalue estimator is a coefficient p (:mod:`dataworth.valuation.coefficients`) × a
sampler (× a stopping rule, :mod:`dataworth.valuation.stopping`). Every sampler here draws subsets from
the distribution of one semivalue q, its ``coefficient``: its marginals are unbiased draws of that
semivalue as they are, and of any other p once weighted by p(k)/q(k) (``samples(..., target=p)``).

Subset samplers draw boolean inclusion masks and are usable on their own (e.g. m random subsets of
K tasks): :class:`BernoulliSampler` (each player with probability p) and
:class:`BetaBernoulliSampler` (probability t ~ Beta(β, α), drawn afresh for every subset).
Semivalue samplers turn utilities into running estimates, one sample at a time:
:class:`PermutationSampler` (Shapley, optionally truncated), :class:`FlipSampler` (any subset
sampler's semivalue, n + 1 evaluations per subset) and :class:`MSRSampler` (maximum sample reuse for
a fixed p, one evaluation per subset).
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator

import numpy as np

from dataworth.checks import DataworthError, InputError, check_fraction, check_int, check_non_negative, check_positive, check_seed
from dataworth.valuation.coefficients import BernoulliCoefficient, BetaCoefficient, Coefficient, ShapleyCoefficient
from dataworth.valuation.utility import Estimate

MaskUtility = Callable[[np.ndarray], float]
"""A utility of boolean membership masks, e.g. :class:`~dataworth.valuation.utility.CachedUtility`."""


class _Described:
    """``repr`` from the constructor arguments, which subclasses keep as same-named attributes."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in vars(self).items())})"


# ---------------------------------------------------------------------------- subset samplers
class SubsetSampler(_Described, ABC):
    """Random subsets of K players as boolean inclusion masks; the same ``seed`` gives the same masks."""

    seed: int

    def sample(self, n_samples: int, n_players: int) -> np.ndarray:
        """``n_samples`` × ``n_players`` boolean masks, row j holding the players of subset j."""
        check_int(n_samples, "n_samples")
        check_int(n_players, "n_players")
        return self._draw(np.random.default_rng(self.seed), n_samples, n_players)

    def masks(self, n_players: int) -> Iterator[np.ndarray]:
        """An endless stream of masks of ``n_players`` players, one subset at a time."""
        rng = np.random.default_rng(self.seed)
        while True:
            yield self._draw(rng, 1, n_players)[0]

    def _draw(self, rng: np.random.Generator, n_samples: int, n_players: int) -> np.ndarray:
        probabilities = self._probabilities(rng, n_samples)
        return rng.random((n_samples, n_players)) < probabilities[:, None]

    @abstractmethod
    def _probabilities(self, rng: np.random.Generator, n_samples: int) -> np.ndarray:
        """The inclusion probability of each subset to draw."""

    @property
    @abstractmethod
    def coefficient(self) -> Coefficient:
        """p(size): the probability that the other players of a fixed one form one given subset of ``size``."""


class BernoulliSampler(SubsetSampler):
    """Subsets holding each player independently with probability ``p`` (0 < p < 1).

    ``masks(K)`` yields the rows of ``sample(m, K)`` one by one. As a semivalue, p(k) = p^k (1−p)^(n−1−k);
    p = 1/2 is the Banzhaf value (Wang & Jia 2023).
    """

    def __init__(self, p: float = 0.5, *, seed: int = 0) -> None:
        self.p = check_fraction(p, "p (the probability that a subset holds a player)", open_interval=True)
        self.seed = check_seed(seed)

    def _probabilities(self, rng: np.random.Generator, n_samples: int) -> np.ndarray:
        return np.full(n_samples, self.p)

    @property
    def coefficient(self) -> Coefficient:
        return BernoulliCoefficient(self.p)


class BetaBernoulliSampler(SubsetSampler):
    """Subsets holding each player with probability t, t ~ Beta(β, α) drawn anew for every subset.

    As a semivalue this is Beta(α, β) Shapley (Kwon & Zou 2022): p(k) = E_t[t^k (1−t)^(n−1−k)] =
    B(k + β, n−1−k + α) / B(α, β); Beta(1, 1) is the Shapley value, the default Beta(16, 1) stresses
    small subsets.
    """

    def __init__(self, alpha: float = 16.0, beta: float = 1.0, *, seed: int = 0) -> None:
        self.alpha = check_positive(alpha, "alpha")
        self.beta = check_positive(beta, "beta")
        self.seed = check_seed(seed)

    def _probabilities(self, rng: np.random.Generator, n_samples: int) -> np.ndarray:
        return rng.beta(self.beta, self.alpha, size=n_samples)

    @property
    def coefficient(self) -> Coefficient:
        return BetaCoefficient(self.alpha, self.beta)


# ---------------------------------------------------------------------------- running estimates
class _Moments:
    """Per point: running count, mean and sum of squared deviations (Welford); over all samples: the extremes."""

    def __init__(self, n_players: int) -> None:
        self.count = np.zeros(n_players, dtype=np.int64)
        self.mean = np.zeros(n_players)
        self.squares = np.zeros(n_players)
        self.low, self.high = np.inf, -np.inf

    def add(self, sample: np.ndarray | float, where: np.ndarray | slice = slice(None)) -> None:
        self.count[where] += 1
        delta = sample - self.mean[where]
        self.mean[where] += delta / self.count[where]
        self.squares[where] += delta * (sample - self.mean[where])
        self.low, self.high = min(self.low, np.min(sample)), max(self.high, np.max(sample))

    def sem2(self) -> np.ndarray:
        """Squared standard error of each mean; inf below 2 samples."""
        out = np.full(self.mean.shape, np.inf)
        return np.divide(self.squares, self.count * (self.count - 1.0), out=out, where=self.count > 1)

    def sem2_bound(self, spread: float) -> np.ndarray:
        """:meth:`sem2`, but at least 3·spread²/n² for a point of n samples (inf when spread = 0): the rule
        of three, see :class:`~dataworth.valuation.stopping.StderrBelow`."""
        if spread == 0:
            return np.full(self.mean.shape, np.inf)
        floor = np.divide(
            3 * spread**2, self.count.astype(float) ** 2, out=np.full(self.mean.shape, np.inf), where=self.count > 0
        )
        return np.maximum(self.sem2(), floor)


def _spread(*moments: _Moments) -> float:
    """The range of all samples drawn so far together with 0 (a marginal that changes nothing)."""
    return max(0.0, *(m.high for m in moments)) - min(0.0, *(m.low for m in moments))


class RunningEstimate(ABC):
    """The estimate of a semivalue sampler after each sample; a :class:`~dataworth.valuation.stopping.Progress`."""

    def __init__(self) -> None:
        self.n_samples = 0
        self._started = time.perf_counter()

    @property
    def elapsed(self) -> float:
        """Seconds since sampling began."""
        return time.perf_counter() - self._started

    @abstractmethod
    def stderr_bound(self) -> np.ndarray:
        """Per point, the standard error, at least the rule-of-three bound for samples not yet seen."""

    @abstractmethod
    def result(self) -> Estimate:
        """Values, standard errors and sample counts so far."""


class _MeanEstimate(RunningEstimate):
    """φ_i = the mean of one marginal-contribution draw per point and sample."""

    def __init__(self, n_players: int) -> None:
        super().__init__()
        self._moments = _Moments(n_players)

    def add(self, marginals: np.ndarray) -> None:
        self.n_samples += 1
        self._moments.add(marginals)

    def stderr_bound(self) -> np.ndarray:
        return np.sqrt(self._moments.sem2_bound(_spread(self._moments)))

    def result(self) -> Estimate:
        moments = self._moments
        return Estimate(moments.mean.copy(), stderr=np.sqrt(moments.sem2()), counts=moments.count.copy())


class _MSREstimate(RunningEstimate):
    """φ_i = mean{U(S) : i ∈ S} − mean{U(S) : i ∉ S} over the subsets drawn; 0 for a point not yet seen
    on both sides. The standard error is sqrt(sem_in² + sem_out²), inf below two samples on a side."""

    def __init__(self, n_players: int) -> None:
        super().__init__()
        self._in, self._out = _Moments(n_players), _Moments(n_players)

    def add(self, mask: np.ndarray, utility: float) -> None:
        self.n_samples += 1
        self._in.add(utility, mask)
        self._out.add(utility, ~mask)

    def stderr_bound(self) -> np.ndarray:
        spread = _spread(self._in, self._out)
        return np.sqrt(self._in.sem2_bound(spread) + self._out.sem2_bound(spread))

    def result(self) -> Estimate:
        count_in, count_out = self._in.count.copy(), self._out.count.copy()
        values = np.where((count_in > 0) & (count_out > 0), self._in.mean - self._out.mean, 0.0)
        return Estimate(
            values,
            stderr=np.sqrt(self._in.sem2() + self._out.sem2()),
            counts=count_in + count_out,
            components={"count_in": count_in, "count_out": count_out},
        )


# ---------------------------------------------------------------------------- semivalue samplers
class SemivalueSampler(_Described, ABC):
    """Draws subsets with the weights of one semivalue (its :attr:`coefficient`) and keeps the running
    estimate of a semivalue: its own, or another ``target`` coefficient by importance weighting."""

    @property
    @abstractmethod
    def coefficient(self) -> Coefficient:
        """q(size): the semivalue this sampler draws from (see the module docstring)."""

    @abstractmethod
    def samples(self, utility: MaskUtility, n_players: int, target: Coefficient | None = None) -> Iterator[RunningEstimate]:
        """Draw samples without end, yielding the (same, updated) running estimate after each.

        With a ``target`` p, each marginal of a subset of k other players is weighted by p(k)/q(k): a draw
        of S with probability q(|S|) then has expectation Σ_S p(|S|) Δ_i(S), the target semivalue.
        """

    def _log_weights(self, target: Coefficient | None, n_players: int) -> np.ndarray | None:
        """log p(k)/q(k) for k = 0..n−1, or None when the target is this sampler's own semivalue."""
        if target is None:
            return None
        if not isinstance(target, Coefficient):
            raise InputError(f"coefficient must be a Coefficient such as BetaCoefficient(16, 1); got {target!r}")
        sizes = np.arange(n_players)
        return target.log(n_players, sizes) - self.coefficient.log(n_players, sizes)


def _weighted(marginals: np.ndarray, log_weights: np.ndarray | None, sizes: np.ndarray) -> np.ndarray:
    """``marginals`` times p(k)/q(k) for the subset size k each was drawn with; weights are formed only for the
    sizes drawn, so the sizes whose weight exceeds float64 (and that q almost never draws) cost nothing."""
    if log_weights is None:
        return marginals
    with np.errstate(over="ignore"):
        weights = np.exp(log_weights[sizes])
    if not np.isfinite(weights).all():
        raise DataworthError(
            "an importance weight p(k)/q(k) exceeds float64: the sampler drew a subset size that the target "
            "semivalue weighs astronomically more; use a sampler closer to the target (e.g. FlipSampler of its own subsets)"
        )
    return marginals * weights


class PermutationSampler(SemivalueSampler):
    """Shapley values by permutation sampling, optionally truncated (TMC-Shapley, Ghorbani & Zou 2019).

    For a uniformly random permutation π the marginal contribution of π_j is
    U({π_1..π_j}) − U({π_1..π_{j−1}}); averaged over permutations it is unbiased for the Shapley value,
    p(k) = k!(n−1−k)!/n!, and the marginals of one permutation sum to U(D) − U(∅).

    Truncation, as in the authors' code (DShap.py, ``one_iteration``): after each player joins, the
    prefix is within tolerance when |U(D) − U(prefix)| < ``truncation_tolerance``·|U(D)|; once more
    than ``truncation_patience`` consecutive prefixes are, the rest of the permutation is credited 0
    without evaluating it, a bias traded for speed. The empty prefix is never tested (U(∅) close to
    U(D), e.g. majority-class accuracy on an imbalanced reference set, would otherwise end every
    permutation before its first player). 0 disables truncation (the comparison is strict).
    """

    def __init__(self, truncation_tolerance: float = 0.0, truncation_patience: int = 5, *, seed: int = 0) -> None:
        self.truncation_tolerance = check_non_negative(truncation_tolerance, "truncation_tolerance", meaning="0 disables truncation")
        self.truncation_patience = check_int(truncation_patience, "truncation_patience", minimum=0)
        self.seed = check_seed(seed)

    @property
    def coefficient(self) -> Coefficient:
        return ShapleyCoefficient()

    def samples(self, utility: MaskUtility, n_players: int, target: Coefficient | None = None) -> Iterator[RunningEstimate]:
        rng = np.random.default_rng(self.seed)
        estimate = _MeanEstimate(n_players)
        log_weights = self._log_weights(target, n_players)
        sizes = np.empty(n_players, dtype=np.int64)
        while True:
            permutation = rng.permutation(n_players)
            sizes[permutation] = np.arange(n_players)  # player π_j joins a subset of the j − 1 before it
            estimate.add(_weighted(self.marginals(utility, permutation), log_weights, sizes))
            yield estimate

    def marginals(self, utility: MaskUtility, permutation: np.ndarray) -> np.ndarray:
        """The marginal contribution of each player along ``permutation``, truncated as described above."""
        n_players = len(permutation)
        marginals = np.zeros(n_players)
        mask = np.zeros(n_players, dtype=bool)
        previous = utility(mask)
        full = utility(np.ones(n_players, dtype=bool))
        threshold = self.truncation_tolerance * abs(full)
        within = 0
        for i in permutation:
            mask[i] = True
            current = utility(mask)
            marginals[i] = current - previous
            previous = current
            within = within + 1 if abs(full - current) < threshold else 0
            if within > self.truncation_patience:
                break
        return marginals


class FlipSampler(SemivalueSampler):
    """The semivalue of a subset sampler, by flipping each player in and out of every subset drawn.

    Each sample draws S from ``subsets`` and credits row i with U(S ∪ {i}) − U(S) if i ∉ S,
    U(S) − U(S∖{i}) if i ∈ S. Given the subset's inclusion probability t, S∖{i} holds each other row
    with probability t in both cases, so every per-row marginal is an unbiased draw of φ_i with
    p(k) = E_t[t^k (1−t)^(n−1−k)] (Beta Shapley for :class:`BetaBernoulliSampler`, Kwon & Zou 2022),
    with no importance weights. A sample costs n + 1 utility evaluations (S and its n one-row flips).
    """

    def __init__(self, subsets: SubsetSampler) -> None:
        if not isinstance(subsets, SubsetSampler):
            raise InputError(f"subsets must be a SubsetSampler (BernoulliSampler or BetaBernoulliSampler); got {subsets!r}")
        self.subsets = subsets

    @property
    def coefficient(self) -> Coefficient:
        return self.subsets.coefficient

    def samples(self, utility: MaskUtility, n_players: int, target: Coefficient | None = None) -> Iterator[RunningEstimate]:
        estimate = _MeanEstimate(n_players)
        log_weights = self._log_weights(target, n_players)
        for mask in self.subsets.masks(n_players):
            base = utility(mask)
            flipped = np.empty(n_players)
            for i in range(n_players):
                mask[i] = not mask[i]
                flipped[i] = utility(mask)
                mask[i] = not mask[i]
            marginals = np.where(mask, base - flipped, flipped - base)
            # row i is flipped against the k = |S| − [i ∈ S] other rows of S
            estimate.add(_weighted(marginals, log_weights, mask.sum() - mask))
            yield estimate


class MSRSampler(SemivalueSampler):
    """Maximum sample reuse (Wang & Jia 2023, Data Banzhaf): one utility evaluation per subset, reused
    for every row::

        φ_i = mean{U(S_t) : i ∈ S_t} − mean{U(S_t) : i ∉ S_t}

    With S_t from a :class:`BernoulliSampler` of fixed p, the other rows are still independent
    Bernoulli(p) given whether S_t holds i, so each mean is unbiased for E[U(S) | i ∈ S] resp.
    E[U(S) | i ∉ S], whose difference is the semivalue p(k) = p^k (1−p)^(n−1−k) (p = 1/2: Banzhaf).
    A random t (:class:`BetaBernoulliSampler`) is refused: the subsets holding i over-represent large t,
    which would bias both means. The standard error is sqrt(sem_in² + sem_out²), inf for a row seen
    fewer than twice on one side; a row never seen on one side gets value 0.
    """

    def __init__(self, subsets: BernoulliSampler | None = None) -> None:
        subsets = BernoulliSampler(0.5) if subsets is None else subsets
        if not isinstance(subsets, BernoulliSampler):
            raise InputError(
                f"subsets must be a BernoulliSampler (a fixed p): with t ~ Beta the subsets that hold a row favour large t "
                f"and both means would be biased; use FlipSampler for it. Got {subsets!r}"
            )
        self.subsets = subsets

    @property
    def coefficient(self) -> Coefficient:
        return self.subsets.coefficient

    def samples(self, utility: MaskUtility, n_players: int, target: Coefficient | None = None) -> Iterator[RunningEstimate]:
        if target is not None and repr(target) != repr(self.coefficient):
            raise InputError(
                f"maximum sample reuse estimates only its own semivalue ({self.coefficient!r}); for {target!r} "
                "use a PermutationSampler or FlipSampler, whose marginals can be reweighted"
            )
        estimate = _MSREstimate(n_players)
        for mask in self.subsets.masks(n_players):
            estimate.add(mask, utility(mask))
            yield estimate

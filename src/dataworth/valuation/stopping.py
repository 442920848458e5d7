"""When a Monte Carlo valuation stops sampling: composable stopping rules (after pyDVL's ``StoppingCriterion``).

A rule looks at the running estimate after every sample (a :class:`Progress`) and answers whether to
stop. Rules compose: ``a | b`` stops as soon as either says stop, ``a & b`` once both do, e.g.
``MaxSamples(5000) | StderrBelow(0.01) | MaxTime(600)``: at most 5,000 samples and 10 minutes, fewer
once every value is known to ±0.01.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Protocol

import numpy as np

from dataworth.checks import check_int, check_positive

MIN_SAMPLES = 10
"""Samples drawn before :class:`StderrBelow` may stop a run (a standard error needs a few to mean anything)."""


class Progress(Protocol):
    """The running estimate of a Monte Carlo valuation, as a stopping rule sees it after each sample."""

    @property
    def n_samples(self) -> int:
        """Samples drawn so far."""
        ...

    @property
    def elapsed(self) -> float:
        """Seconds since sampling began."""
        ...

    def stderr_bound(self) -> np.ndarray:
        """Per point, the standard error of its value, made conservative for samples not yet seen (the
        rule is in :class:`StderrBelow`)."""
        ...


class StoppingRule(ABC):
    """Says after each sample whether to stop; compose with ``|`` (either) and ``&`` (both)."""

    @abstractmethod
    def __call__(self, progress: Progress) -> bool:
        """True when sampling should stop now."""

    @property
    def max_samples(self) -> int | None:
        """The most samples this rule lets a run draw, when it caps them (None: no cap; used for progress bars)."""
        return None

    def __or__(self, other: StoppingRule) -> StoppingRule:
        return _Combined(self, other, both=False) if isinstance(other, StoppingRule) else NotImplemented

    def __and__(self, other: StoppingRule) -> StoppingRule:
        return _Combined(self, other, both=True) if isinstance(other, StoppingRule) else NotImplemented


class MaxSamples(StoppingRule):
    """Stop once ``n`` samples have been drawn."""

    def __init__(self, n: int) -> None:
        self.n = check_int(n, "MaxSamples(n)")

    def __call__(self, progress: Progress) -> bool:
        return progress.n_samples >= self.n

    @property
    def max_samples(self) -> int:
        return self.n

    def __repr__(self) -> str:
        return f"MaxSamples({self.n})"


class MaxTime(StoppingRule):
    """Stop once ``seconds`` have passed since sampling began (checked after each sample, so the sample
    running at the deadline still finishes)."""

    def __init__(self, seconds: float) -> None:
        self.seconds = check_positive(seconds, "MaxTime(seconds)")

    def __call__(self, progress: Progress) -> bool:
        return progress.elapsed >= self.seconds

    def __repr__(self) -> str:
        return f"MaxTime({self.seconds!r})"


class StderrBelow(StoppingRule):
    r"""Stop once at least :data:`MIN_SAMPLES` samples are in and every value's standard error is ≤ ``threshold``.

    A standard error of 0 from samples that were all identical means "no information", not "no
    error": a rare sample that differs (a pivotal subset) may just not have been drawn yet. Rule of
    three: if a differing sample occurs at rate q, n draws all miss it with probability (1 − q)^n ≤ 5%
    only when q ≥ 3/n, so 3/n is the 95% upper bound on the rate of anything not yet seen. A sample
    deviating by d at rate q = 3/n gives the mean a standard error of d·sqrt(q(1 − q)/n) ≤ √3·d/n.
    So the standard error of a point with n samples is taken as its sample standard error, but never
    below √3·R/n, where R, the range of all samples drawn so far (over all points, together with 0,
    the marginal of a row that changes nothing), stands for d: the scale of the game as seen so far.
    The floor binds only while a point's samples vary little (it falls as 1/n, the sample standard
    error as 1/√n), and it also makes identical samples that rounding made differ by 1e-17 count as
    identical. While every sample has been 0 (R = 0) there is no scale and nothing counts as
    converged: combine with :class:`MaxSamples` or :class:`MaxTime`, which also end such a run.
    """

    def __init__(self, threshold: float) -> None:
        self.threshold = check_positive(threshold, "StderrBelow(threshold)")

    def __call__(self, progress: Progress) -> bool:
        return progress.n_samples >= MIN_SAMPLES and bool(np.all(progress.stderr_bound() <= self.threshold))

    def __repr__(self) -> str:
        return f"StderrBelow({self.threshold!r})"


class _Combined(StoppingRule):
    """``a | b`` (``both=False``: stop as soon as either rule says stop) or ``a & b`` (``both=True``: once both do)."""

    def __init__(self, first: StoppingRule, second: StoppingRule, *, both: bool) -> None:
        self.rules = (first, second)
        self.both = both

    def __call__(self, progress: Progress) -> bool:
        decisions = [rule(progress) for rule in self.rules]
        return all(decisions) if self.both else any(decisions)

    @property
    def max_samples(self) -> int | None:
        caps = [rule.max_samples for rule in self.rules]
        if self.both:  # both must say stop: the larger cap, and no cap if either has none
            return None if None in caps else max(caps)
        known = [cap for cap in caps if cap is not None]
        return min(known) if known else None

    def __repr__(self) -> str:
        return f"({self.rules[0]!r} {'&' if self.both else '|'} {self.rules[1]!r})"

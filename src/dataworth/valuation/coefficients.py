r"""Semivalue coefficients: the weight p(k) a semivalue gives each subset of k other players.

    φ_i = Σ_{S ⊆ D∖{i}} p(|S|) · [U(S ∪ {i}) − U(S)],        Σ_k C(n−1, k) · p(k) = 1

    Shapley        p(k) = k! (n−1−k)! / n! = 1 / (n · C(n−1, k))        (Shapley 1953; Ghorbani & Zou 2019)
    Bernoulli(q)   p(k) = q^k (1−q)^(n−1−k);  q = 1/2 is Banzhaf          (Wang & Jia 2023)
    Beta(α, β)     p(k) = B(k + β, n−1−k + α) / B(α, β)                   (Kwon & Zou 2022)

Each is computed in log space (``log(n, k)``, vectorized over ``k``), so ratios of coefficients stay
finite for thousands of players where the coefficients themselves underflow; calling a coefficient
gives p(k). A sampler (:mod:`dataworth.valuation.samplers`) draws subsets with its own coefficient;
:class:`~dataworth.valuation.semivalues.Semivalue` reweights its marginals by p(k)/q(k) to estimate another.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np
from scipy.special import betaln, gammaln

from dataworth.checks import check_fraction, check_positive


class Coefficient(ABC):
    """p(k) of one semivalue for n players (k = 0..n−1 other players in the subset)."""

    @abstractmethod
    def log(self, n_players: int, size: int | np.ndarray) -> float | np.ndarray:
        """log p(size)."""

    def __call__(self, n_players: int, size: int | np.ndarray) -> float | np.ndarray:
        return np.exp(self.log(n_players, size))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{v!r}' for v in vars(self).values())})"


class ShapleyCoefficient(Coefficient):
    """p(k) = 1 / (n · C(n−1, k)): every subset size equally likely, then a uniform subset of that size."""

    def log(self, n_players: int, size: int | np.ndarray) -> float | np.ndarray:
        k = np.asarray(size, dtype=float)
        return -np.log(n_players) - (gammaln(n_players) - gammaln(k + 1) - gammaln(n_players - k))


class BernoulliCoefficient(Coefficient):
    """p(k) = q^k (1−q)^(n−1−k): each other player present with probability q; q = 1/2 is Banzhaf."""

    def __init__(self, q: float = 0.5) -> None:
        self.q = check_fraction(q, "q (the probability that a subset holds a player)", open_interval=True)

    def log(self, n_players: int, size: int | np.ndarray) -> float | np.ndarray:
        k = np.asarray(size, dtype=float)
        return k * np.log(self.q) + (n_players - 1 - k) * np.log1p(-self.q)


class BetaCoefficient(Coefficient):
    """p(k) = B(k + β, n−1−k + α) / B(α, β) = E_t[t^k (1−t)^(n−1−k)], t ~ Beta(β, α); Beta(1, 1) is Shapley."""

    def __init__(self, alpha: float = 16.0, beta: float = 1.0) -> None:
        self.alpha = check_positive(alpha, "alpha")
        self.beta = check_positive(beta, "beta")

    def log(self, n_players: int, size: int | np.ndarray) -> float | np.ndarray:
        k = np.asarray(size, dtype=float)
        return betaln(k + self.beta, n_players - 1 - k + self.alpha) - betaln(self.alpha, self.beta)

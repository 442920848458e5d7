"""Utilities of training subsets, the cooperative games that retraining-based valuation averages over.

A utility maps a subset S of training rows (a sorted int64 index array) to a number U(S): any such
callable, e.g. a closed-form game, or :class:`ModelUtility`, which retrains a classifier on S.
:class:`SubsetValuator` is the estimator base that turns either into data values; the estimators
themselves are in :mod:`dataworth.valuation.semivalues`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, clone, is_classifier
from sklearn.linear_model import LogisticRegression

from dataworth.checks import InputError, check_int
from dataworth.result import ValuationResult
from dataworth.valuation.base import PreparedData, Valuator, prepare_data

Utility = Callable[[np.ndarray], float]


def default_model() -> ClassifierMixin:
    """The classifier retrained per subset when none is given: ``LogisticRegression(max_iter=1000)``."""
    return LogisticRegression(max_iter=1000)


class ModelUtility:
    """U(S) = accuracy on the reference set of ``model`` trained on the training rows S.

    ``model`` is cloned (``sklearn.base.clone``) for every subset and scored with its own ``score``
    (accuracy for classifiers); set its ``random_state`` if it is randomized. Degenerate subsets are
    not trained on (a classifier cannot fit one class), they predict a constant instead:

    * U(∅) = the accuracy of predicting the reference set's majority class, the "random score"
      baseline of Ghorbani & Zou (2019), so the first point of a subset is credited only with what it
      adds over guessing;
    * a subset whose rows all have class c scores the accuracy of predicting c everywhere, i.e. the
      fraction of reference rows labelled c.
    """

    def __init__(self, data: PreparedData, model: ClassifierMixin | None = None) -> None:
        if data.codes is None or data.ref_codes is None:
            raise InputError("ModelUtility needs labels on both the training and the reference set")
        self.model = default_model() if model is None else model
        self._x = data.x.cpu().numpy()
        self._z = data.z.cpu().numpy()
        self._codes = data.codes
        self._ref_codes = data.ref_codes
        self._class_share = np.bincount(data.ref_codes, minlength=len(data.classes)) / len(data.ref_codes)

    def __call__(self, subset: np.ndarray) -> float:
        if subset.size == 0:
            return float(self._class_share.max())
        labels = self._codes[subset]
        if np.all(labels == labels[0]):
            return float(self._class_share[labels[0]])
        return float(clone(self.model).fit(self._x[subset], labels).score(self._z, self._ref_codes))

    def __repr__(self) -> str:
        return f"ModelUtility({self.model!r})"


class CachedUtility:
    """A utility evaluated on boolean membership masks, each distinct subset computed only once.

    The cache (keyed by the packed mask, n/8 bytes) lives as long as this object, i.e. one ``fit``.
    ``n_evaluations`` counts calls of the wrapped utility (cache misses).
    """

    def __init__(self, utility: Utility, n_players: int) -> None:
        self._utility = utility
        self.n_players = n_players
        self._cache: dict[bytes, float] = {}
        self.n_evaluations = 0

    def __call__(self, mask: np.ndarray) -> float:
        key = np.packbits(mask).tobytes()
        value = self._cache.get(key)
        if value is None:
            subset = np.flatnonzero(mask)
            value = float(self._utility(subset))
            if not np.isfinite(value):
                raise InputError(f"the utility returned {value} for the subset {subset.tolist()}; it must return a finite number")
            self._cache[key] = value
            self.n_evaluations += 1
        return value


class SubsetValuator(Valuator):
    """Base of the retraining-based valuators: ``fit`` values rows of a labelled data set, ``fit_game``
    the players of any utility; subclasses implement ``_validate_params`` and ``_estimate``.

    Both set ``result_`` and ``n_evaluations_`` (distinct subsets whose utility was computed).
    """

    model: ClassifierMixin | None

    def fit(self, X: Any, y: Any = None, *, reference: Any) -> SubsetValuator:
        """Value every row of ``X`` (labels ``y``): U(S) = accuracy on the labelled ``reference`` set of
        ``model`` retrained on the rows S (see :class:`ModelUtility`)."""
        self._validate_params()
        if self.model is not None and not (isinstance(self.model, BaseEstimator) and is_classifier(self.model)):
            raise InputError(f"model must be a scikit-learn classifier (or None for {default_model()!r}); got {self.model!r}")
        data = prepare_data(X, y, reference, method=self.method, require_labels=True)
        return self.fit_game(ModelUtility(data, self.model), data.x.shape[0])

    def fit_game(self, utility: Utility, n_players: int) -> SubsetValuator:
        """Value players ``0..n_players−1`` of the game ``utility(sorted int64 index array) -> float``."""
        started = time.perf_counter()
        self._validate_params()
        if not callable(utility):
            raise InputError(f"utility must be a callable subset_indices -> float; got {utility!r}")
        check_int(n_players, "n_players")
        cached = CachedUtility(utility, int(n_players))
        values, components = self._estimate(cached)
        self.n_evaluations_ = cached.n_evaluations
        params = {**self.get_params(deep=False), "model": None if self.model is None else repr(self.model)}
        params["utility"] = getattr(utility, "__name__", repr(utility))
        timings = {"total": time.perf_counter() - started}
        self.result_ = ValuationResult(values, self.method, params=params, timings=timings, components=components)
        return self

    def _validate_params(self) -> None:
        raise NotImplementedError

    def _estimate(self, utility: CachedUtility) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        raise NotImplementedError

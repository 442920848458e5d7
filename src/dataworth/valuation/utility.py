"""Utilities of training subsets, the cooperative games that retraining-based valuation averages over.

A utility maps a subset S of training rows (a sorted int64 index array) to a number U(S): any such
callable, e.g. a closed-form game, or :class:`ModelUtility`, which retrains a classifier on S.
:class:`SubsetValuator` is the estimator base that turns either into data values; the estimators
themselves are in :mod:`dataworth.valuation.semivalues`.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, clone, is_classifier
from sklearn.linear_model import LogisticRegression

from dataworth.checkpoint import Checkpoint
from dataworth.checks import InputError, check_int
from dataworth.data import check_output_path
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

    def fingerprint(self) -> str:
        """Names the game: a hash of the training and reference rows, their labels and ``repr(model)``.

        Two utilities with the same fingerprint give the same U(S) (for a deterministic model), so a
        checkpoint of utility values may be reused between them.
        """
        digest = hashlib.sha256(repr(self.model).encode())
        for array in (self._x, self._codes, self._z, self._ref_codes):
            digest.update(f"{array.dtype}{array.shape}".encode())
            digest.update(np.ascontiguousarray(array).tobytes())
        return digest.hexdigest()[:32]

    def __repr__(self) -> str:
        return f"ModelUtility({self.model!r})"


class CachedUtility:
    """A utility evaluated on boolean membership masks, each distinct subset computed only once.

    The cache (keyed by the packed mask, n/8 bytes) lives as long as this object, i.e. one ``fit``.
    With a ``checkpoint``, every computed value is also recorded there under ``(game, packed mask)``
    and values already recorded for the same ``game`` are read instead of computed.
    ``n_evaluations`` counts calls of the wrapped utility, ``n_reused`` values read from the checkpoint.
    """

    def __init__(self, utility: Utility, n_players: int, *, checkpoint: Checkpoint | None = None, game: str = "") -> None:
        self._utility = utility
        self.n_players = n_players
        self._cache: dict[bytes, float] = {}
        self._checkpoint = checkpoint
        self._game = game
        self.n_evaluations = 0
        self.n_reused = 0

    def __call__(self, mask: np.ndarray) -> float:
        key = np.packbits(mask).tobytes()
        value = self._cache.get(key)
        if value is None:
            if self._checkpoint is None:
                value = self._evaluate(mask)
            else:
                stored_key = [self._game, key.hex()]
                value = self._checkpoint.get(stored_key)
                if value is None:
                    value = self._evaluate(mask)
                    self._checkpoint.add(stored_key, value)
                else:
                    self.n_reused += 1
            self._cache[key] = value
        return value

    def _evaluate(self, mask: np.ndarray) -> float:
        subset = np.flatnonzero(mask)
        value = float(self._utility(subset))
        if not np.isfinite(value):
            raise InputError(f"the utility returned {value} for the subset {subset.tolist()}; it must return a finite number")
        self.n_evaluations += 1
        return value


class SubsetValuator(Valuator):
    """Base of the retraining-based valuators: ``fit`` values rows of a labelled data set, ``fit_game``
    the players of any utility; subclasses implement ``_validate_params`` and ``_estimate``.

    Both set ``result_``, ``n_evaluations_`` (distinct subsets whose utility was computed) and
    ``n_reused_`` (utility values read from the checkpoint).

    Resuming: with ``checkpoint`` (a ``.jsonl`` path) every utility value is recorded in that file
    as soon as it is computed (:class:`~dataworth.checkpoint.Checkpoint`). If the fit is interrupted,
    the same fit again (same data, model, parameters and seed, so the same subsets are drawn) reads the
    recorded values instead of retraining, and continues from where it stopped. The values are keyed
    by the utility's ``fingerprint()`` (:meth:`ModelUtility.fingerprint` for ``fit``; ``fit_game``
    needs a utility that has one), so a file written for other data is never read as this one's. The
    file is removed when the fit completes.
    """

    model: ClassifierMixin | None
    checkpoint: str | os.PathLike | None

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
        checkpoint, game = self._open_checkpoint(utility)
        cached = CachedUtility(utility, int(n_players), checkpoint=checkpoint, game=game)
        values, components = self._estimate(cached)
        if checkpoint is not None:
            checkpoint.remove()
        self.n_evaluations_, self.n_reused_ = cached.n_evaluations, cached.n_reused
        params = {**self.get_params(deep=False), "model": None if self.model is None else repr(self.model)}
        params["utility"] = getattr(utility, "__name__", repr(utility))
        timings = {"total": time.perf_counter() - started}
        self.result_ = ValuationResult(values, self.method, params=params, timings=timings, components=components)
        return self

    def _open_checkpoint(self, utility: Utility) -> tuple[Checkpoint | None, str]:
        if self.checkpoint is None:
            return None, ""
        path = check_output_path(self.checkpoint, "the checkpoint file", (".jsonl",))
        fingerprint = getattr(utility, "fingerprint", None)
        if not callable(fingerprint):
            raise InputError(
                "checkpoint needs a utility with a fingerprint() method naming its game, so that a file written "
                f"for another game is never reused (ModelUtility, which fit uses, has one); got {utility!r}"
            )
        return Checkpoint(path), str(fingerprint())

    def _validate_params(self) -> None:
        raise NotImplementedError

    def _estimate(self, utility: CachedUtility) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        raise NotImplementedError

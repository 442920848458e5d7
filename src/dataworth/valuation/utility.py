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
import warnings
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from numbers import Number
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, clone, is_classifier
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from dataworth.checkpoint import Checkpoint
from dataworth.checks import DataworthWarning, InputError, PreparedData, check_int, prepare_data
from dataworth.data import check_output_path
from dataworth.linalg import power_of_two_scale
from dataworth.result import ValuationResult
from dataworth.valuation.base import Valuator

Utility = Callable[[np.ndarray], float]

CACHE_ENTRIES = 2**16
"""Default bound on the utility values :class:`CachedUtility` keeps in memory (least recently used go first)."""


def default_model() -> ClassifierMixin:
    """The classifier retrained per subset when none is given:
    ``make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))``; standardizing the features
    (with the subset's own mean and scale) keeps lbfgs well conditioned, so the fits converge."""
    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))


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

    ``n_retrainings`` counts the models trained.
    """

    def __init__(self, data: PreparedData, model: ClassifierMixin | None = None) -> None:
        if data.codes is None or data.ref_codes is None:
            raise InputError("ModelUtility needs labels on both the training and the reference set")
        self.model = default_model() if model is None else model
        # The default model standardizes its features, so rows rescaled by a power of two give exactly the
        # same models, and features ~1e±200 cannot overflow the scaler's variance.
        scale = power_of_two_scale(data.x, data.z) if model is None else 1.0
        self._x = data.x.cpu().numpy() * scale
        self._z = data.z.cpu().numpy() * scale
        self._codes = data.codes
        self._ref_codes = data.ref_codes
        self._class_share = np.bincount(data.ref_codes, minlength=len(data.classes)) / len(data.ref_codes)
        self.n_retrainings = 0

    def __call__(self, subset: np.ndarray) -> float:
        if subset.size == 0:
            return float(self._class_share.max())
        labels = self._codes[subset]
        if np.all(labels == labels[0]):
            return float(self._class_share[labels[0]])
        self.n_retrainings += 1
        try:
            return float(clone(self.model).fit(self._x[subset], labels).score(self._z, self._ref_codes))
        except ValueError as exc:  # the model refused the data (values beyond its range, NaN after its transforms)
            raise InputError(f"{self.model!r} could not be trained on a subset of the training set: {str(exc).splitlines()[0]}") from None

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
    """A utility evaluated on boolean membership masks, each distinct subset computed once while it is cached.

    The cache lives as long as this object, i.e. one ``fit``. It is keyed by a 16-byte BLAKE2b digest
    of the packed mask (fixed size whatever the number of players; among 2^30 distinct subsets two
    collide with probability below 2^-68) and keeps at most ``max_entries`` values, dropping the
    least recently used. With a ``checkpoint``, every computed value is also recorded there under
    ``(game, digest in hex)`` and values already recorded for the same ``game`` are read instead of
    computed. ``n_evaluations`` counts calls of the wrapped utility, ``n_reused`` values read from the
    checkpoint.
    """

    def __init__(
        self,
        utility: Utility,
        n_players: int,
        *,
        checkpoint: Checkpoint | None = None,
        game: str = "",
        max_entries: int = CACHE_ENTRIES,
    ) -> None:
        self._utility = utility
        self.n_players = n_players
        self.max_entries = check_int(max_entries, "max_entries")
        self._cache: OrderedDict[bytes, float] = OrderedDict()
        self._checkpoint = checkpoint
        self._game = game
        self.n_evaluations = 0
        self.n_reused = 0

    def __call__(self, mask: np.ndarray) -> float:
        key = hashlib.blake2b(np.packbits(mask).tobytes(), digest_size=16).digest()
        value = self._cache.get(key)
        if value is not None:
            self._cache.move_to_end(key)
            return value
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
        if len(self._cache) > self.max_entries:
            self._cache.popitem(last=False)
        return value

    def _evaluate(self, mask: np.ndarray) -> float:
        subset = np.flatnonzero(mask)
        value = float(self._utility(subset))
        if not np.isfinite(value):
            raise InputError(f"the utility returned {value} for the subset {subset.tolist()}; it must return a finite number")
        self.n_evaluations += 1
        return value


@dataclass(frozen=True)
class Estimate:
    """What a :class:`SubsetValuator` estimated: the values and, for Monte Carlo methods, the standard
    error and sample count of each, plus further per-row ``components`` (see
    :class:`~dataworth.result.ValuationResult`)."""

    values: np.ndarray
    stderr: np.ndarray | None = None
    counts: np.ndarray | None = None
    components: dict[str, np.ndarray] = field(default_factory=dict)


class SubsetValuator(Valuator):
    """Base of the retraining-based valuators: ``fit`` values rows of a labelled data set, ``fit_game``
    the players of any utility; subclasses implement ``_validate_params`` and ``_estimate``.

    Both set ``result_``, ``n_evaluations_`` (subsets whose utility was computed) and ``n_reused_``
    (utility values read from the checkpoint). ``fit`` runs its retrainings under one
    ``warnings.catch_warnings`` (one for the whole fit, not one per retraining, so that retrainings
    run in threads cannot race on the global warning filters): scikit-learn's ``ConvergenceWarning``,
    one per unconverged fit, is counted instead of shown and reported afterwards as one
    :class:`~dataworth.checks.DataworthWarning`; any other warning is passed on after the fit, once
    per message and place.

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
        utility = ModelUtility(data, self.model)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            self.fit_game(utility, data.x.shape[0])
        self.result_ = replace(self.result_, names=data.names)
        not_converged = min(_pass_on_all_but_convergence(caught), utility.n_retrainings)
        if not_converged:
            warnings.warn(
                f"{not_converged:,} of {utility.n_retrainings:,} retrainings did not converge (sklearn "
                "ConvergenceWarning); raise the model's max_iter or standardize the features",
                DataworthWarning,
                stacklevel=2,
            )
        return self

    def fit_game(self, utility: Utility, n_players: int) -> SubsetValuator:
        """Value players ``0..n_players−1`` of the game ``utility(sorted int64 index array) -> float``."""
        started = time.perf_counter()
        self._validate_params()
        if not callable(utility):
            raise InputError(f"utility must be a callable subset_indices -> float; got {utility!r}")
        check_int(n_players, "n_players")
        checkpoint, game = self._open_checkpoint(utility)
        cached = CachedUtility(utility, int(n_players), checkpoint=checkpoint, game=game)
        estimate = self._estimate(cached)
        if checkpoint is not None:
            checkpoint.discard(lambda key: isinstance(key, list) and key[:1] == [game])  # other games' values stay
        self.n_evaluations_, self.n_reused_ = cached.n_evaluations, cached.n_reused
        plain = (Number, str, os.PathLike)  # kept as they are; models, samplers, rules by their repr
        params = {k: v if v is None or isinstance(v, plain) else repr(v) for k, v in self.get_params(deep=False).items()}
        params["utility"] = getattr(utility, "__name__", repr(utility))
        timings = {"total": time.perf_counter() - started}
        self.result_ = ValuationResult(
            estimate.values,
            self.method,
            params=params,
            timings=timings,
            components=estimate.components,
            stderr=estimate.stderr,
            counts=estimate.counts,
        )
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

    def _estimate(self, utility: CachedUtility) -> Estimate:
        raise NotImplementedError


def _pass_on_all_but_convergence(caught: list[warnings.WarningMessage]) -> int:
    """Re-emit the recorded warnings that are not ``ConvergenceWarning`` (once per message and place)
    and return how many were."""
    shown: dict[Any, Any] = {}
    not_converged = 0
    for warning in caught:
        if issubclass(warning.category, ConvergenceWarning):
            not_converged += 1
        else:
            warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno, registry=shown)
    return not_converged

"""Data-OOB: a row's value is how often the bagged models that never saw it predict its label.

Source: Y. Kwon and J. Zou, "Data-OOB: Out-of-bag Estimate as a Simple and Efficient Data Value",
ICML 2023. With B bootstrap samples S_1..S_B of the N training rows and f_b the model fitted on S_b::

    ψ_i = Σ_b 1[i ∉ S_b] · 1[f_b(x_i) = y_i]  /  Σ_b 1[i ∉ S_b]

the out-of-bag accuracy of row i. Each row is judged by the models that did not train on it, so no
validation set is needed. A row is out of bag for a given model with probability (1 − 1/N)^N ≈ 0.37.
"""

from __future__ import annotations

import time
import warnings
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, is_classifier
from sklearn.ensemble import BaggingClassifier
from sklearn.tree import DecisionTreeClassifier

from dataworth.checks import DataworthWarning, InputError, check_int, check_labelled_training_set, check_seed, warn_if_degenerate
from dataworth.linalg import power_of_two_scale
from dataworth.result import ValuationResult
from dataworth.valuation.base import Valuator


class DataOOB(Valuator):
    """Data-OOB values (Kwon & Zou 2023): out-of-bag accuracy under a bagging ensemble.

    Parameters
    ----------
    n_estimators : B, the number of bootstrap models.
    estimator : an unfitted scikit-learn classifier to bag; ``None`` means ``DecisionTreeClassifier()``.
    seed : seeds the bootstrap samples and the models (``random_state`` of ``BaggingClassifier``).

    A row that is in the bootstrap sample of every model has no out-of-bag estimate; it gets the
    mean of the other rows' values, and the ``oob_count`` component (models that had the row out of
    bag) is 0 for it. Values lie in [0, 1]; mislabeled rows tend towards 0.

    Fitted attributes: ``ensemble_`` (the fitted ``BaggingClassifier``), ``classes_`` and ``result_``.
    """

    method = "data-oob"

    def __init__(self, *, n_estimators: int = 200, estimator: Any = None, seed: int = 0) -> None:
        self.n_estimators = n_estimators
        self.estimator = estimator
        self.seed = seed

    def fit(self, X: Any, y: Any = None, *, reference: Any = None) -> DataOOB:
        """Value every row of ``X`` (labels ``y``, required) by its out-of-bag accuracy.

        ``X`` may be an array, tensor, DataFrame, :class:`~dataworth.data.Dataset` or a file path
        (then ``y`` comes from the file). ``reference`` is accepted so that every method has the same
        ``fit`` signature (the CLI and :func:`dataworth.value` always pass one) and is ignored: the
        out-of-bag estimate needs no validation set.
        """
        started = time.perf_counter()
        self._validate_params()
        x, labels, names = check_labelled_training_set(X, y, method="Data-OOB", why="it bags classifiers")
        if self.estimator is None:
            # Trees split on the order of each feature only, but scikit-learn's work in float32: rows rescaled
            # by a power of two (exact) give the same trees and cannot overflow or underflow float32.
            estimator, x = DecisionTreeClassifier(), x * power_of_two_scale(x)
        else:
            estimator = self.estimator
            if np.abs(x).max() > np.finfo(np.float32).max:
                raise InputError(
                    f"the training set reaches |value| {np.abs(x).max():.3g}, beyond the float32 range that scikit-learn "
                    "models may compute in; rescale the features (e.g. standardize them)"
                )
        self.ensemble_ = BaggingClassifier(estimator, n_estimators=self.n_estimators, bootstrap=True, random_state=self.seed)
        try:
            self.ensemble_.fit(x, labels)
        except ValueError as exc:  # the user's estimator refused the data (e.g. values beyond its float range)
            raise InputError(f"Data-OOB could not fit {estimator!r} on the training set: {exc}") from None
        self.classes_ = self.ensemble_.classes_
        fitted = time.perf_counter()
        # The bagged models are trained on labels encoded as indices into classes_, and predict those.
        hits, counts = oob_correctness(self.ensemble_, x, np.searchsorted(self.classes_, labels))
        values = _oob_accuracy(hits, counts, self.n_estimators)
        warn_if_degenerate(
            values, "Data-OOB", "every row has the same out-of-bag accuracy (one class, or features that separate nothing)"
        )
        timings = {"bagging": fitted - started, "oob": time.perf_counter() - fitted}
        timings["total"] = time.perf_counter() - started
        params = {**self.get_params(deep=False), "estimator": repr(estimator)}
        self.result_ = ValuationResult(
            values, self.method, params=params, timings=timings, components={"oob_count": counts}, names=names
        )
        return self

    def _validate_params(self) -> None:
        check_int(self.n_estimators, "n_estimators")
        if self.estimator is not None and not (isinstance(self.estimator, BaseEstimator) and is_classifier(self.estimator)):
            raise InputError(f"estimator must be a scikit-learn classifier (or None for a decision tree); got {self.estimator!r}")
        check_seed(self.seed)


def oob_correctness(ensemble: BaggingClassifier, x: np.ndarray, codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row: Σ_b 1[i ∉ S_b] · 1[f_b(x_i) = y_i] and Σ_b 1[i ∉ S_b], with ``codes`` indexing ``ensemble.classes_``."""
    n = x.shape[0]
    hits = np.zeros(n, dtype=np.int64)
    counts = np.zeros(n, dtype=np.int64)
    for model, samples, features in zip(ensemble.estimators_, ensemble.estimators_samples_, ensemble.estimators_features_, strict=True):
        oob = np.flatnonzero(np.bincount(samples, minlength=n) == 0)
        if oob.size:
            counts[oob] += 1
            hits[oob] += model.predict(x[np.ix_(oob, features)]) == codes[oob]
    return hits, counts


def _oob_accuracy(hits: np.ndarray, counts: np.ndarray, n_estimators: int) -> np.ndarray:
    """hits / counts; rows never out of bag get the mean over the other rows."""
    seen = counts > 0
    if not seen.any():
        raise InputError(f"no training row was ever out of bag with n_estimators={n_estimators}; use more estimators")
    values = np.empty(hits.shape[0], dtype=np.float64)
    values[seen] = hits[seen] / counts[seen]
    values[~seen] = values[seen].mean()
    unseen = int((~seen).sum())
    if unseen:
        warnings.warn(
            f"{unseen} of {hits.shape[0]} rows were in the bootstrap sample of every model, so they have no out-of-bag "
            f"estimate and get the mean of the others' values; use more estimators than n_estimators={n_estimators}",
            DataworthWarning,
            stacklevel=3,
        )
    return values

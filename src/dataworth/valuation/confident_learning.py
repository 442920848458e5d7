"""Confident learning (cleanlab) as a valuation baseline: what most people use to find label errors today.

Sources: C. G. Northcutt, L. Jiang, I. L. Chuang, "Confident Learning: Estimating Uncertainty in Dataset
Labels", JAIR 70 (2021); J. Kuan, J. Mueller, "Model-Agnostic Label Quality Scoring to Detect Real-World
Label Errors", ICML DataPerf workshop (2022); the cleanlab library (2.x), which computes both here.

Both methods first fit a classifier K times, each time without one of K stratified folds, and keep
its predicted probabilities p̂(· | x_i) for the rows it did not see (out-of-fold probabilities, as
cleanlab asks for). Then

* :class:`ConfidentLearning` (``cleanlab``): ``cleanlab.rank.get_label_quality_scores``, by default the
  self-confidence s_i = p̂(y_i | x_i); low = the label disagrees with what the rest of the data predicts.
* :class:`DatalabIssues` (``datalab``): ``cleanlab.Datalab.find_issues`` with the same probabilities and
  the features, and the value of a row is the lowest of its per-row issue scores (label, outlier,
  near-duplicate; each in [0, 1], low = severe), which are kept as components. Datalab's other issue
  types (non-iid, class imbalance, underperforming group, null) describe the data set or whole groups,
  not one row, and are left out.

The reference set is not used (cleanlab needs none); ``fit`` accepts it so that every method has the
same signature. cleanlab is an optional dependency: ``pip install 'dataworth[cleanlab]'``.
"""

from __future__ import annotations

import time
import warnings
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, is_classifier
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_predict
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from dataworth.checks import InputError, check_choice, check_int, check_labelled_training_set, check_seed
from dataworth.result import ValuationResult
from dataworth.valuation.base import Valuator

MODELS = ("logistic", "knn")
SCORES = ("self_confidence", "normalized_margin", "confidence_weighted_entropy")
#: Datalab's issue types that score single rows (see the module docstring).
ROW_ISSUES = ("label", "outlier", "near_duplicate")


def out_of_fold_probabilities(
    x: np.ndarray, labels: np.ndarray, model: str | ClassifierMixin, *, n_folds: int, seed: int
) -> np.ndarray:
    """p̂(c | x_i) for every row i from a classifier trained without i's fold (``n_folds`` stratified,
    shuffled folds), one column per class in sorted order. ``model``: ``"logistic"`` (standardized
    logistic regression), ``"knn"`` (10 nearest neighbours, as in cleanlab's examples) or any
    scikit-learn classifier with ``predict_proba``."""
    classes, counts = np.unique(labels, return_counts=True)
    if counts.min() < n_folds:
        raise InputError(
            f"{n_folds} folds need at least {n_folds} training rows of every class; class {classes[counts.argmin()].item()!r} "
            f"has {counts.min()}: lower n_folds or give more rows"
        )
    if model == "logistic":
        model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
    elif model == "knn":
        smallest_fold_fit = len(labels) - -(-len(labels) // n_folds)  # rows a model is fitted on, at the least
        model = KNeighborsClassifier(n_neighbors=min(10, smallest_fold_fit))
    folds = StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    if not hasattr(model, "predict_proba"):
        raise InputError(f"{model!r} has no predict_proba; cleanlab needs predicted probabilities (e.g. SVC(probability=True))")
    try:
        return cross_val_predict(model, x, labels, cv=folds, method="predict_proba")
    except ValueError as exc:  # the model refused the data (values beyond its range, ...)
        raise InputError(f"{model!r} could not be trained on the training set: {str(exc).splitlines()[0]}") from None


class _OutOfFold(Valuator):
    """Shared parameters and input handling of the two cleanlab baselines."""

    model: str | ClassifierMixin
    n_folds: int
    seed: int

    def _probabilities(self, X: Any, y: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
        """Validated features, label codes (0..K−1), out-of-fold probabilities and row names."""
        if not (self.model in MODELS or (isinstance(self.model, BaseEstimator) and is_classifier(self.model))):
            raise InputError(f"model must be one of {', '.join(MODELS)} or a scikit-learn classifier; got {self.model!r}")
        check_int(self.n_folds, "n_folds", minimum=2)
        check_seed(self.seed)
        x, labels, names = check_labelled_training_set(X, y, method=self.method, why="cleanlab scores classification labels")
        probabilities = out_of_fold_probabilities(x, labels, self.model, n_folds=self.n_folds, seed=self.seed)
        return x, np.unique(labels, return_inverse=True)[1], probabilities, names


class ConfidentLearning(_OutOfFold):
    """cleanlab's label quality score of every row from out-of-fold probabilities (higher = label more
    likely right).

    Parameters
    ----------
    model : ``"logistic"`` (default), ``"knn"`` or a scikit-learn classifier with ``predict_proba``.
    n_folds : folds of the out-of-fold probabilities (each class needs at least this many rows).
    score : cleanlab's scoring method: ``"self_confidence"`` (default), ``"normalized_margin"`` or
        ``"confidence_weighted_entropy"``.
    seed : seeds the folds.
    """

    method = "cleanlab"

    def __init__(self, *, model: str | ClassifierMixin = "logistic", n_folds: int = 5, score: str = "self_confidence",
                 seed: int = 0) -> None:
        self.model = model
        self.n_folds = n_folds
        self.score = score
        self.seed = seed

    def fit(self, X: Any, y: Any = None, *, reference: Any = None) -> ConfidentLearning:
        """Score every row's label (``reference`` is accepted for a common signature and ignored)."""
        started = time.perf_counter()
        check_choice(self.score, "score", SCORES)
        rank = _cleanlab("rank")
        _, codes, probabilities, names = self._probabilities(X, y)
        fitted = time.perf_counter()
        values = rank.get_label_quality_scores(codes, probabilities, method=self.score)
        timings = {"probabilities": fitted - started, "total": time.perf_counter() - started}
        params = {**self.get_params(), "model": str(self.model)}
        self.result_ = ValuationResult(values, self.method, params=params, timings=timings, names=names)
        return self


class DatalabIssues(_OutOfFold):
    """cleanlab's Datalab issue scores of every row: the lowest of its label, outlier and near-duplicate
    scores (higher = fewer issues); each is a component of the result.

    Parameters: ``model``, ``n_folds`` and ``seed`` as for :class:`ConfidentLearning`.
    """

    method = "datalab"

    def __init__(self, *, model: str | ClassifierMixin = "logistic", n_folds: int = 5, seed: int = 0) -> None:
        self.model = model
        self.n_folds = n_folds
        self.seed = seed

    def fit(self, X: Any, y: Any = None, *, reference: Any = None) -> DatalabIssues:
        """Find every row's issues (``reference`` is accepted for a common signature and ignored)."""
        started = time.perf_counter()
        datalab = _cleanlab("datalab")
        x, codes, probabilities, names = self._probabilities(X, y)
        lab = datalab.Datalab(data={"label": codes}, label_name="label", verbosity=0)
        with warnings.catch_warnings():  # Datalab's notes on issue types it skips are not the user's concern
            warnings.simplefilter("ignore")
            lab.find_issues(features=x, pred_probs=probabilities, issue_types={issue: {} for issue in ROW_ISSUES})
        issues = lab.get_issues()
        scores = {issue: issues[f"{issue}_score"].to_numpy(dtype=np.float64) for issue in ROW_ISSUES}
        values = np.min(np.stack(list(scores.values())), axis=0)
        timings = {"total": time.perf_counter() - started}
        params = {**self.get_params(), "model": str(self.model)}
        self.result_ = ValuationResult(values, self.method, params=params, timings=timings, components=scores, names=names)
        return self


def _cleanlab(module: str) -> Any:
    """``cleanlab.rank`` or ``cleanlab.datalab.datalab``; an :class:`InputError` saying how to install it."""
    try:
        if module == "rank":
            from cleanlab import rank

            return rank
        from cleanlab.datalab import datalab

        return datalab
    except ImportError:
        raise InputError("the cleanlab baselines need cleanlab: pip install 'dataworth[cleanlab]'") from None

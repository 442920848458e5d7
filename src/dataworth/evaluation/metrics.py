"""How well do values find corrupted rows, and what does removing rows do to a model?

Detection metrics score each row by ``-value`` (low value = suspected corrupted) against a boolean
ground-truth mask. Removal curves retrain a model after dropping the lowest- or highest-valued rows.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.base import ClassifierMixin, clone
from sklearn.cluster import KMeans
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import average_precision_score, f1_score, roc_auc_score
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from dataworth.checks import InputError

REMOVAL_MODELS = ("logistic", "mlp")


def detection_auroc(values: np.ndarray, corrupted: np.ndarray) -> float:
    """AUROC of ranking corrupted rows below clean ones, scoring each row by ``-value``."""
    values, corrupted = _check(values, corrupted)
    return float(roc_auc_score(corrupted, -values))


def detection_auprc(values: np.ndarray, corrupted: np.ndarray) -> float:
    """Average precision of finding corrupted rows, scoring each row by ``-value``."""
    values, corrupted = _check(values, corrupted)
    return float(average_precision_score(corrupted, -values))


def two_means_f1(values: np.ndarray, corrupted: np.ndarray, *, seed: int = 0) -> float:
    """F1 of predicting "corrupted" for the low cluster of a 1-D two-means split of the values
    (the OpenDataVal convention: no threshold to tune)."""
    values, corrupted = _check(values, corrupted)
    km = KMeans(n_clusters=2, n_init=10, random_state=seed).fit(values[:, None])
    low = int(np.argmin(km.cluster_centers_[:, 0]))
    return float(f1_score(corrupted, km.labels_ == low))


def detection_rate(values: np.ndarray, corrupted: np.ndarray, *, fraction: float | None = None) -> float:
    """Share of corrupted rows among the lowest ``fraction`` of rows (default: the true corrupted
    fraction, where precision and recall coincide). Ties are broken by row order."""
    values, corrupted = _check(values, corrupted)
    k = int(corrupted.sum()) if fraction is None else max(1, int(round(fraction * len(values))))
    lowest = np.argsort(values, kind="stable")[:k]
    return float(corrupted[lowest].sum() / min(k, corrupted.sum()))


def removal_curve(
    values: np.ndarray,
    X: np.ndarray,
    y: np.ndarray,
    X_test: np.ndarray,
    y_test: np.ndarray,
    *,
    fractions: Sequence[float] = (0.0, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5),
    remove: str = "lowest",
    model: str | ClassifierMixin = "logistic",
    seed: int = 0,
) -> np.ndarray:
    """Held-out accuracy after removing the ``remove`` (``"lowest"``/``"highest"``)-valued
    ``fraction`` of training rows, one entry per fraction (Ghorbani & Zou 2019, point removal)."""
    if remove not in ("lowest", "highest"):
        raise InputError(f"remove must be 'lowest' or 'highest'; got {remove!r}")
    order = np.argsort(values if remove == "lowest" else -np.asarray(values), kind="stable")
    estimator = _removal_model(model, seed)
    accuracies = []
    for fraction in fractions:
        keep = order[int(round(fraction * len(order))):]
        if len(np.unique(y[keep])) < 2:  # no classifier can be fitted: score the constant prediction
            accuracies.append(float(np.mean(y_test == y[keep][0])) if len(keep) else np.nan)
            continue
        accuracies.append(float(clone(estimator).fit(X[keep], y[keep]).score(X_test, y_test)))
    return np.array(accuracies)


def _removal_model(model: str | ClassifierMixin, seed: int) -> ClassifierMixin:
    if not isinstance(model, str):
        return model
    if model == "logistic":
        return make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    if model == "mlp":
        return make_pipeline(StandardScaler(), MLPClassifier(hidden_layer_sizes=(64,), max_iter=500, random_state=seed))
    raise InputError(f"model must be one of {', '.join(REMOVAL_MODELS)} or a scikit-learn classifier; got {model!r}")


def _check(values: np.ndarray, corrupted: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    values, corrupted = np.asarray(values, dtype=np.float64), np.asarray(corrupted, dtype=bool)
    if values.shape != corrupted.shape or values.ndim != 1:
        raise InputError(f"values {values.shape} and the corrupted mask {corrupted.shape} must be 1-D of one length")
    if corrupted.all() or not corrupted.any():
        raise InputError("detection metrics need both corrupted and clean rows")
    return values, corrupted

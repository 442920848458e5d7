"""The built-in models of the gradient methods: naming them, reading the labelled feature table they are trained
on, training them, and reading target rows for them.

``model="mlp"`` or ``"logistic"`` in a gradient method (influence functions, TracIn, TRAK, ...) means: train
that model on the labelled 2-D feature table given to ``fit``. Labels are encoded as 0..C−1 in the order of
``classes`` (sorted); target rows must carry labels among those classes.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from dataworth.checks import InputError, check_features, check_labelled_training_set, check_labels, encode_labels
from dataworth.data import as_dataset
from dataworth.influence.batches import Rows, as_rows
from dataworth.influence.models import FittedModel, fit_logistic, fit_mlp

#: The built-in models ``model=`` may name; they are trained on the rows given to ``fit``.
BUILT_IN_MODELS = ("mlp", "logistic")


def check_built_in(model: str) -> str:
    """``model`` when it names a built-in model, else an :class:`InputError` listing them."""
    if model not in BUILT_IN_MODELS:
        raise InputError(f"unknown model {model!r}; pass an nn.Module, a ModelTask, or one of {', '.join(BUILT_IN_MODELS)}")
    return model


def labelled_table(X: Any, y: Any, *, model: str, method: str) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(float64 features, labels, row names) of the labelled 2-D feature table a built-in ``model`` is trained on."""
    check_built_in(model)
    features, labels, names = check_labelled_training_set(X, y, method=method, why=f"the built-in {model} is a classifier")
    return features.astype(np.float64), labels, names


def fit_built_in(model: str, features: np.ndarray, labels: np.ndarray, *, l2: float, seed: int = 0, hidden: int = 64) -> FittedModel:
    """The built-in ``model`` fitted to a stationary point: :func:`fit_logistic` (sum-form λ = ``l2``) or
    :func:`fit_mlp` (mean-form λ = ``l2``, initialized from ``seed``, ``hidden`` tanh units)."""
    if check_built_in(model) == "logistic":
        return fit_logistic(features, labels, l2=l2)
    return fit_mlp(features, labels, l2=l2, seed=seed, hidden=hidden)


def training_rows(features: np.ndarray, labels: np.ndarray, classes: np.ndarray) -> Rows:
    """The training rows of a built-in model: the features and the labels' codes into ``classes``."""
    return as_rows(features, encode_labels(labels, classes, "the training labels"), name="the training data")


def target_rows(X_test: Any, y_test: Any, *, width: int, classes: np.ndarray) -> Rows:
    """Labelled target rows for a built-in model trained on ``width`` feature columns and ``classes``: float64
    features and label codes (labels outside ``classes`` are an :class:`InputError`)."""
    data = as_dataset(X_test, y_test, "the target data")
    features = check_features(data.X, "the target data").numpy().astype(np.float64)
    if features.shape[1] != width:
        raise InputError(f"the target data has {features.shape[1]} feature columns; the model was trained on {width}")
    if data.y is None:
        raise InputError("the target data needs labels (an .npz holds them as the array 'y')")
    labels = check_labels(data.y, len(features), "the target labels")
    try:
        codes = encode_labels(labels, classes, "the target labels")
    except InputError:
        raise InputError(f"the target labels include classes the model was not trained on; its classes are "
                         f"{', '.join(map(str, classes[:10]))}") from None
    return as_rows(features, codes, name="the target data")

"""The estimator convention every valuation method follows.

Hyper-parameters are set in ``__init__`` only (scikit-learn style, so ``get_params``/``clone``
work); ``fit(...)`` returns ``self``; fitted attributes end in ``_``; ``result_`` is a
:class:`~dataworth.result.ValuationResult` and ``values_`` its float64 values, higher = more valuable.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from sklearn.base import BaseEstimator

from dataworth.checks import DataworthError, InputError, check_features, check_labels, check_same_width, encode_labels
from dataworth.data import as_dataset
from dataworth.result import ValuationResult


class NotFittedError(DataworthError, AttributeError):
    """A fitted attribute was read before ``fit`` was called."""


class Valuator(BaseEstimator):
    """Base class of valuation methods; subclasses set ``method`` and ``result_`` in ``fit``."""

    method: ClassVar[str]
    result_: ValuationResult

    @property
    def values_(self) -> np.ndarray:
        """One float64 value per training row, in input order; higher = more valuable."""
        return self._fitted_result().values

    def _fitted_result(self) -> ValuationResult:
        try:
            return self.__dict__["result_"]
        except KeyError:
            raise NotFittedError(f"{type(self).__name__} is not fitted yet: call fit(...) first") from None


@dataclass(frozen=True)
class PreparedData:
    """Validated training and reference data.

    ``x``/``z`` are 2-D floating tensors of one dtype on one device; ``codes``/``ref_codes`` integer
    labels indexing ``classes`` (the sorted reference classes), or None when the data has no labels.
    """

    x: torch.Tensor
    z: torch.Tensor
    codes: np.ndarray | None
    ref_codes: np.ndarray | None
    classes: np.ndarray | None


def prepare_data(
    X: Any, y: Any, reference: Any, *, method: str, device: str = "cpu", require_labels: bool = False, min_rows: int = 2
) -> PreparedData:
    """Validate a training set and its clean reference set once, at the boundary of ``fit``.

    ``X`` may be an array, tensor, DataFrame or file path (labels then come from the file);
    ``reference`` a file path, an ``(X_ref, y_ref)`` pair, a Dataset or a bare feature array.
    Labels, when present, must be present on both sides and every training class must occur in the
    reference set. ``require_labels`` makes missing labels an error.
    """
    train = as_dataset(X, y, "the training set")
    ref = as_dataset(reference, None, "the reference set")
    x = check_features(train.X, "the training set", device=device)
    if x.shape[0] < min_rows:
        raise InputError(f"{method} needs at least {min_rows} training rows; the training set has {x.shape[0]}")
    z = check_features(ref.X, "the reference set", device=device).to(x.dtype)
    check_same_width(x, z, "the reference set")
    labels = None if train.y is None else check_labels(train.y, x.shape[0], "the training labels")
    ref_labels = None if ref.y is None else check_labels(ref.y, z.shape[0], "the reference labels")
    if require_labels and (labels is None or ref_labels is None):
        missing = "the training set" if labels is None else "the reference set"
        raise InputError(f"{method} needs labels, but {missing} has none")
    if labels is not None and ref_labels is None:
        raise InputError("the training set has labels but the reference set has none; give reference labels")
    if labels is None:
        return PreparedData(x, z, None, None, None)
    classes = np.unique(ref_labels)
    codes = encode_labels(labels, classes, "the training labels")
    return PreparedData(x, z, codes, encode_labels(ref_labels, classes, "the reference labels"), classes)

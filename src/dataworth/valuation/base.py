"""The estimator convention every valuation method follows.

Hyper-parameters are set in ``__init__`` only (scikit-learn style, so ``get_params``/``clone``
work); ``fit(...)`` returns ``self``; fitted attributes end in ``_``; ``result_`` is a
:class:`~dataworth.result.ValuationResult` and ``values_`` its float64 values, higher = more valuable.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
from sklearn.base import BaseEstimator

from dataworth.checks import DataworthError
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

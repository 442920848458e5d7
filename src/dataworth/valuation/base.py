"""The estimator convention every valuation method follows.

Hyper-parameters are set in ``__init__`` only (scikit-learn style, so ``get_params``/``clone``
work); ``fit(...)`` returns ``self``; fitted attributes end in ``_``; ``result_`` is a
:class:`~dataworth.result.ValuationResult` and ``values_`` its float64 values, higher = more valuable.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
from sklearn.base import BaseEstimator

from dataworth.errors import DataworthError, InputError
from dataworth.result import ValuationResult


class NotFittedError(DataworthError, AttributeError):
    """A fitted attribute was read before ``fit`` was called."""


class Valuator(BaseEstimator):
    """Base class of valuation methods; subclasses set ``method`` and ``result_`` in ``fit``.

    ``terms`` names further per-row values a method offers instead of its combined ``values_``
    (``dataworth value --term``), each higher = more valuable, returned by :meth:`term_values`.
    """

    method: ClassVar[str]
    terms: ClassVar[tuple[str, ...]] = ()
    result_: ValuationResult

    @property
    def values_(self) -> np.ndarray:
        """One float64 value per training row, in input order; higher = more valuable."""
        return self._fitted_result().values

    def term_values(self, term: str) -> np.ndarray:
        """The values of ``term``: ``"combined"`` is ``values_``; others are listed in ``terms``."""
        if term != "combined":
            raise InputError(f"{self.method} has no term {term!r}; it offers {', '.join(('combined', *self.terms))}")
        return self.values_

    def _fitted_result(self) -> ValuationResult:
        try:
            return self.__dict__["result_"]
        except KeyError:
            raise NotFittedError(f"{type(self).__name__} is not fitted yet: call fit(...) first") from None

"""The one-line entry point."""

from __future__ import annotations

from typing import Any

from dataworth.checks import InputError
from dataworth.result import ValuationResult
from dataworth.valuation import METHODS


def value(X: Any, y: Any = None, *, reference: Any, method: str = "kairos", **params: Any) -> ValuationResult:
    """Value every row of ``X`` against ``reference`` with ``method``; ``params`` go to its constructor.

    >>> result = dataworth.value(X, y, reference=(X_ref, y_ref))
    >>> result.lowest(10)   # the ten rows most likely to be mislabeled, noisy or poisoned
    """
    if method not in METHODS:
        raise InputError(f"unknown method {method!r}; available: {', '.join(METHODS)}")
    return METHODS[method](**params).fit(X, y, reference=reference).result_

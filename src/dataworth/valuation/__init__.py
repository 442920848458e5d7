"""Model-agnostic valuation methods; ``METHODS`` maps each method name to its class."""

from dataworth.valuation.base import NotFittedError, Valuator
from dataworth.valuation.kairos import Kairos

METHODS: dict[str, type[Valuator]] = {Kairos.method: Kairos}

__all__ = ["METHODS", "Kairos", "NotFittedError", "Valuator"]

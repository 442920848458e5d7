"""Model-agnostic valuation methods; ``METHODS`` maps each method name to its class."""

from dataworth.valuation.base import NotFittedError, Valuator
from dataworth.valuation.data_oob import DataOOB
from dataworth.valuation.kairos import Kairos
from dataworth.valuation.knn_shapley import KNNShapley
from dataworth.valuation.lava import Lava
from dataworth.valuation.semivalues import BetaShapley, DataBanzhaf, LeaveOneOut, TMCShapley

METHODS: dict[str, type[Valuator]] = {
    cls.method: cls for cls in (Kairos, Lava, KNNShapley, DataOOB, LeaveOneOut, TMCShapley, BetaShapley, DataBanzhaf)
}

__all__ = [
    "METHODS",
    "BetaShapley",
    "DataBanzhaf",
    "DataOOB",
    "KNNShapley",
    "Kairos",
    "Lava",
    "LeaveOneOut",
    "NotFittedError",
    "TMCShapley",
    "Valuator",
]

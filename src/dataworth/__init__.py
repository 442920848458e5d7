"""dataworth: what is each piece of your training data worth?"""

from dataworth.api import value
from dataworth.checks import DataworthError, DataworthWarning, FileFormatError, InputError
from dataworth.data import Dataset, load_dataset
from dataworth.result import ValuationResult
from dataworth.valuation import (
    METHODS,
    BetaShapley,
    DataBanzhaf,
    DataOOB,
    Kairos,
    KNNShapley,
    Lava,
    LeaveOneOut,
    NotFittedError,
    TMCShapley,
)

__all__ = [
    "METHODS",
    "BetaShapley",
    "DataBanzhaf",
    "DataOOB",
    "KNNShapley",
    "Lava",
    "LeaveOneOut",
    "TMCShapley",
    "DataworthError",
    "DataworthWarning",
    "Dataset",
    "FileFormatError",
    "InputError",
    "Kairos",
    "NotFittedError",
    "ValuationResult",
    "load_dataset",
    "value",
]
__version__ = "0.1.0"

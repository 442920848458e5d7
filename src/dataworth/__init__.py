"""dataworth: what is each piece of your training data worth?"""

from dataworth.api import value
from dataworth.checks import DataworthError, FileFormatError, InputError
from dataworth.data import Dataset, load_dataset
from dataworth.result import ValuationResult
from dataworth.valuation import METHODS, Kairos, NotFittedError

__all__ = [
    "METHODS",
    "DataworthError",
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

"""dataworth: what is each piece of your training data worth?"""

from dataworth.api import value
from dataworth.checks import DataworthError, DataworthWarning, FileFormatError, InputError
from dataworth.curation import Curator
from dataworth.data import Dataset, load_dataset
from dataworth.influence import TRAK, AirRep, InfluenceFunction, ModelTask, RescaledInfluence, TracIn
from dataworth.methods import METHODS
from dataworth.result import AttributionResult, ValuationResult
from dataworth.valuation import (
    BernoulliSampler,
    BetaShapley,
    ConfidentLearning,
    DataBanzhaf,
    DatalabIssues,
    DataOOB,
    Kairos,
    KNNShapley,
    Lava,
    LeaveOneOut,
    MaxSamples,
    MaxTime,
    NotFittedError,
    Semivalue,
    StderrBelow,
    TMCShapley,
    load_state,
)

__all__ = [
    "METHODS",
    "AirRep",
    "AttributionResult",
    "Curator",
    "InfluenceFunction",
    "ModelTask",
    "RescaledInfluence",
    "TRAK",
    "TracIn",
    "BernoulliSampler",
    "BetaShapley",
    "ConfidentLearning",
    "DataBanzhaf",
    "DataOOB",
    "DatalabIssues",
    "KNNShapley",
    "Lava",
    "LeaveOneOut",
    "MaxSamples",
    "MaxTime",
    "Semivalue",
    "StderrBelow",
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
    "load_state",
    "value",
]
__version__ = "0.1.0"

"""Model-agnostic valuation methods; ``METHODS`` maps each method name to its class."""

from __future__ import annotations

import os

from dataworth.data import existing_file, read_npz_text
from dataworth.errors import FileFormatError
from dataworth.valuation.base import NotFittedError, Valuator
from dataworth.valuation.coefficients import BernoulliCoefficient, BetaCoefficient, Coefficient, ShapleyCoefficient
from dataworth.valuation.confident_learning import ConfidentLearning, DatalabIssues
from dataworth.valuation.data_oob import DataOOB
from dataworth.valuation.kairos import Kairos
from dataworth.valuation.knn_shapley import KNNShapley
from dataworth.valuation.lava import Lava
from dataworth.valuation.samplers import BernoulliSampler, BetaBernoulliSampler, FlipSampler, MSRSampler, PermutationSampler
from dataworth.valuation.semivalues import BetaShapley, DataBanzhaf, LeaveOneOut, Semivalue, TMCShapley
from dataworth.valuation.stopping import MaxSamples, MaxTime, StderrBelow, StoppingRule

METHODS: dict[str, type[Valuator]] = {
    cls.method: cls
    for cls in (Kairos, Lava, KNNShapley, DataOOB, LeaveOneOut, TMCShapley, BetaShapley, DataBanzhaf, ConfidentLearning, DatalabIssues)
}

#: Methods with online updates: ``add`` rows to a fitted estimator, ``save_state`` / ``load_state``.
ONLINE_METHODS: dict[str, type[Valuator]] = {name: cls for name, cls in METHODS.items() if hasattr(cls, "state_format")}


def load_state(path: str | os.PathLike, *, device: str | None = None) -> Valuator:
    """The fitted estimator saved in ``path`` by ``save_state`` (``dataworth value --state-out``), of
    whichever online method wrote it; ``device`` overrides the saved one."""
    path = existing_file(path, "the state file", (".npz",))
    formats = {cls.state_format: cls for cls in ONLINE_METHODS.values()}
    found = read_npz_text(path, "format")
    if found not in formats:
        raise FileFormatError(f"{path} is not a dataworth state file (write one with `dataworth value --state-out` or save_state)")
    return formats[found].load_state(path, device=device)


__all__ = [
    "METHODS",
    "ONLINE_METHODS",
    "BernoulliCoefficient",
    "BernoulliSampler",
    "BetaBernoulliSampler",
    "BetaCoefficient",
    "Coefficient",
    "ConfidentLearning",
    "BetaShapley",
    "DataBanzhaf",
    "DataOOB",
    "DatalabIssues",
    "FlipSampler",
    "KNNShapley",
    "Kairos",
    "Lava",
    "LeaveOneOut",
    "MSRSampler",
    "MaxSamples",
    "MaxTime",
    "NotFittedError",
    "PermutationSampler",
    "Semivalue",
    "ShapleyCoefficient",
    "StderrBelow",
    "StoppingRule",
    "TMCShapley",
    "Valuator",
    "load_state",
]

"""Metrics for how well values find corrupted rows."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import roc_auc_score

from dataworth.checks import InputError


def detection_auroc(values: np.ndarray, corrupted: np.ndarray) -> float:
    """AUROC of ranking corrupted rows below clean ones, scoring each row by ``-value``."""
    corrupted = np.asarray(corrupted, dtype=bool)
    if corrupted.all() or not corrupted.any():
        raise InputError("AUROC needs both corrupted and clean rows")
    return float(roc_auc_score(corrupted, -np.asarray(values)))

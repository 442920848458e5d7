"""Build a report from files on disk: the values, the training data, and optionally a corruption
mask and a clean reference set (what ``dataworth report`` does)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from dataworth.checks import InputError, check_features, check_labels, check_same_width, count_noun
from dataworth.data import Dataset, check_output_path, load_array, load_datasets, load_npz_extras
from dataworth.evaluation.metrics import removal_curve
from dataworth.report.html import write_report
from dataworth.result import ValuationResult

REMOVAL_FRACTIONS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5)


def report_from_files(
    values: str | os.PathLike,
    train: str | os.PathLike,
    out: str | os.PathLike,
    *,
    mask: str | os.PathLike | None = None,
    reference: str | os.PathLike | None = None,
    label_column: str | None = None,
    feature_columns: Sequence[str] | None = None,
    drop_columns: Sequence[str] | None = None,
    id_column: str | None = None,
) -> Path:
    """Write ``out`` (.html). Rows are drawn as images when ``train`` is an .npz with an ``images`` array,
    shown as text with a ``texts`` array, printed as feature rows otherwise. ``mask`` (.npy) holds
    per-row corrupted flags or group names; ``reference`` adds point-removal curves."""
    out_path = check_output_path(out, "--out", (".html",))
    result = ValuationResult.load(values)
    columns = {"label_column": label_column, "feature_columns": feature_columns, "drop_columns": drop_columns,
               "id_column": id_column}
    loaded = load_datasets({"TRAIN": train} | ({} if reference is None else {"REF": reference}), **columns)
    data = loaded["TRAIN"]
    if result.names is None and data.names is not None and len(data.names) == len(result):
        result = replace(result, names=data.names)
    extras = load_npz_extras(train, ("images", "texts"))
    groups = None if mask is None else groups_from_mask(load_array(mask, name="MASK"))
    removal = None
    if reference is not None:
        removal = removal_curves(result, data, loaded["REF"])
    return write_report(
        out_path, result, groups=groups, labels=data.y, images=extras.get("images"), texts=extras.get("texts"),
        features=np.asarray(data.X), feature_names=data.columns, removal=removal, title=f"dataworth report: {Path(values).name}",
    )


def removal_curves(result: ValuationResult, train: Dataset, ref: Dataset) -> dict[str, tuple[tuple[float, ...], np.ndarray]]:
    """Accuracy on ``ref`` of a logistic regression retrained without the lowest/highest-valued rows."""
    if train.y is None or ref.y is None:
        raise InputError("removal curves need labels in both TRAIN and REF")
    ref = ref.aligned_to(train.columns, "REF", "TRAIN")
    X = check_features(train.X, "TRAIN").numpy()
    X_ref = check_features(ref.X, "REF").numpy()
    check_same_width(torch.from_numpy(X), torch.from_numpy(X_ref), "REF")
    y, y_ref = check_labels(train.y, len(X), "TRAIN labels"), check_labels(ref.y, len(X_ref), "REF labels")
    if len(y) != len(result):
        raise InputError(f"TRAIN has {count_noun(len(y), 'row')} but the values file has {count_noun(len(result), 'value')}")
    return {
        f"remove {order} first": (
            REMOVAL_FRACTIONS, removal_curve(result.values, X, y, X_ref, y_ref, fractions=REMOVAL_FRACTIONS, remove=order)
        )
        for order in ("lowest", "highest")
    }


def groups_from_mask(mask: np.ndarray) -> np.ndarray:
    """Boolean (or 0/1 integer) flags become ``corrupted``/``clean``; strings are group names (``clean`` for clean rows)."""
    if mask.ndim != 1:
        raise InputError(f"MASK must be 1-D (one flag or group name per row); got shape {mask.shape}")
    if mask.dtype.kind in "iu" and np.isin(mask, (0, 1)).all():
        mask = mask.astype(bool)
    if mask.dtype == bool:
        return np.where(mask, "corrupted", "clean")
    if mask.dtype.kind in "US":
        return mask.astype(str)
    raise InputError(f"MASK must hold booleans, 0/1 integers or group names; got {mask.dtype} values")

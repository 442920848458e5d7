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
from dataworth.evaluation.attribution_bench import RowDisplay
from dataworth.evaluation.metrics import removal_curve
from dataworth.report.attribution import write_attribution_report
from dataworth.report.html import write_report
from dataworth.result import AttributionResult, ValuationResult

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
    features = check_features(data.X, "TRAIN").numpy()
    labels = None if data.y is None else check_labels(data.y, len(features), "TRAIN's labels")
    result = _paired(result, data.names, len(features))
    extras = load_npz_extras(train, ("images", "texts"))
    groups = None if mask is None else groups_from_mask(load_array(mask, name="MASK"))
    if groups is not None and len(groups) != len(result):
        raise InputError(f"MASK has {count_noun(len(groups), 'row')} but the values file has {count_noun(len(result), 'value')}")
    removal = None
    if reference is not None:
        removal = removal_curves(result, data, loaded["REF"])
    return write_report(
        out_path, result, groups=groups, labels=labels, images=extras.get("images"), texts=extras.get("texts"),
        features=features, feature_names=data.columns, removal=removal, title=f"dataworth report: {Path(values).name}",
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
    return {
        f"remove {order} first": (
            REMOVAL_FRACTIONS, removal_curve(result.values, X, y, X_ref, y_ref, fractions=REMOVAL_FRACTIONS, remove=order)
        )
        for order in ("lowest", "highest")
    }


def _paired(result: ValuationResult, names: np.ndarray | None, n_rows: int) -> ValuationResult:
    """``result`` checked to belong to TRAIN (``n_rows`` rows, named ``names`` or not) row for row: the same
    number of rows and, when both name their rows, the same names in the same order; it takes TRAIN's
    names when it has none."""
    if n_rows != len(result):
        raise InputError(f"TRAIN has {count_noun(n_rows, 'row')} but the values file has {count_noun(len(result), 'value')}")
    if names is None:
        return result
    if result.names is None:
        return replace(result, names=names)
    differ = np.flatnonzero(result.names.astype(str) != names.astype(str))
    if differ.size:
        i = int(differ[0])
        raise InputError(
            f"the values file's rows are not TRAIN's: row {i} is {str(result.names[i])!r} in the values and {str(names[i])!r} "
            "in TRAIN; give the TRAIN the values were computed on"
        )
    return result


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


def attribution_report_from_files(
    attribution: str | os.PathLike,
    train: str | os.PathLike,
    targets: str | os.PathLike,
    out: str | os.PathLike,
    *,
    target_row: int,
    k: int = 8,
) -> Path:
    """Write ``out`` (.html): target ``target_row`` of ``targets`` and its ``k`` most helpful and most harmful rows
    of ``train`` by the attribution file (written by ``AttributionResult.save`` or ``dataworth bench attribute``).
    Rows are images / texts / feature rows as in :func:`report_from_files`."""
    out_path = check_output_path(out, "--out", (".html",))
    result = AttributionResult.load(attribution)
    displays = []
    for path, what, count in ((train, "TRAIN", result.shape[0]), (targets, "--targets", result.shape[1])):
        data = load_datasets({what: path})[what]
        features = check_features(data.X, what).numpy()
        if len(features) != count:
            raise InputError(f"{what} has {count_noun(len(features), 'row')} but the attribution file has {count} along that axis")
        labels = None if data.y is None else check_labels(data.y, len(features), f"{what}'s labels")
        extras = load_npz_extras(path, ("images", "texts"))
        texts = None if "texts" not in extras else [str(t) for t in extras["texts"]]
        displays.append(RowDisplay(labels=labels, images=extras.get("images"), texts=texts, features=features,
                                   feature_names=data.columns))
    return write_attribution_report(out_path, title=f"dataworth attribution: {Path(attribution).name}", results={result.method: result},
                                    target=target_row, train=displays[0], targets=displays[1], k=k)

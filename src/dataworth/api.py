"""The one-line entry point."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from dataworth.checks import InputError
from dataworth.data import load_datasets
from dataworth.methods import METHODS
from dataworth.result import ValuationResult


def value(
    X: Any,
    y: Any = None,
    *,
    reference: Any,
    method: str = "kairos",
    label_column: str | None = None,
    feature_columns: Sequence[str] | None = None,
    drop_columns: Sequence[str] | None = None,
    id_column: str | None = None,
    **params: Any,
) -> ValuationResult:
    """Value every row of ``X`` against ``reference`` with ``method``; ``params`` go to its constructor.

    ``X`` and ``reference`` may be file paths; ``label_column``, ``feature_columns``, ``drop_columns`` and
    ``id_column`` (names the rows) then choose the columns of a .csv/.parquet file, as the command line's
    options do. A DataFrame's own index names its rows when it is not the default 0..n−1.

    >>> result = dataworth.value(X, y, reference=(X_ref, y_ref))
    >>> result.lowest(10)   # the ten rows most likely to be mislabeled, noisy or poisoned
    >>> dataworth.value("train.csv", reference="ref.csv", label_column="target", drop_columns=["id"])
    """
    if method not in METHODS:
        raise InputError(f"unknown method {method!r}; available: {', '.join(METHODS)}")
    cls = METHODS[method]
    unknown = sorted(set(params) - set(cls().get_params()))
    if unknown:
        raise InputError(f"{method} has no parameter {', '.join(map(repr, unknown))}; it has {', '.join(sorted(cls().get_params()))}")
    columns = {"label_column": label_column, "feature_columns": feature_columns, "drop_columns": drop_columns,
               "id_column": id_column}
    files = {name: path for name, path in (("the training file", X), ("the reference file", reference))
             if isinstance(path, (str, os.PathLike))}
    chosen = [k for k, v in columns.items() if v is not None and (k != "label_column" or not files)]
    if chosen and "the training file" not in files:
        raise InputError(f"{', '.join(chosen)} choose columns of a training file; X is not one (select the columns of your data yourself)")
    if y is not None and "the training file" in files:
        raise InputError("X is a file, so its labels come from the file; do not pass y")
    loaded = load_datasets(files, **columns)
    X = loaded.get("the training file", X)
    reference = loaded.get("the reference file", reference)
    return cls(**params).fit(X, y, reference=reference).result_

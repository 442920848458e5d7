"""Input validation in one place.

Every public entry point validates its inputs here, once, and converts them to the types the
algorithms use (torch tensors for features, numpy arrays for labels). Problems are reported as
:class:`DataworthError` subclasses whose message names the argument and says what to do.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from numbers import Integral, Real
from typing import Any

import numpy as np
import pandas as pd
import torch
from sklearn.utils.multiclass import type_of_target

from dataworth.data import as_dataset
from dataworth.errors import DataworthError, DataworthWarning, FileFormatError, InputError  # noqa: F401 (re-exported)

#: torch dtypes numpy cannot hold; converted to float32, which holds them exactly.
_WIDENED = (torch.bfloat16, torch.float8_e4m3fn, torch.float8_e5m2)


def to_numpy(data: Any, name: str) -> np.ndarray:
    """Return ``data`` (array, tensor, DataFrame/Series or nested list) as a numpy array."""
    if isinstance(data, torch.Tensor):
        data = data.detach().cpu()
        if data.dtype in _WIDENED:
            data = data.float()
        if data.is_complex():
            raise InputError(f"{name} must hold real numbers; got a {data.dtype} tensor")
        return data.numpy()
    if isinstance(data, (pd.DataFrame, pd.Series)):
        return data.to_numpy()
    try:
        return np.asarray(data)
    except (ValueError, TypeError) as exc:
        raise InputError(f"{name} cannot be read as an array (rows of unequal length?): {exc}") from None


def check_features(data: Any, name: str, *, device: str | torch.device = "cpu") -> torch.Tensor:
    """Validate a feature matrix and return it as a 2-D floating torch tensor on ``device``.

    float32 input stays float32 (fast path); every other numeric dtype becomes float64. The tensor
    is always a copy: an estimator that keeps it is not changed when the caller changes its array.
    Raises :class:`InputError` for non-numeric values, wrong rank, no rows, or NaN/inf.
    """
    if isinstance(data, pd.DataFrame):
        bad = [str(c) for c, dt in data.dtypes.items() if not (pd.api.types.is_numeric_dtype(dt) and not pd.api.types.is_bool_dtype(dt))]
        if bad:
            raise InputError(f"{name} has non-numeric feature columns: {', '.join(bad)}")
    array = to_numpy(data, name)
    if array.dtype == object or not (np.issubdtype(array.dtype, np.number) or array.dtype == bool):
        raise InputError(f"{name} must hold numbers; got values of dtype {array.dtype}")
    if np.iscomplexobj(array):
        raise InputError(f"{name} must hold real numbers; got complex values")
    if array.ndim != 2:
        raise InputError(f"{name} must be 2-D (rows, features); got shape {array.shape}")
    if array.shape[0] == 0:
        raise InputError(f"{name} is empty: it has no rows")
    if array.shape[1] == 0:
        raise InputError(f"{name} has no feature columns")
    dtype = np.float32 if array.dtype == np.float32 else np.float64
    array = np.array(array, dtype=dtype, order="C", copy=True)
    finite = np.isfinite(array)
    if not finite.all():
        row, col = np.argwhere(~finite)[0]
        raise InputError(f"{name} contains NaN or inf (first at row {row}, column {col}); remove or impute those values")
    return torch.from_numpy(array).to(resolve_device(device))


def cast_features(features: torch.Tensor, dtype: torch.dtype, name: str, *, unit: float = 1.0) -> torch.Tensor:
    """``features`` in ``dtype``; an :class:`InputError` when a value does not fit it (float64 → float32):
    too large for it, or non-zero but below its smallest normal number (precision lost, or 0).

    ``unit`` is what ``features`` were multiplied by (an exact rescaling), so messages give the data's values.
    """
    cast = features.to(dtype)
    if cast.dtype == features.dtype:
        return cast
    kind = str(dtype).removeprefix("torch.")
    magnitude = features.abs()
    if not torch.isfinite(cast).all():
        raise InputError(f"values of {name} exceed the {kind} range (largest |value| {magnitude.max().item() / unit:.3g})")
    if ((magnitude > 0) & (magnitude < torch.finfo(dtype).tiny)).any():
        smallest = magnitude[magnitude > 0].min().item() / unit
        raise InputError(
            f"values of {name} span more than {kind} can hold (largest |value| {magnitude.max().item() / unit:.3g}, "
            f"smallest non-zero {smallest:.3g}); use precision='float64' or rescale the features"
        )
    return cast


def check_labels(data: Any, n_rows: int, name: str) -> np.ndarray:
    """Validate a label vector of length ``n_rows`` and return it as a 1-D numpy array."""
    labels = to_numpy(data, name)
    if labels.ndim == 2 and labels.shape[1] == 1:
        labels = labels[:, 0]
    if labels.ndim != 1:
        raise InputError(f"{name} must be 1-D (one label per row); got shape {labels.shape}")
    if labels.shape[0] != n_rows:
        raise InputError(f"{name} do not match the features: {labels.shape[0]} labels for {n_rows} rows")
    if labels.dtype.kind == "f" and not np.isfinite(labels).all():
        raise InputError(f"{name} contains NaN or inf labels (first at row {int(np.argmin(np.isfinite(labels)))})")
    if labels.dtype == object:
        if any(v is None or (isinstance(v, float) and np.isnan(v)) for v in labels):
            raise InputError(f"{name} contains missing labels")
        if any(not isinstance(v, (str, bytes, Integral, Real)) for v in labels):
            kinds = sorted({type(v).__name__ for v in labels if not isinstance(v, (str, bytes, Integral, Real))})
            raise InputError(f"{name} must be numbers or strings; got values of type {', '.join(kinds)}")
        labels = labels.astype(str)
    if labels.dtype.kind not in "biufUS":
        raise InputError(f"{name} must be numbers or strings; got values of dtype {labels.dtype}")
    return labels


def check_same_width(train: torch.Tensor, other: torch.Tensor, other_name: str) -> None:
    """Raise unless ``other`` has as many feature columns as the training set."""
    if train.shape[1] != other.shape[1]:
        raise InputError(
            f"{other_name} has {count_noun(other.shape[1], 'feature')} but the training set has {train.shape[1]}; "
            "both must be embedded or featurized the same way"
        )


def count_noun(count: int, noun: str) -> str:
    """``"1 row"``, ``"3 rows"``: a count with its noun in the right number."""
    return f"{count} {noun}{'' if count == 1 else 's'}"


def check_positive(value: Any, name: str) -> float:
    """Return ``value`` as a float, raising unless it is a finite number > 0."""
    if isinstance(value, bool) or not isinstance(value, Real) or not np.isfinite(value) or value <= 0:
        raise InputError(f"{name} must be a finite number > 0; got {value!r}")
    return float(value)


def check_non_negative(value: Any, name: str, *, meaning: str = "") -> float:
    """Return ``value`` as a float, raising unless it is a finite number >= 0 (``meaning`` explains 0)."""
    if isinstance(value, bool) or not isinstance(value, Real) or not np.isfinite(value) or value < 0:
        raise InputError(f"{name} must be a finite number >= 0{f' ({meaning})' if meaning else ''}; got {value!r}")
    return float(value)


def check_fraction(value: Any, name: str, *, open_interval: bool = False) -> float:
    """Return ``value`` as a float, raising unless it lies in [0, 1] (in (0, 1) with ``open_interval``)."""
    inside = isinstance(value, Real) and not isinstance(value, bool) and (0 < value < 1 if open_interval else 0 <= value <= 1)
    if not inside:
        interval = "(0, 1)" if open_interval else "[0, 1]"
        raise InputError(f"{name} must be a number in {interval}; got {value!r}")
    return float(value)


def check_int(value: Any, name: str, *, minimum: int = 1, maximum: int | None = None) -> int:
    """Return ``value`` as an int, raising unless it is an integer in ``[minimum, maximum]`` (bools are not)."""
    too_big = maximum is not None and isinstance(value, Integral) and value > maximum
    if isinstance(value, bool) or not isinstance(value, Integral) or value < minimum or too_big:
        upper = "" if maximum is None else f" and <= {maximum}"
        raise InputError(f"{name} must be an integer >= {minimum}{upper}; got {value!r}")
    return int(value)


def check_seed(seed: Any) -> int:
    """Return ``seed`` as an int usable by numpy, scikit-learn and torch generators: 0 <= seed < 2**32."""
    return check_int(seed, "seed", minimum=0, maximum=2**32 - 1)


def check_choice(value: str, name: str, choices: tuple[str, ...]) -> str:
    """Raise unless ``value`` is one of ``choices``."""
    if value not in choices:
        raise InputError(f"{name} must be one of {', '.join(choices)}; got {value!r}")
    return value


def encode_labels(labels: np.ndarray, classes: np.ndarray, name: str) -> np.ndarray:
    """Map ``labels`` to integer codes into ``classes``; unknown labels are an :class:`InputError`."""
    if _is_text(labels) != _is_text(classes):
        kind = {True: "text", False: "numbers"}
        raise InputError(
            f"{name} are {kind[_is_text(labels)]} (e.g. {labels[0].item()!r}) but the reference labels are "
            f"{kind[_is_text(classes)]} (e.g. {classes[0].item()!r}); write the labels of both files the same way"
        )
    known = np.isin(labels, classes)
    if not known.all():
        unknown = np.unique(labels[~known])
        shown = ", ".join(repr(v.item()) for v in unknown[:10]) + (f" and {unknown.size - 10} more" if unknown.size > 10 else "")
        raise InputError(
            f"{name} include labels that do not occur in the reference set: {shown}; "
            "the reference set must contain every class that is scored"
        )
    return np.searchsorted(classes, labels).astype(np.int64)


def _is_text(labels: np.ndarray) -> bool:
    return labels.dtype.kind in "US"


def resolve_device(device: str | torch.device) -> torch.device:
    """Return a usable torch device, raising a clear error if CUDA is asked for but absent."""
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError):
        raise InputError(f"device must be 'cpu', 'cuda' or 'cuda:N'; got {device!r}") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise InputError("device 'cuda' was requested but torch sees no CUDA device; use --device cpu")
    if resolved.type not in ("cpu", "cuda"):
        raise InputError(f"device must be 'cpu' or 'cuda'; got {device!r}")
    return resolved


@dataclass(frozen=True)
class PreparedData:
    """Validated training and reference data.

    ``x``/``z`` are 2-D floating tensors of one dtype on one device; ``codes``/``ref_codes`` integer
    labels indexing ``classes`` (the sorted reference classes), or None when the data has no labels;
    ``columns`` the feature names and ``label_column`` the label column when the training data came
    from a table (None for arrays); ``names`` the training rows' names when it has them, and
    ``id_column`` the column they were read from.
    """

    x: torch.Tensor
    z: torch.Tensor
    codes: np.ndarray | None
    ref_codes: np.ndarray | None
    classes: np.ndarray | None
    columns: tuple[str, ...] | None = None
    label_column: str | None = None
    names: np.ndarray | None = None
    id_column: str | None = None


def prepare_data(
    X: Any, y: Any, reference: Any, *, method: str, device: str = "cpu", require_labels: bool = False, min_rows: int = 2
) -> PreparedData:
    """Validate a training set and its clean reference set once, at the boundary of ``fit``.

    ``X`` may be an array, tensor, DataFrame or file path (labels then come from the file);
    ``reference`` a file path, an ``(X_ref, y_ref)`` pair, a Dataset or a bare feature array.
    Tables are matched by column name (:meth:`~dataworth.data.Dataset.aligned_to`). Labels, when
    present, must be present on both sides and every training class must occur in the reference set.
    ``require_labels`` makes missing labels an error.
    """
    train = as_dataset(X, y, "the training set")
    ref = as_dataset(reference, None, "the reference set").aligned_to(train.columns, "the reference set")
    x = check_features(train.X, "the training set", device=device)
    if x.shape[0] < min_rows:
        raise InputError(f"{method} needs at least {count_noun(min_rows, 'training row')}; the training set has {x.shape[0]}")
    z = check_features(ref.X, "the reference set", device=device).to(x.dtype)
    check_same_width(x, z, "the reference set")
    labels = None if train.y is None else check_labels(train.y, x.shape[0], "the training labels")
    ref_labels = None if ref.y is None else check_labels(ref.y, z.shape[0], "the reference labels")
    if require_labels and (labels is None or ref_labels is None):
        missing = "the training set" if labels is None else "the reference set"
        raise InputError(f"{method} needs labels, but {missing} has none (an .npz holds them as the array 'y')")
    if labels is not None and ref_labels is None:
        raise InputError("the training set has labels but the reference set has none; give reference labels")
    if labels is None:
        return PreparedData(x, z, None, None, None, train.columns, train.label_column, train.names, train.id_column)
    classes = np.unique(ref_labels)
    codes = encode_labels(labels, classes, "the training labels")
    ref_codes = encode_labels(ref_labels, classes, "the reference labels")
    return PreparedData(x, z, codes, ref_codes, classes, train.columns, train.label_column, train.names, train.id_column)


def check_labelled_training_set(X: Any, y: Any, *, method: str, why: str) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """A training set that a method with no reference set needs: features (as numpy), class labels
    (required; ``why`` says why they must be classes) and the rows' names."""
    train = as_dataset(X, y, "the training set")
    x = check_features(train.X, "the training set").numpy()
    if x.shape[0] < 2:
        raise InputError(f"{method} needs at least 2 training rows; the training set has {x.shape[0]}")
    if train.y is None:
        raise InputError(f"{method} needs labels, but the training set has none; pass y")
    labels = check_labels(train.y, x.shape[0], "the training labels")
    kind = type_of_target(labels)
    if kind not in ("binary", "multiclass"):
        raise InputError(f"the training labels must be class labels ({why}); got {kind} values")
    return x, labels, train.names


def warn_if_degenerate(values: np.ndarray, method: str, cause: str) -> None:
    """Warn (:class:`DataworthWarning`) when every value is the same, so the ranking means nothing.

    ``cause`` names the likely cause and the fix for this method (e.g. a bandwidth far from the data's scale).
    """
    if values.size > 1 and np.all(values == values[0]):
        warnings.warn(f"all {values.size} {method} values are equal, so they rank nothing: {cause}", DataworthWarning, stacklevel=3)


def check_subsets(subsets: Any, n: int, *, minimum: int = 1) -> np.ndarray:
    """An m × n subset mask (row j marks the training rows kept in retraining j) as a bool array, m ≥ ``minimum``;
    entries must be 0/1 or bools."""
    array = to_numpy(subsets, "subsets")
    if array.ndim != 2 or array.shape[1] != n:
        raise InputError(f"subsets must be an m × {n} 0/1 mask (one row per subset, one column per training row); got shape {array.shape}")
    if array.shape[0] < minimum:
        raise InputError(f"give at least {minimum} subsets; got {array.shape[0]}")
    if array.dtype != bool:
        if not (np.issubdtype(array.dtype, np.number) and np.isin(array, (0, 1)).all()):
            raise InputError("subsets must hold only 0 and 1 (or True/False): row j marks the training rows kept in retraining j")
        array = array.astype(bool)
    return np.ascontiguousarray(array)

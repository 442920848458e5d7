"""Input validation in one place.

Every public entry point validates its inputs here, once, and converts them to the types the
algorithms use (torch tensors for features, numpy arrays for labels). Problems are reported as
:class:`DataworthError` subclasses whose message names the argument and says what to do.
"""

from __future__ import annotations

from numbers import Integral, Real
from typing import Any

import numpy as np
import pandas as pd
import torch


class DataworthError(Exception):
    """Base class of every error dataworth raises on purpose; the message is meant for users."""


class InputError(DataworthError, ValueError):
    """An argument or file content is not usable (shape, dtype, NaN/inf, unknown label, ...)."""


class FileFormatError(DataworthError):
    """A file is missing, has an unsupported extension, or is not what it claims to be."""


def to_numpy(data: Any, name: str) -> np.ndarray:
    """Return ``data`` (array, tensor, DataFrame/Series or nested list) as a numpy array."""
    if isinstance(data, torch.Tensor):
        return data.detach().cpu().numpy()
    if isinstance(data, (pd.DataFrame, pd.Series)):
        return data.to_numpy()
    try:
        return np.asarray(data)
    except (ValueError, TypeError) as exc:
        raise InputError(f"{name} cannot be read as an array: {exc}") from None


def check_features(data: Any, name: str, *, device: str | torch.device = "cpu") -> torch.Tensor:
    """Validate a feature matrix and return it as a 2-D floating torch tensor on ``device``.

    float32 input stays float32 (fast path); every other numeric dtype becomes float64.
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
    array = np.ascontiguousarray(array, dtype=dtype)
    finite = np.isfinite(array)
    if not finite.all():
        row, col = np.argwhere(~finite)[0]
        raise InputError(f"{name} contains NaN or inf (first at row {row}, column {col}); remove or impute those values")
    return torch.from_numpy(array).to(resolve_device(device))


def cast_features(features: torch.Tensor, dtype: torch.dtype, name: str) -> torch.Tensor:
    """``features`` in ``dtype``; an :class:`InputError` when a value does not fit it (float64 → float32)."""
    cast = features.to(dtype)
    if cast.dtype != features.dtype and not torch.isfinite(cast).all():
        kind = str(dtype).removeprefix("torch.")
        raise InputError(f"values of {name} exceed the {kind} range (largest |value| {features.abs().max().item():.3g})")
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
        labels = labels.astype(str)
    return labels


def check_same_width(train: torch.Tensor, other: torch.Tensor, other_name: str) -> None:
    """Raise unless ``other`` has as many feature columns as the training set."""
    if train.shape[1] != other.shape[1]:
        raise InputError(
            f"{other_name} has {other.shape[1]} features but the training set has {train.shape[1]}; "
            "both must be embedded or featurized the same way"
        )


def check_positive(value: Any, name: str) -> float:
    """Return ``value`` as a float, raising unless it is a finite number > 0."""
    if isinstance(value, bool) or not isinstance(value, Real) or not np.isfinite(value) or value <= 0:
        raise InputError(f"{name} must be a finite number > 0; got {value!r}")
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
    known = np.isin(labels, classes)
    if not known.all():
        unknown = np.unique(labels[~known])[:10]
        raise InputError(
            f"{name} has labels that do not occur in the reference set: {', '.join(map(str, unknown))}; "
            "the reference set must contain every class that is scored"
        )
    return np.searchsorted(classes, labels).astype(np.int64)


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

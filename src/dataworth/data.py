"""Loading datasets from files and writing output files atomically.

Supported inputs: ``.npz`` (arrays ``X`` and optionally ``y``), ``.npy`` (features only),
``.csv`` and ``.parquet`` (numeric feature columns plus a label column, ``label`` by default).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from dataworth.checks import DataworthError, FileFormatError, InputError

DATASET_SUFFIXES = (".npz", ".npy", ".csv", ".parquet")
TABLE_SUFFIXES = (".csv", ".parquet")


@dataclass(frozen=True)
class Dataset:
    """Features (rows × columns) and optional labels, as read from a file or given in memory.

    Contents are validated where they are used (:mod:`dataworth.checks`), not here.
    """

    X: Any
    y: Any = None


def as_dataset(data: Any, labels: Any, name: str, *, label_column: str = "label") -> Dataset:
    """Normalize the ways a dataset can be given: a file path, a Dataset, an ``(X, y)`` pair, or ``X`` (+ ``labels``)."""
    if isinstance(data, (str, os.PathLike)):
        if labels is not None:
            raise InputError(f"{name} is a file, so its labels come from the file; do not pass labels separately")
        return load_dataset(data, label_column=label_column, name=name)
    if isinstance(data, Dataset):
        return data
    if isinstance(data, tuple):
        if len(data) != 2 or labels is not None:
            raise InputError(f"{name} given as a tuple must be (features, labels)")
        return Dataset(*data)
    return Dataset(data, labels)


def load_dataset(path: str | os.PathLike, *, label_column: str = "label", name: str = "input") -> Dataset:
    """Read a dataset file; ``name`` is used in error messages (e.g. ``TRAIN``)."""
    path = existing_file(path, name, DATASET_SUFFIXES)
    suffix = path.suffix.lower()
    if suffix == ".npy":
        return Dataset(_read_npy(path, name))
    if suffix == ".npz":
        return _read_npz(path, name)
    table = _read_table(path, name)
    if label_column not in table.columns:
        columns = ", ".join(map(str, table.columns[:20]))
        raise InputError(f"{name} has no label column {label_column!r} (columns: {columns}); pass --label-column")
    features = table.drop(columns=[label_column])
    non_numeric = [str(c) for c, dt in features.dtypes.items() if not pd.api.types.is_numeric_dtype(dt) or pd.api.types.is_bool_dtype(dt)]
    if non_numeric:
        raise InputError(f"{name} has non-numeric feature columns: {', '.join(non_numeric[:10])}")
    return Dataset(features.to_numpy(dtype=np.float64), table[label_column].to_numpy())


def load_array(path: str | os.PathLike, *, name: str) -> np.ndarray:
    """Read one array from an ``.npy`` file (no pickle)."""
    return _read_npy(existing_file(path, name, (".npy",)), name)


def load_npz_extras(path: str | os.PathLike, keys: tuple[str, ...]) -> dict[str, np.ndarray]:
    """The arrays among ``keys`` that an ``.npz`` dataset holds beside ``X`` and ``y`` (e.g. ``images``
    for display); empty for other formats."""
    if Path(path).suffix.lower() != ".npz":
        return {}
    with np.load(path, allow_pickle=False) as archive:
        return {k: archive[k] for k in keys if k in archive.files}


def existing_file(path: str | os.PathLike, name: str, suffixes: tuple[str, ...]) -> Path:
    """Return ``path`` as a Path, raising unless it exists and has one of ``suffixes``."""
    path = Path(path)
    if path.suffix.lower() not in suffixes:
        raise FileFormatError(f"unsupported file type {path.suffix or '(none)'!r} for {name} ({path}): use {', '.join(suffixes)}")
    if not path.is_file():
        raise FileFormatError(f"{name} file not found: {path}")
    return path


def check_output_path(path: str | os.PathLike, name: str, suffixes: tuple[str, ...]) -> Path:
    """Validate an output path before any work is done: known suffix and an existing directory."""
    path = Path(path)
    if path.suffix.lower() not in suffixes:
        raise FileFormatError(f"unsupported file type {path.suffix or '(none)'!r} for {name} ({path}): use {', '.join(suffixes)}")
    if not path.parent.resolve().is_dir():
        raise FileFormatError(f"the directory of {name} does not exist: {path.parent}")
    return path


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it replaces ``path`` in one rename.

    If the body raises, the temporary file is removed and ``path`` is left untouched, so a failed
    run never leaves a partial output file.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{path.suffix}", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; give the file the usual permissions
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def jsonable(value: Any) -> Any:
    """``json.dumps``'s ``default``: numpy scalars as Python numbers; anything else JSON cannot hold as its text."""
    return value.item() if isinstance(value, np.generic) else str(value)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _read_npy(path: Path, name: str) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise FileFormatError(f"{name} is not a readable .npy array file ({path}): {exc}") from None


def _read_npz(path: Path, name: str) -> Dataset:
    try:
        with np.load(path, allow_pickle=False) as archive:
            if "X" not in archive.files:
                raise InputError(f"{name} ({path}) must hold an array named 'X' (found: {', '.join(archive.files) or 'none'})")
            return Dataset(archive["X"], archive["y"] if "y" in archive.files else None)
    except DataworthError:
        raise
    except (ValueError, OSError, zipfile.BadZipFile) as exc:
        raise FileFormatError(f"{name} is not a readable .npz archive ({path}): {exc}") from None


def _read_table(path: Path, name: str) -> pd.DataFrame:
    try:
        return pd.read_parquet(path) if path.suffix.lower() == ".parquet" else pd.read_csv(path)
    except Exception as exc:  # pandas/pyarrow raise many unrelated types for unreadable files
        raise FileFormatError(f"{name} is not a readable {path.suffix} table ({path}): {exc}") from None

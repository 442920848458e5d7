"""Loading datasets from files and writing output files atomically.

Supported inputs: ``.npz`` (arrays ``X`` and optionally ``y``), ``.npy`` (features only),
``.csv`` and ``.parquet`` (numeric feature columns plus a label column, ``label`` by default).
"""

from __future__ import annotations

import contextlib
import csv
import difflib
import os
import tempfile
import zipfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from dataworth.errors import DataworthError, FileFormatError, InputError

DATASET_SUFFIXES = (".npz", ".npy", ".csv", ".parquet")
TABLE_SUFFIXES = (".csv", ".parquet")
DEFAULT_LABEL_COLUMN = "label"
_NPY_MAGIC = b"\x93NUMPY"

#: Writes one output file to the (temporary) path it is given.
Writer = Callable[[Path], None]


@dataclass(frozen=True)
class Dataset:
    """Features (rows × columns), optional labels, and the feature columns' names when the data came
    from a table (a .csv/.parquet file or a DataFrame); arrays have none and are matched by position.
    ``label_column`` names the column the labels were read from (tables only); ``names`` identifies the
    rows (the ``id_column`` of a table, or a DataFrame's index when it is not the default 0..n−1).

    Contents are validated where they are used (:mod:`dataworth.checks`), not here.
    """

    X: Any
    y: Any = None
    columns: tuple[str, ...] | None = None
    label_column: str | None = None
    names: np.ndarray | None = None
    id_column: str | None = None

    def aligned_to(self, columns: tuple[str, ...] | None, name: str, against: str = "the training set") -> Dataset:
        """This dataset with its feature columns in the order ``columns`` names them.

        Tables are matched by column name, never by position: the same names in another order are
        reordered; different names are an :class:`InputError` naming the missing and extra columns.
        When either side has no names (an array) the columns are matched by position.
        """
        if columns is None or self.columns is None or self.columns == columns:
            return self
        missing = [c for c in columns if c not in self.columns]
        extra = [c for c in self.columns if c not in columns]
        if missing or extra:
            parts = [f"lacks {_names(missing)}" if missing else "", f"has extra {_names(extra)}" if extra else ""]
            raise InputError(
                f"{name} does not have the feature columns of {against}: it {' and '.join(p for p in parts if p)}; "
                "give both the same feature columns (--feature-columns or --drop-columns select them)"
            )
        order = [self.columns.index(c) for c in columns]
        return replace(self, X=np.asarray(self.X)[:, order], columns=columns)


def as_dataset(data: Any, labels: Any, name: str) -> Dataset:
    """Normalize the ways a dataset can be given: a file path, a Dataset, an ``(X, y)`` pair, or ``X`` (+ ``labels``).

    A DataFrame keeps its column names (so that tables are matched by name).
    """
    if isinstance(data, (str, os.PathLike)):
        if labels is not None:
            raise InputError(f"{name} is a file, so its labels come from the file; do not pass labels separately")
        return load_dataset(data, name=name)
    if isinstance(data, Dataset):
        if labels is not None:
            raise InputError(f"{name} given as a Dataset carries its labels; do not pass labels separately")
        return data
    if isinstance(data, tuple):
        if len(data) != 2 or labels is not None:
            raise InputError(f"{name} given as a tuple must be (features, labels)")
        data, labels = data
    if isinstance(data, pd.DataFrame):
        columns = tuple(map(str, data.columns))
        if len(set(columns)) != len(columns):
            raise InputError(f"{name} has duplicate column names: {_names(_duplicates(columns))}; rename them")
        default_index = isinstance(data.index, pd.RangeIndex) and data.index.start == 0 and data.index.step == 1
        names = None if default_index else row_names(data.index, f"the index of {name}")
        return Dataset(data, labels, columns, names=names)
    return Dataset(data, labels)


def load_dataset(
    path: str | os.PathLike,
    *,
    label_column: str | None = None,
    feature_columns: Sequence[str] | None = None,
    drop_columns: Sequence[str] | None = None,
    id_column: str | None = None,
    name: str = "input",
    absent_drops_ok: bool = False,
) -> Dataset:
    """Read a dataset file; ``name`` is used in error messages (e.g. ``TRAIN``).

    Tables (.csv/.parquet) hold numeric feature columns and a label column (``label_column``,
    ``"label"`` by default); ``feature_columns`` keeps only the named feature columns,
    ``drop_columns`` removes some (with ``absent_drops_ok`` a file may lack them, as a reference set
    may lack the training set's id column), and ``id_column`` names the rows (it is no feature; with
    ``absent_drops_ok`` a file may lack it). These options apply to tables only.
    """
    path = existing_file(path, name, DATASET_SUFFIXES)
    suffix = path.suffix.lower()
    if suffix not in TABLE_SUFFIXES:
        given = [flag for flag, value in (("a label column", label_column), ("feature columns", feature_columns),
                                          ("columns to drop", drop_columns), ("an id column", id_column)) if value is not None]
        if given:
            raise InputError(
                f"{name} is a {suffix} file, which has no named columns, so {' and '.join(given)} cannot be chosen "
                f"(its labels are the array 'y' of an .npz); use a .csv or .parquet file"
            )
        return Dataset(_read_npy(path, name)) if suffix == ".npy" else _read_npz(path, name)
    table = _read_table(path, name, text_columns=() if id_column is None else (id_column,))
    label_column = DEFAULT_LABEL_COLUMN if label_column is None else label_column
    if label_column not in table.columns:
        raise InputError(f"{name} has no label column {label_column!r} ({_column_hint(label_column, table.columns)}); pass --label-column")
    names = None
    if id_column is not None:
        if id_column == label_column:
            raise InputError(f"the id column and the label column are both {id_column!r}")
        if id_column in table.columns:
            names = row_names(table[id_column], f"{name}'s id column {id_column!r}")
            table = table.drop(columns=[id_column])
        elif not absent_drops_ok:
            raise InputError(f"{name} has no id column {id_column!r} ({_column_hint(id_column, table.columns)})")
    features = table.drop(columns=[label_column])
    if absent_drops_ok and drop_columns is not None:
        drop_columns = [c for c in drop_columns if c in features.columns]
    features = _select_features(features, feature_columns, drop_columns, name)
    if len(table) == 0:
        raise InputError(f"{name} has no rows (only a header): {path}")
    non_numeric = [str(c) for c, dt in features.dtypes.items() if not pd.api.types.is_numeric_dtype(dt) or pd.api.types.is_bool_dtype(dt)]
    if non_numeric:
        raise InputError(
            f"{name} has non-numeric feature columns: {_names(non_numeric)}; drop them with --drop-columns "
            "(or name the rows by one with --id-column)"
        )
    labels = table[label_column].to_numpy()
    columns = tuple(map(str, features.columns))
    return Dataset(features.to_numpy(dtype=np.float64), labels, columns, label_column, names, id_column if names is not None else None)


def load_datasets(
    files: Mapping[str, str | os.PathLike],
    *,
    label_column: str | None = None,
    feature_columns: Sequence[str] | None = None,
    drop_columns: Sequence[str] | None = None,
    id_column: str | None = None,
) -> dict[str, Dataset]:
    """Read the dataset files of one job (``{name: path}``, the training file first) with one choice of columns.

    The feature, drop and id columns are columns of the first file, which must be a table (.csv/.parquet)
    that has them all; the other tables (a reference set, added rows) may lack the dropped and id columns.
    The label column applies to every table, and is an error when no file is one. Array files
    (.npz/.npy) take no column options.
    """
    options = {"label_column": label_column, "feature_columns": feature_columns, "drop_columns": drop_columns,
               "id_column": id_column}
    tables = [name for name, path in files.items() if Path(path).suffix.lower() in TABLE_SUFFIXES]
    first = next(iter(files), None)
    refused = {k: v for k, v in options.items() if v is not None and (k != "label_column" or not tables)}
    if first is not None and first not in tables and refused:
        load_dataset(files[first], **refused, name=first)  # raises: an array file takes no column options
    return {
        name: load_dataset(path, **options, name=name, absent_drops_ok=name != first) if name in tables
        else load_dataset(path, name=name)
        for name, path in files.items()
    }


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


def read_npz_text(path: str | os.PathLike, key: str) -> str | None:
    """The text stored under ``key`` in an ``.npz`` file (e.g. a state file's ``format``), or None when
    the file is not an .npz archive or has no such text."""
    if not zipfile.is_zipfile(path):
        return None
    try:
        with np.load(path, allow_pickle=False) as archive:
            value = archive[key] if key in archive.files else None
    except (ValueError, OSError, EOFError, zipfile.BadZipFile):
        return None
    return str(value.item()) if value is not None and value.ndim == 0 and value.dtype.kind == "U" else None


def existing_file(path: str | os.PathLike, name: str, suffixes: tuple[str, ...]) -> Path:
    """Return ``path`` as a Path, raising unless it is an existing file with one of ``suffixes``."""
    path = Path(path)
    if path.suffix.lower() not in suffixes:
        raise FileFormatError(f"unsupported file type {path.suffix or '(none)'!r} for {name} ({path}): use {', '.join(suffixes)}")
    if path.is_dir():
        raise FileFormatError(f"{name} is a directory, not a file: {path}")
    if not path.is_file():
        raise FileFormatError(f"{name} not found: {path}")
    return path


def check_output_path(path: str | os.PathLike, name: str, suffixes: tuple[str, ...]) -> Path:
    """Validate an output path before any work is done: known suffix, an existing directory, not a directory itself."""
    path = Path(path)
    if path.suffix.lower() not in suffixes:
        raise FileFormatError(f"unsupported file type {path.suffix or '(none)'!r} for {name} ({path}): use {', '.join(suffixes)}")
    if not path.parent.resolve().is_dir():
        raise FileFormatError(f"the directory of {name} does not exist: {path.parent}")
    if path.is_dir():
        raise FileFormatError(f"{name} is a directory; give a file name: {path}")
    return path


def check_not_inputs(outputs: Mapping[str, str | os.PathLike | None], inputs: Mapping[str, str | os.PathLike | None]) -> None:
    """Raise unless every output path names a file other than every input and every other output.

    Paths are compared after resolving symlinks, ``.``/``..`` and relative spellings, and existing
    files also by identity (hard links), so no spelling of an input can be written over.
    """
    seen: list[tuple[str, Path]] = [(n, Path(p)) for n, p in inputs.items() if p is not None]
    for out_name, out in outputs.items():
        if out is None:
            continue
        out = Path(out)
        for other_name, other in seen:
            if _same_file(out, other):
                raise InputError(f"{out_name} ({out}) is the same file as {other_name}; choose another output path")
        seen.append((out_name, out))


def _same_file(a: Path, b: Path) -> bool:
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it replaces ``path`` in one rename.

    If the body raises, the temporary file is removed and ``path`` is left untouched, so a failed
    run never leaves a partial output file.
    """
    path = Path(path)
    with atomic_outputs([path]) as (tmp,):
        yield tmp


@contextlib.contextmanager
def atomic_outputs(paths: Sequence[str | os.PathLike]) -> Iterator[list[Path]]:
    """Yield one temporary path beside each of ``paths``; when the body succeeds, all of them take their
    outputs' places; when anything fails, every output is as it was before. The outputs of one command
    thus appear together or not at all.

    The swap is two-phase: every existing output is first moved aside (a rename in the same directory),
    then every temporary file is renamed onto its output; if a rename fails, the new files are removed
    and the old ones moved back. An operating-system failure (no permission, disk full, a directory where
    a file should go) is a :class:`FileFormatError` naming the output, not a temporary file.
    """
    paths = [Path(p) for p in paths]
    for path in paths:
        if path.is_dir():
            raise FileFormatError(f"cannot write {path}: it is a directory")
    temps: list[Path] = []
    try:
        for path in paths:
            temps.append(_temporary_beside(path))
        try:
            yield temps
        except OSError as exc:
            raise _write_error(paths[0] if len(paths) == 1 else paths[0].parent, exc) from None
        mode = 0o666 & ~_umask()  # mkstemp creates 0600; give the files the usual permissions
        for tmp in temps:
            os.chmod(tmp, mode)
        _swap_in(temps, paths)
    finally:
        for tmp in temps:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)


def _temporary_beside(path: Path) -> Path:
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{path.suffix}", dir=path.parent)
    except OSError as exc:
        raise _write_error(path, exc) from None
    os.close(fd)
    return Path(tmp)


def _swap_in(temps: list[Path], paths: list[Path]) -> None:
    """Rename each of ``temps`` onto its path, all or none (see :func:`atomic_outputs`)."""
    aside: list[tuple[Path, Path]] = []
    placed: list[Path] = []
    try:
        for path in paths:
            if path.exists():
                backup = _temporary_beside(path)
                try:
                    os.replace(path, backup)
                except OSError as exc:
                    backup.unlink(missing_ok=True)
                    raise _write_error(path, exc) from None
                aside.append((backup, path))
        for tmp, path in zip(temps, paths, strict=True):
            try:
                os.replace(tmp, path)
            except OSError as exc:
                raise _write_error(path, exc) from None
            placed.append(path)
    except BaseException:
        for path in placed:
            with contextlib.suppress(OSError):
                os.unlink(path)
        stranded = []
        for backup, path in aside:
            try:
                os.replace(backup, path)
            except OSError:
                stranded.append(f"{path} is at {backup}")
        if stranded:  # the old file could not be put back: say where it is rather than lose it quietly
            raise FileFormatError(f"writing failed and the previous outputs could not all be restored: {'; '.join(stranded)}") from None
        raise
    for backup, _ in aside:
        with contextlib.suppress(OSError):
            os.unlink(backup)


def write_together(writers: Mapping[Path, Writer]) -> list[Path]:
    """Write several output files as one (see :func:`atomic_outputs`): ``writers`` maps each output
    path to a function that writes its content to the temporary path it is given."""
    paths = list(writers)
    with atomic_outputs(paths) as temps:
        for tmp, path in zip(temps, paths, strict=True):
            writers[path](tmp)
    return paths


def _write_error(path: Path, exc: OSError) -> FileFormatError:
    return FileFormatError(f"cannot write {path}: {exc.strerror or exc}")


def jsonable(value: Any) -> Any:
    """``json.dumps``'s ``default``: numpy scalars as Python numbers; anything else JSON cannot hold as its text."""
    return value.item() if isinstance(value, np.generic) else str(value)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _names(columns: Sequence[Any], limit: int = 10) -> str:
    shown = ", ".join(repr(str(c)) for c in columns[:limit])
    return shown + (f" and {len(columns) - limit} more" if len(columns) > limit else "")


def _duplicates(columns: Sequence[str]) -> list[str]:
    return sorted({c for c in columns if columns.count(c) > 1})


def _column_hint(wanted: str, columns: Sequence[Any]) -> str:
    """Which columns there are: all of them when few, else the closest names to ``wanted`` and the count."""
    names = [str(c) for c in columns]
    if len(names) <= 12:
        return f"columns: {_names(names, 12)}"
    close = difflib.get_close_matches(wanted, names, n=3, cutoff=0.5)
    text = f"{len(names)} columns: {_names(names[:3])} ... {_names(names[-3:])}"
    return text + (f"; did you mean {_names(close)}?" if close else "")


def _select_features(
    features: pd.DataFrame, keep: Sequence[str] | None, drop: Sequence[str] | None, name: str
) -> pd.DataFrame:
    if keep is not None and drop is not None:
        raise InputError("give either feature columns (--feature-columns) or columns to drop (--drop-columns), not both")
    chosen = keep if keep is not None else drop
    if chosen is None:
        return features
    chosen = [str(c) for c in chosen]
    if keep is not None and not chosen:
        raise InputError("--feature-columns names no column")
    absent = [c for c in chosen if c not in features.columns]
    if absent:
        raise InputError(f"{name} has no feature column {_names(absent)} ({_column_hint(absent[0], features.columns)})")
    if _duplicates(chosen):
        raise InputError(f"column {_names(_duplicates(chosen))} is named twice")
    if keep is not None:
        return features[chosen]
    return features.drop(columns=chosen)


def _read_npy(path: Path, name: str) -> np.ndarray:
    with open(path, "rb") as handle:
        if handle.read(len(_NPY_MAGIC)) != _NPY_MAGIC:
            raise FileFormatError(f"{name} is not a .npy array file ({path}); write it with numpy.save")
    try:
        return np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise FileFormatError(f"{name} is not a readable .npy array file ({path}): {_reason(exc)}") from None


def _read_npz(path: Path, name: str) -> Dataset:
    if not zipfile.is_zipfile(path):
        raise FileFormatError(f"{name} is not an .npz archive ({path}); write it with numpy.savez(path, X=..., y=...)")
    try:
        with np.load(path, allow_pickle=False) as archive:
            if "X" not in archive.files:
                raise InputError(f"{name} ({path}) must hold an array named 'X' (found: {', '.join(archive.files) or 'none'})")
            return Dataset(archive["X"], archive["y"] if "y" in archive.files else None)
    except DataworthError:
        raise
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        raise FileFormatError(f"{name} is not a readable .npz archive ({path}): {_reason(exc)}") from None


def _reason(exc: Exception) -> str:
    """A library's error text without its advice about pickles (object arrays are refused on purpose)."""
    text = str(exc)
    if "pickle" in text.lower():
        return "it holds Python objects (object arrays), which dataworth does not load; save numbers or strings"
    return text


def row_names(column: Any, what: str) -> np.ndarray:
    """Row names (an id column, a DataFrame index), which must name every row once; ``what`` names them in errors."""
    column = pd.Series(np.asarray(column))
    missing = column.isna().to_numpy() | (column.astype(str) == "").to_numpy()
    if missing.any():
        raise InputError(f"{what} is empty in row {int(np.argmax(missing))}; give every row an id")
    repeated = column[column.duplicated()]
    if len(repeated):
        raise InputError(f"{what} names rows twice (e.g. {str(repeated.iloc[0])!r}); ids must be unique")
    return column.to_numpy()


def _read_table(path: Path, name: str, *, text_columns: Sequence[str] = ()) -> pd.DataFrame:
    """The table at ``path``; ``text_columns`` of a CSV are read as text as written (ids like ``00123``)."""
    header = _table_header(path, name)
    if _duplicates(header):
        raise InputError(f"{name} has duplicate column names: {_names(_duplicates(header))}; rename them ({path})")
    try:
        if path.suffix.lower() == ".parquet":
            table = pd.read_parquet(path)
        else:
            table = pd.read_csv(path)
            for column in (c for c in text_columns if c in header):  # as written: "00123", "NA" and "null" too
                table[column] = read_csv_text_column(path, column)
    except Exception as exc:  # pandas/pyarrow raise many unrelated types for unreadable files
        raise FileFormatError(f"{name} is not a readable {path.suffix} table ({path}): {exc}") from None
    table.columns = [str(c) for c in table.columns]
    return table


def read_csv_text_column(path: str | os.PathLike, column: str) -> pd.Series:
    """One column of a CSV file as the strings written there, with no number or missing-value parsing."""
    return pd.read_csv(path, usecols=[column], dtype=str, keep_default_na=False)[column]


def _table_header(path: Path, name: str) -> list[str]:
    """The column names as the file spells them (pandas would rename duplicates ``a``, ``a.1``)."""
    try:
        if path.suffix.lower() == ".parquet":
            return list(pq.read_schema(path).names)
        with open(path, newline="", encoding="utf-8-sig") as handle:
            return next(csv.reader(handle), [])
    except Exception as exc:  # pyarrow/csv/codec errors: the file is not a table of that kind
        raise FileFormatError(f"{name} is not a readable {path.suffix} table ({path}): {exc}") from None

"""The one result type every valuation and attribution method returns."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from numbers import Integral
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from dataworth.checks import FileFormatError, InputError
from dataworth.data import (
    TABLE_SUFFIXES,
    Writer,
    check_output_path,
    existing_file,
    jsonable,
    read_csv_text_column,
    write_together,
)

_METADATA_KEY = b"dataworth"


#: Columns of :attr:`ValuationResult.issues` (see :mod:`dataworth.valuation.issue_types`).
ISSUE_COLUMNS = ("issue", "issue_q", "duplicate_of")
#: Table columns with a fixed meaning; components may not use these names.
RESERVED_COLUMNS = ("index", "name", "value", "stderr", "count", *ISSUE_COLUMNS)


@dataclass
class ValuationResult:
    """Per-row data values: float64, one per training row in input order, higher = more valuable.

    ``names`` optionally identifies the rows (row ids, file names; position ``index`` always does).
    Monte Carlo methods set ``stderr`` (the standard error of each value) and ``counts`` (the samples
    behind it). ``components`` holds further per-row columns a method exposes (e.g. KAIROS's
    ``feature`` and ``label_residual``); ``params`` the hyper-parameters used and ``timings`` seconds
    per stage. ``issues`` (when a method says why rows are bad) is a table with one row per training
    row and the columns ``issue`` (the type, empty for a row not flagged), ``issue_q`` and
    ``duplicate_of`` (row index, −1 for none).
    """

    values: np.ndarray
    method: str
    params: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    components: dict[str, np.ndarray] = field(default_factory=dict)
    names: np.ndarray | None = None
    stderr: np.ndarray | None = None
    counts: np.ndarray | None = None
    issues: pd.DataFrame | None = None

    def __post_init__(self) -> None:
        self.values = np.asarray(self.values, dtype=np.float64)
        if self.values.ndim != 1:
            raise InputError(f"values must be 1-D; got shape {self.values.shape}")
        for name, column in list(self.components.items()):
            if name in RESERVED_COLUMNS:
                raise InputError(f"component name {name!r} is reserved; use another name")
            self.components[name] = self._column(column, f"component {name!r}", np.float64)
        if self.names is not None:
            self.names = self._column(self.names, "names", None)
            if self.names.dtype == object:
                self.names = self.names.astype(str)
        if self.stderr is not None:
            self.stderr = self._column(self.stderr, "stderr", np.float64)
        if self.counts is not None:
            self.counts = self._column(self.counts, "counts", np.int64)
        if self.issues is not None:
            if list(self.issues.columns) != list(ISSUE_COLUMNS) or len(self.issues) != len(self.values):
                raise InputError(f"issues must be a table of {len(self.values)} rows with the columns {', '.join(ISSUE_COLUMNS)}")
            self.issues = pd.DataFrame({
                "issue": self.issues["issue"].fillna("").astype(str).to_numpy(),
                "issue_q": self._column(self.issues["issue_q"], "issue_q", np.float64),
                "duplicate_of": self._column(self.issues["duplicate_of"], "duplicate_of", np.int64),
            })

    def _column(self, column: Any, what: str, dtype: Any) -> np.ndarray:
        column = np.asarray(column, dtype=dtype)
        if column.shape != self.values.shape:
            raise InputError(f"{what} has shape {column.shape}, values have {self.values.shape}")
        return column

    def __len__(self) -> int:
        return self.values.shape[0]

    def __repr__(self) -> str:
        extras = "".join(f", {what}" for what in ("names", "stderr", "counts", "issues") if getattr(self, what) is not None)
        components = f", components={list(self.components)}" if self.components else ""
        return f"ValuationResult(method={self.method!r}, rows={len(self)}{components}{extras})"

    def lowest(self, k: int) -> np.ndarray:
        """Row indices of the ``k`` lowest-valued rows, lowest first (ties: lower index first)."""
        return np.argsort(self.values, kind="stable")[: self._count(k)]

    def highest(self, k: int) -> np.ndarray:
        """Row indices of the ``k`` highest-valued rows, highest first (ties: lower index first)."""
        return np.argsort(-self.values, kind="stable")[: self._count(k)]

    @staticmethod
    def _count(k: Any) -> int:
        if isinstance(k, bool) or not isinstance(k, Integral) or k < 0:
            raise InputError(f"k must be an integer >= 0 (how many rows); got {k!r}")
        return int(k)

    def to_pandas(self) -> pd.DataFrame:
        """A table with columns ``index``, ``name`` (when set), ``value``, ``stderr`` and ``count`` (when
        set), one column per component, and the issue columns (when set)."""
        columns: dict[str, Any] = {"index": np.arange(len(self))}
        if self.names is not None:
            columns["name"] = self.names
        columns["value"] = self.values
        if self.stderr is not None:
            columns["stderr"] = self.stderr
        if self.counts is not None:
            columns["count"] = self.counts
        issues = {} if self.issues is None else {c: self.issues[c].to_numpy() for c in ISSUE_COLUMNS}
        return pd.DataFrame({**columns, **self.components, **issues})

    def save(self, path: str | os.PathLike) -> Path:
        """Write the table to ``.csv`` or ``.parquet`` atomically.

        ``method``, ``params`` and ``timings`` go into parquet's schema metadata; a CSV keeps plain
        columns (any CSV reader takes it) and gets them in a sidecar ``<name>.csv.json``, which
        :meth:`load` reads when it is there and describes a table of the same length. Table and
        sidecar appear together or not at all.
        """
        return write_together(self.files(path))[0]

    def files(self, path: str | os.PathLike) -> dict[Path, Writer]:
        """The files :meth:`save` writes, as ``{path: writer}`` for :func:`~dataworth.data.write_together`
        (the table first, then a CSV's sidecar), so that they can be written together with other outputs."""
        path = check_output_path(path, "the output file", TABLE_SUFFIXES)
        table = self.to_pandas()
        meta = json.dumps(
            {"method": self.method, "params": self.params, "timings": self.timings, "rows": len(self)}, default=jsonable
        )
        if path.suffix.lower() == ".csv":
            return {path: lambda tmp: table.to_csv(tmp, index=False), sidecar_path(path): lambda tmp: tmp.write_text(meta)}

        def write_parquet(tmp: Path) -> None:
            arrow = pa.Table.from_pandas(table, preserve_index=False)
            arrow = arrow.replace_schema_metadata({**(arrow.schema.metadata or {}), _METADATA_KEY: meta.encode()})
            pq.write_table(arrow, tmp)

        return {path: write_parquet}

    @classmethod
    def load(cls, path: str | os.PathLike) -> ValuationResult:
        """Read a table written by :meth:`save` (or any table with ``index`` and ``value`` columns)."""
        path = existing_file(path, "the result file", TABLE_SUFFIXES)
        meta: dict[str, Any] = {"method": "unknown"}
        try:
            if path.suffix.lower() == ".csv":
                table = pd.read_csv(path)
                for text in ("name", "issue"):  # as written ("00123", "NA"; an empty issue)
                    if text in table.columns:
                        table[text] = read_csv_text_column(path, text)
                meta = _read_sidecar(path, len(table)) or meta
            else:
                arrow = pq.read_table(path)
                raw = (arrow.schema.metadata or {}).get(_METADATA_KEY)
                meta = json.loads(raw) if raw else meta
                table = arrow.to_pandas()
        except FileFormatError:
            raise
        except Exception as exc:  # pandas/pyarrow raise many unrelated types for unreadable files
            raise FileFormatError(f"the result file is not a readable table ({path}): {exc}") from None
        if "value" not in table.columns:
            raise FileFormatError(f"the result file has no 'value' column ({path})")
        if "index" in table.columns:
            table = table.sort_values("index", kind="stable")
        components = {c: table[c].to_numpy() for c in table.columns if c not in RESERVED_COLUMNS}
        optional = {c: table[c].to_numpy() if c in table.columns else None for c in ("name", "stderr", "count")}
        present = [c for c in ISSUE_COLUMNS if c in table.columns]
        if present and len(present) < len(ISSUE_COLUMNS):
            raise FileFormatError(f"the result file has the issue column(s) {', '.join(present)} but not all of {', '.join(ISSUE_COLUMNS)} ({path})")
        issues = table[list(ISSUE_COLUMNS)].reset_index(drop=True) if present else None
        try:
            return cls(
                values=table["value"].to_numpy(),
                method=meta.get("method", "unknown"),
                params=meta.get("params", {}),
                timings=meta.get("timings", {}),
                components=components,
                names=optional["name"],
                stderr=optional["stderr"],
                counts=optional["count"],
                issues=issues,
            )
        except (ValueError, TypeError) as exc:
            raise FileFormatError(f"the result file has a non-numeric value column ({path}): {exc}") from None


def sidecar_path(path: Path) -> Path:
    """Where :meth:`ValuationResult.save` keeps a CSV's metadata: ``<name>.csv.json``."""
    return path.with_name(path.name + ".json")


def _read_sidecar(path: Path, rows: int) -> dict[str, Any] | None:
    """The metadata :meth:`ValuationResult.save` wrote beside a CSV, if it is there and fits the table."""
    sidecar = sidecar_path(path)
    if not sidecar.is_file():
        return None
    try:
        meta = json.loads(sidecar.read_text())
    except (ValueError, UnicodeDecodeError):
        raise FileFormatError(f"{sidecar} is not the JSON metadata dataworth writes beside {path.name}; remove it") from None
    if not isinstance(meta, dict) or meta.get("rows") != rows:
        return None  # written for another table (the CSV was replaced since): the columns alone
    return meta


@dataclass
class AttributionResult:
    """Train × target attribution scores: ``scores[i, q]`` is the predicted effect of training row i on
    target q's measurement, signed so that **positive = row i helps target q** (removing it would raise
    q's loss). ``train_names`` / ``target_names`` optionally identify rows; ``params`` and ``timings``
    as in :class:`ValuationResult`.
    """

    scores: np.ndarray
    method: str
    params: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    train_names: np.ndarray | None = None
    target_names: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.scores = np.asarray(self.scores, dtype=np.float64)
        if self.scores.ndim != 2:
            raise InputError(f"scores must be a train × target matrix; got shape {self.scores.shape}")
        for what, axis in (("train_names", 0), ("target_names", 1)):
            names = getattr(self, what)
            if names is not None:
                names = np.asarray(names)
                if names.shape != (self.scores.shape[axis],):
                    raise InputError(f"{what} has shape {names.shape}; scores have {self.scores.shape[axis]} along that axis")
                setattr(self, what, names.astype(str) if names.dtype == object else names)

    @property
    def shape(self) -> tuple[int, int]:
        return self.scores.shape  # type: ignore[return-value]

    def __repr__(self) -> str:
        return f"AttributionResult(method={self.method!r}, train={self.shape[0]}, targets={self.shape[1]})"

    def reduce(self, how: str = "mean") -> ValuationResult:
        """One value per training row: the ``"mean"`` or ``"sum"`` of its scores over the targets (the
        predicted change of the mean / total target measurement when the row is removed; higher = more valuable)."""
        if how not in ("mean", "sum"):
            raise InputError(f"how must be 'mean' or 'sum'; got {how!r}")
        values = self.scores.mean(axis=1) if how == "mean" else self.scores.sum(axis=1)
        return ValuationResult(values, method=self.method, params=dict(self.params), timings=dict(self.timings),
                               names=self.train_names)

    def top(self, target: int, k: int, *, helpful: bool = True) -> np.ndarray:
        """The ``k`` training rows that help (``helpful``) or hurt target ``target`` most, strongest first."""
        column = self.scores[:, target]
        order = np.argsort(-column if helpful else column, kind="stable")
        return order[: ValuationResult._count(k)]

    def save(self, path: str | os.PathLike) -> Path:
        """Write an ``.npz`` archive (no pickle): ``scores``, names when set, and the metadata as JSON text."""
        path = check_output_path(path, "the attribution file", (".npz",))
        arrays = self.arrays()

        def write(tmp: Path) -> None:
            with open(tmp, "wb") as handle:
                np.savez(handle, **arrays)

        return write_together({path: write})[0]

    def arrays(self) -> dict[str, np.ndarray]:
        """What :meth:`save` writes: ``scores``, names when set, and the metadata as JSON text (``meta``)."""
        meta = json.dumps({"method": self.method, "params": self.params, "timings": self.timings}, default=jsonable)
        arrays: dict[str, np.ndarray] = {"scores": self.scores, "meta": np.array(meta)}
        for what in ("train_names", "target_names"):
            if getattr(self, what) is not None:
                arrays[what] = np.asarray(getattr(self, what))
        return arrays

    @classmethod
    def load(cls, path: str | os.PathLike) -> AttributionResult:
        """Read a file written by :meth:`save`."""
        path = existing_file(path, "the attribution file", (".npz",))
        try:
            with np.load(path, allow_pickle=False) as archive:
                arrays = {key: archive[key] for key in archive.files}
            meta = json.loads(str(arrays.pop("meta")))
        except (KeyError, ValueError, OSError, EOFError) as exc:
            raise FileFormatError(f"{path} is not an attribution file written by dataworth: {exc}") from None
        return cls(arrays["scores"], method=meta.get("method", "unknown"), params=meta.get("params", {}),
                   timings=meta.get("timings", {}), train_names=arrays.get("train_names"), target_names=arrays.get("target_names"))

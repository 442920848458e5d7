"""The one result type every valuation and attribution method returns."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from dataworth.checks import FileFormatError, InputError
from dataworth.data import TABLE_SUFFIXES, atomic_write, check_output_path, existing_file, jsonable

_METADATA_KEY = b"dataworth"


@dataclass
class ValuationResult:
    """Per-row data values: float64, one per training row in input order, higher = more valuable.

    ``components`` holds further per-row columns a method exposes (e.g. KAIROS's ``feature`` and
    ``label_residual``); ``params`` the hyper-parameters used and ``timings`` seconds per stage.
    """

    values: np.ndarray
    method: str
    params: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    components: dict[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.values = np.asarray(self.values, dtype=np.float64)
        if self.values.ndim != 1:
            raise InputError(f"values must be 1-D; got shape {self.values.shape}")
        for name, column in list(self.components.items()):
            column = np.asarray(column, dtype=np.float64)
            if column.shape != self.values.shape:
                raise InputError(f"component {name!r} has shape {column.shape}, values have {self.values.shape}")
            self.components[name] = column

    def __len__(self) -> int:
        return self.values.shape[0]

    def lowest(self, k: int) -> np.ndarray:
        """Row indices of the ``k`` lowest-valued rows, lowest first (ties: lower index first)."""
        return np.argsort(self.values, kind="stable")[:k]

    def highest(self, k: int) -> np.ndarray:
        """Row indices of the ``k`` highest-valued rows, highest first (ties: lower index first)."""
        return np.argsort(-self.values, kind="stable")[:k]

    def to_pandas(self) -> pd.DataFrame:
        """A table with columns ``index``, ``value`` and one column per component."""
        columns = {"index": np.arange(len(self)), "value": self.values, **self.components}
        return pd.DataFrame(columns)

    def save(self, path: str | os.PathLike) -> Path:
        """Write the table to ``.csv`` or ``.parquet`` atomically.

        ``method``, ``params`` and ``timings`` go into parquet's schema metadata; a CSV keeps plain
        columns (any CSV reader takes it) and gets them in a sidecar ``<name>.csv.json``, which
        :meth:`load` reads when it is there and describes a table of the same length.
        """
        path = check_output_path(path, "the output file", TABLE_SUFFIXES)
        table = self.to_pandas()
        meta = json.dumps(
            {"method": self.method, "params": self.params, "timings": self.timings, "rows": len(self)}, default=jsonable
        )
        with atomic_write(path) as tmp:
            if path.suffix.lower() == ".csv":
                table.to_csv(tmp, index=False)
            else:
                arrow = pa.Table.from_pandas(table, preserve_index=False)
                arrow = arrow.replace_schema_metadata({**(arrow.schema.metadata or {}), _METADATA_KEY: meta.encode()})
                pq.write_table(arrow, tmp)
        if path.suffix.lower() == ".csv":
            with atomic_write(_sidecar(path)) as tmp:
                tmp.write_text(meta)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> ValuationResult:
        """Read a table written by :meth:`save` (or any table with ``index`` and ``value`` columns)."""
        path = existing_file(path, "the result file", TABLE_SUFFIXES)
        meta: dict[str, Any] = {"method": "unknown"}
        try:
            if path.suffix.lower() == ".csv":
                table = pd.read_csv(path)
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
        components = {c: table[c].to_numpy() for c in table.columns if c not in ("index", "value")}
        return cls(
            values=table["value"].to_numpy(),
            method=meta.get("method", "unknown"),
            params=meta.get("params", {}),
            timings=meta.get("timings", {}),
            components=components,
        )


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".json")


def _read_sidecar(path: Path, rows: int) -> dict[str, Any] | None:
    """The metadata :meth:`ValuationResult.save` wrote beside a CSV, if it is there and fits the table."""
    sidecar = _sidecar(path)
    if not sidecar.is_file():
        return None
    try:
        meta = json.loads(sidecar.read_text())
    except (ValueError, UnicodeDecodeError):
        raise FileFormatError(f"{sidecar} is not the JSON metadata dataworth writes beside {path.name}; remove it") from None
    if not isinstance(meta, dict) or meta.get("rows") != rows:
        return None  # written for another table (the CSV was replaced since): the columns alone
    return meta

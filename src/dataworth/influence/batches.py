"""Training and target rows for the gradient methods: arrays, tensors, a ``Dataset`` or a ``DataLoader``.

Rows may be tensors of any rank (images, token ids); they are read in a fixed order, batch by batch, so
every loop over them is a plain map whose results do not depend on the batch size.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset, SequentialSampler

from dataworth.checks import InputError, to_numpy
from dataworth.data import Dataset as Table


@dataclass
class Rows:
    """n rows read in order: either in-memory ``inputs``/``targets`` or a ``dataset``/``loader``."""

    name: str
    n: int
    inputs: torch.Tensor | None = None
    targets: torch.Tensor | None = None
    dataset: Dataset | None = None
    loader: DataLoader | None = None
    _loaded: tuple[torch.Tensor, torch.Tensor] | None = field(default=None, repr=False)

    def batches(self, batch_size: int) -> Iterator[tuple[int, Any, Any]]:
        """(start, inputs, targets) for consecutive batches; a loader keeps its own batch size."""
        if self.inputs is not None:
            for start in range(0, self.n, batch_size):
                yield start, self.inputs[start:start + batch_size], self.targets[start:start + batch_size]
            return
        if self.loader is not None:
            start = 0
            for batch in self.loader:
                inputs, targets = _pair(batch, self.name)
                yield start, inputs, targets
                start += len(inputs)
            return
        for start in range(0, self.n, batch_size):
            items = [_pair(self.dataset[i], self.name) for i in range(start, min(start + batch_size, self.n))]
            yield start, torch.stack([torch.as_tensor(x) for x, _ in items]), torch.stack([torch.as_tensor(y) for _, y in items])

    def head(self, count: int) -> Rows:
        """The first ``count`` rows (all when there are fewer)."""
        return self if count >= self.n else self.subset(np.arange(count))

    def subset(self, index: np.ndarray) -> Rows:
        """The rows at ``index`` (in that order), in memory. A DataLoader is read once, on the first call."""
        index = np.asarray(index, dtype=np.int64)
        if self.inputs is None and self.loader is None:
            items = [_pair(self.dataset[int(i)], self.name) for i in index]
            return Rows(self.name, len(index), torch.stack([torch.as_tensor(x) for x, _ in items]),
                        torch.stack([torch.as_tensor(y) for _, y in items]))
        inputs, targets = self._read_loader() if self.inputs is None else (self.inputs, self.targets)
        return Rows(self.name, len(index), inputs[index], targets[index])

    def _read_loader(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self._loaded is None:
            chunks = [(torch.as_tensor(x), torch.as_tensor(y)) for _, x, y in self.batches(1)]
            self._loaded = (torch.cat([x for x, _ in chunks]), torch.cat([y for _, y in chunks]))
        return self._loaded


def as_rows(data: Any, targets: Any = None, *, name: str) -> Rows:
    """Rows from ``(data, targets)`` arrays/tensors/DataFrames, a ``(inputs, targets)`` tuple, a dataworth Dataset, a map-style
    ``Dataset`` of ``(x, y)`` pairs, or a ``DataLoader`` over one (not shuffled: rows keep their order)."""
    if isinstance(data, Rows):
        return data
    if isinstance(data, Table):  # a feature table read by dataworth.load_dataset
        if targets is not None:
            raise InputError(f"{name} is a dataworth Dataset, so its labels come from it; do not pass targets separately")
        data, targets = data.X, data.y
    if isinstance(data, DataLoader):
        if targets is not None:
            raise InputError(f"{name} is a DataLoader, so its targets come from it; do not pass targets separately")
        if not isinstance(data.sampler, SequentialSampler) and data.batch_sampler is not None and not isinstance(data.batch_sampler.sampler, SequentialSampler):
            raise InputError(f"{name} is a shuffling DataLoader; rows must keep their order: build it with shuffle=False")
        try:
            n = len(data.dataset)
        except TypeError:
            raise InputError(f"{name} has no length (an IterableDataset); pass a map-style Dataset or arrays") from None
        return Rows(name, n, loader=data)
    if isinstance(data, Dataset) and not isinstance(data, torch.Tensor):
        if targets is not None:
            raise InputError(f"{name} is a Dataset, so its targets come from it; do not pass targets separately")
        return Rows(name, len(data), dataset=data)
    if targets is None and isinstance(data, tuple) and len(data) == 2:
        data, targets = data
    if targets is None:
        raise InputError(f"{name} needs targets: pass (inputs, targets), a Dataset or a DataLoader")
    inputs, labels = _tensor(data, f"{name} inputs"), _tensor(targets, f"{name} targets")
    if inputs.ndim == 0 or labels.ndim == 0:
        raise InputError(f"{name} needs one row per sample; got a scalar")
    if len(inputs) != len(labels):
        raise InputError(f"{name} has {len(inputs)} input rows but {len(labels)} targets")
    if len(inputs) == 0:
        raise InputError(f"{name} has no rows")
    if inputs.is_floating_point() and not bool(torch.isfinite(inputs).all()):
        raise InputError(f"{name} inputs contain NaN or infinite values; remove or impute them")
    return Rows(name, len(inputs), inputs, labels)


def _tensor(data: Any, name: str) -> torch.Tensor:
    if isinstance(data, torch.Tensor):
        return data.detach()
    array = to_numpy(data, name) if isinstance(data, (pd.DataFrame, pd.Series, list)) else np.asarray(data)
    if array.dtype == object or not (np.issubdtype(array.dtype, np.number) or array.dtype == bool):
        raise InputError(f"{name} must hold numbers; got values of dtype {array.dtype}")
    return torch.from_numpy(np.ascontiguousarray(array))


def _pair(item: Any, name: str) -> tuple[Any, Any]:
    if isinstance(item, dict):
        raise InputError(f"{name} yields dicts; give (inputs, targets) pairs")
    if not isinstance(item, (tuple, list)) or len(item) != 2:
        raise InputError(f"{name} must yield (inputs, targets) pairs")
    return item[0], item[1]

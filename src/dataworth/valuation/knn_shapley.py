"""KNN-Shapley: exact Shapley values of the K-nearest-neighbour classifier's accuracy.

Source: R. Jia, D. Dao, B. Wang, F. A. Hubis, N. M. Gürel, B. Li, C. Zhang, C. J. Spanos, D. Song,
"Efficient Task-Specific Data Valuation for Nearest Neighbor Algorithms", PVLDB 12(11), 2019, Theorem 1.

For one reference (test) point with label y_t, the utility of a training subset S is the unweighted
KNN classifier's likelihood of the right label::

    U(S) = (1/K) Σ_{k=1}^{min(K, |S|)} 1[y_{α_k(S)} = y_t],        U(∅) = 0,

with α_k(S) the k-th nearest member of S (Euclidean distance, ties broken by training index). Sort all
N training rows by distance, α_1..α_N, and let m_i = 1[y_{α_i} = y_t]. The Shapley values are::

    s_{α_N} = m_N / max(N, K)
    s_{α_i} = s_{α_{i+1}} + (m_i − m_{i+1}) / K · min(K, i) / i,        i = N−1, …, 1

that is, s_{α_i} = Σ_{j ≥ i} (m_j − m_{j+1}) · min(K, j) / (j K) with m_{N+1} = 0: a reverse cumulative
sum. The paper writes s_{α_N} = m_N / N, which assumes N ≥ K; max(N, K) keeps the values exact when
there are fewer training rows than neighbours (every row is then worth m_i / K). ``values_`` is the
mean of s over the reference points, so it sums to the mean of U(full training set) (efficiency).
"""

from __future__ import annotations

import time
import warnings
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from dataworth.checks import DataworthWarning, check_int, prepare_data, warn_if_degenerate
from dataworth.linalg import power_of_two_scale
from dataworth.progress import progress_iter
from dataworth.result import ValuationResult
from dataworth.valuation.base import Valuator

#: Bytes a batch of reference points may use: it holds about this many 8-byte entries per (reference, training) pair.
_BYTES_PER_PAIR = 6 * 8
DEFAULT_MEMORY_BUDGET = 256 * 2**20


class KNNShapley(Valuator):
    """Exact KNN-Shapley values (Jia et al. 2019), averaged over the labelled reference points.

    Parameters
    ----------
    k : K, the number of neighbours of the KNN classifier whose accuracy is shared out.
    memory_budget : bytes for one batch of reference points; a batch of b points holds about six
        b × N arrays of 8-byte numbers, so b = memory_budget // (48 N) (at least 1).
    device : ``"cpu"`` or ``"cuda"``.
    progress : show a progress bar over batches.

    Higher values mean a row more often helps its neighbours get the right label; mislabeled rows
    get negative values.
    """

    method = "knn-shapley"

    def __init__(
        self, *, k: int = 5, memory_budget: int = DEFAULT_MEMORY_BUDGET, device: str = "cpu", progress: bool = False
    ) -> None:
        self.k = k
        self.memory_budget = memory_budget
        self.device = device
        self.progress = progress

    def fit(self, X: Any, y: Any = None, *, reference: Any) -> KNNShapley:
        """Value every row of ``X`` (labels ``y``) against the labelled ``reference`` set.

        ``X`` may be an array, tensor, DataFrame or a file path (then ``y`` comes from the file);
        ``reference`` a file path, a ``(Z, y_ref)`` pair or a :class:`~dataworth.data.Dataset`.
        """
        started = time.perf_counter()
        self._validate_params()
        data = prepare_data(X, y, reference, method="KNN-Shapley", device=self.device, require_labels=True, min_rows=1)
        self.classes_ = data.classes
        n = data.x.shape[0]
        batch_size = max(1, self.memory_budget // (_BYTES_PER_PAIR * n))
        values = knn_shapley_values(
            data.x, data.codes, data.z, data.ref_codes, k=self.k, batch_size=batch_size, progress=self.progress
        )
        if self.k >= n > 1:
            warnings.warn(
                f"k = {self.k} is at least the number of training rows ({n}): every training row is a neighbour of every "
                f"reference row, so all rows of a class get the same KNN-Shapley value; use k < {n}",
                DataworthWarning,
                stacklevel=2,
            )
        elif len(data.classes) == 1:
            cause = "the reference set has a single class, so every row matches every neighbour; give a reference set with several classes"
            warn_if_degenerate(values, "KNN-Shapley", cause)
        params = {**self.get_params(), "n_reference": data.z.shape[0]}
        timings = {"total": time.perf_counter() - started}
        self.result_ = ValuationResult(values, self.method, params=params, timings=timings, names=data.names)
        return self

    def _validate_params(self) -> None:
        check_int(self.k, "k")
        check_int(self.memory_budget, "memory_budget")


def knn_shapley_values(
    x: torch.Tensor,
    codes: np.ndarray,
    z: torch.Tensor,
    ref_codes: np.ndarray,
    *,
    k: int,
    batch_size: int,
    progress: bool = False,
) -> np.ndarray:
    """Mean over the reference rows ``z`` of the exact KNN-Shapley values of the training rows ``x``.

    The rows are first rescaled by a power of two (:func:`~dataworth.linalg.power_of_two_scale`): the
    neighbour order is scale-invariant, and the distances then cannot overflow or underflow.
    """
    scale = power_of_two_scale(x, z)
    x, z = x * scale, z * scale
    labels = torch.as_tensor(codes, device=x.device)
    ref_labels = torch.as_tensor(ref_codes, device=x.device)
    rank = torch.arange(1, x.shape[0] + 1, device=x.device, dtype=torch.float64)
    weights = rank.clamp(max=k) / (rank * k)  # min(K, j) / (j K)
    total = torch.zeros(x.shape[0], dtype=torch.float64, device=x.device)
    starts = range(0, z.shape[0], batch_size)
    for start in progress_iter(starts, "KNN-Shapley", enabled=progress):
        stop = start + batch_size
        total += _batch_value_sums(x, labels, z[start:stop], ref_labels[start:stop], weights)
    return (total / z.shape[0]).cpu().numpy()


def _batch_value_sums(
    x: torch.Tensor, labels: torch.Tensor, z: torch.Tensor, ref_labels: torch.Tensor, weights: torch.Tensor
) -> torch.Tensor:
    """Σ over the rows of ``z`` of each training row's Shapley value, in training-row order."""
    # Direct (not matrix-product) distances: identical rows get bit-identical distances, so ties
    # are real ties and the stable sort breaks them by training index.
    distances = torch.cdist(z, x, compute_mode="donot_use_mm_for_euclid_dist")
    order = torch.argsort(distances, dim=1, stable=True)
    match = (labels[order] == ref_labels[:, None]).to(torch.float64)
    steps = (match - F.pad(match[:, 1:], (0, 1))) * weights  # (m_j − m_{j+1}) · min(K, j) / (j K)
    sorted_values = steps.flip(1).cumsum(1).flip(1)
    return torch.zeros_like(sorted_values).scatter_(1, order, sorted_values).sum(0)

"""Kernels, the median-heuristic bandwidth, and blocked kernel-matrix products.

The workhorse is :func:`kernel_matmul`, which returns ``K(X, Y) @ W`` without ever holding the
kernel matrix: it walks ``X`` and ``Y`` in tiles whose size follows a memory budget, computes each
tile with one GEMM on augmented operands, applies the kernel's transform in place, reduces the tile
against ``W`` and accumulates the result in float64. Its cost is the GEMM ``X Yᵀ`` plus one
elementwise pass per kernel entry, which is the speed limit ``benchmarks/kairos_speed.py`` compares to.
"""

from __future__ import annotations

import itertools
import math
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence

import torch

from dataworth.checks import InputError, check_positive
from dataworth.progress import progress_iter

#: Default bytes for one kernel tile; square tiles of 1.4-2k rows keep the GEMM efficient
#: while the elementwise pass stays in cache (see benchmarks/kairos_speed.py).
DEFAULT_MEMORY_BUDGET = 16 * 2**20
#: float64 entries converted at a time when the median heuristic projects the rows.
_PROJECTION_BLOCK_ENTRIES = 2**20
#: Smallest tile side whatever the budget, so a tiny budget cannot make the loop dominate.
_MIN_TILE_SIDE = 128


class Kernel(ABC):
    """A stationary, normalized kernel ``k(x, y) = f(||x - y||² / (2σ²))`` with ``k(x, x) = 1``.

    Subclasses define :meth:`transform_`, which maps ``t = -||x - y||² / (2σ²)`` to ``k`` in place.
    """

    name: str

    def __init__(self, bandwidth: float) -> None:
        self.bandwidth = check_positive(bandwidth, "bandwidth")

    @abstractmethod
    def transform_(self, t: torch.Tensor) -> torch.Tensor:
        """Overwrite ``t = -||x - y||² / (2σ²)`` (≤ 0) with the kernel value and return it."""

    def matrix(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Dense ``K(x, y)`` in the input precision, formed as one tile of :func:`kernel_matmul` is
        (a GEMM on centred, augmented operands, transformed in place). When ``y`` is ``x`` itself the
        diagonal is exactly ``k(x, x) = 1``."""
        center = x.mean(dim=0)
        t = _augment_left(x - center) @ _augment_right(y - center, 1.0 / self.bandwidth**2).T
        if y is x:
            t.diagonal().zero_()
        return self.transform_(t)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(bandwidth={self.bandwidth:.6g})"


class GaussianKernel(Kernel):
    """Gaussian RBF ``k(x, y) = exp(-||x - y||² / (2σ²))``."""

    name = "gaussian"

    def transform_(self, t: torch.Tensor) -> torch.Tensor:
        # No clamp: a rounding-positive t (|t| ~ 1e-12 near the diagonal) only gives k = 1 + O(1e-12),
        # and skipping the extra pass over every entry is ~7% of a KAIROS fit.
        return t.exp_()


class LaplaceKernel(Kernel):
    """Laplace kernel ``k(x, y) = exp(-||x - y|| / σ)``."""

    name = "laplace"

    def transform_(self, t: torch.Tensor) -> torch.Tensor:
        return t.clamp_(max=0.0).mul_(-2.0).sqrt_().neg_().exp_()


class InverseMultiquadricKernel(Kernel):
    """Inverse multiquadric ``k(x, y) = (1 + ||x - y||² / σ²)^(-1/2)``."""

    name = "imq"

    def transform_(self, t: torch.Tensor) -> torch.Tensor:
        return t.clamp_(max=0.0).mul_(-2.0).add_(1.0).rsqrt_()


KERNELS: dict[str, type[Kernel]] = {k.name: k for k in (GaussianKernel, LaplaceKernel, InverseMultiquadricKernel)}


def make_kernel(name: str, bandwidth: float) -> Kernel:
    """Instantiate the kernel called ``name`` (``gaussian``, ``laplace`` or ``imq``)."""
    if name not in KERNELS:
        raise InputError(f"kernel must be one of {', '.join(KERNELS)}; got {name!r}")
    return KERNELS[name](bandwidth)


def median_bandwidth(x: torch.Tensor, *, max_pairs: int = 10_000, seed: int = 0) -> float:
    """Median pairwise Euclidean distance between rows of ``x`` (the median heuristic).

    All pairs are used when there are at most ``max_pairs`` of them; otherwise ``max_pairs`` pairs
    are drawn with a fixed-seed generator. Rows are first put in a canonical order (by a fixed random
    projection), so the answer depends on the set of rows, not on their order. Zero distances
    (exact duplicates) are skipped when any non-zero distance exists.

    Memory stays bounded: the projection is computed on ``x``'s device in float64 row blocks, and
    only the sampled rows are gathered and converted (never all of ``x`` in float64 on the host).
    """
    n = x.shape[0]
    if n < 2:
        raise InputError("the median-heuristic bandwidth needs at least 2 training rows")
    x = x.detach()
    projection = torch.randn(x.shape[1], generator=torch.Generator().manual_seed(7), dtype=torch.float64).to(x.device)
    block = max(1, _PROJECTION_BLOCK_ENTRIES // x.shape[1])
    keys = torch.empty(n, dtype=torch.float64, device=x.device)
    buffer = torch.empty(min(block, n), x.shape[1], dtype=torch.float64, device=x.device)  # one, reused
    for start in range(0, n, block):
        rows = x[start:start + block]
        converted = buffer[: rows.shape[0]]
        converted.copy_(rows)
        torch.mv(converted, projection, out=keys[start:start + rows.shape[0]])
    order = torch.argsort(keys, stable=True)
    if n * (n - 1) // 2 <= max_pairs:
        first, second = torch.triu_indices(n, n, offset=1)
    else:
        gen = torch.Generator().manual_seed(seed)
        first = torch.randint(n, (max_pairs,), generator=gen)
        second = (first + torch.randint(1, n, (max_pairs,), generator=gen)) % n
    first, second = order[first.to(x.device)], order[second.to(x.device)]
    distances = (x[first].to(torch.float64) - x[second].to(torch.float64)).norm(dim=1).cpu()
    nonzero = distances[distances > 0]
    if nonzero.numel() == 0:
        raise InputError("all sampled training rows are identical, so the median bandwidth is 0; give a bandwidth > 0")
    return float(nonzero.median())


def kernel_matmul(
    kernel: Kernel,
    x: torch.Tensor,
    blocks: Sequence[tuple[torch.Tensor, torch.Tensor]],
    *,
    memory_budget: int = DEFAULT_MEMORY_BUDGET,
    progress: bool = False,
    description: str = "kernel sums",
) -> torch.Tensor:
    """Return ``[K(x, y_1) @ w_1, K(x, y_2) @ w_2, ...]`` side by side, in float64.

    ``blocks = [(y_1, w_1), (y_2, w_2), ...]``; the result has ``Σ_s w_s.shape[1]`` columns. Never
    materializes a kernel matrix: square tiles of side ``√(memory_budget / bytes per entry)`` (at
    least 128) are formed with one GEMM on augmented operands
    ``[x, 1, ||x||²] · [y/σ², -||y||²/(2σ²), -1/(2σ²)]ᵀ = -||x - y||²/(2σ²)``, transformed in place,
    reduced with ``w`` in the input precision and accumulated in float64. Inputs are centred first
    (the kernels are translation invariant) to limit cancellation in float32.

    A block whose ``y`` is ``x`` itself (the same tensor object) uses the symmetry of ``K(x, x)``:
    only tiles on and above the diagonal are computed (squares on the diagonal are cut into quarter
    sub-squares, see :func:`_strip_tiles`), and each off-diagonal tile ``K_IJ`` adds ``K_IJ w_J`` to
    rows ``I`` and ``K_IJᵀ w_I`` to rows ``J``, which halves the work. Weight widths are padded to a
    multiple of 4 (:func:`_pad_columns`).
    Runs on whatever device ``x`` lives on.
    """
    rows, _ = _kernel_products(kernel, x, blocks, None, memory_budget=memory_budget, progress=progress, description=description)
    return rows


def kernel_matmul_both_ways(
    kernel: Kernel,
    x: torch.Tensor,
    blocks: Sequence[tuple[torch.Tensor, torch.Tensor]],
    left: torch.Tensor,
    **kwargs,
) -> tuple[torch.Tensor, list[torch.Tensor | None]]:
    """:func:`kernel_matmul` that also returns ``K(x, y_s)ᵀ @ left`` for every block whose ``y`` is not
    ``x`` itself (``None`` for those: ``K(x, x)`` is its own transpose), in float64.

    Each tile, once formed, is reduced from both sides (``t @ w`` and ``tᵀ @ left``), so the column
    sums of ``K(x, Z)`` (``left`` = ones) cost one more pass over the tile in cache, not another
    kernel evaluation.
    """
    return _kernel_products(kernel, x, blocks, left, **kwargs)


def _kernel_products(
    kernel: Kernel,
    x: torch.Tensor,
    blocks: Sequence[tuple[torch.Tensor, torch.Tensor]],
    left: torch.Tensor | None,
    *,
    memory_budget: int = DEFAULT_MEMORY_BUDGET,
    progress: bool = False,
    description: str = "kernel sums",
) -> tuple[torch.Tensor, list[torch.Tensor | None]]:
    """The tile loop of :func:`kernel_matmul`; with ``left``, also ``K(x, y_s)ᵀ @ left`` per
    non-symmetric block."""
    if not blocks:
        raise ValueError("kernel_matmul needs at least one (y, w) block")
    dtype, device = x.dtype, x.device
    weights = [_pad_columns(w.to(device=device, dtype=dtype)) for _, w in blocks]
    widths = [w.shape[1] for w in weights]
    firsts = list(itertools.accumulate(widths[:-1], initial=0))
    out = torch.zeros(x.shape[0], sum(widths), dtype=torch.float64, device=device)
    keep = [first + j for (_, w), first in zip(blocks, firsts, strict=True) for j in range(w.shape[1])]
    left_width = 0 if left is None else left.shape[1]
    left = None if left is None else _pad_columns(left.to(device=device, dtype=dtype))
    columns = [torch.zeros(y.shape[0], 0 if left is None else left.shape[1], dtype=torch.float64, device=device) for y, _ in blocks]
    transposed = [None if y is x else c[:, :left_width] for (y, _), c in zip(blocks, columns, strict=True)]
    if x.shape[0] == 0:
        return out[:, keep], transposed
    center = x.mean(dim=0)
    scale = 1.0 / kernel.bandwidth**2
    rhs = [
        (_augment_right(y - center, scale), w, y is x, out[:, first : first + width], column)
        for (y, _), w, first, width, column in zip(blocks, weights, firsts, widths, columns, strict=True)
        if y.shape[0]
    ]
    side = max(_MIN_TILE_SIDE, math.isqrt(memory_budget // x.element_size()))
    tile = torch.empty(side * side, dtype=dtype, device=device)
    starts = range(0, x.shape[0], side)
    for start in progress_iter(starts, description, enabled=progress):
        stop = min(start + side, x.shape[0])
        lhs = _augment_left(x[start:stop] - center)
        for y_aug, w, symmetric, acc, column in rhs:
            for r0, r1, c0, c1 in _strip_tiles(start, stop, y_aug.shape[0], side, symmetric):
                t = tile[: (r1 - r0) * (c1 - c0)].view(r1 - r0, c1 - c0)
                torch.mm(lhs[r0 - start : r1 - start], y_aug[c0:c1].T, out=t)
                if symmetric and r0 == c0:
                    t.diagonal().zero_()  # exact ||x_i - x_i||² = 0, not a rounding residue (Laplace's sqrt amplifies it)
                kernel.transform_(t)
                acc[r0:r1] += t @ w[c0:c1]
                if symmetric and r0 != c0:
                    acc[c0:c1] += t.T @ w[r0:r1]
                if left is not None and not symmetric:
                    column[c0:c1] += t.T @ left[r0:r1]
    return out[:, keep], transposed


def _strip_tiles(start: int, stop: int, n_cols: int, side: int, symmetric: bool) -> Iterator[tuple[int, int, int, int]]:
    """Tiles ``(r0, r1, c0, c1)`` covering rows ``[start, stop)`` of ``K(x, y)``, columns ``[0, n_cols)``.

    For the symmetric ``K(x, x)`` only the part on and above the diagonal: the square on the
    diagonal is cut into sub-squares of a quarter side (at least 128), of which those on and above
    the diagonal are kept, so the lower half of a diagonal square is mostly skipped too.
    """
    if not symmetric:
        yield from ((start, stop, col, min(col + side, n_cols)) for col in range(0, n_cols, side))
        return
    sub = max(_MIN_TILE_SIDE, side // 4)
    for r0 in range(start, stop, sub):
        yield from ((r0, min(r0 + sub, stop), c0, min(c0 + sub, stop)) for c0 in range(r0, stop, sub))
    yield from ((start, stop, col, min(col + side, n_cols)) for col in range(stop, n_cols, side))


def _pad_columns(w: torch.Tensor) -> torch.Tensor:
    """``w`` with zero columns appended up to a multiple of 4 (one column stays one).

    MKL's tile-by-skinny-matrix product is up to 2.4× slower for some widths (2048×2000 tile, float32,
    this project's 2-core machine: 11 columns 1.7 ns per tile entry, 12 columns 0.8, 16 columns 0.7).
    """
    width = w.shape[1]
    if width <= 1 or width % 4 == 0:
        return w
    return torch.cat([w, w.new_zeros(w.shape[0], 4 - width % 4)], dim=1)


def nearest_rows(
    x: torch.Tensor, y: torch.Tensor, *, skip_self: bool = False, memory_budget: int = DEFAULT_MEMORY_BUDGET
) -> tuple[torch.Tensor, torch.Tensor]:
    """For every row of ``x``: the Euclidean distance to its nearest row of ``y`` and that row's index.

    With ``skip_self`` (``y`` is ``x``) a row is not its own neighbour (an exact duplicate elsewhere is,
    at distance 0). Row blocks of ``x`` against all of ``y`` with one GEMM each on centred operands,
    ``||x − y||² = ||x||² + ||y||² − 2 x·y`` (the tiles of :func:`kernel_matmul`, reduced by a minimum
    instead of a kernel sum), in ``x``'s dtype and on its device; blocks hold ``memory_budget`` bytes.
    """
    center = y.mean(dim=0)
    xc, yc = x - center, y - center
    y_sq = (yc * yc).sum(dim=1)
    block = max(1, memory_budget // (x.element_size() * max(1, y.shape[0])))
    distances = torch.empty(x.shape[0], dtype=x.dtype, device=x.device)
    indices = torch.empty(x.shape[0], dtype=torch.long, device=x.device)
    for start in range(0, x.shape[0], block):
        rows = xc[start : start + block]
        squared = torch.addmm(y_sq, rows, yc.T, alpha=-2.0).add_((rows * rows).sum(dim=1, keepdim=True))
        if skip_self:
            squared[torch.arange(rows.shape[0]), torch.arange(start, start + rows.shape[0])] = float("inf")
        best, where = squared.min(dim=1)
        distances[start : start + rows.shape[0]] = best.clamp_(min=0.0).sqrt_()
        indices[start : start + rows.shape[0]] = where
    return distances, indices


def kernel_row_sums(kernel: Kernel, x: torch.Tensor, y: torch.Tensor, **kwargs) -> torch.Tensor:
    """``Σ_j k(x_i, y_j)`` for every row of ``x``, in float64 (see :func:`kernel_matmul`)."""
    ones = torch.ones(y.shape[0], 1, dtype=x.dtype, device=x.device)
    return kernel_matmul(kernel, x, [(y, ones)], **kwargs)[:, 0]


def _augment_left(x: torch.Tensor) -> torch.Tensor:
    ones = torch.ones(x.shape[0], 1, dtype=x.dtype, device=x.device)
    return torch.cat([x, ones, (x * x).sum(dim=1, keepdim=True)], dim=1)


def _augment_right(y: torch.Tensor, scale: float) -> torch.Tensor:
    sq = (y * y).sum(dim=1, keepdim=True)
    const = torch.full_like(sq, -0.5 * scale)
    return torch.cat([y * scale, -0.5 * scale * sq, const], dim=1)

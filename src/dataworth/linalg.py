"""Dense numerical helpers shared by methods: SPD solves with kernel or Hessian matrices, and exact
rescaling that keeps distance computations in range."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from dataworth.errors import DataworthError


def power_of_two_scale(*arrays: Any) -> float:
    """The power of two ``s`` that brings the largest magnitude in ``arrays`` into [0.5, 1).

    Multiplying by a power of two is exact in floating point (it only shifts exponents), so a
    scale-invariant computation on ``s · x`` gives bit for bit the answer it gives on ``x``, but
    squared distances can no longer overflow (features ~1e200) or underflow (~1e-200). 1.0 for all-zero
    input; the scale itself stays within the range of the arrays' floating type.
    """
    largest = max(float(a.abs().max() if isinstance(a, torch.Tensor) else np.abs(a).max()) for a in arrays)
    if largest == 0.0:
        return 1.0
    _, exponent = math.frexp(largest)
    limit = min(np.finfo(_numpy_dtype(a)).maxexp for a in arrays) - 2
    return math.ldexp(1.0, min(max(-exponent, -limit), limit))


def _numpy_dtype(array: Any) -> np.dtype:
    if isinstance(array, torch.Tensor):
        return np.dtype(str(array.dtype).removeprefix("torch.")) if array.is_floating_point() else np.dtype(np.float64)
    return array.dtype if np.issubdtype(array.dtype, np.floating) else np.dtype(np.float64)


def solve_spd_inplace(matrix: torch.Tensor, rhs: torch.Tensor, *, what: str) -> torch.Tensor:
    """Solve ``matrix @ x = rhs`` for a symmetric positive-definite ``matrix`` by Cholesky.

    ``matrix`` is overwritten by the transpose of its lower Cholesky factor, and nothing else of
    n×n size is allocated: handed the column-major view ``matrix.mT`` (the same symmetric matrix),
    torch factorizes in place (a row-major tensor, or ``torch.cholesky_solve``, would copy it first).
    ``what`` names the matrix in the error raised when it is not positive definite. Done in torch
    rather than SciPy so that it shares one thread pool with the kernel products around it: after a
    call into SciPy's OpenBLAS, its idle threads spin for ~0.2 s, and the KAIROS kernel pass that
    followed ran ~25% slower on a 2-core machine. (OpenBLAS's factorization itself was faster here,
    0.055 s vs 0.074 s at n = 2,000 in float32.)
    """
    lower = matrix.mT
    info = torch.empty((), dtype=torch.int32, device=matrix.device)
    torch.linalg.cholesky_ex(lower, out=(lower, info))
    if int(info) != 0:
        raise DataworthError(f"{what} is not positive definite; increase its ridge")
    # Two triangular solves: torch.cholesky_solve copies the factor and took 2.3× as long (n = 4,000).
    return torch.linalg.solve_triangular(lower.mT, torch.linalg.solve_triangular(lower, rhs, upper=False), upper=True)


def inverse_diagonal_from_cholesky(lower: torch.Tensor, *, block: int = 1024) -> torch.Tensor:
    """``diag(A⁻¹)`` from the lower Cholesky factor ``L`` of ``A = L Lᵀ`` (e.g. ``matrix.mT`` after
    :func:`solve_spd_inplace`).

    ``A⁻¹ = L⁻ᵀ L⁻¹``, so ``(A⁻¹)_ll = ||L⁻¹ e_l||²``. ``L⁻¹ e_l`` is zero above row ``l``, so a block of
    columns ``[s, e)`` needs rows ``s:`` only, found by blocked forward substitution: matrix products
    with views of ``L`` and small triangular solves on its diagonal blocks. About n³/3 flops in all, and
    besides the factor never more than an (n × ``block``) buffer: ``torch.linalg.solve_triangular`` on
    a trailing sub-block of ``L`` would first copy it (up to n × n).
    """
    n = lower.shape[0]
    out = torch.empty(n, dtype=lower.dtype, device=lower.device)
    for start in range(0, n, block):
        stop = min(start + block, n)
        solved = torch.zeros(n - start, stop - start, dtype=lower.dtype, device=lower.device)  # rows start: of L⁻¹ E
        for r0 in range(start, n, block):
            r1 = min(r0 + block, n)
            rhs = -(lower[r0:r1, start:r0] @ solved[: r0 - start]) if r0 > start else torch.eye(
                r1 - r0, stop - start, dtype=lower.dtype, device=lower.device
            )
            solved[r0 - start : r1 - start] = torch.linalg.solve_triangular(lower[r0:r1, r0:r1], rhs, upper=False)
        out[start:stop] = (solved * solved).sum(dim=0)
    return out

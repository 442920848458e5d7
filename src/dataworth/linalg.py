"""Dense linear algebra helpers shared by methods that solve with kernel or Hessian matrices."""

from __future__ import annotations

import torch

from dataworth.checks import DataworthError


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

"""Dense linear algebra helpers shared by methods that solve with kernel or Hessian matrices."""

from __future__ import annotations

import torch

from dataworth.checks import DataworthError


def solve_spd_inplace(matrix: torch.Tensor, rhs: torch.Tensor, *, what: str) -> torch.Tensor:
    """Solve ``matrix @ x = rhs`` for a symmetric positive-definite ``matrix`` by Cholesky.

    ``matrix`` is overwritten by the transpose of its lower Cholesky factor, so the solve needs no second n×n buffer.
    ``what`` names the matrix in the error raised when it is not positive definite. Done in torch,
    not scipy, so that it shares one thread pool with the kernel products around it: after a call
    into scipy's OpenBLAS, its threads kept competing with torch's and the next KAIROS kernel pass
    ran ~30% slower on a 2-core machine.
    """
    lower = matrix.mT  # the same symmetric matrix, laid out column-major as LAPACK wants it (~10% faster)
    info = torch.empty((), dtype=torch.int32, device=matrix.device)
    torch.linalg.cholesky_ex(lower, out=(lower, info))
    if int(info) != 0:
        raise DataworthError(f"{what} is not positive definite; increase its ridge")
    return torch.cholesky_solve(rhs, lower)

"""Dense linear algebra helpers shared by methods that solve with kernel or Hessian matrices."""

from __future__ import annotations

import numpy as np
import scipy.linalg

from dataworth.checks import DataworthError


def solve_spd_inplace(matrix: np.ndarray, rhs: np.ndarray, *, what: str) -> np.ndarray:
    """Solve ``matrix @ x = rhs`` for a symmetric positive-definite ``matrix`` by Cholesky.

    ``matrix`` is overwritten by its factor (LAPACK works in place on the transposed, Fortran-ordered
    view of a C-ordered symmetric array), so the solve needs no second n×n buffer. ``what`` names the
    matrix in the error raised when it is not positive definite.
    """
    try:
        factor = scipy.linalg.cho_factor(matrix.T, lower=True, overwrite_a=True, check_finite=False)
    except np.linalg.LinAlgError:
        raise DataworthError(f"{what} is not positive definite; increase its ridge") from None
    return scipy.linalg.cho_solve(factor, rhs, check_finite=False)

"""The SPD solve against numpy, and its error on a matrix that is not positive definite."""

import numpy as np
import pytest
import torch

from dataworth.checks import DataworthError
from dataworth.linalg import inverse_diagonal_from_cholesky, solve_spd_inplace


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_solve_matches_numpy_and_leaves_the_factor_in_place(dtype):
    rng = np.random.default_rng(0)
    a = rng.normal(size=(40, 40))
    spd = a @ a.T + 40 * np.eye(40)
    rhs = rng.normal(size=(40, 3))
    matrix = torch.tensor(spd, dtype=dtype)  # a copy: the solve overwrites it
    got = solve_spd_inplace(matrix, torch.from_numpy(rhs).to(dtype), what="the test matrix")
    tol = 1e-5 if dtype == torch.float32 else 1e-12
    np.testing.assert_allclose(got.numpy(), np.linalg.solve(spd, rhs), rtol=tol, atol=tol)
    np.testing.assert_allclose(matrix.numpy().T, np.linalg.cholesky(spd), rtol=tol, atol=tol)


def test_a_matrix_that_is_not_positive_definite_is_named_in_the_error():
    indefinite = torch.diag(torch.tensor([1.0, -1.0, 2.0], dtype=torch.float64))
    with pytest.raises(DataworthError, match="K_ZZ is not positive definite; increase its ridge"):
        solve_spd_inplace(indefinite, torch.ones(3, 1, dtype=torch.float64), what="K_ZZ")


@pytest.mark.parametrize("block", [1, 7, 1024])
def test_inverse_diagonal_from_the_factor_equals_the_inverse(block):
    rng = np.random.default_rng(3)
    a = rng.normal(size=(30, 30))
    spd = a @ a.T + np.eye(30)
    lower = torch.from_numpy(np.linalg.cholesky(spd))
    np.testing.assert_allclose(inverse_diagonal_from_cholesky(lower, block=block).numpy(), np.diag(np.linalg.inv(spd)), rtol=1e-10)

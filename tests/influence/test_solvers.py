"""Each solver against the explicit float64 solve (and the curvature against torch.func's own Hessian)."""

import numpy as np
import pytest
import torch
from conftest import make_mlp
from torch.func import hessian, jacrev

from dataworth.checks import InputError
from dataworth.influence.batches import as_rows
from dataworth.influence.curvature import Curvature, largest_eigenvalue
from dataworth.influence.solvers import ArnoldiSolver, CGSolver, ExplicitSolver, LiSSASolver, relative_error
from dataworth.influence.task import ModelTask


def test_curvature_products_equal_brute_force(small_problem):
    model, X, y = small_problem
    task = ModelTask(model, "cross_entropy", l2=0.01)
    rows = as_rows(X, y, name="train")
    theta = task.flat_params()

    def objective(flat):
        return task.losses(task.unflatten(flat), X, y).mean() + 0.005 * flat.pow(2).sum()

    assert torch.allclose(Curvature(task, rows, kind="hessian").dense(), hessian(objective)(theta), rtol=0, atol=1e-13)
    J = jacrev(lambda flat: task.forward(task.unflatten(flat), X))(theta)  # n×C×p
    p = torch.softmax(model(X), 1).detach()
    out = torch.diag_embed(p) - p[:, :, None] * p[:, None, :]
    ggn = torch.einsum("ncp,ncd,ndq->pq", J, out, J) / len(X) + 0.01 * torch.eye(len(theta), dtype=torch.float64)
    assert torch.allclose(Curvature(task, rows, kind="ggn").dense(), ggn, rtol=0, atol=1e-13)


@pytest.fixture(scope="module")
def mlp_2000():
    """An MLP with p = 1,994 parameters (20→64→10) and 120 rows; GGN + δI with δ = 0.05."""
    rng = np.random.default_rng(2)
    X = torch.as_tensor(rng.normal(size=(120, 20)))
    y = torch.as_tensor(rng.integers(0, 10, size=120))
    task = ModelTask(make_mlp(20, 64, 10, seed=2), "cross_entropy", l2=1e-3)
    rows = as_rows(X, y, name="train")
    V = torch.as_tensor(rng.normal(size=(3, task.num_params)))
    explicit = ExplicitSolver(damping=0.05).fit(task, rows)
    return task, rows, V, explicit.solve(V), explicit


def test_explicit_solver_inverts_the_damped_curvature(mlp_2000):
    task, rows, V, exact, explicit = mlp_2000
    assert task.num_params == 1994
    matrix = explicit.curvature_matrix_  # H + δI
    assert relative_error(exact @ matrix, V) < 1e-10


def test_cg_matches_explicit(mlp_2000):
    task, rows, V, exact, _ = mlp_2000
    solver = CGSolver(damping=0.05, tol=1e-12).fit(task, rows)
    assert relative_error(solver.solve(V), exact) < 1e-8


def test_lissa_converges_geometrically_in_depth(mlp_2000):
    task, rows, V, exact, _ = mlp_2000
    errors = {depth: relative_error(LiSSASolver(damping=0.05, depth=depth).fit(task, rows).solve(V), exact) for depth in (60, 120, 240)}
    assert errors[240] < 1e-3
    # geometric: doubling the depth squares the error factor (within a loose margin)
    assert errors[120] < errors[60] ** 1.6 * 10 and errors[240] < errors[120] ** 1.6 * 10
    assert errors[60] > errors[120] > errors[240]


def test_lissa_refuses_a_scale_below_the_largest_eigenvalue(mlp_2000):
    task, rows, *_ = mlp_2000
    top = largest_eigenvalue(Curvature(task, rows))
    with pytest.raises(InputError, match="LiSSA diverges"):
        LiSSASolver(damping=0.05, scale=top / 2).fit(task, rows)


def test_arnoldi_is_exact_at_full_rank_and_keeps_the_top_eigenspace(mlp_2000):
    task, rows, V, exact, explicit = mlp_2000
    full = ArnoldiSolver(damping=0.05, rank=task.num_params, block_size=128).fit(task, rows)
    assert relative_error(full.solve(V), exact) < 1e-8
    top = ArnoldiSolver(damping=0.05, rank=20, iterations=120, block_size=4).fit(task, rows)
    eigenvalues, vectors = torch.linalg.eigh(explicit.curvature_matrix_)
    assert torch.allclose(top.eigenvalues_[:5] + 0.05, eigenvalues.flip(0)[:5], rtol=1e-6)


def test_explicit_refuses_an_indefinite_hessian(small_problem):
    model, X, y = small_problem  # an untrained network: its Hessian has negative directions
    task = ModelTask(model, "cross_entropy")
    with pytest.raises(InputError, match="not positive definite"):
        ExplicitSolver(damping=0.0, curvature="hessian").fit(task, as_rows(X, y, name="train"))
    with pytest.raises(InputError, match="damping"):
        ExplicitSolver(damping=-1.0).fit(task, as_rows(X, y, name="train"))
    with pytest.raises(InputError, match="curvature"):
        CGSolver(curvature="fisher").fit(task, as_rows(X, y, name="train"))

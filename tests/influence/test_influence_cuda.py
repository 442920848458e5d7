"""The gradient methods on a CUDA device give the CPU's numbers (skipped where there is no device)."""

import numpy as np
import pytest
import torch
from conftest import make_mlp, train

from dataworth.influence import InfluenceFunction, ModelTask, RandomProjection, as_rows, ghost_inner_products, projected_gradients

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")


@pytest.mark.parametrize("solver", ["explicit", "cg", "arnoldi", "ekfac"])
def test_influence_on_cuda_equals_cpu(solver):
    rng = np.random.default_rng(0)
    X, y = torch.as_tensor(rng.normal(size=(80, 6))), torch.as_tensor(rng.integers(0, 3, size=80))
    model = train(make_mlp(6, 8, 3), X, y, l2=0.01)
    options = {"arnoldi": {"rank": 83}, "ekfac": {"fisher": "exact"}}.get(solver, {})  # exact Fisher: no sampled labels
    results = []
    for device in ("cpu", "cuda"):
        task = ModelTask(model.to(device), "cross_entropy", l2=0.01)
        method = InfluenceFunction(task, solver=solver, damping=0.1, solver_options=options).fit(X.to(device), y.to(device))
        results.append((method.attribute(X[:9].to(device), y[:9].to(device)).scores, method.self_influence().values))
    for cpu, cuda in zip(*results, strict=True):
        assert np.allclose(cpu, cuda, rtol=1e-6, atol=1e-10)


def test_ghost_products_and_projections_on_cuda_equal_cpu():
    rng = np.random.default_rng(1)
    X, y = torch.as_tensor(rng.normal(size=(30, 6))), torch.as_tensor(rng.integers(0, 3, size=30))
    model = make_mlp(6, 8, 3)
    out = []
    for device in ("cpu", "cuda"):
        task = ModelTask(model.to(device), "cross_entropy")
        rows = as_rows(X.to(device), y.to(device), name="train")
        projected = projected_gradients(task, rows, RandomProjection(task.num_params, 16, seed=2))
        out.append((ghost_inner_products(task, rows).cpu(), projected.cpu()))
    for cpu, cuda in zip(*out, strict=True):
        assert torch.allclose(cpu, cuda, rtol=1e-8, atol=1e-12)

"""Per-sample gradients against a Python loop of backward(); projections against the JL bound; chunk invariance."""

import numpy as np
import pytest
import torch
from conftest import make_mlp
from torch import nn

from dataworth.checks import InputError
from dataworth.influence.batches import as_rows
from dataworth.influence.gradients import (
    RandomProjection,
    gradient_matrix,
    per_sample_gradients,
    per_sample_jacobians,
    projected_gradients,
)
from dataworth.influence.task import ModelTask


def loop_gradients(model, loss, X, y):
    rows = []
    for i in range(len(X)):
        model.zero_grad()
        loss(model(X[i:i + 1]), y[i:i + 1]).sum().backward()
        rows.append(torch.cat([p.grad.reshape(-1) for p in model.parameters()]))
    return torch.stack(rows)


def test_vmap_gradients_equal_a_loop_of_backward(small_problem):
    model, X, y = small_problem
    task = ModelTask(model, "cross_entropy")
    G = gradient_matrix(task, as_rows(X, y, name="train"))
    expected = loop_gradients(model, lambda f, t: nn.functional.cross_entropy(f, t, reduction="none"), X, y)
    assert torch.allclose(G, expected, rtol=0, atol=1e-12)


class TokenModel(nn.Module):
    """Embedding + 1-D convolution + mean pool + Linear over T tokens: inputs of integer rank-2 tensors."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(11, 6)
        self.conv = nn.Conv1d(6, 5, 3, padding=1)
        self.head = nn.Linear(5, 2)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        hidden = torch.relu(self.conv(self.embed(tokens).transpose(1, 2))).mean(2)
        return self.head(hidden)


def test_gradients_of_token_and_image_models():
    torch.manual_seed(1)
    tokens = torch.randint(0, 11, (9, 7))
    labels = torch.randint(0, 2, (9,))
    model = TokenModel().double().eval()
    task = ModelTask(model, "cross_entropy")
    G = gradient_matrix(task, as_rows(tokens, labels, name="train"))
    expected = loop_gradients(model, lambda f, t: nn.functional.cross_entropy(f, t, reduction="none"), tokens, labels)
    assert torch.allclose(G, expected, rtol=0, atol=1e-12)

    images = torch.randn(6, 1, 5, 5, dtype=torch.float64)
    cnn = nn.Sequential(nn.Conv2d(1, 3, 3), nn.ReLU(), nn.Flatten(), nn.Linear(27, 1)).double().eval()
    targets = torch.randn(6, 1, dtype=torch.float64)
    G = gradient_matrix(ModelTask(cnn, "mse"), as_rows(images, targets, name="train"))
    expected = loop_gradients(cnn, lambda f, t: 0.5 * (f - t).pow(2).sum(1), images, targets)
    assert torch.allclose(G, expected, rtol=0, atol=1e-12)


def test_chunking_and_loaders_give_the_same_gradients(small_problem):
    model, X, y = small_problem
    task = ModelTask(model, "cross_entropy")
    whole = gradient_matrix(task, as_rows(X, y, name="train"))
    tiny = torch.cat([g for _, g in per_sample_gradients(task, as_rows(X, y, name="train"), max_memory=4 * 66 * 8 * 3)])
    dataset = torch.utils.data.TensorDataset(X, y)
    loader = torch.utils.data.DataLoader(dataset, batch_size=7)
    from_loader = gradient_matrix(task, as_rows(loader, name="train"))
    from_dataset = gradient_matrix(task, as_rows(dataset, name="train"))
    picked = as_rows(loader, name="train").subset(np.array([3, 1, 20]))  # rows of a loader, read once
    assert torch.equal(picked.inputs, X[[3, 1, 20]]) and torch.equal(picked.targets, y[[3, 1, 20]])
    for other in (tiny, from_loader, from_dataset):
        assert torch.equal(whole, other) or torch.allclose(whole, other, rtol=0, atol=1e-15)


def test_jacobians_rebuild_gradients(small_problem):
    model, X, y = small_problem
    task = ModelTask(model, "cross_entropy")
    G = gradient_matrix(task, as_rows(X, y, name="train"))
    rebuilt = torch.cat([torch.einsum("bcp,bc->bp", J, e) for _, J, _, e in per_sample_jacobians(task, as_rows(X, y, name="train"))])
    assert torch.allclose(rebuilt, G, rtol=0, atol=1e-13)


@pytest.mark.parametrize("kind", ["gaussian", "rademacher"])
def test_projection_keeps_inner_products_within_the_jl_bound(kind):
    rng = np.random.default_rng(0)
    X = torch.as_tensor(rng.normal(size=(40, 3000)))
    k = 2000
    projection = RandomProjection(3000, k, kind=kind, seed=3, block_bytes=8 * k * 256)  # 12 blocks of rows
    Z = projection.project(X)
    exact, approx = X @ X.T, Z @ Z.T
    norms = X.norm(dim=1)
    # JL: |⟨Px, Py⟩ − ⟨x, y⟩| ≤ ε‖x‖‖y‖ with ε = 4√(log(m)/k) for all m² pairs at once (with high probability)
    epsilon = 4 * np.sqrt(np.log(len(X)) / k)
    assert torch.all((approx - exact).abs() <= epsilon * torch.outer(norms, norms))
    # and the same P whichever way the rows of X are split, whatever the block size
    again = RandomProjection(3000, k, kind=kind, seed=3, block_bytes=8 * k * 256).project(X[:7])
    assert torch.allclose(again, Z[:7], rtol=0, atol=1e-12)
    if kind == "rademacher":
        assert torch.allclose(projection.block(0).abs(), torch.full((256, k), k ** -0.5, dtype=torch.float64))


def test_projection_lift_is_the_transpose():
    projection = RandomProjection(500, 20, seed=1, block_bytes=8 * 20 * 64)
    x, z = torch.randn(3, 500, dtype=torch.float64), torch.randn(3, 20, dtype=torch.float64)
    assert torch.allclose((projection.project(x) * z).sum(1), (x * projection.lift(z)).sum(1), atol=1e-12)


def test_projected_gradients_match_projecting_the_matrix(small_problem):
    model, X, y = small_problem
    task = ModelTask(model, "cross_entropy")
    rows = as_rows(X, y, name="train")
    projection = RandomProjection(task.num_params, 16, seed=0)
    assert torch.allclose(projected_gradients(task, rows, projection), projection.project(gradient_matrix(task, rows)), atol=1e-14)


def test_gradient_matrix_refuses_what_does_not_fit(small_problem):
    model, X, y = small_problem
    with pytest.raises(InputError, match="max_memory"):
        gradient_matrix(ModelTask(model), as_rows(X, y, name="train"), max_memory=1000)


def test_model_task_errors():
    model = make_mlp(5, 7, 3)
    with pytest.raises(InputError, match="unknown loss"):
        ModelTask(model, "hinge")
    with pytest.raises(InputError, match="no module 'nope'"):
        ModelTask(model, modules=["nope"])
    bn = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2)).train()
    with pytest.raises(InputError, match="model.eval"):
        ModelTask(bn)
    task = ModelTask(model)
    with pytest.raises(InputError, match="outside the model's 3 classes"):
        gradient_matrix(task, as_rows(torch.zeros(4, 5), torch.tensor([0, 1, 2, 5]), name="the training data"))
    with pytest.raises(InputError, match="4 input rows but 3 targets"):
        as_rows(torch.zeros(4, 5), torch.zeros(3), name="train")
    only_head = ModelTask(model, modules=["2"])
    assert only_head.parameter_names == ["2.weight", "2.bias"] and only_head.num_params == 24

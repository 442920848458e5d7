"""Curation scores against explicit per-sample gradients (float64)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from dataworth.curation import Curator


class Sequence(nn.Module):
    """Tokens (rows × T × d) through a per-token Linear, tanh, mean over tokens, a Linear head."""

    def __init__(self, d: int = 5, hidden: int = 6, classes: int = 3) -> None:
        super().__init__()
        self.token = nn.Linear(d, hidden)
        self.head = nn.Linear(hidden, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.tanh(self.token(x)).mean(1))


class Convolutional(nn.Module):
    def __init__(self, classes: int = 3) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 3, kernel_size=3, stride=2, padding=1)
        self.head = nn.Linear(3 * 3 * 3, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.conv(x)).flatten(1))


def models() -> dict[str, tuple[nn.Module, tuple[int, ...]]]:
    torch.manual_seed(0)
    return {
        "linear": (nn.Linear(4, 3), (4,)),
        "mlp": (nn.Sequential(nn.Linear(4, 7), nn.Tanh(), nn.Linear(7, 5), nn.ReLU(), nn.Linear(5, 3)), (4,)),
        "sequence": (Sequence(), (4, 5)),
        "conv": (Convolutional(), (2, 5, 5)),
    }


def data(shape: tuple[int, ...], rows: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(rows, *shape, generator=generator, dtype=torch.float64), torch.randint(0, 3, (rows,), generator=generator)


def gradients(model: nn.Module, X: torch.Tensor, y: torch.Tensor, params: list[nn.Parameter]) -> torch.Tensor:
    """Per-row gradients of the cross-entropy over ``params``, by autograd one row at a time."""
    rows = []
    for x, target in zip(X, y, strict=True):
        loss = F.cross_entropy(model(x[None]), target[None])
        rows.append(torch.cat([g.flatten() for g in torch.autograd.grad(loss, params)]))
    return torch.stack(rows)


def scored_params(model: nn.Module, last_only: bool = False) -> list[nn.Parameter]:
    layers = [m for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
    layers = layers[-1:] if last_only else layers
    return [p for m in layers for p in (m.weight, m.bias)]


def exact_scores(model: nn.Module, X: torch.Tensor, y: torch.Tensor, validation, *, last_only: bool = False) -> torch.Tensor:
    """mean_j ∇ℓ_i·∇ℓ_j over the scored layers (the last one only with ``last_only``)."""
    params = scored_params(model, last_only=last_only)
    return (gradients(model, X, y, params) @ gradients(model, *validation, params).T).mean(1)


def curator_scores(model: nn.Module, method: str, X: torch.Tensor, y: torch.Tensor, validation, **kwargs) -> torch.Tensor:
    curator = Curator(model, validation=validation, method=method, policy="drop-negative", **kwargs)
    curator.loss(X, y)
    curator.close()
    return torch.tensor(curator.log["score"].to_numpy())


@pytest.mark.parametrize("name", ["mlp", "sequence", "conv"])
def test_ghost_equals_explicit_gradient_products(name: str) -> None:
    model, shape = models()[name]
    model = model.double()
    X, y = data(shape, 9, 1)
    validation = data(shape, 6, 2)
    expected = exact_scores(model, X, y, validation)
    assert torch.allclose(curator_scores(model, "ghost", X, y, validation), expected, rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize("name", ["linear", "mlp", "sequence", "conv"])
def test_last_layer_score_is_exact_for_the_last_layer(name: str) -> None:
    model, shape = models()[name]
    model = model.double()
    X, y = data(shape, 8, 3)
    validation = data(shape, 5, 4)
    expected = exact_scores(model, X, y, validation, last_only=True)
    assert torch.allclose(curator_scores(model, "last-layer", X, y, validation), expected, rtol=1e-10, atol=1e-13)


def test_lai_equals_the_exact_product_for_one_linear_layer() -> None:
    model, shape = models()["linear"]
    model = model.double()
    X, y = data(shape, 10, 5)
    validation = data(shape, 7, 6)
    expected = exact_scores(model, X, y, validation)
    assert torch.allclose(curator_scores(model, "lai", X, y, validation), expected, rtol=1e-10, atol=1e-13)


def test_lai_replaces_hidden_output_gradients_by_the_logits_gradient() -> None:
    """On an MLP, LAI = Σ_l (e_i·e_j)(ā_i^l·ā_j^l): computed here by hand from the activations."""
    model, shape = models()["mlp"]
    model = model.double()
    X, y = data(shape, 6, 7)
    Xv, yv = data(shape, 4, 8)

    def parts(inputs: torch.Tensor, targets: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        activations, h = [], inputs
        for layer in model:
            if isinstance(layer, nn.Linear):
                activations.append(torch.cat([h, torch.ones(len(h), 1, dtype=h.dtype)], 1))
            h = layer(h)
        return activations, torch.softmax(h, 1) - F.one_hot(targets, 3)

    with torch.no_grad():
        (a_b, e_b), (a_v, e_v) = parts(X, y), parts(Xv, yv)
    expected = ((e_b @ e_v.T) * sum(A @ B.T for A, B in zip(a_b, a_v, strict=True))).mean(1)
    assert torch.allclose(curator_scores(model, "lai", X, y, (Xv, yv)), expected, rtol=1e-12)


def test_lai_with_a_custom_loss_uses_autograd_on_the_outputs() -> None:
    """A callable loss equal to cross-entropy gives the same scores as the closed form."""
    model, shape = models()["mlp"]
    model = model.double()
    X, y = data(shape, 6, 9)
    validation = data(shape, 4, 10)
    closed = curator_scores(model, "lai", X, y, validation)
    custom = curator_scores(model, "lai", X, y, validation, loss=lambda f, t: F.cross_entropy(f, t, reduction="none"))
    assert torch.allclose(closed, custom, rtol=1e-12)


def test_adam_score_is_exact_on_the_last_layer() -> None:
    """⟨g_i, P ⊙ g_j⟩ with P = 1/(√v̂ + ε) from the optimizer's state, after three Adam steps."""
    model, shape = models()["linear"]
    model = model.double()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    X, y = data(shape, 10, 11)
    validation = data(shape, 7, 12)
    for _ in range(3):
        optimizer.zero_grad()
        F.cross_entropy(model(X), y).backward()
        optimizer.step()
    params = scored_params(model)
    step = float(optimizer.state[params[0]]["step"])
    P = torch.cat([1 / ((optimizer.state[p]["exp_avg_sq"] / (1 - 0.999 ** step)).sqrt() + 1e-8).flatten() for p in params])
    expected = ((gradients(model, X, y, params) * P) @ gradients(model, *validation, params).T).mean(1)
    scores = curator_scores(model, "lai-adam", X, y, validation, optimizer=optimizer)
    assert torch.allclose(scores, expected, rtol=1e-10)
    assert not torch.allclose(scores, curator_scores(model, "lai", X, y, validation), rtol=1e-2)

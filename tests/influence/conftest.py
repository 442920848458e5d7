import numpy as np
import pytest
import torch
from torch import nn


def make_mlp(d_in: int, hidden: int, classes: int, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(d_in, hidden), nn.Tanh(), nn.Linear(hidden, classes)).double().eval()


@pytest.fixture
def small_problem():
    """A float64 tanh MLP (5→7→3, p = 66) and 30 labelled rows."""
    rng = np.random.default_rng(0)
    X = torch.as_tensor(rng.normal(size=(30, 5)))
    y = torch.as_tensor(rng.integers(0, 3, size=30))
    return make_mlp(5, 7, 3), X, y


def train(model: nn.Module, X: torch.Tensor, y: torch.Tensor, l2: float, steps: int = 500) -> nn.Module:
    """Full-batch L-BFGS on mean cross-entropy + (l2/2)‖θ‖² (float64) to a stationary point."""
    optimizer = torch.optim.LBFGS(model.parameters(), max_iter=steps, tolerance_grad=1e-12, tolerance_change=0,
                                  history_size=50, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = nn.functional.cross_entropy(model(X), y) + 0.5 * l2 * sum(p.pow(2).sum() for p in model.parameters())
        loss.backward()
        return loss

    optimizer.step(closure)
    return model.eval()

import numpy as np
import pytest
import torch
from torch import nn

from dataworth.influence.models import train_lbfgs


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
    train_lbfgs(model, X, y, l2=l2, tol=1e-11, max_iter=steps)
    return model

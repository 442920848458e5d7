"""Built-in models trained to a stationary point, for the common case of a feature table.

- :func:`fit_logistic`: L2-regularized logistic regression minimizing the **sum-form** objective
  Σ_i ℓ_i(θ) + (λ/2)‖θ‖² (every parameter penalized, the intercept included) by Newton's method in float64
  until ‖∇‖ < ``tol``: binary (one weight vector + intercept, sigmoid) or softmax for C > 2 classes.
- :func:`fit_mlp`: a one-hidden-layer tanh MLP minimizing the mean-form objective (1/n) Σ ℓ_i + (λ/2)‖θ‖² with
  full-batch L-BFGS in float64, so that influence functions (which assume ∇R(θ̂) = 0) apply.

Both return a :class:`FittedModel`: the module, the :class:`ModelTask` whose objective it minimizes, and the
classes (label i ↔ ``classes[i]``).
"""

from __future__ import annotations

import importlib
import os
import warnings
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from dataworth.checks import DataworthWarning, FileFormatError, InputError, check_int, check_non_negative, check_seed
from dataworth.data import existing_file
from dataworth.influence.task import ModelTask


@dataclass
class FittedModel:
    """A trained built-in model, the task of its training objective, and its classes."""

    model: nn.Module
    task: ModelTask
    classes: np.ndarray
    gradient_norm: float


def encode_classes(y: np.ndarray, name: str) -> tuple[np.ndarray, np.ndarray]:
    """(codes 0..C−1, classes) for labels ``y``; at least two classes are needed."""
    classes, codes = np.unique(np.asarray(y), return_inverse=True)
    if len(classes) < 2:
        raise InputError(f"{name} has a single class ({classes[0]!r}); a classifier needs at least two")
    return codes.astype(np.int64), classes


def fit_logistic(
    X: np.ndarray, y: np.ndarray, *, l2: float, tol: float = 1e-10, max_iter: int = 100, start: nn.Linear | None = None
) -> FittedModel:
    """Newton's method on Σ_i ℓ_i(θ) + (λ/2)‖θ‖² (λ = ``l2`` > 0, intercept penalized), float64, from θ = 0 or
    from the weights of ``start`` (a model this function returned for the same classes: a warm start, which
    reaches the same unique minimizer in fewer steps).

    The returned task is in mean form, R = (1/n) Σ ℓ_i + (λ/(2n))‖θ‖², which has the same minimizer; its
    influence (1/n)∇fᵀH_R⁻¹g_i equals ∇fᵀH_sum⁻¹g_i, the sum-form one-step Newton removal.
    """
    lam = check_non_negative(l2, "l2")
    if lam == 0:
        raise InputError("l2 must be > 0 for the built-in logistic regression (the objective needs a unique minimizer)")
    codes, classes = encode_classes(y, "the training labels")
    features = torch.as_tensor(np.asarray(X, dtype=np.float64))
    n, d = features.shape
    binary = len(classes) == 2
    outputs = 1 if binary else len(classes)
    design = torch.cat([features, torch.ones(n, 1, dtype=torch.float64)], 1)  # x̃ = [x, 1]
    targets = torch.as_tensor(codes)
    theta = torch.zeros(outputs, d + 1, dtype=torch.float64)
    if start is not None:
        if tuple(start.weight.shape) != (outputs, d):
            raise InputError(f"the warm start has weights of shape {tuple(start.weight.shape)}; this problem needs {(outputs, d)}")
        theta = torch.cat([start.weight.detach(), start.bias.detach()[:, None]], 1).to(torch.float64)

    def objective(theta: torch.Tensor) -> torch.Tensor:
        logits = design @ theta.T
        if binary:
            losses = nn.functional.binary_cross_entropy_with_logits(logits[:, 0], targets.double(), reduction="sum")
        else:
            losses = nn.functional.cross_entropy(logits, targets, reduction="sum")
        return losses + 0.5 * lam * theta.pow(2).sum()

    norm = float("inf")
    for _ in range(check_int(max_iter, "max_iter")):
        gradient = torch.func.grad(objective)(theta).reshape(-1)
        norm = float(gradient.norm())
        if norm < tol:
            break
        hessian = _logistic_hessian(design, theta, binary) + lam * torch.eye(gradient.numel(), dtype=torch.float64)
        step = torch.linalg.solve(hessian, gradient).reshape(theta.shape)
        current, t = float(objective(theta)), 1.0
        # backtracking far from θ̂; near it the objective's change is below its rounding and full steps are taken
        while float(objective(theta - t * step)) > current + 1e-12 * abs(current) and t > 1e-8:
            t /= 2
        theta = theta - t * step
    if norm >= tol:
        warnings.warn(f"logistic regression stopped at ‖∇‖ = {norm:.2g} (tolerance {tol:g}); influence values assume a minimizer",
                      DataworthWarning, stacklevel=2)
    model = nn.Linear(d, outputs).double()
    with torch.no_grad():
        model.weight.copy_(theta[:, :d])
        model.bias.copy_(theta[:, d])
    model.eval()
    loss = "binary_cross_entropy" if binary else "cross_entropy"
    return FittedModel(model, ModelTask(model, loss, l2=lam / n), classes, norm)


def _logistic_hessian(design: torch.Tensor, theta: torch.Tensor, binary: bool) -> torch.Tensor:
    """Σ_i (∂²ℓ_i/∂f²) ⊗ x̃_i x̃_iᵀ: Σ p(1 − p) x̃x̃ᵀ (binary) or the C(d+1) × C(d+1) softmax block matrix."""
    logits = design @ theta.T
    if binary:
        p = torch.sigmoid(logits[:, 0])
        return (design * (p * (1 - p))[:, None]).T @ design
    p = torch.softmax(logits, 1)
    classes, width = theta.shape
    blocks = torch.empty(classes, width, classes, width, dtype=torch.float64)
    for c in range(classes):
        weights = (p[:, c:c + 1] * ((torch.arange(classes) == c).double() - p))  # n×C: ∂²ℓ/∂f_c∂f_·
        blocks[c] = torch.einsum("ni,nd,nj->idj", design, weights, design)
    return blocks.reshape(classes * width, classes * width)


def fit_mlp(
    X: np.ndarray, y: np.ndarray, *, hidden: int = 64, l2: float = 1e-3, seed: int = 0, tol: float = 1e-7, max_iter: int = 2000
) -> FittedModel:
    """A Linear–tanh–Linear classifier trained by :func:`train_lbfgs` in float64; smooth, so its Hessian exists
    everywhere."""
    lam = check_non_negative(l2, "l2")
    codes, classes = encode_classes(y, "the training labels")
    features = torch.as_tensor(np.asarray(X, dtype=np.float64))
    torch.manual_seed(check_seed(seed))
    model = nn.Sequential(nn.Linear(features.shape[1], check_int(hidden, "hidden")), nn.Tanh(), nn.Linear(hidden, len(classes))).double()
    norm = train_lbfgs(model, features, torch.as_tensor(codes), l2=lam, tol=tol, max_iter=max_iter)
    return FittedModel(model, ModelTask(model, "cross_entropy", l2=lam), classes, norm)


def train_lbfgs(model: nn.Module, X: torch.Tensor, y: torch.Tensor, *, l2: float, tol: float = 1e-7, max_iter: int = 2000) -> float:
    """Train ``model`` in place on R(θ) = (1/n) Σ cross-entropy + (λ/2)‖θ‖² by full-batch L-BFGS (strong Wolfe line
    search) until every gradient entry is below ``tol``/10 or ``max_iter`` iterations; put it in eval mode and
    return ‖∇R(θ̂)‖ — influence functions need θ̂ at a stationary point of the objective they are told about."""
    optimizer = torch.optim.LBFGS(model.parameters(), lr=1, max_iter=check_int(max_iter, "max_iter"), tolerance_grad=tol / 10,
                                  tolerance_change=0, history_size=50, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = nn.functional.cross_entropy(model(X), y) + 0.5 * l2 * sum(p.pow(2).sum() for p in model.parameters())
        loss.backward()
        return loss

    optimizer.step(closure)
    closure()
    norm = float(torch.cat([p.grad.reshape(-1) for p in model.parameters()]).norm())
    model.eval()
    return norm


def load_model(arch: str, weights: str | os.PathLike) -> nn.Module:
    """The model built by ``arch`` (``"package.module:factory"``, a function or class called with no
    arguments) with the tensors of a ``.safetensors`` file (read without pickle), in evaluation mode."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    module_name, _, attribute = arch.partition(":")
    if not module_name or not attribute:
        raise InputError(f"--arch must be package.module:factory; got {arch!r}")
    try:
        factory = getattr(importlib.import_module(module_name), attribute)
    except ImportError as exc:
        raise InputError(f"cannot import {module_name!r} for --arch ({exc}); put its package on PYTHONPATH") from None
    except AttributeError:
        raise InputError(f"{module_name} has no {attribute!r} (--arch)") from None
    model = factory()
    if not isinstance(model, nn.Module):
        raise InputError(f"{arch}() returned a {type(model).__name__}, not a torch.nn.Module")
    path = existing_file(weights, "the weights file", (".safetensors",))
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise FileFormatError(f"{path} is not a readable .safetensors file: {exc}") from None
    expected = model.state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    resized = [f"{k} {tuple(tensors[k].shape)} vs {tuple(v.shape)}" for k, v in expected.items() if k in tensors and tensors[k].shape != v.shape]
    if missing or unexpected or resized:
        parts = [f"missing {', '.join(missing[:5])}" if missing else "", f"unexpected {', '.join(unexpected[:5])}" if unexpected else "",
                 f"wrong shape {'; '.join(resized[:3])}" if resized else ""]
        raise InputError(f"the weights file does not match the architecture {arch}: {'; '.join(p for p in parts if p)}")
    model = model.to(next(iter(tensors.values())).dtype) if tensors else model
    model.load_state_dict(tensors)
    return model.eval()

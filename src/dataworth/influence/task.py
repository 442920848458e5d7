"""The model task: the one place that knows the model (after Kronfluence's ``Task``).

A :class:`ModelTask` holds an ``nn.Module``, a per-sample loss ℓ(f(x; θ), y), an optional measurement
m(f(x; θ), y) that attribution explains instead of the loss (TRAK's margin, a test loss ...), the L2
weight λ of the training objective R(θ) = (1/n) Σ_i ℓ_i(θ) + (λ/2)‖θ‖², and which parameters count.
Every gradient, curvature product and solver in :mod:`dataworth.influence` goes through it, so a method
never touches the model directly.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from dataworth.checks import InputError, check_non_negative

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

#: The losses known by name; each takes (outputs, targets) and returns one loss per sample.
LOSSES = ("cross_entropy", "mse", "binary_cross_entropy")
#: The measurements known by name (besides ``None``, the loss itself).
MEASUREMENTS = ("loss", "margin")


def cross_entropy(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """ℓ = −log softmax(f)_y per sample (f: b×C logits, y: b class indices)."""
    return F.cross_entropy(outputs, targets, reduction="none")


def squared_error(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """ℓ = ½‖f − y‖² per sample, summed over output dimensions (its output Hessian is the identity)."""
    return 0.5 * (outputs - targets.reshape(outputs.shape)).pow(2).flatten(1).sum(1)


def binary_cross_entropy(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """ℓ = −y log σ(f) − (1 − y) log(1 − σ(f)) per sample (f: one logit per sample, y ∈ {0, 1})."""
    return F.binary_cross_entropy_with_logits(outputs.reshape(-1), targets.reshape(-1).to(outputs.dtype), reduction="none")


def correct_class_margin(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """TRAK's margin m = f_y − log Σ_{c≠y} exp f_c = log(p_y / (1 − p_y)) per sample."""
    if outputs.ndim == 1 or outputs.shape[-1] == 1:  # binary: one logit, the margin of the true class is ±f
        logit = outputs.reshape(-1)
        return torch.where(targets.reshape(-1) > 0.5, logit, -logit)
    correct = outputs.gather(1, targets.reshape(-1, 1)).squeeze(1)
    others = outputs.scatter(1, targets.reshape(-1, 1), float("-inf"))
    return correct - torch.logsumexp(others, dim=1)


_LOSS_FUNCTIONS: dict[str, LossFn] = {
    "cross_entropy": cross_entropy,
    "mse": squared_error,
    "binary_cross_entropy": binary_cross_entropy,
}


class ModelTask:
    """A model, its per-sample loss and measurement, the objective's L2 weight, and the parameters that count.

    Parameters
    ----------
    model : nn.Module
        The trained model, in evaluation mode where that matters (BatchNorm and dropout in train mode
        make per-sample gradients depend on the batch, so they are refused).
    loss : str or callable
        ``"cross_entropy"`` (logits, class indices), ``"mse"`` (½‖f − y‖²), ``"binary_cross_entropy"``
        (one logit, 0/1 targets), or ``(outputs, targets) -> per-sample losses``.
    measurement : None, str or callable
        What attribution explains on target rows: ``None``/``"loss"`` the loss, ``"margin"`` the
        correct-class margin log(p_y/(1 − p_y)), or ``(outputs, targets) -> per-sample values``.
    modules : sequence of str, optional
        Names of the modules (as in ``model.named_modules()``) whose trainable parameters count; all
        trainable parameters when omitted. The others are held fixed.
    l2 : float
        λ of the training objective R(θ) = (1/n) Σ ℓ_i + (λ/2)‖θ‖² (weight decay); it enters the Hessian
        as λI and the stationarity check as λθ.
    """

    def __init__(
        self,
        model: nn.Module,
        loss: str | LossFn = "cross_entropy",
        *,
        measurement: str | LossFn | None = None,
        modules: Sequence[str] | None = None,
        l2: float = 0.0,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise InputError(f"model must be a torch.nn.Module; got {type(model).__name__}")
        self.model = model
        self.loss_name, self.loss_fn = resolve_loss(loss)
        measures = {"loss": self.loss_fn, "margin": correct_class_margin}
        self.measurement_name, self.measurement_fn = _resolve("loss" if measurement is None else measurement, "measurement", measures)
        #: +1 for a loss-like measurement (lower = better), −1 for the margin (higher = better): scores are multiplied
        #: by it so that a positive score always means "this training row helps".
        self.measurement_sign = -1.0 if self.measurement_name == "margin" else 1.0
        self.l2 = check_non_negative(l2, "l2")
        self._check_mode()
        trainable = {name: p for name, p in model.named_parameters() if p.requires_grad}
        if not trainable:
            raise InputError("the model has no trainable parameters (requires_grad=False everywhere); nothing to attribute to")
        self.parameter_names = self._select(trainable, modules)
        self.params = {name: trainable[name].detach() for name in self.parameter_names}
        self.frozen = {name: p.detach() for name, p in model.named_parameters() if name not in self.params}
        self.buffers = {name: b.detach() for name, b in model.named_buffers()}
        first = next(iter(self.params.values()))
        self.dtype, self.device = first.dtype, first.device

    # -- what counts ---------------------------------------------------------------------------------

    @property
    def num_params(self) -> int:
        """p, the number of parameters that count."""
        return sum(p.numel() for p in self.params.values())

    @property
    def shapes(self) -> dict[str, torch.Size]:
        return {name: p.shape for name, p in self.params.items()}

    def flat_params(self) -> torch.Tensor:
        """θ̂ as one vector of length p (parameters in ``parameter_names`` order)."""
        return torch.cat([p.reshape(-1) for p in self.params.values()])

    def flatten(self, tensors: dict[str, torch.Tensor], batch_dims: int = 0) -> torch.Tensor:
        """Concatenate per-parameter tensors (with ``batch_dims`` leading dims) into (..., p)."""
        return torch.cat([tensors[name].reshape(*tensors[name].shape[:batch_dims], -1) for name in self.parameter_names], dim=-1)

    def unflatten(self, vector: torch.Tensor) -> dict[str, torch.Tensor]:
        """Split a vector of length p (or (..., p)) back into per-parameter tensors."""
        out, start = {}, 0
        for name, shape in self.shapes.items():
            size = shape.numel()
            out[name] = vector[..., start:start + size].reshape(*vector.shape[:-1], *shape)
            start += size
        return out

    def blocks(self) -> dict[str, list[str]]:
        """The parameter names of each module that owns counted parameters (LayerIF's layers), in order; a model that is
        itself one layer (an nn.Linear) has the one block ""."""
        out: dict[str, list[str]] = {}
        for name in self.parameter_names:
            out.setdefault(name.rpartition(".")[0], []).append(name)  # "" for the root module's own parameters
        return out

    # -- functional forward ---------------------------------------------------------------------------

    def forward(self, params: dict[str, torch.Tensor], inputs: torch.Tensor) -> torch.Tensor:
        """f(x; θ) with the counted parameters replaced by ``params`` (the rest as in the model)."""
        return functional_call(self.model, ({**self.frozen, **params}, self.buffers), (inputs,))

    def losses(self, params: dict[str, torch.Tensor], inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """ℓ(f(x_i; θ), y_i) for each row of a batch."""
        return self.loss_fn(self.forward(params, inputs), targets)

    def measurements(self, params: dict[str, torch.Tensor], inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """m(f(x_i; θ), y_i) for each row of a batch."""
        return self.measurement_fn(self.forward(params, inputs), targets)

    def prepare(self, inputs: Any, targets: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """A batch on the model's device: floating inputs in the model's dtype, integer ones (token ids) as
        they are; targets as class indices (cross-entropy) or in the model's dtype."""
        inputs = torch.as_tensor(inputs, device=self.device)
        if inputs.is_floating_point():
            inputs = inputs.to(self.dtype)
        targets = torch.as_tensor(targets, device=self.device)
        if self.loss_name == "cross_entropy":
            if targets.is_floating_point() and not torch.equal(targets, targets.round()):
                raise InputError("cross_entropy needs integer class labels; the targets have fractions")
            targets = targets.long()
        elif targets.is_floating_point() or self.loss_name in ("mse", "binary_cross_entropy"):
            targets = targets.to(self.dtype)
        return inputs, targets

    def output_shape(self, inputs: torch.Tensor) -> torch.Size:
        """The shape of one row's output (from a forward pass of the first row)."""
        with torch.no_grad():
            return self.forward(self.params, inputs[:1]).shape[1:]

    def activation_numel(self, inputs: torch.Tensor) -> int:
        """How many numbers one row's forward pass produces across all modules (a row's share of the memory of
        a forward-mode product), from a forward pass of the first row with hooks on every module."""
        total = [0]

        def count(module: nn.Module, args: Any, output: Any) -> None:
            total[0] += sum(t.numel() for t in (output if isinstance(output, (tuple, list)) else (output,)) if isinstance(t, torch.Tensor))

        handles = [module.register_forward_hook(count) for module in self.model.modules()]
        try:
            with torch.no_grad():
                self.forward(self.params, inputs[:1])
        finally:
            for handle in handles:
                handle.remove()
        return max(1, total[0])

    def check_targets(self, output_shape: torch.Size, targets: torch.Tensor, name: str) -> None:
        """Labels outside the model's classes (or targets of the wrong shape) are one clear error."""
        width = output_shape.numel()
        if self.loss_name == "cross_entropy":
            if len(output_shape) != 1:
                raise InputError(f"cross_entropy needs b×C logits; the model gives outputs of shape (b, {', '.join(map(str, output_shape))})")
            if targets.numel() and (int(targets.min()) < 0 or int(targets.max()) >= width):
                raise InputError(f"{name} has labels outside the model's {width} classes 0..{width - 1}; encode labels as 0..{width - 1}")
        elif self.loss_name == "binary_cross_entropy":
            if width != 1:
                raise InputError(f"binary_cross_entropy needs one logit per row; the model gives {tuple(output_shape)}")
            if targets.numel() and not bool(((targets == 0) | (targets == 1)).all()):
                raise InputError(f"{name} must hold 0/1 labels for binary_cross_entropy")
        elif self.loss_name == "mse" and targets[:1].numel() != width:
            raise InputError(f"{name} has targets of shape {tuple(targets.shape[1:])} per row; the model gives outputs of shape {tuple(output_shape)}")

    # -- curvature of the loss in the outputs (Gauss-Newton, Fisher) -----------------------------------

    def output_hessian_factor(self, outputs: torch.Tensor) -> torch.Tensor:
        """L with ∂²ℓ/∂f² = L Lᵀ per row (b×C×r), for the Gauss-Newton matrix and the exact Fisher.

        cross-entropy: diag(p) − ppᵀ = Σ_c p_c (e_c − p)(e_c − p)ᵀ, so L = [√p_c (e_c − p)]_c;
        mse: the identity; binary cross-entropy: √(σ(1 − σ)).
        """
        if self.loss_name == "cross_entropy":
            p = torch.softmax(outputs, dim=1)
            eye = torch.eye(p.shape[1], dtype=p.dtype, device=p.device)
            return (eye.unsqueeze(0) - p.unsqueeze(2)) * p.sqrt().unsqueeze(1)  # [b, c, r] = (δ_cr − p_c)√p_r
        if self.loss_name == "mse":
            flat = outputs.reshape(outputs.shape[0], -1)
            return torch.eye(flat.shape[1], dtype=flat.dtype, device=flat.device).expand(flat.shape[0], -1, -1)
        if self.loss_name == "binary_cross_entropy":
            s = torch.sigmoid(outputs.reshape(-1, 1))
            return (s * (1 - s)).sqrt().unsqueeze(2)
        raise InputError("the Gauss-Newton matrix and the Fisher need a named loss (cross_entropy, mse, binary_cross_entropy); "
                         "with a custom loss use curvature='hessian'")

    def sample_targets(self, outputs: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Targets drawn from the model's own predictive distribution (the true Fisher's labels)."""
        if self.loss_name == "cross_entropy":
            return torch.multinomial(torch.softmax(outputs.detach(), 1), 1, generator=generator).squeeze(1)
        if self.loss_name == "mse":
            noise = torch.randn(outputs.shape, generator=generator, dtype=outputs.dtype, device=outputs.device)
            return outputs.detach() + noise
        if self.loss_name == "binary_cross_entropy":
            p = torch.sigmoid(outputs.detach().reshape(-1))
            return torch.bernoulli(p, generator=generator)
        raise InputError("a Fisher with sampled labels needs a named loss (cross_entropy, mse, binary_cross_entropy)")

    # -- checks ---------------------------------------------------------------------------------------

    def _check_mode(self) -> None:
        batch_dependent = [name for name, m in self.model.named_modules()
                           if m.training and isinstance(m, (nn.modules.batchnorm._BatchNorm, nn.modules.dropout._DropoutNd))]
        if batch_dependent:
            raise InputError(f"the model is in training mode with {batch_dependent[0] or 'a module'} "
                             f"({type(self.model.get_submodule(batch_dependent[0])).__name__}), which makes gradients "
                             "depend on the batch or on chance; call model.eval() first")

    def _select(self, trainable: dict[str, nn.Parameter], modules: Sequence[str] | None) -> list[str]:
        if modules is None:
            return list(trainable)
        if isinstance(modules, str):
            modules = [modules]
        known = dict(self.model.named_modules())
        chosen: list[str] = []
        for module in modules:
            if module not in known:
                names = ", ".join(n for n in known if n)[:300]
                raise InputError(f"the model has no module {module!r}; it has: {names}")
            prefix = f"{module}." if module else ""
            found = [name for name in trainable if name.startswith(prefix)]
            if not found:
                raise InputError(f"module {module!r} has no trainable parameters")
            chosen += [name for name in found if name not in chosen]
        return [name for name in trainable if name in chosen]


def resolve_loss(spec: str | LossFn) -> tuple[str, LossFn]:
    """(name, per-sample loss function) of a loss given by name (:data:`LOSSES`) or as a callable."""
    return _resolve(spec, "loss", _LOSS_FUNCTIONS)


def _resolve(spec: str | LossFn, what: str, named: dict[str, LossFn]) -> tuple[str, LossFn]:
    if callable(spec):
        return getattr(spec, "__name__", "custom"), spec
    if not isinstance(spec, str) or spec not in named:
        raise InputError(f"unknown {what} {spec!r}; use one of {', '.join(named)} or a callable (outputs, targets) -> per-sample values")
    return spec, named[spec]


def as_task(model_or_task: nn.Module | ModelTask, **task_params: Any) -> ModelTask:
    """A :class:`ModelTask` from a task (returned as it is) or from a model and the task's parameters."""
    if isinstance(model_or_task, ModelTask):
        return model_or_task
    return ModelTask(model_or_task, **task_params)

"""Kronecker-factored inverse curvature: the K-FAC, EK-FAC and ASTRA solvers of ``solve(V)`` = V (H + δI)⁻¹.

Each counted ``nn.Linear`` or ``nn.Conv2d`` layer l maps inputs a_t at locations t (one for a plain Linear,
the tokens of a b×T×d sequence, the unfolded patches of a convolution) to outputs s_t = W ā_t with
ā = [a; 1] when the bias counts. The curvature block of the layer, approximated from the n training rows, is

    G_l = (1/n) Σ_i E_y[vec(G_i) vec(G_i)ᵀ],    G_i = Σ_t δs_t ā_tᵀ,    δs = ∂ℓ(f(x_i), y)/∂s,

with y drawn from the model's own predictive distribution (``fisher="sampled"``, the true Fisher of
Martens & Grosse 2015 and Kronfluence, one label per row), or the expectation over y taken in closed form
(``fisher="exact"``): with ∂²ℓ/∂f² = L Lᵀ each column L_r is back-propagated as a pseudo-gradient and the
outer products are summed over r, which gives exactly the Gauss-Newton block (1/n) Σ_i J_iᵀ L Lᵀ J_i.
For the named losses (cross-entropy, squared error, logistic) the Fisher and the Gauss-Newton matrix agree
in expectation. The layers are taken as independent (block-diagonal curvature), and

- **K-FAC** (Martens & Grosse 2015; Grosse & Martens 2016 "KFC" for convolutions): G_l ≈ A ⊗ S with
  A = (1/n) Σ_i Σ_t ā_t ā_tᵀ and S = (1/n) Σ_i (1/T) Σ_t δs_t δs_tᵀ (T locations per row; KFC's spatial
  homogeneity and uncorrelated-derivatives assumptions). With A = Q_A diag(λ_A) Q_Aᵀ, S = Q_S diag(λ_S) Q_Sᵀ
  and V_l the layer's slice of a vector as an out × (in [+1]) matrix (weight columns, then the bias column),

      V_l ↦ Q_S [(Q_Sᵀ V_l Q_A) ⊘ (λ_S λ_Aᵀ + δ')] Q_Aᵀ,    δ' = δ + λ (the damping plus the task's L2 weight).

- **EK-FAC** (George, Laurent, Bouthillier, Ballas & Vincent 2018): the same eigenbases, with the eigenvalues
  refit from per-sample (pseudo-)gradients, Λ = (1/n) Σ_i E_y[(Q_Sᵀ G_i Q_A)²] (elementwise square): the
  diagonal of G_l in the Kronecker eigenbasis, the best approximation in that basis in Frobenius norm.
  Solves with Λ + δ' in place of λ_S λ_Aᵀ + δ'. The per-sample gradients are rotated one chunk of rows
  at a time (``max_memory``), never as an n×p matrix.

- **ASTRA** (Wang, Nguyen, Yang, Bae, McIlraith & Grosse 2025, "Better Training Data Attribution via Better
  Inverse Hessian-Vector Products", arXiv:2507.14740): stochastic Neumann (Richardson) iterations on
  (H + δI)x = v preconditioned by the EK-FAC approximation P,

      x_0 = P⁻¹v,    x_{t+1} = x_t + η P⁻¹(v − (H_B + δI) x_t),

  with H_B the curvature over a minibatch B of training rows (all rows by default). The first iterate is the
  EK-FAC answer; the error contracts in the (H + δI)-norm by max |1 − ημ| over the eigenvalues μ of
  P⁻¹(H + δI), so the iteration converges for η < 2/μ_max. The automatic step is η = 0.9/μ̂ with μ̂ a
  generalized Rayleigh quotient xᵀ(H + δI)x / xᵀPx after a few power iterations (an estimate from below).

Each layer is found by forward hooks on the modules while the model runs through ``task.forward``; a hook
records the module's input and output (and hands a copy of the output on, so that an in-place activation
downstream cannot overwrite it), and δs is the gradient of the outputs' pseudo-loss with respect to that
recorded output. A module called more than once contributes the locations of every call.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from dataworth.checks import InputError, check_choice, check_int, check_positive, check_seed
from dataworth.influence.batches import Rows
from dataworth.influence.curvature import Curvature
from dataworth.influence.gradients import DEFAULT_MAX_MEMORY
from dataworth.influence.solvers import Solver, check_damping
from dataworth.influence.task import ModelTask

#: How the output gradients of the Fisher are formed (see the module docstring).
FISHERS = ("sampled", "exact")
#: Power iterations behind ASTRA's automatic step.
POWER_ITERATIONS = 10
#: ASTRA's automatic step is this fraction of 1/μ̂_max.
STEP_SAFETY = 0.9

_SUPPORTED = (nn.Linear, nn.Conv2d)


@dataclass
class KroneckerLayer:
    """One Linear/Conv2d layer's counted parameters (their slices of the flat vector) and, once fitted, its
    factors' eigenbases and the eigenvalues of the approximation (``out × k``, k = in [+1])."""

    name: str
    module: nn.Module
    weight: slice | None
    bias: slice | None
    out_features: int
    in_features: int
    a_eigenvectors: torch.Tensor | None = None
    s_eigenvectors: torch.Tensor | None = None
    eigenvalues: torch.Tensor | None = None

    @property
    def width(self) -> int:
        """k, the columns of the layer's matrix: the weight's fan-in (when it counts) plus one for the bias."""
        return self.in_features + (self.bias is not None)

    def matrices(self, V: torch.Tensor) -> torch.Tensor:
        """The layer's slice of each row of V (m×p) as an m × out × k matrix [W | b]."""
        parts = []
        if self.weight is not None:
            parts.append(V[:, self.weight].reshape(len(V), self.out_features, self.in_features))
        if self.bias is not None:
            parts.append(V[:, self.bias].reshape(len(V), self.out_features, 1))
        return torch.cat(parts, dim=2)

    def place(self, M: torch.Tensor, out: torch.Tensor) -> None:
        """Write m × out × k matrices back into the layer's slice of ``out`` (m×p)."""
        if self.weight is not None:
            out[:, self.weight] = M[:, :, :self.in_features].reshape(len(M), -1).to(out.dtype)
        if self.bias is not None:
            out[:, self.bias] = M[:, :, -1].to(out.dtype)

    def inputs(self, a: torch.Tensor) -> torch.Tensor:
        """ā of one call as b × T × k in float64: Linear inputs with the tokens as locations, Conv2d patches
        (unfolded as the convolution pads them) with the output pixels as locations; a column of ones for the bias."""
        if isinstance(self.module, nn.Conv2d):
            module = self.module
            mode = "constant" if module.padding_mode == "zeros" else module.padding_mode
            padded = F.pad(a, module._reversed_padding_repeated_twice, mode=mode)
            a = F.unfold(padded, module.kernel_size, dilation=module.dilation, stride=module.stride).transpose(1, 2)
        else:
            a = a.reshape(a.shape[0], -1, a.shape[-1])
        a = a.detach().to(torch.float64)
        columns = [a] if self.weight is not None else []
        if self.bias is not None:
            columns.append(torch.ones(*a.shape[:2], 1, dtype=torch.float64, device=a.device))
        return torch.cat(columns, dim=2)

    def outputs(self, g: torch.Tensor) -> torch.Tensor:
        """A tensor shaped like the layer's output (δs) as b × T × out in float64, locations as in :meth:`inputs`."""
        if isinstance(self.module, nn.Conv2d):
            g = g.reshape(g.shape[0], self.out_features, -1).transpose(1, 2)
        else:
            g = g.reshape(g.shape[0], -1, g.shape[-1])
        return g.detach().to(torch.float64)


def kronecker_layers(task: ModelTask) -> list[KroneckerLayer]:
    """The task's counted parameters grouped into Linear/Conv2d layers, in parameter order; any other counted
    parameter is one :class:`InputError` naming it and the fix."""
    offsets, start = {}, 0
    for name, shape in task.shapes.items():
        offsets[name] = slice(start, start + shape.numel())
        start += shape.numel()
    grouped: dict[str, dict[str, slice]] = {}
    for name in task.parameter_names:
        owner, _, leaf = name.rpartition(".")
        module = task.model.get_submodule(owner)
        if not isinstance(module, _SUPPORTED) or leaf not in ("weight", "bias"):
            raise InputError(f"K-FAC covers only nn.Linear and nn.Conv2d layers, but the counted parameter {name!r} belongs to "
                             f"a {type(module).__name__}; {_modules_hint(task.model)}")
        if isinstance(module, nn.Conv2d) and module.groups != 1:
            raise InputError(f"K-FAC does not cover grouped convolutions; layer {owner!r} has groups={module.groups}: "
                             f"{_modules_hint(task.model)}")
        grouped.setdefault(owner, {})[leaf] = offsets[name]
    layers = []
    for owner, parts in grouped.items():
        module = task.model.get_submodule(owner)
        fan_in = module.weight[0].numel() if "weight" in parts else 0
        layers.append(KroneckerLayer(owner or "(the model)", module, parts.get("weight"), parts.get("bias"),
                                     module.weight.shape[0], fan_in))
    return layers


def _modules_hint(model: nn.Module) -> str:
    """The fix for a parameter K-FAC cannot cover: count only the Linear/Conv2d layers, or use another solver."""
    names = [name for name, m in model.named_modules()
             if isinstance(m, _SUPPORTED) and any(p.requires_grad for p in m.parameters(recurse=False))]
    if not names:
        return "the model has no Linear or Conv2d layer with trainable parameters: use another solver (explicit, cg, lissa, arnoldi)"
    return f"count only such layers with ModelTask(model, ..., modules={names[:8]!r})"


@contextmanager
def _recording(layers: list[KroneckerLayer]) -> Iterator[dict[int, list[tuple[torch.Tensor, torch.Tensor]]]]:
    """Forward hooks that record (input, output) of every call of each layer, keyed by layer index."""
    calls: dict[int, list[tuple[torch.Tensor, torch.Tensor]]] = {index: [] for index in range(len(layers))}

    def hook(index: int):
        def record(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> torch.Tensor:
            calls[index].append((inputs[0], output))
            return output.clone()  # downstream in-place ops change the copy, not the recorded s

        return record

    handles = [layer.module.register_forward_hook(hook(index)) for index, layer in enumerate(layers)]
    try:
        yield calls
    finally:
        for handle in handles:
            handle.remove()


def _output_gradients(task: ModelTask, outputs: torch.Tensor, targets: torch.Tensor, of: str,
                      generator: torch.Generator | None) -> Iterator[torch.Tensor]:
    """The pseudo-gradients ∂ℓ/∂f back-propagated for one batch: one for the loss (``"loss"``) or sampled
    labels (``"sampled"``), one per column of the output-Hessian factor L (``"exact"``)."""
    outputs = outputs.detach()
    if of == "exact":
        factor = task.output_hessian_factor(outputs)
        for r in range(factor.shape[2]):
            yield factor[:, :, r].reshape(outputs.shape)
        return
    labels = task.sample_targets(outputs, generator) if of == "sampled" else targets
    leaf = outputs.requires_grad_()
    yield torch.autograd.grad(task.loss_fn(leaf, labels).sum(), leaf)[0]


def _layer_passes(task: ModelTask, layers: list[KroneckerLayer], rows: Rows, *, batch_size: int, of: str,
                  seed: int = 0) -> Iterator[tuple[int, list[torch.Tensor], Iterator[list[torch.Tensor]]]]:
    """For each batch: (start, ā per layer (b×T×k), an iterator over pseudo-gradient columns of δs per layer
    (b×T×out)). Sampled labels come from a generator seeded afresh for every pass, so passes agree."""
    generator = torch.Generator(device=task.device).manual_seed(seed) if of == "sampled" else None
    params = {name: p.detach().requires_grad_() for name, p in task.params.items()}
    for start, inputs, targets in rows.batches(batch_size):
        inputs, targets = task.prepare(inputs, targets)
        with torch.enable_grad(), _recording(layers) as calls:
            outputs = task.forward(params, inputs)
        silent = [layers[index].name for index, recorded in calls.items() if not recorded]
        if silent:
            raise InputError(f"layer {silent[0]!r} is never called in the model's forward pass (its weights are used "
                             "some other way), so K-FAC cannot see its inputs; leave it out of ModelTask(modules=...)")
        abar = [torch.cat([layer.inputs(a) for a, _ in calls[index]], dim=1) for index, layer in enumerate(layers)]
        yield start, abar, _deltas(task, layers, calls, outputs, targets, of, generator)


def _deltas(task: ModelTask, layers: list[KroneckerLayer], calls: dict[int, list[tuple[torch.Tensor, torch.Tensor]]],
            outputs: torch.Tensor, targets: torch.Tensor, of: str, generator: torch.Generator | None) -> Iterator[list[torch.Tensor]]:
    """δs per layer (b × T × out, the calls' locations concatenated) for each pseudo-gradient of the outputs."""
    recorded = [s for index in range(len(layers)) for _, s in calls[index]]
    for pseudo in _output_gradients(task, outputs, targets, of, generator):
        with torch.enable_grad():
            grads = iter(torch.autograd.grad(outputs, recorded, pseudo, retain_graph=True, allow_unused=True, materialize_grads=True))
        yield [torch.cat([layer.outputs(next(grads)) for _ in calls[index]], dim=1) for index, layer in enumerate(layers)]


def layer_gradients(task: ModelTask, rows: Rows, *, batch_size: int = 256) -> torch.Tensor:
    """The n×p per-sample loss gradients rebuilt from the layer hooks as G_i = Σ_t δs_t ā_tᵀ (a check of the
    bookkeeping: they equal :func:`~dataworth.influence.gradients.gradient_matrix`)."""
    layers = kronecker_layers(task)
    out = torch.zeros(rows.n, task.num_params, dtype=task.dtype, device=task.device)
    for start, abar, columns in _layer_passes(task, layers, rows, batch_size=batch_size, of="loss"):
        (deltas,) = list(columns)
        for layer, a, d in zip(layers, abar, deltas, strict=True):
            layer.place(torch.einsum("bto,btk->bok", d, a), out[start:start + len(a)])
    return out


class KFACSolver(Solver):
    """K-FAC (Martens & Grosse 2015; KFC for Conv2d, Grosse & Martens 2016): per Linear/Conv2d layer,
    G_l ≈ A ⊗ S solved in the factors' eigenbases with eigenvalues λ_S λ_Aᵀ + δ + λ (see the module docstring).

    Every counted parameter must belong to an ``nn.Linear`` or ``nn.Conv2d`` (pick them with
    ``ModelTask(..., modules=[...])``). ``fisher`` chooses sampled labels (``seed``) or the exact expectation
    (one backward pass per column of the output-Hessian factor: C per batch for C classes); ``batch_size``
    rows are read at a time; ``max_memory`` bounds the factors and EK-FAC's chunks of per-sample gradients.
    """

    name: ClassVar[str] = "kfac"

    def __init__(self, damping: float = 0.0, fisher: str = "sampled", seed: int = 0, batch_size: int = 256,
                 max_memory: int = DEFAULT_MAX_MEMORY) -> None:
        self.damping = damping
        self.fisher = fisher
        self.seed = seed
        self.batch_size = batch_size
        self.max_memory = max_memory

    def fit(self, task: ModelTask, rows: Rows) -> KFACSolver:
        self.damping_ = check_damping(self.damping)
        self.effective_damping_ = self.damping_ + task.l2
        check_choice(self.fisher, "fisher", FISHERS)
        check_seed(self.seed)
        check_int(self.batch_size, "batch_size")
        layers = kronecker_layers(task)
        need = sum(8 * 3 * (layer.width ** 2 + layer.out_features ** 2) for layer in layers)
        if need > self.max_memory:
            raise InputError(f"the Kronecker factors need {need / 2**30:.2f} GiB, over max_memory={self.max_memory / 2**30:.2f} GiB; "
                             "raise max_memory or count fewer layers with ModelTask(modules=...)")
        self._factorize(task, rows, layers)
        self._refit(task, rows, layers)
        for layer in layers:
            self._check_definite(layer)
        self.task_, self.layers_ = task, layers
        return self

    def _passes(self, task: ModelTask, layers: list[KroneckerLayer], rows: Rows) -> Iterator[tuple[int, list[torch.Tensor], Iterator[list[torch.Tensor]]]]:
        return _layer_passes(task, layers, rows, batch_size=self.batch_size, of=self.fisher, seed=self.seed)

    def _factorize(self, task: ModelTask, rows: Rows, layers: list[KroneckerLayer]) -> None:
        """A and S per layer, their eigenbases, and the K-FAC eigenvalues λ_S λ_Aᵀ."""
        A = [torch.zeros(layer.width, layer.width, dtype=torch.float64, device=task.device) for layer in layers]
        S = [torch.zeros(layer.out_features, layer.out_features, dtype=torch.float64, device=task.device) for layer in layers]
        for _, abar, columns in self._passes(task, layers, rows):
            for index, a in enumerate(abar):
                A[index] += torch.einsum("btk,btj->kj", a, a)
            for deltas in columns:
                for index, d in enumerate(deltas):
                    S[index] += torch.einsum("bto,btq->oq", d, d) / d.shape[1]
        for layer, a_factor, s_factor in zip(layers, A, S, strict=True):
            a_values, layer.a_eigenvectors = torch.linalg.eigh(a_factor / rows.n)
            s_values, layer.s_eigenvectors = torch.linalg.eigh(s_factor / rows.n)
            layer.eigenvalues = torch.outer(s_values.clamp_min(0), a_values.clamp_min(0))

    def _refit(self, task: ModelTask, rows: Rows, layers: list[KroneckerLayer]) -> None:
        """K-FAC keeps λ_S λ_Aᵀ; EK-FAC refits the eigenvalues here."""

    def _check_definite(self, layer: KroneckerLayer) -> None:
        values = layer.eigenvalues + self.effective_damping_
        if float(values.min()) <= torch.finfo(torch.float64).eps * values.numel() * float(values.max()):
            raise InputError(f"the {self.name} curvature of layer {layer.name!r} is singular (smallest eigenvalue "
                             f"{float(values.min()):.3g}); set damping > 0")

    def _scaled(self, V: torch.Tensor, power: int) -> torch.Tensor:
        """V P^power in the model's dtype, P the Kronecker-factored approximation plus δ'I (power −1: solve, +1: multiply)."""
        dtype = self.task_.dtype  # the factors are fitted in float64; a float32 model is rotated in float32 (twice as fast)
        V = V.to(dtype)
        out = torch.zeros_like(V)
        for layer in self.layers_:
            s_vectors, a_vectors = layer.s_eigenvectors.to(dtype), layer.a_eigenvectors.to(dtype)
            rotated = s_vectors.T @ layer.matrices(V) @ a_vectors
            rotated = rotated * ((layer.eigenvalues + self.effective_damping_) ** power).to(dtype)
            layer.place(s_vectors @ rotated @ a_vectors.T, out)
        return out

    def solve(self, V: torch.Tensor) -> torch.Tensor:
        return self._scaled(self._check_rhs(V), -1).to(self.task_.dtype)

    def multiply(self, V: torch.Tensor) -> torch.Tensor:
        """V P: the approximation itself (curvature plus δ'I), for checks against the dense matrix."""
        return self._scaled(self._check_rhs(V), 1).to(self.task_.dtype)


class EKFACSolver(KFACSolver):
    """EK-FAC (George et al. 2018): K-FAC's eigenbases with the eigenvalues refit from per-sample
    (pseudo-)gradients, Λ = (1/n) Σ_i E_y[(Q_Sᵀ G_i Q_A)²]; one more pass over the training rows."""

    name: ClassVar[str] = "ekfac"

    def _refit(self, task: ModelTask, rows: Rows, layers: list[KroneckerLayer]) -> None:
        totals = [torch.zeros_like(layer.eigenvalues) for layer in layers]
        for _, abar, columns in self._passes(task, layers, rows):
            rotated_a = [a @ layer.a_eigenvectors for layer, a in zip(layers, abar, strict=True)]
            for deltas in columns:
                for index, (layer, d) in enumerate(zip(layers, deltas, strict=True)):
                    rotated_d = d @ layer.s_eigenvectors
                    chunk = max(1, self.max_memory // (16 * layer.out_features * layer.width))
                    for lo in range(0, len(d), chunk):
                        gradients = torch.einsum("bto,btk->bok", rotated_d[lo:lo + chunk], rotated_a[index][lo:lo + chunk])
                        totals[index] += gradients.square().sum(0)
        for layer, total in zip(layers, totals, strict=True):
            layer.eigenvalues = total / rows.n


class ASTRASolver(Solver):
    """ASTRA (Wang et al. 2025): EK-FAC-preconditioned Neumann iterations x ← x + η P⁻¹(v − (H_B + δI)x) from
    x_0 = P⁻¹v (``iterations=0`` is the EK-FAC answer), see the module docstring.

    ``step`` None sets η = 0.9/μ̂ with μ̂ ≤ μ_max(P⁻¹(H + δI)) from ``POWER_ITERATIONS`` power iterations (a
    Rayleigh quotient, so it approaches μ_max from below; the iteration converges while η μ_max < 2).
    ``batch_size`` None uses every training row for H_B (deterministic); a number draws B at random (``seed``).
    H + δI must be positive definite (``curvature="ggn"``, or enough damping for the Hessian).
    """

    name: ClassVar[str] = "astra"

    def __init__(self, damping: float = 0.0, curvature: str = "ggn", iterations: int = 20, step: float | None = None,
                 batch_size: int | None = None, fisher: str = "sampled", seed: int = 0,
                 max_memory: int = DEFAULT_MAX_MEMORY) -> None:
        self.damping = damping
        self.curvature = curvature
        self.iterations = iterations
        self.step = step
        self.batch_size = batch_size
        self.fisher = fisher
        self.seed = seed
        self.max_memory = max_memory

    def fit(self, task: ModelTask, rows: Rows) -> ASTRASolver:
        self.damping_ = check_damping(self.damping)
        check_int(self.iterations, "iterations", minimum=0)
        step = None if self.step is None else check_positive(self.step, "step")
        if self.batch_size is not None:
            check_int(self.batch_size, "batch_size")
        self.operator_ = Curvature(task, rows, kind=self.curvature, max_memory=self.max_memory)
        self.preconditioner_ = EKFACSolver(self.damping_, fisher=self.fisher, seed=self.seed,
                                           max_memory=self.max_memory).fit(task, rows)
        self.task_, self.rows_ = task, rows
        self.step_ = STEP_SAFETY / self._largest_preconditioned_eigenvalue() if step is None else step
        return self

    def _damped(self, x: torch.Tensor, rows: Rows | None = None) -> torch.Tensor:
        return self.operator_.matmat(x, rows).to(torch.float64) + self.damping_ * x

    def _largest_preconditioned_eigenvalue(self) -> float:
        """μ̂ = xᵀ(H + δI)x / xᵀPx after power iterations x ← P⁻¹(H + δI)x / ‖·‖."""
        generator = torch.Generator(device="cpu").manual_seed(self.seed)
        x = torch.randn(1, self.task_.num_params, generator=generator, dtype=torch.float64).to(self.task_.device)
        value = 0.0
        for _ in range(POWER_ITERATIONS):
            x = x / x.norm()
            product = self._damped(x)
            value = float((product * x).sum() / (self.preconditioner_._scaled(x, 1) * x).sum())
            x = self.preconditioner_._scaled(product, -1)
        if not value > 0:
            raise InputError(f"P⁻¹(H + δI) has a non-positive eigenvalue estimate ({value:.3g}): H + δI is not positive "
                             "definite; raise damping or use curvature='ggn'")
        return value

    def solve(self, V: torch.Tensor) -> torch.Tensor:
        V = self._check_rhs(V).to(torch.float64)
        rng = np.random.default_rng(self.seed)
        x = self.preconditioner_._scaled(V, -1)
        for _ in range(self.iterations):
            rows = None
            if self.batch_size is not None and self.batch_size < self.rows_.n:
                rows = self.rows_.subset(np.sort(rng.choice(self.rows_.n, self.batch_size, replace=False)))
            x = x + self.step_ * self.preconditioner_._scaled(V - self._damped(x, rows), -1)
        return x.to(self.task_.dtype)

"""Per-sample gradients and random projections: the foundation of every gradient method.

- :func:`per_sample_gradients`: g_i = ∇_θ ℓ(f(x_i; θ̂), y_i) (or of the measurement) for each row, computed with
  ``torch.func`` as ``vmap(grad(loss ∘ functional_call))`` in chunks whose size follows a memory budget, so
  an n×p array is never formed unless asked for and it fits.
- :class:`RandomProjection`: x ↦ Pᵀx with P ∈ ℝ^{p×k} Gaussian N(0, 1/k) or Rademacher ±1/√k, seeded; P is
  generated block by block of rows (each block from its own seed), so a dense p×k matrix is never held and
  the result does not depend on how the rows are chunked. E[⟨Pᵀx, Pᵀy⟩] = ⟨x, y⟩ (Johnson & Lindenstrauss 1984;
  Achlioptas 2003 for the Rademacher case).

Ghost dot products (never forming g_i for Linear layers) live in :mod:`dataworth.influence.ghost`.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Literal

import numpy as np
import torch
from torch.func import grad, vmap

from dataworth.checks import InputError, check_choice, check_int, check_seed
from dataworth.influence.batches import Rows
from dataworth.influence.task import ModelTask

#: Default memory budget (bytes) for a chunk of per-sample gradients and a block of a projection.
DEFAULT_MAX_MEMORY = 1 << 30
#: Bytes of one block of a random projection matrix (see RandomProjection): fixed, so P depends only on its seed.
PROJECTION_BLOCK_BYTES = 1 << 24
#: vmap(grad) holds a few copies of each per-sample gradient (activations, grads, the flattened copy).
_WORKING_COPIES = 4

Of = Literal["loss", "measurement"]


def chunk_rows(task: ModelTask, max_memory: int, *, copies: int = _WORKING_COPIES) -> int:
    """How many per-sample gradients fit in ``max_memory`` bytes at once (at least 1)."""
    itemsize = torch.finfo(task.dtype).bits // 8
    return max(1, int(max_memory) // (copies * task.num_params * itemsize))


def per_sample_gradients(
    task: ModelTask,
    rows: Rows,
    *,
    of: Of = "loss",
    max_memory: int = DEFAULT_MAX_MEMORY,
) -> Iterator[tuple[int, torch.Tensor]]:
    """Yield (start, G) with G the b×p per-sample gradients of consecutive rows, in row order.

    ``of`` chooses the loss or the task's measurement. Batches follow ``max_memory``; a DataLoader's own batches are split
    further when they would not fit. Gradients are in the model's dtype and on its device.
    """
    check_choice(of, "of", ("loss", "measurement"))
    size = chunk_rows(task, max_memory)
    gradient = _sample_gradient(task, of)
    shape = None
    for start, inputs, labels in rows.batches(size):
        inputs, labels = task.prepare(inputs, labels)
        shape = task.output_shape(inputs) if shape is None else shape
        task.check_targets(shape, labels, rows.name)
        for offset in range(0, len(inputs), size):
            parts = gradient(task.params, inputs[offset:offset + size], labels[offset:offset + size])
            yield start + offset, task.flatten(parts, batch_dims=1)


def gradient_matrix(
    task: ModelTask, rows: Rows, *, of: Of = "loss", max_memory: int = DEFAULT_MAX_MEMORY
) -> torch.Tensor:
    """All n×p per-sample gradients at once; refused when they would not fit in ``max_memory``."""
    itemsize = torch.finfo(task.dtype).bits // 8
    need = rows.n * task.num_params * itemsize
    if need > max_memory:
        raise InputError(f"the {rows.n}×{task.num_params} gradients of {rows.name} need {need / 2**30:.2f} GiB, over "
                         f"max_memory={max_memory / 2**30:.2f} GiB; raise max_memory, project the gradients, or pick fewer modules")
    out = torch.empty(rows.n, task.num_params, dtype=task.dtype, device=task.device)
    for start, block in per_sample_gradients(task, rows, of=of, max_memory=max_memory):
        out[start:start + len(block)] = block
    return out


#: Rows whose per-sample gradients give the scale mean_i ‖g_i‖ in :func:`stationarity` (an estimate; the
#: gradient of the objective itself is always exact).
SCALE_ROWS = 512


def stationarity(task: ModelTask, rows: Rows, *, max_memory: int = DEFAULT_MAX_MEMORY) -> tuple[float, float]:
    """(‖∇R(θ̂)‖, mean_i ‖g_i‖) for R = mean loss + (λ/2)‖θ‖²: how far θ̂ is from a stationary point, and the
    scale to judge it by. Influence functions assume ∇R(θ̂) = 0. ∇R comes from one backward pass per batch of
    the summed losses (exact); the scale from the per-sample gradients of the first ``SCALE_ROWS`` rows."""
    total = torch.zeros(task.num_params, dtype=torch.float64, device=task.device)
    size = max(1, max_memory // max(1, 64 * task.num_params))
    for _, inputs, labels in rows.batches(size):
        inputs, labels = task.prepare(inputs, labels)
        parts = grad(lambda params, x=inputs, t=labels: task.losses(params, x, t).sum())(task.params)
        total += task.flatten(parts).to(torch.float64)
    full = total / rows.n + task.l2 * task.flat_params().to(torch.float64)
    norms, counted = 0.0, 0
    for _, block in per_sample_gradients(task, rows.head(SCALE_ROWS), max_memory=max_memory):
        norms += float(block.to(torch.float64).norm(dim=1).sum())
        counted += len(block)
    return float(full.norm()), norms / counted


def _sample_gradient(task: ModelTask, of: Of):
    values = task.losses if of == "loss" else task.measurements

    def one(params: dict[str, torch.Tensor], inputs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return values(params, inputs.unsqueeze(0), target.unsqueeze(0)).squeeze(0)

    return vmap(grad(one), in_dims=(None, 0, 0))


class RandomProjection:
    """x ↦ Pᵀx for P ∈ ℝ^{p×k}: entries N(0, 1/k) (``"gaussian"``) or ±1/√k (``"rademacher"``), so that
    E[PPᵀ] = I and inner products are kept in expectation (variance ≤ 2‖x‖²‖y‖²/k for Gaussian P).

    P is never held whole: rows of P are generated in blocks of ``block_rows`` (as many as fit in ``block_bytes``
    of float64) from the seed (seed, block index), and :meth:`project` accumulates Σ_blocks X[:, block] P[block]
    in float64. P is a function of (seed, kind, block_bytes) only — never of a method's memory budget — so the
    same seed gives the same P wherever it is used.
    """

    def __init__(self, dim: int, k: int, *, kind: str = "gaussian", seed: int = 0, block_bytes: int = PROJECTION_BLOCK_BYTES) -> None:
        self.dim = check_int(dim, "dim")
        self.k = check_int(k, "k (projection dimension)")
        self.kind = check_choice(kind, "kind", ("gaussian", "rademacher"))
        self.seed = check_seed(seed)
        self.block_rows = max(1, min(self.dim, int(block_bytes) // (8 * self.k)))

    def block(self, index: int, *, dtype: torch.dtype = torch.float64, device: torch.device | str = "cpu") -> torch.Tensor:
        """Rows [index·b, (index+1)·b) of P."""
        start = index * self.block_rows
        rows = min(self.block_rows, self.dim - start)
        generator = torch.Generator(device="cpu").manual_seed(int(np.random.SeedSequence([self.seed, index]).generate_state(1)[0]))
        if self.kind == "gaussian":
            values = torch.randn(rows, self.k, generator=generator, dtype=torch.float64)
        else:
            values = torch.randint(0, 2, (rows, self.k), generator=generator).to(torch.float64).mul_(2).sub_(1)
        return values.div_(self.k ** 0.5).to(dtype=dtype, device=device)

    def project(self, X: torch.Tensor) -> torch.Tensor:
        """XP for X of shape b×p (float64 accumulation, returned in X's dtype)."""
        if X.shape[-1] != self.dim:
            raise InputError(f"the projection maps vectors of length {self.dim}; got length {X.shape[-1]}")
        out = torch.zeros(*X.shape[:-1], self.k, dtype=torch.float64, device=X.device)
        for index in range((self.dim + self.block_rows - 1) // self.block_rows):
            start = index * self.block_rows
            part = X[..., start:start + self.block_rows].to(torch.float64)
            out += part @ self.block(index, device=X.device)
        return out.to(X.dtype)

    def lift(self, Z: torch.Tensor) -> torch.Tensor:
        """PZ for Z of shape ...×k: back to parameter space (GradEx's θ* + Pz)."""
        parts = [self.block(index, device=Z.device) @ Z.to(torch.float64).unsqueeze(-1)
                 for index in range((self.dim + self.block_rows - 1) // self.block_rows)]
        return torch.cat(parts, dim=-2).squeeze(-1)


def projected_gradients(
    task: ModelTask, rows: Rows, projection: RandomProjection, *, of: Of = "loss", max_memory: int = DEFAULT_MAX_MEMORY
) -> torch.Tensor:
    """n×k projected per-sample gradients Pᵀg_i, never holding more than one chunk of full gradients."""
    if projection.dim != task.num_params:
        raise InputError(f"the projection is for {projection.dim} parameters; the task has {task.num_params}")
    out = torch.empty(rows.n, projection.k, dtype=task.dtype, device=task.device)
    for start, block in per_sample_gradients(task, rows, of=of, max_memory=max_memory):
        out[start:start + len(block)] = projection.project(block)
    return out


def per_sample_jacobians(
    task: ModelTask, rows: Rows, *, max_memory: int = DEFAULT_MAX_MEMORY
) -> Iterator[tuple[int, torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Yield (start, J, outputs, e): J the b×C×p Jacobians ∂f(x_i)/∂θ of the flattened outputs, the b×C outputs,
    and e = ∂ℓ_i/∂f the b×C output gradients (so that g_i = J_iᵀe_i); C right-hand sides per row for RIF."""
    from torch.func import jacrev

    def outputs_of(params: dict[str, torch.Tensor], inputs: torch.Tensor) -> torch.Tensor:
        return task.forward(params, inputs.unsqueeze(0)).reshape(-1)

    jacobian = vmap(jacrev(outputs_of), in_dims=(None, 0))
    for start, inputs, labels in rows.batches(max(1, chunk_rows(task, max_memory) // 4)):
        inputs, labels = task.prepare(inputs, labels)
        outputs = task.forward(task.params, inputs)
        task.check_targets(outputs.shape[1:], labels, rows.name)
        per_output = outputs.shape[1:].numel()
        size = max(1, chunk_rows(task, max_memory) // max(1, per_output))
        flat = outputs.reshape(len(outputs), -1).detach()
        shape = outputs.shape[1:]
        e = vmap(grad(lambda f, t, shape=shape: task.loss_fn(f.reshape(1, *shape), t.unsqueeze(0)).squeeze(0)))(flat, labels)
        for offset in range(0, len(inputs), size):
            parts = jacobian(task.params, inputs[offset:offset + size])
            yield start + offset, task.flatten(parts, batch_dims=2), flat[offset:offset + size], e[offset:offset + size]

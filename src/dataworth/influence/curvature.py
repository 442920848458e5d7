"""Matrix-free products with the curvature of the training objective at θ̂.

H = (1/n) Σ_i ∇²_θ ℓ_i(θ̂) + λI (``kind="hessian"``) or the Gauss-Newton matrix
G = (1/n) Σ_i J_iᵀ (∂²ℓ_i/∂f²) J_i + λI (``kind="ggn"``, J_i = ∂f(x_i)/∂θ; positive semi-definite for a convex
loss, Martens 2014). Products are taken for a block of m vectors at once (rows of an m×p matrix) with
``torch.func``: Hessian-vector products as forward-over-reverse jvp(grad(R)), Gauss-Newton products as
vjp(L Lᵀ jvp(f)), batch by batch over the training rows in a fixed order.
"""

from __future__ import annotations

import torch
from torch.func import grad, jvp, vjp, vmap

from dataworth.checks import InputError, check_choice
from dataworth.influence.batches import Rows
from dataworth.influence.gradients import DEFAULT_MAX_MEMORY, per_sample_jacobians
from dataworth.influence.task import ModelTask

KINDS = ("ggn", "hessian")
#: Most rows per batch of a curvature product (larger batches gain nothing once the products are GEMMs).
MAX_BATCH = 2048
#: Copies of a row's activations alive per vector during a product (see Curvature._batch_rows).
_COPIES = 6


class Curvature:
    """The p×p curvature of R(θ) = (1/n) Σ ℓ_i + (λ/2)‖θ‖² at θ̂, as products ``matmat(V)`` = V Hᵀ (= V H)."""

    def __init__(self, task: ModelTask, rows: Rows, *, kind: str = "ggn", max_memory: int = DEFAULT_MAX_MEMORY) -> None:
        self.task, self.rows = task, rows
        self.kind = check_choice(kind, "curvature", KINDS)
        self.max_memory = int(max_memory)
        self._activations: int | None = None
        if kind == "ggn":
            task.output_hessian_factor(torch.zeros(1, 1, dtype=task.dtype))  # a named loss, or one clear error

    @property
    def dim(self) -> int:
        return self.task.num_params

    def matmat(self, V: torch.Tensor, rows: Rows | None = None) -> torch.Tensor:
        """V H for V of shape m×p, H over ``rows`` (all training rows by default)."""
        rows = self.rows if rows is None else rows
        task = self.task
        V = V.to(task.dtype)
        tangents = task.unflatten(V)
        out = torch.zeros(V.shape, dtype=torch.float64, device=V.device)
        for _, inputs, targets in rows.batches(self._batch_rows(V.shape[0])):
            inputs, targets = task.prepare(inputs, targets)
            product = self._ggn(inputs, tangents) if self.kind == "ggn" else self._hessian(inputs, targets, tangents)
            out += task.flatten(product, batch_dims=1).to(torch.float64)
        if not bool(torch.isfinite(out).all()):
            raise InputError("the curvature products are NaN or infinite; check the model's outputs and the data (or raise damping)")
        return (out / rows.n + task.l2 * V.to(torch.float64)).to(task.dtype)

    def _batch_rows(self, vectors: int) -> int:
        """Rows per batch for a product with ``vectors`` vectors: each row holds about ``_COPIES`` activations per
        vector (forward tangents, their cotangents, the pullback's intermediates); at most ``MAX_BATCH``."""
        if self._activations is None:
            _, inputs, targets = next(self.rows.batches(1))
            self._activations = self.task.activation_numel(self.task.prepare(inputs, targets)[0])
        itemsize = torch.finfo(self.task.dtype).bits // 8
        return int(min(MAX_BATCH, max(1, self.max_memory // (_COPIES * itemsize * vectors * self._activations))))

    def dense(self, *, block: int = 256) -> torch.Tensor:
        """H as a dense p×p float64 matrix: the Gauss-Newton matrix from per-sample output Jacobians,
        G = (1/n) Σ_i (L_iᵀJ_i)ᵀ(L_iᵀJ_i) + λI (one GEMM per chunk of rows); the Hessian from products with
        blocks of the identity."""
        p = self.dim
        if self.kind == "ggn":
            out = torch.zeros(p, p, dtype=torch.float64, device=self.task.device)
            for _, J, outputs, _ in per_sample_jacobians(self.task, self.rows, max_memory=self.max_memory):
                factor = self.task.output_hessian_factor(outputs.reshape(len(J), *outputs.shape[1:])).to(torch.float64)
                M = torch.einsum("bcr,bcp->brp", factor, J.to(torch.float64)).reshape(-1, p)
                out.addmm_(M.T, M)
            out /= self.rows.n
            out.diagonal().add_(self.task.l2)
        else:
            out = torch.empty(p, p, dtype=torch.float64, device=self.task.device)
            for start in range(0, p, block):
                eye = torch.zeros(min(block, p - start), p, dtype=self.task.dtype, device=self.task.device)
                eye[:, start:start + block].fill_diagonal_(1.0)
                out[start:start + block] = self.matmat(eye).to(torch.float64)
        if not bool(torch.isfinite(out).all()):
            raise InputError("the curvature matrix has NaN or infinite entries; check the model's outputs and the data")
        return (out + out.T) / 2

    def _ggn(self, inputs: torch.Tensor, tangents: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        task = self.task

        def f(params: dict[str, torch.Tensor]) -> torch.Tensor:
            return task.forward(params, inputs)

        outputs, pullback = vjp(f, task.params)
        jv = vmap(lambda t: jvp(f, (task.params,), (t,))[1])(tangents)  # m×b×(output shape)
        factor = task.output_hessian_factor(outputs)  # b×C×r
        flat = jv.reshape(jv.shape[0], jv.shape[1], -1)
        # contiguous: vmap over the pullback is ~100x slower on the strided einsum output
        hjv = torch.einsum("bcr,bdr,mbd->mbc", factor, factor, flat).reshape(jv.shape).contiguous()
        return vmap(lambda u: pullback(u)[0])(hjv)

    def _hessian(self, inputs: torch.Tensor, targets: torch.Tensor, tangents: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        task = self.task

        def total(params: dict[str, torch.Tensor]) -> torch.Tensor:
            return task.losses(params, inputs, targets).sum()

        gradient = grad(total)
        return vmap(lambda t: jvp(gradient, (task.params,), (t,))[1])(tangents)


def largest_eigenvalue(curvature: Curvature, *, iterations: int = 30, seed: int = 0) -> float:
    """λ_max(H) by power iteration (an estimate from below; LiSSA's scale must exceed it)."""
    generator = torch.Generator(device="cpu").manual_seed(seed)
    v = torch.randn(1, curvature.dim, generator=generator, dtype=torch.float64).to(curvature.task.device)
    v /= v.norm()
    value = 0.0
    for _ in range(iterations):
        w = curvature.matmat(v).to(torch.float64)
        value = float((w * v).sum())
        norm = w.norm()
        if float(norm) == 0.0:
            return 0.0
        v = w / norm
    return value

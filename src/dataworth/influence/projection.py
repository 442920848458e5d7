"""Choosing a projection of per-sample gradients for TracIn and TRAK, and the orthogonal one.

- ``"gaussian"`` / ``"rademacher"``: :class:`~dataworth.influence.gradients.RandomProjection` (streamed, never held
  whole), E[PPᵀ] = I.
- ``"orthogonal"``: :class:`OrthogonalProjection`, P = √(p/k)·Q with Q ∈ ℝ^{p×k} Haar-distributed orthonormal
  columns (QR of a seeded Gaussian matrix, signs fixed by R's diagonal), so again E[PPᵀ] = I; at k = p it is a
  rotation and keeps every inner product exactly. It is held whole (p·k numbers), so it is for moderate p.

A projection to k ≥ p dimensions compresses nothing and (unless orthogonal) only adds noise, so
:func:`make_projection` returns ``None`` for it: the gradients are then used as they are.
"""

from __future__ import annotations

import numpy as np
import torch

from dataworth.checks import InputError, check_choice, check_int, check_seed
from dataworth.influence.gradients import DEFAULT_MAX_MEMORY, RandomProjection

#: The projections ``projection=`` may name.
PROJECTIONS = ("gaussian", "rademacher", "orthogonal")


class OrthogonalProjection:
    """x ↦ Pᵀx with P = √(p/k)·Q, Q ∈ ℝ^{p×k} with orthonormal columns drawn from the Haar measure (seeded).

    E[PPᵀ] = (p/k)·E[QQᵀ] = I, so inner products are kept in expectation; at k = p, P is orthogonal and they
    are kept exactly. Same interface as :class:`~dataworth.influence.gradients.RandomProjection`
    (``dim``, ``k``, :meth:`project`), so :func:`~dataworth.influence.gradients.projected_gradients` takes it.
    """

    def __init__(self, dim: int, k: int, *, seed: int = 0, max_memory: int = DEFAULT_MAX_MEMORY) -> None:
        self.dim = check_int(dim, "dim")
        self.k = check_int(k, "projection_dim", maximum=self.dim)
        self.seed = check_seed(seed)
        if 2 * self.dim * self.k * 8 > max_memory:
            raise InputError(f"an orthogonal projection of {self.dim} parameters to {self.k} dimensions is held whole and needs "
                             f"{byte_size(2 * self.dim * self.k * 8)}, over max_memory; use projection='gaussian' or 'rademacher'")
        generator = torch.Generator(device="cpu").manual_seed(self.seed)
        Q, R = torch.linalg.qr(torch.randn(self.dim, self.k, generator=generator, dtype=torch.float64))
        signs = torch.sign(torch.diagonal(R))
        signs[signs == 0] = 1
        self.matrix = Q * signs * (self.dim / self.k) ** 0.5

    def project(self, X: torch.Tensor) -> torch.Tensor:
        """XP for X of shape b×p (float64 product, returned in X's dtype)."""
        if X.shape[-1] != self.dim:
            raise InputError(f"the projection maps vectors of length {self.dim}; got length {X.shape[-1]}")
        return (X.to(torch.float64) @ self.matrix.to(X.device)).to(X.dtype)


def check_projection_dim(projection_dim: int | None) -> int | None:
    """``projection_dim`` as an int ≥ 1, or ``None`` (no projection)."""
    return None if projection_dim is None else check_int(projection_dim, "projection_dim")


def make_projection(kind: str, dim: int, k: int | None, *, seed: int, index: int,
                    max_memory: int = DEFAULT_MAX_MEMORY) -> RandomProjection | OrthogonalProjection | None:
    """The projection of ``dim`` parameters to ``k`` dimensions for checkpoint/model number ``index`` (its seed is
    drawn from (``seed``, ``index``)); ``None`` when ``k`` is ``None`` or, for a random projection, k ≥ ``dim``."""
    check_choice(kind, "projection", PROJECTIONS)
    k = check_projection_dim(k)
    if kind == "orthogonal" and k is not None and k > dim:
        raise InputError(f"an orthogonal projection needs projection_dim <= the {dim} parameters; got {k} "
                         "(projection_dim=None uses the gradients as they are)")
    if k is None or (kind != "orthogonal" and k >= dim):
        return None
    own_seed = int(np.random.SeedSequence([check_seed(seed), index]).generate_state(1)[0])
    if kind == "orthogonal":
        return OrthogonalProjection(dim, k, seed=own_seed, max_memory=max_memory)
    return RandomProjection(dim, k, kind=kind, seed=own_seed)


def byte_size(count: int) -> str:
    """A byte count for a message: 3.2 GiB, 12.0 MiB, 7.0 KiB."""
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20)):
        if count >= scale / 10:
            return f"{count / scale:.1f} {unit}"
    return f"{count / 2**10:.1f} KiB"

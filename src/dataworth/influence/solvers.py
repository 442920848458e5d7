"""Inverse-curvature products: ``solve(V)`` = V (H + δI)⁻¹ for a block of right-hand sides (rows of V).

H is the Hessian or the Gauss-Newton matrix of the training objective R(θ) = (1/n) Σ ℓ_i + (λ/2)‖θ‖² at θ̂
(:class:`~dataworth.influence.curvature.Curvature`), δ ≥ 0 the damping. Matrix-free and exact solvers live
here; the Kronecker-factored ones (K-FAC, EK-FAC, ASTRA) in :mod:`dataworth.influence.kfac`.

- :class:`ExplicitSolver`: dense H in float64, Cholesky; refuses a matrix that is not positive definite.
- :class:`CGSolver`: conjugate gradient (Hestenes & Stiefel 1952), all right-hand sides advanced together.
- :class:`LiSSASolver`: the stochastic Neumann series of Agarwal, Bullins & Hazan (2017).
- :class:`ArnoldiSolver`: top-k Ritz pairs from an Arnoldi iteration (Schioppa et al. 2022).
"""

from __future__ import annotations

import math
import warnings
from typing import Any, ClassVar

import numpy as np
import torch
from sklearn.base import BaseEstimator

from dataworth.checks import DataworthWarning, InputError, check_int, check_non_negative, check_positive, check_seed
from dataworth.influence.batches import Rows
from dataworth.influence.curvature import Curvature, largest_eigenvalue
from dataworth.influence.gradients import DEFAULT_MAX_MEMORY
from dataworth.influence.task import ModelTask


class Solver(BaseEstimator):
    """Base class: hyper-parameters in ``__init__``; ``fit(task, rows)`` reads the curvature at θ̂;
    ``solve(V)`` returns V (H + δI)⁻¹ (m×p in, m×p out, in the task's dtype)."""

    name: ClassVar[str]
    damping: float
    task_: ModelTask

    def fit(self, task: ModelTask, rows: Rows) -> Solver:
        raise NotImplementedError

    def solve(self, V: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _check_rhs(self, V: torch.Tensor) -> torch.Tensor:
        if "task_" not in self.__dict__:
            raise InputError(f"the {self.name} solver is not fitted yet: call fit(task, rows) first")
        if V.ndim != 2 or V.shape[1] != self.task_.num_params:
            raise InputError(f"solve takes an m×{self.task_.num_params} block of vectors; got shape {tuple(V.shape)}")
        return V


def check_damping(value: Any) -> float:
    """δ as a float: finite and ≥ 0, else one clear error."""
    return check_non_negative(value, "damping", meaning="the δ added to the curvature; 0 for none")


class ExplicitSolver(Solver):
    """(H + δI)⁻¹ from a Cholesky factor of the dense float64 curvature; O(p²) memory, O(p³) time."""

    name = "explicit"

    def __init__(self, damping: float = 0.0, curvature: str = "ggn", max_memory: int = DEFAULT_MAX_MEMORY) -> None:
        self.damping = damping
        self.curvature = curvature
        self.max_memory = max_memory

    def fit(self, task: ModelTask, rows: Rows) -> ExplicitSolver:
        damping = check_damping(self.damping)
        p = task.num_params
        if 8 * p * p > self.max_memory:
            raise InputError(f"the explicit solver needs a {p}×{p} float64 matrix ({8 * p * p / 2**30:.2f} GiB) over "
                             f"max_memory={self.max_memory / 2**30:.2f} GiB; use solver='cg', 'ekfac' or 'arnoldi'")
        matrix = Curvature(task, rows, kind=self.curvature, max_memory=self.max_memory).dense()
        matrix.diagonal().add_(damping)
        factor, info = torch.linalg.cholesky_ex(matrix)
        if int(info) != 0:
            smallest = float(torch.linalg.eigvalsh(matrix)[0])
            raise InputError(f"H + δI is not positive definite (smallest eigenvalue {smallest:.3g}); raise damping above "
                             f"{max(-smallest, 0):.3g} or use curvature='ggn'")
        self.task_, self.curvature_matrix_, self.cholesky_ = task, matrix, factor
        return self

    def solve(self, V: torch.Tensor) -> torch.Tensor:
        V = self._check_rhs(V)
        solution = torch.cholesky_solve(V.to(torch.float64).T, self.cholesky_).T
        return solution.to(V.dtype)


class CGSolver(Solver):
    """Conjugate gradient on (H + δI)x = v for every row v of V at once (each with its own step sizes);
    stops when every residual is below ``tol``·‖v‖ or after ``max_iter`` products."""

    name = "cg"

    def __init__(self, damping: float = 0.0, curvature: str = "ggn", tol: float = 1e-10, max_iter: int = 1000,
                 max_memory: int = DEFAULT_MAX_MEMORY) -> None:
        self.damping = damping
        self.curvature = curvature
        self.tol = tol
        self.max_iter = max_iter
        self.max_memory = max_memory

    def fit(self, task: ModelTask, rows: Rows) -> CGSolver:
        self.damping_ = check_damping(self.damping)
        check_positive(self.tol, "tol")
        check_int(self.max_iter, "max_iter")
        self.task_ = task
        self.operator_ = Curvature(task, rows, kind=self.curvature, max_memory=self.max_memory)
        return self

    def solve(self, V: torch.Tensor) -> torch.Tensor:
        V = self._check_rhs(V).to(torch.float64)
        x = torch.zeros_like(V)
        r = V.clone()
        d = r.clone()
        rr = (r * r).sum(1)
        target = self.tol ** 2 * rr.clamp_min(torch.finfo(torch.float64).tiny)
        self.iterations_ = 0
        for _ in range(self.max_iter):
            active = rr > target
            if not bool(active.any()):
                break
            Ad = self.operator_.matmat(d[active]).to(torch.float64) + self.damping_ * d[active]
            dAd = (d[active] * Ad).sum(1)
            if bool((dAd <= 0).any()):
                raise InputError("conjugate gradient met a direction of non-positive curvature: H + δI is not positive "
                                 "definite; raise damping or use curvature='ggn'")
            alpha = rr[active] / dAd
            x[active] += alpha[:, None] * d[active]
            r_active = r[active] - alpha[:, None] * Ad
            rr_new = (r_active * r_active).sum(1)
            d[active] = r_active + (rr_new / rr[active])[:, None] * d[active]
            r[active] = r_active
            rr[active] = rr_new
            self.iterations_ += 1
        else:
            warnings.warn(f"conjugate gradient stopped after max_iter={self.max_iter} products with relative residual "
                          f"{float((rr / target).max().sqrt()) * self.tol:.2g}; raise max_iter or damping", DataworthWarning, stacklevel=2)
        return x.to(self.task_.dtype)


#: Power iterations for LiSSA's λ_max: to check a given scale, and to set one.
CHECK_ITERATIONS, SCALE_ITERATIONS = 5, 30


class LiSSASolver(Solver):
    """LiSSA (Agarwal, Bullins & Hazan 2017): x_{j+1} = v + x_j − (H_{B_j} + δI) x_j / s, answer x_J / s.

    The recursion is the Neumann series (H + δI)⁻¹ = (1/s) Σ_j (I − (H + δI)/s)^j, which converges only when
    s > λ_max(H + δI): a given scale is checked against a power-iteration lower bound on λ_max (a scale at or below
    it surely diverges); without one, s = 1.1 × a longer estimate.
    Its error after J steps shrinks like (1 − (λ_min + δ)/s)^J. ``batch_size`` None uses the whole training
    set for every H_B (deterministic); a number draws B_j at random (``seed``), as in the paper.
    Here δ is an absolute damping; libraries that write the update as x ← v + (1 − d)x − Hx/s (pyDVL,
    dattri) have an effective damping of d × s in these terms. ``repeats`` averages independent runs.
    """

    name = "lissa"

    def __init__(self, damping: float = 0.0, curvature: str = "ggn", depth: int = 1000, scale: float | None = None,
                 batch_size: int | None = None, repeats: int = 1, seed: int = 0, max_memory: int = DEFAULT_MAX_MEMORY) -> None:
        self.damping = damping
        self.curvature = curvature
        self.depth = depth
        self.scale = scale
        self.batch_size = batch_size
        self.repeats = repeats
        self.seed = seed
        self.max_memory = max_memory

    def fit(self, task: ModelTask, rows: Rows) -> LiSSASolver:
        self.damping_ = check_damping(self.damping)
        check_int(self.depth, "depth")
        check_int(self.repeats, "repeats")
        check_seed(self.seed)
        if self.batch_size is not None:
            check_int(self.batch_size, "batch_size")
        self.task_, self.rows_ = task, rows
        self.operator_ = Curvature(task, rows, kind=self.curvature, max_memory=self.max_memory)
        # a given scale is only checked: a short power iteration gives a lower bound on λ_max, so a scale at or
        # below it surely diverges; without one, the scale is set from a longer estimate
        iterations = CHECK_ITERATIONS if self.scale is not None else SCALE_ITERATIONS
        self.largest_eigenvalue_ = largest_eigenvalue(self.operator_, iterations=iterations, seed=self.seed) + self.damping_
        if self.scale is None:
            self.scale_ = 1.1 * self.largest_eigenvalue_
        else:
            self.scale_ = check_positive(self.scale, "scale")
            if self.scale_ <= self.largest_eigenvalue_:
                raise InputError(f"LiSSA diverges: scale={self.scale_:.4g} is not above λ_max(H + δI) ≈ {self.largest_eigenvalue_:.4g}; "
                                 f"use scale > {self.largest_eigenvalue_:.4g} or leave it unset")
        return self

    def solve(self, V: torch.Tensor) -> torch.Tensor:
        V = self._check_rhs(V).to(torch.float64)
        rng = np.random.default_rng(self.seed)
        total = torch.zeros_like(V)
        for _ in range(self.repeats):
            x = V.clone()
            for _ in range(self.depth):
                rows = None
                if self.batch_size is not None and self.batch_size < self.rows_.n:
                    rows = self.rows_.subset(np.sort(rng.choice(self.rows_.n, self.batch_size, replace=False)))
                Hx = self.operator_.matmat(x, rows).to(torch.float64) + self.damping_ * x
                x = V + x - Hx / self.scale_
            total += x / self.scale_
        return (total / self.repeats).to(self.task_.dtype)


class ArnoldiSolver(Solver):
    """Top-k eigenpairs of H from a block Arnoldi (Krylov) iteration with full re-orthogonalization and
    Rayleigh-Ritz extraction (Schioppa et al. 2022, "Scaling up influence functions"):
    solve(V) = Σ_j (vᵀu_j / (λ_j + δ)) u_j over the kept Ritz pairs, i.e. the inverse restricted to the top-k
    eigenspace. ``iterations`` is the Krylov dimension (a multiple of ``block_size`` products at a time);
    with k = p it spans everything and the solve is exact.

    Written here rather than calling ARPACK (scipy's ``eigsh``) because ARPACK needs k < p, works one numpy
    vector at a time on the CPU, and cannot use the batched torch products on the model's device.
    """

    name = "arnoldi"

    def __init__(self, damping: float = 0.0, curvature: str = "ggn", rank: int = 50, iterations: int | None = None,
                 block_size: int = 16, seed: int = 0, max_memory: int = DEFAULT_MAX_MEMORY) -> None:
        self.damping = damping
        self.curvature = curvature
        self.rank = rank
        self.iterations = iterations
        self.block_size = block_size
        self.seed = seed
        self.max_memory = max_memory

    def fit(self, task: ModelTask, rows: Rows) -> ArnoldiSolver:
        self.damping_ = check_damping(self.damping)
        p = task.num_params
        rank = min(check_int(self.rank, "rank"), p)
        size = min(p, check_int(self.iterations, "iterations") if self.iterations is not None else max(2 * rank, rank + 20))
        block = min(check_int(self.block_size, "block_size"), size)
        operator = Curvature(task, rows, kind=self.curvature, max_memory=self.max_memory)
        generator = torch.Generator(device="cpu").manual_seed(check_seed(self.seed))
        basis = torch.empty(0, p, dtype=torch.float64, device=task.device)
        products = torch.empty(0, p, dtype=torch.float64, device=task.device)
        candidates = self._random(block, p, generator, task.device)
        while len(basis) < size:
            fresh = self._orthonormal(candidates[: size - len(basis)], basis, generator)
            image = operator.matmat(fresh).to(torch.float64)
            basis, products = torch.cat([basis, fresh]), torch.cat([products, image])
            candidates = image
        projected = basis @ products.T  # Qᵀ H Q, the Rayleigh quotient
        eigenvalues, vectors = torch.linalg.eigh((projected + projected.T) / 2)
        keep = torch.argsort(eigenvalues, descending=True)[:rank]
        self.eigenvalues_ = eigenvalues[keep]
        self.eigenvectors_ = vectors[:, keep].T @ basis  # k×p Ritz vectors
        if bool((self.eigenvalues_ + self.damping_ <= 0).any()):
            raise InputError(f"a kept Ritz value of H + δI is not positive ({float(self.eigenvalues_.min()) + self.damping_:.3g}); "
                             "raise damping or use curvature='ggn'")
        self.task_ = task
        return self

    @staticmethod
    def _random(count: int, p: int, generator: torch.Generator, device: torch.device) -> torch.Tensor:
        return torch.randn(count, p, generator=generator, dtype=torch.float64).to(device)

    @classmethod
    def _orthonormal(cls, block: torch.Tensor, basis: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Rows spanning ``block`` orthogonal to ``basis`` (twice, Giraud et al. 2005); a direction the Krylov space
        already holds (a repeated eigenvalue, e.g. the λ of every direction the data do not touch) is replaced by a
        fresh random one, so that the space keeps growing until it is everything."""
        scale = float(block.norm(dim=1).max()) or 1.0
        for _ in range(2):
            block = block - (block @ basis.T) @ basis
        q, r = torch.linalg.qr(block.T)
        lost = r.diagonal().abs() <= 1e-8 * scale
        if bool(lost.any()):
            q[:, lost] = cls._random(int(lost.sum()), block.shape[1], generator, block.device).T
            known = torch.cat([basis, q[:, ~lost].T])
            replaced = q[:, lost].T
            for _ in range(2):
                replaced = replaced - (replaced @ known.T) @ known
            q[:, lost] = torch.linalg.qr(replaced.T)[0]
        return q.T

    def solve(self, V: torch.Tensor) -> torch.Tensor:
        V = self._check_rhs(V).to(torch.float64)
        coefficients = V @ self.eigenvectors_.T / (self.eigenvalues_ + self.damping_)
        return (coefficients @ self.eigenvectors_).to(self.task_.dtype)


def relative_error(approx: torch.Tensor, exact: torch.Tensor) -> float:
    """‖approx − exact‖_F / ‖exact‖_F, in float64."""
    exact = exact.to(torch.float64)
    return float((approx.to(torch.float64) - exact).norm() / exact.norm().clamp_min(math.ulp(0.0)))

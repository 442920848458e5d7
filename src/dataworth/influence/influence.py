"""Influence functions (Koh & Liang 2017) and rescaled influence functions (Rubinstein & Hopkins 2025).

θ̂ minimizes R(θ) = (1/n) Σ_i ℓ_i(θ) + (λ/2)‖θ‖²; g_i = ∇ℓ_i(θ̂); H the Hessian or Gauss-Newton matrix of R.
Removing row i and refitting moves θ̂ by about Δθ_{−i} = (1/n) (H + δI)⁻¹ g_i (one Newton step), so a target's
measurement f changes by

    IF:   Δf_{−i} ≈ (1/n) ∇f(θ̂)ᵀ (H + δI)⁻¹ g_i,
    RIF:  Δf_{−i} ≈ (1/n) ∇f(θ̂)ᵀ H_{−i}⁻¹ g_i,   H_{−i} = H − (1/n) J_iᵀ Λ_i J_i,

the second being the exact one-step Newton removal: the curvature without row i (J_i = ∂f(x_i)/∂θ, Λ_i = ∂²ℓ_i/∂f²,
so J_iᵀΛ_iJ_i is row i's Gauss-Newton term; for a GLM it is its whole Hessian). By the push-through identity,
with K_i = J_i H⁻¹ J_iᵀ and g_i = J_iᵀe_i,

    H_{−i}⁻¹ g_i = H⁻¹ J_iᵀ (I − Λ_i K_i / n)⁻¹ e_i,

C right-hand sides per row through any solver; for a binary GLM it is IF_i / (1 − h_i), h_i = ℓ''_i x_iᵀH⁻¹x_i / n.
Influence functions under-estimate removal effects when d is not ≪ n (the leverage h_i is not small); RIF
corrects exactly that (Rubinstein & Hopkins, "Rescaled Influence Functions", 2025).

Scores are signed so that positive = the row helps the target: for a loss-like measurement (the default) the
score is the predicted rise of the target's loss when the row is removed; for ``"margin"`` (higher = better)
its predicted fall.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch import nn

from dataworth.checks import DataworthWarning, InputError
from dataworth.influence.batches import Rows, as_rows
from dataworth.influence.builtin import fit_built_in, labelled_table, target_rows, training_rows
from dataworth.influence.gradients import DEFAULT_MAX_MEMORY, chunk_rows, per_sample_gradients, per_sample_jacobians, stationarity
from dataworth.influence.solvers import ArnoldiSolver, CGSolver, ExplicitSolver, LiSSASolver, Solver, check_damping
from dataworth.influence.task import ModelTask
from dataworth.result import AttributionResult, ValuationResult
from dataworth.valuation.base import Valuator

#: ‖∇R(θ̂)‖ / mean‖g_i‖ above which θ̂ is not treated as a minimizer (a warning says so).
STATIONARY_RATIO = 1e-2
#: Leverages are clipped to at most this (so 1 − h stays positive) with a warning.
MAX_LEVERAGE = 1 - 1e-6


def solver_classes() -> dict[str, type[Solver]]:
    """The solvers ``solver=`` may name."""
    from dataworth.influence.kfac import ASTRASolver, EKFACSolver, KFACSolver

    return {cls.name: cls for cls in (ExplicitSolver, CGSolver, LiSSASolver, ArnoldiSolver, KFACSolver, EKFACSolver, ASTRASolver)}


class InfluenceFunction(Valuator):
    """Influence of every training row on target rows through ``solver``'s (H + δI)⁻¹ (see the module doc).

    Parameters
    ----------
    model : nn.Module, ModelTask, "mlp" or "logistic"
        A trained model (with ``loss``, ``measurement``, ``modules``, ``l2`` describing it), a ready
        :class:`ModelTask`, or a built-in model trained on the rows given to ``fit`` (2-D features).
    solver : str or Solver
        ``explicit``, ``cg``, ``lissa``, ``arnoldi``, ``kfac``, ``ekfac`` or ``astra`` (built with ``damping``,
        ``curvature`` and ``solver_options``), or a configured :class:`Solver`.
    damping : float
        δ ≥ 0 added to the curvature.
    curvature : "ggn" or "hessian"
        H for the matrix-free solvers (K-FAC-type solvers always approximate the Gauss-Newton/Fisher matrix).
    l2 : float
        λ of the training objective (mean form); for ``model="logistic"`` the sum-form λ of
        Σℓ_i + (λ/2)‖θ‖², which is how that model is fitted. The built-in MLP uses it as weight decay.
    """

    method = "influence"
    terms = ("self",)

    def __init__(
        self,
        model: nn.Module | ModelTask | str = "mlp",
        *,
        loss: Any = "cross_entropy",
        measurement: Any = None,
        modules: Any = None,
        l2: float = 1e-3,
        solver: str | Solver = "ekfac",
        damping: float = 1e-3,
        curvature: str = "ggn",
        solver_options: dict[str, Any] | None = None,
        max_memory: int = DEFAULT_MAX_MEMORY,
        seed: int = 0,
    ) -> None:
        self.model = model
        self.loss = loss
        self.measurement = measurement
        self.modules = modules
        self.l2 = l2
        self.solver = solver
        self.damping = damping
        self.curvature = curvature
        self.solver_options = solver_options
        self.max_memory = max_memory
        self.seed = seed

    # -- fitting ---------------------------------------------------------------------------------------

    def fit(self, X: Any, y: Any = None, *, reference: Any = None) -> InfluenceFunction:
        """Read the train side (the curvature, and the training gradients when they fit in ``max_memory``).

        With ``reference`` (targets as (X, y), a Dataset or a DataLoader), ``values_`` is each row's mean score
        over the reference rows (the predicted rise of the mean reference loss when it is removed), so the
        method also works as a data valuator.
        """
        started = time.perf_counter()
        self.names_ = None
        if isinstance(self.model, str):
            rows, self.task_ = self._train_built_in(X, y)
        else:
            rows = as_rows(X, y, name="the training data")
            self.task_ = self.model if isinstance(self.model, ModelTask) else ModelTask(
                self.model, self.loss, measurement=self.measurement, modules=self.modules, l2=self.l2)
        self.n_train_ = rows.n
        self.rows_ = rows
        self.gradient_norm_, self.mean_sample_gradient_norm_ = stationarity(self.task_, rows, max_memory=self.max_memory)
        ratio = self.gradient_norm_ / max(self.mean_sample_gradient_norm_, np.finfo(float).tiny)
        self.stationarity_ = ratio
        if ratio > STATIONARY_RATIO:
            warnings.warn(f"the model is not at a stationary point of its training objective: ‖∇R(θ̂)‖ = {ratio:.2g} × the mean "
                          "per-sample gradient norm; train longer (or pass the l2 it was trained with) — influence assumes a minimizer",
                          DataworthWarning, stacklevel=2)
        self.solver_ = self._solver().fit(self.task_, rows)
        self.__dict__.pop("self_influence_", None)
        self._prepare_train_side()
        self.timings_ = {"fit": time.perf_counter() - started}
        if reference is not None:
            result = self.attribute(reference)
            self.result_ = ValuationResult(result.scores.mean(axis=1), method=self.method, params=self._params(),
                                           timings=dict(result.timings), components=self._components(), names=self.names_)
        return self

    def _prepare_train_side(self) -> None:
        """Keep the training gradients when they take at most a quarter of ``max_memory`` (else they are recomputed per use)."""
        self.train_gradients_ = self._cached_gradients(self.rows_)

    def _components(self) -> dict[str, np.ndarray]:
        return {}

    def _train_built_in(self, X: Any, y: Any) -> tuple[Rows, ModelTask]:
        """Train the built-in model named by ``model`` on a labelled 2-D feature table; rows hold label codes."""
        features, labels, self.names_ = labelled_table(X, y, model=self.model, method=self.method)
        fitted = fit_built_in(self.model, features, labels, l2=self.l2, seed=self.seed)
        self.model_, self.classes_ = fitted.model, fitted.classes
        task = fitted.task
        if self.measurement is not None:
            task = ModelTask(fitted.model, task.loss_name, measurement=self.measurement, l2=task.l2)
        return training_rows(features, labels, fitted.classes), task

    def _solver(self) -> Solver:
        if isinstance(self.solver, Solver):
            return self.solver
        classes = solver_classes()
        if self.solver not in classes:
            raise InputError(f"unknown solver {self.solver!r}; use one of {', '.join(classes)}")
        check_damping(self.damping)
        options = dict(self.solver_options or {})
        cls = classes[self.solver]
        accepted = cls().get_params()
        for key, value in (("damping", self.damping), ("curvature", self.curvature), ("max_memory", self.max_memory), ("seed", self.seed)):
            if key in accepted:
                options.setdefault(key, value)
        unknown = sorted(set(options) - set(accepted))
        if unknown:
            raise InputError(f"the {self.solver} solver has no option {', '.join(map(repr, unknown))}; it has {', '.join(sorted(accepted))}")
        return cls(**options)

    def _cached_gradients(self, rows: Rows) -> torch.Tensor | None:
        itemsize = torch.finfo(self.task_.dtype).bits // 8
        if 4 * rows.n * self.task_.num_params * itemsize > self.max_memory:
            return None  # over a quarter of the budget (see attribute): recomputed chunk by chunk when needed
        out = torch.empty(rows.n, self.task_.num_params, dtype=self.task_.dtype, device=self.task_.device)
        for start, block in per_sample_gradients(self.task_, rows, max_memory=self.max_memory):
            out[start:start + len(block)] = block
        return out

    def _train_gradient_chunks(self, max_memory: int) -> Iterator[tuple[int, torch.Tensor]]:
        """(start, G) for consecutive chunks of training gradients: slices of the cache, or computed within ``max_memory``."""
        if self.train_gradients_ is not None:
            step = chunk_rows(self.task_, max_memory, copies=1)
            for start in range(0, self.n_train_, step):
                yield start, self.train_gradients_[start:start + step]
        else:
            yield from per_sample_gradients(self.task_, self.rows_, max_memory=max_memory)

    # -- scores ----------------------------------------------------------------------------------------

    def attribute(self, X_test: Any, y_test: Any = None) -> AttributionResult:
        """scores[i, q] = ±(1/n) ∇f_qᵀ (H + δI)⁻¹ g_i (see the module doc for the sign): the predicted effect of
        removing training row i on target q; positive = row i helps q.

        Memory stays within ``max_memory`` besides the n × m scores: the preconditioned targets take at most half
        of it (more targets are taken in groups, the training gradients then read once per group), the gradient
        chunks a quarter each.
        """
        self._check_fitted()
        started = time.perf_counter()
        targets = self._target_rows(X_test, y_test)
        scores = np.empty((self.n_train_, targets.n))
        itemsize = torch.finfo(self.task_.dtype).bits // 8
        group = max(1, self.max_memory // (2 * self.task_.num_params * itemsize))
        for first in range(0, targets.n, group):
            preconditioned = self._preconditioned_targets(targets.subset(np.arange(first, min(first + group, targets.n)))
                                                          if group < targets.n else targets)
            for start, block in self._train_gradient_chunks(self.max_memory // 4):
                scores[start:start + len(block), first:first + len(preconditioned)] = self._score_block(start, block, preconditioned)
        attributed = time.perf_counter() - started
        timings = {**self.timings_, "attribute": attributed, "total": self.timings_["fit"] + attributed}
        return AttributionResult(scores, method=self.method, params=self._params(), timings=timings, train_names=self.names_)

    def _target_rows(self, X_test: Any, y_test: Any) -> Rows:
        if not isinstance(self.model, str):
            return as_rows(X_test, y_test, name="the target data")
        return target_rows(X_test, y_test, width=self.rows_.inputs.shape[1], classes=self.classes_)

    def _preconditioned_targets(self, targets: Rows) -> torch.Tensor:
        """(H + δI)⁻¹∇f_q/n for every target q, as rows (m×p), signed so that scores are positive = helps."""
        out = torch.empty(targets.n, self.task_.num_params, dtype=self.task_.dtype, device=self.task_.device)
        scale = self.task_.measurement_sign / self.n_train_
        for start, block in per_sample_gradients(self.task_, targets, of="measurement", max_memory=self.max_memory // 4):
            out[start:start + len(block)] = self.solver_.solve(block).mul_(scale)
        return out

    def _score_block(self, start: int, gradients: torch.Tensor, preconditioned: torch.Tensor) -> np.ndarray:
        # in the model's dtype: a float32 model gets float32 products (twice as fast, its gradients' own precision)
        return (gradients.to(preconditioned.dtype) @ preconditioned.T).to(torch.float64).cpu().numpy()

    def self_influence(self) -> ValuationResult:
        """Per training row, −g_iᵀ(H + δI)⁻¹g_i (higher = more valuable; a large self-influence = a row the model
        could only fit by bending for it: mislabeled or atypical)."""
        self._check_fitted()
        if "self_influence_" not in self.__dict__:
            values = np.empty(self.n_train_)
            for start, block in self._train_gradient_chunks(self.max_memory // 4):
                values[start:start + len(block)] = self._self_block(start, block)
            self.self_influence_ = values
        return ValuationResult(-self.self_influence_, method=f"{self.method}:self", params=self._params(), names=self.names_)

    def _self_block(self, start: int, gradients: torch.Tensor) -> np.ndarray:
        solved = self.solver_.solve(gradients)
        return (gradients.to(torch.float64) * solved.to(torch.float64)).sum(1).cpu().numpy()

    def term_values(self, term: str) -> np.ndarray:
        if term == "self":
            return self.self_influence().values
        return super().term_values(term)

    def _params(self) -> dict[str, Any]:
        solver = self.solver if isinstance(self.solver, str) else self.solver.name
        model = self.model if isinstance(self.model, str) else type(self.model).__name__
        return {"model": model, "solver": solver, "damping": self.damping, "curvature": self.curvature, "l2": self.l2}

    def _check_fitted(self) -> None:
        if "solver_" not in self.__dict__:
            from dataworth.valuation.base import NotFittedError

            raise NotFittedError(f"{type(self).__name__} is not fitted yet: call fit(...) first")


class RescaledInfluence(InfluenceFunction):
    """Rescaled influence (RIF): the one-step Newton removal H_{−i}⁻¹g_i instead of H⁻¹g_i (module doc).

    Per training row it solves C right-hand sides (the rows of J_i), forms K_i = J_iH⁻¹J_iᵀ and the leverage
    matrix M_i = L_iᵀK_iL_i/n (Λ_i = L_iL_iᵀ, float64); (I − Λ_iK_i/n)⁻¹e_i = e_i + L_i(I − M_i)⁻¹L_iᵀK_ie_i/n.
    Eigenvalues of M_i (leverages) at or above 1 are clipped to 1 − 10⁻⁶ with a warning. ``leverages_`` holds
    the largest leverage per row.
    """

    method = "rif"

    def _components(self) -> dict[str, np.ndarray]:
        return {"leverage": self.leverages_}

    def _prepare_train_side(self) -> None:
        """Per row: the coefficients c_i = (I − Λ_iK_i/n)⁻¹e_i, the Jacobian J_i is recomputed when scoring."""
        task, n = self.task_, self.n_train_
        coefficients, leverages, self_values = [], [], []
        clipped = 0
        for _, J, outputs, e in per_sample_jacobians(task, self.rows_, max_memory=self.max_memory):
            b, C, p = J.shape
            solved = self.solver_.solve(J.reshape(b * C, p)).reshape(b, C, p).to(torch.float64)
            K = torch.einsum("bcp,bdp->bcd", J.to(torch.float64), solved)
            K = (K + K.transpose(1, 2)) / 2
            L = task.output_hessian_factor(outputs.reshape(b, *outputs.shape[1:]).to(task.dtype)).to(torch.float64)
            M = L.transpose(1, 2) @ K @ L / n
            eigenvalues, vectors = torch.linalg.eigh((M + M.transpose(1, 2)) / 2)
            clipped += int((eigenvalues > MAX_LEVERAGE).sum())
            eigenvalues = eigenvalues.clamp(max=MAX_LEVERAGE)
            inverse = vectors @ torch.diag_embed(1 / (1 - eigenvalues)) @ vectors.transpose(1, 2)
            e64 = e.to(torch.float64)
            Ke = (K @ e64.unsqueeze(2))
            c = e64 + (L @ inverse @ L.transpose(1, 2) @ Ke).squeeze(2) / n
            coefficients.append(c)
            leverages.append(eigenvalues[:, -1])
            self_values.append((Ke.squeeze(2) * c).sum(1))
        if clipped:
            warnings.warn(f"{clipped} leverage(s) reached 1 and were clipped to {MAX_LEVERAGE}: removing such a row changes the "
                          "curvature completely; raise l2 or damping", DataworthWarning, stacklevel=3)
        self.coefficients_ = torch.cat(coefficients)
        self.leverages_ = torch.cat(leverages).cpu().numpy()
        self.self_influence_ = torch.cat(self_values).cpu().numpy()

    def _train_gradient_chunks(self, max_memory: int) -> Iterator[tuple[int, torch.Tensor]]:
        for start, J, _, _ in per_sample_jacobians(self.task_, self.rows_, max_memory=max_memory):
            # the rescaled "gradient" J_iᵀc_i: H⁻¹ of it is H_{−i}⁻¹g_i
            yield start, torch.einsum("bcp,bc->bp", J.to(torch.float64), self.coefficients_[start:start + len(J)])

    def self_influence(self) -> ValuationResult:
        """Per training row, −g_iᵀH_{−i}⁻¹g_i = −e_iᵀK_i(I − Λ_iK_i/n)⁻¹e_i (higher = more valuable)."""
        self._check_fitted()
        return ValuationResult(-self.self_influence_, method=f"{self.method}:self", params=self._params(),
                               components=self._components(), names=self.names_)

"""TRAK: attributing model behavior at scale (Park, Georgiev, Ilyas, Leclerc & Madry, ICML 2023, "TRAK: Attributing
Model Behavior at Scale").

Per model m (an independently trained model or a checkpoint) the model is linearized around its parameters θ_m and
the training problem becomes a logistic regression on the features g = ∇_θ f(z; θ_m), with the output function
f(z) = log(p(z)/(1 − p(z))), the margin of the correct class (p its softmax probability; for one logit ±the logit).
Projected to k dimensions, Φ_m = [Pᵀ_m ∇f(z_i; θ_m)]_i (n × k, P_m seeded per model), φ_m(z) the same for a target,
and Q_m = diag(1 − p_i(θ_m)) over the training rows. One Newton step of that logistic regression from the full fit
says how much leaving row i in raises the target's margin:

    τ_m(z)_i = [Φ_m (Φ_mᵀΦ_m + λ_m I)⁻¹ φ_m(z)]_i · (1 − p_i(θ_m)).

Ensemble over M models, exactly as traker 0.3.2 (``TRAKer.finalize_scores``) and the paper's Algorithm 1 do it: the
kernels are averaged over the models first, then multiplied row-wise by the average Q,

    τ(z)_i = [(1/M) Σ_m Φ_m (Φ_mᵀΦ_m + λ_m I)⁻¹ φ_m(z)]_i · [(1/M) Σ_m (1 − p_i(θ_m))],

positive = row i raises the target's margin = helps. Regularization: λ_m = ``regularization`` · (1/n) Σ_i ‖Φ_{m,i}‖²
(relative: the mean squared norm of the model's training features), so scores do not change when the features are
rescaled (traker's 1/√p normalization, the projection's scale) or rotated; ``regularization=0`` is traker's default
(ΦᵀΦ must then be invertible, or ΦΦᵀ when k > n). Deviation from traker: its ``BasicScoreComputer`` divides
(ΦᵀΦ + λI)⁻¹ by the mean absolute value of its entries (a per-model scalar that keeps float16 in range); that is left
out here, so an ensemble weights its models equally (for M = 1 the scores differ from traker's by that one factor).
Like traker, no soft-thresholding (sparsification) of the scores is applied.

Computation: with k ≤ n the k×k system (Φ_mᵀΦ_m + λ_m I) is factored; with k > n the n×n one,
Φ(ΦᵀΦ + λI)⁻¹ = (ΦΦᵀ + λI)⁻¹Φ (the same numbers). ``projection_dim=None`` (or a random projection to k ≥ p, which
compresses nothing) uses the gradients themselves: the closed form without projection noise. The training features
F_m = Φ_m(Φ_mᵀΦ_m + λ_m I)⁻¹ are kept when all models' fit in half of ``max_memory``; otherwise (k ≤ n only) only the
Cholesky factor is kept and Φ_m is recomputed chunk by chunk for every ``attribute``.

Built-in models: ``model="mlp"`` trains ``n_models`` MLPs with :func:`~dataworth.influence.models.fit_mlp`, seeds
``seed``, …, ``seed + n_models − 1``. ``model="logistic"`` is a convex fit, so every seed gives the same model: an
ensemble then only averages the projections' noise (with no projection it adds nothing; a warning says so).
"""

from __future__ import annotations

import copy
import time
import warnings
from typing import Any

import numpy as np
import torch
from torch import nn

from dataworth.checks import DataworthWarning, InputError, check_choice, check_int, check_non_negative, check_seed
from dataworth.influence.batches import Rows, as_rows
from dataworth.influence.builtin import fit_built_in, labelled_table, target_rows, training_rows
from dataworth.influence.gradients import DEFAULT_MAX_MEMORY, chunk_rows, per_sample_gradients
from dataworth.influence.projection import PROJECTIONS, byte_size, check_projection_dim, make_projection
from dataworth.influence.task import ModelTask, correct_class_margin
from dataworth.influence.tracin import check_same_architecture, checkpoint_list
from dataworth.result import AttributionResult, ValuationResult
from dataworth.valuation.base import NotFittedError, Valuator

#: Losses whose models have a correct-class margin (class labels).
MARGIN_LOSSES = ("cross_entropy", "binary_cross_entropy")


class TRAK(Valuator):
    """TRAK scores of every training row on target rows: the ensemble of projected one-step Newton estimates of the
    margin's change (see the module doc for the formula, the ensemble and λ).

    Parameters
    ----------
    model : nn.Module, ModelTask, "mlp" or "logistic"
        Without ``models``: one trained classifier, or built-in models trained on the rows given to ``fit`` (a
        labelled 2-D feature table). Ignored when ``models`` is set.
    models : sequence of nn.Module or ModelTask, optional
        The models (independently trained, or checkpoints) of one architecture; ``n_models`` is then ignored.
    loss, modules, l2
        The task of a module (``loss`` "cross_entropy" or "binary_cross_entropy": it says how targets are read;
        TRAK always differentiates the margin); ``l2`` is also the weight decay of the built-in models (as in
        :class:`~dataworth.influence.influence.InfluenceFunction`).
    projection_dim : int or None
        k; ``None`` uses the full gradients.
    projection : "rademacher", "gaussian" or "orthogonal"
        The projection's kind (traker's default is Rademacher).
    regularization : float
        Relative ridge: λ_m = regularization × the mean squared norm of model m's training features.
    n_models : int
        Built-in models to train (seeds ``seed`` … ``seed + n_models − 1``).
    hidden : int
        Hidden tanh units of the built-in MLP.
    max_memory : int
        Bytes for gradient chunks and the kept training features.
    seed : int
        The built-in models' seeds and the projections' seeds (model m's from (seed, m)).

    Fitted attributes: ``models_``, ``tasks_`` (with the margin as measurement), ``projection_dim_`` (k, or None),
    ``regularization_`` (the absolute λ_m per model), ``out_to_loss_`` (the mean Q, 1 − p_i averaged over models),
    ``n_train_``, and for built-in models ``classes_``.
    """

    method = "trak"

    def __init__(
        self,
        model: nn.Module | ModelTask | str = "mlp",
        *,
        models: Any = None,
        loss: Any = "cross_entropy",
        modules: Any = None,
        projection_dim: int | None = 2048,
        projection: str = "rademacher",
        regularization: float = 1e-3,
        n_models: int = 1,
        l2: float = 1e-3,
        hidden: int = 64,
        max_memory: int = DEFAULT_MAX_MEMORY,
        seed: int = 0,
    ) -> None:
        self.model = model
        self.models = models
        self.loss = loss
        self.modules = modules
        self.projection_dim = projection_dim
        self.projection = projection
        self.regularization = regularization
        self.n_models = n_models
        self.l2 = l2
        self.hidden = hidden
        self.max_memory = max_memory
        self.seed = seed

    # -- fitting ---------------------------------------------------------------------------------------

    def fit(self, X: Any, y: Any = None, *, reference: Any = None) -> TRAK:
        """Featurize the training rows under every model: Q_m, and Φ_m(Φ_mᵀΦ_m + λ_m I)⁻¹ (or its factor).

        With ``reference`` (targets as (X, y), a Dataset or a DataLoader), ``values_`` is each row's mean score
        over the reference rows, so the method also works as a data valuator.
        """
        started = time.perf_counter()
        check_choice(self.projection, "projection", PROJECTIONS)
        k = check_projection_dim(self.projection_dim)
        check_non_negative(self.regularization, "regularization", meaning="0 = no ridge, as traker's default")
        check_int(self.max_memory, "max_memory")
        check_seed(self.seed)
        self.names_ = None
        if self.models is None and isinstance(self.model, str):
            rows, models = self._train_built_in(X, y)
        else:
            rows = as_rows(X, y, name="the training data")
            models = checkpoint_list(self.models, self.model, name="models")
        self.tasks_ = [self._margin_task(m) for m in models]
        check_same_architecture(self.tasks_, "models" if len(models) > 1 else "model")
        self.models_ = [task.model for task in self.tasks_]
        self.rows_, self.n_train_ = rows, rows.n
        num_params = self.tasks_[0].num_params
        self.projections_ = [make_projection(self.projection, num_params, k, seed=self.seed, index=i, max_memory=self.max_memory)
                             for i in range(len(self.tasks_))]
        self.projection_dim_ = None if self.projections_[0] is None else k
        if (self.models is None and self.model == "logistic" and len(models) > 1 and self.projection_dim_ is None):
            warnings.warn(f"the {len(models)} built-in logistic models are the same model (a convex fit) and nothing is projected, "
                          "so the ensemble adds nothing but time; use n_models=1 (or model='mlp')", DataworthWarning, stacklevel=2)
        self._featurize()
        self.timings_ = {"fit": time.perf_counter() - started}
        if reference is not None:
            result = self.attribute(reference)
            self.result_ = ValuationResult(result.scores.mean(axis=1), method=self.method, params=self._params(),
                                           timings=dict(result.timings), names=self.names_)
        return self

    def _train_built_in(self, X: Any, y: Any) -> tuple[Rows, list[ModelTask]]:
        count = check_int(self.n_models, "n_models")
        features, labels, self.names_ = labelled_table(X, y, model=self.model, method=self.method)
        fitted = [fit_built_in(self.model, features, labels, l2=self.l2, seed=check_seed(self.seed + m), hidden=self.hidden)
                  for m in range(count)]
        self.classes_ = fitted[0].classes
        tasks = [ModelTask(f.model, f.task.loss_name, measurement="margin", modules=self.modules, l2=f.task.l2) for f in fitted]
        return training_rows(features, labels, self.classes_), tasks

    def _margin_task(self, model: nn.Module | ModelTask) -> ModelTask:
        """The model's task with the correct-class margin as its measurement."""
        if isinstance(model, ModelTask):
            task = model
            if task.measurement_name != "margin":
                task = copy.copy(task)
                task.measurement_name, task.measurement_fn, task.measurement_sign = "margin", correct_class_margin, -1.0
        else:
            task = ModelTask(model, self.loss, measurement="margin", modules=self.modules, l2=self.l2)
        if task.loss_name not in MARGIN_LOSSES:
            raise InputError(f"TRAK differentiates the correct-class margin, so it needs a classifier: loss must be one of "
                             f"{', '.join(MARGIN_LOSSES)}; got {task.loss_name!r}")
        return task

    def _width(self) -> int:
        return self.projection_dim_ or self.tasks_[0].num_params

    def _featurize(self) -> None:
        n, width, count = self.n_train_, self._width(), len(self.tasks_)
        itemsize = torch.finfo(self.tasks_[0].dtype).bits // 8
        side = min(n, width)
        if side * side * 8 > self.max_memory // 4:
            raise InputError(f"TRAK's {side}×{side} system takes {byte_size(side * side * 8)}, over a quarter of max_memory; "
                             "lower projection_dim (or raise max_memory)")
        keep = 2 * count * n * width * itemsize <= self.max_memory
        if not keep and width > n:
            raise InputError(f"TRAK with {width} feature dimensions over {n} rows needs the {n}×{width} features in memory "
                             f"({byte_size(n * width * itemsize)} per model), over half of max_memory; set projection_dim "
                             f"<= {n} (then gradients are streamed) or raise max_memory")
        out_to_loss = torch.zeros(n, dtype=torch.float64)
        self.features_: list[torch.Tensor | None] = []
        self.factors_: list[torch.Tensor | None] = []
        self.regularization_ = []
        for index, task in enumerate(self.tasks_):
            out_to_loss += self._one_minus_p(task).cpu()
            if keep:
                phi = torch.empty(n, width, dtype=task.dtype, device=task.device)
                for start, block in self._computed_chunks(index, self.rows_, self.max_memory // 4):
                    phi[start:start + len(block)] = block
                phi64 = phi.to(torch.float64)
                lam = float(self.regularization) * float(phi64.pow(2).sum()) / n
                if width > n:  # (ΦΦᵀ + λI)⁻¹Φ, the same as Φ(ΦᵀΦ + λI)⁻¹
                    factor = self._cholesky(phi64 @ phi64.T, lam, "ΦΦᵀ")
                    features = torch.cholesky_solve(phi64, factor)
                else:
                    factor = self._cholesky(phi64.T @ phi64, lam, "ΦᵀΦ")
                    features = torch.cholesky_solve(phi64.T, factor).T
                self.features_.append(features.to(task.dtype))
                self.factors_.append(None)
            else:
                gram = torch.zeros(width, width, dtype=torch.float64, device=task.device)
                for _, block in self._computed_chunks(index, self.rows_, self.max_memory // 4):
                    block64 = block.to(torch.float64)
                    gram += block64.T @ block64
                lam = float(self.regularization) * float(torch.diagonal(gram).sum()) / n
                self.features_.append(None)
                self.factors_.append(self._cholesky(gram, lam, "ΦᵀΦ"))
            self.regularization_.append(lam)
        self.out_to_loss_ = (out_to_loss / count).numpy()

    @staticmethod
    def _cholesky(gram: torch.Tensor, lam: float, what: str) -> torch.Tensor:
        factor, info = torch.linalg.cholesky_ex(gram + lam * torch.eye(len(gram), dtype=gram.dtype, device=gram.device))
        pivots = torch.diagonal(factor).pow(2)
        # a failed factorization, or a pivot at rounding level: singular up to rounding (e.g. two equal rows and λ = 0)
        if int(info) != 0 or not bool(pivots.min() > len(gram) * torch.finfo(gram.dtype).eps * pivots.max()):
            raise InputError(f"TRAK's {what} + λI is singular (λ = {lam:.3g}): the features are linearly dependent; set "
                             "regularization > 0 (e.g. 1e-3) or lower projection_dim")
        return factor

    def _one_minus_p(self, task: ModelTask) -> torch.Tensor:
        """Q: 1 − p_i, p_i the model's probability of row i's label; from the margin m = log(p/(1 − p)), 1 − p = σ(−m)."""
        out = torch.empty(self.n_train_, dtype=torch.float64, device=task.device)
        shape = None
        with torch.no_grad():
            for start, inputs, labels in self.rows_.batches(chunk_rows(task, self.max_memory)):
                inputs, labels = task.prepare(inputs, labels)
                outputs = task.forward(task.params, inputs)
                shape = outputs.shape[1:] if shape is None else shape
                task.check_targets(shape, labels, self.rows_.name)
                out[start:start + len(inputs)] = torch.sigmoid(-correct_class_margin(outputs, labels)).to(torch.float64)
        return out

    def _computed_chunks(self, index: int, rows: Rows, max_memory: int):
        """(start, block) of margin gradients under model ``index``, projected when there is a projection."""
        projection = self.projections_[index]
        for start, block in per_sample_gradients(self.tasks_[index], rows, of="measurement", max_memory=max_memory):
            yield start, block if projection is None else projection.project(block)

    # -- scores ----------------------------------------------------------------------------------------

    def attribute(self, X_test: Any, y_test: Any = None) -> AttributionResult:
        """scores[i, q] = τ(z_q)_i (module doc): positive = training row i raises target q's margin = helps.

        Target features are taken in groups of at most a quarter of ``max_memory``."""
        self._check_fitted()
        started = time.perf_counter()
        targets = self._target_rows(X_test, y_test)
        task0 = self.tasks_[0]
        scores = torch.zeros(self.n_train_, targets.n, dtype=torch.float64, device=task0.device)
        width = self._width()
        group = max(1, (self.max_memory // 4) // (width * 8))  # float64 target features
        for index, task in enumerate(self.tasks_):
            for first in range(0, targets.n, group):
                part = targets.subset(np.arange(first, min(first + group, targets.n))) if group < targets.n else targets
                phi = torch.empty(part.n, width, dtype=torch.float64, device=task.device)
                for start, block in self._computed_chunks(index, part, self.max_memory // 4):
                    phi[start:start + len(block)] = block.to(torch.float64)
                columns = slice(first, first + part.n)
                if self.features_[index] is not None:
                    features = self.features_[index]
                    scores[:, columns] += (features @ phi.T.to(features.dtype)).to(torch.float64)
                else:
                    solved = torch.cholesky_solve(phi.T, self.factors_[index])  # (ΦᵀΦ + λI)⁻¹φᵀ, k × m
                    for start, block in self._computed_chunks(index, self.rows_, self.max_memory // 4):
                        scores[start:start + len(block), columns] += block.to(torch.float64) @ solved
        scores /= len(self.tasks_)
        scores *= torch.as_tensor(self.out_to_loss_, device=scores.device).unsqueeze(1)
        attributed = time.perf_counter() - started
        timings = {**self.timings_, "attribute": attributed, "total": self.timings_["fit"] + attributed}
        return AttributionResult(scores.cpu().numpy(), method=self.method, params=self._params(), timings=timings,
                                 train_names=self.names_)

    def _target_rows(self, X_test: Any, y_test: Any) -> Rows:
        if self.models is None and isinstance(self.model, str):
            return target_rows(X_test, y_test, width=self.rows_.inputs.shape[1], classes=self.classes_)
        return as_rows(X_test, y_test, name="the target data")

    def _params(self) -> dict[str, Any]:
        if self.models is not None:
            model = "models"
        else:
            model = self.model if isinstance(self.model, str) else type(getattr(self.model, "model", self.model)).__name__
        return {"model": model, "models": len(self.tasks_), "projection_dim": self.projection_dim_, "projection": self.projection,
                "regularization": self.regularization, "seed": self.seed}

    def _check_fitted(self) -> None:
        if "tasks_" not in self.__dict__:
            raise NotFittedError(f"{type(self).__name__} is not fitted yet: call fit(...) first")


"""TracIn: training-data influence by tracing gradient descent (Pruthi, Liu, Kale & Sundararajan, NeurIPS 2020,
"Estimating Training Data Influence by Tracing Gradient Descent").

An SGD step on training row z_i with learning rate η moves θ by −η∇ℓ(θ, z_i), which changes the loss on a target z'
by about −η ∇ℓ(θ, z_i)·∇ℓ(θ, z'). Summed over the checkpoints θ_k saved during training (TracInCP),

    TracIn(z_i, z') = Σ_k η_k ∇ℓ(θ_k, z_i) · ∇ℓ(θ_k, z'),

positive = the steps on z_i lowered the target's loss = row i helps z'. With a measurement m other than the loss
(e.g. the margin, higher = better) the target side is ±∇m(θ_k, z'), signed so that positive still means "helps".
The self-influence Σ_k η_k ‖∇ℓ(θ_k, z_i)‖² is large for rows the model fits only slowly (mislabeled or atypical
rows); :meth:`TracIn.self_influence` negates it so that higher = more valuable.

Three ways to compute the products (``path``), the same numbers up to rounding except the projection:

- ``"exact"``: per-sample gradients (:func:`~dataworth.influence.gradients.per_sample_gradients`), in chunks that
  fit ``max_memory``, and one matrix product per chunk;
- ``"ghost"``: :func:`~dataworth.influence.ghost.ghost_inner_products`, exact for models whose counted parameters
  all sit in ``nn.Linear`` layers, never forming a gradient;
- ``"projection"``: g ↦ Pᵀg with a seeded random P ∈ ℝ^{p×k} per checkpoint (``projection``: Gaussian, Rademacher,
  or orthogonal; E[PPᵀ] = I, so every product is unbiased, and the orthogonal one at k = p is exact). A random
  projection to k ≥ p dimensions compresses nothing and is not used (the exact products are computed).
- ``"auto"``: the projection when ``projection_dim`` is set, else ghost when every counted parameter is in a Linear
  layer, else exact.

Checkpoints: pass ``checkpoints`` (modules or tasks of one architecture, with their ``learning_rates``), or a model
(a single checkpoint: gradient similarity at the final parameters), or a built-in ``model="mlp"``/``"logistic"``:
that architecture (as :func:`~dataworth.influence.models.fit_mlp` / :func:`~dataworth.influence.models.fit_logistic`
build it, float64, initialized from ``seed`` as they are) is trained by plain minibatch SGD with a constant
``learning_rate`` on the mean-form objective (1/n) Σ_i ℓ_i + (λ/2)‖θ‖² for ``epochs`` epochs (rows shuffled each
epoch with a generator seeded by ``seed``, batches of ``batch_size``), and a copy of the model is saved at the end of
every epoch with η_k = ``learning_rate``: TracInCP as the paper uses it. λ is ``l2`` for the MLP and ``l2``/n for
logistic regression (``fit_logistic``'s sum-form λ, so both fits minimize the same objective). As in the paper, the
weight of a checkpoint is η_k alone; the 1/batch_size of each minibatch step and the number of steps between
checkpoints are common factors left out.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Iterator, Sequence
from numbers import Real
from typing import Any

import numpy as np
import torch
from torch import nn

from dataworth.checks import InputError, check_choice, check_int, check_non_negative, check_positive, check_seed
from dataworth.influence.batches import Rows, as_rows
from dataworth.influence.builtin import labelled_table, target_rows
from dataworth.influence.ghost import ghost_inner_products, ghost_squared_norms, linear_layers
from dataworth.influence.gradients import DEFAULT_MAX_MEMORY, chunk_rows, per_sample_gradients
from dataworth.influence.models import encode_classes
from dataworth.influence.projection import PROJECTIONS, check_projection_dim, make_projection
from dataworth.influence.task import ModelTask, as_task, binary_cross_entropy, cross_entropy
from dataworth.result import AttributionResult, ValuationResult
from dataworth.valuation.base import NotFittedError, Valuator

#: The ways ``path=`` may name to compute gradient inner products.
PATHS = ("auto", "exact", "ghost", "projection")

Projection = Any  # RandomProjection | OrthogonalProjection | None


class TracIn(Valuator):
    """TracInCP scores Σ_k η_k ∇ℓ(θ_k, z_i)·∇ℓ(θ_k, z') of every training row on target rows (see the module doc).

    Parameters
    ----------
    model : nn.Module, ModelTask, "mlp" or "logistic"
        Without ``checkpoints``: a trained model (one checkpoint) or a built-in model trained by SGD on the rows
        given to ``fit`` (a labelled 2-D feature table), one checkpoint per epoch. Ignored when ``checkpoints`` is set.
    checkpoints : sequence of nn.Module or ModelTask, optional
        The saved models θ_k, all of one architecture.
    learning_rates : float or sequence of float, optional
        η_k, one per checkpoint (or one for all); 1 for every checkpoint when omitted. Only with given
        checkpoints or a given model (a built-in run uses ``learning_rate``).
    loss, measurement, modules, l2
        As in :class:`~dataworth.influence.task.ModelTask` for modules passed as checkpoints (and the measurement and
        modules of a built-in run); ``l2`` is also the weight decay of a built-in run (module doc).
    path : "auto", "exact", "ghost" or "projection"
        How the gradient products are computed (module doc).
    projection_dim : int, optional
        k of the projection path (required for ``path="projection"``).
    projection : "gaussian", "rademacher" or "orthogonal"
        The projection's kind.
    hidden, epochs, learning_rate, batch_size
        The built-in run: hidden tanh units of the MLP, epochs (= checkpoints), the SGD step size, the minibatch size.
    max_memory : int
        Bytes for gradient chunks; training gradients (or their projections) of all checkpoints are kept between
        calls when they take at most a quarter of it.
    seed : int
        Initialization and shuffling of a built-in run, and the projections' seeds.

    Fitted attributes: ``checkpoints_`` (the modules), ``learning_rates_`` (float64), ``tasks_``, ``path_`` (the path
    used), ``projection_dim_`` (k, or None when nothing is projected), ``n_train_``, and for a built-in run
    ``model_`` (the last checkpoint) and ``classes_``.
    """

    method = "tracin"
    terms = ("self",)

    def __init__(
        self,
        model: nn.Module | ModelTask | str = "mlp",
        *,
        checkpoints: Sequence[nn.Module | ModelTask] | None = None,
        learning_rates: float | Sequence[float] | None = None,
        loss: Any = "cross_entropy",
        measurement: Any = None,
        modules: Any = None,
        path: str = "auto",
        projection_dim: int | None = None,
        projection: str = "gaussian",
        l2: float = 1e-3,
        hidden: int = 64,
        epochs: int = 10,
        learning_rate: float = 0.1,
        batch_size: int = 32,
        max_memory: int = DEFAULT_MAX_MEMORY,
        seed: int = 0,
    ) -> None:
        self.model = model
        self.checkpoints = checkpoints
        self.learning_rates = learning_rates
        self.loss = loss
        self.measurement = measurement
        self.modules = modules
        self.path = path
        self.projection_dim = projection_dim
        self.projection = projection
        self.l2 = l2
        self.hidden = hidden
        self.epochs = epochs
        self.learning_rate = learning_rate
        self.batch_size = batch_size
        self.max_memory = max_memory
        self.seed = seed

    # -- fitting ---------------------------------------------------------------------------------------

    def fit(self, X: Any, y: Any = None, *, reference: Any = None) -> TracIn:
        """Collect the checkpoints (training the built-in model when asked) and the train side of the products.

        With ``reference`` (targets as (X, y), a Dataset or a DataLoader), ``values_`` is each row's mean score
        over the reference rows, so the method also works as a data valuator.
        """
        started = time.perf_counter()
        check_choice(self.path, "path", PATHS)
        check_choice(self.projection, "projection", PROJECTIONS)
        k = check_projection_dim(self.projection_dim)
        if self.path == "projection" and k is None:
            raise InputError("path='projection' needs projection_dim (the k of the projection), e.g. projection_dim=512")
        if self.path in ("exact", "ghost") and k is not None:
            raise InputError(f"projection_dim is used by path='projection' (or 'auto'); path={self.path!r} projects nothing: "
                             "leave projection_dim=None")
        check_int(self.max_memory, "max_memory")
        check_seed(self.seed)
        self.names_ = None
        if self.checkpoints is None and isinstance(self.model, str):
            rows, models, rates, loss = self._train_built_in(X, y)
        else:
            rows = as_rows(X, y, name="the training data")
            models = checkpoint_list(self.checkpoints, self.model)
            rates, loss = learning_rate_list(self.learning_rates, len(models)), self.loss
        self.tasks_ = [as_task(m, loss=loss, measurement=self.measurement, modules=self.modules, l2=self.l2) for m in models]
        check_same_architecture(self.tasks_, "checkpoints" if len(models) > 1 else "model")
        self.checkpoints_ = [task.model for task in self.tasks_]
        self.learning_rates_ = np.asarray(rates, dtype=np.float64)
        self.rows_, self.n_train_ = rows, rows.n
        num_params = self.tasks_[0].num_params
        projections = [make_projection(self.projection, num_params, k, seed=self.seed, index=i, max_memory=self.max_memory)
                       for i in range(len(self.tasks_))]
        self.projections_ = projections if projections[0] is not None else [None] * len(self.tasks_)
        self.projection_dim_ = None if projections[0] is None else k
        self.path_ = self._resolve_path()
        self.train_features_ = self._cached_train_features()
        self.__dict__.pop("self_influence_", None)
        self.timings_ = {"fit": time.perf_counter() - started}
        if reference is not None:
            result = self.attribute(reference)
            self.result_ = ValuationResult(result.scores.mean(axis=1), method=self.method, params=self._params(),
                                           timings=dict(result.timings), names=self.names_)
        return self

    def _train_built_in(self, X: Any, y: Any) -> tuple[Rows, list[nn.Module], list[float], str]:
        if self.learning_rates is not None:
            raise InputError("learning_rates weights the checkpoints passed with checkpoints= (or model=); a built-in run "
                             "saves one checkpoint per epoch at its learning_rate: set learning_rate instead")
        features, labels, self.names_ = labelled_table(X, y, model=self.model, method=self.method)
        codes, self.classes_ = encode_classes(labels, "the training labels")
        models, loss = sgd_checkpoints(self.model, features, codes, len(self.classes_), hidden=self.hidden, l2=self.l2,
                                       epochs=self.epochs, learning_rate=self.learning_rate, batch_size=self.batch_size, seed=self.seed)
        self.model_ = models[-1]
        rates = [float(self.learning_rate)] * len(models)
        return as_rows(features, codes, name="the training data"), models, rates, loss

    def _resolve_path(self) -> str:
        if self.projection_dim_ is not None:
            return "projection"
        if self.path == "ghost":
            for task in self.tasks_:
                linear_layers(task)  # an InputError naming the parameter that is not in a Linear layer
            return "ghost"
        if self.path == "auto" and all(_linear_only(task) for task in self.tasks_):
            return "ghost"
        return "exact"  # "exact", "auto" with other layers, or a random projection to k >= p (compresses nothing)

    def _width(self) -> int:
        return self.projection_dim_ or self.tasks_[0].num_params

    def _itemsize(self) -> int:
        return torch.finfo(self.tasks_[0].dtype).bits // 8

    def _cached_train_features(self) -> list[torch.Tensor] | None:
        """The training gradients (or their projections) of every checkpoint, when they take at most a quarter of
        ``max_memory``; else ``None`` (recomputed chunk by chunk when needed). Nothing for the ghost path."""
        if self.path_ == "ghost" or 4 * len(self.tasks_) * self.n_train_ * self._width() * self._itemsize() > self.max_memory:
            return None
        out = []
        for index, task in enumerate(self.tasks_):
            features = torch.empty(self.n_train_, self._width(), dtype=task.dtype, device=task.device)
            for start, block in self._computed_chunks(index, self.rows_, "loss", self.max_memory):
                features[start:start + len(block)] = block
            out.append(features)
        return out

    def _computed_chunks(self, index: int, rows: Rows, of: str, max_memory: int) -> Iterator[tuple[int, torch.Tensor]]:
        """(start, block) of per-sample gradients of checkpoint ``index`` (projected on the projection path)."""
        projection = self.projections_[index]
        for start, block in per_sample_gradients(self.tasks_[index], rows, of=of, max_memory=max_memory):
            yield start, block if projection is None else projection.project(block)

    def _train_chunks(self, index: int, max_memory: int) -> Iterator[tuple[int, torch.Tensor]]:
        if self.train_features_ is not None:
            step = chunk_rows(self.tasks_[index], max_memory, copies=1)
            for start in range(0, self.n_train_, step):
                yield start, self.train_features_[index][start:start + step]
        else:
            yield from self._computed_chunks(index, self.rows_, "loss", max_memory)

    # -- scores ----------------------------------------------------------------------------------------

    def attribute(self, X_test: Any, y_test: Any = None) -> AttributionResult:
        """scores[i, q] = Σ_k η_k ∇ℓ(θ_k, z_i)·(±∇m(θ_k, z_q)): positive = training row i helps target q.

        Memory besides the n × m scores: target gradients in groups of at most half of ``max_memory`` (the training
        gradients then read once per group), training gradient chunks a quarter; the ghost path chunks both sides
        within ``max_memory``.
        """
        self._check_fitted()
        started = time.perf_counter()
        targets = self._target_rows(X_test, y_test)
        scores = np.zeros((self.n_train_, targets.n))
        group = max(1, self.max_memory // (2 * self._width() * self._itemsize()))
        for index, (task, rate) in enumerate(zip(self.tasks_, self.learning_rates_, strict=True)):
            weight = float(rate) * task.measurement_sign
            if self.path_ == "ghost":
                products = ghost_inner_products(task, self.rows_, targets, of_a="loss", of_b="measurement", max_memory=self.max_memory)
                scores += weight * products.cpu().numpy()
                continue
            for first in range(0, targets.n, group):
                part = targets.subset(np.arange(first, min(first + group, targets.n))) if group < targets.n else targets
                side = torch.empty(part.n, self._width(), dtype=task.dtype, device=task.device)
                for start, block in self._computed_chunks(index, part, "measurement", self.max_memory // 4):
                    side[start:start + len(block)] = block
                side.mul_(weight)
                for start, block in self._train_chunks(index, self.max_memory // 4):
                    scores[start:start + len(block), first:first + part.n] += (block.to(side.dtype) @ side.T).to(torch.float64).cpu().numpy()
        attributed = time.perf_counter() - started
        timings = {**self.timings_, "attribute": attributed, "total": self.timings_["fit"] + attributed}
        return AttributionResult(scores, method=self.method, params=self._params(), timings=timings, train_names=self.names_)

    def _target_rows(self, X_test: Any, y_test: Any) -> Rows:
        if self.checkpoints is None and isinstance(self.model, str):
            return target_rows(X_test, y_test, width=self.rows_.inputs.shape[1], classes=self.classes_)
        return as_rows(X_test, y_test, name="the target data")

    def self_influence(self) -> ValuationResult:
        """Per training row, −Σ_k η_k ‖∇ℓ(θ_k, z_i)‖² (the projected norms on the projection path; higher = more
        valuable: a large self-influence marks a row the model fits only slowly, often mislabeled or atypical)."""
        self._check_fitted()
        if "self_influence_" not in self.__dict__:
            values = np.zeros(self.n_train_)
            for index, (task, rate) in enumerate(zip(self.tasks_, self.learning_rates_, strict=True)):
                if self.path_ == "ghost":
                    values += float(rate) * ghost_squared_norms(task, self.rows_, max_memory=self.max_memory).cpu().numpy()
                    continue
                for start, block in self._train_chunks(index, self.max_memory // 4):
                    values[start:start + len(block)] += float(rate) * block.to(torch.float64).pow(2).sum(1).cpu().numpy()
            self.self_influence_ = values
        return ValuationResult(-self.self_influence_, method=f"{self.method}:self", params=self._params(), names=self.names_)

    def term_values(self, term: str) -> np.ndarray:
        if term == "self":
            return self.self_influence().values
        return super().term_values(term)

    def _params(self) -> dict[str, Any]:
        if self.checkpoints is not None:
            model = "checkpoints"
        else:
            model = self.model if isinstance(self.model, str) else type(getattr(self.model, "model", self.model)).__name__
        return {"model": model, "path": self.path_, "projection_dim": self.projection_dim_, "projection": self.projection,
                "checkpoints": len(self.tasks_), "learning_rates": self.learning_rates_.tolist(), "seed": self.seed}

    def _check_fitted(self) -> None:
        if "tasks_" not in self.__dict__:
            raise NotFittedError(f"{type(self).__name__} is not fitted yet: call fit(...) first")


# -- shared with TRAK --------------------------------------------------------------------------------------


def checkpoint_list(checkpoints: Any, model: Any, *, name: str = "checkpoints") -> list[nn.Module | ModelTask]:
    """The given ``checkpoints`` (a non-empty sequence of modules or tasks), else ``[model]``."""
    if checkpoints is None:
        if not isinstance(model, (nn.Module, ModelTask)):
            raise InputError(f"model must be an nn.Module, a ModelTask or a built-in model name ('mlp', 'logistic'); got {type(model).__name__}")
        return [model]
    if isinstance(checkpoints, (nn.Module, ModelTask)) or not isinstance(checkpoints, Sequence) or isinstance(checkpoints, str):
        raise InputError(f"{name} must be a list of nn.Module or ModelTask (one per {name[:-1]}); got {type(checkpoints).__name__}")
    if len(checkpoints) == 0:
        raise InputError(f"{name} is empty; pass at least one nn.Module or ModelTask (or leave it None for a built-in model)")
    for position, item in enumerate(checkpoints):
        if not isinstance(item, (nn.Module, ModelTask)):
            raise InputError(f"{name}[{position}] is a {type(item).__name__}; every entry must be an nn.Module or a ModelTask")
    return list(checkpoints)


def learning_rate_list(learning_rates: Any, count: int) -> list[float]:
    """η_k per checkpoint: 1 each when ``None``, one number for all, or one per checkpoint (each > 0)."""
    if learning_rates is None:
        return [1.0] * count
    if isinstance(learning_rates, Real) and not isinstance(learning_rates, bool):
        return [check_positive(learning_rates, "learning_rates")] * count
    try:
        rates = np.asarray(learning_rates, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        raise InputError(f"learning_rates must be numbers, one per checkpoint ({count}) or a single one; got {learning_rates!r}") from None
    if len(rates) != count:
        raise InputError(f"learning_rates has {len(rates)} values for {count} checkpoint(s); give one learning rate per checkpoint "
                         "or a single number")
    return [check_positive(float(rate), f"learning_rates[{i}]") for i, rate in enumerate(rates)]


def check_same_architecture(tasks: list[ModelTask], name: str) -> None:
    """Every task counts parameters of the same names and shapes (one architecture)."""
    first = tasks[0].shapes
    for position, task in enumerate(tasks[1:], start=1):
        if task.shapes != first:
            differ = next((key for key in {**first, **task.shapes} if first.get(key) != task.shapes.get(key)), "?")
            raise InputError(f"{name}[{position}] does not have the architecture of {name}[0] (parameter {differ!r}: "
                             f"{tuple(task.shapes.get(differ, ())) or 'missing'} vs {tuple(first.get(differ, ())) or 'missing'}); "
                             f"all {name} must share one architecture and counted modules")


def _linear_only(task: ModelTask) -> bool:
    try:
        linear_layers(task)
    except InputError:
        return False
    return True


def sgd_checkpoints(
    kind: str, features: np.ndarray, codes: np.ndarray, n_classes: int, *, hidden: int, l2: float, epochs: int,
    learning_rate: float, batch_size: int, seed: int,
) -> tuple[list[nn.Module], str]:
    """Train the built-in ``kind`` ("mlp" or "logistic") by minibatch SGD; return a copy of it after every epoch
    (in eval mode) and the name of its loss. See the module doc for the objective and the schedule."""
    epochs = check_int(epochs, "epochs")
    learning_rate = check_positive(learning_rate, "learning_rate")
    batch_size = check_int(batch_size, "batch_size")
    lam = check_non_negative(l2, "l2")
    seed = check_seed(seed)
    X = torch.as_tensor(np.asarray(features, dtype=np.float64))
    n, d = X.shape
    binary = kind == "logistic" and n_classes == 2
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)  # the initialization fit_mlp starts from with the same seed
        if kind == "logistic":
            model = nn.Linear(d, 1 if binary else n_classes).double()
        else:
            model = nn.Sequential(nn.Linear(d, check_int(hidden, "hidden")), nn.Tanh(), nn.Linear(hidden, n_classes)).double()
    if kind == "logistic":
        lam = lam / n  # fit_logistic's sum-form λ, in mean form
    loss_fn, loss_name = (binary_cross_entropy, "binary_cross_entropy") if binary else (cross_entropy, "cross_entropy")
    targets = torch.as_tensor(codes).to(torch.float64 if binary else torch.long)
    params = list(model.parameters())
    generator = torch.Generator(device="cpu").manual_seed(seed)
    checkpoints = []
    for _ in range(epochs):
        order = torch.randperm(n, generator=generator)
        for start in range(0, n, batch_size):
            index = order[start:start + batch_size]
            objective = loss_fn(model(X[index]), targets[index]).mean() + 0.5 * lam * sum(p.pow(2).sum() for p in params)
            grads = torch.autograd.grad(objective, params)
            with torch.no_grad():
                for p, g in zip(params, grads, strict=True):
                    p.sub_(learning_rate * g)
        checkpoints.append(copy.deepcopy(model).eval())
    return checkpoints, loss_name

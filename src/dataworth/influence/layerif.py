"""LayerIF: the quality of each layer from influence functions restricted to it, and pruning guided by it.

After Askari, Gupta, Wang, Chhabra & Chen, "LayerIF: Estimating Layer Quality for Large Language Models using
Influence Functions" (NeurIPS 2025, arXiv:2505.23811). A layer l is a module that owns parameters
(:meth:`~dataworth.influence.task.ModelTask.blocks`); θ_l its parameters, g_{i,l} = ∇_l ℓ_i(θ̂) the training
gradient restricted to them and H_l the curvature of R(θ) = (1/n) Σ ℓ_i + (λ/2)‖θ‖² restricted to the block
(its diagonal block: Hessian or Gauss-Newton, λI included), computed by the chosen solver on the task that
counts only θ_l. The influence of training row i on target q through layer l is

    I_l(z_i, z_q) = (1/n) ∇_l f(z_q)ᵀ (H_l + δI)⁻¹ g_{i,l},

signed as in :mod:`dataworth.influence.influence` (positive = row i helps q: removing it would raise q's loss).
Summed over the layers it is the influence function with a block-diagonal curvature (what K-FAC-type solvers
assume anyway). On a validation set V, row i's influence is the mean Ī_l(z_i) = (1/|V|) Σ_q I_l(z_i, z_q), and

    S_l = Σ_i max(Ī_l(z_i), 0)

is the layer's score: the cumulative helpful influence of the training data through layer l. This is the paper's
"+VE" aggregation after its sign inversion (its positive = beneficial = lowers the validation loss, as here).
Because the measurement is linear in its gradient, Ī_l is computed with one solve: the mean validation gradient
(the gradient of the mean validation loss, as in the paper) through (H_l + δI)⁻¹.

The paper reads a high S_l as a layer that is sensitive to its training data, i.e. less well trained, and prunes
such layers more. :func:`layer_pruning_ratios` follows its allocation (AlphaPruning's linear map, Lu et al. 2024):
scores are min-max normalized to s̃ ∈ [0, 1] (optionally smoothed by a Savitzky-Golay filter, polynomial order 3,
as the paper does over 32 Transformer blocks with a window of 7), mapped to u_l = (1 − ε) + 2ε s̃_l, and scaled,

    r_l = min(η u_l, r_max),    η such that Σ_l d_l r_l = s · Σ_l d_l,

with d_l the layer's prunable weights (its parameters of two or more dimensions) and s the global sparsity.
Deviations: the paper also takes |S_l| first (a no-op here, S_l ≥ 0) and its code clips at 0.99 after scaling,
which lowers the global sparsity; here η is found with the cap in place (water-filling), so the parameter-weighted
mean is exactly s. ε = 0 gives the uniform allocation r_l = s. The paper's layers are whole Transformer blocks
whose matrices share one ratio; here a layer is one module. :func:`magnitude_prune` zeroes the round(r_l d_l)
weights of smallest magnitude in each layer (Han et al. 2015), biases and other 1-D parameters kept.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import torch
from scipy.signal import savgol_filter
from sklearn.base import clone
from torch import nn

from dataworth.checks import InputError, check_fraction, check_int
from dataworth.influence.batches import Rows
from dataworth.influence.gradients import per_sample_gradients
from dataworth.influence.influence import InfluenceFunction
from dataworth.influence.solvers import Solver
from dataworth.influence.task import LOSSES, MEASUREMENTS, ModelTask
from dataworth.result import AttributionResult

#: The Savitzky-Golay filter's polynomial order in the paper.
SMOOTHING_ORDER = 3


def layer_task(task: ModelTask, layer: str) -> ModelTask:
    """The task that counts only ``layer``'s parameters (the rest of the model held fixed), with the same loss,
    measurement and L2 weight."""
    loss = task.loss_name if task.loss_name in LOSSES else task.loss_fn
    measurement = task.measurement_name if task.measurement_name in MEASUREMENTS else task.measurement_fn
    restricted = ModelTask(task.model, loss, measurement=measurement, modules=[layer], l2=task.l2)
    expected = task.blocks()[layer]
    if restricted.parameter_names != expected:
        raise InputError(f"layer {layer!r} owns the parameters {expected}, but its module also holds {restricted.parameter_names}: "
                         "LayerIF needs layers whose modules hold only their own parameters (no child modules with parameters)")
    return restricted


class BlockDiagonalSolver(Solver):
    """V ↦ V blockdiag((H_l + δI)⁻¹): one copy of ``solver`` fitted per layer on the task restricted to it.

    ``indices_[layer]`` are the positions of the layer's parameters in the full task's parameter vector.
    """

    name: ClassVar[str] = "block_diagonal"

    def __init__(self, solver: Solver) -> None:
        self.solver = solver

    def fit(self, task: ModelTask, rows: Rows) -> BlockDiagonalSolver:
        offsets = np.cumsum([0] + [task.params[name].numel() for name in task.parameter_names])
        start = dict(zip(task.parameter_names, offsets[:-1].tolist(), strict=True))
        self.solvers_: dict[str, Solver] = {}
        self.indices_: dict[str, torch.Tensor] = {}
        for layer, names in task.blocks().items():
            self.solvers_[layer] = clone(self.solver).fit(layer_task(task, layer), rows)
            self.indices_[layer] = torch.cat([torch.arange(start[name], start[name] + task.params[name].numel()) for name in names])
        self.task_ = task
        return self

    def solve(self, V: torch.Tensor) -> torch.Tensor:
        V = self._check_rhs(V)
        out = torch.empty_like(V)
        for layer, solver in self.solvers_.items():
            index = self.indices_[layer].to(V.device)
            out[:, index] = solver.solve(V[:, index]).to(V.dtype)
        return out


class LayerInfluence(InfluenceFunction):
    """Per-layer influence and LayerIF layer scores (see the module doc).

    Built like :class:`~dataworth.influence.influence.InfluenceFunction` (same parameters); ``solver`` is fitted
    once per layer on the task restricted to it, so ``attribute``, ``self_influence`` and ``fit(reference=...)``
    give the influence with the block-diagonal curvature (the sum of the layers' influences). ``layers_`` names
    the layers (modules) in parameter order.
    """

    method = "layerif"

    def fit(self, X: Any, y: Any = None, *, reference: Any = None) -> LayerInfluence:
        super().fit(X, y, reference=reference)
        self.layers_ = list(self.solver_.solvers_)
        layer_of = torch.empty(self.task_.num_params, dtype=torch.long)
        for position, layer in enumerate(self.layers_):
            layer_of[self.solver_.indices_[layer]] = position
        self.layer_of_parameter_ = layer_of.to(self.task_.device)
        return self

    def _solver(self) -> Solver:
        return BlockDiagonalSolver(super()._solver())

    def layer_influence(self, X_val: Any, y_val: Any = None) -> pd.DataFrame:
        """Ī_l(z_i): each training row's mean influence on the validation rows through each layer (rows × layers;
        positive = the row lowers the validation loss through that layer)."""
        self._check_fitted()
        direction = self._validation_direction(self._target_rows(X_val, y_val))
        out = torch.zeros(self.n_train_, len(self.layers_), dtype=torch.float64, device=direction.device)
        for start, block in self._train_gradient_chunks(self.max_memory // 4):
            out[start:start + len(block)].index_add_(1, self.layer_of_parameter_, block.to(torch.float64) * direction)
        return pd.DataFrame(out.cpu().numpy(), columns=pd.Index(self.layers_, name="layer"))

    def layer_scores(self, X_val: Any, y_val: Any = None) -> pd.Series:
        """S_l = Σ_i max(Ī_l(z_i), 0) per layer (LayerIF; higher = a layer more sensitive to its training data,
        which the paper reads as less well trained and prunes more)."""
        return self.layer_influence(X_val, y_val).clip(lower=0).sum(axis=0).rename("layerif")

    def _validation_direction(self, targets: Rows) -> torch.Tensor:
        """±(1/n) blockdiag(H_l + δI)⁻¹ (1/|V|) Σ_q ∇f_q in float64 (the sign of ``_preconditioned_targets``)."""
        total = torch.zeros(self.task_.num_params, dtype=torch.float64, device=self.task_.device)
        for _, block in per_sample_gradients(self.task_, targets, of="measurement", max_memory=self.max_memory):
            total += block.sum(0, dtype=torch.float64)
        sign = self.task_.measurement_sign
        solved = self.solver_.solve((total / targets.n).to(self.task_.dtype).unsqueeze(0))[0]
        return sign * solved.to(torch.float64) / self.n_train_

    def attribute_layers(self, X_test: Any, y_test: Any = None) -> dict[str, AttributionResult]:
        """I_l(z_i, z_q) for every layer: {layer: AttributionResult (train × targets)}; they sum to ``attribute``."""
        self._check_fitted()
        started = time.perf_counter()
        preconditioned = self._preconditioned_targets(self._target_rows(X_test, y_test)).to(torch.float64)
        scores = {layer: np.empty((self.n_train_, len(preconditioned))) for layer in self.layers_}
        for start, block in self._train_gradient_chunks(self.max_memory // 4):
            block = block.to(torch.float64)
            for layer in self.layers_:
                index = self.solver_.indices_[layer].to(block.device)
                scores[layer][start:start + len(block)] = (block[:, index] @ preconditioned[:, index].T).cpu().numpy()
        timings = {**self.timings_, "attribute": time.perf_counter() - started}
        return {layer: AttributionResult(values, method=f"{self.method}:{layer}", params={**self._params(), "layer": layer},
                                         timings=timings) for layer, values in scores.items()}


# -- pruning guided by the scores --------------------------------------------------------------------------------


def _prunable(module: nn.Module) -> list[nn.Parameter]:
    """A layer's prunable weights: its own parameters with two or more dimensions (biases and norms are kept)."""
    return [p for p in module.parameters(recurse=False) if p.ndim >= 2]


def _layer(model: nn.Module, name: str) -> nn.Module:
    try:
        module = model.get_submodule(name)
    except AttributeError:
        raise InputError(f"the model has no module {name!r}") from None
    if not _prunable(module):
        raise InputError(f"module {name!r} has no weights of two or more dimensions to prune")
    return module


def prunable_sizes(model: nn.Module, layers: Any) -> pd.Series:
    """d_l: the number of prunable weights of each named layer (module), for :func:`layer_pruning_ratios`."""
    return pd.Series({name: sum(p.numel() for p in _prunable(_layer(model, name))) for name in layers}, name="weights", dtype=np.int64)


def layer_pruning_ratios(
    scores: pd.Series, global_sparsity: float, *, sizes: Mapping[str, int] | pd.Series, epsilon: float = 0.3,
    max_ratio: float = 0.99, window: int | None = None,
) -> pd.Series:
    """Per-layer pruning ratios r_l from layer scores (higher score → more pruning; see the module doc).

    ``sizes`` gives d_l for every scored layer (:func:`prunable_sizes`); the ratios satisfy
    Σ d_l r_l = ``global_sparsity`` · Σ d_l exactly, each in [0, ``max_ratio``]. ``epsilon`` ∈ [0, 1] sets the
    spread before scaling (ratios between (1 − ε)η and (1 + ε)η; 0 = uniform); ``window`` (odd, > 3) smooths
    the normalized scores along the layer order with a Savitzky-Golay filter of order 3 (the paper uses 7).
    """
    scores = pd.Series(scores, dtype=np.float64)
    if scores.empty or not np.isfinite(scores.to_numpy()).all():
        raise InputError("scores must be a non-empty Series of finite numbers, one per layer")
    missing = [layer for layer in scores.index if layer not in sizes]
    if missing:
        raise InputError(f"sizes has no weight count for layer(s) {', '.join(map(repr, missing))}")
    weights = np.array([check_int(sizes[layer], f"sizes[{layer!r}]") for layer in scores.index], dtype=np.float64)
    cap = check_fraction(max_ratio, "max_ratio", open_interval=True)
    target = check_fraction(global_sparsity, "global_sparsity")
    if target > cap:
        raise InputError(f"global_sparsity={target} is above max_ratio={cap}: no allocation capped at max_ratio reaches it")
    spread = check_fraction(epsilon, "epsilon")
    normalized = _smoothed(_min_max(scores.to_numpy()), window)
    ratios = _water_fill((1 - spread) + 2 * spread * _min_max(normalized), weights, target, cap)
    return pd.Series(ratios, index=scores.index, name="ratio")


def _min_max(values: np.ndarray) -> np.ndarray:
    low, high = values.min(), values.max()
    return np.full_like(values, 0.5) if high == low else (values - low) / (high - low)


def _smoothed(values: np.ndarray, window: int | None) -> np.ndarray:
    if window is None:
        return values
    window = check_int(window, "window", minimum=SMOOTHING_ORDER + 2)
    if window % 2 == 0 or window > len(values):
        raise InputError(f"window must be odd and at most the number of layers ({len(values)}); got {window}")
    return savgol_filter(values, window, SMOOTHING_ORDER)


def _water_fill(shape: np.ndarray, weights: np.ndarray, target: float, cap: float) -> np.ndarray:
    """r = min(η·shape, cap) with η chosen so that Σ weights·r = target·Σ weights (shape ≥ 0, target ≤ cap).

    Layers that reach the cap keep it while η is recomputed over the others, until none new reaches it."""
    capped = np.zeros(len(shape), dtype=bool)
    budget = target * weights.sum()
    while True:
        free = weights[~capped] @ shape[~capped]
        remaining = budget - cap * weights[capped].sum()
        if free <= 0:
            if remaining > 1e-12 * budget:
                raise InputError(f"global sparsity {target} cannot be reached: every layer with a non-zero share is at max_ratio")
            return np.where(capped, cap, 0.0)
        eta = remaining / free
        over = ~capped & (eta * shape > cap)
        if not over.any():
            return np.where(capped, cap, eta * shape)
        capped |= over


def magnitude_prune(model: nn.Module, ratios: Mapping[str, float] | pd.Series) -> nn.Module:
    """A copy of ``model`` with the round(r_l·d_l) smallest-magnitude weights of each layer l in ``ratios`` zeroed
    (ties: earlier entries first); biases, other 1-D parameters and unnamed layers are left as they are."""
    pruned = copy.deepcopy(model)
    with torch.no_grad():
        for name, ratio in dict(ratios).items():
            weights = _prunable(_layer(pruned, name))
            magnitudes = torch.cat([w.detach().abs().reshape(-1) for w in weights])
            count = math.floor(check_fraction(ratio, f"ratio of layer {name!r}") * magnitudes.numel() + 0.5)
            mask = torch.zeros_like(magnitudes, dtype=torch.bool)
            mask[torch.argsort(magnitudes, stable=True)[:count]] = True
            for weight, part in zip(weights, mask.split([w.numel() for w in weights]), strict=True):
                weight.masked_fill_(part.reshape(weight.shape), 0.0)
    return pruned

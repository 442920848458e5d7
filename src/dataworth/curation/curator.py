"""The :class:`Curator`: scores every training batch while the model trains and drops (or reweights) rows online.

A few lines in a plain PyTorch loop::

    curator = Curator(model, validation=(X_val, y_val), loss="cross_entropy", method="lai",
                      policy="drop-negative", warmup_steps=100, refresh_every=50)
    for xb, yb in loader:
        loss = curator.loss(xb, yb)      # forward pass, scores, the loss over the kept rows
        opt.zero_grad(); loss.backward(); opt.step()
    curator.log                           # one row per sample seen: step, id, label, score, kept, weight, loss

Scores (:mod:`dataworth.curation.scores`) compare each row with a validation cache — per scored layer, the mean
over the validation rows of their (LAI or exact) layer gradients, refreshed every ``refresh_every`` steps with
the model in eval mode — so LAI costs one bilinear form per layer and step (about one forward pass of the layer,
whatever the number of validation rows) and no backward pass. Under ``torch.distributed`` each rank scores
its own rows against the same cache (the model is synchronized, so the caches are equal) and the loss is
Σ_kept ℓ_i · world / (rows kept over all ranks): DDP's gradient average is then the gradient of the mean loss
over the rows kept in the global batch, as in one process.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from dataworth.checks import InputError, check_choice, check_fraction, check_int
from dataworth.curation.capture import LayerCapture
from dataworth.curation.policies import POLICIES, decide
from dataworth.curation.scores import Side, adam_scores, ghost_scores, lai_scores, small_loss_scores, validation_sums
from dataworth.influence.task import LossFn, resolve_loss

#: Scoring methods: activation-based (no backward), exact per-layer (a backward), the last layer, Adam-aware,
#: the small-loss rule, and none (every row kept: the uncurated baseline, logged the same way).
METHODS = ("lai", "ghost", "last-layer", "lai-adam", "small-loss", "none")
Forward = Callable[[nn.Module, Any], torch.Tensor]


class Curator:
    """Online data curation during training (layer-aware influence, arXiv 2510.16007).

    Parameters
    ----------
    model : nn.Module
        The model being trained (a DDP-wrapped model works: the hooks sit on its layers).
    validation : (inputs, targets)
        The clean validation rows the scores compare against.
    loss : str or callable
        ``"cross_entropy"`` (e = softmax − onehot in closed form), ``"mse"``, ``"binary_cross_entropy"``,
        or ``(outputs, targets) -> per-sample losses`` (e by autograd on the outputs only).
    method : str
        One of :data:`METHODS`.
    policy : str
        One of :data:`~dataworth.curation.policies.POLICIES`.
    warmup_steps : int
        Steps during which every row is kept (scores are still computed and logged).
    refresh_every : int
        Steps between refreshes of the validation cache.
    keep_fraction : float
        The fraction kept by ``policy="keep-top"``.
    quantile : float
        The small-loss rule's loss quantile.
    optimizer : torch.optim.Optimizer, optional
        Adam or AdamW, for ``method="lai-adam"`` (its second moments precondition the scores).
    modules : sequence of str, optional
        The Linear/Conv2d layers to score (all by default).
    forward : callable, optional
        ``forward(model, inputs) -> outputs`` (default ``model(inputs)``; e.g. ``lambda m, b: m(**b).logits``).
    validation_batch_size : int
        Rows per forward pass when the cache is refreshed.
    """

    def __init__(
        self,
        model: nn.Module,
        validation: tuple[Any, Any],
        *,
        loss: str | LossFn = "cross_entropy",
        method: str = "lai",
        policy: str = "drop-negative",
        warmup_steps: int = 0,
        refresh_every: int = 50,
        keep_fraction: float = 0.7,
        quantile: float = 0.7,
        optimizer: torch.optim.Optimizer | None = None,
        modules: Sequence[str] | None = None,
        forward: Forward | None = None,
        validation_batch_size: int = 512,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise InputError(f"model must be a torch.nn.Module; got {type(model).__name__}")
        self.model = model
        self.method = check_choice(method, "method", METHODS)
        self.policy = check_choice(policy, "policy", POLICIES)
        self.warmup_steps = check_int(warmup_steps, "warmup_steps", minimum=0)
        self.refresh_every = check_int(refresh_every, "refresh_every")
        self.keep_fraction = check_fraction(keep_fraction, "keep_fraction", open_interval=True)
        self.quantile = check_fraction(quantile, "quantile", open_interval=True)
        self.loss_name, self.loss_fn = resolve_loss(loss)
        if method == "lai-adam" and not isinstance(optimizer, (torch.optim.Adam, torch.optim.AdamW)):
            raise InputError("method='lai-adam' preconditions with Adam's second moments: pass optimizer=<your Adam or AdamW>")
        self.optimizer = optimizer
        self.forward = forward or (lambda m, inputs: m(inputs))
        self.validation_batch_size = check_int(validation_batch_size, "validation_batch_size")
        self.validation = _as_pair(validation, model, "validation")
        self.capture = LayerCapture(model, modules) if method not in ("small-loss", "none") else None
        self.step = 0
        #: The validation means M per scored layer (see :mod:`dataworth.curation.scores`).
        self.cache: dict[str, torch.Tensor] | None = None
        self._records: list[dict[str, np.ndarray]] = []
        self._seen = 0

    # -- the training step -------------------------------------------------------------------------------

    def loss(self, inputs: Any, targets: Any, ids: Any = None) -> torch.Tensor:
        """One forward pass of the batch; score, decide and log each row; the (weighted) loss over the kept rows."""
        inputs, targets = _as_pair((inputs, targets), self.model, "the batch")
        if self.capture is not None and (self.cache is None or self.step % self.refresh_every == 0):
            self.refresh()
        if self.capture is None:
            outputs = self.forward(self.model, inputs)
            losses = self._losses(outputs, targets)
            scores = small_loss_scores(losses, self.quantile) if self.method == "small-loss" else \
                torch.full((len(losses),), float("nan"), dtype=torch.float64)
        else:
            with self.capture.recording(keep_outputs=self.method == "ghost"):
                outputs = self.forward(self.model, inputs)
                losses = self._losses(outputs, targets)
                scores = self._scores(self._side(outputs, targets, losses, training=True))
        kept, weights = decide(self.policy, scores, warm=self.step >= self.warmup_steps, keep_fraction=self.keep_fraction)
        weights = weights.to(losses.dtype)
        self._log(ids, targets, scores, kept, weights, losses)
        self.step += 1
        return _reduce(losses, weights)

    def refresh(self) -> None:
        """Recompute the validation cache with the current model (in eval mode, restored afterwards; a DDP model's
        own module, so that no gradient synchronization is set up for these forward passes)."""
        model = self.model.module if isinstance(self.model, nn.parallel.DistributedDataParallel) else self.model
        training = model.training
        model.eval()
        try:
            X, y = self.validation
            exact = self.method == "ghost"
            sums: dict[str, torch.Tensor] = {}
            for start in range(0, len(y), self.validation_batch_size):
                rows = slice(start, start + self.validation_batch_size)
                xb, yb = ({k: v[rows] for k, v in X.items()} if isinstance(X, dict) else X[rows]), y[rows]
                with torch.set_grad_enabled(exact), self.capture.recording(keep_outputs=exact):
                    outputs = self.forward(model, xb)
                    side = self._side(outputs, yb, self._losses(outputs, yb), training=False)
                for layer, total in validation_sums(side, exact).items():
                    sums[layer] = sums[layer] + total if layer in sums else total
            self.cache = {layer: total / len(y) for layer, total in sums.items()}
        finally:
            model.train(training)

    # -- results -----------------------------------------------------------------------------------------

    @property
    def log(self) -> pd.DataFrame:
        """One row per sample seen: step, id, label, score, kept, weight, loss."""
        if not self._records:
            return pd.DataFrame({c: [] for c in ("step", "id", "label", "score", "kept", "weight", "loss")})
        return pd.DataFrame({key: np.concatenate([r[key] for r in self._records]) for key in self._records[0]})

    def drop_rates(self, by: str = "label") -> pd.DataFrame:
        """Rows seen, dropped and the drop rate per ``by`` value, over the steps past the warm-up."""
        log = self.log
        log = log[log["step"] >= self.warmup_steps]
        grouped = log.groupby(by)["kept"]
        table = pd.DataFrame({"seen": grouped.size(), "dropped": grouped.apply(lambda k: int((~k.astype(bool)).sum()))})
        table["drop_rate"] = table["dropped"] / table["seen"]
        return table.reset_index()

    def save_log(self, path: str | Path) -> Path:
        """Write :attr:`log` to a parquet file (written whole, then moved into place)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=path.parent, suffix=".partial")
        os.close(handle)
        try:
            self.log.to_parquet(temporary, index=False)
            os.replace(temporary, path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
        return path

    def close(self) -> None:
        """Remove the hooks from the model."""
        if self.capture is not None:
            self.capture.remove()

    # -- internals ---------------------------------------------------------------------------------------

    def _losses(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        losses = self.loss_fn(outputs, targets)
        if losses.shape != (len(targets),):
            raise InputError(f"the loss must give one value per row; it gives shape {tuple(losses.shape)} for {len(targets)} rows")
        return losses

    def _side(self, outputs: torch.Tensor, targets: torch.Tensor, losses: torch.Tensor, *, training: bool) -> Side:
        rows = len(losses)
        with torch.no_grad():
            side = Side(self.capture.activations(rows), self._output_gradients(outputs, targets), losses.detach())
        if self.method == "ghost":
            kept = self.capture.outputs()
            names = list(kept)
            flat = [o for name in names for o in kept[name]]
            grads = torch.autograd.grad(losses.sum(), flat, retain_graph=training, allow_unused=True)
            per_layer, first = {}, 0
            for name in names:
                per_layer[name] = list(grads[first:first + len(kept[name])])
                first += len(kept[name])
            side.layer_gradients = self.capture.output_gradients(per_layer, rows)
        return side

    def _output_gradients(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """E = ∂ℓ_i/∂f_i as rows × T_e × C: softmax − onehot for cross-entropy on rows × C logits, else autograd."""
        outputs = outputs.detach()
        if self.loss_name == "cross_entropy" and outputs.ndim == 2:
            e = torch.softmax(outputs, 1) - F.one_hot(targets, outputs.shape[1]).to(outputs.dtype)
        else:
            with torch.enable_grad():
                leaf = outputs.requires_grad_(True)
                e = torch.autograd.grad(self.loss_fn(leaf, targets).sum(), leaf)[0]
        rows = len(targets)
        return e.reshape(rows, 1, -1) if e.ndim <= 2 else e.reshape(rows, -1, e.shape[-1])

    def _scores(self, batch: Side) -> torch.Tensor:
        if self.method == "ghost":
            return ghost_scores(batch, self.cache)
        last = self.capture.last_layer
        if self.method == "last-layer":
            return lai_scores(batch, self.cache, [last])
        if self.method == "lai-adam":
            moments = _adam_second_moments(self.optimizer, self.capture.layers)
            if moments is not None:
                return adam_scores(batch, self.cache, last, moments)
        return lai_scores(batch, self.cache)

    def _log(self, ids: Any, targets: torch.Tensor, scores: torch.Tensor, kept: torch.Tensor, weights: torch.Tensor,
             losses: torch.Tensor) -> None:
        rows = len(losses)
        if ids is None:
            ids = np.arange(self._seen, self._seen + rows)
        ids = np.asarray(ids.cpu() if isinstance(ids, torch.Tensor) else ids)
        if ids.shape != (rows,):
            raise InputError(f"ids must give one id per row of the batch ({rows}); got shape {ids.shape}")
        labels = targets.cpu().numpy() if targets.ndim == 1 and not targets.is_floating_point() else np.full(rows, -1)
        self._records.append({"step": np.full(rows, self.step), "id": ids, "label": labels,
                              "score": scores.detach().cpu().numpy().astype(np.float64), "kept": kept.cpu().numpy(),
                              "weight": weights.detach().cpu().numpy().astype(np.float64),
                              "loss": losses.detach().cpu().numpy().astype(np.float64)})
        self._seen += rows


def _reduce(losses: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Σ w_i ℓ_i / Σ_all-ranks w_i, times the world size under torch.distributed (see the module docstring)."""
    total = weights.sum().detach()
    world = 1
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        world = dist.get_world_size()
        total = total.clone()
        dist.all_reduce(total)
    if total <= 0:
        return (losses * 0).sum()
    return (losses * weights).sum() * world / total


def _adam_second_moments(optimizer: torch.optim.Optimizer, layers: dict[str, nn.Module]) -> dict[str, tuple[torch.Tensor, float]] | None:
    """(v̂ = v/(1 − β₂ᵗ) as out × (d [+ 1]), ε) per scored layer; None before the optimizer's first step."""
    groups = {id(p): group for group in optimizer.param_groups for p in group["params"]}
    out = {}
    for name, module in layers.items():
        blocks = []
        for param in (module.weight, module.bias):
            if param is None or not param.requires_grad:
                continue
            state = optimizer.state.get(param, {})
            if "exp_avg_sq" not in state or id(param) not in groups:
                return None
            group = groups[id(param)]
            v = state["exp_avg_sq"] / (1 - group["betas"][1] ** float(state["step"]))
            blocks.append(v.reshape(v.shape[0], -1))
        out[name] = (torch.cat(blocks, 1), float(groups[id(module.weight)]["eps"]))
    return out


def _as_pair(pair: Any, model: nn.Module, name: str) -> tuple[torch.Tensor | dict[str, torch.Tensor], torch.Tensor]:
    """(inputs, targets) on the model's device, floating inputs in its dtype; inputs may be a dict of tensors (a
    Hugging Face batch), each with the rows as its first dimension."""
    if not isinstance(pair, (tuple, list)) or len(pair) != 2:
        raise InputError(f"{name} must be a pair (inputs, targets)")
    parameter = next(model.parameters())

    def tensor(value: Any) -> torch.Tensor:
        value = value if isinstance(value, torch.Tensor) else torch.as_tensor(value)
        return value.to(parameter.device, parameter.dtype if value.is_floating_point() else value.dtype)

    X = {key: tensor(value) for key, value in pair[0].items()} if isinstance(pair[0], dict) else tensor(pair[0])
    y = tensor(pair[1])
    lengths = {len(v) for v in X.values()} if isinstance(X, dict) else {len(X)}
    if lengths != {len(y)} or len(y) == 0:
        raise InputError(f"{name} needs as many targets as input rows, at least one; got {sorted(lengths)} inputs and {len(y)} targets")
    return X, y

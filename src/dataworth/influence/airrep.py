"""AirRep: training data attribution with learned representations (Sun et al. 2025, "Enhancing Training Data
Attribution with Representational Optimization", arXiv 2505.18513; reference code github.com/sunnweiwei/AirRep).

A trainable encoder φ maps a labelled example to a representation r = φ(x, y) ∈ R^dim; the influence of a training
row i on a target q is the inner product of their representations, and the influence of a *group* S of training
rows is an attention-pooled sum of those inner products:

    s_iq = ⟨r_i, r_q⟩                                  (r_i = φ(x_i, y_i), r_q = φ(x_q, y_q), one shared encoder)
    α_iq = softmax_{i ∈ S}(|s_iq| / temperature)        (the target is the attention query, as in the paper)
    A(S, q) = |S| · Σ_{i ∈ S} α_iq s_iq                 (``size_scaled=True``; the reference code omits |S|, temperature 1)

Higher A(S, q) = training on S is predicted to give target q a *lower* loss. The per-row attribution is the score of
the singleton group, τ_iq = A({i}, q) = s_iq (α = 1, |S| = 1): positive = row i helps target q. With uniform attention
(``temperature=None``) A(S, q) = Σ_{i∈S} τ_iq exactly, the additive (datamodel) form; a finite temperature lets the
rows with the strongest |τ_iq| dominate a group, the paper's fix for groups whose effect is not additive. The |S|
factor makes groups of different sizes comparable with the additive limit (a weighted *mean* would predict the same
effect for a row and for 100 copies of it).

Encoder input: the features standardized with the training rows' mean and standard deviation, concatenated with the
one-hot label (influence depends on the label: the same image with another label pulls the model the other way).
The encoder is an MLP (Linear–GELU–Linear–GELU–Linear, ``hidden`` wide, output ``dim``), float32, the same for
training rows and targets (influence ≈ g_iᵀH⁻¹g_q is a symmetric kernel, so one encoder suffices).

Training data: m retrainings on subsets S_j (a boolean mask over the training rows) with the measured target losses
ℓ_jq (lower = better, averaged over seeds). As in the reference code, each target's losses are standardized over the
subsets, t_jq = clip((mean_j ℓ_jq − ℓ_jq) / std_j ℓ_jq, ±``clip``) (higher = better), and the encoder is trained
with Adam on a ranking objective per target over a batch of subsets:

    ``loss="ranknet"`` (the paper's): Σ_{t_jq > t_kq} w_jkq · log(1 + exp(−(A(S_j, q) − A(S_k, q)))) / #pairs,
                                      w_jkq = min(t_jq − t_kq, clip)     (pairs weighted by how far apart they are);
    ``loss="listwise"``: cross-entropy between softmax_j(t_jq) and softmax_j(A(S_j, q)) (ListNet).

A ranking objective sees only differences between the subsets of one target: when the subsets have equal sizes,
adding c_q·|S| to every A(S, q) (with uniform attention: c_q to every τ_iq) leaves the loss unchanged, and rescaling
keeps every ranking. So τ_iq is identified only up to a per-target shift and scale: compare rows within a target
(rankings, differences, ``AttributionResult.top``, the mean over targets in ``reduce``), but do not read the sign of
one τ_iq alone as "helps" or "hurts" in absolute terms.

Each epoch visits every (batch of ``subsets_per_step`` subsets) × (batch of ``targets_per_step`` targets) once, in
an order drawn from ``seed``; gradients are clipped to norm 1 (as in the reference code). After fitting, the training
rows' representations are cached, so attributing a new target costs one encoder pass and n inner products of length
``dim`` (``timings["attribute_per_target"]``) — the method's advantage over gradient-based attribution at inference.
"""

from __future__ import annotations

import time
import warnings
from typing import Any

import numpy as np
import torch
from sklearn.base import BaseEstimator
from torch import nn

from dataworth.checks import (
    DataworthWarning,
    InputError,
    check_choice,
    check_features,
    check_int,
    check_labels,
    check_positive,
    check_same_width,
    check_seed,
    check_subsets,
    resolve_device,
    to_numpy,
)
from dataworth.progress import progress_iter
from dataworth.result import AttributionResult

#: The ranking objectives ``loss=`` may name.
LOSSES = ("ranknet", "listwise")
#: Entries of the (subsets × training rows × targets) attention tensor computed at once outside training.
_CHUNK_ENTRIES = 1 << 22


class AirRep(BaseEstimator):
    """Learned representations whose inner products predict influence, trained on measured subset outcomes.

    See the module doc for the formulas. Use :meth:`fit_subsets` on retraining outcomes, then :meth:`attribute`
    (per-row scores τ_iq = ⟨r_i, r_q⟩) or :meth:`group_scores` (A(S, q) for subsets S).

    Parameters
    ----------
    dim : int
        Size of the representations.
    hidden : int
        Width of the encoder's two hidden layers.
    epochs : int
        Passes over the (subset batch, target batch) pairs; 0 keeps the random initial encoder (a baseline).
    learning_rate : float
        Adam's step size.
    temperature : float or None
        Attention temperature (α ∝ exp(|s_iq| / temperature)); ``None`` = uniform attention (additive groups).
    size_scaled : bool
        Multiply the pooled score by the group size |S| (so that a singleton's score is τ_iq and uniform attention
        gives the sum of the rows' scores).
    loss : "ranknet" or "listwise"
        The ranking objective per target.
    subsets_per_step, targets_per_step : int
        Subsets ranked against each other, and targets, per optimizer step.
    weight_decay : float
        Adam's (L2) weight decay.
    clip : float
        Clip of the standardized target gains and of the RankNet pair weights.
    n_classes : int or None
        Number of label classes C (labels are codes 0..C−1); ``None`` = 1 + the largest code seen in ``fit_subsets``.
    device : str
        ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
    seed : int
        Seeds the encoder's initialization and the batch order: the same seed gives the same numbers (on one device).
    progress : bool
        Show a progress bar over epochs (when stderr is a terminal).
    """

    method = "airrep"

    def __init__(
        self,
        dim: int = 64,
        hidden: int = 128,
        *,
        epochs: int = 100,
        learning_rate: float = 3e-3,
        temperature: float | None = 1.0,
        size_scaled: bool = True,
        loss: str = "ranknet",
        subsets_per_step: int = 32,
        targets_per_step: int = 64,
        weight_decay: float = 0.0,
        clip: float = 10.0,
        n_classes: int | None = None,
        device: str = "cpu",
        seed: int = 0,
        progress: bool = False,
    ) -> None:
        self.dim = dim
        self.hidden = hidden
        self.epochs = epochs
        self.learning_rate = learning_rate
        self.temperature = temperature
        self.size_scaled = size_scaled
        self.loss = loss
        self.subsets_per_step = subsets_per_step
        self.targets_per_step = targets_per_step
        self.weight_decay = weight_decay
        self.clip = clip
        self.n_classes = n_classes
        self.device = device
        self.seed = seed
        self.progress = progress

    # -- fitting ---------------------------------------------------------------------------------------

    def fit_subsets(self, X_train: Any, y_train: Any, X_targets: Any, y_targets: Any, subsets: Any, outcomes: Any) -> AirRep:
        """Train the encoder so that, per target, subsets with a lower measured loss get a higher group score.

        ``subsets`` is an m × n 0/1 mask (row j = the training rows kept in retraining j), ``outcomes`` the m × T
        measured target losses (lower = better). Returns ``self``; ``train_representations_`` holds r_i, and
        ``train_loss_`` the mean ranking loss of each epoch.
        """
        started = time.perf_counter()
        self._check_params()
        device = resolve_device(self.device)
        X = check_features(X_train, "X_train")
        self.n_train_, self.n_features_ = X.shape
        train_codes = _label_codes(y_train, self.n_train_, "y_train")
        Xt = check_features(X_targets, "X_targets")
        check_same_width(X, Xt, "X_targets")
        target_codes = _label_codes(y_targets, Xt.shape[0], "y_targets")
        largest = int(max(train_codes.max(), target_codes.max()))
        if self.n_classes is None:
            self.n_classes_ = max(largest + 1, 2)
        else:
            self.n_classes_ = check_int(self.n_classes, "n_classes", minimum=1)
            if largest >= self.n_classes_:
                raise InputError(f"labels must be codes 0..n_classes-1 = 0..{self.n_classes_ - 1}; got the code {largest}")
        masks = check_subsets(subsets, self.n_train_, minimum=2)
        losses = _check_outcomes(outcomes, masks.shape[0], Xt.shape[0])

        X64 = X.to(torch.float64)
        self.mean_ = X64.mean(0)
        scale = X64.std(0, correction=0)
        self.scale_ = torch.where(scale > 0, scale, torch.ones_like(scale))
        inputs = self._inputs(X, train_codes).to(device)
        target_inputs = self._inputs(Xt, target_codes).to(device)
        gains = _standardized_gains(losses, float(self.clip))
        if not (gains.std(0) > 0).any():
            warnings.warn("every target's outcome is the same on all subsets: there is nothing to rank, the encoder stays "
                          "at its random initialization", DataworthWarning, stacklevel=2)

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(check_seed(self.seed))
            self.encoder_ = _encoder(inputs.shape[1], self.hidden, self.dim).to(device)
        self.train_loss_ = self._train(inputs, target_inputs, torch.as_tensor(masks, device=device),
                                       torch.as_tensor(gains, dtype=torch.float32, device=device))
        self.encoder_.eval()
        with torch.no_grad():
            self.train_representations_ = self.encoder_(inputs)
        self.timings_ = {"fit": time.perf_counter() - started}
        return self

    def _check_params(self) -> None:
        check_int(self.dim, "dim")
        check_int(self.hidden, "hidden")
        check_int(self.epochs, "epochs", minimum=0)
        check_positive(self.learning_rate, "learning_rate")
        if self.temperature is not None:
            check_positive(self.temperature, "temperature")
        if not isinstance(self.size_scaled, bool):
            raise InputError(f"size_scaled must be True or False; got {self.size_scaled!r}")
        check_choice(self.loss, "loss", LOSSES)
        check_int(self.subsets_per_step, "subsets_per_step", minimum=2)
        check_int(self.targets_per_step, "targets_per_step")
        if isinstance(self.weight_decay, bool) or not isinstance(self.weight_decay, (int, float)) or not self.weight_decay >= 0:
            raise InputError(f"weight_decay must be a number >= 0; got {self.weight_decay!r}")
        check_positive(self.clip, "clip")
        check_seed(self.seed)

    def _inputs(self, X: torch.Tensor, codes: np.ndarray) -> torch.Tensor:
        """The encoder's input: standardized features and the one-hot label, float32."""
        features = (X.to(torch.float64) - self.mean_) / self.scale_
        onehot = nn.functional.one_hot(torch.as_tensor(codes), self.n_classes_).to(torch.float64)
        return torch.cat([features, onehot], 1).to(torch.float32)

    def _train(self, inputs: torch.Tensor, target_inputs: torch.Tensor, masks: torch.Tensor, gains: torch.Tensor) -> np.ndarray:
        encoder = self.encoder_
        optimizer = torch.optim.Adam(encoder.parameters(), lr=float(self.learning_rate), weight_decay=float(self.weight_decay))
        generator = torch.Generator().manual_seed(check_seed(self.seed))
        m, T = gains.shape
        B, Tb = min(self.subsets_per_step, m), min(self.targets_per_step, T)
        history = []
        for _ in progress_iter(range(self.epochs), "AirRep epochs", enabled=self.progress):
            subset_order = torch.randperm(m, generator=generator).to(masks.device)
            target_order = torch.randperm(T, generator=generator).to(masks.device)
            subset_batches = [subset_order[i:i + B] for i in range(0, m, B)]
            if len(subset_batches) > 1 and len(subset_batches[-1]) < 2:  # a lone subset has nothing to rank against
                subset_batches[-2] = torch.cat(subset_batches[-2:])
                subset_batches.pop()
            total, steps = 0.0, 0
            for chosen in subset_batches:
                for first in range(0, T, Tb):
                    targets = target_order[first:first + Tb]
                    representations = encoder(inputs)
                    scores = representations @ encoder(target_inputs[targets]).T  # n × Tb
                    predicted = self._pool(masks[chosen], scores)  # B × Tb
                    loss = self._ranking_loss(predicted, gains[chosen][:, targets])
                    optimizer.zero_grad()
                    loss.backward()
                    nn.utils.clip_grad_norm_(encoder.parameters(), 1.0)
                    optimizer.step()
                    total += loss.item()
                    steps += 1
            history.append(total / max(steps, 1))
        return np.asarray(history, dtype=np.float64)

    def _pool(self, masks: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        """A(S_j, q) for the subsets ``masks`` (B × n, bool) and the row scores ``scores`` (n × T); empty groups score 0.

        The attention sums are two matrix products in float64, numerator M·(E ⊙ s) and denominator M·E with
        E_iq = exp((|s_iq| − max_k |s_kq|) / temperature) (the softmax's shift taken over all rows, not per group, so
        no B × n × T tensor is formed); a group whose denominator underflows (all its |s| more than ~700·temperature
        below the target's largest) is recomputed with a per-group softmax.
        """
        sizes = masks.sum(1, keepdim=True).to(scores.dtype)
        if self.temperature is None:
            pooled = masks.to(scores.dtype) @ scores
            return pooled if self.size_scaled else pooled / sizes.clamp(min=1)
        wide, membership = scores.to(torch.float64), masks.to(torch.float64)
        logits = wide.abs() / float(self.temperature)
        weights = torch.exp(logits - logits.max(0, keepdim=True).values.detach())
        numerator, denominator = membership @ (weights * wide), membership @ weights
        pooled = torch.where(denominator > 0, numerator / denominator.clamp(min=torch.finfo(torch.float64).tiny), 0.0)
        underflow = ((denominator == 0) & (sizes > 0)).any(1)
        if underflow.any():
            pooled = pooled.clone()
            pooled[underflow] = self._pool_per_group(masks[underflow], wide)
        pooled = pooled.to(scores.dtype)
        return pooled * sizes if self.size_scaled else pooled

    def _pool_per_group(self, masks: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        """Σ_{i∈S} α_iq s_iq with a softmax over each group's own members (a B × n × T tensor)."""
        logits = (scores.abs() / float(self.temperature)).unsqueeze(0).masked_fill(~masks.unsqueeze(2), float("-inf"))
        weights = torch.softmax(logits, dim=1).nan_to_num(0.0)  # an empty group: all −inf → NaN → 0
        return (weights * scores.unsqueeze(0)).sum(1)

    def _ranking_loss(self, predicted: torch.Tensor, gains: torch.Tensor) -> torch.Tensor:
        """Per target (column), rank the subsets (rows) by ``gains``; mean over targets."""
        if self.loss == "listwise":
            return -(torch.softmax(gains, 0) * torch.log_softmax(predicted, 0)).sum(0).mean()
        true = gains.unsqueeze(1) - gains.unsqueeze(0)  # [j, k, q] = t_jq − t_kq
        diff = predicted.unsqueeze(1) - predicted.unsqueeze(0)
        better = true > 0
        if not better.any():
            return predicted.sum() * 0.0
        weights = true.clamp(max=float(self.clip))[better]
        return (weights * nn.functional.softplus(-diff[better])).mean()

    # -- scores ----------------------------------------------------------------------------------------

    def encode(self, X: Any, y: Any, *, name: str = "the examples") -> np.ndarray:
        """The representations φ(x, y) of labelled examples (rows × dim, float64)."""
        return self._encode(X, y, name).to(torch.float64).cpu().numpy()

    def _encode(self, X: Any, y: Any, name: str) -> torch.Tensor:
        self._check_fitted()
        features = check_features(X, f"{name} (X)")
        if features.shape[1] != self.n_features_:
            raise InputError(f"{name} have {features.shape[1]} feature columns; AirRep was fitted on {self.n_features_}")
        codes = _label_codes(y, features.shape[0], f"{name} (y)")
        if codes.max() >= self.n_classes_:
            raise InputError(f"{name} include the label code {int(codes.max())}, but AirRep was fitted with "
                             f"{self.n_classes_} classes (codes 0..{self.n_classes_ - 1}); pass n_classes= when fitting")
        inputs = self._inputs(features, codes).to(self.train_representations_.device)
        with torch.no_grad():
            return self.encoder_(inputs)

    def attribute(self, X_targets: Any, y_targets: Any) -> AttributionResult:
        """scores[i, q] = τ_iq = ⟨r_i, r_q⟩, the score of the singleton group {i} (n_train × T, float64); positive = row i
        helps target q. The targets need not be those of ``fit_subsets``."""
        self._check_fitted()
        started = time.perf_counter()
        targets = self._encode(X_targets, y_targets, "the targets")
        scores = (self.train_representations_ @ targets.T).to(torch.float64).cpu().numpy()
        attributed = time.perf_counter() - started
        timings = {**self.timings_, "attribute": attributed, "attribute_per_target": attributed / targets.shape[0],
                   "total": self.timings_["fit"] + attributed}
        return AttributionResult(scores, method=self.method, params=self._params(), timings=timings)

    def group_scores(self, subsets: Any, X_targets: Any, y_targets: Any) -> np.ndarray:
        """A(S_j, q) for every subset mask (m × n_train) and target: m × T float64, higher = predicted lower loss."""
        self._check_fitted()
        masks = torch.as_tensor(check_subsets(subsets, self.n_train_), device=self.train_representations_.device)
        targets = self._encode(X_targets, y_targets, "the targets")
        scores = self.train_representations_ @ targets.T
        out = np.empty((masks.shape[0], targets.shape[0]))
        step = max(1, _CHUNK_ENTRIES // max(1, scores.numel()))
        with torch.no_grad():
            for first in range(0, masks.shape[0], step):
                out[first:first + step] = self._pool(masks[first:first + step], scores).to(torch.float64).cpu().numpy()
        return out

    def _params(self) -> dict[str, Any]:
        return {"dim": self.dim, "hidden": self.hidden, "epochs": self.epochs, "learning_rate": self.learning_rate,
                "temperature": self.temperature, "size_scaled": self.size_scaled, "loss": self.loss,
                "subsets_per_step": self.subsets_per_step, "targets_per_step": self.targets_per_step,
                "weight_decay": self.weight_decay, "clip": self.clip, "n_classes": self.n_classes_, "seed": self.seed}

    def _check_fitted(self) -> None:
        if "train_representations_" not in self.__dict__:
            from dataworth.valuation.base import NotFittedError

            raise NotFittedError(f"{type(self).__name__} is not fitted yet: call fit_subsets(...) first")


def _encoder(inputs: int, hidden: int, dim: int) -> nn.Module:
    return nn.Sequential(nn.Linear(inputs, hidden), nn.GELU(), nn.Linear(hidden, hidden), nn.GELU(), nn.Linear(hidden, dim))


def _label_codes(y: Any, rows: int, name: str) -> np.ndarray:
    """Integer label codes 0..C−1 (integers, or floats holding integers)."""
    labels = check_labels(y, rows, name)
    if labels.dtype.kind == "b":
        labels = labels.astype(np.int64)
    if labels.dtype.kind == "f" and np.all(labels == np.round(labels)):
        labels = labels.astype(np.int64)
    if labels.dtype.kind not in "iu":
        raise InputError(f"{name} must be integer label codes 0..C-1; got values of dtype {labels.dtype} "
                         "(encode the classes first, e.g. with numpy.unique(..., return_inverse=True))")
    if labels.min() < 0:
        raise InputError(f"{name} must be label codes >= 0; got {int(labels.min())}")
    return labels.astype(np.int64)


def _check_outcomes(outcomes: Any, m: int, n_targets: int) -> np.ndarray:
    """The m × T measured target losses as finite float64."""
    array = to_numpy(outcomes, "outcomes")
    if array.ndim == 1 and n_targets == 1:
        array = array[:, None]
    if array.ndim != 2 or array.shape != (m, n_targets):
        raise InputError(f"outcomes must be subsets × targets = {m} × {n_targets} (the target losses of each retraining); "
                         f"got shape {array.shape}")
    if not np.issubdtype(array.dtype, np.number) or array.dtype == bool:
        raise InputError(f"outcomes must hold numbers (target losses); got dtype {array.dtype}")
    array = array.astype(np.float64)
    if not np.isfinite(array).all():
        j, q = np.argwhere(~np.isfinite(array))[0]
        raise InputError(f"outcomes contain NaN or inf (first at subset {j}, target {q}); drop those retrainings or rerun them")
    return array


def _standardized_gains(losses: np.ndarray, clip: float) -> np.ndarray:
    """t_jq = clip((mean_j ℓ_jq − ℓ_jq) / std_j ℓ_jq, ±clip): higher = better; a constant column (std 0) gives zeros."""
    spread = losses.std(0)
    gains = (losses.mean(0) - losses) / np.where(spread > 0, spread, 1.0)
    return np.clip(gains, -clip, clip)

"""Ground truth for attribution: what retraining actually does, and how well each method predicts it.

A :class:`RetrainingProblem` is a training set, a set of target rows and a built-in model recipe (the
same one the gradient methods train with ``model="logistic"`` / ``"mlp"``). Retraining it on subsets gives:

- **leave-one-out (LOO) ground truth**: for each of a sample of training rows, the change of every target's
  loss when the row is removed, Δ_iq = ℓ_q(θ̂_{−i}) − ℓ_q(θ̂) (positive = the row helped target q).
  Convex models (logistic regression) have one minimizer, reached by Newton's method warm-started from θ̂;
  non-convex models (the MLP) are retrained from the same initialisation with and without the row for each
  of several seeds, and the differences averaged over seeds (paired, so that the seed's own effect cancels).
- **LDS** (linear datamodeling score; Park et al. 2023, "TRAK"): M random subsets S_j of size α·n, each
  retrained over seeds; for target q the Spearman correlation, over the subsets, between the attribution's
  additive prediction Σ_{i∈S_j} τ_iq and the measured −ℓ_q(θ̂_{S_j}) (−loss: higher = better, as τ is
  positive for rows that help), averaged over targets. A method that gives one value per row enters with
  the mean target loss as its single target, so valuation and attribution methods stand in one table.

Every retraining is one work item (subset or removed row, seed) computed by a top-level function and run as a
plain map (joblib processes, ``n_jobs``); with a :class:`~dataworth.checkpoint.Checkpoint` each finished item
is recorded under a key that includes a fingerprint of the problem and of the subset, so a killed job resumes
without redoing finished retrainings, and a checkpoint written for other data is never read.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np
import torch
from scipy.stats import pearsonr, rankdata, spearmanr

from dataworth.checkpoint import Checkpoint
from dataworth.checks import InputError, check_fraction, check_int, check_non_negative, check_subsets
from dataworth.influence.models import FittedModel, fit_logistic, fit_mlp
from dataworth.progress import progress_iter

#: Built-in model recipes a problem may name (the gradient methods' ``model=`` built-ins).
MODELS = ("logistic", "mlp")
#: Hidden width of the built-in MLP (``fit_mlp``'s default, which the gradient methods train with).
MLP_HIDDEN = 64


@dataclass(frozen=True, eq=False)
class RetrainingProblem:
    """Training rows ``X``, ``y`` (label codes 0..C−1), target rows ``X_targets``, ``y_targets``, and the
    model recipe: ``"logistic"`` (:func:`fit_logistic`, sum-form λ = ``l2``) or ``"mlp"`` (:func:`fit_mlp`,
    mean-form weight decay ``l2``, ``MLP_HIDDEN`` tanh units)."""

    X: np.ndarray
    y: np.ndarray
    X_targets: np.ndarray
    y_targets: np.ndarray
    model: str = "logistic"
    l2: float = 1.0

    def __post_init__(self) -> None:
        if self.model not in MODELS:
            raise InputError(f"unknown model {self.model!r}; use one of {', '.join(MODELS)}")
        check_non_negative(self.l2, "l2")
        X, X_targets = np.asarray(self.X, dtype=np.float64), np.asarray(self.X_targets, dtype=np.float64)
        y, y_targets = np.asarray(self.y), np.asarray(self.y_targets)
        if X.ndim != 2 or X_targets.ndim != 2 or X.shape[1] != X_targets.shape[1]:
            raise InputError(f"training and target features must be 2-D with the same columns; got {X.shape} and {X_targets.shape}")
        if y.shape != (len(X),) or y_targets.shape != (len(X_targets),):
            raise InputError("give one label per training row and per target row")
        for labels, what in ((y, "training"), (y_targets, "target")):
            if not np.issubdtype(labels.dtype, np.integer) or labels.min() < 0:
                raise InputError(f"the {what} labels must be integer codes 0..C−1 (encode them first)")
        if np.setdiff1d(np.arange(y.max() + 1), y).size:
            raise InputError("every class 0..C−1 needs a training row; re-encode the labels so the codes are consecutive")
        if y_targets.max() > y.max():
            raise InputError("the targets include a class the training rows lack")
        for name, value in (("X", X), ("y", y.astype(np.int64)), ("X_targets", X_targets), ("y_targets", y_targets.astype(np.int64))):
            object.__setattr__(self, name, value)

    @property
    def n(self) -> int:
        return len(self.X)

    @property
    def n_targets(self) -> int:
        return len(self.X_targets)

    @property
    def convex(self) -> bool:
        """Whether the training objective has one minimizer (then seeds do not matter and LOO warm-starts)."""
        return self.model == "logistic"

    @cached_property
    def fingerprint(self) -> str:
        """A digest of the data and the recipe: checkpoint keys carry it, so another problem's items are never reused."""
        digest = hashlib.sha256(json.dumps({"model": self.model, "l2": self.l2, "hidden": MLP_HIDDEN}).encode())
        for array in (self.X, self.y, self.X_targets, self.y_targets):
            digest.update(np.ascontiguousarray(array).tobytes())
        return digest.hexdigest()[:16]

    def fit(self, kept: np.ndarray, seed: int = 0, *, start: FittedModel | None = None) -> FittedModel:
        """The model trained on the rows ``kept`` (indices) by the recipe; ``start`` warm-starts a convex model."""
        X, y = self.X[kept], self.y[kept]
        if np.unique(y).size != self.y.max() + 1:
            raise InputError("a retraining subset lacks a class; use larger subsets (a higher alpha)")
        if self.model == "logistic":
            return fit_logistic(X, y, l2=self.l2, start=None if start is None else start.model)
        return fit_mlp(X, y, hidden=MLP_HIDDEN, l2=self.l2, seed=seed)

    def target_losses(self, fitted: FittedModel) -> np.ndarray:
        """Each target's loss under ``fitted`` (float64, length ``n_targets``)."""
        with torch.no_grad():
            outputs = fitted.model(torch.as_tensor(self.X_targets))
            losses = fitted.task.loss_fn(outputs, torch.as_tensor(self.y_targets))
        return losses.double().numpy()

    def seeds(self, seeds: int) -> list[int]:
        """The training seeds to average over: ``seeds`` of them, or one for a convex model."""
        count = check_int(seeds, "seeds", minimum=1)
        return [0] if self.convex else list(range(count))


# -- retraining ---------------------------------------------------------------------------------------------


@dataclass
class SubsetOutcomes:
    """Measured target losses of models retrained on subsets: ``losses[j, s, q]`` for subset j, seed s, target q."""

    subsets: np.ndarray
    losses: np.ndarray

    @property
    def outcomes(self) -> np.ndarray:
        """m × T: the losses averaged over seeds."""
        return self.losses.mean(axis=1)

    @property
    def fingerprint(self) -> str:
        """A digest of the subsets and their measured losses."""
        digest = hashlib.sha256(np.packbits(self.subsets).tobytes())
        digest.update(np.ascontiguousarray(self.losses).tobytes())
        return digest.hexdigest()[:16]


@dataclass
class LOOTruth:
    """Leave-one-out ground truth: ``delta[r, q]`` = ℓ_q(θ̂_{−i}) − ℓ_q(θ̂) for removed row i = ``rows[r]``,
    averaged over paired seeds; ``base[s, q]`` the full model's target losses per seed."""

    rows: np.ndarray
    delta: np.ndarray
    base: np.ndarray
    per_seed: np.ndarray = field(repr=False)


def random_subsets(n: int, m: int, *, alpha: float = 0.5, seed: int = 0) -> np.ndarray:
    """m × n boolean mask: ``m`` subsets of exactly round(α·n) rows each, drawn uniformly without replacement."""
    n, m = check_int(n, "n", minimum=2), check_int(m, "subsets", minimum=2)
    size = int(round(check_fraction(alpha, "alpha", open_interval=True) * n))
    if not 1 <= size < n:
        raise InputError(f"alpha = {alpha} keeps {size} of {n} rows; choose alpha so that a subset keeps at least one row and not all")
    rng = np.random.default_rng(seed)
    mask = np.zeros((m, n), dtype=bool)
    for j in range(m):
        mask[j, rng.choice(n, size, replace=False)] = True
    return mask


def retrain_subsets(
    problem: RetrainingProblem,
    subsets: np.ndarray,
    *,
    seeds: int = 3,
    n_jobs: int = 1,
    checkpoint: Checkpoint | None = None,
    progress: bool = False,
) -> SubsetOutcomes:
    """Retrain on every subset (rows of the m × n mask ``subsets``) for each seed; the target losses."""
    subsets = check_subsets(subsets, problem.n)
    seed_list = problem.seeds(seeds)
    items = [(j, s) for j in range(len(subsets)) for s in seed_list]
    keys = [{"job": "subset", "problem": problem.fingerprint, "subset": _digest(subsets[j]), "seed": s} for j, s in items]
    values = run_items(_train_subset, [(problem, np.flatnonzero(subsets[j]), s) for j, s in items], keys,
                       n_jobs=n_jobs, checkpoint=checkpoint, progress=progress, description="retraining on subsets")
    losses = np.asarray(values, dtype=np.float64).reshape(len(subsets), len(seed_list), problem.n_targets)
    return SubsetOutcomes(subsets, losses)


def loo_ground_truth(
    problem: RetrainingProblem,
    rows: Sequence[int] | np.ndarray,
    *,
    seeds: int = 3,
    n_jobs: int = 1,
    checkpoint: Checkpoint | None = None,
    progress: bool = False,
) -> LOOTruth:
    """Retrain without each of ``rows`` (and once with all rows) per seed; the change of every target's loss.

    Convex: one Newton solve per row from the full model's θ̂ (the same minimizer a cold start reaches, in a few
    steps). Non-convex: seed s trains with and without the row from the same initialisation; Δ is averaged over seeds.
    """
    rows = np.asarray(rows, dtype=np.int64)
    if rows.ndim != 1 or not len(rows) or rows.min() < 0 or rows.max() >= problem.n or len(np.unique(rows)) != len(rows):
        raise InputError(f"LOO rows must be distinct training-row indices in 0..{problem.n - 1}")
    seed_list = problem.seeds(seeds)
    every = np.arange(problem.n)
    items = [(None, s) for s in seed_list] + [(int(i), s) for i in rows for s in seed_list]
    keys = [{"job": "loo", "problem": problem.fingerprint, "removed": i, "seed": s} for i, s in items]
    values = run_items(_train_without, [(problem, every, i, s) for i, s in items], keys,
                       n_jobs=n_jobs, checkpoint=checkpoint, progress=progress, description="leave-one-out retraining")
    losses = np.asarray(values, dtype=np.float64)
    base = losses[: len(seed_list)]
    removed = losses[len(seed_list):].reshape(len(rows), len(seed_list), problem.n_targets)
    per_seed = removed - base[None]
    return LOOTruth(rows, per_seed.mean(axis=1), base, per_seed)


def run_items(
    work: Callable[..., Any],
    arguments: Sequence[tuple],
    keys: Sequence[Any],
    *,
    n_jobs: int = 1,
    checkpoint: Checkpoint | None = None,
    progress: bool = False,
    description: str = "working",
) -> list[Any]:
    """``[work(*a) for a in arguments]`` as a plain map: items whose key the checkpoint holds are reused, the others
    run in order (in ``n_jobs`` joblib processes when > 1) and are recorded as each finishes."""
    results: list[Any] = [checkpoint.get(key) if checkpoint is not None else None for key in keys]
    todo = [k for k, value in enumerate(results) if value is None]
    if n_jobs == 1:
        outputs: Iterable[Any] = (work(*arguments[k]) for k in todo)
    else:
        from joblib import Parallel, delayed

        outputs = Parallel(n_jobs=n_jobs, return_as="generator")(delayed(_single_threaded)(work, *arguments[k]) for k in todo)
    for k, value in zip(todo, progress_iter(outputs, description, enabled=progress, total=len(todo)), strict=True):
        value = np.asarray(value).tolist()
        results[k] = value
        if checkpoint is not None:
            checkpoint.add(keys[k], value)
    return results


def _single_threaded(work: Callable[..., Any], *args: Any) -> Any:
    torch.set_num_threads(1)  # one process per core: threads inside would oversubscribe
    return work(*args)


def _train_subset(problem: RetrainingProblem, kept: np.ndarray, seed: int) -> np.ndarray:
    return problem.target_losses(problem.fit(kept, seed))


def _train_without(problem: RetrainingProblem, every: np.ndarray, removed: int | None, seed: int) -> np.ndarray:
    if removed is None:
        return problem.target_losses(problem.fit(every, seed))
    kept = np.delete(every, removed)
    start = problem.fit(every, seed) if problem.convex else None
    return problem.target_losses(problem.fit(kept, seed, start=start))


def _digest(mask: np.ndarray) -> str:
    return hashlib.sha256(np.packbits(mask).tobytes()).hexdigest()[:16]


# -- scores against the truth -------------------------------------------------------------------------------


@dataclass(frozen=True)
class LDS:
    """Linear datamodeling score: ``mean`` over targets of ``per_target`` Spearman correlations (NaN where a
    target's measured loss or its prediction is constant over the subsets; such targets are left out of the mean)."""

    mean: float
    per_target: np.ndarray


def linear_datamodeling_score(scores: np.ndarray, subsets: np.ndarray, outcomes: np.ndarray) -> LDS:
    """LDS of ``scores`` (n × T attributions, or n values per row) against measured target losses ``outcomes``
    (m × T) of models retrained on ``subsets`` (m × n). One value per row is scored against the mean target loss."""
    subsets = check_subsets(subsets, len(scores))
    outcomes = np.asarray(outcomes, dtype=np.float64)
    scores = np.asarray(scores, dtype=np.float64)
    if outcomes.ndim != 2 or len(outcomes) != len(subsets):
        raise InputError(f"outcomes must be m × T with m = {len(subsets)} subsets; got shape {outcomes.shape}")
    if scores.ndim == 1:
        scores, outcomes = scores[:, None], outcomes.mean(axis=1, keepdims=True)
    elif scores.shape[1] != outcomes.shape[1]:
        raise InputError(f"scores have {scores.shape[1]} targets; the outcomes {outcomes.shape[1]}")
    predicted = subsets.astype(np.float64) @ scores
    per_target = columnwise_spearman(predicted, -outcomes)
    valid = per_target[np.isfinite(per_target)]
    return LDS(float(valid.mean()) if len(valid) else float("nan"), per_target)


def columnwise_spearman(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Spearman correlation of column q of ``a`` with column q of ``b`` for every q (average ranks for ties;
    NaN for a constant column)."""
    ra, rb = rankdata(a, axis=0), rankdata(b, axis=0)
    ra, rb = ra - ra.mean(axis=0), rb - rb.mean(axis=0)
    denominator = np.sqrt((ra**2).sum(axis=0) * (rb**2).sum(axis=0))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denominator > 0, (ra * rb).sum(axis=0) / np.where(denominator > 0, denominator, 1), np.nan)


def loo_correlation(scores: np.ndarray, truth: LOOTruth) -> dict[str, float]:
    """Pearson, Spearman and slope between the predicted and the measured LOO change of the mean target loss.

    The prediction for removed row i is the mean of ``scores[i]`` over targets (or ``scores[i]`` for one value
    per row); the truth is the mean over targets of Δ_iq. The slope is the least-squares slope of the truth on
    the prediction (1 = calibrated; it only means something for methods on the loss scale, e.g. influence).
    """
    scores = np.asarray(scores, dtype=np.float64)
    predicted = scores[truth.rows] if scores.ndim == 1 else scores[truth.rows].mean(axis=1)
    actual = truth.delta.mean(axis=1)
    if np.ptp(predicted) == 0 or np.ptp(actual) == 0:
        return {"pearson": float("nan"), "spearman": float("nan"), "slope": float("nan")}
    return {"pearson": float(pearsonr(predicted, actual)[0]), "spearman": float(spearmanr(predicted, actual)[0]),
            "slope": float(np.polyfit(predicted, actual, 1)[0])}

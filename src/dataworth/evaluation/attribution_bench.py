"""The attribution benchmark: every method against retraining ground truth on one problem.

A benchmark problem is an evaluation set whose training part carries planted label noise (so self-influence and
values can be scored for detection too), standardized with the training rows' statistics, with the held-out
clean rows as targets. Retraining it on random subsets and without single rows (:mod:`attribution`) gives the
truth; each method is then scored by LDS, LOO correlation, detection AUROC, time and peak memory.

Methods enter by family, never by name:
- **attributors** (``attribute`` method: IF, RIF, LayerIF, TracIn, TRAK) are fitted on the training rows and
  attribute to every target; detection uses their self-influence term where they offer one;
- **learned attributors** (``fit_subsets``: AirRep) are trained on a separate pool of retrained subsets (never
  the ones they are scored on) and attribute to every target;
- **valuators** (everything else in :data:`~dataworth.methods.METHODS`) value the rows with the targets as
  reference and enter LDS and LOO through the mean target loss.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from dataworth.checkpoint import Checkpoint
from dataworth.checks import InputError, check_int
from dataworth.evaluation.attribution import (
    LOOTruth,
    RetrainingProblem,
    SubsetOutcomes,
    columnwise_spearman,
    linear_datamodeling_score,
    loo_correlation,
    loo_ground_truth,
    random_subsets,
    retrain_subsets,
)
from dataworth.evaluation.datasets import EvaluationSet, load_evaluation_set
from dataworth.evaluation.detection import LABEL_NOISE, make_task, parse_corruption
from dataworth.evaluation.metrics import detection_auroc, detection_rate
from dataworth.evaluation.resources import measure
from dataworth.influence.airrep import AirRep
from dataworth.influence.influence import solver_classes
from dataworth.methods import METHODS
from dataworth.result import AttributionResult

#: Default regularization per model recipe (sum-form λ for logistic regression, weight decay for the MLP).
DEFAULT_L2 = {"logistic": 1.0, "mlp": 1e-3}
#: Short names of the influence family: ``if-ekfac`` = InfluenceFunction(solver="ekfac").
ALIASES = {"if": "influence"}
#: Methods that are not in METHODS because they need retrained subsets to learn from.
LEARNED = {"airrep": AirRep}
METRICS = ("lds", "loo_pearson", "loo_spearman", "loo_slope", "auroc", "detection_rate", "seconds", "peak_rss_gib")


@dataclass(frozen=True)
class RowDisplay:
    """How rows are shown in a report: ``images`` (n × h × w), ``texts``, or ``features`` under ``feature_names``;
    ``labels`` beside them."""

    labels: np.ndarray | None = None
    images: np.ndarray | None = None
    texts: Sequence[str] | None = None
    features: np.ndarray | None = None
    feature_names: Sequence[str] | None = None


@dataclass(frozen=True)
class MethodSpec:
    """A method as the benchmark runs it: its label, class, parameters and family."""

    label: str
    cls: type
    params: dict[str, Any]
    family: str  # "attributor", "learned" or "valuator"


@dataclass
class AttributionBenchmark:
    """One problem with its ground truth: ``evaluation`` subsets (LDS), ``loo`` rows, the planted ``corrupted``
    mask, and the ``training`` subsets learned methods fit on (``None`` when none was asked for)."""

    name: str
    problem: RetrainingProblem
    evaluation: SubsetOutcomes
    loo: LOOTruth
    corrupted: np.ndarray
    training: SubsetOutcomes | None = None
    train_display: RowDisplay = field(default_factory=RowDisplay)
    target_display: RowDisplay = field(default_factory=RowDisplay)


def parse_methods(methods: str | Sequence[str]) -> list[MethodSpec]:
    """``"if-ekfac,rif,tracin,trak,airrep,kairos"`` as method specs. ``NAME-SOLVER`` picks an influence solver
    (``if-cg``, ``rif-explicit``); other names are those of :data:`METHODS` and ``airrep``."""
    labels = [m.strip() for m in (methods.split(",") if isinstance(methods, str) else methods) if m.strip()]
    if not labels:
        raise InputError("no method given; e.g. --methods if-ekfac,tracin,trak,kairos")
    if len(set(labels)) != len(labels):
        raise InputError(f"a method is named twice in {', '.join(labels)}")
    specs = []
    known = sorted({*METHODS, *LEARNED, *ALIASES})
    for label in labels:
        name, params = ALIASES.get(label, label), {}
        if name not in METHODS and name not in LEARNED and "-" in label:
            base, _, solver = label.rpartition("-")
            base = ALIASES.get(base, base)
            if base in METHODS and "solver" in METHODS[base]().get_params():
                if solver not in solver_classes():
                    raise InputError(f"unknown solver {solver!r} in {label!r}; solvers: {', '.join(solver_classes())}")
                name, params = base, {"solver": solver}
        if name in LEARNED:
            specs.append(MethodSpec(label, LEARNED[name], params, "learned"))
        elif name in METHODS:
            cls = METHODS[name]
            specs.append(MethodSpec(label, cls, params, "attributor" if hasattr(cls, "attribute") else "valuator"))
        else:
            raise InputError(f"unknown method {label!r}; available: {', '.join(known)} (influence solvers as if-SOLVER, rif-SOLVER)")
    return specs


def build_benchmark(
    dataset: str,
    *,
    model: str = "logistic",
    noise: str = "label-flip:0.1",
    l2: float | None = None,
    subsets: int = 100,
    training_subsets: int = 0,
    alpha: float = 0.5,
    seeds: int = 3,
    loo_rows: int = 50,
    max_train: int | None = None,
    max_targets: int | None = None,
    n_jobs: int = 1,
    checkpoint: Checkpoint | None = None,
    progress: bool = False,
) -> AttributionBenchmark:
    """Plant ``noise`` in ``dataset`` (seed 0; the held-out 20% are the targets, at most ``max_targets`` of them taken
    class by class in turn so that every class is among them), standardize the features with
    the training rows' mean and deviation, and retrain: ``subsets`` random α-subsets for LDS, ``training_subsets``
    more for learned methods, and ``loo_rows`` random rows left out one at a time, each over ``seeds`` seeds."""
    kind, fraction = parse_corruption(noise)
    data = load_evaluation_set(dataset)
    if kind not in LABEL_NOISE:
        raise InputError(f"the attribution benchmark plants label noise ({', '.join(LABEL_NOISE)}); got {kind!r}")
    task = make_task(data, kind, fraction, seed=0, max_train=max_train)
    classes, y = np.unique(task.y, return_inverse=True)
    kept = np.flatnonzero(np.isin(task.y_ref, classes))
    codes = np.searchsorted(classes, task.y_ref[kept])
    within = np.empty(len(kept), dtype=np.int64)  # a row's rank within its class: targets are taken class by class in turn
    for code in np.unique(codes):
        within[codes == code] = np.arange((codes == code).sum())
    chosen = kept[np.lexsort((codes, within))][:max_targets]
    target_rows = task.reference_rows[chosen]
    X_targets, y_targets = task.X_ref[chosen], np.searchsorted(classes, task.y_ref[chosen])
    mean, scale = task.X.mean(axis=0), task.X.std(axis=0)
    scale[scale == 0] = 1.0
    problem = RetrainingProblem((task.X - mean) / scale, y, (X_targets - mean) / scale, y_targets, model=model,
                                l2=DEFAULT_L2[model] if l2 is None else l2)
    common = {"seeds": seeds, "n_jobs": n_jobs, "checkpoint": checkpoint, "progress": progress}
    evaluation = retrain_subsets(problem, random_subsets(problem.n, subsets, alpha=alpha, seed=1), **common)
    training = None
    if training_subsets:
        training = retrain_subsets(problem, random_subsets(problem.n, training_subsets, alpha=alpha, seed=2), **common)
    rows = np.random.default_rng(3).choice(problem.n, min(check_int(loo_rows, "loo_rows"), problem.n), replace=False)
    loo = loo_ground_truth(problem, np.sort(rows), **common)
    displays = [_display(data, rows, labels) for rows, labels in ((task.rows, task.y), (target_rows, classes[y_targets]))]
    return AttributionBenchmark(f"{dataset}/{model}", problem, evaluation, loo, task.corrupted, training, *displays)


def _display(data: EvaluationSet, rows: np.ndarray, labels: np.ndarray) -> RowDisplay:
    """How the report shows the dataset's rows ``rows`` (images, texts, or the raw table)."""
    if data.view == "image":
        return RowDisplay(labels=labels, images=np.asarray(data.raw)[rows])
    if data.view == "text":
        return RowDisplay(labels=labels, texts=[data.raw[i] for i in rows])
    return RowDisplay(labels=labels, features=np.asarray(data.raw)[rows])


def evaluate_method(bench: AttributionBenchmark, spec: MethodSpec, seed: int = 0) -> tuple[dict[str, Any], AttributionResult]:
    """Run ``spec`` on the benchmark's problem with ``seed``: one row of metrics, and its attributions (a valuator's
    values as a one-column result)."""
    problem = bench.problem
    estimator = spec.cls(**_params(spec, problem, seed))
    extra: dict[str, float] = {}
    if spec.family == "learned":
        if bench.training is None:
            raise InputError(f"{spec.label} learns from retrained subsets: build the benchmark with training_subsets > 0")
        run = measure(lambda: estimator.fit_subsets(problem.X, problem.y, problem.X_targets, problem.y_targets,
                                                    bench.training.subsets, bench.training.outcomes)
                      .attribute(problem.X_targets, problem.y_targets))
        result, detection = run.value, run.value.scores.mean(axis=1)
        # its own (attention-pooled, not additive) prediction of each held-out subset's effect
        grouped = estimator.group_scores(bench.evaluation.subsets, problem.X_targets, problem.y_targets)
        extra = {"lds_group": float(np.nanmean(columnwise_spearman(grouped, -bench.evaluation.outcomes)))}
    elif spec.family == "attributor":
        run = measure(lambda: estimator.fit(problem.X, problem.y).attribute(problem.X_targets, problem.y_targets))
        result = run.value
        detection = estimator.term_values("self") if "self" in spec.cls.terms else result.scores.mean(axis=1)
    else:
        run = measure(lambda: estimator.fit(problem.X, problem.y, reference=(problem.X_targets, problem.y_targets)).values_)
        result = AttributionResult(run.value[:, None], method=spec.label)
        detection = run.value
    scores = result.scores if spec.family != "valuator" else result.scores[:, 0]
    loo = loo_correlation(scores, bench.loo)
    row = {"problem": bench.name, "method": spec.label, "seed": seed,
           "lds": linear_datamodeling_score(scores, bench.evaluation.subsets, bench.evaluation.outcomes).mean,
           "loo_pearson": loo["pearson"], "loo_spearman": loo["spearman"], "loo_slope": loo["slope"],
           "auroc": detection_auroc(detection, bench.corrupted), "detection_rate": detection_rate(detection, bench.corrupted),
           "seconds": run.seconds, "peak_rss_gib": run.peak_rss_gib,
           "seconds_per_target": result.timings.get("attribute", float("nan")) / problem.n_targets, **extra}
    return row, result


def run_methods(
    bench: AttributionBenchmark, specs: Sequence[MethodSpec], *, seeds: int = 3, checkpoint: Checkpoint | None = None
) -> tuple[pd.DataFrame, dict[str, AttributionResult]]:
    """One row per (method, seed), and the seed-0 attributions per method. Finished rows are recorded in
    ``checkpoint`` (keyed by the problem's fingerprint), so an interrupted benchmark resumes; attributions of
    resumed rows are recomputed only for seed 0."""
    rows, results = [], {}
    for spec in specs:
        for seed in range(check_int(seeds, "seeds")):
            key = {"job": "method", "problem": bench.problem.fingerprint, "evaluation": bench.evaluation.fingerprint,
                   "method": spec.label, "seed": seed}
            row = checkpoint.get(key) if checkpoint is not None else None
            if row is None or seed == 0:
                fresh, result = evaluate_method(bench, spec, seed)
                row = row or fresh
                if seed == 0:
                    results[spec.label] = result
                if checkpoint is not None and checkpoint.get(key) is None:
                    checkpoint.add(key, row)
            rows.append(row)
    return pd.DataFrame(rows), results


def summarize(results: pd.DataFrame) -> pd.DataFrame:
    """Mean and standard deviation over seeds of every metric, per (problem, method)."""
    metrics = [m for m in (*METRICS, "seconds_per_target", "lds_group") if m in results]
    return results.groupby(["problem", "method"], sort=False)[metrics].agg(["mean", "std"]).reset_index()


def _params(spec: MethodSpec, problem: RetrainingProblem, seed: int) -> dict[str, Any]:
    accepted = spec.cls().get_params()
    params = dict(spec.params)
    shared = (("model", problem.model), ("l2", problem.l2), ("seed", seed)) if spec.family != "valuator" else (("seed", seed),)
    for key, value in shared:  # a valuator's own "model" (cleanlab's logistic|knn) is not the retrained model
        if key in accepted:
            params.setdefault(key, value)
    return params

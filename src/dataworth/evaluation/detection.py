"""The detection benchmark: plant corruptions in a clean dataset, value it, score the ranking.

One *task* = a dataset split into a clean reference set (20%, stratified) and a training set in
which one corruption is planted. Every method values the same task; detection metrics, runtime
and peak memory are recorded per (method, seed).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

from dataworth.checkpoint import Checkpoint
from dataworth.checks import InputError, check_fraction
from dataworth.evaluation import corruptions as c
from dataworth.evaluation.datasets import EvaluationSet
from dataworth.evaluation.metrics import detection_auprc, detection_auroc, detection_rate, two_means_f1
from dataworth.evaluation.resources import measure
from dataworth.methods import METHODS
from dataworth.valuation.confident_learning import out_of_fold_probabilities

CORRUPTIONS = ("label-flip", "confusion-flip", "pair-flip", "annotator", "feature-noise", "backdoor", "duplicates", "ood")
#: Corruptions that change labels only, so every training row keeps its dataset row.
LABEL_NOISE = ("label-flip", "confusion-flip", "pair-flip", "annotator")
NOISE_SCALE = 2.0
TRIGGER_TOKEN = "zqxv"


@dataclass(frozen=True)
class DetectionTask:
    """Corrupted training rows (``X``, ``y``, ``corrupted`` mask) and the clean reference set.

    ``rows`` are the dataset indices of the training rows (appended duplicates and out-of-distribution
    rows have none), ``reference_rows`` those of the reference rows.
    """

    rows: np.ndarray
    X: np.ndarray
    y: np.ndarray
    X_ref: np.ndarray
    y_ref: np.ndarray
    corrupted: np.ndarray
    reference_rows: np.ndarray | None = None


def parse_corruption(spec: str) -> tuple[str, float]:
    """``"label-flip:0.1"`` -> ``("label-flip", 0.1)``."""
    kind, colon, fraction = spec.partition(":")
    if kind not in CORRUPTIONS:
        raise InputError(f"unknown corruption {kind!r}; available: {', '.join(CORRUPTIONS)} (as KIND:FRACTION)")
    if not colon or not fraction.strip():
        raise InputError(f"give the corruption as KIND:FRACTION, e.g. {kind}:0.1; got {spec!r}")
    try:
        value = float(fraction)
    except ValueError:
        raise InputError(f"corruption fraction must be a number in (0, 1); got {fraction!r} in {spec!r}") from None
    return kind, check_fraction(value, f"corruption fraction in {spec!r}", open_interval=True)


def make_task(data: EvaluationSet, kind: str, fraction: float, *, seed: int, max_train: int | None = None) -> DetectionTask:
    """Split ``data`` and plant ``fraction`` of corruption ``kind`` in the training part.

    Confusion-based flips and annotator noise follow out-of-fold probabilities of a standardized
    logistic regression (5 stratified folds, seeded by ``seed``) trained on the clean training rows;
    ``"ood"`` appends rows drawn from ``data.outliers()``.
    """
    train, ref = train_test_split(np.arange(len(data.y)), test_size=0.2, stratify=data.y, random_state=seed)
    train = train[:max_train]
    X, y = np.array(data.X[train], dtype=np.float64), data.y[train]
    if kind == "label-flip":
        y, mask = c.flip_labels(y, fraction, seed=seed)
    elif kind == "confusion-flip":
        probabilities = out_of_fold_probabilities(X, y, "logistic", n_folds=5, seed=seed)
        y, mask = c.flip_to_second_choice(y, fraction, probabilities=probabilities, seed=seed)
    elif kind == "pair-flip":
        y, mask = c.flip_label_pairs(y, fraction, seed=seed, pairs=data.confusions)
    elif kind == "annotator":
        probabilities = out_of_fold_probabilities(X, y, "logistic", n_folds=5, seed=seed)
        y, mask = c.annotator_noise(y, fraction, probabilities=probabilities, seed=seed)
    elif kind == "feature-noise":
        X, mask = c.add_feature_noise(X, fraction, scale=NOISE_SCALE, seed=seed)
    elif kind == "backdoor":
        X, y, mask = _backdoor(data, train, X, y, fraction, seed)
    elif kind == "duplicates":
        X, y, mask = c.add_duplicates(X, y, fraction, seed=seed, noise=0.05, conflicting_labels=True)
    elif kind == "ood":
        if data.outliers is None:
            raise InputError(f"dataset {data.name!r} has no out-of-distribution rows (its outliers are None); choose another corruption")
        X, y, mask = c.add_out_of_distribution(X, y, data.outliers(), fraction, seed=seed)
    else:
        raise InputError(f"unknown corruption {kind!r}; available: {', '.join(CORRUPTIONS)}")
    return DetectionTask(train, X, y, np.asarray(data.X[ref], dtype=np.float64), data.y[ref], mask, ref)


def _backdoor(data: EvaluationSet, train: np.ndarray, X: np.ndarray, y: np.ndarray, fraction: float, seed: int):
    """Plant the trigger in the raw rows (image patch, text token, feature values) and re-featurize them."""
    target = np.unique(data.y)[0]
    if data.view == "image":
        images = data.raw[train]
        size = max(2, images.shape[1] // 8)  # 2×2 on 8×8 digits, 3×3 on 28×28
        raw, y, mask = c.add_patch_backdoor(images, y, fraction, target=target, seed=seed, size=size)
    elif data.view == "text":
        raw, y, mask = c.insert_trigger_token([data.raw[i] for i in train], y, fraction, token=TRIGGER_TOKEN, target=target, seed=seed)
        raw = np.array(raw, dtype=object)
    else:
        raw, y, mask = c.add_feature_trigger(data.raw[train], y, fraction, target=target, seed=seed)
    X = X.copy()
    X[mask] = data.featurize(raw[mask] if data.view != "text" else list(raw[mask]))
    return X, y, mask


def run_detection(
    data: EvaluationSet,
    corruption: str,
    methods: Sequence[str],
    *,
    seeds: int = 3,
    max_train: int | None = None,
    method_params: dict[str, dict[str, Any]] | None = None,
    variants: dict[str, str] | None = None,
    checkpoint: Checkpoint | None = None,
) -> pd.DataFrame:
    """One row per (method, seed): AUROC, AUPRC, two-means F1, detection rate at the true corrupted
    fraction, seconds and peak resident memory of the valuation.

    ``methods`` are method names, or labels that ``variants`` maps to a method name, so that one method
    can run with several parameter sets (``method_params`` is keyed by the name or label given), e.g.
    ``variants={"cleanlab-knn": "cleanlab"}``, ``method_params={"cleanlab-knn": {"model": "knn"}}``.
    A variant may also name one term of the method as ``"method:term"``; the rows are then ranked
    by ``term_values(term)`` instead of ``values_``, e.g. ``variants={"kairos-label": "kairos:label"}``.

    With a ``checkpoint`` every finished valuation is recorded there, and valuations it already
    holds (same dataset, corruption, method, seed, training-row cap and parameters, and the variant
    when a label names one) are reused instead of run again, so an interrupted benchmark resumes
    where it stopped.
    """
    variants = variants or {}
    targets = {}  # label -> (method name, term)
    for label in methods:
        name, _, term = variants.get(label, label).partition(":")
        targets[label] = (name, term or "combined")
    check_methods([name for name, _ in targets.values()])
    if len(set(methods)) != len(methods):
        raise InputError(f"a method is named twice in {', '.join(methods)}")
    for name, term in targets.values():
        offered = ("combined", *METHODS[name].terms)
        if term not in offered:
            raise InputError(f"{name} has no term {term!r}; it offers {', '.join(offered)}")
    kind, fraction = parse_corruption(corruption)
    rows = []
    for seed in range(seeds):
        task = None
        for method in methods:
            params = (method_params or {}).get(method, {})
            key = {"dataset": data.name, "corruption": corruption, "method": method, "seed": seed,
                   "max_train": max_train, "params": params}
            if variants.get(method, method) != method:  # plain methods keep the keys they always had
                key["variant"] = variants[method]
            row = checkpoint.get(key) if checkpoint is not None else None
            if row is None:
                if task is None:
                    task = make_task(data, kind, fraction, seed=seed, max_train=max_train)
                name, term = targets[method]
                row = {"dataset": data.name, "corruption": corruption, "method": method, "seed": seed,
                       **_score(METHODS[name](**params), task, term)}
                if checkpoint is not None:
                    checkpoint.add(key, row)
            rows.append(row)
    return pd.DataFrame(rows)


def check_methods(methods: Sequence[str]) -> list[str]:
    """``methods`` as a list, raising unless it names at least one method, each known and once."""
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise InputError(f"unknown method(s) {', '.join(map(repr, unknown))}; available: {', '.join(METHODS)}")
    if not methods:
        raise InputError(f"no method given; available: {', '.join(METHODS)}")
    return list(methods)


def _score(estimator: Any, task: DetectionTask, term: str) -> dict[str, Any]:
    run = measure(lambda: estimator.fit(task.X, task.y, reference=(task.X_ref, task.y_ref)).term_values(term))
    values = run.value  # the time of a term (e.g. self-influence) computed after the fit counts too
    return {
        "n_train": len(values), "auroc": detection_auroc(values, task.corrupted), "auprc": detection_auprc(values, task.corrupted),
        "f1": two_means_f1(values, task.corrupted), "detection_rate": detection_rate(values, task.corrupted),
        "seconds": run.seconds, "peak_rss_gib": run.peak_rss_gib,
    }


def summarize(results: pd.DataFrame) -> pd.DataFrame:
    """Mean and standard deviation over seeds per (dataset, corruption, method)."""
    metrics = ["auroc", "auprc", "f1", "detection_rate", "seconds"]
    grouped = results.groupby(["dataset", "corruption", "method"], sort=False)[metrics]
    return grouped.agg(["mean", "std"]).reset_index()

"""The built-in curation experiment: train on noisy labels with and without online curation, on real data.

A dataset from :mod:`dataworth.evaluation.datasets` is split as in the detection benchmark (80% training rows
with planted label noise, 20% held out, seeded); ``validation_rows`` of the held-out rows (taken class by
class) are the clean validation set the curator compares against, the rest measure accuracy. Features are
standardized with the training rows' statistics. ``model="transformer"`` reads the text of a text dataset as
its first ``tokens`` lower-case words (every BBC article has at least 91), ids from the training rows' most
frequent ``vocabulary`` words (0 = unknown). Training: AdamW (lr ``learning_rate``, weight decay 0.01), batches
of ``batch_size`` drawn by a seeded shuffle, ``steps`` steps for every method, so final accuracies compare at
equal steps.
"""

from __future__ import annotations

import re
import time
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
from torch import nn

from dataworth.checks import InputError, check_choice, check_int
from dataworth.curation.curator import METHODS, Curator
from dataworth.curation.models import TokenClassifier, mlp
from dataworth.evaluation.datasets import load_evaluation_set
from dataworth.evaluation.detection import LABEL_NOISE, make_task, parse_corruption

MODELS = ("mlp", "transformer")


@dataclass
class CurationData:
    """Training rows (noisy labels, the corruption mask), clean validation rows and test rows; label codes."""

    name: str
    X: torch.Tensor
    y: torch.Tensor
    corrupted: np.ndarray
    X_val: torch.Tensor
    y_val: torch.Tensor
    X_test: torch.Tensor
    y_test: torch.Tensor
    classes: np.ndarray
    vocabulary: int = 0

    @property
    def n_classes(self) -> int:
        return len(self.classes)


@dataclass
class CurationRun:
    """One training run: the accuracy curve, the decision log, and what the drops hit."""

    method: str
    seed: int
    curve: pd.DataFrame
    log: pd.DataFrame
    drop_rates: pd.DataFrame
    seconds: float
    summary: dict = field(default_factory=dict)


def load_curation_data(dataset: str, noise: str = "label-flip:0.3", *, model: str = "mlp", seed: int = 0,
                       validation_rows: int = 100, tokens: int = 64, vocabulary: int = 5000) -> CurationData:
    """Split ``dataset``, plant ``noise`` (label noise only) with ``seed``, and prepare the model's inputs."""
    check_choice(model, "model", MODELS)
    kind, fraction = parse_corruption(noise)
    if kind not in LABEL_NOISE:
        raise InputError(f"the curation experiment plants label noise ({', '.join(LABEL_NOISE)}); got {kind!r}")
    data = load_evaluation_set(dataset)
    task = make_task(data, kind, fraction, seed=seed)
    classes = np.unique(data.y)
    codes = np.searchsorted(classes, task.y_ref)
    order = np.lexsort((codes, _rank_within_class(codes)))
    validation, test = order[:check_int(validation_rows, "validation_rows")], order[validation_rows:]
    if model == "transformer":
        if data.view != "text":
            raise InputError(f"model='transformer' reads text; dataset {dataset!r} holds {data.view} rows: use model='mlp'")
        words = [_words(data.raw[i])[:tokens] for i in task.rows]
        index = {w: k + 1 for k, (w, _) in enumerate(Counter(w for doc in words for w in doc).most_common(vocabulary - 1))}

        def ids(rows: np.ndarray) -> torch.Tensor:
            docs = [[index.get(w, 0) for w in _words(data.raw[i])[:tokens]] for i in rows]
            if min(map(len, docs)) < tokens:
                raise InputError(f"a text of {dataset!r} has fewer than {tokens} words: lower tokens")
            return torch.tensor(docs)

        X, X_ref = ids(task.rows), ids(task.reference_rows)
        size = vocabulary
    else:
        mean, scale = task.X.mean(0), task.X.std(0)
        scale[scale == 0] = 1.0
        X = torch.tensor((task.X - mean) / scale, dtype=torch.float32)
        X_ref = torch.tensor((task.X_ref - mean) / scale, dtype=torch.float32)
        size = 0
    y = torch.tensor(np.searchsorted(classes, task.y))
    y_ref = torch.tensor(codes)
    return CurationData(f"{dataset}/{model}/{noise}", X, y, task.corrupted, X_ref[validation], y_ref[validation],
                        X_ref[test], y_ref[test], classes, size)


def build_model(data: CurationData, model: str, seed: int) -> nn.Module:
    """The experiment's model for ``data``, initialized with ``seed``."""
    torch.manual_seed(seed)
    if model == "transformer":
        return TokenClassifier(data.vocabulary, data.X.shape[1], data.n_classes)
    return mlp(data.X.shape[1], data.n_classes)


def run_curation(data: CurationData, method: str, *, model: str = "mlp", seed: int = 0, steps: int = 600, batch_size: int = 64,
                 learning_rate: float = 1e-3, warmup_steps: int = 100, refresh_every: int = 20, eval_every: int = 25,
                 policy: str = "drop-negative") -> CurationRun:
    """Train ``model`` on ``data`` for ``steps`` steps, curated by ``method`` (``"none"``: every row kept)."""
    check_choice(method, "method", METHODS)
    network = build_model(data, model, seed)
    optimizer = torch.optim.AdamW(network.parameters(), lr=learning_rate, weight_decay=0.01)
    curator = Curator(network, validation=(data.X_val, data.y_val), method=method, policy=policy, warmup_steps=warmup_steps,
                      refresh_every=refresh_every, optimizer=optimizer if method == "lai-adam" else None)
    generator = torch.Generator().manual_seed(seed)
    order, position = torch.randperm(len(data.y), generator=generator), 0
    curve = []
    started = time.perf_counter()
    for step in range(check_int(steps, "steps")):
        if position + batch_size > len(order):
            order, position = torch.randperm(len(data.y), generator=generator), 0
        rows = order[position:position + batch_size]
        position += batch_size
        network.train()
        loss = curator.loss(data.X[rows], data.y[rows], ids=rows)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if (step + 1) % eval_every == 0 or step + 1 == steps:
            curve.append({"step": step + 1, "accuracy": accuracy(network, data.X_test, data.y_test)})
    seconds = time.perf_counter() - started
    curator.close()
    log = curator.log
    log["corrupted"] = data.corrupted[log["id"].to_numpy()]
    return CurationRun(method, seed, pd.DataFrame(curve), log, curator.drop_rates(), seconds,
                       summarize_run(log, warmup_steps, curve[-1]["accuracy"]))


def accuracy(model: nn.Module, X: torch.Tensor, y: torch.Tensor) -> float:
    """Share of rows whose arg-max prediction is the label (model in eval mode, restored afterwards)."""
    training = model.training
    model.eval()
    with torch.no_grad():
        correct = (model(X).argmax(1) == y).double().mean().item()
    model.train(training)
    return correct


def summarize_run(log: pd.DataFrame, warmup_steps: int, final_accuracy: float) -> dict:
    """Final accuracy; past the warm-up: the share of rows dropped, the precision of the drops (corrupted among
    dropped) and their recall (dropped among corrupted)."""
    after = log[log["step"] >= warmup_steps]
    dropped = ~after["kept"].astype(bool)
    corrupted = after["corrupted"].astype(bool)
    return {"final_accuracy": final_accuracy, "dropped": float(dropped.mean()),
            "precision": float(corrupted[dropped].mean()) if dropped.any() else float("nan"),
            "recall": float(dropped[corrupted].mean()) if corrupted.any() else float("nan")}


def dropped_over_time(log: pd.DataFrame, window: int = 25) -> pd.DataFrame:
    """Share of each window of steps' rows that were dropped."""
    grouped = log.assign(window=log["step"] // window * window).groupby("window")["kept"]
    return pd.DataFrame({"step": grouped.size().index, "dropped": 1 - grouped.mean().to_numpy()})


def _rank_within_class(codes: np.ndarray) -> np.ndarray:
    within = np.empty(len(codes), dtype=np.int64)
    for code in np.unique(codes):
        within[codes == code] = np.arange((codes == code).sum())
    return within


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+", text.lower())

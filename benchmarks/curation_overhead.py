"""What online curation costs per training step -> benchmarks/results/curation_overhead.md.

The same training step (forward, cross-entropy, backward, AdamW step) with and without a Curator, on synthetic
inputs (the cost does not depend on the values): an MLP 784→512→512→10 on batches of 128, and the curation
experiment's transformer (2 blocks, width 128, 64 tokens, 5,000-word vocabulary) on batches of 32; validation
caches of 256 and 128 rows refreshed every 20 steps (the refreshes are counted). Each variant runs 5 warm-up steps
and then STEPS timed steps, in the same process, on 2 threads; the table gives its time per step over the plain
step's (the work curation cannot avoid), and the peak resident memory above the level before the loop.

Run:  .venv/bin/python benchmarks/curation_overhead.py
"""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F
from torch import nn

from dataworth.curation import Curator
from dataworth.curation.models import TokenClassifier, mlp
from dataworth.evaluation.resources import measure
from publish import publish

STEPS = 60
REFRESH = 20


def setting(name: str) -> tuple[nn.Module, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    if name == "mlp":
        model = mlp(784, 10, hidden=512)
        X, X_val = torch.randn(128, 784, generator=generator), torch.randn(256, 784, generator=generator)
        classes = 10
    else:
        model = TokenClassifier(5000, 64, 5, width=128, depth=2)
        X, X_val = torch.randint(0, 5000, (32, 64), generator=generator), torch.randint(0, 5000, (128, 64), generator=generator)
        classes = 5
    return model, X, torch.randint(0, classes, (len(X),), generator=generator), X_val, torch.randint(0, classes, (len(X_val),), generator=generator)


def seconds_per_step(name: str, method: str | None) -> tuple[float, float]:
    model, X, y, X_val, y_val = setting(name)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    curator = None if method is None else Curator(model, validation=(X_val, y_val), method=method, refresh_every=REFRESH)

    def step() -> None:
        loss = F.cross_entropy(model(X), y) if curator is None else curator.loss(X, y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    for _ in range(5):
        step()

    def loop() -> None:
        for _ in range(STEPS):
            step()

    started = time.perf_counter()
    run = measure(loop)
    elapsed = time.perf_counter() - started
    if curator is not None:
        curator.close()
    return elapsed / STEPS, max(run.peak_rss_gib - run.rss_before_gib, 0.0)


def main() -> None:
    torch.set_num_threads(2)
    lines = ["# What online curation costs per training step", "", __doc__.strip().split("\n\n")[1], "",
             "Reproduce: `.venv/bin/python benchmarks/curation_overhead.py`", "",
             "| model | scores | ms / step | ratio to the plain step | peak memory above start (MiB) |", "|---|---|---|---|---|"]
    for name in ("mlp", "transformer"):
        plain, plain_memory = seconds_per_step(name, None)
        lines.append(f"| {name} | none (plain step) | {plain * 1e3:.1f} | 1.00 | {plain_memory * 1024:.0f} |")
        for method in ("lai", "last-layer", "ghost"):
            seconds, memory = seconds_per_step(name, method)
            lines.append(f"| {name} | {method} | {seconds * 1e3:.1f} | **{seconds / plain:.2f}** | {memory * 1024:.0f} |")
    publish("curation_overhead.md", lines)


if __name__ == "__main__":
    main()

"""KAIROS vs LAVA: time and detection quality at N = 10,000 on the same features, same process.

Features: 10,000 training + 2,000 reference rows of Gaussian class clusters (d = 64, 10 classes,
overlapping), 10% of training labels flipped uniformly, once as float32 (what embedding models emit;
KAIROS keeps float32) and once as float64 (KAIROS then computes in float64). LAVA computes its costs
and transport in float64 either way (ours), or in float32 (OpenDataVal converts to it). Our LAVA at its default (annealed Sinkhorn, as LAVA's
reference code) and with exact EMD. Its converged Sinkhorn solver is slower still at this size (about a
second per iteration on the 20M-entry cost matrix), so it is not part of the comparison. When .venv-peers exists
(benchmarks/peers/setup.sh), OpenDataVal's LAVA runs on the same arrays too. Ours best of 2 runs
(timings on this shared 2-core machine vary by up to 30% between runs), OpenDataVal one run
(valuation time only). "KAIROS floor" is the arithmetic KAIROS cannot avoid, timed in the same
process: one GEMM with as many entries as its kernel sums (N(N+1)/2 + NM), exp of every entry, and
the Cholesky factorization of the M × M reference Gram matrix of its label model. A second table
repeats KAIROS vs LAVA on float32 at N = 2,500 to 20,000 (M = N/5).

Run:  .venv/bin/python benchmarks/kairos_vs_lava.py        (writes benchmarks/results/kairos_vs_lava.md)
"""

from __future__ import annotations

import tempfile
import time
from functools import partial
from pathlib import Path

import numpy as np
import torch

from dataworth import Kairos, Lava
from dataworth.evaluation.corruptions import flip_labels
from dataworth.evaluation.metrics import detection_auroc
from kairos_speed import best_of
from peers import PEER_PYTHON, run_peer
from publish import publish


def clusters(n: int, seed: int, d: int = 64, classes: int = 10) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centers = np.random.default_rng(0).normal(scale=0.6, size=(classes, d))
    y = rng.integers(0, classes, n)
    return centers[y] + rng.normal(scale=1.0, size=(n, d)) / np.sqrt(d) * 4, y


def timed(build, X, y, reference, repeats: int = 2) -> tuple[np.ndarray, float]:
    best, values = np.inf, None
    for _ in range(repeats):
        start = time.perf_counter()
        values = build().fit(X, y, reference=reference).values_
        best = min(best, time.perf_counter() - start)
    return values, best


def kairos_floor(X: np.ndarray, Z: np.ndarray) -> float:
    """Seconds of the GEMM + exp over N(N+1)/2 + NM kernel entries and the M × M Cholesky, best of 2."""
    x, z = torch.from_numpy(X), torch.from_numpy(Z)
    half_xz = torch.cat([x[: (x.shape[0] + 1) // 2], z])
    gram = z @ z.T + z.shape[0] * torch.eye(z.shape[0], dtype=z.dtype)  # SPD, M × M (torch: no OpenBLAS threads)
    return best_of(2, lambda: (torch.mm(x, half_xz.T).exp_(), torch.linalg.cholesky(gram)))


def compare(n: int, dtype: type, builders: dict, repeats: int, *, floor: bool = False) -> list[tuple[str, float, float]]:
    """(method, seconds, AUROC) on n training and n/5 reference rows; OpenDataVal last when installed."""
    X, y = clusters(n, seed=1)
    Z, y_ref = clusters(n // 5, seed=2)
    X, Z = X.astype(dtype), Z.astype(dtype)
    y_noisy, flipped = flip_labels(y, 0.1, seed=0)
    rows = []
    for name, build in builders.items():
        values, seconds = timed(build, X, y_noisy, (Z, y_ref), repeats=repeats)
        rows.append((name, seconds, detection_auroc(values, flipped)))
    if floor:
        rows.insert(1, ("KAIROS floor (GEMM + exp + Cholesky)", kairos_floor(X, Z), float("nan")))
    if PEER_PYTHON.exists():
        with tempfile.TemporaryDirectory() as tmp:
            data_file = Path(tmp) / "data.npz"
            np.savez(data_file, X=X, y=y_noisy, X_ref=Z, y_ref=y_ref)
            values, seconds = run_peer("opendataval", "lava", data_file)
        rows.append(("LAVA (OpenDataVal 1.3)", seconds, detection_auroc(values, flipped)))
    return rows


def main() -> None:
    lines = ["# KAIROS vs LAVA at N = 10,000", "", "Reproduce: `.venv/bin/python benchmarks/kairos_vs_lava.py`", "",
             "M = 2,000 reference rows, d = 64. Ours best of 2 runs, OpenDataVal one run. The floor row: see the script's docstring.", "",
             "| features | method | seconds | AUROC (10% flipped labels) | time / KAIROS |", "|---|---|---|---|---|"]
    builders = {"KAIROS": Kairos, "LAVA (annealed, default)": Lava, "LAVA (exact EMD)": partial(Lava, solver="exact")}
    for dtype in (np.float32, np.float64):
        rows = compare(10_000, dtype, builders, repeats=2, floor=True)
        lines += [
            f"| {np.dtype(dtype).name} | {name} | {seconds:.2f} | {'' if np.isnan(auroc) else f'{auroc:.3f}'} | {seconds / rows[0][1]:.2f}x |"
            for name, seconds, auroc in rows
        ]
    lines += ["", "## How the gap changes with size", "",
              "float32, M = N/5, d = 64. Ours best of 2 runs, OpenDataVal one run.", "",
              "| N | M | KAIROS s | LAVA (annealed) s | ratio | LAVA (OpenDataVal) s | ratio |", "|---|---|---|---|---|---|---|"]
    for n in (2_500, 5_000, 10_000, 20_000):
        rows = compare(n, np.float32, {"KAIROS": Kairos, "LAVA (annealed, default)": Lava}, repeats=2)
        kairos, ours = rows[0][1], rows[1][1]
        peer = f"{rows[2][1]:.2f} | {rows[2][1] / kairos:.1f}x" if len(rows) > 2 else "not installed | "
        lines.append(f"| {n:,} | {n // 5:,} | {kairos:.2f} | {ours:.2f} | {ours / kairos:.1f}x | {peer} |")
        print(lines[-1], flush=True)
    publish("kairos_vs_lava.md", lines)


if __name__ == "__main__":
    main()

"""dataworth side by side with pyDVL and OpenDataVal on the same data, in the same run.

The peers live in .venv-peers (their pins conflict with ours: numpy<2, old torch); build it once with
``bash benchmarks/peers/setup.sh``. This script (run with our .venv) writes each dataset to a file,
runs each peer method in that environment through benchmarks/peers/run_peer.py, and compares:
agreement (max |difference|, which for KNN-Shapley must be below 1e-8 with the same K, and Spearman), detection AUROC of flipped labels, and time ours / theirs (valuation only, no imports).

Run:  .venv/bin/python benchmarks/peers.py            (writes benchmarks/results/peers.md)
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import ot
from scipy.stats import spearmanr
from sklearn.datasets import load_breast_cancer, load_digits

from dataworth import DataOOB, KNNShapley, Lava
from dataworth.evaluation.corruptions import flip_labels
from dataworth.evaluation.metrics import detection_auroc
from publish import publish

ROOT = Path(__file__).resolve().parents[1]
PEER_PYTHON = ROOT / ".venv-peers" / "bin" / "python"
K, TREES, SEED = 5, 50, 0
PAIRS = {  # row name -> (peer library, peer method, how to build ours from the training and reference features)
    "knn-shapley": ("pydvl", "knn-shapley", lambda X, Z: KNNShapley(k=K)),
    "data-oob": ("pydvl", "data-oob", lambda X, Z: DataOOB(n_estimators=TREES, seed=SEED)),
    "lava": ("opendataval", "lava", lambda X, Z: Lava()),
    # OTDD's cost is ||x − z||²/2 + W/2 with W computed on ||·||²/2 (label weight 0.5 in our units) and
    # its final ε is 0.1 in those half units: 0.2 in ours, relative to the mean squared distance.
    "lava, OTDD's λ and ε": ("opendataval", "lava", lambda X, Z: Lava(label_weight=0.5, entropic_reg=0.2 / ot.dist(X, Z).mean())),
}


def datasets() -> dict[str, tuple[np.ndarray, ...]]:
    """breast_cancer as in the peers' reference figures (200 train, 10% flipped, 100 reference) and digits,
    raw (integer pixels: many exact distance ties, which each library breaks its own way) and with a
    1e-6 jitter that removes the ties."""
    out = {}
    X, y = load_breast_cancer(return_X_y=True)
    X = (X - X.mean(0)) / X.std(0)
    order = np.random.default_rng(0).permutation(len(y))
    digits_X, digits_y = load_digits(return_X_y=True)
    jitter = np.random.default_rng(1).normal(scale=1e-6, size=digits_X.shape)
    for name, (X_all, y_all, n_train, n_ref) in {
        "breast_cancer": (X[order], y[order], 200, 100),
        "digits": (digits_X, digits_y, 1000, 300),
        "digits + 1e-6 jitter": (digits_X + jitter, digits_y, 1000, 300),
    }.items():
        y_train, flipped = flip_labels(y_all[:n_train], 0.1, seed=0)
        out[name] = (X_all[:n_train], y_train, X_all[n_train:n_train + n_ref], y_all[n_train:n_train + n_ref], flipped)
    return out


def run_peer(library: str, method: str, data_file: Path) -> tuple[np.ndarray, float]:
    out = data_file.with_name(f"{library}-{method}.npz")
    env = {**os.environ, "PYTHONPATH": str(ROOT / "benchmarks" / "peers" / "stubs")}
    subprocess.run([str(PEER_PYTHON), str(ROOT / "benchmarks" / "peers" / "run_peer.py"), library, method, str(data_file), str(out)],
                   check=True, env=env, capture_output=True)
    with np.load(out) as result:
        return result["values"], float(result["seconds"])


def main() -> None:
    if not PEER_PYTHON.exists():
        sys.exit("no .venv-peers: run `bash benchmarks/peers/setup.sh` first")
    lines = ["# dataworth vs pyDVL 0.10 and OpenDataVal 1.3", "", "Reproduce: `bash benchmarks/peers/setup.sh && .venv/bin/python benchmarks/peers.py`",
             f"KNN-Shapley K={K}; Data-OOB {TREES} trees, seed {SEED}; LAVA at each library's defaults, and ours with OTDD's label weight and ε. 10% of training labels flipped.", "",
             "| data | method | peer | agreement | AUROC ours | AUROC peer | seconds ours | seconds peer | time ours/peer |",
             "|---|---|---|---|---|---|---|---|---|"]
    with tempfile.TemporaryDirectory() as tmp:
        for name, (X, y, X_ref, y_ref, flipped) in datasets().items():
            data_file = Path(tmp) / f"{name}.npz"
            np.savez(data_file, X=X, y=y, X_ref=X_ref, y_ref=y_ref, k=K, n_estimators=TREES, seed=SEED)
            for method, (library, peer_method, build) in PAIRS.items():
                start = time.perf_counter()
                ours = build(X, X_ref).fit(X, y, reference=(X_ref, y_ref)).values_
                seconds = time.perf_counter() - start
                theirs, peer_seconds = run_peer(library, peer_method, data_file)
                agreement = f"max abs diff {np.abs(ours - theirs).max():.1e}, Spearman {spearmanr(ours, theirs).statistic:.3f}"
                lines.append(
                    f"| {name} | {method} | {library} | {agreement} | {detection_auroc(ours, flipped):.3f} | "
                    f"{detection_auroc(theirs, flipped):.3f} | {seconds:.3f} | {peer_seconds:.3f} | {seconds / peer_seconds:.2f} |"
                )
                print(lines[-1], flush=True)
    publish("peers.md", lines, echo=False)


if __name__ == "__main__":
    main()

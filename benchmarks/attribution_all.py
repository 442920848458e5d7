"""Every attribution and valuation method against retraining ground truth -> benchmarks/results/attribution.md.

Settings (10% of the training labels flipped uniformly, seed 0; held-out clean rows are the targets; features
standardized with the training rows' statistics):
  (a) digits, logistic regression (softmax, sum-form λ = 1; Newton to ‖∇‖ < 1e-10);
  (b) digits, the built-in MLP (64 tanh units, weight decay 1e-3, full-batch L-BFGS), 1,000 training rows;
  (c) BBC News as all-MiniLM-L6-v2 embeddings (384-d), the same MLP head, 600 training rows.
Ground truth: LDS over 100 random half subsets, LOO over 50 random rows, each retrained over 3 seeds
(paired seeds for the MLP; one run for the convex model). AirRep learns from another 100 subsets (never the
scored ones). Methods run with 3 seeds each (the MLP's initialisation, projections, sampling).
The peers (traker, dattri, Captum, Kronfluence) run on the same models and rows in .venv-peers (`--peers`; see
benchmarks/peers/attribution_peer.py and influence_peer.py).

Run:  .venv/bin/python benchmarks/attribution_all.py [--peers] [SETTING ...]     (an interrupted run resumes)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from safetensors.torch import save_file
from torch import nn

from dataworth.checkpoint import Checkpoint
from dataworth.evaluation.attribution import linear_datamodeling_score, loo_correlation
from dataworth.evaluation.attribution_bench import AttributionBenchmark, build_benchmark, parse_methods, run_methods, summarize
from dataworth.influence import TRAK, InfluenceFunction, TracIn
from publish import RESULTS, publish

SUBSETS = 100
LOO_ROWS = 50
SEEDS = 3
JOBS = 2
COMMON = "if-ekfac,if-arnoldi,rif,layerif,tracin,trak,airrep,kairos,knn-shapley,data-oob,lava,cleanlab"
SETTINGS = {
    "a": {"dataset": "digits", "model": "logistic", "max_train": None, "methods": "if-explicit,rif-explicit," + COMMON},
    "b": {"dataset": "digits", "model": "mlp", "max_train": 1000, "methods": "if-explicit,rif-explicit," + COMMON},
    "c": {"dataset": "bbc-minilm", "model": "mlp", "max_train": 600, "methods": COMMON},
}
MAX_TARGETS = 200
CACHE = Path(__file__).parent / ".cache"
ROOT = Path(__file__).resolve().parents[1]
PEER_PYTHON = ROOT / ".venv-peers" / "bin" / "python"
PEER_SCRIPT = ROOT / "benchmarks" / "peers" / "attribution_peer.py"
INFLUENCE_PEER_SCRIPT = ROOT / "benchmarks" / "peers" / "influence_peer.py"
#: (library, method) run on our seed-0 models; TRAK with our default projection dimension, TracIn exact, EK-FAC
#: (Kronfluence, through influence_peer.py) with damping λ + δ and its own Fisher label draws.
PEERS = (("traker", "trak"), ("dattri", "trak"), ("dattri", "tracin"), ("captum", "tracin"), ("kronfluence", "if-ekfac"))
TRAK_PROJECTION = 2048


def sequential_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The state dict as the peers' nn.Sequential builder names it (a bare Linear becomes layer 0)."""
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    return {f"0.{k}": v for k, v in state.items()} if isinstance(model, nn.Linear) else state


def sizes(model: nn.Module) -> list[int]:
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    return [linears[0].in_features, *[m.out_features for m in linears]]


def run_peer(library: str, method: str, folder: Path, options: dict) -> tuple[np.ndarray | None, float, str]:
    out = folder / f"out-{library}-{method}"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    script, solver = (INFLUENCE_PEER_SCRIPT, "ekfac") if method == "if-ekfac" else (PEER_SCRIPT, method)
    command = [str(PEER_PYTHON), str(script), library, solver, str(folder), str(folder / "data.npz"), str(out), json.dumps(options)]
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        lines = [line for line in done.stderr.strip().splitlines() if line.strip() and "it/s" not in line]
        return None, float("nan"), lines[-1][:200] if lines else f"exit {done.returncode}"
    result = json.loads((out / "result.json").read_text())
    if method == "if-ekfac":  # Kronfluence's scores are n × ours (summed loss; the factors divided by n)
        return np.load(out / "scores.npy"), float(result["seconds"]), f"damping λ + δ = {options['damping']:.3g}; its own Fisher draws"
    return np.load(out / "scores.npy"), float(result["seconds"]), "exact" if result.get("exact") else f"k = {options.get('projection_dim')}"


def peer_rows(bench: AttributionBenchmark) -> list[dict]:
    """Our seed-0 TracIn checkpoints, TRAK model and influence-function model handed to each peer; both sides timed
    on one thread, the model training excluded (ours from the fitted checkpoints/models, as the peers get them)."""
    problem = bench.problem
    torch.set_num_threads(1)
    tracin = TracIn(model=problem.model, l2=problem.l2, seed=0).fit(problem.X, problem.y)
    trak = TRAK(model=problem.model, l2=problem.l2, seed=0, projection_dim=TRAK_PROJECTION).fit(problem.X, problem.y)
    ekfac = InfluenceFunction(model=problem.model, l2=problem.l2, solver="ekfac", seed=0).fit(problem.X, problem.y)
    ours = {}
    for method, build in (("tracin", lambda: TracIn(checkpoints=tracin.checkpoints_, learning_rates=list(tracin.learning_rates_))),
                          ("trak", lambda: TRAK(models=trak.models_, projection_dim=TRAK_PROJECTION, seed=0)),
                          ("if-ekfac", lambda: InfluenceFunction(model=ekfac.task_, solver="ekfac", damping=ekfac.damping, seed=0))):
        start = time.perf_counter()
        scores = build().fit(problem.X, problem.y).attribute(problem.X_targets, problem.y_targets).scores
        ours[method] = (scores, time.perf_counter() - start)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        np.savez(folder / "data.npz", X_train=problem.X, y_train=problem.y, X_test=problem.X_targets, y_test=problem.y_targets)
        spec = {"sizes": sizes(trak.models_[0]), "activation": "tanh", "bias": True, "dtype": "float64"}
        for method in ("tracin", "trak", "if-ekfac"):
            method_dir = folder / method
            method_dir.mkdir()
            (method_dir / "spec.json").write_text(json.dumps(spec))
            (method_dir / "data.npz").symlink_to(folder / "data.npz")
            if method == "tracin":
                for k, checkpoint in enumerate(tracin.checkpoints_):
                    save_file(sequential_state(checkpoint), str(method_dir / f"checkpoint_{k}.safetensors"))
                (method_dir / "learning_rates.json").write_text(json.dumps([float(r) for r in tracin.learning_rates_]))
            elif method == "trak":
                save_file(sequential_state(trak.models_[0]), str(method_dir / "model_0.safetensors"))
            else:
                save_file(sequential_state(ekfac.model_), str(method_dir / "model.safetensors"))
        peer_options = {"trak": {"projection_dim": TRAK_PROJECTION, "seed": 0, "threads": 1}, "tracin": {"threads": 1},
                        "if-ekfac": {"damping": ekfac.task_.l2 + ekfac.damping, "seed": 0, "threads": 1}}
        for library, method in [("dataworth", "tracin"), ("dataworth", "trak"), ("dataworth", "if-ekfac"), *PEERS]:
            if library == "dataworth":
                (scores, seconds), note = ours[method], "ours"
            else:
                scores, seconds, note = run_peer(library, method, folder / method, peer_options[method])
                if scores is not None and method == "if-ekfac":
                    scores = scores / problem.n
            row = {"problem": bench.name, "library": library, "method": method, "seconds": seconds, "note": note}
            if scores is not None:
                row["lds"] = linear_datamodeling_score(scores, bench.evaluation.subsets, bench.evaluation.outcomes).mean
                row["loo_pearson"] = loo_correlation(scores, bench.loo)["pearson"]
                row["ratio"] = ours[method][1] / seconds
            rows.append(row)
    torch.set_num_threads(2)
    return rows


def peer_table(rows: list[dict]) -> list[str]:
    lines = ["| method | library | LDS | LOO Pearson | seconds (1 thread) | ours / peer time | note |", "|---|---|---|---|---|---|---|"]
    for row in rows:
        if "lds" not in row:
            lines.append(f"| {row['method']} | {row['library']} | failed | | | | {row['note']} |")
            continue
        ratio = "—" if row["library"] == "dataworth" else f"{row['ratio']:.2f}"
        lines.append(f"| {row['method']} | {row['library']} | {row['lds']:.3f} | {row['loo_pearson']:.3f} | {row['seconds']:.2f} | "
                     f"{ratio} | {row['note']} |")
    return lines


def run_setting(key: str) -> tuple[pd.DataFrame, list[dict]]:
    setting = SETTINGS[key]
    CACHE.mkdir(exist_ok=True)
    checkpoint = Checkpoint(CACHE / f"attribution_{key}.jsonl")
    started = time.perf_counter()
    bench = build_benchmark(setting["dataset"], model=setting["model"], subsets=SUBSETS, training_subsets=SUBSETS, seeds=SEEDS,
                            loo_rows=LOO_ROWS, max_train=setting["max_train"], max_targets=MAX_TARGETS, n_jobs=JOBS,
                            checkpoint=checkpoint, progress=True)
    truth_seconds = time.perf_counter() - started
    print(f"({key}) {bench.name}: ground truth in {truth_seconds:.0f} s", file=sys.stderr)
    results, _ = run_methods(bench, parse_methods(setting["methods"]), seeds=SEEDS, checkpoint=checkpoint)
    results["setting"] = f"({key}) {bench.name}, n = {bench.problem.n}, targets = {bench.problem.n_targets}"
    peers = peer_rows(bench) if "--peers" in sys.argv else []
    return results, peers


def table(results: pd.DataFrame) -> list[str]:
    lines = ["| method | LDS | LOO Pearson | LOO Spearman | LOO slope | AUROC (flips) | seconds | s / target | peak GiB |",
             "|---|---|---|---|---|---|---|---|---|"]
    for _, row in summarize(results).iterrows():
        def cell(metric: str, digits: int = 3, row: pd.Series = row) -> str:
            mean, std = row[(metric, "mean")], row[(metric, "std")]
            if mean != mean:
                return "—"
            return f"{mean:.{digits}f}" if std != std or std == 0 else f"{mean:.{digits}f} ± {std:.{digits}f}"
        per_target = row[("seconds_per_target", "mean")]
        lines.append(f"| {row[('method', '')]} | {cell('lds')} | {cell('loo_pearson')} | {cell('loo_spearman')} | "
                     f"{row[('loo_slope', 'mean')]:.2g} | {cell('auroc')} | {row[('seconds', 'mean')]:.2f} | "
                     f"{'—' if per_target != per_target else f'{per_target:.1e}'} | {row[('peak_rss_gib', 'mean')]:.2f} |")
    return lines


def main(keys: list[str]) -> None:
    torch.set_num_threads(2)
    frames = {key: run_setting(key) for key in keys}
    lines = ["# Attribution against retraining", "", __doc__.strip().split("\n\n")[1], "",
             f"Reproduce: `.venv/bin/python benchmarks/attribution_all.py {'--peers ' if '--peers' in sys.argv else ''}{' '.join(keys)}`", ""]
    for results, peers in frames.values():
        lines += [f"## {results['setting'].iloc[0]}", "", *table(results), ""]
        if peers:
            lines += ["Peers on our seed-0 TracIn checkpoints and TRAK model (TRAK k = 2048 Rademacher where p > 2048, else "
                      "exact; each library its own projection matrix):", "", *peer_table(peers), ""]
    lines += ["AirRep's own prediction of a subset's effect (its attention-pooled group score, not the additive sum LDS uses): "
              + "; ".join(f"{r['setting'].iloc[0].split(',')[0]} LDS {r.loc[r.method == 'airrep', 'lds_group'].mean():.3f}"
                          for r, _ in frames.values() if "lds_group" in r), "",
              "LDS and LOO of valuation methods (KAIROS, KNN-Shapley, Data-OOB, LAVA, cleanlab) are computed with their single "
              "value per row against the mean target loss. AirRep's time excludes the retrainings it learns from. "
              "'s / target' is the attribute step divided by the number of targets."]
    publish("attribution.md", lines)
    for key, (results, peers) in frames.items():
        results.to_json(RESULTS / f"attribution_{key}.json", orient="records", indent=1)
        if peers:
            (RESULTS / f"attribution_{key}_peers.json").write_text(json.dumps(peers, indent=1))


if __name__ == "__main__":
    main([a for a in sys.argv[1:] if not a.startswith("--")] or list(SETTINGS))

"""Online curation (LAI and the scores it is compared with) on noisy labels -> benchmarks/results/curation.md.

Fidelity: a digits MLP (64→128→128→10, ReLU) trained 60 steps on batches of 64 with 40% flipped labels; at every
step, each score of the batch rows against 100 clean validation rows (cache refreshed every step) is compared by
Spearman with the exact first-order in-run value η∇L_val·∇ℓ_i from full per-sample gradients (SGD, η = 0.1), and,
under AdamW (lr 1e-3), with the preconditioned value η∇L_val·(P ⊙ ∇ℓ_i), P = 1/(√v̂ + ε) (momentum left out).

Curation: every method trains the same model from the same initialization on the same batches for the same
number of AdamW steps (see dataworth.curation.experiment); drops start after the warm-up; final held-out
accuracy, the share of rows dropped and the precision/recall of the drops against the planted flips, 3 seeds
(the seed sets the split, the flips, the initialization and the batches).

Run:  .venv/bin/python benchmarks/curation_all.py [fidelity] [curation]     (an interrupted run resumes)
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd
import torch
from scipy.stats import spearmanr

from dataworth.checkpoint import Checkpoint
from dataworth.curation import Curator
from dataworth.curation.experiment import build_model, load_curation_data, run_curation
from dataworth.influence import ModelTask, as_rows, gradient_matrix
from publish import RESULTS, publish

SEEDS = 3
METHODS = ("none", "lai", "ghost", "last-layer", "lai-adam", "small-loss")
#: (dataset, model, steps, warm-up steps): the transformer learns slower, so it trains and warms up longer.
SETTINGS = (("digits", "mlp", 600, 100), ("bbc-minilm", "mlp", 600, 100), ("bbc-minilm", "transformer", 1000, 400))
NOISES = ("label-flip:0.3", "label-flip:0.4")
FIDELITY_STEPS = 60
CACHE = Path(__file__).parent / ".cache"


def fidelity(optimizer_name: str) -> pd.DataFrame:
    """Per-step Spearman of each score against the exact first-order in-run value."""
    data = load_curation_data("digits", "label-flip:0.4", seed=0)
    model = build_model(data, "mlp", 0).double()
    X, y = data.X.double(), data.y
    X_val, y_val = data.X_val.double(), data.y_val
    adam = optimizer_name == "adamw"
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3) if adam else torch.optim.SGD(model.parameters(), lr=0.1)
    methods = ("lai", "ghost", "last-layer", *(("lai-adam",) if adam else ()))
    curators = {m: Curator(model, validation=(X_val, y_val), method=m, refresh_every=1, optimizer=optimizer if m == "lai-adam" else None)
                for m in methods}
    generator = torch.Generator().manual_seed(0)
    rows = []
    for step in range(FIDELITY_STEPS):
        batch = torch.randperm(len(y), generator=generator)[:64]
        task = ModelTask(model, "cross_entropy")  # at the current parameters
        G = gradient_matrix(task, as_rows(X[batch], y[batch], name="the batch"))
        g_val = gradient_matrix(task, as_rows(X_val, y_val, name="the validation rows")).mean(0)
        if adam and optimizer.state:
            P = torch.cat([1 / ((optimizer.state[p]["exp_avg_sq"] / (1 - 0.999 ** float(optimizer.state[p]["step"]))).sqrt() + 1e-8).flatten()
                           for p in model.parameters()])
            exact = (G * P) @ g_val
        else:
            exact = G @ g_val
        for method, curator in curators.items():
            curator.loss(X[batch], y[batch])
            scores = curator.log.loc[curator.log.step == step, "score"].to_numpy()
            rows.append({"optimizer": optimizer_name, "method": method, "step": step, "spearman": spearmanr(scores, exact.numpy()).statistic})
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(X[batch]), y[batch]).backward()
        optimizer.step()
    for curator in curators.values():
        curator.close()
    return pd.DataFrame(rows)


def curation() -> pd.DataFrame:
    CACHE.mkdir(exist_ok=True)
    checkpoint = Checkpoint(CACHE / "curation.jsonl")
    rows = []
    for dataset, model, steps, warmup in SETTINGS:
        for noise in NOISES:
            for seed in range(SEEDS):
                data = None
                for method in METHODS:
                    key = {"dataset": dataset, "model": model, "noise": noise, "seed": seed, "method": method, "steps": steps, "warmup": warmup}
                    row = checkpoint.get(key)
                    if row is None:
                        data = data or load_curation_data(dataset, noise, model=model, seed=seed)
                        run = run_curation(data, method, model=model, seed=seed, steps=steps, warmup_steps=warmup)
                        row = {**key, **run.summary, "seconds": run.seconds,
                               "worst_class_drop": float(run.drop_rates["drop_rate"].max()) if method != "none" else 0.0,
                               "best_class_drop": float(run.drop_rates["drop_rate"].min()) if method != "none" else 0.0}
                        checkpoint.add(key, row)
                        print(f"{dataset}/{model} {noise} seed {seed} {method}: {row['final_accuracy']:.3f}", file=sys.stderr, flush=True)
                    rows.append(row)
    return pd.DataFrame(rows)


def curation_table(results: pd.DataFrame) -> list[str]:
    lines = ["| setting | noise | method | final accuracy | beats none (seeds) | dropped | precision | recall | class drop rates (min–max) | seconds |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for (dataset, model, noise), group in results.groupby(["dataset", "model", "noise"], sort=False):
        baseline = group[group.method == "none"].set_index("seed")["final_accuracy"]
        for method, runs in group.groupby("method", sort=False):
            accuracy = runs["final_accuracy"]
            wins = (runs.set_index("seed")["final_accuracy"] > baseline).sum()
            lines.append(f"| {dataset}/{model} | {noise.split(':')[1]} | {method} | {accuracy.mean():.3f} ± {accuracy.std():.3f} | "
                         f"{'—' if method == 'none' else f'{wins}/{len(runs)}'} | {_mean(runs, 'dropped')} | {_mean(runs, 'precision')} | "
                         f"{_mean(runs, 'recall')} | {'—' if method == 'none' else f'{runs.best_class_drop.mean():.2f}–{runs.worst_class_drop.mean():.2f}'} | "
                         f"{runs['seconds'].mean():.1f} |")
    return lines


def _mean(runs: pd.DataFrame, column: str) -> str:
    return "—" if runs[column].isna().all() else f"{runs[column].mean():.3f}"


def main(parts: list[str]) -> None:
    torch.set_num_threads(1)
    lines = ["# Online curation on noisy labels", "", __doc__.strip().split("\n\n")[1], "", __doc__.strip().split("\n\n")[2], "",
             f"Reproduce: `.venv/bin/python benchmarks/curation_all.py {' '.join(parts)}`", ""]
    if "fidelity" in parts:
        per_step = pd.concat([fidelity("sgd"), fidelity("adamw")])
        summary = per_step.groupby(["optimizer", "method"], sort=False)["spearman"].agg(["mean", "std", "min"]).reset_index()
        lines += ["## Fidelity: per-step Spearman against the exact first-order value", "",
                  "| optimizer | score | mean | std | min |", "|---|---|---|---|---|"]
        lines += [f"| {r.optimizer} | {r.method} | {r['mean']:.3f} | {r['std']:.3f} | {r['min']:.3f} |" for _, r in summary.iterrows()]
        lines.append("")
        per_step.to_csv(RESULTS / "curation_fidelity.csv", index=False)
    if "curation" in parts:
        results = curation()
        lines += ["## Curation: final held-out accuracy at equal steps", "", *curation_table(results), ""]
        results.to_json(RESULTS / "curation.json", orient="records", indent=1)
    publish("curation.md", lines)


if __name__ == "__main__":
    main([a for a in sys.argv[1:] if not a.startswith("--")] or ["fidelity", "curation"])

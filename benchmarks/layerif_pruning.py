"""LayerIF-guided vs uniform magnitude pruning of a small MLP on sklearn's digits.

Per seed (split and initialization): digits standardized on the training split (1,000 train / 300 validation /
497 test rows, stratified); a float64 64→128→128→64→10 tanh MLP trained by full-batch L-BFGS on mean
cross-entropy + (λ/2)‖θ‖², λ = 1e-3, to a stationary point (influence functions assume one). LayerIF scores
S_l = Σ_i max(Ī_l(z_i), 0) on the validation rows, each layer's curvature by EK-FAC with the exact Fisher
(δ = 1e-3), cross-checked against conjugate gradient on the layer's exact Gauss-Newton block. Then one-shot
magnitude pruning of the weights (biases kept, no fine-tuning) at 50% and 70% global sparsity with

- uniform: the same ratio in every layer;
- LayerIF, ε = 0.1 / 0.3: the paper's allocation (higher score → more pruning, ratios in [(1 − ε)η, (1 + ε)η]);
- reversed, ε = 0.3: the paper's ablation, scores negated (higher score → less pruning).

Test accuracy is reported as mean ± standard deviation over the seeds.

Run:  .venv/bin/python benchmarks/layerif_pruning.py      (about 2 minutes on one core; writes results/layerif_pruning.md)
"""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import torch
from scipy.stats import spearmanr
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import nn

from dataworth.influence.layerif import LayerInfluence, layer_pruning_ratios, magnitude_prune, prunable_sizes
from dataworth.influence.models import train_lbfgs
from publish import publish

SEEDS = (0, 1, 2, 3, 4)
SPARSITIES = (0.5, 0.7)
L2 = 1e-3
#: allocation name → (sign of the scores, ε)
ALLOCATIONS = {"uniform": (1, 0.0), "LayerIF ε=0.1": (1, 0.1), "LayerIF ε=0.3": (1, 0.3), "reversed ε=0.3": (-1, 0.3)}
COMMAND = ".venv/bin/python benchmarks/layerif_pruning.py"


def split(seed: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    X, y = load_digits(return_X_y=True)
    X_train, X_rest, y_train, y_rest = train_test_split(X, y, train_size=1000, stratify=y, random_state=seed)
    X_val, X_test, y_val, y_test = train_test_split(X_rest, y_rest, train_size=300, stratify=y_rest, random_state=seed)
    mean, scale = X_train.mean(0), X_train.std(0) + 1e-8
    return {name: ((X - mean) / scale, y) for name, X, y in
            (("train", X_train, y_train), ("val", X_val, y_val), ("test", X_test, y_test))}


def train_mlp(X: np.ndarray, y: np.ndarray, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(64, 128), nn.Tanh(), nn.Linear(128, 128), nn.Tanh(),
                          nn.Linear(128, 64), nn.Tanh(), nn.Linear(64, 10)).double()
    train_lbfgs(model, torch.as_tensor(X), torch.as_tensor(y), l2=L2, tol=1e-5, max_iter=3000)
    return model


def accuracy(model: nn.Module, data: tuple[np.ndarray, np.ndarray]) -> float:
    with torch.no_grad():
        return float((model(torch.as_tensor(data[0])).argmax(1).numpy() == data[1]).mean())


def layer_scores(model: nn.Module, data: dict, solver: str, options: dict) -> tuple[pd.Series, float, float]:
    """(scores, stationarity ratio, seconds) of LayerIF with ``solver``."""
    started = time.perf_counter()
    layerif = LayerInfluence(model, l2=L2, solver=solver, damping=1e-3, solver_options=options).fit(*data["train"])
    scores = layerif.layer_scores(*data["val"])
    return scores, layerif.stationarity_, time.perf_counter() - started


def run_seed(seed: int) -> dict:
    data = split(seed)
    model = train_mlp(*data["train"], seed)
    scores, stationarity, seconds = layer_scores(model, data, "ekfac", {"fisher": "exact"})
    reference, _, cg_seconds = layer_scores(model, data, "cg", {"tol": 1e-8, "max_iter": 1000})
    sizes = prunable_sizes(model, scores.index)
    accuracies, ratios = {}, {}
    for sparsity in SPARSITIES:
        for name, (sign, epsilon) in ALLOCATIONS.items():
            ratio = layer_pruning_ratios(sign * scores, sparsity, sizes=sizes, epsilon=epsilon)
            pruned = magnitude_prune(model, ratio)
            zeros = sum(int((pruned.get_submodule(layer).weight == 0).sum()) for layer in sizes.index)
            accuracies[(sparsity, name)] = accuracy(pruned, data["test"])
            ratios[(sparsity, name)] = ratio
            assert abs(zeros / sizes.sum() - sparsity) < 1e-3
    return {"scores": scores, "reference": reference, "sizes": sizes, "dense": accuracy(model, data["test"]),
            "accuracies": accuracies, "ratios": ratios, "stationarity": stationarity, "seconds": seconds,
            "cg_seconds": cg_seconds, "spearman": spearmanr(scores, reference).statistic}


def main() -> None:
    torch.set_num_threads(1)
    runs = [run_seed(seed) for seed in SEEDS]
    first = runs[0]
    layers = list(first["scores"].index)
    lines = [f"Command: `{COMMAND}`", "", f"torch {torch.__version__}, {torch.get_num_threads()} thread; seeds {', '.join(map(str, SEEDS))}; "
             "digits 1,000 train / 300 val / 497 test; 64→128→128→64→10 tanh MLP, float64, L-BFGS, λ = 1e-3", ""]
    lines += ["Layer scores S_l (EK-FAC, exact Fisher, δ = 1e-3), per seed; in brackets the conjugate-gradient reference "
              "(exact Gauss-Newton block of each layer):", "",
              "| layer | weights | " + " | ".join(f"S_l seed {seed}" for seed in SEEDS) + " |",
              "|---|---|" + "---|" * len(SEEDS)]
    for layer in layers:
        cells = [f"{run['scores'][layer]:.4g} ({run['reference'][layer]:.4g})" for run in runs]
        lines.append(f"| {layer} | {first['sizes'][layer]} | " + " | ".join(cells) + " |")
    lines += ["", "Spearman(EK-FAC, CG) over layers per seed: " + ", ".join(f"{run['spearman']:.2f}" for run in runs)
              + "; stationarity ‖∇R‖/mean‖g_i‖: " + ", ".join(f"{run['stationarity']:.1e}" for run in runs)
              + "; LayerIF seconds (EK-FAC / CG): " + ", ".join(f"{run['seconds']:.1f} / {run['cg_seconds']:.1f}" for run in runs), ""]
    lines += [f"Per-layer pruning ratios, seed {SEEDS[0]}:", "", "| global | allocation | " + " | ".join(layers) + " |",
              "|---|---|" + "---|" * len(layers)]
    for key, ratio in first["ratios"].items():
        lines.append(f"| {key[0]:.0%} | {key[1]} | " + " | ".join(f"{ratio[layer]:.3f}" for layer in layers) + " |")
    dense = np.array([run["dense"] for run in runs])
    lines += ["", f"Test accuracy after magnitude pruning without fine-tuning (dense model: {dense.mean():.4f} ± {dense.std():.4f}); "
              "mean ± std over seeds, then per seed:", "",
              "| global | allocation | accuracy | " + " | ".join(f"seed {seed}" for seed in SEEDS) + " |",
              "|---|---|---|" + "---|" * len(SEEDS)]
    for key in first["accuracies"]:
        values = np.array([run["accuracies"][key] for run in runs])
        lines.append(f"| {key[0]:.0%} | {key[1]} | {values.mean():.4f} ± {values.std():.4f} | "
                     + " | ".join(f"{value:.4f}" for value in values) + " |")
    publish("layerif_pruning.md", lines)


if __name__ == "__main__":
    main()

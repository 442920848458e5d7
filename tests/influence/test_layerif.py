"""LayerIF against brute-force per-layer formulas with dense matrices, and the pruning allocation's invariants."""

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import make_mlp, train
from torch import nn
from torch.func import functional_call, grad, hessian

from dataworth.checks import InputError
from dataworth.influence.influence import InfluenceFunction
from dataworth.influence.layerif import LayerInfluence, layer_pruning_ratios, magnitude_prune, prunable_sizes
from dataworth.influence.solvers import ExplicitSolver

L2, DAMPING = 1e-2, 1e-3


@pytest.fixture(scope="module")
def fitted():
    """A trained float64 5→7→3 tanh MLP, 40 training rows, 15 target rows, and LayerIF with the explicit Hessian."""
    rng = np.random.default_rng(1)
    X, Xt = torch.as_tensor(rng.normal(size=(40, 5))), torch.as_tensor(rng.normal(size=(15, 5)))
    y, yt = torch.as_tensor(rng.integers(0, 3, 40)), torch.as_tensor(rng.integers(0, 3, 15))
    model = train(make_mlp(5, 7, 3, seed=2), X, y, L2, steps=100)
    layerif = LayerInfluence(model, l2=L2, solver=ExplicitSolver(damping=DAMPING, curvature="hessian")).fit(X, y)
    return model, layerif, X, y, Xt, yt


def brute_force_layer_scores(model, layer, X, y, Xt, yt):
    """(1/n) ∇_l ℓ(z'_q)ᵀ (H_l + δI)⁻¹ ∇_l ℓ(z_i) from the dense Hessian of R restricted to the layer's parameters."""
    names = [f"{layer}.weight", f"{layer}.bias"]
    params = {name: p.detach().clone() for name, p in model.named_parameters()}
    shapes = [params[name].shape for name in names]
    sizes = [s.numel() for s in shapes]

    def with_layer(flat):
        pieces = [piece.reshape(shape) for piece, shape in zip(flat.split(sizes), shapes, strict=True)]
        return {**params, **dict(zip(names, pieces, strict=True))}

    def loss(flat, inputs, targets):
        return nn.functional.cross_entropy(functional_call(model, with_layer(flat), (inputs,)), targets)

    def objective(flat):
        return loss(flat, X, y) + 0.5 * L2 * sum(p.pow(2).sum() for p in with_layer(flat).values())

    theta = torch.cat([params[name].reshape(-1) for name in names])
    H = hessian(objective)(theta) + DAMPING * torch.eye(len(theta), dtype=torch.float64)
    train_grads = torch.stack([grad(loss)(theta, X[i:i + 1], y[i:i + 1]) for i in range(len(X))])
    target_grads = torch.stack([grad(loss)(theta, Xt[q:q + 1], yt[q:q + 1]) for q in range(len(Xt))])
    return (train_grads @ torch.linalg.solve(H, target_grads.T) / len(X)).numpy()


def test_layer_influence_is_the_brute_force_block_formula(fitted):
    model, layerif, X, y, Xt, yt = fitted
    assert layerif.layers_ == ["0", "2"]
    per_layer = layerif.attribute_layers(Xt, yt)
    for layer in layerif.layers_:
        expected = brute_force_layer_scores(model, layer, X, y, Xt, yt)
        np.testing.assert_allclose(per_layer[layer].scores, expected, rtol=1e-10, atol=1e-10 * np.abs(expected).max())
    # the layers add up to the block-diagonal influence that attribute gives
    total = sum(result.scores for result in per_layer.values())
    np.testing.assert_allclose(layerif.attribute(Xt, yt).scores, total, rtol=1e-12, atol=1e-14)
    # the mean over targets (one solve of the mean target gradient) is the mean of the per-target influences
    mean = layerif.layer_influence(Xt, yt)
    for layer in layerif.layers_:
        np.testing.assert_allclose(mean[layer].to_numpy(), per_layer[layer].scores.mean(1), rtol=1e-10, atol=1e-14)


def test_layer_scores_sum_the_positive_parts(fitted):
    _, layerif, _, _, Xt, yt = fitted
    rows = layerif.layer_influence(Xt, yt)
    scores = layerif.layer_scores(Xt, yt)
    assert list(scores.index) == ["0", "2"] and (scores > 0).all()
    for layer in scores.index:
        values = rows[layer].to_numpy()
        assert (values < 0).any() and (values > 0).any()
        assert scores[layer] == pytest.approx(values[values > 0].sum(), rel=1e-12)


def test_one_layer_model_equals_the_full_influence_function():
    rng = np.random.default_rng(3)
    X, Xt = rng.normal(size=(50, 4)), rng.normal(size=(10, 4))
    y, yt = rng.integers(0, 3, 50), rng.integers(0, 3, 10)
    torch.manual_seed(0)
    model = train(nn.Sequential(nn.Linear(4, 3)).double(), torch.as_tensor(X), torch.as_tensor(y), L2, steps=100)
    kwargs = {"l2": L2, "solver": ExplicitSolver(damping=DAMPING)}
    full = InfluenceFunction(model, **kwargs).fit(X, y).attribute(Xt, yt).scores
    layerif = LayerInfluence(model, **kwargs).fit(X, y)
    np.testing.assert_allclose(layerif.attribute_layers(Xt, yt)["0"].scores, full, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(layerif.layer_influence(Xt, yt)["0"], full.mean(1), rtol=1e-10, atol=1e-15)


@pytest.mark.filterwarnings("ignore::dataworth.checks.DataworthWarning")
def test_a_layer_must_hold_only_its_own_parameters():
    class Scaled(nn.Module):
        def __init__(self):
            super().__init__()
            self.scale = nn.Parameter(torch.ones(3, dtype=torch.float64))
            self.linear = nn.Linear(4, 3).double()

        def forward(self, x):
            return self.linear(x) * self.scale

    model = nn.Sequential(Scaled()).eval()
    X, y = np.random.default_rng(0).normal(size=(20, 4)), np.arange(20) % 3
    with pytest.raises(InputError, match="only their own parameters"):
        LayerInfluence(model, solver=ExplicitSolver(damping=DAMPING)).fit(X, y)


def test_default_ekfac_runs_per_layer(fitted):
    model, _, X, y, Xt, yt = fitted
    scores = LayerInfluence(model, l2=L2).fit(X, y).layer_scores(Xt, yt)
    assert list(scores.index) == ["0", "2"] and np.isfinite(scores).all()


# -- pruning ------------------------------------------------------------------------------------------------------


SIZES = pd.Series({"a": 8192, "b": 16384, "c": 8192, "d": 640})


@pytest.mark.parametrize("sparsity, epsilon", [(0.5, 0.3), (0.7, 0.3), (0.9, 0.8), (0.2, 1.0)])
def test_ratios_hit_the_global_sparsity_and_follow_the_scores(sparsity, epsilon):
    scores = pd.Series({"a": 3.0, "b": 1.0, "c": 7.0, "d": 9.0})
    ratios = layer_pruning_ratios(scores, sparsity, sizes=SIZES, epsilon=epsilon, max_ratio=0.95)
    assert (ratios @ SIZES) / SIZES.sum() == pytest.approx(sparsity, rel=1e-12)
    assert ratios.between(0, 0.95).all()
    order = scores.sort_values().index
    assert ratios[order].is_monotonic_increasing
    if epsilon == 0.8:
        assert ratios["d"] == 0.95  # the cap binds and the others make up for it


def test_epsilon_zero_is_uniform_and_checks():
    scores = pd.Series({"a": 3.0, "b": 1.0, "c": 7.0, "d": 9.0})
    np.testing.assert_allclose(layer_pruning_ratios(scores, 0.6, sizes=SIZES, epsilon=0.0), 0.6)
    with pytest.raises(InputError, match="above max_ratio"):
        layer_pruning_ratios(scores, 0.97, sizes=SIZES, max_ratio=0.95)
    with pytest.raises(InputError, match="no weight count"):
        layer_pruning_ratios(scores, 0.5, sizes=SIZES.drop("a"))


def test_smoothing_keeps_a_cubic_trend():
    layers = [f"l{k}" for k in range(9)]
    sizes = pd.Series(100, index=layers)
    scores = pd.Series([(k - 2.0) ** 3 for k in range(9)], index=layers)
    plain = layer_pruning_ratios(scores, 0.5, sizes=sizes)
    np.testing.assert_allclose(layer_pruning_ratios(scores, 0.5, sizes=sizes, window=7), plain, atol=1e-12)
    with pytest.raises(InputError, match="odd"):
        layer_pruning_ratios(scores, 0.5, sizes=sizes, window=6)


def test_magnitude_prune_zeroes_the_smallest_weights_of_a_copy():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(20, 30), nn.ReLU(), nn.Linear(30, 5))
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    sizes = prunable_sizes(model, ["0", "2"])
    assert sizes.to_dict() == {"0": 600, "2": 150}
    ratios = {"0": 0.5, "2": 0.333}
    pruned = magnitude_prune(model, ratios)
    for name, p in model.named_parameters():
        assert torch.equal(p, before[name])  # the original is untouched
    for layer, ratio in ratios.items():
        weight, original = pruned.get_submodule(layer).weight.detach(), before[f"{layer}.weight"]
        zeroed = weight == 0
        assert int(zeroed.sum()) == round(ratio * sizes[layer])  # 300 and 50
        assert torch.equal(weight[~zeroed], original[~zeroed])
        assert original[zeroed].abs().max() <= original[~zeroed].abs().min()
        assert torch.equal(pruned.get_submodule(layer).bias, before[f"{layer}.bias"])
    with pytest.raises(InputError, match="no weights"):
        magnitude_prune(model, {"1": 0.5})

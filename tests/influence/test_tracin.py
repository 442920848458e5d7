"""TracIn against explicit loops over checkpoints and per-sample autograd, finite-difference SGD steps and an
independent SGD loop (fp64)."""

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import make_mlp
from torch import nn

import dataworth
from dataworth.checks import InputError
from dataworth.influence.models import fit_mlp
from dataworth.influence.tracin import TracIn
from dataworth.methods import METHODS

RATES = [0.5, 0.2, 0.05]


def ce(outputs, target):
    return F.cross_entropy(outputs, target)


def margin(outputs, target):
    others = torch.cat([outputs[0, :target.item()], outputs[0, target.item() + 1:]])
    return outputs[0, target.item()] - torch.logsumexp(others, 0)


def loop_gradients(model, X, y, fn=ce):
    """One torch.autograd.grad call per row: the n × p matrix of ∇fn(model(x_i), y_i)."""
    params = list(model.parameters())
    out = []
    for i in range(len(X)):
        value = fn(model(X[i:i + 1]), y[i:i + 1])
        out.append(torch.cat([g.reshape(-1) for g in torch.autograd.grad(value, params)]))
    return torch.stack(out)


def brute_force(checkpoints, rates, X, y, Xt, yt, fn=ce, sign=1.0):
    total = torch.zeros(len(X), len(Xt), dtype=torch.float64)
    for model, rate in zip(checkpoints, rates, strict=True):
        total += rate * sign * loop_gradients(model, X, y) @ loop_gradients(model, Xt, yt, fn).T
    return total.numpy()


def close(actual, expected, rtol=1e-10):
    """Entrywise relative agreement, measured against the largest entry."""
    return np.abs(actual - expected).max() <= rtol * np.abs(expected).max()


@pytest.fixture(scope="module")
def problem():
    """Three checkpoints of a 5→7→3 tanh MLP (p = 66), 30 training rows, 7 targets."""
    rng = np.random.default_rng(1)
    X, Xt = torch.as_tensor(rng.normal(size=(30, 5))), torch.as_tensor(rng.normal(size=(7, 5)))
    y, yt = torch.as_tensor(rng.integers(0, 3, 30)), torch.as_tensor(rng.integers(0, 3, 7))
    checkpoints = [make_mlp(5, 7, 3, seed=s) for s in (0, 1, 2)]
    return checkpoints, X, y, Xt, yt


@pytest.mark.parametrize("path", ["exact", "ghost"])
def test_paths_equal_the_explicit_loop_over_checkpoints(problem, path):
    checkpoints, X, y, Xt, yt = problem
    expected = brute_force(checkpoints, RATES, X, y, Xt, yt)
    method = TracIn(checkpoints=checkpoints, learning_rates=RATES, path=path).fit(X, y)
    assert method.path_ == path
    assert close(method.attribute(Xt, yt).scores, expected)
    # one row per chunk, the gradients not kept, the 7 targets in groups: the same numbers
    chunked = TracIn(checkpoints=checkpoints, learning_rates=RATES, path=path, max_memory=6_000).fit(X, y)
    assert chunked.train_features_ is None
    assert close(chunked.attribute(Xt, yt).scores, expected)


def test_margin_measurement_is_signed_so_positive_helps(problem):
    checkpoints, X, y, Xt, yt = problem
    expected = brute_force(checkpoints, RATES, X, y, Xt, yt, fn=margin, sign=-1.0)
    for path in ("exact", "ghost"):
        scores = TracIn(checkpoints=checkpoints, learning_rates=RATES, measurement="margin", path=path).fit(X, y).attribute(Xt, yt).scores
        assert close(scores, expected)


def test_an_sgd_step_on_a_row_changes_the_target_loss_by_its_score(problem):
    """Ground truth of the sign: θ' = θ − ε∇ℓ_i lowers target q's loss by ≈ ε·score[i, q] (and raises its margin)."""
    checkpoints, X, y, Xt, yt = problem
    model = checkpoints[0]
    eps = 1e-6
    for measurement, fn, helps in ((None, ce, -1.0), ("margin", margin, 1.0)):
        scores = TracIn(model, measurement=measurement, path="exact").fit(X, y).attribute(Xt, yt).scores
        grads = loop_gradients(model, X, y)
        before = np.array([float(fn(model(Xt[q:q + 1]), yt[q:q + 1]).detach()) for q in range(len(Xt))])
        for i in (0, 7, 19):
            stepped = copy.deepcopy(model)
            with torch.no_grad():
                torch.nn.utils.vector_to_parameters(torch.nn.utils.parameters_to_vector(model.parameters()) - eps * grads[i],
                                                    stepped.parameters())
            after = np.array([float(fn(stepped(Xt[q:q + 1]), yt[q:q + 1]).detach()) for q in range(len(Xt))])
            change = helps * (after - before) / eps  # > 0 = the step helped the target
            assert np.allclose(change, scores[i], rtol=1e-4, atol=1e-5 * np.abs(scores[i]).max())


def test_self_influence_is_the_diagonal_of_the_train_by_train_scores(problem):
    checkpoints, X, y, _, _ = problem
    for kwargs in ({"path": "exact"}, {"path": "ghost"}, {"path": "projection", "projection_dim": 12}):
        method = TracIn(checkpoints=checkpoints, learning_rates=RATES, **kwargs).fit(X, y)
        pairwise = method.attribute(X, y).scores
        self_values = method.self_influence()
        assert np.allclose(-self_values.values, np.diag(pairwise), rtol=1e-12)
        assert np.all(self_values.values < 0)
        assert np.array_equal(method.term_values("self"), self_values.values)
    expected = sum(rate * loop_gradients(m, X, y).pow(2).sum(1) for m, rate in zip(checkpoints, RATES, strict=True)).numpy()
    assert close(-TracIn(checkpoints=checkpoints, learning_rates=RATES, path="ghost").fit(X, y).self_influence().values, expected)


def test_learning_rates_weight_the_checkpoints(problem):
    checkpoints, X, y, Xt, yt = problem
    single = [TracIn(checkpoints=[m], path="exact").fit(X, y).attribute(Xt, yt).scores for m in checkpoints]
    weighted = TracIn(checkpoints=checkpoints, learning_rates=RATES, path="exact").fit(X, y).attribute(Xt, yt).scores
    assert close(weighted, sum(rate * s for rate, s in zip(RATES, single, strict=True)), rtol=1e-12)
    uniform = TracIn(checkpoints=checkpoints, learning_rates=0.3, path="exact").fit(X, y)
    assert np.array_equal(uniform.learning_rates_, [0.3] * 3)
    assert close(uniform.attribute(Xt, yt).scores, 0.3 * sum(single), rtol=1e-12)
    assert np.array_equal(TracIn(checkpoints=checkpoints).fit(X, y).learning_rates_, [1.0] * 3)


def test_random_projection_is_unbiased_over_seeds(problem):
    """The mean over 200 projection seeds (k = 10 < p = 66) is within 5 standard errors of the exact scores
    everywhere, while one seed alone is far off. A statistical bound: it may fail by chance (p ≈ 1e-4)."""
    checkpoints, X, y, Xt, yt = problem
    exact = TracIn(checkpoints=checkpoints[:2], learning_rates=RATES[:2], path="exact").fit(X, y).attribute(Xt, yt).scores
    draws = np.stack([TracIn(checkpoints=checkpoints[:2], learning_rates=RATES[:2], path="projection", projection_dim=10,
                             seed=seed).fit(X, y).attribute(Xt, yt).scores for seed in range(200)])
    mean, stderr = draws.mean(0), draws.std(0, ddof=1) / np.sqrt(len(draws))
    assert np.all(np.abs(mean - exact) <= 5 * stderr)
    assert np.abs(draws[0] - exact).max() > 0.1 * np.abs(exact).max()  # one draw is an estimate, not the exact value
    assert np.abs(mean - exact).max() < 0.25 * np.abs(draws[0] - exact).max()


def test_orthogonal_projection_at_full_dimension_is_exact(problem):
    checkpoints, X, y, Xt, yt = problem
    exact = TracIn(checkpoints=checkpoints, learning_rates=RATES, path="exact").fit(X, y).attribute(Xt, yt).scores
    full = TracIn(checkpoints=checkpoints, learning_rates=RATES, projection="orthogonal", projection_dim=66).fit(X, y)
    assert full.path_ == "projection" and full.projection_dim_ == 66
    assert close(full.attribute(Xt, yt).scores, exact)
    reduced = TracIn(checkpoints=checkpoints, learning_rates=RATES, projection="orthogonal", projection_dim=20).fit(X, y)
    assert not close(reduced.attribute(Xt, yt).scores, exact, rtol=1e-2)
    # a random projection to k >= p compresses nothing: the exact products are computed
    assert TracIn(checkpoints=checkpoints, projection_dim=100).fit(X, y).path_ in ("ghost", "exact")


def test_auto_path_is_exact_when_a_parameter_is_outside_linear_layers(problem):
    _, X, y, Xt, yt = problem
    torch.manual_seed(3)
    model = nn.Sequential(nn.Linear(5, 6), nn.LayerNorm(6), nn.Tanh(), nn.Linear(6, 3)).double().eval()
    method = TracIn(model).fit(X, y)
    assert method.path_ == "exact"
    assert close(method.attribute(Xt, yt).scores, brute_force([model], [1.0], X, y, Xt, yt))
    with pytest.raises(InputError, match="nn.Linear"):
        TracIn(model, path="ghost").fit(X, y)
    assert TracIn(model, modules=["0", "3"]).fit(X, y).path_ == "ghost"


def test_built_in_run_saves_one_checkpoint_per_epoch():
    rng = np.random.default_rng(2)
    X, y = rng.normal(size=(40, 4)), rng.integers(0, 3, 40)
    method = TracIn("mlp", hidden=6, epochs=4, learning_rate=0.3, batch_size=8).fit(X, y)
    assert len(method.checkpoints_) == 4 and np.array_equal(method.learning_rates_, [0.3] * 4)
    assert method.model_ is method.checkpoints_[-1]
    reference = fit_mlp(X, y, hidden=6).model  # the same architecture and parametrisation as the built-in MLP
    assert [p.shape for p in reference.parameters()] == [p.shape for p in method.checkpoints_[0].parameters()]
    vectors = [torch.nn.utils.parameters_to_vector(m.parameters()) for m in method.checkpoints_]
    assert all(not torch.equal(a, b) for a, b in zip(vectors[:-1], vectors[1:], strict=True))  # separate copies, training moved on
    losses = [float(F.cross_entropy(m(torch.as_tensor(X)), torch.as_tensor(y)).detach()) for m in method.checkpoints_]
    assert losses[-1] < losses[0]
    assert np.all(method.self_influence().values < 0)  # self-influence Σ η‖g‖² > 0
    again = TracIn("mlp", hidden=6, epochs=4, learning_rate=0.3, batch_size=8).fit(X, y)
    assert np.array_equal(again.attribute(X[:5], y[:5]).scores, method.attribute(X[:5], y[:5]).scores)
    other = TracIn("mlp", hidden=6, epochs=4, learning_rate=0.3, batch_size=8, seed=1).fit(X, y)
    assert not np.allclose(other.attribute(X[:5], y[:5]).scores, method.attribute(X[:5], y[:5]).scores)


def test_built_in_logistic_run_is_plain_minibatch_sgd():
    """The checkpoints equal an independent numpy SGD loop on mean BCE + (λ/(2n))‖θ‖², same init and batches."""
    rng = np.random.default_rng(3)
    n, d, lam, lr, batch, seed = 21, 3, 0.5, 0.2, 8, 4
    X, y = rng.normal(size=(n, d)), rng.integers(0, 2, n)
    method = TracIn("logistic", l2=lam, epochs=2, learning_rate=lr, batch_size=batch, seed=seed).fit(X, y)
    torch.manual_seed(seed)
    init = nn.Linear(d, 1).double()
    w, b = init.weight.detach().numpy()[0].copy(), float(init.bias.detach()[0])
    generator = torch.Generator().manual_seed(seed)
    for epoch in range(2):
        order = torch.randperm(n, generator=generator).numpy()
        for start in range(0, n, batch):
            rows = order[start:start + batch]
            p = 1 / (1 + np.exp(-(X[rows] @ w + b)))
            w, b = w - lr * (X[rows].T @ (p - y[rows]) / len(rows) + lam / n * w), b - lr * ((p - y[rows]).mean() + lam / n * b)
        checkpoint = method.checkpoints_[epoch]
        assert np.allclose(checkpoint.weight.detach().numpy()[0], w, rtol=1e-12, atol=1e-14)
        assert np.isclose(float(checkpoint.bias.detach()[0]), b, rtol=1e-12, atol=1e-14)
    assert method.tasks_[0].loss_name == "binary_cross_entropy"


def test_a_target_equal_to_a_training_row_is_helped_by_it():
    rng = np.random.default_rng(4)
    X, y = rng.normal(size=(30, 3)), rng.integers(0, 2, 30)
    method = TracIn("logistic", epochs=3).fit(X, y)
    scores = method.attribute(X[[5, 11]], y[[5, 11]]).scores
    assert scores[5, 0] > 0 and scores[11, 1] > 0
    assert scores[5, 0] == pytest.approx(-method.self_influence().values[5], rel=1e-12)


def test_valuator_contract_and_entry_points(problem):
    checkpoints, X, y, Xt, yt = problem
    method = TracIn(checkpoints=checkpoints, learning_rates=RATES).fit(X, y, reference=(Xt, yt))
    assert method.values_.shape == (30,) and method.values_.dtype == np.float64
    assert np.allclose(method.values_, method.attribute(Xt, yt).scores.mean(1))
    result = method.attribute(Xt, yt)
    assert set(result.timings) == {"fit", "attribute", "total"} and result.params["checkpoints"] == 3
    assert METHODS["tracin"] is TracIn
    rng = np.random.default_rng(5)
    Xf, yf = rng.normal(size=(25, 3)), rng.choice(["a", "b"], 25)
    values = dataworth.value(Xf, yf, reference=(Xf[:6], yf[:6]), method="tracin", hidden=4, epochs=2)
    assert values.values.shape == (25,) and values.method == "tracin"
    with pytest.raises(InputError, match="classes the model was not trained on"):
        TracIn("mlp", hidden=4, epochs=1).fit(Xf, yf).attribute(Xf[:2], ["a", "z"])


def test_bad_inputs_raise_input_errors(problem):
    checkpoints, X, y, _, _ = problem
    cases = [
        ({"checkpoints": []}, "checkpoints is empty"),
        ({"checkpoints": checkpoints[0]}, "must be a list"),
        ({"checkpoints": [checkpoints[0], "model.pt"]}, r"checkpoints\[1\] is a str"),
        ({"checkpoints": checkpoints, "learning_rates": [0.1, 0.2]}, "2 values for 3 checkpoint"),
        ({"checkpoints": checkpoints, "learning_rates": [0.1, -0.2, 0.1]}, r"learning_rates\[1\] must be a finite number > 0"),
        ({"checkpoints": checkpoints, "path": "fast"}, "path must be one of"),
        ({"checkpoints": checkpoints, "path": "projection"}, "needs projection_dim"),
        ({"checkpoints": checkpoints, "path": "exact", "projection_dim": 8}, "projects nothing"),
        ({"checkpoints": checkpoints, "projection_dim": 0}, "projection_dim must be an integer >= 1"),
        ({"checkpoints": checkpoints, "projection_dim": 8, "projection": "sparse"}, "projection must be one of"),
        ({"checkpoints": checkpoints, "projection_dim": 80, "projection": "orthogonal"}, "projection_dim <= the 66 parameters"),
        ({"checkpoints": [checkpoints[0], make_mlp(5, 8, 3)]}, r"checkpoints\[1\] does not have the architecture"),
        ({"model": "svm"}, "unknown model 'svm'"),
        ({"model": 3}, "model must be an nn.Module"),
    ]
    for kwargs, message in cases:
        with pytest.raises(InputError, match=message):
            TracIn(**kwargs).fit(X, y)
    rng = np.random.default_rng(0)
    Xf, yf = rng.normal(size=(20, 3)), rng.integers(0, 2, 20)
    for kwargs, message in (({"learning_rates": [0.1]}, "set learning_rate instead"), ({"epochs": 0}, "epochs must be"),
                            ({"learning_rate": 0}, "learning_rate must be")):
        with pytest.raises(InputError, match=message):
            TracIn("logistic", **kwargs).fit(Xf, yf)

"""TRAK against its closed form computed directly (per-sample autograd margin gradients, explicit solves), the
ensemble formula, orthogonal invariance, and exact leave-one-out refits of a logistic regression (fp64)."""

import numpy as np
import pytest
import torch
from conftest import make_mlp, train
from torch import nn

import dataworth
from dataworth.checks import DataworthWarning, InputError
from dataworth.influence.models import fit_logistic, fit_mlp
from dataworth.influence.task import ModelTask
from dataworth.influence.trak import TRAK
from dataworth.methods import METHODS


def margin(outputs, target):
    """log(p_y / (1 − p_y)) of one row, written out: f_y − log Σ_{c≠y} exp f_c (±f for one logit)."""
    if outputs.shape[1] == 1:
        return outputs[0, 0] if target.item() == 1 else -outputs[0, 0]
    others = torch.cat([outputs[0, :target.item()], outputs[0, target.item() + 1:]])
    return outputs[0, target.item()] - torch.logsumexp(others, 0)


def margin_gradients(model, X, y):
    params = list(model.parameters())
    rows = []
    for i in range(len(X)):
        grads = torch.autograd.grad(margin(model(X[i:i + 1]), y[i:i + 1]), params)
        rows.append(torch.cat([g.reshape(-1) for g in grads]))
    return torch.stack(rows)


def correct_probability(model, X, y):
    with torch.no_grad():
        return torch.softmax(model(X), 1)[torch.arange(len(X)), y]


def kernel(model, X, y, Xt, yt, regularization):
    """Φ(ΦᵀΦ + λI)⁻¹φᵀ with λ = regularization · mean_i ‖Φ_i‖², by one explicit p×p solve."""
    Phi, phi = margin_gradients(model, X, y), margin_gradients(model, Xt, yt)
    lam = regularization * Phi.pow(2).sum() / len(X)
    return Phi @ torch.linalg.solve(Phi.T @ Phi + lam * torch.eye(Phi.shape[1], dtype=torch.float64), phi.T)


def close(actual, expected, rtol=1e-10):
    """Entrywise relative agreement, measured against the largest entry."""
    expected = np.asarray(expected)
    return np.abs(actual - expected).max() <= rtol * np.abs(expected).max()


@pytest.fixture(scope="module")
def problem():
    """Two trained 5→7→3 tanh MLPs (p = 66, more than the 30 training rows) and a trained 5→3 softmax regression
    (p = 18, fewer), 7 targets."""
    rng = np.random.default_rng(0)
    X, Xt = torch.as_tensor(rng.normal(size=(30, 5))), torch.as_tensor(rng.normal(size=(7, 5)))
    y, yt = torch.as_tensor(rng.integers(0, 3, 30)), torch.as_tensor(rng.integers(0, 3, 7))
    mlps = [train(make_mlp(5, 7, 3, seed=s), X, y, l2=0.01, steps=200) for s in (0, 1)]
    torch.manual_seed(0)
    linear = train(nn.Linear(5, 3).double().eval(), X, y, l2=0.01, steps=200)
    return mlps, linear, X, y, Xt, yt


@pytest.mark.parametrize("which", ["mlp", "linear"])
def test_unprojected_single_model_equals_the_closed_form(problem, which):
    """k = p > n (the n×n system) for the MLP, k = p < n (the k×k system) for the softmax regression."""
    mlps, linear, X, y, Xt, yt = problem
    model = mlps[0] if which == "mlp" else linear
    method = TRAK(model, projection_dim=None, regularization=1e-3).fit(X, y)
    assert method.projection_dim_ is None
    expected = kernel(model, X, y, Xt, yt, 1e-3) * (1 - correct_probability(model, X, y)).unsqueeze(1)
    assert close(method.attribute(Xt, yt).scores, expected.numpy())
    assert np.allclose(method.regularization_, [1e-3 * float(margin_gradients(model, X, y).pow(2).sum()) / 30], rtol=1e-12)


def test_out_to_loss_is_one_minus_the_correct_class_probability(problem):
    mlps, _, X, y, _, _ = problem
    one = TRAK(mlps[0], projection_dim=None).fit(X, y)
    assert np.allclose(one.out_to_loss_, 1 - correct_probability(mlps[0], X, y).numpy(), rtol=1e-12)
    both = TRAK(models=mlps, projection_dim=None).fit(X, y)
    mean = (2 - correct_probability(mlps[0], X, y) - correct_probability(mlps[1], X, y)).numpy() / 2
    assert np.allclose(both.out_to_loss_, mean, rtol=1e-12)
    rng = np.random.default_rng(1)
    Xb, yb = rng.normal(size=(20, 3)), rng.integers(0, 2, 20)
    logistic = fit_logistic(Xb, yb, l2=1.0).model  # one logit: p(correct) = σ(±f)
    binary = TRAK(logistic, loss="binary_cross_entropy", projection_dim=None).fit(Xb, yb)
    with torch.no_grad():
        p1 = torch.sigmoid(logistic(torch.as_tensor(Xb))[:, 0]).numpy()
    assert np.allclose(binary.out_to_loss_, 1 - np.where(yb == 1, p1, 1 - p1), rtol=1e-12)


def test_ensemble_averages_the_kernels_then_multiplies_by_the_mean_q(problem):
    mlps, _, X, y, Xt, yt = problem
    kernels = [kernel(m, X, y, Xt, yt, 1e-2) for m in mlps]
    qs = [1 - correct_probability(m, X, y) for m in mlps]
    expected = ((kernels[0] + kernels[1]) / 2 * ((qs[0] + qs[1]) / 2).unsqueeze(1)).numpy()
    scores = TRAK(models=mlps, projection_dim=None, regularization=1e-2).fit(X, y).attribute(Xt, yt).scores
    assert close(scores, expected)
    per_model_mean = ((kernels[0] * qs[0].unsqueeze(1) + kernels[1] * qs[1].unsqueeze(1)) / 2).numpy()
    assert not close(scores, per_model_mean, rtol=1e-3)  # the other order of averaging gives other numbers


@pytest.mark.parametrize("which", ["mlp", "linear"])
def test_an_orthogonal_projection_to_k_equal_p_changes_nothing(problem, which):
    """Φ(ΦᵀΦ + λI)⁻¹φ and the relative λ are invariant under an orthogonal map of the features."""
    mlps, linear, X, y, Xt, yt = problem
    model, p = (mlps[0], 66) if which == "mlp" else (linear, 18)
    unprojected = TRAK(model, projection_dim=None).fit(X, y).attribute(Xt, yt).scores
    rotated = TRAK(model, projection="orthogonal", projection_dim=p).fit(X, y)
    assert rotated.projection_dim_ == p
    assert close(rotated.attribute(Xt, yt).scores, unprojected)
    fewer = TRAK(model, projection="orthogonal", projection_dim=p // 2).fit(X, y).attribute(Xt, yt).scores
    assert not close(fewer, unprojected, rtol=1e-2)


def test_projected_scores_equal_the_closed_form_on_the_projected_gradients(problem):
    """k = 10 < n = 30: Φ = GP with the method's own P; the kept features and the streamed Cholesky path agree."""
    mlps, _, X, y, Xt, yt = problem
    kept = TRAK(mlps[0], projection_dim=10, projection="gaussian", seed=3).fit(X, y)
    projection = kept.projections_[0]
    Phi = projection.project(margin_gradients(mlps[0], X, y))
    phi = projection.project(margin_gradients(mlps[0], Xt, yt))
    lam = 1e-3 * Phi.pow(2).sum() / 30
    expected = Phi @ torch.linalg.solve(Phi.T @ Phi + lam * torch.eye(10, dtype=torch.float64), phi.T)
    expected = (expected * (1 - correct_probability(mlps[0], X, y)).unsqueeze(1)).numpy()
    assert kept.features_[0] is not None
    assert close(kept.attribute(Xt, yt).scores, expected)
    streamed = TRAK(mlps[0], projection_dim=10, projection="gaussian", seed=3, max_memory=4_000).fit(X, y)
    assert streamed.features_[0] is None and streamed.factors_[0] is not None
    assert close(streamed.attribute(Xt, yt).scores, expected)
    other_seed = TRAK(mlps[0], projection_dim=10, projection="gaussian", seed=4).fit(X, y).attribute(Xt, yt).scores
    assert not close(other_seed, expected, rtol=1e-2)


def test_scores_track_exact_leave_one_out_margin_changes():
    """Binary logistic regression: TRAK's score of row i on target z correlates > 0.95 with the exact change of z's
    margin when row i is removed and the model refitted (positive = leaving the row in raises the margin)."""
    rng = np.random.default_rng(0)
    n, d, lam = 60, 3, 1.0
    w = rng.normal(size=d) * 1.5
    X, Xt = rng.normal(size=(n, d)), rng.normal(size=(5, d))
    y, yt = (rng.random(n) < 1 / (1 + np.exp(-X @ w))).astype(int), (rng.random(5) < 1 / (1 + np.exp(-Xt @ w))).astype(int)

    def margins(model):
        with torch.no_grad():
            f = model(torch.as_tensor(Xt)).numpy()[:, 0]
        return np.where(yt == 1, f, -f)

    full = margins(fit_logistic(X, y, l2=lam).model)
    loo = np.array([full - margins(fit_logistic(np.delete(X, i, 0), np.delete(y, i), l2=lam).model) for i in range(n)])
    scores = TRAK("logistic", projection_dim=None, l2=lam).fit(X, y).attribute(Xt, yt).scores
    assert all(np.corrcoef(scores[:, q], loo[:, q])[0, 1] > 0.95 for q in range(5))


def test_built_in_models_are_fit_mlp_with_consecutive_seeds():
    rng = np.random.default_rng(2)
    X, y = rng.normal(size=(30, 3)), rng.integers(0, 3, 30)
    method = TRAK("mlp", n_models=2, hidden=4, seed=5, projection_dim=None).fit(X, y, reference=(X[:4], y[:4]))
    for model, seed in zip(method.models_, (5, 6), strict=True):
        reference = fit_mlp(X, y, hidden=4, seed=seed).model
        assert all(torch.equal(a, b) for a, b in zip(model.parameters(), reference.parameters(), strict=True))
    assert method.values_.shape == (30,)
    assert np.allclose(method.values_, method.attribute(X[:4], y[:4]).scores.mean(1))
    with pytest.warns(DataworthWarning, match="same model"):
        TRAK("logistic", n_models=2, projection_dim=None).fit(X, y)


def test_valuator_contract_and_entry_points(problem):
    mlps, _, X, y, Xt, yt = problem
    result = TRAK(ModelTask(mlps[0], "cross_entropy"), projection_dim=16).fit(X, y).attribute(Xt, yt)
    assert result.scores.shape == (30, 7) and result.scores.dtype == np.float64
    assert set(result.timings) == {"fit", "attribute", "total"} and result.params["projection_dim"] == 16
    assert METHODS["trak"] is TRAK
    rng = np.random.default_rng(5)
    Xf, yf = rng.normal(size=(25, 3)), rng.choice(["a", "b", "c"], 25)
    values = dataworth.value(Xf, yf, reference=(Xf[:6], yf[:6]), method="trak", hidden=4, projection_dim=32)
    assert values.values.shape == (25,) and values.method == "trak"


def test_bad_inputs_raise_input_errors(problem):
    mlps, _, X, y, _, _ = problem
    cases = [
        ({"models": []}, "models is empty"),
        ({"models": [mlps[0], make_mlp(5, 8, 3)]}, r"models\[1\] does not have the architecture"),
        ({"model": mlps[0], "projection_dim": 0}, "projection_dim must be an integer >= 1"),
        ({"model": mlps[0], "projection": "sparse"}, "projection must be one of"),
        ({"model": mlps[0], "projection": "orthogonal", "projection_dim": 67}, "projection_dim <= the 66 parameters"),
        ({"model": mlps[0], "regularization": -1.0}, "regularization must be a finite number >= 0"),
        ({"model": mlps[0], "loss": "mse"}, "needs a classifier"),
        ({"model": mlps[0], "projection_dim": None, "max_memory": 30_000}, "set projection_dim <= 30"),
        ({"model": "forest"}, "unknown model 'forest'"),
    ]
    for kwargs, message in cases:
        with pytest.raises(InputError, match=message):
            TRAK(**kwargs).fit(X, y)
    duplicated, labels = torch.cat([X, X[:1]]), torch.cat([y, y[:1]])  # two equal rows: ΦΦᵀ is singular
    with pytest.raises(InputError, match="singular"):
        TRAK(mlps[0], projection_dim=None, regularization=0.0).fit(duplicated, labels)
    with pytest.raises(InputError, match="n_models must be"):
        TRAK("mlp", n_models=0).fit(X.numpy(), y.numpy())
    with pytest.raises(InputError, match="outside the model's 3 classes"):
        TRAK(mlps[0], projection_dim=None).fit(X, y + 3)


def test_regularization_zero_is_the_unregularized_closed_form(problem):
    """One logit (binary logistic regression, Φ = ±[x, 1] of full column rank): λ = 0 is traker's default."""
    _, _, X, y, Xt, yt = problem
    model = fit_logistic(X.numpy(), (y.numpy() > 0).astype(int), l2=1.0).model
    yb, ytb = (y > 0).long(), (yt > 0).long()
    scores = TRAK(model, loss="binary_cross_entropy", projection_dim=None, regularization=0.0).fit(X, yb).attribute(Xt, ytb).scores
    Phi, phi = margin_gradients(model, X, yb), margin_gradients(model, Xt, ytb)
    with torch.no_grad():
        p = torch.sigmoid(model(X)[:, 0])
    q = torch.where(yb == 1, 1 - p, p)
    expected = (Phi @ torch.linalg.solve(Phi.T @ Phi, phi.T) * q.unsqueeze(1)).numpy()
    assert close(scores, expected)

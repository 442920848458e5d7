"""Influence and rescaled influence against exact leave-one-out refits (convex) and brute-force formulas."""

import numpy as np
import pytest
import torch
from conftest import make_mlp, train
from torch.func import hessian

from dataworth.checks import DataworthWarning, InputError
from dataworth.influence.influence import InfluenceFunction, RescaledInfluence
from dataworth.influence.solvers import CGSolver, ExplicitSolver
from dataworth.influence.task import ModelTask


def logistic_problem(n, d, seed, classes=2):
    rng = np.random.default_rng(seed)
    W = rng.normal(size=(d, classes)) * 3 / np.sqrt(d)
    X, Xt = rng.normal(size=(n, d)), rng.normal(size=(200, d))

    def labels(Z):
        logits = Z @ W
        p = np.exp(logits - logits.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        return np.array([rng.choice(classes, p=row) for row in p])

    return X, labels(X), Xt, labels(Xt)


def newton_loo(X, y, lam, theta):
    """Exact refits without each row: Newton from θ̂ on Σ_{j≠i} ℓ_j + (λ/2)‖θ‖² (binary logistic), float64, to ‖∇‖ < 1e-10."""
    design = np.hstack([X, np.ones((len(X), 1))])
    out = []
    for i in range(len(X)):
        keep = np.arange(len(X)) != i
        Xi, yi, t = design[keep], y[keep], theta.copy()
        for _ in range(20):
            p = 1 / (1 + np.exp(-Xi @ t))
            g = Xi.T @ (p - yi) + lam * t
            if np.linalg.norm(g) < 1e-10:
                break
            t = t - np.linalg.solve((Xi * (p * (1 - p))[:, None]).T @ Xi + lam * np.eye(len(t)), g)
        out.append(t)
    return np.array(out)


def flat_theta(model):
    return torch.cat([model.weight.detach(), model.bias.detach()[:, None]], 1).reshape(-1).numpy()


@pytest.mark.parametrize("n, d, classes", [(400, 200, 2), (2000, 50, 2), (150, 10, 3)])
def test_rif_is_the_newton_removal_and_if_underestimates_it(n, d, classes):
    lam = 1.0
    X, y, Xt, yt = logistic_problem(n, d, seed=n, classes=classes)
    kwargs = {"l2": lam, "solver": ExplicitSolver(damping=0.0)}
    influence = InfluenceFunction("logistic", **kwargs).fit(X, y)
    rescaled = RescaledInfluence("logistic", **kwargs).fit(X, y)
    score_if = influence.attribute(Xt, yt).scores.mean(1)
    score_rif = rescaled.attribute(Xt, yt).scores.mean(1)

    outputs = 1 if classes == 2 else classes
    theta = flat_theta(influence.model_)
    design = np.hstack([X, np.ones((n, 1))])
    # one-step Newton removal by brute force: ∇L_testᵀ H_{−i}⁻¹ ∇ℓ_i with the sum-form Hessians
    objective_parts = _logistic_parts(design, y, theta, outputs)
    gradient_test = _test_gradient(Xt, yt, theta, outputs)
    H = objective_parts["H"] + lam * np.eye(len(theta))
    sample = np.random.default_rng(0).choice(n, 25, replace=False)
    newton = np.array([gradient_test @ np.linalg.solve(H - objective_parts["hessians"](i), objective_parts["grads"][i]) for i in sample])
    assert np.allclose(score_rif[sample], newton, rtol=1e-10, atol=1e-10 * np.abs(newton).max())
    assert np.allclose(score_if[sample], [gradient_test @ np.linalg.solve(H, objective_parts["grads"][i]) for i in sample], rtol=1e-10)

    if classes == 2:  # exact LOO: the parameters moved, and the test loss changed
        refit = newton_loo(X, y, lam, theta)
        moved = (refit - theta) @ gradient_test  # the first-order change of the mean test loss
        for scores in (score_if, score_rif):
            assert np.corrcoef(scores, moved)[0, 1] > 0.9
        slope_if, slope_rif = np.polyfit(score_if, moved, 1)[0], np.polyfit(score_rif, moved, 1)[0]
        assert 0.8 < slope_rif < 1.25
        assert np.corrcoef(score_rif, moved)[0, 1] >= np.corrcoef(score_if, moved)[0, 1] - 1e-3
        if d == 200:
            assert slope_if > 2.5  # IF underestimates removal effects when d ≈ n/2 (leverages are large)


def _logistic_parts(design, y, theta, outputs):
    logits = design @ theta.reshape(outputs, -1).T
    if outputs == 1:
        p = 1 / (1 + np.exp(-logits[:, 0]))
        grads = (p - y)[:, None] * design
        weights = p * (1 - p)
        H = (design * weights[:, None]).T @ design
        return {"H": H, "grads": grads, "hessians": lambda i: weights[i] * np.outer(design[i], design[i])}
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    onehot = np.eye(outputs)[y]
    grads = np.einsum("nc,nd->ncd", p - onehot, design).reshape(len(y), -1)

    def row_hessian(i):
        return np.kron(np.diag(p[i]) - np.outer(p[i], p[i]), np.outer(design[i], design[i]))

    H = sum(row_hessian(i) for i in range(len(y)))
    return {"H": H, "grads": grads, "hessians": row_hessian}


def _test_gradient(Xt, yt, theta, outputs):
    return torch.func.grad(lambda t: _loss(t, Xt, yt, outputs))(torch.as_tensor(theta)).numpy()


def _loss(flat, Xt, yt, outputs):
    design = torch.as_tensor(np.hstack([Xt, np.ones((len(Xt), 1))]))
    logits = design @ flat.reshape(outputs, -1).T
    if outputs == 1:
        return torch.nn.functional.binary_cross_entropy_with_logits(logits[:, 0], torch.as_tensor(yt).double())
    return torch.nn.functional.cross_entropy(logits, torch.as_tensor(yt))


def row_gradient(task, theta, inputs, targets):
    return torch.func.grad(lambda t: task.losses(task.unflatten(t), inputs, targets).sum())(theta)


@pytest.fixture(scope="module")
def trained_mlp():
    rng = np.random.default_rng(5)
    X = torch.as_tensor(rng.normal(size=(60, 5)))
    y = torch.as_tensor(rng.integers(0, 3, size=60))
    model = train(make_mlp(5, 8, 3, seed=5), X, y, l2=0.01)
    Xt = torch.as_tensor(rng.normal(size=(7, 5)))
    yt = torch.as_tensor(rng.integers(0, 3, size=7))
    return model, X, y, Xt, yt


@pytest.mark.parametrize("curvature", ["ggn", "hessian"])
def test_influence_equals_the_brute_force_formula(trained_mlp, curvature):
    model, X, y, Xt, yt = trained_mlp
    task = ModelTask(model, "cross_entropy", l2=0.01)
    theta = task.flat_params()

    def objective(flat):
        return task.losses(task.unflatten(flat), X, y).mean() + 0.005 * flat.pow(2).sum()

    H = hessian(objective)(theta) if curvature == "hessian" else None
    method = InfluenceFunction(task, solver="explicit", damping=0.1, curvature=curvature).fit(X, y)
    if H is None:
        H = method.solver_.curvature_matrix_ - 0.1 * torch.eye(len(theta), dtype=torch.float64)
    G = torch.stack([row_gradient(task, theta, X[i:i + 1], y[i:i + 1]) for i in range(len(X))])
    Gt = torch.stack([row_gradient(task, theta, Xt[q:q + 1], yt[q:q + 1]) for q in range(len(Xt))])
    expected = (G @ torch.linalg.solve(H + 0.1 * torch.eye(len(theta), dtype=torch.float64), Gt.T) / len(X)).numpy()
    scores = method.attribute(Xt, yt).scores
    assert np.allclose(scores, expected, rtol=1e-10, atol=1e-12)
    self_expected = torch.einsum("ip,ip->i", G, torch.linalg.solve(H + 0.1 * torch.eye(len(theta), dtype=torch.float64), G.T).T).numpy()
    assert np.allclose(method.self_influence().values, -self_expected, rtol=1e-10)
    # without the gradient cache, one row per chunk and the 7 targets in groups of 4: the same numbers
    chunked = InfluenceFunction(task, solver=ExplicitSolver(damping=0.1, curvature=curvature), max_memory=5_000).fit(X, y)
    assert chunked.train_gradients_ is None
    assert np.allclose(chunked.attribute(Xt, yt).scores, scores, rtol=1e-12, atol=1e-15)


def test_margin_measurement_is_signed_so_positive_helps(trained_mlp):
    model, X, y, Xt, yt = trained_mlp
    loss = InfluenceFunction(model, solver="explicit", l2=0.01, damping=0.1).fit(X, y).attribute(Xt, yt).scores
    margin = InfluenceFunction(model, measurement="margin", solver="explicit", l2=0.01, damping=0.1).fit(X, y).attribute(Xt, yt).scores
    assert np.corrcoef(loss.ravel(), margin.ravel())[0, 1] > 0.5


def test_rif_for_a_network_matches_the_woodbury_identity(trained_mlp):
    """H_{−i}⁻¹g_i with H_{−i} = H − J_iᵀΛ_iJ_i/n (row i's Gauss-Newton term), by dense solves."""
    model, X, y, Xt, yt = trained_mlp
    task = ModelTask(model, "cross_entropy", l2=0.01)
    rif = RescaledInfluence(task, solver="explicit", damping=0.1).fit(X, y)
    H = rif.solver_.curvature_matrix_
    theta = task.flat_params()
    n = len(X)
    gt = torch.func.grad(lambda t: task.losses(task.unflatten(t), Xt, yt).mean())(theta)
    expected = []
    for i in range(n):
        J = torch.func.jacrev(lambda t, row=X[i:i + 1]: task.forward(task.unflatten(t), row)[0])(theta)
        p = torch.softmax(model(X[i:i + 1])[0], 0).detach()
        Lam = torch.diag(p) - torch.outer(p, p)
        g = row_gradient(task, theta, X[i:i + 1], y[i:i + 1])
        expected.append(float(gt @ torch.linalg.solve(H - J.T @ Lam @ J / n, g)) / n)
    assert np.allclose(rif.attribute(Xt, yt).scores.mean(1), expected, rtol=1e-9)
    assert np.all(rif.leverages_ > 0) and np.all(rif.leverages_ < 1)


def test_valuation_contract_and_warnings(trained_mlp):
    model, X, y, Xt, yt = trained_mlp
    method = InfluenceFunction(model, solver="cg", l2=0.01, damping=0.1).fit(X, y, reference=(Xt, yt))
    assert method.values_.shape == (60,)
    assert np.allclose(method.values_, method.attribute(Xt, yt).scores.mean(1))
    assert method.stationarity_ < 1e-3
    untrained = make_mlp(5, 8, 3, seed=9)
    with pytest.warns(DataworthWarning, match="not at a stationary point"):
        InfluenceFunction(untrained, solver="cg", damping=0.1).fit(X, y)
    with pytest.raises(InputError, match="unknown solver"):
        InfluenceFunction(model, solver="newton").fit(X, y)
    with pytest.raises(InputError, match="damping"):
        InfluenceFunction(model, solver="cg", damping=-1).fit(X, y)
    with pytest.raises(InputError, match="outside the model's 3 classes"):
        InfluenceFunction(model, solver="cg", l2=0.01).fit(X, y).attribute(Xt, yt + 5)
    with pytest.raises(InputError, match="no option 'depth'"):
        InfluenceFunction(model, solver="cg", solver_options={"depth": 3}).fit(X, y)
    assert isinstance(InfluenceFunction(model, l2=0.01, solver=CGSolver(damping=0.5)).fit(X, y).solver_, CGSolver)

"""``dataworth influence``: values against the exact Newton removal, and one error line per bad input."""

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import save_file
from test_influence import logistic_problem
from typer.testing import CliRunner

from dataworth.cli import app
from dataworth.influence.influence import RescaledInfluence


def run(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("influence")
    X, y, Xt, yt = logistic_problem(400, 200, seed=400)
    np.savez(tmp / "train.npz", X=X, y=y)
    np.savez(tmp / "test.npz", X=Xt, y=yt)
    return tmp, X, y, Xt, yt


def newton_removal(X, y, Xt, yt, lam, rows):
    """∇L_testᵀ H_{−i}⁻¹ ∇ℓ_i for binary logistic in sum form, refit by Newton to ‖∇‖ < 1e-12 (float64)."""
    design, test = np.hstack([X, np.ones((len(X), 1))]), np.hstack([Xt, np.ones((len(Xt), 1))])
    theta = np.zeros(design.shape[1])
    for _ in range(50):
        p = 1 / (1 + np.exp(-design @ theta))
        g = design.T @ (p - y) + lam * theta
        if np.linalg.norm(g) < 1e-12:
            break
        theta -= np.linalg.solve((design * (p * (1 - p))[:, None]).T @ design + lam * np.eye(len(theta)), g)
    p = 1 / (1 + np.exp(-design @ theta))
    H = (design * (p * (1 - p))[:, None]).T @ design + lam * np.eye(len(theta))
    pt = 1 / (1 + np.exp(-test @ theta))
    gt = test.T @ (pt - yt) / len(yt)
    return np.array([gt @ np.linalg.solve(H - p[i] * (1 - p[i]) * np.outer(design[i], design[i]), (p[i] - y[i]) * design[i]) for i in rows])


def test_rif_through_the_cli_is_the_newton_removal(files):
    tmp, X, y, Xt, yt = files
    result = run("influence", tmp / "train.npz", "--test", tmp / "test.npz", "--model", "logistic", "--l2", 2.0,
                 "--method", "rif", "--out", tmp / "rif.csv")
    assert result.exit_code == 0, result.output
    table = pd.read_csv(tmp / "rif.csv")
    assert list(table.columns) == ["index", "value"] and list(table["index"]) == list(range(400))
    rows = np.arange(0, 400, 16)
    expected = newton_removal(X, y, Xt, yt, 2.0, rows)
    assert np.allclose(table["value"].to_numpy()[rows], expected, rtol=1e-9, atol=1e-12 * np.abs(expected).max())
    api = RescaledInfluence("logistic", l2=2.0, solver="explicit", damping=0.0).fit(X, y).attribute(Xt, yt).reduce().values
    assert np.allclose(table["value"], api, rtol=1e-12, atol=1e-15)


def test_self_influence_through_the_cli(files):
    tmp, X, y, _, _ = files
    assert run("influence", tmp / "train.npz", "--self", "--out", tmp / "self.parquet").exit_code == 0
    values = pd.read_parquet(tmp / "self.parquet")["value"].to_numpy()
    assert values.shape == (400,) and np.all(values <= 0)


def mlp_factory():
    return torch.nn.Sequential(torch.nn.Linear(200, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2))


def test_user_model_from_safetensors(files, monkeypatch):
    tmp, X, y, Xt, yt = files
    monkeypatch.syspath_prepend(str(__import__("pathlib").Path(__file__).parent))
    model = mlp_factory().double()
    save_file(model.state_dict(), tmp / "w.safetensors")
    common = ("influence", tmp / "train.npz", "--test", tmp / "test.npz", "--model", "mlp", "--solver", "cg", "--damping", 0.1)
    result = run(*common, "--weights", tmp / "w.safetensors", "--arch", "test_influence_cli:mlp_factory", "--l2", 0.01, "--out", tmp / "mlp.csv")
    assert result.exit_code == 0, result.output
    assert "not at a stationary point" in result.output  # an untrained model is flagged, not silently used

    save_file({"0.weight": torch.zeros(8, 3, dtype=torch.float64)}, tmp / "bad.safetensors")
    bad = run(*common, "--weights", tmp / "bad.safetensors", "--arch", "test_influence_cli:mlp_factory", "--out", tmp / "bad.csv")
    assert bad.exit_code == 2 and "does not match the architecture" in bad.output and "missing 0.bias" in bad.output
    assert not (tmp / "bad.csv").exists()


@pytest.mark.parametrize("args, message", [
    (("--solver", "newton"), "unknown solver 'newton'"),
    (("--damping", -1), "damping must be a finite number >= 0"),
    (("--method", "tracin"), "--method"),
    (("--weights", "w.safetensors"), "--weights and --arch go together"),
    (("--model", "mlp", "--weights", "w.safetensors", "--arch", "no_such_module:f"), "cannot import 'no_such_module'"),
    (("--l2", 0), "l2 must be > 0"),
])
def test_bad_input_is_one_line_and_exit_code_2(files, args, message):
    tmp, *_ = files
    out = tmp / "never.csv"
    result = run("influence", tmp / "train.npz", "--test", tmp / "test.npz", "--out", out, *args)
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output
    assert not out.exists()


def test_test_labels_outside_the_training_classes(files):
    tmp, X, _, Xt, yt = files
    np.savez(tmp / "odd.npz", X=Xt, y=yt + 5)
    result = run("influence", tmp / "train.npz", "--test", tmp / "odd.npz", "--out", tmp / "odd.csv")
    assert result.exit_code == 2 and "classes the model was not trained on" in result.output
    np.savez(tmp / "narrow.npz", X=Xt[:, :10], y=yt)
    result = run("influence", tmp / "train.npz", "--test", tmp / "narrow.npz", "--out", tmp / "narrow.csv")
    assert result.exit_code == 2 and "10 feature columns" in result.output

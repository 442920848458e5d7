"""The built-in curation experiment and `dataworth curate`."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from dataworth.cli import app
from dataworth.curation.experiment import load_curation_data, run_curation


def test_data_split_noise_and_classes() -> None:
    data = load_curation_data("digits", "label-flip:0.3", seed=1, validation_rows=50)
    assert len(data.y_val) == 50 and len(data.y_test) == 360 - 50
    assert set(data.y_val.tolist()) == set(range(10))  # taken class by class
    assert data.corrupted.mean() == pytest.approx(0.3, abs=0.01)
    assert data.X.dtype == torch.float32 and abs(float(data.X.mean())) < 1e-5


def test_run_logs_every_row_and_the_drop_precision_matches_the_log() -> None:
    data = load_curation_data("digits", "label-flip:0.4", seed=0)
    run = run_curation(data, "lai", steps=40, warmup_steps=10, eval_every=20)
    assert len(run.log) == 40 * 64 and list(run.curve["step"]) == [20, 40]
    after = run.log[run.log.step >= 10]
    dropped = ~after["kept"]
    assert run.summary["precision"] == pytest.approx(after.loc[dropped, "corrupted"].mean())
    np.testing.assert_array_equal(run.log["corrupted"], data.corrupted[run.log["id"]])
    none = run_curation(data, "none", steps=40, warmup_steps=10, eval_every=20)
    assert none.summary["dropped"] == 0 and none.log["kept"].all()


def test_cli_curate_writes_outputs_together(tmp_path) -> None:
    out = tmp_path / "cur"
    done = CliRunner().invoke(app, ["curate", "--dataset", "digits", "--noise", "label-flip:0.4", "--method", "lai,small-loss",
                                    "--steps", "30", "--warmup-steps", "10", "--out", str(out)])
    assert done.exit_code == 0, done.output
    assert {p.name for p in out.iterdir()} == {"results.json", "curves.csv", "decisions.parquet", "curation.png", "report.html"}
    assert [r["method"] for r in json.loads((out / "results.json").read_text())] == ["none", "lai", "small-loss"]
    decisions = pd.read_parquet(out / "decisions.parquet")
    assert len(decisions) == 3 * 30 * 64 and {"method", "seed", "score", "kept", "corrupted"} <= set(decisions.columns)
    assert "Drop rate per class" in (out / "report.html").read_text()


@pytest.mark.parametrize(("args", "message"), [
    (["--method", "lia"], "--method"),
    (["--policy", "drop-all"], "--policy"),
    (["--noise", "feature-noise:0.1"], "plants label noise"),
    (["--model", "transformer"], "reads text"),
    (["--steps", "0"], "--steps"),
])
def test_cli_curate_bad_input_is_one_line_and_exit_code_2(tmp_path, args, message) -> None:
    done = CliRunner().invoke(app, ["curate", "--steps", "5", "--out", str(tmp_path / "o"), *args])
    assert done.exit_code == 2, done.output
    assert message in done.output and "Traceback" not in done.output
    assert not (tmp_path / "o").exists()

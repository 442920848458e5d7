"""The attribution benchmark: method parsing, one run of every family against the truth, resuming, and the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from dataworth.checkpoint import Checkpoint
from dataworth.checks import InputError
from dataworth.cli import app
from dataworth.evaluation.attribution import linear_datamodeling_score, loo_correlation
from dataworth.evaluation.attribution_bench import build_benchmark, evaluate_method, parse_methods, run_methods
from dataworth.influence import TRAK, AirRep, InfluenceFunction, TracIn
from dataworth.result import AttributionResult
from dataworth.valuation import KNNShapley

SMALL = {"model": "logistic", "subsets": 8, "training_subsets": 8, "seeds": 1, "loo_rows": 5, "max_train": 150, "max_targets": 12}


@pytest.fixture(scope="module")
def bench():
    return build_benchmark("digits", **SMALL)


def test_methods_are_parsed_by_family_with_solver_aliases():
    specs = {s.label: s for s in parse_methods("if-ekfac, rif-explicit,tracin,trak,airrep,knn-shapley")}
    assert specs["if-ekfac"].cls is InfluenceFunction and specs["if-ekfac"].params == {"solver": "ekfac"}
    assert specs["rif-explicit"].params == {"solver": "explicit"} and specs["rif-explicit"].family == "attributor"
    assert specs["tracin"].cls is TracIn and specs["trak"].cls is TRAK
    assert specs["airrep"].cls is AirRep and specs["airrep"].family == "learned"
    assert specs["knn-shapley"].cls is KNNShapley and specs["knn-shapley"].family == "valuator"


@pytest.mark.parametrize(("methods", "message"), [
    ("", "no method"), ("if-ekfac,if-ekfac", "named twice"), ("if-newton", "unknown solver"), ("shapley-magic", "unknown method"),
])
def test_bad_method_lists_are_refused(methods, message):
    with pytest.raises(InputError, match=message):
        parse_methods(methods)


def test_the_benchmark_holds_the_planted_noise_and_its_truth(bench):
    problem = bench.problem
    assert problem.n == 150 and problem.n_targets == 12
    assert bench.corrupted.sum() == 15  # 10% label flips
    assert bench.evaluation.subsets.shape == (8, 150) and bench.training.subsets.shape == (8, 150)
    assert not (bench.evaluation.subsets == bench.training.subsets).all(axis=1).any()  # AirRep never sees scored subsets
    np.testing.assert_allclose(problem.X.mean(axis=0), 0, atol=1e-12)  # standardized by the training rows
    assert bench.train_display.images.shape == (150, 8, 8) and len(bench.target_display.labels) == 12


def test_a_method_row_is_its_scores_against_the_truth(bench):
    spec = parse_methods("if-explicit")[0]
    row, result = evaluate_method(bench, spec)
    direct = InfluenceFunction(model="logistic", solver="explicit", l2=bench.problem.l2).fit(bench.problem.X, bench.problem.y)
    scores = direct.attribute(bench.problem.X_targets, bench.problem.y_targets).scores
    np.testing.assert_allclose(result.scores, scores, rtol=1e-10)
    assert row["lds"] == pytest.approx(linear_datamodeling_score(scores, bench.evaluation.subsets, bench.evaluation.outcomes).mean)
    assert row["loo_pearson"] == pytest.approx(loo_correlation(scores, bench.loo)["pearson"])
    # the exact influence of a convex model predicts its retraining closely
    assert row["loo_pearson"] > 0.9 and row["lds"] > 0.5


def test_valuators_enter_with_one_value_per_row(bench):
    row, result = evaluate_method(bench, parse_methods("knn-shapley")[0])
    values = KNNShapley().fit(bench.problem.X, bench.problem.y, reference=(bench.problem.X_targets, bench.problem.y_targets)).values_
    np.testing.assert_allclose(result.scores[:, 0], values)
    assert row["lds"] == pytest.approx(linear_datamodeling_score(values, bench.evaluation.subsets, bench.evaluation.outcomes).mean)


def test_method_runs_resume_from_the_checkpoint(bench, tmp_path):
    specs = parse_methods("knn-shapley,tracin")
    first, _ = run_methods(bench, specs, seeds=2, checkpoint=Checkpoint(tmp_path / "runs.jsonl"))
    again, results = run_methods(bench, specs, seeds=2, checkpoint=Checkpoint(tmp_path / "runs.jsonl"))
    assert again[["method", "seed", "lds", "seconds"]].equals(first[["method", "seed", "lds", "seconds"]])  # seed 1 was read back
    assert set(results) == {"knn-shapley", "tracin"}


def test_cli_bench_attribute_writes_every_output_and_the_report_explains_a_target(tmp_path):
    out = tmp_path / "bench"
    runner = CliRunner()
    done = runner.invoke(app, ["bench", "attribute", "--dataset", "digits", "--methods", "if-ekfac,airrep,kairos", "--subsets", "6",
                               "--seeds", "1", "--loo-rows", "4", "--max-train", "120", "--max-targets", "10", "--out", str(out)])
    assert done.exit_code == 0, done.output
    names = {p.relative_to(out).as_posix() for p in out.rglob("*")}
    assert {"results.json", "summary.json", "attribution.png", "loo.png", "report.html", "train.npz", "targets.npz",
            "attributions/if-ekfac.npz", "attributions/airrep.npz"} <= names
    assert not (out / "attribution.partial.jsonl").exists()
    rows = json.loads((out / "results.json").read_text())
    assert [r["method"] for r in rows] == ["if-ekfac", "airrep", "kairos"]
    assert AttributionResult.load(out / "attributions" / "if-ekfac.npz").shape == (120, 10)
    assert "most harmful (if-ekfac)" in (out / "report.html").read_text()
    report = tmp_path / "target.html"
    done = runner.invoke(app, ["report", str(out / "attributions" / "if-ekfac.npz"), "--train", str(out / "train.npz"),
                               "--targets", str(out / "targets.npz"), "--target-row", "2", "--out", str(report)])
    assert done.exit_code == 0, done.output
    assert "Target row 2" in report.read_text()


@pytest.mark.parametrize(("args", "message"), [
    (["--methods", "if-magic"], "unknown solver"),
    (["--model", "svm"], "--model"),
    (["--noise", "feature-noise:0.1"], "plants label noise"),
    (["--methods", "airrep", "--training-subsets", "0"], "training-subsets"),
])
def test_cli_bad_input_is_one_line_and_exit_code_2(tmp_path, args, message):
    done = CliRunner().invoke(app, ["bench", "attribute", "--subsets", "4", "--max-train", "60", "--out", str(tmp_path / "o"), *args])
    assert done.exit_code == 2
    assert message in done.output and "Traceback" not in done.output
    assert not (tmp_path / "o").exists()


def test_cli_report_of_attributions_needs_targets(tmp_path):
    path = AttributionResult(np.zeros((3, 2)), method="influence").save(tmp_path / "a.npz")
    done = CliRunner().invoke(app, ["report", str(path), "--train", str(path), "--out", str(tmp_path / "r.html")])
    assert done.exit_code == 2 and "--targets" in done.output

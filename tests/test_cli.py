"""The command line: results against ground truth, and one clear error line for every bad input."""

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

import dataworth
from dataworth import DataworthWarning, Kairos, ValuationResult
from dataworth.cli import app
from dataworth.kernels import make_kernel
from mmd_oracle import loo_effects


def run(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.fixture
def files(tmp_path, planted):
    X, y, Z, y_ref = planted
    np.savez(tmp_path / "train.npz", X=X[:30], y=y[:30])
    np.savez(tmp_path / "new.npz", X=X[30:], y=y[30:])
    np.savez(tmp_path / "all.npz", X=X, y=y)
    np.savez(tmp_path / "ref.npz", X=Z, y=y_ref)
    return tmp_path


def test_value_feature_term_is_the_exact_leave_one_out_mmd_change(files, planted):
    X, y, Z, y_ref = planted
    result = run("value", files / "train.npz", "--reference", files / "ref.npz", "--out", files / "out.csv",
                 "--term", "feature", "--label-kernel", "indicator", "--bandwidth", "2.5")
    assert result.exit_code == 0, result.stderr
    table = pd.read_csv(files / "out.csv")
    assert list(table.columns) == ["index", "value", "feature", "label_residual", "feature_q", "label_q", "issue", "issue_q", "duplicate_of"]
    expected = loo_effects(X[:30], y[:30], Z, y_ref, make_kernel("gaussian", 2.5), "indicator")
    np.testing.assert_allclose(table["value"], expected, rtol=0, atol=1e-10)
    np.testing.assert_array_equal(table["index"], np.arange(30))


def test_update_equals_value_on_the_concatenated_data(files):
    first = run("value", files / "train.npz", "--reference", files / "ref.npz", "--out", files / "a.csv",
                "--state-out", files / "state.npz")
    assert first.exit_code == 0, first.stderr
    bandwidth = Kairos.load_state(files / "state.npz").bandwidth_
    updated = run("update", "--state", files / "state.npz", "--add", files / "new.npz", "--out", files / "b.parquet",
                  "--state-out", files / "state2.npz")
    assert updated.exit_code == 0, updated.stderr
    batch = run("value", files / "all.npz", "--reference", files / "ref.npz", "--out", files / "c.csv",
                "--bandwidth", repr(bandwidth))
    assert batch.exit_code == 0, batch.stderr
    online, full = pd.read_parquet(files / "b.parquet"), pd.read_csv(files / "c.csv")
    assert len(online) == 40
    for column in ("value", "feature", "label_residual"):
        np.testing.assert_allclose(online[column], full[column], rtol=0, atol=1e-10)
    assert ValuationResult.load(files / "b.parquet").params["term"] == "combined"
    assert (files / "state2.npz").exists()


def test_csv_input_with_named_label_column(tmp_path, planted):
    X, y, Z, y_ref = planted
    train = pd.DataFrame(X, columns=[f"f{i}" for i in range(4)]).assign(target=np.array(["a", "b", "c"])[y])
    ref = pd.DataFrame(Z, columns=[f"f{i}" for i in range(4)]).assign(target=np.array(["a", "b", "c"])[y_ref])
    train.to_csv(tmp_path / "train.csv", index=False)
    ref.to_parquet(tmp_path / "ref.parquet")
    result = run("value", tmp_path / "train.csv", "--reference", tmp_path / "ref.parquet", "--out", tmp_path / "o.csv",
                 "--label-column", "target")
    assert result.exit_code == 0, result.stderr
    expected = Kairos().fit(X, np.array(["a", "b", "c"])[y], reference=(Z, np.array(["a", "b", "c"])[y_ref])).values_
    np.testing.assert_allclose(pd.read_csv(tmp_path / "o.csv")["value"], expected, atol=1e-12)


def test_features_only_npy_gives_the_feature_term_and_no_label_term(tmp_path, planted):
    X, _, Z, _ = planted
    np.save(tmp_path / "train.npy", X)
    np.save(tmp_path / "ref.npy", Z)
    ok = run("value", tmp_path / "train.npy", "--reference", tmp_path / "ref.npy", "--out", tmp_path / "o.csv", "--term", "feature")
    assert ok.exit_code == 0, ok.stderr
    assert list(pd.read_csv(tmp_path / "o.csv").columns) == ["index", "value", "feature", "feature_q", "issue", "issue_q", "duplicate_of"]
    combined = run("value", tmp_path / "train.npy", "--reference", tmp_path / "ref.npy", "--out", tmp_path / "c.csv")
    assert combined.exit_code == 0, combined.stderr  # without labels the combined value is the feature term
    np.testing.assert_array_equal(pd.read_csv(tmp_path / "c.csv")["value"], pd.read_csv(tmp_path / "o.csv")["value"])
    bad = run("value", tmp_path / "train.npy", "--reference", tmp_path / "ref.npy", "--out", tmp_path / "p.csv", "--term", "label")
    assert bad.exit_code == 2 and "the label term needs labels but the data has none" in bad.stderr, bad.stderr
    assert not (tmp_path / "p.csv").exists()


def _write_bad_inputs(d, X, y, Z, y_ref):
    """name -> (TRAIN, REF, extra args, expected message fragment)."""
    (d / "notes.txt").write_text("hello")
    Xn = X.copy()
    Xn[4, 2] = np.nan
    np.savez(d / "nan.npz", X=Xn, y=y)
    Xi = X.copy()
    Xi[7, 0] = np.inf
    np.savez(d / "inf.npz", X=Xi, y=y)
    np.savez(d / "short_y.npz", X=X, y=y[:-3])
    np.savez(d / "wide_ref.npz", X=np.hstack([Z, Z]), y=y_ref)
    np.savez(d / "empty_ref.npz", X=np.zeros((0, 4)), y=np.zeros(0, dtype=int))
    np.savez(d / "one_row.npz", X=X[:1], y=y[:1])
    np.savez(d / "unknown_label.npz", X=X, y=np.where(np.arange(len(y)) == 3, 9, y))
    pd.DataFrame({"f0": X[:, 0], "colour": ["red"] * len(X), "label": y}).to_csv(d / "text.csv", index=False)
    pd.DataFrame({"f0": X[:, 0], "label": y}).to_csv(d / "good.csv", index=False)
    return {
        "missing file": ("missing.npz", "ref.npz", [], "TRAIN not found"),
        "unknown extension": ("notes.txt", "ref.npz", [], "unsupported file type '.txt' for TRAIN"),
        "NaN features": ("nan.npz", "ref.npz", [], "the training set contains NaN or inf (first at row 4, column 2)"),
        "inf features": ("inf.npz", "ref.npz", [], "contains NaN or inf (first at row 7, column 0)"),
        "X/y length mismatch": ("short_y.npz", "ref.npz", [], "the training labels do not match the features: 37 labels for 40 rows"),
        "dimension mismatch": ("train.npz", "wide_ref.npz", [], "the reference set has 8 features but the training set has 4"),
        "empty reference": ("train.npz", "empty_ref.npz", [], "the reference set is empty"),
        "one training row": ("one_row.npz", "ref.npz", [], "KAIROS needs at least 2 training rows"),
        "unknown label": ("unknown_label.npz", "ref.npz", [], "labels that do not occur in the reference set: 9"),
        "non-numeric column": ("text.csv", "ref.npz", [], "TRAIN has non-numeric feature columns: 'colour'; drop them with --drop-columns"),
        "missing label column": ("good.csv", "ref.npz", ["--label-column", "target"], "TRAIN has no label column 'target'"),
        "bandwidth zero": ("train.npz", "ref.npz", ["--bandwidth", "0"], "--bandwidth must be a finite number > 0"),
        "bandwidth negative": ("train.npz", "ref.npz", ["--bandwidth", "-2"], "--bandwidth must be a finite number > 0"),
        "bandwidth text": ("train.npz", "ref.npz", ["--bandwidth", "wide"], "--bandwidth must be 'median' or a number > 0"),
        "unknown label kernel": ("train.npz", "ref.npz", ["--label-kernel", "cosine"], "label_kernel must be one of none, indicator"),
    }


BAD_VALUE_INPUTS = [
    "missing file", "unknown extension", "NaN features", "inf features", "X/y length mismatch", "dimension mismatch",
    "empty reference", "one training row", "unknown label", "non-numeric column", "missing label column",
    "bandwidth zero", "bandwidth negative", "bandwidth text", "unknown label kernel",
]


@pytest.mark.parametrize("case", BAD_VALUE_INPUTS)
def test_bad_input_gives_one_line_and_no_output(files, planted, case):
    train, ref, extra, message = _write_bad_inputs(files, *planted)[case]
    out, state = files / "out.csv", files / "state.npz"
    result = run("value", files / train, "--reference", files / ref, "--out", out, "--state-out", state, *extra)
    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: ")
    assert message in result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert not out.exists() and not state.exists()
    assert not [p for p in files.iterdir() if p.name.startswith(".out.csv")]  # no temporary left behind


@pytest.mark.parametrize("content", [b"not a zip archive", None])
def test_update_rejects_a_state_file_that_is_not_ours(files, content):
    state = files / "foreign.npz"
    if content is None:
        np.savez(state, X=np.zeros((3, 2)))
    else:
        state.write_bytes(content)
    out = files / "out.csv"
    result = run("update", "--state", state, "--add", files / "new.npz", "--out", out)
    assert result.exit_code == 2
    assert "is not a dataworth state file" in result.stderr and result.stderr.count("\n") == 1
    assert not out.exists()


def test_unknown_output_extension_is_refused_before_any_work(files):
    result = run("value", files / "train.npz", "--reference", files / "ref.npz", "--out", files / "out.xlsx")
    assert result.exit_code == 2 and "unsupported file type '.xlsx' for --out" in result.stderr
    assert not (files / "out.xlsx").exists()


def test_console_script_prints_no_traceback(files):
    """The installed entry point, run as users run it."""
    proc = subprocess.run(
        [sys.executable, "-m", "dataworth.cli", "value", str(files / "missing.npz"), "--reference", str(files / "ref.npz"),
         "--out", str(files / "o.csv")],
        capture_output=True, text=True,
    )
    assert proc.returncode == 2
    assert proc.stderr == f"error: TRAIN not found: {files / 'missing.npz'}\n"


def test_value_runs_any_registered_method(files, planted):
    from dataworth import KNNShapley

    X, y, Z, y_ref = planted
    out = files / "knn.parquet"
    result = run("value", files / "all.npz", "--reference", files / "ref.npz", "--out", out, "--method", "knn-shapley")
    assert result.exit_code == 0, result.stderr
    expected = KNNShapley().fit(X, y, reference=(Z, y_ref)).values_
    loaded = ValuationResult.load(out)
    np.testing.assert_allclose(loaded.values, expected, rtol=0, atol=1e-15)
    assert loaded.method == "knn-shapley"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--bandwidth", "2.0"], "--bandwidth does not apply to --method lava (it has no bandwidth parameter)"),
        (["--state-out", "s.npz"], "--state-out: lava has no online updates (methods with them: kairos)"),
        (["--term", "feature"], "--term must be one of combined for lava; got 'feature'"),
    ],
)
def test_options_a_method_does_not_have_are_refused(files, args, message):
    out = files / "lava.csv"
    result = run("value", files / "all.npz", "--reference", files / "ref.npz", "--out", out, "--method", "lava", *args)
    assert result.exit_code == 2 and message in result.stderr, result.stderr
    assert not out.exists()


def test_param_sets_any_estimator_parameter(files, planted):
    from dataworth import Lava

    X, y, Z, y_ref = planted
    out = files / "lava.parquet"
    result = run("value", files / "all.npz", "--reference", files / "ref.npz", "--out", out, "--method", "lava",
                 "--param", "solver=exact", "--param", "label_weight=0.5")
    assert result.exit_code == 0, result.stderr
    loaded = ValuationResult.load(out)
    expected = Lava(solver="exact", label_weight=0.5).fit(X, y, reference=(Z, y_ref)).values_
    np.testing.assert_allclose(loaded.values, expected, rtol=0, atol=1e-12)
    assert loaded.params["solver"] == "exact" and loaded.params["label_weight"] == 0.5


def test_param_works_beside_the_kairos_options(files, planted):
    X, y, Z, y_ref = planted
    out = files / "k.csv"
    result = run("value", files / "all.npz", "--reference", files / "ref.npz", "--out", out, "--bandwidth", "2.0",
                 "--param", "combine=raw", "--param", "feature_weight=1")
    assert result.exit_code == 0, result.stderr
    expected = Kairos(bandwidth=2.0, combine="raw", feature_weight=1).fit(X, y, reference=(Z, y_ref))
    np.testing.assert_allclose(pd.read_csv(out)["value"], expected.values_, rtol=0, atol=1e-15)
    np.testing.assert_allclose(expected.values_, (len(X) - 1) * expected.feature_values_, rtol=1e-15)  # weight 1: feature term only


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--method", "lava", "--param", "solver"], "--param takes KEY=VALUE; got 'solver'"),
        (["--method", "lava", "--param", "k=3"], "--param k: lava has no parameter 'k'; it has entropic_reg, label_weight, max_iter, solver"),
        (["--param", "bandwidth=2"], "--param bandwidth: set it with --bandwidth"),
        (["--method", "lava", "--param", "solver=exact", "--param", "solver=annealed"], "--param solver is given twice"),
        (["--method", "lava", "--param", "solver=lp"], "solver must be one of annealed, exact, sinkhorn; got 'lp'"),
        (["--method", "knn-shapley", "--param", "k=0"], "k must be an integer >= 1; got 0"),
    ],
)
def test_bad_params_give_one_line_and_no_output(files, args, message):
    out = files / "o.csv"
    result = run("value", files / "all.npz", "--reference", files / "ref.npz", "--out", out, *args)
    assert result.exit_code == 2 and result.stderr.count("\n") == 1
    assert message in result.stderr, result.stderr
    assert not out.exists()


# ---------------------------------------------------------------- hardening regressions
@pytest.mark.parametrize("spelling", ["same", "dot", "absolute", "symlink", "parent"])
def test_out_equal_to_an_input_is_refused_and_the_input_kept(tmp_path, planted, spelling, monkeypatch):
    X, y, Z, y_ref = planted
    pd.DataFrame(X, columns=list("abcd")).assign(label=y).to_csv(tmp_path / "t.csv", index=False)
    pd.DataFrame(Z, columns=list("abcd")).assign(label=y_ref).to_csv(tmp_path / "r.csv", index=False)
    (tmp_path / "sub").mkdir()
    (tmp_path / "link.csv").symlink_to(tmp_path / "t.csv")
    monkeypatch.chdir(tmp_path)
    before = (tmp_path / "t.csv").read_bytes()
    out = {"same": "t.csv", "dot": "./t.csv", "absolute": str(tmp_path / "t.csv"), "symlink": "link.csv",
           "parent": "sub/../t.csv"}[spelling]
    result = run("value", "t.csv", "--reference", "r.csv", "--out", out)
    assert result.exit_code == 2 and "is the same file as TRAIN" in result.stderr, result.stderr
    assert (tmp_path / "t.csv").read_bytes() == before


def test_state_out_equal_to_the_state_or_a_csv_sidecar_on_an_input_is_refused(files):
    first = run("value", files / "train.npz", "--reference", files / "ref.npz", "--out", files / "a.csv",
                "--state-out", files / "state.npz")
    assert first.exit_code == 0, first.stderr
    same = run("update", "--state", files / "state.npz", "--add", files / "new.npz", "--out", files / "b.csv",
               "--state-out", files / "state.npz")
    assert same.exit_code == 2 and "--state-out" in same.stderr and "is the same file as --state" in same.stderr
    (files / "v.csv.json").write_text("{}")
    sidecar = run("report", files / "v.csv", "--train", files / "train.npz", "--out", files / "v.csv.json")
    assert sidecar.exit_code == 2


def test_a_failing_state_out_leaves_no_output(files):
    """A --state-out that cannot be written used to leave the values and their sidecar behind."""
    (files / "s.npz").mkdir()  # a directory where the state file should go
    result = run("value", files / "train.npz", "--reference", files / "ref.npz", "--out", files / "v.csv",
                 "--state-out", files / "s.npz")
    assert result.exit_code == 2 and "--state-out is a directory" in result.stderr
    assert not (files / "v.csv").exists() and not (files / "v.csv.json").exists()


def test_a_write_that_fails_midway_leaves_no_output(files, monkeypatch):
    from dataworth.valuation import Kairos as KairosClass

    def broken(self, path):
        def write(tmp):
            raise OSError(28, "No space left on device")

        return {path: write}

    monkeypatch.setattr(KairosClass, "state_files", broken)
    result = run("value", files / "train.npz", "--reference", files / "ref.npz", "--out", files / "v.csv",
                 "--state-out", files / "s.npz", "--no-issues")
    assert result.exit_code == 2 and result.stderr.startswith("error: cannot write") and "No space left" in result.stderr
    assert sorted(p.name for p in files.iterdir()) == ["all.npz", "new.npz", "ref.npz", "train.npz"]


def test_update_remembers_the_label_column_and_matches_columns_by_name(tmp_path, planted):
    X, y, Z, y_ref = planted
    names = list("abcd")
    pd.DataFrame(X[:30], columns=names).assign(target=y[:30], row_id=range(30)).to_csv(tmp_path / "t.csv", index=False)
    pd.DataFrame(Z, columns=names).assign(target=y_ref).to_csv(tmp_path / "r.csv", index=False)
    pd.DataFrame(X[30:], columns=names)[["d", "b", "a", "c"]].assign(target=y[30:]).to_csv(tmp_path / "n.csv", index=False)
    pd.DataFrame(X[30:], columns=["a", "b", "c", "e"]).assign(target=y[30:]).to_csv(tmp_path / "bad.csv", index=False)
    first = run("value", tmp_path / "t.csv", "--reference", tmp_path / "r.csv", "--out", tmp_path / "v.csv",
                "--label-column", "target", "--drop-columns", "row_id", "--state-out", tmp_path / "s.npz")
    assert first.exit_code == 0, first.stderr
    updated = run("update", "--state", tmp_path / "s.npz", "--add", tmp_path / "n.csv", "--out", tmp_path / "u.csv")
    assert updated.exit_code == 0, updated.stderr
    batch = Kairos(bandwidth=Kairos.load_state(tmp_path / "s.npz").bandwidth_).fit(X, y, reference=(Z, y_ref))
    np.testing.assert_allclose(pd.read_csv(tmp_path / "u.csv")["value"], batch.values_, rtol=0, atol=1e-10)
    bad = run("update", "--state", tmp_path / "s.npz", "--add", tmp_path / "bad.csv", "--out", tmp_path / "w.csv")
    assert bad.exit_code == 2 and "it lacks 'd' and has extra 'e'" in bad.stderr
    npz_label = run("value", tmp_path / "t.csv", "--reference", tmp_path / "r.csv", "--out", tmp_path / "x.csv",
                    "--label-column", "target", "--feature-columns", "a,b", "--drop-columns", "row_id")
    assert npz_label.exit_code == 2 and "not both" in npz_label.stderr


def test_degenerate_values_are_one_warning_line(files):
    result = run("value", files / "all.npz", "--reference", files / "ref.npz", "--out", files / "k.csv",
                 "--method", "knn-shapley", "--param", "k=100")
    assert result.exit_code == 0, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("warning: k = 100 is at least the number of training rows (40)")


def test_version_and_help_list_methods_and_their_params():
    import dataworth

    assert run("--version").stdout == f"dataworth {dataworth.__version__}\n"
    text = " ".join(run("value", "--help").stdout.split())
    assert "Valuation method: kairos, lava, knn-shapley, data-oob, loo, tmc-shapley, beta-shapley, banzhaf" in text.replace("│", "").replace("  ", " ") or "kairos, lava" in text
    for method in ("kairos:", "lava: --param entropic_reg, label_weight, max_iter, solver", "knn-shapley: --param k, memory_budget"):
        assert method in text.replace("│ ", "").replace(" │", ""), text


def test_an_id_column_names_the_rows_through_value_update_and_report(tmp_path, planted):
    X, y, Z, y_ref = planted
    ids = np.array([f"row-{i:03d}" for i in range(len(X))])
    pd.DataFrame(X[:30], columns=list("abcd")).assign(label=y[:30], uid=ids[:30]).to_csv(tmp_path / "t.csv", index=False)
    pd.DataFrame(X[30:], columns=list("abcd")).assign(label=y[30:], uid=ids[30:]).to_csv(tmp_path / "n.csv", index=False)
    pd.DataFrame(Z, columns=list("abcd")).assign(label=y_ref).to_csv(tmp_path / "r.csv", index=False)
    first = run("value", tmp_path / "t.csv", "--reference", tmp_path / "r.csv", "--out", tmp_path / "v.csv",
                "--id-column", "uid", "--state-out", tmp_path / "s.npz")
    assert first.exit_code == 0, first.stderr
    table = pd.read_csv(tmp_path / "v.csv")
    assert list(table.columns[:3]) == ["index", "name", "value"] and list(table["name"]) == list(ids[:30])
    expected = Kairos().fit(X[:30], y[:30], reference=(Z, y_ref)).values_  # the id is no feature
    np.testing.assert_allclose(table["value"], expected, rtol=0, atol=1e-12)
    updated = run("update", "--state", tmp_path / "s.npz", "--add", tmp_path / "n.csv", "--out", tmp_path / "u.csv",
                  "--id-column", "uid")
    assert updated.exit_code == 0, updated.stderr
    assert list(pd.read_csv(tmp_path / "u.csv")["name"]) == list(ids)
    made = run("report", tmp_path / "v.csv", "--train", tmp_path / "t.csv", "--id-column", "uid", "--out", tmp_path / "r.html")
    assert made.exit_code == 0, made.stderr
    lowest = int(table["value"].idxmin())
    assert f"<td>{lowest} ({ids[lowest]})</td>" in (tmp_path / "r.html").read_text()


def test_a_dataframe_index_names_the_rows_in_the_api(planted):
    import dataworth

    X, y, Z, y_ref = planted
    frame = pd.DataFrame(X, columns=list("abcd"), index=[f"id{i}" for i in range(len(X))])
    for method in ("kairos", "knn-shapley", "data-oob", "lava"):
        result = dataworth.value(frame, y, reference=(pd.DataFrame(Z, columns=list("abcd")), y_ref), method=method)
        assert list(result.names) == list(frame.index), method
    plain = dataworth.value(pd.DataFrame(X, columns=list("abcd")), y, reference=(Z, y_ref))
    assert plain.names is None
    loo = dataworth.value(frame.iloc[:12], y[:12], reference=(Z, y_ref), method="loo")
    assert list(loo.names) == list(frame.index[:12])


def test_parameters_that_take_python_objects_are_not_offered_as_text(files):
    result = run("value", files / "all.npz", "--reference", files / "ref.npz", "--out", files / "o.csv", "--method", "tmc-shapley",
                 "--param", "model=LogisticRegression")
    assert result.exit_code == 2 and "--param model takes a Python object; set it from Python" in result.stderr
    assert "stopping" not in " ".join(run("value", "--help").stdout.split()).split("tmc-shapley:")[1].split("beta-shapley")[0]


@pytest.mark.parametrize("damage", ["params-json", "unknown-param", "version-text", "version-4", "version-array", "short-row-sums",
                                    "cuda", "no-x", "object-names", "mixed-dtypes", "flipped-byte"])
def test_a_damaged_or_foreign_state_is_one_line(files, damage):
    first = run("value", files / "train.npz", "--reference", files / "ref.npz", "--out", files / "a.csv",
                "--state-out", files / "state.npz")
    assert first.exit_code == 0, first.stderr
    with np.load(files / "state.npz") as archive:
        arrays = {k: archive[k] for k in archive.files}
    import json

    params = json.loads(arrays["params"].item())
    if damage == "params-json":
        arrays["params"] = np.array("{not json")
    elif damage == "unknown-param":
        arrays["params"] = np.array(json.dumps({**params, "colour": "red"}))
    elif damage in ("version-text", "version-4"):
        arrays["version"] = np.array("x" if damage == "version-text" else 4)
    elif damage == "short-row-sums":
        arrays["row_sums"] = arrays["row_sums"][:-2]
    elif damage == "version-array":
        arrays["version"] = np.array([2, 2])
    elif damage == "cuda":
        arrays["params"] = np.array(json.dumps({**params, "device": "cuda"}))
    elif damage == "object-names":
        arrays["names"] = np.array([{"row": i} for i in range(len(arrays["x"]))], dtype=object)
    elif damage == "mixed-dtypes":
        arrays["x"] = arrays["x"].astype(np.float32)
    elif damage == "no-x":
        arrays.pop("x")
    np.savez(files / "state.npz", **arrays)
    if damage == "flipped-byte":  # a bit flip inside the archive: zip's CRC check fails
        raw = bytearray((files / "state.npz").read_bytes())
        raw[len(raw) // 3] ^= 0xFF
        (files / "state.npz").write_bytes(bytes(raw))
    result = run("update", "--state", files / "state.npz", "--add", files / "new.npz", "--out", files / "b.csv")
    assert result.exit_code == 2 and result.stderr.count("\n") == 1 and result.stderr.startswith("error: "), result.stderr
    assert not (files / "b.csv").exists()
    if damage == "cuda" and not torch.cuda.is_available():
        assert "use --device cpu" in result.stderr
        moved = run("update", "--state", files / "state.npz", "--add", files / "new.npz", "--out", files / "b.csv", "--device", "cpu")
        assert moved.exit_code == 0, moved.stderr


def test_a_state_written_before_rescaling_is_still_read(files, planted):
    """Version 1 states kept the rows as given (no 'scale'): read with scale 1 they give the same values."""
    run("value", files / "train.npz", "--reference", files / "ref.npz", "--out", files / "a.csv", "--state-out", files / "s.npz")
    with np.load(files / "s.npz") as archive:
        arrays = {k: archive[k] for k in archive.files}
    scale = float(arrays.pop("scale"))
    for key in ("ref_train_sums", "ref_ref_sums", "ref_residuals"):  # version 3: computed when an older state is read
        del arrays[key]
    arrays["x"], arrays["z"], arrays["version"] = arrays["x"] / scale, arrays["z"] / scale, np.array(1)
    np.savez(files / "v1.npz", **arrays)
    old, new = Kairos.load_state(files / "v1.npz"), Kairos.load_state(files / "s.npz")
    np.testing.assert_allclose(old.values_, new.values_, rtol=0, atol=1e-12)
    X, y, _, _ = planted
    np.testing.assert_allclose(old.add(X[30:], y[30:]).values_, new.add(X[30:], y[30:]).values_, rtol=0, atol=1e-10)


def test_row_names_must_be_complete_and_unique_and_are_kept_as_written(tmp_path, planted):
    X, y, Z, y_ref = planted
    frame = pd.DataFrame(X, columns=list("abcd")).assign(label=y, uid=[f"{i:05d}" for i in range(len(X))])
    frame.to_csv(tmp_path / "t.csv", index=False)
    frame.assign(uid=["a", "a"] + [f"r{i}" for i in range(len(X) - 2)]).to_csv(tmp_path / "dup.csv", index=False)
    frame.assign(uid=[None] + [f"r{i}" for i in range(len(X) - 1)]).to_csv(tmp_path / "gap.csv", index=False)
    np.savez(tmp_path / "r.npz", X=Z, y=y_ref)
    ok = run("value", tmp_path / "t.csv", "--reference", tmp_path / "r.npz", "--out", tmp_path / "v.csv", "--id-column", "uid")
    assert ok.exit_code == 0, ok.stderr
    assert ValuationResult.load(tmp_path / "v.csv").names[7] == "00007"
    dup = run("value", tmp_path / "dup.csv", "--reference", tmp_path / "r.npz", "--out", tmp_path / "w.csv", "--id-column", "uid")
    assert dup.exit_code == 2 and "id column 'uid' names rows twice (e.g. 'a')" in dup.stderr
    gap = run("value", tmp_path / "gap.csv", "--reference", tmp_path / "r.npz", "--out", tmp_path / "w.csv", "--id-column", "uid")
    assert gap.exit_code == 2 and "id column 'uid' is empty in row 0" in gap.stderr


def test_a_named_state_needs_named_rows_and_update_remembers_the_id_column(tmp_path, planted):
    X, y, Z, y_ref = planted
    ids = [f"r{i}" for i in range(len(X))]
    table = pd.DataFrame(X, columns=list("abcd")).assign(label=y, uid=ids)
    table.iloc[:30].to_csv(tmp_path / "t.csv", index=False)
    table.iloc[30:].to_csv(tmp_path / "n.csv", index=False)
    table.iloc[30:].drop(columns=["uid"]).to_csv(tmp_path / "anon.csv", index=False)
    np.savez(tmp_path / "r.npz", X=Z, y=y_ref)
    assert run("value", tmp_path / "t.csv", "--reference", tmp_path / "r.npz", "--out", tmp_path / "v.csv", "--id-column", "uid",
               "--state-out", tmp_path / "s.npz").exit_code == 0
    remembered = run("update", "--state", tmp_path / "s.npz", "--add", tmp_path / "n.csv", "--out", tmp_path / "u.csv")
    assert remembered.exit_code == 0, remembered.stderr
    assert list(pd.read_csv(tmp_path / "u.csv")["name"]) == ids
    anonymous = run("update", "--state", tmp_path / "s.npz", "--add", tmp_path / "anon.csv", "--out", tmp_path / "w.csv")
    assert anonymous.exit_code == 2 and "NEW has no id column 'uid'" in anonymous.stderr
    state = Kairos.load_state(tmp_path / "s.npz")
    with pytest.raises(dataworth.InputError, match=r"this KAIROS state names its rows, so the added rows need names too"):
        state.add(X[30:], y[30:])


def test_column_options_of_the_training_file_are_refused_when_it_is_an_array(tmp_path, planted):
    X, y, Z, y_ref = planted
    np.savez(tmp_path / "t.npz", X=X, y=y)
    pd.DataFrame(Z, columns=list("abcd")).assign(label=y_ref, id=range(len(Z))).to_csv(tmp_path / "r.csv", index=False)
    refused = run("value", tmp_path / "t.npz", "--reference", tmp_path / "r.csv", "--out", tmp_path / "o.csv", "--id-column", "id")
    assert refused.exit_code == 2 and "TRAIN is a .npz file, which has no named columns, so an id column cannot be chosen" in refused.stderr
    labelled = run("value", tmp_path / "t.npz", "--reference", tmp_path / "r.csv", "--out", tmp_path / "o.csv",
                   "--label-column", "label", "--drop-columns", "id")
    assert labelled.exit_code == 2 and "columns to drop cannot be chosen" in labelled.stderr


def test_ids_are_read_as_written_and_never_reused_by_added_rows(tmp_path, planted):
    X, y, Z, y_ref = planted
    codes = ["NA", "null", "00123", "nan"] + [f"c{i}" for i in range(len(X) - 4)]
    pd.DataFrame(X[:30], columns=list("abcd")).assign(label=y[:30], id=codes[:30]).to_csv(tmp_path / "t.csv", index=False)
    pd.DataFrame(X[30:], columns=list("abcd")).assign(label=y[30:], id=["NA"] + codes[31:]).to_csv(tmp_path / "n.csv", index=False)
    np.savez(tmp_path / "r.npz", X=Z, y=y_ref)
    first = run("value", tmp_path / "t.csv", "--reference", tmp_path / "r.npz", "--out", tmp_path / "v.csv", "--id-column", "id",
                "--state-out", tmp_path / "s.npz")
    assert first.exit_code == 0, first.stderr
    assert list(ValuationResult.load(tmp_path / "v.csv").names[:4]) == ["NA", "null", "00123", "nan"]
    reused = run("update", "--state", tmp_path / "s.npz", "--add", tmp_path / "n.csv", "--out", tmp_path / "u.csv")
    assert reused.exit_code == 2 and "the ids of the fitted and the added rows names rows twice (e.g. 'NA')" in reused.stderr
    assert Kairos.load_state(tmp_path / "s.npz").add(pd.DataFrame(X[30:], columns=list("abcd"), index=codes[30:]), y[30:]).n_train_ == 40


def test_a_model_given_by_name_is_settable_as_text(files, planted):
    from dataworth import ConfidentLearning

    X, y, Z, y_ref = planted
    out = files / "c.csv"
    result = run("value", files / "all.npz", "--reference", files / "ref.npz", "--out", out, "--method", "cleanlab",
                 "--param", "model=knn", "--param", "n_folds=3")
    assert result.exit_code == 0, result.stderr
    expected = ConfidentLearning(model="knn", n_folds=3).fit(X, y).values_
    np.testing.assert_allclose(pd.read_csv(out)["value"], expected, rtol=0, atol=1e-12)
    assert "cleanlab: --param model, n_folds, score, seed" in " ".join(run("value", "--help").stdout.split()).replace("│ ", "").replace(" │", "")


def test_value_writes_why_rows_are_bad_and_can_leave_it_out(files, planted):
    """The issue columns are those of describe_issues on the same fit; --no-issues leaves them out;
    with a single reference row the values are still written, with a one-line warning."""
    X, y, Z, y_ref = planted
    result = run("value", files / "train.npz", "--reference", files / "ref.npz", "--out", files / "o.csv", "--issue-threshold", "0.3")
    assert result.exit_code == 0, result.stderr
    assert "issues at q ≤ 0.3" in result.stdout
    assert result.stderr.startswith("warning: with 25 reference rows a q-value reaches 0.3 only for a group of more than 4 rows")
    with pytest.warns(DataworthWarning, match="with 25 reference rows"):
        expected = Kairos().fit(X[:30], y[:30], reference=(Z, y_ref)).describe_issues(0.3)
    written = ValuationResult.load(files / "o.csv").issues
    pd.testing.assert_frame_equal(written, expected)
    run("value", files / "train.npz", "--reference", files / "ref.npz", "--out", files / "p.csv", "--no-issues")
    assert "issue" not in pd.read_csv(files / "p.csv").columns
    np.save(files / "train.npy", X[:30])
    np.save(files / "one.npy", Z[:1])
    single = run("value", files / "train.npy", "--reference", files / "one.npy", "--out", files / "s.csv")
    assert single.exit_code == 0 and single.stderr.startswith("warning: no issue columns") and single.stderr.count("\n") == 1, single.stderr
    assert "issue" not in pd.read_csv(files / "s.csv").columns
    bad = run("value", files / "train.npz", "--reference", files / "ref.npz", "--out", files / "b.csv", "--issue-threshold", "0")
    assert bad.exit_code == 2 and "--issue-threshold" in bad.stderr and not (files / "b.csv").exists()

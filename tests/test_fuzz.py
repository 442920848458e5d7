"""Property-based fuzzing of every command and of the API with malformed tables, arrays, parameters and paths.

The contract under test: a command either succeeds (rc 0, stderr only ``warning:`` lines) or fails with
rc 2 and exactly one ``error:`` line, never a traceback; a failed command writes no file; no command
changes one of its inputs. The API raises only :class:`~dataworth.DataworthError` subclasses. Examples
are generated from a fixed seed (``derandomize``) and bounded, so the suite is reproducible and quick.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import shutil
import sys
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import dataworth
from dataworth.cli import main

# derandomize: the same examples every run; database=None: no failing example of an earlier run replayed.
FUZZ = settings(max_examples=250, derandomize=True, database=None, deadline=None, suppress_health_check=list(HealthCheck))
#: Methods cheap enough to run on every example (the retraining semivalues are fuzzed through their parameters).
CHEAP_METHODS = ("kairos", "knn-shapley", "lava", "data-oob", "loo", "cleanlab")

names = st.sampled_from(["a", "b", "c", "label", "target", "id", "", " a", "a.1", "1", "é"])
cells = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(-3, 3),
    st.sampled_from([1e200, -1e-200, 1e308, 0.0, "x", "", "1e3", None, True]),
)
numbers = st.one_of(st.integers(-2, 3), st.floats(-2.0, 3.0), st.sampled_from([1e-300, 1e300, 1e308]))


@st.composite
def tables(draw: st.DrawFn) -> pd.DataFrame:
    """Mostly well-formed tables (so that later checks are reached) with malformed ones mixed in."""
    n_rows = draw(st.integers(0, 14))
    if draw(st.booleans()):
        columns = draw(st.lists(names, min_size=0, max_size=4))
        return pd.DataFrame({i: draw(st.lists(cells, min_size=n_rows, max_size=n_rows)) for i in range(len(columns))}).set_axis(
            columns, axis=1
        ) if columns else pd.DataFrame(index=range(n_rows))
    width = draw(st.integers(1, 3))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    frame = pd.DataFrame(rng.normal(size=(n_rows, width)) * draw(numbers), columns=["a", "b", "c"][:width])
    frame["label"] = draw(st.lists(st.sampled_from([0, 1, 2, "x"]), min_size=n_rows, max_size=n_rows)) if n_rows else []
    return frame


MUTATIONS = ("none", "none", "none", "reorder", "rename", "huge", "tiny", "nan", "one-class", "text-labels", "id-column",
             "constant", "float32", "few-rows", "duplicate-rows")


def good_table(rng: np.random.Generator, mutation: str) -> pd.DataFrame:
    """A well-formed labelled table (a, b, c, label) with one mutation, so that checks deep inside are reached."""
    n = 3 if mutation == "few-rows" else 18
    frame = pd.DataFrame(rng.normal(size=(n, 3)), columns=["a", "b", "c"])
    frame["label"] = rng.integers(0, 3, n)
    if mutation == "reorder":
        frame = frame[["c", "label", "a", "b"]]
    elif mutation == "rename":
        frame = frame.rename(columns={"b": "B"})
    elif mutation in ("huge", "tiny"):
        frame[["a", "b", "c"]] *= 1e250 if mutation == "huge" else 1e-250
    elif mutation == "nan":
        frame.loc[2, "b"] = np.nan
    elif mutation == "one-class":
        frame["label"] = 1
    elif mutation == "text-labels":
        frame["label"] = np.array(["cat", "dog", "eel"])[frame["label"]]
    elif mutation == "id-column":
        frame.insert(0, "id", np.arange(n))
    elif mutation == "constant":
        frame[["a", "b", "c"]] = 1.0
    elif mutation == "float32":
        frame[["a", "b", "c"]] = frame[["a", "b", "c"]].astype(np.float32)
    elif mutation == "duplicate-rows":
        frame.iloc[1:] = frame.iloc[[0]].to_numpy()
    return frame


@st.composite
def data_files(draw: st.DrawFn, directory: Path, stem: str) -> Path:
    """A file (or something posing as one) in ``directory``: mostly a well-formed table or archive with one
    mutation, otherwise a malformed csv, parquet, npz or npy, garbage bytes, a directory or nothing."""
    kind = draw(st.sampled_from(["good-csv", "good-csv", "good-parquet", "good-npz", "good-npz", "csv", "parquet", "npz",
                                 "npy", "garbage", "text-npz", "directory", "missing", "txt"]))
    suffix = {"garbage": "parquet", "text-npz": "npz", "directory": "csv", "missing": "csv"}.get(kind, kind.removeprefix("good-"))
    path = directory / f"{stem}.{suffix}"
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    if kind.startswith("good-"):
        frame = good_table(rng, draw(st.sampled_from(MUTATIONS)))
        if kind == "good-npz":
            features = frame.drop(columns=["label"]).to_numpy()
            np.savez(path, X=features, y=frame["label"].to_numpy())
        else:
            frame.to_csv(path, index=False) if kind == "good-csv" else frame.to_parquet(path)
    elif kind in ("csv", "parquet"):
        frame = draw(tables())
        try:
            frame.to_csv(path, index=False) if kind == "csv" else frame.to_parquet(path)
        except Exception:  # a table pyarrow cannot write (mixed types, duplicate names): write it as CSV text
            path = path.with_suffix(".csv")
            frame.to_csv(path, index=False)
    elif kind in ("npz", "npy"):
        shape = draw(st.sampled_from([(12, 3), (12, 1), (0, 3), (12,), (), (2, 2, 2), (12, 0)]))
        dtype = draw(st.sampled_from(["float64", "float32", "int64", "bool", "complex128", "U3", "object"]))
        X = (rng.normal(size=shape) * draw(numbers)).astype(dtype) if dtype != "U3" else np.full(shape, "ab")
        labels = rng.integers(0, 3, size=draw(st.sampled_from([12, 11, 0])))
        arrays = {"X": X, "y": labels.astype(draw(st.sampled_from(["int64", "U1", "float64", "object"])))}
        if draw(st.booleans()):
            arrays.pop(draw(st.sampled_from(["X", "y"])))
        if kind == "npz":
            np.savez(path, **arrays)
        else:
            np.save(path, X)
    elif kind == "garbage":
        path.write_bytes(draw(st.binary(max_size=40)))
    elif kind in ("text-npz", "txt"):
        path.write_text("a,b,label\n1,2,0\n")
    elif kind == "directory":
        path.mkdir()
    return path


def params(method: str) -> st.SearchStrategy[list[str]]:
    """Mostly no ``--param`` or one of ``method``'s own parameters (so that its value is checked); sometimes junk."""
    own = sorted(set(dataworth.METHODS[method]().get_params()) - {"progress", "checkpoint", "model", "estimator", "device"})
    values = st.one_of(st.sampled_from(["abc", "", "none", "true", "1.5", "-7", "nan", "inf", "1e300", "1e-300", "exact", "raw",
                                        "0", "2", "logistic", "indicator", "float32", "worst"]), st.integers(-3, 4).map(str))
    junk = st.lists(st.sampled_from(["nope=1", "=2", "solver", "bandwidth=2", "k=1", "k=2"]), min_size=1, max_size=2)
    one = st.tuples(st.sampled_from(own), values).map(lambda kv: [f"{kv[0]}={kv[1]}"]) if own else junk
    return st.one_of(st.just([]), one, st.just([]), one, junk)


def _digest(directory: Path) -> dict[str, str]:
    """Every file under ``directory`` (recursively) and a hash of its content."""
    return {str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(directory.rglob("*")) if p.is_file()}


def _check(result, directory: Path, before: dict[str, str], outputs: list[Path]) -> None:
    """The CLI contract: rc 0 (warnings only) or rc 2 with one error line; no traceback; inputs untouched;
    nothing new on failure."""
    text = result.stdout + result.stderr
    event(f"rc {result.exit_code}: {result.stderr.splitlines()[-1][:45] if result.stderr else ''}")
    assert result.exception is None, repr(result.exception)
    assert "Traceback" not in text
    assert result.exit_code in (0, 2), (result.exit_code, text)
    after = _digest(directory)
    assert {k: v for k, v in after.items() if k in before} == before, "an input was modified"
    if result.exit_code == 2:
        lines = result.stderr.splitlines()
        errors = [line for line in lines if not line.startswith("warning: ")]
        assert len(errors) == 1 and errors[0].startswith("error: "), result.stderr
        assert set(after) == set(before), f"a failed command left {set(after) - set(before)}"
    else:
        assert all(line.startswith("warning: ") for line in result.stderr.splitlines()), result.stderr
        assert all(p.exists() for p in outputs)


@pytest.fixture(autouse=True)
def quiet_numpy():
    """The generators multiply and cast extreme numbers on purpose."""
    with np.errstate(all="ignore"):
        yield


@dataclass
class Ran:
    """What one run of the console script did."""

    exit_code: int
    stdout: str
    stderr: str
    exception: BaseException | None = None


def _run(args: list[str]) -> Ran:
    """Run the installed entry point (``dataworth.cli:main``, usage errors included) as a user would."""
    out, err = io.StringIO(), io.StringIO()
    argv = ["dataworth", *map(str, args)]
    with warnings.catch_warnings(), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        warnings.simplefilter("ignore")  # the CLI shows its own; this keeps pytest's summary quiet
        saved, sys.argv = sys.argv, argv
        try:
            main()
            code, exception = 0, None
        except SystemExit as exc:
            code, exception = (exc.code if isinstance(exc.code, int) else 1), None
        except BaseException as exc:  # a crash: the contract check below reports it
            code, exception = 1, exc
        finally:
            sys.argv = saved
    return Ran(code, out.getvalue(), err.getvalue(), exception)


@FUZZ
@given(data=st.data(), method=st.sampled_from(CHEAP_METHODS),
       extra=st.lists(st.sampled_from([["--term", "combined"], ["--term", "combined"], ["--bandwidth", "1e-300"], ["--bandwidth", "abc"], ["--bandwidth", "2"],
                                       ["--label-kernel", "indicator"], ["--label-kernel", "x"], ["--term", "label"],
                                       ["--term", "feature"], ["--label-column", "target"], ["--feature-columns", "a,b"],
                                       ["--drop-columns", "id"], ["--device", "tpu"], ["--state-out", "STATE"],
                                       ["--method", "magic"], ["--id-column", "id"], ["--id-column", "a"]]), max_size=1))
def test_value_never_crashes_never_overwrites_and_writes_all_or_nothing(data, method, extra):
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        train = data.draw(data_files(d, "train"))
        if train.is_file() and data.draw(st.booleans()):  # the reference set a copy of the training file: runs go deep
            ref = d / f"ref{train.suffix}"
            shutil.copy(train, ref)
        else:
            ref = data.draw(data_files(d, "ref"))
        state = d / "state.npz"
        out = data.draw(st.sampled_from([d / "out.csv", d / "out.parquet", train, ref]))  # an input must never be written over
        args = ["value", train, "--reference", ref, "--out", out, "--method", method]
        for flag in extra:
            args += [flag[0], {"STATE": state}.get(flag[1], flag[1])]
        for pair in data.draw(params(method)):
            args += ["--param", pair]
        before = _digest(d)
        result = _run(args)
        _check(result, d, before, [out])


@FUZZ
@given(data=st.data(), extra=st.lists(st.sampled_from([["--label-column", "label"], ["--term", "label"],
                                                       ["--drop-columns", "id"], ["--state-out", "STATE"]]), max_size=2))
def test_update_never_crashes_never_overwrites_and_writes_all_or_nothing(data, extra):
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        rng = np.random.default_rng(0)
        X, y = rng.normal(size=(20, 2)), rng.integers(0, 2, 20)
        if data.draw(st.booleans()):
            pd.DataFrame(X, columns=["a", "b"]).assign(label=y).to_csv(d / "t.csv", index=False)
            dataworth.Kairos().fit(str(d / "t.csv"), reference=str(d / "t.csv")).save_state(d / "s.npz")
            state = d / "s.npz"
        else:
            state = data.draw(data_files(d, "s"))
        new = data.draw(data_files(d, "new"))
        out, state_out = d / "out.parquet", d / "state2.npz"
        args = ["update", "--state", state, "--add", new, "--out", out]
        for flag in extra:
            args += [flag[0], {"STATE": state_out}.get(flag[1], flag[1])]
        before = _digest(d)
        _check(_run(args), d, before, [out])


@FUZZ
@given(data=st.data(), mask_kind=st.sampled_from(["none", "bool", "int01", "2d", "strings", "floats", "short", "garbage"]))
def test_report_never_crashes_never_overwrites_and_writes_all_or_nothing(data, mask_kind):
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        train = data.draw(data_files(d, "train"))
        values = d / "v.csv"
        n = data.draw(st.sampled_from([12, 11, 0]))
        if data.draw(st.booleans()):
            dataworth.ValuationResult(np.linspace(0, 1, n), "kairos").save(values)
        else:
            values.write_text(data.draw(st.sampled_from(["", "index,value\n0,x\n", "value\n1\n2\n", "garbage"])))
        args = ["report", values, "--train", train, "--out", d / "r.html"]
        if mask_kind != "none":
            mask = {"bool": np.arange(12) % 2 == 0, "int01": np.arange(12) % 2, "2d": np.zeros((12, 2), bool),
                    "strings": np.array(["clean", "flip"] * 6), "floats": np.linspace(0, 1, 12), "short": np.ones(3, bool),
                    "garbage": None}[mask_kind]
            if mask is None:
                (d / "m.npy").write_bytes(b"junk")
            else:
                np.save(d / "m.npy", mask)
            args += ["--mask", d / "m.npy"]
        if data.draw(st.booleans()):
            args += ["--reference", data.draw(data_files(d, "ref"))]
        before = _digest(d)
        _check(_run(args), d, before, [d / "r.html"])


@settings(FUZZ, max_examples=60)
@given(dataset=st.sampled_from(["wine", "imagenet", "FILE"]),
       corruption=st.sampled_from(["label-flip:0.1", "label-flip:0.1", "backdoor:0.05", "duplicates:0.05", "feature-noise:0.9",
                                   "label-flip", "label-flip:2", "typo:0.1", "label-flip:x"]),
       methods=st.sampled_from(["kairos", "kairos", "kairos,knn-shapley", "kairos,kairos", "", "kairos,bogus", ","]),
       seeds=st.sampled_from(["1", "1", "1", "0", "-1", "x"]), max_train=st.sampled_from([None, "1", "0", "30"]), data=st.data())
def test_bench_detect_never_crashes_and_leaves_nothing_when_it_fails(dataset, corruption, methods, seeds, max_train, data):
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        source = data.draw(data_files(d, "data")) if dataset == "FILE" else dataset
        args = ["bench", "detect", "--dataset", source, "--corruption", corruption, "--methods", methods,
                "--seeds", seeds, "--out", d / "results"]
        if max_train is not None:
            args += ["--max-train", max_train]
        before = _digest(d)
        result = _run(args)
        _check(result, d, before, [d / "results" / "results.json"])
        if result.exit_code == 2:
            assert not (d / "results").exists()


@FUZZ
@given(X=st.sampled_from(["floats", "ints", "strings", "1d", "3d", "empty", "nan", "huge", "bf16", "object", "ragged"]),
       y=st.sampled_from(["ints", "strings", "floats", "nan", "short", "object", "none", "2d", "dicts"]),
       method=st.sampled_from(CHEAP_METHODS + ("tmc-shapley", "banzhaf", "beta-shapley")),
       param=st.dictionaries(st.sampled_from(["seed", "k", "memory_budget", "n_permutations", "n_samples", "n_estimators",
                                              "bandwidth", "bandwidth_scale", "precision", "device", "nope"]),
                             st.sampled_from([-1, 0, 1, 2.5, "abc", None, True, 1e300, float("nan")]), max_size=2))
def test_the_api_raises_only_dataworth_errors(X, y, method, param):
    import torch

    rng = np.random.default_rng(0)
    base = rng.normal(size=(12, 3))
    features = {"floats": base, "ints": base.astype(int), "strings": base.astype(str), "1d": base[:, 0], "3d": base[..., None],
                "empty": base[:0], "nan": np.where(base > 1, np.nan, base), "huge": base * 1e300,
                "bf16": torch.from_numpy(base).bfloat16(), "object": base.astype(object), "ragged": [[1.0], [1.0, 2.0]]}[X]
    codes = rng.integers(0, 2, 12)
    labels = {"ints": codes, "strings": codes.astype(str), "floats": codes + 0.5, "nan": np.where(codes, np.nan, 0),
              "short": codes[:5], "object": codes.astype(object), "none": None, "2d": np.c_[codes, codes],
              "dicts": np.array([{}] * 12, dtype=object)}[y]
    small = {"n_permutations": 2, "n_samples": 4} if method in ("tmc-shapley", "banzhaf", "beta-shapley") else {}
    if method in ("tmc-shapley", "banzhaf", "beta-shapley", "loo"):
        param = {k: v for k, v in param.items() if not (k in ("n_permutations", "n_samples") and isinstance(v, float) and v > 100)}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result = dataworth.value(features, labels, reference=(base, codes), method=method, **{**small, **param})
    except dataworth.DataworthError:
        return
    assert np.isfinite(result.values).all()


@pytest.mark.parametrize("bad", [{"seed": "abc"}, {"seed": 1.5}, {"seed": -7}, {"memory_budget": -5}, {"memory_budget": "abc"}])
def test_bad_params_from_the_command_line_are_one_line(tmp_path, bad):
    """Found by the fuzzer's predecessors: these gave tracebacks."""
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "t.npz", X=rng.normal(size=(20, 2)), y=rng.integers(0, 2, 20))
    (key, value), = bad.items()
    result = _run(["value", tmp_path / "t.npz", "--reference", tmp_path / "t.npz", "--out", tmp_path / "o.csv",
                   "--param", f"{key}={value}"])
    assert result.exit_code == 2 and result.stderr.count("\n") == 1 and f"{key} must be" in result.stderr, result.stderr

"""Loading files, atomic writes, and the result type's save/load round trip."""

import json
import os

import numpy as np
import pandas as pd
import pytest
import torch

from dataworth import FileFormatError, InputError, ValuationResult, load_dataset
from dataworth.checks import check_features
from dataworth.data import atomic_write


def test_atomic_write_leaves_nothing_when_the_body_fails(tmp_path):
    target = tmp_path / "out.csv"
    with pytest.raises(RuntimeError):
        with atomic_write(target) as tmp:
            tmp.write_text("partial")
            raise RuntimeError("killed mid-write")
    assert list(tmp_path.iterdir()) == []


def test_atomic_write_replaces_an_existing_file_only_on_success(tmp_path):
    target = tmp_path / "out.csv"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_write(target) as tmp:
            tmp.write_text("new")
            raise RuntimeError
    assert target.read_text() == "old"
    with atomic_write(target) as tmp:
        tmp.write_text("new")
    assert target.read_text() == "new"


def test_atomic_write_gives_the_usual_file_permissions(tmp_path):
    import os

    umask = os.umask(0o022)
    try:
        with atomic_write(tmp_path / "out.csv") as tmp:
            tmp.write_text("x")
    finally:
        os.umask(umask)
    assert (tmp_path / "out.csv").stat().st_mode & 0o777 == 0o644


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_result_round_trip(tmp_path, suffix):
    result = ValuationResult(np.array([0.5, -1.0, 2.0, -1.0]), "kairos", params={"bandwidth": 1.5, "n": np.int64(3)},
                             timings={"total": 0.1}, components={"feature": np.arange(4.0)})
    loaded = ValuationResult.load(result.save(tmp_path / f"r{suffix}"))
    np.testing.assert_array_equal(loaded.values, result.values)
    np.testing.assert_array_equal(loaded.components["feature"], np.arange(4.0))
    assert loaded.method == "kairos" and loaded.params == {"bandwidth": 1.5, "n": 3} and loaded.timings == {"total": 0.1}
    assert list(result.lowest(2)) == [1, 3] and list(result.highest(2)) == [2, 0]
    assert list(result.to_pandas().columns) == ["index", "value", "feature"]


def test_csv_metadata_sidecar_is_plain_json_and_ignored_when_it_does_not_fit(tmp_path):
    """The CSV stays plain columns; the sidecar carries method/params/timings and the row count."""
    path = ValuationResult(np.arange(3.0), "lava", params={"solver": "exact"}).save(tmp_path / "v.csv")
    assert list(pd.read_csv(path).columns) == ["index", "value"]
    assert json.loads((tmp_path / "v.csv.json").read_text())["rows"] == 3
    pd.DataFrame({"index": range(5), "value": np.ones(5)}).to_csv(path, index=False)  # replaced by another tool
    assert ValuationResult.load(path).method == "unknown"
    (tmp_path / "v.csv.json").write_text("{not json")
    with pytest.raises(FileFormatError, match="v.csv.json is not the JSON metadata dataworth writes beside v.csv"):
        ValuationResult.load(path)


def test_loaders_read_every_format(tmp_path):
    X, y = np.arange(12.0).reshape(4, 3), np.array([0, 1, 0, 1])
    np.savez(tmp_path / "d.npz", X=X, y=y)
    np.save(tmp_path / "d.npy", X)
    frame = pd.DataFrame(X, columns=["a", "b", "c"]).assign(label=y)
    frame.to_csv(tmp_path / "d.csv", index=False)
    frame.to_parquet(tmp_path / "d.parquet")
    for suffix in (".npz", ".csv", ".parquet"):
        data = load_dataset(tmp_path / f"d{suffix}")
        np.testing.assert_array_equal(data.X, X)
        np.testing.assert_array_equal(data.y, y)
    assert load_dataset(tmp_path / "d.npy").y is None


def test_npz_without_X_and_pickled_npz_are_refused(tmp_path):
    np.savez(tmp_path / "a.npz", features=np.zeros((2, 2)))
    with pytest.raises(InputError, match="must hold an array named 'X'"):
        load_dataset(tmp_path / "a.npz")
    np.savez(tmp_path / "b.npz", X=np.array([{"a": 1}], dtype=object))
    with pytest.raises(FileFormatError, match="not a readable .npz"):
        load_dataset(tmp_path / "b.npz")


def test_check_features_accepts_arrays_tensors_frames_and_keeps_float32():
    X = np.ones((3, 2), dtype=np.float32)
    assert check_features(X, "X").dtype == torch.float32
    assert check_features(X.astype(int), "X").dtype == torch.float64
    assert check_features(torch.ones(3, 2), "X").dtype == torch.float32
    assert check_features(pd.DataFrame(X), "X").shape == (3, 2)
    with pytest.raises(InputError, match="must be 2-D"):
        check_features(np.ones(3), "X")
    with pytest.raises(InputError, match="must hold numbers"):
        check_features(np.array([["a", "b"]]), "X")


# ---------------------------------------------------------------- hardening regressions
def _frames(planted, order=None, rename=None):
    X, y, Z, y_ref = planted
    names = [f"f{i}" for i in range(X.shape[1])]
    train = pd.DataFrame(X, columns=names)
    ref = pd.DataFrame(Z, columns=names)
    if order is not None:
        ref = ref[[names[i] for i in order]]
    if rename is not None:
        ref = ref.rename(columns=rename)
    return train, y, ref, y_ref


def test_a_reference_table_with_reordered_columns_gives_the_same_values(planted):
    """Tables are matched by column name: the same columns in another order are reordered, not misread."""
    import dataworth

    train, y, ref, y_ref = _frames(planted)
    _, _, shuffled, _ = _frames(planted, order=[2, 0, 3, 1])
    for method in ("kairos", "knn-shapley", "lava"):
        expected = dataworth.value(train, y, reference=(ref, y_ref), method=method).values
        got = dataworth.value(train, y, reference=(shuffled, y_ref), method=method).values
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12)


def test_a_reference_table_with_other_column_names_is_refused(planted):
    import dataworth

    train, y, ref, y_ref = _frames(planted, rename={"f1": "height"})
    with pytest.raises(InputError, match=r"the reference set does not have the feature columns of the training set: "
                                         r"it lacks 'f1' and has extra 'height'"):
        dataworth.value(train, y, reference=(ref, y_ref))


def test_tables_are_matched_by_name_from_files(tmp_path, planted):
    X, y, Z, y_ref = planted
    names = [f"f{i}" for i in range(4)]
    pd.DataFrame(X, columns=names).assign(label=y).to_csv(tmp_path / "t.csv", index=False)
    pd.DataFrame(Z, columns=names)[["f3", "f1", "f0", "f2"]].assign(label=y_ref).to_parquet(tmp_path / "r.parquet")
    from dataworth import Kairos

    got = Kairos().fit(str(tmp_path / "t.csv"), reference=str(tmp_path / "r.parquet")).values_
    np.testing.assert_allclose(got, Kairos().fit(X, y, reference=(Z, y_ref)).values_, rtol=0, atol=1e-12)


def test_column_selection_and_duplicate_headers(tmp_path, planted):
    X, y, _, _ = planted
    frame = pd.DataFrame(X, columns=["a", "b", "c", "d"]).assign(row_id=np.arange(len(X)), label=y)
    frame.to_csv(tmp_path / "t.csv", index=False)
    dropped = load_dataset(tmp_path / "t.csv", drop_columns=["row_id"])
    assert dropped.columns == ("a", "b", "c", "d")
    kept = load_dataset(tmp_path / "t.csv", feature_columns=["c", "a"])
    np.testing.assert_array_equal(kept.X, X[:, [2, 0]])
    with pytest.raises(InputError, match=r"has no feature column 'zz'"):
        load_dataset(tmp_path / "t.csv", feature_columns=["zz"])
    (tmp_path / "dup.csv").write_text("a,a,label\n1,2,0\n3,4,1\n")
    with pytest.raises(InputError, match=r"duplicate column names: 'a'"):
        load_dataset(tmp_path / "dup.csv")
    with pytest.raises(InputError, match=r"TRAIN is a .npz file, which has no named columns, so a label column cannot be chosen"):
        np.savez(tmp_path / "d.npz", X=X, y=y)
        load_dataset(tmp_path / "d.npz", label_column="target", name="TRAIN")


def test_outputs_are_written_together_or_not_at_all(tmp_path):
    from dataworth.data import write_together

    def fails(tmp):
        tmp.write_text("half")
        raise OSError(28, "No space left on device")

    (tmp_path / "old.csv").write_text("old")
    with pytest.raises(FileFormatError, match=r"cannot write .*: No space left on device"):
        write_together({tmp_path / "old.csv": lambda tmp: tmp.write_text("new"), tmp_path / "b.npz": fails})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old.csv"]  # no temporary left, nothing replaced
    assert (tmp_path / "old.csv").read_text() == "old"


def test_no_spelling_of_an_input_is_accepted_as_an_output(tmp_path, monkeypatch):
    from dataworth.data import check_not_inputs

    (tmp_path / "t.csv").write_text("x")
    (tmp_path / "link.csv").symlink_to(tmp_path / "t.csv")
    os.link(tmp_path / "t.csv", tmp_path / "hard.csv")
    monkeypatch.chdir(tmp_path)
    for spelling in ("t.csv", "./t.csv", str(tmp_path / "t.csv"), "sub/../t.csv", "link.csv", "hard.csv"):
        (tmp_path / "sub").mkdir(exist_ok=True)
        with pytest.raises(InputError, match=r"--out \(.*\) is the same file as TRAIN"):
            check_not_inputs({"--out": spelling}, {"TRAIN": "t.csv"})
    check_not_inputs({"--out": "other.csv"}, {"TRAIN": "t.csv"})


def test_result_names_stderr_counts_round_trip_and_short_repr(tmp_path):
    result = ValuationResult(np.array([1.0, -1.0, 0.5]), "tmc-shapley", names=np.array(["a", "b", "c"]),
                             stderr=np.array([0.1, 0.2, 0.3]), counts=np.array([5, 5, 5]))
    for suffix in (".csv", ".parquet"):
        loaded = ValuationResult.load(result.save(tmp_path / f"r{suffix}"))
        np.testing.assert_array_equal(loaded.names, ["a", "b", "c"])
        np.testing.assert_array_equal(loaded.stderr, [0.1, 0.2, 0.3])
        np.testing.assert_array_equal(loaded.counts, [5, 5, 5])
    assert repr(result) == "ValuationResult(method='tmc-shapley', rows=3, names, stderr, counts)"
    with pytest.raises(InputError, match=r"k must be an integer >= 0"):
        result.lowest(-1)
    with pytest.raises(InputError, match=r"component name 'stderr' is reserved"):
        ValuationResult(np.zeros(2), "x", components={"stderr": np.zeros(2)})


def test_labels_of_different_kinds_and_unloadable_files_get_clear_messages(tmp_path, planted):
    import dataworth

    X, y, Z, y_ref = planted
    with pytest.raises(InputError, match=r"the training labels are numbers \(e.g. \d\) but the reference labels are text \(e.g. 'a'\)"):
        dataworth.value(X, y, reference=(Z, np.array(["a", "b", "c"])[y_ref]))
    (tmp_path / "text.npz").write_text("not an archive")
    with pytest.raises(FileFormatError, match=r"is not an .npz archive .*numpy.savez") as caught:
        load_dataset(tmp_path / "text.npz")
    assert "pickle" not in str(caught.value)
    (tmp_path / "dir.npz").mkdir()
    with pytest.raises(FileFormatError, match=r"is a directory, not a file"):
        load_dataset(tmp_path / "dir.npz")
    (tmp_path / "head.csv").write_text("a,b,label\n")
    with pytest.raises(InputError, match=r"has no rows \(only a header\)"):
        load_dataset(tmp_path / "head.csv")
    with pytest.raises(InputError, match=r"must be numbers or strings; got values of type dict"):
        dataworth.value(X, np.array([{"a": 1}] * len(X), dtype=object), reference=(Z, y_ref))
    bf16 = dataworth.value(torch.from_numpy(X).bfloat16(), y, reference=(Z, y_ref)).values
    assert np.isfinite(bf16).all()


def test_duplicate_parquet_columns_and_a_long_column_list_get_clear_messages(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_arrays([pa.array([1.0]), pa.array([2.0]), pa.array([0])], names=["a", "a", "label"]),
                   tmp_path / "dup.parquet")
    with pytest.raises(InputError, match=r"duplicate column names: 'a'; rename them"):
        load_dataset(tmp_path / "dup.parquet")
    wide = pd.DataFrame(np.zeros((2, 40)), columns=[f"pixel_{i}" for i in range(39)] + ["Label"])
    wide.to_csv(tmp_path / "wide.csv", index=False)
    with pytest.raises(InputError, match=r"has no label column 'label' \(40 columns: .*; did you mean 'Label'\?\)"):
        load_dataset(tmp_path / "wide.csv")


def test_missing_labels_in_an_npz_are_named_as_such(tmp_path, planted):
    from typer.testing import CliRunner

    from dataworth.cli import app

    X, y, Z, y_ref = planted
    np.savez(tmp_path / "t.npz", X=X)
    np.savez(tmp_path / "r.npz", X=Z, y=y_ref)
    for args, message in (
        (["--method", "knn-shapley"], "KNN-Shapley needs labels, but the training set has none (an .npz holds them as the array 'y')"),
        (["--term", "label"], "the label term needs labels but the data has none (an .npz holds them as the array 'y'"),
    ):
        result = CliRunner().invoke(app, ["value", str(tmp_path / "t.npz"), "--reference", str(tmp_path / "r.npz"),
                                          "--out", str(tmp_path / "o.csv"), *args])
        assert result.exit_code == 2 and message in result.stderr, result.stderr


def test_the_api_reads_files_with_chosen_columns(tmp_path, planted):
    import dataworth

    X, y, Z, y_ref = planted
    pd.DataFrame(X, columns=list("abcd")).assign(target=y, uid=[f"r{i}" for i in range(len(X))]).to_csv(tmp_path / "t.csv", index=False)
    pd.DataFrame(Z, columns=list("abcd")).assign(target=y_ref).to_parquet(tmp_path / "r.parquet")
    result = dataworth.value(str(tmp_path / "t.csv"), reference=str(tmp_path / "r.parquet"), label_column="target", id_column="uid")
    np.testing.assert_allclose(result.values, dataworth.value(X, y, reference=(Z, y_ref)).values, rtol=0, atol=1e-12)
    assert result.names[0] == "r0"
    with pytest.raises(InputError, match=r"kairos has no parameter 'nope'"):
        dataworth.value(X, y, reference=(Z, y_ref), nope=1)
    with pytest.raises(InputError, match=r"label_column choose columns of a training file; X is not one"):
        dataworth.value(X, y, reference=(Z, y_ref), label_column="target")
    with pytest.raises(InputError, match=r"id_column choose columns of a training file; X is not one"):
        dataworth.value(X, y, reference=str(tmp_path / "r.parquet"), label_column="target", id_column="uid")
    with pytest.raises(InputError, match=r"X is a file, so its labels come from the file; do not pass y"):
        dataworth.value(str(tmp_path / "t.csv"), y, reference=str(tmp_path / "r.parquet"), label_column="target")
    with pytest.raises(InputError, match=r"given as a Dataset carries its labels; do not pass labels separately"):
        dataworth.Kairos().fit(dataworth.Dataset(X, y), y, reference=(Z, y_ref))
    mixed = dataworth.value(X, y, reference=str(tmp_path / "r.parquet"), label_column="target")  # only the reference is a file
    assert len(mixed) == len(X)


def test_a_rename_that_fails_puts_every_old_output_back(tmp_path, monkeypatch):
    """The swap is two-phase: when the second output cannot take its place, the first is restored too."""
    from dataworth.data import write_together

    (tmp_path / "values.csv").write_text("old values")
    (tmp_path / "state.npz").write_text("old state")
    real_replace = os.replace
    attempts = []

    def failing_replace(src, dst):  # the new state cannot take its place (the first rename onto state.npz)
        if str(dst).endswith("/state.npz") and not attempts:
            attempts.append(src)
            raise OSError(13, "Permission denied")
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(FileFormatError, match=r"cannot write .*state.npz: Permission denied"):
        write_together({tmp_path / "values.csv": lambda t: t.write_text("new values"),
                        tmp_path / "state.npz": lambda t: t.write_text("new state")})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.npz", "values.csv"]
    assert (tmp_path / "values.csv").read_text() == "old values" and (tmp_path / "state.npz").read_text() == "old state"


def test_a_directory_where_the_csv_sidecar_goes_changes_nothing(tmp_path, planted):
    from typer.testing import CliRunner

    from dataworth.cli import app

    X, y, Z, y_ref = planted
    np.savez(tmp_path / "t.npz", X=X, y=y)
    (tmp_path / "p.csv").write_text("old")
    (tmp_path / "p.csv.json").mkdir()
    result = CliRunner().invoke(app, ["value", str(tmp_path / "t.npz"), "--reference", str(tmp_path / "t.npz"),
                                      "--out", str(tmp_path / "p.csv")])
    assert result.exit_code == 2 and "p.csv.json" in result.stderr and "is a directory" in result.stderr
    assert (tmp_path / "p.csv").read_text() == "old"


def test_a_failure_moving_an_old_output_aside_leaves_nothing_behind(tmp_path, monkeypatch):
    from dataworth.data import write_together

    (tmp_path / "a.csv").write_text("old a")
    (tmp_path / "b.csv").write_text("old b")
    real_replace = os.replace

    def busy(src, dst):
        if str(src).endswith("/b.csv"):  # b cannot be moved aside (in use)
            raise OSError(16, "Device or resource busy")
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", busy)
    with pytest.raises(FileFormatError, match=r"cannot write .*b.csv: Device or resource busy"):
        write_together({tmp_path / "a.csv": lambda t: t.write_text("new a"), tmp_path / "b.csv": lambda t: t.write_text("new b")})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.csv", "b.csv"]
    assert (tmp_path / "a.csv").read_text() == "old a" and (tmp_path / "b.csv").read_text() == "old b"

"""Loading files, atomic writes, and the result type's save/load round trip."""

import json

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

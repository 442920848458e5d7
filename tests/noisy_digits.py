"""Digits with uniformly flipped training labels: the shared end-to-end detection fixture."""

import numpy as np
from sklearn.datasets import load_digits


def noisy_digits(n_ref: int, n_train: int, fraction: float, seed: int = 0):
    """``(X_train, y_train, X_ref, y_ref, flipped)``: a random split, ``fraction`` of training labels moved
    to another class (each flipped row's label shifted by 1-9 mod 10)."""
    X, y = load_digits(return_X_y=True)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(y))
    ref, train = order[:n_ref], order[n_ref:n_ref + n_train]
    y_train = y[train].copy()
    flipped = rng.random(len(train)) < fraction
    y_train[flipped] = (y_train[flipped] + rng.integers(1, 10, flipped.sum())) % 10
    return X[train], y_train, X[ref], y[ref], flipped

import numpy as np
import pytest


@pytest.fixture
def planted():
    """Float64 data with 3 classes, planted outliers and exact duplicates, plus a clean reference set."""
    rng = np.random.default_rng(0)
    centers = rng.normal(scale=3.0, size=(3, 4))
    y = rng.integers(0, 3, size=40)
    X = centers[y] + rng.normal(size=(40, 4))
    X[:3] += 12.0  # planted outliers
    X[10:13] = X[20]  # exact duplicates
    y[10:13] = y[20]
    y_ref = rng.integers(0, 3, size=25)
    Z = centers[y_ref] + rng.normal(size=(25, 4))
    return X, y, Z, y_ref

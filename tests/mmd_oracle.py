"""Brute-force MMD² with dense kernel matrices: the ground truth the closed forms are checked against.

Kernel matrices come from SciPy's pairwise distances and the kernels' textbook formulas, independent
of the library's GEMM-based evaluation.
"""

import numpy as np
from scipy.spatial.distance import cdist

from dataworth.kernels import Kernel

FORMULAS = {
    "gaussian": lambda d, s: np.exp(-(d**2) / (2 * s**2)),
    "laplace": lambda d, s: np.exp(-d / s),
    "imq": lambda d, s: 1 / np.sqrt(1 + d**2 / s**2),
}


def dense_kernel(kernel: Kernel, A: np.ndarray, B: np.ndarray) -> np.ndarray:
    """K(A, B) in float64 from the formula of ``kernel`` at its bandwidth."""
    return FORMULAS[kernel.name](cdist(np.asarray(A, dtype=np.float64), np.asarray(B, dtype=np.float64)), kernel.bandwidth)


def mmd2(X, y, Z, y_ref, kernel: Kernel, label_kernel: str = "none") -> float:
    """Biased (V-statistic) MMD² between the rows (X, y) and (Z, y_ref)."""

    def gram(A, ya, B, yb):
        K = dense_kernel(kernel, A, B)
        return K * (ya[:, None] == yb[None, :]) if label_kernel == "indicator" else K

    return gram(Z, y_ref, Z, y_ref).mean() + gram(X, y, X, y).mean() - 2 * gram(X, y, Z, y_ref).mean()


def loo_effects(X, y, Z, y_ref, kernel: Kernel, label_kernel: str = "none") -> np.ndarray:
    """MMD²(P, D∖{i}) − MMD²(P, D) for every i, by recomputing MMD² without each row."""
    full = mmd2(X, y, Z, y_ref, kernel, label_kernel)
    return np.array([
        mmd2(np.delete(X, i, 0), np.delete(y, i), Z, y_ref, kernel, label_kernel) - full for i in range(len(X))
    ])

"""Brute-force MMD² with dense kernel matrices: the ground truth the closed forms are checked against."""

import numpy as np
import torch

from dataworth.kernels import Kernel


def mmd2(X, y, Z, y_ref, kernel: Kernel, label_kernel: str = "none") -> float:
    """Biased (V-statistic) MMD² between the rows (X, y) and (Z, y_ref)."""

    def gram(A, ya, B, yb):
        K = kernel.matrix(torch.from_numpy(A), torch.from_numpy(B)).numpy()
        return K * (ya[:, None] == yb[None, :]) if label_kernel == "indicator" else K

    return gram(Z, y_ref, Z, y_ref).mean() + gram(X, y, X, y).mean() - 2 * gram(X, y, Z, y_ref).mean()


def loo_effects(X, y, Z, y_ref, kernel: Kernel, label_kernel: str = "none") -> np.ndarray:
    """MMD²(P, D∖{i}) − MMD²(P, D) for every i, by recomputing MMD² without each row."""
    full = mmd2(X, y, Z, y_ref, kernel, label_kernel)
    return np.array([
        mmd2(np.delete(X, i, 0), np.delete(y, i), Z, y_ref, kernel, label_kernel) - full for i in range(len(X))
    ])

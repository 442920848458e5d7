"""LAVA: data values from the calibrated gradient of a label-augmented optimal-transport distance.

Paper: Just, Kang, Wang, Zeng, Ko, Jin, Jia, "LAVA: Data Valuation without Pre-Specified Learning
Algorithms", ICLR 2023 (arXiv 2305.00054). With training rows (x_i, y_i), i = 1..N, and clean
reference rows (z_l, y'_l), l = 1..M, both with uniform weights::

    W(c, c')  = OT_{||·||²}(training rows of class c, reference rows of class c')      (exact EMD)
    C_il      = ||x_i − z_l||² + label_weight · W(y_i, y'_l)
    OT(D, P)  = min_{π ∈ Π(1/N, 1/M)} <π, C> = max_{f, g} Σ_i f_i/N + Σ_l g_l/M        (dual f, g)
    g_i       = f_i − (1/(N−1)) Σ_{j≠i} f_j                                        (calibrated gradient)
    value_i   = −g_i

g_i is the derivative of OT(D, P) along a_ε = a + ε(e_i − (1/(N−1)) Σ_{j≠i} e_j), i.e. when mass
moves onto row i from all the others evenly, so OT(D∖{i}, P) − OT(D, P) ≈ −g_i / N: rows whose
removal brings the training set closer to the reference set (mislabelled rows, outliers) get low
values. The derivative is exact where the dual is unique up to a constant. With uniform weights on both
sides that fails whenever N and M share a factor (a partial sum k/N equals l/M: the problem is
degenerate and ``ot.emd`` would return one of several optimal duals, depending on row order), so the
exact solver perturbs the reference weights by < 1e-6 relative to make it non-degenerate. Sinkhorn's
dual is always unique.

Scaling. Both cost terms are squared Euclidean distances (W is a W₂² distance), so they share units:
``label_weight`` needs no per-term normalization and is already scale-free (multiplying every
feature by s multiplies both terms by s²; this is the OTDD / LAVA cost with λ_x = 1, λ_y =
``label_weight``). The solver sees C / s with s the mean of ||x_i − z_l||² over all N·M pairs, so
``entropic_reg`` is a fraction of the typical feature cost; potentials and the distance are scaled
back by s, so every reported number is in the units of ||x − z||².

No subsampling: every training row is transported and valued, in input order.
"""

from __future__ import annotations

import time
import warnings
from numbers import Real
from typing import Any

import numpy as np
import ot

from dataworth.checks import DataworthError, InputError, check_choice, check_int, check_positive
from dataworth.progress import progress_iter
from dataworth.result import ValuationResult
from dataworth.valuation.base import Valuator, prepare_data

SOLVERS = ("auto", "exact", "sinkhorn")
EXACT_PIVOTS_PER_POINT = 1000
REFERENCE_WEIGHT_JITTER = 1e-6  # relative; breaks the degeneracy of uniform-vs-uniform exact OT
"""The network simplex's pivot cap is this times N + M; optimality needs ~20 per point in practice."""
SINKHORN_RTOL = 1e-6
"""Sinkhorn stops when the L2 violation of the reference marginal falls below this fraction of ||b||₂."""
USABLE_MISPLACED_MASS = 1e-3
"""An unconverged Sinkhorn plan that misplaces less than this fraction of the mass is kept, with a warning."""


class Lava(Valuator):
    """LAVA data values: minus the calibrated gradient of a label-augmented OT distance.

    Parameters
    ----------
    label_weight : weight of the class-to-class distance W(y_i, y'_l) in the ground cost (≥ 0;
        0 ignores labels). Scale-free: both terms are squared distances (see the module docstring).
    solver : ``"exact"`` (network simplex, ``ot.emd``), ``"sinkhorn"`` (log-domain entropic OT,
        ``ot.sinkhorn(method="sinkhorn_log")``) or ``"auto"``: exact when N·M ≤ ``exact_limit``².
    entropic_reg : Sinkhorn's regularization, relative to the mean squared feature distance (> 0).
    exact_limit : see ``solver="auto"``.
    max_iter : Sinkhorn iteration cap. If Sinkhorn stops there with less than 0.1 % of the mass
        misplaced a ``UserWarning`` is issued and the values are kept; otherwise a
        :class:`~dataworth.checks.DataworthError` says to raise ``entropic_reg`` or use ``"exact"``.
    progress : show a progress bar over the class-pair OT problems.

    Fitted attributes: ``result_`` (component ``calibrated_gradient``), ``ot_distance_``
    (OT(D, P) = <π, C>, for Sinkhorn the cost of the entropic plan), ``class_distances_`` (W indexed
    by ``classes_`` both ways; NaN rows for classes absent from the training set), ``solver_``
    (the solver used) and ``cost_scale_`` (s).

    Row order: values do not depend on the order of the training rows (the exact solver is made
    non-degenerate, see the module docstring).
    """

    method = "lava"

    def __init__(
        self,
        *,
        label_weight: float = 1.0,
        solver: str = "auto",
        entropic_reg: float = 0.1,
        exact_limit: int = 5000,
        max_iter: int = 10000,
        progress: bool = False,
    ) -> None:
        self.label_weight = label_weight
        self.solver = solver
        self.entropic_reg = entropic_reg
        self.exact_limit = exact_limit
        self.max_iter = max_iter
        self.progress = progress

    def fit(self, X: Any, y: Any = None, *, reference: Any) -> Lava:
        """Value every row of ``X`` (labels ``y``) against the labelled clean ``reference`` set.

        ``X`` may be an array, tensor, DataFrame or a file path (then ``y`` comes from the file);
        ``reference`` a file path, a ``(Z, y_ref)`` pair or a :class:`~dataworth.data.Dataset`.
        """
        started = time.perf_counter()
        self._validate_params()
        data = prepare_data(X, y, reference, method="LAVA", require_labels=True)
        x, z = data.x.cpu().double().numpy(), data.z.cpu().double().numpy()
        self.classes_ = data.classes
        n, m = x.shape[0], z.shape[0]
        self.solver_ = self.solver if self.solver != "auto" else ("exact" if n * m <= self.exact_limit**2 else "sinkhorn")

        timings: dict[str, float] = {}
        tick = time.perf_counter()
        feature_cost = squared_distances(x, z)
        self.class_distances_ = class_distances(
            feature_cost, data.codes, data.ref_codes, len(data.classes), progress=self.progress
        )
        timings["costs"] = time.perf_counter() - tick

        tick = time.perf_counter()
        self.cost_scale_ = float(feature_cost.mean()) or 1.0
        cost = feature_cost + self.label_weight * self.class_distances_[np.ix_(data.codes, data.ref_codes)]
        cost /= self.cost_scale_
        if self.solver_ == "exact":
            distance, potential = solve_exact(cost)
        else:
            distance, potential = solve_sinkhorn(cost, self.entropic_reg, self.max_iter)
        timings["transport"] = time.perf_counter() - tick
        timings["total"] = time.perf_counter() - started

        self.ot_distance_ = distance * self.cost_scale_
        gradient = calibrated_gradient(potential * self.cost_scale_)
        params = {
            **self.get_params(),
            "solver_used": self.solver_,
            "ot_distance": self.ot_distance_,
            "cost_scale": self.cost_scale_,
            "n_reference": m,
        }
        self.result_ = ValuationResult(
            -gradient, self.method, params=params, timings=timings, components={"calibrated_gradient": gradient}
        )
        return self

    def _validate_params(self) -> None:
        check_choice(self.solver, "solver", SOLVERS)
        if isinstance(self.label_weight, bool) or not isinstance(self.label_weight, Real) or not 0 <= self.label_weight < np.inf:
            raise InputError(f"label_weight must be a finite number ≥ 0 (0 ignores labels); got {self.label_weight!r}")
        check_positive(self.entropic_reg, "entropic_reg")
        check_int(self.exact_limit, "exact_limit")
        check_int(self.max_iter, "max_iter")


def squared_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """||a_i − b_l||² for every pair, float64, clipped at 0 against rounding."""
    return np.maximum(ot.dist(a, b, metric="sqeuclidean"), 0.0)


def class_distances(
    feature_cost: np.ndarray, codes: np.ndarray, ref_codes: np.ndarray, n_classes: int, *, progress: bool = False
) -> np.ndarray:
    """W(c, c'): exact OT (squared Euclidean cost, uniform weights) between class-conditional rows.

    ``feature_cost`` holds ||x_i − z_l||² for all training rows i and reference rows l. Rows of the
    result are training classes and columns reference classes, both indexed by class code; rows of
    classes with no training row are NaN.
    """
    out = np.full((n_classes, n_classes), np.nan)
    pairs = [(c, r) for c in np.unique(codes) for r in np.unique(ref_codes)]
    for c, r in progress_iter(pairs, "LAVA class distances", enabled=progress):
        out[c, r], _ = solve_exact(feature_cost[np.ix_(codes == c, ref_codes == r)])
    return out


def reference_weights(m: int) -> np.ndarray:
    """Uniform weights 1/M, each moved by a fixed relative amount below ``REFERENCE_WEIGHT_JITTER``."""
    jitter = np.random.default_rng(0).uniform(-0.5, 0.5, size=m) * REFERENCE_WEIGHT_JITTER
    return (1.0 + jitter) / (1.0 + jitter).sum()


def solve_exact(cost: np.ndarray) -> tuple[float, np.ndarray]:
    """Exact OT between uniform weights on the rows and columns of ``cost``: (distance, row potential).

    The column weights get a fixed relative perturbation of at most ``REFERENCE_WEIGHT_JITTER``, which
    makes the problem non-degenerate (no partial sum of row weights k/N equals one of column weights),
    so the optimal dual is unique up to a constant and the values do not depend on the training-row
    order. The change in the OT distance is below 1e-6 relative.
    """
    n, m = cost.shape
    cap = EXACT_PIVOTS_PER_POINT * (n + m)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the result code below is checked instead
        _, log = ot.emd(np.full(n, 1.0 / n), reference_weights(m), cost, numItermax=cap, log=True)
    if log["result_code"] != 1:
        raise DataworthError(
            f"the exact OT solver hit its cap of {cap} pivots before reaching an optimal plan on a {n} × {m} problem; "
            "use solver='sinkhorn'"
        )
    return float(log["cost"]), np.asarray(log["u"], dtype=np.float64)


def solve_sinkhorn(cost: np.ndarray, reg: float, max_iter: int) -> tuple[float, np.ndarray]:
    """Log-domain Sinkhorn between uniform weights: (<π, C> of the entropic plan π, row potential).

    POT's plan is π = diag(u) K diag(v) with K = exp(−C/reg), so the row potential is f = reg·log u
    (``log["log_u"]``, exact in the log domain).
    """
    n, m = cost.shape
    b = np.full(m, 1.0 / m)
    tol = SINKHORN_RTOL * float(np.linalg.norm(b))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # convergence is checked from the log below
        plan, log = ot.sinkhorn(
            np.full(n, 1.0 / n), b, cost, reg, method="sinkhorn_log", numItermax=max_iter, stopThr=tol, log=True
        )
    potential = reg * np.asarray(log["log_u"], dtype=np.float64)
    misplaced = 0.5 * float(np.abs(plan.sum(axis=0) - b).sum())
    advice = f"raise entropic_reg (now {reg}) or max_iter (now {max_iter}), or use solver='exact'"
    if not (np.isfinite(potential).all() and misplaced <= USABLE_MISPLACED_MASS):
        raise DataworthError(f"Sinkhorn did not converge ({misplaced:.2%} of the mass misplaced); {advice}")
    if log["err"][-1] >= tol:
        warnings.warn(
            f"Sinkhorn stopped after {max_iter} iterations with {misplaced:.3%} of the mass misplaced; "
            f"the values are approximate; {advice}",
            UserWarning,
            stacklevel=3,
        )
    return float((plan * cost).sum()), potential


def calibrated_gradient(potential: np.ndarray) -> np.ndarray:
    """g_i = f_i − (1/(N−1)) Σ_{j≠i} f_j; invariant to adding a constant to f."""
    n = potential.shape[0]
    return (n * potential - potential.sum()) / (n - 1)

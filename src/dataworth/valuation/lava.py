"""LAVA: data values from the calibrated gradient of a label-augmented optimal-transport distance.

Paper: Just, Kang, Wang, Zeng, Ko, Jin, Jia, "LAVA: Data Valuation without Pre-Specified Learning
Algorithms", ICLR 2023 (arXiv 2305.00054). With training rows (x_i, y_i), i = 1..N, and clean
reference rows (z_l, y'_l), l = 1..M, both with uniform weights::

    W(c, c')  = OT_{||·||²}(training rows of class c, reference rows of class c')      (exact EMD)
    C_il      = ||x_i − z_l||² + label_weight · W(y_i, y'_l)
    OT(D, P)  = min_{π ∈ Π(1/N, 1/M)} <π, C> = max_{f, g} Σ_i f_i/N + Σ_l g_l/M        (dual f, g)
    f         = the row potential of the chosen solver (default: annealed Sinkhorn, see below)
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

Solver. The values are a property of the dual f the solver returns. LAVA's reference code (and
OpenDataVal's copy) solves the outer problem with GeomLoss's ε-scaling Sinkhorn, about ten updates
on a cooling schedule and not to convergence; its f leans towards the soft c-transform of each row
(a soft nearest-reference cost) and finds corrupted rows far better than the exact or converged
dual: mean AUROC 0.921 vs 0.877 (exact) and 0.902 (converged Sinkhorn) over the 24 cells of the
detection grid (``benchmarks/lava_solvers.py``). ``solver="annealed"`` (default) is that solver
(:func:`solve_annealed`, equal to GeomLoss to 1e-12); ``"exact"`` and ``"sinkhorn"`` give the
paper's derivative of the exact or entropic OT distance.

Scaling. Both cost terms are squared Euclidean distances (W is a W₂² distance), so they share units:
``label_weight`` needs no per-term normalization and is already scale-free (multiplying every
feature by s multiplies both terms by s²; this is the OTDD / LAVA cost with λ_x = 1, λ_y =
``label_weight``). The solver sees C / s with s the mean of ||x_i − z_l||² over all N·M pairs, so
``entropic_reg`` is a fraction of the typical feature cost; potentials and the distance are scaled
back by s, so every reported number is in the units of ||x − z||².

No subsampling: every training row is transported and valued, in input order.
"""

from __future__ import annotations

import math
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import ot
import torch

from dataworth.checks import (
    DataworthError,
    InputError,
    check_choice,
    check_int,
    check_non_negative,
    check_positive,
    prepare_data,
    warn_if_degenerate,
)
from dataworth.linalg import power_of_two_scale
from dataworth.progress import progress_iter
from dataworth.result import ValuationResult
from dataworth.valuation.base import Valuator

SOLVERS = ("annealed", "exact", "sinkhorn")
EXACT_PIVOTS_PER_POINT = 1000
REFERENCE_WEIGHT_JITTER = 1e-6  # relative; breaks the degeneracy of uniform-vs-uniform exact OT
"""The network simplex's pivot cap is this times N + M; optimality needs ~20 per point in practice."""
ANNEAL_RATIO = 0.25
"""ε shrinks by this factor per step of the annealed solver (GeomLoss: scaling 0.5, squared for p = 2)."""
ANNEAL_CHUNK_ENTRIES = 2**22
"""Cost entries per row chunk of the annealed solver (32 MB of float64 per temporary)."""
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
    solver : ``"annealed"`` (default; ε-scaling Sinkhorn as in LAVA's reference code, see the module
        docstring), ``"exact"`` (network simplex, ``ot.emd``) or ``"sinkhorn"`` (log-domain entropic
        OT run to convergence, ``ot.sinkhorn(method="sinkhorn_log")``).
    entropic_reg : the final ε of ``"annealed"`` and the ε of ``"sinkhorn"``, relative to the mean
        squared feature distance (> 0).
    max_iter : Sinkhorn iteration cap (``"sinkhorn"`` only). If Sinkhorn stops there with less than 0.1 % of the mass
        misplaced a ``UserWarning`` is issued and the values are kept; otherwise a
        :class:`~dataworth.checks.DataworthError` says to raise ``entropic_reg`` or use ``"exact"``.
    progress : show progress bars over the class-pair OT problems and the annealed solver's steps.

    Fitted attributes: ``result_`` (component ``calibrated_gradient``), ``ot_distance_``
    (OT(D, P) = <π, C>; for ``"sinkhorn"`` the cost of the entropic plan, for ``"annealed"`` the dual
    objective <f, 1/N> + <g, 1/M>), ``class_distances_`` (W indexed by ``classes_`` both ways; NaN
    rows for classes absent from the training set) and ``cost_scale_`` (s).

    Row order: values do not depend on the order of the training rows (the exact solver is made
    non-degenerate, see the module docstring).
    """

    method = "lava"

    def __init__(
        self,
        *,
        label_weight: float = 1.0,
        solver: str = "annealed",
        entropic_reg: float = 0.1,
        max_iter: int = 10000,
        progress: bool = False,
    ) -> None:
        self.label_weight = label_weight
        self.solver = solver
        self.entropic_reg = entropic_reg
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
        # Every cost is a squared distance, normalized by their mean before transport, so the duals scale
        # exactly with scale**2: computed on rows rescaled by a power of two, then scaled back.
        scale = power_of_two_scale(data.x, data.z)
        x, z = data.x.cpu().double().numpy() * scale, data.z.cpu().double().numpy() * scale
        self.classes_ = data.classes
        m = z.shape[0]

        timings: dict[str, float] = {}
        tick = time.perf_counter()
        feature_cost = squared_distances(x, z)
        self.cost_scale_ = _unscaled(float(feature_cost.mean()), scale) or 1.0
        scaled_class_distances = class_distances(feature_cost, data.codes, data.ref_codes, len(data.classes), progress=self.progress)
        with np.errstate(over="ignore"):  # a class distance beyond float64 is reported as inf
            self.class_distances_ = scaled_class_distances / scale / scale
        timings["costs"] = time.perf_counter() - tick

        tick = time.perf_counter()
        scaled_cost_scale = float(feature_cost.mean()) or 1.0
        cost = add_label_costs(feature_cost, self.label_weight * scaled_class_distances, data.codes, data.ref_codes)
        cost /= scaled_cost_scale
        if self.solver == "exact":
            distance, potential = solve_exact(cost)
        elif self.solver == "annealed":
            distance, potential = solve_annealed(cost, self.entropic_reg, progress=self.progress)
        else:
            distance, potential = solve_sinkhorn(cost, self.entropic_reg, self.max_iter)
        timings["transport"] = time.perf_counter() - tick
        timings["total"] = time.perf_counter() - started

        with np.errstate(over="ignore"):  # in the data's units: checked right below
            self.ot_distance_ = distance * self.cost_scale_
            gradient = calibrated_gradient(potential) * self.cost_scale_
        if not (np.isfinite(gradient).all() and np.isfinite(self.ot_distance_)):
            raise _beyond_float64(scale)
        warn_if_degenerate(
            gradient, "LAVA", "the training rows are indistinguishable to optimal transport (constant features?); check the features"
        )
        params = {
            **self.get_params(),
            "ot_distance": self.ot_distance_,
            "cost_scale": self.cost_scale_,
            "n_reference": m,
        }
        self.result_ = ValuationResult(
            -gradient, self.method, params=params, timings=timings, components={"calibrated_gradient": gradient}, names=data.names
        )
        return self

    def _validate_params(self) -> None:
        check_choice(self.solver, "solver", SOLVERS)
        check_non_negative(self.label_weight, "label_weight", meaning="0 ignores labels")
        check_positive(self.entropic_reg, "entropic_reg")
        check_int(self.max_iter, "max_iter")


def _unscaled(squared: float, scale: float) -> float:
    """A squared distance computed on rows rescaled by ``scale``, in the data's units; an
    :class:`InputError` when it is beyond float64 (LAVA's values are in units of squared distance)."""
    value = squared / scale / scale
    if not np.isfinite(value) or (squared > 0 and value == 0):
        raise _beyond_float64(scale)
    return value


def _beyond_float64(scale: float) -> InputError:
    return InputError(
        "LAVA's values are in units of squared distance between rows, and at this feature scale "
        f"(largest |value| about 2^{-np.log2(scale):.0f}) they do not fit in float64; rescale the features (e.g. standardize them)"
    )


def squared_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """||a_i − b_l||² for every pair, float64, clipped at 0 against rounding."""
    return np.maximum(ot.dist(a, b, metric="sqeuclidean"), 0.0)


def class_distances(
    feature_cost: np.ndarray, codes: np.ndarray, ref_codes: np.ndarray, n_classes: int, *, progress: bool = False
) -> np.ndarray:
    """W(c, c'): exact OT (squared Euclidean cost, uniform weights) between class-conditional rows.

    ``feature_cost`` holds ||x_i − z_l||² for all training rows i and reference rows l. Rows of the
    result are training classes and columns reference classes, both indexed by class code; rows of
    classes with no training row are NaN. The class pairs are solved on ``torch.get_num_threads()``
    threads (POT's network simplex releases the GIL: 1.8× on 2 cores), each cutting its own block
    out of ``feature_cost`` so that at most one block per thread is held.
    """
    out = np.full((n_classes, n_classes), np.nan)
    pairs = [(c, r) for c in np.unique(codes) for r in np.unique(ref_codes)]

    def distance(c: int, r: int) -> float:
        return _network_simplex(feature_cost[np.ix_(codes == c, ref_codes == r)])[0]

    # POT's warnings are silenced here, once, for all threads: warnings.catch_warnings swaps global
    # state and is not thread-safe, so entering it in each thread could leave "ignore" behind.
    with warnings.catch_warnings(), ThreadPoolExecutor(max_workers=torch.get_num_threads()) as pool:
        warnings.simplefilter("ignore")
        futures = [((c, r), pool.submit(distance, c, r)) for c, r in pairs]
        try:
            for (c, r), future in progress_iter(futures, "LAVA class distances", enabled=progress):
                out[c, r] = future.result()
        except BaseException:  # a failed pair or Ctrl-C: don't solve the pairs still queued
            pool.shutdown(cancel_futures=True)
            raise
    return out


def add_label_costs(feature_cost: np.ndarray, label_costs: np.ndarray, codes: np.ndarray, ref_codes: np.ndarray) -> np.ndarray:
    """``feature_cost[i, l] += label_costs[codes[i], ref_codes[l]]`` in place, one training class at a time
    (no second N × M array), and return ``feature_cost``."""
    for c in np.unique(codes):
        rows = np.flatnonzero(codes == c)
        feature_cost[rows] += label_costs[c, ref_codes]
    return feature_cost


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
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # POT's; the result code is checked instead
        return _network_simplex(cost)


def _network_simplex(cost: np.ndarray) -> tuple[float, np.ndarray]:
    """:func:`solve_exact` without touching the warning filters (for callers that silence POT themselves)."""
    n, m = cost.shape
    cap = EXACT_PIVOTS_PER_POINT * (n + m)
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


def solve_annealed(
    cost: np.ndarray,
    reg: float,
    *,
    start: float | None = None,
    ratio: float = ANNEAL_RATIO,
    chunk_rows: int | None = None,
    progress: bool = False,
) -> tuple[float, np.ndarray]:
    """ε-scaling Sinkhorn with a fixed cooling schedule, as GeomLoss runs it: (dual objective, row potential).

    Feydy, Séjourné, Vialard, Amari, Trouvé, Peyré, "Interpolating between Optimal Transport and MMD
    using Sinkhorn Divergences", AISTATS 2019, and Feydy's thesis (2020), §3.3. With uniform log-weights
    α, β and ``softmin_ε(C, h)_i = −ε log Σ_l exp(h_l − C_il/ε)``::

        ε_0 = start (default max C),  ε_{k+1} = ratio · ε_k  until reg,  then reg once more
        f ← softmin_ε0(C, β),  g ← softmin_ε0(Cᵀ, α)
        for each ε:  f, g ← ½(f + softmin_ε(C, β + g/ε)),  ½(g + softmin_ε(Cᵀ, α + f/ε))
        finally:     f, g ← softmin_reg(C, β + g/reg),  softmin_reg(Cᵀ, α + f/reg)

    Each update is one pass over row chunks of C (``chunk_rows`` rows, by default ≈ 4M entries), so
    the solver needs no N × M buffer beyond ``cost`` itself. One symmetrized update per temperature,
    so about log(max C / reg) / log(1/ratio) + 3 updates in all: the result is *not* the converged entropic dual (:func:`solve_sinkhorn` gives that) but a
    multi-scale one that leans towards the soft c-transform of each row. It is the outer solver of the
    OTDD code that LAVA's reference implementation and OpenDataVal call (GeomLoss ``SamplesLoss`` with
    ``scaling=0.5``, p = 2), and its calibrated gradients find corrupted rows much better than the
    exact or converged duals (``benchmarks/lava_solvers.py``). Written here because GeomLoss is not
    a dependency (POT's ``sinkhorn_epsilon_scaling`` iterates to convergence at every ε).
    """
    c = torch.from_numpy(np.ascontiguousarray(cost, dtype=np.float64))
    n, m = c.shape
    a_log = torch.full((n,), -math.log(n), dtype=torch.float64)
    b_log = torch.full((m,), -math.log(m), dtype=torch.float64)
    start = float(c.max()) if start is None else start
    schedule = [start, *np.exp(np.arange(np.log(start), np.log(reg), np.log(ratio))), reg] if start > reg else [reg]
    step = max(1, chunk_rows or ANNEAL_CHUNK_ENTRIES // m)

    def softmins(eps: float, f: torch.Tensor, g: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """softmin_ε(C, β + g/ε) and softmin_ε(Cᵀ, α + f/ε) in one pass over row chunks of C."""
        row_shift, column_shift = (b_log + g / eps)[None, :], (a_log + f / eps)[:, None]
        rows, columns = [], torch.full((m,), -math.inf, dtype=torch.float64)
        for first in range(0, n, step):
            scaled = c[first : first + step] / eps
            rows.append(torch.logsumexp(row_shift - scaled, dim=1))
            columns = torch.logaddexp(columns, torch.logsumexp(column_shift[first : first + step] - scaled, dim=0))
        return -eps * torch.cat(rows), -eps * columns

    zeros_f, zeros_g = torch.zeros(n, dtype=torch.float64), torch.zeros(m, dtype=torch.float64)
    f, g = softmins(schedule[0], zeros_f, zeros_g)
    for eps in progress_iter(schedule, "LAVA transport (annealed)", enabled=progress):
        f_next, g_next = softmins(eps, f, g)
        f, g = 0.5 * (f + f_next), 0.5 * (g + g_next)
    f, g = softmins(reg, f, g)
    return float(f.mean() + g.mean()), f.numpy()


def calibrated_gradient(potential: np.ndarray) -> np.ndarray:
    """g_i = f_i − (1/(N−1)) Σ_{j≠i} f_j; invariant to adding a constant to f."""
    n = potential.shape[0]
    return (n * potential - potential.sum()) / (n - 1)

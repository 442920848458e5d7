"""KAIROS: model-agnostic data valuation from the exact leave-one-out effect on the MMD.

Seed paper: "KAIROS: Scalable Model-Agnostic Data Valuation", arXiv 2506.23799.
Formulas: ``shared/DESIGN.md`` §3. With training rows x_1..x_N, clean reference rows z_1..z_M and a
normalized kernel k (k(x, x) = 1)::

    a_i = (1/N) Σ_j k(x_i, x_j)      b_i = (1/M) Σ_l k(x_i, z_l)      S_QQ = mean a    S_PQ = mean b
    feature_i = MMD²(P, D∖{i}) − MMD²(P, D)
              = 2ε(a_i − b_i − S_QQ + S_PQ) + ε²(1 − 2a_i + S_QQ),     ε = −1/(N−1)

is exact for the biased (V-statistic) MMD². With ``label_kernel="indicator"`` the kernel is
k(x, x')·1[y = y'] and the sums run over rows of the same class. The label term is the residual of
the one-hot label against the conditional mean embedding fitted on the reference set::

    μ(x) = k(x, Z) (K_ZZ + M α I)⁻¹ Y_Z,         residual_i = ||onehot(y_i) − μ(x_i)||₂

The default combination calibrates both terms against the clean reference set
(:mod:`~dataworth.valuation.calibration`): each reference row gets the training rows' scores out of
sample — the MMD witness ``w(z_l) = mean_{l'≠l} k(z_l, z_l') − mean_j k(z_l, x_j)`` against the
training rows' ``w(x_i) = b_i − mean_{j≠i} k(x_i, x_j)`` ((N − 1)·feature_i = 2·w(x_i) up to a constant and
O(1/N)); the reference density ``mean_{l'≠l} k(z_l, z_l')`` against ``b_i``; and the kernel ridge
model's closed-form leave-one-out residual ``||W_l|| / (K_ZZ + MαI)⁻¹_ll`` with
``W = (K_ZZ + MαI)⁻¹ Y_Z`` against the training rows' residual. Conformal p-values against these null
samples (the two feature ones merged by Bonferroni) become Benjamini–Hochberg q-values per term, and
a row's value is its smaller q-value.

Online updates keep the row sums R_i = Σ_j k(x_i, x_j), B_i = Σ_l k(x_i, z_l) and the reference
rows' C_l = Σ_j k(z_l, x_j), so adding m rows costs O(m (N + M)) kernel evaluations and reproduces a
batch fit on the concatenated data.
"""

from __future__ import annotations

import json
import os
import time
import warnings
import zipfile
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from scipy.special import softmax
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold
from threadpoolctl import threadpool_limits

from dataworth.checks import (
    DataworthError,
    DataworthWarning,
    FileFormatError,
    InputError,
    cast_features,
    check_choice,
    check_features,
    check_fraction,
    check_int,
    check_labels,
    check_positive,
    check_same_width,
    check_seed,
    encode_labels,
    prepare_data,
    resolve_device,
    warn_if_degenerate,
)
from dataworth.data import Writer, as_dataset, check_output_path, existing_file, read_npz_text, row_names, write_together
from dataworth.kernels import (
    DEFAULT_MEMORY_BUDGET,
    KERNELS,
    Kernel,
    kernel_matmul,
    kernel_matmul_both_ways,
    make_kernel,
    median_bandwidth,
    nearest_rows,
)
from dataworth.linalg import inverse_diagonal_from_cholesky, power_of_two_scale, solve_spd_inplace
from dataworth.result import ValuationResult
from dataworth.valuation import calibration
from dataworth.valuation.base import Valuator
from dataworth.valuation.issue_types import assign_issue_types

_STATE_FORMAT = "dataworth.kairos.state"
# 3: the reference null (C_l, D_l, leave-one-out residuals) stored; 2: rows stored rescaled by a power
# of two ("scale"); 1: as given. Older states get their reference null computed when loaded.
_STATE_VERSION = 3
_READABLE_VERSIONS = (1, 2, 3)
LABEL_KERNELS = ("none", "indicator")
LABEL_MODELS = ("embedding", "logistic")
COMBINE_RULES = ("calibrated", "worst", "zscore", "raw")
PRECISIONS = ("input", "float32", "float64")


class Kairos(Valuator):
    """KAIROS data values: exact leave-one-out MMD² effect plus a label-consistency residual.

    Parameters
    ----------
    kernel : ``"gaussian"`` (default), ``"laplace"`` or ``"imq"``.
    bandwidth : ``"median"`` (``bandwidth_scale`` × the median pairwise distance over ≤ 10,000 fixed-seed
        pairs of training rows, computed at ``fit`` and kept for ``add``) or a number > 0.
    bandwidth_scale : the factor on the median heuristic; 0.5 by default, chosen on evidence
        (``benchmarks/kairos_combination.py``: wine and iris, all five corruption types).
    label_kernel : ``"none"`` (features only) or ``"indicator"`` (k(x, x')·1[y = y']).
    label_model : ``"embedding"`` (conditional mean embedding, DESIGN.md §3) or ``"logistic"``
        (logistic regression on the reference set, the paper authors' variant).
    combine : how the two terms make ``values_``. ``"calibrated"`` (default): each term's
        Benjamini–Hochberg q-value from conformal p-values against the clean reference rows' own
        out-of-sample scores (module docstring), and ``values_`` = the smaller of the two (ties ordered by
        how far into the reference null the row lies). Flagging the rows with value ≤ α takes the union of
        the two terms' BH lists at level α, so its false discovery rate is at most about 2α (α per term;
        the logistic label model's cross-fitted null makes its term conservative). The per-term q-values
        are the components ``feature_q`` and ``label_q``. Needs ≥ 2 reference rows. Without labels the
        value is the feature term itself, whatever the rule (``feature_q`` is still a component). The
        other rules work on
        robust z-scores (median / 1.4826·MAD over the training rows) ``zf = z(feature)``,
        ``zr = z(residual)``: ``"worst"`` (the default before 0.2) ``min(zf, −zr)``, the more anomalous
        of the two standardized scores; ``"zscore"`` ``w·zf − (1 − w)·zr``;
        ``"raw"`` ``w·(N − 1)·feature − (1 − w)·residual`` (unstandardized, the paper's form). The exact
        leave-one-out term shrinks as 1/N while the residual is O(1), so it is blended at the paper's
        scale, the distributional influence: (N − 1)·feature_i = 2(b_i − a_i) + 2(S_QQ − S_PQ) + O(1/N),
        the MMD witness at x_i up to a constant.
        Chosen on evidence: see ``benchmarks/kairos_combination.py`` and the README.
    feature_weight : ``w`` for ``combine="zscore"`` / ``"raw"``.
    label_ridge : α in the embedding's ridge ``M α I``.
    seed : seeds the bandwidth's pair sample.
    precision : ``"input"`` (default: float32 input is computed in float32, anything else in
        float64, and float64 values match brute force to 1e-10), ``"float32"`` or ``"float64"``.
        ``"float32"`` on float64 data nearly halves the time (the GEMM runs at twice the rate); at
        N = 10,000 (d = 64) it took 0.33 s instead of 0.65 s, feature values moved by up to 3e-5 of
        their largest magnitude, residuals by 4e-7, and the values' Spearman correlation was 1 − 1e-9.
    device : ``"cpu"`` or ``"cuda"``.
    memory_budget : bytes for one kernel tile (see :func:`~dataworth.kernels.kernel_matmul`).
    progress : show a progress bar over kernel blocks.

    Without labels only the feature term is computed and ``values_`` equals it.

    Fitted attributes: ``values_``, ``feature_values_`` (exact leave-one-out MMD² effect),
    ``label_residuals_``, ``reference_residuals_`` (the reference rows' out-of-sample residuals, the
    label term's null sample: leave-one-out for the embedding, whose mean square is its leave-one-out
    error; 5-fold cross-fitted for the logistic model),
    ``bandwidth_``, ``classes_``, ``n_train_`` and ``result_``.
    """

    method = "kairos"
    terms = ("feature", "label")
    state_format = _STATE_FORMAT

    def __init__(
        self,
        *,
        kernel: str = "gaussian",
        bandwidth: str | float = "median",
        bandwidth_scale: float = 0.5,
        label_kernel: str = "none",
        label_model: str = "embedding",
        combine: str = "calibrated",
        feature_weight: float = 0.5,
        label_ridge: float = 1e-3,
        seed: int = 0,
        precision: str = "input",
        device: str = "cpu",
        memory_budget: int = DEFAULT_MEMORY_BUDGET,
        progress: bool = False,
    ) -> None:
        self.kernel = kernel
        self.bandwidth = bandwidth
        self.bandwidth_scale = bandwidth_scale
        self.label_kernel = label_kernel
        self.label_model = label_model
        self.combine = combine
        self.feature_weight = feature_weight
        self.label_ridge = label_ridge
        self.seed = seed
        self.precision = precision
        self.device = device
        self.memory_budget = memory_budget
        self.progress = progress

    @classmethod
    def paper(cls, **kwargs: Any) -> Kairos:
        """The paper authors' variant: logistic-regression residual, raw blend of the distributional
        influence and the residual with λ = 0.97 (see ``combine``)."""
        return cls(label_model="logistic", combine="raw", feature_weight=0.97, **kwargs)

    # ------------------------------------------------------------------ fitting
    def fit(self, X: Any, y: Any = None, *, reference: Any) -> Kairos:
        """Value every row of ``X`` (labels ``y``) against the clean ``reference`` set.

        ``X`` may be an array, tensor, DataFrame or a file path (then ``y`` comes from the file);
        ``reference`` a file path, a ``(Z, y_ref)`` pair, a :class:`~dataworth.data.Dataset` or a bare
        feature array (no labels).
        """
        started = time.perf_counter()
        self._validate_params()
        data = prepare_data(
            X, y, reference, method="KAIROS", device=self.device, require_labels=self.label_kernel == "indicator"
        )
        # Exact power-of-two rescaling: the kernel depends on ||x − x'||/σ only, so values are unchanged,
        # but squared distances of features ~1e200 (or ~1e-200) stay in range, in either precision.
        self._scale = power_of_two_scale(data.x, data.z)
        # In place: prepare_data's tensors are this fit's own copies.
        x, z, codes, ref_codes = data.x.mul_(self._scale), data.z.mul_(self._scale), data.codes, data.ref_codes
        if self.precision != "input":
            dtype = getattr(torch, self.precision)
            x = cast_features(x, dtype, "the training set", unit=self._scale)
            z = cast_features(z, dtype, "the reference set", unit=self._scale)
        self.classes_ = data.classes
        self.feature_names_ = data.columns
        self.label_column_ = data.label_column
        self.id_column_ = data.id_column
        self._names = data.names

        timings: dict[str, float] = {}
        tick = time.perf_counter()
        if self.bandwidth == "median":
            self.bandwidth_ = self.bandwidth_scale * median_bandwidth(x, seed=self.seed) / self._scale
        else:
            self.bandwidth_ = float(self.bandwidth)
        timings["bandwidth"] = time.perf_counter() - tick
        self._x, self._z, self._codes, self._ref_codes = x, z, codes, ref_codes
        self._kernel = self._make_kernel()

        tick = time.perf_counter()
        self._fit_label_model()
        timings["label_model"] = time.perf_counter() - tick
        if self.combine == "calibrated" and codes is not None and (z.shape[0] < 2 or self._ref_residuals is None):
            raise InputError(
                "combine='calibrated' compares each row with the reference rows' own scores, so it needs at least 2 "
                "reference rows (with label_model='logistic', 2 of every class); add reference rows or use combine='worst'"
            )

        tick = time.perf_counter()
        sums, self._ref_train_sums = self._kernel_sums(
            x, codes, [(x, codes), (z, ref_codes)], "KAIROS kernel sums", label_mean=True, reference_columns=True
        )
        self._row_sums, self._ref_sums = sums[:, 0], sums[:, 1]
        self._residuals = None if codes is None else self._label_residuals(x, codes, sums[:, 2:])
        self._ref_ref_sums = self._kernel_sums(z, ref_codes, [(z, ref_codes)], "KAIROS reference null")[0][:, 0]
        timings["kernel_sums"] = time.perf_counter() - tick
        timings["total"] = time.perf_counter() - started
        self._publish(timings)
        self._warn_if_kernel_is_constant()
        return self

    def add(self, X_new: Any, y_new: Any = None) -> Kairos:
        """Append rows and update every value in O(m (N + M)) kernel evaluations.

        The bandwidth, the reference set and the label model stay those of ``fit``, so the result
        equals a fit on the concatenated rows with the same bandwidth.
        """
        self._fitted_result()
        started = time.perf_counter()
        new = as_dataset(X_new, y_new, "the added set").aligned_to(self.feature_names_, "the added set", "the fitted training set")
        if self._names is not None and new.names is None:
            raise InputError(
                "this KAIROS state names its rows, so the added rows need names too: give their id column "
                "(id_column / --id-column) or a DataFrame indexed by them"
            )
        names = None if self._names is None else row_names(np.concatenate([self._names, new.names]), "the ids of the fitted and the added rows")
        x_new = check_features(new.X, "the added set", device=self._x.device)
        check_same_width(self._x, x_new, "the added set")
        x_new = cast_features(x_new.mul_(self._scale), self._x.dtype, "the added set", unit=self._scale)  # our own copy
        if x_new.abs().max() > _range_limit(x_new.dtype):
            raise InputError(
                f"the added set reaches |value| {x_new.abs().max().item() / self._scale:.3g}, far beyond the fitted rows "
                f"(largest |value| below {1 / self._scale:.3g}), so their squared distances overflow; fit again on all rows"
            )
        codes_new = None
        if self._codes is not None:
            if new.y is None:
                raise InputError("the added set needs labels: this KAIROS state was fitted with labels")
            codes_new = encode_labels(check_labels(new.y, x_new.shape[0], "the added labels"), self.classes_, "the added labels")

        old_with_new, _ = self._kernel_sums(self._x, self._codes, [(x_new, codes_new)], "KAIROS update")
        new_sums, ref_with_new = self._kernel_sums(
            x_new,
            codes_new,
            [(self._x, self._codes), (x_new, codes_new), (self._z, self._ref_codes)],
            "KAIROS update",
            label_mean=True,
            reference_columns=True,
        )
        self._row_sums = torch.cat([self._row_sums + old_with_new[:, 0], new_sums[:, 0] + new_sums[:, 1]])
        self._ref_sums = torch.cat([self._ref_sums, new_sums[:, 2]])
        self._ref_train_sums = self._ref_train_sums + ref_with_new
        if codes_new is not None:
            self._residuals = np.concatenate([self._residuals, self._label_residuals(x_new, codes_new, new_sums[:, 3:])])
            self._codes = np.concatenate([self._codes, codes_new])
        self._x = torch.cat([self._x, x_new])
        if self._names is not None:
            self._names = names
        elif new.names is not None:
            warnings.warn("the added rows' names are not kept: the fitted rows have none", DataworthWarning, stacklevel=2)
        self._publish({"add": time.perf_counter() - started})
        self._warn_if_kernel_is_constant()
        return self

    def term_values(self, term: str) -> np.ndarray:
        """``"combined"`` (``values_``), ``"feature"`` (``feature_values_``) or ``"label"`` (the negated
        label residual, so that higher is better as for every value)."""
        if term == "feature":
            return self.feature_values_
        if term == "label":
            if self.label_residuals_ is None:
                raise InputError(
                "the label term needs labels but the data has none (an .npz holds them as the array 'y'; an .npy holds "
                "features only); use the feature term"
            )
            return -self.label_residuals_
        return super().term_values(term)

    def describe_issues(self, threshold: float = 0.1) -> pd.DataFrame:
        """Say why each flagged row is bad: near-duplicate (of which row), label, feature outlier or
        out-of-distribution (:mod:`~dataworth.valuation.issue_types`).

        A row is flagged when the smaller of its two q-values (components ``feature_q``, ``label_q``) is
        ≤ ``threshold``, whatever the combination rule. Sets ``result_.issues`` and returns that table.
        Costs one nearest-neighbour search over the training rows (O(N (N + M) d), the GEMM tiles of the fit
        reduced by a minimum).
        """
        result = self._fitted_result()
        check_fraction(threshold, "threshold", open_interval=True)
        if not self._calibration:
            raise InputError("issue types compare rows with the reference rows' own scores: give at least 2 reference rows")
        (q_feature, z_feature), q_label = self._calibration["feature"], self._calibration.get("label", (None,))[0]
        n, m = self.n_train_, self._z.shape[0]
        if self._residuals is not None and q_label is None:
            warnings.warn(
                "no row can be typed a label issue: the logistic label model has no reference null (a class has a "
                "single reference row); add reference rows",
                DataworthWarning,
                stacklevel=2,
            )
        if m + 1 < 10 / threshold:
            warnings.warn(
                f"with {m} reference rows a q-value reaches {threshold:g} only for a group of more than "
                f"{n / ((m + 1) * threshold):.0f} rows that all lie beyond every reference row; add reference rows for finer evidence",
                DataworthWarning,
                stacklevel=2,
            )
        # Distances of the rescaled rows: only their ranks against the reference rows' enter.
        distances, indices = nearest_rows(self._x, self._x, skip_self=True, memory_budget=self.memory_budget)
        reference_distances, _ = nearest_rows(self._z, self._x, memory_budget=self.memory_budget)
        issues = assign_issue_types(
            q_feature if q_label is None else np.minimum(q_feature, q_label),
            q_feature=q_feature,
            q_label=q_label,
            z_feature=z_feature,
            neighbour_distance=distances.cpu().double().numpy(),
            neighbour_index=indices.cpu().numpy(),
            neighbour_null=reference_distances.cpu().double().numpy(),
            threshold=threshold,
        )
        self.result_ = replace(result, issues=issues)
        return issues

    # ------------------------------------------------------------------ state
    def save_state(self, path: str | os.PathLike) -> Path:
        """Write everything ``add`` needs to an ``.npz`` file (no pickle), atomically."""
        (path,) = write_together(self.state_files(path))
        return path

    def state_files(self, path: str | os.PathLike) -> dict[Path, Writer]:
        """The state file :meth:`save_state` writes, as ``{path: writer}`` for
        :func:`~dataworth.data.write_together` (so it can be written together with other outputs)."""
        self._fitted_result()
        path = check_output_path(path, "the state file", (".npz",))
        arrays: dict[str, np.ndarray] = {
            "format": np.array(_STATE_FORMAT),
            "version": np.array(_STATE_VERSION),
            "params": np.array(json.dumps(self.get_params())),
            "bandwidth": np.array(self.bandwidth_),
            "scale": np.array(self._scale),
            "x": self._x.cpu().numpy(),
            "z": self._z.cpu().numpy(),
            "row_sums": self._row_sums.cpu().numpy(),
            "ref_sums": self._ref_sums.cpu().numpy(),
            "ref_train_sums": self._ref_train_sums.cpu().numpy(),
            "ref_ref_sums": self._ref_ref_sums.cpu().numpy(),
        }
        if self.feature_names_ is not None:
            arrays["feature_names"] = np.array(self.feature_names_, dtype=str)
        if self.label_column_ is not None:
            arrays["label_column"] = np.array(self.label_column_)
        if self.id_column_ is not None:
            arrays["id_column"] = np.array(self.id_column_)
        if self._names is not None:
            arrays["names"] = _savable(self._names)
        if self._codes is not None:
            arrays |= {
                "classes": _savable(self.classes_),
                "codes": self._codes,
                "ref_codes": self._ref_codes,
                "residuals": self._residuals,
                **{f"label_model_{k}": v for k, v in self._label_params.items()},
            }
        if self._ref_residuals is not None:  # None: logistic model with a single reference row of a class
            arrays["ref_residuals"] = self._ref_residuals

        def write(tmp: Path) -> None:
            with open(tmp, "wb") as handle:
                np.savez(handle, **arrays)

        return {path: write}

    @classmethod
    def load_state(cls, path: str | os.PathLike, *, device: str | None = None) -> Kairos:
        """Rebuild a fitted estimator from :meth:`save_state`; ``device`` overrides the saved one.

        Reads this version's states and version 1's (written before the rows were rescaled: scale 1).
        A file that is not a complete, consistent KAIROS state is a :class:`FileFormatError`.
        """
        path = existing_file(path, "the state file", (".npz",))
        if read_npz_text(path, "format") != _STATE_FORMAT:
            raise FileFormatError(f"{path} is not a dataworth KAIROS state file (write one with --state-out or save_state)")
        try:
            with np.load(path, allow_pickle=False) as archive:
                arrays = {k: archive[k] for k in archive.files}
            missing = {"version", "params", "bandwidth", "x", "z", "row_sums", "ref_sums"} - set(arrays)
            if missing:
                raise FileFormatError(f"{path} is an incomplete KAIROS state file (no {', '.join(sorted(missing))}); write it again")
            version = arrays["version"]
            if version.shape != () or version.dtype.kind not in "iu" or int(version) not in _READABLE_VERSIONS:
                raise FileFormatError(f"{path} is a KAIROS state of version {version}; this dataworth reads {_READABLE_VERSIONS}")
            params = json.loads(arrays["params"].item())
            if device is not None:
                params["device"] = device
            est = cls(**params)
            est._validate_params()
            est._restore(arrays, resolve_device(params["device"]))
        except DataworthError:
            raise
        except (ValueError, TypeError, KeyError, IndexError, RuntimeError, OSError, EOFError, zipfile.BadZipFile) as exc:
            raise FileFormatError(f"{path} is a damaged KAIROS state file ({exc}); write it again") from None
        return est

    def _restore(self, arrays: dict[str, np.ndarray], device: torch.device) -> None:
        """Set the fitted state from the arrays of a state file, checking that they fit together."""
        n, m = len(arrays["x"]), len(arrays["z"])
        per_row = ("row_sums", "ref_sums", "codes", "residuals", "names")
        per_reference = ("ref_train_sums", "ref_ref_sums", "ref_residuals")
        wrong = [k for k in per_row if k in arrays and len(arrays[k]) != n]
        wrong += [k for k in per_reference if k in arrays and len(arrays[k]) != m]
        if wrong or arrays["x"].ndim != 2 or arrays["z"].shape[1:] != arrays["x"].shape[1:] or len(arrays.get("ref_codes", [0] * m)) != m:
            raise ValueError(f"arrays of mismatched shapes: {', '.join(wrong) or 'x, z or ref_codes'}")
        floats = {k: str(arrays[k].dtype) for k in ("x", "z")}
        if len(set(floats.values())) != 1 or arrays["x"].dtype not in (np.float32, np.float64):
            raise ValueError(f"rows of dtypes {floats}; both must be float32 or both float64")
        self.bandwidth_ = float(arrays["bandwidth"])
        self._scale = float(arrays["scale"]) if "scale" in arrays else 1.0
        self._x = torch.from_numpy(arrays["x"]).to(device)
        self._z = torch.from_numpy(arrays["z"]).to(device)
        self._kernel = self._make_kernel()
        self._row_sums = torch.from_numpy(arrays["row_sums"]).to(device)
        self._ref_sums = torch.from_numpy(arrays["ref_sums"]).to(device)
        self.feature_names_ = tuple(arrays["feature_names"].tolist()) if "feature_names" in arrays else None
        self.label_column_ = arrays["label_column"].item() if "label_column" in arrays else None
        self.id_column_ = arrays["id_column"].item() if "id_column" in arrays else None
        self._names = arrays.get("names")
        labelled = "codes" in arrays
        self.classes_ = arrays["classes"] if labelled else None
        self._codes = arrays["codes"] if labelled else None
        self._ref_codes = arrays["ref_codes"] if labelled else None
        self._residuals = arrays["residuals"] if labelled else None
        self._label_params = {
            k.removeprefix("label_model_"): torch.from_numpy(v).to(device) if k == "label_model_weights" else v
            for k, v in arrays.items()
            if k.startswith("label_model_")
        }
        if "ref_ref_sums" in arrays:
            self._ref_train_sums = torch.from_numpy(arrays["ref_train_sums"]).to(device)
            self._ref_ref_sums = torch.from_numpy(arrays["ref_ref_sums"]).to(device)
            self._ref_residuals = arrays.get("ref_residuals")
        else:  # a state written before version 3: compute its reference null now
            self._fit_label_model()
            self._ref_train_sums = self._kernel_sums(self._z, self._ref_codes, [(self._x, self._codes)], "KAIROS reference null")[0][:, 0]
            self._ref_ref_sums = self._kernel_sums(self._z, self._ref_codes, [(self._z, self._ref_codes)], "KAIROS reference null")[0][:, 0]
        if labelled and self._ref_residuals is None and self.combine == "calibrated":
            raise ValueError("a calibrated state without the reference rows' residuals")
        self._publish({})

    # ------------------------------------------------------------------ internals
    def _validate_params(self) -> None:
        check_choice(self.kernel, "kernel", tuple(KERNELS))
        check_choice(self.label_kernel, "label_kernel", LABEL_KERNELS)
        check_choice(self.label_model, "label_model", LABEL_MODELS)
        check_choice(self.combine, "combine", COMBINE_RULES)
        check_choice(self.precision, "precision", PRECISIONS)
        if self.bandwidth != "median":
            check_positive(self.bandwidth, "bandwidth")
        check_positive(self.bandwidth_scale, "bandwidth_scale")
        check_positive(self.label_ridge, "label_ridge")
        check_seed(self.seed)
        check_int(self.memory_budget, "memory_budget")
        check_fraction(self.feature_weight, "feature_weight")

    def _kernel_sums(
        self,
        rows: torch.Tensor,
        row_codes: np.ndarray | None,
        blocks: list[tuple[torch.Tensor, np.ndarray | None]],
        description: str,
        *,
        label_mean: bool = False,
        reference_columns: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Column j: Σ over the rows of block j of k(row, col), within one class for the indicator kernel.

        With ``label_mean`` the last block is the reference set and further columns hold the kernel
        label mean ``k(row, Z) W`` of the embedding label model; with the "none" label kernel it comes
        from the same pass over ``K(rows, Z)`` as the reference sums. A block whose tensor is ``rows``
        itself is computed from the upper triangle of the symmetric ``K(rows, rows)``. With
        ``reference_columns`` the second result holds, for every row of the last block, the sum of
        k(col, row) over ``rows`` (within its class), from the same tiles; otherwise it is ``None``.
        """
        mean_weights = self._label_params.get("weights") if label_mean else None
        fused = mean_weights is not None and self.label_kernel == "none"
        run = dict(memory_budget=self.memory_budget, progress=self.progress, description=description)

        def products(part: torch.Tensor, part_blocks: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor | None]:
            weighted = []
            for j, cols in enumerate(part_blocks):
                ones = torch.ones(cols.shape[0], 1, dtype=rows.dtype, device=rows.device)
                weighted.append((cols, torch.cat([ones, mean_weights], dim=1) if fused and j == len(part_blocks) - 1 else ones))
            if not reference_columns:
                return kernel_matmul(self._kernel, part, weighted, **run), None
            left = torch.ones(part.shape[0], 1, dtype=rows.dtype, device=rows.device)
            sums, transposed = kernel_matmul_both_ways(self._kernel, part, weighted, left, **run)
            return sums, transposed[-1][:, 0]

        if self.label_kernel == "none":
            return products(rows, [cols for cols, _ in blocks])
        out = torch.zeros(rows.shape[0], len(blocks), dtype=torch.float64, device=rows.device)
        last, last_codes = blocks[-1]
        columns = torch.zeros(last.shape[0], dtype=torch.float64, device=rows.device) if reference_columns else None
        for c in np.unique(row_codes):
            row_sel = torch.from_numpy(row_codes == c)
            class_rows = rows[row_sel]
            class_blocks = [class_rows if cols is rows else cols[torch.from_numpy(col_codes == c)] for cols, col_codes in blocks]
            out[row_sel], class_columns = products(class_rows, class_blocks)
            if columns is not None:
                columns[torch.from_numpy(last_codes == c)] = class_columns
        if mean_weights is not None:
            mean = kernel_matmul(self._kernel, rows, [(self._z, mean_weights)], memory_budget=self.memory_budget)
            out = torch.cat([out, mean], dim=1)
        return out, columns

    def _fit_label_model(self) -> None:
        """Fit the label model on the reference set, and the reference rows' out-of-sample residuals
        (the label term's null sample): closed-form leave-one-out for the embedding, 5-fold
        cross-fitting for the logistic model."""
        self._label_params: dict[str, Any] = {}
        self._ref_residuals = None
        if self._ref_codes is None:
            return
        onehot = _one_hot(self._ref_codes, len(self.classes_))
        if self.label_model == "embedding":
            gram = self._kernel.matrix(self._z, self._z)
            gram.diagonal().add_(self._z.shape[0] * self.label_ridge)
            targets = torch.from_numpy(onehot).to(device=gram.device, dtype=gram.dtype)
            weights = solve_spd_inplace(gram, targets, what="K_ZZ + M·label_ridge·I")
            self._label_params = {"weights": weights}
            # Kernel ridge leave-one-out with the ridge λ = Mα held fixed: y_l − f₋ₗ(z_l) = W_l / (A⁻¹)_ll.
            inverse_diagonal = inverse_diagonal_from_cholesky(gram.mT)
            self._ref_residuals = (weights / inverse_diagonal[:, None]).norm(dim=1).double().cpu().numpy()
            return
        if len(self.classes_) < 2:
            raise InputError("label_model='logistic' needs at least 2 classes in the reference set")
        features = self._z.cpu().double().numpy() / self._scale
        # One BLAS thread: the products are small, and OpenBLAS's idle threads would otherwise keep
        # spinning after the fit and slow the torch kernel pass that follows by ~15%.
        with threadpool_limits(limits=1, user_api="blas"):
            model = LogisticRegression(max_iter=2000).fit(features, self._ref_codes)
            self._label_params = {"coef": model.coef_, "intercept": model.intercept_}
            self._ref_residuals = self._cross_fitted_residuals(features, onehot)

    def _cross_fitted_residuals(self, features: np.ndarray, onehot: np.ndarray) -> np.ndarray | None:
        """||onehot(y_l) − p₋(z_l)|| with p₋ a logistic model fitted on the other folds (5, stratified,
        fewer when a class has fewer reference rows); ``None`` when a class has a single reference row."""
        folds = min(5, int(np.bincount(self._ref_codes, minlength=len(self.classes_)).min()))
        if folds < 2:
            return None
        probabilities = np.zeros_like(onehot)
        for train, held_out in StratifiedKFold(folds, shuffle=True, random_state=self.seed).split(features, self._ref_codes):
            model = LogisticRegression(max_iter=2000).fit(features[train], self._ref_codes[train])
            probabilities[np.ix_(held_out, model.classes_)] = model.predict_proba(features[held_out])
        return np.linalg.norm(onehot - probabilities, axis=1)

    def _label_residuals(self, x: torch.Tensor, codes: np.ndarray, kernel_mean: torch.Tensor) -> np.ndarray:
        """||onehot(y_i) − μ(x_i)||₂ with μ the fitted label model (``kernel_mean`` for the embedding)."""
        if self.label_model == "embedding":
            mean = kernel_mean.cpu().numpy()
        else:
            logits = x.cpu().double().numpy() / self._scale @ self._label_params["coef"].T + self._label_params["intercept"]
            if logits.shape[1] == 1:  # binary logistic regression: P(class 1) = sigmoid(logit)
                logits = np.concatenate([np.zeros_like(logits), logits], axis=1)
            mean = softmax(logits, axis=1)
        return np.linalg.norm(_one_hot(codes, len(self.classes_)) - mean, axis=1)

    def _make_kernel(self) -> Kernel:
        """The kernel on the rescaled rows (σ · scale); an :class:`InputError` when the bandwidth is so far
        from the data's scale that the kernel could only be 0 or 1 between rows."""
        sigma = self.bandwidth_ * self._scale
        limit = _range_limit(self._x.dtype)
        if not 1 / limit <= sigma <= limit:
            median = self._median_distance()
            raise InputError(
                f"the bandwidth {self.bandwidth_:.3g} is {self.bandwidth_ / median:.1e} times the median distance between "
                f"rows ({median:.3g}), so the kernel would be constant between rows; use bandwidth='median' (--bandwidth median)"
            )
        return make_kernel(self.kernel, sigma)

    def _median_distance(self) -> float:
        """The median distance between training rows, in the data's units."""
        return median_bandwidth(self._x, seed=self.seed) / self._scale

    def _warn_if_kernel_is_constant(self) -> None:
        """All feature terms equal means the kernel is numerically 0 or 1 between distinct rows: the
        bandwidth is far from the data's scale, and neither term ranks anything."""
        if self.n_train_ < 3 or np.ptp(self.feature_values_) > 0:
            return
        scale = self.bandwidth_ / self.bandwidth_scale if self.bandwidth == "median" else self._median_distance()
        side = "below" if self.bandwidth_ < scale else "above"
        warn_if_degenerate(
            self.feature_values_,
            "KAIROS feature",
            f"the kernel is constant between distinct rows because the bandwidth {self.bandwidth_:.3g} is far {side} the "
            f"median distance between rows ({scale:.3g}); use bandwidth='median' (--bandwidth median)",
        )

    def _publish(self, timings: dict[str, float]) -> None:
        """Recompute the per-row terms from the kept sums (O(N log N)) and set the fitted attributes."""
        n, m = self._x.shape[0], self._z.shape[0]
        row_sums, ref_sums = self._row_sums.cpu().numpy(), self._ref_sums.cpu().numpy()
        self.feature_values_ = loo_mmd_effect(row_sums / n, ref_sums / m, n_train=n)
        self.label_residuals_ = self._residuals
        self.reference_residuals_ = self._ref_residuals
        self.n_train_ = n
        components = {"feature": self.feature_values_}
        if self._residuals is not None:
            components["label_residual"] = self._residuals
        self._calibration = self._calibrate(row_sums, ref_sums) if m >= 2 else {}
        components |= {f"{term}_q": q for term, (q, _) in self._calibration.items()}
        if self._residuals is None:
            values = self.feature_values_
        elif self.combine == "calibrated":
            values = calibration.combine_q_values(*map(list, zip(*self._calibration.values(), strict=True)))
        else:
            values = combine_terms(self.feature_values_ * (n - 1), self._residuals, self.combine, self.feature_weight)
        params = {**self.get_params(), "bandwidth_value": self.bandwidth_, "n_reference": m}
        self.result_ = ValuationResult(
            values, self.method, params=params, timings=timings, components=components, names=self._names
        )

    def _calibrate(self, row_sums: np.ndarray, ref_sums: np.ndarray) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Per term: (Benjamini–Hochberg q-values, null z-scores oriented so that low is anomalous) of the
        training rows against the reference rows' out-of-sample scores (module docstring).

        The feature side has two statistics, the MMD witness (density in excess of the reference's: a
        cluster of duplicates, a backdoor, a group from another source) and the reference density
        ``b_i`` (no clean row nearby: an isolated outlier, which the witness misses as both densities
        vanish there); their p-values are merged by Bonferroni, ``2·min(p_witness, p_density)``.
        """
        n, m = len(row_sums), len(self._ref_ref_sums)
        ref_ref, ref_train = self._ref_ref_sums.cpu().numpy(), self._ref_train_sums.cpu().numpy()
        witness, witness_null = ref_sums / m - (row_sums - 1.0) / (n - 1), (ref_ref - 1.0) / (m - 1) - ref_train / n
        density, density_null = ref_sums / m, (ref_ref - 1.0) / (m - 1)
        p_feature = np.minimum(1.0, 2.0 * np.minimum(calibration.conformal_p_values(witness, witness_null, upper=False),
                                                     calibration.conformal_p_values(density, density_null, upper=False)))
        z_feature = np.minimum(calibration.null_z_scores(witness, witness_null), calibration.null_z_scores(density, density_null))
        out = {"feature": (p_feature, z_feature)}
        if self._residuals is not None and self._ref_residuals is not None:
            out["label"] = (calibration.conformal_p_values(self._residuals, self._ref_residuals, upper=True),
                            -calibration.null_z_scores(self._residuals, self._ref_residuals))
        return {term: (calibration.benjamini_hochberg(p), z) for term, (p, z) in out.items()}


def loo_mmd_effect(a: np.ndarray, b: np.ndarray, *, n_train: int) -> np.ndarray:
    """Exact ``MMD²(P, D∖{i}) − MMD²(P, D)`` from ``a_i`` and ``b_i`` (DESIGN.md §3), k(x, x) = 1."""
    s_qq, s_pq = a.mean(), b.mean()
    eps = -1.0 / (n_train - 1)
    return 2.0 * eps * (a - b - s_qq + s_pq) + eps**2 * (1.0 - 2.0 * a + s_qq)


def combine_terms(feature: np.ndarray, residual: np.ndarray, rule: str, feature_weight: float) -> np.ndarray:
    """Combine the feature term (higher = better; O(1)-scaled, see :class:`Kairos`) and the label residual
    (higher = worse) by ``rule``; the z-score rules are invariant to the feature term's scale."""
    if rule == "raw":
        return feature_weight * feature - (1.0 - feature_weight) * residual
    # Robust z-scores over the training rows themselves: median / 1.4826·MAD of the same values.
    zf, zr = calibration.null_z_scores(feature, feature), calibration.null_z_scores(residual, residual)
    if rule == "worst":
        return np.minimum(zf, -zr)
    return feature_weight * zf - (1.0 - feature_weight) * zr


def _range_limit(dtype: torch.dtype) -> float:
    """Rescaled rows have |value| < 1: bandwidths outside [1/limit, limit] and added rows beyond ``limit``
    are refused (the kernel would be exactly 0 or 1 between rows; squared distances, or 1/σ², would
    overflow). limit = (largest float)^(1/4): 4e9 in float32, 1e77 in float64."""
    return float(torch.finfo(dtype).max) ** 0.25


def _one_hot(codes: np.ndarray, n_classes: int) -> np.ndarray:
    return np.eye(n_classes)[codes]


def _savable(labels: np.ndarray) -> np.ndarray:
    """Labels as a numpy array that ``np.load(allow_pickle=False)`` can read back."""
    return labels.astype(str) if labels.dtype == object else labels

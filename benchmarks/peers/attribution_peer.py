"""Runs one peer library's TracIn or TRAK inside .venv-peers; called by our attribution benchmark (and by
benchmarks/peers/attribution_check.py).

    .venv-peers/bin/python benchmarks/peers/attribution_peer.py LIBRARY METHOD MODEL_DIR DATA.npz OUT_DIR [OPTIONS_JSON]

LIBRARY METHOD: ``traker trak``, ``dattri trak``, ``dattri tracin``, ``captum tracin``.

MODEL_DIR holds ``spec.json`` (an MLP as in influence_peer.py: ``sizes`` [d, h, ..., C], ``activation``, ``bias``,
``dtype``) and the weights (state dicts of ``nn.Sequential``: 0.weight, 0.bias, 2.weight, ...):

- TRAK: ``model_0.safetensors``, ``model_1.safetensors``, ... (the ensemble, all of them, in order), else
  ``model.safetensors`` (one model);
- TracIn: ``checkpoint_0.safetensors``, ... and ``learning_rates.json`` (a list, η_k per checkpoint), else
  ``model.safetensors`` with η = 1 (gradient similarity at one model).

DATA.npz holds X_train, y_train, X_test, y_test (features, integer label codes). OPTIONS_JSON (a JSON object):

- ``projection_dim``: k of the random projection. TRAK: absent = 2048 (ours and traker's default), ``null`` = none
  (traker: ``NoOpProjector``; dattri: ``proj_type="identity"``). TracIn: absent or ``null`` = exact products
  (dattri: ``proj_type="identity"``; captum's TracInCP has no projection and always computes them exactly).
- ``projection``: "rademacher" (default, as ours) or "normal"; ``seed`` (default 0): the projector's seed.
- ``regularization`` (TRAK; default 1e-3 as ours): relative ridge, λ_m = regularization × the mean squared norm of
  model m's training features *in the peer's own feature scale* (both peers divide gradients by √p, and traker's
  projection is unnormalized), i.e. our definition; ``lambda_reg``: an absolute λ in the peer's scale instead (one
  for all models, the peers' own way).
- ``batch_size`` (default 256): rows per batch handed to the peer; ``threads`` (default 1): torch threads.
- captum only: ``sample_wise_grads_per_batch`` (default true: the loss is cross-entropy with reduction "sum" and
  captum's per-layer hooks give per-sample gradients; false: reduction "none" and one backward pass per row).

OUT_DIR gets ``scores.npy`` (n_train × n_test, float64) **in our convention**: positive = the training row helps the
test row (TracIn: Σ_k η_k ∇ℓ(θ_k, z_i)·∇ℓ(θ_k, z'); TRAK: the margin's kernel times Q, positive = raises the target's
margin), transposed and sign-flipped where the peer differs, never rescaled; and ``result.json``: ``seconds`` (from
building the peer's object to having its scores in memory; imports and reading files excluded), ``sign_flipped``,
``transposed``, ``exact`` (no projection), ``notes`` (what the peer does differently: normalisations, precision,
projection, λ).

Conventions found (traker 0.3.2, dattri 0.3.0, captum 0.9.0):

- traker: scores n_train × n_test, positive = raises the target's margin (no flip, no transpose). It divides every
  gradient by √p, computes in float32 (``use_half_precision=False``; float16 otherwise), and divides each model's
  (ΦᵀΦ + λI)⁻¹ by the mean absolute value of its entries (``BasicScoreComputer.get_x_xtx_inv``): each model's
  kernel is scaled by c_m = 1/mean|(ΦᵀΦ + λI)⁻¹|, reported in ``notes`` (for one model a constant factor; for an
  ensemble a different weight per model). Its default λ is 0, which leaves ΦᵀΦ singular when k > n.
- dattri TRAK: scores n_train × n_test, positive = raises the margin (no flip, no transpose); gradients divided by
  √p, projections by √k (so ‖Pᵀg‖² ≈ ‖g‖²); one absolute ``regularization`` for every model; Q and the kernels
  averaged over models as in the paper.
- dattri TracIn: scores n_train × n_test, Σ_k w_k g_i·g' with the weights as given (learning rates, not normalised),
  positive = helps; it *always* projects (its default ``proj_dim`` 512, Gaussian) unless ``proj_type="identity"``;
  scores accumulate in float32.
- captum TracInCP: scores n_test × n_train (transposed here), Σ_k η_k g_i·g' with η_k the value
  ``checkpoints_load_func`` returns, positive = helps; exact (no projection).
"""

from __future__ import annotations

import json
import re
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from influence_peer import architecture  # noqa: E402  (one builder of the spec's model for both peer runners)

warnings.filterwarnings("ignore")

DEFAULT_TRAK_DIM = 2048
METHODS = {("traker", "trak"), ("dattri", "trak"), ("dattri", "tracin"), ("captum", "tracin")}


# -- model and data ---------------------------------------------------------------------------------------

def numbered(model_dir: Path, stem: str) -> list[Path]:
    found = [(int(m.group(1)), p) for p in model_dir.glob(f"{stem}_*.safetensors") if (m := re.fullmatch(rf"{stem}_(\d+)\.safetensors", p.name))]
    found.sort()
    if [i for i, _ in found] != list(range(len(found))):
        raise SystemExit(f"{model_dir}: {stem}_*.safetensors are not numbered 0, 1, 2, ...: {[p.name for _, p in found]}")
    return [p for _, p in found]


def weight_files(model_dir: Path, method: str) -> tuple[list[Path], list[float]]:
    """TRAK: the ensemble's files; TracIn: the checkpoints' files and η_k (see the module doc)."""
    if method == "trak":
        files = numbered(model_dir, "model") or [model_dir / "model.safetensors"]
        return files, [1.0] * len(files)
    files = numbered(model_dir, "checkpoint")
    if not files:
        return [model_dir / "model.safetensors"], [1.0]
    rates = [float(r) for r in json.loads((model_dir / "learning_rates.json").read_text())]
    if len(rates) != len(files):
        raise SystemExit(f"{len(files)} checkpoints but {len(rates)} learning rates in learning_rates.json")
    return files, rates


def margin_of(logits, labels):
    """TRAK's margin log(p_y/(1 − p_y)) = f_y − logsumexp_{c≠y} f_c, per row (traker's and our definition)."""
    import torch

    correct = logits.gather(1, labels.reshape(-1, 1)).squeeze(1)
    others = logits.scatter(1, labels.reshape(-1, 1), float("-inf"))
    return correct - torch.logsumexp(others, dim=1)


def batches(X, y, size):
    for lo in range(0, len(X), size):
        yield X[lo:lo + size], y[lo:lo + size]


# -- traker 0.3.2 ------------------------------------------------------------------------------------------

def traker_trak(model, dtype, files, rates, data, options):
    import logging

    import torch
    from safetensors.torch import load_file
    from trak import TRAKer
    from trak.modelout_functions import ImageClassificationModelOutput
    from trak.projectors import BasicProjector, NoOpProjector, ProjectionType

    states = [load_file(str(f)) for f in files]
    X, y, Xt, yt = data["X_train"], data["y_train"], data["X_test"], data["y_test"]
    n, m, size = len(X), len(Xt), int(options.get("batch_size", 256))
    p = sum(q.numel() for q in model.parameters())
    k = options.get("projection_dim", DEFAULT_TRAK_DIM)
    seed = int(options.get("seed", 0))
    kind = {"rademacher": ProjectionType.rademacher, "normal": ProjectionType.normal}[options.get("projection", "rademacher")]
    notes = {
        "precision": f"model and gradients in {str(dtype).removeprefix('torch.')}; traker projects, stores and solves in float32 "
                     "(use_half_precision=False)",
        "normalisation": "gradients / sqrt(p) (cancels but for λ's scale); each model's (ΦᵀΦ + λI)⁻¹ divided by the mean |entry| "
                         "(BasicScoreComputer): model m's kernel scaled by c_m (traker_scale_per_model)",
        "output": "ImageClassificationModelOutput: the correct-class margin; Q = 1 − p (softmax, temperature 1)",
    }
    lams: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        if k is None:
            projector = NoOpProjector(grad_dim=p, proj_dim=0, seed=seed, device="cpu")
            notes["projection"] = f"none (NoOpProjector): the {p} gradient coordinates"
        else:
            projector = BasicProjector(grad_dim=p, proj_dim=int(k), seed=seed, proj_type=kind, device="cpu", dtype=torch.float32)
            notes["projection"] = f"BasicProjector {kind.value} ±1/N(0,1) entries (unnormalised), k = {k}, seed {seed} (+1e5 per model id)"
        # a fresh, empty save_dir: nothing to reuse (load_from_save_dir=False is broken in 0.3.2: the saver then never
        # writes experiments.json and start_scoring_checkpoint fails reading it)
        traker = TRAKer(model=model, task=ImageClassificationModelOutput(), train_set_size=n, save_dir=str(Path(tmp) / "trak"),
                        load_from_save_dir=True, device="cpu", projector=projector, use_half_precision=False,
                        logging_level=logging.WARNING, projector_seed=seed, lambda_reg=float(options.get("lambda_reg", 0.0)))
        if "lambda_reg" not in options:
            # λ_m from the ΦᵀΦ traker forms for model m (trace = Σ_i ||Φ_i||²), set just before it solves with it:
            # finalize_features calls get_xtx then get_x_xtx_inv (which reads lambda_reg) model by model
            computer, relative = traker.score_computer, float(options.get("regularization", 1e-3))
            get_xtx = computer.get_xtx

            def get_xtx_setting_lambda(grads):
                xtx = get_xtx(grads)
                computer.lambda_reg = relative * float(torch.diagonal(xtx).double().sum()) / n
                return xtx

            computer.get_xtx = get_xtx_setting_lambda
        solve = traker.score_computer.get_x_xtx_inv

        def solve_recording_lambda(grads, xtx):
            lams.append(float(traker.score_computer.lambda_reg))
            return solve(grads, xtx)

        traker.score_computer.get_x_xtx_inv = solve_recording_lambda
        for model_id, state in enumerate(states):
            traker.load_checkpoint(state, model_id=model_id)
            for inputs, labels in batches(X, y, size):
                traker.featurize(batch=(inputs, labels), num_samples=len(inputs))
        traker.finalize_features()  # every model id, in order
        workaround = False
        for model_id, state in enumerate(states):
            traker.start_scoring_checkpoint(exp_name="targets", checkpoint=state, model_id=model_id, num_targets=m)
            if isinstance(projector, BasicProjector) and projector.num_blocks == 1 and not projector.proj_matrix_available \
                    and projector.model_id == model_id:
                # finalize_features frees the matrix; BasicProjector regenerates it only when the model id changes
                projector.generate_sketch_matrix(projector.generator_states[0])
                workaround = True
            for inputs, labels in batches(Xt, yt, size):
                traker.score(batch=(inputs, labels), num_samples=len(inputs))
        scores = np.array(traker.finalize_scores(exp_name="targets"), dtype=np.float64)  # n × m
        seconds = time.perf_counter() - start
        # after the clock: the per-model factors traker applied, from its own stored features
        factors = []
        for model_id, lam in enumerate(lams):
            traker.saver.load_current_store(model_id)
            grads = torch.as_tensor(np.asarray(traker.saver.current_store["grads"]), dtype=torch.float32)
            xtx = grads.T @ grads + lam * torch.eye(grads.shape[1])
            factors.append(1.0 / float(torch.linalg.inv(xtx).abs().mean()))
    if workaround:
        notes["workaround"] = ("BasicProjector with one block (k <= 100) loses its matrix in finalize_features and scores with the "
                               "same model id: regenerated it from its own seed before scoring")
    notes["lambda"] = (f"lambda_reg = {lams[0]:.4g} (given, absolute)" if "lambda_reg" in options else
                       f"λ_m = {options.get('regularization', 1e-3):g} × mean ||Φ_m,i||² of traker's own features (the trace of the "
                       "ΦᵀΦ it forms / n), per model: score_computer.lambda_reg set between its get_xtx and get_x_xtx_inv")
    notes["lambda_per_model"] = lams
    notes["traker_scale_per_model"] = factors
    return scores, seconds, {"sign_flipped": False, "transposed": False, "exact": k is None, "projection_dim": k, "notes": notes}


# -- dattri 0.3.0 ------------------------------------------------------------------------------------------

def projector_kwargs(options, p, default_dim):
    k = options.get("projection_dim", default_dim)
    if k is None:
        return None, {"proj_dim": p, "proj_type": "identity", "proj_seed": 0, "proj_max_batch_size": 32, "device": "cpu"}
    return int(k), {"proj_dim": int(k), "proj_type": options.get("projection", "rademacher"), "proj_seed": int(options.get("seed", 0)),
                    "proj_max_batch_size": 32, "device": "cpu"}


def dattri_trak(model, dtype, files, rates, data, options):
    import dattri.algorithm.trak as dattri_trak_module
    import torch
    from dattri.algorithm.trak import TRAKAttributor
    from dattri.task import AttributionTask
    from safetensors.torch import load_file
    from torch.utils.data import DataLoader, TensorDataset

    states = [load_file(str(f)) for f in files]
    size = int(options.get("batch_size", 256))
    p = sum(q.numel() for q in model.parameters())
    k, kwargs = projector_kwargs(options, p, DEFAULT_TRAK_DIM)
    train = DataLoader(TensorDataset(data["X_train"], data["y_train"]), batch_size=size, shuffle=False)
    test = DataLoader(TensorDataset(data["X_test"], data["y_test"]), batch_size=size, shuffle=False)

    def margin(params, row):  # one row (dattri vmaps over the batch)
        inputs, label = row
        return margin_of(torch.func.functional_call(model, params, (inputs.unsqueeze(0),)), label.reshape(1)).sum()

    def correct_probability(params, row):
        inputs, label = row
        logits = torch.func.functional_call(model, params, (inputs.unsqueeze(0),))
        return torch.softmax(logits, dim=-1).gather(1, label.reshape(1, 1)).squeeze()

    notes = {
        "precision": f"{str(dtype).removeprefix('torch.')} throughout (the projector takes the gradients' dtype)",
        "normalisation": "gradients / sqrt(p), projections / sqrt(k) (both cancel but for λ's scale); kernels and Q averaged over models",
        "projection": f"none (proj_type='identity'): the {p} gradient coordinates" if k is None else
                      f"dattri BasicProjector {kwargs['proj_type']}, k = {k}, seed {kwargs['proj_seed']} (+1e5 per checkpoint)",
    }
    per_model = "lambda_reg" not in options
    sums: dict[int, float] = {}
    counts: dict[int, int] = {}
    state = {"recording": False, "last": 0}
    original_project = dattri_trak_module.random_project
    if per_model:
        # λ_m from the features dattri itself projects for model m: an observer around its random_project (outputs
        # unchanged) sums their squared norms while cache() runs, and λ is read right after each model's features
        def observed_project(feature, batch_size, **kw):
            project = original_project(feature, batch_size, **kw)

            def run(grads, ensemble_id=0):
                out = project(grads, ensemble_id=ensemble_id)
                if state["recording"]:
                    sums[ensemble_id] = sums.get(ensemble_id, 0.0) + float(out.detach().double().pow(2).sum())
                    counts[ensemble_id] = counts.get(ensemble_id, 0) + out.shape[0]
                    state["last"] = ensemble_id
                return out

            return run

        relative = float(options.get("regularization", 1e-3))
        used: dict[int, float] = {}

        class PerModelRidge(TRAKAttributor):
            @property
            def regularization(self):
                m = state["last"]
                used[m] = relative * sums[m] / counts[m]
                return used[m]

            @regularization.setter
            def regularization(self, value):
                pass

        attributor_class = PerModelRidge
        dattri_trak_module.random_project = observed_project
    else:
        attributor_class = TRAKAttributor
    try:
        start = time.perf_counter()
        task = AttributionTask(loss_func=margin, model=model, checkpoints=states)
        attributor = attributor_class(task, correct_probability_func=correct_probability, projector_kwargs=kwargs, device="cpu",
                                      regularization=float(options.get("lambda_reg", 0.0)))
        state["recording"] = True
        attributor.cache(train)
        state["recording"] = False
        scores = attributor.attribute(test)  # n × m
        seconds = time.perf_counter() - start
    finally:
        dattri_trak_module.random_project = original_project
    if per_model:
        notes["lambda"] = (f"λ_m = {options.get('regularization', 1e-3):g} × mean ||Φ_m,i||² of dattri's own features, per model: dattri "
                           "takes one absolute regularization, so a property hands it λ_m when it forms model m's kernel")
        notes["lambda_per_model"] = [used[i] for i in sorted(used)]
    else:
        notes["lambda"] = f"regularization = {options['lambda_reg']:g} (given, absolute, all models)"
    return scores.detach().double().numpy(), seconds, {"sign_flipped": False, "transposed": False, "exact": k is None,
                                                      "projection_dim": k, "notes": notes}


def dattri_tracin(model, dtype, files, rates, data, options):
    import torch
    import torch.nn.functional as F
    from dattri.algorithm.tracin import TracInAttributor
    from dattri.task import AttributionTask
    from safetensors.torch import load_file
    from torch.utils.data import DataLoader, TensorDataset

    states = [load_file(str(f)) for f in files]
    size = int(options.get("batch_size", 256))
    p = sum(q.numel() for q in model.parameters())
    k, kwargs = projector_kwargs(options, p, None)
    train = DataLoader(TensorDataset(data["X_train"], data["y_train"]), batch_size=size, shuffle=False)
    test = DataLoader(TensorDataset(data["X_test"], data["y_test"]), batch_size=size, shuffle=False)

    def loss(params, row):  # one row's cross-entropy (dattri vmaps over the batch)
        inputs, label = row
        return F.cross_entropy(torch.func.functional_call(model, params, (inputs.unsqueeze(0),)), label.reshape(1))

    start = time.perf_counter()
    task = AttributionTask(loss_func=loss, model=model, checkpoints=states)
    attributor = TracInAttributor(task, weight_list=torch.tensor(rates, dtype=torch.float64), normalized_grad=False,
                                  projector_kwargs=kwargs, device="cpu")
    scores = attributor.attribute(train, test)  # n × m, float32
    seconds = time.perf_counter() - start
    notes = {
        "weights": f"weight_list = the learning rates {rates} as given (dattri multiplies each checkpoint's products by its weight; "
                   "no normalisation)",
        "projection": "none (proj_type='identity'; dattri's TracIn otherwise always projects, default 512-dim Gaussian)" if k is None else
                      f"dattri BasicProjector {kwargs['proj_type']}, k = {k}, seed {kwargs['proj_seed']} (+1e5 per checkpoint), entries / sqrt(k)",
        "precision": f"gradients in {str(dtype).removeprefix('torch.')}; dattri accumulates the scores in float32",
        "loss": "per-row cross-entropy on both sides",
    }
    return scores.detach().double().numpy(), seconds, {"sign_flipped": False, "transposed": False, "exact": k is None,
                                                      "projection_dim": k, "notes": notes}


# -- captum 0.9.0 ------------------------------------------------------------------------------------------

def captum_tracin(model, dtype, files, rates, data, options):
    from captum.influence import TracInCP
    from safetensors.torch import load_file
    from torch import nn
    from torch.utils.data import TensorDataset

    size = int(options.get("batch_size", 256))
    sample_wise = bool(options.get("sample_wise_grads_per_batch", True))
    rate_of = {str(f): r for f, r in zip(files, rates, strict=True)}

    def load(net, path):  # captum weights each checkpoint by what this returns
        net.load_state_dict(load_file(path))
        net.eval()
        return rate_of[path]

    start = time.perf_counter()
    tracin = TracInCP(model, TensorDataset(data["X_train"], data["y_train"]), checkpoints=list(rate_of), checkpoints_load_func=load,
                      loss_fn=nn.CrossEntropyLoss(reduction="sum" if sample_wise else "none"), batch_size=size,
                      sample_wise_grads_per_batch=sample_wise)
    scores = tracin.influence((data["X_test"], data["y_test"]), show_progress=False)  # m × n
    seconds = time.perf_counter() - start
    notes = {
        "weights": f"checkpoints_load_func returns η_k = {rates}; captum multiplies each checkpoint's products by it",
        "gradients": "sample_wise_grads_per_batch=True: CrossEntropyLoss(reduction='sum') and captum's Linear-layer hooks give "
                     "per-row gradients" if sample_wise else
                     "sample_wise_grads_per_batch=False: CrossEntropyLoss(reduction='none'), one backward pass per row",
        "projection": "none: TracInCP has no random projection (TracInCPFastRandProj projects last-layer gradients only)"
                      + ("; projection_dim ignored" if options.get("projection_dim") is not None else ""),
        "precision": f"{str(dtype).removeprefix('torch.')} throughout",
        "timing": "includes captum loading each checkpoint's safetensors (it loads them inside influence())",
    }
    return scores.detach().double().numpy().T, seconds, {"sign_flipped": False, "transposed": True, "exact": True,
                                                        "projection_dim": None, "notes": notes}


RUNNERS = {("traker", "trak"): traker_trak, ("dattri", "trak"): dattri_trak, ("dattri", "tracin"): dattri_tracin,
           ("captum", "tracin"): captum_tracin}


def main() -> None:
    if len(sys.argv) not in (6, 7):
        raise SystemExit(__doc__.split("\n\n")[1])
    library, method, model_dir, data_path, out_dir = sys.argv[1:6]
    options = json.loads(sys.argv[6]) if len(sys.argv) > 6 else {}
    if (library, method) not in RUNNERS:
        raise SystemExit(f"no {library} {method} here; one of: {', '.join(' '.join(pair) for pair in sorted(RUNNERS))}")
    import torch

    torch.set_num_threads(int(options.get("threads", 1)))
    model_dir = Path(model_dir)
    model, dtype = architecture(model_dir)
    files, rates = weight_files(model_dir, method)
    with np.load(data_path, allow_pickle=False) as archive:
        data = {
            "X_train": torch.as_tensor(archive["X_train"]).to(dtype),
            "y_train": torch.as_tensor(archive["y_train"]).long(),
            "X_test": torch.as_tensor(archive["X_test"]).to(dtype),
            "y_test": torch.as_tensor(archive["y_test"]).long(),
        }
    scores, seconds, info = RUNNERS[library, method](model, dtype, files, rates, data, options)
    expected = (len(data["X_train"]), len(data["X_test"]))
    if scores.shape != expected:
        raise SystemExit(f"{library} {method} returned scores of shape {scores.shape}, expected {expected}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    np.save(out / "scores.npy", np.ascontiguousarray(scores, dtype=np.float64))
    result = {"seconds": seconds, "library": library, "method": method, "models": len(files), **info}
    (out / "result.json").write_text(json.dumps(result, indent=1, default=str))


if __name__ == "__main__":
    main()

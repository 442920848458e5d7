"""Runs one peer library's influence function inside .venv-peers; called by benchmarks/influence_peers.py.

    .venv-peers/bin/python benchmarks/peers/influence_peer.py LIBRARY SOLVER MODEL_DIR DATA.npz OUT_DIR [OPTIONS_JSON]

MODEL_DIR holds ``spec.json`` (an MLP: ``sizes`` [d, h, ..., C], ``activation``, ``bias``, ``dtype``) and
``model.safetensors`` (its state dict, keys of ``nn.Sequential``: 0.weight, 0.bias, 2.weight, ...). DATA.npz
holds X_train, y_train, X_test, y_test. OPTIONS_JSON (a JSON object) carries the solver's settings, in the
peer's own terms (the caller translates damping and scale into them). OUT_DIR gets ``scores.npy``
(n_train × n_test, float64, **as the peer reports them**: its own sign and scale, transposed to train × test
where the peer returns test × train) and ``result.json`` (``seconds``: the influence computation only, from
building the peer's object to having the scores in memory, without imports or loading the model and data;
plus notes). One thread (``torch.set_num_threads(1)``) unless OPTIONS_JSON sets ``threads``.

The loss is the mean cross-entropy over a batch for dattri and pyDVL (so their curvature is that of the mean
training loss, the regularization term plays the part of λ + δ) and the summed cross-entropy for Kronfluence
(its factors are divided by the number of rows themselves).
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

warnings.filterwarnings("ignore")


def architecture(model_dir: Path):
    """The spec's nn.Sequential (Linear, activation, ..., Linear) in its dtype, in eval mode, weights not loaded."""
    import torch
    from torch import nn

    spec = json.loads((model_dir / "spec.json").read_text())
    dtype = getattr(torch, spec.get("dtype", "float32"))
    activation = {"tanh": nn.Tanh, "relu": nn.ReLU}[spec.get("activation", "tanh")]
    sizes = spec["sizes"]
    layers: list[nn.Module] = []
    for index, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        layers.append(nn.Linear(fan_in, fan_out, bias=spec.get("bias", True)))
        if index < len(sizes) - 2:
            layers.append(activation())
    return nn.Sequential(*layers).to(dtype).eval(), dtype


def build_model(model_dir: Path):
    """The spec's model with the weights of model.safetensors, and its dtype."""
    from safetensors.torch import load_file

    model, dtype = architecture(model_dir)
    model.load_state_dict(load_file(str(model_dir / "model.safetensors")))
    return model.eval(), dtype


def mean_loss(model):
    """dattri's loss: a function of (flattened) parameters and a (inputs, labels) batch; mean cross-entropy."""
    import torch
    import torch.nn.functional as F

    def loss(params, data):
        inputs, labels = data
        return F.cross_entropy(torch.func.functional_call(model, params, (inputs,)), labels.long())

    return loss


# -- dattri 0.3 ----------------------------------------------------------------------------------------

def dattri_run(solver, model, data, options):
    from dattri.algorithm import influence_function as IF
    from dattri.task import AttributionTask
    from torch.utils.data import DataLoader, TensorDataset

    train, test = TensorDataset(data["X_train"], data["y_train"]), TensorDataset(data["X_test"], data["y_test"])
    n, m = len(train), len(test)
    # dattri adds up the inverse-curvature products of each batch of the cached loader (the curvature of one
    # batch each), so the cached loader is one batch: the curvature of all n rows. attribute() recomputes the
    # test side for every training batch, so the training loader is one batch too (and the test loader).
    full = DataLoader(train, batch_size=n, shuffle=False)
    test_loader = DataLoader(test, batch_size=m, shuffle=False)
    notes = {}
    start = time.perf_counter()
    if solver == "ekfac":
        if options.get("fix_eigenvectors") or options.get("fix_bias_layout"):
            notes["patched"] = _patch_dattri_ekfac(bool(options.get("fix_eigenvectors")), bool(options.get("fix_bias_layout")))
        task = AttributionTask(loss_func=mean_loss(model), model=model, checkpoints=model.state_dict())
        attributor = IF.IFAttributorEKFAC(task, damping=options["damping"])
        attributor.cache(full)
    else:
        task = AttributionTask(loss_func=mean_loss(model), model=model, checkpoints=model.state_dict())
        if solver == "cg":
            attributor = IF.IFAttributorCG(task, max_iter=options["max_iter"], regularization=options["regularization"],
                                           mode=options.get("mode", "rev-rev"))
        elif solver == "lissa":
            attributor = IF.IFAttributorLiSSA(task, batch_size=options["batch_size"], num_repeat=1,
                                              recursion_depth=options["depth"], damping=options["damping"],
                                              scaling=options["scale"], mode=options.get("mode", "rev-rev"))
        elif solver == "arnoldi":
            attributor = IF.IFAttributorArnoldi(task, proj_dim=options["rank"], max_iter=options["max_iter"],
                                                regularization=options["regularization"], seed=options.get("seed", 0))
        elif solver == "explicit":
            attributor = IF.IFAttributorExplicit(task, regularization=options["regularization"])
        else:
            raise SystemExit(f"dattri has no solver {solver!r} here")
        attributor.cache(full)
    scores = attributor.attribute(full, test_loader)  # n_train × n_test
    seconds = time.perf_counter() - start
    return scores.detach().double().numpy(), seconds, notes


def _patch_dattri_ekfac(eigenvectors: bool, bias_layout: bool) -> str:
    """Diagnostics only: undo two slips of dattri 0.3's EK-FAC, to show what its disagreement comes from.

    - eigenvectors: ``torch.linalg.eigh`` returns Q with the eigenvectors as *columns*; dattri rotates with
      ``q_s @ G @ q_a.T`` (= Q_S G Q_Aᵀ) where the eigenbasis is Q_Sᵀ G Q_A, both when refitting the eigenvalues
      (func/fisher.py ``_update_lambda``) and when solving. Handing it Qᵀ in place of Q makes both right.
    - bias layout: ``transform_test_rep`` builds a layer's [W | b] as ``cat([W.flatten(1), b.flatten(1)]).reshape(
      -1, out, in + 1)``, which shifts every row of W (row o gets o entries of the next row); the factors were
      fitted on [W | b] with the bias as the last column.
    """
    import dattri.func.fisher as fisher
    import torch
    from dattri.algorithm import influence_function as IF

    done = []
    if eigenvectors:
        original = fisher.estimate_eigenvector
        fisher.estimate_eigenvector = lambda cov: {k: (a.T, s.T) for k, (a, s) in original(cov).items()}
        done.append("eigenvectors transposed")
    if bias_layout:
        def transform_test_rep(self, ckpt_idx, test_rep):
            params = {k: p for k, p in self.task.model.named_parameters() if p.requires_grad}
            parts, start = {}, 0
            for name in self.layer_name:
                size = params[name].numel()
                parts[name] = test_rep[:, start:start + size].reshape(-1, *params[name].shape)
                start += size
            out = []
            for name in self.module_name:
                has_bias = self.name_to_module[name].bias is not None
                v = parts[name + ".weight"]
                if has_bias:
                    v = torch.cat([v, parts[name + ".bias"].unsqueeze(-1)], dim=-1)
                q_a, q_s = self.cached_q[name]
                r = q_s.T @ ((q_s @ v @ q_a.T) / (self.cached_lambdas[name] + self.damping)) @ q_a
                out.append(torch.cat([r[..., :-1].flatten(1), r[..., -1]], dim=1) if has_bias else r.flatten(1))
            return torch.cat(out, dim=1)

        IF.IFAttributorEKFAC.transform_test_rep = transform_test_rep
        done.append("[W, b] layout of the test side fixed")
    return "; ".join(done)


# -- Kronfluence 1.0 -----------------------------------------------------------------------------------

def kronfluence_run(solver, model, data, options):
    import torch
    import torch.nn.functional as F
    from kronfluence.analyzer import Analyzer, prepare_model
    from kronfluence.arguments import FactorArguments, ScoreArguments
    from kronfluence.task import Task
    from torch.utils.data import TensorDataset

    if solver not in ("ekfac", "kfac"):
        raise SystemExit(f"Kronfluence has no solver {solver!r} (only K-FAC-type and diagonal/identity)")

    class Classification(Task):
        """Rows are (inputs, labels, Fisher labels); the Fisher labels are the caller's when it gave them
        (``y_fisher`` in DATA.npz: the same draws as ours, so both estimate the Fisher from the same sample)."""

        def compute_train_loss(self, batch, model, sample=False):
            inputs, labels, fisher_labels = batch
            logits = model(inputs)
            if sample:  # the true Fisher: labels drawn from the model's own predictive distribution
                if shared:
                    labels = fisher_labels
                else:
                    with torch.no_grad():
                        labels = torch.multinomial(torch.softmax(logits.detach(), -1), 1).flatten()
            return F.cross_entropy(logits, labels, reduction="sum")

        def compute_measurement(self, batch, model):
            inputs, labels, _ = batch
            return F.cross_entropy(model(inputs), labels, reduction="sum")

    torch.manual_seed(options.get("seed", 0))
    shared = "y_fisher" in data and not options.get("own_labels")
    fisher_labels = data["y_fisher"] if "y_fisher" in data else data["y_train"]
    train = TensorDataset(data["X_train"], data["y_train"], fisher_labels)
    test = TensorDataset(data["X_test"], data["y_test"], data["y_test"])
    batch = options.get("batch_size", 512)
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        task = Classification()
        prepared = prepare_model(model, task)
        analyzer = Analyzer(analysis_name="peer", model=prepared, task=task, cpu=True, output_dir=tmp, disable_tqdm=True)
        factor_args = FactorArguments(strategy=solver, use_empirical_fisher=bool(options.get("empirical", False)))
        analyzer.fit_all_factors(factors_name=solver, dataset=train, per_device_batch_size=batch, factor_args=factor_args,
                                 overwrite_output_dir=True)
        score_args = ScoreArguments(damping_factor=options["damping"])
        analyzer.compute_pairwise_scores(scores_name="scores", factors_name=solver, query_dataset=test, train_dataset=train,
                                         per_device_query_batch_size=len(test), per_device_train_batch_size=batch,
                                         score_args=score_args, overwrite_output_dir=True)
        scores = analyzer.load_pairwise_scores("scores")["all_modules"]  # n_test × n_train
        seconds = time.perf_counter() - start
    return scores.T.double().numpy(), seconds, {"fisher_labels": "true labels (empirical Fisher)" if factor_args.use_empirical_fisher
                                               else "shared with ours" if shared else "its own draws"}


# -- pyDVL 0.10 ----------------------------------------------------------------------------------------

def pydvl_run(solver, model, data, options):
    import torch
    import torch.nn.functional as F
    from pydvl.influence.torch import ArnoldiInfluence, CgInfluence, DirectInfluence, EkfacInfluence, LissaInfluence
    from torch.utils.data import DataLoader, TensorDataset

    train = TensorDataset(data["X_train"], data["y_train"])
    n = len(train)
    loader = DataLoader(train, batch_size=options.get("batch_size", n), shuffle=False)
    reg = options.get("regularization")
    start = time.perf_counter()
    if solver == "ekfac":
        influence = EkfacInfluence(model, update_diagonal=True, hessian_regularization=options["damping"])
    elif solver == "cg":
        influence = CgInfluence(model, F.cross_entropy, regularization=reg, rtol=options["rtol"], atol=options.get("atol", 0.0),
                                maxiter=options.get("max_iter"), solve_simultaneously=True, warn_on_max_iteration=False)
    elif solver == "lissa":
        influence = LissaInfluence(model, F.cross_entropy, regularization=reg, maxiter=options["depth"], dampen=0.0,
                                   scale=options["scale"], rtol=0.0, warn_on_max_iteration=False)
    elif solver == "arnoldi":
        influence = ArnoldiInfluence(model, F.cross_entropy, regularization=reg, rank=options["rank"],
                                     krylov_dimension=options.get("krylov_dimension"))
    elif solver == "explicit":
        from pydvl.influence.torch import SecondOrderMode

        mode = SecondOrderMode.GAUSS_NEWTON if options.get("second_order_mode") == "gauss_newton" else SecondOrderMode.HESSIAN
        influence = DirectInfluence(model, F.cross_entropy, regularization=reg, second_order_mode=mode)
    else:
        raise SystemExit(f"pyDVL has no solver {solver!r} here")
    influence = influence.fit(loader)
    # H⁻¹∇ℓ_test once, then the training rows in chunks (influences() on all n rows at once held 17 GB here)
    factors = influence.influence_factors(data["X_test"], data["y_test"]).detach()
    chunk = options.get("score_chunk", 1000)
    scores = torch.cat([influence.influences_from_factors(factors, data["X_train"][lo:lo + chunk], data["y_train"][lo:lo + chunk]).detach()
                        for lo in range(0, n, chunk)], dim=1)  # n_test × n_train
    seconds = time.perf_counter() - start
    return scores.T.double().numpy(), seconds, {}


RUNNERS = {"dattri": dattri_run, "kronfluence": kronfluence_run, "pydvl": pydvl_run}


def main() -> None:
    library, solver, model_dir, data_path, out_dir = sys.argv[1:6]
    options = json.loads(sys.argv[6]) if len(sys.argv) > 6 else {}
    import torch

    torch.set_num_threads(int(options.get("threads", 1)))
    model, dtype = build_model(Path(model_dir))
    with np.load(data_path, allow_pickle=False) as archive:
        data = {
            "X_train": torch.as_tensor(archive["X_train"]).to(dtype),
            "y_train": torch.as_tensor(archive["y_train"]).long(),
            "X_test": torch.as_tensor(archive["X_test"]).to(dtype),
            "y_test": torch.as_tensor(archive["y_test"]).long(),
        }
        if "y_fisher" in archive.files:
            data["y_fisher"] = torch.as_tensor(archive["y_fisher"]).long()
    scores, seconds, notes = RUNNERS[library](solver, model, data, options)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    np.save(out / "scores.npy", scores)
    (out / "result.json").write_text(json.dumps({"seconds": seconds, "library": library, "solver": solver, **notes}))


if __name__ == "__main__":
    main()

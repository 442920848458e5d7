"""Ghost dot products: inner products of per-sample gradients of Linear layers without forming the gradients.

For an ``nn.Linear`` layer s = a Wᵀ + c applied to a row's tokens (A_i: T×d inputs, one token for 2-D
inputs), the row's weight gradient is ∇_W ℓ_i = B_iᵀ Ā_i, with B_i = ∂ℓ_i/∂s_i (T×out) and Ā_i = [A_i, 1]
when the bias counts (the bias gradient Σ_t b_t folded in as a column of ones). Hence

    ⟨∇ℓ_i, ∇ℓ_j⟩_layer = ⟨Ā_i Ā_jᵀ, B_i B_jᵀ⟩_F = Σ_{t,t'} (Ā_i Ā_jᵀ)_{tt'} (B_i B_jᵀ)_{tt'},

which for 2-D inputs is (ā_i·ā_j)(b_i·b_j). Only T×T Gram blocks are formed, never the out×in gradient
and never the tokens flattened into features ("ghost clipping": Li, Tramèr, Liang & Hashimoto 2022, Bu et
al. 2023; TracIn's fast path: Pruthi et al. 2020). It is the shared core of TracIn, TRAK, LAI and GradEx.

Ā and B are captured with forward hooks on the counted Linear modules and one forward and one backward
pass of Σ_i ℓ_i over a batch. Assumption: each row's loss depends only on its own outputs (no coupling
across the batch; :class:`ModelTask` refuses BatchNorm and dropout in train mode), so ∂(Σ_k ℓ_k)/∂s_i =
∂ℓ_i/∂s_i. A Linear module called several times per forward (shared weights) contributes the tokens of
all its calls. Every counted parameter must be the weight or bias of an ``nn.Linear`` whose forward runs,
used nowhere else; rows must be the first dimension of every Linear input.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch
from torch import nn

from dataworth.checks import InputError, check_choice, check_int
from dataworth.influence.batches import Rows
from dataworth.influence.gradients import DEFAULT_MAX_MEMORY, Of
from dataworth.influence.task import ModelTask

#: A counted layer: (module, weight counts, bias counts).
Layer = tuple[nn.Linear, bool, bool]
#: Captured (Ā, B) per layer: b×T×(d[+1]) activations and b×T×out output gradients.
Capture = dict[str, tuple[torch.Tensor, torch.Tensor]]

#: Copies of a row's captures alive in one chunk: Ā and B, the layer's input and output kept by the
#: forward pass, their gradients in the backward pass, and the output copy the hook hands on.
_CAPTURE_COPIES = 4


def linear_layers(task: ModelTask) -> dict[str, Layer]:
    """The counted Linear layers by module name, with which of weight and bias count.

    Raises :class:`InputError` for a counted parameter that is not the weight or bias of an ``nn.Linear``
    (its gradient cannot be captured by hooks), or one tied to a parameter of another module.
    """
    modules = dict(task.model.named_modules())
    counted: dict[str, set[str]] = {}
    for name in task.parameter_names:
        module_name, _, leaf = name.rpartition(".")
        module = modules[module_name]
        if not isinstance(module, nn.Linear) or leaf not in ("weight", "bias"):
            linears = [n for n, m in modules.items() if isinstance(m, nn.Linear)][:6]
            raise InputError(f"ghost products need every counted parameter in an nn.Linear layer; {name!r} belongs to "
                             f"{type(module).__name__} {module_name!r}; count only Linear layers with ModelTask(..., "
                             f"modules=[...]) (the model's Linear layers include {linears})")
        counted.setdefault(module_name, set()).add(leaf)
    _check_untied(task)
    return {name: (modules[name], "weight" in leaves, "bias" in leaves) for name, leaves in counted.items()}


def capture_linear(task: ModelTask, inputs: torch.Tensor, targets: torch.Tensor, *, of: Of = "loss") -> Capture:
    """(Ā, B) of each counted Linear layer for a prepared batch (see :meth:`ModelTask.prepare`).

    Ā is b×T×(d + 1) — the layer's inputs with a column of ones when the bias counts (only the ones when
    only the bias counts) — and B = ∂ℓ_i/∂s_i is b×T×out, with T = 1 for 2-D inputs and T the tokens of all
    calls otherwise, so that ∇_W ℓ_i = B_iᵀ Ā_i. ``of="measurement"`` differentiates the task's measurement.
    """
    check_choice(of, "of", ("loss", "measurement"))
    return _capture(task, linear_layers(task), inputs, targets, of, "batch")


def ghost_inner_products(
    task: ModelTask,
    rows_a: Rows,
    rows_b: Rows | None = None,
    *,
    of_a: Of = "loss",
    of_b: Of = "loss",
    per_layer: bool = False,
    max_memory: int = DEFAULT_MAX_MEMORY,
) -> torch.Tensor | dict[str, torch.Tensor]:
    """The n_a×n_b matrix Σ_l ⟨∇ℓ^l_i, ∇ℓ^l_j⟩ over the counted Linear layers l, in float64.

    Each entry is Σ_l ⟨Ā^l_i Ā^lᵀ_j, B^l_i B^lᵀ_j⟩_F (module docstring). ``rows_b=None`` pairs ``rows_a``
    with itself (the symmetric matrix, each block computed once when ``of_a == of_b``); ``of_a``/``of_b``
    choose the loss or the measurement on each side; ``per_layer`` returns {layer: matrix} instead of the
    sum. Rows are captured in chunks of both sides whose captures and T_a×T_b Gram blocks fit in
    ``max_memory`` bytes (besides the result itself); side b is captured again for each chunk of side a.
    """
    check_choice(of_a, "of_a", ("loss", "measurement"))
    check_choice(of_b, "of_b", ("loss", "measurement"))
    max_memory = check_int(max_memory, "max_memory")
    layers = linear_layers(task)
    symmetric = rows_b is None and of_a == of_b
    rows_b = rows_a if rows_b is None else rows_b
    probe_a = _probe(task, layers, rows_a, of_a)
    probe_b = probe_a if symmetric else _probe(task, layers, rows_b, of_b)
    pair = max(a.shape[1] * b.shape[1] for (a, _), (b, _) in zip(probe_a.values(), probe_b.values(), strict=True))
    pair_bytes = 2 * pair * _itemsize(task) + 8 * (len(layers) + 1)
    size = _pair_chunk(_row_bytes(task, probe_a) + _row_bytes(task, probe_b), pair_bytes, max_memory)
    out = _zeros(task, layers, (rows_a.n, rows_b.n), per_layer)
    for start_a, inputs_a, targets_a in _chunks(task, rows_a, size):
        capture_a = _capture(task, layers, inputs_a, targets_a, of_a, rows_a.name)
        rows_a_at = slice(start_a, start_a + len(inputs_a))
        for start_b, inputs_b, targets_b in _chunks(task, rows_b, size):
            if symmetric and start_b < start_a:
                continue
            same = symmetric and start_b == start_a
            capture_b = capture_a if same else _capture(task, layers, inputs_b, targets_b, of_b, rows_b.name)
            rows_b_at = slice(start_b, start_b + len(inputs_b))
            for name, (A_a, B_a) in capture_a.items():
                block = layer_products(A_a, B_a, *capture_b[name])
                block = (block + block.T) / 2 if same else block
                target = out[name] if per_layer else out
                target[rows_a_at, rows_b_at] += block
                if symmetric and not same:
                    target[rows_b_at, rows_a_at] += block.T
    return out


def ghost_squared_norms(
    task: ModelTask,
    rows: Rows,
    *,
    of: Of = "loss",
    per_layer: bool = False,
    max_memory: int = DEFAULT_MAX_MEMORY,
) -> torch.Tensor | dict[str, torch.Tensor]:
    """‖g_i‖² = Σ_l ⟨Ā^l_i Ā^lᵀ_i, B^l_i B^lᵀ_i⟩_F for each row (the diagonal of :func:`ghost_inner_products`),
    in float64, without the n×n matrix; {layer: norms} with ``per_layer``. Chunks follow ``max_memory``."""
    check_choice(of, "of", ("loss", "measurement"))
    max_memory = check_int(max_memory, "max_memory")
    layers = linear_layers(task)
    probe = _probe(task, layers, rows, of)
    row_bytes = _row_bytes(task, probe) + 2 * max(a.shape[1] ** 2 for a, _ in probe.values()) * _itemsize(task)
    size = max(1, max_memory // row_bytes)
    out = _zeros(task, layers, (rows.n,), per_layer)
    for start, inputs, targets in _chunks(task, rows, size):
        at = slice(start, start + len(inputs))
        for name, (A, B) in _capture(task, layers, inputs, targets, of, rows.name).items():
            norms = (A @ A.transpose(1, 2)).mul_(B @ B.transpose(1, 2)).sum((1, 2), dtype=torch.float64)
            (out[name] if per_layer else out)[at] += norms
    return out


# -- capture ------------------------------------------------------------------------------------------


def _capture(task: ModelTask, layers: dict[str, Layer], inputs: torch.Tensor, targets: torch.Tensor, of: Of, name: str) -> Capture:
    """One forward of the batch with hooks on ``layers`` and one backward of Σ_i ℓ_i to their outputs."""
    calls: dict[str, list[tuple[torch.Tensor, torch.Tensor]]] = {layer: [] for layer in layers}

    def hook(layer: str):
        def record(module: nn.Module, args: tuple, kwargs: dict, output: torch.Tensor) -> torch.Tensor:
            calls[layer].append((args[0] if args else kwargs["input"], output))
            return output.clone()  # later in-place ops (ReLU(inplace=True)) then leave the captured output alone
        return record

    handles = [module.register_forward_hook(hook(layer), with_kwargs=True) for layer, (module, _, _) in layers.items()]
    try:
        with torch.enable_grad():
            params = {key: value.detach().requires_grad_(True) for key, value in task.params.items()}
            outputs = task.forward(params, inputs)
            task.check_targets(outputs.shape[1:], targets, name)
            values = (task.loss_fn if of == "loss" else task.measurement_fn)(outputs, targets)
            _check_fired(calls, name)
            if values.shape != (len(inputs),):
                raise InputError(f"the {of} must give one value per row; it gives shape {tuple(values.shape)} for {len(inputs)} rows")
            grads = torch.autograd.grad(values.sum(), [output for layer in calls.values() for _, output in layer], allow_unused=True)
    finally:
        for handle in handles:
            handle.remove()
    captured, first = {}, 0
    for layer, (_, weight, bias) in layers.items():
        seen, layer_grads = calls[layer], grads[first:first + len(calls[layer])]
        first += len(seen)
        A = torch.cat([as_tokens(a, len(inputs), layer) for a, _ in seen], 1)
        B = torch.cat([as_tokens(torch.zeros_like(s) if g is None else g, len(inputs), layer)
                       for (_, s), g in zip(seen, layer_grads, strict=True)], 1)
        captured[layer] = (with_ones(A, weight, bias), B)
    return captured


def as_tokens(x: torch.Tensor, rows: int, layer: str) -> torch.Tensor:
    """A layer's input or output as rows × tokens × features."""
    if x.ndim < 2 or x.shape[0] != rows:
        raise InputError(f"Linear layer {layer!r} got a tensor of shape {tuple(x.shape)} for a batch of {rows} rows; ghost "
                         "products need the rows as the first dimension of every Linear input (batch_first)")
    return x.detach().reshape(rows, -1, x.shape[-1])


def with_ones(A: torch.Tensor, weight: bool, bias: bool) -> torch.Tensor:
    """Ā: the inputs when the weight counts, then a column of ones when the bias counts."""
    ones = torch.ones(*A.shape[:2], 1, dtype=A.dtype, device=A.device)
    if not weight:
        return ones
    return torch.cat([A, ones], 2) if bias else A


def _check_fired(calls: dict[str, list], name: str) -> None:
    silent = [layer for layer, seen in calls.items() if not seen]
    if silent:
        raise InputError(f"Linear layer {silent[0]!r} did not run in the forward pass of {name} (nn.MultiheadAttention, for "
                         "one, uses out_proj's weights without calling it), so its gradients cannot be captured; leave it "
                         "out with ModelTask(..., modules=[...])")


def _check_untied(task: ModelTask) -> None:
    """A counted parameter shared with another module (tied weights) has gradients the hooks do not see."""
    counted = {id(p): name for name, p in task.model.named_parameters() if name in task.params}
    owner = task.model.get_submodule
    for other, p in task.model.named_parameters(remove_duplicate=False):
        name = counted.get(id(p))
        if name is not None and owner(other.rpartition(".")[0]) is not owner(name.rpartition(".")[0]):
            raise InputError(f"{name!r} is tied to {other!r} of another module, whose use of it the Linear hooks do "
                                 "not see; untie the weights or count neither with ModelTask(..., modules=[...])")


# -- products and chunks ------------------------------------------------------------------------------


def layer_products(A_a: torch.Tensor, B_a: torch.Tensor, A_b: torch.Tensor, B_b: torch.Tensor) -> torch.Tensor:
    """[Σ_{t,t'} (Ā_i Ā_jᵀ)_{tt'} (B_i B_jᵀ)_{tt'}]_{ij}: the T_a×T_b Gram blocks of all pairs from two GEMMs, or,
    where that costs more (long sequences: n_a·n_b·T_a·T_b·(d + out) > (n_a·T_a + n_b·T_b + n_a·n_b)·d·out), the
    per-row gradients B_iᵀĀ_i formed and multiplied (Bu et al. 2023's mixed ghost clipping)."""
    (n_a, t_a), (n_b, t_b) = A_a.shape[:2], A_b.shape[:2]
    d, out = A_a.shape[2], B_a.shape[2]
    if n_a * n_b * t_a * t_b * (d + out) > (n_a * t_a + n_b * t_b + n_a * n_b) * d * out:
        g_a = torch.einsum("nto,ntd->nod", B_a, A_a).reshape(n_a, -1)
        g_b = torch.einsum("nto,ntd->nod", B_b, A_b).reshape(n_b, -1)
        return (g_a @ g_b.T).to(torch.float64)
    gram = A_a.reshape(n_a * t_a, -1) @ A_b.reshape(n_b * t_b, -1).T
    gram.mul_(B_a.reshape(n_a * t_a, -1) @ B_b.reshape(n_b * t_b, -1).T)
    return gram.view(n_a, t_a, n_b, t_b).sum((1, 3), dtype=torch.float64)


def _chunks(task: ModelTask, rows: Rows, size: int) -> Iterator[tuple[int, torch.Tensor, torch.Tensor]]:
    """(start, inputs, targets), prepared, in chunks of at most ``size`` rows (a DataLoader's batches split further)."""
    for start, inputs, targets in rows.batches(size):
        inputs, targets = task.prepare(inputs, targets)
        for offset in range(0, len(inputs), size):
            yield start + offset, inputs[offset:offset + size], targets[offset:offset + size]


def _probe(task: ModelTask, layers: dict[str, Layer], rows: Rows, of: Of) -> Capture:
    """The capture of the first row, whose shapes size the chunks."""
    _, inputs, targets = next(_chunks(task, rows, 1))
    return _capture(task, layers, inputs, targets, of, rows.name)


def _row_bytes(task: ModelTask, probe: Capture) -> int:
    """Working memory per row of a chunk: its captures and what the forward and backward keep around them."""
    return _CAPTURE_COPIES * _itemsize(task) * sum(A.shape[1] * (A.shape[2] + B.shape[2]) for A, B in probe.values())


def _pair_chunk(row_bytes: int, pair_bytes: int, max_memory: int) -> int:
    """The largest c with c·row_bytes + c²·pair_bytes ≤ max_memory (at least 1)."""
    return max(1, int((-row_bytes + math.sqrt(row_bytes ** 2 + 4 * pair_bytes * max_memory)) / (2 * pair_bytes)))


def _zeros(task: ModelTask, layers: dict[str, Layer], shape: tuple[int, ...], per_layer: bool) -> torch.Tensor | dict[str, torch.Tensor]:
    if per_layer:
        return {name: torch.zeros(shape, dtype=torch.float64, device=task.device) for name in layers}
    return torch.zeros(shape, dtype=torch.float64, device=task.device)


def _itemsize(task: ModelTask) -> int:
    return torch.finfo(task.dtype).bits // 8

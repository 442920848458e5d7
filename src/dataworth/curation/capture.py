"""Forward hooks that keep each scored layer's inputs (and, on request, its outputs) during training.

A scored layer is an ``nn.Linear`` or an ``nn.Conv2d`` with a trainable weight. Its inputs are kept as
Ā_i: T×(d [+ 1]) per row — the tokens of a sequence (T = 1 for 2-D inputs), or a convolution's patches
through ``F.unfold`` (T = output positions, d = C_in·k_h·k_w) — with a column of ones when the layer has a
trainable bias, so that the row's weight-and-bias gradient is B_iᵀĀ_i for B_i = ∂ℓ_i/∂(layer output)
(T×out). The inputs are copied when recorded (a later in-place operation cannot change them); outputs are
kept in the autograd graph only when an exact (backward) score needs B.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

from dataworth.checks import InputError
from dataworth.influence.ghost import as_tokens, with_ones

#: The layer types whose gradients factor as Bᵀ Ā.
SCORED_TYPES = (nn.Linear, nn.Conv2d)


class LayerCapture:
    """Hooks on the scored layers of ``model``; recording only inside :meth:`recording`.

    Parameters
    ----------
    model : nn.Module
    modules : sequence of str, optional
        Names (``model.named_modules()``) of the layers to score; every Linear and Conv2d layer with a
        trainable weight when omitted.
    """

    def __init__(self, model: nn.Module, modules: Sequence[str] | None = None) -> None:
        named = dict(model.named_modules())
        if modules is None:
            names = [n for n, m in named.items() if isinstance(m, SCORED_TYPES) and m.weight.requires_grad]
        else:
            unknown = [n for n in modules if n not in named]
            if unknown:
                raise InputError(f"the model has no module {unknown[0]!r}; its Linear/Conv2d layers are "
                                 f"{[n for n, m in named.items() if isinstance(m, SCORED_TYPES)][:8]}")
            wrong = [n for n in modules if not isinstance(named[n], SCORED_TYPES)]
            if wrong:
                raise InputError(f"module {wrong[0]!r} is a {type(named[wrong[0]]).__name__}; only nn.Linear and nn.Conv2d "
                                 "layers can be scored from their activations")
            names = list(modules)
        if not names:
            raise InputError("the model has no trainable nn.Linear or nn.Conv2d layer to score")
        for name in names:
            _check_convolution(name, named[name])
        self.layers: dict[str, nn.Module] = {n: named[n] for n in names}
        self._active = False
        self._keep_outputs = False
        self._inputs: dict[str, list[torch.Tensor]] = {}
        self._outputs: dict[str, list[torch.Tensor]] = {}
        self._last: str | None = None
        self._handles = [module.register_forward_hook(self._hook(name)) for name, module in self.layers.items()]

    def remove(self) -> None:
        """Remove the hooks from the model."""
        for handle in self._handles:
            handle.remove()
        self._handles = []

    @contextmanager
    def recording(self, *, keep_outputs: bool = False) -> Iterator[LayerCapture]:
        """Record the scored layers' inputs (and outputs, in the graph, with ``keep_outputs``) of the forward
        passes run inside the block; earlier records are cleared."""
        self._inputs = {name: [] for name in self.layers}
        self._outputs = {name: [] for name in self.layers}
        self._last = None
        self._active, self._keep_outputs = True, keep_outputs
        try:
            yield self
        finally:
            self._active = False

    @property
    def last_layer(self) -> str:
        """The scored layer that ran last in the recorded forward pass (the one producing the outputs)."""
        self._check_fired()
        return self._last

    def activations(self, rows: int) -> dict[str, torch.Tensor]:
        """Ā per scored layer: rows × T × (d [+ 1]), the tokens of all calls of the layer concatenated."""
        self._check_fired()
        out = {}
        for name, module in self.layers.items():
            A = torch.cat([as_tokens(a, rows, name) for a in self._inputs[name]], 1)
            out[name] = with_ones(A, True, module.bias is not None and module.bias.requires_grad)
        return out

    def outputs(self) -> dict[str, list[torch.Tensor]]:
        """The recorded outputs of each layer's calls (in the graph), as rows × ... tensors."""
        if not self._keep_outputs:
            raise RuntimeError("outputs were not kept: record with keep_outputs=True")
        return self._outputs

    def output_gradients(self, grads: dict[str, list[torch.Tensor | None]], rows: int) -> dict[str, torch.Tensor]:
        """B per scored layer (rows × T × out) from the gradients of the recorded outputs."""
        out = {}
        for name, layer_grads in grads.items():
            blocks = [torch.zeros_like(o) if g is None else g for o, g in zip(self._outputs[name], layer_grads, strict=True)]
            out[name] = torch.cat([_output_tokens(b, rows, name) for b in blocks], 1)
        return out

    def _hook(self, name: str):
        module = self.layers[name]

        def record(_: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor | None:
            if not self._active:
                return None
            x = args[0].detach()
            if isinstance(module, nn.Conv2d):
                x = F.unfold(x, module.kernel_size, dilation=module.dilation, padding=module.padding, stride=module.stride)
                x = x.transpose(1, 2)  # rows × positions × (C_in·k_h·k_w)
            self._inputs[name].append(x.clone())
            self._last = name
            if self._keep_outputs:
                output = output.clone()  # a later in-place op (ReLU(inplace=True)) leaves the kept output alone
                self._outputs[name].append(output)
                return output
            return None

        return record

    def _check_fired(self) -> None:
        silent = [name for name, seen in self._inputs.items() if not seen]
        if silent:
            raise InputError(f"layer {silent[0]!r} did not run in the forward pass, so it cannot be scored; leave it out with "
                             "modules=[...]")


def _output_tokens(b: torch.Tensor, rows: int, name: str) -> torch.Tensor:
    """A Linear output's gradient as rows × T × out; a Conv2d's (rows × out × H × W) as rows × positions × out."""
    if b.ndim == 4:
        return b.flatten(2).transpose(1, 2)
    return as_tokens(b, rows, name)


def _check_convolution(name: str, module: nn.Module) -> None:
    if not isinstance(module, nn.Conv2d):
        return
    if module.groups != 1 or module.padding_mode != "zeros" or isinstance(module.padding, str):
        raise InputError(f"Conv2d layer {name!r} has groups={module.groups}, padding={module.padding!r}, padding_mode="
                         f"{module.padding_mode!r}; activation scores need groups=1 and numeric zero padding: leave it out "
                         "with modules=[...]")

"""Scores of a training batch against a cached validation set, from activations (no backward pass) or exactly.

A *side* (:class:`Side`) holds what one set of rows contributes: each scored layer's inputs Ā^l (rows × T_l ×
d_l, ones column for the bias included), the output gradient E = ∂ℓ/∂f (rows × T_e × C: T_e = 1 for one output
per row), optionally each layer's exact output gradient B^l (rows × T_l × out_l, from a backward pass), and the
per-row losses. Every score is the mean over the validation rows j of a pairwise term, so s_i > 0 means a
gradient step on row i is predicted to lower the validation loss (to first order: −η∇ℓ_val·∇ℓ_i < 0).

- **LAI** (layer-aware influence, arXiv 2510.16007): s_i = mean_j (e_i·e_j) Σ_l (ā_i^l·ā_j^l), every layer's
  output gradient replaced by the logits' e. For sequences, Σ_{t,t'} (Ā_iĀ_jᵀ)_{tt'} (E_iE_jᵀ)_{tt'} when the
  layer has the outputs' tokens, else the token sums (Σ_t ā_it)·(Σ_t ā_jt) with the summed e (the T×T Gram
  with all-ones weights, never the tokens flattened into features). For the last layer (whose output is f)
  each term equals ⟨∇_{W,b}ℓ_i, ∇_{W,b}ℓ_j⟩ exactly.
- **Ghost** (exact): s_i = mean_j Σ_l ⟨Ā_iĀ_jᵀ, B_iB_jᵀ⟩ = mean_j ∇ℓ_i·∇ℓ_j over the scored layers.
- **Last layer**: LAI on the last scored layer only (exact for it).
- **LAI-Adam**: the same under Adam's preconditioner P = 1/(√v̂ + ε): exact ⟨g_i, P ⊙ g_j⟩ on the last layer
  (per-row gradients B_iᵀĀ_i, out × d, formed for it alone) and, on the others, LAI with the inputs' features
  weighted by 1/(√c_k + ε), c_k = mean_o v̂_ok: the column factor of Adafactor's rank-one factorization of the
  second moments (Shazeer & Stern 2018), its row factor dropped since e has no rows of that layer's outputs.
- **Small loss** (Han et al. 2018's selection rule): s_i = q-quantile of the batch's losses − ℓ_i.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from dataworth.influence.ghost import layer_products


@dataclass
class Side:
    """One side of a score (a batch or the validation cache); see the module docstring."""

    activations: dict[str, torch.Tensor]
    output_gradients: torch.Tensor
    losses: torch.Tensor
    layer_gradients: dict[str, torch.Tensor] | None = None

    @property
    def rows(self) -> int:
        return len(self.losses)


def lai_scores(batch: Side, validation: Side, layers: list[str] | None = None,
               column_weights: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
    """LAI scores of the batch rows (float64); ``layers`` restricts the sum, ``column_weights`` (per layer, d_l)
    weight the inputs' features (c_k in Σ_k c_k a_ik a_jk)."""
    total = torch.zeros(batch.rows, validation.rows, dtype=torch.float64, device=batch.losses.device)
    for name in layers or list(batch.activations):
        A_b, A_v = batch.activations[name], validation.activations[name]
        E_b, E_v = batch.output_gradients, validation.output_gradients
        if column_weights is not None and name in column_weights:
            root = column_weights[name].sqrt()
            A_b, A_v = A_b * root, A_v * root
        if A_b.shape[1] != E_b.shape[1] or A_v.shape[1] != E_v.shape[1]:
            A_b, A_v, E_b, E_v = (x.sum(1, keepdim=True) for x in (A_b, A_v, E_b, E_v))
        total += layer_products(A_b, E_b, A_v, E_v)
    return total.mean(1)


def ghost_scores(batch: Side, validation: Side) -> torch.Tensor:
    """Exact mean gradient dot products over the scored layers (both sides need ``layer_gradients``)."""
    if batch.layer_gradients is None or validation.layer_gradients is None:
        raise ValueError("ghost scores need the layers' output gradients on both sides")
    total = torch.zeros(batch.rows, validation.rows, dtype=torch.float64, device=batch.losses.device)
    for name, A_b in batch.activations.items():
        total += layer_products(A_b, batch.layer_gradients[name], validation.activations[name], validation.layer_gradients[name])
    return total.mean(1)


def adam_scores(batch: Side, validation: Side, last: str, second_moments: dict[str, tuple[torch.Tensor, float]]) -> torch.Tensor:
    """LAI-Adam scores: ``second_moments`` maps each scored layer to (v̂, ε): Adam's bias-corrected second moments as
    out × (d [+ 1]), the bias as the last column, and its ε."""
    v, eps = second_moments[last]
    P = 1 / (v.sqrt() + eps)
    g_b, g_v = (_last_layer_gradients(side, last) for side in (batch, validation))
    exact = ((g_b * P.flatten()) @ g_v.T).to(torch.float64).mean(1)
    others = [name for name in batch.activations if name != last]
    if not others:
        return exact
    columns = {name: 1 / (second_moments[name][0].mean(0).sqrt() + second_moments[name][1]) for name in others}
    return exact + lai_scores(batch, validation, others, columns)


def _last_layer_gradients(side: Side, last: str) -> torch.Tensor:
    """Per-row gradients Σ_t e_t ā_tᵀ of the last layer, flattened (token sums where the token counts differ)."""
    A, E = side.activations[last], side.output_gradients
    if A.shape[1] != E.shape[1]:
        A, E = A.sum(1, keepdim=True), E.sum(1, keepdim=True)
    return torch.einsum("btc,btk->bck", E, A).flatten(1)


def small_loss_scores(losses: torch.Tensor, quantile: float) -> torch.Tensor:
    """q-quantile of the batch's losses − each loss: negative for the rows above the quantile."""
    losses = losses.detach().to(torch.float64)
    return torch.quantile(losses, quantile) - losses

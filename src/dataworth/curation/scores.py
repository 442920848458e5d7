"""Scores of a training batch against a cached validation set, from activations (no backward pass) or exactly.

A *side* (:class:`Side`) holds what a set of rows contributes: each scored layer's inputs Ā^l (rows × T_l × d_l,
ones column for the bias included), the output gradient E = ∂ℓ/∂f (rows × T_e × C: T_e = 1 for one output per
row), optionally each layer's exact output gradient B^l (rows × T_l × out_l, from a backward pass), and the
per-row losses. Every score is the mean over the validation rows j of a pairwise gradient product, so s_i > 0
means a gradient step on row i is predicted to lower the validation loss (to first order).

Each pairwise product is ⟨G_i, G_j⟩ of per-row layer "gradients" G_i = Σ_t Y_it Ā_itᵀ (Y = B^l exactly, Y = E for
LAI), so the mean over j is ⟨G_i, M⟩ with M = mean_j G_j, a matrix of the layer's weight shape (C × d_l for
LAI). The validation cache is these M (:func:`validation_means`), and a batch row's score is the bilinear form
Σ_t Y_itᵀ M Ā_it — the cost of one forward pass of the layer, whatever the number of validation rows, and the
same number as the mean of the ghost products ⟨Ā_iĀ_jᵀ, Y_iY_jᵀ⟩ (Kwon et al. 2024 and the LAI paper use the
same reduction of a sum over the validation set).

- **LAI** (layer-aware influence, arXiv 2510.16007): s_i = mean_j (e_i·e_j) Σ_l (ā_i^l·ā_j^l), every layer's
  output gradient replaced by the logits' e. For sequences, Σ_{t,t'} (Ā_iĀ_jᵀ)_{tt'} (E_iE_jᵀ)_{tt'} when the
  layer has the outputs' tokens, else the token sums (Σ_t ā_it)·(Σ_t ā_jt) with the summed e (the T×T Gram
  with all-ones weights, never the tokens flattened into features). For the last layer (whose output is f)
  each term equals ⟨∇_{W,b}ℓ_i, ∇_{W,b}ℓ_j⟩ exactly.
- **Ghost** (exact): s_i = mean_j Σ_l ⟨∇_l ℓ_i, ∇_l ℓ_j⟩ over the scored layers (B^l from a backward pass).
- **Last layer**: LAI on the last scored layer only (exact for it).
- **LAI-Adam**: the same under Adam's preconditioner P = 1/(√v̂ + ε): exact ⟨g_i, P ⊙ ḡ⟩ on the last layer
  and, on the others, LAI with the inputs' features weighted by 1/(√c_k + ε), c_k = mean_o v̂_ok: the column
  factor of Adafactor's rank-one factorization of the second moments (Shazeer & Stern 2018), its row factor
  dropped since e has no rows of that layer's outputs.
- **Small loss** (Han et al. 2018's selection rule): s_i = q-quantile of the batch's losses − ℓ_i.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Side:
    """What a set of rows contributes to a score; see the module docstring."""

    activations: dict[str, torch.Tensor]
    output_gradients: torch.Tensor
    losses: torch.Tensor
    layer_gradients: dict[str, torch.Tensor] | None = None

    @property
    def rows(self) -> int:
        return len(self.losses)

    def factors(self, layer: str, exact: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """(Ā, Y) of a layer: Y = B (``exact``) or E; token sums of both where LAI's E lacks the layer's tokens."""
        A = self.activations[layer]
        if exact:
            if self.layer_gradients is None:
                raise ValueError("exact scores need the layers' output gradients (a backward pass)")
            return A, self.layer_gradients[layer]
        E = self.output_gradients
        if A.shape[1] != E.shape[1]:
            return A.sum(1, keepdim=True), E.sum(1, keepdim=True)
        return A, E


def validation_sums(side: Side, exact: bool) -> dict[str, torch.Tensor]:
    """Σ_j G_j per scored layer (out × d): add the sums of several chunks, divide by the rows for the means."""
    return {layer: torch.einsum("jto,jtd->od", *reversed(side.factors(layer, exact))).to(torch.float64) for layer in side.activations}


def validation_means(side: Side, exact: bool) -> dict[str, torch.Tensor]:
    """M = mean_j G_j per scored layer: the validation cache (module docstring)."""
    return {layer: total / side.rows for layer, total in validation_sums(side, exact).items()}


def bilinear(A: torch.Tensor, Y: torch.Tensor, M: torch.Tensor) -> torch.Tensor:
    """Σ_t Y_itᵀ M Ā_it per row: ⟨Σ_t Y_it Ā_itᵀ, M⟩ without forming the per-row gradients."""
    return ((A @ M.T.to(A.dtype)) * Y).sum((1, 2), dtype=torch.float64)


def lai_scores(batch: Side, means: dict[str, torch.Tensor], layers: list[str] | None = None,
               column_weights: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
    """LAI scores of the batch rows (float64) against the LAI validation means; ``layers`` restricts the sum,
    ``column_weights`` (per layer, d_l) weight the inputs' features (c_k in Σ_k c_k a_ik a_jk)."""
    total = torch.zeros(batch.rows, dtype=torch.float64, device=batch.losses.device)
    for layer in layers or list(batch.activations):
        M = means[layer] if column_weights is None or layer not in column_weights else means[layer] * column_weights[layer]
        total += bilinear(*batch.factors(layer, exact=False), M)
    return total


def ghost_scores(batch: Side, means: dict[str, torch.Tensor]) -> torch.Tensor:
    """Exact ⟨∇ℓ_i, mean_j ∇ℓ_j⟩ over the scored layers, against the exact validation means."""
    total = torch.zeros(batch.rows, dtype=torch.float64, device=batch.losses.device)
    for layer in batch.activations:
        total += bilinear(*batch.factors(layer, exact=True), means[layer])
    return total


def adam_scores(batch: Side, means: dict[str, torch.Tensor], last: str, second_moments: dict[str, tuple[torch.Tensor, float]]) -> torch.Tensor:
    """LAI-Adam scores against the LAI validation means: ``second_moments`` maps each scored layer to (v̂, ε), Adam's
    bias-corrected second moments as out × (d [+ 1]) (the bias as the last column) and its ε."""
    v, eps = second_moments[last]
    exact = bilinear(*batch.factors(last, exact=False), means[last] / (v.to(torch.float64).sqrt() + eps))
    others = [layer for layer in batch.activations if layer != last]
    if not others:
        return exact
    columns = {layer: 1 / (second_moments[layer][0].to(torch.float64).mean(0).sqrt() + second_moments[layer][1]) for layer in others}
    return exact + lai_scores(batch, means, others, columns)


def small_loss_scores(losses: torch.Tensor, quantile: float) -> torch.Tensor:
    """q-quantile of the batch's losses − each loss: negative for the rows above the quantile."""
    losses = losses.detach().to(torch.float64)
    return torch.quantile(losses, quantile) - losses

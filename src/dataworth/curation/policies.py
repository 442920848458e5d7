"""What to do with a scored batch: which rows the update keeps and with what weight.

- ``drop-negative``: keep rows with s_i ≥ 0 (a negative score predicts that the row's step raises the
  validation loss);
- ``keep-top``: keep the ⌈f·b⌉ highest-scoring rows of each batch;
- ``reweight``: weight w_i = max(s_i, 0), rescaled to mean 1 over the batch (all ones when no score is
  positive).

Every policy keeps every row, with weight 1, during the warm-up steps.
"""

from __future__ import annotations

import math

import torch

POLICIES = ("drop-negative", "keep-top", "reweight")


def decide(policy: str, scores: torch.Tensor, *, warm: bool, keep_fraction: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(kept: bool per row, weight per row) for the batch's ``scores`` (``warm``: past the warm-up)."""
    rows = len(scores)
    ones = torch.ones(rows, dtype=torch.float64, device=scores.device)
    if not warm or torch.isnan(scores).all():
        return ones.bool(), ones
    if policy == "drop-negative":
        kept = scores >= 0
        return kept, kept.to(torch.float64)
    if policy == "keep-top":
        order = torch.argsort(scores, descending=True, stable=True)
        kept = torch.zeros(rows, dtype=torch.bool, device=scores.device)
        kept[order[:math.ceil(keep_fraction * rows)]] = True
        return kept, kept.to(torch.float64)
    weights = scores.to(torch.float64).clamp(min=0)
    if weights.sum() <= 0:
        return ones.bool(), ones
    weights = weights * rows / weights.sum()
    return weights > 0, weights

"""The models of the built-in curation experiment: an MLP on feature vectors and a small transformer on tokens.

Every weight the curation scores see is an ``nn.Linear`` that is called as a module (attention's query, key,
value and output projections included, unlike ``nn.MultiheadAttention``, which uses its output projection's
weights without calling it), so LAI and Ghost score every layer but the embeddings and layer norms.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def mlp(features: int, classes: int, hidden: int = 128) -> nn.Module:
    """Linear → ReLU → Linear → ReLU → Linear."""
    return nn.Sequential(nn.Linear(features, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, classes))


class Block(nn.Module):
    """Pre-norm transformer block: multi-head self-attention and a ReLU feed-forward layer."""

    def __init__(self, width: int, heads: int, feedforward: int) -> None:
        super().__init__()
        self.heads = heads
        self.norm1, self.norm2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.query, self.key, self.value, self.out = (nn.Linear(width, width) for _ in range(4))
        self.up, self.down = nn.Linear(width, feedforward), nn.Linear(feedforward, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows, tokens, width = x.shape
        h = self.norm1(x)

        def split(t: torch.Tensor) -> torch.Tensor:
            return t.view(rows, tokens, self.heads, width // self.heads).transpose(1, 2)

        q, k, v = split(self.query(h)), split(self.key(h)), split(self.value(h))
        attention = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(width // self.heads), -1)
        x = x + self.out((attention @ v).transpose(1, 2).reshape(rows, tokens, width))
        return x + self.down(torch.relu(self.up(self.norm2(x))))


class TokenClassifier(nn.Module):
    """Token and position embeddings, ``depth`` blocks, mean pooling over tokens, a Linear head."""

    def __init__(self, vocabulary: int, tokens: int, classes: int, width: int = 64, heads: int = 2, depth: int = 1) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocabulary, width)
        self.position = nn.Parameter(torch.zeros(tokens, width))
        self.blocks = nn.Sequential(*(Block(width, heads, 2 * width) for _ in range(depth)))
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, classes)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.blocks(self.embed(ids) + self.position[: ids.shape[1]])
        return self.head(self.norm(x).mean(1))

"""SAMM: semantic-conditioned adaptive masking of latent positions."""
from __future__ import annotations

import torch
from torch import nn

from .blocks import SPADE


class SAMM(nn.Module):
    """One relevance score in (0, 1) per latent position, conditioned on the semantic map."""

    def __init__(self, channels: int, cond_channels: int, hidden: int = 64):
        super().__init__()
        self.inp = nn.Conv2d(channels, hidden, 3, 1, 1)
        self.norm = SPADE(hidden, cond_channels)
        self.act = nn.LeakyReLU(0.2, inplace=True)
        self.out = nn.Conv2d(hidden, 1, 3, 1, 1)

    def forward(self, features: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.out(self.act(self.norm(self.inp(features), cond))))


def top_k_mask(scores: torch.Tensor, keep_ratio: torch.Tensor | float) -> torch.Tensor:
    """Keep the ``round(keep_ratio × positions)`` highest-scoring positions of each image (≥ 1).

    scores: N×1×H×W; keep_ratio: float or N-vector. Returns an N×1×H×W bool mask.
    """
    n, _, h, w = scores.shape
    flat = scores.reshape(n, -1)
    ratios = torch.as_tensor(keep_ratio, dtype=torch.float32).reshape(-1).expand(n)
    counts = (ratios * h * w).round().clamp(1, h * w).long()
    order = flat.argsort(dim=1, descending=True, stable=True)
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(h * w, device=scores.device).expand(n, -1))
    return (rank < counts.to(scores.device)[:, None]).view(n, 1, h, w)

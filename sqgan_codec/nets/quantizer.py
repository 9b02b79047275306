"""Vector quantiser: Euclidean nearest code, EMA codebook updates, data init, dead-code restarts.

Latents reach it already scaled by SAMM's score, so the score changes which code is chosen and
receives a gradient through the straight-through estimator (the paper's path for SAMM).
``codes_to_indices`` / ``indices_to_codes`` are the paired coding and decoding paths: the
encoder sends indices, the decoder looks the same rows up, so tokens are exact across devices.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class VectorQuantizer(nn.Module):
    def __init__(self, num_codes: int, dim: int, decay: float = 0.99, commitment: float = 0.25,
                 restart_threshold: float = 0.01, usage_decay: float = 0.9):
        super().__init__()
        self.num_codes, self.dim = num_codes, dim
        self.decay, self.commitment, self.restart_threshold = decay, commitment, restart_threshold
        self.usage_decay = usage_decay
        init = 0.5 * F.normalize(torch.randn(num_codes, dim), dim=1)
        self.register_buffer("codebook", init)
        # Training-only state (export drops it): EMA statistics and whether data init happened.
        self.register_buffer("ema_count", torch.ones(num_codes))
        self.register_buffer("ema_sum", init.clone())
        self.register_buffer("ema_initialised", torch.zeros((), dtype=torch.bool))
        # short-memory usage: a code unused for ~40 steps is moved onto current data
        self.register_buffer("ema_usage", torch.ones(num_codes))

    def codes_to_indices(self, z: torch.Tensor) -> torch.Tensor:
        """N×D×H×W latents → N×H×W indices of the nearest (Euclidean) code."""
        flat = z.permute(0, 2, 3, 1).reshape(-1, self.dim)
        dist = (flat.pow(2).sum(1, keepdim=True) - 2 * flat @ self.codebook.t()
                + self.codebook.pow(2).sum(1)[None])
        return dist.argmin(dim=1).view(z.shape[0], z.shape[2], z.shape[3])

    def indices_to_codes(self, indices: torch.Tensor) -> torch.Tensor:
        """N×H×W indices → N×D×H×W codes."""
        return self.codebook[indices].permute(0, 3, 1, 2).contiguous()

    def forward(self, z: torch.Tensor, keep: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Quantise with a straight-through gradient. Returns (codes, indices, commitment loss).

        ``keep`` (N×1×H×W bool) restricts the loss and codebook updates to kept positions.
        """
        with torch.autocast(z.device.type, enabled=False):
            # distances and codebook statistics in fp32 even under mixed-precision training:
            # bf16 distances would pick other codes than the fp32 inference path
            return self._quantise(z.float(), keep)

    def _quantise(self, z: torch.Tensor, keep: torch.Tensor | None
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        weight = keep.float() if keep is not None else torch.ones_like(z[:, :1])
        if self.training and not bool(self.ema_initialised):
            self._init_from(z.detach(), weight)
        indices = self.codes_to_indices(z)
        codes = self.indices_to_codes(indices)
        commit = (((z - codes.detach()) ** 2).sum(1, keepdim=True) * weight).sum() / weight.sum().clamp_min(1.0)
        if self.training:
            self._ema_update(z.detach(), indices, weight)
        return z + (codes - z).detach(), indices, self.commitment * commit

    def _kept_vectors(self, z: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        return z.permute(0, 2, 3, 1).reshape(-1, self.dim)[weight.reshape(-1) > 0]

    @torch.no_grad()
    def _init_from(self, z: torch.Tensor, weight: torch.Tensor) -> None:
        flat = self._kept_vectors(z, weight)
        if flat.shape[0] == 0:
            return
        pick = flat[torch.randint(0, flat.shape[0], (self.num_codes,), device=flat.device)]
        pick = pick + 0.01 * pick.std() * torch.randn_like(pick)
        self.codebook.copy_(pick)
        self.ema_sum.copy_(pick)
        self.ema_count.fill_(1.0)
        self.ema_initialised.fill_(True)

    @torch.no_grad()
    def _ema_update(self, z: torch.Tensor, indices: torch.Tensor, weight: torch.Tensor) -> None:
        sel = weight.reshape(-1) > 0
        flat = z.permute(0, 2, 3, 1).reshape(-1, self.dim)[sel]
        idx = indices.reshape(-1)[sel]
        if flat.shape[0] == 0:
            return
        onehot = F.one_hot(idx, self.num_codes).type(flat.dtype)
        self.ema_count.mul_(self.decay).add_(onehot.sum(0), alpha=1 - self.decay)
        self.ema_sum.mul_(self.decay).add_(onehot.t() @ flat, alpha=1 - self.decay)
        self.codebook.copy_(self.ema_sum / self.ema_count.clamp_min(1e-5)[:, None])
        self.ema_usage.mul_(self.usage_decay).add_((onehot.sum(0) > 0).type(flat.dtype), alpha=1 - self.usage_decay)
        dead = self.ema_usage < self.restart_threshold
        if dead.any():
            n = int(dead.sum())
            pick = flat[torch.randint(0, flat.shape[0], (n,), device=flat.device)]
            pick = pick + 0.01 * pick.std() * torch.randn_like(pick)
            self.codebook[dead] = pick
            self.ema_sum[dead] = pick
            self.ema_count[dead] = 1.0
            self.ema_usage[dead] = 1.0

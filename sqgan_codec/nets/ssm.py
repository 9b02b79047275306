"""G_s: the masked-VQ autoencoder that codes the semantic map (SSM) at latent stride 16."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .blocks import ResBlock, class_proportions
from .quantizer import VectorQuantizer
from .samm import SAMM, top_k_mask

STRIDE = 16


class SemanticMapCodec(nn.Module):
    def __init__(self, num_classes: int = 11, dim: int = 32, num_codes: int = 512, width: int = 128):
        super().__init__()
        self.num_classes = num_classes
        self.encoder = nn.Sequential(
            nn.Conv2d(num_classes, 32, 3, 1, 1), ResBlock(32),
            nn.Conv2d(32, 64, 3, 2, 1), ResBlock(64),
            nn.Conv2d(64, width, 3, 2, 1), ResBlock(width),
        )
        self.to_latent = nn.Conv2d(width, dim, 1)
        self.samm = SAMM(width, num_classes)
        self.quantizer = VectorQuantizer(num_codes, dim)
        self.mask_token = nn.Parameter(torch.zeros(1, dim, 1, 1))
        self.demasker = nn.Sequential(nn.Conv2d(dim + 1, width, 1), ResBlock(width), ResBlock(width))
        self.decoder = nn.Sequential(
            nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(width, 64, 3, 1, 1), ResBlock(64),
            nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(64, 32, 3, 1, 1), ResBlock(32),
            nn.Conv2d(32, num_classes, 1),
        )

    def encode(self, onehot: torch.Tensor, keep_ratio: torch.Tensor | float
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """One-hot SSM (N×C×H×W, H, W multiples of 16) → (scaled latents, keep mask, scores, features)."""
        features = self.encoder(class_proportions(onehot, 4))
        scores = self.samm(features, class_proportions(onehot, STRIDE))
        keep = top_k_mask(scores, keep_ratio)
        return F.normalize(self.to_latent(features), dim=1) * scores, keep, scores, features

    def decode_codes(self, codes: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        """Codes (N×D×h×w) + keep mask → class logits at full size (16h × 16w)."""
        filled = torch.where(keep, codes, self.mask_token.to(codes.dtype))
        x = self.demasker(torch.cat([filled, keep.to(codes.dtype)], dim=1))
        logits = self.decoder(x)
        return F.interpolate(logits, scale_factor=4, mode="bilinear", align_corners=False)

    def decode_indices(self, indices: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        codes = self.quantizer.indices_to_codes(indices.clamp(0, self.quantizer.num_codes - 1))
        return self.decode_codes(codes, keep)

    def forward(self, onehot: torch.Tensor, keep_ratio: torch.Tensor | float,
                erased: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """``erased``: N×1×h×w bool, kept positions the decoder does not get (lost packets)."""
        latents, keep, scores, _ = self.encode(onehot, keep_ratio)
        codes, indices, commit = self.quantizer(latents, keep)
        arrived = keep if erased is None else keep & ~erased
        return {"logits": self.decode_codes(codes, arrived), "indices": indices, "keep": keep,
                "scores": scores, "vq_loss": commit}

"""The coarse decoder: the decoded thumbnail, upsampled, plus a learned residual.

Inputs (full size): the upsampled thumbnail (faithful colours and layout, blurred), the
generator's image (G_x's SPADE decode: detail and semantics, invented colours) and the
decoded semantic map. Output: thumbnail + residual, so an untrained (zero) head gives the
plain upsampled thumbnail and training only ever adds what the other inputs make believable.
A small U-Net at 1/2, 1/4 and 1/8 resolution (pixel-unshuffled stem, sub-pixel head): CPU-cheap.
Without a generator image (thumbnail-only streams) the thumbnail stands in for it and the map
is all zero.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .blocks import ResBlock


@dataclass(frozen=True)
class CoarseDecoderConfig:
    num_classes: int = 11
    width: int = 32

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "CoarseDecoderConfig":
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})


class CoarseDecoder(nn.Module):
    def __init__(self, config: CoarseDecoderConfig = CoarseDecoderConfig()):
        super().__init__()
        self.config = config
        w, c = config.width, config.num_classes
        self.stem = nn.Sequential(nn.PixelUnshuffle(2), nn.Conv2d((6 + c) * 4, w, 3, 1, 1), ResBlock(w))
        self.down1 = nn.Sequential(nn.Conv2d(w, 2 * w, 3, 2, 1), ResBlock(2 * w), ResBlock(2 * w))
        self.down2 = nn.Sequential(nn.Conv2d(2 * w, 3 * w, 3, 2, 1), ResBlock(3 * w), ResBlock(3 * w))
        self.up2 = nn.Conv2d(3 * w, 2 * w, 1)
        self.merge1 = ResBlock(4 * w, 2 * w)
        self.up1 = nn.Conv2d(2 * w, w, 1)
        self.merge0 = ResBlock(2 * w, w)
        self.head = nn.Sequential(nn.Conv2d(w, 12, 3, 1, 1), nn.PixelShuffle(2))
        nn.init.zeros_(self.head[0].weight)
        nn.init.zeros_(self.head[0].bias)

    def forward(self, coarse: torch.Tensor, generated: torch.Tensor | None = None,
                onehot: torch.Tensor | None = None) -> torch.Tensor:
        """coarse, generated: N×3×H×W in [-1, 1]; onehot N×C×H×W (H, W even) → N×3×H×W."""
        if generated is None:
            generated = coarse
        if onehot is None:
            onehot = coarse.new_zeros(coarse.shape[0], self.config.num_classes, *coarse.shape[-2:])
        x0 = self.stem(torch.cat([coarse, generated, onehot], dim=1))
        x1 = self.down1(x0)
        x2 = self.down2(x1)
        y1 = self.merge1(torch.cat([x1, F.interpolate(self.up2(x2), size=x1.shape[-2:], mode="nearest")], 1))
        y0 = self.merge0(torch.cat([x0, F.interpolate(self.up1(y1), size=x0.shape[-2:], mode="nearest")], 1))
        return coarse + self.head(y0)

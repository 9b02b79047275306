"""Bundled semantic segmenter: EfficientNet-Lite0 trunk + a light FPN head (output stride 4)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .efficientnet_lite import EfficientNetLite, normalise


class SeparableConv(nn.Sequential):
    def __init__(self, c: int):
        super().__init__(
            nn.Conv2d(c, c, 3, 1, 1, groups=c, bias=False), nn.BatchNorm2d(c), nn.ReLU(inplace=True),
            nn.Conv2d(c, c, 1, bias=False), nn.BatchNorm2d(c), nn.ReLU(inplace=True),
        )


class SegmenterNet(nn.Module):
    """RGB (float, 0..255, N×3×H×W, H and W multiples of 32) → class logits at full size."""

    def __init__(self, num_classes: int = 11, width: int = 96):
        super().__init__()
        self.trunk = EfficientNetLite()
        chans = self.trunk.feature_channels
        self.laterals = nn.ModuleList(nn.Conv2d(c, width, 1) for c in chans)
        # global context gate on the deepest features (LR-ASPP style)
        self.context = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(chans[-1], width, 1), nn.Sigmoid())
        self.smooth = nn.ModuleList(SeparableConv(width) for _ in chans[:-1])
        self.classifier = nn.Conv2d(width, num_classes, 1)

    def features(self, rgb_255: torch.Tensor) -> list[torch.Tensor]:
        return self.trunk(normalise(rgb_255))

    def forward(self, rgb_255: torch.Tensor) -> torch.Tensor:
        return self.forward_with_features(rgb_255)[0]

    def forward_with_features(self, rgb_255: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """(class logits at full size, the trunk's features at strides 4 … 32)."""
        feats = self.features(rgb_255)
        x = self.laterals[-1](feats[-1]) * self.context(feats[-1])
        for i in range(len(feats) - 2, -1, -1):
            lateral = self.laterals[i](feats[i])
            x = F.interpolate(x, size=lateral.shape[-2:], mode="bilinear", align_corners=False)
            x = self.smooth[i](x + lateral)
        logits = self.classifier(x)
        return F.interpolate(logits, size=rgb_255.shape[-2:], mode="bilinear", align_corners=False), feats

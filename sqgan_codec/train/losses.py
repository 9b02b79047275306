"""Losses: class-weighted L1, perceptual distance on EfficientNet-Lite features."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from typing import Sequence

from ..classes import CLASS_RELEVANCE
from ..nets.efficientnet_lite import EfficientNetLite


def relevance_pixel_weights(labels: torch.Tensor, strength: float = 2.0,
                            relevance: Sequence[float] = CLASS_RELEVANCE) -> torch.Tensor:
    """Per-pixel weight 1 + strength × relevance of the pixel's class (``relevance``: the
    vocabulary's, per class; void, any id past the last class: 1)."""
    rel = torch.tensor(list(relevance) + [0.0], device=labels.device)
    return 1.0 + strength * rel[labels.long().clamp(max=len(relevance))]


def weighted_l1(recon: torch.Tensor, target: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    return ((recon - target).abs().mean(1) * weights).sum() / weights.sum()


def object_colour_l1(recon: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, cell: int = 4) -> torch.Tensor:
    """L1 between the mean colours of ``recon`` and ``target`` inside ``mask`` (B×H×W, the
    pixels of the classes a priority asks for) over ``cell``×``cell`` cells, weighted by how much
    of each cell the mask covers. Local colour, not texture: a decoder pushed by a semantic loss
    may sharpen an object's edges but not paint it in its class's typical colours."""
    m = mask[:, None].to(recon.dtype)
    cover = F.avg_pool2d(m, cell)
    denom = cover.clamp(min=1e-6)  # (no host sync: a crop without such pixels gives 0 / eps = 0)
    mean_recon = F.avg_pool2d(recon * m, cell) / denom
    mean_target = F.avg_pool2d(target * m, cell) / denom
    return ((mean_recon - mean_target).abs().mean(1, keepdim=True) * cover).sum() / cover.sum().clamp(min=1e-6)


def luma_gradient_only(rgb: torch.Tensor) -> torch.Tensor:
    """``rgb`` (B×3×H×W) unchanged, with a gradient only along the grey axis: each pixel's
    chroma (its colour minus its channel mean) is detached. A loss on the result can make a pixel
    brighter or darker, never bluer: the semantic loss shapes objects without recolouring them."""
    grey = rgb.mean(1, keepdim=True)
    return grey + (rgb - grey).detach()


def perceptual_keys(trunk: EfficientNetLite, state: dict[str, torch.Tensor]) -> list[str]:
    """The keys of a trunk state the perceptual loss uses: the stem and the blocks up to
    stride 16 (a fifth of the trunk's weights: what the GPU pack carries)."""
    last = trunk.taps[4]
    return [k for k in state if k.startswith(("conv_stem.", "bn0."))
            or (k.startswith("blocks.") and int(k.split(".")[1]) <= last)]


class PerceptualLoss(nn.Module):
    """L1 between frozen ImageNet EfficientNet-Lite0 features at strides 4, 8 and 16."""

    def __init__(self, trunk_state: dict[str, torch.Tensor]):
        super().__init__()
        trunk = EfficientNetLite()
        missing, unexpected = trunk.load_state_dict(trunk_state, strict=False)
        used = perceptual_keys(trunk, trunk.state_dict())
        if unexpected or set(missing) & set(used):
            raise ValueError(f"ImageNet trunk weights do not fit EfficientNet-Lite0 (missing "
                             f"{sorted(set(missing) & set(used))[:3]}, unexpected {unexpected[:3]})")
        self.stem = nn.Sequential(trunk.conv_stem, trunk.bn0, nn.ReLU6())
        self.blocks = trunk.blocks[: trunk.taps[4] + 1]
        self.taps = {trunk.taps[1], trunk.taps[2], trunk.taps[4]}
        self.eval().requires_grad_(False)

    def train(self, mode: bool = True) -> "PerceptualLoss":
        return super().train(False)  # frozen BN statistics, always

    def features(self, rgb: torch.Tensor) -> list[torch.Tensor]:
        x = self.stem(rgb)  # [-1, 1] is the trunk's own input range ((x·255 − 127)/128)
        out = []
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i in self.taps:
                out.append(x)
        return out

    def forward(self, recon: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            ref = self.features(target)
        return sum(F.l1_loss(a, b) for a, b in zip(self.features(recon), ref))

"""EfficientNet-Lite trunk (no squeeze-excite, ReLU6), returning multi-scale features.

Parameter names mirror the public ImageNet checkpoints with leading underscores removed, so
``load_imagenet_state`` is a rename, not a conversion.
"""
from __future__ import annotations

import torch
from torch import nn

# (repeats, kernel, stride, expand, out_channels) per stage, EfficientNet-B0 layout.
_LITE0_STAGES = ((1, 3, 1, 1, 16), (2, 3, 2, 6, 24), (2, 5, 2, 6, 40), (3, 3, 2, 6, 80),
                 (3, 5, 1, 6, 112), (4, 5, 2, 6, 192), (1, 3, 1, 6, 320))

# RGB in [0, 255] is mapped to (x - 127) / 128, as the Lite models were trained.
MEAN_255 = 127.0
STD_255 = 128.0


def _bn(c: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(c, eps=1e-3, momentum=0.01)


class MBConvBlock(nn.Module):
    def __init__(self, cin: int, cout: int, kernel: int, stride: int, expand: int):
        super().__init__()
        mid = cin * expand
        self.has_expand = expand != 1
        if self.has_expand:
            self.expand_conv = nn.Conv2d(cin, mid, 1, bias=False)
            self.bn0 = _bn(mid)
        self.depthwise_conv = nn.Conv2d(mid, mid, kernel, stride, kernel // 2, groups=mid, bias=False)
        self.bn1 = _bn(mid)
        self.project_conv = nn.Conv2d(mid, cout, 1, bias=False)
        self.bn2 = _bn(cout)
        self.residual = stride == 1 and cin == cout
        self.act = nn.ReLU6(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.act(self.bn0(self.expand_conv(x))) if self.has_expand else x
        y = self.act(self.bn1(self.depthwise_conv(y)))
        y = self.bn2(self.project_conv(y))
        return x + y if self.residual else y


class EfficientNetLite(nn.Module):
    """Trunk up to stride 32. ``forward`` returns features at strides 4, 8, 16, 32."""

    feature_channels = (24, 40, 112, 320)

    def __init__(self) -> None:
        super().__init__()
        self.conv_stem = nn.Conv2d(3, 32, 3, 2, 1, bias=False)
        self.bn0 = _bn(32)
        blocks, cin = [], 32
        self.taps: list[int] = []
        for repeats, k, s, e, cout in _LITE0_STAGES:
            for r in range(repeats):
                blocks.append(MBConvBlock(cin, cout, k, s if r == 0 else 1, e))
                cin = cout
            self.taps.append(len(blocks) - 1)
        self.blocks = nn.ModuleList(blocks)
        # stage ends at strides 4 (stage 2), 8 (3), 16 (5), 32 (7)
        self.tap_ids = {self.taps[1], self.taps[2], self.taps[4], self.taps[6]}
        self.act = nn.ReLU6(inplace=True)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.act(self.bn0(self.conv_stem(x)))
        feats = []
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i in self.tap_ids:
                feats.append(x)
        return feats


def normalise(rgb_255: torch.Tensor) -> torch.Tensor:
    """Float RGB in [0, 255] → the trunk's input range."""
    return (rgb_255 - MEAN_255) / STD_255


def imagenet_state_to_trunk(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename an ImageNet EfficientNet-Lite checkpoint's keys to this module's (head/fc dropped)."""
    out = {}
    for key, value in state.items():
        if key.startswith(("_fc", "_conv_head", "_bn1.")):
            continue
        out[".".join(part.lstrip("_") for part in key.split("."))] = value
    return out

"""The erasure adapter: G_x's de-masker tuned to fill the positions a channel lost.

SAMM drops the positions it scores least relevant; a lost packet drops runs of any positions,
spread over the picture (sqgan_codec.packets' interleaved order). The adapter is a small change
of the shipped de-masker — a low-rank delta for each of its 3x3 convolutions, and its own copy
of the small layers that read the keep mask and the map (``from_codes``, SPADE's modulation) —
trained so that the de-masker's features after a loss are those of the same stream with nothing
lost (train/erasure.py). A decoder applies it only to packet streams that lost image tokens: a
stream with nothing lost decodes with the shipped model, exactly as before.
"""
from __future__ import annotations

import copy
from dataclasses import asdict, dataclass

import torch
from torch import nn

from .image import ImageCodec


@dataclass(frozen=True)
class ErasureAdapterConfig:
    rank: int = 16

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "ErasureAdapterConfig":
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})


class LowRankConv(nn.Module):
    """``conv(x) + up(down(x))``: a trainable rank-r change of a frozen convolution (``up``
    starts at zero, so the untrained adapter is the shipped de-masker)."""

    def __init__(self, conv: nn.Conv2d, rank: int):
        super().__init__()
        self.conv = conv.requires_grad_(False)
        self.down = nn.Conv2d(conv.in_channels, rank, conv.kernel_size, conv.stride, conv.padding, bias=False)
        self.up = nn.Conv2d(rank, conv.out_channels, 1, bias=False)
        nn.init.zeros_(self.up.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x) + self.up(self.down(x))

    def merged(self) -> nn.Conv2d:
        """One convolution with the delta added to its weight (what inference runs)."""
        conv = copy.deepcopy(self.conv)
        delta = torch.einsum("or,rikl->oikl", self.up.weight[:, :, 0, 0].float(), self.down.weight.float())
        conv.weight.data = (conv.weight.float() + delta).to(conv.weight.dtype)
        return conv


def _tuned_layers(image: ImageCodec) -> dict[str, nn.Module]:
    """The layers the adapter replaces whole, by their name in the ImageCodec."""
    layers = {"from_codes": image.from_codes}
    for i, block in enumerate(image.demasker):
        layers[f"demasker.{i}.norm"] = block.norm
    return layers


def attach(image: ImageCodec, config: ErasureAdapterConfig) -> list[nn.Parameter]:
    """Freeze ``image``, wrap its de-masker's convolutions in :class:`LowRankConv` (in place)
    and return the adapter's trainable parameters."""
    image.requires_grad_(False)
    for block in image.demasker:
        block.conv0 = LowRankConv(block.conv0, config.rank)
        block.conv1 = LowRankConv(block.conv1, config.rank)
    for layer in _tuned_layers(image).values():
        layer.requires_grad_(True)
    return [p for p in image.parameters() if p.requires_grad]


def adapter_state(image: ImageCodec) -> dict[str, torch.Tensor]:
    """What an adapter ships (names relative to the ImageCodec): the low-rank factors and the
    tuned layers' weights."""
    out = {}
    for i, block in enumerate(image.demasker):
        for name in ("conv0", "conv1"):
            conv = getattr(block, name)
            if not isinstance(conv, LowRankConv):
                raise ValueError("the de-masker has no adapter attached")
            out[f"demasker.{i}.{name}.down"] = conv.down.weight.detach()
            out[f"demasker.{i}.{name}.up"] = conv.up.weight.detach()
    for prefix, layer in _tuned_layers(image).items():
        out.update({f"{prefix}.{k}": v.detach() for k, v in layer.state_dict().items()})
    return out


def adapted(image: ImageCodec, state: dict[str, torch.Tensor], config: ErasureAdapterConfig) -> ImageCodec:
    """A copy of ``image`` with the adapter ``state`` applied and its deltas merged: the same
    networks, fit for inference. Raises ValueError when the tensors do not fit."""
    net = copy.deepcopy(image)
    attach(net, config)
    expected = adapter_state(net)
    if set(state) != set(expected) or any(state[k].shape != v.shape for k, v in expected.items()):
        raise ValueError("the erasure adapter's tensors do not fit this model's de-masker")
    for i, block in enumerate(net.demasker):
        for name in ("conv0", "conv1"):
            conv = getattr(block, name)
            conv.down.weight.data = state[f"demasker.{i}.{name}.down"].float()
            conv.up.weight.data = state[f"demasker.{i}.{name}.up"].float()
            setattr(block, name, conv.merged())
    for prefix, layer in _tuned_layers(net).items():
        layer.load_state_dict({k[len(prefix) + 1:]: v.float() for k, v in state.items()
                               if k.startswith(prefix + ".") and not k.endswith((".down", ".up"))})
    return net.requires_grad_(False).eval()

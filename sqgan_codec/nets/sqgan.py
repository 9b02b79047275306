"""The whole SQ-GAN model: G_s (semantic map) and G_x (image), built from one config dict."""
from __future__ import annotations

from dataclasses import asdict, dataclass

from torch import nn

from .image import STRIDE as IMAGE_STRIDE
from .image import ImageCodec
from .ssm import STRIDE as MAP_STRIDE
from .ssm import SemanticMapCodec


@dataclass(frozen=True)
class SQGANConfig:
    num_classes: int = 11
    ssm_dim: int = 32
    ssm_codes: int = 512
    image_dim: int = 32
    image_codes: int = 1024
    image_channels: tuple[int, ...] = (256, 160, 96, 48)
    latent_stride: int = 16

    def to_dict(self) -> dict:
        d = asdict(self)
        d["image_channels"] = list(self.image_channels)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "SQGANConfig":
        d = dict(d)
        d["image_channels"] = tuple(d.get("image_channels", cls.image_channels))
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})


class SQGAN(nn.Module):
    def __init__(self, config: SQGANConfig = SQGANConfig()):
        super().__init__()
        # the encoders downsample four times by 2: the stride is the architecture's, and a config
        # that says otherwise would code on a grid the networks do not produce
        if not config.latent_stride == IMAGE_STRIDE == MAP_STRIDE:
            raise ValueError(f"latent_stride {config.latent_stride}: these networks code on a "
                             f"{IMAGE_STRIDE}-pixel grid")
        self.config = config
        self.ssm = SemanticMapCodec(config.num_classes, config.ssm_dim, config.ssm_codes)
        self.image = ImageCodec(config.num_classes, config.image_dim, config.image_codes,
                                config.image_channels)

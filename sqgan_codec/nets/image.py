"""G_x: the image encoder (conditioned on the SSM), SAMM, VQ, de-masker and SPADE decoder."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .blocks import ResBlock, SPADEResBlock, class_proportions
from .quantizer import VectorQuantizer
from .samm import SAMM, top_k_mask

STRIDE = 16
# Banded decoding of the last two up blocks: input rows per band, and the rows of context each
# band reads beyond its own (at most three 3x3 convolutions after a ×2 upsampling need 3 output
# rows: 2 input rows cover them).
BAND_ROWS = 32
BAND_HALO = 2


class ImageCodec(nn.Module):
    def __init__(self, num_classes: int = 11, dim: int = 32, num_codes: int = 1024,
                 channels: tuple[int, ...] = (256, 160, 96, 48)):
        super().__init__()
        c16, c8, c4, c2 = channels
        self.num_classes = num_classes
        cin = (3 + num_classes) * 16  # pixel-unshuffled by 4: cheap full-resolution stem
        self.encoder = nn.Sequential(
            nn.PixelUnshuffle(4), nn.Conv2d(cin, c4, 1), ResBlock(c4),
            nn.Conv2d(c4, c8, 3, 2, 1), ResBlock(c8),
            nn.Conv2d(c8, c16, 3, 2, 1), ResBlock(c16), ResBlock(c16),
        )
        self.to_latent = nn.Conv2d(c16, dim, 1)
        self.samm = SAMM(c16, num_classes)
        self.quantizer = VectorQuantizer(num_codes, dim)
        self.mask_token = nn.Parameter(torch.zeros(1, dim, 1, 1))
        self.from_codes = nn.Conv2d(dim + 1, c16, 1)
        self.demasker = nn.ModuleList(SPADEResBlock(c16, c16, num_classes) for _ in range(3))
        self.up = nn.ModuleList([
            SPADEResBlock(c16, c8, num_classes), SPADEResBlock(c8, c4, num_classes),
            SPADEResBlock(c4, c2, num_classes, hidden=16),
        ])
        # last ×2 by sub-pixel convolution: no full-resolution feature maps at all
        self.to_rgb = nn.Sequential(nn.LeakyReLU(0.2), nn.Conv2d(c2, 12, 3, 1, 1), nn.PixelShuffle(2), nn.Tanh())

    def encode(self, rgb: torch.Tensor, onehot: torch.Tensor, keep_ratio: torch.Tensor | float
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """RGB in [-1, 1] + one-hot SSM (N×C×H×W) → (scaled latents, keep mask, scores)."""
        features = self.encoder(torch.cat([rgb, onehot], dim=1))
        scores = self.samm(features, class_proportions(onehot, STRIDE))
        keep = top_k_mask(scores, keep_ratio)
        return F.normalize(self.to_latent(features), dim=1) * scores, keep, scores

    def decode_codes(self, codes: torch.Tensor, keep: torch.Tensor, onehot: torch.Tensor,
                     band_rows: int | None = None) -> torch.Tensor:
        """Codes + keep mask + decoded one-hot SSM (full size) → RGB in [-1, 1].

        Without gradients, the last two up blocks (quarter and half resolution, where most of
        the memory goes) run in bands of ``band_rows`` input rows (default :data:`BAND_ROWS`;
        0: whole image), normalised with the whole image's statistics, so peak memory grows
        far slower than the image and the result is the whole-image one (to float rounding:
        ±1 level in rare pixels)."""
        x = self.demask(codes, keep, onehot)
        stride = STRIDE
        band_rows = BAND_ROWS if band_rows is None else band_rows
        last = len(self.up) - 1
        for i, block in enumerate(self.up):
            if (i >= last - 1 and band_rows and not torch.is_grad_enabled()
                    and x.shape[-2] > band_rows + 2 * BAND_HALO):
                x = self.decode_banded(x, onehot, block, band_rows, to_rgb=i == last)
                if i == last:
                    return x
                stride //= 2
                continue
            x = F.interpolate(x, scale_factor=2, mode="nearest")
            stride //= 2
            x = block(x, class_proportions(onehot, stride))
        return self.to_rgb(x)

    def demask(self, codes: torch.Tensor, keep: torch.Tensor, onehot: torch.Tensor) -> torch.Tensor:
        """The de-masker: codes + keep mask + one-hot map → features on the latent grid, every
        position filled (those SAMM dropped and those a channel lost alike)."""
        filled = torch.where(keep, codes, self.mask_token.to(codes.dtype))
        x = self.from_codes(torch.cat([filled, keep.to(codes.dtype)], dim=1))
        cond = class_proportions(onehot, STRIDE)
        for block in self.demasker:
            x = block(x, cond)
        return x

    def decode_banded(self, x: torch.Tensor, onehot: torch.Tensor, block: SPADEResBlock, band_rows: int,
                to_rgb: bool) -> torch.Tensor:
        """``block`` (after the ×2 upsampling), and ``to_rgb`` if asked, over row bands of ``x``."""
        # nearest ×2 repeats every value 4 times: the upsampled map's instance statistics are x's
        stats = (x.mean((2, 3), keepdim=True), x.var((2, 3), unbiased=False, keepdim=True))
        n, _, h, w = x.shape
        scale = onehot.shape[-2] // h  # full-resolution rows per row of x
        per = scale if to_rgb else 2  # output rows per row of x
        channels = 3 if to_rgb else block.conv1.out_channels
        out = x.new_empty(n, channels, h * per, w * per)
        for r0 in range(0, h, band_rows):
            r1 = min(h, r0 + band_rows)
            a, b = max(0, r0 - BAND_HALO), min(h, r1 + BAND_HALO)
            band = F.interpolate(x[:, :, a:b], scale_factor=2, mode="nearest")
            y = block(band, class_proportions(onehot[:, :, a * scale:b * scale], scale // 2), stats)
            if to_rgb:
                y = self.to_rgb(y)
            out[:, :, r0 * per:r1 * per] = y[:, :, (r0 - a) * per:(r1 - a) * per]
        return out

    def decode_indices(self, indices: torch.Tensor, keep: torch.Tensor, onehot: torch.Tensor) -> torch.Tensor:
        codes = self.quantizer.indices_to_codes(indices.clamp(0, self.quantizer.num_codes - 1))
        return self.decode_codes(codes, keep, onehot)

    def forward(self, rgb: torch.Tensor, onehot_enc: torch.Tensor, keep_ratio: torch.Tensor | float,
                onehot_dec: torch.Tensor | None = None, erased: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """``erased``: N×1×h×w bool, kept positions the decoder does not get (lost packets)."""
        latents, keep, scores = self.encode(rgb, onehot_enc, keep_ratio)
        codes, indices, commit = self.quantizer(latents, keep)
        dec_map = onehot_enc if onehot_dec is None else onehot_dec
        arrived = keep if erased is None else keep & ~erased
        return {"rgb": self.decode_codes(codes, arrived, dec_map), "indices": indices, "keep": keep,
                "scores": scores, "vq_loss": commit}

"""Which image tokens matter to the task: scores from the segmenter's gradient (``--importance gradient``).

SAMM ranks latent positions by what the model learned to keep. Deep JSCC on the semantics of
pixels ranks them by the task instead: the image is decoded at an operating point (SAMM's mask
keeping :data:`AROUND` of the positions), the segmenter reads it, and ``grad · (mask_token −
code)``, summed over the code's channels, is each position's importance: to first order, what
the segmenter's loss (cross-entropy against the image's own semantic map) gains from having
that position's code rather than the mask token. Only the encoder ranks by it: masks are
transmitted, so nothing changes for the decoder. One decode and one segmenter pass with their
gradients: about 2 s and 0.6 GB for 480x360 on 2 CPU cores; the backward pass holds every
activation (about 3 KB per pixel), so above :data:`MAX_PIXELS` the scores come from a copy
scaled down to that size and are upsampled to the image's latent grid.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F

from .nets.blocks import one_hot_map, unit_to_pixels

if TYPE_CHECKING:
    from .codec import Analysis, Codec

_SEGMENTER_MULTIPLE = 32  # the bundled segmenter's input is padded to this
# The operating point the loss is linearised around: about the share of image tokens kept at
# 0.025-0.05 bpp. On CamVid val (10 frames, 0.03 bpp) it beat linearising with every token kept
# (mIoU 0.747 against 0.740 with the bundled segmenter, 0.675 against 0.672 with an unseen one).
AROUND = 0.4
MAX_PIXELS = 1 << 20  # about 3 GB for the backward pass


def differentiable_segmenter(codec: "Codec") -> Any:
    """A copy of the codec's segmenter network that autograd can run through (the loaded one
    may hold inference-mode tensors); ValueError for a segmenter without a network."""
    if getattr(codec, "_grad_segmenter", None) is None:
        net = getattr(codec.segmenter, "net", None)
        if net is None:
            raise ValueError("importance='gradient' differentiates the segmenter: it needs the bundled "
                             "one (a labels or ONNX segmenter has no network here)")
        from .nets.segnet import SegmenterNet

        with torch.inference_mode(False):
            copy = SegmenterNet(num_classes=codec.num_classes)
            copy.load_state_dict({k: v.clone() for k, v in net.state_dict().items()})
        codec._grad_segmenter = copy.to(codec.device).eval().requires_grad_(False)
    return codec._grad_segmenter


def gradient_scores(codec: "Codec", analysis: "Analysis", around: float | None = AROUND) -> torch.Tensor:
    """Image-token scores from the segmenter's gradient, as ranks in (0, 1] (1×1×gh×gw, the
    most important position 1), so priorities and ROIs multiply them as they multiply SAMM's.
    ``around``: linearise around SAMM's mask keeping that share (None: every token kept)."""
    h, w = analysis.semantic_map.shape
    if h * w > MAX_PIXELS:
        return _scores_from_a_smaller_copy(codec, analysis, around)
    segnet = differentiable_segmenter(codec)
    image = codec.net.image
    indices = torch.from_numpy(analysis.image_indices).to(codec.device)[None]
    gh, gw = indices.shape[-2:]
    labels = torch.from_numpy(codec.pad_to_grid(analysis.semantic_map, gh, gw)).to(codec.device)[None].long()
    target = torch.full_like(labels, -100)  # the grid's padding is not the image's
    target[:, :h, :w] = labels[:, :h, :w]
    target[target >= codec.num_classes] = -100  # void
    with torch.inference_mode(False), torch.enable_grad():
        codes = image.quantizer.indices_to_codes(indices).detach().clone().requires_grad_(True)
        if around is None:
            keep = torch.ones(1, 1, gh, gw, dtype=torch.bool, device=codec.device)
        else:
            from .nets.samm import top_k_mask

            keep = top_k_mask(analysis.image_scores, around).to(codec.device)
        rgb = image.decode_codes(codes, keep, one_hot_map(labels, codec.num_classes))
        x = unit_to_pixels(rgb.clamp(-1, 1))
        ph, pw = (-x.shape[-2]) % _SEGMENTER_MULTIPLE, (-x.shape[-1]) % _SEGMENTER_MULTIPLE
        x = F.pad(x, (0, pw, 0, ph), mode="replicate")
        logits = segnet(x)[:, :, :target.shape[-2], :target.shape[-1]]
        loss = F.cross_entropy(logits, target, ignore_index=-100, reduction="sum")
        (grad,) = torch.autograd.grad(loss, codes)
    rise = (grad * (image.mask_token.detach() - codes.detach())).sum(1)
    return _ranks(rise.view(1, 1, gh, gw))


def _ranks(values: torch.Tensor) -> torch.Tensor:
    """``values`` (1×1×gh×gw) → their ranks in (0, 1], the largest 1."""
    flat = values.flatten()
    ranks = torch.empty_like(flat)
    ranks[flat.argsort()] = torch.arange(1, flat.numel() + 1, dtype=flat.dtype, device=flat.device)
    return (ranks / flat.numel()).view_as(values)


def _scores_from_a_smaller_copy(codec: "Codec", analysis: "Analysis", around: float | None) -> torch.Tensor:
    """The scores of the image scaled down to :data:`MAX_PIXELS` (area-averaged pixels, nearest
    labels), upsampled bilinearly to the image's own latent grid and ranked again."""
    import math

    import numpy as np
    from PIL import Image

    h, w = analysis.semantic_map.shape
    f = math.sqrt(MAX_PIXELS / (h * w))
    size = (max(1, int(w * f)), max(1, int(h * f)))
    rgb = np.asarray(Image.fromarray(analysis.loaded.rgb).resize(size, Image.BOX))
    labels = np.asarray(Image.fromarray(analysis.semantic_map).resize(size, Image.NEAREST))
    small = gradient_scores(codec, codec.analyse(rgb, labels), around)
    gh, gw = analysis.image_indices.shape
    return _ranks(F.interpolate(small, size=(gh, gw), mode="bilinear", align_corners=False))

"""Rate control: fitting an analysed image's token layers (and refinement layer) to a budget.

The rate knob (one number in [0, 1]) sets both keep ratios; rate control bisects it for the
largest stream not above a budget, chooses how the semantic map is coded (``ssm="auto"``), and
gives the refinement layer the room the tokens leave. The codec hands itself in (``pack``,
``decode``, its segmenter): nothing here imports the codec at run time.
"""
from __future__ import annotations

import math
import warnings
from typing import TYPE_CHECKING

import numpy as np

from . import bitstream
from .refine import Residual

if TYPE_CHECKING:
    from .codec import Analysis, Codec
    from .options import EncodeOptions

# The rate knob: one number in [0, 1] sets both keep ratios. The semantic map gets its bits
# first (everything downstream is conditioned on it), the image tokens follow.
MIN_KEEP = 1.0 / 255.0


def keep_pair(quality: float) -> tuple[float, float]:
    """(keep_ssm, keep_image) for a rate knob in [0, 1]."""
    q = min(max(quality, 0.0), 1.0)
    return min(1.0, 0.15 + 1.2 * q), max(MIN_KEEP, q)


def keep_pair_biased(quality: float, ssm_bias: float) -> tuple[float, float]:
    """:func:`keep_pair` with the semantic map's share moved by ``ssm_bias`` (split search)."""
    keep_ssm, keep_image = keep_pair(quality)
    return min(1.0, max(MIN_KEEP, keep_ssm + ssm_bias)), keep_image


# Semantic-map shares tried by ``split="search"`` (0 = the paper-style fixed split).
SPLIT_BIASES = (-0.1, 0.0, 0.15, 0.35)
# Refinement layer (refine.py). "auto" spends only the room left once every token is kept
# (REFINE_MIN_BYTES at least): below the token ceiling it costs the segmenter and the FID-style
# score more than it gains them. "on" sets REFINE_SHARE of every budget aside for it (PSNR:
# +0.8 to 0.9 dB at 0.025-0.05 bpp). Strides are tried finest first; a finer stride is kept while
# its step stays <= REFINE_MAX_STEP. Without rate control, "on" uses REFINE_DEFAULT.
REFINE_SHARE = 0.25
REFINE_MIN_BYTES = 40
REFINE_STRIDES = (8, 16, 32)
REFINE_MAX_STEP = 24
REFINE_DEFAULT = (32, 12)
REFINE_FRAMING_BYTES = 7  # type byte, length varint (≤ 2 bytes below 16 KiB), CRC32
# ssm="auto" picks the exact map only if it leaves at least this share of image tokens.
LOSSLESS_MIN_IMAGE_KEEP = 0.5


def budget_of(analysis: "Analysis", options: "EncodeOptions") -> float:
    """Bytes a rate-controlled encode may spend (``bpp`` and/or ``max_bytes``)."""
    pixels = analysis.loaded.width * analysis.loaded.height
    budget = math.inf if options.bpp is None else options.bpp * pixels / 8.0
    return budget if options.max_bytes is None else min(budget, options.max_bytes)


def token_stream(codec: "Codec", analysis: "Analysis", options: "EncodeOptions", seg_id: int) -> bytes:
    """The token layers (semantic map, image tokens, refinement) of an analysed image."""
    if not options.rate_controlled:
        q = 0.3 if options.keep is None else options.keep
        ssm = "vq" if options.ssm == "auto" else options.ssm
        data = codec.pack(analysis, *keep_pair(q), segmenter_id=seg_id, ssm=ssm)
        if options.refine == "on":
            stride, step = REFINE_DEFAULT
            residual = Residual(analysis.loaded.rgb, codec._decode_arrays(data)[0], stride)
            data = bitstream.append_refinement(data, residual.encode(step))
        return data
    pixels = analysis.loaded.width * analysis.loaded.height
    budget = budget_of(analysis, options)
    refine = options.refine
    ssm = choose_ssm(codec, analysis, budget, seg_id, options.ssm, refine)
    biases = SPLIT_BIASES if options.split == "search" and ssm == "vq" else (0.0,)
    candidates = [fit_refined(codec, analysis, budget, seg_id, ssm, b, refine) for b in biases]
    if len(candidates) == 1:
        best = candidates[0]
    else:
        best = max(dict.fromkeys(candidates), key=lambda d: score_decode(codec, d, analysis))
    if len(best) > budget:
        warnings.warn(f"{analysis.loaded.name or 'image'}: cannot go below {len(best)} bytes "
                      f"({8 * len(best) / pixels:.4f} bpp); wrote the smallest stream", stacklevel=3)
    return best


def refine_reserve(budget: float, refine: str) -> float:
    """Bytes of a budget set aside for the refinement layer before the tokens are fitted."""
    return max(REFINE_MIN_BYTES, REFINE_SHARE * budget) if refine == "on" else 0.0


def choose_ssm(codec: "Codec", analysis: "Analysis", budget: float, seg_id: int, ssm: str, refine: str) -> str:
    """``auto``: the exact map when G_s's largest stream leaves room for it (with at least
    ``LOSSLESS_MIN_IMAGE_KEEP`` of the image tokens and the refinement reserve)."""
    if ssm != "auto":
        return ssm
    if codec.lossless_tables is None:
        return "vq"
    room = budget - refine_reserve(budget, refine)
    if len(codec.pack(analysis, 1.0, 1.0, segmenter_id=seg_id, ssm="vq")) >= room:
        return "vq"
    lossless = codec.pack(analysis, 1.0, LOSSLESS_MIN_IMAGE_KEEP, segmenter_id=seg_id, ssm="lossless")
    return "lossless" if len(lossless) <= room else "vq"


def fit_refined(codec: "Codec", analysis: "Analysis", budget: float, seg_id: int, ssm: str,
                ssm_bias: float, refine: str) -> bytes:
    """Token stream plus refinement layer within ``budget`` bytes: the tokens get the budget
    less the reserve of ``refine``, the refinement the room they leave."""
    tokens = fit_rate(codec, analysis, budget - refine_reserve(budget, refine), seg_id, ssm, ssm_bias)
    if refine == "off":
        return tokens
    room = budget - len(tokens) - REFINE_FRAMING_BYTES
    if room >= (1 if refine == "on" else REFINE_MIN_BYTES):
        payload = refinement_within(codec, analysis, tokens, room)
        if payload is not None:
            return bitstream.append_refinement(tokens, payload)
    return tokens if refine == "auto" else fit_rate(codec, analysis, budget, seg_id, ssm, ssm_bias)


def refinement_within(codec: "Codec", analysis: "Analysis", tokens: bytes, room: float) -> bytes | None:
    """The finest refinement payload of at most ``room`` bytes: the finest stride whose
    step can stay ≤ REFINE_MAX_STEP, else the coarsest stride that fits at all."""
    decoded = codec._decode_arrays(tokens)[0]
    chosen = None
    for stride in REFINE_STRIDES:
        residual = Residual(analysis.loaded.rgb, decoded, stride)
        if len(residual.encode(255)) > room:
            continue
        lo, hi = 0, 255  # invariant: step hi fits; step lo does not (or is 0)
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if len(residual.encode(mid)) <= room:
                hi = mid
            else:
                lo = mid
        chosen = residual.encode(hi)
        if hi <= REFINE_MAX_STEP:
            break
    return chosen


def fit_rate(codec: "Codec", analysis: "Analysis", budget: float, seg_id: int, ssm: str = "vq",
             ssm_bias: float = 0.0, map_scale: int = 1,
             map_detail: tuple[int, np.ndarray] | None = None) -> bytes:
    """Largest stream not above ``budget`` bytes along the rate knob (bisection; ``map_scale``,
    ``map_detail``: an exact map at that reduced scale, refined over chosen cells, see
    :meth:`Codec.pack`)."""
    def at(q: float) -> bytes:
        return codec.pack(analysis, *keep_pair_biased(q, ssm_bias), segmenter_id=seg_id, ssm=ssm,
                          map_scale=map_scale, map_detail=map_detail)

    lo, hi = 0.0, 1.0
    best = at(lo)
    if len(best) > budget:
        return best  # cannot go that low: the smallest stream
    top = at(hi)
    if len(top) <= budget:
        return top
    for _ in range(14):
        mid = (lo + hi) / 2
        data = at(mid)
        if len(data) <= budget:
            lo, best = mid, data
        else:
            hi = mid
    return best


def score_decode(codec: "Codec", data: bytes, analysis: "Analysis") -> float:
    """Encoder-side quality of a candidate stream: agreement (mIoU) of the segmenter on
    the decoded image with the encoder's semantic map, plus a small PSNR term."""
    decoded = np.asarray(codec.decode(data).convert("RGB"))
    mse = np.mean((decoded.astype(np.float64) - analysis.loaded.rgb.astype(np.float64)) ** 2)
    psnr = 10 * math.log10(255.0 ** 2 / max(mse, 1e-10))
    return agreement(analysis.semantic_map, codec.segmenter.segment(decoded)) + 0.01 * psnr


def agreement(reference: np.ndarray, predicted: np.ndarray) -> float:
    """mIoU of two class-id maps over the classes present in either."""
    ious = []
    for c in np.union1d(np.unique(reference), np.unique(predicted)):
        inter = np.logical_and(reference == c, predicted == c).sum()
        union = np.logical_or(reference == c, predicted == c).sum()
        ious.append(inter / union)
    return float(np.mean(ious))

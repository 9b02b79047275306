"""Mode decisions: how one image's budget is spent between the coarse image, the semantic map
and the image tokens.

Under rate control the encoder builds a few candidate streams of the same budget, decodes them
itself, scores the decodes and sends the best:

* ``tokens``: the semantic map and image tokens only (the paper's codec; today's streams);
* ``coarse``: the thumbnail alone, upsampled (a classical codec's picture, nothing invented);
* ``coarse+learned``: the thumbnail through the coarse decoder;
* ``mixed-N``: map and tokens on N % of the budget, the thumbnail on the rest, rendered by the
  coarse decoder (the thumbnail pins colours and layout, the tokens add semantics and detail);
* ``scaledF-N``: the semantic map exact at 1/F (chunk M) with image tokens on N % of the budget
  beyond it, the thumbnail on the rest, rendered by the coarse decoder.

Which of them are built follows the domain check (below) and the tune (:func:`modes_for`):
an unfamiliar image gets the two coarse-image modes, a familiar one under ``balanced`` the
mode of :func:`balanced_mode` alone (the map exact at the finest scale a share of the budget
pays for; sent without decoding candidates), ``perceptual`` on a familiar image all of them.

The score is the user's trade-off (``tune``):

* ``semantic``: only the ``tokens`` candidate (what the semantic map and tokens alone give);
* ``perceptual``: the decode most similar to the original (multi-scale structural similarity
  of the luma, :func:`structural_similarity`);
* ``balanced`` (default): the most similar decode among those whose semantic agreement (the
  segmenter on the decode against the encoder's semantic map, mIoU) is within
  :data:`BALANCED_SEMANTIC_SLACK` of the best candidate's. On a familiar image that search is
  replaced by :func:`balanced_mode` (calibrated on CamVid val; the search costs three decodes,
  four times the rest of an encode), which beats every candidate of the search on semantics and
  on closeness to the image.

Domain check: when the segmenter is unsure of the original (mean top-class probability below
:data:`UNFAMILIAR_CONFIDENCE`), the image is unlike what the models were trained on;
the semantic agreement then means little, so ``balanced`` and ``perceptual`` both send the most
similar decode among those within :data:`UNFAMILIAR_PSNR_SLACK` of the highest PSNR, and the
result says so (:attr:`Decision.unfamiliar`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from . import bitstream, coarse
from .rate import agreement, budget_of, fit_rate, token_stream

if TYPE_CHECKING:  # no import cycle at run time: the codec hands itself in
    from .codec import Analysis, Codec
    from .options import EncodeOptions

TUNES = ("semantic", "balanced", "perceptual")
# Token-layer shares of the budget in the mixed candidates (0.45 and 0.65 were tried: on CamVid
# val they never beat 0.25 on semantics or LPIPS-style; at 0.025 bpp 0.1 is the smallest token
# stream anyway).
MIXED_SHARES = (0.1, 0.25)
# "balanced": the candidates whose semantic agreement is within this of the best candidate's
# compete on structural similarity. The floor follows the best semantics at each rate, so more
# bits never buy less semantics.
BALANCED_SEMANTIC_SLACK = 0.08
# "balanced" on a familiar image: the thumbnail, with the map and tokens on BALANCED_TOKEN_BPP
# (the semantics saturate there), at least a tenth and at most a quarter of the budget. On CamVid
# val (`benchmarks/calibrate_decide.py`, 11 frames with --shares 0.1,0.17,0.25, then 34 frames with
# --every 3 --modes mixed-10,mixed-25) the search among the token stream and the mixed streams
# picked a mixed one 32 times of 33; a tenth and a quarter of the budget code the same stream at
# 0.025 bpp; at 0.05 a quarter keeps more semantics (pooled mIoU 0.742 against 0.731, LPIPS-style
# 0.170 against 0.166); at 0.1 a tenth is as good semantically (0.773 against 0.775) and nearer
# the image (LPIPS-style 0.096 against 0.109, +0.3 dB). Building it alone makes the encode about
# 4x faster (no candidate decodes).
BALANCED_TOKEN_BPP = 0.0125
BALANCED_SHARES = (0.10, 0.25)  # the token layers' least and largest share of the budget
# "balanced" on a familiar image sends the semantic map exactly at a reduced scale instead
# (chunk M), the finest of BALANCED_MAP_SCALES whose code takes at most BALANCED_MAP_SHARE of the
# budget; the mixed mode above only where none fits. An exact map at 1/8 costs about what G_s's
# map and tokens cost at 0.025 bpp and renders far better. On CamVid val (26 frames, decoder
# 06a1; benchmarks/map_scale.py, docs/bench/map_scale.md) against the mixed mode at 0.025 /
# 0.05 / 0.1 bpp: 1/8 gave pooled mIoU +0.061 / +0.039 / +0.021, LPIPS-style -5 / -6 / -4 %,
# PSNR +0.1 to +0.2 dB; 1/6 +0.066 / +0.046 / +0.030 at -2 / -5 / -3 % (its code: 29 / 15 / 7 %
# of the budget); 1/4 kept a little more semantics at 0.025 but was farther from the image at
# every rate (LPIPS-style +3 / -2 / 0 %); image tokens beside the map (5 or 10 % of the budget)
# bought nothing.
BALANCED_MAP_SCALES = (16, 12, 8, 6)
BALANCED_MAP_SHARE = 0.3
# Beside a reduced exact map the thumbnail is at most half the image's size: at full size
# (what its PSNR picks at 0.1 bpp on some CamVid test sequences) it leaves the coarse decoder
# nothing to draw, and the semantics fell below those at 0.05 bpp. At half size: on CamVid test
# (1 frame in 8) at 0.1 bpp mIoU 0.617 against 0.609, LPIPS-style 0.0858 against 0.0884, PSNR
# -0.09 dB; on CamVid val the same.
SCALED_FINEST_THUMBNAIL = 2
# With a class prioritised (a --priority weight above 1) the map may take more of the budget:
# small objects keep their shape. (Before chunk F it went up to 1/4 uniformly: on CamVid test at
# 0.03 bpp, priority 4, Pole +0.039, Pedestrian +0.037, SignSymbol -0.017; giving the prioritised
# class's pixels more weight when a block's class is chosen gained less and cost the other
# classes more: whole blocks of a thin object's class are mostly wrong.)
PRIORITY_MAP_SHARE = 0.45
# Finer still where the prioritised classes are (chunk F, format 7.0): the map at the finest of
# PRIORITY_DETAIL_BASES within BALANCED_MAP_SHARE of the budget, then its cells at 1/DETAIL_SCALE,
# those whose refining adds most to the map's priority-weighted mean IoU first, until the map
# takes PRIORITY_MAP_SHARE. A priority w weighs its class's errors w**DETAIL_PRIORITY_EXPONENT:
# at 4, the refined cells are nearly all the class's. On CamVid test at 0.03 bpp, priority 4
# (benchmarks/priority.py --every 3; bundled / unseen segmenter), against the uniformly finer map
# (down to 1/4 within 45 %) it replaced: Pedestrian +0.031 / +0.013 against +0.024 / +0.006,
# SignSymbol -0.003 / +0.005 against -0.017 / +0.008, Pole +0.035 / +0.040 against +0.027 / +0.032,
# Bicyclist +0.100 / +0.108 against +0.056 / +0.094; the other classes -0.002 to -0.019.
PRIORITY_DETAIL_BASES = (16, 12, 8)
DETAIL_SCALE = 2
DETAIL_PRIORITY_EXPONENT = 2
# The domain check, set from CamVid train and val frames only (benchmarks/calibrate_decide.py
# --domain-only): there the segmenter's mean top-class probability is ≥ 0.915 in 99 % of frames.
# (A second rule, the thumbnail decoding much more like the image than the tokens, was dropped:
# that gap grows with the rate, and at 0.1 bpp it flagged CamVid test frames.)
UNFAMILIAR_CONFIDENCE = 0.90
# On an unfamiliar image only the pixels count: the candidates within this many dB of the highest
# PSNR compete on structural similarity (the learned renders can look sharper in luma while
# drifting from the image's colours; the thumbnail alone is as faithful as a classical codec).
UNFAMILIAR_PSNR_SLACK = 0.5
CHUNK_FRAMING = 7  # type byte, length varint (≤ 2 bytes below 16 KiB), CRC32
FILL = 0.97  # rate control's aim: streams within 3 % of their budget (and never over)
MODES = ("tokens", "coarse", "coarse+learned", *(f"mixed-{round(100 * s)}" for s in MIXED_SHARES))
# Above this many pixels the decision is taken on a copy of the image downscaled to it (same
# bits per pixel) and only the chosen mode is built at full size: decoding every candidate of a
# 4K image would take minutes on a CPU.
DECIDE_MAX_PIXELS = 180_000
PROXY_FINER = 3  # at full size, thumbnail scales down to a third of the proxy's are tried
# Regions of interest in a stream with a coarse image are also coded as their own, finer
# thumbnails (chunk P) on a share of the thumbnail's bytes: ROI_DENSITY times the bytes per pixel
# of the rest of the image, at most MAX_PATCH_SHARE of them.
ROI_DENSITY = 8.0
MAX_PATCH_SHARE = 0.75
# Boxes covering more of the image than this send no patches: a patch would code most of the
# image twice (a box of the whole frame lost 0.4-1.1 dB at 0.03 bpp on CamVid test); their tokens
# are still ranked first.
MAX_PATCH_AREA = 0.5
PATCH_FRAMING = 8  # a patch's region, scale and frame length
# Prioritised classes (``priority`` weights above 1) get patches too, over their objects in the
# encoder's semantic map: each connected region of at least PRIORITY_MIN_AREA of the image (a
# finer thumbnail of smaller ones, signs and poles, bought nothing on CamVid test at 0.03 bpp,
# docs/bench/priority.md), its box grown by PRIORITY_MARGIN pixels (at 480x360; in proportion to
# the image's size), the largest first.
PRIORITY_MIN_AREA = 0.005
PRIORITY_MARGIN = 16


@dataclass
class Decision:
    """What the encoder sent and why."""

    data: bytes
    mode: str
    tune: str
    scores: dict[str, float] = field(default_factory=dict)
    confidence: float | None = None
    unfamiliar: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"mode": self.mode, "tune": self.tune, "unfamiliar": self.unfamiliar,
                "confidence": None if self.confidence is None else round(self.confidence, 4),
                "scores": {k: round(v, 4) for k, v in self.scores.items()}}


def thumbnail_within(rgb: np.ndarray, room: float, overhead: int = 0, cache: dict | None = None,
                     scales: tuple[int, ...] | None = None, fmt: int = coarse.FORMAT_AV1
                     ) -> tuple[coarse.Thumbnail, int] | None:
    """The thumbnail scale (of ``scales``, default every scale of ``fmt``) and quality whose
    upsampled decode is nearest the image (PSNR) among those that fit ``room`` bytes (quick
    search frames), or None if none fits. ``cache`` (an analysis's) keeps the coded thumbnails
    and their errors for the next budget of the image."""
    cache = {} if cache is None else cache
    scales = coarse.SCALES_OF[fmt] if scales is None else scales
    h, w = rgb.shape[:2]
    best, best_mse, worse = None, math.inf, 0
    for scale in scales:
        if min(w, h) < 2 * scale and scale != scales[0]:
            break
        if worse == 2:  # past the best scale: the error rises from there on (one bump allowed)
            break
        if ("thumbnail", fmt, scale) not in cache:
            cache["thumbnail", fmt, scale] = coarse.Thumbnail(rgb, scale, fmt)
        thumb = cache["thumbnail", fmt, scale]
        quality = thumb.fit(room, overhead)
        if quality is None:
            continue
        if ("thumbnail error", fmt, scale, quality) not in cache:
            small = coarse.decode_small(thumb.encode(quality), w, h)
            up = coarse.upsample(small, w, h)
            cache["thumbnail error", fmt, scale, quality] = float(np.mean((up - rgb.astype(np.float32)) ** 2))
        err = cache["thumbnail error", fmt, scale, quality]
        if err < best_mse:
            best, best_mse, worse = (thumb, quality), err, 0
        else:
            worse += 1
    return best


def roi_patches(rgb: np.ndarray, boxes, room: float, cache: dict) -> bytes | None:
    """Chunk P's payload: each region of interest (clipped to the image; those under
    :data:`coarse.MIN_PATCH` pixels a side left out) coded as its own thumbnail, at the scale and
    quality nearest the region (:func:`thumbnail_within`) within its share of ``room`` (by area;
    see :data:`ROI_DENSITY`), or None where none fits or the boxes cover more than
    :data:`MAX_PATCH_AREA` of the image."""
    h, w = rgb.shape[:2]
    boxes = [(max(0, int(x)), max(0, int(y)), min(w, int(x) + int(bw)), min(h, int(y) + int(bh)))
             for x, y, bw, bh in boxes]
    boxes = [(x0, y0, x1 - x0, y1 - y0) for x0, y0, x1, y1 in boxes
             if x1 - x0 >= coarse.MIN_PATCH and y1 - y0 >= coarse.MIN_PATCH][: coarse.MAX_PATCHES]
    if not boxes:
        return None
    areas = [bw * bh for _, _, bw, bh in boxes]
    inside = sum(areas) / (w * h)
    if inside > MAX_PATCH_AREA:
        return None
    share = min(MAX_PATCH_SHARE, ROI_DENSITY * inside / (ROI_DENSITY * inside + 1 - inside))
    patches = []
    for (x, y, bw, bh), area in zip(boxes, areas):
        part = (room * share - 1) * area / sum(areas) - PATCH_FRAMING
        fitted = thumbnail_within(np.ascontiguousarray(rgb[y:y + bh, x:x + bw]), part,
                                  cache=cache.setdefault(("patch", x, y, bw, bh), {}))
        if fitted is None:
            continue
        thumb, quality = fitted
        frame = thumb.frame(quality, coarse.AV1_SPEED)  # the slower preset, as the thumbnail is sent
        patches.append(coarse.Patch(x, y, bw, bh, thumb.scale,
                                    frame if 2 + len(frame) <= part else thumb.frame(quality)))
    return coarse.patches_payload(patches) if patches else None


def patch_boxes(codec: "Codec", analysis: "Analysis", options: "EncodeOptions") -> tuple:
    """The boxes a stream with a coarse image sends as patches (:func:`roi_patches`): the
    options' regions of interest, then the largest objects of the prioritised classes (see
    :data:`PRIORITY_MIN_AREA`), at most :data:`coarse.MAX_PATCHES` in all. The objects are the
    segmenter's: where it misreads them, so do the patches. (Sending none on an image the domain
    check flags was tried: the bundled sample, whose cars read as signs, kept its thumbnail at 1/3
    and its real sign, but on CamVid test, Pedestrian=4 at 0.03 bpp, one flagged frame lost its
    pedestrians' patch and the class's pooled IoU fell from 0.416 to 0.393.)"""
    from .options import ALL_CLASSES  # (options imports this module)

    boxes = list(options.roi)
    wanted = [name for name, weight in (options.priority or {}).items() if name != ALL_CLASSES and weight > 1]
    if wanted and len(boxes) < coarse.MAX_PATCHES:
        import cv2

        smap = analysis.semantic_map
        h, w = smap.shape
        grow = round(PRIORITY_MARGIN * math.sqrt(h * w / (480 * 360)))
        found = []
        for name in wanted:
            mask = (smap == codec.vocabulary.class_id(name)).astype(np.uint8)
            n, _, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
            for x, y, bw, bh, area in stats[1:n]:
                if area >= PRIORITY_MIN_AREA * h * w:
                    x0, y0 = max(0, int(x) - grow), max(0, int(y) - grow)
                    x1, y1 = min(w, int(x + bw) + grow), min(h, int(y + bh) + grow)
                    found.append((int(area), (x0, y0, x1 - x0, y1 - y0)))
        boxes += [box for _, box in sorted(found, reverse=True)][: coarse.MAX_PATCHES - len(boxes)]
    return tuple(boxes)


def with_coarse(codec: "Codec", analysis: "Analysis", tokens: bytes | None, payload: bytes,
                seg_id: int, patches: bytes | None = None) -> bytes:
    """A stream with chunk C first, then chunk P (``patches``, if any), then the token layers of
    ``tokens`` (if any)."""
    first = [(bitstream.CHUNK_COARSE, payload)] + ([(bitstream.CHUNK_PATCHES, patches)] if patches else [])
    if tokens is None:
        return bitstream.pack(codec.header_for(analysis, segmenter_id=seg_id), first)
    stream = bitstream.unpack(tokens)
    return bitstream.pack(stream.header, [*first, *stream.chunks.items()])


def build(codec: "Codec", analysis: "Analysis", budget: float, tokens: Callable[[], bytes], seg_id: int,
          mode: str, scales: tuple[int, ...] | None = None, boxes=()) -> bytes | None:
    """The stream of one mode (see the module doc) within ``budget`` bytes, or None where the
    mode cannot fit it or this model has no coarse decoder (``tokens()``: the tokens-only
    stream; thumbnails at one of ``scales``, default all of the format's; quick-search
    thumbnail frames, see :func:`finalise`; ``boxes``: coded again as finer patches where the
    stream has an AV1 thumbnail, :func:`patch_boxes`, :func:`roi_patches`)."""
    if mode == "tokens":
        return tokens()
    rgb = analysis.loaded.rgb
    priority = prioritised(analysis)
    tag = codec.coarse_tag(priority)
    learned = mode != "coarse"
    if learned and not tag:
        return None
    render = coarse.RENDER_LEARNED if learned else coarse.RENDER_UPSAMPLE
    fmt = codec.thumbnail_format(render, priority)
    part = None
    if mode.startswith("mixed-"):
        part = fit_rate(codec, analysis, int(mode[6:]) / 100 * budget, seg_id)
        room = budget - len(part) - CHUNK_FRAMING
    elif mode.startswith("scaled"):
        spec, _, refine = mode[6:].partition("+")
        factor, share = (int(v) for v in spec.split("-"))
        detail = map_detail(codec, analysis, factor, *(int(v) for v in refine.split("x"))) if refine else None
        analysis = token_ranking(analysis, detail)
        scales = tuple(s for s in scales or coarse.SCALES_OF[fmt] if s >= SCALED_FINEST_THUMBNAIL) or scales
        exact = codec.pack(analysis, 0.0, 0.0, segmenter_id=seg_id, ssm="lossless", map_scale=factor,
                           map_detail=detail)
        part = fit_rate(codec, analysis, len(exact) + share / 100 * budget, seg_id, "lossless", map_scale=factor,
                        map_detail=detail)
        room = budget - len(part) - CHUNK_FRAMING
    else:
        room = budget - len(with_coarse(codec, analysis, None, b"", seg_id)) - CHUNK_FRAMING
    patches = roi_patches(rgb, boxes, room, analysis.cache) if boxes and fmt == coarse.FORMAT_AV1 else None
    if patches is not None:
        room -= len(patches) + CHUNK_FRAMING
    fitted = thumbnail_within(rgb, room, len(tag) if learned else 0, analysis.cache, scales, fmt)
    if fitted is None and patches is not None:  # no thumbnail fits beside the patches: without them
        patches, room = None, room + len(patches) + CHUNK_FRAMING
        fitted = thumbnail_within(rgb, room, len(tag) if learned else 0, analysis.cache, scales, fmt)
    if fitted is None:
        return None
    thumb, quality = fitted
    data = with_coarse(codec, analysis, part, thumb.encode(quality, render, tag if learned else b""), seg_id,
                       patches)
    return data if len(data) <= budget else None


def token_ranking(analysis: "Analysis", detail: tuple[int, np.ndarray] | None) -> "Analysis":
    """The analysis whose token ranking a stream with this ``map_detail`` sends: beside a map
    refined for the priorities (chunk F) the tokens are ranked without them
    (``Analysis.detail_tokens``, see ``Codec._ranked``)."""
    return analysis.detail_tokens if detail is not None and analysis.detail_tokens is not None else analysis


def map_coding(codec: "Codec", stream: bitstream.Stream) -> tuple[str, float, int, tuple[int, np.ndarray] | None]:
    """(ssm, ssm_bias, map_scale, map_detail) of :func:`fit_rate` that code a stream's map as it is coded."""
    scaled = stream.chunks.get(bitstream.CHUNK_SEMANTIC_SCALED)
    if scaled:
        factor, detail = scaled[0], None
        if bitstream.CHUNK_MAP_DETAIL in stream.chunks:
            from .ssm_lossless import decode_reduced

            factor, _, (scale, _, cells) = decode_reduced(scaled, stream.chunks[bitstream.CHUNK_MAP_DETAIL],
                                                          stream.header.height, stream.header.width,
                                                          codec.lossless_tables)
            detail = scale, cells
        return "lossless", 0.0, factor, detail
    return ("lossless" if bitstream.CHUNK_SEMANTIC_LOSSLESS in stream.chunks else "vq"), 0.0, 1, None


def finalise(codec: "Codec", analysis: "Analysis", data: bytes, budget: float, seg_id: int) -> bytes:
    """The chosen stream with its AV1 thumbnail coded again as it is sent
    (:meth:`coarse.Thumbnail.final_frame`: a slower preset, the stream within ``budget``); the
    token layers of a mixed stream then refitted to the room it leaves (AV1's quality steps are
    coarse: without it the stream could end several per cent below its budget). Other streams
    as they are."""
    stream = bitstream.unpack(data)
    payload = stream.chunks.get(bitstream.CHUNK_COARSE)
    if payload is None or coarse.chunk_format(payload) != coarse.FORMAT_AV1:
        return data
    chunk = coarse.parse(payload, stream.header.width, stream.header.height)
    thumb = analysis.cache.get(("thumbnail", chunk.format, chunk.scale))
    start = None if thumb is None else thumb.quality_of(chunk.frame)
    if start is None:
        return data
    rest = [(k, v) for k, v in stream.chunks.items() if k != bitstream.CHUNK_COARSE]
    sent_payload = lambda frame: coarse.payload(chunk.render, chunk.scale, frame, chunk.tag, chunk.format)  # noqa: E731
    with_frame = lambda frame: bitstream.pack(  # noqa: E731
        stream.header, [(bitstream.CHUNK_COARSE, sent_payload(frame)), *rest])

    # a thumbnail-only stream has nothing else to fill its budget with (a mixed one refits its tokens)
    full = None if rest else (lambda f: len(with_frame(f)) >= FILL * budget)
    frame = thumb.final_frame(start, lambda f: len(with_frame(f)) <= budget, full)
    if frame is None:
        return data
    out = with_frame(frame)
    if rest and len(out) < FILL * budget:
        sent = sent_payload(frame)
        patches = stream.chunks.get(bitstream.CHUNK_PATCHES)
        room = budget - len(sent) - CHUNK_FRAMING - (len(patches) + CHUNK_FRAMING if patches else 0)
        coding = map_coding(codec, stream)
        part = fit_rate(codec, token_ranking(analysis, coding[3]), room, seg_id, *coding)
        refitted = with_coarse(codec, analysis, part, sent, seg_id, patches)
        if len(out) < len(refitted) <= budget:
            out = refitted
    return out


def candidates(codec: "Codec", analysis: "Analysis", budget: float, tokens: bytes | Callable[[], bytes],
               seg_id: int, modes: tuple[str, ...] = MODES, boxes=()) -> dict[str, bytes]:
    """Each of ``modes``' stream of at most ``budget`` bytes (the tokens-only stream, given or
    made on demand, is always there when ``modes`` has it)."""
    make = tokens if callable(tokens) else (lambda: tokens)
    built = {mode: build(codec, analysis, budget, make, seg_id, mode, boxes=boxes) for mode in modes}
    return {mode: data for mode, data in built.items() if data is not None}


def familiarity(codec: "Codec", analysis: "Analysis") -> float | None:
    """The domain check's reading of an image: the bundled segmenter's mean top-class
    probability on it (None for a segmenter that does not say; kept in the analysis)."""
    if "confidence" not in analysis.cache:
        segmenter = codec.segmenter
        analysis.cache["confidence"] = (segmenter.describe([analysis.loaded.rgb])[0].confidence
                                        if hasattr(segmenter, "describe") else None)
    return analysis.cache["confidence"]


def modes_for(codec: "Codec", analysis: "Analysis", budget: float, seg_id: int, tune: str) -> tuple[str, ...]:
    """The candidates worth building. On an unfamiliar image the map and tokens paint nothing
    like it (and their semantic agreement means little): only the coarse image's modes. On a
    familiar one ``balanced`` sends :func:`balanced_mode` (see above; the coarse image without
    tokens never wins: its semantic agreement is far below the floor); ``perceptual`` chooses
    among all of :data:`MODES` and that mode."""
    confidence = familiarity(codec, analysis)
    if confidence is not None and confidence < UNFAMILIAR_CONFIDENCE:
        return tuple(m for m in MODES if m in ("coarse", "coarse+learned"))
    balanced = balanced_mode(codec, analysis, budget, seg_id)
    if tune == "balanced":
        return (balanced,)
    return tuple(dict.fromkeys((*MODES, balanced)))


def prioritised(analysis: "Analysis") -> bool:
    """Whether the options gave a class a priority above 1: the map is refined where it is and
    the model's priority coarse decoder (if any, ``Codec.coarse_decoder_name``) renders."""
    return analysis.class_weights is not None and bool((np.asarray(analysis.class_weights) > 1).any())


def balanced_mode(codec: "Codec", analysis: "Analysis", budget: float, seg_id: int) -> str:
    """The mode ``balanced`` sends on a familiar image within ``budget`` bytes: the semantic map
    coded exactly at the finest of :data:`BALANCED_MAP_SCALES` whose code takes at most
    :data:`BALANCED_MAP_SHARE` of the budget, the thumbnail on the rest (``scaled<F>-0``); with a
    class prioritised, at the finest of :data:`PRIORITY_DETAIL_BASES` and finer over the cells
    where the priorities gain most, until it takes :data:`PRIORITY_MAP_SHARE`
    (``scaled<F>-0+<G>x<cells>``, chunk F); where
    none fits, or the model has no tables for exact maps, the map and tokens on
    :data:`BALANCED_TOKEN_BPP` (within :data:`BALANCED_SHARES`; ``mixed-<N>``)."""
    if codec.lossless_tables is None:
        return mixed_mode(analysis.semantic_map.size, budget)
    if prioritised(analysis):
        mode = detail_mode(codec, analysis, budget, seg_id, PRIORITY_DETAIL_BASES, BALANCED_MAP_SHARE,
                           PRIORITY_MAP_SHARE)
    else:
        mode = detail_mode(codec, analysis, budget, seg_id, BALANCED_MAP_SCALES, BALANCED_MAP_SHARE)
    return mode or mixed_mode(analysis.semantic_map.size, budget)


def detail_mode(codec: "Codec", analysis: "Analysis", budget: float, seg_id: int, bases: tuple[int, ...],
                base_share: float, share: float | None = None) -> str | None:
    """``scaled<F>-0``: the map exact at the finest F of ``bases`` whose code takes at most
    ``base_share`` of ``budget`` bytes; with ``share``, ``scaled<F>-0+<G>x<cells>``: as many cells
    of :func:`detail_order` refined at 1/:data:`DETAIL_SCALE` as keep the map within ``share``.
    None where no base fits."""
    map_size = lambda factor, detail=None: len(codec.pack(  # noqa: E731
        analysis, 0.0, 0.0, segmenter_id=seg_id, ssm="lossless", map_scale=factor, map_detail=detail))
    scale = None
    for factor in bases:  # coarse to fine: a finer map costs more
        if map_size(factor) > base_share * budget:
            break
        scale = factor
    if scale is None or share is None:
        return None if scale is None else f"scaled{scale}-0"
    # the most cells whose refining keeps the map within the share (bisection: sizes grow with the count)
    lo, hi = 0, len(detail_order(codec, analysis, scale, DETAIL_SCALE))
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if map_size(scale, map_detail(codec, analysis, scale, DETAIL_SCALE, mid)) <= share * budget:
            lo = mid
        else:
            hi = mid - 1
    return f"scaled{scale}-0+{DETAIL_SCALE}x{lo}" if lo else f"scaled{scale}-0"


def detail_order(codec: "Codec", analysis: "Analysis", factor: int, scale: int) -> np.ndarray:
    """The cells of the map at 1/``factor`` worth refining at 1/``scale``, best first
    (:func:`ssm_lossless.detail_order`, the analysis's priorities raised to
    :data:`DETAIL_PRIORITY_EXPONENT`; kept in the analysis)."""
    from .ssm_lossless import detail_order as order_cells

    weights = analysis.class_weights
    weights = None if weights is None else np.asarray(weights, np.float64) ** DETAIL_PRIORITY_EXPONENT
    key = ("detail_order", factor, scale, None if weights is None else weights.tobytes())
    if key not in analysis.cache:
        analysis.cache[key] = order_cells(analysis.semantic_map, factor, scale, codec.num_classes, weights)[1]
    return analysis.cache[key]


def map_detail(codec: "Codec", analysis: "Analysis", factor: int, scale: int, count: int) -> tuple[int, np.ndarray]:
    """``Codec.pack``'s ``map_detail``: the first ``count`` cells of :func:`detail_order` refined at 1/``scale``."""
    from .ssm_lossless import reduced_shape

    cells = np.zeros(reduced_shape(*analysis.semantic_map.shape, factor), bool)
    cells.flat[detail_order(codec, analysis, factor, scale)[:count]] = True
    return scale, cells


def mixed_mode(pixels: int, budget: float) -> str:
    """The mixed mode ``balanced`` sends where no reduced exact map fits (and sent on every
    familiar image before format 6.0): map and tokens on :data:`BALANCED_TOKEN_BPP`, within
    :data:`BALANCED_SHARES` of ``budget`` bytes."""
    low, high = BALANCED_SHARES
    return f"mixed-{round(100 * min(max(BALANCED_TOKEN_BPP * pixels / (8 * budget), low), high))}"


def _half(rgb: np.ndarray) -> np.ndarray:
    """Area-downscaled by 2 (odd sizes rounded up: the last row/column is kept)."""
    h, w = rgb.shape[:2]
    if min(h, w) < 64:
        return rgb[::2, ::2]
    from PIL import Image

    return np.asarray(Image.fromarray(rgb).resize(((w + 1) // 2, (h + 1) // 2), Image.BOX))


def decide(codec: "Codec", analysis: "Analysis", options: "EncodeOptions", seg_id: int) -> Decision:
    """The best stream for ``options.tune`` within the options' budget (see the module doc).
    ``analysis`` is already re-ranked by the options' priorities and regions of interest."""
    tune = options.tune
    if tune not in TUNES:
        raise ValueError(f"tune must be one of {TUNES}")
    tokens = lambda: token_stream(codec, analysis, options, seg_id)  # noqa: E731
    if tune == "semantic":
        return Decision(tokens(), "tokens", tune)
    budget = budget_of(analysis, options)
    h, w = analysis.semantic_map.shape
    modes = modes_for(codec, analysis, budget, seg_id, tune)
    if len(modes) == 1:  # nothing to choose between: built at full size, no candidate decoded
        return _only_mode(codec, analysis, budget, tokens, seg_id, tune, modes[0],
                          patch_boxes(codec, analysis, options))
    if h * w <= DECIDE_MAX_PIXELS:
        chosen = _best_of_modes(codec, analysis, budget, tokens, seg_id, tune, modes,
                                patch_boxes(codec, analysis, options))
        chosen.data = finalise(codec, analysis, chosen.data, budget, seg_id)
        return chosen
    proxy, proxy_options, f = _proxy(codec, analysis, options, budget,
                                     lazy="tokens" not in modes and not any(m.startswith("mixed-") for m in modes))
    chosen = _best_of_modes(codec, proxy, budget_of(proxy, proxy_options),
                            lambda: token_stream(codec, proxy, proxy_options, seg_id), seg_id, tune, modes,
                            patch_boxes(codec, proxy, proxy_options))
    scales = None
    stream = bitstream.unpack(chosen.data)
    if bitstream.CHUNK_COARSE in stream.chunks:
        # the thumbnail size the proxy chose, at full size, and finer ones: the proxy has lost
        # the detail a finer thumbnail keeps, so its choice errs coarse (a photo at 0.1 bpp: 1/3
        # from the proxy, 1/1 best by 1.5 dB)
        proxy = coarse.parse(stream.chunks[bitstream.CHUNK_COARSE], 1, 1)
        mapped = proxy.scale / f
        scales = tuple(s for s in coarse.SCALES_OF[proxy.format] if mapped / PROXY_FINER <= s <= mapped * 1.5)
        if not scales:
            scales = (min(coarse.SCALES_OF[proxy.format], key=lambda s: abs(math.log(s / mapped))),)
    data = build(codec, analysis, budget, tokens, seg_id, chosen.mode, scales, patch_boxes(codec, analysis, options))
    if data is None:  # the mode fitted the proxy's budget, not this one's (rare): tokens
        chosen.mode, data = "tokens", tokens()
    chosen.data = finalise(codec, analysis, data, budget, seg_id)
    return chosen


def _only_mode(codec: "Codec", analysis: "Analysis", budget: float, tokens: Callable[[], bytes],
               seg_id: int, tune: str, mode: str, boxes=()) -> Decision:
    """The stream of ``mode`` (the token stream where it cannot be built: no coarse decoder, or a
    budget too small for a thumbnail), finalised, without decoding it."""
    data = build(codec, analysis, budget, tokens, seg_id, mode, boxes=boxes)
    if data is None:
        mode, data = "tokens", tokens()
    confidence = familiarity(codec, analysis)
    unfamiliar = confidence is not None and confidence < UNFAMILIAR_CONFIDENCE
    return Decision(finalise(codec, analysis, data, budget, seg_id), mode, tune, {}, confidence, unfamiliar)


def _best_of_modes(codec: "Codec", analysis: "Analysis", budget: float, tokens: Callable[[], bytes],
                   seg_id: int, tune: str, modes: tuple[str, ...], boxes=()) -> Decision:
    """:func:`_choose` among the candidates of ``modes`` (:func:`modes_for` the image; the token
    stream where none of them fits)."""
    streams = candidates(codec, analysis, budget, tokens, seg_id, modes, boxes) or {"tokens": tokens()}
    return _choose(codec, analysis, streams, tune)


def _proxy(codec: "Codec", analysis: "Analysis", options: "EncodeOptions", budget: float, lazy: bool = False):
    """The image (and its semantic map) downscaled to :data:`DECIDE_MAX_PIXELS`, analysed and
    re-ranked, with options for the same bits per pixel (boxes scaled alike), and the factor
    (``lazy``: its tokens computed only if asked for: none of the modes needs them)."""
    from dataclasses import replace

    from PIL import Image

    h, w = analysis.semantic_map.shape
    f = math.sqrt(DECIDE_MAX_PIXELS / (h * w))
    pw, ph = max(1, round(w * f)), max(1, round(h * f))
    rgb = np.asarray(Image.fromarray(analysis.loaded.rgb).resize((pw, ph), Image.BOX))
    labels = np.asarray(Image.fromarray(analysis.semantic_map).resize((pw, ph), Image.NEAREST))
    proxy_options = replace(options, bpp=8 * budget / (h * w), max_bytes=None,
                            roi=tuple((round(x * f), round(y * f), max(1, round(bw * f)), max(1, round(bh * f)))
                                      for x, y, bw, bh in options.roi))
    proxy = codec._ranked(codec.analyse(rgb, labels, lazy=lazy), proxy_options)
    return proxy, proxy_options, f


def _choose(codec: "Codec", analysis: "Analysis", streams: dict[str, bytes], tune: str) -> Decision:
    """Decode the candidate streams (one batch), score them for ``tune``, return the best."""
    names = list(streams)
    decoded = [np.asarray(im.convert("RGB")) for im in codec.decode_many([streams[n] for n in names])]
    rgb = analysis.loaded.rgb
    fidelity = structural_similarity(rgb, decoded)
    segmenter = codec.segmenter
    described = hasattr(segmenter, "describe")  # the bundled segmenter says how sure it is
    confidence = familiarity(codec, analysis)
    # the domain check: a segmenter unsure of the image means the models do not know this kind
    # of picture (a property of the image, not of the rate)
    unfamiliar = confidence is not None and confidence < UNFAMILIAR_CONFIDENCE
    semantic = [0.0] * len(names)
    if tune == "balanced" and not unfamiliar:
        # the candidates are read at half size (4x cheaper; a ranking, not a measurement)
        halves = [_half(d) for d in decoded]
        if described:
            maps = [v.semantic_map for v in segmenter.describe(halves)]
        else:
            maps = segmenter.segment_many(halves)
        reference = analysis.semantic_map[: 2 * maps[0].shape[0]: 2, : 2 * maps[0].shape[1]: 2]
        semantic = [agreement(reference, m) for m in maps]
    if unfamiliar:  # the most similar of those within the PSNR slack of the most faithful
        errors = [float(np.mean((d.astype(np.float32) - rgb.astype(np.float32)) ** 2)) for d in decoded]
        psnr = [10 * math.log10(255.0 ** 2 / max(e, 1e-6)) for e in errors]
        floor = max(psnr) - UNFAMILIAR_PSNR_SLACK
        scores = [f if p >= floor else f - 1.0 - (floor - p) / 10 for p, f in zip(psnr, fidelity)]
    elif tune == "perceptual":
        scores = list(fidelity)
    else:  # the most faithful of those that keep the semantics within the slack of the best
        floor = max(semantic) - BALANCED_SEMANTIC_SLACK
        scores = [f if s >= floor else f - 1.0 - (floor - s) for s, f in zip(semantic, fidelity)]
    best = int(np.argmax(scores))
    return Decision(streams[names[best]], names[best], tune, dict(zip(names, scores)), confidence, unfamiliar)


def structural_similarity(reference: np.ndarray, images: list[np.ndarray]) -> list[float]:
    """Multi-scale SSIM of the luma of each image against ``reference`` (3 scales, Wang et al.'s
    constants and Gaussian window; scales whose side would drop below the window are skipped)."""
    import torch
    import torch.nn.functional as F

    def luma(a: np.ndarray) -> torch.Tensor:
        t = torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))
        return (t @ torch.tensor([0.299, 0.587, 0.114]))[None, None]

    g = torch.exp(-((torch.arange(11, dtype=torch.float32) - 5) ** 2) / (2 * 1.5 ** 2))
    g = (g / g.sum())
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    weights = (0.2, 0.3, 0.5)  # coarser scales weigh more, as in MS-SSIM's exponents

    def blur(x: torch.Tensor) -> torch.Tensor:
        x = F.conv2d(x, g.view(1, 1, 1, -1))
        return F.conv2d(x, g.view(1, 1, -1, 1))

    x = luma(reference).expand(len(images), -1, -1, -1)
    y = torch.cat([luma(a) for a in images])
    total = torch.zeros(len(images))
    used = 0.0
    for i, w in enumerate(weights):
        if min(x.shape[-2:]) < 11:
            break
        mx, my = blur(x), blur(y)
        sxx, syy, sxy = blur(x * x) - mx * mx, blur(y * y) - my * my, blur(x * y) - mx * my
        cs = (2 * sxy + c2) / (sxx + syy + c2)
        term = cs if i < len(weights) - 1 else cs * (2 * mx * my + c1) / (mx * mx + my * my + c1)
        total += w * term.mean((1, 2, 3))
        used += w
        x, y = F.avg_pool2d(x, 2), F.avg_pool2d(y, 2)
    return [float(v) for v in total / max(used, 1e-9)]

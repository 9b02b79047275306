"""The codec: image → .sqg bytes → image, with loaded models kept for repeated use.

Encode: load → segment → G_s (encode, SAMM mask, VQ) → G_x (encode, SAMM mask, VQ)
        → entropy-code both token grids → container.
Decode: container → entropy-decode → G_s decode (semantic map) → G_x de-mask + SPADE decode.
"""
from __future__ import annotations

import hashlib
import json
import math
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np
import torch
from PIL import Image

from . import bitstream, coarse, entropy, packets, rate, registry
from .decide import UNFAMILIAR_CONFIDENCE, Decision, decide
from .devices import for_inference, resolve_device
from .entropy import StreamTables, decode_tokens, encode_tokens
from .errors import (BitstreamError, ModelMismatchError, PacketLossWarning, PixelLimitError, SqganError,
                     TruncatedError, UnfamiliarImageWarning)
from .imageio import MAX_PIXELS, LoadedImage, load_image
from .nets.blocks import one_hot_map, pixels_to_unit, smooth_block_map, unit_to_pixels
from .nets.samm import top_k_mask
from .nets.sqgan import SQGAN, SQGANConfig
from .options import ALL_CLASSES, EncodeOptions, parse_priority  # noqa: F401  (parse_priority re-exported)
from .rate import MIN_KEEP
from .refine import apply_residual, decode_residual
from .segmenters import check_rgb

LAYERS = ("all", "base")

# Packet streams under a budget: rounds of fitting, and the undershoot that ends them early.
PACKET_FIT_ROUNDS = 6
PACKET_FIT_SLACK = 0.02
# Rank boost of latent positions inside a region of interest.
ROI_BOOST = 4.0


def layers_used(stream: bitstream.Stream, layers: str = "all") -> list[str]:
    """The layers a decode of ``stream`` uses, by the names ``sqgan info`` gives them."""
    used = ["coarse"] if bitstream.CHUNK_COARSE in stream.chunks else []
    if any(k in stream.chunks for k in bitstream.SEMANTIC_CHUNKS):
        used.append("base")
    if layers == "all":
        used += [name for kind, name in ((bitstream.CHUNK_IMAGE, "image"), (bitstream.CHUNK_REFINE, "refine"))
                 if kind in stream.chunks]
    return used


def block_class_counts(padded_map: np.ndarray, stride: int, num_classes: int) -> np.ndarray:
    """Pixel count of each class in each stride×stride block: int [gh, gw, num_classes]."""
    gh, gw = padded_map.shape[0] // stride, padded_map.shape[1] // stride
    blocks = padded_map.reshape(gh, stride, gw, stride).transpose(0, 2, 1, 3).reshape(gh, gw, -1)
    return np.stack([(blocks == c).sum(-1) for c in range(num_classes)], axis=-1).astype(np.int64)


def block_majority(block_counts: np.ndarray) -> np.ndarray:
    """Entropy-coding context of each image token when the map is coded losslessly: the most
    frequent class in its block (ties: lowest id). Integers only."""
    return block_counts.argmax(-1).astype(np.int64)


class Analysis:
    """Everything the encoder computes once per image (:meth:`Codec.analyse`); streams for any
    options follow cheaply (:meth:`Codec.encode_analysis`): analyse once, code many.

    ``loaded``, ``semantic_map``, ``segmenter_id`` (what the header records: the segmenter's id,
    2 for a map given by the caller); the token analysis ``ssm_scores``, ``ssm_indices``,
    ``image_scores``, ``image_indices`` (SAMM's scores and the VQ indices on the latent grid),
    given or computed on first use by ``compute`` (an image whose stream is likely to carry no
    token: the encoder may never need them); ``cache``: rate-independent results of ``pack()``
    and the coded thumbnails (the rate search packs ~16x)."""

    def __init__(self, loaded: LoadedImage, semantic_map: np.ndarray, ssm_scores: torch.Tensor | None = None,
                 ssm_indices: np.ndarray | None = None, image_scores: torch.Tensor | None = None,
                 image_indices: np.ndarray | None = None, segmenter_id: int = 0, *,
                 compute: Callable[[], tuple] | None = None) -> None:
        self.loaded, self.semantic_map, self.segmenter_id = loaded, semantic_map, segmenter_id
        given = (ssm_scores, ssm_indices, image_scores, image_indices)
        if (compute is None) == any(v is None for v in given):
            raise ValueError("give the token analysis or a function that computes it, not both")
        self._tokens: tuple | None = None if compute is not None else given
        self._compute = compute
        self.cache: dict = {}
        # per-class weights of the priorities (float64 [C]; None: none given): the mode decision
        # gives a map with prioritised classes more of the budget (decide.balanced_mode)
        self.class_weights: np.ndarray | None = None
        # the same image with its tokens ranked without the priorities (regions of interest kept),
        # for streams whose map carries the priorities (chunk F; see Codec._ranked)
        self.detail_tokens: Analysis | None = None

    def _token_analysis(self) -> tuple:
        if self._tokens is None:
            self._tokens, self._compute = self._compute(), None
        return self._tokens

    @property
    def tokens_computed(self) -> bool:
        """Whether G_s and G_x have run on the image (False: no token was needed yet)."""
        return self._tokens is not None

    ssm_scores = property(lambda self: self._token_analysis()[0])
    ssm_indices = property(lambda self: self._token_analysis()[1])
    image_scores = property(lambda self: self._token_analysis()[2])
    image_indices = property(lambda self: self._token_analysis()[3])

    def reranked(self, weights: torch.Tensor, map_weights: torch.Tensor | None = None) -> "Analysis":
        """A copy whose SAMM scores are multiplied by ``weights`` (1×1×gh×gw; the map's by
        ``map_weights`` where given), sharing the cache (coded chunks are memoised by their
        masks, so they stay valid)."""
        map_weights = weights if map_weights is None else map_weights
        out = Analysis(self.loaded, self.semantic_map, self.ssm_scores * map_weights, self.ssm_indices,
                       self.image_scores * weights, self.image_indices, self.segmenter_id)
        out.cache, out.class_weights = self.cache, self.class_weights
        return out

    def rescored(self, image_scores: torch.Tensor) -> "Analysis":
        """A copy that ranks the image tokens by ``image_scores`` (1×1×gh×gw) instead of SAMM's,
        sharing the cache."""
        out = Analysis(self.loaded, self.semantic_map, self.ssm_scores, self.ssm_indices,
                       image_scores.to(self.image_scores), self.image_indices, self.segmenter_id)
        out.cache, out.class_weights = self.cache, self.class_weights
        return out


@dataclass(frozen=True)
class TokenGrids:
    """A stream's entropy-decoded tokens (:meth:`Codec.decode_tokens`; no network runs), on the
    latent grid: a masked position (dropped by the encoder, or lost with its packet) has keep
    False and index 0. Equal on every device and thread count for the same stream and model."""

    header: bitstream.Header
    map_keep: np.ndarray | None       # None when the map is coded exactly (chunk L) or absent
    map_indices: np.ndarray | None
    image_keep: np.ndarray | None     # None for a stream of a coarse image only
    image_indices: np.ndarray | None
    layers: list[str]                 # as image.info["sqgan_layers"]
    truncated: bool
    packets: dict[str, Any] | None    # a packet stream's report (as image.info["sqgan_packets"])


@dataclass
class ParsedStream:
    """One stream after entropy decoding, before any network: what the renderer needs. The
    semantic map on the padded grid is there at once when coded exactly (chunk L); G_s fills
    it from the map tokens otherwise (``Codec._render_maps``)."""

    header: bitstream.Header
    stream: bitstream.Stream
    coarse: bytes | None = None              # chunk C's payload
    render: int | None = None                # its render mode (coarse.RENDER_*)
    coarse_tag: bytes | None = None          # the coarse decoder it names
    patches: bytes | None = None             # chunk P's payload: finer patches over regions of interest
    context: np.ndarray | None = None        # class context of the image tokens; None: no map layer
    padded_map: np.ndarray | None = None
    scaled_map: tuple[int, np.ndarray] | None = None  # chunk M's (factor, cells): the networks see them smoothed
    detail_cells: np.ndarray | None = None   # chunk F's refined cells (bool, on M's grid): the map drawn as decoded
    map_keep: np.ndarray | None = None
    map_indices: np.ndarray | None = None
    image_keep: np.ndarray | None = None
    image_indices: np.ndarray | None = None


def lost_image_tokens(parsed: ParsedStream) -> bool:
    """Whether ``parsed`` is a packet stream whose lost packets took image tokens."""
    report = parsed.stream.packet_report
    return report is not None and report.tokens_lost.get("image", 0) > 0


class Codec:
    """SQ-GAN image codec with its models loaded once.

    >>> codec = Codec()                       # doctest: +SKIP
    >>> data = codec.encode("street.png", bpp=0.05)
    >>> image = codec.decode(data)

    ``erasure_adapter=False`` fills the positions of lost packets with the shipped de-masker
    instead of the model's erasure adapter (for comparisons; streams with nothing lost decode
    the same either way).
    """

    def __init__(self, model: str | None = None, *, device: str | torch.device = "auto",
                 segmenter: Any = "bundled", max_pixels: int | None = None, erasure_adapter: bool = True):
        self.device = resolve_device(device)
        self.entry = registry.get(model or registry.default_name("sqgan"))
        if self.entry.kind != "sqgan":
            raise ModelMismatchError(f"{self.entry.name!r} is a {self.entry.kind} model, not a codec")
        tensors, meta = registry.load_state(self.entry)
        self.vocabulary = registry.vocabulary_of(self.entry, meta)
        self.num_classes = self.vocabulary.num_classes
        self.config = SQGANConfig.from_dict(json.loads(meta.get("config", "{}")) or self.entry.config)
        if self.config.num_classes != self.num_classes:
            raise ModelMismatchError(f"model {self.entry.name!r}: networks for {self.config.num_classes} "
                                     f"classes, vocabulary {self.vocabulary.name!r} has {self.num_classes}")
        self.stride = self.config.latent_stride
        net = SQGAN(self.config)
        weights = {k: v for k, v in tensors.items() if not k.startswith("entropy.")}
        missing, unexpected = net.load_state_dict(weights, strict=False)
        missing = [k for k in missing if ".ema_" not in k]
        if missing or unexpected:
            raise ModelMismatchError(f"weights of {self.entry.name!r} do not fit the network "
                                     f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
        self.net = for_inference(net, self.device)
        self.ssm_tables = StreamTables(tensors["entropy.ssm.mask_counts"].numpy(),
                                       tensors["entropy.ssm.index_counts"].numpy())
        self.image_tables = StreamTables(tensors["entropy.image.mask_counts"].numpy(),
                                         tensors["entropy.image.index_counts"].numpy())
        self.code_class = tensors["entropy.ssm.code_class"].numpy().astype(np.int64)
        self.lossless_tables = None
        if "entropy.ssm_lossless.counts" in tensors:
            from .ssm_lossless import LabelMapTables

            try:
                self.lossless_tables = LabelMapTables(tensors["entropy.ssm_lossless.counts"].numpy().astype(np.int64))
            except ValueError as exc:
                raise ModelMismatchError(f"model {self.entry.name!r}: lossless map tables: {exc}") from None
            if self.lossless_tables.num_classes != self.num_classes:
                raise ModelMismatchError(f"model {self.entry.name!r}: lossless map tables for "
                                         f"{self.lossless_tables.num_classes} classes, not {self.num_classes}")
        self._segmenter_spec = segmenter
        self._segmenter = None
        self._coarse_nets: dict[bytes, Any] = {}  # by tag: every coarse decoder of this model
        self._grad_segmenter: Any = None  # the segmenter's network for --importance gradient
        # G_x with the erasure adapter (None: not loaded yet; False: none, or not wanted)
        self._erasure_net: Any = None if erasure_adapter else False
        self.max_pixels = max_pixels or MAX_PIXELS

    # ------------------------------------------------------------------ helpers
    @property
    def segmenter(self):
        if self._segmenter is None:
            from .segmenters import Segmenter, get_segmenter

            spec = self._segmenter_spec
            own = self.entry.config.get("segmenter")  # a model trained on other classes names its own
            if own and isinstance(spec, str) and spec.strip().lower() == "bundled":
                spec = f"bundled:{own}"
            seg = (spec if isinstance(spec, Segmenter)
                   else get_segmenter(spec, device=str(self.device), vocabulary=self.vocabulary))
            vocab = getattr(seg, "vocabulary", None)
            if vocab is not None and vocab.digest != self.vocabulary.digest:
                raise ModelMismatchError(f"segmenter {seg.name!r} predicts vocabulary {vocab.name!r}; model "
                                         f"{self.entry.name!r} codes {self.vocabulary.name!r}")
            self._segmenter = seg
        return self._segmenter

    def latent_grid(self, width: int, height: int) -> tuple[int, int]:
        """(rows, columns) of latent positions for an image of this size (one per stride² block)."""
        return math.ceil(height / self.stride), math.ceil(width / self.stride)

    def pad_to_grid(self, array: np.ndarray, gh: int, gw: int) -> np.ndarray:
        """An image or map edge-padded on the right and bottom to whole latent blocks."""
        h, w = array.shape[:2]
        pad = ((0, gh * self.stride - h), (0, gw * self.stride - w)) + ((0, 0),) * (array.ndim - 2)
        return np.pad(array, pad, mode="edge")

    # ------------------------------------------------------------------ encode
    def analyse(self, image: Any, semantic_map: np.ndarray | None = None, *,
                lazy: bool | None = None) -> Analysis:
        """Run the networks once: segment, score and quantise every latent position (``lazy``:
        see :meth:`analyse_many`)."""
        return self.analyse_many([image], None if semantic_map is None else [semantic_map], lazy=lazy)[0]

    @torch.inference_mode()
    def analyse_many(self, images: Sequence[Any], semantic_maps: Sequence[np.ndarray] | None = None,
                     *, batch_size: int = 8, lazy: bool | None = None) -> list[Analysis]:
        """:meth:`analyse` for many images; same-size images go through the networks together.
        G_s and G_x run on first use of the tokens (``lazy``) for an image the domain check finds
        unfamiliar (None: the default; its stream is likely the coarse image alone), for every
        image (True) or for none (False)."""
        loaded = [load_image(im, max_pixels=self.max_pixels) for im in images]
        segmenter_id = self._segmenter_id(semantic_maps)
        confidences: list[float | None] = [None] * len(loaded)
        if semantic_maps is None and len(loaded) == 1 and hasattr(self.segmenter, "describe"):
            # one pass gives the map and the domain check's reading (decide.familiarity)
            check_rgb(loaded[0].rgb, loaded[0].name)
            described = self.segmenter.describe([loaded[0].rgb])[0]
            semantic_maps, confidences = [described.semantic_map], [described.confidence]
        elif semantic_maps is None:
            semantic_maps = self.segmenter.segment_many([li.rgb for li in loaded],
                                                        names=[li.name for li in loaded])
        maps = []
        for li, m in zip(loaded, semantic_maps):
            m = np.asarray(m, dtype=np.uint8)
            if m.shape != li.rgb.shape[:2] or m.max(initial=0) >= self.num_classes:
                raise SqganError(f"{li.name}: semantic map does not fit the image or the class set")
            maps.append(m)
        results: list[Analysis | None] = [None] * len(loaded)
        groups: dict[tuple[int, int], list[int]] = {}
        for i, li in enumerate(loaded):
            unfamiliar = confidences[i] is not None and confidences[i] < UNFAMILIAR_CONFIDENCE
            if lazy or (lazy is None and unfamiliar):
                # unlike the training data: its stream will likely be the coarse image alone, so
                # G_s and G_x run only if a token is asked for (a second or more on a photo)
                results[i] = Analysis(loaded[i], maps[i], segmenter_id=segmenter_id,
                                      compute=lambda i=i: self._token_analysis([loaded[i].rgb], [maps[i]])[0])
            else:
                groups.setdefault(li.rgb.shape[:2], []).append(i)
        for members in groups.values():
            for start in range(0, len(members), batch_size):
                batch = members[start:start + batch_size]
                tokens = self._token_analysis([loaded[i].rgb for i in batch], [maps[i] for i in batch])
                for i, t in zip(batch, tokens):
                    results[i] = Analysis(loaded[i], maps[i], *t, segmenter_id)
        for i, c in enumerate(confidences):
            if c is not None:
                results[i].cache["confidence"] = c
        return results  # type: ignore[return-value]

    @torch.inference_mode()
    def _token_analysis(self, images: list[np.ndarray], maps: list[np.ndarray]) -> list[tuple]:
        """G_s and G_x over same-size images and their maps, one batch: per image (SSM scores
        1×1×gh×gw, SSM indices gh×gw, image scores, image indices)."""
        h, w = images[0].shape[:2]
        gh, gw = self.latent_grid(w, h)
        rgb = pixels_to_unit(torch.from_numpy(np.stack([self.pad_to_grid(a, gh, gw) for a in images])).to(self.device))
        labels = torch.from_numpy(np.stack([self.pad_to_grid(m, gh, gw) for m in maps]))
        onehot = one_hot_map(labels.to(self.device), self.num_classes)
        ssm_latents, _, ssm_scores, _ = self.net.ssm.encode(onehot, 1.0)
        ssm_indices = self.net.ssm.quantizer.codes_to_indices(ssm_latents).cpu().numpy()
        img_latents, _, img_scores = self.net.image.encode(rgb, onehot, 1.0)
        img_indices = self.net.image.quantizer.codes_to_indices(img_latents).cpu().numpy()
        return [(ssm_scores[j:j + 1], ssm_indices[j], img_scores[j:j + 1], img_indices[j]) for j in range(len(images))]

    def block_classes(self, analysis: Analysis) -> np.ndarray:
        """Per latent block, the pixel count of each class: int [gh, gw, classes]."""
        gh, gw = analysis.ssm_indices.shape
        return block_class_counts(self.pad_to_grid(analysis.semantic_map, gh, gw), self.stride, self.num_classes)

    def class_weights(self, options: EncodeOptions) -> np.ndarray | None:
        """The options' priority of each class (float64 [C]; classes not named: the ``all``
        weight, default 1), or None without priorities."""
        if not options.priority:
            return None
        per_class = np.full(self.num_classes, options.priority.get(ALL_CLASSES, 1.0), np.float64)
        for name, value in options.priority.items():
            if name != ALL_CLASSES:
                per_class[self.vocabulary.class_id(name)] = value
        return per_class

    def position_weights(self, analysis: Analysis, options: EncodeOptions) -> np.ndarray | None:
        """Encode-time rank multipliers of latent positions from class priorities and ROIs.

        A block's weight is the pixel-weighted mean priority of its classes (classes not named:
        the ``all`` weight, default 1), times ``ROI_BOOST`` where it touches a region of interest. Only the ranking of
        positions changes: masks are transmitted, so the decoder needs none of this.
        """
        if not options.priority and not options.roi:
            return None
        gh, gw = analysis.ssm_indices.shape
        weights = np.ones((gh, gw), np.float64)
        if options.priority:
            per_class = self.class_weights(options)
            counts = self.block_classes(analysis)
            weights = (counts * per_class).sum(-1) / np.maximum(counts.sum(-1), 1)
        st = self.stride
        for x, y, w, h in options.roi:
            x0, y0 = max(0, int(x) // st), max(0, int(y) // st)
            x1, y1 = min(gw, -(-(int(x) + int(w)) // st)), min(gh, -(-(int(y) + int(h)) // st))
            if x1 > x0 and y1 > y0:
                weights[y0:y1, x0:x1] *= ROI_BOOST
        return weights

    def _ranked(self, analysis: Analysis, options: EncodeOptions) -> Analysis:
        """``analysis`` with its tokens ranked by the options' importance, priorities and
        regions of interest. Under a tune that sends a coarse image, regions of interest get
        their own finer patch of it (:func:`decide.roi_patches`) and rank the image tokens, not
        the map's: the map's few bytes there keep the whole frame's semantics (boosting the box
        took the segmenter's mIoU outside it from 0.49 to 0.28 at 0.03 bpp on CamVid test)."""
        if options.importance == "gradient":
            from .importance import gradient_scores

            analysis = analysis.rescored(gradient_scores(self, analysis))
        weights = self.position_weights(analysis, options)
        if weights is None:
            return analysis
        as_tensor = lambda w: None if w is None else torch.from_numpy(w).to(analysis.image_scores)[None, None]  # noqa: E731
        map_weights = None
        if options.roi and options.tune != "semantic" and options.rate_controlled and options.packet_bytes is None:
            map_weights = self.position_weights(analysis, replace(options, roi=()))
            map_weights = np.ones_like(weights) if map_weights is None else map_weights
        ranked = analysis.reranked(as_tensor(weights), as_tensor(map_weights))
        ranked.class_weights = self.class_weights(options)
        if options.priority:
            # Beside a map refined where the prioritised classes are (chunk F) the image tokens
            # keep SAMM's ranking: ranked onto the prioritised objects, the few tokens such
            # streams hold drew them worse (CamVid test, Pedestrian=4 at 0.03 bpp, 1 image in 6 of
            # those with pedestrians: IoU 0.429 against 0.439 with SAMM's ranking).
            roi_only = self.position_weights(analysis, replace(options, priority=None))
            ranked.detail_tokens = analysis.reranked(as_tensor(np.ones_like(weights) if roi_only is None else roi_only))
            ranked.detail_tokens.class_weights = ranked.class_weights
        return ranked

    def pack(self, analysis: Analysis, keep_ssm: float, keep_image: float, *,
             segmenter_id: int = 0, ssm: str = "vq", map_scale: int = 1,
             map_detail: tuple[int, np.ndarray] | None = None) -> bytes:
        """Entropy-code an analysed image at the given keep ratios into a .sqg stream.

        ``ssm="lossless"`` codes the semantic map exactly instead of by G_s (``keep_ssm`` unused),
        at 1/``map_scale`` of its size where that is above 1 (chunk M: each block's majority class);
        ``map_detail`` = (G, cells): the flagged cells of that reduced map (bool, its shape) also
        exactly at 1/G (chunk F).
        """
        keep_ssm = min(max(keep_ssm, MIN_KEEP), 1.0)
        keep_image = min(max(keep_image, 0.0), 1.0)
        if ssm not in ("vq", "lossless"):
            raise ValueError(f"pack codes the semantic map by 'vq' or 'lossless', not {ssm!r}")
        if map_scale != 1 and ssm != "lossless":
            raise ValueError("map_scale is the scale of an exact map: it takes ssm='lossless'")
        if map_detail is not None and map_scale == 1:
            raise ValueError("map_detail refines a reduced exact map: it takes a map_scale above 1")
        cache = analysis.cache
        # A rate search packs many nearby keep ratios that round to the same masks: coded
        # chunks are memoised by the masks they depend on (the indices are fixed per analysis,
        # also across the re-ranked copies of _ranked, which share this cache).
        coded = cache.setdefault("coded_chunks", {})
        if ssm == "lossless" and map_scale != 1:
            ssm_key = b"scaled%d" % map_scale
            if map_detail is not None:
                ssm_key += b"+%d:" % map_detail[0] + np.packbits(np.asarray(map_detail[1], bool)).tobytes()
            if ("M", ssm_key) not in coded:
                coded["M", ssm_key] = self._scaled_map_chunks(analysis, map_scale, map_detail)
            chunks, context = coded["M", ssm_key]
            chunks = list(chunks)
            keep_ssm = 1.0
            ctx_of_tokens = lambda: context  # noqa: E731
        elif ssm == "lossless":
            from .ssm_lossless import encode_label_map

            if "lossless_map" not in cache:
                cache["lossless_map"] = encode_label_map(analysis.semantic_map, self._lossless_tables())
                cache["block_majority"] = block_majority(self.block_classes(analysis))
            chunks = [(bitstream.CHUNK_SEMANTIC_LOSSLESS, cache["lossless_map"])]
            keep_ssm = 1.0
            ssm_key = b"lossless"
            ctx_of_tokens = lambda: cache["block_majority"]  # noqa: E731
        else:
            ssm_keep = top_k_mask(analysis.ssm_scores, keep_ssm)[0, 0].cpu().numpy()
            ssm_key = np.packbits(ssm_keep).tobytes()
            if ("S", ssm_key) not in coded:
                coded["S", ssm_key] = encode_tokens(ssm_keep, analysis.ssm_indices,
                                                    np.zeros(ssm_keep.shape, np.int64), self.ssm_tables)
            chunks = [(bitstream.CHUNK_SEMANTIC, coded["S", ssm_key])]
            ctx_of_tokens = lambda: self._image_context(ssm_keep, analysis.ssm_indices)  # noqa: E731
        if keep_image > 0:
            img_keep = top_k_mask(analysis.image_scores, keep_image)[0, 0].cpu().numpy()
            key = ("I", ssm_key, np.packbits(img_keep).tobytes())
            if key not in coded:
                coded[key] = encode_tokens(img_keep, analysis.image_indices, ctx_of_tokens(), self.image_tables)
            chunks.append((bitstream.CHUNK_IMAGE, coded[key]))
        return bitstream.pack(self.header_for(analysis, keep_ssm, keep_image, segmenter_id), chunks)

    def header_for(self, analysis: Analysis, keep_ssm: float = 0.0, keep_image: float = 0.0,
                   segmenter_id: int = 0) -> bitstream.Header:
        loaded = analysis.loaded
        return bitstream.Header(
            model_id=self.entry.id, weights_hash=self.entry.hash_prefix,
            width=loaded.width, height=loaded.height, colour_mode=loaded.colour_mode,
            alpha_dropped=loaded.alpha_dropped, latent_stride=self.stride,
            class_set=self.vocabulary.class_set, segmenter_id=segmenter_id, coder_id=0,
            keep_ssm=keep_ssm, keep_image=keep_image)

    def _lossless_tables(self):
        if self.lossless_tables is None:
            raise ModelMismatchError(f"model {self.entry.name!r} has no tables for lossless semantic maps")
        return self.lossless_tables

    def encode(self, image: Any, *, bpp: float | None = None, keep: float | None = None,
               max_bytes: int | None = None, priority: Mapping[str, float] | None = None,
               roi: Sequence[tuple[int, int, int, int]] = (), ssm: str = "auto", split: str = "fixed",
               refine: str = "auto", tune: str = "balanced", semantic_map: np.ndarray | None = None,
               packet_bytes: int | None = None, protect_base: int = 1, importance: str = "samm") -> bytes:
        """Encode an image (path, PIL image or numpy array) to .sqg bytes.

        ``bpp``: target bits per pixel (file bytes, header included); the largest stream not
        above it is chosen (the smallest possible if none fits, with a warning).
        ``max_bytes``: hard cap on the file size (with or without ``bpp``). ``keep``: rate knob
        in [0, 1] instead. None of them: ``keep=0.3``.
        ``priority``: {class name: weight} re-ranks which latent positions are kept (e.g.
        ``{"Pedestrian": 4, "Sky": 0}``); ``roi``: (x, y, w, h) boxes that keep more tokens.
        ``ssm``: ``"vq"`` codes the semantic map with G_s, ``"lossless"`` exactly; ``"auto"``
        (default) takes lossless when a rate-controlled budget has room for it beyond G_s's
        largest stream, else G_s.
        ``refine``: the refinement layer (a low-pass colour residual, :mod:`sqgan_codec.refine`).
        ``"auto"`` (default) adds it only with the room a ``bpp``/``max_bytes`` budget leaves once
        every token is kept; ``"on"`` sets a quarter of every budget aside for it (about
        +0.9 dB PSNR, at some cost in mIoU and FID-style score); ``"off"``: tokens only.
        ``split="search"`` chooses the semantic/image bit split per image by trying several
        and keeping the best-scoring decode (slower); ``"fixed"`` uses one schedule.
        ``tune``: under rate control the encoder tries several splits of the budget between a
        coarse image, the semantic map and the image tokens, decodes each and sends the best for
        ``"semantic"`` (map and tokens only: what a segmenter recovers), ``"perceptual"`` (the
        decode nearest the original) or ``"balanced"`` (default: both); see :mod:`.decide`.
        An image unlike the training domain raises :class:`~.errors.UnfamiliarImageWarning`.
        ``semantic_map``: a precomputed H×W class-id map instead of running the segmenter.
        ``packet_bytes``: write a packet stream for lossy links instead (:mod:`.packets`): packets
        of at most that many bytes, each decodable alone, the map's repeated ``protect_base``
        times; it carries the token layers only (``tune`` is taken as ``"semantic"``, ``ssm`` as
        ``"vq"``), and the budget counts every packet.
        ``importance``: how image tokens are ranked for keeping: ``"samm"`` (default, SAMM's
        learned scores) or ``"gradient"`` (the bundled segmenter's loss gradient, :mod:`.importance`;
        about 2 s more per 480x360 image on the CPU).
        """
        options = EncodeOptions(bpp=bpp, keep=keep, max_bytes=max_bytes, priority=priority,
                                roi=tuple(roi), ssm=ssm, split=split, refine=refine, tune=tune,
                                packet_bytes=packet_bytes, protect_base=protect_base, importance=importance)
        options.check_classes(self.vocabulary)  # before the networks run
        return self.encode_analysis(self.analyse(image, semantic_map), options)

    def encode_analysis(self, analysis: Analysis, options: EncodeOptions | None = None, **kwargs: Any) -> bytes:
        """Encode an analysed image (:meth:`analyse`) with ``options``, or with keyword arguments
        as for :meth:`encode`: the networks ran once, only the coding is repeated."""
        if options is None:
            options = EncodeOptions(**{**kwargs, "roi": tuple(kwargs.get("roi", ()))})
        elif kwargs:
            raise TypeError("give options or keyword arguments, not both")
        decision = self._decide(analysis, options, analysis.segmenter_id)
        self._warn_unfamiliar(decision, analysis.loaded.name)
        return decision.data

    def encode_with_decision(self, image: Any, *, semantic_map: np.ndarray | None = None,
                             **kwargs: Any) -> Decision:
        """:meth:`encode`, returning the :class:`~.decide.Decision`: the stream (``data``), the
        mode chosen, every candidate's score and the domain check (``unfamiliar``, ``confidence``);
        no warning is raised."""
        options = EncodeOptions(**{**kwargs, "roi": tuple(kwargs.get("roi", ()))})
        analysis = self.analyse(image, semantic_map)
        return self._decide(analysis, options, analysis.segmenter_id)

    def _segmenter_id(self, semantic_maps: Any) -> int:
        """What the header records: 2 (labels) for maps given by the caller, else the segmenter's id."""
        return (bitstream.SEGMENTER_LABELS if semantic_maps is not None
                else getattr(self.segmenter, "segmenter_id", bitstream.SEGMENTER_BUNDLED))

    def encode_many(self, images: Sequence[Any], *, bpp: float | None = None, keep: float | None = None,
                    **kwargs: Any) -> list[bytes]:
        """Encode several images with the same options as :meth:`encode` (same-size images
        share network passes)."""
        options = EncodeOptions(bpp=bpp, keep=keep, **kwargs)
        return [self.encode_analysis(a, options) for a in self.analyse_many(list(images))]

    def decide_many(self, images: Sequence[Any], **kwargs: Any) -> list[Decision]:
        """:meth:`encode_with_decision` for several images (same-size images share network
        passes); no warning is raised, each :class:`~.decide.Decision` says what was found."""
        options = EncodeOptions(**{**kwargs, "roi": tuple(kwargs.get("roi", ()))})
        return [self._decide(a, options, a.segmenter_id) for a in self.analyse_many(list(images))]

    def encode_rates(self, image: Any, bpps: Sequence[float], **kwargs: Any) -> list[bytes]:
        """Encode one image at several target rates (each as :meth:`encode` with ``bpp=``):
        the networks run once, only the rate fitting is repeated."""
        semantic_map = kwargs.pop("semantic_map", None)
        kwargs["roi"] = tuple(kwargs.get("roi", ()))
        options = [EncodeOptions(bpp=b, **kwargs) for b in bpps]  # validate all before the work
        analysis = self.analyse(image, semantic_map)
        return [self.encode_analysis(analysis, o) for o in options]

    @staticmethod
    def _warn_unfamiliar(decision: Decision, name: str | None) -> None:
        if decision.unfamiliar:
            warnings.warn(UnfamiliarImageWarning(
                f"{name or 'image'}: unlike what the model was trained on; the encoder leaned on the "
                f"coarse image ({decision.mode})"), stacklevel=4)

    def _decide(self, analysis: Analysis, options: EncodeOptions, seg_id: int) -> Decision:
        """The stream to send: under rate control the best of :mod:`.decide`'s candidates for
        ``options.tune``; with ``keep`` (no budget) the token layers as asked."""
        options.check_classes(self.vocabulary)
        ranked = self._ranked(analysis, options)
        if options.packet_bytes is not None:
            return self._packet_decision(ranked, options, seg_id)
        if not options.rate_controlled:
            return Decision(rate.token_stream(self, ranked, options, seg_id), "tokens", options.tune)
        return decide(self, ranked, options, seg_id)

    def _packet_decision(self, analysis: Analysis, options: EncodeOptions, seg_id: int) -> Decision:
        """A packet stream within the budget: the token stream's budget is lowered by what the
        packets added until the packets fit (a few rounds of the rate search)."""
        tokens = replace(options, tune="semantic", ssm="vq", packet_bytes=None)
        cut = lambda plain: self.packetize(plain, packet_bytes=options.packet_bytes,  # noqa: E731
                                           protect_base=options.protect_base)
        if not options.rate_controlled:
            return Decision(cut(rate.token_stream(self, analysis, tokens, seg_id)), "tokens", "semantic")
        budget = rate.budget_of(analysis, options)
        target, best, data = budget, None, b""
        for _ in range(PACKET_FIT_ROUNDS):
            fitted = replace(tokens, bpp=None, max_bytes=max(1, math.floor(target)))
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # an intermediate target below the smallest stream
                data = cut(rate.token_stream(self, analysis, fitted, seg_id))
            if len(data) <= budget and (best is None or len(data) > len(best)):
                best = data
            excess = len(data) - budget
            if excess <= 0 and -excess <= PACKET_FIT_SLACK * budget:
                break
            target -= excess if excess > 0 else -excess / 2
        return Decision(best if best is not None else data, "tokens", "semantic")

    def packetize(self, data: bytes, *, packet_bytes: int, protect_base: int = 1) -> bytes:
        """A token stream (``tune="semantic"``) re-coded as a packet stream (:mod:`.packets`):
        the same tokens, so with nothing lost it decodes to the same image."""
        parsed = self._decode_tokens(bytes(data), "all", allow_partial=False)
        stream = parsed.stream
        if stream.packet_report is not None:
            raise ValueError("the stream is already a packet stream")
        extra = [k for k in stream.chunks if k not in (bitstream.CHUNK_SEMANTIC, bitstream.CHUNK_IMAGE,
                                                       *packets.FRAGMENT_CHUNKS)]
        if extra:
            raise BitstreamError(f"only token streams travel in packets (this one has chunk(s) "
                                 f"{', '.join(extra)}: encode with tune='semantic', ssm='vq')")
        image = (packets.Layer(parsed.image_keep, parsed.image_indices, self.image_tables)
                 if bitstream.CHUNK_IMAGE in stream.chunks else None)
        header = stream.header
        return packets.write(header, header.version,
                             packets.Layer(parsed.map_keep, parsed.map_indices, self.ssm_tables), image,
                             self._image_context, {k: v for k, v in stream.chunks.items() if k in packets.FRAGMENT_CHUNKS},
                             packet_bytes=packet_bytes, protect_base=protect_base)

    def _image_context(self, ssm_keep: np.ndarray, ssm_indices: np.ndarray) -> np.ndarray:
        """The class context of the image tokens from the map tokens (``num_classes``: a masked map code)."""
        return entropy.class_context(ssm_keep, ssm_indices, self.code_class, self.num_classes)

    # ------------------------------------------------------------------ decode
    def _check_header(self, header: bitstream.Header) -> None:
        if (header.model_id, header.weights_hash) != (self.entry.id, self.entry.hash_prefix):
            entry = registry.find_by_id(header.model_id, header.weights_hash)
            raise ModelMismatchError(f"stream was made by model {entry.name!r}; this codec holds "
                                     f"{self.entry.name!r}")
        if header.width * header.height > self.max_pixels:
            raise PixelLimitError(f"stream's image is {header.width}x{header.height} = "
                                  f"{header.width * header.height:,} pixels, over the limit of "
                                  f"{self.max_pixels:,} pixels (max_pixels= / --max-pixels)")
        if header.latent_stride != self.stride:
            raise BitstreamError(f"latent stride {header.latent_stride} does not match the model")
        if header.class_set != self.vocabulary.class_set:
            raise ModelMismatchError(f"stream's classes are class set {header.class_set} "
                                     f"({bitstream.CLASS_SETS.get(header.class_set, 'unknown')}); model "
                                     f"{self.entry.name!r} codes {self.vocabulary.name!r}")
        if header.coder_id != 0:
            raise BitstreamError(f"unknown entropy coder {header.coder_id}")

    @torch.inference_mode()
    def decode_semantic_map(self, data: bytes) -> tuple[bitstream.Header, np.ndarray, dict]:
        """Decode only the base layer: (header, semantic map H×W uint8, token state)."""
        parsed = self._decode_tokens(bytes(data), "base")
        if parsed.context is None:
            raise BitstreamError("stream has no semantic-map layer (a coarse image only)")
        self._render_maps([parsed])
        header = parsed.header
        state = {"stream": parsed.stream, "padded_map": parsed.padded_map, "token_context": parsed.context}
        return header, parsed.padded_map[: header.height, : header.width], state

    @torch.inference_mode()
    def decode(self, data: bytes, *, layers: str = "all", allow_partial: bool = False) -> Image.Image:
        """Decode .sqg bytes to a PIL image of the original size and colour mode.

        ``layers="base"`` renders from the semantic map (and coarse image) alone. A stream cut
        short (a damaged length field looks the same) raises :class:`TruncatedError` unless
        ``allow_partial=True``: then its complete layers are decoded. Either way the image's
        ``info["sqgan_layers"]`` lists the layers used and ``info["sqgan_truncated"]`` says
        whether the stream was cut.
        """
        return self.decode_with_map(data, layers=layers, allow_partial=allow_partial)[0]

    @torch.inference_mode()
    def decode_with_map(self, data: bytes, *, layers: str = "all", allow_partial: bool = False
                        ) -> tuple[Image.Image, np.ndarray]:
        """:meth:`decode`, also returning the decoded semantic map (H×W uint8 class ids; None
        for a stream that sends a coarse image only)."""
        arr, semantic_map, header, stream = self._decode_arrays(data, layers=layers, allow_partial=allow_partial)
        return self._finish(arr, header, stream, layers), semantic_map

    @torch.inference_mode()
    def _decode_arrays(self, data: bytes, *, layers: str = "all", allow_partial: bool = False
                       ) -> tuple[np.ndarray, np.ndarray, bitstream.Header, bitstream.Stream]:
        """Network decode of the token layers: (RGB H×W×3 uint8 before refinement, semantic
        map, header, parsed stream)."""
        if layers not in LAYERS:
            raise ValueError(f"layers must be one of {LAYERS}")
        parsed = self._decode_tokens(bytes(data), layers, allow_partial)
        arr = self._render([parsed])[0]
        header = parsed.header
        semantic_map = parsed.padded_map[: header.height, : header.width] if parsed.padded_map is not None else None
        return arr, semantic_map, header, parsed.stream

    @torch.inference_mode()
    def decode_many(self, datas: Sequence[bytes], *, layers: str = "all", batch_size: int = 8,
                    allow_partial: bool = False) -> list[Image.Image]:
        """:meth:`decode` for many streams: the entropy decoding runs per stream, the networks
        over batches of streams with the same latent grid (the throughput path on a GPU).

        Tokens do not depend on the batch; the rendered pixels may differ from a one-by-one
        decode by float rounding (±1 level in rare pixels).
        """
        if layers not in LAYERS:
            raise ValueError(f"layers must be one of {LAYERS}")
        parsed = [self._decode_tokens(bytes(d), layers, allow_partial) for d in datas]
        groups: dict[tuple[int, int], list[int]] = {}
        for i, p in enumerate(parsed):
            groups.setdefault(p.header.grid, []).append(i)
        out: list[Image.Image | None] = [None] * len(parsed)
        for members in groups.values():
            for start in range(0, len(members), batch_size):
                batch = [parsed[i] for i in members[start:start + batch_size]]
                for i, p, arr in zip(members[start:start + batch_size], batch, self._render(batch)):
                    out[i] = self._finish(arr, p.header, p.stream, layers)
        return out  # type: ignore[return-value]

    def _render_maps(self, batch: list[ParsedStream]) -> None:
        """G_s over parsed streams of one grid that code their map with tokens: fills ``padded_map``."""
        vq = [p for p in batch if p.padded_map is None and p.map_indices is not None]
        if vq:
            logits = self.net.ssm.decode_indices(self._stack(p.map_indices for p in vq),
                                                 self._stack(p.map_keep for p in vq)[:, None])
            for p, m in zip(vq, logits.argmax(1).to(torch.uint8).cpu().numpy()):
                p.padded_map = m

    def _render(self, batch: list[ParsedStream]) -> list[np.ndarray]:
        """The networks over parsed streams of one grid: RGB H×W×3 uint8 each (before refinement).

        Token layers go through G_x's SPADE decoder; a coarse image (chunk C) is upsampled
        and, when its render mode asks, the coarse decoder adds the generator's detail to it.
        """
        self._render_maps(batch)
        generated: list[torch.Tensor | None] = [None] * len(batch)
        onehots: dict[int, torch.Tensor] = {}  # the decoded maps, for SPADE and the coarse decoder
        with_tokens = [i for i, p in enumerate(batch) if p.padded_map is not None]
        # packet streams that lost image tokens fill them with the erasure adapter, if the model has one
        lossy = [i for i in with_tokens if lost_image_tokens(batch[i])]
        image_nets = {False: self.net.image, True: (self.erasure_image_net() if lossy else None) or self.net.image}
        for adapted in (False, True):
            group = [i for i in with_tokens if (i in lossy) == adapted]
            if not group:
                continue
            sub = [batch[i] for i in group]
            onehot = one_hot_map(self._stack(self._network_map(p) for p in sub).long(), self.num_classes)
            rgb = image_nets[adapted].decode_indices(self._stack(p.image_indices for p in sub),
                                                     self._stack(p.image_keep for p in sub)[:, None], onehot)
            for j, i in enumerate(group):
                generated[i] = rgb[j:j + 1].clamp(-1, 1)
                onehots[i] = onehot[j:j + 1]
        learned = [i for i, p in enumerate(batch) if p.render == coarse.RENDER_LEARNED]
        thumbs = {i: self._coarse_input(p) for i, p in enumerate(batch) if p.coarse is not None}
        if learned:
            nets = {i: self.coarse_decoder(batch[i].coarse_tag) for i in learned}
            ups = torch.cat([thumbs[i] for i in learned])
            gens = torch.cat([ups[j:j + 1] if generated[i] is None else generated[i] for j, i in enumerate(learned)])
            maps = torch.cat([onehots[i] if i in onehots else ups.new_zeros(1, self.num_classes, *ups.shape[-2:])
                              for i in learned])
            for j, i in enumerate(learned):
                generated[i] = nets[i](ups[j:j + 1], gens[j:j + 1], maps[j:j + 1]).clamp(-1, 1)
        for i in thumbs:
            if i not in learned:  # the thumbnail is the picture
                generated[i] = thumbs[i]
        out = []
        for p, rgb in zip(batch, generated):
            a = unit_to_pixels(rgb[0]).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
            out.append(np.ascontiguousarray(a[: p.header.height, : p.header.width]))
        return out

    def _scaled_map_chunks(self, analysis: Analysis, factor: int, detail: tuple[int, np.ndarray] | None
                           ) -> tuple[list[tuple[str, bytes]], np.ndarray]:
        """Chunk M (and F with ``detail``) of an analysed image's map, and the class context of
        its image tokens (the map as decoded: the cells, refined where F says)."""
        from .ssm_lossless import (cell_pixels, encode_detail, encode_label_map, enlarge_map,
                                   reduce_map, scaled_payload)

        labels = analysis.semantic_map
        h, w = labels.shape
        small = reduce_map(labels, factor, self.num_classes)
        chunks = [(bitstream.CHUNK_SEMANTIC_SCALED, scaled_payload(factor, encode_label_map(small, self._lossless_tables())))]
        decoded = enlarge_map(small, factor, h, w)
        if detail is not None:
            scale, cells = detail[0], np.asarray(detail[1], bool)
            fine = labels.astype(np.uint8) if scale == 1 else reduce_map(labels, scale, self.num_classes)
            chunks.append((bitstream.CHUNK_MAP_DETAIL,
                           encode_detail(small, fine, factor, scale, cells, self._lossless_tables())))
            refined = np.where(cell_pixels(cells, factor, scale, fine.shape), fine,
                               cell_pixels(small, factor, scale, fine.shape))
            decoded = enlarge_map(refined, scale, h, w)
        padded = self.pad_to_grid(decoded, *self.latent_grid(w, h))
        return chunks, block_majority(block_class_counts(padded, self.stride, self.num_classes))

    def _network_map(self, parsed: ParsedStream) -> np.ndarray:
        """The padded map the networks are conditioned on: the decoded map, or for a reduced
        exact map (chunk M) alone its cells with the block edges smoothed (``smooth_block_map``).
        A map refined over some cells (chunk F) is drawn as decoded: smoothing the cells beside
        the refined ones shrank the prioritised objects (CamVid test, Pedestrian=4 at 0.03 bpp,
        1 image in 6 of those with pedestrians: IoU 0.381 smoothed against 0.453 as decoded)."""
        if parsed.scaled_map is None or parsed.detail_cells is not None:
            return parsed.padded_map
        factor, small = parsed.scaled_map
        header = parsed.header
        smooth = smooth_block_map(torch.from_numpy(small.astype(np.int64))[None], factor, header.height,
                                  header.width, self.num_classes)[0].to(torch.uint8).numpy()
        return self.pad_to_grid(smooth, *header.grid)

    def _coarse_input(self, parsed: ParsedStream) -> torch.Tensor:
        """Chunk C → the upsampled thumbnail on the padded latent grid: 1×3×H'×W' in [-1, 1]."""
        header = parsed.header
        gh, gw = header.grid
        small = coarse.decode_small(parsed.coarse, header.width, header.height)
        up = coarse.upsample(small, header.width, header.height)
        if parsed.patches is not None:
            up = coarse.paste_patches(up, parsed.patches, header.width, header.height)
        up = self.pad_to_grid(up, gh, gw)
        return pixels_to_unit(torch.from_numpy(up).to(self.device)[None])

    def coarse_decoder_name(self, priority: bool = False) -> str | None:
        """The registry name of the coarse decoder this encoder renders for: the model config's
        ``coarse_decoder``; for a stream sent with a class priority, ``coarse_decoder_priority``
        where the model has one (trained to draw the objects a refined map outlines, at some
        cost in closeness to the image elsewhere; docs/model_card.md)."""
        name = self.entry.config.get("coarse_decoder")
        return (self.entry.config.get("coarse_decoder_priority") or name) if priority else name

    def coarse_tag(self, priority: bool = False) -> bytes:
        """The 2-byte hash prefix that names the coarse decoder of :meth:`coarse_decoder_name`
        in a stream (b"" if none)."""
        name = self.coarse_decoder_name(priority)
        return bytes.fromhex(registry.get(name).sha256)[: coarse.TAG_BYTES] if name else b""

    def thumbnail_format(self, render: int, priority: bool = False) -> int:
        """The codec (coarse.FORMAT_*) of the thumbnails this encoder sends for ``render``:
        AV1 for the upsampled render; for the learned one, the format the coarse decoder of
        :meth:`coarse_decoder_name` is sent (its config's ``thumbnail_format``: the one it was
        trained on, or measured better; VP8 for entries without the key). VP8 where this Pillow
        has no AVIF support."""
        wanted = coarse.FORMAT_AV1
        if render == coarse.RENDER_LEARNED:
            name = self.coarse_decoder_name(priority)
            trained = registry.get(name).config.get("thumbnail_format", "vp8") if name else "vp8"
            if trained not in coarse.FORMAT_IDS:
                raise ModelMismatchError(f"coarse decoder {name!r} names an unknown thumbnail format {trained!r}")
            wanted = coarse.FORMAT_IDS[trained]
        return wanted if wanted != coarse.FORMAT_AV1 or coarse.av1_available() else coarse.FORMAT_VP8

    def coarse_entries(self) -> dict[bytes, registry.ModelEntry]:
        """Every coarse decoder shipped for this model, by the tag streams name it with: the
        current ones (:meth:`coarse_decoder_name`), which the encoder uses, and earlier ones
        kept so that the streams made for them still decode."""
        found = {bytes.fromhex(e.sha256)[: coarse.TAG_BYTES]: e for e in registry.entries().values()
                 if e.kind == "coarse" and e.config.get("sqgan") == self.entry.name}
        for name in dict.fromkeys((self.coarse_decoder_name(), self.coarse_decoder_name(priority=True))):
            if name:
                current = registry.get(name)
                found[bytes.fromhex(current.sha256)[: coarse.TAG_BYTES]] = current
        return found

    def coarse_decoder(self, tag: bytes | None = None):
        """The coarse decoder a stream's ``tag`` names (default: the current one, see
        :meth:`coarse_entries`), loaded on first use; ModelMismatchError when there is none."""
        tag = self.coarse_tag() if tag is None else tag
        if tag not in self._coarse_nets:
            from .nets.coarse import CoarseDecoder, CoarseDecoderConfig

            entry = self.coarse_entries().get(tag)
            if entry is None:
                raise ModelMismatchError(f"model {self.entry.name!r} has no coarse decoder"
                                         + (f" with tag {tag.hex()}" if tag else ""))
            name = entry.name
            if entry.kind != "coarse":
                raise ModelMismatchError(f"{name!r} is a {entry.kind} model, not a coarse decoder")
            tensors, meta = registry.load_state(entry)
            config = CoarseDecoderConfig.from_dict(json.loads(meta.get("config", "{}")) or entry.config)
            if registry.vocabulary_of(entry, meta).digest != self.vocabulary.digest:
                raise ModelMismatchError(f"coarse decoder {name!r} is for other classes than {self.vocabulary.name!r}")
            if config.num_classes != self.num_classes:
                raise ModelMismatchError(f"coarse decoder {name!r} is for {config.num_classes} classes")
            net = CoarseDecoder(config)
            try:
                net.load_state_dict(tensors, strict=True)
            except RuntimeError:
                raise ModelMismatchError(f"weights of {name!r} do not fit the coarse decoder") from None
            self._coarse_nets[tag] = for_inference(net, self.device)
        return self._coarse_nets[tag]

    @contextmanager
    def coarse_decoder_swapped(self, named: bytes, used: bytes) -> Iterator[None]:
        """Within the block, streams that name coarse decoder ``named`` are rendered by ``used``
        (both tags): one stream through two decoders, for comparisons."""
        own = self.coarse_decoder(named)
        self._coarse_nets[named] = self.coarse_decoder(used)
        try:
            yield
        finally:
            self._coarse_nets[named] = own

    def erasure_image_net(self):
        """G_x with the model's erasure adapter applied (nets/adapter.py: the de-masker tuned to
        fill lost packets' positions), loaded on first use; None when the model names none."""
        if self._erasure_net is None:
            self._erasure_net = False
            name = self.entry.config.get("erasure_adapter")
            if name:
                from .nets.adapter import ErasureAdapterConfig, adapted

                entry = registry.get(name)
                if entry.kind != "erasure":
                    raise ModelMismatchError(f"{name!r} is a {entry.kind} model, not an erasure adapter")
                tensors, meta = registry.load_state(entry)
                base = meta.get("sqgan_sha256") or entry.config.get("sqgan_sha256")
                if base != self.entry.sha256:
                    raise ModelMismatchError(f"erasure adapter {name!r} was trained on other weights than "
                                             f"{self.entry.name!r}'s")
                if registry.vocabulary_of(entry, meta).digest != self.vocabulary.digest:
                    raise ModelMismatchError(f"erasure adapter {name!r} is for other classes than {self.vocabulary.name!r}")
                config = ErasureAdapterConfig.from_dict(json.loads(meta.get("config", "{}")) or entry.config)
                try:
                    net = adapted(self.net.image, tensors, config)
                except ValueError as exc:
                    raise ModelMismatchError(f"{name!r}: {exc}") from None
                self._erasure_net = for_inference(net, self.device)
        return self._erasure_net or None

    def decode_tokens(self, data: bytes, *, layers: str = "all", allow_partial: bool = False) -> TokenGrids:
        """Entropy-decode a stream (plain or packet stream) without running a network."""
        if layers not in LAYERS:
            raise ValueError(f"layers must be one of {LAYERS}")
        parsed = self._decode_tokens(bytes(data), layers, allow_partial)
        stream = parsed.stream
        report = stream.packet_report
        return TokenGrids(parsed.header, parsed.map_keep, parsed.map_indices,
                          parsed.image_keep, parsed.image_indices, layers_used(stream, layers),
                          stream.truncated, None if report is None else report.to_dict())

    def token_digest(self, data: bytes) -> str:
        """SHA-256 of a stream's entropy-decoded token grids (no network runs): equal on every
        device and thread count for the same stream and model, which is what cross-device
        checks compare."""
        tokens = self.decode_tokens(data, allow_partial=True)
        h = hashlib.sha256()
        for grid in (tokens.map_keep, tokens.map_indices, tokens.image_keep, tokens.image_indices):
            if grid is not None:
                h.update(np.ascontiguousarray(grid).astype(np.int64).tobytes())
        return h.hexdigest()

    def _stack(self, arrays) -> torch.Tensor:
        return torch.from_numpy(np.stack(list(arrays))).to(self.device)

    def _decode_tokens(self, data: bytes, layers: str, allow_partial: bool = True) -> ParsedStream:
        """Entropy decoding of one stream, no network: header, stream, token grids, and the
        padded semantic map when it is coded exactly. A truncated stream whose missing part
        ``layers`` needs raises unless ``allow_partial``. A packet stream decodes what arrived."""
        if packets.is_packet_stream(data):
            return self._decode_packets(data, layers)
        stream = bitstream.unpack(data, allow_truncated=True)
        header = stream.header
        self._check_header(header)
        if stream.truncated and layers == "all" and not allow_partial:
            used = layers_used(stream, layers)
            raise TruncatedError(f"stream is truncated (damaged or cut short): only its "
                                 f"{', '.join(used) or 'no'} layer{'s' if len(used) != 1 else ''} "
                                 "complete; allow_partial=True (--partial) decodes "
                                 f"{'them' if len(used) != 1 else 'it'}")
        gh, gw = header.grid
        out = ParsedStream(header, stream)
        if bitstream.CHUNK_COARSE in stream.chunks:
            out.coarse = stream.chunks[bitstream.CHUNK_COARSE]
            chunk = coarse.parse(out.coarse, header.width, header.height)
            out.render, tag = chunk.render, chunk.tag
            if out.render == coarse.RENDER_LEARNED and tag not in self.coarse_entries():
                raise ModelMismatchError("stream was rendered for a coarse decoder this installation "
                                         f"does not have ({tag.hex()}; it has "
                                         f"{', '.join(t.hex() for t in self.coarse_entries()) or 'none'})")
            out.coarse_tag = tag
            out.patches = stream.chunks.get(bitstream.CHUNK_PATCHES)
            if out.patches is not None:  # checked here, before any network runs
                coarse.parse_patches(out.patches, header.width, header.height)
        if not any(k in stream.chunks for k in bitstream.SEMANTIC_CHUNKS):
            if out.coarse is not None:  # a coarse image alone: nothing for the networks to decode
                return out
            raise BitstreamError("stream has no semantic-map layer" + (" (file truncated)" if stream.truncated else ""))
        if bitstream.CHUNK_SEMANTIC_LOSSLESS in stream.chunks:
            from .ssm_lossless import decode_label_map

            exact = decode_label_map(stream.chunks[bitstream.CHUNK_SEMANTIC_LOSSLESS],
                                     (header.height, header.width), self._lossless_tables())
            out.padded_map = self.pad_to_grid(exact, gh, gw)
            context = block_majority(block_class_counts(out.padded_map, self.stride, self.num_classes))
        elif bitstream.CHUNK_SEMANTIC_SCALED in stream.chunks:
            from .ssm_lossless import decode_reduced, enlarge_map

            factor, small, detail = decode_reduced(stream.chunks[bitstream.CHUNK_SEMANTIC_SCALED],
                                                   stream.chunks.get(bitstream.CHUNK_MAP_DETAIL),
                                                   header.height, header.width, self._lossless_tables())
            decoded = enlarge_map(small, factor, header.height, header.width)
            if detail is not None:
                scale, refined, out.detail_cells = detail
                decoded = enlarge_map(refined, scale, header.height, header.width)
            out.padded_map = self.pad_to_grid(decoded, gh, gw)
            context = block_majority(block_class_counts(out.padded_map, self.stride, self.num_classes))
            out.scaled_map = (factor, small)
        else:
            out.map_keep, out.map_indices = decode_tokens(stream.chunks["S"], (gh, gw),
                                                          np.zeros((gh, gw), np.int64), self.ssm_tables)
            context = self._image_context(out.map_keep, out.map_indices)
        out.context = context
        if layers == "all" and "I" in stream.chunks:
            out.image_keep, out.image_indices = decode_tokens(stream.chunks["I"], (gh, gw), context,
                                                              self.image_tables)
        else:
            out.image_keep, out.image_indices = np.zeros((gh, gw), bool), np.zeros((gh, gw), np.int64)
        return out

    def _decode_packets(self, data: bytes, layers: str) -> ParsedStream:
        """:meth:`_decode_tokens` of a packet stream: the positions of lost packets are masked."""
        header, plan = packets.read_header(data)
        self._check_header(header)
        got = packets.read(data, self.ssm_tables, self.image_tables, self._image_context)
        # the layers the stream was sent with (their payloads are the packets, not one chunk)
        chunks = {bitstream.CHUNK_SEMANTIC: b"", **({bitstream.CHUNK_IMAGE: b""} if plan["image"] else {}),
                  **got.chunks}
        stream = bitstream.Stream(header, chunks, packet_report=got.report)
        out = ParsedStream(header, stream, map_keep=got.map_keep, map_indices=got.map_indices)
        out.context = self._image_context(got.map_keep, got.map_indices)
        if layers == "all" and got.image_keep is not None:
            out.image_keep, out.image_indices = got.image_keep, got.image_indices
        else:
            out.image_keep, out.image_indices = np.zeros(header.grid, bool), np.zeros(header.grid, np.int64)
        return out

    @staticmethod
    def _finish(arr: np.ndarray, header: bitstream.Header, stream: bitstream.Stream, layers: str) -> Image.Image:
        image = Codec._finish_pixels(arr, header, stream, layers)
        image.info["sqgan_layers"] = layers_used(stream, layers)
        image.info["sqgan_truncated"] = stream.truncated
        report = stream.packet_report
        if report is not None:
            image.info["sqgan_packets"] = report.to_dict()
            if report.lost or report.damaged:
                warnings.warn(PacketLossWarning(f"packets lost or damaged: {report.summary()}; their "
                                                "tokens were decoded as masked"), stacklevel=3)
        return image

    @staticmethod
    def _finish_pixels(arr: np.ndarray, header: bitstream.Header, stream: bitstream.Stream,
                       layers: str) -> Image.Image:
        """Refinement layer and colour mode of a network-decoded image."""
        if layers == "all" and bitstream.CHUNK_REFINE in stream.chunks:
            correction = decode_residual(stream.chunks[bitstream.CHUNK_REFINE], header.height, header.width)
            arr = apply_residual(arr, correction)
        image = Image.fromarray(arr, "RGB")
        return image.convert("L") if header.colour_mode == "L" else image

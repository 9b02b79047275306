"""The codec: image → .sqg bytes → image, with loaded models kept for repeated use.

Encode: load → segment → G_s (encode, SAMM mask, VQ) → G_x (encode, SAMM mask, VQ)
        → entropy-code both token grids → container.
Decode: container → entropy-decode → G_s decode (semantic map) → G_x de-mask + SPADE decode.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from . import bitstream, registry
from .classes import CLASS_SET_ID, NUM_CLASSES
from .entropy import StreamTables, decode_tokens, encode_tokens
from .errors import BitstreamError, ModelMismatchError, SqganError
from .imageio import LoadedImage, load_image
from .nets.blocks import one_hot_map
from .nets.samm import top_k_mask
from .nets.sqgan import SQGAN, SQGANConfig

CLASS_SET_CODES = {CLASS_SET_ID: 0}
LAYERS = ("all", "base")

# The rate knob: one number in [0, 1] sets both keep ratios. The semantic map gets its bits
# first (everything downstream is conditioned on it), the image tokens follow.
MIN_KEEP = 1.0 / 255.0
# Larger images are refused with a clear message (no tiling yet): memory grows linearly,
# about 1.5 GB of activations per 10 megapixels when decoding on CPU.
MAX_PIXELS = 4096 * 4096


def keep_pair(quality: float) -> tuple[float, float]:
    """(keep_ssm, keep_image) for a rate knob in [0, 1]."""
    q = min(max(quality, 0.0), 1.0)
    return min(1.0, 0.15 + 1.2 * q), max(MIN_KEEP, q)


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise SqganError("CUDA was requested but is not available")
    return dev


def class_context(ssm_keep: np.ndarray, ssm_indices: np.ndarray, code_class: np.ndarray) -> np.ndarray:
    """Entropy-coding context of each image token: the class of the co-located semantic-map
    code, or ``NUM_CLASSES`` (unknown) where that code was masked. Integers only."""
    ctx = np.full(ssm_keep.shape, NUM_CLASSES, np.int64)
    ctx[ssm_keep] = code_class[ssm_indices[ssm_keep]]
    return ctx


@dataclass
class _Analysis:
    """Everything the encoder computes once per image; masks for any rate follow cheaply."""

    loaded: LoadedImage
    semantic_map: np.ndarray
    ssm_scores: torch.Tensor
    ssm_indices: np.ndarray
    image_scores: torch.Tensor
    image_indices: np.ndarray


class Codec:
    """SQ-GAN image codec with its models loaded once.

    >>> codec = Codec()                       # doctest: +SKIP
    >>> data = codec.encode("street.png", bpp=0.05)
    >>> image = codec.decode(data)
    """

    def __init__(self, model: str | None = None, *, device: str | torch.device = "auto",
                 segmenter: Any = "bundled"):
        self.device = resolve_device(device)
        self.entry = registry.get(model or registry.default_name("sqgan"))
        if self.entry.kind != "sqgan":
            raise ModelMismatchError(f"{self.entry.name!r} is a {self.entry.kind} model, not a codec")
        tensors, meta = registry.load_state(self.entry)
        self.config = SQGANConfig.from_dict(json.loads(meta.get("config", "{}")) or self.entry.config)
        self.stride = self.config.latent_stride
        net = SQGAN(self.config)
        weights = {k: v for k, v in tensors.items() if not k.startswith("entropy.")}
        missing, unexpected = net.load_state_dict(weights, strict=False)
        missing = [k for k in missing if ".ema_" not in k]
        if missing or unexpected:
            raise ModelMismatchError(f"weights of {self.entry.name!r} do not fit the network "
                                     f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
        self.net = net.eval().to(self.device)
        self.ssm_tables = StreamTables(tensors["entropy.ssm.mask_counts"].numpy(),
                                       tensors["entropy.ssm.index_counts"].numpy())
        self.image_tables = StreamTables(tensors["entropy.image.mask_counts"].numpy(),
                                         tensors["entropy.image.index_counts"].numpy())
        self.code_class = tensors["entropy.ssm.code_class"].numpy().astype(np.int64)
        self._segmenter_spec = segmenter
        self._segmenter = None
        self.max_pixels = MAX_PIXELS

    # ------------------------------------------------------------------ helpers
    @property
    def segmenter(self):
        if self._segmenter is None:
            from .segmenters import Segmenter, get_segmenter

            spec = self._segmenter_spec
            self._segmenter = spec if isinstance(spec, Segmenter) else get_segmenter(spec, device=str(self.device))
        return self._segmenter

    def _grid(self, width: int, height: int) -> tuple[int, int]:
        return math.ceil(height / self.stride), math.ceil(width / self.stride)

    def _padded(self, array: np.ndarray, gh: int, gw: int) -> np.ndarray:
        h, w = array.shape[:2]
        pad = ((0, gh * self.stride - h), (0, gw * self.stride - w)) + ((0, 0),) * (array.ndim - 2)
        return np.pad(array, pad, mode="edge")

    # ------------------------------------------------------------------ encode
    def analyse(self, image: Any, semantic_map: np.ndarray | None = None) -> _Analysis:
        """Run the networks once: segment, score and quantise every latent position."""
        return self.analyse_many([image], None if semantic_map is None else [semantic_map])[0]

    @torch.inference_mode()
    def analyse_many(self, images: Sequence[Any], semantic_maps: Sequence[np.ndarray] | None = None,
                     *, batch_size: int = 8) -> list[_Analysis]:
        """:meth:`analyse` for many images; same-size images go through the networks together."""
        loaded = [load_image(im, max_pixels=self.max_pixels) for im in images]
        if semantic_maps is None:
            semantic_maps = self.segmenter.segment_many([li.rgb for li in loaded],
                                                        names=[li.name for li in loaded])
        maps = []
        for li, m in zip(loaded, semantic_maps):
            m = np.asarray(m, dtype=np.uint8)
            if m.shape != li.rgb.shape[:2] or m.max(initial=0) >= NUM_CLASSES:
                raise SqganError(f"{li.name}: semantic map does not fit the image or the class set")
            maps.append(m)
        groups: dict[tuple[int, int], list[int]] = {}
        for i, li in enumerate(loaded):
            groups.setdefault(li.rgb.shape[:2], []).append(i)
        results: list[_Analysis | None] = [None] * len(loaded)
        for (h, w), members in groups.items():
            gh, gw = self._grid(w, h)
            for start in range(0, len(members), batch_size):
                batch = members[start:start + batch_size]
                rgb = torch.from_numpy(np.stack([self._padded(loaded[i].rgb, gh, gw) for i in batch]))
                rgb = rgb.to(self.device).permute(0, 3, 1, 2).float() / 127.5 - 1
                labels = torch.from_numpy(np.stack([self._padded(maps[i], gh, gw) for i in batch]))
                onehot = one_hot_map(labels.to(self.device), NUM_CLASSES)
                ssm_latents, _, ssm_scores, _ = self.net.ssm.encode(onehot, 1.0)
                ssm_indices = self.net.ssm.quantizer.codes_to_indices(ssm_latents).cpu().numpy()
                img_latents, _, img_scores = self.net.image.encode(rgb, onehot, 1.0)
                img_indices = self.net.image.quantizer.codes_to_indices(img_latents).cpu().numpy()
                for j, i in enumerate(batch):
                    results[i] = _Analysis(loaded[i], maps[i], ssm_scores[j:j + 1], ssm_indices[j],
                                           img_scores[j:j + 1], img_indices[j])
        return results  # type: ignore[return-value]

    def pack(self, analysis: _Analysis, keep_ssm: float, keep_image: float, *,
             segmenter_id: int = 0) -> bytes:
        """Entropy-code an analysed image at the given keep ratios into a .sqg stream."""
        keep_ssm = min(max(keep_ssm, MIN_KEEP), 1.0)
        keep_image = min(max(keep_image, 0.0), 1.0)
        ssm_keep = top_k_mask(analysis.ssm_scores, keep_ssm)[0, 0].cpu().numpy()
        ssm_bytes = encode_tokens(ssm_keep, analysis.ssm_indices, np.zeros(ssm_keep.shape, np.int64),
                                  self.ssm_tables)
        chunks = [("S", ssm_bytes)]
        if keep_image > 0:
            img_keep = top_k_mask(analysis.image_scores, keep_image)[0, 0].cpu().numpy()
            ctx = class_context(ssm_keep, analysis.ssm_indices, self.code_class)
            chunks.append(("I", encode_tokens(img_keep, analysis.image_indices, ctx, self.image_tables)))
        loaded = analysis.loaded
        header = bitstream.Header(
            model_id=self.entry.id, weights_hash=self.entry.hash_prefix,
            width=loaded.width, height=loaded.height, colour_mode=loaded.colour_mode,
            alpha_dropped=loaded.alpha_dropped, latent_stride=self.stride,
            class_set=CLASS_SET_CODES[CLASS_SET_ID], segmenter_id=segmenter_id, coder_id=0,
            keep_ssm=keep_ssm, keep_image=keep_image)
        return bitstream.pack(header, chunks)

    def encode(self, image: Any, *, bpp: float | None = None, keep: float | None = None,
               semantic_map: np.ndarray | None = None) -> bytes:
        """Encode an image (path, PIL image or numpy array) to .sqg bytes.

        ``bpp``: target bits per pixel (file bytes, header included); the largest stream not
        above it is chosen (the smallest possible if none fits). ``keep``: rate knob in [0, 1]
        instead. Neither: ``keep=0.3``.
        """
        if bpp is not None and keep is not None:
            raise ValueError("give bpp or keep, not both")
        analysis = self.analyse(image, semantic_map)
        seg_id = 2 if semantic_map is not None else getattr(self.segmenter, "segmenter_id", 0)
        if bpp is None:
            return self.pack(analysis, *keep_pair(0.3 if keep is None else keep), segmenter_id=seg_id)
        if bpp <= 0:
            raise ValueError("bpp must be positive")
        return self._fit_rate(analysis, bpp, seg_id)

    def _fit_rate(self, analysis: _Analysis, bpp: float, seg_id: int) -> bytes:
        pixels = analysis.loaded.width * analysis.loaded.height
        budget = bpp * pixels / 8.0
        lo, hi = 0.0, 1.0
        best = self.pack(analysis, *keep_pair(lo), segmenter_id=seg_id)
        if len(best) > budget:
            return best  # cannot go that low: the smallest stream
        top = self.pack(analysis, *keep_pair(hi), segmenter_id=seg_id)
        if len(top) <= budget:
            return top
        for _ in range(14):
            mid = (lo + hi) / 2
            data = self.pack(analysis, *keep_pair(mid), segmenter_id=seg_id)
            if len(data) <= budget:
                lo, best = mid, data
            else:
                hi = mid
        return best

    def encode_many(self, images: Sequence[Any], *, bpp: float | None = None,
                    keep: float | None = None) -> list[bytes]:
        """Encode several images; same-size images share network passes."""
        if bpp is not None and keep is not None:
            raise ValueError("give bpp or keep, not both")
        if bpp is not None and bpp <= 0:
            raise ValueError("bpp must be positive")
        seg_id = getattr(self.segmenter, "segmenter_id", 0)
        out = []
        for analysis in self.analyse_many(list(images)):
            if bpp is None:
                out.append(self.pack(analysis, *keep_pair(0.3 if keep is None else keep), segmenter_id=seg_id))
            else:
                out.append(self._fit_rate(analysis, bpp, seg_id))
        return out

    # ------------------------------------------------------------------ decode
    def _check_header(self, header: bitstream.Header) -> None:
        if (header.model_id, header.weights_hash) != (self.entry.id, self.entry.hash_prefix):
            entry = registry.find_by_id(header.model_id, header.weights_hash)
            raise ModelMismatchError(f"stream was made by model {entry.name!r}; this codec holds "
                                     f"{self.entry.name!r}")
        if header.width * header.height > self.max_pixels:
            raise BitstreamError(f"image of {header.width}x{header.height} exceeds this decoder's limit "
                                 f"of {self.max_pixels} pixels")
        if header.latent_stride != self.stride:
            raise BitstreamError(f"latent stride {header.latent_stride} does not match the model")
        if header.class_set != CLASS_SET_CODES[CLASS_SET_ID]:
            raise BitstreamError(f"unknown class set {header.class_set}")
        if header.coder_id != 0:
            raise BitstreamError(f"unknown entropy coder {header.coder_id}")

    @torch.inference_mode()
    def decode_semantic_map(self, data: bytes) -> tuple[bitstream.Header, np.ndarray, dict]:
        """Decode only the base layer: (header, semantic map H×W uint8, token state)."""
        stream = bitstream.unpack(bytes(data), allow_truncated=True)
        header = stream.header
        self._check_header(header)
        if "S" not in stream.chunks:
            raise BitstreamError("stream has no semantic-map layer" +
                                 (" (file truncated)" if stream.truncated else ""))
        gh, gw = header.grid
        ssm_keep, ssm_indices = decode_tokens(stream.chunks["S"], (gh, gw), np.zeros((gh, gw), np.int64),
                                              self.ssm_tables)
        keep_t = torch.from_numpy(ssm_keep).to(self.device)[None, None]
        idx_t = torch.from_numpy(ssm_indices).to(self.device)[None]
        logits = self.net.ssm.decode_indices(idx_t, keep_t)
        padded_map = logits.argmax(1)[0].to(torch.uint8).cpu().numpy()
        state = {"stream": stream, "ssm_keep": ssm_keep, "ssm_indices": ssm_indices, "padded_map": padded_map}
        return header, padded_map[: header.height, : header.width], state

    @torch.inference_mode()
    def decode(self, data: bytes, *, layers: str = "all") -> Image.Image:
        """Decode .sqg bytes to a PIL image of the original size and colour mode.

        ``layers="base"`` renders from the semantic map alone (also what a file cut after the
        semantic-map chunk gives).
        """
        if layers not in LAYERS:
            raise ValueError(f"layers must be one of {LAYERS}")
        header, _, state = self.decode_semantic_map(data)
        gh, gw = header.grid
        stream = state["stream"]
        if layers == "all" and "I" in stream.chunks:
            ctx = class_context(state["ssm_keep"], state["ssm_indices"], self.code_class)
            img_keep, img_indices = decode_tokens(stream.chunks["I"], (gh, gw), ctx, self.image_tables)
        else:
            img_keep, img_indices = np.zeros((gh, gw), bool), np.zeros((gh, gw), np.int64)
        onehot = one_hot_map(torch.from_numpy(state["padded_map"]).to(self.device)[None], NUM_CLASSES)
        rgb = self.net.image.decode_indices(torch.from_numpy(img_indices).to(self.device)[None],
                                            torch.from_numpy(img_keep).to(self.device)[None, None], onehot)
        arr = ((rgb[0].clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
        arr = np.ascontiguousarray(arr[: header.height, : header.width])
        image = Image.fromarray(arr, "RGB")
        return image.convert("L") if header.colour_mode == "L" else image

    def decode_many(self, datas: Sequence[bytes], *, layers: str = "all") -> list[Image.Image]:
        return [self.decode(d, layers=layers) for d in datas]

"""The coarse-image layer (chunk ``C``): a small, faithful version of the image.

SPIC's idea: beside the semantic map, send a thumbnail coded by an off-the-shelf intra codec
and let the decoder add detail to it instead of inventing every pixel. Here the thumbnail is
a lossy WebP (VP8) key frame of the image downscaled by ``scale`` in each direction. Only the
VP8 bitstream is stored: the 20-byte RIFF/WebP wrapper is rebuilt on decode. VP8 decoding is
normatively integer arithmetic, so a payload decodes to the same pixels on every machine;
upsampling to full size (:func:`upsample`) is float (±1 level across devices, as elsewhere).

Payload: ``render`` (1 byte: how the decoder turns the thumbnail into the picture, see
:data:`RENDERS`), ``scale`` (1 byte), with ``render`` = learned the first two bytes of the
coarse decoder's SHA-256 (a stream is rendered only by the weights it was chosen with), then
the VP8 frame.
"""
from __future__ import annotations

import io
import math
import struct

import numpy as np

from .errors import BitstreamError

# How a stream asks to be rendered; the encoder tries them and keeps the best (decide.py).
RENDER_UPSAMPLE = 0      # the thumbnail, upsampled (no network)
RENDER_LEARNED = 1       # the coarse decoder: thumbnail + generator's image + semantic map
RENDERS = {RENDER_UPSAMPLE: "upsample", RENDER_LEARNED: "learned"}
SCALES = (2, 3, 4, 6, 8, 12, 16)
MAX_QUALITY = 100
TAG_BYTES = 2


def small_size(width: int, height: int, scale: int) -> tuple[int, int]:
    """Thumbnail size of a ``width``×``height`` image at ``scale``: (w, h), at least 1×1."""
    return max(1, math.ceil(width / scale)), max(1, math.ceil(height / scale))


def _webp_vp8(small, quality: int) -> bytes:
    """``small`` (a PIL image) as a lossy WebP, VP8 frame only."""
    buf = io.BytesIO()
    small.save(buf, "WEBP", quality=int(quality), method=6, exact=False)
    data = buf.getvalue()
    # simple lossy WebP: RIFF....WEBPVP8 <size><frame>; anything else is a Pillow surprise
    if data[:4] != b"RIFF" or data[8:16] != b"WEBPVP8 ":
        raise RuntimeError("Pillow wrote an extended WebP; expected a simple lossy frame")
    size = struct.unpack("<I", data[16:20])[0]
    return data[20:20 + size]


class Thumbnail:
    """One image's thumbnail at one scale, coded at any quality on demand (memoised)."""

    def __init__(self, rgb: np.ndarray, scale: int):
        from PIL import Image

        if scale not in SCALES:
            raise ValueError(f"coarse scale must be one of {SCALES}")
        self.scale = scale
        h, w = rgb.shape[:2]
        self.size = small_size(w, h, scale)
        # area averaging (what the decoder's training saw); LANCZOS rings on edges
        self.small = Image.fromarray(np.ascontiguousarray(rgb)).resize(self.size, Image.BOX)
        self._coded: dict[int, bytes] = {}

    def frame(self, quality: int) -> bytes:
        if quality not in self._coded:
            self._coded[quality] = _webp_vp8(self.small, quality)
        return self._coded[quality]

    def encode(self, quality: int, render: int = RENDER_UPSAMPLE, tag: bytes = b"") -> bytes:
        return payload(render, self.scale, self.frame(quality), tag)

    def fit(self, room: float, overhead: int = 0) -> int | None:
        """The highest quality whose payload (plus ``overhead`` bytes) fits ``room``, or None."""
        fits = lambda q: 2 + overhead + len(self.frame(q)) <= room  # noqa: E731
        if not fits(0):
            return None
        lo, hi = 0, MAX_QUALITY  # invariant: lo fits
        if fits(hi):
            return hi
        while hi - lo > 1:
            mid = (lo + hi) // 2
            lo, hi = (mid, hi) if fits(mid) else (lo, mid)
        return lo


def payload(render: int, scale: int, frame: bytes, tag: bytes = b"") -> bytes:
    """A chunk ``C`` payload; ``tag``: the coarse decoder's 2-byte hash prefix (learned render)."""
    if (render == RENDER_LEARNED) != (len(tag) == TAG_BYTES):
        raise ValueError("the learned render needs the coarse decoder's tag, the others none")
    return bytes([render, scale]) + tag + frame


def parse(data: bytes, width: int, height: int) -> tuple[int, int, bytes, bytes]:
    """(render, scale, tag, VP8 frame) of a chunk ``C`` payload."""
    if len(data) < 12:
        raise BitstreamError("coarse-image chunk too short")
    render, scale = data[0], data[1]
    if render not in RENDERS:
        raise BitstreamError(f"coarse-image chunk: unknown render mode {render}")
    if scale not in SCALES:
        raise BitstreamError(f"coarse-image chunk: invalid scale {scale}")
    tag_end = 2 + (TAG_BYTES if render == RENDER_LEARNED else 0)
    return render, scale, bytes(data[2:tag_end]), bytes(data[tag_end:])


def decode_small(data: bytes, width: int, height: int) -> np.ndarray:
    """Chunk ``C`` → the thumbnail, h×w×3 uint8 (bit-exact everywhere)."""
    from PIL import Image

    _, scale, _, frame = parse(data, width, height)
    expect = small_size(width, height, scale)
    # the frame header states its size (bytes 6..9 of a key frame, 14 bits each): checked before
    # anything is allocated, so a hostile payload cannot ask for a large picture
    if len(frame) < 10 or frame[3:6] != b"\x9d\x01\x2a":
        raise BitstreamError("coarse-image chunk: not a VP8 key frame")
    fw, fh = (struct.unpack("<H", frame[6:8])[0] & 0x3FFF, struct.unpack("<H", frame[8:10])[0] & 0x3FFF)
    if (fw, fh) != expect:
        raise BitstreamError(f"coarse-image chunk: thumbnail {fw}x{fh}, expected {expect[0]}x{expect[1]}")
    pad = b"\x00" if len(frame) % 2 else b""
    riff = (b"RIFF" + struct.pack("<I", 4 + 8 + len(frame) + len(pad)) + b"WEBP" + b"VP8 "
            + struct.pack("<I", len(frame)) + frame + pad)
    try:
        with Image.open(io.BytesIO(riff), formats=["WEBP"]) as im:
            small = np.asarray(im.convert("RGB"))
    except Exception as exc:  # noqa: BLE001  (Pillow raises several types on bad data)
        raise BitstreamError(f"coarse-image chunk cannot be decoded ({exc})") from None
    if small.shape[:2] != (expect[1], expect[0]):
        raise BitstreamError("coarse-image chunk: decoded thumbnail has the wrong size")
    return small


def upsample(small: np.ndarray, width: int, height: int) -> np.ndarray:
    """Thumbnail → H×W×3 float32 in 8-bit levels (bicubic, what the coarse decoder was trained on)."""
    import torch
    import torch.nn.functional as F

    t = torch.from_numpy(np.ascontiguousarray(small, dtype=np.float32)).permute(2, 0, 1)[None]
    up = F.interpolate(t, size=(height, width), mode="bicubic", align_corners=False)
    return up[0].permute(1, 2, 0).clamp_(0, 255).numpy()

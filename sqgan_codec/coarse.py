"""The coarse-image layer (chunk ``C``): a small, faithful version of the image.

SPIC's idea: beside the semantic map, send a thumbnail coded by an off-the-shelf intra codec
and let the decoder add detail to it instead of inventing every pixel. The thumbnail is the
image downscaled by ``scale`` in each direction (1: full size) and coded as one intra frame:

* **AV1** (format 4.0 streams, what the encoder writes): a still picture from libaom through
  Pillow's AVIF plugin. Only the AV1 bitstream (OBUs) is stored; the ~270 bytes of AVIF
  (HEIF) boxes around it are rebuilt on decode from the picture size, which the stream already
  knows. At the sizes this codec targets those boxes would be a quarter of the budget.
* **VP8** (format 3.0 streams): a lossy WebP key frame; the 20-byte RIFF wrapper is rebuilt.

Both decoders are normative integer arithmetic (dav1d, libwebp), so a payload decodes to the
same YUV samples on every machine; the YUV->RGB conversion and upsampling to full size
(:func:`upsample`) may differ by ±1 level across CPUs, as elsewhere.

Payload: one byte ``render | format << 4`` (how the decoder turns the thumbnail into the picture,
see :data:`RENDERS`; the codec, see :data:`FORMATS`), ``scale`` (1 byte), with ``render`` =
learned the first two bytes of the coarse decoder's SHA-256 (a stream is rendered only by the
weights it was chosen with), then the frame.

**Patches** (chunk ``P``, format 5.0, right after ``C``): regions of interest (``--roi``) coded
again as their own, finer AV1 thumbnails, pasted over the upsampled thumbnail (blended over
:data:`FEATHER` pixels at edges inside the image) before it is rendered. Payload: one byte
``format << 4 | count``, then per patch x, y, width, height (the container's varints), scale (1 byte), the frame's
length (varint) and the frame.
"""
from __future__ import annotations

import functools
import io
import math
import struct
from typing import TYPE_CHECKING, Callable, NamedTuple

from .errors import BitstreamError, MissingCodecError

if TYPE_CHECKING:  # numpy loads with the first thumbnail: `sqgan info` reads chunk C without it
    import numpy as np

# How a stream asks to be rendered; the encoder tries them and keeps the best (decide.py).
RENDER_UPSAMPLE = 0      # the thumbnail, upsampled (no network)
RENDER_LEARNED = 1       # the coarse decoder: thumbnail + generator's image + semantic map
RENDERS = {RENDER_UPSAMPLE: "upsample", RENDER_LEARNED: "learned"}
# The thumbnail's codec, in the high nibble of the payload's first byte.
FORMAT_VP8 = 0
FORMAT_AV1 = 1
FORMATS = {FORMAT_VP8: "vp8", FORMAT_AV1: "av1"}
FORMAT_IDS = {name: code for code, name in FORMATS.items()}
SCALES_OF = {FORMAT_VP8: (2, 3, 4, 6, 8, 12, 16), FORMAT_AV1: (1, 2, 3, 4, 6, 8, 12, 16)}
SCALES = SCALES_OF[FORMAT_AV1]
MAX_QUALITY = 100
TAG_BYTES = 2
# libaom's speed presets: the quality search encodes many frames fast; the frame sent is coded
# again, slower (about 0.4 dB better at the same size, within 5 % of the search's size)
AV1_SEARCH_SPEED = 9
AV1_SPEED = 6
AV1_FILL_SPEED = 8
FINAL_STEPS_UP = 4  # the sent frame's quality is searched up to this far above the quick search's
# When the quality steps leave more than 3 % of the budget unused, frames with these loop-filter
# sharpness values are tried at the quality one step up, then at the sent one (on the photos:
# streams of the thumbnail alone filled their budget to 0.96 on average, 0.99 with them)
SHARPENED_STEPS = 1
SHARPNESS = ((AV1_SPEED, (0, 2, 5, 7)), (AV1_SPEED, (1, 3, 4, 6)), (AV1_FILL_SPEED, tuple(range(8))))  # (speed, values)
MAX_PARALLEL_FRAMES = 4  # AV1 frames coded at once by the sent frame's search (each on one thread)


@functools.cache
def av1_available() -> bool:
    """Whether this Pillow reads and writes AVIF (AV1): wheels of Pillow >= 11.3 do."""
    from PIL import features

    return bool(features.check("avif"))


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


def _av1_obus(small, quality: int, speed: int, sharpness: int | None = None) -> bytes:
    """``small`` (a PIL image) as an AV1 still picture (8-bit 4:2:0, BT.601 full range): the
    OBUs of the AVIF's one item, without the temporal delimiter a still item does not need.
    ``sharpness``: libaom's loop-filter sharpness 0–7 (None: libavif's default)."""
    buf = io.BytesIO()
    extra = {} if sharpness is None else {"advanced": {"sharpness": str(int(sharpness))}}
    # one thread: the same bytes on every machine (and thumbnails are small)
    small.save(buf, "AVIF", quality=int(quality), speed=speed, subsampling="4:2:0", max_threads=1,
               range="full", **extra)
    data = buf.getvalue()
    at = data.rfind(b"mdat")
    size = struct.unpack(">I", data[at - 4:at])[0] if at >= 4 else 0
    if at < 4 or size < 8 or at - 4 + size != len(data):
        raise RuntimeError("Pillow wrote an AVIF whose last box is not the one mdat; expected a simple still")
    obus = data[at + 4:]
    return obus[2:] if obus[:2] == b"\x12\x00" else obus


def parallel_frames() -> int:
    """How many AV1 frames the encoder codes at once: torch's thread budget
    (``torch.set_num_threads``), at most :data:`MAX_PARALLEL_FRAMES`."""
    import torch

    return max(1, min(MAX_PARALLEL_FRAMES, torch.get_num_threads()))


class Thumbnail:
    """One image's thumbnail at one scale, coded at any quality on demand (memoised).

    ``frame(q)`` is the quick coding the encoder searches with, :meth:`final_frame` the one it
    sends (the same for VP8; for AV1 a slower preset, see :data:`AV1_SPEED`)."""

    def __init__(self, rgb: np.ndarray, scale: int, fmt: int = FORMAT_AV1):
        import numpy as np
        from PIL import Image

        if fmt not in FORMATS:
            raise ValueError(f"thumbnail format must be one of {sorted(FORMATS)}")
        if scale not in SCALES_OF[fmt]:
            raise ValueError(f"{FORMATS[fmt]} thumbnail scale must be one of {SCALES_OF[fmt]}")
        self.scale = scale
        self.format = fmt
        self._search_speed = 0 if fmt == FORMAT_VP8 else AV1_SEARCH_SPEED  # (VP8 has one coding)
        h, w = rgb.shape[:2]
        self.size = small_size(w, h, scale)
        # area averaging (what the decoder's training saw); LANCZOS rings on edges
        self.small = Image.fromarray(np.ascontiguousarray(rgb)).resize(self.size, Image.BOX)
        self._coded: dict[tuple[int, int], bytes] = {}  # by (quality, speed)
        self._sharpened: dict[tuple[int, int, int], bytes] = {}  # AV1: by (quality, sharpness, speed)

    def frame(self, quality: int, speed: int | None = None) -> bytes:
        """The frame at ``quality``; AV1 at libaom ``speed`` (default the quick search's)."""
        speed = self._search_speed if speed is None or self.format == FORMAT_VP8 else speed
        if (quality, speed) not in self._coded:
            if self.format == FORMAT_VP8:
                self._coded[quality, speed] = _webp_vp8(self.small, quality)
            else:
                self._coded[quality, speed] = _av1_obus(self.small, quality, speed)
        return self._coded[quality, speed]

    def sharpened(self, quality: int, sharpness: int, speed: int = AV1_SPEED) -> bytes:
        """The AV1 frame at ``quality`` and libaom ``speed`` with the loop-filter ``sharpness``
        set: sizes a few per cent apart, between the quality steps."""
        if (quality, sharpness, speed) not in self._sharpened:
            self._sharpened[quality, sharpness, speed] = _av1_obus(self.small, quality, speed, sharpness)
        return self._sharpened[quality, sharpness, speed]

    def code_ahead(self, keys: list[tuple[int, int, int | None]]) -> None:
        """Code the AV1 frames ``(quality, speed, sharpness or None)`` not coded yet, several at
        once (:func:`parallel_frames`; libaom releases the GIL). Each frame is coded on one
        thread, from its own copy of the thumbnail (Pillow keeps a save's options on the
        image), so the bytes are those of coding them one by one."""
        todo = [k for k in dict.fromkeys(keys)
                if (k[:2] not in self._coded if k[2] is None else (k[0], k[2], k[1]) not in self._sharpened)]
        workers = min(parallel_frames(), len(todo))
        if workers < 2:
            return
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(workers, thread_name_prefix="sqgan-av1") as pool:
            frames = list(pool.map(lambda k: _av1_obus(self.small.copy(), *k), todo))
        for (quality, speed, sharpness), frame in zip(todo, frames):
            if sharpness is None:
                self._coded[quality, speed] = frame
            else:
                self._sharpened[quality, sharpness, speed] = frame

    def encode(self, quality: int, render: int = RENDER_UPSAMPLE, tag: bytes = b"",
               speed: int | None = None) -> bytes:
        return payload(render, self.scale, self.frame(quality, speed), tag, self.format)

    def fit(self, room: float, overhead: int = 0) -> int | None:
        """The highest quality whose payload (plus ``overhead`` bytes) fits ``room``, or None.
        Searched from the qualities already coded (other budgets of the image) by interpolating
        the logarithm of the size (about linear in the quality): 3–4 codings where bisection
        over the 101 qualities takes 7."""
        size = lambda q: 2 + overhead + len(self.frame(q))  # noqa: E731
        known = [(q, 2 + overhead + len(f)) for (q, speed), f in self._coded.items()
                 if speed == self._search_speed]
        lo = max((q for q, s in known if s <= room), default=None)  # invariant: lo fits, hi does not
        hi = min((q for q, s in known if s > room), default=MAX_QUALITY + 1)
        if lo is None:
            if size(0) > room:
                return None
            lo = 0
        if hi > MAX_QUALITY and size(MAX_QUALITY) <= room:
            return MAX_QUALITY
        hi = min(hi, MAX_QUALITY)
        while hi - lo > 1:
            step = (math.log(room) - math.log(size(lo))) / (math.log(size(hi)) - math.log(size(lo)))
            # kept a quarter away from either end: a bad guess still shrinks the interval
            margin = max(1, (hi - lo) // 4)
            mid = min(max(lo + round(step * (hi - lo)), lo + margin), hi - margin)
            lo, hi = (mid, hi) if size(mid) <= room else (lo, mid)
        return lo

    def final_frame(self, start: int, fits: Callable[[bytes], bool],
                    full: Callable[[bytes], bool] | None = None) -> bytes | None:
        """The AV1 frame to send, for which ``fits(frame)``: libaom's slower preset
        (:data:`AV1_SPEED`) at the highest quality that fits, searched from ``start`` (the quick
        search's answer: the presets' sizes differ by a few per cent, so a few encodes), or,
        where the quality steps leave room, the fast preset one or two steps up if it decodes
        nearer the image. ``full(frame)``: whether a frame fills the budget enough; when none of
        those does, frames with libaom's loop-filter sharpness set (sizes between the quality
        steps, :meth:`sharpened`) are tried, and the nearest to the image of those that fill it
        is sent.
        None if nothing fits (VP8: None, its one frame is already final)."""
        if self.format != FORMAT_AV1:
            return None
        ok = lambda q, speed=AV1_SPEED: fits(self.frame(q, speed))  # noqa: E731
        top = min(start + FINAL_STEPS_UP, MAX_QUALITY)
        # the next qualities up are coded together, as many as run at once
        ahead = lambda q: self.code_ahead([(x, AV1_SPEED, None)  # noqa: E731
                                           for x in range(q, min(q + parallel_frames(), top + 1))])
        ahead(start)
        q = start
        while q > 0 and not ok(q):
            q -= 1
        if not ok(q):
            return None
        while q < top:
            if (q + 1, AV1_SPEED) not in self._coded:
                ahead(q + 1)
            if not ok(q + 1):
                break
            q += 1
        # AV1 has 64 quantiser levels: one step is ~5 % of the size, which the faster preset's
        # larger frames at the next steps may fill
        options = [self.frame(q, AV1_SPEED)]
        fill = range(q + 1, min(q + 3, MAX_QUALITY + 1))
        self.code_ahead([(up, AV1_FILL_SPEED, None) for up in fill])
        for up in fill:
            if not ok(up, AV1_FILL_SPEED):
                break
            options.append(self.frame(up, AV1_FILL_SPEED))
        if full is not None and not any(full(f) for f in options):
            tries = [(qq, speed, values) for speed, values in SHARPNESS  # the best quality first
                     for qq in range(min(q + SHARPENED_STEPS, MAX_QUALITY), q - 1, -1)]
            for qq, speed, values in tries:
                self.code_ahead([(qq, speed, s) for s in values])
                filling = [f for f in (self.sharpened(qq, s, speed) for s in values) if fits(f) and full(f)]
                if filling:
                    options = filling
                    break
        if len(options) == 1:
            return options[0]
        import numpy as np

        reference = np.asarray(self.small, dtype=np.float32)
        errors = [float(np.mean((_decode_av1(f, self.size).astype(np.float32) - reference) ** 2)) for f in options]
        return options[int(np.argmin(errors))]

    def quality_of(self, frame: bytes) -> int | None:
        """The quality a quick-search ``frame`` of this thumbnail was coded at (None: not one)."""
        return next((q for (q, speed), f in self._coded.items() if speed == self._search_speed and f == frame),
                    None)


def payload(render: int, scale: int, frame: bytes, tag: bytes = b"", fmt: int = FORMAT_AV1) -> bytes:
    """A chunk ``C`` payload; ``tag``: the coarse decoder's 2-byte hash prefix (learned render)."""
    if (render == RENDER_LEARNED) != (len(tag) == TAG_BYTES):
        raise ValueError("the learned render needs the coarse decoder's tag, the others none")
    if scale not in SCALES_OF[fmt]:
        raise ValueError(f"{FORMATS[fmt]} thumbnail scale must be one of {SCALES_OF[fmt]}")
    return bytes([render | fmt << 4, scale]) + tag + frame


class CoarseChunk(NamedTuple):
    """A parsed chunk ``C`` payload."""

    render: int
    scale: int
    tag: bytes
    frame: bytes
    format: int


def chunk_format(data: bytes) -> int:
    """The thumbnail codec a chunk ``C`` payload names (not checked: see :func:`parse`)."""
    return data[0] >> 4 if data else FORMAT_VP8


def parse(data: bytes, width: int, height: int) -> CoarseChunk:
    """A chunk ``C`` payload's fields (the frame itself is checked when it is decoded)."""
    if len(data) < 12:
        raise BitstreamError("coarse-image chunk too short")
    render, fmt, scale = data[0] & 0x0F, data[0] >> 4, data[1]
    if render not in RENDERS:
        raise BitstreamError(f"coarse-image chunk: unknown render mode {render}")
    if fmt not in FORMATS:
        raise BitstreamError(f"coarse-image chunk: unknown thumbnail format {fmt}")
    if scale not in SCALES_OF[fmt]:
        raise BitstreamError(f"coarse-image chunk: invalid scale {scale} for a {FORMATS[fmt]} thumbnail")
    tag_end = 2 + (TAG_BYTES if render == RENDER_LEARNED else 0)
    return CoarseChunk(render, scale, bytes(data[2:tag_end]), bytes(data[tag_end:]), fmt)


def decode_small(data: bytes, width: int, height: int) -> np.ndarray:
    """Chunk ``C`` → the thumbnail, h×w×3 uint8 (bit-exact everywhere)."""
    chunk = parse(data, width, height)
    expect = small_size(width, height, chunk.scale)
    if chunk.format == FORMAT_AV1:
        return _decode_av1(chunk.frame, expect)
    return _decode_vp8(chunk.frame, expect)


def _decode_vp8(frame: bytes, expect: tuple[int, int]) -> np.ndarray:
    import numpy as np
    from PIL import Image

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


class _Bits:
    """MSB-first bit reader over an OBU payload (AV1 spec 4.10 f(n))."""

    def __init__(self, data: bytes):
        self.data, self.pos = data, 0

    def f(self, n: int) -> int:
        value = 0
        for _ in range(n):
            byte = self.pos >> 3
            if byte >= len(self.data):
                raise BitstreamError("coarse-image chunk: AV1 sequence header too short")
            value = value << 1 | (self.data[byte] >> (7 - (self.pos & 7)) & 1)
            self.pos += 1
        return value


def _leb128(data: bytes, pos: int) -> tuple[int, int]:
    value = 0
    for i in range(8):
        if pos + i >= len(data):
            break
        value |= (data[pos + i] & 0x7F) << (7 * i)
        if not data[pos + i] & 0x80:
            return value, pos + i + 1
    raise BitstreamError("coarse-image chunk: malformed AV1 OBU size")


def av1_sequence(obus: bytes) -> tuple[int, int, int, int]:
    """(seq_profile, seq_level_idx, max width, max height) from the AV1 still picture's first
    OBU, which must be a reduced still-picture sequence header (what libaom writes for a still)."""
    if len(obus) < 2 or obus[0] & 0x80 or (obus[0] >> 3) & 0x0F != 1 or not obus[0] & 0x02:
        raise BitstreamError("coarse-image chunk: AV1 frame does not start with a sequence header")
    size, pos = _leb128(obus, 1 + (1 if obus[0] & 0x04 else 0))
    bits = _Bits(obus[pos:pos + size])
    profile, still, reduced = bits.f(3), bits.f(1), bits.f(1)
    if not (still and reduced):
        raise BitstreamError("coarse-image chunk: AV1 frame is not a reduced still picture")
    level = bits.f(5)
    wbits, hbits = bits.f(4) + 1, bits.f(4) + 1
    return profile, level, bits.f(wbits) + 1, bits.f(hbits) + 1


def _box(kind: bytes, *parts: bytes) -> bytes:
    body = b"".join(parts)
    return struct.pack(">I", 8 + len(body)) + kind + body


def _full_box(kind: bytes, version: int, flags: int, *parts: bytes) -> bytes:
    return _box(kind, bytes([version]) + flags.to_bytes(3, "big"), *parts)


def avif_file(obus: bytes, width: int, height: int, profile: int, level: int) -> bytes:
    """The AVIF file (HEIF boxes) around one AV1 still picture of ``width``×``height``:
    8-bit 4:2:0, sRGB primaries and transfer, BT.601 matrix, full range (what the encoder
    asks libaom for)."""
    ftyp = _box(b"ftyp", b"avif", bytes(4), b"avifmif1miaf")
    hdlr = _full_box(b"hdlr", 0, 0, bytes(4), b"pict", bytes(12), b"\x00")
    pitm = _full_box(b"pitm", 0, 0, struct.pack(">H", 1))
    infe = _full_box(b"infe", 2, 0, struct.pack(">HH", 1, 0), b"av01", b"\x00")
    iinf = _full_box(b"iinf", 0, 0, struct.pack(">H", 1), infe)
    ipco = _box(b"ipco",
                _full_box(b"ispe", 0, 0, struct.pack(">II", width, height)),
                _full_box(b"pixi", 0, 0, bytes([3, 8, 8, 8])),
                _box(b"av1C", bytes([0x81, profile << 5 | level, 0x0C, 0])),
                _box(b"colr", b"nclx", struct.pack(">HHH", 1, 13, 6), b"\x80"))
    ipma = _full_box(b"ipma", 0, 0, struct.pack(">IHB", 1, 1, 4), bytes([0x01, 0x02, 0x83, 0x04]))
    iprp = _box(b"iprp", ipco, ipma)

    def meta(offset: int) -> bytes:
        iloc = _full_box(b"iloc", 0, 0, bytes([0x44, 0x00]),
                         struct.pack(">HHHHII", 1, 1, 0, 1, offset, len(obus)))
        return _full_box(b"meta", 0, 0, hdlr, pitm, iloc, iinf, iprp)

    head = len(ftyp) + len(meta(0)) + 8  # the mdat's data starts here
    return ftyp + meta(head) + _box(b"mdat", obus)


def _decode_av1(obus: bytes, expect: tuple[int, int]) -> np.ndarray:
    import numpy as np
    from PIL import Image

    # the sequence header states the picture's size: checked before anything is allocated, so
    # a hostile payload cannot ask for a large picture
    profile, level, fw, fh = av1_sequence(obus)
    if (fw, fh) != expect:
        raise BitstreamError(f"coarse-image chunk: thumbnail {fw}x{fh}, expected {expect[0]}x{expect[1]}")
    if profile != 0:
        raise BitstreamError(f"coarse-image chunk: AV1 profile {profile}, expected 0 (main)")
    if not av1_available():
        raise MissingCodecError("this stream's coarse image is AV1, and this Pillow has no AVIF "
                                "support: install Pillow >= 11.3 (its wheels include it)")
    try:
        with Image.open(io.BytesIO(avif_file(obus, fw, fh, profile, level)), formats=["AVIF"]) as im:
            small = np.asarray(im.convert("RGB"))
    except Exception as exc:  # noqa: BLE001  (Pillow raises several types on bad data)
        raise BitstreamError(f"coarse-image chunk cannot be decoded ({exc})") from None
    if small.shape != (fh, fw, 3):
        raise BitstreamError("coarse-image chunk: decoded thumbnail has the wrong size")
    return small


def upsample(small: np.ndarray, width: int, height: int) -> np.ndarray:
    """Thumbnail → H×W×3 float32 in 8-bit levels (bicubic, what the coarse decoder was trained on)."""
    import numpy as np
    import torch
    import torch.nn.functional as F

    if small.shape[:2] == (height, width):  # scale 1: the thumbnail is the picture
        return small.astype(np.float32)
    t = torch.from_numpy(np.ascontiguousarray(small, dtype=np.float32)).permute(2, 0, 1)[None]
    up = F.interpolate(t, size=(height, width), mode="bicubic", align_corners=False)
    return up[0].permute(1, 2, 0).clamp_(0, 255).numpy()


# ------------------------------------------------------------------------------ patches (chunk P)

MAX_PATCHES = 8
MIN_PATCH = 16      # pixels per side: a smaller region gains nothing a thumbnail does not hold
FEATHER = 4         # pixels over which a patch's edge inside the image blends into the thumbnail


class Patch(NamedTuple):
    """One region of interest coded as its own thumbnail (chunk ``P``)."""

    x: int
    y: int
    width: int
    height: int
    scale: int
    frame: bytes


def patches_payload(patches: list[Patch]) -> bytes:
    """A chunk ``P`` payload (AV1 frames; numbers as the container's varints)."""
    from .bitstream import encode_varint  # (bitstream imports this module)

    if not 1 <= len(patches) <= MAX_PATCHES:
        raise ValueError(f"a patch chunk holds 1..{MAX_PATCHES} patches")
    out = bytearray([FORMAT_AV1 << 4 | len(patches)])
    for patch in patches:
        if patch.scale not in SCALES_OF[FORMAT_AV1]:
            raise ValueError(f"patch scale must be one of {SCALES_OF[FORMAT_AV1]}")
        for value in (patch.x, patch.y, patch.width, patch.height):
            out += encode_varint(value)
        out.append(patch.scale)
        out += encode_varint(len(patch.frame)) + patch.frame
    return bytes(out)


def parse_patches(data: bytes, width: int, height: int) -> list[Patch]:
    """A chunk ``P`` payload's patches, each checked to lie inside the ``width``×``height`` image
    (the frames themselves are checked when they are decoded)."""
    from .bitstream import decode_varint  # (bitstream imports this module)

    def number(pos: int) -> tuple[int, int]:
        try:
            return decode_varint(data, pos)
        except BitstreamError as e:
            raise BitstreamError(f"patch chunk: malformed number ({e})") from None

    if not data:
        raise BitstreamError("patch chunk is empty")
    fmt, count = data[0] >> 4, data[0] & 0x0F
    if fmt != FORMAT_AV1:
        raise BitstreamError(f"patch chunk: unknown thumbnail format {fmt}")
    if not 1 <= count <= MAX_PATCHES:
        raise BitstreamError(f"patch chunk: {count} patches (1..{MAX_PATCHES} allowed)")
    pos, out = 1, []
    for _ in range(count):
        box = []
        for _ in range(4):
            value, pos = number(pos)
            box.append(value)
        x, y, w, h = box
        if w < MIN_PATCH or h < MIN_PATCH or x + w > width or y + h > height:
            raise BitstreamError(f"patch chunk: region {x},{y},{w},{h} is not inside the {width}x{height} "
                                 f"image or is under {MIN_PATCH} pixels a side")
        if pos >= len(data) or data[pos] not in SCALES_OF[FORMAT_AV1]:
            raise BitstreamError("patch chunk: missing or invalid scale")
        scale = data[pos]
        length, pos = number(pos + 1)
        if length == 0 or pos + length > len(data):
            raise BitstreamError("patch chunk: frame length past the end of the chunk")
        out.append(Patch(x, y, w, h, scale, bytes(data[pos:pos + length])))
        pos += length
    if pos != len(data):
        raise BitstreamError(f"patch chunk: {len(data) - pos} bytes after the last patch")
    return out


def paste_patches(up: np.ndarray, data: bytes, width: int, height: int) -> np.ndarray:
    """The upsampled thumbnail ``up`` (H×W×3 float32, modified in place) with chunk ``P``'s
    patches decoded, upsampled to their regions and blended in."""
    import numpy as np

    for i, patch in enumerate(parse_patches(data, width, height)):
        try:
            small = _decode_av1(patch.frame, small_size(patch.width, patch.height, patch.scale))
        except BitstreamError as e:  # (the frame decoder names chunk C)
            raise BitstreamError(f"patch chunk, patch {i + 1}: {e}".replace("coarse-image chunk: ", "")) from None
        pixels = upsample(small, patch.width, patch.height)

        def ramp(n: int, open_start: bool, open_end: bool) -> np.ndarray:
            """1 inside, falling over FEATHER pixels towards an edge that lies inside the image."""
            i = np.arange(n, dtype=np.float32)
            r = np.ones(n, np.float32)
            if open_start:
                r = np.minimum(r, (i + 0.5) / FEATHER)
            if open_end:
                r = np.minimum(r, (n - i - 0.5) / FEATHER)
            return r

        alpha = (ramp(patch.height, patch.y > 0, patch.y + patch.height < height)[:, None, None]
                 * ramp(patch.width, patch.x > 0, patch.x + patch.width < width)[None, :, None])
        region = up[patch.y:patch.y + patch.height, patch.x:patch.x + patch.width]
        region += alpha * (pixels - region)
    return up

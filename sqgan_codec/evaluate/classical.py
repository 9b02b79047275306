"""Classical image codecs at a target bit rate, for the rate/quality benchmark.

Codecs (all single-threaded, through Pillow and its plugins):

=========  =====================================  ============================================
name       library                                setting that is searched
=========  =====================================  ============================================
jpeg       Pillow / libjpeg-turbo                 quality 1..100 (4:2:0, optimised Huffman)
jpeg2000   Pillow / OpenJPEG                      compression ratio (9/7 wavelet, raw .j2k
                                                  codestream, no JP2 boxes)
webp       Pillow / libwebp                       quality 0..100 (method 6)
avif       Pillow / libavif + aom                 quality 0..100 (speed 6, 4:2:0)
hevc       pillow-heif / libheif + x265 (HEIF)    quality 0..100 (4:2:0, x265 single-threaded)
jxl        pillow-jxl-plugin / libjxl             quality 0..99 (effort 7)
=========  =====================================  ============================================

Every codec can also run at a reduced resolution (``scale`` 2 or 4): the image is downscaled
with Lanczos, coded, decoded and upscaled with bicubic back to full size. Bits per pixel are
always the coded file's bytes × 8 / (W × H) of the *full-size* image. The files are the
formats' ordinary files, containers included: HEIF and AVIF carry ~300–450 bytes of boxes,
which is most of the 540-byte budget that 0.025 bpp gives a 480×360 image.

:func:`code_at_bpp` searches the setting for the largest file not above the target (sizes are
assumed to grow with the setting; only files verified to be within the target are returned).
"""
from __future__ import annotations

import io
import math
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
from PIL import Image

SCALES = (1, 2, 4)


@dataclass
class Result:
    """One coded image. ``rgb`` is the decoded image at full size (H×W×3 uint8)."""

    codec: str
    scale: int
    target_bpp: float
    quality: float  # the codec's own setting (JPEG 2000: the OpenJPEG compression ratio)
    data: bytes = field(repr=False)
    rgb: np.ndarray = field(repr=False)
    bpp: float
    encode_s: float  # wall time of the encode that produced ``data`` (search excluded)
    decode_s: float  # wall time of decode + upscale

    @property
    def nbytes(self) -> int:
        return len(self.data)


@dataclass(frozen=True)
class _Spec:
    encode: Callable[[Image.Image, float], bytes]
    lo: int  # search grid: integer settings lo..hi, size non-decreasing in the setting
    hi: int
    setting: Callable[[int], float]  # grid point → the codec's own quality value
    plugin: str | None = None  # module to import to register the format
    library: str = ""
    guess: Callable[[float], int] | None = None  # coded bits per pixel → likely grid point


def _save(im: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format=fmt, **kw)
    return buf.getvalue()


# JPEG 2000's setting is a compression ratio; the grid is log-spaced coded bits per pixel
# from 0.002 to 8 (steps of 0.83 %), ratio = 24 / coded bpp.
_J2K_GRID = 1000
_J2K_BPP_LO, _J2K_BPP_HI = 0.002, 8.0


def _j2k_ratio(q: int) -> float:
    return 24.0 / (_J2K_BPP_LO * (_J2K_BPP_HI / _J2K_BPP_LO) ** (q / _J2K_GRID))


def _j2k_guess(coded_bpp: float) -> int:
    q = _J2K_GRID * math.log(max(coded_bpp, 1e-9) / _J2K_BPP_LO) / math.log(_J2K_BPP_HI / _J2K_BPP_LO)
    return int(min(max(round(q), 0), _J2K_GRID))


def _j2k_encode(im: Image.Image, q: float) -> bytes:
    levels = max(1, min(6, int(math.log2(max(1, min(im.size)))) - 2))
    return _save(im, "JPEG2000", quality_mode="rates", quality_layers=[_j2k_ratio(int(q))],
                 irreversible=True, no_jp2=True, num_resolutions=levels)


_X265_SINGLE_THREAD = {"x265:pools": "none", "x265:frame-threads": "1"}

_SPECS: dict[str, _Spec] = {
    "jpeg": _Spec(lambda im, q: _save(im, "JPEG", quality=int(q), optimize=True, subsampling="4:2:0"),
                  1, 100, float, library="Pillow libjpeg-turbo"),
    "jpeg2000": _Spec(_j2k_encode, 0, _J2K_GRID, _j2k_ratio, library="Pillow OpenJPEG", guess=_j2k_guess),
    "webp": _Spec(lambda im, q: _save(im, "WEBP", quality=int(q), method=6),
                  0, 100, float, library="Pillow libwebp"),
    "avif": _Spec(lambda im, q: _save(im, "AVIF", quality=int(q), speed=6, max_threads=1, subsampling="4:2:0"),
                  0, 100, float, library="Pillow libavif"),
    "hevc": _Spec(lambda im, q: _save(im, "HEIF", quality=int(q), chroma=420, enc_params=_X265_SINGLE_THREAD),
                  0, 100, float, plugin="pillow_heif", library="pillow-heif libheif+x265"),
    # quality 100 means distance 0, which libjxl only accepts in lossless mode
    "jxl": _Spec(lambda im, q: _save(im, "JXL", quality=int(q), effort=7, num_threads=1),
                 0, 99, float, plugin="pillow_jxl", library="pillow-jxl-plugin libjxl"),
}
CODECS: tuple[str, ...] = tuple(_SPECS)

_registered: dict[str, str | None] = {}


def _register(codec: str) -> None:
    """Import the plugin a codec needs; raises RuntimeError with the reason if it cannot."""
    spec = _SPECS[codec]
    if codec not in _registered:
        reason = None
        try:
            if spec.plugin == "pillow_heif":
                import pillow_heif

                pillow_heif.register_heif_opener()
            elif spec.plugin == "pillow_jxl":
                import pillow_jxl  # noqa: F401  (registers JXL with Pillow)
            elif codec == "avif":
                from PIL import features

                if not features.check("avif"):
                    reason = "this Pillow build has no AVIF support"
            elif codec == "jpeg2000":
                from PIL import features

                if not features.check("jpg_2000"):
                    reason = "this Pillow build has no OpenJPEG support"
        except ImportError as exc:
            reason = f"{spec.plugin} is not installed ({exc})"
        _registered[codec] = reason
    if _registered[codec]:
        raise RuntimeError(_registered[codec])


def available_codecs() -> dict[str, str | None]:
    """Codec name → None if usable here, else the reason it is not."""
    out = {}
    for name in CODECS:
        try:
            _register(name)
            out[name] = None
        except RuntimeError as exc:
            out[name] = str(exc)
    return out


def codec_versions() -> dict[str, str]:
    """Library versions behind each codec, for the report."""
    from importlib.metadata import PackageNotFoundError, version

    from PIL import features

    v = {"pillow": version("pillow")}
    for key, feat in (("libjpeg-turbo", "libjpeg_turbo"), ("openjpeg", "jpg_2000"),
                      ("libwebp", "webp"), ("libavif", "avif")):
        try:
            v[key] = str(features.version(feat))
        except Exception:  # noqa: BLE001  (feature missing from this build)
            pass
    for dist in ("pillow-heif", "pillow-jxl-plugin"):
        try:
            v[dist] = version(dist)
        except PackageNotFoundError:
            pass
    try:
        import pillow_heif

        info = pillow_heif.libheif_info()
        v["libheif"] = str(info.get("libheif"))
        v["hevc_encoder"] = str(info.get("HEIF"))
    except Exception:  # noqa: BLE001
        pass
    return v


def _to_image(rgb: np.ndarray) -> Image.Image:
    rgb = np.asarray(rgb)
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected an H×W×3 uint8 RGB array, got {rgb.dtype} {rgb.shape}")
    return Image.fromarray(rgb, "RGB")


def downscale(im: Image.Image, scale: int) -> Image.Image:
    if scale == 1:
        return im
    w, h = im.size
    return im.resize((max(1, round(w / scale)), max(1, round(h / scale))), Image.Resampling.LANCZOS)


def encode(rgb: np.ndarray | Image.Image, codec: str, quality: float) -> bytes:
    """Code an image (at its own size) with a codec's native setting grid point."""
    _register(codec)
    im = rgb if isinstance(rgb, Image.Image) else _to_image(rgb)
    return _SPECS[codec].encode(im, quality)


def decode(data: bytes, size: tuple[int, int] | None = None) -> np.ndarray:
    """Decode any of the formats above to RGB uint8, upscaled (bicubic) to ``size`` = (W, H)."""
    with Image.open(io.BytesIO(data)) as im:
        im = im.convert("RGB")
        if size is not None and im.size != tuple(size):
            im = im.resize(tuple(size), Image.Resampling.BICUBIC)
        return np.asarray(im).copy()


class _Searcher:
    """Encodes one (image, codec, scale) at grid settings, caching sizes and bytes."""

    def __init__(self, rgb: np.ndarray, codec: str, scale: int):
        if codec not in _SPECS:
            raise ValueError(f"unknown codec {codec!r}; known: {', '.join(CODECS)}")
        _register(codec)
        if scale < 1:
            raise ValueError(f"scale must be >= 1, got {scale}")
        self.codec, self.scale, self.spec = codec, int(scale), _SPECS[codec]
        full = _to_image(rgb)
        self.size = full.size
        self.pixels = full.size[0] * full.size[1]
        self.small = downscale(full, self.scale)
        self.cache: dict[int, tuple[bytes, float]] = {}
        self.encodes = 0

    def bytes_at(self, q: int) -> bytes:
        if q not in self.cache:
            t = time.perf_counter()
            data = self.spec.encode(self.small, q)
            self.cache[q] = (data, time.perf_counter() - t)
            self.encodes += 1
        return self.cache[q][0]

    def fits(self, q: int, budget: int) -> bool:
        return len(self.bytes_at(q)) <= budget

    def search(self, target_bpp: float) -> int | None:
        """Largest grid point whose file fits ``target_bpp`` (None if even the lowest does not).

        Every setting already coded (e.g. for a lower target) narrows the search. Codecs with
        rate control (JPEG 2000) start from a guess and gallop to a bracket.
        """
        budget = int(math.floor(target_bpp * self.pixels / 8 + 1e-9))
        spec = self.spec
        if spec.guess is not None:
            bracket = self._gallop(spec.guess(budget * 8 / (self.small.size[0] * self.small.size[1])), budget)
            if bracket is None or bracket[0] == bracket[1]:
                return None if bracket is None else bracket[0]
            lo, hi = bracket
        else:
            # the tightest bracket the settings coded so far give (sizes grow with the setting)
            fitting = [q for q, (d, _) in self.cache.items() if len(d) <= budget]
            too_big = [q for q, (d, _) in self.cache.items() if len(d) > budget]
            lo = max(fitting, default=None)
            hi = min((q for q in too_big if lo is None or q > lo), default=None)
            if lo is None:
                if not self.fits(spec.lo, budget):
                    return None
                lo = spec.lo
            if hi is None:
                if self.fits(spec.hi, budget):
                    return spec.hi
                hi = spec.hi
        # invariant: fits(lo), not fits(hi). Interpolate log(size) between the bracket's ends
        # (sizes are roughly exponential in the setting): a few encodes instead of a bisection's
        # ~7; after two guesses on the same side it bisects, so a bad guess costs little.
        moves: list[bool] = []
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if moves[-2:] not in ([True, True], [False, False]):
                a, b = math.log(len(self.bytes_at(lo))), math.log(len(self.bytes_at(hi)))
                if b > a:
                    guess = lo + (math.log(budget) - a) / (b - a) * (hi - lo)
                    mid = min(max(int(round(guess)), lo + 1), hi - 1)
            moves.append(self.fits(mid, budget))
            if moves[-1]:
                lo = mid
            else:
                hi = mid
        return lo

    def _gallop(self, g: int, budget: int) -> tuple[int, int] | None:
        """(lo, hi) with fits(lo) and not fits(hi), or (x, x) if x = spec.hi fits; None if nothing fits."""
        spec, step = self.spec, 4
        g = min(max(g, spec.lo), spec.hi)
        if self.fits(g, budget):
            lo = g
            while True:
                h = min(lo + step, spec.hi)
                if h == lo:
                    return lo, lo
                if not self.fits(h, budget):
                    return lo, h
                lo, step = h, step * 2
        hi = g
        while True:
            if hi == spec.lo:
                return None
            low = max(hi - step, spec.lo)
            if self.fits(low, budget):
                return low, hi
            hi, step = low, step * 2

    def result(self, q: int, target_bpp: float) -> Result:
        data, enc_s = self.cache[q]
        t = time.perf_counter()
        rgb = decode(data, self.size)
        dec_s = time.perf_counter() - t
        return Result(self.codec, self.scale, float(target_bpp), float(self.spec.setting(q)), data, rgb,
                      len(data) * 8 / self.pixels, enc_s, dec_s)


def code_at_bpp(rgb: np.ndarray, codec: str, scale: int, target_bpp: float) -> Result | None:
    """Code ``rgb`` with ``codec`` at 1/``scale`` resolution, largest file ≤ ``target_bpp``.

    Returns None when even the lowest setting gives a larger file (the caller records it).
    """
    return code_at_bpps(rgb, codec, scale, [target_bpp])[float(target_bpp)]


def code_at_bpps(rgb: np.ndarray, codec: str, scale: int,
                 targets: list[float] | tuple[float, ...]) -> dict[float, Result | None]:
    """:func:`code_at_bpp` for several targets, sharing encodes between them."""
    searcher = _Searcher(rgb, codec, scale)
    out: dict[float, Result | None] = {}
    for t in sorted(float(x) for x in targets):
        q = searcher.search(t)
        out[t] = None if q is None else searcher.result(q, t)
    return out

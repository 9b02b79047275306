"""Any image a user may hold -> an RGB uint8 array; and atomic, non-clobbering writes.

This module never imports torch.

Reading (:func:`load_image`) accepts a path, raw bytes, a binary file object, a
``PIL.Image.Image``, a numpy array, or an already loaded :class:`LoadedImage`
(returned unchanged, so code that calls ``load_image`` on its input can be handed
the result of an earlier call). What it does to get to H x W x 3 uint8 RGB:

* EXIF orientation is applied (the pixels come out the way viewers show them).
* Multi-frame files (GIF, APNG, multi-page TIFF) give their first frame.
* Greyscale (``1``, ``L``, ``LA``, ``I;16*``, ``I``, ``F``; numpy H x W, H x W x 1,
  H x W x 2) is replicated to three channels and reported as ``colour_mode == "L"``.
* Alpha (``RGBA``, ``LA``, ``PA``, palette or colour-key transparency; numpy
  H x W x 4 / H x W x 2) is **dropped, not composited**: transparent pixels keep the
  colour stored under them. When the alpha channel was not fully opaque,
  ``alpha_dropped`` is True and an :class:`ImageInputWarning` naming the image is
  emitted. A fully opaque alpha channel loses nothing and is dropped silently.
* 16 bits per channel is reduced to 8 bits with rounding (``round(v * 255 / 65535)``,
  which maps ``257 * k`` back to ``k`` exactly). Pillow reads 16-bit *colour* PNG/TIFF
  by truncating to the high byte; those files are read with OpenCV
  (``cv2.IMREAD_UNCHANGED``) when it is installed, and fall back to Pillow (at most one
  level off) when it is not.
* Mode ``I`` (32-bit integer, what some decoders give for 16-bit greyscale) is taken
  as 0..65535. Mode ``F`` is taken as 0..1 when all its values lie there, else as
  0..255 (Pillow's convention), clipped.
* ``CMYK``, ``YCbCr`` and images carrying a non-sRGB ICC profile are converted to sRGB
  (through LittleCMS when the profile can be used, else Pillow's plain conversion).
* numpy arrays must be uint8, uint16 or floating point in [0, 1].

Failures are :class:`~sqgan_codec.errors.ImageInputError` with a message that starts
with the image's name: missing, empty, unreadable, corrupt or truncated files,
zero-sized or wrongly shaped/typed arrays, and images with more than ``max_pixels``
pixels. Pillow's decompression-bomb warning and error never escape as such: they are
turned into ``ImageInputError`` (or ignored when the caller raised ``max_pixels``
above Pillow's warning threshold and the image is within it).

Writing (:func:`write_atomic`, :func:`save_image_atomic`) goes to a temporary file in
the destination folder which is then moved into place, so a reader never sees a
partial file and no temporary file is left behind on failure (including Ctrl-C).
An existing file is never replaced unless ``overwrite=True``; the input file is
never replaced at all (pass it as ``input_path``).
"""
from __future__ import annotations

import io
import os
import re
import tempfile
import threading
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import ImageInputError, ImageTooLargeError, OutputError, OutputExistsError

__all__ = [
    "MAX_PIXELS",
    "is_image_path",
    "encode_image",
    "ImageInputWarning",
    "LoadedImage",
    "load_image",
    "same_file",
    "write_atomic",
    "save_image_atomic",
    "image_format_for",
    "IMAGE_SUFFIXES",
]

MAX_PIXELS = 12_000_000
"""The one default pixel limit (width * height) of the package: images read for encoding and
images a stream's header names for decoding. 12 MP takes 4K UHD (8.3 MP) and 12 MP camera photos;
decoding needs about 5.5 GB per 10 MP on CPU (no tiling yet), so a larger default would let a
43-byte stream claiming 4096x4096 take 9 GB. Raise it per call (``max_pixels=``) or per command
(``--max-pixels``)."""

ImageSource = Union[str, "os.PathLike[str]", bytes, bytearray, memoryview, IO[bytes],
                    Image.Image, np.ndarray, "LoadedImage"]


class ImageInputWarning(UserWarning):
    """Something was dropped from an input image (e.g. its alpha channel)."""


@dataclass
class LoadedImage:
    """An input image reduced to what the codec uses."""

    rgb: np.ndarray
    """H x W x 3 uint8, C-contiguous, owned (not a view of the caller's array)."""
    colour_mode: str
    """``"RGB"``, or ``"L"`` when the source was greyscale (channels are then equal)."""
    alpha_dropped: bool
    """True when a not fully opaque alpha channel was discarded."""
    name: str
    """Where the image came from: the path, or ``<array>``, ``<bytes>``, ``<image>``."""

    @property
    def height(self) -> int:
        return int(self.rgb.shape[0])

    @property
    def width(self) -> int:
        return int(self.rgb.shape[1])

    @property
    def size(self) -> tuple[int, int]:
        """(width, height), as Pillow orders it."""
        return self.width, self.height

    def to_pil(self) -> Image.Image:
        """The pixels as a Pillow image (mode ``L`` for greyscale sources)."""
        if self.colour_mode == "L":
            return Image.fromarray(np.ascontiguousarray(self.rgb[:, :, 0]), "L")
        return Image.fromarray(self.rgb, "RGB")


# --------------------------------------------------------------------------- reading


def load_image(source: ImageSource, *, max_pixels: int = MAX_PIXELS,
               name: str | None = None) -> LoadedImage:
    """Read ``source`` into a :class:`LoadedImage` (see the module docstring).

    ``name`` overrides the name used in messages and stored in the result (default:
    the path, the PIL image's filename, or ``<array>`` / ``<bytes>`` / ``<image>``)."""
    if isinstance(source, LoadedImage):
        _check_pixels(source.width, source.height, max_pixels, source.name)
        return source
    if isinstance(source, np.ndarray):
        loaded = _from_array(source, name or "<array>", max_pixels)
    elif isinstance(source, Image.Image):
        name = name or str(getattr(source, "filename", "") or "<image>")
        loaded = _from_pil(source, name, max_pixels)
    elif isinstance(source, (bytes, bytearray, memoryview)):
        loaded = _from_bytes(bytes(source), name or "<bytes>", max_pixels)
    elif isinstance(source, (str, os.PathLike)):
        path = os.fsdecode(source)
        name = name or path
        loaded = _from_bytes(_read_file(path, name), name, max_pixels)
    elif hasattr(source, "read"):
        name = name or str(getattr(source, "name", "") or "<stream>")
        try:
            data = source.read()
        except OSError as e:
            raise ImageInputError(f"{name}: cannot read: {e}") from e
        if not isinstance(data, (bytes, bytearray)):
            raise ImageInputError(f"{name}: file object must be opened in binary mode")
        loaded = _from_bytes(bytes(data), name, max_pixels)
    else:
        raise ImageInputError(
            f"cannot read an image from a {type(source).__name__}; pass a path, bytes, "
            "a PIL.Image.Image or a numpy array")
    if loaded.alpha_dropped:
        warnings.warn(
            f"{loaded.name}: alpha channel dropped (transparent pixels are encoded with "
            "the colour stored under them)", ImageInputWarning, stacklevel=2)
    return loaded


def _check_pixels(width: int, height: int, max_pixels: int, name: str) -> None:
    if width <= 0 or height <= 0:
        raise ImageInputError(f"{name}: image is empty ({width}x{height} pixels)")
    if width * height > max_pixels:
        raise ImageTooLargeError(
            f"{name}: image is too large: {width}x{height} = {width * height:,} pixels, "
            f"over the limit of {max_pixels:,} pixels (max_pixels= / --max-pixels)")


def _read_file(path: str, name: str) -> bytes:
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise ImageInputError(f"{name}: no such file") from None
    except IsADirectoryError:
        raise ImageInputError(f"{name}: is a folder, not an image file") from None
    except PermissionError:
        raise ImageInputError(f"{name}: permission denied") from None
    except OSError as e:
        raise ImageInputError(f"{name}: cannot read: {e.strerror or e}") from e
    return data


_BOMB_PIXELS = re.compile(r"\((\d+) pixels\)")


def _bomb_error(e: Exception, name: str, max_pixels: int) -> ImageInputError:
    m = _BOMB_PIXELS.search(str(e))
    size = f"{int(m.group(1)):,} pixels" if m else "more pixels than Pillow allows"
    return ImageTooLargeError(
        f"{name}: image is too large: {size}, over the limit of {max_pixels:,} pixels "
        "(Pillow refuses it as a possible decompression bomb)")


class _BombGuard(warnings.catch_warnings):
    """Record Pillow's DecompressionBombWarning instead of letting it print or raise
    (even under ``-W error``); the pixel limit is checked by the caller."""

    def __init__(self) -> None:
        super().__init__(record=True)

    def __enter__(self):  # type: ignore[override]
        log = super().__enter__()
        warnings.simplefilter("always", Image.DecompressionBombWarning)
        return log


def _from_bytes(data: bytes, name: str, max_pixels: int) -> LoadedImage:
    if not data:
        raise ImageInputError(f"{name}: file is empty")
    try:
        # Recorded bomb warnings are dropped: the size is checked against max_pixels.
        with _BombGuard():
            try:
                im = Image.open(io.BytesIO(data))
            except Image.DecompressionBombError as e:
                raise _bomb_error(e, name, max_pixels) from None
            except UnidentifiedImageError:
                raise ImageInputError(f"{name}: not an image file Pillow can read") from None
            _check_pixels(im.width, im.height, max_pixels, name)
            rawmode = _tile_rawmode(im)
            if rawmode and ";16" in rawmode and im.mode in ("RGB", "RGBA", "LA"):
                loaded = _from_cv2(data, im, name, max_pixels)
                if loaded is not None:
                    return loaded
            return _from_pil(im, name, max_pixels, guarded=True)
    except ImageInputError:
        raise
    except Image.DecompressionBombError as e:
        raise _bomb_error(e, name, max_pixels) from None
    except MemoryError:
        raise ImageInputError(f"{name}: not enough memory to decode this image") from None
    except (OSError, ValueError, SyntaxError, EOFError, IndexError, TypeError,
            KeyError, ZeroDivisionError, AttributeError, RuntimeError, Warning) as e:
        # Pillow plugins raise a zoo of exception types on corrupt data (and warnings,
        # which are exceptions under `python -W error`).
        detail = str(e) or type(e).__name__
        raise ImageInputError(f"{name}: image data is corrupt or truncated ({detail})") from None


def _tile_rawmode(im: Image.Image) -> str | None:
    tile = getattr(im, "tile", None)
    if not tile:
        return None
    args = tile[0][3]
    if isinstance(args, tuple):
        args = args[0] if args else None
    return args if isinstance(args, str) else None


_ORIENTATION_OPS = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


def _from_cv2(data: bytes, im: Image.Image, name: str, max_pixels: int) -> LoadedImage | None:
    """16-bit colour PNG/TIFF: Pillow truncates these, OpenCV reads all 16 bits."""
    try:
        import cv2  # optional, lazily
    except Exception:
        return None
    arr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if arr is None or arr.dtype != np.uint16 or arr.shape[:2] != (im.height, im.width):
        return None
    if arr.ndim == 3 and arr.shape[2] == 3:
        arr = arr[:, :, ::-1]
    elif arr.ndim == 3 and arr.shape[2] == 4:
        arr = arr[:, :, [2, 1, 0, 3]]
    loaded = _from_array(arr, name, max_pixels)
    try:
        orientation = im.getexif().get(0x0112)
    except Exception:
        orientation = None
    op = _ORIENTATION_OPS.get(orientation) if isinstance(orientation, int) else None
    if op is not None:
        loaded.rgb = np.ascontiguousarray(np.asarray(Image.fromarray(loaded.rgb).transpose(op)))
    return loaded


def _from_pil(im: Image.Image, name: str, max_pixels: int, *, guarded: bool = False) -> LoadedImage:
    _check_pixels(im.width, im.height, max_pixels, name)
    if not guarded:
        try:
            with _BombGuard():
                return _from_pil(im, name, max_pixels, guarded=True)
        except ImageInputError:
            raise
        except Image.DecompressionBombError as e:
            raise _bomb_error(e, name, max_pixels) from None
        except (OSError, ValueError, SyntaxError, EOFError) as e:
            raise ImageInputError(f"{name}: cannot read image data ({e})") from None

    im.load()
    try:
        im = ImageOps.exif_transpose(im) or im
    except Exception:
        pass  # a broken EXIF block: keep the stored orientation
    mode = im.mode

    if mode == "1":
        im, mode = im.convert("L"), "L"
    if mode in ("L", "RGB") and "transparency" in im.info:
        im = im.convert("LA" if mode == "L" else "RGBA")
        mode = im.mode
    if mode in ("P", "PA"):
        has_alpha = mode == "PA" or "transparency" in im.info
        im = im.convert("RGBA" if has_alpha else "RGB")
        mode = im.mode
    if mode in ("La", "RGBa"):
        im = im.convert("LA" if mode == "La" else "RGBA")
        mode = im.mode

    if mode in ("L", "LA"):
        arr = np.asarray(im)
        return _finish(arr, "L", name)
    if mode.startswith("I;16") or mode == "I":
        arr = np.asarray(im)
        if mode == "I":
            arr = np.clip(arr, 0, 65535)
        return _finish(_scale16(arr.astype(np.uint32)), "L", name)
    if mode == "F":
        arr = np.asarray(im, dtype=np.float64)
        if not np.all(np.isfinite(arr)):
            raise ImageInputError(f"{name}: floating-point image holds NaN or infinite values")
        if arr.min() >= -_FLOAT_TOL and arr.max() <= 1 + _FLOAT_TOL:
            arr = arr * 255.0
        return _finish(np.rint(np.clip(arr, 0, 255)).astype(np.uint8), "L", name)

    if mode in ("RGB", "RGBA", "CMYK", "RGBX"):
        im = _to_srgb(im)
        mode = im.mode
    if mode not in ("RGB", "RGBA"):
        try:
            im = im.convert("RGB")
        except (ValueError, OSError) as e:
            raise ImageInputError(f"{name}: unsupported colour mode {mode!r} ({e})") from None
    return _finish(np.asarray(im), "RGB", name)


def _to_srgb(im: Image.Image) -> Image.Image:
    """Convert CMYK / RGBX / non-sRGB-profiled RGB(A) to plain sRGB RGB(A)."""
    icc = im.info.get("icc_profile")
    if icc:
        try:
            from PIL import ImageCms

            src = ImageCms.ImageCmsProfile(io.BytesIO(icc))
            desc = (ImageCms.getProfileDescription(src) or "").lower()
            if im.mode == "CMYK" or "srgb" not in desc.replace(" ", ""):
                out_mode = "RGBA" if im.mode == "RGBA" else "RGB"
                converted = ImageCms.profileToProfile(
                    im, src, ImageCms.createProfile("sRGB"), outputMode=out_mode)
                if converted is not None:
                    return converted
        except Exception:
            pass  # an unusable profile: fall back to the plain conversion
    if im.mode in ("CMYK", "RGBX"):
        return im.convert("RGB")
    return im


_FLOAT_TOL = 1.0 / 512


def _scale16(arr: np.ndarray) -> np.ndarray:
    """0..65535 -> 0..255, rounded: round(v * 255 / 65535)."""
    a = arr.astype(np.uint32)
    return ((a * 255 + 32767) // 65535).astype(np.uint8)


def _from_array(arr: np.ndarray, name: str, max_pixels: int) -> LoadedImage:
    if arr.size == 0:
        raise ImageInputError(f"{name}: array is empty (shape {arr.shape})")
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.ndim != 3 or arr.shape[2] not in (1, 2, 3, 4):
        raise ImageInputError(
            f"{name}: array shape {arr.shape} is not an image; expected HxW, HxWx1, "
            "HxWx3 or HxWx4")
    _check_pixels(arr.shape[1], arr.shape[0], max_pixels, name)
    kind = arr.dtype.kind
    if arr.dtype == np.uint8:
        u8 = arr
    elif kind == "u" and arr.dtype.itemsize == 2:
        u8 = _scale16(arr)
    elif kind == "f":
        f = arr.astype(np.float64)
        if not np.all(np.isfinite(f)):
            raise ImageInputError(f"{name}: float array holds NaN or infinite values")
        lo, hi = float(f.min()), float(f.max())
        if lo < -_FLOAT_TOL or hi > 1 + _FLOAT_TOL:
            raise ImageInputError(
                f"{name}: float array values must lie in [0, 1], found {lo:g}..{hi:g}")
        u8 = np.rint(np.clip(f, 0.0, 1.0) * 255.0).astype(np.uint8)
    else:
        raise ImageInputError(
            f"{name}: array dtype {arr.dtype} is not supported; use uint8, uint16 or "
            "float in [0, 1]")
    channels = arr.shape[2]
    colour_mode = "L" if channels <= 2 else "RGB"
    return _finish(u8, colour_mode, name)


def _finish(arr: np.ndarray, colour_mode: str, name: str) -> LoadedImage:
    """arr: HxW or HxWxC uint8 with C in 1..4 -> LoadedImage (alpha handled here)."""
    if arr.ndim == 2:
        arr = arr[:, :, None]
    alpha_dropped = False
    if arr.shape[2] in (2, 4):
        alpha_dropped = bool((arr[:, :, -1] != 255).any())
        arr = arr[:, :, :-1]
    if arr.shape[2] == 1:
        rgb = np.repeat(arr, 3, axis=2)
    else:
        rgb = np.array(arr, dtype=np.uint8, order="C", copy=True)
    rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
    return LoadedImage(rgb=rgb, colour_mode=colour_mode, alpha_dropped=alpha_dropped, name=name)


# --------------------------------------------------------------------------- writing


def same_file(a: str | os.PathLike[str], b: str | os.PathLike[str]) -> bool:
    """True when ``a`` and ``b`` name the same file (links and ``..`` resolved).

    Works when either does not exist yet (then the resolved paths are compared)."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        pass
    try:
        ra, rb = os.path.realpath(a), os.path.realpath(b)
    except (OSError, ValueError):
        return False
    return os.path.normcase(ra) == os.path.normcase(rb)


_umask_lock = threading.Lock()
_umask: int | None = None


def _current_umask() -> int:
    global _umask
    with _umask_lock:
        if _umask is None:
            old = os.umask(0o022)
            os.umask(old)
            _umask = old
        return _umask


# What write_atomic's temporary files look like (mkstemp: prefix, 8 random characters, suffix),
# and the age after which one is a leftover of a killed writer (a write takes seconds at most).
_PART_NAME = re.compile(r"^\..+\.[a-z0-9_]{8}\.part$")
STALE_PART_SECONDS = 600


def remove_stale_parts(folder: str | os.PathLike[str]) -> list[str]:
    """Delete the codec's own temporary files in ``folder`` older than
    :data:`STALE_PART_SECONDS` (left by a writer killed with ``kill -9`` or a power cut: nothing
    else can remove them). Younger ones may belong to a write in progress and are kept."""
    removed = []
    now = time.time()
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for entry in entries:
        if not _PART_NAME.match(entry.name):
            continue
        try:
            if entry.is_file(follow_symlinks=False) and now - entry.stat(follow_symlinks=False).st_mtime > STALE_PART_SECONDS:
                os.unlink(entry.path)
                removed.append(entry.name)
        except OSError:
            pass
    return removed


def write_atomic(path: str | os.PathLike[str], data: bytes, *, overwrite: bool = False,
                 input_path: str | os.PathLike[str] | None = None) -> None:
    """Write ``data`` to ``path`` all at once, or not at all.

    Raises :class:`OutputExistsError` when ``path`` exists and ``overwrite`` is False,
    :class:`OutputError` when ``path`` is ``input_path`` (never replaced, whatever
    ``overwrite`` says), is a folder, or cannot be written (missing or read-only
    folder, disk full, ...). The parent folder must exist."""
    path = Path(path)
    shown = os.fsdecode(path)
    if input_path is not None and same_file(path, input_path):
        raise OutputError(f"{shown}: is the input file; refusing to overwrite it")
    if path.is_dir():
        raise OutputError(f"{shown}: is a folder")
    if not overwrite and (path.exists() or path.is_symlink()):
        raise OutputExistsError(f"{shown}: already exists; not overwriting it")
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise OutputError(f"{shown}: folder {os.fsdecode(folder)} does not exist")

    remove_stale_parts(folder)
    try:
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{path.name}.", suffix=".part")
    except OSError as e:
        raise OutputError(
            f"{shown}: cannot write to folder {os.fsdecode(folder)}: {e.strerror or e}") from None
    try:
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, 0o666 & ~_current_umask())
            if overwrite:
                os.replace(tmp, path)
            else:
                _link_no_clobber(tmp, path, shown)
        except OSError as e:
            if isinstance(e, FileExistsError):
                raise OutputExistsError(f"{shown}: already exists; not overwriting it") from None
            raise OutputError(f"{shown}: cannot write: {e.strerror or e}") from None
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    _fsync_folder(folder)


def _link_no_clobber(tmp: str, path: Path, shown: str) -> None:
    """Move tmp to path unless path exists, atomically where the filesystem allows."""
    try:
        os.link(tmp, path)  # fails with FileExistsError if someone created path meanwhile
    except FileExistsError:
        raise
    except OSError:
        # No hard links here (FAT, some network filesystems): check, then replace.
        if path.exists() or path.is_symlink():
            raise FileExistsError(shown) from None
        os.replace(tmp, path)
        return
    os.unlink(tmp)


def _fsync_folder(folder: Path) -> None:
    if os.name != "posix":
        return
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


IMAGE_SUFFIXES: frozenset[str] = frozenset()
"""Lower-case suffixes (with dot) of the image formats Pillow can open here."""


def _image_suffixes() -> frozenset[str]:
    global IMAGE_SUFFIXES
    if not IMAGE_SUFFIXES:
        Image.init()
        IMAGE_SUFFIXES = frozenset(
            ext.lower() for ext, fmt in Image.registered_extensions().items()
            if fmt in Image.OPEN and fmt != "SQG")
    return IMAGE_SUFFIXES


def is_image_path(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` has the suffix of an image format Pillow can open (not .sqg)."""
    return Path(path).suffix.lower() in _image_suffixes()


def image_format_for(path: str | os.PathLike[str]) -> str:
    """The Pillow format that saving to ``path`` uses: by suffix, PNG when unknown."""
    Image.init()
    fmt = Image.registered_extensions().get(Path(path).suffix.lower())
    if fmt is None or fmt not in Image.SAVE or fmt == "SQG":
        return "PNG"
    return fmt


_SAVE_PARAMS: dict[str, dict] = {
    "JPEG": {"quality": 95, "subsampling": 0},
    "WEBP": {"quality": 95},
    "PNG": {"compress_level": 6},
}


def encode_image(image: Image.Image, fmt: str = "PNG", **params) -> bytes:
    """The bytes of ``image`` saved as ``fmt`` (converted to a mode the format takes)."""
    fmt = fmt.upper()
    if fmt == "JPEG" and image.mode not in ("L", "RGB", "CMYK"):
        image = image.convert("RGB")
    buf = io.BytesIO()
    try:
        image.save(buf, fmt, **{**_SAVE_PARAMS.get(fmt, {}), **params})
    except (OSError, ValueError, KeyError) as e:
        raise OutputError(f"cannot save the image as {fmt}: {e}") from None
    return buf.getvalue()


def save_image_atomic(image: Image.Image, path: str | os.PathLike[str], *,
                      overwrite: bool = False,
                      input_path: str | os.PathLike[str] | None = None,
                      **params) -> None:
    """Save ``image`` to ``path`` atomically, format chosen by suffix (PNG when the
    suffix is unknown or missing). Same refusals as :func:`write_atomic`."""
    fmt = image_format_for(path)
    try:
        data = encode_image(image, fmt, **params)
    except OutputError as e:
        raise OutputError(f"{os.fsdecode(path)}: {e}") from None
    write_atomic(path, data, overwrite=overwrite, input_path=input_path)

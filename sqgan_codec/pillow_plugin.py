"""Opt-in Pillow support for ``.sqg`` files.

    >>> from sqgan_codec.pillow_plugin import register_pillow
    >>> register_pillow()
    >>> im = Image.open("photo.sqg")   # reads the header only: size and mode, no torch
    >>> im.size, im.mode, im.info["sqg"]["model"]
    >>> im.load()                      # decodes with the codec (created once, cached)

Opening an ``.sqg`` file reads only its header through :mod:`sqgan_codec.bitstream`
(standard library only), so ``Image.open`` stays cheap; the codec (and torch) is
imported the first time a pixel is needed. The codec is created once per process
with the device given to :func:`register_pillow` and reused for every image.
Writing ``.sqg`` through ``Image.save`` is not supported; use ``sqgan_codec.encode``.
"""
from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any, Callable

from PIL import Image, ImageFile

if TYPE_CHECKING:  # pragma: no cover
    from .codec import Codec

FORMAT = "SQG"
MAGIC = b"\x89SQG\r\n\x1a\n"  # same as bitstream.MAGIC (a test checks)

_lock = threading.Lock()
_codec: "Codec | None" = None
_device = "auto"


def _default_factory(device: str) -> "Codec":
    from .codec import Codec

    return Codec(device=device)


_factory: Callable[[str], "Codec"] = _default_factory


def get_codec() -> "Codec":
    global _codec
    with _lock:
        if _codec is None:
            _codec = _factory(_device)
        return _codec


def _accept(prefix: bytes) -> bool:
    return prefix[:len(MAGIC)] == MAGIC


class SqgImageFile(ImageFile.ImageFile):
    """An ``.sqg`` stream seen by Pillow: header at open, pixels on load."""

    format = FORMAT
    format_description = "SQ-GAN semantic image codec"

    def _open(self) -> None:
        from . import bitstream
        from .errors import SqganError

        assert self.fp is not None
        try:
            header = bitstream.read_header(self.fp)
        except SqganError as e:
            # SyntaxError is what Pillow expects from a plugin that rejects a file.
            raise SyntaxError(f"not a readable .sqg stream: {e}") from e
        self._size = (header.width, header.height)
        self._mode = "L" if header.colour_mode == "L" else "RGB"
        self.info["sqg"] = header.to_dict()
        self.tile = [ImageFile._Tile(FORMAT, (0, 0) + self.size, 0, None)]


class _SqgDecoder(ImageFile.PyDecoder):
    """Reads the whole stream from the file and decodes it with the codec."""

    _pulls_fd = True

    def decode(self, buffer: bytes | Any) -> tuple[int, int]:
        assert self.fd is not None
        self.fd.seek(0)
        data = self.fd.read()
        # Pillow's own opt-in for cut files: ImageFile.LOAD_TRUNCATED_IMAGES
        image = get_codec().decode(data, allow_partial=bool(ImageFile.LOAD_TRUNCATED_IMAGES))
        if image.size != (self.state.xsize, self.state.ysize):
            raise OSError(f"decoded size {image.size} does not match the header "
                          f"{(self.state.xsize, self.state.ysize)}")
        if image.mode != self.mode:
            image = image.convert(self.mode)
        self.set_as_raw(image.tobytes())
        return -1, 0


def register_pillow(*, device: str = "auto") -> None:
    """Let ``PIL.Image.open`` read ``.sqg`` files. Safe to call more than once; the
    ``device`` of the latest call is used for a codec not yet created."""
    global _device
    with _lock:
        _device = device
    Image.register_open(FORMAT, SqgImageFile, _accept)
    Image.register_decoder(FORMAT, _SqgDecoder)
    Image.register_extension(FORMAT, ".sqg")
    Image.register_mime(FORMAT, "image/x-sqg")


def set_codec_factory(factory: Callable[[str], "Codec"] | None) -> None:
    """For tests: use ``factory(device)`` to create the codec (None = the real one);
    drops any codec already created."""
    global _factory, _codec
    with _lock:
        _factory = factory or _default_factory
        _codec = None

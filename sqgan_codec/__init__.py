"""sqgan_codec: a semantic image codec for extremely low bitrates (SQ-GAN, masked VQ).

    >>> import sqgan_codec
    >>> data = sqgan_codec.encode("street.png", bpp=0.05)   # doctest: +SKIP
    >>> image = sqgan_codec.decode(data)                     # doctest: +SKIP

Importing the package is cheap: torch is imported when a codec is first needed, so
``sqgan info`` and the Pillow plugin's header reads stay light.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .errors import (BitstreamError, ImageInputError, MissingCodecError, ModelMismatchError, SqganError,
                     TruncatedError, UnsupportedVersionError)

if TYPE_CHECKING:  # pragma: no cover
    from PIL import Image

    from .codec import Codec

__all__ = ["encode", "decode", "Codec", "register_pillow", "SqganError", "BitstreamError",
           "TruncatedError", "UnsupportedVersionError", "ModelMismatchError", "ImageInputError",
           "MissingCodecError"]

_default_codecs: dict[str, "Codec"] = {}


def _codec(device: str) -> "Codec":
    if device not in _default_codecs:
        from .codec import Codec

        _default_codecs[device] = Codec(device=device)
    return _default_codecs[device]


def encode(image: Any, *, bpp: float | None = None, keep: float | None = None,
           device: str = "auto", **options: Any) -> bytes:
    """Encode an image (path, ``PIL.Image.Image`` or numpy array) to ``.sqg`` bytes.

    ``bpp`` is a target in bits per pixel counted on the whole file; ``keep`` in [0, 1] is the
    rate knob instead (the share of latent positions kept). Uses the default model. Further
    options (``max_bytes``, ``priority``, ``roi``, ``ssm``, ``split``): see
    :meth:`sqgan_codec.codec.Codec.encode`.
    """
    return _codec(device).encode(image, bpp=bpp, keep=keep, **options)


def decode(data: bytes, *, device: str = "auto", layers: str = "all",
           allow_partial: bool = False) -> "Image.Image":
    """Decode ``.sqg`` bytes to a ``PIL.Image.Image`` of the original size and colour mode.
    A truncated or damaged stream raises :class:`TruncatedError` unless ``allow_partial``;
    ``image.info["sqgan_layers"]`` lists the layers used."""
    return _codec(device).decode(data, layers=layers, allow_partial=allow_partial)


def register_pillow(**kwargs: Any) -> None:
    """Let ``PIL.Image.open`` read ``.sqg`` files (header on open, decode on ``load()``)."""
    from .pillow_plugin import register_pillow as _register

    _register(**kwargs)


def __getattr__(name: str) -> Any:
    if name == "Codec":
        from .codec import Codec

        return Codec
    raise AttributeError(f"module 'sqgan_codec' has no attribute {name!r}")

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

_default_codecs: dict[tuple[str, str | None], "Codec"] = {}


def _codec(device: str, model: str | None = None) -> "Codec":
    """A codec per device and model (None: the registry's default), made once."""
    if model is not None:
        from . import registry

        if model == registry.default_name("sqgan"):
            model = None
    if (device, model) not in _default_codecs:
        from .codec import Codec

        _default_codecs[device, model] = Codec(model, device=device)
    return _default_codecs[device, model]


def _stream_model(data: bytes) -> str | None:
    """The registry name of the model a stream's header names (None where the header cannot be
    read: the codec's decode then says why). ModelMismatchError for a model not installed."""
    from . import bitstream, packets, registry

    try:
        header = (packets.read_header(data)[0] if packets.is_packet_stream(data)
                  else bitstream.read_header(data))
    except SqganError:
        return None
    return registry.find_by_id(header.model_id, header.weights_hash).name


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
    ``image.info["sqgan_layers"]`` lists the layers used. The stream is decoded by the model its
    header names (any installed one)."""
    return _codec(device, _stream_model(bytes(data))).decode(data, layers=layers, allow_partial=allow_partial)


def register_pillow(**kwargs: Any) -> None:
    """Let ``PIL.Image.open`` read ``.sqg`` files (header on open, decode on ``load()``)."""
    from .pillow_plugin import register_pillow as _register

    _register(**kwargs)


def __getattr__(name: str) -> Any:
    if name == "Codec":
        from .codec import Codec

        return Codec
    raise AttributeError(f"module 'sqgan_codec' has no attribute {name!r}")

"""Errors the codec raises on bad input. The CLI turns these into one-line messages."""


class SqganError(Exception):
    """Base class of every expected failure (bad file, bad image, wrong model)."""


class BitstreamError(SqganError):
    """The .sqg data is not a valid, undamaged stream this reader understands."""


class TruncatedError(BitstreamError):
    """The stream ends before its last chunk is complete."""


class UnsupportedVersionError(BitstreamError):
    """The stream's major format version is newer than this reader."""


class ModelMismatchError(SqganError):
    """The stream names a model (or weights) this installation does not have."""


class MissingCodecError(SqganError):
    """A stream needs an image codec this installation's Pillow lacks (AVIF/AV1 thumbnails:
    Pillow >= 11.3 wheels include it)."""


class ImageInputError(SqganError):
    """The input image cannot be read or is not usable (size, format)."""


class PixelLimitError(SqganError):
    """An image (to encode, or named by a stream's header) has more pixels than the limit the
    caller set (``max_pixels=``, ``--max-pixels``): refused before any large allocation."""


class ImageTooLargeError(ImageInputError, PixelLimitError):
    """An input image over the pixel limit (checked from its file header, before decoding it)."""


class OutputError(SqganError):
    """An output file cannot be written (folder missing or unwritable, disk full, ...)."""


class OutputExistsError(OutputError):
    """The output file exists and overwriting was not asked for."""


class SegmenterError(SqganError):
    """A segmenter cannot be set up or used: bad spec, missing or unusable model file,
    class map that does not fit the model, label map that does not fit the image."""


class UnfamiliarImageWarning(UserWarning):
    """The image is unlike what the model was trained on (the domain check of decide.py);
    the encoder leaned on the coarse image. Nothing failed."""


class PacketLossWarning(UserWarning):
    """Packets of a packet stream were lost or damaged: their token positions were decoded as
    masked (the picture is complete, with less detail). The report is in
    ``image.info["sqgan_packets"]``."""

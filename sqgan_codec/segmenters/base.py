"""The ``Segmenter`` interface: an RGB image in, a map of the codec's class ids out.

Contract (every implementation keeps it; the codec relies on nothing else):

* Input: ``rgb``, a numpy array H x W x 3, dtype uint8, RGB order, H, W >= 1 (any size;
  an implementation pads or resizes internally as its model needs). The array is not
  modified. Anything else is an :class:`~sqgan_codec.errors.ImageInputError`.
* Output: a new, C-contiguous H x W uint8 array (same H and W as the input) of class
  ids ``0 .. C - 1`` of the segmenter's ``vocabulary`` (:mod:`sqgan_codec.vocabulary`;
  CamVid's 11 classes unless it says otherwise). Void is never returned: every pixel gets
  a real class. A codec refuses a segmenter whose vocabulary is not its model's.
* ``name`` (keyword, optional) names the image (usually its path). Model-based
  segmenters ignore it; :class:`~.labels.LabelsSegmenter` with a folder uses it to find
  the label file (``<folder>/<stem>.png``).
* ``segment_many(images, names=None)`` returns one map per image, in order; the default
  loops over :meth:`Segmenter.segment`, implementations may batch.
* Failures that are the user's doing (bad model file, class map that does not fit, label
  map of the wrong size) raise :class:`~sqgan_codec.errors.SegmenterError`; both it and
  ``ImageInputError`` are :class:`~sqgan_codec.errors.SqganError`.
* ``segmenter_id`` is what the bitstream header stores (informational):
  0 bundled, 1 onnx, 2 labels (``bitstream.SEGMENTERS``).

This module never imports torch.
"""
from __future__ import annotations

import abc
from typing import Sequence

import numpy as np

from ..bitstream import SEGMENTER_BUNDLED, SEGMENTER_LABELS, SEGMENTER_ONNX  # noqa: F401  (the header's ids)
from ..classes import VOCABULARY as CAMVID11
from ..errors import ImageInputError, SegmenterError
from ..vocabulary import Vocabulary


class Segmenter(abc.ABC):
    """Turns an RGB image into a map of the codec's class ids (see the module docstring)."""

    name: str = "segmenter"
    """Short human-readable description, e.g. ``bundled (segnet-camvid11)``."""
    segmenter_id: int = -1
    """Bitstream id: 0 bundled, 1 onnx, 2 labels."""
    vocabulary: Vocabulary = CAMVID11
    """The classes whose ids the maps hold."""

    @abc.abstractmethod
    def segment(self, rgb: np.ndarray, *, name: str | None = None) -> np.ndarray:
        """H x W x 3 uint8 RGB -> H x W uint8 class ids of :attr:`vocabulary` (see the module docstring)."""

    def segment_many(self, images: Sequence[np.ndarray], *,
                     names: Sequence[str | None] | None = None) -> list[np.ndarray]:
        """One map per image, in order (default: :meth:`segment` on each)."""
        names = _names_for(images, names)
        return [self.segment(rgb, name=n) for rgb, n in zip(images, names)]

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}>"


def _names_for(images: Sequence[np.ndarray],
               names: Sequence[str | None] | None) -> list[str | None]:
    if names is None:
        return [None] * len(images)
    names = list(names)
    if len(names) != len(images):
        raise ValueError(f"{len(names)} names for {len(images)} images")
    return names


def check_rgb(rgb: np.ndarray, name: str | None = None) -> np.ndarray:
    """``rgb`` if it is H x W x 3 uint8 with H, W >= 1, else ImageInputError."""
    shown = name or "<array>"
    if not isinstance(rgb, np.ndarray):
        raise ImageInputError(f"{shown}: a segmenter needs a numpy array, not a {type(rgb).__name__}")
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ImageInputError(f"{shown}: a segmenter needs an H x W x 3 RGB array, got shape {rgb.shape}")
    if rgb.dtype != np.uint8:
        raise ImageInputError(f"{shown}: a segmenter needs a uint8 array, got {rgb.dtype}")
    if rgb.shape[0] < 1 or rgb.shape[1] < 1:
        raise ImageInputError(f"{shown}: image is empty ({rgb.shape[1]}x{rgb.shape[0]} pixels)")
    return rgb


def check_map(ids: np.ndarray, rgb: np.ndarray, who: str, num_classes: int = CAMVID11.num_classes) -> np.ndarray:
    """The contract's output checks (a failure here is a bug in ``who``, not bad input)."""
    if ids.shape != rgb.shape[:2] or ids.dtype != np.uint8:
        raise RuntimeError(f"{who} returned {ids.dtype} {ids.shape} for an image of {rgb.shape[:2]}")
    if ids.size and int(ids.max()) >= num_classes:
        raise RuntimeError(f"{who} returned class id {int(ids.max())} (>= {num_classes})")
    return np.ascontiguousarray(ids)


__all__ = ["Segmenter", "SegmenterError", "check_rgb", "check_map",
           "SEGMENTER_BUNDLED", "SEGMENTER_ONNX", "SEGMENTER_LABELS"]

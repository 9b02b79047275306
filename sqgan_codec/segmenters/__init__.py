"""Segmenters: an RGB image -> a map of the codec's class ids (see :mod:`.base`).

Pick one with :func:`get_segmenter` and a spec string:

* ``bundled`` (or ``bundled:MODEL`` for another registry entry of kind ``segmenter``):
  the codec's own network, weights from ``weights/registry.json``. Needs torch.
* ``onnx:PATH``: any ONNX segmentation model plus a class map (``class_map=``, a JSON
  file or a built-in map name such as ``cityscapes19``; default ``PATH`` with ``.json``).
  Needs onnxruntime or OpenCV.
* ``labels:PATH``: precomputed label maps, one PNG or a folder of ``<stem>.png``.

Importing this package does not import torch; the implementations are loaded on use.
"""
from __future__ import annotations

import os
import threading
from typing import TYPE_CHECKING, Any

from ..errors import SegmenterError
from .base import (SEGMENTER_BUNDLED, SEGMENTER_LABELS, SEGMENTER_ONNX, Segmenter, check_map,
                   check_rgb)

if TYPE_CHECKING:  # pragma: no cover
    from ..vocabulary import Vocabulary
    from .bundled import BundledSegmenter
    from .labels import LabelsSegmenter
    from .onnx import OnnxSegmenter

__all__ = ["Segmenter", "SegmenterError", "get_segmenter", "clear_cache", "BundledSegmenter",
           "OnnxSegmenter", "LabelsSegmenter", "SEGMENTER_BUNDLED", "SEGMENTER_ONNX",
           "SEGMENTER_LABELS", "check_rgb", "check_map"]

SPEC_HELP = "bundled, bundled:MODEL, onnx:PATH or labels:PATH"

_bundled_cache: dict[tuple[str, str, str], Segmenter] = {}
_lock = threading.Lock()


def get_segmenter(spec: str = "bundled", *, device: str = "auto",
                  class_map: str | os.PathLike[str] | None = None,
                  vocabulary: "Vocabulary | None" = None) -> Segmenter:
    """The segmenter a spec names (see the module docstring).

    ``vocabulary``: the classes the maps must hold (a codec passes its model's): label files
    and class maps are read in it; a bundled network has its own, which the codec checks.

    ``bundled`` instances are cached per model, device and weights folder (the network
    is loaded once per process); the others are created anew (they are cheap, and their
    files may change). Raises :class:`SegmenterError` for a bad spec,
    :class:`~sqgan_codec.errors.ModelMismatchError` when bundled weights are missing."""
    if not isinstance(spec, str):
        raise SegmenterError(f"segmenter spec must be a string ({SPEC_HELP}), not {type(spec).__name__}")
    kind, sep, arg = spec.strip().partition(":")
    kind = kind.strip().lower()
    if kind == "bundled":
        if class_map is not None:
            raise SegmenterError("a class map is only used with an onnx:PATH segmenter")
        return _bundled(arg.strip() or None, device)
    if kind in ("onnx", "labels"):
        if not sep or not arg:
            raise SegmenterError(f"segmenter {spec!r} needs a path: {kind}:PATH")
        if kind == "onnx":
            from .onnx import OnnxSegmenter

            return OnnxSegmenter(arg, class_map, device=device, vocabulary=vocabulary)
        if class_map is not None:
            raise SegmenterError("a class map is only used with an onnx:PATH segmenter")
        from .labels import LabelsSegmenter

        return LabelsSegmenter(arg, vocabulary=vocabulary)
    raise SegmenterError(f"unknown segmenter {spec!r}; use {SPEC_HELP}")


def _bundled(model_name: str | None, device: str) -> Segmenter:
    from .. import registry
    from .bundled import default_segmenter_name

    name = model_name or default_segmenter_name()
    key = (name, device, str(registry.weights_dir()))
    with _lock:
        seg = _bundled_cache.get(key)
        if seg is None:
            from .bundled import BundledSegmenter

            seg = BundledSegmenter(device=device, model_name=name)
            _bundled_cache[key] = seg
    return seg


def clear_cache() -> None:
    """Forget cached bundled segmenters (after the weights changed; used by tests)."""
    with _lock:
        _bundled_cache.clear()


def __getattr__(name: str) -> Any:
    if name == "BundledSegmenter":
        from .bundled import BundledSegmenter

        return BundledSegmenter
    if name == "OnnxSegmenter":
        from .onnx import OnnxSegmenter

        return OnnxSegmenter
    if name == "LabelsSegmenter":
        from .labels import LabelsSegmenter

        return LabelsSegmenter
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

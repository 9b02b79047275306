"""Any ONNX semantic segmentation model as a segmenter, with a JSON class map.

The model runs with onnxruntime when it is installed, else with OpenCV's DNN module
(``cv2.dnn.readNetFromONNX``). Neither is needed by the rest of the codec.

Model contract: one input, float32 N x 3 x H x W; first output, N x L x h x w scores
(logits or probabilities) for the model's L labels, at any resolution h x w (they are
bilinearly upsampled to the image).

Class map (JSON)::

    {
      "input_size": [H, W] or null,   # fixed model input (image is resized to it), or
                                      #   null: dynamic (the model's own fixed size if its
                                      #   graph has one, else the image's size, padded)
      "pad_to": 32,                   # dynamic size: pad to a multiple of this (default 32)
      "scale": 1,                     # pixel range fed to the model: 1 (0..1) or 255 (0..255)
      "mean": [0.485, 0.456, 0.406],  # per channel, in that range
      "std":  [0.229, 0.224, 0.225],
      "bgr": false,                   # optional: feed channels in BGR order
      "labels": {"0": "Road", "1": "Pavement", ..., "19": "ignore"}
    }

``labels`` must name every model label ``0 .. L-1`` (so L is known and checked against
the model's output): a class name of the codec's vocabulary (case-insensitive; CamVid's 11
classes unless a ``vocabulary=`` is given, see :mod:`sqgan_codec.vocabulary`) or ``"ignore"``. A pixel gets the codec class of
the highest-scoring *mapped* label, so ignored labels never win and never leave a hole.
Keys starting with ``_`` and ``description`` are comments. Built-in maps
(``sqgan_codec/segmenters/maps/NAME.json``) can be named instead of a path, e.g.
``cityscapes19``.

This module never imports torch.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from ..classes import VOCABULARY as CAMVID11
from ..errors import SegmenterError
from ..vocabulary import Vocabulary
from .base import SEGMENTER_ONNX, Segmenter, check_map, check_rgb

MAPS_DIR = Path(__file__).resolve().parent / "maps"
IGNORE = "ignore"
_KNOWN_KEYS = {"input_size", "pad_to", "scale", "mean", "std", "bgr", "labels", "description"}


# ----------------------------------------------------------------------------- class map


@dataclass(frozen=True)
class ClassMap:
    """A parsed, validated class map (see the module docstring)."""

    labels: tuple[int, ...]          # codec class id per model label, -1 = ignore
    input_size: tuple[int, int] | None = None
    pad_to: int = 32
    scale: float = 1.0
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    bgr: bool = False
    source: str = "<dict>"

    @property
    def num_labels(self) -> int:
        return len(self.labels)

    @property
    def mapped(self) -> np.ndarray:
        """Model label ids that map to a codec class."""
        return np.array([i for i, c in enumerate(self.labels) if c >= 0], dtype=np.int64)

    @property
    def mapped_classes(self) -> np.ndarray:
        """Codec class id of each label in :attr:`mapped`, as uint8."""
        return np.array([c for c in self.labels if c >= 0], dtype=np.uint8)


def builtin_maps() -> list[str]:
    """Names of the class maps shipped with the package."""
    return sorted(p.stem for p in MAPS_DIR.glob("*.json"))


def load_class_map(spec: str | os.PathLike[str] | Mapping[str, Any],
                   vocabulary: Vocabulary = CAMVID11) -> ClassMap:
    """A class map from a JSON file, a built-in map's name, or an already parsed dict, onto the
    classes of ``vocabulary``."""
    if isinstance(spec, Mapping):
        return parse_class_map(spec, "<dict>", vocabulary)
    text_spec = os.fspath(spec)
    path = Path(text_spec)
    if not path.exists() and os.sep not in text_spec and "/" not in text_spec:
        builtin = MAPS_DIR / f"{path.stem if path.suffix == '.json' else text_spec}.json"
        if builtin.is_file():
            path = builtin
    shown = text_spec
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SegmenterError(f"{shown}: no such class map file (built-in maps: "
                             f"{', '.join(builtin_maps()) or 'none'})") from None
    except IsADirectoryError:
        raise SegmenterError(f"{shown}: is a folder, not a class map file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise SegmenterError(f"{shown}: cannot read class map: {e}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise SegmenterError(f"{shown}: class map is not valid JSON ({e})") from None
    return parse_class_map(data, shown, vocabulary)


def parse_class_map(data: Any, source: str = "<dict>", vocabulary: Vocabulary = CAMVID11) -> ClassMap:
    def bad(msg: str) -> SegmenterError:
        return SegmenterError(f"{source}: class map: {msg}")

    if not isinstance(data, Mapping):
        raise bad("must be a JSON object")
    unknown = sorted(k for k in data if k not in _KNOWN_KEYS and not str(k).startswith("_"))
    if unknown:
        raise bad(f"unknown key(s) {', '.join(map(repr, unknown))}; known: {', '.join(sorted(_KNOWN_KEYS))}")

    labels_in = data.get("labels")
    if not isinstance(labels_in, Mapping) or not labels_in:
        raise bad('needs "labels": {"<model label id>": "<codec class name or ignore>", ...}')
    by_id: dict[int, int] = {}
    for key, value in labels_in.items():
        try:
            label = int(str(key).strip())
        except ValueError:
            raise bad(f"label id {key!r} is not an integer") from None
        if label < 0:
            raise bad(f"label id {label} is negative")
        if label in by_id:
            raise bad(f"label id {label} is listed twice")
        if not isinstance(value, str):
            raise bad(f"label {label}: class must be a name, got {value!r}")
        if value.strip().lower() == IGNORE:
            by_id[label] = -1
            continue
        try:
            by_id[label] = vocabulary.class_id(value)
        except ValueError:
            raise bad(f"label {label}: unknown class {value!r}; known ({vocabulary.name}): "
                      f"{', '.join(vocabulary.names)}, or {IGNORE!r}") from None
    n = max(by_id) + 1
    missing = [i for i in range(n) if i not in by_id]
    if missing:
        shown = ", ".join(map(str, missing[:10])) + (" ..." if len(missing) > 10 else "")
        raise bad(f"labels must list every model label 0..{n - 1} (use {IGNORE!r} for unused "
                  f"ones); missing: {shown}")
    labels = tuple(by_id[i] for i in range(n))
    if all(c < 0 for c in labels):
        raise bad("maps no label to a codec class (all are 'ignore')")

    size = data.get("input_size")
    if size is not None:
        if (not isinstance(size, (list, tuple)) or len(size) != 2
                or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in size)):
            raise bad(f'"input_size" must be [H, W] (positive integers) or null, got {size!r}')
        size = (int(size[0]), int(size[1]))

    pad_to = data.get("pad_to", 32)
    if not isinstance(pad_to, int) or isinstance(pad_to, bool) or pad_to < 1:
        raise bad(f'"pad_to" must be a positive integer, got {pad_to!r}')

    scale = data.get("scale", 1)
    if not _is_number(scale) or float(scale) not in (1.0, 255.0):
        raise bad(f'"scale" must be 1 (pixels in 0..1) or 255 (0..255), got {scale!r}')

    def triple(key: str, default: tuple[float, ...]) -> tuple[float, float, float]:
        v = data.get(key, default)
        if _is_number(v):
            v = [v] * 3
        if not isinstance(v, (list, tuple)) or len(v) not in (1, 3) or not all(map(_is_number, v)):
            raise bad(f'"{key}" must be a number or a list of 3 numbers, got {v!r}')
        v = [float(x) for x in v] * (3 if len(v) == 1 else 1)
        if not all(math.isfinite(x) for x in v):
            raise bad(f'"{key}" must be finite')
        return (v[0], v[1], v[2])

    default_mean = (0.485, 0.456, 0.406) if float(scale) == 1 else (123.675, 116.28, 103.53)
    default_std = (0.229, 0.224, 0.225) if float(scale) == 1 else (58.395, 57.12, 57.375)
    mean = triple("mean", default_mean)
    std = triple("std", default_std)
    if any(s <= 0 for s in std):
        raise bad('"std" values must be positive')
    bgr = data.get("bgr", False)
    if not isinstance(bgr, bool):
        raise bad(f'"bgr" must be true or false, got {bgr!r}')
    return ClassMap(labels=labels, input_size=size, pad_to=pad_to, scale=float(scale),
                    mean=mean, std=std, bgr=bgr, source=source)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


# ----------------------------------------------------------------------------- backends


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[-1].strip() if text else type(e).__name__


class _OrtBackend:
    name = "onnxruntime"

    def __init__(self, path: str, device: str) -> None:
        import onnxruntime as ort

        available = ort.get_available_providers()
        if device == "cpu":
            providers = ["CPUExecutionProvider"]
        elif device == "cuda":
            if "CUDAExecutionProvider" not in available:
                raise SegmenterError(f"{path}: onnxruntime here has no CUDA provider "
                                     "(install onnxruntime-gpu, or use --device cpu)")
            providers = ["CUDAExecutionProvider", "CPUExecutionProvider"]
        else:
            providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(path, sess_options=opts, providers=providers)
        except Exception as e:  # InvalidProtobuf, Fail, NoSuchFile, ... (pybind types)
            raise SegmenterError(f"{path}: not an ONNX model onnxruntime can load "
                                 f"({_first_line(e)})") from None
        inputs = self.session.get_inputs()
        if len(inputs) != 1:
            raise SegmenterError(f"{path}: model has {len(inputs)} inputs; a segmenter model "
                                 "needs exactly one (N x 3 x H x W image)")
        inp = inputs[0]
        self.input_name = inp.name
        if inp.type != "tensor(float)":
            raise SegmenterError(f"{path}: model input is {inp.type}; needs float32 (tensor(float))")
        shape = list(inp.shape or [])
        if len(shape) != 4:
            raise SegmenterError(f"{path}: model input has shape {shape}; needs N x 3 x H x W")
        if isinstance(shape[1], int) and shape[1] != 3:
            raise SegmenterError(f"{path}: model input has {shape[1]} channels; needs 3 (RGB)")
        self.static_hw = ((shape[2], shape[3]) if all(isinstance(v, int) and v > 0 for v in shape[2:])
                          else None)
        out_shape = list(self.session.get_outputs()[0].shape or [])
        self.static_channels = (out_shape[1] if len(out_shape) == 4 and isinstance(out_shape[1], int)
                                else None)

    def run(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(self.session.run(None, {self.input_name: x})[0])


class _CvBackend:
    name = "opencv"
    static_hw = None
    static_channels = None

    def __init__(self, path: str, device: str) -> None:
        import cv2

        self._cv2 = cv2
        try:
            self.net = cv2.dnn.readNetFromONNX(path)
        except cv2.error as e:
            raise SegmenterError(f"{path}: not an ONNX model OpenCV can load "
                                 f"({_first_line(e)})") from None
        if self.net.empty():
            raise SegmenterError(f"{path}: not an ONNX model OpenCV can load")

    def run(self, x: np.ndarray) -> np.ndarray:
        self.net.setInput(x)
        return np.asarray(self.net.forward())


def available_backends() -> list[str]:
    """ONNX runners importable here, in order of preference."""
    found = []
    try:
        import onnxruntime  # noqa: F401

        found.append("onnxruntime")
    except Exception:
        pass
    try:
        import cv2

        if hasattr(cv2, "dnn") and hasattr(cv2.dnn, "readNetFromONNX"):
            found.append("opencv")
    except Exception:
        pass
    return found


# ----------------------------------------------------------------------------- segmenter


class OnnxSegmenter(Segmenter):
    """An ONNX segmentation model whose labels are mapped to the codec's classes."""

    segmenter_id = SEGMENTER_ONNX

    def __init__(self, path: str | os.PathLike[str],
                 class_map: str | os.PathLike[str] | Mapping[str, Any] | ClassMap | None = None, *,
                 device: str = "auto", backend: str = "auto", vocabulary: Vocabulary | None = None) -> None:
        path = os.fspath(path)
        if vocabulary is not None:
            self.vocabulary = vocabulary
        if not os.path.exists(path):
            raise SegmenterError(f"{path}: no such ONNX model file")
        if os.path.isdir(path):
            raise SegmenterError(f"{path}: is a folder, not an ONNX model file")
        if class_map is None:
            sibling = Path(path).with_suffix(".json")
            if not sibling.is_file():
                raise SegmenterError(
                    f"{path}: an ONNX segmenter needs a class map (--class-map FILE, or "
                    f"{sibling.name} beside the model; built-in: {', '.join(builtin_maps())})")
            class_map = sibling
        self.class_map = (class_map if isinstance(class_map, ClassMap)
                          else load_class_map(class_map, self.vocabulary))
        self.path = path
        self.backend = self._open(path, device, backend)
        cm = self.class_map
        if self.backend.static_channels is not None:
            self._check_channels(self.backend.static_channels)
        static = self.backend.static_hw
        if cm.input_size is not None and static is not None and tuple(cm.input_size) != static:
            raise SegmenterError(f"{path}: model input is {static[0]}x{static[1]} (HxW) but the "
                                 f"class map {cm.source} says input_size {list(cm.input_size)}")
        self.input_size = cm.input_size or static
        self._mean = np.array(cm.mean, np.float32).reshape(1, 1, 3)
        self._inv_std = (1.0 / np.array(cm.std, np.float32)).reshape(1, 1, 3)
        self._mapped = cm.mapped
        self._mapped_classes = cm.mapped_classes
        self.name = f"onnx ({os.path.basename(path)}, {self.backend.name})"

    @staticmethod
    def _open(path: str, device: str, backend: str):
        found = available_backends()
        if backend == "auto":
            if not found:
                raise SegmenterError("running an ONNX segmenter needs onnxruntime "
                                     "(pip install onnxruntime) or OpenCV with its dnn module")
            backend = found[0]
        if backend not in ("onnxruntime", "opencv"):
            raise SegmenterError(f"unknown ONNX backend {backend!r}; use onnxruntime or opencv")
        if backend not in found:
            raise SegmenterError(f"ONNX backend {backend} is not installed here")
        return _OrtBackend(path, device) if backend == "onnxruntime" else _CvBackend(path, device)

    def _check_channels(self, channels: int) -> None:
        n = self.class_map.num_labels
        if channels != n:
            raise SegmenterError(
                f"{self.path}: model outputs {channels} label channels but class map "
                f"{self.class_map.source} lists {n} labels (0..{n - 1}); the class map must name "
                f"every model label (use 'ignore' for unused ones)")

    # -- public

    def segment(self, rgb: np.ndarray, *, name: str | None = None) -> np.ndarray:
        check_rgb(rgb, name)
        h, w = rgb.shape[:2]
        cm = self.class_map
        if self.input_size is not None:
            mh, mw = self.input_size
            net_in = rgb if (h, w) == (mh, mw) else _resize_rgb(rgb, mh, mw)
            frame = (h, w)  # the output covers the whole (stretched) image
        else:
            ph, pw = (-h) % cm.pad_to, (-w) % cm.pad_to
            net_in = _pad(rgb, ph, pw)
            frame = (h + ph, w + pw)  # the output covers the padded image; crop top-left
        x = net_in.astype(np.float32)
        if cm.bgr:
            x = x[:, :, ::-1]
        x = (x * np.float32(cm.scale / 255.0) - self._mean) * self._inv_std
        x = np.ascontiguousarray(x.transpose(2, 0, 1)[None], dtype=np.float32)
        try:
            out = self.backend.run(x)
        except SegmenterError:
            raise
        except Exception as e:  # runtime's own error types (shape mismatch inside the graph, ...)
            raise SegmenterError(f"{self.path}: model failed on a {net_in.shape[1]}x"
                                 f"{net_in.shape[0]} input ({_first_line(e)})") from None
        if out.ndim != 4 or out.shape[0] != 1:
            raise SegmenterError(f"{self.path}: model output has shape {list(out.shape)}; "
                                 "needs 1 x L x h x w label scores")
        self._check_channels(out.shape[1])
        scores = np.asarray(out[0][self._mapped], dtype=np.float32)
        best = upsample_argmax(scores, frame, (h, w))
        return check_map(self._mapped_classes[best], rgb, "ONNX segmenter", self.vocabulary.num_classes)


# ----------------------------------------------------------------------------- helpers


def _pad(rgb: np.ndarray, ph: int, pw: int) -> np.ndarray:
    if not ph and not pw:
        return rgb
    h, w = rgb.shape[:2]
    mode = "reflect" if ph < h and pw < w else "edge"
    return np.pad(rgb, ((0, ph), (0, pw), (0, 0)), mode=mode)


def _resize_rgb(rgb: np.ndarray, h: int, w: int) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.fromarray(rgb).resize((w, h), Image.Resampling.BILINEAR))


def upsample_argmax(scores: np.ndarray, frame: tuple[int, int],
                     out: tuple[int, int]) -> np.ndarray:
    """Argmax over channels of ``scores`` (C x h x w) bilinearly resampled to ``frame``
    (H x W, align_corners=False, as torch's interpolate), keeping the top-left ``out``
    rows and columns. Done in strips of rows, so memory stays small for large images."""
    c, sh, sw = scores.shape
    fh, fw = frame
    oh, ow = out
    if (sh, sw) == (fh, fw):
        return scores[:, :oh, :ow].argmax(axis=0)

    def axis(n_out: int, n_src: int, n_frame: int):
        pos = (np.arange(n_out, dtype=np.float64) + 0.5) * (n_src / n_frame) - 0.5
        pos = np.clip(pos, 0, n_src - 1)
        lo = np.floor(pos).astype(np.int64)
        hi = np.minimum(lo + 1, n_src - 1)
        return lo, hi, (pos - lo).astype(np.float32)

    x0, x1, wx = axis(ow, sw, fw)
    y0, y1, wy = axis(oh, sh, fh)
    result = np.empty((oh, ow), dtype=np.int64)
    rows = max(1, (1 << 21) // max(1, c * ow))
    for r in range(0, oh, rows):
        sl = slice(r, min(r + rows, oh))
        top, bot = scores[:, y0[sl]], scores[:, y1[sl]]                      # C x R x sw
        top = top[:, :, x0] * (1 - wx) + top[:, :, x1] * wx                   # C x R x ow
        bot = bot[:, :, x0] * (1 - wx) + bot[:, :, x1] * wx
        wr = wy[sl][None, :, None]
        result[sl] = (top * (1 - wr) + bot * wr).argmax(axis=0)
    return result

"""Precomputed label maps as a segmenter (``labels:PATH``).

``PATH`` is one label file used for every image, or a folder holding ``<stem>.png`` for
each image (``street/0001.jpg`` -> ``PATH/0001.png``; the image's name is passed as
``segment(rgb, name=...)``).

A label file is a single-channel image of the codec's class ids: 8-bit greyscale (``L``)
or palette (``P``, the indices are the ids) PNG; 16-bit greyscale and RGB files whose
three channels are equal are accepted too. It must have the image's size exactly.

Values: ``0 .. C-1`` are the classes of the segmenter's vocabulary (CamVid's 11 unless
``vocabulary=`` names another; the codec passes its model's). ``C`` (CamVid/SegNet's void
11) and ``255`` (the usual "ignore" value) are void: with ``void="nearest"`` (the default) each void pixel takes the class of
the nearest labelled pixel, since the codec needs a class everywhere; with
``void="error"`` they are refused. Any other value is an error.

This module never imports torch.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..errors import SegmenterError
from ..vocabulary import Vocabulary
from .base import SEGMENTER_LABELS, Segmenter, check_map, check_rgb

IGNORE_VALUE = 255  # void in any vocabulary, besides the class count itself
LABEL_SUFFIX = ".png"


class LabelsSegmenter(Segmenter):
    """Reads class-id maps from a file or a folder instead of running a model."""

    segmenter_id = SEGMENTER_LABELS

    def __init__(self, path: str | os.PathLike[str], *, void: str = "nearest",
                 vocabulary: Vocabulary | None = None) -> None:
        if vocabulary is not None:
            self.vocabulary = vocabulary
        self.path = os.fspath(path)
        if not os.path.exists(self.path):
            raise SegmenterError(f"{self.path}: no such label file or folder")
        if void not in ("nearest", "error"):
            raise ValueError(f"void must be 'nearest' or 'error', not {void!r}")
        self.void = void
        self.is_folder = os.path.isdir(self.path)
        self.name = f"labels ({self.path})"
        self._cache: tuple[tuple, np.ndarray] | None = None

    def label_path(self, name: str | None) -> str:
        """The label file for the image called ``name``."""
        if not self.is_folder:
            return self.path
        if not name or name.startswith("<"):
            raise SegmenterError(f"{self.path}: is a folder of label files; which one to use "
                                 "needs the image's file name")
        stem = Path(name).stem
        return os.path.join(self.path, stem + LABEL_SUFFIX)

    def segment(self, rgb: np.ndarray, *, name: str | None = None) -> np.ndarray:
        check_rgb(rgb, name)
        path = self.label_path(name)
        ids = self._read(path)
        h, w = rgb.shape[:2]
        if ids.shape != (h, w):
            who = f" ({name})" if name else ""
            raise SegmenterError(f"{path}: label map is {ids.shape[1]}x{ids.shape[0]} but the "
                                 f"image{who} is {w}x{h}")
        return check_map(ids.copy(), rgb, "labels segmenter", self.vocabulary.num_classes)

    # -- internals

    def _read(self, path: str) -> np.ndarray:
        try:
            st = os.stat(path)
        except FileNotFoundError:
            raise SegmenterError(f"{path}: no such label file") from None
        except OSError as e:
            raise SegmenterError(f"{path}: cannot read label file: {e.strerror or e}") from None
        key = (path, st.st_mtime_ns, st.st_size)
        if self._cache is not None and self._cache[0] == key:
            return self._cache[1]
        ids = self._clean(read_label_file(path), path)
        self._cache = (key, ids)
        return ids

    def _clean(self, values: np.ndarray, path: str) -> np.ndarray:
        classes = self.vocabulary.num_classes
        void = np.isin(values, (classes, IGNORE_VALUE))
        bad = (values >= classes) & ~void
        if bad.any():
            shown = ", ".join(str(v) for v in np.unique(values[bad])[:8])
            raise SegmenterError(
                f"{path}: label map has values outside the classes 0..{classes - 1} of "
                f"{self.vocabulary.name} (and void {classes}/{IGNORE_VALUE}): {shown}")
        ids = values.astype(np.uint8)
        if void.any():
            if self.void == "error":
                raise SegmenterError(f"{path}: label map has {int(void.sum())} void pixels "
                                     f"(value {classes} or {IGNORE_VALUE}); every pixel needs a class")
            if void.all():
                raise SegmenterError(f"{path}: label map is void everywhere; nothing to go by")
            ids = fill_nearest(ids, void)
        return ids


def read_label_file(path: str) -> np.ndarray:
    """The raw values of a single-channel label image, as a 2-D integer array."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im.load()
            mode = im.mode
            if mode in ("L", "P"):
                return np.asarray(im, dtype=np.uint8)
            if mode in ("I", "I;16", "I;16L", "I;16B", "I;16N"):
                return np.asarray(im).astype(np.int64)
            if mode in ("RGB", "RGBA"):
                arr = np.asarray(im)[:, :, :3]
                if (arr[:, :, 0] == arr[:, :, 1]).all() and (arr[:, :, 0] == arr[:, :, 2]).all():
                    return np.ascontiguousarray(arr[:, :, 0])
                raise SegmenterError(
                    f"{path}: is a colour image; a label map must hold class ids in one "
                    "channel (8-bit greyscale or palette PNG)")
            raise SegmenterError(f"{path}: label map has image mode {mode}; needs class ids "
                                 "in one channel (8-bit greyscale or palette PNG)")
    except SegmenterError:
        raise
    except FileNotFoundError:
        raise SegmenterError(f"{path}: no such label file") from None
    except IsADirectoryError:
        raise SegmenterError(f"{path}: is a folder, not a label file") from None
    except UnidentifiedImageError:
        raise SegmenterError(f"{path}: not an image file Pillow can read") from None
    except (OSError, ValueError, SyntaxError, EOFError) as e:
        raise SegmenterError(f"{path}: cannot read label map ({e})") from None


def fill_nearest(ids: np.ndarray, holes: np.ndarray) -> np.ndarray:
    """``ids`` with each ``holes`` pixel set to the value of the nearest non-hole pixel
    (Euclidean, through OpenCV when installed; else 8-neighbour growth in numpy)."""
    try:
        import cv2
    except Exception:
        cv2 = None
    if cv2 is not None:
        src = holes.astype(np.uint8)  # zero = labelled = seed
        _, lab = cv2.distanceTransformWithLabels(src, cv2.DIST_L2, 5,
                                                 labelType=cv2.DIST_LABEL_PIXEL)
        seeds = ids[~holes]  # seeds in raster order are labelled 1, 2, ... in raster order
        out = seeds[lab.astype(np.int64) - 1]
        return np.ascontiguousarray(out.astype(np.uint8))
    return grow_fill(ids, holes)


def grow_fill(ids: np.ndarray, holes: np.ndarray) -> np.ndarray:
    ids = ids.copy()
    holes = holes.copy()
    h, w = ids.shape
    # straight neighbours first, so a pixel next to labelled ones takes the closest
    shifts = [(-1, 0), (1, 0), (0, -1), (0, 1), (-1, -1), (-1, 1), (1, -1), (1, 1)]
    while holes.any():
        filled_any = False
        new_ids, new_holes = ids.copy(), holes.copy()
        for dy, dx in shifts:
            # neighbour of (y, x) is (y + dy, x + dx)
            ys, yd = (slice(dy, h), slice(0, h - dy)) if dy >= 0 else (slice(0, h + dy), slice(-dy, h))
            xs, xd = (slice(dx, w), slice(0, w - dx)) if dx >= 0 else (slice(0, w + dx), slice(-dx, w))
            take = new_holes[yd, xd] & ~holes[ys, xs]
            if take.any():
                new_ids[yd, xd][take] = ids[ys, xs][take]
                new_holes[yd, xd][take] = False
                filled_any = True
        ids, holes = new_ids, new_holes
        if not filled_any:
            break
    return ids

"""Pseudo-labels: any folder of images becomes training data for SQ-GAN.

Images without a label map are labelled once by the bundled segmenter; the maps are cached as
PNGs of class ids under ``<out>/pseudo_labels/<key>`` (``key``: the image's path relative to
``--data``, with ``.png`` appended unless it already ends so), so a resumed run reads them back
instead of recomputing. A cached map is reused when its size matches the image; delete the
folder to relabel (e.g. after the segmenter changed). Under DDP every rank labels its share
(``missing[rank::world]``) and all ranks then read the others' maps from the cache.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import cv2
import numpy as np

if TYPE_CHECKING:
    from ..vocabulary import Vocabulary

CHUNK = 32  # images per segment_many call (progress lines between chunks)


def cache_path(cache_dir: Path, key: str) -> Path:
    rel = Path(key)
    return cache_dir / (rel if rel.suffix.lower() == ".png" else rel.with_name(rel.name + ".png"))


def _read_cached(path: Path, shape: tuple[int, int]) -> np.ndarray | None:
    if not path.is_file():
        return None
    lab = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if lab is None or lab.shape != shape or lab.dtype != np.uint8:
        return None
    return lab


def _write(path: Path, lab: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.png")
    if not cv2.imwrite(str(tmp), lab):
        raise OSError(f"cannot write pseudo-label {path}")
    os.replace(tmp, path)


def fill_pseudo_labels(keys: list[str], images: list[np.ndarray], labels: list[np.ndarray | None],
                       cache_dir: Path, device: str = "auto", rank: int = 0, world: int = 1,
                       barrier: Callable[[], None] | None = None, log: Callable[[str], None] = print,
                       vocabulary: "Vocabulary | None" = None) -> list[np.ndarray]:
    """``labels`` with every None replaced by the bundled segmenter's map of that image.
    ``vocabulary``: the classes being trained (default CamVid's); only a bundled segmenter of
    the same classes can label for it (SystemExit otherwise)."""
    missing = [i for i, lab in enumerate(labels) if lab is None]
    if not missing:
        return list(labels)  # type: ignore[arg-type]
    if vocabulary is not None:
        from .. import registry
        from ..segmenters.bundled import default_segmenter_name

        entry = registry.get(default_segmenter_name())
        own = registry.vocabulary_of(entry)
        if own.digest != vocabulary.digest:
            raise SystemExit(f"{len(missing)} training images have no label map, and the bundled segmenter "
                             f"({entry.name}) predicts {own.name}, not {vocabulary.name}: give every image "
                             f"a label map")
    out = list(labels)
    cached = 0
    todo = []
    for i in missing:
        lab = _read_cached(cache_path(cache_dir, keys[i]), images[i].shape[:2])
        if lab is not None:
            out[i] = lab
            cached += 1
        else:
            todo.append(i)
    if world > 1 and barrier is not None:
        barrier()  # every rank has scanned the cache before any rank writes to it: same ``todo``
    mine = todo[rank::world]
    if mine:
        from ..segmenters import get_segmenter

        seg = get_segmenter("bundled", device=device)
        for start in range(0, len(mine), CHUNK):
            chunk = mine[start:start + CHUNK]
            for i, lab in zip(chunk, seg.segment_many([images[i] for i in chunk],
                                                      names=[keys[i] for i in chunk])):
                _write(cache_path(cache_dir, keys[i]), lab)
                out[i] = lab
            if len(mine) > CHUNK:
                log(f"pseudo-labels: {min(start + CHUNK, len(mine))}/{len(mine)} images labelled")
    if world > 1:
        if barrier is not None:
            barrier()
        for i in todo:
            if out[i] is None:  # another rank's share: read it back from the cache
                lab = _read_cached(cache_path(cache_dir, keys[i]), images[i].shape[:2])
                if lab is None:
                    raise RuntimeError(f"pseudo-label of {keys[i]} missing from {cache_dir}")
                out[i] = lab
    log(f"pseudo-labels for {len(missing)} of {len(labels)} images (bundled segmenter): "
        f"{cached} from {cache_dir}, {len(todo)} computed")
    return out  # type: ignore[return-value]

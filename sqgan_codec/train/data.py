"""Training data: CamVid-layout folders (or any image folder, pseudo-labelled) held in memory."""
from __future__ import annotations

import queue
import threading
from pathlib import Path
from typing import Any, Callable

import cv2
import numpy as np

from ..classes import VOCABULARY as CAMVID11, VOID
from ..vocabulary import Vocabulary

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff"}


def _read_rgb(path: Path) -> np.ndarray:
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise OSError(f"cannot read image {path}")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def load_split(root: str | Path, split: str, limit: int | None = None,
               vocabulary: Vocabulary = CAMVID11) -> tuple[np.ndarray, np.ndarray | None]:
    """Images (N×H×W×3 uint8) and labels (N×H×W uint8 class ids of ``vocabulary``, or None)
    of one split folder.

    ``root/split`` holds images; ``root/{split}annot`` holds same-named label maps when present.
    """
    root = Path(root)
    names = sorted(p.name for p in (root / split).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if limit:
        names = names[:limit]
    images = np.stack([_read_rgb(root / split / n) for n in names])
    annot = root / f"{split}annot"
    if not annot.is_dir():
        return images, None
    labels = np.stack([read_label(annot / n, vocabulary) for n in names])
    return images, labels


def load_splits(root: str | Path, splits: list[str], limit: int | None = None,
                vocabulary: Vocabulary = CAMVID11) -> tuple[np.ndarray, np.ndarray | None]:
    parts = [load_split(root, s, limit, vocabulary) for s in splits]
    images = np.concatenate([p[0] for p in parts])
    if any(p[1] is None for p in parts):
        return images, None
    return images, np.concatenate([p[1] for p in parts])


def find_images(root: str | Path, splits: list[str], limit: int | None = None,
                exclude: str | Path | None = None) -> list[tuple[str, Path, Path | None]]:
    """``(key, image path, label path or None)`` of every training image under ``root``.

    Two layouts: CamVid's (``root/{split}`` images, ``root/{split}annot`` same-named label
    maps), used when any of ``splits`` is a folder of ``root``; otherwise ``root`` is a plain
    folder of images, searched recursively (hidden entries skipped), with no label maps.
    ``key`` is the image's path relative to ``root`` (``train/0001TP_006690.png``): it names
    the image's cached pseudo-label. ``limit`` keeps the first N images of each split (plain
    folder: of the folder). Files under ``exclude`` (the run's output folder, should it lie
    inside ``root``) are not training images.
    """
    root = Path(root)
    if not root.is_dir():
        raise SystemExit(f"--data {root}: not a folder")
    found: list[tuple[str, Path, Path | None]] = []
    if any((root / s).is_dir() for s in splits):
        for split in splits:
            folder = root / split
            if not folder.is_dir():
                raise SystemExit(f"--data {root}: no split folder {split!r} (use --splits)")
            names = sorted(p.name for p in folder.iterdir()
                           if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            annot = root / f"{split}annot"
            for n in names[:limit] if limit else names:
                # same name, or the same stem as PNG (images repacked as WebP keep PNG labels)
                label = next((p for p in (annot / n, annot / f"{Path(n).stem}.png") if p.is_file()), None)
                found.append((f"{split}/{n}", folder / n, label))
    else:
        skip = Path(exclude).resolve() if exclude is not None else None
        if skip is not None and (skip == root.resolve() or not skip.is_relative_to(root.resolve())):
            skip = None  # only an output folder strictly inside the data folder is left out
        paths = sorted(p for p in root.rglob("*")
                       if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
                       and not any(part.startswith(".") for part in p.relative_to(root).parts)
                       and not (skip is not None and p.resolve().is_relative_to(skip)))
        for p in paths[:limit] if limit else paths:
            found.append((p.relative_to(root).as_posix(), p, None))
    if not found:
        raise SystemExit(f"--data {root}: no images found")
    return found


def read_label(path: Path, vocabulary: Vocabulary = CAMVID11) -> np.ndarray:
    """A label file's ids (8- or 16-bit single-channel PNG) as class ids of ``vocabulary``
    (its ``label_ids`` mapping; the ignore id and unlisted ids become its void id)."""
    lab = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if lab is None or lab.ndim != 2:
        raise OSError(f"cannot read label map {path} (a single-channel PNG of label ids)")
    return vocabulary.map_labels(lab)


def load_training_set(root: str | Path, splits: list[str], limit: int | None = None,
                      exclude: str | Path | None = None, vocabulary: Vocabulary = CAMVID11
                      ) -> tuple[list[str], list[np.ndarray], list[np.ndarray | None]]:
    """Keys, images (H×W×3 uint8, sizes may differ) and label maps in ``vocabulary``'s class
    ids (None where the image has none: pseudo-label those) of :func:`find_images`."""
    return read_items(find_images(root, splits, limit, exclude), vocabulary)


def read_items(items: list[tuple[str, Path, Path | None]], vocabulary: Vocabulary = CAMVID11
               ) -> tuple[list[str], list[np.ndarray], list[np.ndarray | None]]:
    """Read :func:`find_images` entries: keys, images and label maps (class ids of
    ``vocabulary``, or None)."""
    keys, images, labels = [], [], []
    for key, image_path, label_path in items:
        img = _read_rgb(image_path)
        lab = read_label(label_path, vocabulary) if label_path is not None else None
        if lab is not None and lab.shape != img.shape[:2]:
            raise SystemExit(f"label map {label_path} is {lab.shape[1]}x{lab.shape[0]}, "
                             f"its image {img.shape[1]}x{img.shape[0]}")
        keys.append(key)
        images.append(img)
        labels.append(lab)
    return keys, images, labels


class ObjectBank:
    """Small objects of chosen classes cut out of the training set, for copy-paste augmentation.

    Small relevant objects (signs, poles, people, cyclists) are few pixels of few images; pasting
    extra copies into crops (the paper's augmentation) gives the losses more of what matters.
    Each object is one connected component of one class: its pixels, its mask and its class.
    """

    def __init__(self, images: list[np.ndarray], labels: list[np.ndarray], classes: tuple[int, ...],
                 min_area: int = 40, max_area: int = 6000, max_objects: int = 5000):
        self.objects: list[tuple[np.ndarray, np.ndarray, int]] = []
        for img, lab in zip(images, labels):
            if lab is None:
                continue
            for c in classes:
                mask = (lab == c).astype(np.uint8)
                if not mask.any():
                    continue
                n, comp, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
                for k in range(1, n):
                    x, y, w, h, area = stats[k]
                    if min_area <= area <= max_area and len(self.objects) < max_objects:
                        m = comp[y:y + h, x:x + w] == k
                        self.objects.append((img[y:y + h, x:x + w].copy(), m, c))

    def __len__(self) -> int:
        return len(self.objects)

    def paste(self, img: np.ndarray, lab: np.ndarray, rng: np.random.Generator, scale: float) -> None:
        """Paste one random object into ``img``/``lab`` (in place) at a random place, resized
        by ``scale`` (the crop's own scale, so objects keep a plausible size)."""
        pix, mask, c = self.objects[rng.integers(len(self.objects))]
        h, w = max(1, round(pix.shape[0] * scale)), max(1, round(pix.shape[1] * scale))
        if h >= lab.shape[0] or w >= lab.shape[1]:
            return
        pix = cv2.resize(pix, (w, h), interpolation=cv2.INTER_LINEAR)
        mask = cv2.resize(mask.astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST).astype(bool)
        if rng.random() < 0.5:
            pix, mask = pix[:, ::-1], mask[:, ::-1]
        y0, x0 = rng.integers(lab.shape[0] - h + 1), rng.integers(lab.shape[1] - w + 1)
        img[y0:y0 + h, x0:x0 + w][mask] = pix[mask]
        lab[y0:y0 + h, x0:x0 + w][mask] = c


class CropSampler:
    """Random multi-scale crops with flips and photometric jitter, as uint8 arrays; optionally
    with small objects of an :class:`ObjectBank` pasted in (``paste``: chance per crop)."""

    def __init__(self, images: np.ndarray | list[np.ndarray], labels: np.ndarray | list[np.ndarray],
                 crop: tuple[int, int],
                 scale: tuple[float, float] = (0.75, 1.5), jitter: float = 0.25, seed: int = 0,
                 bank: ObjectBank | None = None, paste: float = 0.0):
        self.images, self.labels = images, labels
        self.crop, self.scale, self.jitter = crop, scale, jitter
        self.bank, self.paste = (bank, paste) if bank is not None and len(bank) else (None, 0.0)
        self.rng = np.random.default_rng(seed)

    def sample(self, batch: int) -> tuple[np.ndarray, np.ndarray]:
        ch, cw = self.crop
        xs = np.empty((batch, ch, cw, 3), np.uint8)
        ys = np.full((batch, ch, cw), VOID, np.uint8)
        for b in range(batch):
            i = self.rng.integers(len(self.images))
            img, lab = self.images[i], self.labels[i]
            s = self.rng.uniform(*self.scale)
            h, w = max(ch, round(img.shape[0] * s)), max(cw, round(img.shape[1] * s))
            img = cv2.resize(img, (w, h), interpolation=cv2.INTER_LINEAR)
            lab = cv2.resize(lab, (w, h), interpolation=cv2.INTER_NEAREST)
            y0, x0 = self.rng.integers(h - ch + 1), self.rng.integers(w - cw + 1)
            img, lab = img[y0:y0 + ch, x0:x0 + cw], lab[y0:y0 + ch, x0:x0 + cw]
            if self.rng.random() < 0.5:
                img, lab = img[:, ::-1], lab[:, ::-1]
            if self.paste and self.rng.random() < self.paste:
                img, lab = img.copy(), lab.copy()
                for _ in range(self.rng.integers(1, 4)):
                    self.bank.paste(img, lab, self.rng, s)
            if self.jitter:
                gain = 1 + self.rng.uniform(-self.jitter, self.jitter, 3)
                bias = self.rng.uniform(-self.jitter, self.jitter) * 40
                img = np.clip(img.astype(np.float32) * gain + bias, 0, 255).astype(np.uint8)
            xs[b], ys[b] = img, lab
        return xs, ys


def class_frequencies(labels: np.ndarray | list[np.ndarray], num_classes: int) -> np.ndarray:
    """Share of each class among the labelled (non-void) pixels of one array or a list of maps."""
    maps = [labels] if isinstance(labels, np.ndarray) else list(labels)
    counts = sum(np.bincount(m.reshape(-1), minlength=num_classes + 1)[:num_classes] for m in maps)
    counts = np.asarray(counts, dtype=np.float64)
    return counts / max(counts.sum(), 1.0)


class BatchPrefetcher:
    """Training batches made by background threads, so that a fast (GPU) step never waits for
    augmentation: each thread calls its own producer (with its own random generator) and queues
    the result; cv2 and numpy release the GIL for the heavy work. ``get()`` returns the next
    batch, re-raising a producer's exception. Batches come in completion order (not
    reproducible from the seed); without threads, call the producer directly instead."""

    def __init__(self, producers: list[Callable[[], Any]], depth: int = 8):
        self.queue: queue.Queue = queue.Queue(depth)
        self.stopped = threading.Event()
        self.threads = [threading.Thread(target=self._work, args=(p,), daemon=True) for p in producers]
        for t in self.threads:
            t.start()

    def _work(self, produce: Callable[[], Any]) -> None:
        while not self.stopped.is_set():
            try:
                item: Any = produce()
            except BaseException as exc:  # handed to the consumer
                item = exc
            while not self.stopped.is_set():
                try:
                    self.queue.put(item, timeout=0.2)
                    break
                except queue.Full:
                    continue
            if isinstance(item, BaseException):
                return

    def get(self) -> Any:
        item = self.queue.get()
        if isinstance(item, BaseException):
            self.close()
            raise item
        return item

    def close(self, timeout: float = 60.0) -> None:
        """Stop the threads and wait for each to finish the batch it is making: a thread left
        inside a native encoder (libaom) as the interpreter exits aborts the process (the GPU
        run of 2026-11-27 ended with status 134 after writing everything)."""
        self.stopped.set()
        for t in self.threads:
            if t is not threading.current_thread():
                t.join(timeout)

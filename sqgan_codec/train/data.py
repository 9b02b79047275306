"""Training data: CamVid-layout folders (or any image folder, pseudo-labelled) held in memory."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from ..classes import VOID

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff"}


def _read_rgb(path: Path) -> np.ndarray:
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise OSError(f"cannot read image {path}")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def load_split(root: str | Path, split: str, limit: int | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """Images (N×H×W×3 uint8) and labels (N×H×W uint8, or None) of one split folder.

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
    labels = np.stack([cv2.imread(str(annot / n), cv2.IMREAD_UNCHANGED) for n in names])
    return images, labels


def load_splits(root: str | Path, splits: list[str], limit: int | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    parts = [load_split(root, s, limit) for s in splits]
    images = np.concatenate([p[0] for p in parts])
    if any(p[1] is None for p in parts):
        return images, None
    return images, np.concatenate([p[1] for p in parts])


class CropSampler:
    """Random multi-scale crops with flips and photometric jitter, as uint8 arrays."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, crop: tuple[int, int],
                 scale: tuple[float, float] = (0.75, 1.5), jitter: float = 0.25, seed: int = 0):
        self.images, self.labels = images, labels
        self.crop, self.scale, self.jitter = crop, scale, jitter
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
            if self.jitter:
                gain = 1 + self.rng.uniform(-self.jitter, self.jitter, 3)
                bias = self.rng.uniform(-self.jitter, self.jitter) * 40
                img = np.clip(img.astype(np.float32) * gain + bias, 0, 255).astype(np.uint8)
            xs[b], ys[b] = img, lab
        return xs, ys


def class_frequencies(labels: np.ndarray, num_classes: int) -> np.ndarray:
    counts = np.bincount(labels.reshape(-1), minlength=num_classes + 1)[:num_classes].astype(np.float64)
    return counts / counts.sum()

"""Do sqgan's mIoU gains hold for a segmenter its training never saw?

SQ-GAN's semantic-consistency loss trains the decoder against the bundled segmenter, which
also scores the benchmark: a decoder could learn textures that only that network reads.
This check trains a second, independent segmenter here — a per-pixel MLP on colour at
several blur scales and position, no shared weights, architecture or training run with the
bundled one — on CamVid train, and scores originals, sqgan and the best classical codecs with it.

    python benchmarks/unseen_segmenter.py --data ../shared/data/camvid --every 6 --out docs/bench/unseen.md

Its absolute mIoU is low (a weak segmenter); what matters is each codec's score relative to
the originals under it, next to the same ratio under the bundled segmenter.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import Image
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _report import emit  # noqa: E402

from sqgan_codec.classes import NUM_CLASSES, VOID  # noqa: E402
from sqgan_codec.codec import Codec  # noqa: E402
from sqgan_codec.evaluate import classical  # noqa: E402
from sqgan_codec.evaluate.metrics import confusion_matrix, miou  # noqa: E402

SIGMAS = (0, 2, 6, 16)
CLASSICAL = (("webp", 4), ("avif", 4), ("jxl", 4), ("hevc", 2), ("jpeg2000", 1))


def features(rgb: np.ndarray) -> np.ndarray:
    """H×W×F float32: Lab colour at several blur scales, gradient energy, and position."""
    lab = cv2.cvtColor(rgb, cv2.COLOR_RGB2LAB).astype(np.float32) / 255.0
    feats = []
    for s in SIGMAS:
        feats.append(lab if s == 0 else cv2.GaussianBlur(lab, (0, 0), s))
    grey = lab[..., 0]
    grad = np.hypot(cv2.Sobel(grey, cv2.CV_32F, 1, 0), cv2.Sobel(grey, cv2.CV_32F, 0, 1))
    for s in (2, 8):
        feats.append(cv2.GaussianBlur(grad, (0, 0), s)[..., None])
    h, w = grey.shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    feats += [(yy / h)[..., None], (xx / w)[..., None]]
    return np.concatenate(feats, axis=-1)


class PixelMLP(nn.Module):
    def __init__(self, nf: int):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(nf, 128), nn.ReLU(), nn.Linear(128, 128), nn.ReLU(),
                                 nn.Linear(128, NUM_CLASSES))

    def segment(self, rgb: np.ndarray) -> np.ndarray:
        f = torch.from_numpy(features(rgb))
        with torch.inference_mode():
            return self.net(f.reshape(-1, f.shape[-1])).argmax(1).reshape(f.shape[:2]).numpy().astype(np.uint8)


def train(root: Path, seconds: float, seed: int = 0) -> PixelMLP:
    rng = np.random.default_rng(seed)
    xs, ys = [], []
    for path in sorted((root / "train").glob("*.png")):
        rgb = np.asarray(Image.open(path).convert("RGB"))
        gt = np.asarray(Image.open(root / "trainannot" / path.name))
        f = features(rgb)
        idx = rng.choice(gt.size, 3000, replace=False)
        xs.append(f.reshape(-1, f.shape[-1])[idx])
        ys.append(gt.reshape(-1)[idx])
    x = torch.from_numpy(np.concatenate(xs))
    y = torch.from_numpy(np.concatenate(ys)).long()
    counts = torch.bincount(y[y != VOID], minlength=NUM_CLASSES).float()
    weight = (counts.sum() / (counts + 1)) ** 0.5
    torch.manual_seed(seed)
    model = PixelMLP(x.shape[1])
    opt = torch.optim.Adam(model.net.parameters(), lr=3e-3)
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        idx = torch.randint(0, len(x), (4096,))
        loss = nn.functional.cross_entropy(model.net(x[idx]), y[idx], weight=weight / weight.mean(),
                                           ignore_index=VOID)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--data", default="../shared/data/camvid")
    p.add_argument("--every", type=int, default=6)
    p.add_argument("--targets", default="0.025,0.05")
    p.add_argument("--train-seconds", type=float, default=90)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default=None)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    root = Path(a.data)
    unseen = train(root, a.train_seconds)
    codec = Codec(device="cpu")
    bundled = codec.segmenter
    targets = [float(t) for t in a.targets.split(",")]
    names = ["original"] + [f"sqgan@{t}" for t in targets] + \
        [f"{c} 1/{s}@{t}" for t in targets for c, s in CLASSICAL]
    cms = {(n, seg): np.zeros((NUM_CLASSES, NUM_CLASSES), np.int64) for n in names for seg in ("bundled", "unseen")}
    bpps: dict[str, list[float]] = {n: [] for n in names}
    paths = sorted((root / "test").glob("*.png"))[:: a.every]
    for i, path in enumerate(paths):
        rgb = np.asarray(Image.open(path).convert("RGB"))
        gt = np.asarray(Image.open(root / "testannot" / path.name))
        pixels = gt.size
        decoded = {"original": (rgb, 24.0)}
        for t in targets:
            data = codec.encode(rgb, bpp=t)
            decoded[f"sqgan@{t}"] = (np.asarray(codec.decode(data).convert("RGB")), 8 * len(data) / pixels)
            for c, s in CLASSICAL:
                res = classical.code_at_bpp(rgb, c, s, t)
                if res is not None:
                    decoded[f"{c} 1/{s}@{t}"] = (res.rgb, res.bpp)
        for name, (img, bpp) in decoded.items():
            cms[(name, "bundled")] += confusion_matrix(gt, bundled.segment(img))
            cms[(name, "unseen")] += confusion_matrix(gt, unseen.segment(img))
            bpps[name].append(bpp)
        print(f"[{i + 1}/{len(paths)}] {path.name}", file=sys.stderr)
    ref = {seg: miou(cms[("original", seg)]) for seg in ("bundled", "unseen")}
    lines = ["# A segmenter training never saw", "",
             f"Command: `python benchmarks/unseen_segmenter.py --data {a.data} --every {a.every} "
             f"--targets {a.targets} --train-seconds {a.train_seconds:g}` ({len(paths)} CamVid test images, "
             "every {}th; dataset-level mIoU against ground truth, void ignored).".format(a.every), "",
             "The unseen segmenter is a per-pixel MLP on Lab colour at 4 blur scales, gradient energy "
             "and position, trained here on CamVid train for the seconds above; it shares nothing with "
             "the bundled segmenter that sqgan's semantic loss used.", "",
             "| decoded by | mean bpp | mIoU bundled | ratio to original | mIoU unseen | ratio to original |",
             "|---|---|---|---|---|---|"]
    for name in names:
        if not bpps[name]:
            continue
        mb, mu = miou(cms[(name, "bundled")]), miou(cms[(name, "unseen")])
        lines.append(f"| {name} | {np.mean(bpps[name]):.4f} | {mb:.3f} | {mb / ref['bundled']:.2f} | "
                     f"{mu:.3f} | {mu / ref['unseen']:.2f} |")
    emit(lines, a.out)


if __name__ == "__main__":
    main()

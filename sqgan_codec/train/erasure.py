"""Train the erasure adapter (nets/adapter.py) on a frozen SQ-GAN model.

    python -m sqgan_codec.train erasure --data ../shared/data/camvid --minutes 60 --threads 1

Each crop is coded by the frozen model as the codec codes it (G_x at a random keep ratio, the
de-masker conditioned on G_s's decoded map). Then packets' worth of its kept positions are lost
as a channel loses them (:func:`~sqgan_codec.train.sqgan.packet_erasures`: the packet streams'
interleaved order cut into 4–16 packets, each lost at a rate drawn per crop), and the adapted
de-masker learns to give, from what arrived, the features the frozen de-masker gives with
nothing lost (mean squared error over the grid, relative to the features' variance; lost
positions weigh more). Only the de-masker's features are computed: no image decoder runs, so a
step costs about one encoder pass on the CPU.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from ..devices import resolve_device
from ..nets.adapter import ErasureAdapterConfig, adapter_state, attach
from ..nets.blocks import one_hot_map, pixels_to_unit
from .coarse import add_frozen_model_arguments, load_frozen_sqgan
from .common import Budget, JsonlLog, StopFlag, cosine_lr, hardware, resume, save_checkpoint
from .data import CropSampler, load_training_set
from .pseudo import fill_pseudo_labels
from .sqgan import packet_erasures

LOST_WEIGHT = 4.0  # a lost position's error counts this many times an arrived one's


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_frozen_model_arguments(p, "runs/erasure")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--crop", type=int, default=256, help="a multiple of 16")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--rank", type=int, default=ErasureAdapterConfig.rank,
                   help="rank of each 3x3 convolution's delta")


@torch.no_grad()
def coded(sqgan, rgb: torch.Tensor, onehot: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The frozen model's tokens of a batch at random keep ratios, as its decoder gets them:
    (codes, keep mask, one-hot map decoded by G_s)."""
    n = rgb.shape[0]
    keep_s = torch.empty(n).uniform_(0.2, 1.0)
    keep_x = torch.empty(n).uniform_(0.1, 0.9)
    dec_map = one_hot_map(sqgan.ssm(onehot, keep_s)["logits"].argmax(1), sqgan.config.num_classes)
    latents, keep, _ = sqgan.image.encode(rgb, onehot, keep_x)
    codes, _, _ = sqgan.image.quantizer(latents, keep)
    return codes, keep, dec_map


def feature_loss(student: torch.Tensor, teacher: torch.Tensor, lost: torch.Tensor) -> torch.Tensor:
    """Squared error of the features relative to their variance, lost positions weighted."""
    weight = 1 + (LOST_WEIGHT - 1) * lost.to(student.dtype)
    err = ((student - teacher) ** 2).mean(1, keepdim=True) / teacher.var().clamp_min(1e-6)
    return (err * weight).sum() / weight.sum()


def run(args: argparse.Namespace) -> Path:
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    torch.manual_seed(args.seed)
    out = Path(args.out)
    ckpt_path = out / "last.pt"
    sqgan, sqgan_name, vocab = load_frozen_sqgan(args.model, device)
    sqgan = sqgan.float().to(memory_format=torch.contiguous_format)
    from .. import registry

    args.sqgan, args.sqgan_sha256 = sqgan_name, registry.get(sqgan_name).sha256
    keys, images, labels = load_training_set(args.data, args.splits.split(","), args.limit, exclude=out,
                                             vocabulary=vocab)
    labels = fill_pseudo_labels(keys, images, labels, out / "pseudo_labels", device=str(device), vocabulary=vocab)
    import copy

    student = copy.deepcopy(sqgan.image)
    config = ErasureAdapterConfig(rank=args.rank)
    params = attach(student, config)
    opt = torch.optim.Adam(params, lr=args.lr, betas=(0.9, 0.99))
    step, already = 0, 0.0
    if args.resume and ckpt_path.exists():
        step, already = resume(ckpt_path, student, opt, device)
    sampler = CropSampler(images, labels, (args.crop, args.crop), scale=(0.5, 1.1), jitter=0.1, seed=args.seed + step)
    erasure_rng = torch.Generator().manual_seed(args.seed * 7919 + step)
    budget = Budget(args.minutes, already)
    log = JsonlLog(out / "log.jsonl")
    last_save = time.monotonic()

    def checkpoint() -> None:
        save_checkpoint(ckpt_path, {"model": student.state_dict(), "adapter": adapter_state(student),
                                    "opt": opt.state_dict(), "step": step, "elapsed": budget.elapsed,
                                    "config": config.to_dict(), "vocabulary": vocab.to_dict(),
                                    "args": vars(args), "hardware": hardware(device)})

    student.eval()  # no dropout or batch statistics anywhere: eval and train mode compute the same
    flag = StopFlag()
    while not (flag.stop or budget.done() or (args.max_steps is not None and step >= args.max_steps)):
        lr = cosine_lr(args.lr, budget.progress)
        for g in opt.param_groups:
            g["lr"] = lr
        x, y = sampler.sample(args.batch)
        rgb = pixels_to_unit(torch.from_numpy(x).to(device))
        onehot = one_hot_map(torch.from_numpy(y).to(device).long(), vocab.num_classes)
        codes, keep, dec_map = coded(sqgan, rgb, onehot)
        erased = packet_erasures(len(x), tuple(keep.shape[-2:]), 1.0, erasure_rng)
        lost = keep & erased.to(device)
        with torch.no_grad():
            teacher = sqgan.image.demask(codes, keep, dec_map)
        loss = feature_loss(student.demask(codes, keep & ~lost, dec_map), teacher, lost)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        step += 1
        if step % 20 == 0:
            with torch.no_grad():
                frozen = feature_loss(sqgan.image.demask(codes, keep & ~lost, dec_map), teacher, lost).item()
            rec = dict(step=step, loss=loss.item(), loss_shipped=frozen, lost=lost.float().mean().item(),
                       lr=lr, minutes=round(budget.elapsed / 60, 2))
            log.write(**rec)
            print(" ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in rec.items()),
                  flush=True)
        if time.monotonic() - last_save > args.checkpoint_minutes * 60:
            checkpoint()
            last_save = time.monotonic()
    checkpoint()
    print(f"done: {step} steps, checkpoint {ckpt_path}")
    return ckpt_path

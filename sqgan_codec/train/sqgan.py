"""Train SQ-GAN (G_s and G_x together) on a CamVid-layout folder, time-budgeted and resumable.

    python -m sqgan_codec.train joint --data ../shared/data/camvid --minutes 90 --resume

Schedule (by fraction of the time budget): G_s learns the semantic map throughout; G_x learns
on the ground-truth map, and from ``--decoded-from`` on its decoder is conditioned on the map
G_s decodes (the paper's third stage), so it learns to live with G_s's errors.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..classes import NUM_CLASSES, VOID
from ..nets.blocks import one_hot_map
from ..nets.sqgan import SQGAN, SQGANConfig
from .common import Budget, JsonlLog, StopFlag, cosine_lr, pick_device, save_checkpoint
from .data import CropSampler, load_splits
from .losses import PerceptualLoss, relevance_pixel_weights, weighted_l1
from .segmenter import balanced_class_weights, imagenet_trunk_state


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", required=True, help="CamVid-layout folder")
    p.add_argument("--splits", default="train,val")
    p.add_argument("--minutes", type=float, default=60.0, help="total wall-clock budget")
    p.add_argument("--out", default="runs/sqgan")
    p.add_argument("--resume", action="store_true")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--crop", type=int, default=160)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--perceptual", type=float, default=0.05)
    p.add_argument("--semantic", type=float, default=0.1,
                   help="weight of the semantic-consistency loss (frozen bundled segmenter on the output)")
    p.add_argument("--keep-min", type=float, default=0.05)
    p.add_argument("--decoded-from", type=float, default=0.6,
                   help="budget fraction after which G_x decodes from G_s's map")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--limit", type=int, default=None)
    p.add_argument("--max-steps", type=int, default=None)
    p.add_argument("--checkpoint-minutes", type=float, default=5.0)


def _sample_grid(path: Path, target: torch.Tensor, recon: torch.Tensor) -> None:
    rows = torch.cat([target[:4], recon[:4]], dim=2)  # each column: target above recon
    grid = torch.cat(list(rows), dim=2)
    arr = ((grid.clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).cpu().numpy()
    Image.fromarray(arr).save(path)


def frozen_segmenter(device: torch.device) -> torch.nn.Module | None:
    """The shipped segmenter, frozen: the task network whose view of the output is trained for."""
    from .. import registry
    from ..nets.segnet import SegmenterNet

    try:
        entry = registry.get(registry.default_name("segmenter"))
    except Exception:  # no shipped segmenter yet: train without the loss
        return None
    state, _ = registry.load_state(entry)
    net = SegmenterNet(num_classes=NUM_CLASSES)
    net.load_state_dict({k: v.float() for k, v in state.items()})
    return net.to(device).eval().requires_grad_(False)


def run(args: argparse.Namespace) -> Path:
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    device = pick_device(args.device)
    out = Path(args.out)
    ckpt_path = out / "last.pt"

    images, labels = load_splits(args.data, args.splits.split(","), args.limit)
    if labels is None:
        raise SystemExit("no label maps found: make pseudo-labels with `sqgan segment` first")
    sampler = CropSampler(images, labels, (args.crop, args.crop), scale=(0.6, 1.1), jitter=0.1,
                          seed=args.seed)
    ce_weights = (balanced_class_weights(labels) *
                  relevance_pixel_weights(torch.arange(NUM_CLASSES), 1.0)).to(device)

    model = SQGAN(SQGANConfig()).to(device)
    perceptual = PerceptualLoss(imagenet_trunk_state()).to(device)
    segnet = frozen_segmenter(device) if args.semantic > 0 else None
    opt = torch.optim.Adam(model.parameters(), lr=args.lr, betas=(0.9, 0.99))
    step, already = 0, 0.0
    if args.resume and ckpt_path.exists():
        state = torch.load(ckpt_path, map_location=device)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        step, already = state["step"], state["elapsed"]
        sampler.rng = np.random.default_rng(args.seed + step)
        print(f"resumed at step {step}, {already / 60:.1f} min elapsed")
    budget = Budget(args.minutes, already)
    log = JsonlLog(out / "log.jsonl")
    last_save = time.monotonic()

    def checkpoint() -> None:
        save_checkpoint(ckpt_path, {"model": model.state_dict(), "opt": opt.state_dict(), "step": step,
                                    "elapsed": budget.elapsed, "config": model.config.to_dict(),
                                    "args": vars(args)})

    model.train()
    flag = StopFlag()
    while not flag.stop and not budget.done() and (args.max_steps is None or step < args.max_steps):
        progress = budget.progress
        lr = cosine_lr(args.lr, progress)
        for g in opt.param_groups:
            g["lr"] = lr
        x, y = sampler.sample(args.batch)
        rgb = torch.from_numpy(x).to(device).permute(0, 3, 1, 2).float() / 127.5 - 1
        lab = torch.from_numpy(y).to(device).long()
        onehot = one_hot_map(lab, NUM_CLASSES)
        n = rgb.shape[0]

        # G_s: code the semantic map
        s_out = model.ssm(onehot, torch.empty(n).uniform_(args.keep_min, 1.0))
        ssm_loss = F.cross_entropy(s_out["logits"], lab, weight=ce_weights, ignore_index=VOID)

        # G_x: code the image; decoder sees G_s's map in the late stage
        dec_map = None
        if progress >= args.decoded_from:
            dec_map = one_hot_map(s_out["logits"].detach().argmax(1), NUM_CLASSES)
        x_out = model.image(rgb, onehot, torch.empty(n).uniform_(args.keep_min, 1.0), dec_map)
        pix_w = relevance_pixel_weights(lab)
        l1 = weighted_l1(x_out["rgb"], rgb, pix_w)
        perc = perceptual(x_out["rgb"], rgb) if args.perceptual > 0 else torch.zeros((), device=device)
        sem = torch.zeros((), device=device)
        if segnet is not None:
            # task loss of semantic communication: the receiver's segmenter must recover the map
            sem = F.cross_entropy(segnet((x_out["rgb"] + 1) * 127.5), lab, weight=ce_weights,
                                  ignore_index=VOID)
        loss = (ssm_loss + s_out["vq_loss"] + l1 + args.perceptual * perc + x_out["vq_loss"]
                + args.semantic * sem)

        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        if step % 20 == 0:
            used_x = int(x_out["indices"][x_out["keep"][:, 0]].unique().numel())
            used_s = int(s_out["indices"][s_out["keep"][:, 0]].unique().numel())
            rec = dict(step=step, loss=loss.item(), ssm_ce=ssm_loss.item(), l1=l1.item(), perc=perc.item(), sem=sem.item(),
                       vq_x=x_out["vq_loss"].item(), vq_s=s_out["vq_loss"].item(), codes_x=used_x,
                       codes_s=used_s, lr=lr, minutes=round(budget.elapsed / 60, 2))
            log.write(**rec)
            print(" ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in rec.items()),
                  flush=True)
        if time.monotonic() - last_save > args.checkpoint_minutes * 60:
            checkpoint()
            _sample_grid(out / "samples.png", rgb, x_out["rgb"].detach())
            last_save = time.monotonic()
    checkpoint()
    print(f"done: {step} steps, checkpoint {ckpt_path}")
    return ckpt_path

"""Train the coarse decoder (nets/coarse.py) on top of a frozen SQ-GAN model.

    python -m sqgan_codec.train coarse --data ../shared/data/camvid --minutes 90 --threads 1

Each crop is coded as the codec codes it: the thumbnail through coarse.py's WebP coder at a
random scale and quality, G_s and G_x of the shipped model (frozen) at random keep ratios with
the decoder on G_s's map. The coarse decoder learns thumbnail + residual under L1, the
perceptual loss and the semantic-consistency loss. A share of the crops is thumbnail-only (the
streams that send no tokens) and a share is recoloured (channel swap, saturation) before
coding, so that where the generator's colours disagree with the thumbnail, the thumbnail wins:
images unlike CamVid look like that to the generator.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .. import coarse as coarse_coding
from .. import decide
from ..nets.blocks import one_hot_map, pixels_to_unit, smooth_block_map, unit_to_pixels
from ..nets.coarse import CoarseDecoder, CoarseDecoderConfig
from ..devices import resolve_device
from .common import (Budget, JsonlLog, StopFlag, autocast, cosine_lr, hardware, resume,
                     save_checkpoint)
from .data import BatchPrefetcher, CropSampler, ObjectBank, load_training_set
from .losses import (PerceptualLoss, luma_gradient_only, object_colour_l1, relevance_pixel_weights,
                     weighted_l1)
from .pseudo import fill_pseudo_labels
from .segmenter import balanced_class_weights, imagenet_trunk_state
from .sqgan import PASTE_RELEVANCE, _sample_grid, add_speed_arguments, frozen_segmenter, paste_classes

MAX_TRAIN_SCALE = 12  # coarser thumbnails are rare picks at this codec's rates


def add_frozen_model_arguments(p: argparse.ArgumentParser, out: str) -> None:
    """The options every run on a frozen SQ-GAN model takes (the coarse decoder, the erasure
    adapter): data, model, budget, output, and where and how it runs."""
    p.add_argument("--data", required=True, help="CamVid-layout folder or any folder of images")
    p.add_argument("--splits", default="train,val")
    p.add_argument("--model", default=None, help="the frozen SQ-GAN model (default: the registry's)")
    p.add_argument("--minutes", type=float, default=60.0)
    p.add_argument("--out", default=out)
    p.add_argument("--resume", action="store_true", help="continue from <out>/last.pt")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--limit", type=int, default=None)
    p.add_argument("--max-steps", type=int, default=None)
    p.add_argument("--checkpoint-minutes", type=float, default=5.0)


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_frozen_model_arguments(p, "runs/coarse")
    p.add_argument("--init-from", default=None, metavar="CHECKPOINT",
                   help="start from another coarse run's last.pt or shipped .safetensors weights (a new budget and schedule)")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--crop", type=int, default=256, help="a multiple of 16")
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--perceptual", type=float, default=0.1)
    p.add_argument("--semantic", type=float, default=0.05)
    p.add_argument("--coarse-only", type=float, default=0.25, help="share of thumbnail-only crops")
    p.add_argument("--recolour", type=float, default=0.3, help="share of recoloured crops")
    p.add_argument("--scaled-maps", type=float, default=0.0,
                   help="share of crops decoded on the exact map at a scale the encoder sends (1/16 … 1/4, chunk M) instead of G_s's")
    p.add_argument("--detail-maps", type=float, default=0.0,
                   help="share of crops decoded on such a map refined at 1/2 over some cells (chunk F, "
                        "as a priority sends it), drawn as decoded")
    p.add_argument("--copy-paste", type=float, default=0.0,
                   help="chance per crop of pasting 1-3 small objects of the most relevant classes "
                        f"(relevance >= {PASTE_RELEVANCE}) cut from other training images, before the "
                        "crop is coded: more of what priorities ask the decoder to draw")
    p.add_argument("--object-colour", type=float, default=0.0,
                   help="weight of an L1 between local mean colours (4x4 cells) of the decoded and the "
                        f"original crop inside the most relevant classes' pixels (relevance >= "
                        f"{PASTE_RELEVANCE}): keeps prioritised objects in their own colours under a "
                        "heavy --semantic")
    p.add_argument("--semantic-luma", action="store_true",
                   help="the semantic loss reaches the decode's brightness only (its chroma is detached): "
                        "the segmenter's gradient may shape and sharpen objects but not paint them in "
                        "their class's typical colours")
    p.add_argument("--max-quality", type=int, default=85)
    p.add_argument("--thumbnail-format", choices=sorted(coarse_coding.FORMATS.values()), default="av1",
                   help="the thumbnail codec the decoder learns to render (recorded in the exported "
                        "weights: the encoder sends this decoder thumbnails in that format)")
    add_speed_arguments(p)


def recolour(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A random channel order and saturation: colours CamVid never shows, same layout."""
    out = img[..., rng.permutation(3)].astype(np.float32)
    grey = out.mean(-1, keepdims=True)
    out = grey + (out - grey) * rng.uniform(0.6, 1.8)
    return np.clip(out, 0, 255).astype(np.uint8)


def coded_thumbnail(img: np.ndarray, rng: np.random.Generator, max_quality: int, fmt: str = "av1") -> np.ndarray:
    """``img`` through the codec's thumbnail coder (``fmt``) at a random scale and quality, upsampled."""
    code = coarse_coding.FORMAT_IDS[fmt]
    scale = int(rng.choice([s for s in coarse_coding.SCALES_OF[code] if s <= MAX_TRAIN_SCALE]))
    thumb = coarse_coding.Thumbnail(img, scale, code)
    # AV1: the preset the encoder sends (its artefacts, not the quick search's)
    payload = thumb.encode(int(rng.integers(0, max_quality + 1)),
                           speed=coarse_coding.AV1_SPEED if code == coarse_coding.FORMAT_AV1 else None)
    small = coarse_coding.decode_small(payload, img.shape[1], img.shape[0])
    return coarse_coding.upsample(small, img.shape[1], img.shape[0])


def coded_batch(sampler: CropSampler, rng: np.random.Generator, args: argparse.Namespace
                ) -> tuple[np.ndarray, ...]:
    """One batch as the codec would code it (CPU work: crops, recolouring, WebP thumbnails):
    crops, labels, which were recoloured, upsampled coded thumbnails, which are thumbnail-only."""
    x, y = sampler.sample(args.batch)
    recoloured = rng.random(len(x)) < args.recolour
    x = np.stack([recolour(im, rng) if r else im for im, r in zip(x, recoloured)])
    thumbs = np.stack([coded_thumbnail(im, rng, args.max_quality, args.thumbnail_format) for im in x])
    return x, y, recoloured, thumbs, rng.random(len(x)) < args.coarse_only


# the reduced scales the encoder sends (decide.BALANCED_MAP_SCALES) and one finer, for maps refined
# over a share of their cells (chunk F)
TRAINED_MAP_SCALES = (16, 12, 8, 6, 4)


@torch.no_grad()
def scaled_map(onehot: torch.Tensor, factor: int) -> torch.Tensor:
    """The one-hot map as the decoder renders chunk M: each factor×factor block's majority class
    (the lowest id on ties, as ssm_lossless.reduce_map), smoothed back to full size as the codec
    does (nets.blocks.smooth_block_map)."""
    h, w = onehot.shape[-2:]
    small = F.avg_pool2d(onehot.float(), factor, ceil_mode=True).argmax(1)
    return one_hot_map(smooth_block_map(small, factor, h, w, onehot.shape[1]), onehot.shape[1]).to(onehot.dtype)


# chunk F as a prioritised stream sends it: the map at 1/16 … 1/8 refined at 1/2 over its best cells,
# ranked for a class prioritised =4
TRAINED_DETAIL_SCALES = decide.PRIORITY_DETAIL_BASES
TRAINED_DETAIL_SCALE = decide.DETAIL_SCALE
TRAINED_DETAIL_WEIGHT = 4.0 ** decide.DETAIL_PRIORITY_EXPONENT


@torch.no_grad()
def detail_map(onehot: torch.Tensor, factor: int, rng: np.random.Generator) -> torch.Tensor:
    """The one-hot map as the decoder renders chunk M refined by chunk F (drawn as decoded, not
    smoothed): per crop, the cells :func:`ssm_lossless.detail_order` ranks first refined at
    1/2, a random share of those worth refining, ranked for one class present (weighted as a
    priority of 4) or, in a third of the crops, for none."""
    from ..ssm_lossless import detail_order, enlarge_map, reduce_map, refine_cells

    classes = onehot.shape[1]
    h, w = onehot.shape[-2:]
    labels = onehot.argmax(1).cpu().numpy()
    out = []
    for lab in labels:
        weights = None
        present = np.flatnonzero(np.bincount(lab.ravel(), minlength=classes))
        if rng.random() > 1 / 3 and len(present):
            weights = np.ones(classes)
            weights[rng.choice(present)] = TRAINED_DETAIL_WEIGHT
        fine, order = detail_order(lab, factor, TRAINED_DETAIL_SCALE, classes, weights)
        small = reduce_map(lab, factor, classes)
        cells = np.zeros(small.shape, bool)
        cells.flat[order[:int(np.ceil(rng.uniform(0.1, 1.0) * len(order)))]] = True
        refined = refine_cells(small, fine, factor, TRAINED_DETAIL_SCALE, cells)
        out.append(enlarge_map(refined, TRAINED_DETAIL_SCALE, h, w))
    return one_hot_map(torch.from_numpy(np.stack(out).astype(np.int64)), classes).to(onehot)


def frozen_generator(sqgan, rgb: torch.Tensor, onehot: torch.Tensor, scaled: float = 0.0,
                     detail: float = 0.0, rng: np.random.Generator | None = None
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """The frozen model's decode of a batch at random keep ratios: (image, the decoder's one-hot
    map). The map is G_s's, or for a ``scaled`` share of the crops the exact map at one of the
    scales the encoder sends (:data:`TRAINED_MAP_SCALES`)
    (chunk M; image tokens then at random keep ratios, none in half of them, as the encoder
    sends them); for a ``detail`` share, such a map refined over some of its cells (chunk F,
    :func:`detail_map`)."""
    n = rgb.shape[0]
    keep_s = torch.empty(n).uniform_(0.1, 1.0)
    keep_x = torch.empty(n).uniform_(0.0, 1.0) * (torch.rand(n) > 0.2)
    dec_map = one_hot_map(sqgan.ssm(onehot, keep_s)["logits"].argmax(1), sqgan.config.num_classes)
    pick = torch.rand(n) < scaled
    if pick.any():
        factor = TRAINED_MAP_SCALES[int(torch.randint(len(TRAINED_MAP_SCALES), ()))]
        dec_map = torch.where(pick.to(dec_map.device)[:, None, None, None], scaled_map(onehot, factor).to(dec_map),
                              dec_map)
        keep_x = torch.where(pick & (torch.rand(n) < 0.5), torch.zeros(n), keep_x)
    pick = (torch.rand(n) < detail) & ~pick
    if pick.any():
        factor = TRAINED_DETAIL_SCALES[int(torch.randint(len(TRAINED_DETAIL_SCALES), ()))]
        refined = detail_map(onehot[pick.to(onehot.device)], factor, rng or np.random.default_rng())
        dec_map = dec_map.clone()
        dec_map[pick.to(dec_map.device)] = refined.to(dec_map)
        keep_x = torch.where(pick & (torch.rand(n) < 0.5), torch.zeros(n), keep_x)
    return sqgan.image(rgb, onehot, keep_x, dec_map)["rgb"].clamp(-1, 1), dec_map


def load_frozen_sqgan(name: str | None, device: torch.device):
    """The frozen SQ-GAN network, its registry name and its vocabulary (the decoder's classes)."""
    from .. import registry
    from ..codec import Codec

    codec = Codec(name or registry.default_name("sqgan"), device=device, segmenter="labels")
    return codec.net.requires_grad_(False), codec.entry.name, codec.vocabulary


def run(args: argparse.Namespace) -> Path:
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    out = Path(args.out)
    ckpt_path = out / "last.pt"
    sqgan, sqgan_name, vocab = load_frozen_sqgan(args.model, device)  # its classes are the decoder's
    classes, relevance = vocab.num_classes, vocab.relevance
    keys, images, labels = load_training_set(args.data, args.splits.split(","), args.limit, exclude=out,
                                             vocabulary=vocab)
    labels = fill_pseudo_labels(keys, images, labels, out / "pseudo_labels", device=str(device), vocabulary=vocab)
    ce_weights = (balanced_class_weights(labels, classes) *
                  relevance_pixel_weights(torch.arange(classes), 1.0, relevance)).to(device)
    net = CoarseDecoder(CoarseDecoderConfig(num_classes=classes)).to(device)
    opt = torch.optim.Adam(net.parameters(), lr=args.lr, betas=(0.9, 0.99))
    perceptual = PerceptualLoss(imagenet_trunk_state()).to(device) if args.perceptual > 0 else None
    segnet = frozen_segmenter(device, vocab) if args.semantic > 0 else None
    colour_classes = torch.tensor(paste_classes(vocab), device=device)
    step, already = 0, 0.0
    if args.resume and ckpt_path.exists():
        step, already = resume(ckpt_path, net, opt, device)
        rng = np.random.default_rng(args.seed + step)
    elif args.init_from and args.init_from.endswith(".safetensors"):  # shipped weights
        from safetensors import safe_open

        with safe_open(args.init_from, framework="pt") as f:
            net.load_state_dict({k: f.get_tensor(k).float() for k in f.keys()})
            prov = json.loads((f.metadata() or {}).get("provenance", "{}") or "{}")
        args.previous_steps = int(prov.get("steps") or 0) + int((prov.get("args") or {}).get("previous_steps") or 0)
        print(f"initialised from {args.init_from} ({args.previous_steps} steps before)")
    elif args.init_from:
        state = torch.load(args.init_from, map_location=device, weights_only=True)
        net.load_state_dict(state["model"])
        args.previous_steps = int(state["step"]) + int((state.get("args") or {}).get("previous_steps", 0))
        print(f"initialised from {args.init_from} ({args.previous_steps} steps before)")
    args.sqgan = sqgan_name
    bank = ObjectBank(images, labels, paste_classes(vocab)) if args.copy_paste > 0 else None
    samplers = [CropSampler(images, labels, (args.crop, args.crop), scale=(0.5, 1.1), jitter=0.1,
                            seed=args.seed + step if t == 0 else [args.seed + step, t],
                            bank=bank, paste=args.copy_paste)
                for t in range(max(1, args.loader_threads))]
    if args.loader_threads > 0:
        rngs = [np.random.default_rng([args.seed + step, t, 1]) for t in range(len(samplers))]
        prefetch = BatchPrefetcher([lambda s=s, r=r: coded_batch(s, r, args) for s, r in zip(samplers, rngs)])
        next_batch = prefetch.get
    else:
        prefetch, next_batch = None, lambda: coded_batch(samplers[0], rng, args)
    if args.channels_last:
        net.to(memory_format=torch.channels_last)
    layout = torch.channels_last if args.channels_last else torch.contiguous_format
    budget = Budget(args.minutes, already)
    log = JsonlLog(out / "log.jsonl")
    last_save = time.monotonic()

    def checkpoint() -> None:
        save_checkpoint(ckpt_path, {"model": net.state_dict(), "opt": opt.state_dict(), "step": step,
                                    "elapsed": budget.elapsed, "config": net.config.to_dict(),
                                    "vocabulary": vocab.to_dict(), "args": vars(args),
                                    "hardware": hardware(device)})

    net.train()
    flag = StopFlag()
    while not (flag.stop or budget.done() or (args.max_steps is not None and step >= args.max_steps)):
        lr = cosine_lr(args.lr, budget.progress)
        for g in opt.param_groups:
            g["lr"] = lr
        x, y, recoloured, thumbs, only = next_batch()
        rgb = pixels_to_unit(torch.from_numpy(x).to(device))
        coarse = torch.from_numpy(thumbs).to(device).permute(0, 3, 1, 2) / 127.5 - 1
        rgb, coarse = rgb.contiguous(memory_format=layout), coarse.contiguous(memory_format=layout)
        lab = torch.from_numpy(y).to(device).long()
        onehot = one_hot_map(lab, classes)
        with autocast(device, args.amp):
            generated, dec_map = frozen_generator(sqgan, rgb, onehot, args.scaled_maps, args.detail_maps, rng)
            only = torch.from_numpy(only).to(device)[:, None, None, None]
            generated = torch.where(only, coarse, generated.to(coarse.dtype))
            dec_map = dec_map * (~only)
            recon = net(coarse, generated, dec_map)
            l1 = weighted_l1(recon, rgb, relevance_pixel_weights(lab, relevance=relevance))
            zero = torch.zeros((), device=device)
            perc = perceptual(recon, rgb) if perceptual is not None else zero
            sem = zero
            keep_sem = torch.from_numpy(~recoloured).to(device)
            seen = luma_gradient_only(recon) if args.semantic_luma else recon
            if segnet is not None and keep_sem.any():
                if recon.is_cuda:  # the same loss on the whole batch, recoloured crops' labels void:
                    # one shape throughout, so cuDNN's autotuner runs once, not per number of crops kept
                    sem = F.cross_entropy(segnet(unit_to_pixels(seen)),
                                          torch.where(keep_sem[:, None, None], lab, vocab.void),
                                          weight=ce_weights, ignore_index=vocab.void)
                else:
                    sem = F.cross_entropy(segnet(unit_to_pixels(seen[keep_sem])), lab[keep_sem],
                                          weight=ce_weights, ignore_index=vocab.void)
            colour = (object_colour_l1(recon, rgb, torch.isin(lab, colour_classes))
                      if args.object_colour > 0 else zero)
            loss = l1 + args.perceptual * perc + args.semantic * sem + args.object_colour * colour
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
        step += 1
        if step % 20 == 0:
            with torch.no_grad():
                base_l1 = weighted_l1(coarse, rgb, relevance_pixel_weights(lab, relevance=relevance)).item()
            rec = dict(step=step, loss=loss.item(), l1=l1.item(), l1_thumbnail=base_l1, perc=perc.item(),
                       sem=sem.item(), colour=colour.item(), lr=lr, minutes=round(budget.elapsed / 60, 2))
            log.write(**rec)
            print(" ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in rec.items()),
                  flush=True)
        if time.monotonic() - last_save > args.checkpoint_minutes * 60:
            checkpoint()
            _sample_grid(out / "samples.png", torch.cat([rgb, coarse]), torch.cat([recon.detach(), generated]))
            last_save = time.monotonic()
    if prefetch is not None:
        prefetch.close()
    checkpoint()
    print(f"done: {step} steps, checkpoint {ckpt_path}")
    return ckpt_path

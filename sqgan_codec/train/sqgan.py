"""Train SQ-GAN on a folder of images, time-budgeted and resumable, in the paper's three stages.

    python -m sqgan_codec.train ssm   --data ../shared/data/camvid --minutes 30 --resume
    python -m sqgan_codec.train image --data ../shared/data/camvid --minutes 45 --resume
    python -m sqgan_codec.train joint --data ../shared/data/camvid --minutes 90 --resume

* ``ssm``: only G_s (``model.ssm``) learns to code the semantic map.
* ``image``: only G_x (``model.image``) learns to code the image, encoder and decoder both given
  the ground-truth map.
* ``joint``: both together; from ``--decoded-from`` (a fraction of the time budget) G_x's decoder
  is conditioned on the map G_s decodes (the paper's third stage), so it learns to live with
  G_s's errors.

Every stage reads and writes the same checkpoint (``<out>/last.pt``: model, opt, step, elapsed,
config, args), always with the whole model's state. ``--resume`` continues the checkpoint's own
stage where it stopped; resuming a checkpoint written by another stage starts this stage from its
weights (``step``/``elapsed`` stay cumulative, ``--minutes``/``--max-steps`` count from the
stage's start, recorded in ``args``). Folders without label maps are pseudo-labelled by the
bundled segmenter (see :mod:`.pseudo`); under ``torchrun`` the job is data-parallel (see
:mod:`.ddp`), ``--batch`` being the global batch.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from ..nets.blocks import one_hot_map, pixels_to_unit, unit_to_pixels
from ..vocabulary import Vocabulary
from ..nets.sqgan import SQGAN, SQGANConfig
from . import ddp
from ..devices import resolve_device
from .common import (Budget, JsonlLog, StopFlag, autocast, cosine_lr, hardware,
                     save_checkpoint)
from .data import BatchPrefetcher, CropSampler, ObjectBank, load_training_set
from .gan import PatchDiscriminator, adaptive_weight, discriminator_loss, generator_loss, patch_relevance
from .losses import PerceptualLoss, relevance_pixel_weights, weighted_l1
from .pseudo import fill_pseudo_labels
from .segmenter import add_classes_argument, balanced_class_weights, imagenet_trunk_state, vocabulary_arg

STAGES = ("ssm", "image", "joint")
STAGE_HELP = {
    "ssm": "train G_s only: the semantic-map codec (SQ-GAN stage 1)",
    "image": "train G_x only, on ground-truth maps (SQ-GAN stage 2)",
    "joint": "train G_s and G_x; G_x decodes from G_s's map late in the budget (stage 3)",
}
STAGE_PREFIX = {"ssm": ("ssm.",), "image": ("image.",), "joint": ("ssm.", "image.")}
PASTE_RELEVANCE = 0.85  # classes at least this relevant are copy-pasted (CamVid: signs, poles, people, cyclists)


def paste_classes(vocab: Vocabulary) -> tuple[int, ...]:
    """The small, task-critical classes copy-paste augmentation adds more of: the vocabulary's
    most relevant ones."""
    return tuple(i for i, r in enumerate(vocab.relevance) if r >= PASTE_RELEVANCE)


def add_arguments(p: argparse.ArgumentParser, stage: str = "joint") -> None:
    p.add_argument("--data", required=True,
                   help="CamVid-layout folder ({split}/ + {split}annot/), or any folder of images "
                        "(pseudo-labelled by the bundled segmenter)")
    p.add_argument("--splits", default="train,val", help="split folders of a CamVid-layout --data")
    add_classes_argument(p)
    p.add_argument("--minutes", type=float, default=60.0, help="wall-clock budget of this stage")
    p.add_argument("--out", default="runs/sqgan")
    p.add_argument("--resume", action="store_true", help="continue from <out>/last.pt")
    p.add_argument("--init-from", default=None, metavar="NAME|FILE",
                   help="start from shipped weights (a registry name such as sqgan-camvid11, or a "
                        ".safetensors file) or from another run's last.pt (weights and optimizer "
                        "moments), when no checkpoint is resumed: a new budget and schedule")
    p.add_argument("--batch", type=int, default=8,
                   help="global batch: under torchrun split evenly across the processes")
    p.add_argument("--crop", type=int, default=160)
    p.add_argument("--lr", type=float, default=1e-3)
    if stage in ("image", "joint"):
        p.add_argument("--perceptual", type=float, default=0.05)
        p.add_argument("--semantic", type=float, default=0.1,
                       help="weight of the semantic-consistency loss (frozen bundled segmenter on the output)")
        p.add_argument("--gan", type=float, default=0.1,
                       help="weight of the hinge GAN loss (relative to the reconstruction loss's "
                            "gradient at the last layer, see train/gan.py); 0: no discriminator")
        p.add_argument("--gan-start", type=float, default=0.5,
                       help="budget fraction after which the adversarial loss is on")
        p.add_argument("--gan-lr", type=float, default=2e-4, help="discriminator learning rate")
    p.add_argument("--copy-paste", type=float, default=0.3,
                   help="chance per crop of pasting 1-3 small objects of the most relevant classes "
                        f"(relevance >= {PASTE_RELEVANCE}: CamVid's signs, poles, people, cyclists) cut "
                        "from other training images")
    p.add_argument("--keep-min", type=float, default=0.05)
    p.add_argument("--erasure", type=float, default=0.0, metavar="SHARE",
                   help="share of samples decoded with lost-packet patterns (packet streams' de-masking)")
    if stage == "joint":
        p.add_argument("--decoded-from", type=float, default=0.6,
                       help="budget fraction after which G_x decodes from G_s's map")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--limit", type=int, default=None)
    p.add_argument("--max-steps", type=int, default=None, help="stop after N steps of this stage")
    p.add_argument("--checkpoint-minutes", type=float, default=5.0)
    add_speed_arguments(p)


def add_speed_arguments(p: argparse.ArgumentParser) -> None:
    """Accelerator options shared by the training commands (no effect on the CPU defaults)."""
    p.add_argument("--amp", choices=("off", "bf16"), default="off",
                   help="bf16 autocast for the forward pass and losses (CUDA; quantiser distances "
                        "stay fp32)")
    p.add_argument("--channels-last", action="store_true", help="NHWC memory layout (tensor cores)")
    p.add_argument("--loader-threads", type=int, default=0,
                   help="threads that crop and augment batches ahead of the step (0: in the loop, "
                        "reproducible from --seed)")


def _sample_grid(path: Path, target: torch.Tensor, recon: torch.Tensor) -> None:
    rows = torch.cat([target[:4], recon[:4]], dim=2)  # each column: target above recon
    grid = torch.cat(list(rows), dim=2)
    arr = ((grid.clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).cpu().numpy()
    Image.fromarray(arr).save(path)


def _colourise(ids: torch.Tensor, vocab: Vocabulary) -> torch.Tensor:
    """N×H×W class ids → N×3×H×W in [-1, 1] (the vocabulary's colours, void black)."""
    palette = torch.tensor(list(vocab.colours) + [(0, 0, 0)], dtype=torch.float32, device=ids.device)
    return palette[ids.long().clamp(max=vocab.num_classes)].permute(0, 3, 1, 2) / 127.5 - 1


def frozen_segmenter(device: torch.device, vocab: Vocabulary, log=print) -> torch.nn.Module | None:
    """The shipped segmenter, frozen: the task network whose view of the output is trained for
    (None, with a note, when there is none for these classes)."""
    from .. import registry
    from ..nets.segnet import SegmenterNet

    try:
        entry = registry.get(registry.default_name("segmenter"))
    except Exception:  # no shipped segmenter yet: train without the loss
        return None
    state, meta = registry.load_state(entry)
    if registry.vocabulary_of(entry, meta).digest != vocab.digest:
        log(f"note: no semantic loss: the shipped segmenter {entry.name} predicts other classes than {vocab.name}")
        return None
    net = SegmenterNet(num_classes=vocab.num_classes)
    net.load_state_dict({k: v.float() for k, v in state.items()})
    return net.to(device).eval().requires_grad_(False)


def check_vocabulary(state: dict, vocab: Vocabulary, source) -> None:
    """SystemExit unless a checkpoint was trained on ``vocab``'s classes (checkpoints from
    before vocabularies were recorded: camvid11)."""
    from ..vocabulary import load, parse

    saved = parse(state["vocabulary"]) if state.get("vocabulary") else load("camvid11")
    if saved.digest != vocab.digest:
        raise SystemExit(f"{source} was trained on the classes of {saved.name}, not {vocab.name} (--classes)")


def trainable_names(model: nn.Module, stage: str) -> list[str]:
    """Names of the parameters a stage trains, in ``named_parameters`` order (= optimizer order)."""
    return [n for n, _ in model.named_parameters() if n.startswith(STAGE_PREFIX[stage])]


def load_optimizer_state(opt: torch.optim.Optimizer, saved: dict, saved_names: list[str],
                         names: list[str], params: list[torch.Tensor], log=print) -> int:
    """Load a checkpoint's optimizer state into ``opt`` parameter by parameter (by name), so a
    stage can resume a checkpoint written by a stage that trained another parameter set.
    Returns how many parameters got their state back (0: the state was not used)."""
    groups = saved.get("param_groups", [])
    if len(groups) != 1 or len(groups[0]["params"]) != len(saved_names):
        log(f"note: optimizer state not loaded ({sum(len(g['params']) for g in groups)} saved "
            f"parameters in {len(groups)} groups do not match the {len(saved_names)} expected)")
        return 0
    by_name = {n: groups[0]["params"][i] for i, n in enumerate(saved_names)}
    state: dict[int, dict] = {}
    for i, (n, p) in enumerate(zip(names, params)):
        s = saved["state"].get(by_name.get(n, -1))
        if s is not None and all(not torch.is_tensor(v) or v.dim() == 0 or v.shape == p.shape
                                 for v in s.values()):
            state[i] = s
    group = {k: v for k, v in groups[0].items() if k != "params"}
    opt.load_state_dict({"state": state, "param_groups": [{**group, "params": list(range(len(params)))}]})
    if len(state) < len(params):
        log(f"note: optimizer state loaded for {len(state)} of {len(params)} parameters "
            "(the others start fresh)")
    return len(state)


class StageForward(nn.Module):
    """The forward pass a stage trains (what DDP wraps): G_s and/or G_x on one batch."""

    def __init__(self, model: SQGAN, stage: str):
        super().__init__()
        self.model, self.stage = model, stage
        self.num_classes = model.config.num_classes

    def forward(self, rgb: torch.Tensor, onehot: torch.Tensor, keep_s: torch.Tensor,
                keep_x: torch.Tensor, decoded: bool = False,
                erased: torch.Tensor | None = None) -> dict[str, dict[str, torch.Tensor]]:
        out = {}
        if self.stage in ("ssm", "joint"):
            out["s"] = self.model.ssm(onehot, keep_s, erased)
        if self.stage in ("image", "joint"):
            dec_map = None
            if decoded and "s" in out:
                dec_map = one_hot_map(out["s"]["logits"].detach().argmax(1), self.num_classes)
            out["x"] = self.model.image(rgb, onehot, keep_x, dec_map, erased)
        return out


def packet_erasures(n: int, grid: tuple[int, int], share: float, generator: torch.Generator) -> torch.Tensor | None:
    """Lost-packet patterns for ``share`` of a batch of ``n`` (N×1×h×w bool, None when none):
    the latent positions in the packet streams' interleaved order cut into 4–16 packets, each
    lost with a rate drawn from [0, 0.5] per image, so the de-masker learns to fill what a
    channel loses as well as what SAMM drops (sqgan_codec.packets)."""
    if share <= 0:
        return None
    from ..packets import interleave

    h, w = grid
    order = torch.from_numpy(interleave(h, w))
    out = torch.zeros(n, h * w, dtype=torch.bool)
    for i in range(n):
        if torch.rand((), generator=generator) >= share:
            continue
        packets = int(torch.randint(4, 17, (), generator=generator))
        rate = float(torch.rand((), generator=generator)) * 0.5
        lost = torch.rand(packets, generator=generator) < rate
        bounds = torch.linspace(0, h * w, packets + 1).round().long()
        for j in torch.nonzero(lost).flatten().tolist():
            out[i, order[bounds[j]:bounds[j + 1]]] = True
    return out.view(n, 1, h, w)


def init_from_shipped(model: SQGAN, source: str) -> tuple[int, float]:
    """Load shipped fp16 inference weights into ``model`` for further training.

    The export drops the quantisers' EMA state; it is rebuilt from the codebooks (each code its
    own running mean with count 1) and marked initialised, so the first step does not replace
    the learned codebook by data samples. Returns (steps, seconds) trained before, from the
    file's provenance.
    """
    from pathlib import Path as _Path

    from safetensors import safe_open

    from .. import registry
    from ..nets.quantizer import VectorQuantizer

    path = _Path(source)
    if not path.suffix == ".safetensors":
        entry = registry.get(source)
        registry.load_state(entry)  # verifies the hash
        path = registry.weights_dir() / entry.file
    with safe_open(str(path), framework="pt") as f:
        state = {k: f.get_tensor(k).float() for k in f.keys() if not k.startswith("entropy.")}
        meta = f.metadata() or {}
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if ".ema_" not in k]
    if missing or unexpected:
        raise SystemExit(f"{path} does not fit the SQ-GAN network (missing {missing[:3]}, "
                         f"unexpected {unexpected[:3]})")
    for module in model.modules():
        if isinstance(module, VectorQuantizer):
            module.ema_sum.copy_(module.codebook)
            module.ema_count.fill_(1.0)
            module.ema_usage.fill_(1.0)
            module.ema_initialised.fill_(True)
    prov = json.loads(meta.get("provenance", "{}") or "{}")
    return int(prov.get("steps", 0)), 60.0 * float(prov.get("train_minutes", 0.0))


def run(args: argparse.Namespace, stage: str | None = None) -> Path:
    stage = stage or getattr(args, "command", None) or "joint"
    if stage not in STAGES:
        raise ValueError(f"unknown SQ-GAN stage {stage!r}")
    args.command = stage
    if args.threads:
        torch.set_num_threads(args.threads)
    info, device = ddp.setup(resolve_device(args.device))
    try:
        return _train(args, stage, info, device)
    finally:
        ddp.teardown(info)


def _train(args: argparse.Namespace, stage: str, info: ddp.DistInfo, device: torch.device) -> Path:
    say = print if info.is_main else (lambda *a, **k: None)
    if args.batch % info.world:
        raise SystemExit(f"--batch {args.batch} (the global batch) must be a multiple of the "
                         f"{info.world} processes")
    batch = args.batch // info.world
    torch.manual_seed(args.seed + info.rank)
    erasure_rng = torch.Generator().manual_seed(args.seed * 7919 + info.rank)  # its own stream: other draws unchanged
    out = Path(args.out)
    ckpt_path = out / "last.pt"
    trains_x = stage in ("image", "joint")
    perceptual_w = getattr(args, "perceptual", 0.0) if trains_x else 0.0
    semantic_w = getattr(args, "semantic", 0.0) if trains_x else 0.0
    decoded_from = getattr(args, "decoded_from", 2.0) if stage == "joint" else 2.0

    vocab = vocabulary_arg(args)
    classes, void, relevance = vocab.num_classes, vocab.void, vocab.relevance
    keys, images, labels = load_training_set(args.data, args.splits.split(","), args.limit, exclude=out,
                                             vocabulary=vocab)
    labels = fill_pseudo_labels(keys, images, labels, out / "pseudo_labels", device=str(device),
                                rank=info.rank, world=info.world, barrier=info.barrier, log=say,
                                vocabulary=vocab)
    ce_weights = (balanced_class_weights(labels, classes) *
                  relevance_pixel_weights(torch.arange(classes), 1.0, relevance)).to(device)

    model = SQGAN(SQGANConfig(num_classes=classes)).to(device)
    names = trainable_names(model, stage)
    for n, p in model.named_parameters():
        p.requires_grad_(n in names)
    params = [p for p in model.parameters() if p.requires_grad]
    perceptual = PerceptualLoss(imagenet_trunk_state()).to(device) if perceptual_w > 0 else None
    segnet = frozen_segmenter(device, vocab, say) if semantic_w > 0 else None
    opt = torch.optim.Adam(params, lr=args.lr, betas=(0.9, 0.99))
    gan_w = getattr(args, "gan", 0.0) if trains_x else 0.0
    disc = PatchDiscriminator(classes).to(device) if gan_w > 0 else None
    disc_opt = (torch.optim.Adam(disc.parameters(), lr=args.gan_lr, betas=(0.5, 0.9))
                if disc is not None else None)

    step, stage_step0, stage_elapsed0, already = 0, 0, 0.0, 0.0
    previous: list[dict] = []
    gan_state = None
    init_from = getattr(args, "init_from", None)
    resuming = args.resume and ckpt_path.exists()
    source = ckpt_path if resuming else (Path(init_from) if init_from and init_from.endswith(".pt") else None)
    if source is not None:  # a checkpoint: this stage's own (resume), or weights to start from
        state = torch.load(source, map_location=device, weights_only=True)
        check_vocabulary(state, vocab, source)
        saved_args = state.get("args") or {}
        saved_stage = saved_args.get("command", "joint")
        model.load_state_dict(state["model"])
        step, elapsed = int(state["step"]), float(state["elapsed"])
        previous = list(saved_args.get("previous_stages", []))
        gan_state = state.get("gan")
        if resuming and saved_stage == stage:
            stage_step0 = int(saved_args.get("stage_start_step", 0))
            stage_elapsed0 = float(saved_args.get("stage_start_elapsed", 0.0))
            already = elapsed - stage_elapsed0
            say(f"resumed {stage} at step {step}, {already / 60:.1f} min elapsed")
        else:  # a new stage, budget and schedule from the checkpoint's weights
            saved0 = int(saved_args.get("stage_start_step", 0))
            saved_e0 = float(saved_args.get("stage_start_elapsed", 0.0))
            previous.append({"stage": saved_stage, "steps": step - saved0,
                             "minutes": round((elapsed - saved_e0) / 60, 2)})
            stage_step0, stage_elapsed0 = step, elapsed
            if resuming:
                say(f"starting stage {stage} from the {saved_stage} checkpoint at step {step}")
            else:
                say(f"initialised from checkpoint {source} (step {step}); new budget and schedule")
        if "opt" not in state:
            say("note: the checkpoint has no optimizer state (an exported one): moments start fresh")
        elif saved_stage in STAGES:
            load_optimizer_state(opt, state["opt"], trainable_names(model, saved_stage), names, params,
                                 log=say)
        else:
            say(f"note: optimizer state not loaded (checkpoint of unknown stage {saved_stage!r})")
    elif init_from:
        step, already = init_from_shipped(model, init_from)
        stage_elapsed0, stage_step0 = already, step
        already = 0.0
        say(f"initialised from shipped weights {args.init_from} (trained {step} steps before)")
    if disc is not None and gan_state is not None:
        disc.load_state_dict({k: v.float() for k, v in gan_state["disc"].items()})
        if "opt" in gan_state:
            disc_opt.load_state_dict(gan_state["opt"])
        say("discriminator state resumed")
    args.stage_start_step, args.stage_start_elapsed = stage_step0, stage_elapsed0
    args.previous_stages = previous
    args.world_size = info.world

    rank_seed = args.seed + step if info.rank == 0 else [args.seed + step, info.rank]
    bank = ObjectBank(images, labels, paste_classes(vocab)) if args.copy_paste > 0 else None
    samplers = [CropSampler(images, labels, (args.crop, args.crop), scale=(0.6, 1.1), jitter=0.1,
                            seed=rank_seed if t == 0 else [args.seed + step, info.rank, t],
                            bank=bank, paste=args.copy_paste)
                for t in range(max(1, args.loader_threads))]
    prefetch = (BatchPrefetcher([lambda s=s: s.sample(batch) for s in samplers])
                if args.loader_threads > 0 else None)
    next_batch = prefetch.get if prefetch is not None else (lambda: samplers[0].sample(batch))
    if args.channels_last:
        model.to(memory_format=torch.channels_last)
        if disc is not None:
            disc.to(memory_format=torch.channels_last)
    layout = torch.channels_last if args.channels_last else torch.contiguous_format
    budget = Budget(args.minutes, already)
    log = JsonlLog(out / "log.jsonl") if info.is_main else None
    last_save = time.monotonic()

    forward: nn.Module = StageForward(model, stage)
    last_layer = model.image.to_rgb[1].weight  # where the adaptive GAN weight balances gradients
    if info.enabled:
        ddp.sync_quantizers(model, info.world, seed=args.seed + step)
        # DDP's default broadcast_buffers=True (forward_sync_buffers in newer torch) is kept:
        # rank 0's buffers are copied to every rank at the start of each forward
        forward = nn.parallel.DistributedDataParallel(
            forward, device_ids=[device.index] if device.type == "cuda" else None)
        if disc is not None:
            disc_ddp = nn.parallel.DistributedDataParallel(
                disc, device_ids=[device.index] if device.type == "cuda" else None)
    disc_step = disc_ddp if info.enabled and disc is not None else disc

    def checkpoint() -> None:
        if info.is_main:
            state = {"model": model.state_dict(), "opt": opt.state_dict(), "step": step,
                     "elapsed": stage_elapsed0 + budget.elapsed, "config": model.config.to_dict(),
                     "vocabulary": vocab.to_dict(), "args": vars(args), "hardware": hardware(device)}
            if disc is not None:
                state["gan"] = {"disc": disc.state_dict(), "opt": disc_opt.state_dict()}
            save_checkpoint(ckpt_path, state)

    model.train()
    flag = StopFlag()
    while True:
        local_stop = (flag.stop or budget.done()
                      or (args.max_steps is not None and step - stage_step0 >= args.max_steps))
        stop, progress = ddp.agree(info, local_stop, budget.progress, device)
        if stop:
            break
        lr = cosine_lr(args.lr, progress)
        for g in opt.param_groups:
            g["lr"] = lr
        x, y = next_batch()
        rgb = pixels_to_unit(torch.from_numpy(x).to(device, non_blocking=True))
        rgb = rgb.contiguous(memory_format=layout)
        lab = torch.from_numpy(y).to(device, non_blocking=True).long()
        onehot = one_hot_map(lab, classes).contiguous(memory_format=layout)
        n = rgb.shape[0]
        keep_s = torch.empty(n).uniform_(args.keep_min, 1.0)
        keep_x = torch.empty(n).uniform_(args.keep_min, 1.0)
        gan_on = disc is not None and progress >= args.gan_start
        amp = autocast(device, args.amp)
        with amp:  # forward and losses (the quantisers keep fp32 inside)
            stride = model.config.latent_stride
            erased = packet_erasures(n, (rgb.shape[-2] // stride, rgb.shape[-1] // stride), args.erasure, erasure_rng)
            res = forward(rgb, onehot, keep_s, keep_x, progress >= decoded_from,
                          None if erased is None else erased.to(device))
            s_out, x_out = res.get("s"), res.get("x")
            zero = torch.zeros((), device=device)
            loss, parts = zero, {}
            if s_out is not None:  # G_s: code the semantic map
                ssm_loss = F.cross_entropy(s_out["logits"], lab, weight=ce_weights, ignore_index=void)
                loss = loss + ssm_loss + s_out["vq_loss"]
                parts.update(ssm_ce=ssm_loss, vq_s=s_out["vq_loss"])
            if x_out is not None:  # G_x: code the image (decoder sees G_s's map in the late joint stage)
                l1 = weighted_l1(x_out["rgb"], rgb, relevance_pixel_weights(lab, relevance=relevance))
                perc = perceptual(x_out["rgb"], rgb) if perceptual is not None else zero
                sem = zero
                if segnet is not None:
                    # task loss of semantic communication: the receiver's segmenter must recover the map
                    sem = F.cross_entropy(segnet(unit_to_pixels(x_out["rgb"])), lab, weight=ce_weights,
                                          ignore_index=void)
                rec = l1 + perceptual_w * perc + semantic_w * sem
                loss = loss + rec + x_out["vq_loss"]
                parts.update(l1=l1, perc=perc, sem=sem, vq_x=x_out["vq_loss"])
                if gan_on:  # adversarial term, blind to low-relevance classes (see train/gan.py)
                    disc.requires_grad_(False)  # the generator step must not touch D (nor DDP's hooks)
                    fake_logits = disc(x_out["rgb"], onehot)
                    patch_w = patch_relevance(lab, fake_logits.shape[-2:], relevance)
                    g_adv = generator_loss(fake_logits, patch_w)
                    lam = gan_w * adaptive_weight(rec, g_adv, last_layer)
                    loss = loss + lam * g_adv
                    parts.update(g_adv=g_adv, gan_w=lam)

        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        if gan_on:  # discriminator step: real and generated crops in one forward (one DDP pass)
            disc.requires_grad_(True)
            with amp:
                logits = disc_step(torch.cat([rgb, x_out["rgb"].detach()]), torch.cat([onehot, onehot]))
                real_logits, fake_logits = logits.chunk(2)
                d_loss = discriminator_loss(real_logits, fake_logits, patch_w)
            disc_opt.zero_grad(set_to_none=True)
            d_loss.backward()
            disc_opt.step()
            parts.update(d_loss=d_loss.detach(), d_real=real_logits.mean().detach(),
                         d_fake=fake_logits.mean().detach())
        step += 1
        if step % 20 == 0 and info.is_main:  # rank 0's share of the batch
            rec: dict = dict(step=step, loss=loss.item(), **{k: v.item() for k, v in parts.items()})
            if x_out is not None:
                rec["codes_x"] = int(x_out["indices"][x_out["keep"][:, 0]].unique().numel())
            if s_out is not None:
                rec["codes_s"] = int(s_out["indices"][s_out["keep"][:, 0]].unique().numel())
            rec.update(lr=lr, minutes=round(budget.elapsed / 60, 2))
            log.write(**rec)
            print(" ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in rec.items()),
                  flush=True)
        if info.is_main and time.monotonic() - last_save > args.checkpoint_minutes * 60:
            checkpoint()
            if x_out is not None:
                _sample_grid(out / "samples.png", rgb, x_out["rgb"].detach())
            else:
                decoded_map = s_out["logits"].detach().argmax(1)
                _sample_grid(out / "samples.png", _colourise(lab, vocab), _colourise(decoded_map, vocab))
            last_save = time.monotonic()
    if prefetch is not None:
        prefetch.close()
    checkpoint()
    if info.enabled:
        same = ddp.consistent(model, info)
        verdict = "identical on all" if same else "DIFFER across the"
        say(f"ddp: parameters and codebooks {verdict} {info.world} ranks")
    info.barrier()  # every rank leaves once the final checkpoint is on disk
    say(f"done: {step} steps, checkpoint {ckpt_path}")
    return ckpt_path

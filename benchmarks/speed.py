"""Encode/decode wall time and peak memory per image size and thread count (CPU; CUDA if present).

    python benchmarks/speed.py --out docs/bench/speed.md

Each (size, threads) runs in a fresh subprocess so that peak RSS is that configuration's own.
The image is a CamVid test frame (``--image``; the bundled synthetic sample if CamVid is not
beside the repo), resized to each size. Stages: segmenter, networks (G_s + G_x analysis), the
mode decision with the coding (candidate streams, their decodes and scores, the rate search),
and on decode: entropy decode + G_s (semantic map), then the picture (de-masking and SPADE
decoder, and the coarse decoder for a stream with a coarse image).
"""
from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

from _report import emit  # noqa: E402  (this script's folder is on sys.path)

SIZES = ((480, 360), (1024, 512), (1920, 1080), (3840, 2160))
TARGET_BPP = 0.05
EMPTY_ARG = "''"  # how an empty option value is quoted in the command line shown
LARGE_PIXELS = 4_000_000  # above this, one timed run after the warm-up (a 4K decode takes ~20 s)


def default_image() -> Path:
    """A CamVid test frame (a street scene the model knows), else the bundled sample."""
    camvid = Path(__file__).resolve().parents[2] / "shared" / "data" / "camvid" / "test"
    frames = sorted(camvid.glob("*.png")) if camvid.is_dir() else []
    if frames:
        return frames[len(frames) // 2]
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from sqgan_codec.demo import sample_path

    return Path(sample_path())


def stream_mode(data: bytes) -> str:
    """What a stream holds: the coarse image (upsampled or through the coarse decoder) and/or
    the map and tokens."""
    from sqgan_codec import bitstream, coarse

    stream = bitstream.unpack(data)
    tokens = any(k in stream.chunks for k in bitstream.SEMANTIC_CHUNKS)
    if bitstream.CHUNK_COARSE not in stream.chunks:
        return "tokens"
    learned = coarse.parse(stream.chunks[bitstream.CHUNK_COARSE], 1, 1).render == coarse.RENDER_LEARNED
    return ("coarse+tokens" if tokens else "coarse") + ("+learned" if learned and not tokens else "")


def measure(width: int, height: int, threads: int, device: str, repeats: int, image: str) -> dict:
    import numpy as np
    import torch
    from PIL import Image

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from sqgan_codec import bitstream
    from sqgan_codec.codec import Codec, EncodeOptions

    torch.set_num_threads(threads)
    t0 = time.perf_counter()
    codec = Codec(device=device)
    seg = codec.segmenter
    load_s = time.perf_counter() - t0
    sample = Image.open(image).convert("RGB")
    rgb = np.asarray(sample.resize((width, height), Image.BICUBIC))
    runs = [rgb] * (repeats + 1)  # the first run warms up
    if width * height > LARGE_PIXELS:
        # one timed run; the warm-up (lazy initialisation, kernel selection) on a small image,
        # which a 4K run would only repeat at ~1 min a time
        runs = [np.asarray(sample.resize((480, 360), Image.BICUBIC)), rgb]
    rows = []
    for rgb in runs:
        t0 = time.perf_counter()
        semantic_map = seg.segment(rgb)
        t1 = time.perf_counter()
        analysis = codec.analyse(rgb, semantic_map)
        t2 = time.perf_counter()
        data = codec.encode_analysis(analysis, EncodeOptions(bpp=TARGET_BPP))
        t3 = time.perf_counter()
        if any(k in bitstream.unpack(data).chunks for k in bitstream.SEMANTIC_CHUNKS):
            codec.decode_semantic_map(data)  # (a coarse image alone has no map to decode)
        t4 = time.perf_counter()
        codec.decode(data)
        t5 = time.perf_counter()
        demask = _time_demasker(codec, analysis)
        samm = _time_samm(codec, rgb, semantic_map)
        rows.append({"segmenter": t1 - t0, "networks": t2 - t1, "decision+coding": t3 - t2,
                     "encode": t3 - t0, "decode_map": t4 - t3, "decode": t5 - t4, "demask": demask,
                     "samm": samm})
    mode = stream_mode(data)
    best = {k: min(r[k] for r in rows[1:]) for k in rows[0]}
    best["decode_image"] = best["decode"] - best["decode_map"]
    best["spade_decoder"] = max(0.0, best["decode_image"] - best["demask"])
    best["encoders"] = max(0.0, best["networks"] - best["samm"])
    return {"width": width, "height": height, "threads": threads, "device": device, "load_s": load_s,
            "mode": mode, **best, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def throughput(batch: int, threads: int, device: str, repeats: int, image: str) -> dict:
    """Images/s of encode_many / decode_many on ``batch`` 480x360 images (networks batched)."""
    import numpy as np
    import torch
    from PIL import Image

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from sqgan_codec.codec import Codec

    torch.set_num_threads(threads)
    codec = Codec(device=device)
    base = np.asarray(Image.open(image).convert("RGB").resize((480, 360), Image.BICUBIC))
    images = [np.roll(base[:, ::(-1) ** i], 7 * i, axis=1) for i in range(batch)]  # distinct content
    enc, dec = [], []
    for _ in range(repeats + 1):  # first run warms up
        _sync(device)
        t0 = time.perf_counter()
        datas = codec.encode_many(images, bpp=TARGET_BPP)
        _sync(device)
        t1 = time.perf_counter()
        codec.decode_many(datas, batch_size=batch)
        _sync(device)
        enc.append(t1 - t0)
        dec.append(time.perf_counter() - t1)
    return {"batch": batch, "threads": threads, "device": device,
            "encode_ips": batch / min(enc[1:]), "decode_ips": batch / min(dec[1:])}


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def _time_samm(codec, rgb, semantic_map) -> float:
    """Seconds of the two SAMM score networks alone (G_s's and G_x's), on the encoders' features
    (the rest of the networks stage is the encoders, latent projections and VQ)."""
    import torch

    from sqgan_codec.nets.blocks import class_proportions, one_hot_map
    from sqgan_codec.nets.image import STRIDE

    h, w = rgb.shape[:2]
    gh, gw = codec.latent_grid(w, h)
    with torch.inference_mode():
        x = torch.from_numpy(codec.pad_to_grid(rgb, gh, gw))[None].permute(0, 3, 1, 2).float() / 127.5 - 1
        onehot = one_hot_map(torch.from_numpy(codec.pad_to_grid(semantic_map, gh, gw))[None], codec.net.image.num_classes)
        ssm_features = codec.net.ssm.encoder(class_proportions(onehot, 4))
        img_features = codec.net.image.encoder(torch.cat([x, onehot], dim=1))
        cond = class_proportions(onehot, STRIDE)
        t0 = time.perf_counter()
        codec.net.ssm.samm(ssm_features, cond)
        codec.net.image.samm(img_features, cond)
        return time.perf_counter() - t0


def _time_demasker(codec, analysis) -> float:
    """Seconds of G_x's de-masking blocks alone (the rest of decode_image is the SPADE decoder)."""
    import torch

    from sqgan_codec.nets.blocks import class_proportions, one_hot_map

    net = codec.net.image
    with torch.inference_mode():
        idx = torch.from_numpy(analysis.image_indices)[None]
        keep = torch.ones_like(idx, dtype=torch.bool)[:, None]
        codes = net.quantizer.indices_to_codes(idx)
        gh, gw = idx.shape[-2:]
        labels = torch.from_numpy(codec.pad_to_grid(analysis.semantic_map, gh, gw))[None].long()
        cond = class_proportions(one_hot_map(labels, net.num_classes), codec.stride)
        t0 = time.perf_counter()
        x = net.from_codes(torch.cat([torch.where(keep, codes, net.mask_token), keep.float()], dim=1))
        for block in net.demasker:
            x = block(x, cond)
        return time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--out", default=None)
    p.add_argument("--threads", default="1,2")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--device", default="cpu")
    p.add_argument("--image", default=None, help="the image timed (default: a CamVid test frame, else the bundled sample)")
    p.add_argument("--max-width", type=int, default=3840)
    p.add_argument("--throughput", default="1,8", metavar="B,...",
                   help="batch sizes for the images/s table at 480x360 ('' to skip; on CUDA: 1,8,32)")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    p.add_argument("--child-batch", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    image = args.image or str(default_image())
    if args.child:
        w, h, t = (int(v) for v in args.child.split(","))
        print(json.dumps(measure(w, h, t, args.device, args.repeats, image)))
        return
    if args.child_batch:
        b, t = (int(v) for v in args.child_batch.split(","))
        print(json.dumps(throughput(b, t, args.device, args.repeats, image)))
        return
    results = []
    for w, h in SIZES:
        if w > args.max_width:
            continue
        for t in (int(v) for v in args.threads.split(",")):
            out = subprocess.run([sys.executable, __file__, "--child", f"{w},{h},{t}", "--device", args.device,
                                  "--repeats", str(args.repeats), "--image", image], capture_output=True, text=True)
            if out.returncode:
                print(out.stderr[-2000:], file=sys.stderr)
                continue
            results.append(json.loads(out.stdout.strip().splitlines()[-1]))
            print(results[-1], file=sys.stderr)
    lines = ["# Speed and memory", "",
             f"Command: `python benchmarks/speed.py --threads {args.threads} --device {args.device}"
             f"{'' if args.max_width == 3840 else f' --max-width {args.max_width}'}"
             f" --throughput {args.throughput or EMPTY_ARG}"
             f"{' --out ' + args.out if args.out else ''}`; machine: {platform.machine()}, "
             f"{platform.processor() or 'CPU'}, 2 cores, Python {platform.python_version()}. "
             f"Image: `{Path(image).name}` resized to each size. "
             f"Best of {args.repeats} runs after a warm-up (above 4 MP one run, warmed up at 480x360); target {TARGET_BPP} bpp, "
             "default options (`--tune balanced`); times in seconds.", "",
             "Encode = segmenter + networks (G_s and G_x encoders with their latent projections and VQ, "
             "and the two SAMM score networks, also shown apart) + the mode decision with the coding "
             "(candidate streams, decoding and scoring each, the rate searches; above 180,000 pixels on a "
             "downscaled copy, then the chosen mode at full size). Decode = decode map (entropy decoding, G_s) "
             "+ the picture (de-masking blocks + SPADE decoder, and the coarse decoder where the stream has "
             "a coarse image; de-mask shown apart). *mode*: what the encoder sent.", "",
             "| size | threads | mode | model load | segmenter | encoders + VQ | SAMM | decision + coding | "
             "**encode** | decode map | de-mask | picture | **decode** | peak RSS MB |",
             "|---" * 14 + "|"]
    for r in results:
        lines.append(f"| {r['width']}x{r['height']} | {r['threads']} | {r['mode']} | {r['load_s']:.2f} | {r['segmenter']:.3f} | "
                     f"{r['encoders']:.3f} | {r['samm']:.3f} | {r['decision+coding']:.3f} | **{r['encode']:.3f}** | "
                     f"{r['decode_map']:.3f} | {r['demask']:.3f} | {r['spade_decoder']:.3f} | **{r['decode']:.3f}** | "
                     f"{r['peak_rss_mb']:.0f} |")
    batches = [int(v) for v in args.throughput.split(",") if v.strip()]
    if batches:
        threads = max(int(v) for v in args.threads.split(","))
        lines += ["", f"Throughput at 480x360 ({args.device}, {threads} threads): `Codec.encode_many` / "
                  "`Codec.decode_many` on a batch of distinct images, networks batched, entropy coding "
                  f"per image; images/s, best of {args.repeats} after a warm-up.", "",
                  "| batch | encode images/s | decode images/s |", "|---|---|---|"]
        for b in batches:
            out = subprocess.run([sys.executable, __file__, "--child-batch", f"{b},{threads}", "--device",
                                  args.device, "--repeats", str(args.repeats), "--image", image],
                                 capture_output=True, text=True)
            if out.returncode:
                print(out.stderr[-2000:], file=sys.stderr)
                continue
            r = json.loads(out.stdout.strip().splitlines()[-1])
            print(r, file=sys.stderr)
            lines.append(f"| {b} | {r['encode_ips']:.2f} | {r['decode_ips']:.2f} |")
    emit(lines, args.out)


if __name__ == "__main__":
    main()

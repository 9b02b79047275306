"""``python -m sqgan_codec.demo``: encode and decode the bundled sample at a few rates.

The sample is a synthetic street scene drawn by ``benchmarks/make_sample.py`` (no dataset
pixels ship with the package).
"""
from __future__ import annotations

import argparse
import time
from importlib.resources import files
from pathlib import Path

from .codec import Codec
from .imageio import load_image, save_image_atomic, write_atomic


def sample_path() -> Path:
    return Path(str(files("sqgan_codec") / "samples" / "street.png"))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m sqgan_codec.demo")
    parser.add_argument("--out", default="out/demo")
    parser.add_argument("--bpp", type=float, nargs="*", default=[0.025, 0.05])
    parser.add_argument("--device", default="auto")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    source = load_image(sample_path())
    t0 = time.perf_counter()
    codec = Codec(device=args.device)
    print(f"loaded model {codec.entry.name} on {codec.device} in {time.perf_counter() - t0:.2f} s")
    for target in args.bpp:
        t0 = time.perf_counter()
        decision = codec.encode_with_decision(source, bpp=target)
        data = decision.data
        t1 = time.perf_counter()
        image = codec.decode(data)
        t2 = time.perf_counter()
        stem = f"street_{target:g}bpp"
        write_atomic(out / f"{stem}.sqg", data, overwrite=True)
        save_image_atomic(image, out / f"{stem}.png", overwrite=True)
        bpp = 8 * len(data) / (source.width * source.height)
        print(f"target {target:g} bpp -> {len(data)} bytes = {bpp:.4f} bpp "
              f"(encode {t1 - t0:.2f} s, decode {t2 - t1:.2f} s) -> {out / stem}.png")
        print(f"  sent: {decision.mode}" + ("  (the sample is synthetic, unlike the CamVid frames the model "
                                            "was trained on: the encoder leaned on the coarse image)"
                                            if decision.unfamiliar else ""))
    save_image_atomic(source.to_pil(), out / "street_original.png", overwrite=True)
    print(f"original: {out / 'street_original.png'}")


if __name__ == "__main__":
    main()

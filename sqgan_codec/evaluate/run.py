"""Rate/quality benchmark: classical codecs (× 1, 1/2, 1/4 resolution) and learned codecs at
target bit rates, with PSNR, MS-SSIM, LPIPS-style, FID-style and segmentation mIoU.

    sqgan evaluate --images ../shared/data/camvid/test --out out/rq
    python benchmarks/rate_quality.py --images ../shared/data/camvid/test --quick 10 --out out/rq10

Labels default to a sibling ``<images>annot`` folder (CamVid layout). Writes results.csv,
summary.json, bpp_vs_*.png and report.md to --out. Needs the [eval] extra.
"""
from __future__ import annotations

import argparse
import shlex
import sys

from . import classical
from .report import (
    DEFAULT_TARGETS, BenchConfig, default_workers, eprint, find_images, resolve_learned,
    resolve_segmenter, run_benchmark, sqgan_learned, sqgan_refine_learned,
)
from .writers import write_all

# Learned codecs under test: name → factory returning a LearnedCodec. A factory that raises
# (e.g. sqgan_codec.codec not written yet) is skipped with a message. Add one per line.
LEARNED = {
    "sqgan": sqgan_learned,
    "sqgan-refine": sqgan_refine_learned,
}
# What a plain run evaluates. sqgan-refine (--refine on) is opt-in: it costs a fifth of the
# full run's time, and benchmarks/features.py measures it against the default at each rate.
DEFAULT_LEARNED = ("sqgan",)


def _floats(s: str) -> tuple[float, ...]:
    return tuple(float(x) for x in s.split(",") if x.strip())


def lpips_dtype_for(choice: str) -> str:
    """``auto``: bfloat16 only on CPUs that compute it natively (emulated, it is ~20x slower)."""
    if choice != "auto":
        return choice
    try:
        flags = open("/proc/cpuinfo", encoding="ascii", errors="replace").read()
    except OSError:
        return "float32"
    return "bfloat16" if ("avx512_bf16" in flags or "amx_bf16" in flags) else "float32"


def _segmenter_tag(spec: str) -> str:
    """What cached segmentation numbers depend on: the spec and, for the bundled one, its weights."""
    if spec != "bundled":
        return spec
    try:
        from sqgan_codec import registry

        return "bundled:" + registry.get(registry.default_name("segmenter")).sha256
    except Exception:  # noqa: BLE001
        return spec


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    p = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", required=True, help="folder of images")
    p.add_argument("--labels", default="auto",
                   help="folder of label maps (class ids, void=11) matched by file stem; "
                        "'auto' = sibling <images>annot if present; 'none' = no labels")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--targets", type=_floats, default=DEFAULT_TARGETS, help="comma-separated bpp targets")
    p.add_argument("--codecs", default=",".join(classical.CODECS), help="classical codecs ('' for none)")
    p.add_argument("--scales", default=",".join(str(s) for s in classical.SCALES), help="downscale factors")
    p.add_argument("--learned", default=",".join(DEFAULT_LEARNED),
                   help=f"learned codecs of {sorted(LEARNED)} ('' for none)")
    p.add_argument("--segmenter", default="bundled", help="segmenter spec for sqgan_codec.segmenters ('none' to skip)")
    p.add_argument("--every", type=int, default=1, metavar="K",
                   help="use every K-th image (sorted by name): a spread subset")
    p.add_argument("--quick", type=int, default=None, metavar="N", help="use only the first N images")
    p.add_argument("--workers", type=int, default=default_workers(), help="processes over images")
    p.add_argument("--no-lpips", action="store_true")
    p.add_argument("--no-fid", action="store_true")
    p.add_argument("--lpips-scale", type=int, default=2, help="LPIPS-style on images downsampled by this factor")
    p.add_argument("--lpips-dtype", choices=("auto", "bfloat16", "float32"), default="auto",
                   help="precision of the LPIPS-style VGG convolutions (bfloat16: ~2x faster where the "
                        "CPU computes it natively (AVX-512 BF16 or AMX), within 0.2%% of float32; "
                        "auto: bfloat16 there, float32 elsewhere, where bfloat16 is ~20x slower)")
    p.add_argument("--cache", default=None, metavar="DIR",
                   help="reuse per-image results of the original and the classical codecs from DIR")
    p.add_argument("--all-scales", action="store_true", help="plot every codec × scale, not the best scale")
    a = p.parse_args(argv)

    labels = None if a.labels == "none" else a.labels
    pairs = find_images(a.images, labels, a.quick, a.every)
    eprint(f"{len(pairs)} images, {sum(lab is not None for _, lab in pairs)} with labels")
    notes: list[str] = []

    def log(msg: str) -> None:
        notes.append(msg)
        eprint(msg)

    learned = resolve_learned(LEARNED, [x for x in a.learned.split(",") if x], log=log)
    segment = resolve_segmenter(a.segmenter, log=log)
    cfg = BenchConfig(targets=a.targets, codecs=tuple(x for x in a.codecs.split(",") if x),
                      scales=tuple(int(x) for x in a.scales.split(",") if x), lpips=not a.no_lpips,
                      lpips_scale=a.lpips_scale, lpips_dtype=lpips_dtype_for(a.lpips_dtype), fid=not a.no_fid, workers=a.workers,
                      cache_dir=a.cache, cache_tag=_segmenter_tag(a.segmenter))
    result = run_benchmark(pairs, cfg, learned, segment, log=eprint, notes=notes)
    # the report quotes the command that produced it (argv as given; defaults are in "config")
    result.summary["command"] = shlex.join([prog or "python benchmarks/rate_quality.py",
                                            *(sys.argv[1:] if argv is None else argv)])
    written = write_all(result, a.out, a.all_scales)
    for name, path in written.items():
        print(f"{name}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

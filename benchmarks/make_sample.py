"""Draw the bundled demo image: a synthetic street scene made by the project (no dataset pixels).

    python benchmarks/make_sample.py sqgan_codec/samples/street.png
"""
from __future__ import annotations

import sys

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

W, H = 480, 360


def main(path: str) -> None:
    rng = np.random.default_rng(7)
    img = Image.new("RGB", (W, H))
    d = ImageDraw.Draw(img)
    for y in range(150):  # sky gradient
        t = y / 150
        d.line([(0, y), (W, y)], fill=(int(150 + 60 * t), int(175 + 50 * t), int(215 + 25 * t)))
    x = 0
    while x < W:  # buildings with windows
        bw, top = int(rng.integers(60, 120)), int(rng.integers(30, 110))
        base = tuple(int(v) for v in rng.integers(90, 170, 3))
        d.rectangle([x, top, x + bw, 215], fill=base)
        for wy in range(top + 10, 200, 22):
            for wx in range(x + 8, x + bw - 12, 18):
                d.rectangle([wx, wy, wx + 9, wy + 12], fill=(40, 50, 60))
        x += bw
    d.rectangle([0, 215, W, 240], fill=(150, 145, 140))  # pavement
    d.polygon([(0, H), (0, 240), (W, 240), (W, H)], fill=(85, 80, 90))  # road
    for lx in range(10, W, 70):
        d.rectangle([lx, 300, lx + 35, 306], fill=(230, 230, 220))
    for tx in (40, 300, 430):  # trees
        d.rectangle([tx - 3, 170, tx + 3, 225], fill=(80, 60, 40))
        d.ellipse([tx - 30, 110, tx + 30, 180], fill=(60, 110, 50))
    d.rectangle([200, 120, 204, 228], fill=(70, 70, 70))  # pole and sign
    d.rectangle([186, 120, 218, 140], fill=(30, 80, 170))
    for cx, colour in ((90, (170, 30, 30)), (330, (30, 60, 140))):  # cars
        d.rounded_rectangle([cx, 245, cx + 110, 290], 8, fill=colour)
        d.rounded_rectangle([cx + 20, 225, cx + 85, 250], 6, fill=tuple(int(c * 0.8) for c in colour))
        for wx in (cx + 22, cx + 88):
            d.ellipse([wx - 11, 278, wx + 11, 300], fill=(20, 20, 20))
    d.ellipse([262, 182, 274, 194], fill=(220, 180, 150))  # pedestrian
    d.rectangle([260, 194, 276, 226], fill=(40, 90, 60))
    d.rectangle([262, 226, 274, 240], fill=(30, 30, 50))
    arr = np.asarray(img.filter(ImageFilter.GaussianBlur(0.6))).astype(np.int16)
    arr = np.clip(arr + rng.normal(0, 4, arr.shape), 0, 255).astype(np.uint8)  # sensor-like grain
    Image.fromarray(arr).save(path, optimize=True)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "sqgan_codec/samples/street.png")

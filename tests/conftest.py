"""Fixtures shared by the codec tests: one loaded codec, and CamVid test images read in place."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sqgan_codec.codec import Codec

CAMVID = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "camvid"


@pytest.fixture(scope="session")
def codec() -> Codec:
    return Codec(device="cpu")


def camvid_test_image(index: int) -> np.ndarray:
    """The index-th CamVid test image (sorted by name) as RGB; skips without CamVid beside the repo."""
    if not (CAMVID / "test").is_dir():
        pytest.skip("CamVid not beside the repo")
    return np.asarray(Image.open(sorted((CAMVID / "test").glob("*.png"))[index]).convert("RGB"))

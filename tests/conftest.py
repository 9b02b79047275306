"""Fixtures shared by the codec tests: one loaded codec, and CamVid test images read in place."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sqgan_codec.codec import Codec

# The shared data beside the repository, read in place (never copied into the project)
DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
CAMVID, PHOTOS = DATA / "camvid", DATA / "photos"
needs_camvid = pytest.mark.skipif(not (CAMVID / "test").is_dir(), reason="CamVid not beside the repo")


@pytest.fixture(scope="session")
def codec() -> Codec:
    return Codec(device="cpu")


def camvid_test_image(index: int) -> np.ndarray:
    """The index-th CamVid test image (sorted by name) as RGB; skips without CamVid beside the repo."""
    if not (CAMVID / "test").is_dir():
        pytest.skip("CamVid not beside the repo")
    return np.asarray(Image.open(sorted((CAMVID / "test").glob("*.png"))[index]).convert("RGB"))

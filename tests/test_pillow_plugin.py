"""Tests of the opt-in Pillow plugin (sqgan_codec.pillow_plugin) with a fake codec.

Decoding with the real codec is covered in tests/test_codec_e2e.py."""
from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, UnidentifiedImageError

from sqgan_codec import pillow_plugin
from sqgan_codec.pillow_plugin import register_pillow

bitstream = pytest.importorskip("sqgan_codec.bitstream")
REPO = Path(__file__).resolve().parents[1]


def sqg_bytes(w=5, h=3, colour_mode="RGB") -> bytes:
    header = bitstream.Header(model_id=2, weights_hash=b"\x01\x02\x03\x04", width=w, height=h,
                              colour_mode=colour_mode, keep_ssm=0.5)
    return bitstream.pack(header, [("S", b"semantic"), ("I", b"image")])


class FakeCodec:
    created = 0

    def __init__(self, device):
        FakeCodec.created += 1
        self.device = device
        self.decoded = 0

    def decode(self, data, allow_partial=False):
        self.decoded += 1
        h = bitstream.read_header(data)
        return Image.new("RGB", (h.width, h.height), (200, 100, 50))


@pytest.fixture
def registered():
    """Register with a fake codec; restore Pillow's registries afterwards."""
    Image.init()
    saved = (dict(Image.OPEN), list(Image.ID), dict(Image.DECODERS), dict(Image.EXTENSION),
             dict(Image.MIME))
    FakeCodec.created = 0
    pillow_plugin.set_codec_factory(FakeCodec)
    register_pillow(device="cpu")
    yield
    pillow_plugin.set_codec_factory(None)
    Image.OPEN.clear(); Image.OPEN.update(saved[0])
    Image.ID[:] = saved[1]
    Image.DECODERS.clear(); Image.DECODERS.update(saved[2])
    Image.EXTENSION.clear(); Image.EXTENSION.update(saved[3])
    Image.MIME.clear(); Image.MIME.update(saved[4])


def test_magic_matches_bitstream():
    assert pillow_plugin.MAGIC == bitstream.MAGIC


def test_open_reads_header_only(tmp_path, registered):
    path = tmp_path / "x.sqg"
    path.write_bytes(sqg_bytes(7, 4))
    with Image.open(path) as im:
        assert im.format == "SQG" and im.size == (7, 4) and im.mode == "RGB"
        assert im.info["sqg"]["model"] == 2 and im.info["sqg"]["keep_ssm"] == pytest.approx(0.5, abs=1 / 255)
        assert FakeCodec.created == 0  # nothing decoded yet
        im.load()
        assert np.asarray(im)[0, 0].tolist() == [200, 100, 50]
    assert FakeCodec.created == 1


def test_codec_is_cached_and_device_passed(registered):
    for _ in range(3):
        with Image.open(io.BytesIO(sqg_bytes())) as im:
            im.load()
    assert FakeCodec.created == 1
    assert pillow_plugin.get_codec().device == "cpu"
    assert pillow_plugin.get_codec().decoded == 3


def test_grey_stream_opens_as_L(registered):
    with Image.open(io.BytesIO(sqg_bytes(colour_mode="L"))) as im:
        assert im.mode == "L"
        im.load()
        assert np.asarray(im)[0, 0] == Image.new("RGB", (1, 1), (200, 100, 50)).convert("L").getpixel((0, 0))


def test_damaged_stream_is_not_identified(registered):
    data = bytearray(sqg_bytes())
    data[12] ^= 0xFF  # inside the header chunk: CRC mismatch
    with pytest.raises(UnidentifiedImageError):
        Image.open(io.BytesIO(bytes(data)))
    with pytest.raises(UnidentifiedImageError):
        Image.open(io.BytesIO(b"\x89SQG\r\n\x1a\n"))


def test_size_mismatch_is_an_error(registered, monkeypatch):
    monkeypatch.setattr(FakeCodec, "decode", lambda self, data, allow_partial=False: Image.new("RGB", (1, 1)))
    with Image.open(io.BytesIO(sqg_bytes())) as im:
        with pytest.raises(OSError, match="does not match"):
            im.load()


def test_register_is_idempotent_and_extension_known(registered):
    register_pillow(device="cpu")
    assert Image.registered_extensions()[".sqg"] == "SQG"
    assert Image.MIME["SQG"] == "image/x-sqg"


def test_load_image_reads_sqg_through_plugin(tmp_path, registered):
    from sqgan_codec.imageio import is_image_path, load_image

    path = tmp_path / "x.sqg"
    path.write_bytes(sqg_bytes(4, 2))
    li = load_image(path)
    assert li.size == (4, 2) and li.rgb[0, 0].tolist() == [200, 100, 50]
    assert not is_image_path(path)  # the CLI never treats .sqg files as images to encode


def test_open_does_not_import_torch(tmp_path):
    path = tmp_path / "x.sqg"
    path.write_bytes(sqg_bytes(9, 8))
    code = (
        "import sys\n"
        "from PIL import Image\n"
        "from sqgan_codec.pillow_plugin import register_pillow\n"
        "register_pillow()\n"
        f"im = Image.open({str(path)!r})\n"
        "print(im.size, im.mode, 'torch' in sys.modules, 'sqgan_codec.codec' in sys.modules)\n"
    )
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO,
                       env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=120)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == "(9, 8) RGB False False"

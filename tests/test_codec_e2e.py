"""End-to-end tests of the real codec with the shipped weights (weights/registry.json)."""
from __future__ import annotations

import json
import random
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from sqgan_codec import bitstream
from sqgan_codec.codec import Codec

from conftest import camvid_test_image
from sqgan_codec.errors import BitstreamError, ModelMismatchError, SqganError



@pytest.fixture(scope="module")
def street() -> np.ndarray:
    return camvid_test_image(40)


@pytest.fixture(scope="module")
def street_sqg(codec: Codec, street: np.ndarray) -> bytes:
    return codec.encode(street, bpp=0.05)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return 10 * np.log10(255.0 ** 2 / mse)


def test_round_trip_street_scene(codec: Codec, street: np.ndarray, street_sqg: bytes) -> None:
    h, w = street.shape[:2]
    assert 8 * len(street_sqg) / (w * h) <= 0.05
    out = np.asarray(codec.decode(street_sqg))
    assert out.shape == street.shape
    # a trained codec beats the best constant image (the mean colour) by a clear margin
    flat = np.broadcast_to(street.reshape(-1, 3).mean(0).round(), street.shape)
    assert psnr(out, street) > psnr(flat, street) + 3.0


def test_semantics_survive(codec: Codec, street: np.ndarray, street_sqg: bytes) -> None:
    seg = codec.segmenter
    original = seg.segment(street)
    decoded = seg.segment(np.asarray(codec.decode(street_sqg)))
    assert (original == decoded).mean() > 0.6


def test_rate_rises_with_keep(codec: Codec, street: np.ndarray) -> None:
    sizes = [len(codec.encode(street, keep=k)) for k in (0.0, 0.3, 1.0)]
    assert sizes[0] < sizes[1] < sizes[2]


def test_bpp_targets_are_not_exceeded(codec: Codec, street: np.ndarray) -> None:
    pixels = street.shape[0] * street.shape[1]
    smallest = len(codec.encode(street, keep=0.0))
    assert smallest * 8 / pixels < 0.02  # both targets are reachable: rate control must meet them
    for target in (0.02, 0.03):
        bpp = len(codec.encode(street, bpp=target)) * 8 / pixels
        assert 0.9 * target <= bpp <= target, (target, bpp)  # never over, and the budget used


def test_layered_decoding(codec: Codec, street_sqg: bytes) -> None:
    stream = bitstream.unpack(street_sqg)
    cut = street_sqg[: len(street_sqg) - len(stream.chunks["I"]) - 6]
    base = codec.decode(street_sqg, layers="base")
    from_cut = codec.decode(cut)
    assert base.size == from_cut.size == (480, 360)
    assert np.array_equal(np.asarray(base), np.asarray(from_cut))


@pytest.mark.parametrize("shape,mode", [((1, 1), "RGB"), ((17, 33), "RGB"), ((37, 53), "L"),
                                        ((70, 20), "RGBA"), ((31, 45), "I;16")])
def test_any_image_round_trips(codec: Codec, shape: tuple[int, int], mode: str) -> None:
    rng = np.random.default_rng(sum(shape))
    h, w = shape
    if mode == "RGB":
        img = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), "RGB")
    elif mode == "L":
        img = Image.fromarray(rng.integers(0, 256, (h, w), dtype=np.uint8), "L")
    elif mode == "RGBA":
        img = Image.fromarray(rng.integers(0, 256, (h, w, 4), dtype=np.uint8), "RGBA")
    else:
        img = Image.fromarray(rng.integers(0, 65536, (h, w), dtype=np.uint16))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        data = codec.encode(img, keep=0.5)
    header = bitstream.read_header(data)
    assert (header.width, header.height) == (w, h)
    assert header.alpha_dropped == (mode == "RGBA")
    out = codec.decode(data)
    assert out.size == (w, h)
    assert out.mode == ("L" if mode in ("L", "I;16") else "RGB")


@pytest.mark.slow
def test_batched_decode_matches_one_by_one(codec: Codec, street: np.ndarray) -> None:
    """decode_many batches same-grid streams through the networks, whatever mix it is given:
    G_s-coded and exact maps, refinement layers, other sizes, grayscale, base layer only."""
    other = camvid_test_image(7)
    small = np.asarray(Image.fromarray(street).resize((200, 150)).convert("L"))
    datas = [codec.encode(street, bpp=0.025), codec.encode(other, bpp=0.05, refine="on", tune="semantic"),
             codec.encode(small, keep=0.4), codec.encode(street, bpp=0.1, tune="semantic"),
             codec.encode(other, keep=0.0), codec.encode(other, bpp=0.1, tune="perceptual")]
    assert bitstream.CHUNK_SEMANTIC_LOSSLESS in bitstream.unpack(datas[3]).chunks
    assert bitstream.CHUNK_COARSE in bitstream.unpack(datas[5]).chunks
    for layers in ("all", "base"):
        together = codec.decode_many(datas, layers=layers, batch_size=3)
        for data, image in zip(datas, together):
            alone = codec.decode(data, layers=layers)
            assert (image.size, image.mode) == (alone.size, alone.mode)
            diff = np.abs(np.asarray(image, np.int16) - np.asarray(alone, np.int16))
            assert diff.max() <= 2 and diff.mean() < 0.01


def test_tokens_identical_across_thread_counts(codec: Codec, street_sqg: bytes) -> None:
    before = torch.get_num_threads()
    try:
        results = []
        for threads in (1, 2):
            torch.set_num_threads(threads)
            _, ssm, _ = codec.decode_semantic_map(street_sqg)
            results.append((ssm, np.asarray(codec.decode(street_sqg), dtype=np.int16)))
    finally:
        torch.set_num_threads(before)
    (ssm1, px1), (ssm2, px2) = results
    assert np.array_equal(ssm1, ssm2)
    assert np.abs(px1 - px2).max() <= 2


def test_other_weights_are_refused(codec: Codec, street_sqg: bytes) -> None:
    stream = bitstream.unpack(street_sqg)
    import dataclasses

    wrong_hash = dataclasses.replace(stream.header, weights_hash=b"\0\0\0\0")
    with pytest.raises(ModelMismatchError):
        codec.decode(bitstream.pack(wrong_hash, list(stream.chunks.items())))
    wrong_model = dataclasses.replace(stream.header, model_id=99)
    with pytest.raises(ModelMismatchError):
        codec.decode(bitstream.pack(wrong_model, list(stream.chunks.items())))


@pytest.mark.slow
def test_fuzzed_streams_fail_cleanly(codec: Codec, street: np.ndarray) -> None:
    """Raw damage is caught by the container; payload damage with valid CRCs reaches the
    entropy decoder and the networks: either way a SqganError or an image, never a crash.
    A small crop keeps the thousands of decodes cheap."""
    street_sqg = codec.encode(np.ascontiguousarray(street[100:196, 200:328]), keep=0.6)
    rng = random.Random(1234)
    data = bytearray(street_sqg)
    full_layers = codec.decode(street_sqg).info["sqgan_layers"]
    outcomes = {"error": 0, "image": 0}
    for _ in range(3000):
        mutated = bytearray(data)
        op = rng.randrange(3)
        pos = rng.randrange(len(mutated))
        if op == 0:
            mutated[pos] ^= 1 << rng.randrange(8)
        elif op == 1:
            del mutated[pos:pos + rng.randrange(1, 8)]
        else:
            mutated[pos:pos] = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 8)))
        try:
            image = codec.decode(bytes(mutated))
            assert image.size == (128, 96)
            # no silent layer loss: a decode without allow_partial used every layer
            assert image.info["sqgan_layers"] == full_layers and not image.info["sqgan_truncated"]
            outcomes["image"] += 1
        except SqganError:
            outcomes["error"] += 1
    assert outcomes["error"] > 1000  # CRCs catch most raw damage
    stream = bitstream.unpack(street_sqg)
    decoded = 0
    for _ in range(200):
        chunks = dict(stream.chunks)
        key = rng.choice(sorted(chunks))
        payload = bytearray(chunks[key])
        if rng.random() < 0.5 and len(payload) > 1:
            payload = payload[: rng.randrange(len(payload))]
        else:
            payload[rng.randrange(len(payload))] ^= 1 << rng.randrange(8)
        chunks[key] = bytes(payload)
        try:
            image = codec.decode(bitstream.pack(stream.header, list(chunks.items())))
            assert image.size == (stream.header.width, stream.header.height)
            decoded += 1
        except BitstreamError:
            pass
    assert decoded > 0  # payload damage behind valid CRCs mostly still decodes to an image


@pytest.mark.slow
def test_cli_end_to_end(tmp_path: Path, street: np.ndarray) -> None:
    src = tmp_path / "in" / "sub"
    src.mkdir(parents=True)
    Image.fromarray(street).save(src / "a.png")
    Image.fromarray(street[:100, :150]).convert("L").save(src / "b.png")
    (src / "broken.png").write_bytes(b"not an image")
    sqgan = [sys.executable, "-m", "sqgan_codec.cli"]
    enc = subprocess.run(sqgan + ["encode", str(tmp_path / "in"), "-o", str(tmp_path / "sqg"), "--recursive",
                                  "--bpp", "0.05", "--json", "--quiet", "--device", "cpu"],
                         capture_output=True, text=True)
    assert enc.returncode == 1, enc.stderr  # broken.png failed, the others were done
    assert "broken.png" in enc.stderr and "Traceback" not in enc.stderr
    assert (tmp_path / "sqg" / "sub" / "a.sqg").is_file() and (tmp_path / "sqg" / "sub" / "b.sqg").is_file()
    assert not (tmp_path / "sqg" / "sub" / "broken.sqg").exists()
    info = subprocess.run(sqgan + ["info", str(tmp_path / "sqg" / "sub" / "a.sqg"), "--json"],
                          capture_output=True, text=True, check=True)
    fields = json.loads(info.stdout.strip().splitlines()[0])
    assert (fields["width"], fields["height"]) == (480, 360)
    dec = subprocess.run(sqgan + ["decode", str(tmp_path / "sqg"), "-o", str(tmp_path / "png"), "--recursive",
                                  "--quiet", "--device", "cpu"], capture_output=True, text=True)
    assert dec.returncode == 0, dec.stderr
    assert Image.open(tmp_path / "png" / "sub" / "a.png").size == (480, 360)
    assert Image.open(tmp_path / "png" / "sub" / "b.png").mode == "L"
    again = subprocess.run(sqgan + ["decode", str(tmp_path / "sqg"), "-o", str(tmp_path / "png"), "--recursive",
                                    "--quiet"], capture_output=True, text=True)
    assert again.returncode != 0 and "exist" in again.stderr  # no silent overwrite


def test_stream_claiming_a_huge_image_is_refused_from_its_header(codec: Codec, street_sqg: bytes,
                                                                 tmp_path: Path) -> None:
    """A few dozen bytes naming 4096x4096 would take ~9 GB to decode: refused from the header
    (before any token is read or tensor allocated) under the default limit, in the library and
    the CLI; a raised limit lets the header through."""
    import dataclasses

    from sqgan_codec.errors import PixelLimitError

    stream = bitstream.unpack(street_sqg)
    big = dataclasses.replace(stream.header, width=4096, height=4096)
    bomb = bitstream.pack(big, list(stream.chunks.items()))
    with pytest.raises(PixelLimitError, match=r"4096x4096 = 16,777,216 pixels, over the limit of "
                                              r"12,000,000 pixels \(max_pixels= / --max-pixels\)"):
        codec.decode(bomb)
    raised = Codec(device="cpu", max_pixels=4096 * 4096)
    with pytest.raises(SqganError) as caught:  # past the limit: the tokens do not fit the grid
        raised.decode_tokens(bomb)
    assert not isinstance(caught.value, PixelLimitError)
    path = tmp_path / "bomb.sqg"
    path.write_bytes(bomb)
    from click.testing import CliRunner

    from sqgan_codec.cli import main

    result = CliRunner().invoke(main, ["decode", str(path), "-o", str(tmp_path / "out.png")])
    assert result.exit_code == 1 and "over the limit of 12,000,000 pixels" in result.output
    assert not (tmp_path / "out.png").exists()


def test_an_edited_weights_file_is_refused_even_with_its_old_mtime(tmp_path: Path, monkeypatch) -> None:
    """The verified-hash cache is keyed by the file's state (inode, size, mtime, ctime): an edit
    that restores the modification time is still seen."""
    import os
    import shutil

    from sqgan_codec import registry

    src = registry.weights_dir()
    shutil.copy(src / "registry.json", tmp_path / "registry.json")
    shutil.copy(src / "coarse-camvid11.safetensors", tmp_path / "coarse-camvid11.safetensors")
    monkeypatch.setenv(registry.WEIGHTS_ENV, str(tmp_path))
    registry.reload()
    try:
        entry = registry.get("coarse-camvid11")
        registry.load_state(entry)  # verified and cached
        path = tmp_path / "coarse-camvid11.safetensors"
        st = path.stat()
        data = bytearray(path.read_bytes())
        data[-1] ^= 1
        path.write_bytes(bytes(data))
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
        with pytest.raises(ModelMismatchError, match="damaged or replaced"):
            registry.load_state(entry)
    finally:
        monkeypatch.delenv(registry.WEIGHTS_ENV)
        registry.reload()


def test_banded_decoding_matches_the_whole_image(codec: Codec, street_sqg: bytes, monkeypatch) -> None:
    """The last two up blocks run in row bands with the whole image's normalisation statistics:
    the picture is the whole-image one to float rounding."""
    import torch

    from sqgan_codec.nets import image as image_net

    from sqgan_codec.classes import NUM_CLASSES
    from sqgan_codec.nets.blocks import one_hot_map

    _, _, state = codec.decode_semantic_map(street_sqg)
    tokens = codec.decode_tokens(street_sqg)
    onehot = one_hot_map(torch.from_numpy(state["padded_map"])[None].long(), NUM_CLASSES)
    idx = torch.from_numpy(tokens.image_indices)[None]
    keep = torch.from_numpy(tokens.image_keep)[None, None]
    calls = []
    original = image_net.ImageCodec.decode_banded
    monkeypatch.setattr(image_net.ImageCodec, "decode_banded",
                        lambda self, *a, **k: calls.append(1) or original(self, *a, **k))
    with torch.inference_mode():
        codes = codec.net.image.quantizer.indices_to_codes(idx)
        whole = codec.net.image.decode_codes(codes, keep, onehot, band_rows=0)
        assert not calls
        banded = codec.net.image.decode_codes(codes, keep, onehot, band_rows=8)
    assert len(calls) == 2  # both blocks, several bands each
    diff = (whole - banded).abs()
    assert float(diff.max()) < 2 / 255 and float(diff.mean()) < 1e-4


@pytest.mark.slow
def test_decoding_memory_grows_slowly_with_size(tmp_path: Path) -> None:
    """Peak memory that a 1920x1080 decode adds to the loaded codec (measured: about 380 MB;
    whole-image decoding took 1.26 GB): bounded, in a fresh process."""
    # the peak of a fresh process that only loads and decodes
    decode_only = (
        "import resource, sys\n"
        "from sqgan_codec.codec import Codec\n"
        "c = Codec(device='cpu')\n"
        "data = open(sys.argv[1], 'rb').read()\n"
        "base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "im = c.decode(data)\n"
        "print(im.size, (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) // 1024)\n"
    )
    make = (
        "import sys, numpy as np\n"
        "from PIL import Image\n"
        "from sqgan_codec.codec import Codec\n"
        "from sqgan_codec.demo import sample_path\n"
        "rgb = np.asarray(Image.open(sample_path()).convert('RGB').resize((1920, 1080), Image.BICUBIC))\n"
        "open(sys.argv[1], 'wb').write(Codec(device='cpu').encode(rgb, keep=0.3))\n"
    )
    path = tmp_path / "hd.sqg"
    env = {**__import__("os").environ, "OMP_NUM_THREADS": "1"}
    for script, expect in ((make, None), (decode_only, True)):
        done = subprocess.run([sys.executable, "-c", script, str(path)], capture_output=True, text=True,
                              env=env, cwd=Path(__file__).resolve().parents[1], timeout=600)
        assert done.returncode == 0, done.stderr[-2000:]
    size, added_mb = done.stdout.rsplit(")", 1)
    assert size.strip() == "(1920, 1080"
    assert int(added_mb) < 700, f"decode added {added_mb} MB"

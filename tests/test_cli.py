"""Tests of the CLI layer (sqgan_codec.cli) with a small fake codec.

The fake codec stores the pixels losslessly (zlib) in a real .sqg container, so these
tests check what the CLI does -- folder mirroring, overwrite refusal, exit codes,
--json, stdin/stdout, one failing file not stopping the others, no partial outputs --
and not compression. End-to-end tests with the real codec live in
tests/test_codec_e2e.py.
"""
from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import zlib
from types import SimpleNamespace
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from sqgan_codec import cli
from sqgan_codec.decide import Decision
from sqgan_codec.errors import ImageInputError, ModelMismatchError, TruncatedError
from sqgan_codec.imageio import LoadedImage

bitstream = pytest.importorskip("sqgan_codec.bitstream")
REPO = Path(__file__).resolve().parents[1]


def open_image(path) -> Image.Image:
    """Image.open, loaded and closed (no ResourceWarning)."""
    with Image.open(path) as im:
        im.load()
    return im


# ----------------------------------------------------------------------------- fake codec


class FakeCodec:
    """encode: pixels -> zlib -> 'S' chunk of a real .sqg stream; decode: back."""

    instances: list["FakeCodec"] = []
    # the model its streams name (decode finds the codec of each stream's model by it)
    entry = SimpleNamespace(name="fake", id=0, hash_prefix=b"\x00\x01\x02\x03")

    def __init__(self, device: str = "auto", model: str | None = None, segmenter: str = "bundled") -> None:
        self.device, self.model, self.segmenter = device, model, segmenter
        self.encode_calls: list[dict] = []
        self.decode_calls: list[dict] = []
        FakeCodec.instances.append(self)

    def decide_many(self, images, *, bpp=None, keep=None, **options):
        self.encode_calls.append({"n": len(images), "bpp": bpp, "keep": keep, **options})
        out = []
        for li in images:
            assert isinstance(li, LoadedImage)
            if li.rgb[0, 0].tolist() == [13, 13, 13]:  # the "unlucky" image
                raise ImageInputError("fake codec rejects this image")
            header = bitstream.Header(model_id=0, weights_hash=b"\x00\x01\x02\x03",
                                      width=li.width, height=li.height,
                                      colour_mode=li.colour_mode,
                                      alpha_dropped=li.alpha_dropped, keep_ssm=keep or 0.0)
            data = bitstream.pack(header, [("S", zlib.compress(li.rgb.tobytes())), ("I", b"image-tokens")])
            unfamiliar = li.rgb[0, 0].tolist() == [7, 7, 7]  # the "unlike the training data" image
            out.append(Decision(data, "coarse" if unfamiliar else "tokens", options.get("tune", "balanced"),
                                confidence=0.5 if unfamiliar else 0.9, unfamiliar=unfamiliar))
        return out

    def decode_many(self, datas, *, layers="all", allow_partial=False):
        self.decode_calls.append({"n": len(datas), "layers": layers})
        out = []
        for data in datas:
            stream = bitstream.unpack(data, allow_truncated=True)  # as the real codec
            if stream.truncated and layers == "all" and not allow_partial:
                raise TruncatedError("stream is truncated")
            h = stream.header
            if h.model_id == 99:
                raise ModelMismatchError("stream needs model 99")
            arr = np.frombuffer(zlib.decompress(stream.chunks["S"]), np.uint8)
            arr = arr.reshape(h.height, h.width, 3)
            im = Image.fromarray(arr)
            out.append(im.convert("L") if h.colour_mode == "L" else im)
        return out


@pytest.fixture
def fake(monkeypatch):
    FakeCodec.instances = []
    monkeypatch.setattr(cli, "_make_codec", FakeCodec)
    return FakeCodec


def run(*args, input=None):
    return CliRunner().invoke(cli.main, [str(a) for a in args], input=input,
                              catch_exceptions=False)


def img(path: Path, colour=(10, 200, 30), size=(6, 4), mode="RGB") -> np.ndarray:
    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.new(mode, size, colour)
    im.putpixel((1, 1), (0, 0, 0) if mode == "RGB" else 0)
    im.save(path)
    return np.asarray(im.convert("RGB"))


def tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def stray_temp_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.name.endswith(".part")]


def sqg(path: Path, w=4, h=3, model_id=0) -> bytes:
    header = bitstream.Header(model_id=model_id, weights_hash=FakeCodec.entry.hash_prefix, width=w,
                              height=h)
    data = bitstream.pack(header, [("S", zlib.compress(bytes(w * h * 3)))])
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return data


# ----------------------------------------------------------------------------- single files


def test_encode_decode_single_file_round_trip(tmp_path, fake):
    pixels = img(tmp_path / "x.png")
    r = run("encode", tmp_path / "x.png", "-o", tmp_path / "x.sqg")
    assert r.exit_code == 0, r.output
    assert (tmp_path / "x.sqg").read_bytes().startswith(bitstream.MAGIC)
    r = run("decode", tmp_path / "x.sqg", "-o", tmp_path / "y.png")
    assert r.exit_code == 0, r.output
    np.testing.assert_array_equal(np.asarray(open_image(tmp_path / "y.png")), pixels)
    assert r.stdout == ""
    assert not stray_temp_files(tmp_path)


def test_single_file_into_existing_folder(tmp_path, fake):
    img(tmp_path / "x.png")
    (tmp_path / "out").mkdir()
    assert run("encode", tmp_path / "x.png", "-o", tmp_path / "out").exit_code == 0
    assert tree(tmp_path / "out") == ["x.sqg"]


def test_decode_output_format_from_suffix(tmp_path, fake):
    img(tmp_path / "x.png")
    run("encode", tmp_path / "x.png", "-o", tmp_path / "x.sqg")
    for name, fmt in [("a.jpg", "JPEG"), ("a.webp", "WEBP"), ("a.unknown", "PNG")]:
        assert run("decode", tmp_path / "x.sqg", "-o", tmp_path / name).exit_code == 0
        assert open_image(tmp_path / name).format == fmt


def test_options_reach_the_codec(tmp_path, fake):
    img(tmp_path / "x.png")
    assert run("encode", tmp_path / "x.png", "-o", tmp_path / "a.sqg", "--bpp", "0.05",
               "--device", "cpu").exit_code == 0
    codec = fake.instances[-1]
    assert codec.device == "cpu" and len(codec.encode_calls) == 1
    call = codec.encode_calls[0]
    assert (call["n"], call["bpp"], call["keep"], call["max_bytes"], call["ssm"], call["refine"]) == \
        (1, 0.05, None, None, "auto", "auto")
    assert run("encode", tmp_path / "x.png", "-o", tmp_path / "b.sqg",
               "--keep", "0.3", "--ssm", "vq", "--refine", "off").exit_code == 0
    call = fake.instances[-1].encode_calls[0]
    assert (call["keep"], call["ssm"], call["refine"]) == (0.3, "vq", "off")
    assert run("decode", tmp_path / "a.sqg", "-o", tmp_path / "a.png",
               "--layers", "base").exit_code == 0
    assert fake.instances[-1].decode_calls == [{"n": 1, "layers": "base"}]


# ----------------------------------------------------------------------------- folders


def make_tree(root: Path) -> None:
    img(root / "x.png")
    img(root / "b.jpg", size=(5, 5))
    img(root / "a" / "y.png")
    img(root / "a" / "deeper" / "z.bmp")
    (root / "notes.txt").write_text("not an image")
    img(root / ".hidden.png")
    img(root / ".git" / "w.png")


def test_folder_without_recursive_takes_top_level(tmp_path, fake):
    make_tree(tmp_path / "in")
    r = run("encode", tmp_path / "in", "-o", tmp_path / "out")
    assert r.exit_code == 0, r.output
    assert tree(tmp_path / "out") == ["b.sqg", "x.sqg"]


def test_folder_recursive_mirrors_tree(tmp_path, fake):
    make_tree(tmp_path / "in")
    r = run("encode", tmp_path / "in", "-o", tmp_path / "out", "--recursive")
    assert r.exit_code == 0, r.output
    assert tree(tmp_path / "out") == ["a/deeper/z.sqg", "a/y.sqg", "b.sqg", "x.sqg"]
    r = run("decode", tmp_path / "out", "-o", tmp_path / "back", "-r")
    assert r.exit_code == 0, r.output
    assert tree(tmp_path / "back") == ["a/deeper/z.png", "a/y.png", "b.png", "x.png"]
    np.testing.assert_array_equal(np.asarray(open_image(tmp_path / "back/a/y.png")),
                                  np.asarray(open_image(tmp_path / "in/a/y.png")))


def test_several_files_go_to_folder(tmp_path, fake):
    img(tmp_path / "p" / "one.png")
    img(tmp_path / "q" / "two.png")
    r = run("encode", tmp_path / "p" / "one.png", tmp_path / "q" / "two.png",
            "-o", tmp_path / "out")
    assert r.exit_code == 0, r.output
    assert tree(tmp_path / "out") == ["one.sqg", "two.sqg"]


def test_batches(tmp_path, fake):
    for i in range(5):
        img(tmp_path / "in" / f"{i}.png")
    assert run("encode", tmp_path / "in", "-o", tmp_path / "out",
               "--batch-size", "2").exit_code == 0
    assert [c["n"] for c in fake.instances[-1].encode_calls] == [2, 2, 1]
    assert len(fake.instances) == 1


def test_output_collisions_are_reported(tmp_path, fake):
    img(tmp_path / "in" / "x.png")
    img(tmp_path / "in" / "x.jpg")
    r = run("encode", tmp_path / "in", "-o", tmp_path / "out")
    assert r.exit_code == 1
    assert "is also the output of" in r.stderr
    assert tree(tmp_path / "out") == ["x.sqg"]


def test_output_folder_inside_input_is_not_scanned(tmp_path, fake):
    img(tmp_path / "in" / "x.png")
    assert run("encode", tmp_path / "in", "-o", tmp_path / "in" / "enc", "-r").exit_code == 0
    assert run("encode", tmp_path / "in", "-o", tmp_path / "in" / "enc", "-r",
               "--overwrite").exit_code == 0
    # decoding into the same folder must not pick up (or re-create) enc/enc/...
    sqg(tmp_path / "in" / "enc" / "old.sqg")
    r = run("decode", tmp_path / "in", "-o", tmp_path / "in" / "enc", "-r")
    assert r.exit_code == 0, r.output
    assert "no .sqg files found" in r.stderr
    assert tree(tmp_path / "in") == ["enc/old.sqg", "enc/x.sqg", "x.png"]


def test_empty_folder_warns(tmp_path, fake):
    (tmp_path / "in" / "sub").mkdir(parents=True)
    img(tmp_path / "in" / "sub" / "x.png")
    r = run("encode", tmp_path / "in", "-o", tmp_path / "out")
    assert r.exit_code == 0
    assert "no images found (use --recursive" in r.stderr
    assert fake.instances == []  # nothing to do: the codec is never created


# ----------------------------------------------------------------------------- overwriting


def test_existing_output_is_not_overwritten(tmp_path, fake):
    img(tmp_path / "x.png")
    (tmp_path / "x.sqg").write_bytes(b"precious")
    r = run("encode", tmp_path / "x.png", "-o", tmp_path / "x.sqg")
    assert r.exit_code == 1
    assert f"sqgan: error: {tmp_path / 'x.sqg'}: already exists" in r.stderr
    assert "--overwrite" in r.stderr and "Traceback" not in r.output
    assert (tmp_path / "x.sqg").read_bytes() == b"precious"
    assert fake.instances == []  # refused before any work
    r = run("encode", tmp_path / "x.png", "-o", tmp_path / "x.sqg", "--overwrite")
    assert r.exit_code == 0
    assert (tmp_path / "x.sqg").read_bytes().startswith(bitstream.MAGIC)


def test_existing_outputs_in_folder_mode(tmp_path, fake):
    img(tmp_path / "in" / "a.png")
    img(tmp_path / "in" / "b.png")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "a.sqg").write_bytes(b"old")
    r = run("encode", tmp_path / "in", "-o", tmp_path / "out")
    assert r.exit_code == 1 and "a.sqg: already exists" in r.stderr
    assert (tmp_path / "out" / "a.sqg").read_bytes() == b"old"
    assert (tmp_path / "out" / "b.sqg").exists()


def test_input_is_never_overwritten(tmp_path, fake):
    data = sqg(tmp_path / "x.sqg")
    r = run("decode", tmp_path / "x.sqg", "-o", tmp_path / "x.sqg", "--overwrite")
    assert r.exit_code == 1 and "is the input file" in r.stderr
    assert (tmp_path / "x.sqg").read_bytes() == data
    img(tmp_path / "x.png")
    r = run("encode", tmp_path / "x.png", "-o", tmp_path / "x.png", "--overwrite")
    assert r.exit_code == 1 and "is the input file" in r.stderr


# ----------------------------------------------------------------------------- failures


def test_bad_file_does_not_stop_the_others(tmp_path, fake):
    img(tmp_path / "in" / "a.png")
    (tmp_path / "in" / "b.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    img(tmp_path / "in" / "c.png")
    (tmp_path / "in" / "d.png").write_bytes(b"")
    r = run("encode", tmp_path / "in", "-o", tmp_path / "out")
    assert r.exit_code == 1
    lines = r.stderr.strip().splitlines()
    errors = [ln for ln in lines if ln.startswith("sqgan: error:")]
    assert len(errors) == 2
    assert errors[0].startswith(f"sqgan: error: {tmp_path / 'in' / 'b.png'}: ")
    assert f"{tmp_path / 'in' / 'd.png'}: file is empty" in errors[1]
    assert tree(tmp_path / "out") == ["a.sqg", "c.sqg"]  # no partial outputs
    assert not stray_temp_files(tmp_path)
    assert "encoded 2 of 4 file(s), 2 failed" in r.stderr


def test_missing_input_file(tmp_path, fake):
    img(tmp_path / "a.png")
    r = run("encode", tmp_path / "nope.png", tmp_path / "a.png", "-o", tmp_path / "out")
    assert r.exit_code == 1
    assert f"sqgan: error: {tmp_path / 'nope.png'}: no such file" in r.stderr
    assert tree(tmp_path / "out") == ["a.sqg"]


def test_codec_failure_in_batch_is_pinned_on_its_file(tmp_path, fake):
    img(tmp_path / "in" / "a.png")
    img(tmp_path / "in" / "b.png", colour=(13, 13, 13), size=(3, 3))
    Image.new("RGB", (3, 3), (13, 13, 13)).save(tmp_path / "in" / "b.png")
    img(tmp_path / "in" / "c.png")
    r = run("encode", tmp_path / "in", "-o", tmp_path / "out", "--batch-size", "8")
    assert r.exit_code == 1
    assert f"{tmp_path / 'in' / 'b.png'}: fake codec rejects this image" in r.stderr
    assert tree(tmp_path / "out") == ["a.sqg", "c.sqg"]


def test_corrupt_sqg_does_not_stop_the_others(tmp_path, fake):
    sqg(tmp_path / "in" / "a.sqg")
    good = sqg(tmp_path / "in" / "b.sqg")
    (tmp_path / "in" / "b.sqg").write_bytes(good[:-3])  # truncated
    bad = bytearray(good)
    bad[-6] ^= 0x55
    (tmp_path / "in" / "c.sqg").write_bytes(bytes(bad))  # CRC mismatch
    (tmp_path / "in" / "d.sqg").write_bytes(b"GIF89a not sqg")
    sqg(tmp_path / "in" / "e.sqg", model_id=99)  # codec refuses: ModelMismatchError
    sqg(tmp_path / "in" / "f.sqg")
    r = run("decode", tmp_path / "in", "-o", tmp_path / "out")
    assert r.exit_code == 1
    err = r.stderr
    assert f"{tmp_path / 'in' / 'b.sqg'}: stream is truncated before its semantic" in err
    assert f"{tmp_path / 'in' / 'c.sqg'}: chunk" in err and "CRC" in err
    assert f"{tmp_path / 'in' / 'd.sqg'}: not an .sqg file" in err
    # no installed model has id 99: the registry says so, no codec is made for it
    assert f"{tmp_path / 'in' / 'e.sqg'}: stream needs model id 99, which this installation does not have" in err
    assert tree(tmp_path / "out") == ["a.png", "f.png"]
    assert "Traceback" not in r.output


def test_codec_setup_failure_is_one_line(tmp_path, monkeypatch):
    def no_weights(device, model=None, segmenter="bundled"):
        raise ModelMismatchError("weights for sqgan-camvid11 are not installed")

    monkeypatch.setattr(cli, "_make_codec", no_weights)
    img(tmp_path / "x.png")
    r = run("encode", tmp_path / "x.png", "-o", tmp_path / "x.sqg")
    assert r.exit_code == 1
    assert r.stderr.strip() == "sqgan: error: weights for sqgan-camvid11 are not installed"
    assert not (tmp_path / "x.sqg").exists()


def test_keyboard_interrupt_exits_130_cleanly(tmp_path, monkeypatch):
    class Interrupted(FakeCodec):
        def decide_many(self, images, **kw):
            raise KeyboardInterrupt

    monkeypatch.setattr(cli, "_make_codec", Interrupted)
    img(tmp_path / "in" / "x.png")
    r = run("encode", tmp_path / "in", "-o", tmp_path / "out")
    assert r.exit_code == 130
    assert "sqgan: interrupted" in r.stderr and "Traceback" not in r.output
    assert not stray_temp_files(tmp_path)


def test_interrupt_while_writing_leaves_no_partial_file(tmp_path, fake, monkeypatch):
    from sqgan_codec import imageio

    def interrupted_fsync(fd):
        raise KeyboardInterrupt

    monkeypatch.setattr(imageio.os, "fsync", interrupted_fsync)
    img(tmp_path / "x.png")
    r = run("encode", tmp_path / "x.png", "-o", tmp_path / "x.sqg")
    assert r.exit_code == 130
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.png"]


# ----------------------------------------------------------------------------- usage errors


@pytest.mark.parametrize("args, message", [
    (["encode", "{d}/x.png", "-o", "{d}/x.sqg", "--bpp", "0.05", "--keep", "0.2"],
     "mutually exclusive"),
    (["encode", "{d}/x.png", "{d}/x.png", "-o", "-"], "must be a folder"),
    (["encode", "-", "{d}/x.png", "-o", "{d}/out"], "only input"),
    (["encode", "{d}/x.png", "-o", "-", "--json"], "--json"),
    (["encode", "{d}/x.png", "-o", "{d}/x.sqg", "--bpp", "0"], "--bpp"),
    (["encode", "{d}/x.png", "-o", "{d}/x.sqg", "--keep", "1.5"], "--keep"),
    (["encode", "{d}/x.png", "-o", "{d}/x.sqg", "--device", "tpu"], "--device"),
    (["encode", "{d}/x.png", "-o", "{d}/x.sqg", "--batch-size", "0"], "--batch-size"),
    (["decode", "{d}/x.sqg", "-o", "{d}/x.png", "--layers", "some"], "--layers"),
    (["encode", "{d}/x.png"], "-o"),
    (["encode", "-o", "{d}/x.sqg"], "INPUTS"),
    (["encode", "{d}/x.png", "{d}/x.png", "-o", "{d}/file.txt"], "existing file"),
    (["frobnicate"], "No such command"),
])
def test_usage_errors_exit_2(tmp_path, fake, args, message):
    img(tmp_path / "x.png")
    (tmp_path / "file.txt").write_text("")
    r = run(*[a.format(d=tmp_path) for a in args])
    assert r.exit_code == 2, r.output
    assert message in r.stderr and "Traceback" not in r.output


def test_help_and_version():
    r = run("--help")
    assert r.exit_code == 0 and "encode" in r.stdout and "info" in r.stdout
    for cmd in ("encode", "decode", "info"):
        assert run(cmd, "--help").exit_code == 0
    r = run("--version")
    assert r.exit_code == 0 and r.stdout.startswith("sqgan ")
    bare = run()  # no command: click shows the usage and the commands, exit status 0 or 2 by version
    assert bare.exit_code in (0, 2) and "Usage:" in bare.output and "encode" in bare.output


# ----------------------------------------------------------------------------- stdio


def test_stdin_to_stdout(tmp_path, fake):
    pixels = img(tmp_path / "x.png")
    r = run("encode", "-", "-o", "-", input=(tmp_path / "x.png").read_bytes())
    assert r.exit_code == 0, r.stderr
    assert r.stdout_bytes.startswith(bitstream.MAGIC)
    r2 = run("decode", "-", "-o", "-", input=r.stdout_bytes)
    assert r2.exit_code == 0, r2.stderr
    back = Image.open(io.BytesIO(r2.stdout_bytes))
    assert back.format == "PNG"
    np.testing.assert_array_equal(np.asarray(back), pixels)


def test_stdin_to_file_and_bad_stdin(tmp_path, fake):
    img(tmp_path / "x.png")
    r = run("encode", "-", "-o", tmp_path / "x.sqg", input=(tmp_path / "x.png").read_bytes())
    assert r.exit_code == 0 and (tmp_path / "x.sqg").exists()
    r = run("encode", "-", "-o", tmp_path / "y.sqg", input=b"garbage")
    assert r.exit_code == 1 and r.stderr.startswith("sqgan: error: <stdin>: ")
    r = run("decode", "-", "-o", tmp_path / "y.png", input=b"")
    assert r.exit_code == 1 and "sqgan: error: <stdin>:" in r.stderr


# ----------------------------------------------------------------------------- --json


def test_json_stats(tmp_path, fake):
    img(tmp_path / "in" / "a.png", size=(8, 4))
    (tmp_path / "in" / "b.png").write_bytes(b"junk")
    r = run("encode", tmp_path / "in", "-o", tmp_path / "out", "--json")
    assert r.exit_code == 1
    records = [json.loads(line) for line in r.stdout.splitlines()]
    ok = [x for x in records if x["ok"]]
    bad = [x for x in records if not x["ok"]]
    assert len(ok) == 1 and len(bad) == 1
    rec = ok[0]
    assert rec["input"] == str(tmp_path / "in" / "a.png")
    assert rec["output"] == str(tmp_path / "out" / "a.sqg")
    assert rec["bytes"] == (tmp_path / "out" / "a.sqg").stat().st_size
    assert rec["bpp"] == pytest.approx(8 * rec["bytes"] / (8 * 4), rel=1e-5)
    assert rec["seconds"] >= 0 and (rec["width"], rec["height"]) == (8, 4)
    assert bad[0]["input"] == str(tmp_path / "in" / "b.png") and bad[0]["error"]
    assert rec["mode"] == "tokens" and rec["unfamiliar"] is False and rec["confidence"] == 0.9

    r = run("decode", tmp_path / "out", "-o", tmp_path / "back", "--json")
    assert r.exit_code == 0
    (rec,) = [json.loads(line) for line in r.stdout.splitlines()]
    assert rec["bytes"] == (tmp_path / "out" / "a.sqg").stat().st_size
    assert rec["bpp"] == pytest.approx(8 * rec["bytes"] / 32, rel=1e-5)


def test_unfamiliar_image_warns_once_and_is_reported(tmp_path, fake):
    img(tmp_path / "in" / "odd.png", colour=(7, 7, 7))
    img(tmp_path / "in" / "street.png")
    r = run("encode", tmp_path / "in", "-o", tmp_path / "out", "--json", "--bpp", "0.05", "--tune", "perceptual")
    assert r.exit_code == 0
    records = {Path(x["input"]).name: x for x in map(json.loads, r.stdout.splitlines())}
    assert records["odd.png"]["unfamiliar"] and records["odd.png"]["mode"] == "coarse"
    assert not records["street.png"]["unfamiliar"]
    warned = [ln for ln in r.stderr.splitlines() if "unlike what the model was trained on" in ln]
    assert len(warned) == 1 and "odd.png" in warned[0]
    assert fake.instances[-1].encode_calls[0]["tune"] == "perceptual"


def test_quiet_and_warnings(tmp_path, fake):
    Image.new("RGBA", (4, 4), (1, 2, 3, 0)).save(tmp_path / "t.png")
    img(tmp_path / "u.png")
    r = run("encode", tmp_path / "t.png", tmp_path / "u.png", "-o", tmp_path / "out")
    assert r.exit_code == 0
    assert f"sqgan: warning: {tmp_path / 't.png'}: alpha channel dropped" in r.stderr
    assert "encoded 2 of 2" in r.stderr
    r = run("encode", tmp_path / "t.png", tmp_path / "u.png", "-o", tmp_path / "out2", "-q")
    assert r.exit_code == 0 and r.stderr == ""


def test_grey_image_stays_grey(tmp_path, fake):
    img(tmp_path / "g.png", colour=90, mode="L")
    run("encode", tmp_path / "g.png", "-o", tmp_path / "g.sqg")
    assert bitstream.read_header(tmp_path / "g.sqg").colour_mode == "L"
    run("decode", tmp_path / "g.sqg", "-o", tmp_path / "g2.png")
    assert open_image(tmp_path / "g2.png").mode == "L"


# ----------------------------------------------------------------------------- info


def test_info(tmp_path):
    data = sqg(tmp_path / "a.sqg", w=40, h=30)
    r = run("info", tmp_path / "a.sqg")
    assert r.exit_code == 0, r.output
    assert f"{tmp_path / 'a.sqg'}: 40x30 RGB, {len(data):,} bytes" in r.stdout
    assert "layers: base;" in r.stdout
    r = run("info", tmp_path / "a.sqg", "--json")
    rec = json.loads(r.stdout)
    assert rec["width"] == 40 and rec["height"] == 30 and rec["bytes"] == len(data)
    assert rec["bpp"] == pytest.approx(8 * len(data) / 1200, rel=1e-5)
    assert rec["version"] and rec["model"] == 0 and rec["ok"] and rec["layers"] == ["base"]
    assert "coarse" not in rec


def test_info_shows_the_coarse_image():
    golden = Path(__file__).resolve().parent / "golden"
    r = run("info", golden / "v4_coarse_av1_0.05.sqg", golden / "v3_mixed_0.05.sqg")
    assert r.exit_code == 0, r.output
    assert "coarse image: AV1 160x120 (1/3), 976 bytes, rendered upsampled" in r.stdout
    assert "coarse image: VP8 120x90 (1/4), 800 bytes, rendered by the coarse decoder" in r.stdout
    rec = json.loads(run("info", golden / "v4_coarse_av1_0.05.sqg", "--json").stdout)
    assert rec["version"] == "4.0" and rec["coarse"] == {"format": "av1", "scale": 3, "width": 160, "height": 120,
                                                         "render": "upsample", "bytes": 976}
    assert "semantic_map" not in rec  # a coarse image alone


def test_info_says_how_the_semantic_map_is_coded():
    golden = Path(__file__).resolve().parent / "golden"
    r = run("info", golden / "v6_scaled_map_0.05.sqg", golden / "v3_mixed_0.05.sqg", golden / "v1_lossless_map_keep0.3.sqg")
    assert r.exit_code == 0, r.output
    assert "semantic map: exact at 1/8, 177 bytes" in r.stdout
    assert "semantic map: G_s tokens, 192 bytes" in r.stdout and "semantic map: exact, 1,612 bytes" in r.stdout
    rec = json.loads(run("info", golden / "v6_scaled_map_0.05.sqg", "--json").stdout)
    assert rec["version"] == "6.0" and rec["semantic_map"] == {"coding": "exact-reduced", "bytes": 177, "scale": 8}


def test_info_bad_files_continue(tmp_path):
    sqg(tmp_path / "a.sqg")
    (tmp_path / "b.sqg").write_bytes(b"nope")
    good = sqg(tmp_path / "c.sqg")
    (tmp_path / "c.sqg").write_bytes(good[:-2])  # header fine, last chunk cut
    r = run("info", tmp_path / "a.sqg", tmp_path / "b.sqg", tmp_path / "missing.sqg",
            tmp_path / "c.sqg", "--json")
    assert r.exit_code == 1
    records = [json.loads(line) for line in r.stdout.splitlines()]
    assert [x["ok"] for x in records] == [True, False, False, False]
    assert records[3]["width"] == 4  # header still shown
    assert f"{tmp_path / 'b.sqg'}: not an .sqg file" in r.stderr
    assert f"{tmp_path / 'missing.sqg'}: no such file" in r.stderr
    assert f"{tmp_path / 'c.sqg'}: stream is truncated before its semantic" in r.stderr


def test_stream_cut_in_image_layer_decodes_base_with_warning(tmp_path, fake):
    img(tmp_path / "x.png")
    run("encode", tmp_path / "x.png", "-o", tmp_path / "x.sqg")
    data = (tmp_path / "x.sqg").read_bytes()
    (tmp_path / "cut.sqg").write_bytes(data[:-3])  # inside the last chunk, 'I'
    r = run("info", tmp_path / "cut.sqg", "--json")
    assert r.exit_code == 0
    rec = json.loads(r.stdout)
    assert rec["ok"] and rec["truncated"] and rec["layers"] == ["base"]
    assert "only its base layer" in r.stderr
    r = run("decode", tmp_path / "cut.sqg", "-o", tmp_path / "cut.png")  # no silent layer loss
    assert r.exit_code == 1 and not (tmp_path / "cut.png").exists()
    assert f"{tmp_path / 'cut.sqg'}: stream is truncated: only its base layer" in r.stderr
    assert "--partial decodes it" in r.stderr
    r = run("decode", tmp_path / "cut.sqg", "-o", tmp_path / "cut.png", "--partial")
    assert r.exit_code == 0 and (tmp_path / "cut.png").exists()
    assert f"sqgan: warning: {tmp_path / 'cut.sqg'}: stream is truncated" in r.stderr
    r = run("decode", tmp_path / "cut.sqg", "-o", tmp_path / "cut2.png", "--layers", "base")
    assert r.exit_code == 0 and r.stderr == ""


def test_info_stdin():
    header = bitstream.Header(model_id=0, weights_hash=b"\0\0\0\0", width=2, height=2)
    data = bitstream.pack(header, [("S", b"x")])
    r = run("info", "-", input=data)
    assert r.exit_code == 0 and r.stdout.startswith("<stdin>: 2x2 RGB")


def _python(code: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=env, cwd=REPO, timeout=120)


def test_info_imports_no_torch_or_numpy(tmp_path):
    sqg(tmp_path / "a.sqg")
    av1 = Path(__file__).resolve().parent / "golden" / "v4_coarse_av1_0.05.sqg"  # chunk C is read too
    code = (
        "import sys\n"
        "from sqgan_codec.cli import main\n"
        "try:\n"
        f"    main(['info', {str(tmp_path / 'a.sqg')!r}, {str(av1)!r}])\n"
        "except SystemExit as e:\n"
        "    assert e.code == 0, e.code\n"
        "heavy = sorted(m for m in ('torch', 'numpy', 'PIL', 'sqgan_codec.codec') if m in sys.modules)\n"
        "print('HEAVY', heavy)\n"
    )
    p = _python(code)
    assert p.returncode == 0, p.stderr
    assert "HEAVY []" in p.stdout, p.stdout


def test_cli_import_is_light():
    p = _python("import sys, sqgan_codec.cli, sqgan_codec.pillow_plugin, sqgan_codec.imageio\n"
                "print('torch' in sys.modules)")
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == "False"


def test_module_entry_point_runs():
    p = subprocess.run([sys.executable, "-m", "sqgan_codec.cli", "--help"], capture_output=True,
                       text=True, cwd=REPO, timeout=120,
                       env={**os.environ, "PYTHONPATH": str(REPO)})
    assert p.returncode == 0 and "encode" in p.stdout


def test_stream_cut_in_refinement_layer_decodes_without_it(tmp_path, fake):
    img(tmp_path / "x.png")
    run("encode", tmp_path / "x.png", "-o", tmp_path / "x.sqg")
    data = bitstream.append_refinement((tmp_path / "x.sqg").read_bytes(), b"refinement bytes")
    (tmp_path / "cut.sqg").write_bytes(data[:-3])  # inside the last chunk, 'R'
    r = run("info", tmp_path / "cut.sqg", "--json")
    rec = json.loads(r.stdout)
    assert r.exit_code == 0 and rec["truncated"] and rec["layers"] == ["base", "image"]
    assert rec["version"] == "2.0"
    assert "inside its refinement layer" in r.stderr

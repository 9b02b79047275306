"""`sqgan segment`: semantic maps from the bundled segmenter (random weights from a
temporary registry), from label files, and its usage errors."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from _segmenter_support import seg_weights_dir, temp_registry  # noqa: F401
from sqgan_codec import classes, cli


def run(*args, input=None):
    return CliRunner().invoke(cli.main, [str(a) for a in args], input=input,
                              catch_exceptions=False)


def picture(path: Path, size=(53, 37), seed=0) -> np.ndarray:
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(arr).save(path)
    return arr


def read(path: Path) -> Image.Image:
    with Image.open(path) as im:
        im.load()
    return im


def test_segment_folder_mirrors_and_writes_class_ids(tmp_path, temp_registry):
    src, out = tmp_path / "in", tmp_path / "out"
    picture(src / "a.jpg", (53, 37))
    picture(src / "sub" / "b.png", (1, 1), seed=1)
    (src / "notes.txt").write_text("not an image")
    r = run("segment", src, "-o", out, "--recursive", "--device", "cpu", "--json")
    assert r.exit_code == 0, r.output
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()) == \
        ["a.png", "sub/b.png"]
    a = read(out / "a.png")
    assert a.mode == "L" and a.size == (53, 37)
    assert int(np.asarray(a).max()) < classes.NUM_CLASSES
    assert read(out / "sub" / "b.png").size == (1, 1)
    records = [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")]
    assert len(records) == 2 and all(rec["ok"] for rec in records)
    assert abs(sum(records[0]["classes"].values()) - 1) < 1e-3

    # existing outputs are kept unless --overwrite
    r = run("segment", src, "-o", out, "-r", "--device", "cpu", "--quiet")
    assert r.exit_code == 1 and "already exists" in r.output
    r = run("segment", src, "-o", out, "-r", "--device", "cpu", "--quiet", "--overwrite")
    assert r.exit_code == 0, r.output


def test_segment_overlay_single_file(tmp_path, temp_registry):
    rgb = picture(tmp_path / "x.png", (40, 30))
    r = run("segment", tmp_path / "x.png", "-o", tmp_path / "x_overlay.jpg", "--overlay",
            "--device", "cpu")
    assert r.exit_code == 0, r.output
    im = read(tmp_path / "x_overlay.jpg")
    assert im.format == "JPEG" and im.mode == "RGB" and im.size == (40, 30)
    r = run("segment", tmp_path / "x.png", "-o", tmp_path / "ids.png", "--overlay",
            "--device", "cpu")
    ids_overlay = np.asarray(read(tmp_path / "ids.png")).astype(int)
    assert ids_overlay.shape == rgb.shape  # a picture, not class ids


def test_segment_labels_folder_and_per_file_failure(tmp_path):
    src, labels, out = tmp_path / "in", tmp_path / "labels", tmp_path / "out"
    picture(src / "one.jpg", (9, 8))
    picture(src / "two.jpg", (9, 8), seed=2)
    labels.mkdir()
    ids = np.random.default_rng(0).integers(0, 11, (8, 9)).astype(np.uint8)
    Image.fromarray(ids).save(labels / "one.png")  # no label for two.jpg
    r = run("segment", src, "-o", out, "--segmenter", f"labels:{labels}")
    assert r.exit_code == 1
    assert "two.jpg" in r.output and "no such label file" in r.output
    assert np.array_equal(np.asarray(read(out / "one.png")), ids)
    assert not (out / "two.png").exists()


def test_segment_stdout(tmp_path):
    picture(tmp_path / "x.png", (9, 8))
    ids = np.full((8, 9), 5, np.uint8)
    Image.fromarray(ids).save(tmp_path / "l.png")
    r = CliRunner().invoke(cli.main, ["segment", str(tmp_path / "x.png"), "-o", "-",
                                      "--segmenter", f"labels:{tmp_path / 'l.png'}"])
    assert r.exit_code == 0
    import io

    with Image.open(io.BytesIO(r.stdout_bytes)) as im:
        assert np.array_equal(np.asarray(im), ids)


@pytest.mark.parametrize("args, message", [
    (["--class-map", "cityscapes19"], "only used with"),
    (["-o", "OUT.jpg"], "written as PNG"),
    (["--segmenter", "magic"], "unknown segmenter"),
])
def test_segment_usage_errors(tmp_path, args, message):
    picture(tmp_path / "x.png", (9, 8))
    argv = ["segment", tmp_path / "x.png"]
    if "-o" not in args:
        argv += ["-o", tmp_path / "y.png"]
    argv += [a.replace("OUT", str(tmp_path / "y")) for a in args]
    r = run(*argv)
    assert r.exit_code in (1, 2) and message in r.output
    assert "Traceback" not in r.output


def test_segment_missing_weights_is_one_line(tmp_path, monkeypatch):
    from sqgan_codec import registry, segmenters

    monkeypatch.setenv(registry.WEIGHTS_ENV, str(tmp_path / "nowhere"))
    registry.reload()
    segmenters.clear_cache()
    try:
        picture(tmp_path / "x.png", (9, 8))
        r = run("segment", tmp_path / "x.png", "-o", tmp_path / "y.png")
        assert r.exit_code == 1 and "sqgan: error:" in r.output and "registry" in r.output
    finally:
        registry.reload()
        segmenters.clear_cache()

"""Tests for sqgan_codec.imageio: every kind of input image, and atomic writes.

All images are made here with Pillow / numpy (no files from outside the test)."""
from __future__ import annotations

import io
import os
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sqgan_codec import imageio
from sqgan_codec.errors import ImageInputError, OutputError, OutputExistsError, SqganError
from sqgan_codec.imageio import (
    MAX_PIXELS, ImageInputWarning, LoadedImage, load_image, same_file, save_image_atomic,
    write_atomic,
)


def gradient(h: int = 6, w: int = 8) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([x * 30 % 256, y * 40 % 256, (x + y) * 10 % 256], axis=2).astype(np.uint8)


def png_bytes(im: Image.Image, fmt: str = "PNG", **params) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **params)
    return buf.getvalue()


def load_quiet(source, **kw) -> LoadedImage:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ImageInputWarning)
        return load_image(source, **kw)


def open_image(path) -> Image.Image:
    """Image.open, loaded and closed (no ResourceWarning)."""
    with Image.open(path) as im:
        im.load()
    return im


# ----------------------------------------------------------------------------- arrays


def test_rgb_uint8_array_is_copied():
    arr = gradient()
    li = load_image(arr)
    assert li.rgb.dtype == np.uint8 and li.rgb.shape == (6, 8, 3)
    assert li.colour_mode == "RGB" and not li.alpha_dropped and li.name == "<array>"
    np.testing.assert_array_equal(li.rgb, arr)
    arr[...] = 99
    np.testing.assert_array_equal(li.rgb, gradient())  # a copy, not a view
    assert li.rgb.flags.c_contiguous
    assert (li.width, li.height, li.size) == (8, 6, (8, 6))


def test_non_contiguous_array():
    arr = gradient(10, 12)[::2, ::-1]
    li = load_image(arr)
    np.testing.assert_array_equal(li.rgb, arr)
    assert li.rgb.flags.c_contiguous


@pytest.mark.parametrize("shape", [(5, 7), (5, 7, 1)])
def test_grey_arrays(shape):
    arr = np.arange(35, dtype=np.uint8).reshape(shape)
    li = load_image(arr)
    assert li.colour_mode == "L" and li.rgb.shape == (5, 7, 3)
    for c in range(3):
        np.testing.assert_array_equal(li.rgb[:, :, c], arr.reshape(5, 7))


def test_rgba_array_drops_alpha_with_warning():
    arr = np.concatenate([gradient(), np.full((6, 8, 1), 255, np.uint8)], axis=2)
    arr[2, 3, 3] = 0
    with pytest.warns(ImageInputWarning, match="<array>: alpha channel dropped"):
        li = load_image(arr)
    assert li.alpha_dropped and li.colour_mode == "RGB"
    np.testing.assert_array_equal(li.rgb, arr[:, :, :3])  # colour under alpha kept


def test_opaque_alpha_is_dropped_silently():
    arr = np.concatenate([gradient(), np.full((6, 8, 1), 255, np.uint8)], axis=2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        li = load_image(arr)
    assert not li.alpha_dropped


def test_grey_alpha_array():
    arr = np.zeros((3, 4, 2), np.uint8)
    arr[..., 0] = 7
    arr[..., 1] = 128
    li = load_quiet(arr)
    assert li.colour_mode == "L" and li.alpha_dropped and (li.rgb == 7).all()


def test_uint16_array_rounds():
    k = np.arange(256, dtype=np.uint16)
    arr = (k * 257).reshape(16, 16)
    li = load_image(arr)
    np.testing.assert_array_equal(li.rgb[:, :, 0].ravel(), np.arange(256))
    edge = load_image(np.array([[0, 128, 129, 65535, 32896]], np.uint16))
    assert edge.rgb[0, :, 0].tolist() == [0, 0, 1, 255, 128]
    big_endian = load_image(np.array([[65535, 257]], dtype=">u2"))
    assert big_endian.rgb[0, :, 0].tolist() == [255, 1]


def test_uint16_rgb_array():
    arr = gradient().astype(np.uint16) * 257
    np.testing.assert_array_equal(load_image(arr).rgb, gradient())


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16])
def test_float_array(dtype):
    arr = (gradient() / 255.0).astype(dtype)
    li = load_image(arr)
    assert np.abs(li.rgb.astype(int) - gradient().astype(int)).max() <= 1


def test_float_array_tolerates_tiny_overshoot():
    li = load_image(np.array([[-0.001, 1.001]], np.float32))
    assert li.rgb[0, :, 0].tolist() == [0, 255]


@pytest.mark.parametrize("values, match", [
    ([[0.0, 2.0]], r"\[0, 1\]"),
    ([[0.0, 255.0]], r"\[0, 1\]"),
    ([[-1.0, 0.5]], r"\[0, 1\]"),
    ([[np.nan, 0.5]], "NaN"),
    ([[np.inf, 0.5]], "NaN or infinite"),
])
def test_bad_float_arrays(values, match):
    with pytest.raises(ImageInputError, match=match):
        load_image(np.array(values, np.float32))


@pytest.mark.parametrize("dtype", [np.int32, np.int64, np.int8, bool, np.complex64, np.uint32,
                                   object])
def test_bad_dtypes(dtype):
    with pytest.raises(ImageInputError, match="dtype"):
        load_image(np.zeros((4, 4, 3), dtype=dtype))


@pytest.mark.parametrize("shape", [(12,), (2, 3, 5), (2, 3, 3, 1), (1, 2, 3, 4)])
def test_bad_shapes(shape):
    with pytest.raises(ImageInputError, match="shape"):
        load_image(np.zeros(shape, np.uint8))


@pytest.mark.parametrize("shape", [(0, 5, 3), (5, 0), (0,), (0, 0, 3)])
def test_zero_sized_arrays(shape):
    with pytest.raises(ImageInputError, match="empty"):
        load_image(np.zeros(shape, np.uint8))


def test_tiny_images():
    assert load_image(np.array([[[1, 2, 3]]], np.uint8)).rgb.tolist() == [[[1, 2, 3]]]
    assert load_image(Image.new("RGB", (1, 1), (4, 5, 6))).rgb.tolist() == [[[4, 5, 6]]]
    assert load_image(png_bytes(Image.new("L", (1, 1), 9))).rgb.tolist() == [[[9, 9, 9]]]


def test_too_many_pixels_array():
    with pytest.raises(ImageInputError, match=r"10x10 = 100 pixels.*limit of 99 pixels"):
        load_image(np.zeros((10, 10, 3), np.uint8), max_pixels=99)
    assert load_image(np.zeros((10, 10, 3), np.uint8), max_pixels=100).size == (10, 10)
    from sqgan_codec.codec import Codec

    assert MAX_PIXELS == 12_000_000  # one limit: reading images and decoding streams
    assert Codec.__init__.__kwdefaults__["max_pixels"] is None  # None: MAX_PIXELS


# ----------------------------------------------------------------------------- PIL images


@pytest.mark.parametrize("mode, colour_mode", [
    ("RGB", "RGB"), ("L", "L"), ("1", "L"), ("P", "RGB"), ("CMYK", "RGB"), ("YCbCr", "RGB"),
    ("I", "L"), ("I;16", "L"), ("I;16B", "L"), ("F", "L"), ("RGBX", "RGB"), ("LAB", "RGB"),
    ("HSV", "RGB"),
])
def test_pil_modes(mode, colour_mode):
    li = load_image(Image.new(mode, (5, 4)))
    assert li.rgb.shape == (4, 5, 3) and li.rgb.dtype == np.uint8
    assert li.colour_mode == colour_mode and not li.alpha_dropped


@pytest.mark.parametrize("mode", ["RGBA", "LA", "PA", "RGBa", "La"])
def test_pil_alpha_modes(mode):
    im = Image.new(mode, (3, 2))
    with pytest.warns(ImageInputWarning, match="alpha channel dropped"):
        li = load_image(im)
    assert li.alpha_dropped


def test_pil_cmyk_white_and_black():
    li = load_image(Image.new("CMYK", (2, 2), (0, 0, 0, 0)))
    assert (li.rgb == 255).all()
    li = load_image(Image.new("CMYK", (2, 2), (0, 0, 0, 255)))
    assert (li.rgb == 0).all()


def test_pil_16bit_modes_scale():
    im = Image.fromarray(np.array([[0, 257 * 100, 65535]], np.uint16))
    assert im.mode == "I;16"
    assert load_image(im).rgb[0, :, 0].tolist() == [0, 100, 255]
    im = Image.fromarray(np.array([[0, 257 * 100, 65535, 70000, -5]], np.int32))
    assert im.mode == "I"
    assert load_image(im).rgb[0, :, 0].tolist() == [0, 100, 255, 255, 0]


def test_pil_float_modes():
    im = Image.fromarray(np.array([[0.0, 0.5, 1.0]], np.float32))
    assert load_image(im).rgb[0, :, 0].tolist() == [0, 128, 255]
    im = Image.fromarray(np.array([[0.0, 100.0, 300.0]], np.float32))  # Pillow's 0..255
    assert load_image(im).rgb[0, :, 0].tolist() == [0, 100, 255]
    with pytest.raises(ImageInputError, match="NaN"):
        load_image(Image.fromarray(np.array([[np.nan]], np.float32)))


def test_pil_palette_with_transparency():
    im = Image.new("P", (4, 1))
    im.putpalette([255, 0, 0, 0, 255, 0] + [0] * 762)
    im.putdata([0, 1, 0, 1])
    im.info["transparency"] = 1
    with pytest.warns(ImageInputWarning):
        li = load_image(im)
    assert li.alpha_dropped and li.colour_mode == "RGB"
    assert li.rgb[0, :, :].tolist() == [[255, 0, 0], [0, 255, 0]] * 2
    # transparency index not used by any pixel: nothing lost, no warning
    im.putdata([0, 0, 0, 0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert not load_image(im).alpha_dropped


def test_pil_image_name_from_filename(tmp_path):
    path = tmp_path / "named.png"
    Image.new("RGBA", (2, 2), (0, 0, 0, 0)).save(path)
    with Image.open(path) as im:
        with pytest.warns(ImageInputWarning, match="named.png"):
            li = load_image(im)
    assert li.name == str(path)


# ----------------------------------------------------------------------------- files


def test_png_from_path_str_bytes_and_fileobj(tmp_path):
    arr = gradient()
    path = tmp_path / "x.png"
    Image.fromarray(arr).save(path)
    for source in (path, str(path), path.read_bytes(), open(path, "rb")):
        li = load_image(source)
        np.testing.assert_array_equal(li.rgb, arr)
        if hasattr(source, "close"):
            source.close()
    assert load_image(path).name == str(path)
    assert load_image(path.read_bytes()).name == "<bytes>"
    assert load_image(path.read_bytes(), name="mine").name == "mine"


@pytest.mark.parametrize("orientation", [1, 2, 3, 4, 5, 6, 7, 8])
def test_exif_orientation_applied(tmp_path, orientation):
    arr = gradient(4, 6)
    im = Image.fromarray(arr)
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = tmp_path / "o.png"
    im.save(path, exif=exif)
    expected = {
        1: arr, 2: arr[:, ::-1], 3: arr[::-1, ::-1], 4: arr[::-1],
        5: arr.transpose(1, 0, 2),             # transpose
        6: np.rot90(arr, -1),                  # rotate 90 clockwise
        7: np.rot90(arr, -1)[::-1],            # transverse
        8: np.rot90(arr, 1),                   # rotate 90 anticlockwise
    }[orientation]
    li = load_image(path)
    np.testing.assert_array_equal(li.rgb, expected)


def test_exif_orientation_jpeg(tmp_path):
    im = Image.new("RGB", (40, 20), (200, 10, 10))
    im.paste((10, 10, 200), (0, 0, 20, 20))  # left half blue
    exif = Image.Exif()
    exif[0x0112] = 6  # display rotated 90 degrees clockwise
    path = tmp_path / "o.jpg"
    im.save(path, exif=exif, quality=95)
    li = load_image(path)
    assert li.rgb.shape == (40, 20, 3)
    assert li.rgb[2, 10, 2] > 150 and li.rgb[37, 10, 0] > 150  # blue on top after rotation


def test_grey_png_and_16bit_grey_png(tmp_path):
    path = tmp_path / "g.png"
    Image.new("L", (3, 2), 77).save(path)
    li = load_image(path)
    assert li.colour_mode == "L" and (li.rgb == 77).all()
    arr16 = np.array([[0, 257 * 9, 65535], [32896, 1000, 60000]], np.uint16)
    Image.fromarray(arr16).save(path)
    li = load_image(path)
    assert li.colour_mode == "L"
    np.testing.assert_array_equal(li.rgb[:, :, 0], np.round(arr16 / 257).astype(np.uint8))


def rgb16() -> np.ndarray:
    rng = np.random.default_rng(1)
    return rng.integers(0, 65536, (5, 7, 3), dtype=np.uint16)


def test_16bit_rgb_png_via_cv2(tmp_path):
    cv2 = pytest.importorskip("cv2")
    arr = rgb16()
    ok, enc = cv2.imencode(".png", arr[:, :, ::-1].copy())
    assert ok
    with Image.open(io.BytesIO(enc.tobytes())) as im:
        assert im.mode == "RGB"  # what Pillow gives: truncated to the high byte
    li = load_image(enc.tobytes())
    np.testing.assert_array_equal(li.rgb, np.round(arr / 257).astype(np.uint8))
    assert li.colour_mode == "RGB"


def test_16bit_rgba_png_via_cv2():
    cv2 = pytest.importorskip("cv2")
    arr = np.concatenate([rgb16(), np.full((5, 7, 1), 65535, np.uint16)], axis=2)
    arr[0, 0, 3] = 0
    ok, enc = cv2.imencode(".png", arr[:, :, [2, 1, 0, 3]].copy())
    with pytest.warns(ImageInputWarning):
        li = load_image(enc.tobytes())
    assert li.alpha_dropped
    np.testing.assert_array_equal(li.rgb, np.round(arr[:, :, :3] / 257).astype(np.uint8))


def test_16bit_rgb_png_without_cv2(monkeypatch):
    cv2 = pytest.importorskip("cv2")
    arr = rgb16()
    ok, enc = cv2.imencode(".png", arr[:, :, ::-1].copy())
    monkeypatch.setitem(sys.modules, "cv2", None)  # import cv2 -> ImportError
    li = load_image(enc.tobytes())
    diff = li.rgb.astype(int) - np.round(arr / 257).astype(int)
    assert np.abs(diff).max() <= 1


def test_cmyk_jpeg_and_tiff(tmp_path):
    im = Image.new("CMYK", (8, 8), (0, 255, 255, 0))  # red
    for ext in ("jpg", "tif"):
        path = tmp_path / f"c.{ext}"
        im.save(path)
        li = load_image(path)
        assert li.colour_mode == "RGB"
        r, g, b = li.rgb[4, 4].tolist()
        assert r > 200 and g < 60 and b < 60


def test_rgba_la_palette_files_warn_with_name(tmp_path):
    cases = {
        "rgba.png": Image.new("RGBA", (4, 4), (10, 20, 30, 0)),
        "la.png": Image.new("LA", (4, 4), (10, 128)),
    }
    p = Image.new("P", (4, 4), 1)
    p.putpalette([0, 0, 0, 50, 60, 70] + [0] * 762)
    p.info["transparency"] = 1
    cases["p.png"] = p
    for name, im in cases.items():
        path = tmp_path / name
        im.save(path)
        with pytest.warns(ImageInputWarning, match=name):
            li = load_image(path)
        assert li.alpha_dropped, name
    li = load_quiet(tmp_path / "rgba.png")
    assert li.rgb[0, 0].tolist() == [10, 20, 30]  # not composited on white or black


def test_palette_png_without_transparency(tmp_path):
    path = tmp_path / "p.png"
    Image.fromarray(gradient()).convert("P", palette=Image.Palette.ADAPTIVE).save(path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        li = load_image(path)
    assert li.colour_mode == "RGB" and not li.alpha_dropped


def test_gif_first_frame(tmp_path):
    path = tmp_path / "a.gif"
    frames = [Image.new("RGB", (4, 4), c) for c in [(255, 0, 0), (0, 0, 255)]]
    frames[0].save(path, save_all=True, append_images=frames[1:])
    li = load_image(path)
    assert li.rgb[0, 0].tolist() == [255, 0, 0]


def test_1bit_and_webp_and_bmp(tmp_path):
    Image.new("1", (3, 3), 1).save(tmp_path / "b.png")
    assert (load_image(tmp_path / "b.png").rgb == 255).all()
    Image.fromarray(gradient()).save(tmp_path / "x.bmp")
    np.testing.assert_array_equal(load_image(tmp_path / "x.bmp").rgb, gradient())


# ----------------------------------------------------------------------------- bad files


def test_missing_file(tmp_path):
    with pytest.raises(ImageInputError, match="no such file"):
        load_image(tmp_path / "nope.png")


def test_folder_is_not_an_image(tmp_path):
    with pytest.raises(ImageInputError, match="is a folder"):
        load_image(tmp_path)


def test_empty_file_and_bytes(tmp_path):
    (tmp_path / "e.png").write_bytes(b"")
    with pytest.raises(ImageInputError, match=r"e\.png: file is empty"):
        load_image(tmp_path / "e.png")
    with pytest.raises(ImageInputError, match="empty"):
        load_image(b"")


def test_not_an_image(tmp_path):
    (tmp_path / "t.png").write_bytes(b"hello, this is text and not a picture\n" * 3)
    with pytest.raises(ImageInputError, match=r"t\.png: not an image"):
        load_image(tmp_path / "t.png")


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "GIF", "TIFF", "BMP", "WEBP"])
def test_truncated_files(tmp_path, fmt):
    rng = np.random.default_rng(0)
    data = png_bytes(Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)), fmt)
    for cut in (len(data) // 2, 40, 12):
        with pytest.raises(ImageInputError):
            load_image(data[:cut], name=f"cut.{fmt}")


def test_corrupt_png_crc(tmp_path):
    data = bytearray(png_bytes(Image.fromarray(gradient(32, 32))))
    data[60] ^= 0xFF  # inside IDAT
    with pytest.raises(ImageInputError, match="corrupt"):
        load_image(bytes(data))


def test_unsupported_source_type():
    with pytest.raises(ImageInputError, match="cannot read an image from a int"):
        load_image(42)  # type: ignore[arg-type]
    with pytest.raises(ImageInputError, match="binary mode"):
        load_image(io.StringIO("x"))


def test_errors_are_sqgan_errors():
    assert issubclass(ImageInputError, SqganError)
    assert issubclass(OutputExistsError, OutputError) and issubclass(OutputError, SqganError)


def test_too_many_pixels_file(tmp_path):
    path = tmp_path / "big.png"
    Image.new("RGB", (30, 20)).save(path)
    with pytest.raises(ImageInputError, match=r"big\.png: .*30x20 = 600 pixels.*limit of 599"):
        load_image(path, max_pixels=599)
    with pytest.raises(ImageInputError, match="600 pixels"):
        load_image(Image.new("RGB", (30, 20)), max_pixels=599)


def test_decompression_bomb_warning_never_crashes(tmp_path, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    path = tmp_path / "b.png"
    Image.new("RGB", (12, 12)).save(path)  # 144 pixels: Pillow warns (> 100)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # as under `python -W error`
        li = load_image(path)  # within our max_pixels: fine, and no warning escapes
        assert li.size == (12, 12)
        with pytest.raises(ImageInputError, match="144 pixels.*limit of 120"):
            load_image(path, max_pixels=120)


def test_decompression_bomb_error_is_image_input_error(tmp_path, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    path = tmp_path / "bomb.png"
    Image.new("RGB", (15, 15)).save(path)  # 225 > 2 * 100: Pillow refuses to open
    with pytest.raises(ImageInputError, match=r"bomb\.png: image is too large: 225 pixels.*bomb"):
        load_image(path)


def test_loaded_image_passes_through():
    li = load_image(gradient())
    assert load_image(li) is li
    with pytest.raises(ImageInputError, match="limit"):
        load_image(li, max_pixels=10)


def test_to_pil():
    assert load_image(gradient()).to_pil().mode == "RGB"
    assert load_image(np.zeros((2, 2), np.uint8)).to_pil().mode == "L"


# ----------------------------------------------------------------------------- writing


def no_temp_files(folder: Path) -> bool:
    return not [p for p in folder.iterdir() if p.name.endswith(".part")]


def test_write_atomic_basic(tmp_path):
    path = tmp_path / "out.bin"
    write_atomic(path, b"abc")
    assert path.read_bytes() == b"abc"
    assert no_temp_files(tmp_path)
    old = os.umask(0o022)
    os.umask(old)
    assert (path.stat().st_mode & 0o777) == (0o666 & ~old)


def test_write_atomic_refuses_existing(tmp_path):
    path = tmp_path / "out.bin"
    path.write_bytes(b"old")
    with pytest.raises(OutputExistsError, match="already exists"):
        write_atomic(path, b"new")
    assert path.read_bytes() == b"old"
    write_atomic(path, b"new", overwrite=True)
    assert path.read_bytes() == b"new"
    assert no_temp_files(tmp_path)


def test_write_atomic_refuses_dangling_symlink(tmp_path):
    (tmp_path / "link").symlink_to(tmp_path / "nowhere")
    with pytest.raises(OutputExistsError):
        write_atomic(tmp_path / "link", b"x")


def test_write_atomic_never_replaces_input(tmp_path):
    src = tmp_path / "in.png"
    src.write_bytes(b"input")
    for target in (src, tmp_path / "sub" / ".." / "in.png"):
        (tmp_path / "sub").mkdir(exist_ok=True)
        with pytest.raises(OutputError, match="is the input file"):
            write_atomic(target, b"x", overwrite=True, input_path=src)
    (tmp_path / "alias").symlink_to(src)
    with pytest.raises(OutputError, match="is the input file"):
        write_atomic(tmp_path / "alias", b"x", overwrite=True, input_path=src)
    assert src.read_bytes() == b"input"


def test_write_atomic_missing_folder_and_folder_target(tmp_path):
    with pytest.raises(OutputError, match="does not exist"):
        write_atomic(tmp_path / "no" / "x.bin", b"x")
    with pytest.raises(OutputError, match="is a folder"):
        write_atomic(tmp_path, b"x", overwrite=True)
    (tmp_path / "file").write_bytes(b"")
    with pytest.raises(OutputError):
        write_atomic(tmp_path / "file" / "x.bin", b"x")


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root can write anywhere")
def test_write_atomic_unwritable_folder(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        with pytest.raises(OutputError, match="cannot write to folder"):
            write_atomic(folder / "x.bin", b"x")
    finally:
        folder.chmod(0o700)


def test_write_atomic_unwritable_folder_simulated(tmp_path, monkeypatch):
    def refuse(*a, **k):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(imageio.tempfile, "mkstemp", refuse)
    with pytest.raises(OutputError, match="cannot write to folder.*Permission denied"):
        write_atomic(tmp_path / "x.bin", b"x")


@pytest.mark.parametrize("exc", [OSError(28, "No space left on device"), KeyboardInterrupt()])
def test_write_atomic_leaves_nothing_on_failure(tmp_path, monkeypatch, exc):
    def boom(*a, **k):
        raise exc

    monkeypatch.setattr(imageio.os, "fsync", boom)
    with pytest.raises(OutputError if isinstance(exc, OSError) else KeyboardInterrupt):
        write_atomic(tmp_path / "x.bin", b"x")
    assert list(tmp_path.iterdir()) == []


def test_write_atomic_without_hard_links(tmp_path, monkeypatch):
    def no_links(*a, **k):
        raise OSError(1, "Operation not permitted")

    monkeypatch.setattr(imageio.os, "link", no_links)
    write_atomic(tmp_path / "x.bin", b"x")
    assert (tmp_path / "x.bin").read_bytes() == b"x"
    with pytest.raises(OutputExistsError):
        write_atomic(tmp_path / "x.bin", b"y")
    assert no_temp_files(tmp_path)


def test_write_atomic_race_on_create(tmp_path, monkeypatch):
    """Someone creates the file between the check and the move: not clobbered."""
    real_link = os.link

    def link_after_race(src, dst, *a, **k):
        Path(dst).write_bytes(b"theirs")
        return real_link(src, dst, *a, **k)

    monkeypatch.setattr(imageio.os, "link", link_after_race)
    with pytest.raises(OutputExistsError):
        write_atomic(tmp_path / "x.bin", b"mine")
    assert (tmp_path / "x.bin").read_bytes() == b"theirs"
    assert no_temp_files(tmp_path)


@pytest.mark.parametrize("name, fmt", [
    ("a.png", "PNG"), ("a.PNG", "PNG"), ("a.jpg", "JPEG"), ("a.jpeg", "JPEG"),
    ("a.webp", "WEBP"), ("a.tif", "TIFF"), ("a.bmp", "BMP"), ("a.xyz", "PNG"), ("a", "PNG"),
])
def test_save_image_atomic_format_by_suffix(tmp_path, name, fmt):
    im = Image.fromarray(gradient())
    save_image_atomic(im, tmp_path / name)
    with open_image(tmp_path / name) as back:
        assert back.format == fmt and back.size == (8, 6)
    assert no_temp_files(tmp_path)
    with pytest.raises(OutputExistsError):
        save_image_atomic(im, tmp_path / name)
    save_image_atomic(im, tmp_path / name, overwrite=True)


def test_save_image_atomic_lossless_png_and_jpeg_of_rgba(tmp_path):
    im = Image.fromarray(gradient())
    save_image_atomic(im, tmp_path / "a.png")
    np.testing.assert_array_equal(np.asarray(open_image(tmp_path / "a.png")), gradient())
    save_image_atomic(Image.new("RGBA", (3, 3)), tmp_path / "b.jpg")  # converted, no crash
    with pytest.raises(OutputError, match="is the input file"):
        save_image_atomic(im, tmp_path / "a.png", overwrite=True, input_path=tmp_path / "a.png")


def test_same_file(tmp_path):
    a = tmp_path / "a"
    a.write_bytes(b"")
    (tmp_path / "d").mkdir()
    assert same_file(a, tmp_path / "d" / ".." / "a")
    assert same_file(str(a), a)
    (tmp_path / "l").symlink_to(a)
    assert same_file(tmp_path / "l", a)
    assert not same_file(a, tmp_path / "b")
    assert same_file(tmp_path / "b", tmp_path / "d" / ".." / "b")  # neither exists yet
    os.link(a, tmp_path / "hard")
    assert same_file(a, tmp_path / "hard")


def test_icc_profiles(tmp_path):
    ImageCms = pytest.importorskip("PIL.ImageCms")
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    path = tmp_path / "icc.png"
    Image.fromarray(gradient()).save(path, icc_profile=srgb)
    np.testing.assert_array_equal(load_image(path).rgb, gradient())  # sRGB: untouched
    Image.fromarray(gradient()).save(path, icc_profile=b"not a profile at all")
    np.testing.assert_array_equal(load_image(path).rgb, gradient())  # broken: ignored


def test_stale_temporary_files_of_killed_writers_are_removed(tmp_path):
    """A writer killed between creating its temporary file and moving it into place leaves a
    hidden ``.NAME.XXXXXXXX.part``: the next write to that folder removes it once it is old
    enough not to belong to a write in progress; other hidden files are never touched."""
    import time as _time

    from sqgan_codec import imageio

    stale = tmp_path / ".a.sqg.k2j4h5g6.part"
    fresh = tmp_path / ".b.sqg.x9y8z7w6.part"
    other = tmp_path / ".notes.part"
    for p in (stale, fresh, other):
        p.write_bytes(b"x")
    old = _time.time() - imageio.STALE_PART_SECONDS - 60
    os.utime(stale, (old, old))
    os.utime(other, (old, old))
    save_image_atomic(Image.new("RGB", (4, 4)), tmp_path / "c.png")
    assert not stale.exists() and fresh.exists() and other.exists()
    assert (tmp_path / "c.png").exists()

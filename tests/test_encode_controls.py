"""Encode-time controls with the shipped weights: byte caps, class priorities, regions of
interest, split search, lossless semantic maps and the decoded-map output."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sqgan_codec import bitstream
from sqgan_codec.classes import CLASS_NAMES
from sqgan_codec.codec import Codec
from sqgan_codec.options import EncodeOptions, parse_priority

from conftest import camvid_test_image
from sqgan_codec.entropy import decode_tokens



@pytest.fixture(scope="module")
def scene() -> np.ndarray:
    return camvid_test_image(60)


def image_keep_mask(codec: Codec, data: bytes) -> np.ndarray:
    _, _, state = codec.decode_semantic_map(data)
    stream = bitstream.unpack(data)
    header = stream.header
    keep, _ = decode_tokens(stream.chunks["I"], header.grid, state["token_context"], codec.image_tables)
    return keep


def test_parse_priority() -> None:
    assert parse_priority("pedestrian=4, SignSymbol=4,Sky=0") == {"Pedestrian": 4.0, "SignSymbol": 4.0,
                                                                  "Sky": 0.0}
    assert parse_priority("ALL=0,pedestrian=1") == {"all": 0.0, "Pedestrian": 1.0}
    for bad in ("Foo=1", "Sky", "Sky=x", "everything=0"):
        with pytest.raises(ValueError):
            parse_priority(bad)
    with pytest.raises(ValueError):
        EncodeOptions(priority={"Sky": -1.0})
    with pytest.raises(ValueError):
        EncodeOptions(bpp=0.05, keep=0.3)


@pytest.mark.slow
def test_max_bytes_is_a_hard_cap(codec: Codec, scene: np.ndarray) -> None:
    smallest = len(codec.encode(scene, keep=0.0, refine="off"))  # the floor: no refinement layer
    largest = len(codec.encode(scene, keep=1.0))
    for cap in (smallest + 40, smallest + 200, largest + 100):
        data = codec.encode(scene, max_bytes=cap)
        assert len(data) <= cap
        assert len(data) >= min(cap - 40, largest)  # and the cap is used, not wasted
        assert np.asarray(codec.decode(data)).shape == scene.shape
    with pytest.warns(UserWarning, match="cannot go below"):
        data = codec.encode(scene, max_bytes=10)
    assert len(data) == smallest


@pytest.mark.slow
def test_encode_rates_matches_separate_encodes(codec: Codec, scene: np.ndarray) -> None:
    targets = [0.025, 0.05, 0.1]
    for options in ({}, {"refine": "on", "priority": {"Pedestrian": 4.0}}):
        together = codec.encode_rates(scene, targets, **options)
        assert together == [codec.encode(scene, bpp=t, **options) for t in targets]
        assert [len(d) for d in together] == sorted(len(d) for d in together)
    with pytest.raises(ValueError):
        codec.encode_rates(scene, [0.05, -1.0])


def test_priority_moves_tokens_to_the_named_class(codec: Codec, scene: np.ndarray) -> None:
    analysis = codec.analyse(scene)
    counts = codec.block_classes(analysis)
    majority = counts.argmax(-1)
    road = CLASS_NAMES.index("Road")
    sky = CLASS_NAMES.index("Sky")
    plain = image_keep_mask(codec, codec.encode(scene, keep=0.15))
    boosted = image_keep_mask(codec, codec.encode(scene, keep=0.15, priority={"Road": 8.0, "Sky": 0.0}))
    assert plain.sum() == boosted.sum()  # same number of tokens, other places
    assert boosted[majority == road].sum() > plain[majority == road].sum()
    assert (majority == sky).sum() >= 10  # the scene has sky: weight 0 must take tokens from it
    assert boosted[majority == sky].sum() < plain[majority == sky].sum()


def test_all_weighs_the_classes_not_named(codec: Codec, scene: np.ndarray) -> None:
    """``all=0,Road=1`` spends the tokens on road blocks first: as Road=8 with every other class 0."""
    majority = codec.block_classes(codec.analyse(scene)).argmax(-1)
    road = CLASS_NAMES.index("Road")
    plain = image_keep_mask(codec, codec.encode(scene, keep=0.15))
    only_road = image_keep_mask(codec, codec.encode(scene, keep=0.15, priority={"all": 0.0, "Road": 1.0}))
    spelled_out = {name: 0.0 for name in CLASS_NAMES if name != "Road"} | {"Road": 1.0}
    assert np.array_equal(only_road, image_keep_mask(codec, codec.encode(scene, keep=0.15, priority=spelled_out)))
    assert only_road[majority == road].sum() > plain[majority == road].sum()


def test_roi_keeps_more_tokens_inside(codec: Codec, scene: np.ndarray) -> None:
    box = (320, 48, 128, 96)  # x, y, w, h in pixels: 8×6 latent blocks
    plain = image_keep_mask(codec, codec.encode(scene, keep=0.1))
    focused = image_keep_mask(codec, codec.encode(scene, keep=0.1, roi=[box]))
    inside = (slice(3, 9), slice(20, 28))
    assert focused[inside].sum() > plain[inside].sum()


def test_split_search_respects_the_target(codec: Codec, scene: np.ndarray) -> None:
    pixels = scene.shape[0] * scene.shape[1]
    fixed = codec.encode(scene, bpp=0.04)
    searched = codec.encode(scene, bpp=0.04, split="search")
    assert 8 * len(searched) / pixels <= 0.04
    assert len(searched) >= 0.9 * len(fixed)
    assert np.asarray(codec.decode(searched)).shape == scene.shape


def test_lossless_semantic_map(codec: Codec, scene: np.ndarray) -> None:
    if codec.lossless_tables is None:
        pytest.skip("shipped model has no lossless semantic-map tables")
    analysis = codec.analyse(scene)
    data = codec.encode(scene, keep=0.2, ssm="lossless", semantic_map=analysis.semantic_map)
    assert bitstream.CHUNK_SEMANTIC_LOSSLESS in bitstream.unpack(data).chunks
    image, decoded_map = codec.decode_with_map(data)
    assert np.array_equal(decoded_map, analysis.semantic_map)
    assert np.asarray(image).shape == scene.shape
    base = codec.decode(data, layers="base")
    assert base.size == image.size


@pytest.mark.slow
def test_cli_controls_and_ssm_out(tmp_path: Path, scene: np.ndarray) -> None:
    src = tmp_path / "scene.png"
    Image.fromarray(scene).save(src)
    sqg = tmp_path / "scene.sqg"
    cli = [sys.executable, "-m", "sqgan_codec.cli"]
    run = subprocess.run(cli + ["encode", str(src), "-o", str(sqg), "--max-bytes", "700", "--priority",
                                "Pedestrian=4,Sky=0", "--roi", "0,0,64,64", "--json"],
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["bytes"] <= 700
    ssm_png = tmp_path / "scene_ssm.png"
    run = subprocess.run(cli + ["decode", str(sqg), "-o", str(tmp_path / "out.png"), "--ssm-out", str(ssm_png)],
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    ids = np.asarray(Image.open(ssm_png))
    assert ids.shape == scene.shape[:2] and ids.max() < len(CLASS_NAMES)
    bad = subprocess.run(cli + ["encode", str(src), "-o", str(tmp_path / "x.sqg"), "--priority", "Foo=2"],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "Foo" in bad.stderr and not (tmp_path / "x.sqg").exists()


def test_gradient_importance_ranks_what_the_segmenter_needs(codec: Codec, scene: np.ndarray) -> None:
    """--importance gradient: masking the positions it ranks highest changes the segmentation of
    the decode more than masking those it ranks lowest; at equal size, a different choice."""
    import torch

    from sqgan_codec.importance import gradient_scores
    from sqgan_codec.nets.blocks import one_hot_map

    analysis = codec.analyse(scene)
    scores = gradient_scores(codec, analysis)
    gh, gw = analysis.image_indices.shape
    assert scores.shape == (1, 1, gh, gw) and float(scores.min()) > 0 and float(scores.max()) == 1.0
    assert len(torch.unique(scores)) == gh * gw  # a ranking
    h, w = scene.shape[:2]
    labels = torch.from_numpy(codec.pad_to_grid(analysis.semantic_map, gh, gw))[None].long()
    with torch.inference_mode():
        codes = codec.net.image.quantizer.indices_to_codes(torch.from_numpy(analysis.image_indices)[None])
        onehot = one_hot_map(labels, codec.num_classes)

        def agreement(keep: torch.Tensor) -> float:
            rgb = codec.net.image.decode_codes(codes, keep.view(1, 1, gh, gw), onehot)
            pixels = ((rgb[0].clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).numpy()[:h, :w]
            return float((codec.segmenter.segment(np.ascontiguousarray(pixels)) == analysis.semantic_map).mean())

        order = scores.flatten().argsort()
        n = len(order) // 5
        top, bottom = torch.ones(gh * gw, dtype=torch.bool), torch.ones(gh * gw, dtype=torch.bool)
        top[order[-n:]] = False
        bottom[order[:n]] = False
        assert agreement(top) < agreement(bottom) - 0.005  # measured: 0.907 against 0.956
    samm = codec.encode(scene, bpp=0.03, tune="semantic")
    grad = codec.encode(scene, bpp=0.03, tune="semantic", importance="gradient")
    budget = 0.03 * h * w / 8
    assert 0.9 * budget <= len(grad) <= budget
    assert not np.array_equal(image_keep_mask(codec, samm), image_keep_mask(codec, grad))
    with pytest.raises(ValueError, match="importance"):
        EncodeOptions(importance="random")


def test_gradient_importance_of_a_large_image_comes_from_a_smaller_copy(codec: Codec, scene: np.ndarray,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """Above importance.MAX_PIXELS the backward pass runs on a scaled-down copy (its memory grows
    with the pixels): the scores still rank every position of the image's own grid."""
    import torch

    from sqgan_codec import importance

    analysis = codec.analyse(scene)
    calls = []
    original = importance._scores_from_a_smaller_copy
    monkeypatch.setattr(importance, "_scores_from_a_smaller_copy",
                        lambda *a: calls.append(1) or original(*a))
    monkeypatch.setattr(importance, "MAX_PIXELS", scene.shape[0] * scene.shape[1] // 3)
    scores = importance.gradient_scores(codec, analysis)
    gh, gw = analysis.image_indices.shape
    assert calls and scores.shape == (1, 1, gh, gw) and len(torch.unique(scores)) == gh * gw


def test_cli_gradient_importance_needs_the_bundled_segmenter(tmp_path: Path, scene: np.ndarray) -> None:
    from click.testing import CliRunner

    from sqgan_codec.cli import main

    src = tmp_path / "scene.png"
    Image.fromarray(scene).save(src)
    labels = tmp_path / "scene_labels.png"
    Image.fromarray(np.zeros(scene.shape[:2], np.uint8)).save(labels)
    result = CliRunner().invoke(main, ["encode", str(src), "-o", str(tmp_path / "out.sqg"), "--bpp", "0.03",
                                       "--importance", "gradient", "--segmenter", f"labels:{labels}"])
    assert result.exit_code == 2 and "bundled segmenter" in result.output
    assert not (tmp_path / "out.sqg").exists()

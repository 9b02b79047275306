"""Class vocabularies are data: the built-in files, their validation, and the checks that keep a
model, its segmenter and a stream on one vocabulary."""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from sqgan_codec import bitstream, classes, registry
from sqgan_codec.codec import Codec
from sqgan_codec.errors import ModelMismatchError
from sqgan_codec.vocabulary import VocabularyError, built_in, load, parse


def test_built_in_vocabularies() -> None:
    vocabs = built_in()
    assert set(vocabs) >= {"camvid11", "cityscapes19"}
    assert len({v.class_set for v in vocabs.values()}) == len(vocabs)  # header bytes are unique
    camvid = vocabs["camvid11"]
    assert camvid.names == classes.CLASS_NAMES and camvid.void == classes.VOID == 11
    assert camvid.relevance == classes.CLASS_RELEVANCE and camvid.colours == classes.CLASS_COLOURS
    assert bitstream.CLASS_SETS[camvid.class_set] == "camvid11"


def test_cityscapes_maps_label_ids_and_carries_the_papers_relevance() -> None:
    city = load("cityscapes19")
    assert city.num_classes == 19 and city.class_set == 1
    rel = dict(zip(city.names, city.relevance))
    assert rel["traffic light"] == rel["traffic sign"] == 1.0
    assert rel["person"] == rel["rider"] > rel["car"] > rel["vegetation"] == rel["sky"]
    raw = np.array([[7, 26, 0], [255, 33, 24]], np.uint8)  # road, car, unlabelled / ignore, bicycle, person
    mapped = city.map_labels(raw)
    assert mapped.tolist() == [[city.class_id("road"), city.class_id("car"), city.void],
                               [city.void, city.class_id("Bicycle"), city.class_id("person")]]


def test_the_shipped_models_name_their_vocabulary() -> None:
    for name in ("sqgan-camvid11", registry.default_name("segmenter"), registry.default_name("coarse")):
        entry = registry.get(name)
        assert entry.config["vocabulary"] == "camvid11"
        _, meta = registry.load_state(entry)
        assert registry.vocabulary_of(entry, meta).names == classes.CLASS_NAMES


@pytest.mark.parametrize("change, message", [
    (lambda d: d["classes"].append(dict(d["classes"][0])), "appears twice"),
    (lambda d: d["classes"][1].update(colour=[1, 2]), "colour"),
    (lambda d: d["classes"][1].update(relevance=-1), "relevance"),
    (lambda d: d["classes"][1].update(label_ids=[0]), "another class"),
    (lambda d: d["classes"][1].update(label_ids=[d["ignore"]]), "ignore id"),
    (lambda d: d.update(class_set=300), "class_set"),
    (lambda d: d.update(classes=[]), "0 classes"),
])
def test_bad_vocabulary_files_are_refused(change, message) -> None:
    data = load("camvid11").to_dict()
    assert parse(json.loads(json.dumps(data))).names == classes.CLASS_NAMES  # round trip
    change(data)
    with pytest.raises(VocabularyError, match=message):
        parse(data)


def test_unknown_vocabulary_and_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(VocabularyError, match="built in: camvid11, cityscapes19"):
        load("nosuch")
    bad = tmp_path / "v.json"
    bad.write_text("{not json")
    with pytest.raises(VocabularyError, match="cannot be read as JSON"):
        load(bad)


@pytest.fixture
def cityscapes_registry(tmp_path: Path, monkeypatch):
    """The shipped weights, with the sqgan entry claiming the cityscapes19 vocabulary."""
    src = registry.weights_dir()
    for f in src.glob("*.safetensors"):
        (tmp_path / f.name).symlink_to(f)
    reg = json.loads((src / "registry.json").read_text())
    reg["models"]["sqgan-camvid11"]["config"]["vocabulary"] = "cityscapes19"
    (tmp_path / "registry.json").write_text(json.dumps(reg))
    monkeypatch.setenv(registry.WEIGHTS_ENV, str(tmp_path))
    registry.reload()
    yield tmp_path
    registry.reload()


def test_a_model_on_another_vocabulary_than_its_weights_is_refused(cityscapes_registry) -> None:
    with pytest.raises(ModelMismatchError, match="trained on the classes"):
        Codec(device="cpu")


def test_a_stream_of_another_class_set_is_refused(codec: Codec) -> None:
    rgb = np.asarray(np.random.default_rng(0).integers(0, 255, (64, 96, 3)), np.uint8)
    data = codec.encode(rgb, keep=0.2)
    stream = bitstream.unpack(data)
    header = stream.header
    assert header.class_set == codec.vocabulary.class_set == 0
    forged = bitstream.pack(replace(header, class_set=1), list(stream.chunks.items()))
    with pytest.raises(ModelMismatchError, match=r"class set 1 \(cityscapes19\)"):
        codec.decode(forged)


def test_segmenter_of_another_vocabulary_is_refused(codec: Codec, monkeypatch) -> None:
    other = Codec(device="cpu")
    seg = other.segmenter
    monkeypatch.setattr(seg, "vocabulary", load("cityscapes19"))
    mixed = Codec(device="cpu", segmenter=seg)
    with pytest.raises(ModelMismatchError, match="predicts vocabulary 'cityscapes19'"):
        mixed.encode(np.zeros((32, 32, 3), np.uint8), keep=0.1)


def test_a_vocabulary_file_beside_the_weights_is_found(cityscapes_registry) -> None:
    city = load("cityscapes19").to_dict()
    (cityscapes_registry / "mine.json").write_text(json.dumps({**city, "name": "mine", "class_set": 200}))
    entry = registry.ModelEntry("x", 9, "sqgan", "x.safetensors", "0" * 64, {"vocabulary": "mine.json"})
    assert registry.vocabulary_of(entry).name == "mine"
    with pytest.raises(ModelMismatchError, match="no vocabulary 'other.json'"):
        registry.vocabulary_of(registry.ModelEntry("y", 9, "sqgan", "y", "0" * 64, {"vocabulary": "other.json"}))

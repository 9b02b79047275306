"""The erasure adapter (nets/adapter.py, train/erasure.py): G_x's de-masker tuned to fill the
positions of lost packets, applied only to packet streams that lost image tokens."""
from __future__ import annotations

import copy
import dataclasses
import shutil
import warnings

import numpy as np
import pytest
import torch

from sqgan_codec import packets, registry
from sqgan_codec.codec import Codec
from sqgan_codec.errors import ModelMismatchError, PacketLossWarning
from sqgan_codec.nets.adapter import ErasureAdapterConfig, LowRankConv, adapted, adapter_state, attach
from sqgan_codec.nets.blocks import one_hot_map
from sqgan_codec.train.__main__ import main as train_main
from conftest import CAMVID, camvid_test_image, needs_camvid


def _demask_inputs(image, grid=(6, 7)):
    g = torch.Generator().manual_seed(0)
    codes = torch.randn(2, image.quantizer.dim, *grid, generator=g)
    keep = torch.rand(2, 1, *grid, generator=g) < 0.5
    onehot = one_hot_map(torch.randint(0, image.num_classes, (2, grid[0] * 16, grid[1] * 16), generator=g),
                         image.num_classes)
    return codes, keep, onehot


def test_untrained_adapter_is_the_demasker_and_merging_its_deltas_is_exact(codec: Codec) -> None:
    base = copy.deepcopy(codec.net.image).float().to(memory_format=torch.contiguous_format)
    codes, keep, onehot = _demask_inputs(base)
    with torch.no_grad():
        reference = base.demask(codes, keep, onehot)
        student = copy.deepcopy(base)
        attach(student, ErasureAdapterConfig(rank=4))
        assert torch.allclose(student.demask(codes, keep, onehot), reference, atol=1e-5)  # up starts at zero
        for block in student.demasker:  # a trained-looking delta
            for conv in (block.conv0, block.conv1):
                assert isinstance(conv, LowRankConv)
                conv.up.weight.normal_(0, 0.05)
        block = student.demasker[0]
        block.norm.gamma_beta.bias.add_(0.1)
        trained = student.demask(codes, keep, onehot)
        assert not torch.allclose(trained, reference, atol=1e-3)
        merged = adapted(base, adapter_state(student), ErasureAdapterConfig(rank=4))
        assert torch.allclose(merged.demask(codes, keep, onehot), trained, atol=1e-4)
        assert torch.equal(base.demask(codes, keep, onehot), reference)  # the base is left alone
        with pytest.raises(ValueError, match="do not fit"):
            adapted(base, adapter_state(student), ErasureAdapterConfig(rank=8))


@pytest.fixture(scope="module")
def adapter_weights(tmp_path_factory: pytest.TempPathFactory):
    """A weights folder holding the shipped models (linked) and an adapter trained here (a few
    steps at a high rate, so that it fills differently from the shipped de-masker)."""
    tmp = tmp_path_factory.mktemp("erasure")
    weights = tmp / "w"
    weights.mkdir()
    shipped = registry.weights_dir()
    for f in shipped.glob("*.safetensors"):
        if not f.name.startswith("erasure-"):
            (weights / f.name).symlink_to(f)
    reg = shipped / "registry.json"
    shutil.copy(reg, weights / "registry.json")
    train_main(["erasure", "--data", str(CAMVID), "--splits", "train", "--limit", "4", "--batch", "2",
                "--crop", "64", "--threads", "1", "--minutes", "5", "--max-steps", "3", "--lr", "0.02",
                "--out", str(tmp / "run")])
    train_main(["export-erasure", "--checkpoint", str(tmp / "run" / "last.pt"), "--weights", str(weights)])
    mp = pytest.MonkeyPatch()
    mp.setenv(registry.WEIGHTS_ENV, str(weights))
    registry.reload()
    yield weights
    mp.undo()
    registry.reload()


def _lose_a_token_packet(data: bytes) -> bytes:
    recs, _ = packets.split_records(data)
    first = next(i for i, r in enumerate(recs) if r[0] & 3 == packets.KIND_TOKENS)
    return b"".join(packets.frame_record(r) for i, r in enumerate(recs) if i != first)


@pytest.mark.slow
@needs_camvid
def test_only_streams_that_lost_image_tokens_are_filled_by_the_adapter(adapter_weights) -> None:
    codec, without = Codec(device="cpu"), Codec(device="cpu", erasure_adapter=False)
    assert codec.entry.config["erasure_adapter"] == "erasure-camvid11"
    frame = camvid_test_image(3)
    plain = codec.encode(frame, bpp=0.05, tune="semantic", ssm="vq")
    stream = codec.packetize(plain, packet_bytes=150)
    whole = np.asarray(codec.decode(stream))
    assert np.array_equal(whole, np.asarray(codec.decode(plain)))  # nothing lost: the shipped decode
    assert np.array_equal(whole, np.asarray(without.decode(stream)))
    lossy = _lose_a_token_packet(stream)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PacketLossWarning)
        filled, shipped = np.asarray(codec.decode(lossy)), np.asarray(without.decode(lossy))
    assert codec.decode_tokens(lossy).packets["tokens_lost"]["image"] > 0
    assert not np.array_equal(filled, shipped)
    # the adapter names the weights it was trained on: another model's is refused
    other = Codec(device="cpu")
    other.entry = dataclasses.replace(other.entry, sha256="0" * 64)
    with pytest.raises(ModelMismatchError, match="trained on other weights"):
        other.erasure_image_net()

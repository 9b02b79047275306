"""The adversarial loss (blinded discriminator, hinge, adaptive weight), copy-paste augmentation
and continuing a run from another run's checkpoint."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from sqgan_codec.classes import CLASS_RELEVANCE, VOID, class_id
from sqgan_codec.train.__main__ import main as train_main
from sqgan_codec.train.data import CropSampler, ObjectBank
from sqgan_codec.train.gan import (
    PatchDiscriminator, adaptive_weight, discriminator_loss, generator_loss, patch_relevance,
)

from test_train import FAST, make_camvid_like

SKY, PEDESTRIAN = class_id("Sky"), class_id("Pedestrian")


def test_discriminator_is_blind_where_relevance_is_zero() -> None:
    labels = torch.full((1, 16, 16), SKY)
    labels[:, :8, :8] = PEDESTRIAN
    labels[:, 8:, 8:] = VOID
    weights = patch_relevance(labels, (2, 2))
    expected = [CLASS_RELEVANCE[PEDESTRIAN], CLASS_RELEVANCE[SKY], CLASS_RELEVANCE[SKY], 0.0]
    assert weights.flatten().tolist() == pytest.approx(expected)
    real = torch.tensor([[[[2.0, 2.0], [2.0, -5.0]]]])  # the void patch is badly wrong
    fake = torch.tensor([[[[-2.0, -2.0], [-2.0, 5.0]]]])
    assert discriminator_loss(real, fake, weights).item() == 0.0  # wrong only where blind
    assert generator_loss(fake, weights).item() == pytest.approx(2.0)
    fake_on_void_only = fake.clone()
    fake_on_void_only[..., 1, 1] = -100.0
    assert generator_loss(fake_on_void_only, weights).item() == pytest.approx(2.0)


def test_adaptive_weight_balances_gradients_at_the_last_layer() -> None:
    w = torch.tensor([1.0, 2.0], requires_grad=True)
    rec = (3.0 * w).sum()   # gradient (3, 3)
    adv = (0.5 * w).sum()   # gradient (0.5, 0.5)
    assert adaptive_weight(rec, adv, w).item() == pytest.approx(6.0, rel=1e-3)


def test_patch_discriminator_answers_per_8x8_patch() -> None:
    disc = PatchDiscriminator()
    out = disc(torch.zeros(2, 3, 64, 48), torch.zeros(2, 11, 64, 48))
    assert out.shape == (2, 1, 8, 6)


def test_copy_paste_adds_small_relevant_objects() -> None:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (60, 80, 3), dtype=np.uint8)
    label = np.full((60, 80), SKY, np.uint8)
    label[10:30, 20:28] = PEDESTRIAN  # one person, 160 pixels
    plain = np.full((60, 80), SKY, np.uint8)
    bank = ObjectBank([image, image], [label, None], (PEDESTRIAN,))
    assert len(bank) == 1
    pix, mask, c = bank.objects[0]
    assert c == PEDESTRIAN and mask.sum() == 160 and np.array_equal(pix, image[10:30, 20:28])
    # crops of a person-free image: pedestrians appear only when pasted
    without = CropSampler([image], [plain], (40, 40), scale=(1.0, 1.0), jitter=0, seed=1)
    with_paste = CropSampler([image], [plain], (40, 40), scale=(1.0, 1.0), jitter=0, seed=1,
                             bank=bank, paste=1.0)
    _, y0 = without.sample(8)
    _, y1 = with_paste.sample(8)
    assert (y0 == PEDESTRIAN).sum() == 0
    assert all((y == PEDESTRIAN).any() for y in y1)


def test_gan_stage_resumes_its_discriminator_and_continues_from_a_checkpoint(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = make_camvid_like(tmp_path / "camvid")
    common = ["--data", str(data), "--splits", "train", *FAST, "--perceptual", "0", "--semantic", "0",
              "--gan-start", "0"]
    run = tmp_path / "run"
    train_main(["joint", *common, "--out", str(run), "--max-steps", "2"])
    a = torch.load(run / "last.pt", map_location="cpu", weights_only=True)
    assert set(a["gan"]) == {"disc", "opt"} and a["gan"]["opt"]["state"]  # D took steps
    train_main(["joint", *common, "--out", str(run), "--max-steps", "3", "--resume"])
    assert "discriminator state resumed" in capsys.readouterr().out
    b = torch.load(run / "last.pt", map_location="cpu", weights_only=True)
    changed = [k for k in a["gan"]["disc"] if not torch.equal(a["gan"]["disc"][k], b["gan"]["disc"][k])]
    assert changed, "the resumed discriminator must keep learning"

    # another run continues from this one: weights, moments and D carried, new schedule
    again = tmp_path / "again"
    train_main(["joint", *common, "--out", str(again), "--max-steps", "1", "--init-from", str(run / "last.pt")])
    out = capsys.readouterr().out
    assert "initialised from checkpoint" in out and "discriminator state resumed" in out
    c = torch.load(again / "last.pt", map_location="cpu", weights_only=True)
    assert c["step"] == 4 and c["args"]["stage_start_step"] == 3
    assert c["args"]["previous_stages"][-1] == {"stage": "joint", "steps": 3,
                                                "minutes": c["args"]["previous_stages"][-1]["minutes"]}
    assert all(int(s["step"]) == 4 for s in c["opt"]["state"].values())  # Adam moments continued

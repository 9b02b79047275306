"""The bundled segmenter: :class:`~sqgan_codec.nets.segnet.SegmenterNet` with weights
from the registry (``weights/registry.json``, entry of kind ``segmenter``).

Images of any size: each is padded on the bottom and right to a multiple of 32
(reflection where the image is large enough, else edge replication), run through the
network, cropped back and arg-maxed. ``segment_many`` batches images of equal size.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from .. import registry
from ..errors import ModelMismatchError
from .base import SEGMENTER_BUNDLED, Segmenter, _names_for, check_map, check_rgb

MULTIPLE = 32


def default_segmenter_name() -> str:
    """The registry's default segmenter (ModelMismatchError when it names none)."""
    try:
        return registry.default_name("segmenter")
    except (KeyError, TypeError):
        raise ModelMismatchError(
            f"the model registry in {registry.weights_dir()} names no default segmenter") from None


class BundledSegmenter(Segmenter):
    """The codec's own segmenter network (CamVid 11 classes)."""

    segmenter_id = SEGMENTER_BUNDLED

    def __init__(self, device: str = "auto", model_name: str | None = None, *,
                 batch_size: int = 8) -> None:
        import torch

        from ..devices import for_inference, resolve_device
        from ..nets.segnet import SegmenterNet

        name = model_name or default_segmenter_name()
        entry = registry.get(name)
        if entry.kind != "segmenter":
            raise ModelMismatchError(f"model {name!r} is a {entry.kind!r} model, not a segmenter")
        config = dict(entry.config)
        kwargs = {k: config[k] for k in ("width",) if k in config}
        state, meta = registry.load_state(entry)
        self.vocabulary = registry.vocabulary_of(entry, meta)  # checks the class count too
        num_classes = self.vocabulary.num_classes
        state = {k.removeprefix("module."): v for k, v in state.items()}
        net = SegmenterNet(num_classes=num_classes, **kwargs)
        try:
            net.load_state_dict(state, strict=True)
        except RuntimeError as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ModelMismatchError(
                f"weights file for {name!r} does not fit the segmenter network: {first}") from None
        self.device = resolve_device(device)
        self.net = for_inference(net, self.device)
        self.entry = entry
        self.batch_size = max(1, int(batch_size))
        self.name = f"bundled ({name})"
        del torch

    # -- public

    def segment(self, rgb: np.ndarray, *, name: str | None = None) -> np.ndarray:
        return self.segment_many([rgb], names=[name])[0]

    def segment_many(self, images: Sequence[np.ndarray], *,
                     names: Sequence[str | None] | None = None) -> list[np.ndarray]:
        names = _names_for(images, names)
        for rgb, n in zip(images, names):
            check_rgb(rgb, n)
        out: list[np.ndarray | None] = [None] * len(images)
        groups: dict[tuple[int, int], list[int]] = {}
        for i, rgb in enumerate(images):
            groups.setdefault(rgb.shape[:2], []).append(i)
        for (h, w), idx in groups.items():
            for start in range(0, len(idx), self.batch_size):
                chunk = idx[start:start + self.batch_size]
                maps = self._run([images[i] for i in chunk], h, w)
                for i, m in zip(chunk, maps):
                    out[i] = check_map(m, images[i], "bundled segmenter", self.vocabulary.num_classes)
        return out  # type: ignore[return-value]

    def describe(self, images: Sequence[np.ndarray]) -> list[Description]:
        """Maps plus what the encoder's domain check reads (same-size images, one batch): each
        image's mean top-class probability, how familiar it looks to the network."""
        import torch

        h, w = images[0].shape[:2]
        logits, _ = self._forward(list(images), h, w)
        probs = logits.softmax(1).amax(1)
        ids = logits.argmax(dim=1).to(torch.uint8).cpu().numpy()
        return [Description(check_map(np.ascontiguousarray(ids[i]), images[i], "bundled segmenter",
                                      self.vocabulary.num_classes),
                            float(probs[i].mean())) for i in range(len(images))]

    # -- internals

    def _forward(self, batch: list[np.ndarray], h: int, w: int):
        import torch
        import torch.nn.functional as F

        x = torch.from_numpy(np.stack(batch)).to(self.device)
        x = x.permute(0, 3, 1, 2).float()
        ph, pw = (-h) % MULTIPLE, (-w) % MULTIPLE
        if ph or pw:
            mode = "reflect" if ph < h and pw < w else "replicate"
            x = F.pad(x, (0, pw, 0, ph), mode=mode)
        with torch.inference_mode():
            logits, feats = self.net.forward_with_features(x)
        return logits[:, :, :h, :w], feats

    def _run(self, batch: list[np.ndarray], h: int, w: int) -> list[np.ndarray]:
        import torch

        logits, _ = self._forward(batch, h, w)
        ids = logits.argmax(dim=1).to(torch.uint8).cpu().numpy()
        return [np.ascontiguousarray(m) for m in ids]


@dataclass
class Description:
    """One image as the bundled segmenter sees it (see :meth:`BundledSegmenter.describe`)."""

    semantic_map: np.ndarray
    confidence: float

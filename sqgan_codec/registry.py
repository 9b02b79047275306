"""Weights registry: ``weights/registry.json`` maps a model name to its file, sha256 and config.

Models are named, never numbered by position: each entry carries a stable ``id`` that the
bitstream stores next to the first bytes of the weights' SHA-256, so a file is only decoded
by exactly the weights that made it. Loading verifies the hash.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from .errors import ModelMismatchError

WEIGHTS_ENV = "SQGAN_WEIGHTS_DIR"


def weights_dir() -> Path:
    """Where the registry lives: $SQGAN_WEIGHTS_DIR, the installed package data, or the source tree."""
    if os.environ.get(WEIGHTS_ENV):
        return Path(os.environ[WEIGHTS_ENV])
    try:
        from importlib.resources import files

        installed = Path(str(files("sqgan_codec._weights")))
        if (installed / "registry.json").is_file():
            return installed
    except (ModuleNotFoundError, TypeError):
        pass
    return Path(__file__).resolve().parents[1] / "weights"


@dataclass(frozen=True)
class ModelEntry:
    name: str
    id: int
    kind: str  # "sqgan", "segmenter", "coarse" or "erasure"
    file: str
    sha256: str
    config: dict[str, Any] = field(default_factory=dict)
    description: str = ""

    @property
    def path(self) -> Path:
        return weights_dir() / self.file

    @property
    def hash_prefix(self) -> bytes:
        return bytes.fromhex(self.sha256)[:4]


@lru_cache(maxsize=None)
def _registry(directory: str) -> dict[str, Any]:
    path = Path(directory) / "registry.json"
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelMismatchError(f"no model registry at {path}") from None


def reload() -> None:
    """Forget the registry read so far (after an export rewrote registry.json in this process)."""
    _registry.cache_clear()


def entries() -> dict[str, ModelEntry]:
    reg = _registry(str(weights_dir()))
    return {name: ModelEntry(name=name, **spec) for name, spec in reg["models"].items()}


def default_name(kind: str) -> str:
    return _registry(str(weights_dir()))["defaults"][kind]


def defaults() -> dict[str, str]:
    """The default model of each kind: {kind: name}."""
    return dict(_registry(str(weights_dir()))["defaults"])


def get(name: str) -> ModelEntry:
    try:
        return entries()[name]
    except KeyError:
        raise ModelMismatchError(f"unknown model {name!r}; known: {', '.join(entries())}") from None


def find_by_id(model_id: int, hash_prefix: bytes) -> ModelEntry:
    """The entry a bitstream names, checked against the weights' hash prefix."""
    for entry in entries().values():
        if entry.id == model_id:
            if entry.hash_prefix != hash_prefix:
                raise ModelMismatchError(
                    f"stream was made with other weights for model {entry.name!r} "
                    f"(hash {hash_prefix.hex()}, installed {entry.hash_prefix.hex()})")
            return entry
    raise ModelMismatchError(f"stream needs model id {model_id}, which this installation does not have")


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@lru_cache(maxsize=8)
def _verified(path: str, sha256: str, stamp: tuple[int, ...]) -> None:
    """Hash check, once per file state: ``stamp`` holds the inode, size, mtime and ctime. A
    change to the file changes its ctime, which no one can set back (unlike the mtime), so an
    edited or replaced file is always hashed again."""
    actual = file_sha256(Path(path))
    if actual != sha256:
        raise ModelMismatchError(f"weights file {path} is damaged or replaced (sha256 {actual[:12]}…, "
                                 f"registry says {sha256[:12]}…)")


def load_state(entry: ModelEntry) -> tuple[dict[str, Any], dict[str, str]]:
    """Verified tensors and metadata of a registry entry (tensors as float32 where floating)."""
    from safetensors import safe_open
    import torch

    path = entry.path
    if not path.is_file():
        raise ModelMismatchError(f"weights file for {entry.name!r} is missing: {path}")
    st = path.stat()
    _verified(str(path), entry.sha256, (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns))
    tensors = {}
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
        for key in f.keys():
            t = f.get_tensor(key)
            tensors[key] = t.float() if t.is_floating_point() else t
    del torch
    return tensors, meta


def load_vocabulary_ref(ref: str, directory: Path | None = None):
    """The vocabulary a registry entry names: a built-in name, or a ``.json`` file of one's own
    beside the weights (in ``directory``, default :func:`weights_dir`)."""
    from .vocabulary import load

    beside = (directory or weights_dir()) / ref
    return load(beside if beside.suffix == ".json" and beside.is_file() else ref)


def vocabulary_of(entry: ModelEntry, meta: dict[str, str] | None = None):
    """The class vocabulary a model was trained with (``config["vocabulary"]``; entries from
    before vocabularies were data are ``camvid11``), checked against the class names saved in
    the weights' metadata and the class count of the model's config."""
    from .vocabulary import VocabularyError

    name = entry.config.get("vocabulary") or (meta or {}).get("class_set") or "camvid11"
    try:
        vocab = load_vocabulary_ref(name)
    except VocabularyError as exc:
        raise ModelMismatchError(f"model {entry.name!r}: {exc}") from None
    saved = (meta or {}).get("classes")
    if saved is not None and tuple(json.loads(saved)) != vocab.names:
        raise ModelMismatchError(f"model {entry.name!r}: its weights were trained on the classes "
                                 f"{json.loads(saved)}, not vocabulary {vocab.name!r}")
    count = entry.config.get("num_classes")
    if count is not None and int(count) != vocab.num_classes:
        raise ModelMismatchError(f"model {entry.name!r} has {count} classes; vocabulary {vocab.name!r} "
                                 f"has {vocab.num_classes}")
    return vocab

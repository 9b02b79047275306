"""Test helpers for segmenters: a temporary weights registry holding a randomly initialised
bundled segmenter, and a tiny ONNX model written without the ``onnx`` package."""
from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest

SEG_NAME = "segnet-test-random"


def make_registry(folder: Path, *, seed: int = 0) -> Path:
    """``folder/registry.json`` + ``folder/seg.safetensors`` (random SegmenterNet)."""
    import torch
    from safetensors.torch import save_file

    from sqgan_codec import registry
    from sqgan_codec.nets.segnet import SegmenterNet

    torch.manual_seed(seed)
    net = SegmenterNet(num_classes=11).eval()
    folder.mkdir(parents=True, exist_ok=True)
    weights = folder / "seg.safetensors"
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(weights),
              metadata={"note": "random init, tests only"})
    reg = {
        "defaults": {"segmenter": SEG_NAME, "sqgan": "none"},
        "models": {SEG_NAME: {"id": 2, "kind": "segmenter", "file": weights.name,
                              "sha256": registry.file_sha256(weights),
                              "config": {"num_classes": 11},
                              "description": "randomly initialised, for tests"}},
    }
    (folder / "registry.json").write_text(json.dumps(reg), encoding="utf-8")
    return folder


@pytest.fixture(scope="session")
def seg_weights_dir(tmp_path_factory) -> Path:
    return make_registry(tmp_path_factory.mktemp("weights"))


@pytest.fixture
def temp_registry(seg_weights_dir, monkeypatch):
    """SQGAN_WEIGHTS_DIR pointing at the random-segmenter registry, caches cleared."""
    from sqgan_codec import registry, segmenters

    monkeypatch.setenv(registry.WEIGHTS_ENV, str(seg_weights_dir))
    registry.reload()
    segmenters.clear_cache()
    yield seg_weights_dir
    registry.reload()
    segmenters.clear_cache()


# ----------------------------------------------------------------------------- tiny ONNX writer
# Just enough of the ONNX protobuf schema (onnx.proto3) to write a Conv + AveragePool graph.

def _varint(n: int) -> bytes:
    n &= (1 << 64) - 1
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _key(field: int, wire: int) -> bytes:
    return _varint(field << 3 | wire)


def _int(field: int, v: int) -> bytes:
    return _key(field, 0) + _varint(v)


def _bytes(field: int, v: bytes | str) -> bytes:
    if isinstance(v, str):
        v = v.encode()
    return _key(field, 2) + _varint(len(v)) + v


def _tensor(name: str, arr: np.ndarray) -> bytes:  # TensorProto, FLOAT
    arr = np.ascontiguousarray(arr, dtype="<f4")
    return (b"".join(_int(1, d) for d in arr.shape) + _int(2, 1) + _bytes(8, name)
            + _bytes(9, arr.tobytes()))


def _value_info(name: str, dims: list) -> bytes:
    shape = b"".join(_bytes(1, _bytes(2, d) if isinstance(d, str) else _int(1, d)) for d in dims)
    tensor_type = _int(1, 1) + _bytes(2, shape)
    return _bytes(1, name) + _bytes(2, _bytes(1, tensor_type))


def _attr_ints(name: str, values: list[int]) -> bytes:
    return _bytes(1, name) + b"".join(_int(8, v) for v in values) + _int(20, 7)


def _node(op: str, inputs: list[str], outputs: list[str], attrs: list[bytes] = ()) -> bytes:
    return (b"".join(_bytes(1, i) for i in inputs) + b"".join(_bytes(2, o) for o in outputs)
            + _bytes(3, op.lower()) + _bytes(4, op) + b"".join(_bytes(5, a) for a in attrs))


def write_conv_model(path: Path, weight: np.ndarray, bias: np.ndarray, *, pool: int = 2,
                     fixed_hw: tuple[int, int] | None = None) -> Path:
    """ONNX model: y = AveragePool_{pool}(Conv1x1(x; weight L x 3, bias L)).
    Input N x 3 x H x W (dynamic unless ``fixed_hw``), output N x L x H/pool x W/pool."""
    L = weight.shape[0]
    nodes = [_node("Conv", ["x", "w", "b"], ["c"], [_attr_ints("kernel_shape", [1, 1])])]
    nodes.append(_node("AveragePool", ["c"], ["y"], [_attr_ints("kernel_shape", [pool, pool]),
                                                     _attr_ints("strides", [pool, pool])])
                 if pool > 1 else _node("Identity", ["c"], ["y"]))
    h, w = fixed_hw if fixed_hw else ("h", "w")
    oh, ow = (fixed_hw[0] // pool, fixed_hw[1] // pool) if fixed_hw else ("oh", "ow")
    graph = (b"".join(_bytes(1, n) for n in nodes) + _bytes(2, "tiny")
             + _bytes(5, _tensor("w", weight.reshape(L, 3, 1, 1)))
             + _bytes(5, _tensor("b", bias))
             + _bytes(11, _value_info("x", ["n", 3, h, w]))
             + _bytes(12, _value_info("y", ["n", L, oh, ow])))
    model = (_int(1, 8) + _bytes(2, "sqgan-tests") + _bytes(7, graph)
             + _bytes(8, _bytes(1, "") + _int(2, 13)))
    path.write_bytes(model)
    return path

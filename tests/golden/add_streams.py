"""Write the golden streams this release adds, and only those: never an existing one.

    python tests/golden/add_streams.py

Names say the format version the stream declares and what it holds. Golden files are written once, by the release that introduces a format version or mode, from
the bundled sample (sqgan_codec/samples/street.png), and kept: tests/test_golden.py checks that
every later release decodes them to the same tokens (and thumbnail) and nearly the same pixels.
This script adds the streams named in ``NEW`` that are missing, with their ``expected.json``
entries (what this code decodes); it refuses to touch a name that exists. Regenerating an
existing golden file is a compatibility break: do it by hand, and say so in docs/bitstream.md.
"""
from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))

from sqgan_codec import bitstream, coarse, decide, packets  # noqa: E402
from sqgan_codec.codec import Codec, EncodeOptions  # noqa: E402
from sqgan_codec.demo import sample_path  # noqa: E402


def new_streams(codec: Codec) -> dict[str, bytes]:
    rgb = np.asarray(Image.open(sample_path()).convert("RGB"))
    grey = np.asarray(Image.open(sample_path()).convert("L"))
    analysis = codec._ranked(codec.analyse(rgb), EncodeOptions(bpp=0.05))
    budget = 0.05 * rgb.shape[0] * rgb.shape[1] / 8
    learned = decide.build(codec, analysis, budget, lambda: b"", 0, "coarse+learned")
    upsampled = decide.finalise(codec, analysis, decide.build(codec, analysis, budget, lambda: b"", 0, "coarse"), budget, 0)
    tokens = codec.encode(rgb, bpp=0.05, tune="semantic", ssm="vq")
    h, w = rgb.shape[:2]
    box = (w // 2, h // 4, w // 3, h // 2)
    boxed = codec._ranked(codec.analyse(rgb), EncodeOptions(bpp=0.05, roi=(box,)))
    patched = decide.finalise(codec, boxed, decide.build(codec, boxed, budget, lambda: b"", 0, "coarse", boxes=(box,)),
                              budget, 0)
    scaled = decide.finalise(codec, analysis, decide.build(codec, analysis, budget, lambda: b"", 0, "scaled8-0"),
                             budget, 0)
    car = codec._ranked(codec.analyse(rgb), EncodeOptions(bpp=0.05, priority={"Car": 4}))
    detailed = decide.finalise(codec, car, decide.build(codec, car, budget, lambda: b"", 0,
                                                        decide.balanced_mode(codec, car, budget, 0)), budget, 0)
    return {
        # added with finer cells of the reduced exact map where a prioritised class is (format 7.0)
        "v7_map_detail_car_0.05": detailed if bitstream.CHUNK_MAP_DETAIL in bitstream.unpack(detailed).chunks else None,
        # added with the semantic map coded exactly at a reduced scale (format 6.0)
        "v6_scaled_map_0.05": scaled,
        # added with patches of the coarse image over regions of interest (format 5.0)
        "v5_coarse_roi_0.05": patched,
        # added with packet format 2 (CRC-24): a packet stream of format 1 (CRC-32), nothing lost
        "p1_tokens_0.05_150": codec.packetize(tokens, packet_bytes=150, protect_base=2),
        # added with AV1 thumbnails (format 4.0)
        "v4_coarse_av1_0.05": upsampled,
        # added with the domain check, the pixel limit and --partial (format 3.0 modes)
        "v3_coarse_learned_0.05": learned,
        "v1_lossless_map_keep0.3": codec.encode(rgb, keep=0.3, ssm="lossless", tune="semantic"),
        "v1_grey_0.05": codec.encode(grey, bpp=0.05, tune="semantic"),
    }


def expected_for(codec: Codec, data: bytes) -> dict:
    image = np.asarray(codec.decode(data))
    entry = {"bytes": len(data), "tokens_sha256": codec.token_digest(data), "pixel_mean": float(image.mean())}
    if packets.is_packet_stream(data):
        entry["version"] = f"packets {packets.read_header(data)[1]['version']}"
        return entry
    stream = bitstream.unpack(data)
    entry["version"] = ".".join(map(str, stream.header.version))
    if bitstream.CHUNK_SEMANTIC_SCALED in stream.chunks:  # the exact map (and chunk F) decodes bit-exactly
        entry["map_sha256"] = hashlib.sha256(codec.decode_with_map(data)[1].tobytes()).hexdigest()
    if bitstream.CHUNK_COARSE in stream.chunks:
        small = coarse.decode_small(stream.chunks[bitstream.CHUNK_COARSE], stream.header.width,
                                    stream.header.height)
        if coarse.chunk_format(stream.chunks[bitstream.CHUNK_COARSE]) == coarse.FORMAT_AV1:
            # dav1d's samples are exact, libavif's YUV->RGB may differ by a level across CPUs
            entry["thumbnail_mean"] = [float(v) for v in small.reshape(-1, 3).mean(0)]
        else:
            entry["thumbnail_sha256"] = hashlib.sha256(small.tobytes()).hexdigest()
    return entry


def main() -> None:
    expected_path = HERE / "expected.json"
    expected = json.loads(expected_path.read_text())
    codec = Codec(device="cpu")
    for name, data in new_streams(codec).items():
        path = HERE / f"{name}.sqg"
        if name in expected or path.exists():
            print(f"{name}: exists, left as it is")
            continue
        if data is None:
            raise SystemExit(f"{name}: this model cannot write that mode")
        path.write_bytes(data)
        expected[name] = expected_for(codec, data)
        print(f"{name}: written ({len(data)} bytes)")
    expected_path.write_text(json.dumps(expected, indent=1) + "\n")


if __name__ == "__main__":
    main()

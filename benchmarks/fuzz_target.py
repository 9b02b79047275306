"""Coverage-guided fuzz target (atheris / libFuzzer) for the container and the token parsers.

    python benchmarks/fuzz_target.py CORPUS_DIR -max_total_time=600     # the longer run
    python benchmarks/fuzz_target.py CORPUS_DIR -runs=3000              # what CI runs (tests/test_fuzz_target.py)

Seed the corpus with valid streams (``cp tests/golden/*.sqg CORPUS_DIR``) so that mutations
start from streams that pass the header checks. One input goes through what a decoder does
before any network: ``bitstream.unpack`` (magic, header, chunk framing, CRCs, order) and the
codec's entropy decoding of every token layer (``Codec.decode_tokens``: the range decoder over
the integer tables, the coarse-image frame check, the lossless map decoder). Any exception that
is not the codec's own error (SqganError) is a finding: libFuzzer stops and writes the input to
``crash-*``. Needs ``pip install atheris`` (x86-64 Linux wheels; the [test] extra has it).
"""
from __future__ import annotations

import sys
from pathlib import Path

import atheris

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

with atheris.instrument_imports(include=["sqgan_codec"]):
    from sqgan_codec import bitstream, coarse
    from sqgan_codec.codec import Codec
    from sqgan_codec.errors import SqganError

CODEC = Codec(device="cpu")


def one_input(data: bytes) -> None:
    try:
        stream = bitstream.unpack(data, allow_truncated=True)
        if bitstream.CHUNK_COARSE in stream.chunks:
            coarse.parse(stream.chunks[bitstream.CHUNK_COARSE], stream.header.width, stream.header.height)
        CODEC.decode_tokens(data, allow_partial=True)
    except SqganError:
        pass


def main() -> None:
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()

"""Rate/quality benchmark (the same as ``sqgan evaluate``); see sqgan_codec/evaluate/run.py.

    python benchmarks/rate_quality.py --images ../shared/data/camvid/test --out docs/bench/rq --cache out/rq-cache
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqgan_codec.evaluate.run import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())

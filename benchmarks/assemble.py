"""Assemble docs/benchmarks.md from the parts the benchmark scripts write under docs/bench/.

    python benchmarks/assemble.py
"""
from __future__ import annotations

import re
from pathlib import Path

DOCS = Path(__file__).resolve().parents[1] / "docs"
PARTS = (("segmenter.md", "Bundled segmenter"), ("rq/report.md", "Rate and quality against classical codecs"),
         ("entropy.md", "Entropy coding against fixed-length accounting"),
         ("features.md", "Encode controls (rate control, bit split, priorities, layers)"),
         ("roi.md", "Region of interest"), ("crops.md", "Visual comparison"),
         ("unseen.md", "Checked with a segmenter training never saw"),
         ("ssm_lossless.md", "Lossless semantic maps"), ("speed.md", "Speed and memory"))


def main() -> None:
    out = ["# Benchmarks", "",
           "Every number below was produced by the command quoted with it, with the weights in "
           "`weights/` at the commit that holds this file. `make bench` regenerates all of it.", ""]
    for name, title in PARTS:
        path = DOCS / "bench" / name
        out.append(f"## {title}")
        out.append("")
        if not path.exists():
            out += ["Not measured yet.", ""]
            continue
        text = path.read_text()
        text = re.sub(r"^# .*\n", "", text, count=1)          # drop the part's own title
        text = re.sub(r"^(#+) ", r"#\1 ", text, flags=re.M)  # nest its headings one level down
        base = str(Path("bench") / Path(name).parent)
        text = re.sub(r"\]\((?!http)([^)]+\.png)\)", lambda m: f"]({base}/{m.group(1)})", text)
        out += [text.strip(), ""]
    (DOCS / "benchmarks.md").write_text("\n".join(out) + "\n")
    print(f"wrote {DOCS / 'benchmarks.md'}")


if __name__ == "__main__":
    main()

"""Assemble docs/benchmarks.md from the parts the benchmark scripts write under docs/bench/.

    python benchmarks/assemble.py --start   # first step of `make bench`: note the start
    python benchmarks/assemble.py           # last step: write docs/benchmarks.md
                                            # (alone: re-assemble after regenerating one part)

With a start note from the same run, the page says how long the whole `make bench` took and
how many images' classical results came from the cache (out/rq-cache).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
START_NOTE = ROOT / "out" / "bench" / "started.json"
PARTS = (("segmenter.md", "Bundled segmenter"), ("rq/report.md", "Rate and quality against classical codecs"),
         ("rq_camvid5/report.md", "The default (--tune balanced) on every 5th CamVid test image"),
         ("faithful_camvid.md", "Faithfulness on CamVid"),
         ("rq_photos/report.md", "The default on general photos (no labels)"),
         ("faithful_photos.md", "Faithfulness on general photos"),
         ("map_scale.md", "The semantic map beside the coarse image: G_s's tokens or exact at a reduced scale"),
         ("sbs.md", "Whole pictures side by side"),
         ("entropy.md", "Entropy coding against fixed-length accounting"),
         ("features.md", "Encode controls (rate control, bit split, priorities, layers)"),
         ("roi.md", "Region of interest"), ("priority.md", "Class priorities with the default options"), ("priority_together.md", "Several class priorities at once"),
         ("render_probes.md", "Decode-side probes on prioritised classes"),
         ("importance.md", "Token importance: SAMM against the segmenter's gradient"),
         ("crops.md", "Visual comparison"),
         ("unseen.md", "Checked with a segmenter training never saw"),
         ("ssm_lossless.md", "Lossless semantic maps"), ("speed.md", "Speed and memory"),
         ("decode_memory.md", "Decoding memory by image size"), ("fuzz.md", "Damaged and hostile streams"),
         ("packet_loss.md", "Quality under packet loss"),
         ("packet_loss_adapter.md", "Lost packets filled by the erasure adapter"),
         ("ray.md", "Batch coding on Ray"), ("device_pack.md", "The GPU recipe's training data"),
         ("device_run.md", "On a lent GPU: CUDA against CPU, throughput"))


RUN_TIME_PREFIX = "This `make bench` run took"


def _run_time() -> list[str]:
    if not START_NOTE.exists():
        # a part regenerated on its own: keep the last whole run's time, saying so
        old = (DOCS / "benchmarks.md").read_text() if (DOCS / "benchmarks.md").exists() else ""
        line = next((ln for ln in old.splitlines() if ln.startswith(RUN_TIME_PREFIX)), None)
        if line is None:
            return []
        note = " Some parts may have been regenerated since, each by the command it quotes."
        return [line if line.endswith(note) else line + note, ""]
    started = json.loads(START_NOTE.read_text())["time"]
    START_NOTE.unlink()
    minutes = (time.time() - started) / 60
    summary = DOCS / "bench" / "rq" / "summary.json"
    cached = json.loads(summary.read_text())["timing"].get("cached_images") if summary.exists() else None
    state = ("an empty classical-results cache (as in a clean clone)" if cached == 0 else
             f"{cached} images' classical results already cached in out/rq-cache" if cached else
             "an unknown cache state")
    return [f"{RUN_TIME_PREFIX} **{minutes:.0f} min** wall time on {os.cpu_count()} CPU cores "
            f"({platform.machine()}), starting from {state}.", ""]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--start", action="store_true", help="note the start time")
    if p.parse_args().start:
        START_NOTE.parent.mkdir(parents=True, exist_ok=True)
        START_NOTE.write_text(json.dumps({"time": time.time()}))
        return
    out = ["# Benchmarks", "",
           "Every number below was produced by the command quoted with it, with the weights in "
           "`weights/` at the commit that holds this file. `make bench` regenerates all of it.", "",
           *_run_time()]
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

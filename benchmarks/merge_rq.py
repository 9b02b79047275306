"""Merge a rate/quality run of some codecs into an earlier full run (classical results kept).

    python benchmarks/merge_rq.py --base docs/bench/rq --new out/rq-sqgan --codecs sqgan --out docs/bench/rq

Classical codecs do not change when the learned codec is retrained, and their full run costs most
of `make bench`; a run of the learned codec alone on the same images (``--codecs ''``) can replace
its rows and summary groups in the earlier run. Both runs must cover the same images with the
same targets and metric settings; the report and plots are rewritten from the merged summary,
which notes where each part came from.
"""
from __future__ import annotations

import argparse
import csv
import json
import shlex
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--base", required=True)
    p.add_argument("--new", required=True)
    p.add_argument("--codecs", default="sqgan", help="comma-separated codec names taken from --new")
    p.add_argument("--out", required=True)
    p.add_argument("--subset", action="store_true",
                   help="--new covers a subset of --base's images: write only results.csv of that subset, "
                        "the earlier run's rows of the taken codecs kept as '<codec>-previous'")
    a = p.parse_args(argv)
    from sqgan_codec.evaluate.report import BenchResult
    from sqgan_codec.evaluate.writers import write_all

    take = set(a.codecs.split(","))
    base, new = Path(a.base), Path(a.new)
    base_rows = list(csv.DictReader(open(base / "results.csv")))
    new_rows = list(csv.DictReader(open(new / "results.csv")))
    if a.subset:
        images = {r["image"] for r in new_rows}
        rows = [dict(r, codec=r["codec"] + "-previous") if r["codec"] in take else r
                for r in base_rows if r["image"] in images] + [r for r in new_rows if r["codec"] in take]
        Path(a.out).mkdir(parents=True, exist_ok=True)
        with open(Path(a.out) / "results.csv", "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(base_rows[0]))
            writer.writeheader()
            writer.writerows({k: r.get(k, "") for k in base_rows[0]} for r in rows)
        print(f"results.csv: {Path(a.out) / 'results.csv'} ({len(images)} images)")
        return 0
    if {r["image"] for r in base_rows} != {r["image"] for r in new_rows}:
        raise SystemExit("the two runs cover different images")
    rows = [r for r in base_rows if r["codec"] not in take] + [r for r in new_rows if r["codec"] in take]
    summary = json.loads((base / "summary.json").read_text())
    fresh = json.loads((new / "summary.json").read_text())
    if summary["config"]["targets"] != fresh["config"]["targets"]:
        raise SystemExit("the two runs have different targets")
    summary["groups"] = ([g for g in summary["groups"] if g["codec"] not in take]
                         + [g for g in fresh["groups"] if g["codec"] in take])
    summary["config"]["learned"] = fresh["config"]["learned"]
    summary["merged"] = (f"rows and summary groups of {sorted(take)} from a later run of those codecs alone "
                         f"({fresh['config'].get('lpips_dtype')} LPIPS-style), the rest from the earlier full run "
                         f"({summary['config'].get('lpips_dtype')} LPIPS-style); originals' metrics from the earlier run")
    def commands(s: dict) -> list[str]:
        return [s["command"]] if isinstance(s.get("command"), str) else list(s.get("command") or [])

    # the earlier full run's command, the new run's, this merge's
    summary["command"] = (commands(summary)[:1] + commands(fresh)
                          + [shlex.join(["python", "benchmarks/merge_rq.py", *(sys.argv[1:] if argv is None else argv)])])
    written = write_all(BenchResult(rows, summary), a.out)
    for name, path in written.items():
        print(f"{name}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

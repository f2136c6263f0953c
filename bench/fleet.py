"""Time `mqtt-keepalive analyze` on a fleet: many devices' recordings of the same hours.

    python bench/fleet.py                              # 40 recordings of 25,000 frames (1M frames)
    python bench/fleet.py --files 400 --frames 25000   # 400 of them (10M frames)

Generates the recordings once (`generate.py`, one seed each) as
`/tmp/mqtt-keepalive-bench/fleet-<files>x<frames>/captures/device-0001.pcap` ... (numbered, so
their names look like one rotation, and they overlap in time, so they are not one), then times
`analyze DIR --format json` with `--jobs 1` and with its default (one process per core),
alternating, and prints medians, frames/s and memory as `run.py` measures them. Also checks that
each recording's findings are exactly the violations planted in it, and that both ways wrote the
same report. Run it with the Python the tool is installed for.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from collections import Counter
from pathlib import Path

from run import ANALYZE, HERE, require_installed, run


def generate(folder: Path, files: int, frames: int) -> None:
    """The recordings and, beside them (`truth/`), what each has planted."""
    captures, truth = folder / "captures", folder / "truth"
    captures.mkdir(parents=True, exist_ok=True)
    truth.mkdir(exist_ok=True)
    for i in range(1, files + 1):
        path = captures / f"device-{i:04d}.pcap"
        if path.exists():
            continue
        subprocess.run([sys.executable, str(HERE / "generate.py"), str(path), "--frames", str(frames),
                        "--clients", "60", "--seed", str(i)], check=True, stdout=subprocess.DEVNULL)
        path.with_suffix(".truth.json").rename(truth / f"{path.name}.json")


def check_truth(folder: Path, report: Path) -> str:
    """Each recording's planted violations against the findings the report gives for it."""
    found: dict[str, Counter] = {}
    for f in json.loads(report.read_text())["findings"]:
        if f["rule_id"] in {"KA101", "KA102", "KA201"}:
            found.setdefault(Path(f["capture"]).name, Counter())[(f["rule_id"], f["client_id"])] += 1
    planted = missed = extra = 0
    for truth_file in sorted((folder / "truth").glob("*.json")):
        truth = Counter((v["rule_id"], v["client_id"])
                        for v in json.loads(truth_file.read_text())["violations"])
        got = found.get(truth_file.stem, Counter())
        planted += sum(truth.values())
        missed += sum((truth - got).values())
        extra += sum((got - truth).values())
    return f"planted {planted}, missed {missed}, extra {extra}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=40)
    parser.add_argument("--frames", type=int, default=25_000, help="frames a recording")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--dir", type=Path, default=Path("/tmp/mqtt-keepalive-bench"),
                        help="where the fleet is generated (in fleet-<files>x<frames>/)")
    args = parser.parse_args()
    require_installed("bench/fleet.py")
    folder = args.dir / f"fleet-{args.files}x{args.frames}"
    generate(folder, args.files, args.frames)
    cores = os.cpu_count() or 1
    tools = {f"analyze (--jobs {cores})": ANALYZE, "analyze --jobs 1": ANALYZE + ["--jobs", "1"]}
    outs = {name: folder / f"report{i}.json" for i, name in enumerate(tools)}
    times: dict[str, list[float]] = {name: [] for name in tools}
    rss = dict.fromkeys(tools, 0.0)
    pss = dict.fromkeys(tools, 0.0)
    for _ in range(args.runs):
        for name, command in tools.items():
            elapsed, largest, tree = run(command, folder / "captures", outs[name])
            times[name].append(elapsed)
            rss[name], pss[name] = max(rss[name], largest), max(pss[name], tree)
    frames = args.files * args.frames
    print(f"{'fleet':<24} {'tool':<20} {'median s':>9} {'frames/s':>10} {'max RSS MiB':>12} "
          f"{'tree PSS MiB':>13}")
    for name in tools:
        median = statistics.median(times[name])
        print(f"{folder.name:<24} {name:<20} {median:>9.2f} {frames / median:>10,.0f} "
              f"{rss[name]:>12.0f} {pss[name]:>13.0f}")
    reports = list(outs.values())
    same = all(r.read_bytes() == reports[0].read_bytes() for r in reports[1:])
    print(f"{folder.name}: {args.files} recordings, {frames:,} frames; analyzer vs ground truth: "
          f"{check_truth(folder, reports[0])}; the same report every way: {'yes' if same else 'NO'}")


if __name__ == "__main__":
    main()

"""Where the analyzer's time goes: cProfile over one capture, top functions by own time.

    python bench/hotpath.py CAPTURE.pcap [--top 20]

Prints the CPU seconds of a plain run first (profiling slows Python code about twofold, so the
profile's own total is not the speed), then the profile's top entries: per-call costs on the hot
path (decode, flow lookup, reassembly, MQTT framing, timeline, checks) and their share.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from analyzer.engine import analyze  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("capture")
    parser.add_argument("--top", type=int, default=20)
    args = parser.parse_args()

    start = time.process_time()
    report = analyze([args.capture])
    cpu = time.process_time() - start
    frames = sum(c.frames for c in report.captures)
    print(f"{args.capture}: {frames:,} frames, {len(report.sessions):,} sessions, "
          f"{len(report.findings):,} findings")
    print(f"plain run: {cpu:.2f} CPU s, {frames / cpu:,.0f} frames per CPU second\n")

    profiler = cProfile.Profile()
    profiler.enable()
    analyze([args.capture])
    profiler.disable()
    text = io.StringIO()
    stats = pstats.Stats(profiler, stream=text)
    stats.sort_stats("tottime").print_stats(args.top)
    lines = text.getvalue().splitlines()
    start_at = next((i for i, line in enumerate(lines) if line.lstrip().startswith("ncalls")), 0)
    total = stats.total_tt  # type: ignore[attr-defined]
    print(f"profiled run: {total:.2f} s in all; top {args.top} by own time "
          f"(own s, share, calls, per call µs):")
    for line in lines[start_at + 1:]:
        parts = line.split(None, 5)
        if len(parts) < 6:
            continue
        calls, own = parts[0], float(parts[1])
        count = int(calls.split("/")[0])
        print(f"  {own:7.2f}  {own / total:5.1%}  {count:>9,}  {own / count * 1e6:7.2f}  {parts[5]}")


if __name__ == "__main__":
    main()

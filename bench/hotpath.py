"""Where the analyzer's time goes: cProfile over one capture, top functions by own time.

    python bench/hotpath.py CAPTURE.pcap [--top 20]
    python bench/hotpath.py CAPTURE.pcap --worker 2    # one process of a split into 2 (the default on 2 cores)
    python bench/hotpath.py CAPTURE.pcap --columnar    # one process, the columnar path (the
                                                       # default for a capture of 8 MiB or more)
    valgrind --tool=callgrind --callgrind-out-file=/dev/null \
        python bench/hotpath.py CAPTURE.pcap --worker 2 --plain   # instructions, not seconds

Prints the CPU seconds of a plain run first (profiling slows Python code about twofold, so the
profile's own total is not the speed), then the profile's top entries: per-call costs on the hot
path (decode, flow lookup, reassembly, MQTT framing, timeline, checks) and their share. Without an
option it profiles one process frame by frame (`--jobs 1` with `columnar = false`); `--worker N` profiles what the first
of N processes of a split analysis does (`analyzer.split`), without the parent's merge.

Seconds vary with what else the machine runs (by a fifth and more on a shared one); callgrind's
count of instructions ("I refs") does not, so it tells a change worth a few percent from noise.
Python compiles what has no up-to-date bytecode on every start when PYTHONDONTWRITEBYTECODE is
set: compare two trees with their bytecode written (`python -m compileall analyzer`).
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from analyzer import split
from analyzer.engine import Options, analyze


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("capture")
    parser.add_argument("--top", type=int, default=20)
    parser.add_argument("--worker", type=int, metavar="N", help="profile process 0 of a split into N")
    parser.add_argument("--columnar", action="store_true", help="profile the columnar path")
    parser.add_argument("--plain", action="store_true",
                        help="the plain run only, no profile (to count instructions under callgrind)")
    args = parser.parse_args()
    options = Options(columnar=args.columnar)

    def once() -> str:
        """One run; what it analysed."""
        if not args.worker:
            report = analyze([args.capture], options)
            frames = sum(c.frames for c in report.captures)
            return (f"{frames:,} frames, {len(report.sessions):,} sessions, "
                    f"{len(report.findings):,} findings, one process")
        parts = split._run_shard([args.capture], options, 0, args.worker)
        for part in parts:  # its records wait in temporary files for a merge that is not done here
            os.remove(part.sessions)
            os.remove(part.findings)
        return f"{parts[0].summary.frames:,} frames, process 0 of {args.worker} of a split"

    start = time.process_time()
    what = once()
    cpu = time.process_time() - start
    print(f"{args.capture}: {what}")
    print(f"plain run: {cpu:.2f} CPU s\n")
    if args.plain:
        return

    profiler = cProfile.Profile()
    profiler.enable()
    once()
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

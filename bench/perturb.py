"""How verdicts hold up when a capture is imperfect: frames lost, duplicated, read out of order.

    python bench/perturb.py CAPTURE... [--cases 300] [--seed 1] [--kinds drop,dup,swap,resend]
    python bench/perturb.py captures/tls-late-pinger.pcap --tls-keylog captures/tls-late-pinger.keys

Each capture is analysed whole, then again in many altered copies, and the error and warning
verdicts of each copy are compared with the whole capture's:

* `drop`: 1, 2 or 3 frames in a row taken out (a sniffer that could not keep up). A copy knows less
  than the whole capture, so it may lose verdicts (left unjudged, KA902) but must add none. A copy
  whose missing frames include the last one of their connection is not run ("tail"): nothing in
  the capture can show such frames existed, so the silence they ended is judged as seen.
* `dup`: one frame captured twice (on `any`, beside a bridge); `swap`: two frames stamped within
  1 ms read the other way round (two capture queues); `resend`: a frame's copy 1, 3 or 6 frames
  later, stamped as the frame before it (a TCP retransmission). The traffic is the same: so must
  the verdicts be.

Small captures are altered at every position; larger ones at `--cases` positions drawn with
`--seed`. Prints, per capture and kind, the copies run and those whose verdicts changed (the first
few: position and width, verdicts added, verdicts lost); exits 1 if any did. The shipped captures
are checked this way by the test suite (`tests/scenarios/test_shipped_captures.py`); this script
runs the same checks on any capture, such as the public ones or the benchmark's generated ones
in each `--shape` (`bench/run.py`).
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from analyzer.decode.tcp import decode_segment
from analyzer.engine import Options, analyze
from analyzer.sources import open_capture
from tests.unit.test_pipeline_variants import write_pcap

KINDS = ("drop", "dup", "swap", "resend")
Frames = list[tuple[int, bytes]]


def verdicts(path: Path, options: Options) -> Counter[str]:
    """Error and warning findings of one analysis, by rule."""
    return Counter(f.rule_id for f in analyze([str(path)], options).findings
                   if f.severity.name in ("ERROR", "WARNING"))


def variants(kind: str, frames: Frames,
             last_of_flow: list[bool]) -> Iterator[tuple[tuple[int, int], Frames | None]]:
    """(position, width or distance) and the altered frames of every copy of this kind; None for
    a `drop` that takes a connection's last frame (a tail loss, not run)."""
    n = len(frames)
    if kind == "drop":
        for width in (1, 2, 3):
            for i in range(n - width + 1):
                tail = any(last_of_flow[i:i + width])
                yield (i + 1, width), None if tail else frames[:i] + frames[i + width:]
    elif kind == "dup":
        for i in range(n):
            yield (i + 1, 0), frames[:i + 1] + frames[i:]
    elif kind == "swap":
        for i in range(n - 1):
            if abs(frames[i + 1][0] - frames[i][0]) < 1_000_000:
                yield (i + 1, 1), frames[:i] + [frames[i + 1], frames[i]] + frames[i + 2:]
    else:
        for gap in (1, 3, 6):
            for i in range(n - gap):
                copy = (frames[i + gap][0], frames[i][1])
                yield (i + 1, gap), frames[:i + gap + 1] + [copy] + frames[i + gap + 1:]


def last_frames(linktype: int, frames: Frames) -> list[bool]:
    """Whether each frame is the last of its TCP connection in the capture."""
    keys = []
    for _, data in frames:
        seg = decode_segment(linktype, data)
        keys.append(None if isinstance(seg, str)
                    else frozenset([(seg[0], seg[1]), (seg[2], seg[3])]))
    last: dict[frozenset, int] = {}
    for i, key in enumerate(keys):
        if key is not None:
            last[key] = i
    return [key is not None and last[key] == i for i, key in enumerate(keys)]


def check(path: Path, kinds: list[str], cases: int, rng: random.Random, options: Options,
          workdir: Path) -> bool:
    """Run and print one capture's checks; True if every copy kept its verdicts."""
    with open_capture(str(path)) as reader:
        records = [(ts, linktype, data) for _, ts, linktype, data, _ in reader]
    linktypes = {linktype for _, linktype, _ in records}
    if len(linktypes) != 1:
        print(f"{path.name}: skipped (frames of {len(linktypes)} link types)")
        return True
    (linktype,) = linktypes
    frames = [(ts, data) for ts, _, data in records]
    whole = verdicts(path, options)
    ends = last_frames(linktype, frames)
    ok = True
    for kind in kinds:
        every = list(variants(kind, frames, ends))
        chosen = every if len(every) <= cases else rng.sample(every, cases)
        tails = sum(1 for _, altered in chosen if altered is None)
        changed = {}
        for where, altered in chosen:
            if altered is None:
                continue
            got = verdicts(write_pcap(workdir / "altered.pcap", linktype, altered), options)
            added, lost = got - whole, whole - got
            if added or (lost and kind != "drop"):
                changed[where] = (dict(added), dict(lost))
        ok &= not changed
        shown = ", ".join(f"{where}: +{added} -{lost}"
                          for where, (added, lost) in list(changed.items())[:4])
        print(f"{path.name} {kind}: {len(chosen) - tails} run"
              + (f" ({tails} tail losses not run)" if tails else "")
              + f", {len(changed)} changed" + (f" [{shown}]" if shown else ""), flush=True)
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("captures", nargs="+", type=Path)
    parser.add_argument("--cases", type=int, default=300,
                        help="copies per kind for a large capture")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--kinds", default=",".join(KINDS), help=f"of {', '.join(KINDS)}")
    parser.add_argument("--tls-keylog", action="append", default=[], metavar="FILE")
    args = parser.parse_args()
    kinds = [k for k in args.kinds.split(",") if k]
    unknown = [k for k in kinds if k not in KINDS]
    if unknown:
        parser.error(f"unknown kind(s): {', '.join(unknown)}")
    options = Options(tls_keylogs=tuple(args.tls_keylog))
    rng = random.Random(args.seed)
    ok = True
    with tempfile.TemporaryDirectory(prefix="mqtt-keepalive-perturb-") as tmp:
        for path in args.captures:
            ok &= check(path, kinds, args.cases, rng, options, Path(tmp))
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())

"""Rotated captures (`tcpdump -C/-G`, ring buffers): several files that are one recording.

A device's session often spans a rotation: its PINGREQ is in `dev.pcap3`, the next one in
`dev.pcap4`. Analysed file by file, the gap between them would be lost (the first file ends the
session at capture end, the second starts it mid-stream, keep-alive unknown). So files of one
rotation are read as one capture, in time order.

Files may be one rotation when they sit in the same directory and their names differ only in a
trailing counter (`dev.pcap0`, `dev.pcap1`) or in digit runs of fixed width
(`cap_00001_20261125120000.pcap`, `cap_00002_20261125120100.pcap`). They are ordered by their first
timestamp, and the engine joins a file to the one before only when it starts where that one ended
(no earlier, and within `ROTATION_GAP_NS` after): numbered files recorded at other times, or of the
same moment by two probes, stay separate captures. Frame numbers
then count on across the joined files, as in the file `mergecap -a` would make of them.

A group is cut where that join is sure not to happen, so that its parts can be analysed in
parallel (`--jobs`, `--dask`): a fleet's recordings named `device-0001.pcap` to `device-2000.pcap`
share a key, but they overlap in time. A file cannot continue a run of files when a frame of that
run is later than the file's first: the first `SAMPLED_FRAMES` frames of every file are read for
that. Where the frames read prove nothing, the files stay together (the engine decides), so a
cut never parts files that the engine would have joined.
"""

from __future__ import annotations

import os
import re

from analyzer.errors import InputError
from analyzer.sources.files import open_capture

_DIGITS = re.compile(r"\d+")
SAMPLED_FRAMES = 64
"""Frames read from the start of each file that shares a rotation key (a few microseconds each)."""


def rotation_groups(paths: list[str]) -> list[list[str]]:
    """Group `paths` (in order of first appearance) into rotations, each in time order and cut
    where its files cannot continue each other; most groups have one file."""
    groups: dict[tuple[str, str], list[str]] = {}
    order: list[tuple[str, str]] = []
    for path in paths:
        key = _rotation_key(path)
        if key not in groups:
            groups[key] = []
            order.append(key)
        groups[key].append(path)
    return [run for key in order for run in _runs(groups[key])]


def _runs(paths: list[str]) -> list[list[str]]:
    """`paths` in time order, cut before every file that a frame already read is later than the
    first frame of (the engine would start a new capture there: `engine._continues`)."""
    if len(paths) < 2:
        return [paths]
    starts = {path: _start(path) for path in paths}
    runs: list[list[str]] = []
    latest = -1  # the latest frame read of the current run
    for path in sorted(paths, key=lambda p: (starts[p][0], p)):
        first, seen = starts[path]
        if runs and first >= 0 and latest > first:
            runs.append([path])
            latest = seen
        else:
            if not runs:
                runs.append([])
            runs[-1].append(path)
            latest = max(latest, seen)
    return runs


def _rotation_key(path: str) -> tuple[str, str]:
    """Names that only differ in a trailing counter (`dump.pcap0`: tcpdump -C) or in digit runs of
    fixed width (`ring_00001_20261125120000.pcapng`: dumpcap, tcpdump -G, editcap -c) share a key;
    `mqtt31-paho.pcap` and `mqtt5-paho.pcap` do not."""
    name = os.path.basename(path)
    if path == "-" or not _DIGITS.search(name):
        return (path, "")
    trailing = re.fullmatch(r"(.*\D)\d+", name)
    if trailing:
        return (os.path.dirname(path), trailing.group(1) + "#")
    return (os.path.dirname(path), _DIGITS.sub(lambda m: "#" * len(m.group()), name))


def _in_time_order(paths: list[str]) -> list[str]:
    if len(paths) < 2:
        return paths
    return sorted(paths, key=lambda p: (_start(p, 1)[0], p))


def _start(path: str, frames: int | None = None) -> tuple[int, int]:
    """The first frame's time and the latest of the first `frames` (`SAMPLED_FRAMES`) frames'
    times; (-1, -1) for a file with no frame or that cannot be read (it sorts first, to be
    reported)."""
    frames = frames or SAMPLED_FRAMES
    first = latest = -1
    try:
        with open_capture(path) as reader:
            for n, (_, ts_ns, *_) in enumerate(reader):
                if n == 0:
                    first = ts_ns
                latest = max(latest, ts_ns)
                if n + 1 == frames:
                    break
    except InputError:
        pass
    return first, latest

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
"""

from __future__ import annotations

import os
import re

from analyzer.errors import InputError
from analyzer.sources.files import open_capture

_DIGITS = re.compile(r"\d+")


def rotation_groups(paths: list[str]) -> list[list[str]]:
    """Group `paths` (in order of first appearance) into rotations; most groups have one file."""
    groups: dict[tuple[str, str], list[str]] = {}
    order: list[tuple[str, str]] = []
    for path in paths:
        key = _rotation_key(path)
        if key not in groups:
            groups[key] = []
            order.append(key)
        groups[key].append(path)
    return [_in_time_order(groups[key]) for key in order]


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
    return sorted(paths, key=lambda p: (_first_timestamp(p), p))


def _first_timestamp(path: str) -> int:
    """The first frame's time; files that cannot be read sort first, to be reported."""
    try:
        with open_capture(path) as reader:
            for _, ts_ns, *_ in reader:
                return ts_ns
    except InputError:
        pass
    return -1

"""Rotated captures (`tcpdump -C/-G`, ring buffers): several files that are one recording.

A device's session often spans a rotation: its PINGREQ is in `dev.pcap3`, the next one in
`dev.pcap4`. Analysed file by file, the gap between them would be lost (the first file ends the
session at capture end, the second starts it mid-stream, keep-alive unknown). So files of one
rotation are read as one capture, in time order.

Files are one rotation when they sit in the same directory and their names differ only in digit
runs (`dev.pcap0`, `dev.pcap1`; `cap_00001_20261125.pcap`, `cap_00002_20261125.pcap`). They are
ordered by their first timestamp; the engine joins consecutive ones that do not overlap in time
(a file that starts before the previous one ended is a separate recording after all). Frame numbers
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
        name = os.path.basename(path)
        key = (os.path.dirname(path), _DIGITS.sub("#", name)) if path != "-" and _DIGITS.search(name) \
            else (path, "")
        if key not in groups:
            groups[key] = []
            order.append(key)
        groups[key].append(path)
    return [_in_time_order(groups[key]) for key in order]


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

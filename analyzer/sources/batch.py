"""Frames in batches: one buffer of records plus columns saying where each frame lies in it.

The columnar analysis path (`analyzer.columnar`) reads a capture a few megabytes at a time. A
`FrameBatch` keeps the raw buffer as read and NumPy columns for its frames (where the data starts,
captured and wire length, timestamp), so nothing is built per frame until a frame needs Python:
`frame(i)` gives the record tuple the per-frame path takes.
"""

from __future__ import annotations

from collections.abc import Generator, Iterator
from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view


@dataclass(frozen=True)
class FrameBatch:
    """Consecutive frames of one capture; frame `i` is number `first_frame + i`."""

    buf: bytes
    data_start: np.ndarray
    """int64: where each frame's data starts in `buf`."""
    caplen: np.ndarray
    """int64: bytes of each frame in the capture."""
    wire_len: np.ndarray
    ts_ns: np.ndarray
    """int64 nanoseconds since the epoch."""
    first_frame: int
    linktype: int

    @classmethod
    def of(cls, buf: bytes, columns: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
           first_frame: int, linktype: int) -> FrameBatch:
        start, caplen, wire_len, ts_ns = columns
        return cls(buf, start, caplen, wire_len, ts_ns, first_frame, linktype)

    def __len__(self) -> int:
        return len(self.ts_ns)

    def frame(self, i: int) -> tuple[int, int, int, bytes, int]:
        """Frame `i` as the per-frame path's record: (frame_no, ts_ns, linktype, data, wire_len)."""
        start = int(self.data_start[i])
        return (self.first_frame + i, int(self.ts_ns[i]), self.linktype,
                self.buf[start:start + int(self.caplen[i])], int(self.wire_len[i]))


def record_columns(buf: bytes, starts: list[int], order: str,
                   frac_ns: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Columns of the pcap records whose 16-byte headers start at `starts` in `buf`."""
    raw = np.frombuffer(buf, dtype=np.uint8)
    at = np.asarray(starts, dtype=np.int64)
    heads = sliding_window_view(raw, 16)[at].copy().view(np.dtype(order + "u4"))
    sec, frac, caplen, wire = (heads[:, k].astype(np.int64) for k in range(4))
    return at + 16, caplen, wire, sec * 1_000_000_000 + frac * frac_ns


def gathered(records: Iterator[tuple[int, int, int, bytes, int]],
             max_bytes: int) -> Generator[FrameBatch, None, None]:
    """A frame-by-frame walker's records (pcapng's) as `FrameBatch`es of up to about `max_bytes`
    of frame data. A batch ends before a frame whose number does not follow on (pcapng numbers
    some blocks that hold no packet) or whose link type differs (one per interface). The first
    frame is a batch of its own, so that the reader knows, when it is taken, exactly what it knows
    on the per-frame path after the first record (TLS secrets that came before it)."""
    datas: list[bytes] = []
    stamps: list[int] = []
    wires: list[int] = []
    first = linktype = 0
    size = limit = 0
    for frame_no, ts_ns, frame_linktype, data, wire_len in records:
        if datas and (frame_no != first + len(datas) or frame_linktype != linktype or size >= limit):
            yield _batch(datas, stamps, wires, first, linktype)
            datas, stamps, wires, size, limit = [], [], [], 0, max_bytes
        if not datas:
            first, linktype = frame_no, frame_linktype
        datas.append(data)
        stamps.append(ts_ns)
        wires.append(wire_len)
        size += len(data)
    if datas:
        yield _batch(datas, stamps, wires, first, linktype)


def _batch(datas: list[bytes], stamps: list[int], wires: list[int], first: int,
           linktype: int) -> FrameBatch:
    caplen = np.fromiter(map(len, datas), dtype=np.int64, count=len(datas))
    start = np.zeros(len(datas), dtype=np.int64)
    np.cumsum(caplen[:-1], out=start[1:])
    return FrameBatch(b"".join(datas), start, caplen, np.array(wires, dtype=np.int64),
                      np.array(stamps, dtype=np.int64), first, linktype)

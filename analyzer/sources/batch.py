"""Frames in batches: one buffer of records plus columns saying where each frame lies in it.

The columnar analysis path (`analyzer.columnar`) reads a capture a few megabytes at a time. A
`FrameBatch` keeps the raw buffer as read and NumPy columns for its frames (where the data starts,
captured and wire length, timestamp), so nothing is built per frame until a frame needs Python:
`frame(i)` gives the record tuple the per-frame path takes.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from itertools import repeat

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
    """Every frame's link type, unless `linktypes` says each one's."""
    linktypes: np.ndarray | None = None
    """int64: each frame's link type, where they differ (a pcapng's interfaces take turns)."""

    @classmethod
    def of(cls, buf: bytes, columns: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
           first_frame: int, linktype: int | np.ndarray) -> FrameBatch:
        """`linktype`: one for all, or each frame's."""
        start, caplen, wire_len, ts_ns = columns
        if isinstance(linktype, np.ndarray):
            if (linktype == linktype[0]).all():
                return cls(buf, start, caplen, wire_len, ts_ns, first_frame, int(linktype[0]))
            return cls(buf, start, caplen, wire_len, ts_ns, first_frame, -1, linktype)
        return cls(buf, start, caplen, wire_len, ts_ns, first_frame, linktype)

    def __len__(self) -> int:
        return len(self.ts_ns)

    def linktype_of(self, i: int) -> int:
        return self.linktype if self.linktypes is None else int(self.linktypes[i])

    def looped(self, positions: np.ndarray | None = None
               ) -> tuple[list[int], list[int], list[int], Iterable[int]]:
        """For a Python loop over the frames at `positions` (every frame by default): where each
        one's data starts and ends in `buf`, its time and its link type, read from the columns once
        (not five NumPy scalars a frame, as `frame` reads them)."""
        if positions is None:
            start, caplen, ts_ns, linktypes = self.data_start, self.caplen, self.ts_ns, self.linktypes
        else:
            start, caplen, ts_ns = self.data_start[positions], self.caplen[positions], self.ts_ns[positions]
            linktypes = None if self.linktypes is None else self.linktypes[positions]
        return (start.tolist(), (start + caplen).tolist(), ts_ns.tolist(),
                repeat(self.linktype) if linktypes is None else linktypes.tolist())

    def frame(self, i: int) -> tuple[int, int, int, bytes, int]:
        """Frame `i` as the per-frame path's record: (frame_no, ts_ns, linktype, data, wire_len)."""
        start = int(self.data_start[i])
        return (self.first_frame + i, int(self.ts_ns[i]), self.linktype_of(i),
                self.buf[start:start + int(self.caplen[i])], int(self.wire_len[i]))


def record_columns(buf: bytes, starts: list[int], order: str,
                   frac_ns: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Columns of the pcap records whose 16-byte headers start at `starts` in `buf`."""
    raw = np.frombuffer(buf, dtype=np.uint8)
    at = np.asarray(starts, dtype=np.int64)
    heads = sliding_window_view(raw, 16)[at].copy().view(np.dtype(order + "u4"))
    sec, frac, caplen, wire = (heads[:, k].astype(np.int64) for k in range(4))
    return at + 16, caplen, wire, sec * 1_000_000_000 + frac * frac_ns

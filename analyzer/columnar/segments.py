"""Decode a batch of Ethernet/IPv4/TCP frames into columns (the common case of `decode_segment`).

Frames in any other shape (another link type, VLAN tags, IPv6, IP options, fragments, not TCP, too
short) are marked not `simple`; the columnar path hands them to the per-frame decoder.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from analyzer.sources.batch import FrameBatch

HEAD = 48
"""Bytes of Ethernet + IPv4 + the TCP header's fixed part read per frame."""


@dataclass
class Segments:
    """TCP segment columns of a batch; meaningful where `simple`."""

    simple: np.ndarray
    src: np.ndarray
    sport: np.ndarray
    dst: np.ndarray
    dport: np.ndarray
    seq: np.ndarray
    ack: np.ndarray
    flags: np.ndarray
    pay_start: np.ndarray
    """Where the TCP payload starts in the batch buffer."""
    pay_len: np.ndarray
    missing: np.ndarray
    """Payload bytes the IP header announces but the capture did not keep."""


def _be(rows: np.ndarray, at: int, width: int) -> np.ndarray:
    out = rows[:, at].astype(np.int64)
    for k in range(1, width):
        out = (out << 8) | rows[:, at + k]
    return out


def decode(batch: FrameBatch) -> Segments:
    n = len(batch)
    raw = np.frombuffer(batch.buf, dtype=np.uint8)
    caplen = batch.caplen
    ok = caplen >= 54 if batch.linktype == 1 else np.zeros(n, dtype=bool)
    at = np.where(ok, batch.data_start, 0)
    at = np.minimum(at, max(len(raw) - HEAD, 0))
    rows = sliding_window_view(raw, HEAD)[at] if len(raw) >= HEAD else np.zeros((n, HEAD), np.uint8)
    total = _be(rows, 16, 2)
    ok &= ((rows[:, 12] == 8) & (rows[:, 13] == 0) & (rows[:, 14] == 0x45) & (rows[:, 23] == 6)
           & ((_be(rows, 20, 2) & 0x3FFF) == 0) & (total >= 40))
    off_flags = _be(rows, 46, 2)
    start = 34 + (off_flags >> 12) * 4
    end = 14 + total
    data_end = np.minimum(end, caplen)
    pay_len = np.maximum(0, data_end - start)
    missing = np.where(end > caplen, np.maximum(0, end - np.maximum(start, caplen)), 0)
    return Segments(ok, _be(rows, 26, 4), _be(rows, 34, 2), _be(rows, 30, 4), _be(rows, 36, 2),
                    _be(rows, 38, 4), _be(rows, 42, 4), off_flags & 0x1FF,
                    batch.data_start + start, pay_len, missing)

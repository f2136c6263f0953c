"""Decode a batch of IPv4/TCP frames into columns (the common cases of `decode_segment`).

Taken: Ethernet, untagged or with one 802.1Q/802.1ad tag; Linux cooked captures v1 and v2
(`tcpdump -i any`); raw IP. Each frame's IPv4 header (no options, not a fragment) and TCP header are
read at the offset its link layer gives, with the arithmetic of `decode_segment`'s own paths, so a
frame taken here decodes exactly as there. Frames in any other shape (other link types, stacked
tags, IPv6, IP options, fragments, not TCP, too short) are marked not `simple`; the columnar path
hands them to the per-frame decoder.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from analyzer.decode import link
from analyzer.sources.batch import FrameBatch

HEAD = 48
"""Bytes read per frame from 14 before its IP header: the IPv4 header and the TCP header's fixed
part at the offsets they have behind an untagged Ethernet header."""
LINK = 18
"""Bytes of link header read per frame for its protocol field."""
VLAN_TAGS = np.array(sorted(link.VLAN_TAGS))
RAW = np.array(sorted(link.RAW_LINKTYPES | {link.LINKTYPE_IPV4}))


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
    caplen, data_start = batch.caplen, batch.data_start
    ip = _ip_offsets(batch, raw)
    ok = (ip >= 0) & (caplen >= ip + 40)
    at = data_start + ip - 14  # IP header at offset 14 of the row, as behind Ethernet
    ok &= at >= 0
    at = np.minimum(np.where(ok, at, 0), max(len(raw) - HEAD, 0))
    rows = sliding_window_view(raw, HEAD)[at] if len(raw) >= HEAD else np.zeros((n, HEAD), np.uint8)
    total = _be(rows, 16, 2)
    ok &= ((rows[:, 14] == 0x45) & (rows[:, 23] == 6) & ((_be(rows, 20, 2) & 0x3FFF) == 0)
           & (total >= 40))
    off_flags = _be(rows, 46, 2)
    start = ip + 20 + (off_flags >> 12) * 4
    end = ip + total
    data_end = np.minimum(end, caplen)
    pay_len = np.maximum(0, data_end - start)
    missing = np.where(end > caplen, np.maximum(0, end - np.maximum(start, caplen)), 0)
    return Segments(ok, _be(rows, 26, 4), _be(rows, 34, 2), _be(rows, 30, 4), _be(rows, 36, 2),
                    _be(rows, 38, 4), _be(rows, 42, 4), off_flags & 0x1FF,
                    data_start + start, pay_len, missing)


def _ip_offsets(batch: FrameBatch, raw: np.ndarray) -> np.ndarray:
    """Where each frame's IPv4 header starts, by its link layer (`link.ip_offset`); -1 where it
    is not one of the shapes taken here."""
    n = len(batch)
    if batch.linktypes is None and batch.linktype == link.LINKTYPE_ETHERNET:
        linktype = None  # (all Ethernet: the common case, no per-frame type to compare)
    else:
        linktype = batch.linktypes if batch.linktypes is not None else np.full(n, batch.linktype)
    at = np.minimum(batch.data_start, max(len(raw) - LINK, 0))
    head = sliding_window_view(raw, LINK)[at] if len(raw) >= LINK else np.zeros((n, LINK), np.uint8)
    short = batch.caplen < LINK  # (the columns below are only read where frames are long enough)
    ip = np.full(n, -1, dtype=np.int64)
    ethertype = _be(head, 12, 2)
    ethernet = ~short if linktype is None else ~short & (linktype == link.LINKTYPE_ETHERNET)
    ip[ethernet & (ethertype == link.ETHERTYPE_IPV4)] = 14
    ip[ethernet & np.isin(ethertype, VLAN_TAGS) & (_be(head, 16, 2) == link.ETHERTYPE_IPV4)] = 18
    if linktype is not None:
        ip[~short & (linktype == link.LINKTYPE_LINUX_SLL) & (_be(head, 14, 2) == link.ETHERTYPE_IPV4)] = 16
        ip[~short & (linktype == link.LINKTYPE_LINUX_SLL2) & (_be(head, 0, 2) == link.ETHERTYPE_IPV4)] = 20
        ip[np.isin(linktype, RAW)] = 0  # (the version is checked with the header length)
    return ip

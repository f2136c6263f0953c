"""Decode a batch of TCP frames into columns (the common cases of `decode_segment`).

Taken: Ethernet, untagged or with one or two 802.1Q/802.1ad tags; Linux cooked captures v1 and
v2 (`tcpdump -i any`); raw IP. Each frame's IP header (IPv4 without options and not a fragment, or
IPv6 with TCP next and no extension header) and TCP header are read at the offset its link layer
gives, with the arithmetic of `decode_segment`'s own paths, so a frame taken here decodes exactly
as there. Frames in any other shape (other link types, three tags or more, IP options, extension
headers, fragments, not TCP, too short) are marked not `simple`; the columnar path hands them to
the per-frame decoder.

An address is a number below 2^32 (IPv4), or `V6` plus its rank among the batch's IPv6 addresses
(`v6_addresses` holds them), so that an endpoint is still `address << 16 | port` in 64 bits and
endpoints compare as their bytes do.
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
LINK = 22
"""Bytes of link header read per frame for its protocol field (behind up to two VLAN tags)."""
HEAD6 = 60
"""Bytes read per IPv6 frame from its IP header: the header and the TCP header's fixed part."""
VLAN_TAGS = np.array(sorted(link.VLAN_TAGS))
RAW = np.array(sorted(link.RAW_LINKTYPES | {link.LINKTYPE_IPV4}))
RAW6 = np.array(sorted(link.RAW_LINKTYPES))
V6 = 1 << 32
"""IPv6 addresses are numbered from here (see the module docstring)."""


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
    v6: np.ndarray
    """IPv6 frames (their `src` and `dst` are `V6` + an index into `v6_addresses`)."""
    v6_sum: np.ndarray
    """uint64, for the IPv6 frames: `Shard.owns`'s endpoint sum, `ip << 16 | port` of both
    endpoints added, modulo 2^64 (all its hash keeps)."""
    v6_addresses: list[bytes]
    non_tcp: np.ndarray
    """IP frames that carry no TCP (UDP, ICMP, ...): what `decode_segment` skips as `non_tcp`, told
    apart here so that they are counted in bulk (a gateway's capture may be mostly such frames)."""

    def address(self, number: int) -> bytes:
        """The raw address a `src` or `dst` number stands for."""
        return number.to_bytes(4, "big") if number < V6 else self.v6_addresses[number - V6]


def _be(rows: np.ndarray, at: int, width: int) -> np.ndarray:
    out = rows[:, at].astype(np.int64)
    for k in range(1, width):
        out = (out << 8) | rows[:, at + k]
    return out


def decode(batch: FrameBatch) -> Segments:
    n = len(batch)
    raw = np.frombuffer(batch.buf, dtype=np.uint8)
    caplen, data_start = batch.caplen, batch.data_start
    ip, ip6 = _ip_offsets(batch, raw)
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
    pay_len, missing = _payload(start, ip + total, caplen)
    # not TCP, as `ipv4` and `ipv6` find it (before any other check but the header's length); an
    # IPv4 header read only where its version says 4, whatever the link layer said
    non_tcp = ((ip >= 0) & (caplen >= ip + 20) & (rows[:, 14] >> 4 == 4) & (rows[:, 23] != 6)
               & (at == data_start + ip - 14))
    segs = Segments(ok, _be(rows, 26, 4), _be(rows, 34, 2), _be(rows, 30, 4), _be(rows, 36, 2),
                    _be(rows, 38, 4), _be(rows, 42, 4), off_flags & 0x1FF, data_start + start,
                    pay_len, missing, np.zeros(n, dtype=bool), np.zeros(n, dtype=np.uint64), [],
                    non_tcp)
    six = np.flatnonzero((ip6 >= 0) & (caplen >= ip6 + 40))
    if len(six):
        next_header = raw[np.minimum(batch.data_start[six] + ip6[six] + 6, len(raw) - 1)]
        segs.non_tcp[six[~np.isin(next_header, _NOT_NON_TCP6)]] = True
    six = np.flatnonzero((ip6 >= 0) & (caplen >= ip6 + HEAD6))
    if len(six):
        _ipv6(segs, raw, batch, six, ip6[six])
    return segs


_NOT_NON_TCP6 = np.array([0, 6, 43, 44, 60])
"""IPv6 next headers after which a frame is not simply `non_tcp`: TCP, a fragment, and the
extension headers `ipv6` walks (the per-frame decoder tells those)."""


def _payload(start: np.ndarray, end: np.ndarray, caplen: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Payload bytes kept and missing, from where the TCP payload starts and where the IP header
    says it ends, in the frame: as `decode_segment` works them out."""
    pay_len = np.maximum(0, np.minimum(end, caplen) - start)
    return pay_len, np.where(end > caplen, np.maximum(0, end - np.maximum(start, caplen)), 0)


def _ipv6(segs: Segments, raw: np.ndarray, batch: FrameBatch, six: np.ndarray, ip: np.ndarray) -> None:
    """Take the frames `six` (positions; their IPv6 headers at `ip` in the frame, and long enough)
    that carry TCP right after the IPv6 header, with a payload length (`ipv6`'s simple case)."""
    rows = sliding_window_view(raw, HEAD6)[batch.data_start[six] + ip]
    payload_length = _be(rows, 4, 2)
    good = (rows[:, 6] == 6) & (payload_length > 0)
    six, ip, rows, payload_length = six[good], ip[good], rows[good], payload_length[good]
    if not len(six):
        return
    off_flags = _be(rows, 52, 2)
    start = ip + 40 + (off_flags >> 12) * 4
    pay_len, missing = _payload(start, ip + 40 + payload_length, batch.caplen[six])
    numbers, table = _numbered(np.concatenate([rows[:, 8:24], rows[:, 24:40]]))
    sport, dport = _be(rows, 40, 2), _be(rows, 42, 2)
    segs.simple[six] = True
    segs.v6[six] = True
    segs.src[six], segs.dst[six] = np.split(V6 + numbers, 2)
    segs.sport[six], segs.dport[six] = sport, dport
    segs.seq[six], segs.ack[six] = _be(rows, 44, 4), _be(rows, 48, 4)
    segs.flags[six] = off_flags & 0x1FF
    segs.pay_start[six] = batch.data_start[six] + start
    segs.pay_len[six], segs.missing[six] = pay_len, missing
    segs.v6_addresses = table
    # `Shard.owns` adds the endpoints' ip << 16 | port and keeps the sum's low 64 bits: those
    # come from each address's low 48 bits
    low = np.uint64(16)
    ends = [(_be(rows, at + 10, 6).astype(np.uint64) << low) | port.astype(np.uint64)
            for at, port in ((8, sport), (24, dport))]
    segs.v6_sum[six] = ends[0] + ends[1]  # (wraps at 64 bits)


def _numbered(addresses: np.ndarray) -> tuple[np.ndarray, list[bytes]]:
    """16-byte addresses (rows) as their ranks among the distinct ones, in byte order, and those
    in that order."""
    halves = np.ascontiguousarray(addresses).view(">u8")
    high, low = halves[:, 0], halves[:, 1]
    order = np.lexsort((low, high))
    high, low = high[order], low[order]
    new = np.ones(len(order), dtype=bool)
    new[1:] = (high[1:] != high[:-1]) | (low[1:] != low[:-1])
    ranks = np.empty(len(order), dtype=np.int64)
    ranks[order] = np.cumsum(new) - 1
    table = [bytes(addresses[i]) for i in order[new].tolist()]
    return ranks, table


def _ip_offsets(batch: FrameBatch, raw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Where each frame's IPv4 header starts, and where its IPv6 header does, by its link layer
    (`link.ip_offset`); -1 where it is not one of the shapes taken here."""
    n = len(batch)
    if batch.linktypes is None and batch.linktype == link.LINKTYPE_ETHERNET:
        linktype = None  # (all Ethernet: the common case, no per-frame type to compare)
    else:
        linktype = batch.linktypes if batch.linktypes is not None else np.full(n, batch.linktype)
    at = np.minimum(batch.data_start, max(len(raw) - LINK, 0))
    head = sliding_window_view(raw, LINK)[at] if len(raw) >= LINK else np.zeros((n, LINK), np.uint8)
    short = batch.caplen < LINK  # (the columns below are only read where frames are long enough)
    ip = np.full(n, -1, dtype=np.int64)
    ip6 = np.full(n, -1, dtype=np.int64)
    ethertype = _be(head, 12, 2)
    ethernet = ~short if linktype is None else ~short & (linktype == link.LINKTYPE_ETHERNET)
    tagged = ethernet & np.isin(ethertype, VLAN_TAGS)
    inner = _be(head, 16, 2)
    stacked = tagged & np.isin(inner, VLAN_TAGS)  # (802.1ad: a service tag, then a customer tag)
    innermost = _be(head, 20, 2)
    for offsets, kind in ((ip, link.ETHERTYPE_IPV4), (ip6, link.ETHERTYPE_IPV6)):
        offsets[ethernet & (ethertype == kind)] = 14
        offsets[tagged & (inner == kind)] = 18
        offsets[stacked & (innermost == kind)] = 22
    if linktype is not None:
        sll = ~short & (linktype == link.LINKTYPE_LINUX_SLL)
        sll2 = ~short & (linktype == link.LINKTYPE_LINUX_SLL2)
        protocol, protocol2 = _be(head, 14, 2), _be(head, 0, 2)
        for offsets, kind in ((ip, link.ETHERTYPE_IPV4), (ip6, link.ETHERTYPE_IPV6)):
            offsets[sll & (protocol == kind)] = 16
            offsets[sll2 & (protocol2 == kind)] = 20
        ip[np.isin(linktype, RAW)] = 0  # (the version is checked with the header length)
        ip6[~short & np.isin(linktype, RAW6) & (head[:, 0] >> 4 == 6)] = 0
        ip6[linktype == link.LINKTYPE_IPV6] = 0
    return ip, ip6

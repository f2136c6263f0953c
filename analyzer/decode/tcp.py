"""The TCP header, and the whole decode step from a captured frame to a TCP segment tuple.

`decode_segment` is on the per-frame hot path, so it returns a plain tuple (see `model.py`):

    (src_ip, src_port, dst_ip, dst_port, seq, ack, flags, payload, missing)

`src_ip`/`dst_ip` are the raw 4- or 16-byte addresses (cheap to hash; turned into text only for
reports). `missing` counts payload bytes the IP header announces but the capture did not keep
(a snap length cut them): the reassembler treats them as lost.
"""

from __future__ import annotations

import struct

from analyzer.decode.ip import SKIP_TRUNCATED, ipv4, ipv6
from analyzer.decode.link import NOT_IP, ip_offset

FIN, SYN, RST, PSH, ACK = 0x01, 0x02, 0x04, 0x08, 0x10

SKIP_NON_IP = "non_ip"
SKIP_UNSUPPORTED_LINK = "unsupported_linktype"

_TCP = struct.Struct("!HHIIH")

Segment = tuple[bytes, int, bytes, int, int, int, int, bytes, int]


_ETH_IPV4 = struct.Struct("!12xHBxH2xHxB2x4s4s")
"""Ethernet header then IPv4: ethertype, version/IHL, total length, flags/fragment, protocol,
source, destination; the common case, decoded in one call."""


_COOKED_IPV4 = {
    113: (struct.Struct("!14xHBxH2xHxB2x4s4s"), 16),  # Linux cooked v1: protocol at 14, IP at 16
    276: (struct.Struct("!H18xBxH2xHxB2x4s4s"), 20),  # v2: protocol at 0, IP at 20
}
"""`tcpdump -i any` captures: the same one-call decode of the link protocol and IPv4 header."""


def decode_segment(linktype: int, data: bytes) -> Segment | str:
    """Decode one frame down to its TCP segment, or return why it was skipped (a `skipped` key).

    IPv4 without options behind untagged Ethernet (nearly every frame of most captures) or a Linux
    cooked header takes a fast path with one struct call for both headers; everything else goes
    through the link and IP decoders, which give the same answer for these frames.
    """
    if linktype == 1:
        head, ip = _ETH_IPV4, 14
    else:
        cooked = _COOKED_IPV4.get(linktype)
        if cooked is None:
            return _decode_general(linktype, data)
        head, ip = cooked
    if len(data) >= ip + 40:
        protocol, ver_ihl, total, frag, proto, src, dst = head.unpack_from(data)
        if protocol == 0x0800 and ver_ihl == 0x45 and proto == 6 and not frag & 0x3FFF and total >= 40:
            sport, dport, seq, ack, off_flags = _TCP.unpack_from(data, ip + 20)
            start = ip + 20 + (off_flags >> 12) * 4
            end = ip + total
            payload = data[start:end]
            missing = max(0, end - max(start, len(data))) if end > len(data) else 0
            return src, sport, dst, dport, seq, ack, off_flags & 0x1FF, payload, missing
    return _decode_general(linktype, data)


def _decode_general(linktype: int, data: bytes) -> Segment | str:
    version, off = ip_offset(linktype, data)
    if version == 4:
        ip = ipv4(data, off)
    elif version == 6:
        ip = ipv6(data, off)
    else:
        return SKIP_NON_IP if version == NOT_IP else f"{SKIP_UNSUPPORTED_LINK}:{linktype}"
    if ip.__class__ is str:
        return ip  # type: ignore[return-value]
    src, dst, toff, end = ip  # type: ignore[misc]
    if len(data) < toff + 20:
        return SKIP_TRUNCATED
    sport, dport, seq, ack, off_flags = _TCP.unpack_from(data, toff)
    start = toff + (off_flags >> 12) * 4
    payload = data[start:end]
    missing = max(0, end - max(start, len(data)))
    return src, sport, dst, dport, seq, ack, off_flags & 0x1FF, payload, missing

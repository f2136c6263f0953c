"""IPv4 and IPv6 headers: find the TCP segment and its length from the IP header.

The payload length comes from the IP header, never from the frame length, so Ethernet padding on
short frames is ignored. IP fragments are counted and skipped (MQTT over fragmented IP is not seen
in practice, and a fragment's TCP header may not even be present).
"""

from __future__ import annotations

import struct

PROTO_TCP = 6
_IPV6_EXTENSIONS = frozenset({0, 43, 60})  # hop-by-hop, routing, destination options
_IPV6_FRAGMENT = 44
_U16 = struct.Struct("!H")

# Why a frame was not a usable TCP segment; these are the capture summary's `skipped` keys.
SKIP_NON_TCP = "non_tcp"
SKIP_FRAGMENT = "ip_fragment"
SKIP_TRUNCATED = "truncated_header"


def ipv4(data: bytes, off: int) -> tuple[bytes, bytes, int, int] | str:
    """Return (src, dst, tcp_offset, tcp_end) or a skip reason."""
    if len(data) < off + 20:
        return SKIP_TRUNCATED
    ihl = (data[off] & 0x0F) * 4
    if data[off + 9] != PROTO_TCP:
        return SKIP_NON_TCP
    if _U16.unpack_from(data, off + 6)[0] & 0x3FFF:
        return SKIP_FRAGMENT
    total = _U16.unpack_from(data, off + 2)[0]
    end = off + total if total >= ihl else len(data)  # 0 = TSO-offloaded: trust the frame
    return data[off + 12 : off + 16], data[off + 16 : off + 20], off + ihl, end


def ipv6(data: bytes, off: int) -> tuple[bytes, bytes, int, int] | str:
    """Return (src, dst, tcp_offset, tcp_end) or a skip reason; walks extension headers."""
    if len(data) < off + 40:
        return SKIP_TRUNCATED
    payload_len = _U16.unpack_from(data, off + 4)[0]
    next_header = data[off + 6]
    src, dst = data[off + 8 : off + 24], data[off + 24 : off + 40]
    end = off + 40 + payload_len if payload_len else len(data)  # 0 = jumbogram / offload
    pos = off + 40
    while next_header in _IPV6_EXTENSIONS:
        if len(data) < pos + 2:
            return SKIP_TRUNCATED
        next_header, pos = data[pos], pos + (data[pos + 1] + 1) * 8
    if next_header == _IPV6_FRAGMENT:
        return SKIP_FRAGMENT
    if next_header != PROTO_TCP:
        return SKIP_NON_TCP
    return src, dst, pos, end

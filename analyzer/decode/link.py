"""Link layers: find where the IP header starts in a captured frame.

Supported link types (tcpdump.org numbering): Ethernet with any stack of 802.1Q / 802.1ad tags,
Linux cooked capture v1 (SLL, `tcpdump -i any` before libpcap 1.10) and v2 (SLL2), raw IP (101, and
the 12 and 14 some platforms write), IPv4 (228), IPv6 (229), BSD loopback NULL (0, address family in
the writer's byte order) and OpenBSD LOOP (108, network order).
"""

from __future__ import annotations

ETHERTYPE_IPV4 = 0x0800
ETHERTYPE_IPV6 = 0x86DD
VLAN_TAGS = frozenset({0x8100, 0x88A8, 0x9100, 0x9200})

LINKTYPE_NULL = 0
LINKTYPE_ETHERNET = 1
LINKTYPE_RAW = 101
LINKTYPE_LOOP = 108
LINKTYPE_LINUX_SLL = 113
LINKTYPE_LINUX_SLL2 = 276
LINKTYPE_IPV4 = 228
LINKTYPE_IPV6 = 229
RAW_LINKTYPES = frozenset({LINKTYPE_RAW, 12, 14})

_BSD_AF_INET6 = frozenset({24, 28, 30})  # NetBSD/OpenBSD, FreeBSD, macOS

NOT_IP = -1
UNSUPPORTED = -2


def ip_offset(linktype: int, data: bytes) -> tuple[int, int]:
    """Return (IP version 4 or 6, offset of the IP header), or (NOT_IP | UNSUPPORTED, 0).

    Short frames give NOT_IP: a header we cannot read is not an IP packet we can use.
    """
    try:
        if linktype == LINKTYPE_ETHERNET:
            return _ethernet(data)
        if linktype in RAW_LINKTYPES:
            return _raw(data, 0)
        if linktype == LINKTYPE_LINUX_SLL:
            return _by_ethertype((data[14] << 8) | data[15], 16)
        if linktype == LINKTYPE_LINUX_SLL2:
            return _by_ethertype((data[0] << 8) | data[1], 20)
        if linktype == LINKTYPE_NULL:
            family = data[0] | (data[1] << 8) if data[0] else (data[3] | (data[2] << 8))
            return _by_family(family)
        if linktype == LINKTYPE_LOOP:
            return _by_family((data[2] << 8) | data[3])
        if linktype == LINKTYPE_IPV4:
            return 4, 0
        if linktype == LINKTYPE_IPV6:
            return 6, 0
    except IndexError:
        return NOT_IP, 0
    return UNSUPPORTED, 0


def _ethernet(data: bytes) -> tuple[int, int]:
    ethertype = (data[12] << 8) | data[13]
    offset = 14
    while ethertype in VLAN_TAGS:
        ethertype = (data[offset + 2] << 8) | data[offset + 3]
        offset += 4
    return _by_ethertype(ethertype, offset)


def _by_ethertype(ethertype: int, offset: int) -> tuple[int, int]:
    if ethertype == ETHERTYPE_IPV4:
        return 4, offset
    if ethertype == ETHERTYPE_IPV6:
        return 6, offset
    return NOT_IP, 0


def _by_family(family: int) -> tuple[int, int]:
    if family == 2:
        return 4, 4
    if family in _BSD_AF_INET6:
        return 6, 4
    return NOT_IP, 0


def _raw(data: bytes, offset: int) -> tuple[int, int]:
    version = data[offset] >> 4
    return (version, offset) if version in (4, 6) else (NOT_IP, 0)

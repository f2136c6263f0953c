"""decode_segment: a captured frame of any supported link type down to its TCP segment, or a skip reason.

Frames are built as real bytes: the IP/TCP part with scapy, link headers with `struct` so that each
byte of the header under test is visible here.
"""

from __future__ import annotations

import socket
import struct

import pytest
from scapy.layers.inet import ICMP, IP, TCP, UDP, IPOption_Router_Alert
from scapy.layers.inet6 import IPv6, IPv6ExtHdrDestOpt, IPv6ExtHdrFragment, IPv6ExtHdrHopByHop
from scapy.layers.l2 import ARP, Ether
from scapy.packet import Raw

from analyzer.decode.tcp import ACK, FIN, PSH, RST, SYN, decode_segment

SRC4, DST4 = "192.0.2.10", "198.51.100.20"
SRC6, DST6 = "2001:db8::10", "2001:db8:1::20"
SPORT, DPORT, SEQ, ACKNO = 51_234, 1883, 0xFEDC_BA98, 0x0123_4567
PAYLOAD = b"\xc0\x00"                                     # a PINGREQ

MAC_DST, MAC_SRC = bytes.fromhex("001122334455"), bytes.fromhex("66778899aabb")


def tcp(payload: bytes = PAYLOAD, flags: str = "PA", **kwargs: object) -> TCP:
    return TCP(sport=SPORT, dport=DPORT, seq=SEQ, ack=ACKNO, flags=flags, **kwargs) / Raw(payload)


def ip4(payload: bytes = PAYLOAD, **kwargs: object) -> bytes:
    return bytes(IP(src=SRC4, dst=DST4, **kwargs) / tcp(payload))


def ip6(payload: bytes = PAYLOAD) -> bytes:
    return bytes(IPv6(src=SRC6, dst=DST6) / tcp(payload))


def eth(ethertype: int, *tags: tuple[int, int]) -> bytes:
    """An Ethernet header; each tag is (tag protocol id, VLAN id), outermost first."""
    out = MAC_DST + MAC_SRC
    for tpid, vid in tags:
        out += struct.pack("!HH", tpid, vid)
    return out + struct.pack("!H", ethertype)


def sll(ethertype: int) -> bytes:
    """Linux cooked capture v1: packet type, ARPHRD, address length, 8 address bytes, protocol."""
    return struct.pack("!HHH8sH", 0, 1, 6, MAC_SRC, ethertype)


def sll2(ethertype: int) -> bytes:
    """Linux cooked capture v2: protocol, reserved, ifindex, ARPHRD, packet type, addr len, addr."""
    return struct.pack("!HHiHBB8s", ethertype, 0, 3, 1, 0, 6, MAC_SRC)


V4 = (socket.inet_pton(socket.AF_INET, SRC4), socket.inet_pton(socket.AF_INET, DST4))
V6 = (socket.inet_pton(socket.AF_INET6, SRC6), socket.inet_pton(socket.AF_INET6, DST6))


def expected(addrs: tuple[bytes, bytes], payload: bytes = PAYLOAD, flags: int = PSH | ACK,
             missing: int = 0) -> tuple:
    return (addrs[0], SPORT, addrs[1], DPORT, SEQ, ACKNO, flags, payload, missing)


DECODED = [
    # (id, link type, frame, expected tuple)
    ("ethernet-ipv4", 1, eth(0x0800) + ip4(), expected(V4)),
    ("ethernet-ipv6", 1, eth(0x86DD) + ip6(), expected(V6)),
    ("802.1q", 1, eth(0x0800, (0x8100, 10)) + ip4(), expected(V4)),
    ("802.1q-ipv6", 1, eth(0x86DD, (0x8100, 4094)) + ip6(), expected(V6)),
    ("qinq-88a8-8100", 1, eth(0x0800, (0x88A8, 100), (0x8100, 10)) + ip4(), expected(V4)),
    ("qinq-9100-8100", 1, eth(0x0800, (0x9100, 100), (0x8100, 10)) + ip4(), expected(V4)),
    ("linux-sll", 113, sll(0x0800) + ip4(), expected(V4)),
    ("linux-sll-ipv6", 113, sll(0x86DD) + ip6(), expected(V6)),
    ("linux-sll2", 276, sll2(0x0800) + ip4(), expected(V4)),
    ("linux-sll2-ipv6", 276, sll2(0x86DD) + ip6(), expected(V6)),
    ("raw-101-ipv4", 101, ip4(), expected(V4)),
    ("raw-101-ipv6", 101, ip6(), expected(V6)),
    ("raw-12", 12, ip4(), expected(V4)),
    ("raw-14", 14, ip6(), expected(V6)),
    ("ipv4-228", 228, ip4(), expected(V4)),
    ("ipv6-229", 229, ip6(), expected(V6)),
    ("null-little-endian", 0, struct.pack("<I", 2) + ip4(), expected(V4)),
    ("null-big-endian", 0, struct.pack(">I", 2) + ip4(), expected(V4)),
    ("null-le-ipv6-macos", 0, struct.pack("<I", 30) + ip6(), expected(V6)),
    ("null-be-ipv6-freebsd", 0, struct.pack(">I", 28) + ip6(), expected(V6)),
    ("null-le-ipv6-netbsd", 0, struct.pack("<I", 24) + ip6(), expected(V6)),
    ("loop-108", 108, struct.pack(">I", 2) + ip4(), expected(V4)),
    ("loop-108-ipv6", 108, struct.pack(">I", 24) + ip6(), expected(V6)),
    ("ipv6-hop-by-hop",
     1, eth(0x86DD) + bytes(IPv6(src=SRC6, dst=DST6) / IPv6ExtHdrHopByHop() / tcp()), expected(V6)),
    ("ipv6-hop-by-hop-then-dest-opts",
     229, bytes(IPv6(src=SRC6, dst=DST6) / IPv6ExtHdrHopByHop() / IPv6ExtHdrDestOpt() / tcp()),
     expected(V6)),
    ("ipv4-options", 101, bytes(IP(src=SRC4, dst=DST4, options=[IPOption_Router_Alert()]) / tcp()),
     expected(V4)),
    ("tcp-options", 101,
     bytes(IP(src=SRC4, dst=DST4) / tcp(options=[("MSS", 1460), ("NOP", None), ("WScale", 7)])),
     expected(V4)),
    ("ipv4-dont-fragment", 101, ip4(flags="DF"), expected(V4)),
    ("syn", 101, bytes(IP(src=SRC4, dst=DST4) / tcp(b"", flags="S")), expected(V4, b"", SYN)),
    ("fin-ack", 101, bytes(IP(src=SRC4, dst=DST4) / tcp(b"", flags="FA")), expected(V4, b"", FIN | ACK)),
    ("rst", 101, bytes(IP(src=SRC4, dst=DST4) / tcp(b"", flags="R")), expected(V4, b"", RST)),
    ("big-payload", 1, eth(0x0800) + ip4(b"\x30" * 1400), expected(V4, b"\x30" * 1400)),
    # Ethernet pads short frames to 60 bytes: the IP total length says where the payload ends.
    ("ethernet-padding", 1, eth(0x0800) + ip4() + b"\x00" * (60 - 14 - 20 - 20 - 2), expected(V4)),
    ("ethernet-padding-nonzero", 1, eth(0x0800) + ip4(b"") + b"\xc0\x00\xd0\x00\x00\x00",
     expected(V4, b"")),
    ("802.1q-padding", 1, eth(0x0800, (0x8100, 7)) + ip4() + b"\x00" * 8, expected(V4)),
    ("ipv6-trailing-bytes", 229, ip6() + b"\xff" * 4, expected(V6)),
]


@pytest.mark.parametrize(("linktype", "frame", "segment"), [c[1:] for c in DECODED],
                         ids=[c[0] for c in DECODED])
def test_decode_segment(linktype: int, frame: bytes, segment: tuple) -> None:
    assert decode_segment(linktype, frame) == segment


SNAPLEN = [
    # (id, link type, full frame, bytes cut off the end, expected payload, expected missing)
    ("cut-in-payload", 1, eth(0x0800) + ip4(b"m" * 100), 5, b"m" * 95, 5),
    ("cut-at-payload-start", 1, eth(0x0800) + ip4(b"m" * 100), 100, b"", 100),
    ("ipv6-cut-in-payload", 229, ip6(b"m" * 300), 250, b"m" * 50, 250),
    ("cut-in-tcp-options", 101,
     bytes(IP(src=SRC4, dst=DST4) / tcp(b"m" * 10, options=[("MSS", 1460), ("NOP", None), ("NOP", None)])),
     10 + 2, b"", 10),
]


@pytest.mark.parametrize(("linktype", "frame", "cut", "payload", "missing"), [c[1:] for c in SNAPLEN],
                         ids=[c[0] for c in SNAPLEN])
def test_snaplen_truncated_frame_counts_missing_bytes(linktype: int, frame: bytes, cut: int,
                                                      payload: bytes, missing: int) -> None:
    result = decode_segment(linktype, frame[:-cut])
    assert isinstance(result, tuple)
    assert result[7] == payload
    assert result[8] == missing
    assert result[4] == SEQ                 # the reassembler places the cut bytes by sequence number


def test_tso_total_length_zero_trusts_the_frame() -> None:
    # Segmentation offload writes IP total length 0; the frame holds the whole segment.
    frame = bytes(IP(src=SRC4, dst=DST4, len=0) / tcp(b"z" * 3000))
    assert decode_segment(101, frame) == expected(V4, b"z" * 3000)


SKIPPED = [
    # (id, link type, frame, skip reason)
    ("ipv4-more-fragments", 1, eth(0x0800) + ip4(flags="MF"), "ip_fragment"),
    ("ipv4-fragment-offset", 1, eth(0x0800) + ip4(frag=185), "ip_fragment"),
    ("ipv4-last-fragment", 101, ip4(flags="DF", frag=1), "ip_fragment"),
    ("ipv6-fragment-header", 229, bytes(IPv6(src=SRC6, dst=DST6) / IPv6ExtHdrFragment() / tcp()), "ip_fragment"),
    ("udp", 1, eth(0x0800) + bytes(IP(src=SRC4, dst=DST4) / UDP(sport=5353, dport=5353) / Raw(b"x")), "non_tcp"),
    ("udp-ipv6", 229, bytes(IPv6(src=SRC6, dst=DST6) / UDP() / Raw(b"x")), "non_tcp"),
    ("icmp", 101, bytes(IP(src=SRC4, dst=DST4) / ICMP()), "non_tcp"),
    ("hop-by-hop-then-udp", 229, bytes(IPv6(src=SRC6, dst=DST6) / IPv6ExtHdrHopByHop() / UDP()), "non_tcp"),
    ("arp", 1, bytes(Ether(dst="ff:ff:ff:ff:ff:ff") / ARP()), "non_ip"),
    ("vlan-arp", 1, eth(0x0806, (0x8100, 5)) + b"\x00" * 28, "non_ip"),
    ("sll-arp", 113, sll(0x0806) + b"\x00" * 28, "non_ip"),
    ("null-unknown-family", 0, struct.pack("<I", 7) + ip4(), "non_ip"),
    ("raw-not-ip", 101, b"\x55" + ip4()[1:], "non_ip"),
    ("short-ethernet", 1, MAC_DST + MAC_SRC[:3], "non_ip"),
    ("empty-raw", 101, b"", "non_ip"),
    ("ipv4-header-cut", 1, eth(0x0800) + ip4()[:15], "truncated_header"),
    ("tcp-header-cut", 101, ip4()[:20 + 12], "truncated_header"),
    ("ipv6-header-cut", 229, ip6()[:30], "truncated_header"),
    ("unknown-link-type", 147, ip4(), "unsupported_linktype:147"),
    ("ieee802-11", 105, b"\x08\x00" + b"\x00" * 60, "unsupported_linktype:105"),
]


@pytest.mark.parametrize(("linktype", "frame", "reason"), [c[1:] for c in SKIPPED],
                         ids=[c[0] for c in SKIPPED])
def test_decode_segment_skip_reason(linktype: int, frame: bytes, reason: str) -> None:
    assert decode_segment(linktype, frame) == reason


# -- the columnar decoder takes the common shapes exactly as decode_segment does -------------------


def test_columnar_decode_of_every_taken_shape_equals_decode_segment() -> None:
    """The shipped captures' IPv4 and IPv6 frames as Ethernet, one VLAN tag, two tags, Linux
    cooked v1 and v2, raw IP, in one batch whose link types take turns, and again with random
    header bytes damaged: every frame the columnar decoder takes (`simple`) gives the fields
    `decode_segment` gives, and the process of a split that `Shard.owns` deals it to; it takes
    nearly every undamaged frame of each shape but stacked tags."""
    import random
    from pathlib import Path

    import numpy as np

    from analyzer.columnar.segments import decode
    from analyzer.sources import open_capture
    from analyzer.sources.batch import FrameBatch
    from analyzer.columnar.feed import _FlowIds
    from analyzer.split import Shard
    from tests.unit.test_pipeline_variants import VARIANTS

    shapes = {"ethernet": lambda lt, fr: (lt, fr)}
    shapes |= {k: VARIANTS[k] for k in ("802.1Q tag", "802.1ad and 802.1Q tags", "three tags",
                                        "linux cooked v1", "linux cooked v2", "raw ip")}
    frames: list[tuple[str, int, bytes]] = []
    for capture in sorted((Path(__file__).resolve().parents[2] / "captures").glob("*.pcap"))[:6]:
        with open_capture(str(capture)) as reader:
            plain = [(ts, data) for _, ts, lt, data, _ in reader
                     if lt == 1 and data[12:14] in (b"\x08\x00", b"\x86\xdd")]
        for name, shape in shapes.items():
            linktype, shaped = shape(1, plain)
            frames += [(name, linktype, data) for _, data in shaped]
    rng = random.Random(7)
    ipv6 = [(lt, data) for _, lt, data in frames if lt == 1 and data[12:14] == b"\x86\xdd"]
    addresses = [rng.randbytes(16) for _ in range(8)]  # (the captures' are all ::1)
    frames += [("ipv6, other addresses", lt, data[:22] + rng.choice(addresses) + rng.choice(addresses)
                + data[54:]) for lt, data in ipv6]
    rng.shuffle(frames)
    damaged = []
    for name, linktype, data in frames[: len(frames) // 2]:
        raw = bytearray(data)
        for _ in range(rng.randint(1, 3)):
            raw[rng.randrange(min(len(raw), 64))] ^= 1 << rng.randrange(8)
        damaged.append(("damaged " + name, linktype, bytes(raw)))
    everything = frames + damaged
    starts = np.cumsum([0] + [len(d) + 16 for _, _, d in everything[:-1]]) + 16
    buf = b"".join(bytes(16) + d for _, _, d in everything)
    n = len(everything)
    batch = FrameBatch.of(buf, (starts, np.array([len(d) for _, _, d in everything]),
                                np.array([len(d) for _, _, d in everything]), np.arange(n)),
                          1, np.array([lt for _, lt, _ in everything]))
    segs = decode(batch)
    taken: dict[str, list[int]] = {}
    v6 = non_tcp = 0
    for i, (name, linktype, data) in enumerate(everything):
        taken.setdefault(name, [0, 0])[1] += 1
        if segs.non_tcp[i]:  # counted as skipped in bulk: exactly what the per-frame path skips so
            assert not segs.simple[i] and decode_segment(linktype, data) == "non_tcp", (name, i)
            non_tcp += 1
        if not segs.simple[i]:
            continue
        taken[name][0] += 1
        src, sport, dst, dport, seq, ack, flags, payload, missing = decode_segment(linktype, data)
        start = int(segs.pay_start[i]) - int(starts[i])
        assert (segs.address(int(segs.src[i])), int(segs.sport[i]), segs.address(int(segs.dst[i])),
                int(segs.dport[i]), int(segs.seq[i]), int(segs.ack[i]), int(segs.flags[i]),
                data[start:start + int(segs.pay_len[i])], int(segs.missing[i])) == (
            src, sport, dst, dport, seq, ack, flags, payload, missing), (name, i)
        v6 += bool(segs.v6[i])
    # the process each taken frame is dealt to, as the columnar path asks (`_FlowIds`) and as
    # the per-frame path does (`Shard.owns`): by the hash, and by a set of connections followed
    # (`Shard.only`, the exact endpoint sums)
    keys = {decode_segment(lt, data)[:4] for _, lt, data in everything[::7]
            if not isinstance(decode_segment(lt, data), str)}
    followed = frozenset((int.from_bytes(k[0], "big") << 16 | k[1]) + (int.from_bytes(k[2], "big") << 16 | k[3])
                         for k in keys)
    assert any(len(k[0]) == 16 for k in keys)
    for shard in [Shard(index, 3) for index in range(3)] + [Shard(0, 1, only=followed)]:
        flows = _FlowIds(batch, segs, shard)
        for i in np.flatnonzero(segs.simple & (segs.src != segs.dst)).tolist():
            key = decode_segment(everything[i][1], everything[i][2])[:4]
            assert (flows.gid[i] >= 0) == shard.owns(key), (everything[i][0], i)
    assert non_tcp > 5  # (damaged protocol fields)
    for name, (took, of) in taken.items():
        if name == "three tags":
            assert took == 0
        elif not name.startswith("damaged"):
            assert took > 0.95 * of, (name, took, of)
    assert 0 < sum(taken[k][0] for k in taken if k.startswith("damaged")) < len(damaged)
    assert v6 > 100
    # IPv6 addresses are numbered in their bytes' order, so that a connection's two endpoints
    # compare as the per-frame path compares them (which names the connection's key)
    numbered = sorted({(int(n), segs.address(int(n))) for n in segs.src[segs.simple & segs.v6]})
    assert len(numbered) > 4 and [a for _, a in numbered] == sorted(a for _, a in numbered)


def test_the_cooked_fast_path_answers_as_the_general_decoders() -> None:
    """Linux cooked v1 and v2 frames take `decode_segment`'s one-call path when they carry IPv4
    without options; on the shipped captures' frames in both, whole, cut short or with header bits
    flipped, it answers exactly as the link and IP decoders do (segment or skip reason)."""
    import random
    from pathlib import Path

    from analyzer.decode.tcp import _decode_general
    from analyzer.sources import open_capture
    from tests.unit.test_pipeline_variants import to_sll, to_sll2

    rng = random.Random(11)
    fast = compared = 0
    for capture in sorted((Path(__file__).resolve().parents[2] / "captures").glob("*.pcap")):
        with open_capture(str(capture)) as reader:
            frames = [data for _, _, linktype, data, _ in reader if linktype == 1]
        for data in frames:
            for linktype, cooked in ((113, to_sll), (276, to_sll2)):
                frame = bytearray(cooked(data))
                for _ in range(rng.randint(0, 3)):
                    frame[rng.randrange(min(64, len(frame)))] ^= 1 << rng.randrange(8)
                damaged = bytes(frame[: rng.randint(30, len(frame))] if rng.random() < 0.2 else frame)
                assert decode_segment(linktype, damaged) == _decode_general(linktype, damaged)
                compared += 1
                fast += damaged[0 if linktype == 276 else 14:][:2] == b"\x08\x00"
    assert compared > 1000 and fast > compared // 4

"""MQTTFramer: in-order stream bytes, gaps and end of stream in; MQTT packets and framing errors out.

The framer is sans-I/O: every call returns the events it completed, an empty list meaning "need more
bytes". Frame numbers and timestamps are chosen so that each piece of input is identifiable: frame N
is sent at N * 1000 ns.
"""

from __future__ import annotations

import tracemalloc

import pytest

from analyzer.model import ConnAckBody, ConnectBody, Direction, DisconnectBody, FramingError, MQTTPacket, PacketType
from analyzer.mqtt.framer import MQTTFramer
from tests.builders import (
    PINGREQ, PINGRESP, connack, connect, disconnect, packet, properties, prop_u16, publish,
    publish_header, puback, suback, subscribe, u16, utf8, varint,
)

T = PacketType


def ts(frame: int) -> int:
    return frame * 1000


def framer(synced: bool = True, **kwargs: int) -> MQTTFramer:
    return MQTTFramer(Direction.TO_SERVER, synced=synced, **kwargs)


def feed_pieces(f: MQTTFramer, pieces: list[bytes], first_frame: int = 1) -> list:
    events: list = []
    for frame, piece in enumerate(pieces, start=first_frame):
        events += f.feed(piece, frame, ts(frame))
    return events


def summary(events: list) -> list[tuple]:
    """(type, flags, remaining length, truncated) of packets; ("error",) for framing errors."""
    return [(e.type, e.flags, e.remaining_length, e.truncated) if isinstance(e, MQTTPacket) else ("error",)
            for e in events]


def only_packet(events: list) -> MQTTPacket:
    assert len(events) == 1, events
    assert isinstance(events[0], MQTTPacket)
    return events[0]


# -- whole packets in one segment -------------------------------------------------------------

SESSION = [
    (connect(level=4, keep_alive=60, client_id="dev-1"), (T.CONNECT, 0, 17)),
    (connack(), (T.CONNACK, 0, 2)),
    (subscribe(7, "a/b", "c/#"), (T.SUBSCRIBE, 2, 2 + 6 + 6)),
    (suback(7, b"\x00\x01"), (T.SUBACK, 0, 4)),
    (publish("a/b", b"x" * 200, qos=1), (T.PUBLISH, 2, 5 + 2 + 200)),
    (puback(1), (T.PUBACK, 0, 2)),
    (PINGREQ, (T.PINGREQ, 0, 0)),
    (PINGRESP, (T.PINGRESP, 0, 0)),
    (disconnect(), (T.DISCONNECT, 0, 0)),
]


def test_many_packets_in_one_feed() -> None:
    stream = b"".join(raw for raw, _ in SESSION)
    events = framer().feed(stream, 7, ts(7))
    assert [(e.type, e.flags, e.remaining_length) for e in events] == [exp for _, exp in SESSION]
    for e in events:
        assert (e.first_frame, e.last_frame, e.ts_first_ns, e.ts_last_ns) == (7, 7, ts(7), ts(7))
        assert e.direction == Direction.TO_SERVER and not e.truncated
    assert events[0].body == ConnectBody("MQTT", 4, 60, "dev-1", True, False, False, False)
    assert events[1].body == ConnAckBody(0, False)
    assert events[-1].body == DisconnectBody(None)
    assert all(e.body is None for e in events[2:-1])  # only CONNECT, CONNACK, DISCONNECT bodies


@pytest.mark.parametrize(("raw", "header_length"), [
    (PINGREQ, 2),
    (publish("t", b"x" * 123), 2),           # Remaining Length 126: one byte
    (publish("t", b"x" * 125), 3),           # 128: two bytes
    (publish("t", b"x" * 16_381), 4),        # 16,384: three bytes
    (b"\xc0\x80\x00", 3),                    # non-minimal zero: still a PINGREQ
], ids=["pingreq", "rl-126", "rl-128", "rl-16384", "non-minimal"])
def test_header_length_is_reported(raw: bytes, header_length: int) -> None:
    pkt = only_packet(framer().feed(raw, 1, ts(1)))
    assert pkt.header_length == header_length
    assert pkt.remaining_length == len(raw) - header_length


@pytest.mark.parametrize(("raw", "expected"), [
    (b"\xc1\x00", (T.PINGREQ, 1, 0)),              # reserved flags set
    (b"\xc0\x01\x00", (T.PINGREQ, 0, 1)),          # a PINGREQ with a body byte
    (b"\xcf\x02\xaa\xbb", (T.PINGREQ, 15, 2)),
    (b"\xd3\x00", (T.PINGRESP, 3, 0)),
    (b"\x00\x00", (T.RESERVED, 0, 0)),
])
def test_malformed_headers_in_sync_are_still_packets(raw: bytes, expected: tuple) -> None:
    # The checks report malformed packets; the framer must not hide them or lose sync over them.
    events = framer().feed(raw + PINGRESP, 3, ts(3))
    packets = [e for e in events if isinstance(e, MQTTPacket)]
    assert [(p.type, p.flags, p.remaining_length) for p in packets] == [expected, (T.PINGRESP, 0, 0)]
    assert (packets[0].first_frame, packets[0].last_frame) == (3, 3)


# -- one packet over many segments ------------------------------------------------------------

SPLIT_PACKETS = [
    # a CONNECT with a 2-byte Remaining Length: its body is buffered and decoded
    ("connect-rl2", connect(level=4, keep_alive=77, client_id="c" * 150)),
    # a PUBLISH with a 3-byte Remaining Length: its body is skipped
    ("publish-rl3", publish("sensors/t", b"\x00" * 16_400)),
    ("pingreq", PINGREQ),
]


@pytest.mark.parametrize("raw", [p[1] for p in SPLIT_PACKETS], ids=[p[0] for p in SPLIT_PACKETS])
def test_packet_split_in_two_at_every_boundary(raw: bytes) -> None:
    whole = only_packet(framer().feed(raw, 1, ts(1)))
    for cut in range(1, len(raw)):
        f = framer()
        first = f.feed(raw[:cut], 10, ts(10))
        assert first == [], f"cut at {cut}"
        assert f.in_packet, f"cut at {cut}"
        pkt = only_packet(f.feed(raw[cut:], 11, ts(11)))
        assert (pkt.type, pkt.flags, pkt.remaining_length, pkt.header_length, pkt.body) == \
            (whole.type, whole.flags, whole.remaining_length, whole.header_length, whole.body), f"cut at {cut}"
        assert (pkt.first_frame, pkt.ts_first_ns, pkt.last_frame, pkt.ts_last_ns) == \
            (10, ts(10), 11, ts(11)), f"cut at {cut}"
        assert not pkt.truncated and not f.in_packet


def test_packet_split_in_three_at_every_pair_of_boundaries() -> None:
    raw = connect(level=5, keep_alive=9, client_id="abc" * 45,
                  props=properties(prop_u16(0x21, 5)))      # Remaining Length > 127
    assert raw[1] & 0x80
    expected = only_packet(framer().feed(raw, 1, ts(1))).body
    for i in range(1, len(raw) - 1):
        for j in range(i + 1, len(raw)):
            events = feed_pieces(framer(), [raw[:i], raw[i:j], raw[j:]], first_frame=4)
            pkt = only_packet(events)
            assert (pkt.first_frame, pkt.ts_first_ns, pkt.last_frame, pkt.ts_last_ns) == \
                (4, ts(4), 6, ts(6)), (i, j)
            assert pkt.body == expected, (i, j)


def test_packet_fed_one_byte_per_segment() -> None:
    raw = publish("t", b"p" * 300)   # two-byte Remaining Length, so the header is cut twice
    pkt = only_packet(feed_pieces(framer(), [raw[i:i + 1] for i in range(len(raw))], first_frame=1))
    assert (pkt.first_frame, pkt.ts_first_ns) == (1, ts(1))
    assert (pkt.last_frame, pkt.ts_last_ns) == (len(raw), ts(len(raw)))
    assert (pkt.type, pkt.remaining_length, pkt.header_length) == (T.PUBLISH, len(raw) - 3, 3)


def test_packet_ending_a_segment_and_next_starting_it() -> None:
    a, b = publish("t", b"1" * 50), PINGREQ
    events = feed_pieces(framer(), [a[:10], a[10:] + b[:1], b[1:]], first_frame=1)
    assert [(e.type, e.first_frame, e.last_frame) for e in events] == \
        [(T.PUBLISH, 1, 2), (T.PINGREQ, 2, 3)]


# -- big payloads are skipped, not buffered -----------------------------------------------------

def test_big_publish_is_skipped_without_buffering() -> None:
    payload_len = 5 * 1024 * 1024
    header = publish_header("bulk/data", payload_len)
    total = len(header) + payload_len
    chunk = b"\x00" * 1400
    first = header + chunk[: 1400 - len(header)]
    n_full = (total - len(first)) // 1400
    tail_len = total - len(first) - n_full * 1400
    last = chunk[:tail_len] + PINGREQ
    f = framer()
    tracemalloc.start()
    try:
        events = f.feed(first, 1, ts(1))
        assert f._body is None
        for i in range(n_full):
            events += f.feed(chunk, 2 + i, ts(2 + i))
            assert f._body is None
        last_frame = 2 + n_full
        events += f.feed(last, last_frame, ts(last_frame))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 256 * 1024, f"peak {peak} bytes while skipping a {payload_len}-byte payload"
    assert [(e.type, e.first_frame, e.last_frame) for e in events] == \
        [(T.PUBLISH, 1, last_frame), (T.PINGREQ, last_frame, last_frame)]
    assert (events[0].remaining_length, events[0].header_length) == (total - 5, 5)  # 4-byte varint


def test_big_connect_body_is_capped() -> None:
    # CONNECT bodies are buffered, but never beyond body_cap; Keep Alive still comes out.
    raw = connect(level=4, keep_alive=31, client_id="c" * 5000)
    f = framer(body_cap=1000)
    events = feed_pieces(f, [raw[i:i + 1400] for i in range(0, len(raw), 1400)])
    pkt = next(e for e in events if isinstance(e, MQTTPacket))
    assert pkt.type == T.CONNECT and pkt.remaining_length == len(raw) - 3
    assert isinstance(pkt.body, ConnectBody) and pkt.body.keep_alive_s == 31
    assert not any(isinstance(e, FramingError) for e in events)  # a capped body is not malformed


# -- gaps ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("lost_at", [0, 1, 500, 9000])
def test_gap_inside_a_skipped_payload_keeps_sync(lost_at: int) -> None:
    raw = publish("t", b"\x00" * 10_000)
    hlen = 3 + 3            # fixed header with a 2-byte Remaining Length, topic length + "t"
    sent = hlen + lost_at + 1
    lost = 400
    f = framer()
    events = f.feed(raw[:sent], 1, ts(1))
    events += f.gap(lost, 2, ts(2))
    # The next segment continues the payload, then holds a PINGREQ in the middle of it: only a
    # framer that stayed in sync can find it there.
    events += f.feed(raw[sent + lost:] + PINGREQ, 3, ts(3))
    assert [(e.type, e.remaining_length, e.first_frame, e.last_frame) for e in events
            if isinstance(e, MQTTPacket)] == [(T.PUBLISH, len(raw) - 3, 1, 3), (T.PINGREQ, 0, 3, 3)]
    assert not any(isinstance(e, FramingError) for e in events)
    assert f.synced


def test_gap_past_the_end_of_a_skipped_payload_truncates_and_resyncs() -> None:
    raw = publish("t", b"\x00" * 1000)
    f = framer()
    events = f.feed(raw[:500], 1, ts(1))
    events += f.gap(len(raw) - 500 + 1, 2, ts(2))      # the rest of the PUBLISH and 1 byte more
    assert summary(events) == [(T.PUBLISH, 0, len(raw) - 3, True)]
    assert (events[0].first_frame, events[0].ts_first_ns) == (1, ts(1))
    # The next segment starts mid-packet: it is not trusted; the one after it starts a packet.
    assert f.feed(b"\x00" * 30, 3, ts(3)) == []
    assert f.unsynced_bytes == 30
    assert summary(f.feed(PINGREQ, 4, ts(4))) == [(T.PINGREQ, 0, 0, False)]


def test_gap_inside_a_buffered_connect_body_keeps_keep_alive() -> None:
    raw = connect(level=4, keep_alive=25, client_id="device-with-a-long-id")
    f = framer()
    events = f.feed(raw[:16], 1, ts(1))               # through Keep Alive, into the client id
    events += f.gap(len(raw) - 16, 2, ts(2))
    pkt = only_packet(events)
    assert (pkt.type, pkt.truncated, pkt.first_frame) == (T.CONNECT, True, 1)
    assert isinstance(pkt.body, ConnectBody) and pkt.body.keep_alive_s == 25
    assert summary(f.feed(PINGREQ, 3, ts(3))) == [(T.PINGREQ, 0, 0, False)]


def test_gap_between_packets_resyncs_at_next_segment() -> None:
    f = framer()
    assert summary(f.feed(PINGREQ, 1, ts(1))) == [(T.PINGREQ, 0, 0, False)]
    assert f.gap(100, 2, ts(2)) == []       # nothing was in progress: nothing to report
    # The lost bytes may have ended anywhere: the next segment must look like a packet start.
    assert f.feed(b"\x55" * 10, 3, ts(3)) == []
    assert summary(f.feed(PINGRESP + PINGREQ, 4, ts(4))) == \
        [(T.PINGRESP, 0, 0, False), (T.PINGREQ, 0, 0, False)]


@pytest.mark.parametrize("head", [b"\x30", b"\x30\x80", b"\xc0", b"\x10\xff\xff"],
                         ids=["type-only", "rl-cut", "pingreq-type-only", "connect-rl-cut"])
def test_gap_inside_a_header_reports_truncated_packet_and_resyncs(head: bytes) -> None:
    f = framer()
    assert f.feed(head, 1, ts(1)) == []
    assert f.in_packet          # the packet's first byte was sent at frame 1
    events = f.gap(50, 2, ts(2))
    resync = f.feed(PINGREQ, 3, ts(3))
    assert summary(resync) == [(T.PINGREQ, 0, 0, False)]
    pkt = only_packet(events)
    assert (pkt.type, pkt.truncated, pkt.first_frame, pkt.ts_first_ns) == \
        (T(head[0] >> 4), True, 1, ts(1))


def test_gap_inside_a_header_resyncs_at_next_segment() -> None:
    # After the loss the framer resynchronises at the next plausible segment start.
    f = framer()
    f.feed(b"\x30\x80", 1, ts(1))
    f.gap(50, 2, ts(2))
    assert not f.in_packet
    assert f.feed(b"\x01\x02\x03", 3, ts(3)) == []     # not a packet start: dropped
    assert summary(f.feed(PINGREQ, 4, ts(4))) == [(T.PINGREQ, 0, 0, False)]


def test_a_sync_found_after_a_loss_holds_only_while_every_header_is_plausible() -> None:
    """A loss that takes a PUBLISH's end and the next one's start leaves the next segment starting
    inside a payload, whose bytes can look like a header ("9" is a PUBLISH's first byte). The sync
    found there is a guess: the first header no sender writes (a PINGRESP with flags 0x6 and a
    Remaining Length of 70) ends it instead of becoming a packet, and the next segment that starts
    a packet is read right. A packet that ends where its segment does confirms the sync: from then
    on a malformed packet is a packet again (for KA401), not a reason to look elsewhere."""
    f = framer()
    first = publish("data/0", b"0" * 30)
    second = publish("data/1", b"9\x03abc\xd6F" + b"7" * 80)
    third = publish("data/2", b"1234567890" * 5)
    at = second.index(b"9\x03")
    assert f.feed(first[:-2], 1, ts(1)) == []
    assert summary(f.gap(2 + at, 2, ts(2))) == [(T.PUBLISH, 0, len(first) - 2, True)]
    assert summary(f.feed(second[at:], 3, ts(3))) == [(T.PUBLISH, 9, 3, False)]  # "9\x03abc"
    assert not f.synced and f.unsynced_bytes == len(second) - at - 5
    assert summary(f.feed(third, 4, ts(4))) == [(T.PUBLISH, 0, len(third) - 2, False)]
    assert f.synced and not f.tentative
    assert summary(f.feed(b"\xc0\x01\x00", 5, ts(5))) == [(T.PINGREQ, 0, 1, False)]


def test_a_stream_whose_start_was_captured_is_not_read_as_a_guess() -> None:
    """The first byte after a SYN starts a packet: a malformed packet there is reported as one
    (its Keep Alive still read), not taken for a wrong sync."""
    f = framer(synced=False)
    events = f.feed(connect(level=4, keep_alive=60, client_id="dev-1") + b"\xc0\x01\x00", 1, ts(1))
    assert summary(events) == [(T.CONNECT, 0, 17, False), (T.PINGREQ, 0, 1, False)]
    assert f.synced and not f.tentative


# -- synchronisation ----------------------------------------------------------------------------

TLS_CLIENT_HELLO = bytes.fromhex("160301020001000200fc0303") + b"\x11" * 100
TLS_APP_DATA = bytes.fromhex("170303004a") + b"\x22" * 74


@pytest.mark.parametrize("junk", [
    TLS_CLIENT_HELLO,
    TLS_APP_DATA,
    b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
    b"\x00" * 64,
    b"\x30\xff\xff\xff\xff\x7f",     # a Remaining Length over 4 bytes
], ids=["tls-hello", "tls-data", "http", "zeros", "rl-5-bytes"])
def test_unsynced_framer_drops_implausible_starts(junk: bytes) -> None:
    f = framer(synced=False)
    events = f.feed(junk, 1, ts(1))
    assert events == []
    assert f.unsynced_bytes == len(junk)
    assert not f.synced
    events = f.feed(connect(level=4, keep_alive=5) + PINGREQ, 2, ts(2))
    assert [(e.type, e.first_frame) for e in events] == [(T.CONNECT, 2), (T.PINGREQ, 2)]
    assert f.synced and f.unsynced_bytes == len(junk)


def test_unsynced_framer_holds_a_header_too_short_to_judge() -> None:
    """A stream whose first segment ends inside the CONNECT's fixed header still yields it."""
    f = framer(synced=False)
    whole = connect(level=4, keep_alive=5)
    assert f.feed(whole[:1], 1, ts(1)) == []
    events = f.feed(whole[1:] + PINGREQ, 2, ts(2))
    assert [(e.type, e.first_frame, e.ts_first_ns) for e in events] == \
        [(T.CONNECT, 1, ts(1)), (T.PINGREQ, 2, ts(2))]
    assert f.unsynced_bytes == 0


def test_unsynced_framer_drops_a_held_byte_that_starts_nothing() -> None:
    """A lone byte cannot be judged; when the next segment shows it started nothing, it is dropped
    and the next segment, which starts on its own, is judged alone."""
    f = framer(synced=False)
    assert f.feed(b"\xc0", 1, ts(1)) == []
    events = f.feed(connect(level=4, keep_alive=5) + PINGREQ, 2, ts(2))
    assert [(e.type, e.first_frame) for e in events] == [(T.CONNECT, 2), (T.PINGREQ, 2)]
    assert f.unsynced_bytes == 1


def test_unsynced_framer_accepts_a_plausible_start_cut_after_its_header() -> None:
    f = framer(synced=False)
    raw = publish("t", b"abc")
    assert f.feed(raw[:3], 1, ts(1)) == []
    assert f.synced and f.unsynced_bytes == 0
    pkt = only_packet(f.feed(raw[3:], 2, ts(2)))
    assert (pkt.type, pkt.remaining_length, pkt.first_frame, pkt.last_frame) == (T.PUBLISH, 6, 1, 2)


def test_unsynced_framer_counts_every_dropped_segment() -> None:
    f = framer(synced=False)
    for frame in range(1, 6):
        assert f.feed(TLS_APP_DATA, frame, ts(frame)) == []
    assert f.unsynced_bytes == 5 * len(TLS_APP_DATA)


def test_unsynced_framer_accepts_only_segment_starts() -> None:
    # A PINGREQ in the middle of a dropped segment is payload, not a packet.
    f = framer(synced=False)
    assert f.feed(b"\x17\x03\x03" + PINGREQ + b"\x00\x00", 1, ts(1)) == []
    assert summary(f.feed(PINGRESP, 2, ts(2))) == [(T.PINGRESP, 0, 0, False)]


@pytest.mark.parametrize("bad", [
    b"\x30\xff\xff\xff\xff\x01",
    b"\x30\x80\x80\x80\x80\x00",
    b"\xc0\xff\xff\xff\xff",
])
def test_varint_over_four_bytes_is_a_framing_error(bad: bytes) -> None:
    f = framer()
    events = f.feed(PINGREQ + bad + b"\x00" * 10, 1, ts(1))
    assert summary(events) == [(T.PINGREQ, 0, 0, False), ("error",)]
    err = events[1]
    assert (err.frame_no, err.ts_ns, err.direction) == (1, ts(1), Direction.TO_SERVER)
    # After the error the framer waits for a plausible segment start.
    assert f.feed(b"\x00\x01", 2, ts(2)) == []
    assert summary(f.feed(PINGREQ, 3, ts(3))) == [(T.PINGREQ, 0, 0, False)]


def test_varint_over_four_bytes_across_segments_is_a_framing_error() -> None:
    f = framer()
    events = feed_pieces(f, [b"\x30\xff", b"\xff\xff", b"\xff\x01"])
    assert summary(events) == [("error",)]


@pytest.mark.parametrize(("raw", "reason_part"), [
    (packet(0x10, utf8(b"HTTP") + b"\x04\x02\x00\x3c" + utf8("c")), "CONNECT"),
    (packet(0x20, b"\x00"), "CONNACK"),
    (packet(0x20, b"\x00\x00" + properties(b"\x7f\x00")), "CONNACK"),
], ids=["connect-unknown-name", "connack-short", "connack-unknown-property"])
def test_malformed_body_is_an_event_not_an_exception(raw: bytes, reason_part: str) -> None:
    events = framer().feed(raw + PINGREQ, 1, ts(1))
    assert [type(e) for e in events] == [FramingError, MQTTPacket, MQTTPacket]
    assert reason_part in events[0].reason
    assert events[1].type == T(raw[0] >> 4) and events[1].body is None
    assert events[2].type == T.PINGREQ


def test_v5_connect_with_bad_property_length_still_gives_keep_alive() -> None:
    body = utf8(b"MQTT") + bytes([5, 2]) + u16(90) + varint(100) + b"\x11\x00\x00\x00\x05" + utf8("c")
    events = framer().feed(packet(0x10, body), 1, ts(1))
    pkt = next(e for e in events if isinstance(e, MQTTPacket))
    assert isinstance(pkt.body, ConnectBody) and pkt.body.keep_alive_s == 90
    assert any(isinstance(e, FramingError) for e in events)


# -- end of stream ------------------------------------------------------------------------------

@pytest.mark.parametrize(("raw", "cut"), [
    (publish("t", b"x" * 100), 2),       # header complete, no body yet
    (publish("t", b"x" * 100), 50),
    (publish("t", b"x" * 100), 102),     # all but the last byte
    (connect(level=4, keep_alive=12), 14),
    (PINGREQ[:1] + b"\x01\x00", 2),      # a PINGREQ with one body byte announced
], ids=["publish-header-only", "publish-mid-body", "publish-last-byte-missing", "connect-after-keep-alive",
        "pingreq-with-body"])
def test_eof_mid_packet_reports_truncated(raw: bytes, cut: int) -> None:
    f = framer()
    assert f.feed(raw[:cut], 1, ts(1)) == []
    pkt = only_packet(f.eof(2, ts(2)))
    assert (pkt.type, pkt.truncated, pkt.first_frame, pkt.ts_first_ns) == (T(raw[0] >> 4), True, 1, ts(1))
    assert pkt.remaining_length == raw[1]
    assert not f.in_packet
    if pkt.type == T.CONNECT:
        assert pkt.body.keep_alive_s == 12


@pytest.mark.parametrize("head", [b"\xc0", b"\x30\x80"])
def test_eof_inside_a_header_reports_truncated(head: bytes) -> None:
    f = framer()
    f.feed(head, 1, ts(1))
    assert f.in_packet
    pkt = only_packet(f.eof(2, ts(2)))
    assert (pkt.type, pkt.truncated, pkt.first_frame, pkt.ts_first_ns) == (T(head[0] >> 4), True, 1, ts(1))


def test_eof_between_packets_reports_nothing() -> None:
    f = framer()
    f.feed(PINGREQ, 1, ts(1))
    assert f.eof(2, ts(2)) == []
    assert f.packets == 1

"""Properties of TCP reassembly and MQTT framing (Hypothesis).

(a) Any segmentation of a stream of MQTT packets, fed through HalfStream into MQTTFramer, frames the
    same packets as the whole stream fed at once, each timed by the segments that carried its first
    and last byte.
(b) The same holds when segments are also duplicated, retransmitted with other boundaries and
    delivered in any order (every segment carries its sequence number; the pending cap is large).
(c) The framer and the stream never raise on arbitrary input: they only return or emit events.
(d) Variable byte integers and CONNECT round-trip through the codec.
"""

from __future__ import annotations

from bisect import bisect_right

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from analyzer.errors import DecodeError
from analyzer.model import ConnectBody, Direction, FramingError, MQTTPacket, PacketType
from analyzer.mqtt.codec import decode_connect, decode_varint, encode_varint
from analyzer.mqtt.framer import MQTTFramer
from analyzer.reassembly.stream import HalfStream, seq_diff
from tests.builders import (
    PINGREQ, PINGRESP, SERVER_KEEP_ALIVE, connack, connect, connect_body, disconnect, properties, prop_u16,
    publish, subscribe, varint,
)

MOD = 1 << 32
SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# -- strategies --------------------------------------------------------------------------------

short_text = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789/-_", min_size=1, max_size=20)
client_ids = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-", max_size=30)

connects = st.builds(
    lambda level, ka, cid, user, pw: connect(level=level, keep_alive=ka, client_id=cid, username=user,
                                             password=pw),
    st.sampled_from([3, 4, 5, 0x84]), st.integers(0, 65535), client_ids,
    st.none() | short_text, st.none() | st.binary(max_size=16),
)

payload_sizes = st.one_of(
    st.integers(0, 200),
    st.integers(118, 135),                # Remaining Length around 127 / 128
    st.integers(16_360, 16_400),          # around 16,383 / 16,384
    st.integers(16_384, 70_000),
)

publishes = st.builds(
    lambda topic, size, fill, qos: publish(topic, bytes([fill]) * size, qos=qos),
    short_text, payload_sizes, st.integers(0, 255), st.integers(0, 2),
)

subscribes = st.builds(lambda pid, topics: subscribe(pid, *topics),
                       st.integers(1, 65535), st.lists(short_text, min_size=1, max_size=4))

disconnects = st.one_of(
    st.just(disconnect()),
    st.builds(disconnect, st.integers(0, 255)),
)

connacks = st.one_of(
    st.builds(connack, st.integers(0, 5), st.booleans()),
    st.builds(lambda ska: connack(props=properties(prop_u16(SERVER_KEEP_ALIVE, ska))), st.integers(0, 65535)),
)

mqtt_packets = st.one_of(connects, publishes, st.just(PINGREQ), st.just(PINGRESP), subscribes, disconnects,
                         connacks)
packet_lists = st.lists(mqtt_packets, min_size=1, max_size=10)


def cut_points(packets: list[bytes]) -> st.SearchStrategy[list[int]]:
    """Offsets that split the stream: anywhere, with extra weight near packet starts and headers."""
    n = sum(map(len, packets))
    near = set()
    start = 0
    for raw in packets:
        near.update(start + d for d in (-1, 1, 2, 3, 4))
        start += len(raw)
    near = sorted(p for p in near if 0 < p < n)
    anywhere = st.integers(1, n - 1) if n > 1 else st.nothing()
    choice = st.one_of(anywhere, st.sampled_from(near)) if near else anywhere
    return st.lists(choice, max_size=40).map(lambda cuts: sorted(set(cuts)))


# -- plumbing ----------------------------------------------------------------------------------

class FramerSink:
    """A HalfStream sink feeding an MQTTFramer, collecting its events and any stream gaps."""

    def __init__(self) -> None:
        self.framer = MQTTFramer(Direction.TO_SERVER, synced=True)
        self.events: list[MQTTPacket | FramingError] = []
        self.gaps: list[int] = []

    def data(self, payload: bytes, frame_no: int, ts_ns: int) -> None:
        self.events += self.framer.feed(payload, frame_no, ts_ns)

    def gap(self, missing: int, frame_no: int, ts_ns: int) -> None:
        self.gaps.append(missing)
        self.events += self.framer.gap(missing, frame_no, ts_ns)


def shape(events: list) -> list[tuple]:
    return [(e.type, e.flags, e.remaining_length, e.header_length, e.truncated, e.body)
            if isinstance(e, MQTTPacket) else ("error", e.reason) for e in events]


def whole(stream: bytes) -> list:
    f = MQTTFramer(Direction.TO_SERVER)
    return f.feed(stream, 1, 1) + f.eof(2, 2)


def segments(stream: bytes, cuts: list[int]) -> list[tuple[int, bytes]]:
    """(offset, bytes) of each segment."""
    bounds = [0, *cuts, len(stream)]
    return [(a, stream[a:b]) for a, b in zip(bounds, bounds[1:])]


def reassemble(isn: int, segs: list[tuple[int, bytes]], frames: list[int]) -> tuple[FramerSink, HalfStream]:
    sink = FramerSink()
    stream = HalfStream(sink, max_pending_bytes=1 << 30)
    stream.segment(isn, b"", 1, 1000, syn=True)
    for (offset, payload), frame in zip(segs, frames):
        stream.segment((isn + 1 + offset) % MOD, payload, frame, frame * 1000)
    last = max(frames, default=1) + 1
    stream.finish(last, last * 1000)
    sink.events += sink.framer.eof(last, last * 1000)
    return sink, stream


# -- (a) segmentation ----------------------------------------------------------------------------

@SETTINGS
@given(data=st.data(), packets=packet_lists, isn=st.integers(0, MOD - 1))
def test_any_segmentation_frames_the_same_packets(data: st.DataObject, packets: list[bytes], isn: int) -> None:
    stream = b"".join(packets)
    cuts = data.draw(cut_points(packets), label="cuts")
    segs = segments(stream, cuts)
    frames = list(range(2, 2 + len(segs)))
    sink, _ = reassemble(isn, segs, frames)

    expected = whole(stream)
    assert shape(sink.events) == shape(expected)
    assert sink.gaps == []
    # An independent oracle: one packet per built packet, of the type its first byte says.
    assert [e.type for e in sink.events] == [PacketType(raw[0] >> 4) for raw in packets]
    assert not any(isinstance(e, FramingError) for e in sink.events)
    # Each packet is timed by the segments holding its first and last byte.
    starts = [offset for offset, _ in segs]
    offset = 0
    for raw, pkt in zip(packets, sink.events):
        first_seg = bisect_right(starts, offset) - 1
        last_seg = bisect_right(starts, offset + len(raw) - 1) - 1
        assert (pkt.first_frame, pkt.ts_first_ns) == (frames[first_seg], frames[first_seg] * 1000)
        assert (pkt.last_frame, pkt.ts_last_ns) == (frames[last_seg], frames[last_seg] * 1000)
        offset += len(raw)


# -- (b) duplication, retransmission, reordering ---------------------------------------------------

@SETTINGS
@given(data=st.data(), packets=packet_lists, isn=st.integers(0, MOD - 1))
def test_duplicated_and_reordered_segments_frame_the_same_packets(
        data: st.DataObject, packets: list[bytes], isn: int) -> None:
    stream = b"".join(packets)
    n = len(stream)
    segs = segments(stream, data.draw(cut_points(packets), label="cuts"))
    copies = data.draw(st.lists(st.integers(1, 3), min_size=len(segs), max_size=len(segs)), label="copies")
    sent = [s for s, k in zip(segs, copies) for _ in range(k)]
    # Retransmissions that do not respect the original boundaries (overlaps).
    spans = data.draw(st.lists(st.tuples(st.integers(0, n - 1), st.integers(1, 3000)), max_size=5), label="spans")
    sent += [(a, stream[a:a + length]) for a, length in spans]
    order = data.draw(st.permutations(range(len(sent))), label="order")
    sent = [sent[i] for i in order]
    sink, half = reassemble(isn, sent, list(range(2, 2 + len(sent))))

    assert shape(sink.events) == shape(whole(stream))
    assert sink.gaps == [] and half.lost_bytes == 0 and half.pending == {}
    assert half.next_seq == (isn + 1 + n) % MOD


# -- (c) no exceptions on arbitrary input ------------------------------------------------------------

framer_ops = st.lists(
    st.one_of(
        st.tuples(st.just("feed"), st.binary(max_size=64)),
        st.tuples(st.just("feed"), st.sampled_from([b"\x30\xff\xff\xff\xff\x01", b"\x10\x80", b"\xc0",
                                                    b"\x10\x0c\x00\x04MQTT\x05\x02\x00\x3c\x09",
                                                    b"\x20\x05\x00\x00\x02\x7f\x00", b"\xe0\x00"])),
        st.tuples(st.just("gap"), st.integers(1, 100_000)),
        st.tuples(st.just("eof"), st.just(0)),
    ),
    max_size=30,
)


@settings(max_examples=400, deadline=None)
@given(ops=framer_ops, synced=st.booleans(), body_cap=st.sampled_from([0, 1, 5, 64, 65536]))
def test_framer_never_raises(ops: list[tuple], synced: bool, body_cap: int) -> None:
    f = MQTTFramer(Direction.TO_CLIENT, synced=synced, body_cap=body_cap)
    for frame, (op, arg) in enumerate(ops, start=1):
        if op == "feed":
            events = f.feed(arg, frame, frame)
        elif op == "gap":
            events = f.gap(arg, frame, frame)
        else:
            events = f.eof(frame, frame)
        assert isinstance(events, list)
        for e in events:
            assert isinstance(e, (MQTTPacket, FramingError))
            assert e.direction == Direction.TO_CLIENT
            if isinstance(e, MQTTPacket):
                assert 0 <= e.remaining_length <= 268_435_455
                assert e.first_frame <= e.last_frame == frame
    assert f.unsynced_bytes >= 0


stream_ops = st.lists(
    st.one_of(
        st.tuples(st.just("seg"), st.integers(0, 2000), st.binary(max_size=300), st.booleans(), st.booleans()),
        st.tuples(st.just("ack"), st.integers(0, 4000)),
        st.tuples(st.just("expire"), st.just(0)),
    ),
    max_size=40,
)


@settings(max_examples=300, deadline=None)
@given(ops=stream_ops, isn=st.integers(0, MOD - 1), cap=st.sampled_from([16, 1000, 1 << 20]))
def test_stream_never_raises_and_accounts_for_every_byte(ops: list[tuple], isn: int, cap: int) -> None:
    delivered: list[int] = []
    gaps: list[int] = []

    class Sink:
        def data(self, payload: bytes, frame_no: int, ts_ns: int) -> None:
            assert payload
            delivered.append(len(payload))

        def gap(self, missing: int, frame_no: int, ts_ns: int) -> None:
            assert missing > 0
            gaps.append(missing)

    half = HalfStream(Sink(), max_pending_bytes=cap)
    half.segment(isn, b"", 1, 1, syn=True)
    start = half.next_seq
    for frame, op in enumerate(ops, start=2):
        if op[0] == "seg":
            _, rel, payload, syn, fin = op
            half.segment((isn + rel) % MOD, payload, frame, frame, syn=syn, fin=fin)
        elif op[0] == "ack":
            half.acked((isn + op[1]) % MOD, frame, frame)
        else:
            half.expire(frame, frame)
    half.finish(10_000, 10_000)
    assert half.pending == {} and half.pending_bytes == 0
    # Every byte between the start and the end of the stream was delivered once or declared lost.
    assert sum(delivered) + sum(gaps) == seq_diff(half.next_seq, start)
    assert sum(gaps) == half.lost_bytes


# -- (d) codec round trips ------------------------------------------------------------------------------

@settings(max_examples=1000, deadline=None)
@given(value=st.one_of(st.integers(0, 268_435_455),
                       st.sampled_from([0, 127, 128, 16_383, 16_384, 2_097_151, 2_097_152, 268_435_455])))
def test_varint_round_trip(value: int) -> None:
    encoded = encode_varint(value)
    assert encoded == varint(value)
    assert len(encoded) == 1 + (value > 127) + (value > 16_383) + (value > 2_097_151)
    assert decode_varint(encoded, 0) == (value, len(encoded))
    assert decode_varint(b"\x30" + encoded + b"\x00", 1) == (value, len(encoded))
    for cut in range(len(encoded)):
        assert decode_varint(encoded[:cut], 0) is None


@settings(max_examples=100, deadline=None)
@given(value=st.integers(0, 268_435_455), extra=st.binary(min_size=1, max_size=4))
def test_varint_with_continuation_past_four_bytes_is_rejected(value: int, extra: bytes) -> None:
    encoded = bytes(b | 0x80 for b in encode_varint(value).ljust(4, b"\x00")) + extra
    try:
        decode_varint(encoded, 0)
    except DecodeError:
        return
    raise AssertionError("a fifth byte was accepted")


@settings(max_examples=300, deadline=None)
@given(level=st.sampled_from([3, 4, 5, 0x83, 0x84, 0x85]), ka=st.integers(0, 65535), cid=client_ids,
       clean=st.booleans(), user=st.none() | short_text, pw=st.none() | st.binary(max_size=20),
       will=st.none() | st.tuples(short_text, st.binary(max_size=20)))
def test_connect_round_trip(level: int, ka: int, cid: str, clean: bool, user: str | None, pw: bytes | None,
                            will: tuple[str, bytes] | None) -> None:
    body = connect_body(level=level, keep_alive=ka, client_id=cid, clean=clean, username=user, password=pw,
                        will=will)
    assert decode_connect(body) == ConnectBody(
        "MQIsdp" if level & 0x7F == 3 else "MQTT", level & 0x7F, ka, cid, clean,
        user is not None, pw is not None, will is not None)

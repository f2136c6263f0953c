"""HalfStream: one direction of a TCP connection back to the byte stream the sender wrote.

Each case is a script of operations on one HalfStream and the events its sink must record. Sequence
numbers in the scripts are relative to the first data byte (the SYN's sequence number + 1), and every
script runs with several initial sequence numbers, including ones that make the stream wrap past
2**32, so wrap-around is tested by every case rather than by one.
"""

from __future__ import annotations

import pytest

from analyzer.reassembly.stream import ACKED_HOLE_WAIT_NS, HalfStream, seq_diff

MOD = 1 << 32
ISNS = [0, 1000, MOD - 1, MOD - 3, MOD - 7]   # SYN at MOD-1: data starts at 0; MOD-3: wraps inside "abc"


def ts(frame: int) -> int:
    return frame * 1000


class Recorder:
    """A stream sink that records what it is given."""

    def __init__(self) -> None:
        self.events: list[tuple] = []

    def data(self, payload: bytes, frame_no: int, ts_ns: int) -> None:
        assert payload, "empty data must not be delivered"
        self.events.append(("data", payload, frame_no, ts_ns))

    def gap(self, missing: int, frame_no: int, ts_ns: int) -> None:
        assert missing > 0
        self.events.append(("gap", missing, frame_no, ts_ns))


# Script operations
def seg(rel: int, payload: bytes, frame: int, fin: bool = False) -> tuple:
    return ("seg", rel, payload, frame, fin)


def ack(rel: int, frame: int, at_ns: int | None = None) -> tuple:
    return ("ack", rel, frame, at_ns)


def expire(frame: int, at_ns: int) -> tuple:
    return ("expire", frame, at_ns)


def finish(frame: int) -> tuple:
    return ("finish", frame)


def skip(rel: int, frame: int) -> tuple:
    """Bytes before `rel` will never come (a FIN at `rel`, or a snap length cut)."""
    return ("skip", rel, frame)


# Expected events
def data(payload: bytes, frame: int) -> tuple:
    return ("data", payload, frame, ts(frame))


def gap(missing: int, frame: int, at_ns: int | None = None) -> tuple:
    return ("gap", missing, frame, ts(frame) if at_ns is None else at_ns)


def run(isn: int, script: list[tuple], max_pending: int | None = None) -> tuple[HalfStream, list[tuple]]:
    sink = Recorder()
    stream = HalfStream(sink) if max_pending is None else HalfStream(sink, max_pending_bytes=max_pending)
    stream.segment(isn, b"", 1, ts(1), syn=True)
    base = (isn + 1) % MOD
    for op in script:
        if op[0] == "seg":
            _, rel, payload, frame, fin = op
            stream.segment((base + rel) % MOD, payload, frame, ts(frame), fin=fin)
        elif op[0] == "ack":
            _, rel, frame, at_ns = op
            stream.acked((base + rel) % MOD, frame, ts(frame) if at_ns is None else at_ns)
        elif op[0] == "expire":
            stream.expire(op[1], op[2])
        elif op[0] == "skip":
            stream.skip_to((base + op[1]) % MOD, op[2], ts(op[2]))
        else:
            stream.finish(op[1], ts(op[1]))
    return stream, sink.events


CASES = [
    # (id, script, expected events)
    ("in-order",
     [seg(0, b"abc", 2), seg(3, b"defg", 3), seg(7, b"h", 4)],
     [data(b"abc", 2), data(b"defg", 3), data(b"h", 4)]),
    ("retransmission delivered once, first time counts",
     [seg(0, b"abc", 2), seg(0, b"abc", 3), seg(3, b"de", 4), seg(0, b"abcde", 5)],
     [data(b"abc", 2), data(b"de", 4)]),
    ("exact duplicate (same frame captured twice)",
     [seg(0, b"abc", 2), seg(0, b"abc", 3), seg(3, b"xyz", 4), seg(3, b"xyz", 5)],
     [data(b"abc", 2), data(b"xyz", 4)]),
    ("duplicate of an out-of-order segment",
     [seg(3, b"def", 2), seg(3, b"def", 3), seg(0, b"abc", 4)],
     [data(b"abc", 4), data(b"def", 2)]),
    ("overlap: only the new part is delivered",
     [seg(0, b"abcd", 2), seg(2, b"cdefg", 3)],
     [data(b"abcd", 2), data(b"efg", 3)]),
    ("overlap by one byte",
     [seg(0, b"abcd", 2), seg(3, b"def", 3)],
     [data(b"abcd", 2), data(b"ef", 3)]),
    ("out of order: delivered in order, each with its own frame",
     [seg(3, b"def", 2), seg(0, b"abc", 3)],
     [data(b"abc", 3), data(b"def", 2)]),
    ("reversed",
     [seg(6, b"ghi", 2), seg(3, b"def", 3), seg(0, b"abc", 4)],
     [data(b"abc", 4), data(b"def", 3), data(b"ghi", 2)]),
    ("out of order, overlapping buffered segments",
     [seg(3, b"defg", 2), seg(5, b"fghi", 3), seg(0, b"abc", 4)],
     [data(b"abc", 4), data(b"defg", 2), data(b"hi", 3)]),
    ("out of order, longer retransmission replaces a buffered segment",
     [seg(3, b"de", 2), seg(3, b"defg", 3), seg(0, b"abc", 4)],
     [data(b"abc", 4), data(b"defg", 3)]),
    ("ACK alone proves nothing yet: the data shows up after it",
     [seg(0, b"abc", 2), ack(6, 3), seg(3, b"def", 4), finish(5)],
     [data(b"abc", 2), data(b"def", 4)]),
    ("hole declared by the peer's ACK once later data arrives",
     [seg(0, b"abc", 2), ack(10, 3), seg(10, b"klm", 4)],
     [data(b"abc", 2), gap(7, 4), data(b"klm", 4)]),
    ("later data first, then the ACK, then more data",
     [seg(0, b"abc", 2), seg(8, b"ijk", 3), ack(8, 4), seg(11, b"lm", 5)],
     [data(b"abc", 2), gap(5, 5), data(b"ijk", 3), data(b"lm", 5)]),
    ("hole declared by the peer's ACK when the wait expires",
     [seg(0, b"abc", 2), ack(8, 3), expire(4, ts(3) + ACKED_HOLE_WAIT_NS)],
     [data(b"abc", 2), gap(5, 4, ts(3) + ACKED_HOLE_WAIT_NS)]),
    ("acknowledged bytes never seen, stream ends",
     [seg(0, b"abc", 2), ack(6, 3), finish(4)],
     [data(b"abc", 2), gap(3, 4)]),
    ("the ACK of a FIN is not a missing byte",
     [seg(0, b"abc", 2, fin=True), ack(4, 3), finish(4)],
     [data(b"abc", 2)]),
    ("an old ACK changes nothing",
     [seg(0, b"abcdef", 2), ack(3, 3), finish(4)],
     [data(b"abcdef", 2)]),
    ("finish flushes buffered bytes behind holes",
     [seg(0, b"abc", 2), seg(6, b"ghi", 3), seg(12, b"mno", 4), finish(5)],
     [data(b"abc", 2), gap(3, 5), data(b"ghi", 3), gap(3, 5), data(b"mno", 4)]),
    ("finish with nothing pending",
     [seg(0, b"abc", 2), finish(3)],
     [data(b"abc", 2)]),
    ("hole before the first data byte",
     [seg(5, b"fgh", 2), finish(3)],
     [gap(5, 3), data(b"fgh", 2)]),
    ("a snap length cut the segment's last bytes",
     [seg(0, b"abc", 2), skip(5, 2), seg(5, b"fg", 3)],
     [data(b"abc", 2), gap(2, 2), data(b"fg", 3)]),
    ("a FIN behind a loss: what waits behind the loss is delivered, not dropped with it",
     [seg(0, b"abc", 2), seg(6, b"ghi", 3), seg(12, b"mno", 4), skip(15, 5)],
     [data(b"abc", 2), gap(3, 5), data(b"ghi", 3), gap(3, 5), data(b"mno", 4)]),
    ("a FIN after bytes never seen",
     [seg(0, b"abc", 2), seg(6, b"ghi", 3), skip(12, 4)],
     [data(b"abc", 2), gap(3, 4), data(b"ghi", 3), gap(3, 4)]),
]


@pytest.mark.parametrize("isn", ISNS)
@pytest.mark.parametrize(("script", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_half_stream(isn: int, script: list[tuple], expected: list[tuple]) -> None:
    stream, events = run(isn, script)
    assert events == expected
    assert stream.lost_bytes == sum(e[1] for e in events if e[0] == "gap")
    assert not stream.mid_stream


@pytest.mark.parametrize("isn", ISNS)
def test_retransmitted_bytes_are_counted(isn: int) -> None:
    stream, _ = run(isn, [seg(0, b"abcd", 2), seg(0, b"abcd", 3), seg(2, b"cdef", 4)])
    assert stream.retransmitted_bytes == 4 + 2


@pytest.mark.parametrize("isn", ISNS)
def test_pending_cap_declares_the_hole_lost(isn: int) -> None:
    script = [seg(0, b"abc", 2), seg(6, b"ghijk", 3), seg(11, b"lmnop", 4), seg(16, b"q", 5)]
    stream, events = run(isn, script, max_pending=8)
    # 10 bytes buffered > 8: the 3 missing bytes are given up, the rest flows on.
    assert events == [data(b"abc", 2), gap(3, 4), data(b"ghijk", 3), data(b"lmnop", 4), data(b"q", 5)]
    assert stream.pending_bytes == 0 and stream.lost_bytes == 3


@pytest.mark.parametrize("isn", ISNS)
def test_pending_under_the_cap_waits(isn: int) -> None:
    stream, events = run(isn, [seg(0, b"abc", 2), seg(6, b"ghijk", 3)], max_pending=8)
    assert events == [data(b"abc", 2)]
    assert stream.pending_bytes == 5


@pytest.mark.parametrize("isn", ISNS)
def test_one_ack_over_two_holes_declares_both(isn: int) -> None:
    # Bytes 3-5 and 9-11 were never captured; the peer acknowledged up to 12, and byte 12 arrived.
    script = [seg(0, b"abc", 2), seg(6, b"ghi", 3), ack(12, 4), seg(12, b"mno", 5)]
    _, events = run(isn, script)
    assert events == [data(b"abc", 2), gap(3, 5), data(b"ghi", 3), gap(3, 5), data(b"mno", 5)]


# -- SYN and streams joined mid-way --------------------------------------------------------------

@pytest.mark.parametrize("isn", ISNS)
def test_syn_consumes_one_sequence_number(isn: int) -> None:
    sink = Recorder()
    stream = HalfStream(sink)
    stream.segment(isn, b"", 1, ts(1), syn=True)
    stream.segment(isn, b"", 2, ts(2), syn=True)            # retransmitted SYN
    assert stream.next_seq == (isn + 1) % MOD
    stream.segment((isn + 1) % MOD, b"abc", 3, ts(3))
    assert sink.events == [data(b"abc", 3)]
    assert not stream.mid_stream and stream.lost_bytes == 0


@pytest.mark.parametrize("isn", ISNS)
def test_syn_with_data_delivers_it(isn: int) -> None:
    # TCP Fast Open: the SYN carries data, which starts at ISN + 1.
    sink = Recorder()
    stream = HalfStream(sink)
    stream.segment(isn, b"abc", 1, ts(1), syn=True)
    stream.segment((isn + 4) % MOD, b"def", 2, ts(2))
    assert sink.events == [data(b"abc", 1), data(b"def", 2)]


@pytest.mark.parametrize("seq", [0, 5000, MOD - 2])
def test_stream_joined_mid_way(seq: int) -> None:
    sink = Recorder()
    stream = HalfStream(sink)
    stream.segment(seq, b"abcd", 7, ts(7))
    stream.segment((seq - 4) % MOD, b"wxyz", 8, ts(8))        # bytes sent before the capture started
    stream.segment((seq + 4) % MOD, b"ef", 9, ts(9))
    assert stream.mid_stream
    assert sink.events == [data(b"abcd", 7), data(b"ef", 9)]
    assert stream.lost_bytes == 0


@pytest.mark.parametrize(("a", "b", "diff"), [
    (5, 3, 2),
    (3, 5, -2),
    (2, MOD - 2, 4),            # across the wrap
    (MOD - 2, 2, -4),
    (0, MOD - 1, 1),
    ((1 << 31) - 1, 0, (1 << 31) - 1),
])
def test_seq_diff(a: int, b: int, diff: int) -> None:
    assert seq_diff(a, b) == diff

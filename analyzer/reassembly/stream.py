"""One direction of a TCP connection, turned back into the byte stream the sender wrote.

Theory of operation
-------------------
Sequence numbers are compared as signed 32-bit differences from `next_seq` (the next byte owed to
the consumer), which makes wrap-around a non-event. A segment is then:

* in order (difference 0): delivered, and any buffered segments it makes contiguous follow it;
* old (negative): a retransmission, a duplicate (the same frame captured twice on `any`) or an
  overlap; only bytes never delivered before are passed on, so the first transmission's time counts;
* early (positive): out of order; buffered until the hole before it fills.

A hole becomes an explicit gap (`sink.gap`) when the other side has acknowledged bytes the capture
never showed and they still have not appeared `ACKED_HOLE_WAIT_NS` later, or later bytes of the
stream arrived first (captures taken on several queues or interfaces often hold an ACK just before
the data it acknowledges, so an ACK alone proves nothing yet), when buffered bytes exceed `max_pending_bytes`, or when the stream ends. Bytes are
delivered with the frame number and timestamp of the segment that carried them, so timing survives
reordering.

The consumer (`sink`) gets `data(payload, frame_no, ts_ns)` and `gap(missing, frame_no, ts_ns)`;
this module is sans-I/O and knows nothing of MQTT.
"""

from __future__ import annotations

from typing import Protocol

MAX_PENDING_BYTES = 1 << 20
"""Out-of-order bytes kept per direction before the missing part is declared lost."""

ACKED_HOLE_WAIT_NS = 1_000_000_000
"""How long acknowledged-but-unseen bytes may take to show up in the capture before they are lost."""

_MOD = 1 << 32
_HALF = 1 << 31


class StreamSink(Protocol):
    def data(self, payload: bytes, frame_no: int, ts_ns: int) -> None: ...
    def gap(self, missing: int, frame_no: int, ts_ns: int) -> None: ...


def seq_diff(a: int, b: int) -> int:
    """a - b in 32-bit sequence space, as a signed number (RFC 1982 style)."""
    return ((a - b + _HALF) % _MOD) - _HALF


class HalfStream:
    """Reassembly state of one direction of one TCP connection."""

    __slots__ = ("sink", "next_seq", "pending", "pending_bytes", "fin_seq", "max_pending_bytes",
                 "retransmitted_bytes", "lost_bytes", "mid_stream", "acked_seq", "hole_deadline_ns",
                 "ack_before_start")

    def __init__(self, sink: StreamSink, max_pending_bytes: int = MAX_PENDING_BYTES) -> None:
        self.sink = sink
        self.next_seq: int | None = None
        self.pending: dict[int, tuple[bytes, int, int]] = {}
        self.pending_bytes = 0
        self.fin_seq: int | None = None
        self.max_pending_bytes = max_pending_bytes
        self.retransmitted_bytes = 0
        self.lost_bytes = 0
        self.mid_stream = False
        """True when the first segment seen was not a SYN: the stream's start was not captured."""
        self.acked_seq: int | None = None
        """The highest sequence number the peer acknowledged beyond what was delivered."""
        self.hole_deadline_ns: int | None = None
        """When acknowledged bytes that never appeared are declared lost (see `expire`)."""
        self.ack_before_start: int | None = None
        """What the peer acknowledged before this direction's first segment was seen (a stream
        joined mid-way): where the bytes it had received end."""

    def segment(self, seq: int, payload: bytes, frame_no: int, ts_ns: int,
                syn: bool = False, fin: bool = False) -> None:
        """Take one captured segment of this direction."""
        if self.next_seq is None:
            self.next_seq = (seq + 1) % _MOD if syn else seq
            self.mid_stream = not syn
        if syn:
            seq = (seq + 1) % _MOD
        if syn and not payload:
            return
        if fin:
            self.fin_seq = (seq + len(payload)) % _MOD
            if self.acked_seq is not None and seq_diff(self.acked_seq, self.fin_seq) > 0:
                # the peer acknowledged this FIN before the capture showed it: its sequence
                # number is no byte of the stream (`acked` clamps the same way when it comes first)
                self.acked_seq = self.fin_seq
                if not payload and seq_diff(self.fin_seq, self.next_seq) <= 0:
                    self.acked_seq = self.hole_deadline_ns = None
        if not payload:
            if seq != self.next_seq and not syn and 0 < seq_diff(seq, self.next_seq) < _HALF // 2:
                # the sender's sequence number moved on past bytes never captured (a FIN's, or a
                # DISCONNECT's, before a last ACK): lost, as bytes the peer acknowledged are
                self.acked(seq, frame_no, ts_ns)
            return
        diff = seq_diff(seq, self.next_seq)
        if diff == 0:
            self._deliver(payload, frame_no, ts_ns)
        elif diff < 0:
            self._overlap(payload, -diff, frame_no, ts_ns)
        else:
            self._buffer(seq, payload, frame_no, ts_ns)

    @property
    def held_back(self) -> bool:
        """Bytes of this direction are buffered behind a hole, or acknowledged by the peer and not
        shown yet: a packet the capture has not delivered may be among them."""
        return bool(self.pending) or self.acked_seq is not None

    @property
    def settled(self) -> bool:
        """In order with nothing pending: the next segment is either the next bytes or not."""
        return (self.next_seq is not None and not self.pending and self.acked_seq is None
                and self.hole_deadline_ns is None and self.fin_seq is None)

    def acked(self, ack: int, frame_no: int, ts_ns: int) -> None:
        """The other side acknowledged up to `ack`: bytes before it that never appear are lost."""
        if self.next_seq is None:
            return
        limit = ack if self.fin_seq is None or seq_diff(ack, self.fin_seq) <= 0 else self.fin_seq
        ahead = seq_diff(limit, self.next_seq)
        if 0 < ahead < _HALF // 2:
            if self.acked_seq is None or seq_diff(limit, self.acked_seq) > 0:
                self.acked_seq = limit
            if self.hole_deadline_ns is None:
                self.hole_deadline_ns = ts_ns + ACKED_HOLE_WAIT_NS

    def expire(self, frame_no: int, ts_ns: int) -> None:
        """Acknowledged bytes never appeared (the deadline passed, or later bytes came first):
        they are lost. Skips to the first byte that is known, buffered or acknowledged."""
        acked, self.acked_seq, self.hole_deadline_ns = self.acked_seq, None, None
        if acked is None or self.next_seq is None:
            return
        while seq_diff(acked, self.next_seq) > 0:
            target = acked
            if self.pending:
                first = min(self.pending, key=lambda s: seq_diff(s, self.next_seq))
                if seq_diff(first, target) < 0:
                    target = first
            self._skip_to(target, frame_no, ts_ns)

    def skip_to(self, seq: int, frame_no: int, ts_ns: int) -> None:
        """Bytes before `seq` will never be captured (a snap length cut them, or a FIN follows):
        segments buffered before it are delivered, each after the gap before it (a FIN that
        arrives while segments wait behind a loss must not take them with it)."""
        self._release(seq, frame_no, ts_ns)
        self._skip_to(seq, frame_no, ts_ns)

    def finish(self, frame_no: int, ts_ns: int) -> None:
        """The stream is over: buffered bytes behind a hole are delivered after an explicit gap."""
        self.expire(frame_no, ts_ns)
        self._release(None, frame_no, ts_ns)

    # -- internals ----------------------------------------------------------------------------

    def _deliver(self, payload: bytes, frame_no: int, ts_ns: int) -> None:
        self.next_seq = (self.next_seq + len(payload)) % _MOD
        self.sink.data(payload, frame_no, ts_ns)
        if self.pending:
            self._drain()
        if self.acked_seq is not None and seq_diff(self.acked_seq, self.next_seq) <= 0:
            self.acked_seq = self.hole_deadline_ns = None

    def _overlap(self, payload: bytes, behind: int, frame_no: int, ts_ns: int) -> None:
        if behind >= len(payload):
            self.retransmitted_bytes += len(payload)
            return
        self.retransmitted_bytes += behind
        self._deliver(payload[behind:], frame_no, ts_ns)

    def _buffer(self, seq: int, payload: bytes, frame_no: int, ts_ns: int) -> None:
        known = self.pending.get(seq)
        if known is not None and len(known[0]) >= len(payload):
            self.retransmitted_bytes += len(payload)
            return
        if known is not None:
            self.pending_bytes -= len(known[0])
        self.pending[seq] = (payload, frame_no, ts_ns)
        self.pending_bytes += len(payload)
        if self.acked_seq is not None:  # the peer acknowledged the hole and later bytes arrive first
            self.expire(frame_no, ts_ns)
        elif self.pending_bytes > self.max_pending_bytes:
            first = min(self.pending, key=lambda s: seq_diff(s, self.next_seq))
            self._skip_to(first, frame_no, ts_ns)

    def _drain(self) -> None:
        """Deliver buffered segments that the stream has caught up with."""
        progressed = True
        while progressed and self.pending:
            progressed = False
            for seq in list(self.pending):
                diff = seq_diff(seq, self.next_seq)
                if diff > 0:
                    continue
                payload, frame_no, ts_ns = self.pending.pop(seq)
                self.pending_bytes -= len(payload)
                if -diff < len(payload):
                    self.next_seq = (self.next_seq + len(payload) + diff) % _MOD
                    self.sink.data(payload[-diff:], frame_no, ts_ns)
                else:
                    self.retransmitted_bytes += len(payload)
                progressed = True

    def _release(self, before: int | None, frame_no: int, ts_ns: int) -> None:
        """Deliver the buffered segments (those starting before `before`, if given), in order, each
        after the gap before it."""
        while self.pending and self.next_seq is not None:
            first = min(self.pending, key=lambda s: seq_diff(s, self.next_seq))
            if (before is not None and seq_diff(first, before) >= 0) or seq_diff(first, self.next_seq) <= 0:
                break
            self._skip_to(first, frame_no, ts_ns)

    def _skip_to(self, seq: int, frame_no: int, ts_ns: int) -> None:
        missing = seq_diff(seq, self.next_seq)
        if missing <= 0:
            return
        if self.acked_seq is not None and seq_diff(self.acked_seq, seq) <= 0:
            self.acked_seq = self.hole_deadline_ns = None
        self.lost_bytes += missing
        self.next_seq = seq
        self.sink.gap(missing, frame_no, ts_ns)
        self._drain()

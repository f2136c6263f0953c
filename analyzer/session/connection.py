"""One MQTT-carrying TCP connection: two reassembled directions, two framers, one timeline.

This is where the layers meet for a single connection: TCP segments go into the two `HalfStream`s,
their in-order bytes into the two `MQTTFramer`s, and the framed packets, gaps and the end into the
`SessionTimeline`, whose observations the `Judge` turns into findings. Roles (which side is the
client) are fixed when the connection is recognised; a CONNECT (or a TLS ClientHello) arriving from
the side believed to be the broker, before anything else was framed, swaps them.

Three transports sit between the byte streams and the framers: none (plain MQTT), WebSocket
(`_WSSide`), and TLS (`tls_link.TLSSide` and the connection's `TLSLink`, which decrypts with the
capture's plaintext or, without it, turns TLS records into packets of unknown type). On a
configured port the first bytes decide (`_Sniff`).
"""

from __future__ import annotations

from functools import lru_cache
from ipaddress import ip_address
from typing import Callable

from analyzer.checks import Judge
from analyzer.decode.tcp import ACK, FIN, RST, SYN
from analyzer.model import (
    Direction, EndReason, Endpoint, Finding, FlowKey, FramingError, MQTTPacket, PacketType, StreamEnd, StreamGap,
)
from analyzer.mqtt.framer import MQTTFramer, plausible_start
from analyzer.reassembly.stream import HalfStream, seq_diff
from analyzer.session.timeline import Observation, SessionTimeline
from analyzer.session.tls_link import KEYLESS, TLSLink, TLSSide
from analyzer.tls.plaintext import PlaintextSource
from analyzer.tls.records import plausible_header
from analyzer.websocket import WebSocketDecoder, WSClose, WSData, WSError, WSGap, WSOpen

_SYN_FIN_RST = SYN | FIN | RST
_DISCONNECT = PacketType.DISCONNECT

TimelineFactory = Callable[["Connection", int, int], SessionTimeline]
PacketHook = Callable[[str, bool, MQTTPacket], None]
"""Sees every MQTT packet of every session: (session id, sent by the client, packet)."""


class _Side:
    """Stream sink for one side of the connection: bytes to its framer, events to the connection."""

    __slots__ = ("conn", "is_a", "framer")

    def __init__(self, conn: "Connection", is_a: bool, framer: MQTTFramer) -> None:
        self.conn, self.is_a, self.framer = conn, is_a, framer

    def data(self, payload: bytes, frame_no: int, ts_ns: int) -> None:
        events = self.framer.feed(payload, frame_no, ts_ns)
        if events:
            self.conn.on_events(self.is_a, events)

    def gap(self, missing: int, frame_no: int, ts_ns: int) -> None:
        """Lost bytes: a hole in the session's timeline (a packet may hide in it) unless they lie
        inside a payload the framer skips anyway (`MQTTFramer.absorbs`)."""
        hides = not self.framer.absorbs(missing, own=self.conn.cut_frame == frame_no)
        events = self.framer.gap(missing, frame_no, ts_ns)
        if events:
            self.conn.on_events(self.is_a, events)
        if hides:
            self.conn.on_gap(self.is_a, missing, frame_no, ts_ns)


class _WSSide:
    """Stream sink for one side of an MQTT-over-WebSocket connection: bytes through its WebSocket
    decoder to its framer. Only WebSocket flows pay for this layer."""

    __slots__ = ("conn", "framer", "is_a", "ws")

    def __init__(self, conn: Connection, is_a: bool, framer: MQTTFramer, ws: WebSocketDecoder) -> None:
        self.conn, self.is_a, self.framer, self.ws = conn, is_a, framer, ws

    def data(self, payload: bytes, frame_no: int, ts_ns: int) -> None:
        events = self.ws.feed(payload, frame_no, ts_ns)
        if events:
            self.conn.on_ws_events(self, events)

    def gap(self, missing: int, frame_no: int, ts_ns: int) -> None:
        events = self.ws.gap(missing, frame_no, ts_ns)
        if events:
            self.conn.on_ws_events(self, events)
        self.conn.on_gap(self.is_a, missing, frame_no, ts_ns)


class _Sniff:
    """Stream sink until the first bytes of a port-detected connection: a TLS record turns it into
    MQTT over TLS, a WebSocket upgrade from the client into MQTT over WebSocket, anything else into
    plain MQTT. Either way the real sink replaces this one, so later segments cost nothing extra."""

    __slots__ = ("conn", "is_a")

    def __init__(self, conn: Connection, is_a: bool) -> None:
        self.conn, self.is_a = conn, is_a

    def data(self, payload: bytes, frame_no: int, ts_ns: int) -> None:
        self.conn._decide(self.is_a, payload).data(payload, frame_no, ts_ns)

    def gap(self, missing: int, frame_no: int, ts_ns: int) -> None:
        self.conn._decide(self.is_a, b"").gap(missing, frame_no, ts_ns)


class _Unplaced:
    """Sink for one segment of a mid-stream connection not yet known to be TLS or plain MQTT, that
    starts inside a record or packet: nothing in it can be placed, so it is passed over (a loss is
    still noted on the session)."""

    __slots__ = ("conn", "is_a")

    def __init__(self, conn: Connection, is_a: bool) -> None:
        self.conn, self.is_a = conn, is_a

    def data(self, payload: bytes, frame_no: int, ts_ns: int) -> None:
        pass

    def gap(self, missing: int, frame_no: int, ts_ns: int) -> None:
        self.conn.on_gap(self.is_a, missing, frame_no, ts_ns)


MAX_UNPLACED = 16
"""Segments of a mid-stream connection passed over before it is taken for plain MQTT."""


class Connection:
    """Per-connection state of an MQTT flow; see the module docstring."""

    def __init__(self, index: int, client_is_a: bool, judge: Judge, sink: list[Finding],
                 make_timeline: TimelineFactory,
                 on_connect: Callable[[SessionTimeline, int], None],
                 packet_hook: PacketHook | None = None, *, websocket: bool | None = False,
                 tls: bool = False, tls_tentative: bool = False,
                 plaintext: PlaintextSource | None = None,
                 on_reject: Callable[[], None] | None = None) -> None:
        """`websocket`: True for MQTT over WebSocket (its HTTP Upgrade is the first data), False
        for plain MQTT, None to decide on the first data (a configured MQTT port). `tls`: MQTT over
        TLS (its ClientHello is the first data); `tls_tentative`: only if its plaintext says so
        (`TLSLink`), else `on_reject` is called and the connection is dropped. `plaintext`: the
        capture's decrypted TLS data, when key logs were given."""
        self.index = index
        self.client_is_a = client_is_a
        self.judge = judge
        self.findings = sink
        self.make_timeline = make_timeline
        self.on_connect = on_connect
        self.packet_hook = packet_hook
        self.timeline: SessionTimeline | None = None
        self.endpoints: tuple[tuple[bytes, int], tuple[bytes, int]] | None = None
        framers = (MQTTFramer(self._direction(True), synced=False),
                   MQTTFramer(self._direction(False), synced=False))
        self.sides: tuple[_Side, _Side] | tuple[_WSSide, _WSSide] = (
            _Side(self, True, framers[0]), _Side(self, False, framers[1]))
        self.websocket = False
        self.halves = (HalfStream(self.sides[0]), HalfStream(self.sides[1]))
        self.closed = False
        self.cut_frame = 0
        """While a snap length's cut of frame N is applied: N (its lost bytes end at its time)."""
        self.early_gaps: list[tuple[bool, int, int, int]] | None = None
        """Bytes lost before the session's first packet: (side A, bytes, frame, time) of each."""
        self.held_cuts: dict[tuple[bool, int], tuple[int, int, int]] | None = None
        """Cuts of segments held for later (read before one they follow), by (side A, where the
        cut starts): (bytes cut, frame, time), applied when the stream reaches them."""
        self.close_pending: tuple[bool, int, int, bool] | None = None
        """A FIN or RST that acknowledged bytes of the other side the capture has not shown yet:
        (sent by side A, frame, time, RST), applied once they show up or are found lost
        (`_close`)."""
        self.held_answer: tuple[int, int, int] | None = None
        """A PINGRESP the capture showed while client bytes the broker had acknowledged were held
        back by a capture hole: (frame, time, the acknowledged sequence number). A PINGREQ among
        those bytes is answered by it (`_held_answer`)."""
        self.unplaced = 0
        """Mid-stream segments passed over before the transport was known (`_decide`)."""
        self.plaintext = plaintext
        self.tls: TLSLink | None = None
        self.rejected = False
        self.on_reject = on_reject
        if tls:
            self._use_tls(tentative=tls_tentative)
        elif websocket:
            self._use_websocket()
        elif websocket is None:
            self.halves[0].sink, self.halves[1].sink = _Sniff(self, True), _Sniff(self, False)

    def _held_answer(self, event: MQTTPacket, tl: SessionTimeline,
                     observed: list[Observation]) -> list[Observation]:
        """A client packet came out from behind a capture hole, after the PINGRESP of `held_answer`:
        a PINGREQ in bytes the broker had acknowledged when it sent that PINGRESP is answered by
        it, not by the next one (which answers the next PINGREQ). Bytes past the acknowledged
        ones were sent later: the PINGRESP answered none of them."""
        frame, ts_ns, acked = self.held_answer  # type: ignore[misc]
        client = self.half(client=True)
        if client.next_seq is None or seq_diff(client.next_seq, acked) > 0:
            self.held_answer = None
        elif event.type is PacketType.PINGREQ:
            self.held_answer = None
            observed = observed + tl.answered_earlier(frame, ts_ns)
        return observed

    def half(self, *, client: bool) -> HalfStream:
        """The stream the client sends (`client`), or the broker."""
        return self.halves[0] if self.client_is_a == client else self.halves[1]

    def _direction(self, is_a: bool) -> Direction:
        return Direction.TO_SERVER if is_a == self.client_is_a else Direction.TO_CLIENT

    # -- TCP in -------------------------------------------------------------------------------

    def segment(self, is_a: bool, seq: int, ack: int, flags: int, payload: bytes, missing: int,
                frame_no: int, ts_ns: int) -> None:
        """Take one TCP segment of this connection, sent by side A (`is_a`) or side B."""
        half, other = (self.halves[0], self.halves[1]) if is_a else (self.halves[1], self.halves[0])
        if half.hole_deadline_ns is not None or other.hole_deadline_ns is not None:
            if self.close_pending is not None:  # (its acknowledged bytes are awaited: a deadline)
                self._segment_after_close(is_a, seq, ack, flags, payload, missing, frame_no, ts_ns)
                return
            self._expire_holes(frame_no, ts_ns)
        if flags & ACK and ack != other.next_seq:
            if other.next_seq is not None:
                other.acked(ack, frame_no, ts_ns)
            else:
                self._ack_before_start(not is_a, other, ack, frame_no, ts_ns)
        if (payload and seq == half.next_seq and not flags & _SYN_FIN_RST and not missing
                and not half.pending and half.acked_seq is None):
            # The common case, with the reassembler's and the sink's bookkeeping inlined: the next
            # bytes of the stream, nothing buffered and no hole suspected (exactly what
            # `HalfStream.segment` would do: deliver them and advance).
            half.next_seq = (seq + len(payload)) & 0xFFFFFFFF
            sink = half.sink
            if sink.__class__ is _Side:
                events = sink.framer.feed(payload, frame_no, ts_ns)
                if events:
                    self.on_events(is_a, events)
            else:
                sink.data(payload, frame_no, ts_ns)
            return
        if flags & RST:
            self._close(is_a, frame_no, ts_ns, rst=True)
            return
        if half.next_seq is None and not flags & SYN:
            # joined mid-way: where the first packet starts is a guess (`MQTTFramer.hunting`)
            self.sides[0 if is_a else 1].framer.hunting = True
            if half.ack_before_start is not None:
                # its peer had received less than this when it last said: the bytes between were
                # sent while the capture ran, and it lost them
                self._lost_unseen(is_a, half.ack_before_start, seq, frame_no, ts_ns)
        half.segment(seq, payload, frame_no, ts_ns, bool(flags & SYN), bool(flags & FIN))
        if missing:
            # a snap length cut the segment: the bytes after its captured ones are lost, if those
            # were the stream's latest (not for a retransmission); for a segment held for later
            # (read before one it follows), once the stream reaches them
            cut = (seq + (1 if flags & SYN else 0) + len(payload)) & 0xFFFFFFFF
            if half.next_seq == cut:
                self._cut(half, cut, missing, frame_no, ts_ns)
            elif half.next_seq is not None and seq_diff(cut, half.next_seq) > 0:
                if self.held_cuts is None:
                    self.held_cuts = {}
                self.held_cuts[(is_a, cut)] = (missing, frame_no, ts_ns)
        if self.held_cuts is not None:
            while (is_a, half.next_seq) in self.held_cuts:
                held = self.held_cuts.pop((is_a, half.next_seq))
                self._cut(half, half.next_seq, *held)  # type: ignore[arg-type]
            if not self.held_cuts:
                self.held_cuts = None
        if flags & FIN and half.fin_seq is not None:
            half.skip_to(half.fin_seq, frame_no, ts_ns)
            self._close(is_a, frame_no, ts_ns, rst=False)

    def _ack_before_start(self, is_a: bool, half: HalfStream, ack: int, frame_no: int,
                          ts_ns: int) -> None:
        """Side A (`is_a`) or B, not seen yet (a connection joined mid-way), acknowledged up to
        `ack` by its peer. An acknowledgement that moves on shows bytes it sent during the capture
        that the capture lost (a PINGRESP, say), not bytes from before it."""
        before, half.ack_before_start = half.ack_before_start, ack
        if before is not None:
            self._lost_unseen(is_a, before, ack, frame_no, ts_ns)

    def _lost_unseen(self, is_a: bool, known: int, later: int, frame_no: int, ts_ns: int) -> None:
        """Side A's (`is_a`) or B's bytes from `known` to `later` (sequence numbers), of a
        direction the capture has not shown yet, were sent while it ran and lost."""
        missing = seq_diff(later, known)
        if 0 < missing < 1 << 30:
            self.on_gap(is_a, missing, frame_no, ts_ns)

    def _cut(self, half: HalfStream, cut: int, missing: int, frame_no: int, ts_ns: int) -> None:
        """The `missing` bytes after `cut` were frame `frame_no`'s own, cut by the snap length."""
        self.cut_frame = frame_no  # (the gap's bytes are this frame's own: `_Side.gap`)
        half.skip_to((cut + missing) & 0xFFFFFFFF, frame_no, ts_ns)
        self.cut_frame = 0

    def _expire_holes(self, frame_no: int, ts_ns: int) -> None:
        for stream in self.halves:
            if stream.hole_deadline_ns is not None and ts_ns >= stream.hole_deadline_ns:
                stream.expire(frame_no, ts_ns)

    def finish(self, reason: EndReason, frame_no: int, ts_ns: int) -> None:
        """The capture ended or the flow was evicted: flush everything and end the session."""
        if self.close_pending is not None:  # what it waited for never came
            pending, self.close_pending = self.close_pending, None
            self._close_now(*pending)
        for half in self.halves:
            half.finish(frame_no, ts_ns)
        for side in self.sides:
            self._flush(side, frame_no, ts_ns)
        self._end(reason, frame_no, ts_ns)

    # -- MQTT in ------------------------------------------------------------------------------

    def on_events(self, is_a: bool, events: list[MQTTPacket | FramingError]) -> None:
        to_server = is_a == self.client_is_a
        for event in events:
            if event.__class__ is MQTTPacket:
                tl = self.timeline
                if tl is None:
                    if not to_server and event.type == PacketType.CONNECT:
                        self.swap_roles()
                        to_server = True
                    tl = self._timeline(event.first_frame, event.ts_first_ns)
                if not to_server and event.type is PacketType.PINGRESP:
                    client = self.half(client=True)
                    tl.client_backlog = client.held_back
                    acked = (client.acked_seq if client.next_seq is not None
                             else client.ack_before_start)
                    if acked is not None and not tl.awaiting_pingresp:
                        # the broker acknowledged client bytes the capture holds back or has not
                        # shown yet (on a connection joined mid-way, before any): the PINGREQ this
                        # answers may be among them (a waiting one whose answer may have been lost
                        # is passed over all the same)
                        self.held_answer = (event.first_frame, event.ts_first_ns, acked)
                if to_server and event.type is _DISCONNECT and self.half(client=False).held_back:
                    tl.answers_unseen()  # (the broker bytes held back may hold their answers)
                observed = tl.on_packet(event, to_server)
                if to_server and self.held_answer is not None:
                    observed = self._held_answer(event, tl, observed)
                if self.packet_hook is not None:
                    self.packet_hook(tl.session_id, to_server, event)
                if event.type == PacketType.CONNECT and to_server and tl.connect_frame == event.first_frame:
                    self.on_connect(tl, event.ts_first_ns)
                if observed:
                    self.findings += self.judge.observations(observed, tl)
            elif self.timeline is not None:
                self.timeline.on_framing_error(event, to_server)

    def on_gap(self, is_a: bool, missing: int, frame_no: int, ts_ns: int) -> None:
        if self.timeline is None:
            # before the session's first packet (its CONNECT lost, say): the session is told when
            # it starts (`_timeline`), or a PINGRESP first seen would be taken for unsolicited
            if self.early_gaps is None:
                self.early_gaps = []
            self.early_gaps.append((is_a, missing, frame_no, ts_ns))
            return
        direction = self._direction(is_a)
        self.timeline.on_gap(StreamGap(direction, frame_no, ts_ns, missing),
                             direction == Direction.TO_SERVER)

    # -- WebSocket ------------------------------------------------------------------------------

    def _use_websocket(self) -> None:
        self.websocket = True
        self.sides = tuple(_WSSide(self, side.is_a, side.framer,  # type: ignore[assignment]
                                   WebSocketDecoder(side.is_a == self.client_is_a))
                           for side in self.sides)
        for half, side in zip(self.halves, self.sides):
            half.sink = side

    def _decide(self, is_a: bool, payload: bytes):
        """First bytes of a port-detected connection: MQTT over TLS, over WebSocket, or plain.

        A TLS record from either side is TLS (a capture that starts mid-connection may show the
        broker's first); no MQTT packet starts like one (see `analyzer.tls.detect`). A capture that
        starts in the middle of a connection may begin inside a TLS record or an MQTT packet, or
        with a loss: such bytes tell nothing and cannot be placed, so up to `MAX_UNPLACED` segments
        of them are passed over (`_Unplaced`) until one starts with a TLS record or an MQTT header.
        """
        tls = plausible_header(payload)
        if (not tls and self.unplaced < MAX_UNPLACED and self.halves[0 if is_a else 1].mid_stream
                and plausible_start(payload) is not True):
            self.unplaced += 1
            return _Unplaced(self, is_a)
        if tls:
            self._use_tls(tentative=False)
        elif is_a == self.client_is_a and payload.startswith(b"GET "):
            self._use_websocket()
        else:
            for half, side in zip(self.halves, self.sides):
                half.sink = side
        return self.sides[0 if is_a else 1]

    def on_ws_events(self, side: _WSSide, events: list) -> None:
        """What one side's WebSocket decoder produced, in order: MQTT bytes to the framer, pings
        and pongs nowhere (they are not MQTT control packets), a close frame ends the session."""
        framer = side.framer
        out: list[MQTTPacket | FramingError] = []
        for event in events:
            cls = event.__class__
            if cls is WSData:
                out += framer.feed(event.payload, event.frame_no, event.ts_ns)
            elif cls is WSGap:
                out += framer.gap(event.missing, event.frame_no, event.ts_ns)
            elif cls is WSError:
                out.append(FramingError(framer.direction, event.frame_no, event.ts_ns,
                                        f"WebSocket: {event.reason}"))
            elif cls is WSOpen:
                framer.synced = True  # the MQTT stream starts with the first data frame
            elif cls is WSClose:
                if out:
                    self.on_events(side.is_a, out)
                    out = []
                self._ws_close(side, event.frame_no, event.ts_ns)
        if out:
            self.on_events(side.is_a, out)

    def _ws_close(self, side: _WSSide, frame_no: int, ts_ns: int) -> None:
        """A WebSocket close frame: that side ends the session, as with a FIN on plain TCP."""
        self._flush(side, frame_no, ts_ns, stream_end=False)  # type: ignore[arg-type]
        by_client = side.is_a == self.client_is_a
        self._end(EndReason.CLIENT_FIN if by_client else EndReason.SERVER_FIN, frame_no, ts_ns)

    # -- TLS ------------------------------------------------------------------------------------

    def _use_tls(self, *, tentative: bool) -> None:
        self.tls = TLSLink(self, self.plaintext, tentative=tentative)
        self.sides = tuple(TLSSide(self, side.is_a, side.framer)  # type: ignore[assignment]
                           for side in self.sides)
        for half, side in zip(self.halves, self.sides):
            half.sink = side

    @property
    def keyless(self) -> bool:
        """MQTT over TLS judged from record sizes (no plaintext for this connection)."""
        return self.tls is not None and self.tls.mode == KEYLESS

    def use_websocket_over_tls(self) -> None:
        """The decrypted client data is an HTTP upgrade: WebSocket inside TLS."""
        self.websocket = True
        for side in self.sides:
            side.ws = WebSocketDecoder(side.is_a == self.client_is_a)  # type: ignore[union-attr]

    def tls_close(self, side: TLSSide, frame_no: int, ts_ns: int) -> None:
        """An alert that ends TLS (close_notify, fatal, or encrypted): that side closes."""
        events = side.framer.eof(frame_no, ts_ns)
        if events:
            self.on_events(side.is_a, events)
        by_client = side.is_a == self.client_is_a
        self._end(EndReason.CLIENT_FIN if by_client else EndReason.SERVER_FIN, frame_no, ts_ns)

    def reject(self) -> None:
        """A tentative TLS connection turned out not to be MQTT: nothing more is read of it."""
        self.rejected = True
        for half in self.halves:
            half.sink = _IGNORE
        if self.on_reject is not None:
            self.on_reject()

    # -- internals ----------------------------------------------------------------------------

    def _timeline(self, frame_no: int, ts_ns: int) -> SessionTimeline:
        if self.timeline is None:
            self.timeline = self.make_timeline(self, frame_no, ts_ns)
            gaps, self.early_gaps = self.early_gaps, None
            for gap in gaps or ():
                self.on_gap(*gap)
        return self.timeline

    def swap_roles(self) -> None:
        """The side taken for the broker is the client (its CONNECT or ClientHello says so)."""
        self.client_is_a = not self.client_is_a
        for side in self.sides:
            side.framer.direction = self._direction(side.is_a)

    def _flush(self, side: _Side, frame_no: int, ts_ns: int, *, stream_end: bool = True) -> None:
        """The packet in progress, cut short. `stream_end`: the TCP stream itself ended (a TLS
        record in progress is then reported too), not just the protocol above it."""
        if stream_end and self.tls is not None and not self.rejected:
            tls_events = side.parser.eof(frame_no, ts_ns)  # type: ignore[attr-defined]
            if tls_events:
                self.tls.on_events(side, tls_events)  # type: ignore[arg-type]
        events = side.framer.eof(frame_no, ts_ns)
        if events:
            self.on_events(side.is_a, events)

    def _close(self, is_a: bool, frame_no: int, ts_ns: int, *, rst: bool) -> None:
        """Side A (`is_a`) or B closed. A close that acknowledges bytes of the other side the
        capture has not shown yet came after them: frames of two capture queues are a few
        microseconds out of order, and at a close the other side's FIN, or its DISCONNECT, is
        often read just after the close that answered it. Taken at once, the close was the wrong
        side's (a broker closing early looked like a client leaving) or was taken to follow lost
        bytes. So it waits (`close_pending`) for the next segment of the connection: applied once
        those bytes show up, unless they ended the session first, or once they are found lost."""
        self.closed = True
        other = self.halves[1] if is_a else self.halves[0]
        if other.acked_seq is not None and self.close_pending is None and not (
                self.timeline is not None and self.timeline.ended):
            self.close_pending = (is_a, frame_no, ts_ns, rst)
            return
        self._close_now(is_a, frame_no, ts_ns, rst)

    def _segment_after_close(self, is_a: bool, seq: int, ack: int, flags: int, payload: bytes,
                             missing: int, frame_no: int, ts_ns: int) -> None:
        """A segment while a close waits for the bytes it acknowledged (`_close`)."""
        pending, self.close_pending = self.close_pending, None
        assert pending is not None
        awaited = self.halves[1] if pending[0] else self.halves[0]
        self._expire_holes(frame_no, ts_ns)
        if awaited.acked_seq is None:  # past their deadline: lost, and the close came after them
            self._close_now(*pending)
            self.segment(is_a, seq, ack, flags, payload, missing, frame_no, ts_ns)
            return
        self.segment(is_a, seq, ack, flags, payload, missing, frame_no, ts_ns)
        if awaited.acked_seq is None or self.close_pending is not None:
            self._close_now(*pending)  # they came (and may have ended the session first)
        else:
            self.close_pending = pending  # still awaited

    def _close_now(self, is_a: bool, frame_no: int, ts_ns: int, rst: bool) -> None:
        by_client = is_a == self.client_is_a
        client = self.half(client=True)
        if not by_client and client.acked_seq is not None:
            # the broker's close acknowledges client bytes the capture never showed: they were
            # sent before it, and what they held (a DISCONNECT, say) may explain it
            client.expire(frame_no, ts_ns)
        for side in self.sides if rst else (self.sides[0 if is_a else 1],):
            self._flush(side, frame_no, ts_ns)
        if rst:
            reason = EndReason.CLIENT_RST if by_client else EndReason.SERVER_RST
        else:
            reason = EndReason.CLIENT_FIN if by_client else EndReason.SERVER_FIN
        self._end(reason, frame_no, ts_ns)

    def release(self) -> None:
        """The session is over and reported: drop the references that make this connection, its
        streams, framers and timeline a cycle, so they are freed at once rather than by a later
        run of the garbage collector (which a large capture then makes wait longer)."""
        self.sides, self.halves = (), ()  # type: ignore[assignment]
        self.tls = None
        self.timeline = None
        self.make_timeline = self.on_reject = None  # type: ignore[assignment]

    def _end(self, reason: EndReason, frame_no: int, ts_ns: int) -> None:
        if self.tls is not None and not self.rejected:
            self.tls.settle()
        tl = self.timeline
        if tl is None or tl.ended:
            return
        if self.half(client=False).held_back:
            tl.answers_unseen()  # (the broker bytes held back may hold their answers)
        observed = tl.on_end(StreamEnd(frame_no, ts_ns, reason))
        if observed:
            self.findings += self.judge.observations(observed, tl)


class _Ignore:
    """The sink of a rejected connection's streams."""

    def data(self, payload: bytes, frame_no: int, ts_ns: int) -> None:
        pass

    def gap(self, missing: int, frame_no: int, ts_ns: int) -> None:
        pass


_IGNORE = _Ignore()


def flow_key(client: tuple[bytes, int], server: tuple[bytes, int], index: int) -> FlowKey:
    """The report form of a connection's endpoints."""
    return FlowKey(Endpoint(_ip_text(client[0]), client[1]), Endpoint(_ip_text(server[0]), server[1]),
                   index)


@lru_cache(maxsize=1024)
def _ip_text(raw: bytes) -> str:
    """An address's text form; the few busiest (a broker's address opens every session) cached."""
    if len(raw) == 4:
        return "%d.%d.%d.%d" % (raw[0], raw[1], raw[2], raw[3])
    return str(ip_address(raw))

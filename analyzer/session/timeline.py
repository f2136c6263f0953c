"""One MQTT connection followed packet by packet: keep-alive in force, silences, pings, the end.

Theory of operation
-------------------
The timeline receives the connection's MQTT packets in capture order (both directions), the capture
gaps of its TCP streams and its end. It keeps only what the next observation needs: where the
current client silence started, what the broker sent during it, the PINGREQs still unanswered and a
few counters. Each completed interval or ping exchange is returned as an observation
(`session.observations`) for the checks; nothing is judged here.

Measurement follows the spec's wording: a silence runs from the end of one client control packet to
the start of the next; the first starts at the end of CONNECT, or at CONNACK when the broker set a
Server Keep Alive there (the client cannot honour a value it has not received yet). Only client
packets end a silence; nothing the broker sends does. The first of client DISCONNECT, broker
DISCONNECT, FIN or RST ends the session; packets after it are counted but not judged.
"""

from __future__ import annotations

from array import array
from dataclasses import dataclass, field
from typing import Callable, Sequence

from analyzer.model import (
    MAX_GAP_SAMPLES, ConnAckBody, ConnectBody, DisconnectBody, EndReason, FlowKey, FramingError,
    KeepAliveSource, MQTTPacket, PacketType, Session, StreamEnd, StreamGap, Uncertainty,
)
from analyzer.session.observations import (
    MalformedPing, PingOutcome, Silence, SilenceEnd, UnsolicitedPingresp,
)

Observation = Silence | PingOutcome | MalformedPing | UnsolicitedPingresp

KEEP_ALIVE_TIMEOUT = 0x8D
MAX_PING_SPACINGS = 101
_INBOUND = frozenset({PacketType.PUBLISH, PacketType.PUBREL})
_PINGS = frozenset({PacketType.PINGREQ, PacketType.PINGRESP})


ANSWER_SKEW_NS = 10_000_000
"""How much earlier than its PINGREQ a PINGRESP may be stamped and still answer it: frames read
from several queues (or interfaces) of the capturing host are a few microseconds out of order."""


class _Ping:
    __slots__ = ("frame", "ts_ns", "repinged_ns", "stepped", "lost")

    def __init__(self, frame: int, ts_ns: int) -> None:
        self.frame, self.ts_ns, self.repinged_ns = frame, ts_ns, None
        self.stepped = False
        """The capture's clock stepped while it waited: how long it waited is not known."""
        self.lost = False
        """Broker bytes the capture lost may hold its answer: what became of it is not known."""


@dataclass
class SteadyPackets:
    """A run of a session's packets that completed no observation, summed (the columnar path's
    bulk, `analyzer.columnar.steady`): what `on_packet` would have changed, packet by packet."""

    client: int
    server: int
    pingreq: int
    pingresp: int
    inbound: int
    """Broker PUBLISH/PUBREL after the last client packet (all of them when there was none)."""
    inbound_first: int | None
    silence: tuple[int, int] | None = None
    """The last client packet's (last frame, end): where the open silence starts."""
    gaps: Sequence[int] = field(default_factory=list)
    """The silences client packets ended, in order."""
    last_ping: tuple[bool, int, int] | None = None
    """The last PINGREQ (True) or PINGRESP: (is PINGREQ, first frame, end)."""
    pingreq_ts: Sequence[int] = field(default_factory=list)
    pingreq_gaps: Sequence[int] = field(default_factory=list)
    """The silence each PINGREQ ended."""


class SessionTimeline:
    """Follows one MQTT connection; see the module docstring."""

    def __init__(self, session_id: str, capture: str, flow: FlowKey, start_frame: int,
                 start_ns: int, *, mid_stream: bool, assume_keep_alive_s: int | None = None,
                 silence_floor: Callable[[int | None], int] | None = None,
                 ping_floor: Callable[[int | None], int] | None = None) -> None:
        self.session_id = session_id
        self.capture = capture
        self.flow = flow
        self.start_frame, self.start_ns = start_frame, start_ns
        self.connect: ConnectBody | None = None
        self.connect_frame: int | None = None
        self.connack: ConnAckBody | None = None
        self.connack_frame: int | None = None
        self.keep_alive_s: int | None = assume_keep_alive_s
        self.keep_alive_source = (KeepAliveSource.UNKNOWN if assume_keep_alive_s is None
                                  else KeepAliveSource.ASSUMED)
        self.uncertainty: set[Uncertainty] = set()
        if mid_stream:
            self.uncertainty.add(Uncertainty.MID_STREAM)
        self.end_reason: EndReason | None = None
        self.end_frame, self.end_ns = start_frame, start_ns
        self.client_packets = self.server_packets = self.pingreq = self.pingresp = 0
        self.max_gap_ns: int | None = None
        self.last_client_malformed = False
        self.client_backlog = False
        """Set by the connection as a PINGRESP arrives: client bytes are still held behind a
        capture hole (buffered, or acknowledged but unseen), so its PINGREQ may be among them."""
        self.takeover_ns: int | None = None
        """Set by the engine when a newer session with the same client id connects."""
        self.framing_errors = 0
        self.ping_spacings_ns: list[int] = []
        """Spacing of consecutive PINGREQs (the first few): a hint at K when CONNECT is unseen."""
        self._last_pingreq_ns: int | None = None
        self._silence_start: tuple[int, int] | None = None
        self._silence_first = False
        self._inbound = 0
        self._inbound_first: int | None = None
        self._hole: StreamGap | None = None
        self._pings: list[_Ping] = []
        """Unanswered PINGREQs, oldest first: nearly always none or one, so a list (a deque
        costs ten times the memory of an empty list, on every open session)."""
        self._disconnect_reason: int | None = None
        self._clock_stepped = False
        self.ping_gap_percent: dict[int, int] = {}
        """Idle->PINGREQ gaps as whole percent of K (gap / K x 100) -> how many: the client's
        ping cadence, counted exactly in bounded memory."""
        self.connack_ns: int | None = None
        self._gaps: list[int] = []
        self._gaps_seen = 0
        self._gap_stride = 1
        self._silence_floor = silence_floor
        self._ping_floor = ping_floor
        """Given K, the longest PINGREQ->PINGRESP latency no check could object to: such answered
        pings (nearly all of them) are not turned into observations. None: report all."""
        """Given K, the longest silence ended by a client packet that no check could object to;
        such silences (nearly all of them) are not turned into observations. None: report all."""

    # -- public -------------------------------------------------------------------------------

    @property
    def client_id(self) -> str | None:
        """The id the broker knows the client by: CONNECT's, or the one CONNACK assigned."""
        if self.connack and self.connack.assigned_client_id and not (self.connect and self.connect.client_id):
            return self.connack.assigned_client_id
        return self.connect.client_id if self.connect else None

    @property
    def ended(self) -> bool:
        return self.end_reason is not None

    @property
    def silent_since_ns(self) -> int | None:
        """When the client's current silence began (the end of its last packet), if one is open."""
        return None if self.ended or self._silence_start is None else self._silence_start[1]

    def on_packet(self, pkt: MQTTPacket, to_server: bool) -> list[Observation]:
        """Take one MQTT packet of this connection; return what it completed."""
        out: list[Observation] = []
        if pkt.type in _PINGS and (pkt.flags or pkt.remaining_length):
            out.append(MalformedPing(pkt, to_server))
        if to_server:
            self._client_packet(pkt, out)
        else:
            self._server_packet(pkt, out)
        return out

    def steady_limits(self) -> tuple[int, int, int, int, int] | None:
        """What judging this session's packets in bulk needs: (open silence's start, silence
        floor, ping floor, unanswered PINGREQs, the unanswered one's end), or None when the
        session is in a state only packet-by-packet handling covers (ended, no silence open, a
        hole, a clock step, a repeated ping, no floors)."""
        if (self.end_reason is not None or self._silence_start is None or self._hole is not None
                or self._clock_stepped or len(self._pings) > 1
                or (self._pings and (self._pings[0].repinged_ns is not None or self._pings[0].stepped
                                     or self._pings[0].lost))
                or self._silence_floor is None or self._ping_floor is None):
            return None
        k = self.keep_alive_s
        return (self._silence_start[1], self._silence_floor(k), self._ping_floor(k),
                len(self._pings), self._pings[0].ts_ns if self._pings else 0)

    def absorb(self, run: SteadyPackets) -> None:
        """Take a run of packets at once, as `on_packet` one by one would have (the run completed
        no observation: `steady_limits` held throughout)."""
        self.client_packets += run.client
        self.server_packets += run.server
        self.pingreq += run.pingreq
        self.pingresp += run.pingresp
        if run.pingresp:
            self.client_backlog = False
        if run.silence is not None:
            self.last_client_malformed = False
            self._silence_start, self._silence_first = run.silence, False
            self._inbound, self._inbound_first, self._hole = run.inbound, run.inbound_first, None
            top = max(run.gaps)
            if self.max_gap_ns is None or top > self.max_gap_ns:
                self.max_gap_ns = top
            self._sample_gaps(run.gaps)
        elif run.inbound:
            self._inbound += run.inbound
            if self._inbound_first is None:
                self._inbound_first = run.inbound_first
        times = run.pingreq_ts
        if times:
            for gap in run.pingreq_gaps:
                self._note_ping_gap(gap)
            room = MAX_PING_SPACINGS - len(self.ping_spacings_ns)
            if room > 0:
                spaced = [b - a for a, b in zip(times, times[1:])]
                if self._last_pingreq_ns is not None:
                    spaced.insert(0, times[0] - self._last_pingreq_ns)
                self.ping_spacings_ns += spaced[:room]
            self._last_pingreq_ns = times[-1]
        if run.last_ping is not None:
            self._pings.clear()
            is_req, frame, ts_ns = run.last_ping
            if is_req:
                self._pings.append(_Ping(frame, ts_ns))

    def on_gap(self, gap: StreamGap, to_server: bool) -> None:
        """Bytes of this connection were not captured: intervals across them are uncertain."""
        self.uncertainty.add(Uncertainty.HOLE)
        if to_server:
            self._last_pingreq_ns = None  # (a PINGREQ may be lost there: no ping spacing across it)
            if self._hole is None and not self.ended:
                self._hole = gap
        else:
            # broker bytes lost: as many PINGRESPs as they could hold may answer the oldest pings
            # waiting (`_answer`)
            room = gap.missing_bytes // self.pingresp_bytes
            for ping in self._pings:
                if room <= 0:
                    break
                if not ping.lost:
                    ping.lost, room = True, room - 1

    @property
    def pingresp_bytes(self) -> int:
        """The bytes a PINGRESP takes on the wire, for how many answers lost bytes could hold."""
        return 2

    def on_clock_step(self) -> None:
        """The capture's timestamps went backwards: the interval in progress cannot be measured."""
        if not self.ended:
            self.uncertainty.add(Uncertainty.CLOCK_STEP)
            self._clock_stepped = True
            self._last_pingreq_ns = None  # (no ping spacing across the step)
            for ping in self._pings:
                ping.stepped = True

    def on_framing_error(self, err: FramingError, to_server: bool) -> None:
        self.framing_errors += 1
        if to_server:
            self.last_client_malformed = True

    def on_end(self, end: StreamEnd) -> list[Observation]:
        """The TCP connection ended (FIN, RST, eviction) or the capture did."""
        if self.ended:
            return []
        if end.reason in (EndReason.CAPTURE_END, EndReason.IDLE_EVICTED):
            self.uncertainty.add(Uncertainty.CAPTURE_END)
        return self._end(end.reason, end.frame_no, end.ts_ns)

    def provisional(self, now_frame: int, now_ns: int) -> list[Observation]:
        """The open silence and unanswered PINGREQs as if observation stopped now (live mode).

        Judged with the same checks, these let a deadline be reported the moment it passes; only
        rules whose verdict later evidence cannot withdraw may use them (see `checks.Judge.pending`).
        """
        if self.ended:
            return []
        out: list[Observation] = []
        if self._silence_start is not None and not self._clock_stepped:
            start_frame, start_ns = self._silence_start
            if now_ns > start_ns:
                out.append(Silence(start_frame, start_ns, now_frame, now_ns, SilenceEnd.OPEN,
                                   self._silence_first, self._inbound, self._inbound_first,
                                   self._hole, None, None, False,
                                   self.connack_ns if self._silence_first else None))
        out += [PingOutcome(p.frame, p.ts_ns, None, None, p.repinged_ns, now_frame, now_ns, None,
                            p.stepped) for p in self._pings if not p.lost]
        return out

    def summary(self) -> Session:
        """The session record for reports (call after the end)."""
        connect, connack = self.connect, self.connack
        uncertainty = set(self.uncertainty)
        if self.keep_alive_s is None:
            uncertainty.add(Uncertainty.UNKNOWN_KEEP_ALIVE)
        return Session(
            session_id=self.session_id, capture=self.capture, flow=self.flow,
            client_id=connect.client_id if connect else None,
            protocol_level=connect.protocol_level if connect else None,
            keep_alive_s=connect.keep_alive_s if connect else None,
            server_keep_alive_s=connack.server_keep_alive_s if connack else None,
            effective_keep_alive_s=self.keep_alive_s,
            keep_alive_source=self.keep_alive_source,
            connect_frame=self.connect_frame, start_ns=self.start_ns, end_ns=self.end_ns,
            end_reason=self.end_reason or EndReason.CAPTURE_END, end_frame=self.end_frame,
            client_packets=self.client_packets, server_packets=self.server_packets,
            pingreq=self.pingreq, pingresp=self.pingresp, max_gap_ns=self.max_gap_ns,
            uncertainty=frozenset(uncertainty),
            connack_code=connack.reason_code if connack else None,
            assigned_client_id=connack.assigned_client_id if connack else None,
            gap_samples_ns=array("q", self._gaps),
        )

    # -- client side --------------------------------------------------------------------------

    def _client_packet(self, pkt: MQTTPacket, out: list[Observation]) -> None:
        self.client_packets += 1
        ptype = pkt.type
        if ptype == PacketType.PINGREQ:
            self.pingreq += 1
            self._note_ping_spacing(pkt.ts_first_ns)
        if self.ended:
            return
        if ptype == PacketType.CONNECT and self.connect is None and isinstance(pkt.body, ConnectBody):
            self._on_connect(pkt, pkt.body)
            return
        self.last_client_malformed = pkt.type == PacketType.RESERVED or (
            ptype in _PINGS and bool(pkt.flags or pkt.remaining_length))
        if self._silence_start is not None:
            if ptype == PacketType.PINGREQ and not self._clock_stepped and self._hole is None:
                # (client bytes lost inside the silence may hold a packet: the idle time before
                # this ping is not known, as the silence is not judged)
                self._note_ping_gap(pkt.ts_first_ns - self._silence_start[1])
            silence = self._close_silence(pkt.first_frame, pkt.ts_first_ns, SilenceEnd.PACKET)
            if silence is not None:
                out.append(silence)
        self._open_silence(pkt.last_frame, pkt.ts_last_ns, first=False)
        if ptype == PacketType.PINGREQ:
            for ping in self._pings:
                if ping.repinged_ns is None:
                    ping.repinged_ns = pkt.ts_first_ns
            self._pings.append(_Ping(pkt.first_frame, pkt.ts_last_ns))
        elif ptype == PacketType.DISCONNECT:
            out.extend(self._end(EndReason.CLIENT_DISCONNECT, pkt.last_frame, pkt.ts_last_ns))

    def _note_ping_gap(self, gap_ns: int) -> None:
        if self.keep_alive_s and gap_ns >= 0:
            bucket = gap_ns * 100 // (self.keep_alive_s * 1_000_000_000)
            self.ping_gap_percent[bucket] = self.ping_gap_percent.get(bucket, 0) + 1

    def _note_ping_spacing(self, ts_ns: int) -> None:
        if self._last_pingreq_ns is not None and len(self.ping_spacings_ns) < MAX_PING_SPACINGS:
            self.ping_spacings_ns.append(ts_ns - self._last_pingreq_ns)
        self._last_pingreq_ns = ts_ns

    def _on_connect(self, pkt: MQTTPacket, body: ConnectBody) -> None:
        self.connect, self.connect_frame = body, pkt.first_frame
        if self.keep_alive_source in (KeepAliveSource.UNKNOWN, KeepAliveSource.ASSUMED):
            self.keep_alive_s, self.keep_alive_source = body.keep_alive_s, KeepAliveSource.CONNECT
        self._open_silence(pkt.last_frame, pkt.ts_last_ns, first=True)

    # -- server side --------------------------------------------------------------------------

    def _server_packet(self, pkt: MQTTPacket, out: list[Observation]) -> None:
        self.server_packets += 1
        ptype = pkt.type
        if ptype == PacketType.PINGRESP:
            self.pingresp += 1
        if self.ended:
            return
        if ptype in _INBOUND:
            self._inbound += 1
            if self._inbound_first is None:
                self._inbound_first = pkt.first_frame
        elif ptype == PacketType.PINGRESP:
            ping = self._answer(pkt.ts_first_ns) if self._pings else None
            if ping is not None:
                outcome = self._answered(ping, pkt.first_frame, pkt.ts_first_ns)
                if outcome is not None:
                    out.append(outcome)
            elif not self._pingreq_may_be_unseen() and not (
                    self._pings and Uncertainty.HOLE in self.uncertainty):
                # (one sent before every waiting PINGREQ answers none of them: one the capture
                # lost, if it lost client bytes)
                out.append(UnsolicitedPingresp(pkt))
        elif ptype == PacketType.CONNACK and self.connack is None and isinstance(pkt.body, ConnAckBody):
            self._on_connack(pkt, pkt.body)
        elif ptype == PacketType.DISCONNECT:
            body = pkt.body
            self._disconnect_reason = body.reason_code if isinstance(body, DisconnectBody) else None
            out.extend(self._end(EndReason.SERVER_DISCONNECT, pkt.first_frame, pkt.ts_first_ns))

    def _answer(self, ts_ns: int) -> _Ping | None:
        """The waiting PINGREQ a PINGRESP sent at `ts_ns` answers: the oldest, but for those whose
        answers may be in lost broker bytes (`_Ping.lost`) while a later one waits too (a broker
        answers in order, so theirs were lost), which go unjudged; and none sent after it (more
        than `ANSWER_SKEW_NS` later), as when a capture hole held the PINGRESP back while the
        client's next PINGREQ was read. A PINGRESP paired instead with the oldest after a lost
        one made every later ping of a session a slow answer (KA204), one interval late."""
        pings = self._pings
        first = pings[0]
        if not first.lost and (first.stepped or first.ts_ns <= ts_ns + ANSWER_SKEW_NS):
            return pings.pop(0)  # (all but after a capture loss)
        sent = [i for i, ping in enumerate(pings)
                if ping.stepped or ping.ts_ns <= ts_ns + ANSWER_SKEW_NS]
        if not sent:
            return None
        sure = next((i for i in sent if not pings[i].lost), sent[0])
        del pings[:sure]
        return pings.pop(0)

    def answers_unseen(self) -> None:
        """The session ends while broker bytes are held back by a capture hole, or were never
        shown (the `Connection` tells): the waiting pings' answers may be among them."""
        for ping in self._pings:
            ping.lost = True

    @property
    def awaiting_pingresp(self) -> bool:
        """A PINGREQ is waiting for a PINGRESP the capture can show: one whose answer was not
        perhaps in broker bytes it lost (`_Ping.lost`)."""
        return any(not ping.lost for ping in self._pings)

    def answered_earlier(self, frame: int, ts_ns: int) -> list[Observation]:
        """The PINGREQ just taken was answered by the PINGRESP at `frame` and `ts_ns`, which the
        capture showed before it: the PINGREQ was held behind a capture hole (the `Connection`
        tells by the broker's acknowledgement). Judged as an answer in its turn would be."""
        if not self._pings or self.ended:
            return []
        outcome = self._answered(self._pings.pop(), frame, ts_ns)
        return [] if outcome is None else [outcome]

    def _answered(self, ping: _Ping, frame: int, ts_ns: int) -> PingOutcome | None:
        """PINGREQ `ping` answered by the PINGRESP at `frame` and `ts_ns`, as an observation: none
        for an answer no check could object to, or for a ping whose answer may have been lost
        (this PINGRESP may answer a later one)."""
        latency = ts_ns - ping.ts_ns
        if ping.lost or (self._ping_floor is not None and 0 <= latency
                         <= self._ping_floor(self.keep_alive_s) and not ping.stepped):
            return None
        return PingOutcome(ping.frame, ping.ts_ns, frame, ts_ns, ping.repinged_ns, frame, ts_ns, None,
                           ping.stepped)

    def _pingreq_may_be_unseen(self) -> bool:
        """A PINGRESP with nothing to answer is only the broker's fault if no PINGREQ can hide in
        the capture: none before it started, none in a capture gap."""
        if self._hole is not None or self.client_backlog:
            return True
        unseen_start = Uncertainty.MID_STREAM in self.uncertainty or Uncertainty.HOLE in self.uncertainty
        return unseen_start and self.pingreq == 0

    def _on_connack(self, pkt: MQTTPacket, body: ConnAckBody) -> None:
        self.connack, self.connack_frame = body, pkt.first_frame
        self.connack_ns = pkt.ts_last_ns
        if body.server_keep_alive_s is None:
            return
        self.keep_alive_s, self.keep_alive_source = body.server_keep_alive_s, KeepAliveSource.CONNACK
        if self._silence_first:  # the client learns the value only now
            self._open_silence(pkt.last_frame, pkt.ts_last_ns, first=True)

    # -- silences and the end -----------------------------------------------------------------

    def _open_silence(self, frame: int, ts_ns: int, *, first: bool) -> None:
        self._silence_start = (frame, ts_ns)
        self._silence_first = first
        self._inbound, self._inbound_first, self._hole = 0, None, None

    def _close_silence(self, frame: int, ts_ns: int, end: SilenceEnd,
                       explained: str | None = None) -> Silence | None:
        start_frame, start_ns = self._silence_start  # type: ignore[misc]
        self._silence_start = None
        duration = ts_ns - start_ns
        stepped, self._clock_stepped = self._clock_stepped, False
        if duration < 0 and not stepped:
            # delivered out of time order, not a clock step (`CaptureAnalysis` tells those): a
            # segment lost before the capture point and resent after later ones, or frames of
            # several queues a few microseconds apart. The packets came back to back: no silence.
            ts_ns, duration = start_ns, 0
        if stepped:
            self.uncertainty.add(Uncertainty.CLOCK_STEP)
        else:
            if self.max_gap_ns is None or duration > self.max_gap_ns:
                self.max_gap_ns = duration
            if end == SilenceEnd.PACKET:
                self._sample_gap(duration)
        if (end == SilenceEnd.PACKET and self._silence_floor is not None and not stepped
                and duration <= self._silence_floor(self.keep_alive_s)):
            return None
        return Silence(start_frame, start_ns, frame, ts_ns, end, self._silence_first,
                       self._inbound, self._inbound_first, self._hole, explained,
                       self._disconnect_reason, stepped,
                       self.connack_ns if self._silence_first else None)

    def _sample_gap(self, gap_ns: int) -> None:
        """Keep every gap until MAX_GAP_SAMPLES, then every 2nd, then every 4th...: an even,
        deterministic sample in bounded memory."""
        if self._gaps_seen % self._gap_stride == 0:
            if len(self._gaps) == MAX_GAP_SAMPLES:
                self._gaps = self._gaps[::2]
                self._gap_stride *= 2
            if self._gaps_seen % self._gap_stride == 0:
                self._gaps.append(gap_ns)
        self._gaps_seen += 1

    def _sample_gaps(self, values: Sequence[int]) -> None:
        """`_sample_gap` for each of `values` in order, a stride at a time."""
        i = 0
        while i < len(values):
            # the next value kept is the one that brings the count seen to a multiple of the stride
            first = (-self._gaps_seen) % self._gap_stride
            if i + first >= len(values):
                self._gaps_seen += len(values) - i
                return
            i += first
            self._gaps_seen += first
            if len(self._gaps) == MAX_GAP_SAMPLES:
                self._sample_gap(values[i])  # halves the samples, doubles the stride
                i += 1
                continue
            take = values[i::self._gap_stride][:MAX_GAP_SAMPLES - len(self._gaps)]
            self._gaps += take
            used = (len(take) - 1) * self._gap_stride + 1
            self._gaps_seen += used
            i += used

    def _end(self, reason: EndReason, frame: int, ts_ns: int) -> list[Observation]:
        self.end_reason, self.end_frame, self.end_ns = reason, frame, ts_ns
        out: list[Observation] = []
        if self._silence_start is not None and reason != EndReason.CLIENT_DISCONNECT:
            kind = (SilenceEnd.SERVER_CLOSE if reason.by_server else
                    SilenceEnd.CLIENT_CLOSE if reason.by_client else SilenceEnd.OPEN)
            explained = self._close_explanation() if kind == SilenceEnd.SERVER_CLOSE else None
            out.append(self._close_silence(frame, ts_ns, kind, explained))  # type: ignore[arg-type]
        closed_by = "server" if reason.by_server else "client" if reason.by_client else None
        for ping in self._pings:
            if not ping.lost:
                out.append(PingOutcome(ping.frame, ping.ts_ns, None, None, ping.repinged_ns, frame,
                                       ts_ns, closed_by, ping.stepped))
        self._pings.clear()
        return out

    def _close_explanation(self) -> str | None:
        """Why a broker close would not be keep-alive enforcement, if anything says so."""
        reason = self._disconnect_reason
        if reason is not None and reason != KEEP_ALIVE_TIMEOUT:
            return f"DISCONNECT reason 0x{reason:02X}"
        if self.connect is not None and self.connack is None:
            return "closed before CONNACK"
        if self.connack is not None and self.connack.reason_code != 0:
            return f"CONNACK refused the connection (code 0x{self.connack.reason_code:02X})"
        if self.last_client_malformed:
            return "the client's last packet was malformed"
        if self.takeover_ns is not None:
            return "a newer connection with the same client id took the session over"
        return None

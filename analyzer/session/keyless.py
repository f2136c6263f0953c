"""An MQTT-over-TLS session judged without its plaintext: TLS records stand in for MQTT packets.

Theory of operation
-------------------
Without keys the MQTT packets are invisible, but each TLS application-data record the client sends
carries at least one of them (TLS only sends records when the application writes), so the records
are the client's activity: a silence runs from the end of one client record to the start of the
next, exactly as the plain timeline measures packets. The TLS link (`tls_link`) hands them in as
`MQTTPacket`s of type `ENCRYPTED` with `encrypted` set, or as PINGREQ / PINGRESP when the record has
the length of an encrypted 2-byte packet under the negotiated version and suite (`tls.suites`).
Every verdict is then "likely", never "confirmed": the session carries the `encrypted` uncertainty
and every finding says so.

What a record's size cannot tell, this timeline does not guess:

* A 2-byte client packet is a PINGREQ or a DISCONNECT, and a TLS 1.3 close_notify alert has the
  same size. Probable PINGREQs that are the client's last records and came less than
  `DISCONNECT_CLOSE_NS` before the connection closed are therefore dropped (taken for the
  DISCONNECT or close_notify that preceded the close), so no KA203 or KA106 comes from them, and
  under TLS 1.3 so is such a record answered by a ping-sized broker record (the broker's
  close_notify); one sent earlier, followed by other client records, or while the connection
  stays open, is judged.
* A lone broker record of ping size may be a close_notify: no KA205 (unsolicited PINGRESP).
* Broker records are of unknown type: they are not counted as inbound PUBLISHes (no KA103).
* Keep Alive comes from `--assume-keep-alive` (or the broker profile's `assume_keep_alive_s`).
  Without it, it is inferred from the client's ping cadence, conservatively: only from answered
  probable pings (a PINGRESP-sized answer came), at least `MIN_REGULAR_PINGS` of them, most of
  them within `REGULAR_TOLERANCE` of the median silence before a ping. K is then that median,
  rounded to whole seconds (`keep_alive_source` `inferred`): the interval at which the client pings
  when idle, which is K itself for libraries that ping at K (paho, libmosquitto, MQTT.js) and a
  fraction of K for those that ping earlier, so a gap judged against it is at least "silent for
  longer than it usually lets pass". Silences completed before K is known are kept (the longest
  `MAX_DEFERRED`, compactly: `_Deferred`) and judged once it is; if one left out could have broken
  a rule under the K found, the session's KA901 says so. When K can be neither assumed nor
  inferred the session gets `unknown_keep_alive` and no timing verdict. K is inferred from the
  first `MAX_IDLE_SAMPLES` answered pings only, so once that many have failed to give it, it never
  will: the session stops keeping silences and trying then, not at its end.
"""

from __future__ import annotations

from array import array
from statistics import median

from analyzer.model import EndReason, KeepAliveSource, MQTTPacket, PacketType, Uncertainty
from analyzer.session.observations import PingOutcome, Silence, SilenceEnd
from analyzer.session.timeline import Observation, SessionTimeline, _Ping

NS = 1_000_000_000
MIN_REGULAR_PINGS = 4
REGULAR_SHARE = 0.75
"""At least this share of the answered pings must be regular for K to be inferred."""
REGULAR_TOLERANCE = 0.1
"""A ping's preceding silence is regular within this fraction of the median (at least
`REGULAR_FLOOR_NS`, for the jitter of small K)."""
REGULAR_FLOOR_NS = 300_000_000
MAX_IDLE_SAMPLES = 128
MAX_DEFERRED = 256


DISCONNECT_CLOSE_NS = NS // 5
"""A client closes (or the broker closes) within milliseconds of a DISCONNECT; a ping-sized
exchange this shortly before the end is taken for DISCONNECT + close_notify, not for a ping."""


class _ProbablePing(_Ping):
    __slots__ = ("sent_ns", "idle_ns")

    def __init__(self, frame: int, ts_ns: int, sent_ns: int, idle_ns: int | None) -> None:
        super().__init__(frame, ts_ns)
        self.sent_ns, self.idle_ns = sent_ns, idle_ns


def infer_keep_alive(idle_ns: list[int]) -> int | None:
    """K in whole seconds from the silences before answered probable pings, or None (see the
    module docstring for why this is conservative)."""
    if len(idle_ns) < MIN_REGULAR_PINGS:
        return None
    middle = median(idle_ns)
    if middle < NS // 2:
        return None
    tolerance = max(REGULAR_TOLERANCE * middle, REGULAR_FLOOR_NS)
    regular = [gap for gap in idle_ns if abs(gap - middle) <= tolerance]
    if len(regular) < MIN_REGULAR_PINGS or len(regular) < REGULAR_SHARE * len(idle_ns):
        return None
    return max(1, round(median(regular) / NS))


class _Deferred:
    """The silences a session keeps until its Keep Alive is known: the `MAX_DEFERRED` longest (only
    long ones can exceed any K), as rows of integers.

    A session that never pings regularly keeps them for its whole life, and a broker capture may
    hold thousands of such sessions at once: as `Silence` objects in a heap they took about 260
    bytes each (67 KB a session when full), as rows about 80. Only silences ended by a client
    packet are deferred; one with a capture gap, a close reason or a DISCONNECT reason (which a
    keyless session hardly has), or a value beyond 64 bits or below 0 where -1 stands for none,
    is kept as the object it is."""

    __slots__ = ("dropped", "dropped_longest_ns", "durations", "objects", "order", "rows", "seen")

    WIDTH = 7
    """Integers a row holds: start frame, start, end frame, end, inbound packets, first inbound
    frame (-1: none), CONNACK time (-1: none)."""

    def __init__(self) -> None:
        self.rows = array("q")
        self.durations = array("q")
        self.order = array("q")
        """When each was deferred (4 x the count so far), plus 1 for `first` and 2 for `clock_step`;
        of two as long, the older is dropped first."""
        self.objects: dict[int, Silence] = {}
        """Rows kept as objects (see the class docstring)."""
        self.seen = 0
        self.dropped = 0
        """Silences left out for longer ones."""
        self.dropped_longest_ns: int | None = None

    def add(self, silence: Silence) -> None:
        self.seen += 1
        duration = silence.end_ns - silence.start_ns
        first_in, connack = silence.inbound_first_frame, silence.connack_ns
        values: array | None = None
        if (silence.hole is None and silence.close_explained is None
                and silence.disconnect_reason is None and _Q_MIN <= duration <= _Q_MAX
                and (first_in is None or first_in >= 0) and (connack is None or connack >= 0)):
            try:
                values = array("q", (silence.start_frame, silence.start_ns, silence.end_frame,
                                     silence.end_ns, silence.inbound,
                                     -1 if first_in is None else first_in,
                                     -1 if connack is None else connack))
            except OverflowError:
                pass
        order = 4 * self.seen + (1 if silence.first else 0) + (2 if silence.clock_step else 0)
        if values is None:  # (see the class docstring)
            values = _ZEROS
            duration = max(_Q_MIN, min(duration, _Q_MAX))
        if len(self.durations) < MAX_DEFERRED:
            row = len(self.durations)
            self.durations.append(duration)
            self.order.append(order)
            self.rows += values
        else:
            shortest = min(self.durations)
            if duration < shortest:
                self._drop(duration)
                return
            row = self.durations.index(shortest)
            if self.durations.count(shortest) > 1:  # the oldest of them
                row = min((i for i, d in enumerate(self.durations) if d == shortest),
                          key=self.order.__getitem__)
            self._drop(shortest)
            self.objects.pop(row, None)
            self.durations[row] = duration
            self.order[row] = order
            self.rows[row * self.WIDTH:(row + 1) * self.WIDTH] = values
        if values is _ZEROS:
            self.objects[row] = silence

    def _drop(self, duration: int) -> None:
        self.dropped += 1
        if self.dropped_longest_ns is None or duration > self.dropped_longest_ns:
            self.dropped_longest_ns = duration

    def silences(self) -> list[Silence]:
        """The silences kept, in the order they started."""
        out = []
        rows, width = self.rows, self.WIDTH
        for row, flags in enumerate(self.order):
            kept = self.objects.get(row)
            if kept is None:
                start_frame, start_ns, end_frame, end_ns, inbound, inbound_first, connack = \
                    rows[row * width:(row + 1) * width]
                kept = Silence(start_frame, start_ns, end_frame, end_ns, SilenceEnd.PACKET,
                               bool(flags & 1), inbound, None if inbound_first < 0 else inbound_first,
                               None, None, None, bool(flags & 2), None if connack < 0 else connack)
            out.append((kept.start_ns, flags, kept))
        out.sort(key=lambda item: (item[0], item[1]))
        return [item[2] for item in out]


_ZEROS = array("q", bytes(8 * _Deferred.WIDTH))
_Q_MIN, _Q_MAX = -(1 << 63), (1 << 63) - 1


class KeylessTimeline(SessionTimeline):
    """A `SessionTimeline` fed with TLS records instead of MQTT packets; see the module docstring."""

    def __init__(self, *args, tls_facts: str = "", **kwargs) -> None:  # noqa: ANN002, ANN003
        super().__init__(*args, **kwargs)
        self.uncertainty.add(Uncertainty.ENCRYPTED)
        self.tls_facts = tls_facts
        """Version, suite, SNI and ALPN, for messages ("TLS 1.3 TLS_AES_256_GCM_SHA384, SNI ...")."""
        self.inferring = self.keep_alive_s is None
        self.inferred_from = 0
        """How many answered probable pings K was inferred from (0: not inferred)."""
        self.ping_record_length: int | None = None
        """The record length taken for a ping (set by the TLS link), for messages."""
        self._idle: list[int] = []
        self._deferred: _Deferred | None = None
        self.unkept: tuple[int, int, int] | None = None
        """When silences left out before K was inferred (`_Deferred`) could have broken a rule under
        it: (left out, deferred in all, the longest left out in ns), for the session's KA901."""
        self._last_other_ns: int | None = None
        """When the client last sent a record that was not ping-sized."""
        self.alerts_hidden = True
        """TLS 1.3: the broker's close_notify looks like a PINGRESP (see `_confirm_answer`)."""
        self._unconfirmed: tuple[_ProbablePing, int, int] | None = None
        """The latest ping-sized exchange, until the client sends again (`_confirm_answer`)."""

    @property
    def pingresp_bytes(self) -> int:
        """A probable PINGRESP is a whole record: its 5-byte header and its ping-sized fragment."""
        return 2 if self.ping_record_length is None else self.ping_record_length + 5

    # -- records in -----------------------------------------------------------------------------

    def on_packet(self, pkt: MQTTPacket, to_server: bool) -> list[Observation]:
        out: list[Observation] = []
        if to_server:
            self._client_record(pkt, out)
        else:
            self._server_record(pkt, out)
        return out

    def _client_record(self, pkt: MQTTPacket, out: list[Observation]) -> None:
        self.client_packets += 1
        if self.ended:
            return
        self._confirm_answer(out)
        self.last_client_malformed = False  # a record came through after any TLS error
        idle = None
        if self._silence_start is not None:
            if not self._clock_stepped and self._hole is None:
                # (a record lost in the silence, a ping say, leaves the idle time unknown: no
                # sample of the cadence K is inferred from, nor a KA104 gap)
                idle = pkt.ts_first_ns - self._silence_start[1]
            silence = self._close_silence(pkt.first_frame, pkt.ts_first_ns, SilenceEnd.PACKET)
            if silence is not None:
                out.append(silence)
        self._open_silence(pkt.last_frame, pkt.ts_last_ns, first=False)
        if pkt.type == PacketType.PINGREQ:
            self.pingreq += 1
            for ping in self._pings:
                if ping.repinged_ns is None:
                    ping.repinged_ns = pkt.ts_first_ns
            self._pings.append(_ProbablePing(pkt.first_frame, pkt.ts_last_ns, pkt.ts_first_ns, idle))
        else:
            self._last_other_ns = pkt.ts_first_ns

    def _server_record(self, pkt: MQTTPacket, out: list[Observation]) -> None:
        self.server_packets += 1
        if self.ended or pkt.type != PacketType.PINGRESP or not self._pings:
            return
        self._confirm_answer(out)
        ping = self._answer(pkt.ts_first_ns)  # (passing over pings whose answers were lost)
        if ping is not None:
            self._exchange(ping, pkt.first_frame, pkt.ts_first_ns, out)  # type: ignore[arg-type]

    def answered_earlier(self, frame: int, ts_ns: int) -> list[Observation]:
        """The probable PINGREQ just taken came out from behind a capture hole and was answered by
        the ping-sized broker record at `frame`, which the capture showed before it."""
        out: list[Observation] = []
        if self._pings and not self.ended:
            self._exchange(self._pings.pop(), frame, ts_ns, out)  # type: ignore[arg-type]
        return out

    def _exchange(self, ping: _ProbablePing, frame: int, ts_ns: int, out: list[Observation]) -> None:
        """Probable PINGREQ `ping` answered by the ping-sized broker record at `frame`."""
        self._unconfirmed = (ping, frame, ts_ns)
        if not self.alerts_hidden:  # a broker alert is a record of its own type: no doubt
            self._confirm_answer(out)

    def _confirm_answer(self, out: list[Observation]) -> None:
        """A ping-sized exchange counts as a ping once the client sends again. The last one before
        a close is as likely its DISCONNECT answered by the broker's close_notify (TLS 1.3 gives
        both the size of a ping), so `_end` drops an exchange still unconfirmed."""
        if self._unconfirmed is None:
            return
        ping, frame, ts_ns = self._unconfirmed
        self._unconfirmed = None
        self.pingresp += 1
        if ping.lost:  # its answer may have been in broker bytes the capture lost: not this one
            return
        out.append(PingOutcome(ping.frame, ping.ts_ns, frame, ts_ns, ping.repinged_ns, frame, ts_ns,
                               None, ping.stepped))
        self._count_answered(ping, out)  # type: ignore[arg-type]

    def _count_answered(self, ping: _ProbablePing, out: list[Observation]) -> None:
        """An answered probable ping: now it counts for the cadence (and for inferring K)."""
        self._note_ping_spacing(ping.sent_ns)
        if ping.idle_ns is None:
            return
        if self.keep_alive_s:
            self._note_ping_gap(ping.idle_ns)
        if len(self._idle) < MAX_IDLE_SAMPLES:
            self._idle.append(ping.idle_ns)
        if self.inferring:
            out.extend(self._try_infer())

    # -- Keep Alive from the cadence -------------------------------------------------------------

    def _try_infer(self) -> list[Observation]:
        k = infer_keep_alive(self._idle)
        if k is None:
            if len(self._idle) >= MAX_IDLE_SAMPLES:  # no later ping is sampled: it never will be
                self.inferring = False
                self._deferred = None
            return []
        self.keep_alive_s, self.keep_alive_source = k, KeepAliveSource.INFERRED
        self.inferring = False
        self.inferred_from = len(self._idle)
        for gap in self._idle:
            self._note_ping_gap(gap)
        deferred, self._deferred = self._deferred, None
        if deferred is None:
            return []
        floor = self._silence_floor(k) if self._silence_floor is not None else -1
        if deferred.dropped_longest_ns is not None and deferred.dropped_longest_ns > floor:
            self.unkept = (deferred.dropped, deferred.seen, deferred.dropped_longest_ns)
        return [s for s in deferred.silences() if s.clock_step or s.duration_ns > floor]

    def _close_silence(self, frame: int, ts_ns: int, end: SilenceEnd,
                       explained: str | None = None) -> Silence | None:
        """While K may still be inferred, keep the silences the floor would drop, to judge later."""
        if not self.inferring:
            return super()._close_silence(frame, ts_ns, end, explained)
        floor, self._silence_floor = self._silence_floor, None
        try:
            silence = super()._close_silence(frame, ts_ns, end, explained)
        finally:
            self._silence_floor = floor
        if silence is not None and end == SilenceEnd.PACKET:
            self._defer(silence)
            return None
        return silence

    def _defer(self, silence: Silence) -> None:
        if self._deferred is None:
            self._deferred = _Deferred()
        self._deferred.add(silence)

    # -- the end --------------------------------------------------------------------------------

    def _end(self, reason: EndReason, frame: int, ts_ns: int) -> list[Observation]:
        out: list[Observation] = []
        if self._unconfirmed is not None:
            ping = self._unconfirmed[0]
            if (reason.by_client or reason.by_server) and ts_ns - ping.sent_ns <= DISCONNECT_CLOSE_NS:
                self._unconfirmed = None  # a DISCONNECT the connection closed right after
                self.pingreq -= 1
            else:  # a ping the client sent well before the end, or the capture ended
                self._confirm_answer(out)
        if self.inferring:
            out += self._try_infer()
            self.inferring = False  # whatever it is now, it stays
            self._deferred = None
        if reason.by_client or reason.by_server:
            # The client's last 2-byte records before a close are its DISCONNECT or close_notify.
            while (self._pings and ts_ns - self._pings[-1].sent_ns <= DISCONNECT_CLOSE_NS  # type: ignore[attr-defined]
                   and (self._last_other_ns is None
                        or self._pings[-1].sent_ns > self._last_other_ns)):  # type: ignore[attr-defined]
                self._pings.pop()
                self.pingreq -= 1
        return out + super()._end(reason, frame, ts_ns)

"""Wires the stages for one capture and owns network time.

`CaptureAnalysis.frame` is the per-frame hot path: decode to a TCP segment tuple, one dictionary
lookup for the connection, and only for MQTT connections reassembly and framing. Network time is the
newest frame timestamp; idle connections are swept on it, so a file and a live source give the same
verdicts. `analyze()` runs it over capture files and assembles the `Report`.
"""

from __future__ import annotations

import datetime as dt
import gc
import os
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from contextlib import contextmanager
from itertools import islice
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from analyzer import heap, lifetime
from analyzer.checks import Judge
from analyzer.decode.tcp import ACK, FIN, RST, SYN, decode_segment
from analyzer.errors import InputError
from analyzer.model import CaptureSummary, EndReason, Finding, Report, Session
from analyzer.mqtt.detect import looks_like_connect
from analyzer.reassembly.flows import MQTT, OTHER, UNDECIDED, Flow, FlowKey4, FlowTable
from analyzer.ruleset import RuleSet, load_ruleset
from analyzer.ruleset.model import apply_suppressions
from analyzer.session.connection import Connection, PacketHook, flow_key
from analyzer.session.keyless import KeylessTimeline
from analyzer.session.timeline import SessionTimeline
from analyzer.sources import CaptureReader, expand_inputs, open_capture
from analyzer.sources.rotation import rotation_groups
from analyzer.spool import Chain, Spool, since
from analyzer.split import Shard, analyze_split
from analyzer.tls.detect import client_hello_verdict, offers_mqtt
from analyzer.tls.plaintext import PlaintextSource
from analyzer.tls.records import ClientHello
from analyzer.websocket.detect import upgrade_verdict

if TYPE_CHECKING:
    from analyzer.sources.batch import FrameBatch

NS = 1_000_000_000
SWEEP_EVERY_NS = 30 * NS
IDLE_CLOSED_NS = 60 * NS
IDLE_OTHER_NS = 300 * NS
IDLE_MQTT_UNKNOWN_NS = 3600 * NS
IDLE_MQTT_MIN_NS = 600 * NS
SHORTEST_IDLE_NS = min(IDLE_CLOSED_NS, IDLE_OTHER_NS, IDLE_MQTT_UNKNOWN_NS, IDLE_MQTT_MIN_NS)
PROGRESS_EVERY_FRAMES = 65_536
MAX_HELD_SEGMENTS = 64
"""Segments of an HTTP request held while deciding whether it upgrades to MQTT over WebSocket."""
POOL_MIN_BYTES = 4 << 20
"""Below this much capture data, starting worker processes costs more than it saves."""
ROTATION_GAP_NS = 60 * NS
"""A rotated file continues the previous one when it starts at most this long after it ended."""
CLOCK_STEP_NS = NS // 100
"""Timestamps going back by more than this are a clock step (merged captures, NTP), not the
microsecond disorder of frames captured on several queues."""
CLOCK_LEAP_NS = 2 * 65_535 * NS
"""Timestamps going forward by more than this from one frame to the next are a clock step too:
twice the longest Keep Alive MQTT allows, with nothing captured in between, and connections
carrying on after it. A gateway without a clock, whose tcpdump started before NTP set the date,
shows one of decades; a frame whose timestamp is corrupt, one there and one back. Taken for the
time it says, it made every open session silent that long (false violations by the thousand)
and every connection idle (evicted, then seen again as sessions started before the capture)."""

COLUMNAR_MIN_BYTES = 8 << 20
"""A capture file at least this large is read the columnar way unless `Options.columnar` says
otherwise: below it, importing NumPy and the per-batch work cost about what they save (on the
benchmark's captures: 5 MB as fast either way, 22 MB a fifth to a third faster)."""
SPLIT_MIN_BYTES = 32 << 20
"""With `jobs` > 1, one capture (or rotation) at least this large is analysed by that many
processes, its connections dealt out among them (`analyzer.split`): smaller ones take less time
than starting the processes would save."""


@dataclass(frozen=True)
class Options:
    """What to analyse and how; the CLI builds this from its options."""

    ports: frozenset[int] = frozenset({1883, 8883})
    """MQTT ports: plain MQTT, MQTT over TLS or over WebSocket, decided by the first bytes."""
    assume_keep_alive_s: int | None = None
    ruleset: RuleSet = field(default_factory=load_ruleset)
    today: dt.date | None = None
    """The date suppressions expire against (None: today)."""
    packet_hook: PacketHook | None = None
    """Called with (session id, sent by the client, packet) for every MQTT packet: for reports
    that draw a session's packets (a module-level function, so `jobs` > 1 can pickle it)."""
    hooked_sessions: frozenset[str] | None = None
    """Only these sessions' packets go to `packet_hook` (None: every session's). The connections
    of a hooked session are analysed frame by frame, so a hook on every session keeps a capture
    off the columnar path; a hook on a few leaves the others to it (`columnar`), and so does a
    process that tracks only some connections (`analyzer.split.Shard`)."""
    tls_keylogs: tuple[str, ...] = ()
    """SSLKEYLOGFILE key logs that decrypt MQTT over TLS in the captures (`--tls-keylog`)."""
    columnar: bool | None = None
    """Read captures in batches (pcap and pcapng) and analyse their steady frames with
    NumPy (`analyzer.columnar`); False: frame by frame; None: the columnar way for a capture of
    `COLUMNAR_MIN_BYTES` or more (a file by its size, a stream or compressed file by reading that
    much of it ahead). The reports are identical either way. The columnar way is
    1.6 to 1.8 times as fast on the benchmark's captures, and about 25 MiB higher at peak (NumPy
    and the batches: 88 to 89 MiB on the 1M-frame one, 92 to 93 MiB on the 10M-frame one).
    The processes of a split analysis always read this way."""


class CaptureAnalysis:
    """Analyses one capture frame by frame; `finish()` ends every open session."""

    def __init__(self, path: str, options: Options, *, spool: bool = True,
                 shard: Shard | None = None) -> None:
        """`spool`: keep closed sessions and findings mostly on disk (`analyzer.spool`), so memory
        stays flat on long captures and long live runs (which read them back as they come:
        `spool.since`); False keeps lists.
        `shard`: track only the connections dealt to this process (`analyzer.split`)."""
        self.path = path
        self.name = "stdin" if path == "-" else os.path.basename(path)
        """Session ids are `<file name>#<tcp.stream>`; records carry the path as given."""
        self.options = options
        self.ports = options.ports
        self.judge = Judge(options.ruleset)
        self.table = FlowTable(on_evict=self._evicted)
        self._lookup = self.table.get
        self.skipped: Counter[str] = Counter()
        self.sessions: Spool[Session] | list[Session] = Spool() if spool else []
        self.findings: Spool[Finding] | list[Finding] = Spool() if spool else []
        self.now_ns = 0
        self.last_frame = 0
        self._next_sweep_ns: int | None = None
        self._latest_by_client_id: dict[str, SessionTimeline] = {}
        self.clock_steps = 0
        self.warnings: list[str] = []
        self._first_step = ""
        self._step_warning = -1
        """The first clock step's warning, and where it stands in `warnings` (`_clock_step`)."""
        self._reported = 0
        self._emitted: dict[str, set[tuple[str, int]]] = {}
        """Live mode: the findings `tick` returned, by session id, as (rule id, first frame), which
        an early finding and its final form share; only for open sessions (see `tick`)."""
        self.plaintext = PlaintextSource(options.tls_keylogs, self._warn)
        """Decrypted TLS application data, loaded when a TLS connection first needs it."""
        self.plaintext.add_file(path, 0)
        self.shard = shard
        if shard is not None:
            self.table.keep_log()

    # -- the hot path -------------------------------------------------------------------------

    def frame(self, frame_no: int, ts_ns: int, linktype: int, data: bytes) -> None:
        """Take one captured frame."""
        self.advance(frame_no, ts_ns)
        seg = decode_segment(linktype, data)
        if seg.__class__ is str:
            self.skipped[seg] += 1  # type: ignore[index]
            return
        src, sport, dst, dport, seq, ack, flags, payload, missing = seg  # type: ignore[misc]
        key = (src, sport, dst, dport)
        entry = self._lookup(key)
        if entry is None:
            if self.shard is not None and not self.shard.owns(key):
                self.elsewhere(key, seq, payload, frame_no, ts_ns)
                return
            entry = self._new_flow(key, frame_no, ts_ns, flags)
        elif flags & SYN and not flags & ACK and entry[0].closed:
            self.table.evict(entry[0], frame_no, ts_ns)
            entry = self._new_flow(key, frame_no, ts_ns, flags, reopen=True)
        flow, is_a = entry
        flow.last_ns = ts_ns
        if flow.kind == MQTT:
            conn = flow.state  # a tentative TLS connection may reject itself (and leave flow.state)
            conn.segment(is_a, seq, ack, flags, payload, missing, frame_no, ts_ns)
            flow.closed = conn.closed
        elif flow.kind == UNDECIDED:
            self._undecided(flow, is_a, seq, ack, flags, payload, missing, frame_no, ts_ns)
        elif flags & (FIN | RST):
            flow.closed = True

    def advance(self, frame_no: int, ts_ns: int) -> None:
        """Network time moves to frame `frame_no`'s: idle sweeps and clock steps. The first step
        of every frame; alone, for a frame of a connection another process tracks (`analyzer.split`)."""
        self.last_frame = frame_no
        if ts_ns > self.now_ns:
            if self._next_sweep_ns is None:
                self._next_sweep_ns = ts_ns + SWEEP_EVERY_NS
            elif ts_ns >= self._next_sweep_ns:  # (a leap always passes the sweep time, 30 s on)
                if ts_ns - self.now_ns > CLOCK_LEAP_NS:
                    self._clock_step(frame_no, ts_ns)
                    return
                self.now_ns = ts_ns
                self._sweep(frame_no)
                return
            self.now_ns = ts_ns
        elif ts_ns < self.now_ns - CLOCK_STEP_NS:
            self._clock_step(frame_no, ts_ns)

    def _clock_step(self, frame_no: int, ts_ns: int) -> None:
        """The capture's clock went back (or leapt forward, `CLOCK_LEAP_NS`): no open interval can
        be measured across the step, and network time follows the clock from here (the newest
        frame's timestamp is this one's). Connections idle before the step are as idle after it.

        Had network time stayed at the time before a step back, every frame until the clock caught
        up again (a minute of traffic after an NTP correction of a minute) would be another step:
        each interval in that time left unjudged, and each frame a walk over every connection."""
        self.clock_steps += 1
        shift = ts_ns - self.now_ns
        if self.clock_steps == 1:
            way = "back" if shift < 0 else "forward"
            self._first_step = (f"timestamps go {way} {abs(shift) / NS:.3f} s at frame {frame_no} (a "
                                "clock step or merged captures): intervals across a step are not judged")
            self._step_warning = len(self.warnings)
            self.warnings.append(self._first_step)
        else:  # (the warning counts them: merged captures whose clocks differ step again and again)
            more = self.clock_steps - 1
            self.warnings[self._step_warning] = (
                f"{self._first_step} (and {more:,} more step{'s' if more > 1 else ''} after it)")
        self.now_ns = ts_ns
        self._next_sweep_ns = ts_ns + SWEEP_EVERY_NS
        for flow in self.table.flows():
            flow.last_ns += shift
            if flow.kind == MQTT and flow.state is not None and flow.state.timeline is not None:
                flow.state.timeline.on_clock_step()

    # -- connections --------------------------------------------------------------------------

    def _new_flow(self, key: FlowKey4, frame_no: int, ts_ns: int, flags: int,
                  reopen: bool = False) -> tuple[Flow, bool]:
        flow, is_a = self.table.create(key, frame_no, ts_ns, reopen=reopen)
        flow.syn_seen = bool(flags & SYN)
        sport_mqtt, dport_mqtt = key[1] in self.ports, key[3] in self.ports
        if sport_mqtt != dport_mqtt:
            self._make_mqtt(flow, client_is_a=dport_mqtt, websocket=None)
        elif sport_mqtt:
            self._make_mqtt(flow, client_is_a=not (flags & SYN and flags & ACK), websocket=None)
        return flow, is_a

    def opened_other(self, frame_no: int, ts_ns: int, key: FlowKey4, flags: int) -> Flow:
        """`frame` for a frame known to open a connection of this process that is not in the table,
        without a SYN, on no MQTT port, whose data shows at once it is not MQTT
        (`ignored_at_first_data`: the columnar path decides that in bulk, background HTTP being
        the common case): the connection is numbered and ignored from here on."""
        self.advance(frame_no, ts_ns)
        flow, _ = self._new_flow(key, frame_no, ts_ns, flags)
        flow.kind = OTHER
        if flags & (FIN | RST):
            flow.closed = True
        return flow

    def _undecided(self, flow: Flow, is_a: bool, seq: int, ack: int, flags: int, payload: bytes,
                   missing: int, frame_no: int, ts_ns: int) -> None:
        """A connection on no MQTT port: it is MQTT only if its first data is a CONNECT, an HTTP
        Upgrade to WebSocket with the `mqtt` subprotocol (MQTT over WebSocket), or a TLS
        ClientHello that offers MQTT by ALPN or whose plaintext, when keys were given, shows MQTT
        (`_opening`).

        An upgrade request or ClientHello cut over several segments is held (in `flow.state`)
        until it is complete, then its segments are replayed into the connection with their own
        frames."""
        if flags & (FIN | RST):
            flow.closed = True
        held = flow.state
        if not payload and held is None:
            return
        if held is not None:
            if held[0] != is_a:  # the other side spoke before the request ended: not WebSocket
                if payload:
                    flow.kind, flow.state = OTHER, None
                return
            held[1].append((seq, ack, flags, payload, missing, frame_no, ts_ns))
            if len(held[1]) > MAX_HELD_SEGMENTS:
                flow.kind, flow.state = OTHER, None
                return
            if not payload:
                return
            head = b"".join(segment[3] for segment in held[1])
        elif self.ignored_at_first_data(payload):
            flow.kind = OTHER
            return
        elif looks_like_connect(payload):
            conn = self._make_mqtt(flow, client_is_a=is_a)
            conn.segment(is_a, seq, ack, flags, payload, missing, frame_no, ts_ns)
            return
        else:
            head = payload
        verdict = self._opening(head)
        if verdict is None and not missing and not flags & (FIN | RST):
            if held is None:
                flow.state = (is_a, [(seq, ack, flags, payload, missing, frame_no, ts_ns)])
            return
        flow.state = None
        if not verdict:
            flow.kind = OTHER
            return
        conn = self._make_mqtt(flow, client_is_a=is_a, **verdict)  # type: ignore[arg-type]
        for segment in held[1] if held is not None else [(seq, ack, flags, payload, missing, frame_no, ts_ns)]:
            if flow.state is not conn:  # rejected (a tentative TLS connection that is not MQTT)
                break
            conn.segment(is_a, *segment)

    @staticmethod
    def ignored_at_first_data(payload: bytes) -> bool:
        """Does a connection on no MQTT port, whose first data is `payload` (whole or not), show
        at once that it is not MQTT, to be ignored for good? Not when it starts a CONNECT (even
        one cut short), a TLS record or an HTTP request that is, or may yet be, an upgrade to
        WebSocket. `_undecided` decides by it, and so do the columnar path's bulk and takeover
        checks, so the three cannot disagree."""
        if looks_like_connect(payload):
            return False
        if payload[:1] == b"G":
            return upgrade_verdict(payload) is False
        return payload[:1] != b"\x16"

    def _opening(self, head: bytes) -> dict[str, bool] | bool | None:
        """What a client's first bytes on no MQTT port open, as `Connection` keyword arguments:
        MQTT over WebSocket, or over TLS (tentative when only its plaintext can tell); False: not
        MQTT; None: not complete yet."""
        if head[:1] == b"G":
            upgrade = upgrade_verdict(head)
            return {"websocket": True} if upgrade else upgrade
        hello = client_hello_verdict(head)
        if not isinstance(hello, ClientHello):
            return hello  # None (not complete) or False (not a ClientHello)
        if offers_mqtt(hello):
            return {"tls": True}
        if self.plaintext.keys_given and self.plaintext.available(self.last_frame):
            return {"tls": True, "tls_tentative": True}
        return False

    def _make_mqtt(self, flow: Flow, client_is_a: bool, websocket: bool | None = False, *,
                   tls: bool = False, tls_tentative: bool = False) -> Connection:
        """`websocket`, `tls`, `tls_tentative`: see `Connection` (websocket None: a configured
        port, decided by the first bytes)."""
        flow.kind = MQTT
        hook = self.options.packet_hook
        hooked = self.options.hooked_sessions
        if hooked is not None and f"{self.name}#{flow.index}" not in hooked:
            hook = None
        conn = Connection(flow.index, client_is_a, self.judge, self.findings,
                          self._timeline_factory(flow), self._note_connect, hook,
                          websocket=websocket, tls=tls, tls_tentative=tls_tentative,
                          plaintext=self.plaintext, on_reject=lambda: self._rejected(flow))
        flow.state = conn
        return conn

    @staticmethod
    def _rejected(flow: Flow) -> None:
        """A tentative TLS connection is not MQTT after all: ignored from now on, no session."""
        flow.kind, flow.state = OTHER, None

    def _warn(self, message: str) -> None:
        if message not in self.warnings:
            self.warnings.append(message)

    def _timeline_factory(self, flow: Flow):
        def make(conn: Connection, frame_no: int, ts_ns: int) -> SessionTimeline:
            a, b = (flow.key_a[0], flow.key_a[1]), (flow.key_a[2], flow.key_a[3])
            client, server = (a, b) if conn.client_is_a else (b, a)
            args = (f"{self.name}#{flow.index}", self.path, flow_key(client, server, flow.index),
                    flow.first_frame, flow.first_ns)
            assumed = self.options.assume_keep_alive_s
            if assumed is None:
                assumed = self.options.ruleset.profile.assume_keep_alive_s
            kwargs = dict(mid_stream=not flow.syn_seen, assume_keep_alive_s=assumed,
                          silence_floor=self.judge.silence_floor_ns, ping_floor=self.judge.ping_floor_ns)
            if conn.keyless:
                tl = KeylessTimeline(*args, tls_facts=conn.tls.describe(), **kwargs)  # type: ignore[union-attr]
                tl.ping_record_length = conn.tls.ping_length  # type: ignore[union-attr]
                tl.alerts_hidden = conn.tls.hides_alerts  # type: ignore[union-attr]
                return tl
            return SessionTimeline(*args, **kwargs)  # type: ignore[arg-type]
        return make

    def _note_connect(self, tl: SessionTimeline, ts_ns: int) -> None:
        """A newer CONNECT with the same client id takes the older session over (the broker
        then closes the old connection: not keep-alive enforcement)."""
        client_id = tl.client_id
        if not client_id:
            return
        if self.shard is not None:
            self.shard.connected(self.last_frame, client_id)
        self._take_over(client_id, ts_ns, tl)

    def elsewhere(self, key: FlowKey4, seq: int, payload: bytes, frame_no: int, ts_ns: int) -> None:
        """A segment of a connection another process tracks (`analyzer.split`): a CONNECT in it
        still takes this process's sessions over."""
        client_id = self.shard.foreign_connect(key, seq, payload, frame_no)  # type: ignore[union-attr]
        if client_id:
            self._take_over(client_id, ts_ns, None)

    def _take_over(self, client_id: str, ts_ns: int, newest: SessionTimeline | None) -> None:
        """A CONNECT with `client_id` marks the session that last connected with it, if still
        open; `newest`: the CONNECT's session (None: tracked by another process)."""
        older = self._latest_by_client_id.get(client_id)
        if older is not None and older is not newest and not older.ended:
            older.takeover_ns = ts_ns
        if newest is None:
            self._latest_by_client_id.pop(client_id, None)
        else:
            self._latest_by_client_id[client_id] = newest

    # -- live mode -----------------------------------------------------------------------------

    def tick(self, now_ns: int) -> list[Finding]:
        """Advance network time without a frame (live mode: the wall clock) and return the findings
        that became certain, each once: deadlines that passed while sessions stayed silent, and
        the findings frames produced since the last tick."""
        self.now_ns = max(self.now_ns, now_ns)
        fresh = self._unseen(since(self.findings, self._reported))
        self._reported = len(self.findings)
        open_ids = set()
        for flow in self.table.flows():
            conn = flow.state
            if flow.kind != MQTT or conn is None or conn.timeline is None:
                continue
            open_ids.add(conn.timeline.session_id)
            client_half = conn.halves[0 if conn.client_is_a else 1]
            if client_half.acked_seq is None and conn.close_pending is None:
                # (no capture gap suspected in the client's bytes, no close waiting for bytes)
                fresh += self._unseen(self.judge.pending(conn.timeline, self.last_frame, self.now_ns))
        # a session that ended left its final findings in `findings`, all just seen: nothing of it
        # can follow, so what was said of it is forgotten (a run of weeks keeps only the open ones)
        for session_id in [sid for sid in self._emitted if sid not in open_ids]:
            del self._emitted[session_id]
        return fresh

    def rewind(self, ts_ns: int) -> None:
        """Live mode: a frame captured before the clock `tick()` advanced to arrives late. Network
        time goes back to it, so it is not taken for a clock step of the capture."""
        self.now_ns = min(self.now_ns, ts_ns)

    def open_sessions(self) -> list[SessionTimeline]:
        """The sessions still open, in stream order (what a live display shows)."""
        out = []
        for flow in self.table.flows():
            conn = flow.state
            if flow.kind == MQTT and conn is not None and conn.timeline is not None and not conn.timeline.ended:
                out.append(conn.timeline)
        return out

    def summary(self, reader: CaptureReader) -> CaptureSummary:
        """The capture summary once `finish()` has run."""
        return CaptureSummary(
            path=reader.path, format=reader.format, linktypes=tuple(sorted(reader.linktypes)),
            frames=self.last_frame, bytes=reader.bytes_read, tcp_streams=self.table.streams,
            mqtt_sessions=len(self.sessions), skipped=dict(sorted(self.skipped.items())),
            warnings=tuple(reader.warnings + self.warnings), error=reader.error)

    def _unseen(self, findings: list[Finding]) -> list[Finding]:
        """Findings not reported before; an early finding and its final form share a key."""
        out = []
        for f in findings:
            seen = self._emitted.setdefault(f.session_id, set())
            key = (f.rule_id, f.frames[0])
            if key not in seen:
                seen.add(key)
                out.append(f)
        return out

    # -- time and the end ---------------------------------------------------------------------

    def _sweep(self, frame_no: int) -> None:
        self.swept(frame_no, self.now_ns, self.idle_flows(self.now_ns))

    def idle_flows(self, now_ns: int) -> list[Flow]:
        """The connections an idle sweep at `now_ns` would evict, as they stand."""
        return self.table.idle(now_ns, idle_limit_ns, SHORTEST_IDLE_NS)

    def swept(self, frame_no: int, now_ns: int, evicted: list[Flow]) -> None:
        """The idle sweep at frame `frame_no`, whose evictions were worked out ahead (`evicted`,
        in `idle_flows` order: the columnar path's sweeps inside a run of frames)."""
        self._next_sweep_ns = now_ns + SWEEP_EVERY_NS
        for flow in evicted:
            self.table.evict(flow, frame_no, now_ns)

    def _evicted(self, flow: Flow, frame_no: int, now_ns: int) -> None:
        if flow.kind == MQTT:
            self._finalize(flow, EndReason.IDLE_EVICTED, frame_no, now_ns)

    def _finalize(self, flow: Flow, reason: EndReason, frame_no: int, now_ns: int) -> None:
        conn: Connection = flow.state
        conn.finish(reason, frame_no, now_ns)
        tl = conn.timeline
        if tl is None:
            conn.release()
            return
        self.findings += self.judge.finished(tl)
        self.sessions.append(tl.summary())
        if tl.client_id and self._latest_by_client_id.get(tl.client_id) is tl:
            del self._latest_by_client_id[tl.client_id]
        flow.state = None
        conn.release()

    def end_sessions(self) -> None:
        """End every open session at the last frame (`finish` does, if this was not called)."""
        for flow in self.table.flows():
            if flow.kind == MQTT and flow.state is not None:
                self._finalize(flow, EndReason.CAPTURE_END, self.last_frame, self.now_ns)

    def finish(self) -> None:
        """The capture is over: end every open session at the last frame; the records in order."""
        self.end_sessions()
        self.warnings += self.plaintext.warnings()
        self.plaintext.close()
        self.sessions.sort(key=lambda s: s.flow.stream_index)
        self.findings.sort(key=lambda f: (f.stream_index, f.ts_ns, f.rule_id))


def idle_limit_ns(flow: Flow) -> int:
    """How long connection `flow` may stay idle before a sweep evicts it, as it stands."""
    if flow.closed:
        return IDLE_CLOSED_NS
    if flow.kind != MQTT:
        return IDLE_OTHER_NS
    tl = flow.state.timeline if flow.state is not None else None
    if tl is None or tl.ended:
        return IDLE_CLOSED_NS if tl is not None else IDLE_OTHER_NS
    if not tl.keep_alive_s:
        return IDLE_MQTT_UNKNOWN_NS
    return max(IDLE_MQTT_MIN_NS, 3 * tl.keep_alive_s * NS)


def analyze_capture(reader: CaptureReader, options: Options) -> tuple[CaptureSummary, list[Session], list[Finding]]:
    """Run one opened capture through the pipeline."""
    analysis = CaptureAnalysis(reader.path, options)
    frame = analysis.frame
    for frame_no, ts_ns, linktype, data, _wire_len in reader:
        frame(frame_no, ts_ns, linktype, data)
    analysis.finish()
    return analysis.summary(reader), analysis.sessions, analysis.findings


Progress = Callable[[int, int], None]
"""Told (bytes done, bytes in all) as captures are read: sizes on disk, so a bar can be drawn."""


def analyze(paths: list[str], options: Options | None = None, jobs: int = 1,
            progress: Progress | None = None, dask_address: str | None = None) -> Report:
    """Analyse capture files ('-' = stdin, directories expanded) into one report.

    A capture that cannot be opened is recorded with its error and the others are still analysed.
    With `jobs` > 1 the files are analysed in that many processes, and a single large capture is
    split among them by connection (`analyzer.split`); the report is the same, in the same order,
    as with one. With `dask_address` (a scheduler, `tcp://host:8786`) they are analysed
    on that Dask distributed cluster instead (`analyzer.scale.dask`; inputs may then also be fsspec
    URLs), again into the same report. `progress`, if given, is told how far reading has come.
    """
    options = options or Options()
    captures: list[CaptureSummary] = []
    if dask_address is not None:
        from analyzer.scale import dask as on_dask

        groups = rotation_groups(on_dask.capture_paths(paths, captures, _capture_paths))
    else:
        groups = rotation_groups(_capture_paths(paths, captures))
    meter = _Meter(groups, progress)
    gathered = _Gathered(captures)
    if dask_address is not None:
        for group_results in on_dask.run_groups(dask_address, groups, options, meter.group_done):
            gathered.add(group_results)
    elif jobs > 1 and len(groups) > 1 and ["-"] not in groups and meter.total >= POOL_MIN_BYTES:
        with ProcessPoolExecutor(max_workers=min(jobs, len(groups)), initializer=lifetime.end_with,
                                 initargs=(os.getpid(),)) as pool:
            for group_results in _in_order(pool, groups, options, meter):
                gathered.add(group_results)
    elif (jobs > 1 and len(groups) == 1 and groups[0] != ["-"] and meter.total >= SPLIT_MIN_BYTES
          and options.packet_hook is None):
        gathered.add(analyze_split(groups[0], options, jobs, meter.within(0))
                     or _analyze_group(groups[0], options, meter.within(0)))
        meter.group_done(0)
    else:
        for i, group in enumerate(groups):
            gathered.add(_analyze_group(group, options, meter.within(i)))
            meter.group_done(i)
    sessions, findings = gathered.records()
    kept, suppressed, warnings = apply_suppressions(
        findings, options.ruleset.suppressions, options.today or dt.date.today())
    return Report(tuple(captures), sessions, kept, options.ruleset.info,
                  suppressed, tuple(warnings))


def _columnar(options: Options, reader: CaptureReader) -> bool:
    """Is the capture `reader` reads taken the columnar way (`Options.columnar`)? By its size
    when the options do not say: a file's on disk; standard input's, or a compressed file's once
    decompressed, by reading up to `COLUMNAR_MIN_BYTES` of it ahead (`holds_at_least`)."""
    if options.columnar is not None:
        return options.columnar
    return reader.holds_at_least(COLUMNAR_MIN_BYTES)


class _Gathered:
    """Every capture's summary and records as its group's analysis comes in, in order.

    A capture's sessions and findings are spools whose first records stay in memory; a fleet of
    thousands of captures would keep all of those. So from the second capture on, records go
    into one spool of each kind (a spool's records on disk are copied as they are: `Spool.absorb`),
    and memory stays that of one spool, however many captures. One capture's records are taken as
    they are."""

    def __init__(self, captures: list[CaptureSummary]) -> None:
        self.captures = captures
        self._held: list[tuple[Sequence[Session], Sequence[Finding]]] = []
        self._sessions: Spool[Session] = Spool()
        self._findings: Spool[Finding] = Spool()
        self._gathering = False

    def add(self, results: list[Result]) -> None:
        for summary, sessions, findings in results:
            self.captures.append(summary)
            self._held.append((sessions, findings))
            if self._gathering or len(self._held) > 1:
                self._gathering = True
                for held_sessions, held_findings in self._held:
                    self._sessions.absorb(held_sessions)
                    self._findings.absorb(held_findings)
                self._held = []

    def records(self) -> tuple[Sequence[Session], Sequence[Finding]]:
        if self._gathering:
            return self._sessions, self._findings
        return Chain([s for s, _ in self._held]), Chain([f for _, f in self._held])


def _in_order(pool: ProcessPoolExecutor, groups: list[list[str]], options: Options,
              meter: _Meter) -> Iterator[list[Result]]:
    """Each group's results from `pool`, in group order, each as soon as it and those before it
    are done (and no longer held here once taken); progress by the groups finished."""
    pending = {pool.submit(_analyze_group, group, options): i for i, group in enumerate(groups)}
    done: dict[int, Future] = {}
    taken = 0
    while pending:
        finished, _ = wait(pending, return_when=FIRST_COMPLETED)
        for future in finished:
            i = pending.pop(future)
            meter.group_done(i)
            done[i] = future
        while taken in done:
            yield done.pop(taken).result()
            taken += 1


Result = tuple[CaptureSummary, list[Session], list[Finding]]


class _Meter:
    """Progress in bytes on disk: whole groups as they finish, and within the group being read."""

    def __init__(self, groups: list[list[str]], report: Progress | None) -> None:
        self.report = report
        self.sizes = [sum(_size(p) for p in group) for group in groups]
        self.total = sum(self.sizes)
        self.done = 0

    def group_done(self, index: int) -> None:
        self.done += self.sizes[index]
        if self.report is not None:
            self.report(self.done, self.total)

    def within(self, index: int) -> Progress | None:
        if self.report is None:
            return None
        base, size, report = self.done, self.sizes[index], self.report
        return lambda read, _total: report(base + min(read, size), self.total)


def _size(path: str) -> int:
    try:
        return os.path.getsize(path) if path != "-" else 0
    except OSError:
        return 0


def _analyze_group(paths: list[str], options: Options, progress: Progress | None = None) -> list[Result]:
    """One capture, or the files of one rotation in time order: what a worker process does.

    Files of a rotation continue one analysis (sessions spanning a rotation are judged across it)
    as long as each starts no earlier than the previous one ended; one that overlaps starts afresh.
    """
    with fewer_collections():
        return _analyze_files(paths, options, progress)


@contextmanager
def fewer_collections(first_generation: int = 10_000) -> Iterator[None]:
    """Run the cyclic garbage collector less often while a capture is analysed.

    Every open session holds objects that live for minutes of capture time, and with the default
    threshold (700 allocations) the collector walks them over and over (0.8 s of a 1M-frame
    capture; 0.3 s at 10,000). Finished sessions break their own cycles (`Connection.release`), so
    little garbage waits for a collection: peak memory measured the same. The setting is restored
    afterwards.
    """
    before = gc.get_threshold()
    gc.set_threshold(max(first_generation, before[0]), *before[1:])
    try:
        yield
    finally:
        gc.set_threshold(*before)


def _analyze_files(paths: list[str], options: Options, progress: Progress | None) -> list[Result]:
    return [capture.result() for capture in _analyze_chains(paths, options, progress)]


def analyze_connections(paths: list[str], options: Options, followed: frozenset[int]) -> list[Result]:
    """One capture (or the files of one rotation, in time order) analysed following only the
    connections `followed` (`Shard.only`): every other
    frame only keeps time and is read for CONNECTs, as in a process of a split analysis, so a long
    capture costs about its reading. What it finds of those connections is what one process finds
    unless something on another connection reached them (a full table shedding them, say):
    callers compare with a full analysis's records (`analyzer.report.packets`)."""
    with fewer_collections():
        return [capture.result() for capture in _analyze_chains(paths, options, None, (0, 1, followed))]


def _analyze_chains(paths: list[str], options: Options, progress: Progress | None,
                    shard: tuple[int, int] | tuple[int, int, frozenset[int]] | None = None,
                    ) -> Iterator[_Chain | _Unusable]:
    """The files' analyses, fed and not yet finished: one per capture, or per rotation whose
    files continue each other. `shard`: (index, count) of a process of a split analysis, or
    (index, count, only) for one that follows a few connections: a new `Shard` of them per
    capture, since a shard also records what its capture's CONNECTs were."""
    current: _Chain | None = None
    for path in paths:
        try:
            reader = open_capture(path)
        except InputError as exc:
            yield _Unusable(path, str(exc))
            continue
        with reader:
            # a hook on every session keeps one process frame by frame (`Options.hooked_sessions`),
            # but not a process that tracks only some connections: the others' frames are bulk
            batched = reader.batches_available and (shard is not None or (
                _columnar(options, reader)
                and (options.packet_hook is None or options.hooked_sessions is not None)))
            if batched:
                batches = reader.batches()
                batch = next(batches, None)
                first = batch.frame(0) if batch is not None and len(batch) else None
            else:
                frames = iter(reader)
                first = next(frames, None)
            if current is not None and not _continues(current.analysis.now_ns, first):
                yield current
                current = None
            if current is None:
                current = _Chain(reader.path, options, None if shard is None else Shard(*shard))
            if batched:
                current.feed_batches(reader, batch, batches, progress)
            else:
                current.feed(reader, first, frames, progress)
    if current is not None:
        yield current


def _continues(previous_end_ns: int, first: tuple | None) -> bool:
    """Does a file starting with frame `first` continue a recording that ended at `previous_end_ns`?"""
    return first is not None and 0 <= first[1] - previous_end_ns <= ROTATION_GAP_NS


class _Chain:
    """One analysis fed by one file or by consecutive files of a rotation."""

    def __init__(self, path: str, options: Options, shard: Shard | None = None) -> None:
        self.analysis = CaptureAnalysis(path, options, shard=shard)
        self.paths: list[str] = []
        self.offset = 0
        self.formats: set[str] = set()
        self.linktypes: set[int] = set()
        self.bytes_read = 0
        self.warnings: list[str] = []
        self.error: str | None = None

    def feed(self, reader: CaptureReader, first: tuple | None, frames,
             progress: Progress | None = None) -> None:
        frame = self.analysis.frame
        offset = self.offset
        if self.paths:  # a later file of a rotation: its TLS plaintext is looked up with the offset
            self.analysis.plaintext.add_file(reader.path, offset)
        if reader.tls_secrets:  # seen before the first packet (`first`), as pcapng requires
            self.analysis.plaintext.embedded_secrets(offset)
        last = 0
        if first is not None:
            last = first[0]
            frame(first[0] + offset, first[1], first[2], first[3])
        frame_no = None
        while True:  # in runs of frames, so progress costs nothing per frame
            before = frame_no
            for frame_no, ts_ns, linktype, data, _wire_len in islice(frames, PROGRESS_EVERY_FRAMES):
                frame(frame_no + offset, ts_ns, linktype, data)
            if progress is not None:
                progress(self.bytes_read + reader.bytes_read, 0)
            if frame_no == before:  # nothing more was read
                break
            last = frame_no
        self._done(reader, last)

    def _done(self, reader: CaptureReader, last: int) -> None:
        """A file of the chain was read to its frame `last`."""
        self.offset += last
        self.paths.append(reader.path)
        self.formats.add(reader.format)
        self.linktypes |= reader.linktypes
        self.bytes_read += reader.bytes_read
        prefix = f"{reader.path}: " if self.paths[0] != reader.path else ""
        self.warnings += [prefix + w for w in reader.warnings]
        if reader.error:
            self.error = prefix + reader.error

    def feed_batches(self, reader: CaptureReader, first: "FrameBatch | None", batches,
                     progress: Progress | None = None) -> None:
        """`feed`, for a reader read in `FrameBatch`es (the columnar path, or a process of a
        split analysis)."""
        from analyzer.columnar.feed import ColumnarFeed  # NumPy only for this path

        feed = ColumnarFeed(self.analysis, clock_step_ns=CLOCK_STEP_NS)
        offset = self.offset
        if self.paths:
            self.analysis.plaintext.add_file(reader.path, offset)
        if reader.tls_secrets:
            self.analysis.plaintext.embedded_secrets(offset)
        last = 0
        batch = first
        trim = heap.trimmer()
        fed = 0
        while batch is not None:
            if len(batch):
                feed.feed(batch, offset)
                last = batch.first_frame + len(batch) - 1
                fed += 1
                if fed % heap.TRIM_EVERY_BATCHES == 0:
                    trim()
            if progress is not None:
                progress(self.bytes_read + reader.bytes_read, 0)
            batch = None  # not held while the next one is read
            batch = next(batches, None)
        feed.finish()
        self._done(reader, last)

    def result(self) -> Result:
        analysis = self.analysis
        analysis.finish()
        warnings = list(self.warnings)
        if len(self.paths) > 1:
            warnings.insert(0, f"rotated files analysed as one capture, in time order: "
                               f"{', '.join(self.paths)} (frame numbers count on across them, as in "
                               "`mergecap -a` of these files)")
        summary = CaptureSummary(
            path=self.paths[0], format="/".join(sorted(self.formats)),
            linktypes=tuple(sorted(self.linktypes)), frames=self.offset, bytes=self.bytes_read,
            tcp_streams=analysis.table.streams, mqtt_sessions=len(analysis.sessions),
            skipped=dict(sorted(analysis.skipped.items())),
            warnings=tuple(warnings + analysis.warnings), error=self.error)
        return summary, analysis.sessions, analysis.findings


def _capture_paths(paths: list[str], unusable: list[CaptureSummary]) -> list[str]:
    """Expand each input on its own, so one bad input is reported and the others still run."""
    out: list[str] = []
    for path in paths:
        try:
            found = expand_inputs([path])
        except InputError as exc:
            unusable.append(_unusable(path, str(exc)))
            continue
        if not found:
            unusable.append(_unusable(path, f"{path}: no capture files in this directory"))
        out += found
    return out


@dataclass
class _Unusable:
    """A file of a rotation that could not be opened, in its place among the analyses."""

    path: str
    error: str
    analysis: None = None

    def result(self) -> Result:
        return _unusable(self.path, self.error), [], []


def _unusable(path: str, error: str) -> CaptureSummary:
    """A capture that could not be read at all; `error` without the path the record already holds
    (an input error names it: the report would say it twice)."""
    error = error.removeprefix(f"{path}: ")
    return CaptureSummary(path=path, format="unknown", linktypes=(), frames=0, bytes=0,
                          tcp_streams=0, mqtt_sessions=0, error=error)

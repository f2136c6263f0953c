"""Per-session packet timelines for the HTML report, collected by reading the captures again.

A ``Report`` keeps no per-packet data (its memory stays flat whatever the capture's size), so a
report that draws sessions packet by packet re-reads the captures with the engine's
``packet_hook`` and keeps, for the few sessions it will draw, each packet's times, frames, type and
direction in compact arrays (34 bytes a packet). Nothing is judged here: findings still come from
the report. Given the report's records of those sessions (``known``), the reading follows only
their connections, the other frames keeping time as in a process of a split analysis: a long
capture costs about its reading and decoding instead of a whole analysis (1.7 s instead of 9.4 s on
a 1M-frame capture).

Memory is capped per session: the first ``limit`` packets are kept whole
(``MAX_PACKETS_PER_SESSION``, about 340 KB). Past the cap only what the chart needs to stay
truthful is kept: the client gaps longer than half the session's Keep Alive (start, end, frames;
at most ``limit // 10`` of them) and the last client packet, so the silence that ended the session is still measured from the right
packet. Everything is counted (``total``, ``client_total``).

Session ids are ``<capture file name>#<tcp.stream>``, so only the captures whose file name a
wanted session names are read again, one at a time. Each timeline records the capture path it came
from, so two captures with the same file name in different folders cannot be mixed up (the first
one read keeps the id). Standard input cannot be read twice: its sessions get no timeline (the HTML
report then draws their findings and end only).
"""

from __future__ import annotations

import dataclasses
import os
from array import array
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import NamedTuple

from analyzer.engine import Options, analyze, analyze_connections
from analyzer.errors import InputError
from analyzer.model import ConnAckBody, ConnectBody, MQTTPacket, PacketType, Session
from analyzer.sources import expand_inputs
from analyzer.sources.rotation import rotation_groups
from analyzer.split import endpoint_sum

MAX_PACKETS_PER_SESSION = 10_000
"""Packets kept whole per session (the first ones); see the module's docstring for the rest."""

NS = 1_000_000_000


class PacketPoint(NamedTuple):
    """One MQTT packet of a session, as drawn."""

    ts_first_ns: int
    ts_last_ns: int
    first_frame: int
    last_frame: int
    type: PacketType
    from_client: bool


def _q() -> array:
    return array("q")


@dataclass(slots=True)
class SessionPackets:
    """The packets of one session in capture order, both directions, in parallel arrays.

    Past ``limit`` packets, ``late_gaps`` keeps the long client gaps (parallel arrays of the gap's
    start time and frame, and the time, frame and type of the client packet that ended it) and
    ``last_client`` the newest client packet seen.
    """

    session_id: str
    capture: str = ""
    """The capture path the packets were read from (as given to ``analyze``)."""
    ts_first_ns: array = field(default_factory=_q)
    ts_last_ns: array = field(default_factory=_q)
    first_frame: array = field(default_factory=_q)
    last_frame: array = field(default_factory=_q)
    type: array = field(default_factory=lambda: array("B"))
    from_client: array = field(default_factory=lambda: array("B"))
    total: int = 0
    """Every MQTT packet the session had, including those past the cap."""
    client_total: int = 0
    """Every client packet the session had, including those past the cap."""
    limit: int = MAX_PACKETS_PER_SESSION
    keep_alive_s: int | None = None
    """The Keep Alive seen in CONNECT (or a shorter Server Keep Alive in CONNACK)."""
    late_start_ns: array = field(default_factory=_q)
    late_start_frame: array = field(default_factory=_q)
    late_end_ns: array = field(default_factory=_q)
    late_end_frame: array = field(default_factory=_q)
    late_end_type: array = field(default_factory=lambda: array("B"))
    late_gaps_dropped: int = 0
    """Long gaps past the cap that did not fit in ``late_*`` either."""
    last_client: PacketPoint | None = None

    @property
    def capped(self) -> bool:
        """True when packets past ``limit`` were counted but not kept."""
        return self.total > len(self.type)

    def __len__(self) -> int:
        return len(self.type)

    def add(self, from_client: bool, packet: MQTTPacket) -> None:
        self.total += 1
        if from_client:
            self.client_total += 1
            self._note_keep_alive(packet)
        elif packet.type == PacketType.CONNACK and isinstance(packet.body, ConnAckBody):
            ska = packet.body.server_keep_alive_s
            if ska is not None:
                self.keep_alive_s = ska
        if len(self.type) < self.limit:
            self.ts_first_ns.append(packet.ts_first_ns)
            self.ts_last_ns.append(packet.ts_last_ns)
            self.first_frame.append(packet.first_frame)
            self.last_frame.append(packet.last_frame)
            self.type.append(int(packet.type))
            self.from_client.append(1 if from_client else 0)
            if from_client:
                self.last_client = self._point(packet, True)
            return
        if not from_client:
            return
        previous = self.last_client
        self.last_client = self._point(packet, True)
        if previous is None:
            return
        gap = packet.ts_first_ns - previous.ts_last_ns
        threshold = (self.keep_alive_s or 0) * NS // 2
        if threshold and gap > threshold:
            if len(self.late_end_ns) >= max(1, self.limit // 10):
                self.late_gaps_dropped += 1
                return
            self.late_start_ns.append(previous.ts_last_ns)
            self.late_start_frame.append(previous.last_frame)
            self.late_end_ns.append(packet.ts_first_ns)
            self.late_end_frame.append(packet.first_frame)
            self.late_end_type.append(int(packet.type))

    def _note_keep_alive(self, packet: MQTTPacket) -> None:
        if (
            packet.type == PacketType.CONNECT
            and isinstance(packet.body, ConnectBody)
            and self.keep_alive_s is None
        ):
            self.keep_alive_s = packet.body.keep_alive_s

    @staticmethod
    def _point(packet: MQTTPacket, from_client: bool) -> PacketPoint:
        return PacketPoint(
            packet.ts_first_ns,
            packet.ts_last_ns,
            packet.first_frame,
            packet.last_frame,
            packet.type,
            from_client,
        )

    def packets(self) -> Iterator[PacketPoint]:
        """The kept packets (the first ``limit``), in capture order."""
        for i in range(len(self.type)):
            yield PacketPoint(
                self.ts_first_ns[i],
                self.ts_last_ns[i],
                self.first_frame[i],
                self.last_frame[i],
                PacketType(self.type[i]),
                bool(self.from_client[i]),
            )

    def counts(self) -> tuple[int, int]:
        """(client packets, broker packets) kept."""
        client = sum(self.from_client)
        return client, len(self.from_client) - client

    def nbytes(self) -> int:
        """Bytes held by the arrays (what the cap bounds)."""
        arrays = (
            self.ts_first_ns,
            self.ts_last_ns,
            self.first_frame,
            self.last_frame,
            self.type,
            self.from_client,
            self.late_start_ns,
            self.late_start_frame,
            self.late_end_ns,
            self.late_end_frame,
            self.late_end_type,
        )
        return sum(a.itemsize * len(a) for a in arrays)


class TimelineCollector:
    """The engine's ``packet_hook``: keeps the packets of the wanted sessions of one capture.

    A plain module-level class, so it pickles; but it collects in the process that calls it,
    which is why ``collect_timelines`` runs the engine in this process (``jobs`` = 1).
    """

    def __init__(
        self, session_ids: Iterable[str] | None, limit: int = MAX_PACKETS_PER_SESSION,
        capture: str = ""
    ) -> None:
        """`session_ids` None: every session the hook hears of."""
        self.wanted = None if session_ids is None else frozenset(session_ids)
        self.limit = limit
        self.capture = capture
        self.timelines: dict[str, SessionPackets] = {}

    def __call__(self, session_id: str, from_client: bool, packet: MQTTPacket) -> None:
        if self.wanted is not None and session_id not in self.wanted:
            return
        timeline = self.timelines.get(session_id)
        if timeline is None:
            timeline = self.timelines[session_id] = SessionPackets(
                session_id, capture=self.capture, limit=self.limit
            )
        timeline.add(from_client, packet)


def capture_name(path: str) -> str:
    """The file name part of a session id for a capture path (the engine's rule)."""
    return "stdin" if path == "-" else os.path.basename(path)


def collect_timelines(
    paths: Iterable[str],
    options: Options,
    session_ids: Iterable[str],
    *,
    limit: int = MAX_PACKETS_PER_SESSION,
    known: Iterable[Session] = (),
) -> dict[str, SessionPackets]:
    """Re-read the captures of ``paths`` and return the packets of the sessions ``session_ids``.

    ``known``: the report's records of (some of) those sessions. A capture whose wanted sessions
    are all known is first read following only their connections (``_followed``): the other
    connections' frames only keep time, as in a process of a split analysis, which on a long
    capture costs a fraction of analysing it again. A session is taken from that reading only if
    its record comes out the same as the report's (the connection was analysed as before); the
    others are read again the full way.

    ``paths`` are the inputs the report was made from (files or directories, as given to
    ``analyze``), so that the files of a rotation are read together again, as one capture.
    ``options`` should be the ones the report was made with (ports, assumed keep-alive), so the
    same connections are recognised as MQTT; its own ``packet_hook``, if any, is not called. Only
    captures (or rotations) with a file whose name appears in a wanted session id are read, one at
    a time in this process; standard input and inputs that cannot be expanded any more are
    skipped. Memory per session is capped by ``limit`` (see the module's docstring). When two
    captures share a file name, the first one read keeps the session id
    (``SessionPackets.capture`` says which).
    """
    wanted = set(session_ids)
    if not wanted:
        return {}
    files: dict[str, None] = {}  # in order, once each
    for path in paths:
        try:
            expanded = expand_inputs([path])
        except InputError:
            continue
        files.update((p, None) for p in expanded if p != "-")
    records = {s.session_id: s for s in known if s.session_id in wanted}
    timelines: dict[str, SessionPackets] = {}
    # grouped as `analyze` groups them (a rotation is one capture); a session's capture is the
    # file its run of the rotation began with, which names it
    for group in rotation_groups(list(files)):
        named: dict[str, str] = {}  # file name -> path
        for path in group:
            named.setdefault(capture_name(path), path)
        ids = {sid for sid in wanted if sid.rsplit("#", 1)[0] in named and sid not in timelines}
        if ids and ids <= records.keys():
            followed = _followed(group, options, [records[sid] for sid in ids], limit)
            timelines.update((sid, packets) for sid, packets in followed.items() if packets is not None)
            ids -= followed.keys()
        if not ids:
            continue
        collector = TimelineCollector(ids, limit)
        selective = dataclasses.replace(options, packet_hook=collector, hooked_sessions=frozenset(ids),
                                        columnar=True)  # the other sessions in bulk
        analyze(group, selective, jobs=1)
        timelines.update(collector.timelines)
        for sid, packets in collector.timelines.items():
            packets.capture = named[sid.rsplit("#", 1)[0]]
    return timelines


def _followed(group: list[str], options: Options, records: list[Session],
              limit: int) -> dict[str, SessionPackets | None]:
    """The packets of the sessions ``records`` (of the capture or rotation ``group``), read
    following only their connections (`Shard.only`), by session id; None for a session that sent
    no packet. A session is left out when the reading did not find exactly the report's record of
    it: then its connection was not analysed as in the report (which, say, shed it from a full
    connection table, or was made with other options), and only the full reading can be trusted.
    (Other connections reach a session's findings, by taking it over, but not its packets.)"""
    by_connection = {(s.flow.client, s.flow.server, s.start_ns): s for s in records}
    collector = TimelineCollector(None, limit)  # every session it tracks
    hooked = dataclasses.replace(options, packet_hook=collector, hooked_sessions=None)
    out: dict[str, SessionPackets | None] = {}
    for _summary, sessions, _findings in analyze_connections(
            group, hooked, frozenset(endpoint_sum(s.flow) for s in records)):
        for session in sessions:
            record = by_connection.get((session.flow.client, session.flow.server, session.start_ns))
            if record is None:
                continue  # another connection with the same endpoint sum
            if dataclasses.replace(session, session_id=record.session_id, flow=record.flow) != record:
                continue
            packets = collector.timelines.get(session.session_id)
            if packets is not None:
                packets.session_id, packets.capture = record.session_id, record.capture
            out[record.session_id] = packets
    return out


__all__ = [
    "MAX_PACKETS_PER_SESSION",
    "PacketPoint",
    "SessionPackets",
    "TimelineCollector",
    "collect_timelines",
]

"""One large capture analysed by several processes, its TCP connections dealt out among them.

Every process reads the whole capture and keeps time with every frame, so idle sweeps and clock
steps happen at the same frames in all of them, but it tracks only the connections dealt to it
(`Shard.owns`): a frame of another's connection costs its decoding and nothing more.

Connections share one thing: the client id. A newer CONNECT takes an older session with the same
id over, which explains the broker closing the older one. So each process also reads the CONNECTs
of the connections it does not track (when a segment starts with a whole CONNECT) and applies them
to its own sessions (`Shard.foreign`). Afterwards the parent checks that what each process assumed
is what the others saw (`_consistent`): a CONNECT cut over segments or carried inside TLS or
WebSocket, a limit of the connection table that one table would have reached and the smaller ones
did not, or captures whose summaries differ, and the capture is analysed again by one process.
Otherwise the processes' sessions and findings are merged, connections renumbered in capture order
as `tcp.stream` numbers them, into the report one process would have written: the same records in
the same order (checked by the tests on every shipped and generated capture).
"""

from __future__ import annotations

import hashlib
import heapq
import os
import tempfile
from array import array
from bisect import bisect_left, bisect_right
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field, replace
from itertools import chain
from typing import TYPE_CHECKING, Any

from analyzer.model import CaptureSummary, Finding, FlowKey, Session
from analyzer.mqtt.detect import connect_client_id
from analyzer.reassembly import flows
from analyzer.reassembly.flows import FlowKey4, TableLog
from analyzer.spool import BATCH, Spool, _dump, _load

if TYPE_CHECKING:
    from analyzer.engine import Options, Result

RECENT_CONNECTS = 4096
"""Other processes' CONNECTs remembered by (connection, sequence number), so that a
retransmitted one is not taken for a second CONNECT."""


class _Elsewhere:
    """Stands in the client-id table for a session another process tracks: this process never
    marks it taken over (the process that tracks it does)."""

    ended = True


ELSEWHERE = _Elsewhere()


def _digest(client_id: str) -> int:
    """A client id as 8 bytes: what the processes compare, instead of the ids themselves."""
    return int.from_bytes(hashlib.blake2b(client_id.encode(), digest_size=8).digest(), "little",
                          signed=True)


@dataclass
class Shard:
    """This process's share of the connections (number `index` of `count`), and the CONNECTs it
    saw: its own sessions' (`own_*`) and the other processes' (`seen_*`), as (frame, id digest)."""

    index: int
    count: int
    own_frames: array = field(default_factory=lambda: array("q"))
    own_ids: array = field(default_factory=lambda: array("q"))
    seen_frames: array = field(default_factory=lambda: array("q"))
    seen_ids: array = field(default_factory=lambda: array("q"))
    _recent: OrderedDict = field(default_factory=OrderedDict)

    def owns(self, key: FlowKey4) -> bool:
        """Is this connection (either direction's 4-tuple) dealt to this process?"""
        a = int.from_bytes(key[0], "big") << 16 | key[1]
        b = int.from_bytes(key[2], "big") << 16 | key[3]
        mixed = ((a + b) * 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF  # a sum: either direction
        return (mixed >> 32) % self.count == self.index

    def foreign(self, latest: dict[str, Any], key: FlowKey4, seq: int, payload: bytes,
                frame_no: int, ts_ns: int) -> None:
        """A segment of a connection another process tracks: if it holds a CONNECT, do to this
        process's sessions what that CONNECT does (`CaptureAnalysis._note_connect`)."""
        if payload[:1] != b"\x10":
            return
        client_id = connect_client_id(payload)
        if not client_id:
            return
        mark = (key, seq)
        if mark in self._recent:
            return
        self._recent[mark] = None
        if len(self._recent) > RECENT_CONNECTS:
            self._recent.popitem(last=False)
        self.seen_frames.append(frame_no)
        self.seen_ids.append(_digest(client_id))
        older = latest.get(client_id)
        if older is not None and not older.ended:
            older.takeover_ns = ts_ns
        latest[client_id] = ELSEWHERE

    def connected(self, frame_no: int, client_id: str) -> None:
        """One of this process's sessions sent its CONNECT, processed at frame `frame_no`."""
        self.own_frames.append(frame_no)
        self.own_ids.append(_digest(client_id))


@dataclass
class _Part:
    """One process's analysis of one capture (or rotation): its records wait in files."""

    summary: CaptureSummary
    sessions: str
    findings: str
    log: TableLog
    shard: Shard


def analyze_split(paths: list[str], options: Options, count: int) -> list[Result] | None:
    """The files of one capture (or rotation) analysed by `count` processes; None when the merged
    result might not be one process's, and the caller should analyse them in one."""
    with ProcessPoolExecutor(max_workers=count) as pool:
        futures = [pool.submit(_run_shard, paths, options, index, count) for index in range(count)]
        parts = [future.result() for future in futures]
    try:
        if not all(len(p) == len(parts[0]) for p in parts):
            return None
        by_capture = list(zip(*parts))
        if not all(_consistent(capture) for capture in by_capture):
            return None
        return [_merge(capture) for capture in by_capture]
    finally:
        for part in chain.from_iterable(parts):
            for path in (part.sessions, part.findings):
                os.unlink(path)


def _run_shard(paths: list[str], options: Options, index: int, count: int) -> list[_Part]:
    """What a process does: analyse the files, frame by frame, tracking its share."""
    from analyzer import engine

    out = []
    with engine.fewer_collections():
        for capture in engine._analyze_chains(paths, replace(options, columnar=False), None,
                                              (index, count)):
            summary, sessions, findings = capture.result()
            analysis = capture.analysis
            out.append(_Part(summary, _write(sessions), _write(findings),
                             TableLog() if analysis is None else analysis.table.log,
                             Shard(index, count) if analysis is None else analysis.shard))
    return out


def _write(records: Iterable[Any]) -> str:
    with tempfile.NamedTemporaryFile("wb", prefix="mqtt-keepalive-split-", delete=False) as fh:
        batch: list[Any] = []
        for record in records:
            batch.append(record)
            if len(batch) == BATCH:
                _dump(batch, fh)
                batch = []
        if batch:
            _dump(batch, fh)
        return fh.name


def _read(path: str) -> Iterator[Any]:
    with open(path, "rb") as fh:
        while True:
            try:
                batch = _load(fh)
            except EOFError:
                return
            yield from batch


def _consistent(parts: tuple[_Part, ...]) -> bool:
    """Is merging these parts exactly what one process would have found?"""
    first = parts[0].summary
    if any(replace(p.summary, tcp_streams=0, mqtt_sessions=0)
           != replace(first, tcp_streams=0, mqtt_sessions=0) for p in parts):
        return False
    logs = [p.log for p in parts]
    if any(log.shed for log in logs) or sum(log.peak for log in logs) > logs[0].limit:
        return False  # one table might have shed connections that the smaller ones kept
    remembered = list(heapq.merge(*(log.remembered_at for log in logs)))
    for log in logs:
        for evicted, returned in log.returns:
            if bisect_right(remembered, returned) - bisect_left(remembered, evicted) >= flows.MAX_REMEMBERED:
                return False  # one table might have forgotten this connection's number
    own = [list(zip(p.shard.own_frames, p.shard.own_ids)) for p in parts]
    for i, part in enumerate(parts):
        ids = set(part.shard.own_ids)
        others = sorted(e for j, events in enumerate(own) if j != i for e in events if e[1] in ids)
        seen = sorted(e for e in zip(part.shard.seen_frames, part.shard.seen_ids) if e[1] in ids)
        if others != seen:
            return False  # a CONNECT this process did not see, or one that was not one
    return True


def _merge(parts: tuple[_Part, ...]) -> Result:
    """The parts' records as one process's: connections renumbered in order of their first frame
    (each process numbered its own), then merged in the order `CaptureAnalysis.finish` sorts."""
    numbers = [array("q", bytes(8 * len(p.log.first_frames))) for p in parts]
    firsts = [_numbered(p.log.first_frames, i) for i, p in enumerate(parts)]
    for index, (_frame, i, n) in enumerate(heapq.merge(*firsts)):
        numbers[i][n] = index
    sessions: Spool[Session] = Spool(heapq.merge(
        *(_renumbered(_read(p.sessions), numbers[i], _session) for i, p in enumerate(parts)),
        key=lambda s: s.flow.stream_index))
    findings: Spool[Finding] = Spool(heapq.merge(
        *(_renumbered(_read(p.findings), numbers[i], _finding) for i, p in enumerate(parts)),
        key=lambda f: (f.stream_index, f.ts_ns, f.rule_id)))
    summary = replace(parts[0].summary, tcp_streams=sum(len(n) for n in numbers),
                      mqtt_sessions=len(sessions))
    return summary, sessions, findings  # type: ignore[return-value]


def _numbered(first_frames: array, part: int) -> Iterator[tuple[int, int, int]]:
    """(first frame, part, the part's own number) of each of a part's connections, in order."""
    for n, frame in enumerate(first_frames):
        yield frame, part, n


def _renumbered(records: Iterator[Any], numbers: array,
                renumber: Callable[[Any, array], Any]) -> Iterator[Any]:
    for record in records:
        yield renumber(record, numbers)


def _session_id(session_id: str, index: int) -> str:
    return f"{session_id.rpartition('#')[0]}#{index}"


def _session(s: Session, numbers: array) -> Session:
    index = numbers[s.flow.stream_index]
    return replace(s, session_id=_session_id(s.session_id, index),
                   flow=FlowKey(s.flow.client, s.flow.server, index))


def _finding(f: Finding, numbers: array) -> Finding:
    index = numbers[f.stream_index]
    return replace(f, session_id=_session_id(f.session_id, index), stream_index=index)

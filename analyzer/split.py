"""One large capture analysed by several processes, its TCP connections dealt out among them.

Every process reads the whole capture and keeps time with every frame, so idle sweeps and clock
steps happen at the same frames in all of them, but it tracks only the connections dealt to it
(`Shard.owns`). It reads the capture the columnar way (`analyzer.columnar.feed`), which tells each
batch's frames apart with NumPy (`owned`): a frame of another's connection is not applied at all,
unless it may carry a CONNECT. A frame in a shape the columnar decoder does not take is dealt out
one by one, and a batch of mostly such frames goes the per-frame way, where another's frame costs
its decoding and nothing more.

What connections share:
- The client id. A newer CONNECT takes an older session with the same id over, which explains the
  broker closing the older one. Each process also reads the CONNECTs of the connections it does
  not track (when a segment starts with a whole CONNECT) and applies them to its own sessions
  (`CaptureAnalysis.elsewhere`); the parent checks that what each process assumed is what the others
  processed (`_consistent`).
- The connection table's limits. A connection evicted while idle keeps its number if it comes
  back while it is among the last `MAX_REMEMBERED` remembered; each process remembers only its
  own, so the parent replays one table's memory (`_forgotten`) to number such returns as one
  process would. Shedding at `max_flows` is not replayed: if it could have happened, the split
  is not kept.
- The capture's summary (frames, bytes, warnings, skipped frames), which every process finds the
  same (checked).

When a check fails (a CONNECT cut over segments or carried inside TLS or WebSocket, with the same
client id elsewhere), the caller analyses the capture again in one process. Otherwise the
processes' sessions and findings are renumbered in capture order as `tcp.stream` numbers them and
merged into the report one process would have written: the same records in the same order
(checked by the tests on shipped, generated and random captures).
"""

from __future__ import annotations

import hashlib
import heapq
import multiprocessing
import os
import signal
import tempfile
from array import array
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor, wait
from dataclasses import dataclass, field, fields, replace
from ipaddress import ip_address
from itertools import chain, repeat, zip_longest
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from analyzer import lifetime
from analyzer.model import CaptureSummary, Finding, FlowKey, Session
from analyzer.mqtt.detect import connect_client_id
from analyzer.reassembly import flows
from analyzer.reassembly.flows import FlowKey4, TableLog
from analyzer.spool import BATCH, Spool, _built, _dump, _field_getter, _load, load_fields

if TYPE_CHECKING:
    import numpy as np

    from analyzer.engine import Options, Progress, Result

RECENT_CONNECTS = 4096
"""Other processes' CONNECTs remembered by (connection, sequence number), so that a
retransmitted one is not taken for a second CONNECT."""


PROGRESS_EVERY_S = 0.25
"""How often the parent passes on how far the first process has read."""
OWNERS_KEPT = 1 << 13
"""4-tuples whose process is remembered (`Shard.owns`), at most."""


_MIX = 0x9E3779B97F4A7C15
"""Spreads connections over processes (Fibonacci hashing)."""


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
    only: frozenset[int] | None = None
    """If given, the connections tracked are these, whatever `index` and `count` say: each as
    its two endpoints' `ip << 16 | port` added (`endpoint_sum`). A process that follows a few
    connections only (`analyzer.report.packets`) keeps time and reads CONNECTs as a process of a
    split does."""
    own_frames: array = field(default_factory=lambda: array("q"))
    own_ids: array = field(default_factory=lambda: array("q"))
    seen_frames: array = field(default_factory=lambda: array("q"))
    seen_ids: array = field(default_factory=lambda: array("q"))
    _recent: OrderedDict = field(default_factory=OrderedDict)
    _owners: dict[FlowKey4, bool] = field(default_factory=dict)

    def owns(self, key: FlowKey4) -> bool:
        """Is this connection (either direction's 4-tuple) dealt to this process? Asked for every
        frame of the others' connections, so the answers for recent 4-tuples are kept."""
        mine = self._owners.get(key)
        if mine is None:
            a = int.from_bytes(key[0], "big") << 16 | key[1]
            b = int.from_bytes(key[2], "big") << 16 | key[3]
            if self.only is not None:
                mine = a + b in self.only
            else:
                mixed = ((a + b) * _MIX) & 0xFFFFFFFFFFFFFFFF  # a sum: either direction
                mine = (mixed >> 32) % self.count == self.index
            if len(self._owners) >= OWNERS_KEPT:
                self._owners.clear()
            self._owners[key] = mine
        return mine

    def foreign_connect(self, key: FlowKey4, seq: int, payload: bytes, frame_no: int) -> str | None:
        """The client id of a CONNECT a segment of another process's connection starts with (once
        per connection and sequence number), logged; None if there is none."""
        if payload[:1] != b"\x10":
            return None
        client_id = connect_client_id(payload)
        mark = (key, seq)
        if not client_id or mark in self._recent:
            return None
        self._recent[mark] = None
        if len(self._recent) > RECENT_CONNECTS:
            self._recent.popitem(last=False)
        self.seen_frames.append(frame_no)
        self.seen_ids.append(_digest(client_id))
        return client_id

    def connected(self, frame_no: int, client_id: str) -> None:
        """One of this process's sessions sent its CONNECT, processed at frame `frame_no`."""
        self.own_frames.append(frame_no)
        self.own_ids.append(_digest(client_id))


def owned(shard: Shard, sums: np.ndarray) -> np.ndarray:
    """`Shard.owns` for a whole batch at once; `sums`: each segment's two endpoints, each as
    `ip << 16 | port`, added (int64; or uint64, modulo 2^64, with IPv6 endpoints, which a
    process that follows only some connections asks of `owns`)."""
    import numpy as np

    if shard.only is not None:  # (IPv6 endpoints are not in `sums`: `owns` takes them)
        return np.isin(sums, np.fromiter((x for x in shard.only if x < 1 << 62), dtype=np.int64))
    mixed = sums.astype(np.uint64) * np.uint64(_MIX)  # wraps at 64 bits, as `owns` masks
    return ((mixed >> np.uint64(32)) % np.uint64(shard.count)) == shard.index


def endpoint_sum(flow: FlowKey) -> int:
    """A session's connection as `Shard.only` holds it: its endpoints' `ip << 16 | port`, added."""
    return sum(int.from_bytes(ip_address(end.ip).packed, "big") << 16 | end.port
               for end in (flow.client, flow.server))


@dataclass
class _Part:
    """One process's analysis of one capture (or rotation): its records wait in files."""

    summary: CaptureSummary
    sessions: str
    returned_sessions: list[Session]
    findings: str
    returned_findings: list[Finding]
    log: TableLog
    shard: Shard


def analyze_split(paths: list[str], options: Options, count: int,
                  progress: Progress | None = None) -> list[Result] | None:
    """The files of one capture (or rotation) analysed by `count` processes; None when the merged
    result might not be one process's, and the caller should analyse them in one. `progress` is
    told the bytes the first process has read, a few times a second."""
    read = multiprocessing.Value("q", 0, lock=False)
    with ProcessPoolExecutor(max_workers=count, initializer=_share,
                             initargs=(read, os.getpid())) as pool:
        futures = [pool.submit(_run_shard, paths, options, index, count) for index in range(count)]
        while wait(futures, timeout=PROGRESS_EVERY_S).not_done:
            if progress is not None:
                progress(read.value, 0)
    parts = [future.result() for future in futures if future.exception() is None]
    failed = next((future.exception() for future in futures if future.exception()), None)
    if failed is not None:
        discard(parts)
        raise failed
    return merge_shards(parts)


def merge_shards(parts: list[list[_Part]]) -> list[Result] | None:
    """Every process's parts (per process, one per capture) merged into one result per capture;
    None when that might not be what one process would have found. The parts' files are gone
    afterwards either way."""
    try:
        if not all(len(p) == len(parts[0]) for p in parts):
            return None
        by_capture = list(zip(*parts))
        if not all(_consistent(capture) for capture in by_capture):
            return None
        return [_merge(capture) for capture in by_capture]
    finally:
        discard(parts)


def discard(parts: list[list[_Part]]) -> None:
    """Remove the parts' record files."""
    _unlink([path for part in chain.from_iterable(parts) for path in (part.sessions, part.findings)])


def _unlink(paths: list[str]) -> None:
    for path in paths:
        Path(path).unlink(missing_ok=True)


_read_so_far: Any = None
"""In a process of the pool: where the first process tells how many bytes it has read."""
_made: list[str] | None = None
"""In a process of the pool: the part files it made, which the parent merges and removes, or this
process if the parent ends first (`_orphaned`)."""


def _share(read: Any, parent: int) -> None:
    """A process of the pool starts: it ends with `parent`, removing its part files."""
    global _read_so_far, _made
    _read_so_far, _made = read, []
    signal.signal(signal.SIGTERM, _orphaned)
    lifetime.end_with(parent, signal.SIGTERM)


def _orphaned(signum: int, _frame: Any) -> None:
    """The parent ended (killed, say: it merges and removes the part files no more), or this
    process was told to end."""
    _unlink(_made or [])
    os._exit(128 + signum)


def _run_shard(paths: list[str], options: Options, index: int, count: int) -> list[_Part]:
    """What a process does: analyse the files, tracking its share (in batches, the columnar way,
    where the format allows)."""
    from analyzer import engine

    progress = None
    if index == 0 and _read_so_far is not None:
        def progress(done: int, _total: int) -> None:
            _read_so_far.value = done

    out = []
    written: list[str] = []
    try:
        with engine.fewer_collections():
            for capture in engine._analyze_chains(paths, options, progress, (index, count)):
                summary, sessions, findings = capture.result()
                analysis = capture.analysis
                log = TableLog() if analysis is None else analysis.table.log
                returned = log.returns.keys()
                session_file, apart_sessions = _write(sessions, _session_stream, returned)
                written.append(session_file)
                finding_file, apart_findings = _write(findings, _finding_stream, returned)
                written.append(finding_file)
                out.append(_Part(summary, session_file, apart_sessions, finding_file, apart_findings,
                                 log, Shard(index, count) if analysis is None else analysis.shard))
    except BaseException:
        _unlink(written)
        raise
    return out


def _write(records: Iterable[Any], stream: Callable[[Any], int], returned: Any) -> tuple[str, list]:
    """Records to a file, in their order; those of connections that came back to a remembered
    number (`returned`) apart, in a list, since their number may go back in the merge."""
    apart: list[Any] = []

    def kept() -> Iterator[Any]:
        for record in records:
            if stream(record) in returned:
                apart.append(record)
            else:
                yield record

    return _spooled(kept()), apart


def _record_file() -> IO[bytes]:
    """A new file for a part's records, kept when closed (`_unlink` removes it)."""
    fh = tempfile.NamedTemporaryFile("wb", prefix="mqtt-keepalive-split-", delete=False)
    if _made is not None:
        _made.append(fh.name)
    return fh


def _spooled(records: Iterable[Any]) -> str:
    """Records to a new file, in their order, in batches (`_read` gives them back)."""
    with _record_file() as fh:
        try:
            batch: list[Any] = []
            for record in records:
                batch.append(record)
                if len(batch) == BATCH:
                    _dump(batch, fh)
                    batch = []
            if batch:
                _dump(batch, fh)
        except BaseException:
            _unlink([fh.name])
            raise
        return fh.name


def portable(parts: list[_Part], rename: Callable[[Any], Any] | None = None) -> list[_Part]:
    """A process's parts with their record files' bytes in them instead of the files (deleted),
    to be sent to another machine (`analyzer.scale.dask`): the client writes the bytes out again
    (`landed`) without reading a record. `rename`, if given, is applied to every record on the
    way (one pass over the file)."""
    out = []
    try:
        for part in parts:
            sessions, findings = (_bytes(path, rename) for path in (part.sessions, part.findings))
            shard = replace(part.shard, _recent=OrderedDict(), _owners={})  # caches: not needed
            out.append(replace(part, sessions=sessions, findings=findings, shard=shard))  # type: ignore[arg-type]
    finally:
        discard([parts])
    return out


def _bytes(path: str, rename: Callable[[Any], Any] | None) -> bytes:
    if rename is None:
        return Path(path).read_bytes()
    renamed = _spooled(map(rename, _read(path)))
    try:
        return Path(renamed).read_bytes()
    finally:
        _unlink([renamed])


def landed(parts: list[_Part]) -> list[_Part]:
    """`portable` parts as `merge_shards` takes them, their records in local files again."""
    written: list[str] = []
    try:
        for part in parts:
            for data in (part.sessions, part.findings):
                with _record_file() as fh:
                    written.append(fh.name)
                    fh.write(data)  # type: ignore[arg-type]
    except BaseException:
        _unlink(written)
        raise
    return [replace(p, sessions=written[2 * i], findings=written[2 * i + 1])
            for i, p in enumerate(parts)]


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
    for i, part in enumerate(parts):  # the CONNECTs of each process's client ids, in frame order
        ids = set(part.shard.own_ids)
        others = heapq.merge(*(zip(p.shard.own_frames, p.shard.own_ids)
                               for j, p in enumerate(parts) if j != i))
        processed = (e for e in others if e[1] in ids)
        seen = (e for e in zip(part.shard.seen_frames, part.shard.seen_ids) if e[1] in ids)
        if any(a != b for a, b in zip_longest(processed, seen)):
            return False  # a CONNECT this process did not see, or one that was not one
    return True


def _merge(parts: tuple[_Part, ...]) -> Result:
    """The parts' records as one process's: connections renumbered in order of their first frame
    (each process numbered its own), in the order `CaptureAnalysis.finish` sorts them.

    Each part's records are in the order of its own numbers, and renumbering keeps that order,
    except for connections that came back to a remembered number: their records, kept apart,
    are sorted on their own and merged last, so that on a tie (the same stream) they follow the
    records of the connection they came back to, as in one process."""
    # the part files are opened, then removed: from here on they live as long as this process
    # holds them, and go with it however it ends (killed while merging, say)
    files = {path: open(path, "rb") for p in parts for path in (p.sessions, p.findings)}
    _unlink(files)
    try:
        streams, numbers = _numbers([p.log for p in parts])
        sessions = _merged(parts, numbers, "sessions", SESSIONS, files)
        findings = _merged(parts, numbers, "findings", FINDINGS, files)
    finally:
        for fh in files.values():
            fh.close()
    summary = replace(parts[0].summary, tcp_streams=streams, mqtt_sessions=len(sessions))
    return summary, sessions, findings  # type: ignore[return-value]


def _merged(parts: tuple[_Part, ...], numbers: list[array], attribute: str, kind: _Kind,
            files: dict[str, IO[bytes]]) -> Spool[Any]:
    """The parts' records (`attribute`: "sessions" or "findings"; their `files` by path),
    renumbered and merged in their order, as field rows all the way into the merged spool
    (`Spool.of_fields`): a record is built only if the spool keeps it in memory, or when it is
    read back."""
    streams = [_renumbered(files[getattr(p, attribute)], numbers[i], kind)
               for i, p in enumerate(parts)]
    apart = sorted((kind.renumbered(kind.fields(r), numbers[i]) for i, p in enumerate(parts)
                    for r in getattr(p, f"returned_{attribute}")), key=kind.order)
    return Spool.of_fields(kind.cls, heapq.merge(*streams, apart, key=kind.order))


def _renumbered(fh: IO[bytes], numbers: array, kind: _Kind) -> Iterator[tuple]:
    """A part's records as `_read` gives them (from its file `fh`), renumbered, as field rows: a
    batch of sessions or findings is renumbered in its fields as read, and no record is built on
    the way (building them, and copying each by `dataclasses.replace`, took a quarter of a second
    of the parent's serial time on the 1M-frame benchmark capture)."""
    renumbered = kind.renumbered
    while True:
        try:
            cls, rows = load_fields(fh)
        except EOFError:
            return
        if cls is not kind.cls:  # records pickled as they are (`_dump`'s other way)
            rows = [kind.fields(r) for r in _built(cls, rows)]
        yield from (renumbered(row, numbers) for row in rows)


def _numbers(logs: list[TableLog]) -> tuple[int, list[array]]:
    """How many streams one table would have numbered, and each part's numbers in its numbering.

    A number is given at a connection's first frame, in capture order. A connection that comes
    back to a remembered number got a number of its own in its part (`TableLog.returns`); it
    takes the number it came back to, unless one table would have forgotten that (`_forgotten`):
    then it is a new stream there too."""
    forgotten = _forgotten(logs)
    out = [array("q", bytes(8 * len(log.first_frames))) for log in logs]
    # (first frame, part, its own number) of every stream, in capture order: each part's are in
    # order, made without a Python step per stream, and merged (sorting them all would hold them
    # all: tens of MiB on a 10M-frame capture)
    births = heapq.merge(*(zip(log.first_frames, repeat(i), range(len(log.first_frames)))
                           for i, log in enumerate(logs)))
    streams = 0
    for _frame, i, own in births:
        back = logs[i].returns.get(own)
        if back is not None and (i, back[0]) not in forgotten:
            out[i][own] = out[i][back[1]]
        else:
            out[i][own] = streams
            streams += 1
    return streams, out


def _forgotten(logs: list[TableLog]) -> set[tuple[int, int]]:
    """(part, memory id) of the connections that came back to a number one table, holding every
    part's evicted connections, would have forgotten (`FlowTable.evict`, `MAX_REMEMBERED`)."""
    events = heapq.merge(*chain.from_iterable(_table_events(i, log) for i, log in enumerate(logs)))
    table: OrderedDict[tuple[int, int], None] = OrderedDict()
    forgotten = set()
    for _frame, is_return, _created, part, memory in events:
        if not is_return:
            table[(part, memory)] = None
            if len(table) > flows.MAX_REMEMBERED:
                table.popitem(last=False)
        elif (part, memory) in table:
            del table[(part, memory)]
        else:
            forgotten.add((part, memory))
    return forgotten


def _table_events(part: int, log: TableLog) -> tuple[Iterator[tuple[int, bool, int, int, int]], ...]:
    """The part's evictions that remembered a number, and its returns, as (frame, is a return,
    frame created, part, memory id), each in the order one table sees them (by frame; a frame's
    sweep before its own segment; a sweep in order of first frames)."""
    kept = zip(log.remembered_frames, repeat(False), log.remembered_created, repeat(part),
               range(len(log.remembered_frames)))
    back = sorted((log.first_frames[own], True, 0, part, memory)
                  for own, (memory, _old) in log.returns.items())
    return kept, iter(back)


def _session_stream(s: Session) -> int:
    return s.flow.stream_index


def _finding_stream(f: Finding) -> int:
    return f.stream_index


def _session_id(session_id: str, index: int) -> str:
    return f"{session_id.rpartition('#')[0]}#{index}"


def _positions(cls: type, *names: str) -> tuple[int, ...]:
    order = [f.name for f in fields(cls)]
    return tuple(order.index(name) for name in names)


_S_ID, _S_FLOW = _positions(Session, "session_id", "flow")
_F_ID, _F_STREAM, _F_TS, _F_RULE = _positions(Finding, "session_id", "stream_index", "ts_ns",
                                              "rule_id")


def _session_fields(row: tuple, numbers: array) -> tuple:
    """The fields (`__init__` order) `row` of a session, numbered as one process numbers it,
    from `numbers` (its part's numbering)."""
    values = list(row)
    flow = values[_S_FLOW]
    index = numbers[flow.stream_index]
    values[_S_ID] = _session_id(values[_S_ID], index)
    values[_S_FLOW] = FlowKey(flow.client, flow.server, index)
    return tuple(values)


def _finding_fields(row: tuple, numbers: array) -> tuple:
    """The fields `row` of a finding, numbered as one process numbers it."""
    values = list(row)
    index = numbers[values[_F_STREAM]]
    values[_F_ID] = _session_id(values[_F_ID], index)
    values[_F_STREAM] = index
    return tuple(values)


@dataclass(frozen=True)
class _Kind:
    """The merge's view of sessions or of findings, as field rows (`__init__` order)."""

    cls: type
    renumbered: Callable[[tuple, array], tuple]
    """The row numbered as one process numbers it, from its part's numbering."""
    order: Callable[[tuple], Any]
    """What the merge orders rows by (as `CaptureAnalysis.finish` sorts the records)."""

    def fields(self, record: Any) -> tuple:
        return _field_getter(self.cls)(record)  # type: ignore[misc]


SESSIONS = _Kind(Session, _session_fields, lambda row: row[_S_FLOW].stream_index)
FINDINGS = _Kind(Finding, _finding_fields, lambda row: (row[_F_STREAM], row[_F_TS], row[_F_RULE]))

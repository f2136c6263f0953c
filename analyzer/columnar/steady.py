"""Which frames of a run are steady, and what applying them does (see `analyzer.columnar.feed`).

`plan` makes sure the `Store` knows every connection the pass touches (`Store.load`, from a
`_snapshot` of its objects), judges all the pass's frames at once from the store's arrays
(`_steady_frames`), and returns each connection's steady prefix. `commit` then moves the residents'
state in the store by those frames (and returns, for connections that carry nothing we analyse,
a `Work` for `apply`); `Store.flush` finally writes a resident into its objects: exactly the
fields the per-frame path would have changed, to the values it would have given them. Everything
that is not provably steady is left to that path.

The judgement is speculative in one careful sense: frame i is judged assuming the frames of its
connection before it are steady too. Only a prefix of each connection is applied, so every frame
that is applied was judged on true assumptions.
"""

from __future__ import annotations

from array import array
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from analyzer.decode.tcp import ACK, FIN, RST, SYN
from analyzer.reassembly.flows import MQTT, OTHER, UNDECIDED
from analyzer.session.connection import _Side
from analyzer.session.timeline import SessionTimeline, SteadyPackets

if TYPE_CHECKING:
    from analyzer.columnar.feed import _FlowIds
    from analyzer.columnar.segments import Segments
    from analyzer.engine import CaptureAnalysis
    from analyzer.sources.batch import FrameBatch

MOD = 1 << 32
HALF = 1 << 31
PUBLISH, PUBREL, PINGREQ, PINGRESP = 3, 6, 12, 13
MAX_PACKETS_A_SEGMENT = 4096
"""Packets framed in one segment at most (a 64 KiB segment of small PUBLISHes holds hundreds); a
segment with more goes the per-frame way."""
_PLAIN_TYPES = np.zeros(16, dtype=bool)
_PLAIN_TYPES[3:14] = True
"""Packet types a steady frame may carry: PUBLISH to PINGRESP. CONNECT, CONNACK and DISCONNECT
(decoded bodies), AUTH and the reserved type go the per-frame way."""

ABSENT, SINGLE, IGNORED, STEADY, OPAQUE = 0, 1, 2, 3, 4
"""What a connection is to the run: not in the table yet, only per-frame, carrying nothing we
analyse (any frame but a SYN is steady), an MQTT session in a steady state, and one only the
per-frame way can follow whatever its frames (over TLS or WebSocket, or followed by a packet hook):
all its frames of a pass go the per-frame way in that pass, since none would be steady in a later
one."""


@dataclass
class Plan:
    """A pass over a run: frames for `CaptureAnalysis.frame` (`single`, capture order, with their
    connections' rows in the store), frames for the next pass (`deferred`), and the steady frames
    (`fast`, over `rest`) that `commit` applies in bulk."""

    single: np.ndarray
    single_slot: np.ndarray
    deferred: np.ndarray
    rest: np.ndarray
    slot: np.ndarray
    """The store's row for each frame of `rest` (-1: not a TCP segment)."""
    fast: np.ndarray
    events: Events | None
    unsettled: np.ndarray
    """Frames with data on connections that have not sent their CONNECT yet: one may be a CONNECT,
    which reaches across connections (it takes an older session with its client id over)."""
    undecided: np.ndarray
    """For each of those: its connection is not known to be MQTT yet (its first data may show it
    is not)."""
    opaque: int = 0
    """Frames of `rest` on connections only the per-frame way follows (`OPAQUE`)."""
    opens: set[int] = field(default_factory=set)
    """Frames of `single` that open a connection it ignores (`_opens_other`): they go the
    per-frame way as `CaptureAnalysis.opened_other`, and the connection's steady frames after
    them (its `Work`) are written then."""


@dataclass
class Work:
    """What the steady frames of a pass do to a connection that carries nothing we analyse."""

    flow: Any
    last_ns: int
    closes: bool = False
    ignored: bool = False
    """Its first data came (`_shown_other`): it is not MQTT."""


def plan(store: Store, batch: FrameBatch, segs: Segments, flows: _FlowIds, rest: np.ndarray,
         offset: int, last: bool = False) -> Plan:
    """Judge the frames `rest` (positions in `batch`, ascending) of one pass; in the `last`,
    nothing is deferred. Changes nothing but which connections the store holds."""
    gid = flows.gid[rest]
    tcp = gid >= 0
    slot = np.full(len(rest), -1, dtype=np.int64)
    slot[tcp] = store.rows[gid[tcp]]
    g0 = np.maximum(slot, 0)
    touched = np.zeros(len(store), dtype=bool)
    touched[slot[tcp]] = True
    store.load(np.flatnonzero(touched))
    kind = np.where(tcp, store.kind[g0], SINGLE)
    flags = segs.flags[rest]
    syn_alone = (flags & (SYN | ACK)) == SYN
    simple = segs.simple[rest]  # other shapes (decoded the per-frame way) are never steady
    undecided = tcp & store.undecided[g0]
    shown = _shown_other(store, batch, segs, rest, slot, undecided) if undecided.any() else undecided
    no_data = (segs.pay_len[rest] == 0) & (segs.missing[rest] == 0)
    opens = _opens_other(store, batch, segs, rest, slot, kind == ABSENT)
    if len(opens):  # the rest of such a connection's frames: as for one it ignores
        kind[np.isin(slot, slot[opens])] = IGNORED
    ok = (kind == IGNORED) & ~syn_alone & simple & (~undecided | no_data | shown)
    ok[opens] = True  # (for the steady prefix; it goes the per-frame way, `Plan.opens`)
    steady_rows = np.flatnonzero(kind == STEADY)
    events = None
    if len(steady_rows):
        ok_steady, events = _steady_frames(store, batch, segs, flows, rest, steady_rows, slot, offset)
        ok[steady_rows] = ok_steady & simple[steady_rows]
    # the steady prefix of each connection: frames before its first unsteady one
    bad = np.flatnonzero(~ok & tcp)
    first_bad = np.full(len(store), len(rest), dtype=np.int64)
    np.minimum.at(first_bad, slot[bad], bad)
    row = np.arange(len(rest))
    limit = np.where(tcp, first_bad[g0], row)
    fast = row < limit
    fast[opens] = False
    if last:
        now, deferred = row >= limit, rest[:0]
    else:
        after = row > limit
        now = (row == limit) | ((kind == OPAQUE) & after)
        opening = after & (kind == SINGLE)
        new = np.flatnonzero(after & (kind == ABSENT))
        if len(new):  # (not after the SYN of a new connection on no MQTT port: it is undecided,
            # and its frames after the SYN are steady until its first data)
            opening[new] = _on_mqtt_port(store, segs, rest[new]) | ~syn_alone[limit[new]]
        _opening(now, opening, slot)
        deferred = rest[after & ~now]
    now[opens] = True
    single_rows = np.flatnonzero((now & tcp) | (gid == -1))
    connect = np.where(tcp, store.connect[g0], CONNECT_NONE)
    connect[flows.foreign[rest]] = CONNECT_PENDING  # another process's CONNECT reaches ours too
    unsettled = (connect != CONNECT_NONE) & ~(no_data & simple)
    return Plan(rest[single_rows], slot[single_rows], deferred, rest, slot, fast, events,
                rest[unsettled], (connect == CONNECT_UNDECIDED)[unsettled],
                int(np.count_nonzero(kind == OPAQUE)), set(rest[opens].tolist()))


OPENING_FRAMES = 4
"""Frames a connection the per-frame way must take (not in the table yet, or between its SYN and
its CONNECT) sends after its first one in a pass that go the per-frame way in that pass too: the
rest of a handshake and a CONNECT and CONNACK (or of a close: FIN, FIN, ACK), after which it may be
steady. Each waiting for a pass of its own made a new session cost five passes; all of them going
the per-frame way would take a busy client's first run frame by frame."""


def _opening(now: np.ndarray, after: np.ndarray, slot: np.ndarray) -> None:
    """Mark in `now` the first `OPENING_FRAMES` rows of each connection (`slot`) among `after`."""
    rows = np.flatnonzero(after)
    if not len(rows):
        return
    rows = rows[np.argsort(slot[rows], kind="stable")]
    starts = _starts(slot[rows])
    at = np.arange(len(rows))
    rank = at - np.maximum.accumulate(np.where(starts, at, 0))
    now[rows[rank < OPENING_FRAMES]] = True


def _opens_other(store: Store, batch: FrameBatch, segs: Segments, rest: np.ndarray,
                 slot: np.ndarray, absent: np.ndarray) -> np.ndarray:
    """The rows of `rest` that open a connection not in the table yet which the per-frame way
    would ignore from that frame on: its first frame in the pass, without a SYN, on no MQTT port,
    with data that shows at once it is not MQTT (`CaptureAnalysis.ignored_at_first_data`).
    Such a frame only numbers the connection (`CaptureAnalysis.opened_other`), and the
    connection's frames after it are steady as any ignored connection's."""
    rows = np.flatnonzero(absent)
    if not len(rows):
        return rows
    rows = rows[np.unique(slot[rows], return_index=True)[1]]  # each connection's first
    at = rest[rows]
    rows = rows[((segs.flags[at] & SYN) == 0) & (segs.pay_len[at] > 0)
                & ~_on_mqtt_port(store, segs, at)]
    return np.sort(rows[_show_other(store, batch, segs, rest[rows])])


def _on_mqtt_port(store: Store, segs: Segments, at: np.ndarray) -> np.ndarray:
    """For each frame `at`: is either of its ports an MQTT port?"""
    return np.isin(segs.sport[at], store.ports) | np.isin(segs.dport[at], store.ports)


def _show_other(store: Store, batch: FrameBatch, segs: Segments, at: np.ndarray) -> np.ndarray:
    """For each frame `at`, taken as its connection's first data: does it show at once that the
    connection is not MQTT (`CaptureAnalysis.ignored_at_first_data`, as the per-frame way
    decides)? Never for a frame of a shape the columnar decoder does not take."""
    ignored_at_first_data = store.analysis.ignored_at_first_data
    buf = batch.buf
    return np.array([simple and ignored_at_first_data(bytes(buf[start:start + size]))
                     for simple, start, size in zip(segs.simple[at].tolist(),
                                                    segs.pay_start[at].tolist(),
                                                    segs.pay_len[at].tolist())], dtype=bool)


def _shown_other(store: Store, batch: FrameBatch, segs: Segments, rest: np.ndarray, slot: np.ndarray,
                 undecided: np.ndarray) -> np.ndarray:
    """For each frame of `rest`: is it of a connection not decided yet (no data so far, on no MQTT
    port) whose first data in the pass shows at once that it is not MQTT? Then that frame and the
    ones after it are steady: the connection is ignored from there on (`Work.ignored`)."""
    data = np.flatnonzero(undecided & ((segs.pay_len[rest] > 0) | ~segs.simple[rest]))
    shown = np.zeros(len(store), dtype=bool)
    if len(data):
        slots, first = np.unique(slot[data], return_index=True)
        shown[slots] = _show_other(store, batch, segs, rest[data[first]])
    return shown[np.maximum(slot, 0)] & undecided


# -- snapshots ------------------------------------------------------------------------------------

CONNECT_NONE, CONNECT_PENDING, CONNECT_UNDECIDED = 0, 1, 2
"""Whether a connection's data may still bring its first CONNECT (which can take an older session
over by client id): no; yes (an MQTT connection, or one whose first data is held, that has not
sent it); yes unless its first data shows it is not MQTT at all (not in the table yet, or no data
yet on no MQTT port)."""


@dataclass
class Snapshot:
    """A connection as its objects stand: what `Store.load` takes in (kind, whether a CONNECT may
    come, and for a steady MQTT connection its objects and the state the store keeps)."""

    kind: int
    connect: int = CONNECT_NONE
    flow: Any = None
    undecided: bool = False
    tl: Any = None
    client_lower: bool = True
    next_seq: tuple[int, int] = (0, 0)
    framers: tuple = ()
    halves: tuple = ()
    carry: tuple = ((0, 0, 0, 0, 0, 0, 0), (0, 0, 0, 0, 0, 0, 0))
    """Per direction: a packet in progress at the start (left, type, flags, rl, hlen, first
    frame, first ts); left 0: none."""
    silence_ns: int = 0
    silence_floor: int = 0
    ping_floor: int = 0
    pings: int = 0
    ping_ns: int = 0


_NEW = Snapshot(ABSENT, CONNECT_UNDECIDED)
_PENDING = Snapshot(SINGLE, CONNECT_PENDING)
_SINGLE = {settled: Snapshot(SINGLE, settled) for settled in (CONNECT_NONE, CONNECT_PENDING)}
_OPAQUE = {settled: Snapshot(OPAQUE, settled) for settled in (CONNECT_NONE, CONNECT_PENDING)}
"""The snapshots that hold no objects, shared (a snapshot is never changed)."""


def _snapshot(analysis: CaptureAnalysis, key: tuple[bytes, int, bytes, int]) -> Snapshot:
    entry = analysis.table.get(key)
    if entry is None:
        return _NEW
    flow, lower_is_a = entry
    if flow.closed:  # a SYN may open a new connection on its 4-tuple, which may CONNECT
        return _PENDING
    if flow.kind == OTHER:
        return Snapshot(IGNORED, CONNECT_NONE, flow)
    if flow.kind == UNDECIDED:
        if flow.state is None:
            return Snapshot(IGNORED, CONNECT_UNDECIDED, flow, undecided=True)
        return _PENDING
    conn = flow.state
    if flow.kind != MQTT or conn is None:
        return _SINGLE[CONNECT_NONE]
    tl = conn.timeline
    # a CONNECT seen, or none can be: a keyless TLS connection stays keyless (records, no packets)
    settled = (CONNECT_NONE if tl is not None and (tl.connect is not None or conn.keyless)
               else CONNECT_PENDING)
    if conn.tls is not None or conn.websocket or conn.packet_hook:
        return _OPAQUE[settled]
    limits = tl.steady_limits() if tl is not None and tl.__class__ is SessionTimeline else None
    if limits is None or conn.closed:
        return _SINGLE[settled]
    sides = conn.sides if lower_is_a else (conn.sides[1], conn.sides[0])
    halves = conn.halves if lower_is_a else (conn.halves[1], conn.halves[0])
    carry = []
    for side, half in zip(sides, halves):
        state = side.framer.bulk_state()
        if (side.__class__ is not _Side or half.sink is not side or not half.settled
                or state is None or (state[0] and not _PLAIN_TYPES[state[1]])):
            return _SINGLE[settled]
        carry.append(state)
    silence_ns, silence_floor, ping_floor, pings, ping_ns = limits
    return Snapshot(
        STEADY, CONNECT_NONE, flow, tl=tl, client_lower=conn.client_is_a == lower_is_a,
        next_seq=(halves[0].next_seq, halves[1].next_seq),
        framers=(sides[0].framer, sides[1].framer), halves=halves, carry=tuple(carry),
        silence_ns=silence_ns, silence_floor=silence_floor, ping_floor=ping_floor, pings=pings,
        ping_ns=ping_ns)


MAX_HELD = 200_000
"""Silences all residents together may hold (a few MiB) before they are written at the end of a
batch (`Store.end`)."""


class Store:
    """What a batch's passes judge from, by row (one per connection), and the residents' state.

    Every connection a batch holds gets a row (`begin`), kept while it is a resident. For every
    connection a pass touches, `load` records its kind; an MQTT connection in a steady state
    becomes a *resident*: its stream positions, framer carry, open silence, unanswered ping and
    limits move here, and `commit` moves them on with each pass's steady frames, together with what
    those frames add to the session (counts, gaps, pings). Its objects are written once, by
    `flush`: before one of its frames goes the per-frame way, before an idle sweep that could evict
    it, at a clock step, and when the capture's last batch is done. So a steady connection costs
    Python when it becomes steady and when it stops being so, not once per run or batch.
    """

    _FILL = {"client_lower": True, "silence": -1, "inbound_first": -1, "last_ping": -1}
    """Arrays whose rows start at something else than 0."""

    def __init__(self, analysis: CaptureAnalysis) -> None:
        self.analysis = analysis
        self.ports = np.array(sorted(analysis.ports), dtype=np.int64)
        """The analysis's MQTT ports."""
        self.row_of: dict[tuple[bytes, int, bytes, int], int] = {}
        self.keys: list[tuple[bytes, int, bytes, int] | None] = []
        self.free: list[int] = []
        self.rows = np.zeros(0, dtype=np.int64)
        """The batch's connection ids' rows."""
        self.snaps: list[Snapshot | None] = []
        self._arrays: dict[str, tuple[tuple[int, ...], type]] = {
            "kind": ((), np.int8), "connect": ((), np.int8), "undecided": ((), bool),
            "resident": ((), bool),
            # a resident's state, as its objects would hold it (per direction: lower endpoint first)
            "next_seq": ((2,), np.int64),
            "carry": ((2, 7), np.int64),
            # per direction: a packet in progress (left, type, flags, rl, hlen, first frame, first
            # ts); left 0: none
            "client_lower": ((), bool), "silence_ns": ((), np.int64),
            "silence_floor": ((), np.int64), "ping_floor": ((), np.int64), "pings": ((), np.int64),
            "ping_ns": ((), np.int64),
            # what a resident's steady frames did since it was loaded (`SteadyPackets`, summed)
            "dirty": ((), bool), "last_ns": ((), np.int64),
            "counts": ((6,), np.int64),
            # packets framed by the lower and the upper endpoint, client and server packets,
            # PINGREQs, PINGRESPs
            "moved": ((2,), bool),  # per direction: data came (its stream and framer moved)
            "silence": ((2,), np.int64),  # the last client packet's (last frame, end); -1: none
            "inbound": ((), np.int64), "inbound_first": ((), np.int64),
            "last_ping": ((3,), np.int64),  # (is PINGREQ, first frame, end) of the last; -1: none
            "retransmitted": ((2,), np.int64),  # per direction: bytes of duplicates, as the stream counts
        }
        self.gaps: dict[int, array] = {}
        self.pingreq_ts: dict[int, array] = {}
        self.pingreq_gaps: dict[int, array] = {}
        self._grow(1)

    def __len__(self) -> int:
        return len(self.keys)

    def begin(self, keys: list[tuple[bytes, int, bytes, int]]) -> None:
        """A batch whose connection ids stand for `keys`: give each a row (`rows`)."""
        need = len(keys) - len(self.free)
        if need > 0:
            self._grow(need)
        rows = []
        row_of, free = self.row_of, self.free
        for key in keys:
            row = row_of.get(key)
            if row is None:
                row = row_of[key] = free.pop()
                self.keys[row] = key
            rows.append(row)
        self.rows = np.array(rows, dtype=np.int64)

    def end(self) -> None:
        """The batch is done: if the residents hold many values, they are written (so memory stays
        bounded however long they stay steady), and rows of connections that are not residents
        are free again."""
        if sum(len(values) for values in self.gaps.values()) > MAX_HELD:
            for g in list(self.gaps):
                self.flush(g)
        for row in self.rows[~self.resident[self.rows]].tolist():
            key = self.keys[row]
            if key is not None:
                del self.row_of[key]
                self.keys[row], self.snaps[row] = None, None
                self.free.append(row)

    def _grow(self, need: int) -> None:
        old = len(self.keys)
        size = max(1024, 2 * old, old + need)
        for name, (shape, dtype) in self._arrays.items():
            grown = np.full((size, *shape), self._FILL.get(name, 0), dtype=dtype)
            if old:
                grown[:old] = getattr(self, name)
            setattr(self, name, grown)
        self.keys += [None] * (size - old)
        self.snaps += [None] * (size - old)
        self.free += range(size - 1, old - 1, -1)

    def load(self, present: np.ndarray) -> None:
        """Snapshot the connections `present` (ids) that are not residents."""
        rows = present[~self.resident[present]]
        if not len(rows):
            return
        analysis, keys, snaps = self.analysis, self.keys, self.snaps
        taken = []
        for g in rows.tolist():
            snap = snaps[g] = _snapshot(analysis, keys[g])
            taken.append(snap)
        self.kind[rows] = [snap.kind for snap in taken]
        self.connect[rows] = [snap.connect for snap in taken]
        self.undecided[rows] = [snap.undecided for snap in taken]
        steady = [i for i, snap in enumerate(taken) if snap.kind == STEADY]
        if not steady:
            return
        rows, taken = rows[steady], [taken[i] for i in steady]
        self.resident[rows] = True
        self.next_seq[rows] = [snap.next_seq for snap in taken]
        self.carry[rows] = [snap.carry for snap in taken]
        self.client_lower[rows] = [snap.client_lower for snap in taken]
        self.silence_ns[rows] = [snap.silence_ns for snap in taken]
        self.silence_floor[rows] = [snap.silence_floor for snap in taken]
        self.ping_floor[rows] = [snap.ping_floor for snap in taken]
        self.pings[rows] = [snap.pings for snap in taken]
        self.ping_ns[rows] = [snap.ping_ns for snap in taken]

    def flush(self, g: int) -> None:
        """Write resident `g`'s steady frames into its objects; it is a resident no more."""
        if g < 0 or not self.resident[g]:
            return
        self.resident[g] = False
        if not self.dirty[g]:
            return
        self.dirty[g] = False
        snap = self.snaps[g]
        assert snap is not None
        snap.flow.last_ns = int(self.last_ns[g])
        counts = self.counts[g].tolist()
        for x, old in enumerate(self.retransmitted[g].tolist()):
            snap.halves[x].retransmitted_bytes += old
        self.retransmitted[g] = 0
        for x in (0, 1):
            if self.moved[g, x]:  # packets are framed only from data
                snap.halves[x].next_seq = int(self.next_seq[g, x])
                carry = tuple(self.carry[g, x].tolist())
                snap.framers[x].resume(carry if carry[0] else None, counts[x])
        frame, end = self.silence[g].tolist()
        first = int(self.inbound_first[g])
        run = SteadyPackets(counts[2], counts[3], counts[4], counts[5], int(self.inbound[g]),
                            first if first >= 0 else None)
        if frame >= 0:
            run.silence = (frame, end)
            run.gaps = self.gaps.pop(g)
        is_req, ping_frame, ping_end = self.last_ping[g].tolist()
        if is_req >= 0:
            run.last_ping = (bool(is_req), ping_frame, ping_end)
        if g in self.pingreq_ts:
            run.pingreq_ts = self.pingreq_ts.pop(g)
            run.pingreq_gaps = self.pingreq_gaps.pop(g)
        self.counts[g] = 0
        self.moved[g] = False
        self.silence[g] = -1
        self.inbound[g], self.inbound_first[g] = 0, -1
        self.last_ping[g] = -1
        snap.tl.absorb(run)

    def flush_all(self) -> None:
        for g in np.flatnonzero(self.resident).tolist():
            self.flush(g)

    def clear(self) -> None:
        """Write every resident and free every row: frames are about to go the per-frame way
        without the batch's connection ids."""
        self.flush_all()
        for row in self.row_of.values():
            self.keys[row], self.snaps[row] = None, None
            self.free.append(row)
        self.row_of.clear()

    def before_sweep(self, now_ns: int, min_idle_ns: int) -> None:
        """An idle sweep at `now_ns` reads every connection's last activity and evicts those idle
        longer than their limit, at least `min_idle_ns` for a resident: bring the times up to
        date, and flush the residents it might evict."""
        for g in np.flatnonzero(self.resident).tolist():
            flow = self.snaps[g].flow  # type: ignore[union-attr]
            if self.dirty[g]:
                flow.last_ns = int(self.last_ns[g])
            if now_ns - flow.last_ns > min_idle_ns:
                self.flush(g)


# -- steady MQTT frames ---------------------------------------------------------------------------

@dataclass
class Events:
    """The judged steady rows of a pass, sorted by connection then capture order (`rows`: their
    positions in the pass), with what the bulk needs of them, and the MQTT packets they would
    emit (`e_*`, in emission order per connection; `e_row` indexes the sorted rows)."""

    rows: np.ndarray
    slot: np.ndarray
    d: np.ndarray
    """0: sent by the connection's lower endpoint."""
    plen: np.ndarray
    """Bytes a row adds to its stream (0 for one wholly of bytes it already has)."""
    old_bytes: np.ndarray
    """Bytes of a row wholly of bytes its stream already has (a duplicate or retransmission)."""
    frame_no: np.ndarray
    ts: np.ndarray
    end_seq: np.ndarray
    left_after: np.ndarray
    """Bytes still to come, after this row, of a packet it leaves unfinished."""
    carry_of: np.ndarray
    """Where that packet started: a sorted row, -1 before the run (the framer's), -2 none."""
    head: np.ndarray
    """(type, flags, remaining length, header length) of a packet a row starts unfinished."""
    e_row: np.ndarray
    e_slot: np.ndarray
    e_client: np.ndarray
    e_type: np.ndarray
    e_first_frame: np.ndarray
    e_last_frame: np.ndarray
    e_ts_first: np.ndarray
    e_ts_last: np.ndarray
    e_lower: np.ndarray
    gap: np.ndarray
    """For a client packet: the silence it ends."""


def _seq_ahead(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return ((a - b + HALF) % MOD) - HALF


def _starts(keys: np.ndarray) -> np.ndarray:
    """Where each run of equal `keys` begins: `np.r_[True, keys[1:] != keys[:-1]]` for a non-empty
    array, without `np.r_`, whose own cost the many small passes feel."""
    out = np.empty(len(keys), dtype=bool)
    if len(keys):
        out[0] = True
        np.not_equal(keys[1:], keys[:-1], out=out[1:])
    return out


def _ends(keys: np.ndarray) -> np.ndarray:
    """Where each run of equal `keys` ends."""
    out = np.empty(len(keys), dtype=bool)
    if len(keys):
        out[-1] = True
        np.not_equal(keys[1:], keys[:-1], out=out[:-1])
    return out


def _shifted(values: np.ndarray, first: int) -> np.ndarray:
    """`values` one place on: `first`, then all but the last (`np.r_[first, values[:-1]]` for a
    non-empty array)."""
    out = np.empty_like(values)
    if len(values):
        out[0] = first
        out[1:] = values[:-1]
    return out


def _steady_frames(store: Store, batch: FrameBatch, segs: Segments, flows: _FlowIds,
                   rest: np.ndarray, rows: np.ndarray, slot: np.ndarray,
                   offset: int) -> tuple[np.ndarray, Events]:
    """Judge the frames `rows` (of residents; `slot`: connection ids) from the residents' state;
    return which are steady and the events."""
    idx = rest[rows]
    by_slot = np.argsort(slot[rows], kind="stable")
    rows, idx = rows[by_slot], idx[by_slot]
    s = slot[rows]
    m = len(rows)
    d = np.where(flows.lower[idx], 0, 1)
    flags = segs.flags[idx]
    seq, ack = segs.seq[idx], segs.ack[idx]
    kept = segs.pay_len[idx]
    # a segment cut by the snap length: its stream moves by every byte it carried, and the framer
    # skips the bytes not kept (`MQTTFramer.absorbs`, with `own`): steady if they lie inside a
    # payload, or end one where the segment ends; its packet headers must all have been kept
    cut = segs.missing[idx]
    plen = kept + cut
    ok = (flags & (SYN | FIN | RST)) == 0
    nxt = store.next_seq

    def streams(plen: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Each row's end in its stream, and where its own and the other direction's stream
        stand before it (next_seq), when the rows carry `plen` bytes."""
        end_seq = (seq + plen) % MOD
        stream_at = []
        for x in (0, 1):
            valid = (d == x) & (plen > 0)
            last = np.maximum.accumulate(np.where(valid, pos, -1))
            last = _shifted(last, -1)
            have = last >= gstart
            stream_at.append(np.where(have, end_seq[np.maximum(last, 0)], nxt[s, x]))
        own = np.where(d == 0, stream_at[0], stream_at[1])
        return end_seq, own, np.where(d == 0, stream_at[1], stream_at[0])

    sent = plen

    def wholly_old(own: np.ndarray) -> np.ndarray:
        """Rows whose bytes all came before (`HalfStream._overlap` counts them, nothing else)."""
        behind = _seq_ahead(seq, own)
        return (sent > 0) & (behind < 0) & (-behind >= sent)

    pos = np.arange(m)
    start = _starts(s)
    gstart = np.maximum.accumulate(np.where(start, pos, 0))
    end_seq, own, other = streams(plen)
    # a duplicate (the same frame captured twice, as on `any` beside a bridge) or a retransmission
    # of bytes the stream already has: a segment without data; the streams are worked out again
    # without such rows, and a row taken for one must still be one
    old = wholly_old(own)
    old_bytes = np.zeros(m, dtype=np.int64)
    ok &= ~(old & (cut > 0))  # (a cut copy: `Connection.segment` skips nothing for it)
    if old.any():
        plen = np.where(old, 0, plen)
        end_seq, own, other = streams(plen)
        still = wholly_old(own)  # (own moved on with the rows left out)
        old_bytes = np.where(old & still, sent, 0)
        ok &= ~old | still
    # (a row without data whose sequence number moved past its stream: bytes before it lost,
    # `HalfStream.segment`, which the per-frame way notes)
    ok &= np.where(plen == 0, _seq_ahead(seq, own) <= 0, seq == own)
    ahead = _seq_ahead(ack, other)
    ok &= ((flags & ACK) == 0) | (ahead <= 0) | (ahead >= (HALF // 2))

    # -- framing: payload rows by direction, in order --------------------------------------------
    pay = np.flatnonzero(plen > 0)
    pay = pay[np.lexsort((pay, d[pay], s[pay]))]
    raw = np.frombuffer(batch.buf, dtype=np.uint8)
    win = sliding_window_view(raw, 5) if len(raw) >= 5 else np.zeros((1, 5), np.uint8)
    L = plen[pay]
    C = kept[pay]
    base = segs.pay_start[idx[pay]]
    valid = np.ones(len(pay), dtype=bool)
    off = np.zeros(len(pay), dtype=np.int64)
    full: list[tuple[np.ndarray, np.ndarray]] = []  # per round k: the rows a packet ends in, its type
    span = np.zeros(len(pay), dtype=bool)
    over = np.zeros(len(pay), dtype=np.int64)
    sp_type = np.zeros(len(pay), dtype=np.int64)
    sp_flags, sp_rl, sp_hl = sp_type.copy(), sp_type.copy(), sp_type.copy()
    # round k reads the k-th packet header of every row that still has one to read (`act`): all
    # rows at first, then fewer (a busy client's segments, coalesced by the sender or by the
    # capturing host's receive offload, may hold hundreds of small packets)
    act = np.arange(len(pay))
    for _k in range(MAX_PACKETS_A_SEGMENT):
        if not len(act):
            break
        off_a, L_a = off[act], L[act]
        at = base[act] + off_a
        inside = at + 5 <= len(raw)
        w = win[np.where(inside, at, 0)].astype(np.int64)
        rl = w[:, 1] & 127
        n = np.ones(len(act), dtype=np.int64)
        more = w[:, 1] >= 128
        for b in (2, 3, 4):
            rl = np.where(more, rl | ((w[:, b] & 127) << (7 * (b - 1))), rl)
            n += more
            more = more & (w[:, b] >= 128)
        hl = 1 + n
        ptype, pflags = w[:, 0] >> 4, w[:, 0] & 15
        header_ok = inside & ~more & (hl <= C[act] - off_a) & _PLAIN_TYPES[ptype]
        header_ok &= ~(((ptype == PINGREQ) | (ptype == PINGRESP)) & ((pflags != 0) | (rl != 0)))
        e = off_a + hl + rl
        valid[act[~header_ok]] = False
        spans = header_ok & (e > L_a)
        done = header_ok & (e <= L_a)
        at_span = act[spans]
        span[at_span] = True
        over[at_span] = (e - L_a)[spans]
        sp_type[at_span], sp_flags[at_span] = ptype[spans], pflags[spans]
        sp_rl[at_span], sp_hl[at_span] = rl[spans], hl[spans]
        full.append((act[done], ptype[done]))
        off[act[done]] = e[done]
        act = act[done & (e < L_a)]
    valid[act] = False  # more packets in one segment than that
    # continuation segments: follow each packet that spans segments (Python over those only)
    role = np.zeros(len(pay), dtype=np.int8)  # 0 starts at a packet, 1 inside one, 2 ends one, 3 bad
    left_after = np.where(span & valid, over, 0)
    src = np.full(len(pay), -2, dtype=np.int64)
    chain = s[pay] * 2 + d[pay]
    chain_first = _starts(chain)
    bounds = np.append(np.flatnonzero(chain_first), len(pay))
    chain_end = np.repeat(bounds[1:], np.diff(bounds))
    carry_left = store.carry[:, :, 0]
    start_over = np.where(chain_first, carry_left[s[pay], d[pay]], 0)
    todo = np.flatnonzero((span & valid) | (start_over > 0)).tolist()
    if todo:
        Ls, overs, ends, starts = L.tolist(), over.tolist(), chain_end.tolist(), start_over.tolist()
        role_l, left_l, src_l = role.tolist(), left_after.tolist(), src.tolist()
        valid_l = valid.tolist()
        skip = -1
        for p in todo:
            if p < skip:
                continue
            if starts[p] > 0:
                left, origin, j = starts[p], -1, p
            elif valid_l[p]:
                left, origin, j = overs[p], p, p + 1
            else:
                continue
            stop = ends[p]
            while j < stop and left > 0:
                size = Ls[j]
                src_l[j] = origin
                if size < left:
                    role_l[j], left = 1, left - size
                    left_l[j] = left
                elif size == left:
                    role_l[j], left, left_l[j] = 2, 0, 0
                else:
                    role_l[j], left = 3, 0
                j += 1
            skip = j
        role = np.array(role_l, dtype=np.int8)
        left_after = np.array(left_l, dtype=np.int64)
        src = np.array(src_l, dtype=np.int64)
    frame_ok = np.where(role == 0, valid, role != 3)
    ok[pay] &= frame_ok

    # -- events -------------------------------------------------------------------------------
    ev_row: list[np.ndarray] = []
    ev_k: list[np.ndarray] = []
    ev_type: list[np.ndarray] = []
    ev_first_row: list[np.ndarray] = []
    ev_carry: list[np.ndarray] = []
    at_start = (role == 0) & valid
    for k, (ended, ptype) in enumerate(full):
        keep = at_start[ended]
        sel, ptype = ended[keep], ptype[keep]
        ev_row.append(pay[sel])
        ev_k.append(np.full(len(sel), k))
        ev_type.append(ptype)
        ev_first_row.append(pay[sel])
        ev_carry.append(np.full(len(sel), -1))
    ends_here = np.flatnonzero(role == 2)
    from_row = src[ends_here]
    inner = from_row >= 0
    carried = store.carry[s[pay[ends_here]], d[pay[ends_here]]].reshape(-1, 7)
    ev_row.append(pay[ends_here])
    ev_k.append(np.zeros(len(ends_here), dtype=np.int64))
    ev_type.append(np.where(inner, sp_type[np.maximum(from_row, 0)], carried[:, 1]))
    ev_first_row.append(np.where(inner, pay[np.maximum(from_row, 0)], -1))
    ev_carry.append(np.where(inner, -1, np.arange(len(ends_here))))
    e_row = np.concatenate(ev_row)
    e_k = np.concatenate(ev_k)
    e_type = np.concatenate(ev_type)
    e_first_row = np.concatenate(ev_first_row)
    e_carry = np.concatenate(ev_carry)
    order = np.lexsort((e_k, e_row))  # rows are sorted by connection, then capture order
    e_row, e_type, e_first_row, e_carry = e_row[order], e_type[order], e_first_row[order], e_carry[order]
    e_slot = s[e_row]
    e_lower = d[e_row] == 0
    e_client = e_lower == store.client_lower[e_slot]
    frame_no = batch.first_frame + offset + idx
    ts = batch.ts_ns[idx]
    e_last_frame, e_ts_last = frame_no[e_row], ts[e_row]
    first_frame_c = np.where(e_carry >= 0, carried[np.maximum(e_carry, 0), 5] if len(carried) else 0, 0)
    ts_first_c = np.where(e_carry >= 0, carried[np.maximum(e_carry, 0), 6] if len(carried) else 0, 0)
    e_first_frame = np.where(e_first_row >= 0, frame_no[np.maximum(e_first_row, 0)], first_frame_c)
    e_ts_first = np.where(e_first_row >= 0, ts[np.maximum(e_first_row, 0)], ts_first_c)

    # -- the timeline's limits ----------------------------------------------------------------
    n_ev = len(e_row)
    ev_pos = np.arange(n_ev)
    e_start = _starts(e_slot)
    e_gstart = np.maximum.accumulate(np.where(e_start, ev_pos, 0)) if n_ev else ev_pos
    silence, sfloor, pfloor = store.silence_ns, store.silence_floor, store.ping_floor
    pings0, ping_ns0 = store.pings, store.ping_ns
    last_c = np.maximum.accumulate(np.where(e_client, ev_pos, -1)) if n_ev else ev_pos
    last_c = _shifted(last_c, -1)
    prev_end = np.where(last_c >= e_gstart, e_ts_last[np.maximum(last_c, 0)], silence[e_slot])
    gap = np.where(e_client, e_ts_first - prev_end, 0)
    ev_ok = ~e_client | ((gap >= 0) & (gap <= sfloor[e_slot]))
    is_ping = (e_client & (e_type == PINGREQ)) | (~e_client & (e_type == PINGRESP))
    ping_pos = np.flatnonzero(is_ping)
    if len(ping_pos):
        ps = e_slot[ping_pos]
        pstart = _starts(ps)
        rank = np.arange(len(ping_pos)) - np.maximum.accumulate(np.where(pstart, np.arange(len(ping_pos)), 0))
        want_req = (pings0[ps] + rank) % 2 == 0
        is_req = e_client[ping_pos]
        good = want_req == is_req
        prev_ts = _shifted(e_ts_last[ping_pos], 0)
        req_ts = np.where(rank == 0, ping_ns0[ps], prev_ts)
        latency = e_ts_first[ping_pos] - req_ts
        good &= is_req | ((latency >= 0) & (latency <= pfloor[ps]))
        ev_ok[ping_pos] &= good
    bad_rows = e_row[~ev_ok]
    ok[bad_rows] = False
    # per row (sorted), for the bulk: the packet a row leaves unfinished, and where it started
    row_left = np.zeros(m, dtype=np.int64)
    row_left[pay] = left_after
    row_src = np.full(m, -2, dtype=np.int64)
    row_src[pay] = np.where(role == 0, np.where(span & valid, pay, -2),
                            np.where(src >= 0, pay[np.maximum(src, 0)], src))
    head = np.zeros((m, 4), dtype=np.int64)
    head[pay] = np.stack([sp_type, sp_flags, sp_rl, sp_hl], axis=1)
    events = Events(rows=rows, slot=s, d=d, plen=plen, old_bytes=old_bytes, frame_no=frame_no,
                    ts=ts, end_seq=end_seq, left_after=row_left, carry_of=row_src, head=head,
                    e_row=e_row, e_slot=e_slot,
                    e_client=e_client, e_type=e_type, e_first_frame=e_first_frame,
                    e_last_frame=e_last_frame, e_ts_first=e_ts_first, e_ts_last=e_ts_last,
                    e_lower=e_lower, gap=gap)
    out = np.empty(m, dtype=bool)
    out[by_slot] = ok  # back to the caller's row order
    return out, events


# -- the bulk -------------------------------------------------------------------------------------

def _last_per_slot(positions: np.ndarray, slots: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For positions sorted by slot (then order): each slot present and its last position."""
    last = _ends(slots)
    return slots[last], positions[last]


def _first_per_slot(positions: np.ndarray, slots: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For positions sorted by slot (then order): each slot present and its first position."""
    first = _starts(slots)
    return slots[first], positions[first]


def commit(store: Store, plan: Plan, batch: FrameBatch, segs: Segments) -> dict[int, Work]:
    """Apply the pass's steady frames: the residents' in the store; for the other connections
    (ones that carry nothing we analyse), return what they do by row, for `apply`."""
    rows = np.flatnonzero(plan.fast)
    if not len(rows):
        return {}
    slot = plan.slot[rows]
    order = np.argsort(slot, kind="stable")
    rows, slot = rows[order], slot[order]
    idx = plan.rest[rows]
    present, last = _last_per_slot(idx, slot)
    last_ns = batch.ts_ns[last]
    resident = store.resident[present]
    store.last_ns[present[resident]] = last_ns[resident]
    store.dirty[present[resident]] = True
    closes = np.bincount(slot, weights=(segs.flags[idx] & (FIN | RST)) != 0, minlength=len(store)) > 0
    ignored = store.undecided & (np.bincount(slot, weights=segs.pay_len[idx] > 0, minlength=len(store)) > 0)
    works = {g: Work(store.snaps[g].flow, t, bool(closes[g]), bool(ignored[g]))  # type: ignore[union-attr]
             for g, t in zip(present[~resident].tolist(), last_ns[~resident].tolist())}
    if plan.events is not None:
        _commit_steady(store, plan.events, plan.fast)
    return works


def _commit_steady(store: Store, ev: Events, fast: np.ndarray) -> None:
    """Move the residents' state and sums on by their steady frames (what `SessionTimeline.on_packet`,
    the framers and the streams would have done, frame by frame)."""
    fast_sorted = fast[ev.rows]
    old = np.flatnonzero(fast_sorted & (ev.old_bytes > 0))
    np.add.at(store.retransmitted, (ev.slot[old], ev.d[old]), ev.old_bytes[old])
    # per direction: where the stream stands after the last steady payload row
    for x in (0, 1):
        p = np.flatnonzero(fast_sorted & (ev.d == x) & (ev.plen > 0))
        slots, q = _last_per_slot(p, ev.slot[p])
        if not len(slots):
            continue
        left = ev.left_after[q]
        origin = ev.carry_of[q]
        inner = (origin >= 0)[:, None]
        o = np.maximum(origin, 0)
        before = store.carry[slots, x]  # the packet in progress before the pass (origin -1)
        carry = np.concatenate([left[:, None],
                                np.where(inner, ev.head[o], before[:, 1:5]),
                                np.where(inner, ev.frame_no[o][:, None], before[:, 5:6]),
                                np.where(inner, ev.ts[o][:, None], before[:, 6:7])], axis=1)
        carry[left == 0] = 0
        store.carry[slots, x] = carry
        store.next_seq[slots, x] = ev.end_seq[q]
        store.moved[slots, x] = True
    # the packets those rows emit
    e = np.flatnonzero(fast_sorted[ev.e_row])
    if not len(e):
        return
    es = ev.e_slot[e]
    client = ev.e_client[e]
    etype = ev.e_type[e]
    lower = ev.e_lower[e]
    is_req = client & (etype == PINGREQ)
    is_resp = ~client & (etype == PINGRESP)
    n = len(store)
    for column, mask in enumerate((lower, ~lower, client, ~client, is_req, is_resp)):
        store.counts[:, column] += np.bincount(es[mask], minlength=n)
    # the last client packet opens the silence; broker PUBLISH/PUBREL after it count as inbound
    c = e[client]
    c_slots = ev.e_slot[c]
    last_c_slots, last_c = _last_per_slot(c, c_slots)
    store.silence[last_c_slots, 0] = ev.e_last_frame[last_c]
    store.silence[last_c_slots, 1] = ev.e_ts_last[last_c]
    store.silence_ns[last_c_slots] = ev.e_ts_last[last_c]
    inbound = e[~client & ((etype == PUBLISH) | (etype == PUBREL))]
    last_c_of = np.full(n, -1, dtype=np.int64)
    last_c_of[last_c_slots] = last_c
    inbound = inbound[inbound > last_c_of[ev.e_slot[inbound]]]
    n_inbound = np.bincount(ev.e_slot[inbound], minlength=n)
    in_slots, in_first = _first_per_slot(inbound, ev.e_slot[inbound])
    first_of = np.full(n, -1, dtype=np.int64)
    first_of[in_slots] = ev.e_first_frame[in_first]
    reset = last_c_of >= 0
    store.inbound = np.where(reset, n_inbound, store.inbound + n_inbound)
    store.inbound_first = np.where(reset | (store.inbound_first < 0), first_of, store.inbound_first)
    # the last ping: an unanswered PINGREQ, or none
    pings = e[is_req | is_resp]
    ping_slots, last_ping = _last_per_slot(pings, ev.e_slot[pings])
    req = ev.e_client[last_ping]
    store.last_ping[ping_slots] = np.stack([req, ev.e_first_frame[last_ping], ev.e_ts_last[last_ping]],
                                           axis=1)
    store.pings[ping_slots] = req
    store.ping_ns[ping_slots] = np.where(req, ev.e_ts_last[last_ping], 0)
    # the silences client packets ended, and each PINGREQ's time and silence
    _extend(store.gaps, c_slots, ev.gap[c])
    r = e[is_req]
    r_slots = ev.e_slot[r]
    _extend(store.pingreq_ts, r_slots, ev.e_ts_first[r])
    _extend(store.pingreq_gaps, r_slots, ev.gap[r])


def _extend(lists: dict[int, array], slots: np.ndarray, values: np.ndarray) -> None:
    """Append `values` to the array of their slot; `slots` sorted (values in order within one).
    Machine integers, not Python ones: a steady session may hold thousands until it is written."""
    if not len(slots):
        return
    bounds = np.concatenate(([0], np.flatnonzero(np.diff(slots)) + 1, [len(slots)])).tolist()
    data = memoryview(np.ascontiguousarray(values, dtype=np.int64)).cast("B")
    for g, a, b in zip(slots[bounds[:-1]].tolist(), bounds[:-1], bounds[1:]):
        found = lists.get(g)
        if found is None:
            found = lists[g] = array("q")
        found.frombytes(data[8 * a:8 * b])


def apply(work: Work) -> None:
    """Write the steady frames of a connection that carries nothing we analyse."""
    work.flow.last_ns = work.last_ns
    if work.closes:
        work.flow.closed = True
    if work.ignored:
        work.flow.kind = OTHER

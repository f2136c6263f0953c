"""Which frames of a run are steady, and what applying them does (see `analyzer.columnar.feed`).

`plan` snapshots every connection the run touches (`_snapshot`), judges all its frames at once
(`_steady_frames`), and returns, per connection, its steady prefix as a `Work` that `apply` writes
into the connection's objects: exactly the fields the per-frame path would have changed, to the
values it would have given them. Everything that is not provably steady is left to that path.

The judgement is speculative in one careful sense: frame i is judged assuming the frames of its
connection before it are steady too. Only a prefix of each connection is applied, so every frame
that is applied was judged on true assumptions.
"""

from __future__ import annotations

from dataclasses import dataclass
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

NS = 1_000_000_000
MOD = 1 << 32
HALF = 1 << 31
PUBLISH, PUBREL, PINGREQ, PINGRESP = 3, 6, 12, 13
_PLAIN_TYPES = np.zeros(16, dtype=bool)
_PLAIN_TYPES[3:14] = True
"""Packet types a steady frame may carry: PUBLISH to PINGRESP. CONNECT, CONNACK and DISCONNECT
(decoded bodies), AUTH and the reserved type go the per-frame way."""

ABSENT, SINGLE, IGNORED, STEADY = 0, 1, 2, 3
"""What a connection is to the run: not in the table yet, only per-frame, carrying nothing we
analyse (any frame but a SYN is steady), an MQTT session in a steady state."""


@dataclass
class Plan:
    """A pass over a run: frames for `CaptureAnalysis.frame` (`single`, capture order, with their
    connection ids), frames for the next pass (`deferred`), and steady work per connection id."""

    single: np.ndarray
    single_gid: np.ndarray
    deferred: np.ndarray
    bulk: dict[int, Work]
    unsettled: np.ndarray
    """Frames with data on connections that have not sent their CONNECT yet: one may be a CONNECT,
    which reaches across connections (it takes an older session with its client id over)."""
    undecided: np.ndarray
    """For each of those: its connection is not known to be MQTT yet (its first data may show it
    is not)."""


@dataclass
class Work:
    """What a connection's steady frames of one pass do."""

    flow: Any
    last_ns: int
    closes: bool = False
    conn: Any = None
    halves: tuple = ()
    """Per direction, lower endpoint's first: (its `HalfStream`, its framer, (next_seq, the
    framer's `bulk_state` or None) or None when it sent no data, packets framed)."""
    timeline: SteadyPackets | None = None


def plan(analysis: CaptureAnalysis, batch: FrameBatch, segs: Segments, flows: _FlowIds,
         rest: np.ndarray, offset: int, last: bool = False) -> Plan:
    """Judge the frames `rest` (positions in `batch`, ascending) of one pass; in the `last`,
    nothing is deferred."""
    gid = flows.gid[rest]
    present = np.unique(gid[gid >= 0])
    snaps = [_snapshot(analysis, flows.keys[g]) for g in present.tolist()]
    where = np.full(max(1, len(flows.keys)), -1, dtype=np.int64)
    where[present] = np.arange(len(present))
    slot = np.where(gid >= 0, where[np.maximum(gid, 0)], -1)
    kind = np.array([s.kind for s in snaps] + [SINGLE], dtype=np.int8)[slot]  # slot -1: the SINGLE
    flags = segs.flags[rest]
    syn_alone = (flags & (SYN | ACK)) == SYN
    simple = segs.simple[rest]  # other shapes (decoded the per-frame way) are never steady
    ok = ((kind == IGNORED) & ~syn_alone & simple
          & np.where(_undecided(snaps)[slot], segs.pay_len[rest] == 0, True))
    steady_rows = np.flatnonzero(kind == STEADY)
    events = None
    if len(steady_rows):
        ok_steady, events = _steady_frames(batch, segs, flows, rest, steady_rows, slot, snaps, offset)
        ok[steady_rows] = ok_steady & simple[steady_rows]
    # the steady prefix of each connection: frames before its first unsteady one
    bad = np.flatnonzero(~ok & (gid >= 0))
    first_bad = np.full(max(1, len(present)), len(rest), dtype=np.int64)
    bad_slots, first = np.unique(slot[bad], return_index=True)
    first_bad[bad_slots] = bad[first]
    row = np.arange(len(rest))
    limit = np.where(slot >= 0, first_bad[np.maximum(slot, 0)], row)
    single_rows = np.flatnonzero((row >= limit if last else row == limit) | (gid < 0))
    deferred = rest[row > limit] if not last else rest[:0]
    fast = row < limit
    bulk = _bulk(rest, fast, slot, snaps, batch, segs, events)
    ids = present.tolist()
    connect = np.array([x.connect for x in snaps] + [CONNECT_NONE], dtype=np.int8)[slot]
    data = (segs.pay_len[rest] > 0) | ~simple
    unsettled = (connect != CONNECT_NONE) & data
    return Plan(rest[single_rows], gid[single_rows], deferred, {ids[x]: w for x, w in bulk.items()},
                rest[unsettled], (connect == CONNECT_UNDECIDED)[unsettled])


# -- snapshots ------------------------------------------------------------------------------------

CONNECT_NONE, CONNECT_PENDING, CONNECT_UNDECIDED = 0, 1, 2
"""Whether a connection's data may still bring its first CONNECT (which can take an older session
over by client id): no; yes (an MQTT connection, or one whose first data is held, that has not
sent it); yes unless its first data shows it is not MQTT at all (not in the table yet, or no data
yet on no MQTT port)."""


@dataclass
class Snapshot:
    kind: int
    connect: int = CONNECT_NONE
    flow: Any = None
    lower_is_a: bool = True
    undecided: bool = False
    conn: Any = None
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


def _snapshot(analysis: CaptureAnalysis, key: tuple[bytes, int, bytes, int]) -> Snapshot:
    entry = analysis.table.get(key)
    if entry is None:
        return Snapshot(ABSENT, CONNECT_UNDECIDED)
    flow, lower_is_a = entry
    if flow.kind == OTHER:
        return Snapshot(IGNORED, CONNECT_NONE, flow, lower_is_a)
    if flow.kind == UNDECIDED:
        if flow.state is None:
            return Snapshot(IGNORED, CONNECT_UNDECIDED, flow, lower_is_a, undecided=True)
        return Snapshot(SINGLE, CONNECT_PENDING)
    conn = flow.state
    if flow.kind != MQTT or conn is None:
        return Snapshot(SINGLE, CONNECT_NONE)
    tl = conn.timeline
    settled = CONNECT_NONE if tl is not None and tl.connect is not None else CONNECT_PENDING
    if conn.tls is not None or conn.websocket or conn.packet_hook:
        return Snapshot(SINGLE, settled)
    limits = tl.steady_limits() if tl is not None and tl.__class__ is SessionTimeline else None
    if limits is None or conn.closed:
        return Snapshot(SINGLE, settled)
    sides = conn.sides if lower_is_a else (conn.sides[1], conn.sides[0])
    halves = conn.halves if lower_is_a else (conn.halves[1], conn.halves[0])
    carry = []
    for side, half in zip(sides, halves):
        state = side.framer.bulk_state()
        if (side.__class__ is not _Side or half.sink is not side or not half.settled
                or state is None or (state[0] and not _PLAIN_TYPES[state[1]])):
            return Snapshot(SINGLE, settled)
        carry.append(state)
    silence_ns, silence_floor, ping_floor, pings, ping_ns = limits
    return Snapshot(
        STEADY, CONNECT_NONE, flow, lower_is_a, conn=conn, tl=tl, client_lower=conn.client_is_a == lower_is_a,
        next_seq=(halves[0].next_seq, halves[1].next_seq),
        framers=(sides[0].framer, sides[1].framer), halves=halves, carry=tuple(carry),
        silence_ns=silence_ns, silence_floor=silence_floor, ping_floor=ping_floor, pings=pings,
        ping_ns=ping_ns)


def _undecided(snaps: list[Snapshot]) -> np.ndarray:
    return np.array([s.undecided for s in snaps] + [False], dtype=bool)


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


def _steady_frames(batch: FrameBatch, segs: Segments, flows: _FlowIds, rest: np.ndarray,
                   rows: np.ndarray, slot: np.ndarray, snaps: list[Snapshot],
                   offset: int) -> tuple[np.ndarray, Events]:
    """Judge the frames `rows` (of steady connections); return which are steady and the events."""
    idx = rest[rows]
    by_slot = np.argsort(slot[rows], kind="stable")
    rows, idx = rows[by_slot], idx[by_slot]
    s = slot[rows]
    m = len(rows)
    d = np.where(flows.lower[idx], 0, 1)
    flags = segs.flags[idx]
    seq, ack = segs.seq[idx], segs.ack[idx]
    plen = segs.pay_len[idx]
    ok = ((flags & (SYN | FIN | RST)) == 0) & (segs.missing[idx] == 0)
    nxt = np.array([snap.next_seq if snap.kind == STEADY else (0, 0) for snap in snaps], dtype=np.int64)
    pos = np.arange(m)
    start = np.r_[True, s[1:] != s[:-1]]
    gstart = np.maximum.accumulate(np.where(start, pos, 0))
    end_seq = (seq + plen) % MOD
    stream_at = []  # per direction: its next_seq before each row
    for x in (0, 1):
        valid = (d == x) & (plen > 0)
        last = np.maximum.accumulate(np.where(valid, pos, -1))
        last = np.r_[-1, last[:-1]]
        have = last >= gstart
        stream_at.append(np.where(have, end_seq[np.maximum(last, 0)], nxt[s, x]))
    own = np.where(d == 0, stream_at[0], stream_at[1])
    other = np.where(d == 0, stream_at[1], stream_at[0])
    ok &= (plen == 0) | (seq == own)
    ahead = _seq_ahead(ack, other)
    ok &= ((flags & ACK) == 0) | (ahead <= 0) | (ahead >= (HALF // 2))

    # -- framing: payload rows by direction, in order --------------------------------------------
    pay = np.flatnonzero(plen > 0)
    pay = pay[np.lexsort((pay, d[pay], s[pay]))]
    raw = np.frombuffer(batch.buf, dtype=np.uint8)
    win = sliding_window_view(raw, 5) if len(raw) >= 5 else np.zeros((1, 5), np.uint8)
    L = plen[pay]
    base = segs.pay_start[idx[pay]]
    valid = np.ones(len(pay), dtype=bool)
    active = valid.copy()
    off = np.zeros(len(pay), dtype=np.int64)
    full: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []  # per round k
    span = np.zeros(len(pay), dtype=bool)
    over = np.zeros(len(pay), dtype=np.int64)
    sp_type = np.zeros(len(pay), dtype=np.int64)
    sp_flags, sp_rl, sp_hl = sp_type.copy(), sp_type.copy(), sp_type.copy()
    for _k in range(3):
        at = base + off
        inside = at + 5 <= len(raw)
        w = win[np.where(inside, at, 0)].astype(np.int64)
        rl = w[:, 1] & 127
        n = np.ones(len(pay), dtype=np.int64)
        more = w[:, 1] >= 128
        for b in (2, 3, 4):
            rl = np.where(more, rl | ((w[:, b] & 127) << (7 * (b - 1))), rl)
            n += more
            more = more & (w[:, b] >= 128)
        hl = 1 + n
        ptype, pflags = w[:, 0] >> 4, w[:, 0] & 15
        header_ok = inside & ~more & (hl <= L - off) & _PLAIN_TYPES[ptype]
        header_ok &= ~(((ptype == PINGREQ) | (ptype == PINGRESP)) & ((pflags != 0) | (rl != 0)))
        e = off + hl + rl
        broken = active & ~header_ok
        valid &= ~broken
        spans = active & header_ok & (e > L)
        done = active & header_ok & (e <= L)
        span |= spans
        over = np.where(spans, e - L, over)
        sp_type, sp_flags = np.where(spans, ptype, sp_type), np.where(spans, pflags, sp_flags)
        sp_rl, sp_hl = np.where(spans, rl, sp_rl), np.where(spans, hl, sp_hl)
        full.append((done, ptype, pflags, rl))
        off = np.where(done, e, off)
        active = done & (e < L)
    valid &= ~active  # more than three packets in one segment
    # continuation segments: follow each packet that spans segments (Python over those only)
    role = np.zeros(len(pay), dtype=np.int8)  # 0 starts at a packet, 1 inside one, 2 ends one, 3 bad
    left_after = np.where(span & valid, over, 0)
    src = np.full(len(pay), -2, dtype=np.int64)
    chain = s[pay] * 2 + d[pay]
    chain_first = np.r_[True, chain[1:] != chain[:-1]]
    chain_end = np.r_[np.flatnonzero(chain_first)[1:], len(pay)]
    chain_end = np.repeat(chain_end, np.diff(np.r_[np.flatnonzero(chain_first), len(pay)]))
    carry_left = np.array([[c[0] for c in snap.carry] if snap.kind == STEADY else [0, 0]
                           for snap in snaps], dtype=np.int64).reshape(-1, 2)
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
    for k, (done, ptype, _pflags, _rl) in enumerate(full):
        sel = np.flatnonzero(done & at_start)
        ev_row.append(pay[sel])
        ev_k.append(np.full(len(sel), k))
        ev_type.append(ptype[sel])
        ev_first_row.append(pay[sel])
        ev_carry.append(np.full(len(sel), -1))
    ends_here = np.flatnonzero(role == 2)
    from_row = src[ends_here]
    inner = from_row >= 0
    carried = np.array([snaps[x].carry[y] for x, y in zip(s[pay[ends_here]].tolist(),
                                                         d[pay[ends_here]].tolist())],
                       dtype=np.int64).reshape(-1, 7)
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
    client_lower = np.array([snap.client_lower for snap in snaps] + [True], dtype=bool)
    e_client = e_lower == client_lower[e_slot]
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
    e_start = np.r_[True, e_slot[1:] != e_slot[:-1]] if n_ev else np.zeros(0, dtype=bool)
    e_gstart = np.maximum.accumulate(np.where(e_start, ev_pos, 0)) if n_ev else ev_pos
    silence = np.array([snap.silence_ns for snap in snaps] + [0], dtype=np.int64)
    sfloor = np.array([snap.silence_floor for snap in snaps] + [0], dtype=np.int64)
    pfloor = np.array([snap.ping_floor for snap in snaps] + [0], dtype=np.int64)
    pings0 = np.array([snap.pings for snap in snaps] + [0], dtype=np.int64)
    ping_ns0 = np.array([snap.ping_ns for snap in snaps] + [0], dtype=np.int64)
    last_c = np.maximum.accumulate(np.where(e_client, ev_pos, -1)) if n_ev else ev_pos
    last_c = np.r_[-1, last_c[:-1]] if n_ev else last_c
    prev_end = np.where(last_c >= e_gstart, e_ts_last[np.maximum(last_c, 0)], silence[e_slot])
    gap = np.where(e_client, e_ts_first - prev_end, 0)
    ev_ok = ~e_client | ((gap >= 0) & (gap <= sfloor[e_slot]))
    is_ping = (e_client & (e_type == PINGREQ)) | (~e_client & (e_type == PINGRESP))
    ping_pos = np.flatnonzero(is_ping)
    if len(ping_pos):
        ps = e_slot[ping_pos]
        pstart = np.r_[True, ps[1:] != ps[:-1]]
        rank = np.arange(len(ping_pos)) - np.maximum.accumulate(np.where(pstart, np.arange(len(ping_pos)), 0))
        want_req = (pings0[ps] + rank) % 2 == 0
        is_req = e_client[ping_pos]
        good = want_req == is_req
        prev_ts = np.r_[0, e_ts_last[ping_pos][:-1]]
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
    events = Events(rows=rows, slot=s, d=d, plen=plen, frame_no=frame_no, ts=ts, end_seq=end_seq,
                    left_after=row_left, carry_of=row_src, head=head, e_row=e_row, e_slot=e_slot,
                    e_client=e_client, e_type=e_type, e_first_frame=e_first_frame,
                    e_last_frame=e_last_frame, e_ts_first=e_ts_first, e_ts_last=e_ts_last,
                    e_lower=e_lower, gap=gap)
    out = np.empty(m, dtype=bool)
    out[by_slot] = ok  # back to the caller's row order
    return out, events


# -- the bulk -------------------------------------------------------------------------------------

def _last_per_slot(positions: np.ndarray, slots: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For positions sorted by slot (then order): each slot present and its last position."""
    if not len(positions):
        return slots[:0], positions
    rev_slots = slots[::-1]
    uniq, first_rev = np.unique(rev_slots, return_index=True)
    return uniq, positions[::-1][first_rev]


def _first_per_slot(positions: np.ndarray, slots: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    uniq, first = np.unique(slots, return_index=True)
    return uniq, positions[first]


def _bulk(rest: np.ndarray, fast: np.ndarray, slot: np.ndarray, snaps: list[Snapshot],
          batch: FrameBatch, segs: Segments, events: Events | None) -> dict[int, Work]:
    """What each connection's steady frames of this pass do, as `Work` for `apply`."""
    rows = np.flatnonzero(fast)
    if not len(rows):
        return {}
    fs = slot[rows]
    order = np.argsort(fs, kind="stable")
    rows, fs = rows[order], fs[order]
    idx = rest[rows]
    present, last = _last_per_slot(idx, fs)
    closes = np.bincount(fs, weights=(segs.flags[idx] & (FIN | RST)) != 0, minlength=len(snaps)) > 0
    works: dict[int, Work] = {}  # by slot
    for x, i in zip(present.tolist(), last.tolist()):
        snap = snaps[x]
        works[x] = Work(snap.flow, int(batch.ts_ns[i]), bool(closes[x]))
    if events is not None:
        _steady_bulk(events, fast, snaps, works)
    return works


def _steady_bulk(ev: Events, fast: np.ndarray, snaps: list[Snapshot], works: dict[int, Work]) -> None:
    fast_sorted = fast[ev.rows]
    steady_slots = np.unique(ev.slot[fast_sorted])
    if not len(steady_slots):
        return
    # per direction: where the stream stands after the last steady payload row
    per_dir: list[dict[int, tuple]] = [{}, {}]
    for x in (0, 1):
        p = np.flatnonzero(fast_sorted & (ev.d == x) & (ev.plen > 0))
        slots, last = _last_per_slot(p, ev.slot[p])
        for sl, q in zip(slots.tolist(), last.tolist()):
            left = int(ev.left_after[q])
            carry: tuple | None = None
            if left:
                origin = int(ev.carry_of[q])
                if origin >= 0:
                    ptype, pflags, rl, hl = ev.head[origin].tolist()
                    carry = (left, ptype, pflags, rl, hl, int(ev.frame_no[origin]), int(ev.ts[origin]))
                else:
                    carry = (left,) + snaps[sl].carry[x][1:]
            per_dir[x][sl] = (int(ev.end_seq[q]), carry)
    # the packets those rows emit
    ef = fast_sorted[ev.e_row]
    e = np.flatnonzero(ef)
    es = ev.e_slot[e]
    client = ev.e_client[e]
    etype = ev.e_type[e]
    nslots = len(snaps)
    count = lambda mask: np.bincount(es[mask], minlength=nslots)  # noqa: E731
    n_lower = count(ev.e_lower[e])
    n_upper = count(~ev.e_lower[e])
    n_client = count(client)
    n_server = count(~client)
    is_req = client & (etype == PINGREQ)
    is_resp = ~client & (etype == PINGRESP)
    n_req, n_resp = count(is_req), count(is_resp)
    c = e[client]
    c_slots = ev.e_slot[c]
    last_c_slots, last_c = _last_per_slot(c, c_slots)
    last_client = dict(zip(last_c_slots.tolist(), last_c.tolist()))
    # broker PUBLISH/PUBREL after each connection's last client packet
    inbound = e[~client & ((etype == PUBLISH) | (etype == PUBREL))]
    last_c_of = np.full(nslots, -1, dtype=np.int64)
    last_c_of[last_c_slots] = last_c
    inbound = inbound[inbound > last_c_of[ev.e_slot[inbound]]]
    n_inbound = np.bincount(ev.e_slot[inbound], minlength=nslots)
    in_slots, in_first = _first_per_slot(inbound, ev.e_slot[inbound])
    inbound_first = dict(zip(in_slots.tolist(), ev.e_first_frame[in_first].tolist()))
    # the last ping event, the gaps, the PINGREQ cadence
    pings = e[is_req | is_resp]
    ping_slots, last_ping = _last_per_slot(pings, ev.e_slot[pings])
    last_ping_of = dict(zip(ping_slots.tolist(), last_ping.tolist()))
    gaps = ev.gap[c].tolist()
    c_bounds = np.r_[0, np.flatnonzero(np.diff(c_slots)) + 1, len(c)].tolist()
    gap_ranges = {int(c_slots[a]): (a, b) for a, b in zip(c_bounds[:-1], c_bounds[1:]) if b > a}
    req = e[is_req]
    req_slots = ev.e_slot[req]
    r_bounds = np.r_[0, np.flatnonzero(np.diff(req_slots)) + 1, len(req)].tolist()
    req_ranges = {int(req_slots[a]): (a, b) for a, b in zip(r_bounds[:-1], r_bounds[1:]) if b > a}
    req_ts = ev.e_ts_first[req].tolist()
    keep_alive = np.array([(snap.tl.keep_alive_s or 0) if snap.kind == STEADY else 0 for snap in snaps],
                          dtype=np.int64)
    req_gap = ev.gap[req]
    k_ns = keep_alive[req_slots] * NS
    req_bucket = np.where((k_ns > 0) & (req_gap >= 0), req_gap * 100 // np.maximum(k_ns, 1), -1).tolist()
    e_last_frame, e_ts_last = ev.e_last_frame.tolist(), ev.e_ts_last.tolist()
    e_first_frame, e_client = ev.e_first_frame.tolist(), ev.e_client.tolist()
    n_lower, n_upper, n_client, n_server = (n_lower.tolist(), n_upper.tolist(), n_client.tolist(),
                                            n_server.tolist())
    n_req, n_resp, n_inbound = n_req.tolist(), n_resp.tolist(), n_inbound.tolist()
    for sl in steady_slots.tolist():
        snap = snaps[sl]
        work = works[sl]
        work.conn = snap.conn
        work.halves = ((snap.halves[0], snap.framers[0], per_dir[0].get(sl), n_lower[sl]),
                       (snap.halves[1], snap.framers[1], per_dir[1].get(sl), n_upper[sl]))
        run = SteadyPackets(n_client[sl], n_server[sl], n_req[sl], n_resp[sl], n_inbound[sl],
                            inbound_first.get(sl))
        q = last_client.get(sl)
        if q is not None:
            run.silence = (e_last_frame[q], e_ts_last[q])
            a, b = gap_ranges[sl]
            run.gaps = gaps[a:b]
        q = last_ping_of.get(sl)
        if q is not None:
            run.last_ping = (e_client[q], e_first_frame[q], e_ts_last[q])
        r = req_ranges.get(sl)
        if r is not None:
            run.pingreq_ts = req_ts[r[0]:r[1]]
            run.pingreq_buckets = req_bucket[r[0]:r[1]]
        work.timeline = run


def apply(work: Work) -> None:
    """Write a connection's steady frames into its objects (see `_bulk`)."""
    flow = work.flow
    flow.last_ns = work.last_ns
    if work.closes:
        flow.closed = True
    if work.conn is None:
        return
    for half, framer, stream, packets in work.halves:
        if stream is not None:  # packets are framed only from data
            half.next_seq, carry = stream
            framer.resume(carry, packets)
    work.conn.timeline.absorb(work.timeline)

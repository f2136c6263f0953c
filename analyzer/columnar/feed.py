"""Feed `FrameBatch`es to a `CaptureAnalysis`: steady frames in bulk, every other frame one by one.

Theory of operation
-------------------
A batch is cut into runs of frames between two points where network time does something global
(a clock step, an idle sweep that cannot be known ahead), so within a run connections do not
interact. For every frame the
run decides, with NumPy over the whole run, whether it is *steady* given what its connection's
state was at the start of the run and the frames of that connection before it:

* a connection that carries nothing we analyse (decided not MQTT) or has not sent data yet: any
  frame but a SYN; so too one not in the table yet whose first frame (no SYN, on no MQTT port)
  carries data that shows it is not MQTT (background HTTP), after that frame, which only numbers
  it (`CaptureAnalysis.opened_other`) in capture order with the per-frame frames;
* an MQTT connection in a healthy steady state (a *resident* of the `steady.Store`): an in-order
  segment with no SYN, FIN or RST, acknowledging exactly what the other side sent, whose bytes
  frame into packets of the common kinds (as many as `steady.MAX_PACKETS_A_SEGMENT`), each keeping
  the session's timeline inside every limit: a client silence no longer than any rule could object
  to, a PINGREQ answered in time (a segment cut by the snap length too, where the bytes not kept
  lie inside a payload); or such a segment wholly of bytes its stream already has (captured twice,
  or retransmitted), which the stream only counts.

A connection's frames up to its first unsteady one are applied in one step (`steady.commit`): the
counters, clocks and sequence numbers they would have moved, moved, in the store's arrays, which
keep a resident's state from run to run and batch to batch. The store writes a resident into its
objects (`Store.flush`) before one of its frames goes through `CaptureAnalysis.frame`, before an
idle sweep that could evict it, at a clock step, and at the end of the capture. Its first unsteady
frame goes through `CaptureAnalysis.frame` in capture order with the other connections' such frames.
Its later frames wait for the next pass over the run, which judges them afresh from the state the
unsteady frame left; but for a connection only the per-frame way takes for now (not in the table
yet, but for a SYN on no MQTT port, or not past its CONNECT), its next few go the per-frame way in
the same pass too (a handshake, CONNECT and CONNACK: `steady.OPENING_FRAMES`). Passes repeat until
the run is done; what is left for a pass too small to pay for its NumPy work (`PER_FRAME_BELOW`)
goes the per-frame way instead, in capture order.

Order matters only where connections meet: the stream numbers of new connections, and a CONNECT
that takes over an older session by client id. So a run ends before a SYN that would wait for a
later pass (it might open a connection with a new number), and before any data of a connection that
is not steady once frames have started to wait (it might be a CONNECT). Where that point comes
before the middle of the run, the run is not ended there: its first pass is made its last instead,
in which no frame waits (each connection's frames from its first unsteady one go the per-frame
way, in capture order), so nothing needs a cut. Otherwise a capture where such points come every
few frames (sessions whose CONNECT came before the capture started, which may still send one) is
read in runs of a few frames, each paying for a pass's NumPy work: ten times the per-frame cost.
A run never holds more frames than the flow table has room for, so no connection is shed inside one.

An idle sweep (every `SWEEP_EVERY_NS` of network time) evicts the connections idle for longer than
their limit, reading each one's last activity as it stands at the sweep's frame. A run goes on
across a sweep whose evictions can be worked out from the run's start and its first pass
(`_Run._plan_sweeps`), and makes them in capture order among its per-frame frames; it ends before
one where a connection it evicts speaks again, or where the run's own frames could have changed a
connection's limit before it (a FIN, a DISCONNECT, a frame not steady), as the sweep must then see
the run's frames before it applied and none after. Ending runs at every sweep held them to 30 s of
traffic, a pass's NumPy work for every few thousand frames of a busy broker. A run after one that
was ended early takes at most twice what that one took (and twice as much again each time a run
is not ended early, up to `MAX_RUN`): its first pass judges the frames it is given, so in a
capture of a few clients over days, where such sweeps come every few dozen frames, a run given
the rest of the batch judged thousands of frames to apply a hundred (each frame judged about 50
times over; 2.0 s of passes on 43,000 frames, against 0.36 s now and 0.21 s frame by frame).

A batch whose frames are mostly of shapes the columnar decoder does not take (three VLAN tags,
IP options: `segments.decode`) goes the per-frame way as a whole, after every resident is written
(`Store.clear`): such frames are never steady, and judging them in passes only costs more. So do
the batches after one whose frames were mostly on connections only the per-frame way follows (MQTT
over TLS or WebSocket: `steady.OPAQUE`), but for one in every `PER_FRAME_RETRY`, judged in passes
again in case the traffic changed: such a capture costs what it costs frame by frame. So, for a
few batches and more if it recurs, do the batches after one whose passes cost more than they saved
(frames judged over and over, or most of them sent the per-frame way after all: a capture of a few
busy connections; `JUDGED_A_FRAME`).

An IP frame without TCP (UDP, ICMP: a gateway's capture may be mostly such frames) is only time
to the runs, which count it as skipped (`non_tcp`) in bulk.

In a process of a split analysis (`analyzer.split`), the frames of the connections other processes
track are only time: the runs are cut by them as by any frame, and nothing else is done with them,
except with one that may carry a CONNECT (`CaptureAnalysis.elsewhere`, in capture order, and in
the run's takeover check like a CONNECT of this process's own).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from analyzer.columnar import steady
from analyzer.columnar.segments import Segments, decode
from analyzer.decode.ip import SKIP_NON_TCP
from analyzer.decode.tcp import ACK, FIN, RST, SYN, decode_segment
from analyzer.engine import (CLOCK_LEAP_NS, IDLE_MQTT_MIN_NS, SHORTEST_IDLE_NS, SWEEP_EVERY_NS,
                             idle_limit_ns)
from analyzer.mqtt.detect import connect_client_id
from analyzer.reassembly.flows import FlowKey4
from analyzer.sources.batch import FrameBatch
from analyzer.split import owned

if TYPE_CHECKING:
    from analyzer.engine import CaptureAnalysis
    from analyzer.split import Shard

MAX_RUN = 1 << 17
"""Frames judged together at most."""
MAX_PASSES = 6
"""Passes over a run; in the last, a connection's frames after its first unsteady one all go the
per-frame way, in capture order (a connection that stays unusual costs one pass, not one each)."""
OPAQUE_SHARE = 0.9
"""A batch whose passes met more than this share of its frames on connections only the per-frame
way follows (`steady.OPAQUE`) sends the next ones the per-frame way as a whole."""
JUDGED_A_FRAME = 3.5
"""A batch sends the next ones the per-frame way as a whole too when the frames its passes judged
(a frame left for the next pass is judged again there), plus `SINGLE_JUDGED` for each of its
frames that went the per-frame way among them, come to more than this many times its frames: the
passes cost more than they saved. It sends one batch, the next time two, then four, eight, and
`PER_FRAME_RETRY` - 1 from there, until a batch judged in passes saves time again: a capture's
first batches, where every connection opens (or is joined mid-way), cost more than they save even
on a busy broker.

Timed batch by batch, the passes cost about 1.4 us a frame judged and 1.3 us a frame of the batch;
a frame that goes the per-frame way costs about the same either way, and every other frame about
6.4 us the per-frame way; so the passes save time while 1.4 judged + 1.3 frames < 6.4 (frames -
per-frame ones), that is judged + 4.6 per-frame ones < 3.6 frames. A capture of a few
connections, each with many frames a batch and an unusual one here and there (a late ping, a
reconnect), needs pass after pass over what each unusual frame holds back; one of a few clients
over days, whose idle sweeps end its runs every few dozen frames, sends its frames the per-frame
way after all. On the benchmark's generator (200,000 frames of 5, 60, 150, 400, 1,000 and 20,000
clients, and its 300,000-frame capture), of the pairs tried for this and `SINGLE_JUDGED`, 3.5 and
4.5 lost the least time against the better way for each batch: 0.33 s of the 8.1 s that takes
(always passes: 10.7 s; always the per-frame way: 11.4 s), measured while a run still took the
rest of its batch after one ended early (`ColumnarFeed._reach`). A count of passes alone, which
the time also follows, would send a batch of a few large frames the per-frame way after a single
pass."""
SINGLE_JUDGED = 4.5
"""What a frame that went the per-frame way among a batch's passes counts for, in frames judged
(`JUDGED_A_FRAME`)."""
PER_FRAME_RETRY = 16
"""After such a batch, every this many batches is judged in passes again."""
SLOW_PASS = 0.8
"""Two passes in a row that each left more than this share of their frames for the next make the
next one the last (a run of a few connections whose every frame is unusual, as in a flood of
malformed packets, would otherwise be judged whole `MAX_PASSES` times for a few frames a pass).
One is not enough: a first pass that leaves most frames for a second one that takes them is
common (segments out of order here and there: many connections wait, briefly)."""
PER_FRAME_BELOW = 512
"""A pass over fewer frames is not made: they go the per-frame way, in capture order. A pass costs
NumPy work whatever its size, about what a few hundred frames cost one by one (the benchmark's
split process, counted by callgrind: 4.6% fewer instructions with 512 than with passes of any
size; 128, 256 and 1,024 gain less, 2,048 loses)."""


class ColumnarFeed:
    """Feeds one capture's batches to `analysis`; see the module docstring."""

    def __init__(self, analysis: CaptureAnalysis, *, clock_step_ns: int) -> None:
        """`clock_step_ns`: how far back a timestamp goes before `analysis` takes it for a clock
        step (which touches every connection, so a run ends there)."""
        self.analysis = analysis
        self.clock_step_ns = clock_step_ns
        self._store = steady.Store(analysis)
        self._gid = np.zeros(0, dtype=np.int64)
        self.opaque = 0
        """Frames of the batch met by its passes on `steady.OPAQUE` connections."""
        self.judged = 0
        """Frames the batch's passes judged (`steady.plan`), each as often as it was judged."""
        self.singles = 0
        """Frames of the batch that went the per-frame way while it was judged in passes (in a
        pass, or between runs: at an idle sweep, a clock step, a full flow table)."""
        self._backoff = 1
        """Batches to send the per-frame way after the next one whose passes cost more than they
        saved (`JUDGED_A_FRAME`)."""
        self._reach = MAX_RUN
        """Frames the next run may take at most (see the module docstring)."""
        self._per_frame_batches = 0
        """Batches to send the per-frame way as a whole (see the module docstring)."""

    def finish(self) -> None:
        """The capture's last batch was fed: write every steady connection's state."""
        self._store.flush_all()

    def feed(self, batch: FrameBatch, offset: int = 0) -> None:
        """Take every frame of `batch`; frame numbers are `offset` on from the batch's own."""
        analysis = self.analysis
        n = len(batch)
        if not n:
            return
        if self._per_frame_batches:  # after a batch of MQTT over TLS, or of too many passes
            self._per_frame_batches -= 1
            self._per_frame(batch, offset)
            return
        segs = decode(batch)
        store = self._store
        if 2 * int(np.count_nonzero(segs.simple | segs.non_tcp)) < n:
            # mostly frames of other shapes (three VLAN tags, IP options): nothing for the bulk,
            # and judging them in passes would only add to the per-frame cost
            self._per_frame(batch, offset)
            return
        flows = _FlowIds(batch, segs, self.analysis.shard)
        store.begin(flows.keys)
        self._gid = flows.gid
        ts = batch.ts_ns
        pos = 0
        while pos < n:
            if analysis._next_sweep_ns is None or len(analysis.table) > analysis.table.max_flows // 2:
                store.flush_all()  # the table may shed any connection
                self._one(batch, pos, offset)
                pos += 1
                continue
            room = analysis.table.max_flows - len(analysis.table)  # no flow is shed inside a run
            window = ts[pos:pos + min(self._reach, room)]
            before = np.maximum.accumulate(np.concatenate(([analysis.now_ns], window)))[:-1]
            turn = (((window > before) & (window >= analysis._next_sweep_ns))
                    | (window < before - self.clock_step_ns))
            end = int(np.argmax(turn)) if turn.any() else len(window)
            if end == 0:  # an idle sweep or a clock step, before this frame
                if turn[0] and not 0 <= window[0] - before[0] <= CLOCK_LEAP_NS:
                    store.flush_all()  # every session's timeline hears of the step
                else:
                    store.before_sweep(int(window[0]), IDLE_MQTT_MIN_NS)
                self._one(batch, pos, offset)
                pos += 1
                continue
            sweeps, end = _sweep_points(window, before, end, self.clock_step_ns)
            taken = _Run(self, batch, segs, flows, pos, pos + end, before[:end], offset,
                         [pos + p for p in sweeps]).run() - pos
            self._reach = min(2 * self._reach, MAX_RUN) if taken == end else 2 * taken
            pos += taken
        store.end()
        if self.opaque > OPAQUE_SHARE * n:
            self._per_frame_batches = PER_FRAME_RETRY - 1
        elif self.judged + SINGLE_JUDGED * self.singles > JUDGED_A_FRAME * n:
            self._per_frame_batches = self._backoff
            self._backoff = min(2 * self._backoff, PER_FRAME_RETRY - 1)
        else:
            self._backoff = 1
        self.opaque = self.judged = self.singles = 0

    def _per_frame(self, batch: FrameBatch, offset: int) -> None:
        """Every frame of `batch` the per-frame way, after every resident is written."""
        self._store.clear()
        frame, buf = self.analysis.frame, batch.buf
        first = batch.first_frame + offset
        for frame_no, start, end, ts_ns, linktype in zip(range(first, first + len(batch)),
                                                          *batch.looped()):
            frame(frame_no, ts_ns, linktype, buf[start:end])

    def _one(self, batch: FrameBatch, i: int, offset: int) -> None:
        """Frame `i` the per-frame way (its connection's steady frames written first)."""
        self.singles += 1
        g = int(self._gid[i])
        if g >= 0:
            self._store.flush(int(self._store.rows[g]))
        frame_no, ts_ns, linktype, data, _wire = batch.frame(i)
        self.analysis.frame(frame_no + offset, ts_ns, linktype, data)


def _sweep_points(window: np.ndarray, before: np.ndarray, first: int, clock_step_ns: int
                  ) -> tuple[list[int], int]:
    """The idle sweeps a run starting at `window` (timestamps; `before`: network time before each)
    may hold, from its first turn `first` (a sweep or a clock step; not the run's first frame),
    and where the run must end at the latest (a clock step). A sweep comes at the first frame
    that moves network time past the last one's time and `SWEEP_EVERY_NS`."""
    steps = np.flatnonzero(window[first:] < before[first:] - clock_step_ns)
    stop = first + int(steps[0]) if len(steps) else len(window)
    reached = np.maximum.accumulate(window)
    points: list[int] = []
    at = first
    while at < stop:
        if window[at] - before[at] > CLOCK_LEAP_NS:  # a leap: a clock step, which ends the run
            return points, at
        points.append(at)
        at = int(np.searchsorted(reached, window[at] + SWEEP_EVERY_NS, "left"))
    return points, stop


FOREIGN = -2
"""`_FlowIds.gid` of a frame of a connection another process of a split analysis tracks: it only
moves network time (which the runs are cut by), so it is not applied at all."""
NON_TCP = -3
"""`_FlowIds.gid` of an IP frame that carries no TCP: it moves network time, and the run counts it
as skipped (`non_tcp`), as `CaptureAnalysis.frame` would."""


class _FlowIds:
    """Which TCP connection each frame of a batch belongs to: `gid` (-1: the frame goes the
    per-frame way as it is: not a TCP segment, or another process's segment that may carry a
    CONNECT; `FOREIGN`: another process's segment that cannot) and, per id, the 4-tuple of its
    lower endpoint towards its higher one (`keys`); `lower[i]` tells whether frame i was sent by the
    lower endpoint. `foreign`: the frames of other processes' connections that may carry a CONNECT
    (`CaptureAnalysis.elsewhere` reads them in capture order)."""

    def __init__(self, batch: FrameBatch, segs: Segments, shard: Shard | None = None) -> None:
        n = len(batch)
        a = (segs.src << 16) | segs.sport
        b = (segs.dst << 16) | segs.dport
        lo, hi = np.minimum(a, b), np.maximum(a, b)
        gid = np.where(segs.non_tcp, NON_TCP, -1)
        lower = a <= b
        keys: list[tuple[bytes, int, bytes, int]] = []
        tracked = segs.simple & (a != b)
        self.foreign = np.zeros(n, dtype=bool)
        if shard is not None:
            v6 = tracked & segs.v6
            if shard.only is None:  # IPv6: the sum `owns` hashes, as it keeps it (64 bits)
                sums = (a + b).astype(np.uint64)
                sums[v6] = segs.v6_sum[v6]
                others = tracked & ~owned(shard, sums)
            else:
                others = tracked & ~owned(shard, a + b)
                if v6.any():  # the exact sums `only` holds are beyond 64 bits: `owns` says
                    pairs, pair = _distinct_pairs(segs, lo[v6], hi[v6])
                    others[v6] = ~np.array([shard.owns(key) for key in pairs], dtype=bool)[pair]
            raw = np.frombuffer(batch.buf, dtype=np.uint8)
            first_byte = raw[np.minimum(segs.pay_start, max(len(raw) - 1, 0))]
            self.foreign = others & (segs.pay_len > 0) & (first_byte == 0x10)
            gid[others & ~self.foreign] = FOREIGN
            tracked &= ~others
        simple = np.flatnonzero(tracked)
        if len(simple):
            keys, gid[simple] = _distinct_pairs(segs, lo[simple], hi[simple])
        index = {k: i for i, k in enumerate(keys)}
        self.index = index
        """The connection id of each of `keys`."""
        # other shapes: decoded the per-frame way
        for i in np.flatnonzero(~segs.simple & ~segs.non_tcp).tolist():
            seg = decode_segment(batch.linktype_of(i), batch.frame(i)[3])
            if seg.__class__ is str:
                continue
            one, two = (seg[0], seg[1]), (seg[2], seg[3])  # type: ignore[index]
            if one == two:
                continue
            first, second = (one, two) if one < two else (two, one)
            key = (first[0], first[1], second[0], second[1])
            if shard is not None and not shard.owns(key):
                if seg[7][:1] == b"\x10":  # type: ignore[index]
                    self.foreign[i] = True
                else:
                    gid[i] = FOREIGN
                continue
            if key not in index:
                index[key] = len(keys)
                keys.append(key)
            gid[i] = index[key]
            lower[i] = one < two
            segs.flags[i] = seg[6]  # type: ignore[index]  (the run's SYN rule reads it)
        self.gid, self.keys, self.lower = gid, keys, lower


def _either_way(by_key: dict[FlowKey4, int], key: FlowKey4) -> int | None:
    """`by_key`'s value for a connection's 4-tuple `key`, held from either endpoint's side (a
    batch holds each connection by its lower endpoint first, a table's key by its first frame)."""
    found = by_key.get(key)
    return by_key.get((key[2], key[3], key[0], key[1])) if found is None else found


def _distinct_pairs(segs: Segments, lo: np.ndarray, hi: np.ndarray
                    ) -> tuple[list[tuple[bytes, int, bytes, int]], np.ndarray]:
    """The distinct (lower, higher) endpoint pairs among frames' `lo` and `hi` endpoints
    (`address << 16 | port`), as 4-tuples, and each frame's pair by its index among them."""
    # a pair as one number: each endpoint's rank among its kind
    ulo, ilo = np.unique(lo, return_inverse=True)
    uhi, ihi = np.unique(hi, return_inverse=True)
    uniq, inverse = np.unique(ilo.reshape(-1) * len(uhi) + ihi.reshape(-1), return_inverse=True)
    address = segs.address
    keys = [(address(x >> 16), x & 0xFFFF, address(y >> 16), y & 0xFFFF)
            for x, y in zip(ulo[uniq // len(uhi)].tolist(), uhi[uniq % len(uhi)].tolist())]
    return keys, inverse.reshape(-1)


class _Run:
    """One run of frames (see the module docstring), judged and applied in passes."""

    def __init__(self, feed: ColumnarFeed, batch: FrameBatch, segs: Segments, flows: _FlowIds,
                 lo: int, hi: int, before: np.ndarray, offset: int, sweeps: list[int]) -> None:
        """`sweeps`: where idle sweeps come inside the run (`_sweep_points`)."""
        self.feed, self.batch, self.segs, self.flows = feed, batch, segs, flows
        self.lo, self.hi, self.before, self.offset = lo, hi, before, offset
        self.sweeps = sweeps
        self._due: list[tuple[int, int, list[Any]]] = []
        """The sweeps to make, in order: (position, network time, connections evicted)."""
        self._due_at = hi
        """The position of the first of them (`hi`: none)."""

    def run(self) -> int:
        """Analyse the run's frames; return where the next run starts (a run may end early)."""
        analysis = self.feed.analysis
        store = self.feed._store
        # other processes' frames and frames without TCP only cut runs (they are network time):
        # the passes skip them
        rest = np.flatnonzero(self.flows.gid[self.lo:self.hi] > FOREIGN) + self.lo
        if self.sweeps:  # (flushes the residents any of them might evict)
            store.before_sweep(int(self.batch.ts_ns[self.sweeps[-1]]), IDLE_MQTT_MIN_NS)
            if not len(rest):  # (other processes' frames only: the sweeps still evict ours)
                self._plan_sweeps(rest, np.zeros(0, dtype=bool))
        passes = 0
        last = slow = False
        while len(rest):
            passes += 1
            if len(rest) < PER_FRAME_BELOW:
                if passes == 1 and self.sweeps:
                    self._plan_sweeps(rest, np.zeros(len(rest), dtype=bool))
                    rest = rest[rest < self.hi]
                self._singly(rest)
                break
            last = last or passes == MAX_PASSES
            plan = self._plan(rest, last)
            if passes == 1:
                cuts = plan.deferred[(self.segs.flags[plan.deferred] & (SYN | ACK)) == SYN][:1].tolist()
                if len(plan.deferred):
                    cuts += self._takeover_cut(plan)
                if cuts and 2 * (min(cuts) - self.lo) >= self.hi - self.lo:
                    # see the module docstring: end the run before it
                    self.hi = min(cuts)
                    rest = rest[rest < self.hi]
                    plan = self._plan(rest, last)
                elif cuts:  # early in the run: its first pass is its last instead
                    last = True
                    plan = self._plan(rest, True)
                if self.sweeps and self._plan_sweeps(plan.rest, plan.fast):
                    rest = rest[rest < self.hi]
                    if len(rest) < PER_FRAME_BELOW:
                        self._singly(rest)
                        break
                    plan = self._plan(rest, last)
            self._apply(plan)
            self.feed.opaque += plan.opaque
            # two passes in a row that took few of their frames: the next is the last
            slow, was_slow = len(plan.deferred) > SLOW_PASS * len(rest), slow
            last = slow and was_slow
            rest = plan.deferred
        while self._due_at < self.hi:  # sweeps after the run's last frame the per-frame way
            self._sweep({})
        analysis.now_ns = max(analysis.now_ns, int(self.batch.ts_ns[self.lo:self.hi].max()))
        analysis.last_frame = self.batch.first_frame + self.offset + self.hi - 1
        skipped = int(np.count_nonzero(self.flows.gid[self.lo:self.hi] == NON_TCP))
        if skipped:
            analysis.skipped[SKIP_NON_TCP] += skipped
        return self.hi

    def _plan(self, rest: np.ndarray, last: bool) -> steady.Plan:
        """`steady.plan` of the frames `rest`, counted (`ColumnarFeed.judged`)."""
        self.feed.judged += len(rest)
        return steady.plan(self.feed._store, self.batch, self.segs, self.flows, rest, self.offset,
                           last)

    def _singly(self, rest: np.ndarray) -> None:
        """The frames `rest` one by one, in capture order."""
        gid = self.flows.gid[rest]
        tcp = gid >= 0
        slots = np.full(len(rest), -1, dtype=np.int64)
        slots[tcp] = self.feed._store.rows[gid[tcp]]
        self._each(rest, slots, {})

    def _each(self, positions: np.ndarray, slots: np.ndarray, pending: dict[int, steady.Work],
              opens: set[int] | frozenset[int] = frozenset()) -> None:
        """Frames `positions` (ascending) through `CaptureAnalysis.frame`, as `ColumnarFeed._one`
        takes one, each with network time as it stood just before it; `slots`: their connections'
        rows in the store (-1: none), whose steady frames (`pending`, or a resident's) are written
        first. The frames' columns are read once for all of them."""
        feed, batch = self.feed, self.batch
        analysis = feed.analysis
        frame, write, buf = analysis.frame, self._write, batch.buf
        first = batch.first_frame + self.offset
        feed.singles += len(positions)
        starts, ends, stamps, linktypes = batch.looped(positions)
        for i, g, start, end, ts_ns, now_ns, linktype in zip(
                positions.tolist(), slots.tolist(), starts, ends, stamps,
                self.before[positions - self.lo].tolist(), linktypes):
            while i >= self._due_at:
                self._sweep(pending)
            if opens and i in opens:
                self._open(i, g, first + i, ts_ns, now_ns, pending)
                continue
            if g >= 0:
                write(g, pending)
            analysis.now_ns = now_ns  # network time just before frame i
            frame(first + i, ts_ns, linktype, buf[start:end])

    def _plan_sweeps(self, rest: np.ndarray, fast: np.ndarray) -> bool:
        """Work out ahead what each idle sweep inside the run evicts (`_due`), from the frames
        `rest` of its first pass (`fast`: the steady ones); end the run before the first sweep
        where that cannot be known, or where a connection it evicts speaks again (it would be
        a new connection), and return whether it was ended.

        A sweep reads each connection's last activity and idle limit as they stand at its frame.
        Every limit is at least `SHORTEST_IDLE_NS`, so a connection that spoke more recently in
        the run is not evicted. One that did not speak in the run before the sweep stands as at
        the run's start. One that spoke longer ago stands as its last frame before the sweep
        left it, which is known where its frames up to there were all steady (they change no
        limit: no SYN, FIN or RST, no CONNECT or DISCONNECT); otherwise the run ends there."""
        analysis, ts = self.feed.analysis, self.batch.ts_ns
        gid = self.flows.gid[rest]
        tcp = gid >= 0
        at, gid = rest[tcp], gid[tcp]
        changing = ~fast[tcp] | ((self.segs.flags[at] & (FIN | RST)) != 0)
        index, keys = self.flows.index, self.flows.keys
        count = len(keys)
        gone: set[int] = set()  # evicted by an earlier sweep of the run
        for p in self.sweeps:
            if p >= self.hi:
                break
            now = int(ts[p])
            early = at < p
            # each connection's last activity before the sweep: its last frame's time
            latest = np.full(count, -1, dtype=np.int64)
            np.maximum.at(latest, gid[early], at[early])
            last = np.where(latest >= 0, ts[np.maximum(latest, 0)], -1)
            later = np.zeros(count, dtype=bool)
            later[gid[~early]] = True
            unsure = np.zeros(count, dtype=bool)
            unsure[gid[early & changing]] = True
            evicted = []
            for flow in analysis.idle_flows(now):
                if id(flow) in gone:
                    continue
                g = _either_way(index, flow.key_a)
                if g is not None:
                    if last[g] >= 0:
                        continue  # it spoke in the run: below
                    if later[g]:
                        return self._cut(p)
                evicted.append(flow)
            spoke = np.flatnonzero((last >= 0) & (now - last > SHORTEST_IDLE_NS))
            if len(spoke):
                if unsure[spoke].any():
                    return self._cut(p)
                more = []
                for g, stamp in zip(spoke.tolist(), last[spoke].tolist()):
                    entry = analysis.table.get(keys[g])
                    if entry is None:
                        return self._cut(p)
                    if now - stamp > idle_limit_ns(entry[0]):
                        if later[g]:
                            return self._cut(p)
                        more.append(entry[0])
                if more:  # (in the table's order, as a sweep evicts)
                    order = {id(flow): i for i, flow in enumerate(analysis.table.flows())}
                    evicted = sorted(evicted + more, key=lambda flow: order[id(flow)])
            gone.update(id(flow) for flow in evicted)
            self._due.append((p, now, evicted))
        self._due_at = self._due[0][0] if self._due else self.hi
        return False

    def _cut(self, p: int) -> bool:
        """End the run before the sweep at `p` (which goes the per-frame way)."""
        self.hi = p
        self._due = [due for due in self._due if due[0] < p]
        self._due_at = self._due[0][0] if self._due else p
        return True

    def _sweep(self, pending: dict[int, steady.Work]) -> None:
        """The next of the run's sweeps (`_due`): the connections it evicts, their steady frames
        written first."""
        p, now, evicted = self._due.pop(0)
        self._due_at = self._due[0][0] if self._due else self.hi
        row_of = self.feed._store.row_of
        for flow in evicted:
            row = _either_way(row_of, flow.key_a)
            if row is not None:
                self._write(row, pending)
        self.feed.analysis.swept(self.batch.first_frame + self.offset + p, now, evicted)

    def _write(self, row: int, pending: dict[int, steady.Work]) -> None:
        """Write connection `row`'s steady frames into its objects (its `pending` work, or a
        resident's state), before they are read one by one."""
        work = pending.pop(row, None) if pending else None
        if work is not None:
            steady.apply(work)
        self.feed._store.flush(row)

    def _open(self, i: int, g: int, frame_no: int, ts_ns: int, now_ns: int,
              pending: dict[int, steady.Work]) -> None:
        """Frame `i` opens a connection the analysis ignores (`steady.Plan.opens`): number it,
        then write its steady frames after this one."""
        analysis = self.feed.analysis
        key = self.flows.keys[self.flows.gid[i]]
        if not self.flows.lower[i]:
            key = (key[2], key[3], key[0], key[1])
        analysis.now_ns = now_ns
        flow = analysis.opened_other(frame_no, ts_ns, key, int(self.segs.flags[i]))
        work = pending.pop(g, None)
        if work is not None:
            work.flow = flow
            steady.apply(work)

    def _takeover_cut(self, plan: steady.Plan) -> list[int]:
        """Where the run must end so that a CONNECT that may take an older session over by client
        id is handled in capture order with every other frame (`[]`: nowhere).

        Frames wait for later passes only after the first deferred one, so a CONNECT before it
        needs nothing. After it, a CONNECT is harmless when its client id belongs to no open
        session and to no other CONNECT of the run; data that cannot be read as a CONNECT (inside
        TLS or WebSocket, cut, or another packet first) is not trusted to be harmless."""
        first = int(plan.deferred[0])
        taken = self.feed.analysis._latest_by_client_id
        seen: set[str] = set()
        settled: set[int] = set()  # connections past their first data: nothing later counts
        examined: set[int] = set()
        batch, segs, at = self.batch, self.segs, plan.unsettled
        buf = batch.buf
        # a frame of the shape the columnar decoder takes is read from its columns, any other
        # is decoded again
        for i, undecided, g, foreign, simple, start, end, sport, dport in zip(
                at.tolist(), plan.undecided.tolist(), self.flows.gid[at].tolist(),
                self.flows.foreign[at].tolist(), segs.simple[at].tolist(), segs.pay_start[at].tolist(),
                (segs.pay_start[at] + segs.pay_len[at]).tolist(), segs.sport[at].tolist(),
                segs.dport[at].tolist()):
            if g in settled:
                continue
            if simple:
                payload: bytes | None = buf[start:end]
            else:
                seg = decode_segment(batch.linktype_of(i), batch.frame(i)[3])
                payload = None if seg.__class__ is str else seg[7]  # type: ignore[index]
                if payload is not None:
                    sport, dport = seg[1], seg[3]  # type: ignore[index]
            client_id = None if payload is None else connect_client_id(payload)
            if client_id is None:
                if foreign:  # another process's connection: only a whole CONNECT counts there
                    continue
                if (undecided and g not in examined and payload is not None
                        and self._stays_other(sport, dport, payload)):
                    settled.add(g)
                    continue
                examined.add(g)
                harmless = False
            else:
                if not foreign:  # (the others' frames share one id: no bookkeeping by it)
                    examined.add(g)
                    settled.add(g)
                older = taken.get(client_id) if client_id else None
                harmless = not client_id or (client_id not in seen and (older is None or older.ended))
                seen.add(client_id)
            if not harmless and i > first:
                return [i]
        return []

    def _stays_other(self, sport: int, dport: int, payload: bytes) -> bool:
        """A connection on no MQTT port whose first data opens nothing MQTT could be carried in (not
        a CONNECT, even one cut short, a ClientHello, or an HTTP upgrade): it will be ignored, so no
        CONNECT can come."""
        ports = self.feed.analysis.ports
        if sport in ports or dport in ports:
            return False
        return self.feed.analysis.ignored_at_first_data(payload)

    def _apply(self, plan: steady.Plan) -> None:
        """The pass's steady frames in bulk and its other frames one by one, in capture order."""
        feed = self.feed
        pending = steady.commit(feed._store, plan, self.batch, self.segs)
        self._each(plan.single, plan.single_slot, pending, plan.opens)
        for work in pending.values():
            steady.apply(work)

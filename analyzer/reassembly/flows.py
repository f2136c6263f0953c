"""The table of TCP connections in one capture: lookup, stream numbering, reuse and eviction.

Each connection is stored under both of its direction keys `(src_ip, src_port, dst_ip, dst_port)`,
with a flag saying whether that key is the connection's side A (the side of its first frame), so the
per-frame lookup is a single dictionary access. Connections are numbered as Wireshark numbers
`tcp.stream`: in order of their first frame, a new number when a SYN reopens a 4-tuple whose
previous connection had ended. An evicted connection that comes back keeps its number.

Memory is bounded: idle connections are evicted on network time (`sweep`), and the table never
holds more than `max_flows` connections (the least recently active go first).
"""

from __future__ import annotations

from array import array
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Callable

FlowKey4 = tuple[bytes, int, bytes, int]

UNDECIDED, MQTT, OTHER = 0, 1, 2
"""What a connection carries: not known yet, MQTT (tracked in full), or something else (ignored)."""

MAX_FLOWS = 200_000
MAX_REMEMBERED = 16_384


class Flow:
    """One TCP connection. `state` holds the per-protocol work (reassembly, MQTT) once decided."""

    __slots__ = ("index", "key_a", "kind", "first_frame", "first_ns", "last_ns", "syn_seq",
                 "syn_seen", "closed", "state")

    def __init__(self, index: int, key_a: FlowKey4, frame_no: int, ts_ns: int) -> None:
        self.index = index
        self.key_a = key_a
        self.kind = UNDECIDED
        self.first_frame, self.first_ns, self.last_ns = frame_no, ts_ns, ts_ns
        self.syn_seq: int | None = None
        self.syn_seen = False
        self.closed = False
        """A FIN or RST was seen: a later SYN on the same 4-tuple starts a new connection."""
        self.state: Any = None


@dataclass
class TableLog:
    """What a table did that another table's numbering could depend on, for an analysis split
    over processes by connection (`analyzer.split`): each process's table holds only its own
    connections, so its limits bite later than one table's would."""

    first_frames: array = field(default_factory=lambda: array("q"))
    """The frame of each stream number's first connection, by number."""
    remembered_frames: array = field(default_factory=lambda: array("q"))
    """The frame of every eviction that remembered a number, in order (a memory's id is its
    position here)."""
    remembered_created: array = field(default_factory=lambda: array("q"))
    """The first frame of each remembered connection (a sweep evicts in that order)."""
    returns: dict[int, tuple[int, int]] = field(default_factory=dict)
    """Connections that came back to a remembered number: by the number of their own they were
    given instead, (memory id, the number they came back to). So their records stay apart, for
    the case where one table would have forgotten that number."""
    limit: int = MAX_FLOWS
    """The table's `max_flows`."""
    peak: int = 0
    """The most connections held at once."""
    shed: bool = False
    """`max_flows` was reached."""


class FlowTable:
    """All connections of one capture; see the module docstring."""

    def __init__(self, on_evict: Callable[[Flow, int, int], None],
                 max_flows: int = MAX_FLOWS) -> None:
        self._by_key: dict[FlowKey4, tuple[Flow, bool]] = {}
        self._flows: dict[FlowKey4, Flow] = {}
        """Every connection once, by its side A key, in the order they were created (what sweeps
        walk: half of `_by_key`)."""
        self._remembered: OrderedDict[FlowKey4, tuple[int, int]] = OrderedDict()
        """Evicted connections that had not ended: key -> (stream number, id in `log`)."""
        self.on_evict = on_evict
        self.max_flows = max_flows
        self.streams = 0
        """How many connections were numbered (the capture's `tcp_streams`)."""
        self.log: TableLog | None = None
        """Kept only when asked for (`analyzer.split`)."""

    def __len__(self) -> int:
        return len(self._flows)

    def keep_log(self) -> None:
        """Keep a `TableLog` from now on."""
        self.log = TableLog(limit=self.max_flows)

    @property
    def get(self):  # noqa: ANN201 - the dict's own get: one call on the per-frame path, not two
        """`get(key) -> (flow, key is side A) | None`."""
        return self._by_key.get

    def create(self, key: FlowKey4, frame_no: int, ts_ns: int, *, reopen: bool = False) -> tuple[Flow, bool]:
        """A connection seen for the first time (or reopened by a SYN after it had ended)."""
        reverse = (key[2], key[3], key[0], key[1])
        known = None if reopen else self._remembered.pop(key, None)
        if known is None:
            known = self._remembered.pop(reverse, None) if not reopen else None
        log = self.log
        if known is not None and log is None:
            index = known[0]  # it comes back to its number
        else:  # a new number; in a split analysis, also for one that comes back (`TableLog`)
            index = self.streams
            self.streams += 1
            if log is not None:
                log.first_frames.append(frame_no)
                if known is not None:
                    log.returns[index] = (known[1], known[0])
        flow = Flow(index, key, frame_no, ts_ns)
        self._by_key[reverse] = (flow, False)
        self._by_key[key] = (flow, True)  # (after: a connection to itself is side A both ways)
        self._flows[key] = flow
        if log is not None and len(self._flows) > log.peak:
            log.peak = len(self._flows)
        if len(self._flows) > self.max_flows:
            if log is not None:
                log.shed = True
            self._shed(ts_ns, frame_no)
        return flow, True

    def remove(self, flow: Flow) -> None:
        key = flow.key_a
        self._by_key.pop(key, None)
        self._by_key.pop((key[2], key[3], key[0], key[1]), None)
        self._flows.pop(key, None)

    def flows(self) -> list[Flow]:
        """Every connection once, in the order they were created (a copy: safe to evict from)."""
        return list(self._flows.values())

    def sweep(self, now_ns: int, frame_no: int, idle_limit_ns: Callable[[Flow], int],
              shortest_ns: int = 0) -> None:
        """Evict every connection idle for longer than its limit; no limit is below `shortest_ns`
        (so the limit of a connection active since then is not worked out)."""
        for flow in self.idle(now_ns, idle_limit_ns, shortest_ns):
            self.evict(flow, frame_no, now_ns)

    def idle(self, now_ns: int, idle_limit_ns: Callable[[Flow], int],
             shortest_ns: int = 0) -> list[Flow]:
        """The connections `sweep` would evict at `now_ns`, in the order it would (a list: safe to
        evict from)."""
        return [flow for flow in self._flows.values() if now_ns - flow.last_ns > shortest_ns
                and now_ns - flow.last_ns > idle_limit_ns(flow)]

    def evict(self, flow: Flow, frame_no: int, now_ns: int) -> None:
        self.remove(flow)
        if not flow.closed:
            log = self.log
            memory = -1
            if log is not None:
                memory = len(log.remembered_frames)
                log.remembered_frames.append(frame_no)
                log.remembered_created.append(flow.first_frame)
            self._remembered[flow.key_a] = (flow.index, memory)
            if len(self._remembered) > MAX_REMEMBERED:
                self._remembered.popitem(last=False)
        self.on_evict(flow, frame_no, now_ns)

    def _shed(self, now_ns: int, frame_no: int) -> None:
        """Over `max_flows`: drop the least recently active tenth, non-MQTT connections first."""
        ranked = sorted(self.flows(), key=lambda f: (f.kind == MQTT, f.last_ns))
        for flow in ranked[: max(1, len(ranked) // 10)]:
            self.evict(flow, frame_no, now_ns)

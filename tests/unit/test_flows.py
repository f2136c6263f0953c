"""FlowTable: connection lookup from either direction, Wireshark `tcp.stream` numbering, eviction."""

from __future__ import annotations

import pytest

from analyzer.reassembly.flows import MQTT, OTHER, Flow, FlowTable

A = (b"\x0a\x00\x00\x01", 50_000, b"\x0a\x00\x00\x02", 1883)
B = (b"\x0a\x00\x00\x03", 50_001, b"\x0a\x00\x00\x02", 1883)
C = (b"\x0a\x00\x00\x04", 50_002, b"\x0a\x00\x00\x02", 8883)


def reverse(key: tuple) -> tuple:
    return (key[2], key[3], key[0], key[1])


class Evictions:
    def __init__(self) -> None:
        self.seen: list[tuple[int, int, int]] = []

    def __call__(self, flow: Flow, frame_no: int, now_ns: int) -> None:
        self.seen.append((flow.index, frame_no, now_ns))


def table(max_flows: int = 1000) -> tuple[FlowTable, Evictions]:
    ev = Evictions()
    return FlowTable(ev, max_flows=max_flows), ev


def test_lookup_from_both_directions() -> None:
    t, _ = table()
    flow, _ = t.create(A, 1, 100)
    assert t.get(A) == (flow, True)
    assert t.get(reverse(A)) == (flow, False)
    assert t.get(B) is None
    assert len(t) == 1
    assert (flow.first_frame, flow.first_ns, flow.key_a) == (1, 100, A)


def test_a_connection_to_itself_is_one_connection_swept_like_any_other() -> None:
    """TCP's self-connect (a socket connected to its own address and port: both directions have
    one key) is listed, counted and evicted once, as side A both ways."""
    self_connected = (A[0], A[1], A[0], A[1])
    t, ev = table()
    flow, _ = t.create(self_connected, 1, 100)
    other, _ = t.create(B, 2, 100)
    assert t.get(self_connected) == (flow, True)
    assert len(t) == 2 and t.flows() == [flow, other]
    t.sweep(10**12, 3, lambda f: 0)
    assert [index for index, _, _ in ev.seen] == [flow.index, other.index]
    assert len(t) == 0 and t.flows() == [] and t.get(self_connected) is None


def test_streams_numbered_in_order_of_first_frame() -> None:
    t, _ = table()
    flows = [t.create(key, i, i * 10)[0] for i, key in enumerate([A, B, C], start=1)]
    assert [f.index for f in flows] == [0, 1, 2]
    assert list(t.flows()) == flows
    assert t.streams == 3


@pytest.mark.parametrize(("closed", "reopen", "same_key", "index"), [
    (False, False, True, 0),      # idle-evicted, comes back: keeps tcp.stream
    (False, False, False, 0),     # ...even when its first frame now comes from the other side
    (True, False, True, 1),       # ended with FIN/RST: a new connection
    (False, True, True, 1),       # a SYN reopens the 4-tuple: a new connection
])
def test_evicted_connection_coming_back(closed: bool, reopen: bool, same_key: bool, index: int) -> None:
    t, ev = table()
    flow, _ = t.create(A, 1, 100)
    flow.closed = closed
    t.evict(flow, 5, 500)
    assert ev.seen == [(0, 5, 500)] and t.get(A) is None and len(t) == 0
    again, _ = t.create(A if same_key else reverse(A), 9, 900, reopen=reopen)
    assert again.index == index
    assert t.streams == index + 1


def test_sweep_evicts_only_idle_connections() -> None:
    t, ev = table()
    old, _ = t.create(A, 1, 0)
    new, _ = t.create(B, 2, 0)
    new.last_ns = 50
    t.sweep(100, 3, lambda f: 60)
    assert ev.seen == [(old.index, 3, 100)]
    assert [f.index for f in t.flows()] == [new.index]


def test_sweep_uses_each_connections_own_limit() -> None:
    t, ev = table()
    mqtt, _ = t.create(A, 1, 0)
    mqtt.kind = MQTT
    other, _ = t.create(B, 2, 0)
    other.kind = OTHER
    t.sweep(100, 3, lambda f: 1000 if f.kind == MQTT else 10)
    assert [i for i, _, _ in ev.seen] == [other.index]


def test_table_never_exceeds_max_flows_and_sheds_non_mqtt_first() -> None:
    t, ev = table(max_flows=10)
    flows = []
    for i in range(10):
        flow, _ = t.create((bytes([10, 0, 1, i]), 40_000 + i, b"\x0a\x00\x00\x02", 1883), i + 1, i)
        flow.kind = MQTT if i < 5 else OTHER     # the oldest five carry MQTT
        flows.append(flow)
    t.create(C, 11, 10)
    assert len(t) <= 10
    shed = [i for i, _, _ in ev.seen]
    assert shed and all(flows[i].kind == OTHER for i in shed)
    assert shed[0] == 5      # the least recently active non-MQTT connection goes first

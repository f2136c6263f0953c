"""Property: the columnar path and the frame-by-frame path give identical reports (Hypothesis).

Random small captures (Ethernet / IPv4 / TCP, linktype 1, written with `struct`) of a few MQTT
clients talking to a broker on port 1883 (now and then 1884, found by the CONNECT): TCP handshakes,
CONNECT (3.1.1, Keep Alive 1-5 s, rarely 0 or 5.0 with a Server Keep Alive; client ids from a small
pool, so that a newer connection can take an older one's session over; a second CONNECT), PINGREQ /
PINGRESP (answered, late, unanswered, unsolicited), PUBLISH in one segment, split over segments
or several in one, broker PUBLISHes, pure ACKs, retransmissions, segments out of order or never
captured, FIN, RST and DISCONNECT, a later connection on the same 4-tuple, connections that start
mid-stream, frames of other shapes (VLAN tag, IP options, cut by the snap length), noise (HTTP,
UDP), and time that jumps: gaps around K and 1.5 K, beyond the analyzer's idle sweep
(`engine.SWEEP_EVERY_NS`, where the columnar path's runs end), beyond idle eviction, and backwards
(jitter and clock steps). The report with `Options(columnar=True)` must equal the one with
`columnar=False`: the JSON document, and the report's records (which also hold the gap samples).

A failing example's capture is kept at `columnar-property-failure.pcap` in the temporary
directory, to replay with `mqtt-keepalive analyze`.
"""

from __future__ import annotations

import functools
import random
import struct
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from analyzer import engine
from analyzer.reassembly.flows import FlowTable
from tests.builders import (
    PINGREQ, PINGRESP, SERVER_KEEP_ALIVE, connack, connect, disconnect, prop_u16, properties, puback,
    publish,
)
from tests.unit.test_columnar_equivalence import (  # noqa: F401 (an autouse fixture)
    _load_generate,
    passes_of_any_size,
    report_differences,
)
from tests.unit.test_pipeline_variants import write_pcap

SETTINGS = settings(max_examples=60, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
NS = 1_000_000_000
US = 1_000
MS = 1_000_000
T0 = 1_780_000_000 * NS
BROKER = bytes([10, 0, 0, 1])
MOD = 1 << 32
SYN, FIN, RST, PSH, ACK = 0x02, 0x01, 0x04, 0x08, 0x10
CLIENT_IDS = ("dev-a", "dev-b", "dev-c")
ip_tcp = _load_generate()._ip_tcp
"""Ethernet + IPv4 + TCP frame builder of `bench/generate.py`."""

# -- a capture under construction ----------------------------------------------------------------


@dataclass
class Conn:
    """One TCP connection of a client to the broker; `c()`/`s()` send a segment from either side."""

    cap: Capture
    ip: bytes
    port: int
    cseq: int
    sseq: int
    server_port: int = 1883
    open: bool = True
    sent: dict[bool, bytes] = field(default_factory=dict)
    """The last data frame of each side (True: the client), for retransmissions."""

    def frame(self, from_client: bool, payload: bytes = b"", flags: int = PSH | ACK) -> bytes:
        """A segment of this connection (not written); advances that side's sequence number."""
        step = len(payload) + (1 if flags & (SYN | FIN) else 0)
        if from_client:
            data = ip_tcp(self.ip, self.port, BROKER, self.server_port, self.cseq, self.sseq, flags, payload)
            self.cseq = (self.cseq + step) % MOD
        else:
            data = ip_tcp(BROKER, self.server_port, self.ip, self.port, self.sseq, self.cseq, flags, payload)
            self.sseq = (self.sseq + step) % MOD
        if payload:
            self.sent[from_client] = data
        return data

    def c(self, payload: bytes = b"", flags: int = PSH | ACK, dt_ns: int = 50 * US) -> None:
        self.cap.add(self.frame(True, payload, flags), dt_ns)

    def s(self, payload: bytes = b"", flags: int = PSH | ACK, dt_ns: int = 50 * US) -> None:
        self.cap.add(self.frame(False, payload, flags), dt_ns)

    def handshake(self) -> None:
        self.c(flags=SYN)
        self.s(flags=SYN | ACK)
        self.c(flags=ACK)

    def session(self, client_id: str, keep_alive: int) -> None:
        """Handshake, CONNECT and CONNACK: an MQTT session in its steady state."""
        self.handshake()
        self.c(connect(keep_alive=keep_alive, client_id=client_id))
        self.s(connack())


class Capture:
    """Frames with their timestamps, written as a nanosecond pcap (linktype 1)."""

    def __init__(self) -> None:
        self.frames: list[tuple[int, bytes]] = []
        self.now = T0

    def add(self, data: bytes, dt_ns: int = 50 * US) -> None:
        self.now += dt_ns
        self.frames.append((self.now, data))

    def wait(self, dt_ns: int) -> None:
        """Move the clock (backwards too); the next frame comes `dt_ns` after the last one."""
        self.now = max(self.now + dt_ns, T0 // 2)

    def conn(self, n: int, *, seq: int = 1000) -> Conn:
        """Client `n`'s connection (always from the same port: a new one reuses the 4-tuple)."""
        return Conn(self, bytes([10, 1, 0, n + 1]), 40000 + n, seq % MOD, (seq * 7 + 5000) % MOD)

    def write(self, path: Path) -> Path:
        return write_pcap(path, 1, self.frames)


# -- random scripts ------------------------------------------------------------------------------

HEALTHY = ("ping", "publish", "split", "coalesced", "inbound", "ack", "qos1")
UNUSUAL = ("ping_unanswered", "pingresp", "retransmit", "out_of_order", "drop", "odd_frame", "fin",
           "rst", "disconnect", "noise", "connect")
SWEEP_MS = engine.SWEEP_EVERY_NS // MS
GAPS_MS = [  # (weight, low, high): the gap before a step
    (30, 0, 30),                                # back to back
    (30, 100, 1_500),                           # well inside any Keep Alive
    (20, 1_500, 9_000),                         # around K and 1.5 K (K is 1 to 5 s)
    (4, 30_000, 45_000),                        # longer than K, sweep or not
    (4, SWEEP_MS, SWEEP_MS + 15_000),           # past an idle sweep of the analyzer
    (2, 60_000, 700_000),                       # past idle eviction of closed and MQTT connections
    (6, -9, -1),                                # frames a few ms out of order (not a clock step)
    (6, -4_000, -11),                           # the clock steps back
]
_WEIGHTS = [w for w, _, _ in GAPS_MS]


def gap_ns(choice: int, value: int) -> int:
    bucket = choice % sum(_WEIGHTS)
    for weight, low, high in GAPS_MS:
        if bucket < weight:
            return (low + value % (high - low + 1)) * MS
        bucket -= weight
    raise AssertionError


kinds = st.one_of(st.sampled_from(HEALTHY), st.sampled_from(HEALTHY), st.sampled_from(HEALTHY),
                  st.sampled_from(UNUSUAL))
"""Mostly the steady traffic the columnar path takes in bulk, with something unusual now and then."""
steps = st.tuples(st.integers(0, 3), kinds, st.integers(0, sum(_WEIGHTS) - 1), st.integers(0, 1 << 20),
                  st.integers(0, 255))
"""(client, what it does, gap kind, gap value, a parameter for the variants of what it does)"""
scripts = st.lists(steps, min_size=20, max_size=120)


def build(script: list[tuple[int, str, int, int, int]]) -> Capture:
    """Interpret a script: each step waits its gap, then does one thing on its client's
    connection (opening a new one, on the same 4-tuple, when there is none)."""
    cap = Capture()
    conns: dict[int, Conn] = {}
    for client, kind, choice, value, p in script:
        cap.wait(gap_ns(choice, value))
        if kind == "noise":
            _noise(cap, client, p)
            continue
        conn = conns.get(client)
        if conn is None or not conn.open:
            seq = MOD - 40 + p if p % 5 == 0 else 1000 + 7919 * client + 104_729 * p  # some wrap
            conns[client] = conn = cap.conn(client, seq=seq)
            # 1884: MQTT found by its CONNECT (whole, or cut in two when p % 8 == 6)
            conn.server_port = 1884 if p % 16 in (9, 14) else 1883
            _open(conn, p)
            continue
        _STEPS[kind](cap, conn, p)
    return cap


def _open(conn: Conn, p: int) -> None:
    """A new connection: handshake, CONNECT (sometimes split, sometimes its CONNACK missing), or
    one already running when the capture started (no handshake, no CONNECT)."""
    if p % 8 == 7:
        conn.c(PINGREQ)
        conn.s(PINGRESP)
        return
    conn.handshake()
    keep_alive = 0 if p % 64 == 13 else 1 + (p >> 3) % 5
    level = 5 if p % 32 == 21 else 4
    raw = connect(level=level, keep_alive=keep_alive, client_id=CLIENT_IDS[(p >> 5) % 3])
    if p % 8 == 6:
        conn.c(raw[:5])
        conn.c(raw[5:])
    else:
        conn.c(raw)
    if p % 16 != 5:
        conn.s(connack() if level == 4 else
               connack(props=properties(prop_u16(SERVER_KEEP_ALIVE, 1 + (p >> 6) % 4))))


def _ping(cap: Capture, conn: Conn, p: int) -> None:
    conn.c(PINGREQ)
    latency = (p % 4) * 400 * MS if p % 3 == 0 else (1 + p % 20) * MS  # some answered late
    conn.s(PINGRESP, dt_ns=latency)
    if p % 2:
        conn.c(flags=ACK)


def _second_connect(cap: Capture, conn: Conn, p: int) -> None:
    """A CONNECT on a connection that already sent one (a protocol violation)."""
    conn.c(connect(keep_alive=1 + p % 5, client_id=CLIENT_IDS[p % 3]))
    conn.s(flags=ACK)


def _ping_unanswered(cap: Capture, conn: Conn, p: int) -> None:
    conn.c(PINGREQ)
    conn.s(flags=ACK)


def _pingresp(cap: Capture, conn: Conn, p: int) -> None:
    """The late answer to an unanswered PINGREQ, or an unsolicited one."""
    conn.s(PINGRESP)


def _publish(cap: Capture, conn: Conn, p: int) -> None:
    conn.c(publish("t/a", b"x" * (p % 40) * 3))
    conn.s(flags=ACK)


def _qos1(cap: Capture, conn: Conn, p: int) -> None:
    conn.c(publish("t/q", b"1" * (p % 50), qos=1, packet_id=1 + p))
    conn.s(puback(1 + p))


def _split(cap: Capture, conn: Conn, p: int) -> None:
    """A PUBLISH over two to four segments; some cuts fall inside its fixed header."""
    raw = publish("t/split", b"y" * (60 + 8 * p))
    cuts = sorted({1 + p % 3, 2 + p % 50, len(raw) // 2})[: 1 + p % 3]
    for a, b in zip([0, *cuts], [*cuts, len(raw)]):
        conn.c(raw[a:b], dt_ns=(1 + p % 7) * 100 * US)
    conn.s(flags=ACK)


def _coalesced(cap: Capture, conn: Conn, p: int) -> None:
    """Two to four packets in one segment."""
    packets = [publish("t/c", b"z" * (p % 9)), PINGREQ, publish("t/d", b"w" * 5), publish("t/e")]
    if p % 2:
        packets[0], packets[1] = packets[1], packets[0]
    chosen = packets[: 2 + (p >> 1) % 3]
    conn.c(b"".join(chosen))
    conn.s(PINGRESP)


def _inbound(cap: Capture, conn: Conn, p: int) -> None:
    """Broker PUBLISHes: one or two in a segment, sometimes one over two segments."""
    conn.s(publish("cmd/x", b"q" * (p % 30)) * (1 + p % 2))
    if p % 4 == 3:
        raw = publish("cmd/y", b"r" * 200)
        conn.s(raw[:3])
        conn.s(raw[3:])
    conn.c(flags=ACK)


def _ack(cap: Capture, conn: Conn, p: int) -> None:
    (conn.c if p % 2 else conn.s)(flags=ACK)


def _retransmit(cap: Capture, conn: Conn, p: int) -> None:
    last = conn.sent.get(bool(p % 2))
    if last is not None:
        cap.add(last, (1 + p % 200) * MS)


def _out_of_order(cap: Capture, conn: Conn, p: int) -> None:
    raw = publish("t/ooo", b"o" * (20 + p))
    cut = 1 + p % (len(raw) - 1)
    first, second = conn.frame(True, raw[:cut]), conn.frame(True, raw[cut:])
    cap.add(second)
    cap.add(first)
    conn.s(flags=ACK)


def _drop(cap: Capture, conn: Conn, p: int) -> None:
    """Client bytes the capture missed (the first part of a PUBLISH, or all of it), sometimes
    acknowledged by the broker."""
    raw = publish("t/drop", b"d" * (30 + p))
    cut = 1 + p % (len(raw) - 1)
    conn.frame(True, raw[:cut])  # never captured
    kept = conn.frame(True, raw[cut:])
    if p % 2:
        cap.add(kept)
    if p % 3:
        conn.s(flags=ACK)


def _odd_frame(cap: Capture, conn: Conn, p: int) -> None:
    """A PINGREQ in a frame of another shape: with an 802.1Q tag, with IP options, or cut by the
    snap length (the PUBLISH it starts was not captured whole)."""
    if p % 3 == 2:
        data = conn.frame(True, publish("t/snap", b"s" * 100))
        cap.add(data[:-40 - p % 50])
    else:
        data = conn.frame(True, PINGREQ)
        if p % 3 == 0:
            data = data[:12] + b"\x81\x00\x00\x07" + data[12:]
        else:
            ip = bytearray(data[14:34])
            ip[0] = 0x46
            struct.pack_into("!H", ip, 2, struct.unpack_from("!H", ip, 2)[0] + 4)
            data = data[:14] + bytes(ip) + b"\x01\x01\x01\x00" + data[34:]
        cap.add(data)
    conn.s(PINGRESP)


def _close(cap: Capture, conn: Conn, p: int, kind: str) -> None:
    if kind == "rst":
        (conn.c if p % 2 else conn.s)(flags=RST | ACK)
    else:
        by_client = kind == "disconnect" or p % 2 == 0
        if kind == "disconnect":
            conn.c(disconnect())
        (conn.c if by_client else conn.s)(flags=FIN | ACK)
        (conn.s if by_client else conn.c)(flags=FIN | ACK)
        (conn.c if by_client else conn.s)(flags=ACK)
    conn.open = False


_STEPS = {
    "ping": _ping, "ping_unanswered": _ping_unanswered, "pingresp": _pingresp, "publish": _publish,
    "qos1": _qos1, "split": _split, "coalesced": _coalesced, "inbound": _inbound, "ack": _ack,
    "retransmit": _retransmit, "out_of_order": _out_of_order, "drop": _drop,
    "odd_frame": _odd_frame, "connect": _second_connect,
    "fin": lambda cap, conn, p: _close(cap, conn, p, "fin"),
    "rst": lambda cap, conn, p: _close(cap, conn, p, "rst"),
    "disconnect": lambda cap, conn, p: _close(cap, conn, p, "disconnect"),
}
"""What a step does on an open connection (on none, any step opens one)."""


def _noise(cap: Capture, client: int, p: int) -> None:
    ip = bytes([192, 168, 7, client + 1])
    if p % 2:  # a UDP datagram (not TCP at all)
        udp = struct.pack("!HHHH", 5683, 5683, 12, 0) + b"coap"
        ipv4 = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0x4000, 64, 17, 0, ip, BROKER)
        cap.add(ip_tcp(ip, 1, BROKER, 1, 0, 0, 0, b"")[:14] + ipv4 + udp)
    else:  # an HTTP exchange: a connection that is not MQTT
        cap.add(ip_tcp(ip, 50000 + client, BROKER, 80, 1, 1, PSH | ACK, b"GET / HTTP/1.1\r\n\r\n"))
        cap.add(ip_tcp(BROKER, 80, ip, 50000 + client, 1, 19, PSH | ACK, b"HTTP/1.1 200 OK\r\n\r\n"))


# -- the property --------------------------------------------------------------------------------


def assert_same(cap: Capture, **options) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = cap.write(Path(tmp) / "random.pcap")
        _doc, found = report_differences([path], **options)
        if found:
            kept = Path(tempfile.gettempdir()) / "columnar-property-failure.pcap"
            kept.write_bytes(path.read_bytes())
            lines = "\n  ".join(found)
            pytest.fail(f"columnar and per-frame reports differ (options {options}; capture kept at "
                        f"{kept}):\n  {lines}", pytrace=False)


@SETTINGS
@given(script=scripts, assume=st.sampled_from([None, None, None, 2]),
       ports=st.sampled_from([None, None, None, frozenset({1883, 1884})]))
def test_columnar_and_per_frame_reports_are_identical(script, assume, ports) -> None:
    options = {} if ports is None else {"ports": ports}
    assert_same(build(script), assume_keep_alive_s=assume, **options)


# -- cases found while writing these tests, kept as plain tests ----------------------------------


def test_run_without_any_tcp_frame() -> None:
    """A run of frames none of which is TCP (UDP after the first frame)."""
    cap = Capture()
    for _ in range(3):
        _noise(cap, 0, 1)
        cap.wait(NS)
    assert_same(cap)


def test_client_id_takeover_across_passes() -> None:
    """Two connections CONNECT with the same client id in one run; the first one's CONNECT comes
    after its own handshake frames (later passes of the run), the second one's is its first frame
    of the run. The newer connection takes the session over in capture order, so the broker's
    close of the older one 3 s later (before 1.5 x K) is explained, not KA202."""
    cap = Capture()
    y = cap.conn(1)
    y.handshake()
    cap.wait(engine.SWEEP_EVERY_NS + NS)  # a sweep: what follows is a new run
    x = cap.conn(0)
    x.handshake()
    x.c(connect(keep_alive=5, client_id="dev"))
    y.c(connect(keep_alive=5, client_id="dev"))
    x.s(connack())
    y.s(connack())
    cap.wait(3 * NS)
    x.s(flags=FIN | ACK)
    x.c(flags=FIN | ACK)
    assert_same(cap)


def test_takeover_by_a_connection_reopening_a_closed_4_tuple() -> None:
    """A connection that had ended (FIN both ways) before the run is reopened by a SYN on the same
    4-tuple; the new connection's CONNECT takes over a session whose broker close comes right after
    it. The closed connection's next frames may open one that CONNECTs, so the CONNECT is handled
    in capture order: the close is explained, not KA202 (found by the property above)."""
    cap = Capture()
    x = cap.conn(0)
    x.session("dev", keep_alive=5)
    y = cap.conn(1)
    y.session("other", keep_alive=5)
    y.c(flags=FIN | ACK)
    y.s(flags=FIN | ACK)
    y.c(flags=ACK)
    for _ in range(8):  # past an idle sweep: what follows is a new run
        cap.wait(4 * NS)
        x.c(PINGREQ)
        x.s(PINGRESP)
    cap.wait(5 * NS + NS // 2)
    y.handshake()
    y.c(connect(keep_alive=5, client_id="dev"))
    y.s(connack())
    x.s(flags=FIN | ACK)  # the broker closes the older session 5.5 s into a silence: < 1.5 x K
    x.c(flags=FIN | ACK)
    assert_same(cap)


def test_long_steady_session() -> None:
    """Two sessions of 1,500 exchanges each, nearly all steady: thousands of frames applied in bulk,
    gap samples thinned past `MAX_GAP_SAMPLES`, PINGREQ spacings capped, cadence buckets."""
    rng = random.Random(3)
    cap = Capture()
    conns = [cap.conn(i) for i in range(2)]
    for conn in conns:
        conn.session(f"long-{conn.port}", keep_alive=5)
    for i in range(3_000):
        conn = conns[i % 2]
        cap.wait(rng.randrange(50, 400) * MS)
        r = rng.random()
        if r < 0.5:
            conn.c(PINGREQ)
            conn.s(PINGRESP, dt_ns=rng.randrange(1, 30) * MS)
        elif r < 0.8:
            conn.c(publish("t", b"x" * rng.randrange(0, 200)))
            conn.s(flags=ACK)
        else:
            conn.s(publish("cmd", b"y" * 10))
            conn.c(flags=ACK)
    assert_same(cap)


def test_flow_table_overflow_within_a_run(monkeypatch: pytest.MonkeyPatch) -> None:
    """The table of connections overflows (`FlowTable._shed`) in the middle of a run: the least
    recently active connection is evicted, by the activity of every frame before it in capture
    order. `max_flows` is 20 here instead of 200,000: 10 sessions at the start of the run (not
    over half, so the run is columnar), then 11 new connections."""
    monkeypatch.setattr(engine, "FlowTable", functools.partial(FlowTable, max_flows=20))
    cap = Capture()
    sessions = [cap.conn(i) for i in range(10)]
    for conn in sessions:
        conn.session(f"c{conn.port}", keep_alive=60)
    cap.wait(2 * NS)
    sessions[0].c(PINGREQ)
    sessions[0].s(PINGRESP)
    cap.wait(NS)
    for conn in sessions[1:]:
        conn.c(PINGREQ)
        conn.s(PINGRESP)
    cap.wait(NS)
    sessions[0].c(PINGREQ)  # session 0 is now the most recently active, session 1 the least
    sessions[0].s(PINGRESP)
    for i in range(11):
        cap.conn(20 + i).c(flags=SYN)
    assert_same(cap)


def test_takeover_by_a_websocket_connection_on_another_port() -> None:
    """MQTT over WebSocket on a port that is not an MQTT port (decided by its upgrade before the
    run): its CONNECT, inside a WebSocket frame, takes over a session whose broker close came just
    before it in capture order but waits for a later pass of the run. Handled out of order, the
    close would be explained by a takeover that came after it."""
    from tests.unit.test_websocket import REQUEST, RESPONSE, cframe

    cap = Capture()
    y = cap.conn(1)
    y.session("dev", keep_alive=5)
    x = cap.conn(0)
    x.server_port = 9001
    x.handshake()
    x.c(REQUEST)
    x.s(RESPONSE)
    cap.wait(engine.SWEEP_EVERY_NS + NS)
    cap.conn(2).c(flags=ACK)  # a stray frame starts the sweep: what follows is a new run
    y.c(PINGREQ)  # late (after 5 s): not steady, so y's next frames wait for a later pass
    y.s(PINGRESP)
    cap.wait(3 * NS)
    y.s(flags=FIN | ACK)  # the broker closes y 3 s into a silence, before 1.5 x K
    x.c(cframe(2, connect(keep_alive=5, client_id="dev")))
    x.s(b"\x82\x04" + connack())
    assert_same(cap)

"""MQTT over TLS without keys, through the whole engine: detection, records as packets, probable
pings, Keep Alive assumed or inferred, and `confidence: likely` on every finding.

Connections are synthetic raw-IPv4 frames fed to `CaptureAnalysis.frame`; encrypted records are
random bytes of the length a real TLS stack would send (see `tests.tls_builders`).
"""

from __future__ import annotations

import heapq
import random
import re
import struct
import tracemalloc

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from analyzer.engine import CaptureAnalysis, Options
from analyzer.model import Direction, KeepAliveSource, StreamGap, Uncertainty
from analyzer.ruleset import load_ruleset
from analyzer.ruleset.model import RuleSet
from analyzer.session import keyless
from analyzer.session.keyless import MAX_DEFERRED, MAX_IDLE_SAMPLES, infer_keep_alive
from analyzer.session.observations import Silence, SilenceEnd
from tests.builders import PINGREQ, PINGRESP, connack, connect, disconnect, publish
from tests.tls_builders import (
    AES256_GCM_13, ALERT, APPDATA, ECDHE_RSA_AES128_CBC_SHA, ECDHE_RSA_AES128_GCM, HANDSHAKE, TLS10,
    TLS12, TLS13, appdata, change_cipher_spec, client_hello, handshake, record, server_hello,
)

NS = 1_000_000_000
_C, _S = b"\x0a\x00\x00\x01", b"\x0a\x00\x00\x02"


class Conn:
    """Raw-IPv4 TCP frames of one connection, client port 40000 -> `server_port`."""

    def __init__(self, server_port: int = 8883, client_port: int = 40000) -> None:
        self.seq = {True: 1000, False: 5000}
        self.server_port, self.client_port = server_port, client_port
        self.frames: list[tuple[float, bytes]] = []

    def send(self, at: float, from_client: bool, payload: bytes = b"", flags: int = 0x18) -> int:
        """Append one segment; return its frame number."""
        src, dst = (_C, _S) if from_client else (_S, _C)
        sport, dport = ((self.client_port, self.server_port) if from_client
                        else (self.server_port, self.client_port))
        seq, ack = self.seq[from_client], self.seq[not from_client]
        tcp = struct.pack("!HHIIBBHHH", sport, dport, seq, ack, 5 << 4, flags, 65535, 0, 0)
        ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 40 + len(payload), 0, 0, 64, 6, 0, src, dst)
        self.seq[from_client] = (seq + len(payload) + (1 if flags & 0x03 else 0)) % (1 << 32)
        self.frames.append((at, ip + tcp + payload))
        return len(self.frames)

    def open(self) -> None:
        self.send(0.0, True, flags=0x02)
        self.send(0.0, False, flags=0x12)
        self.send(0.0, True, flags=0x10)

    def close(self, at: float, by_client: bool = True) -> int:
        frame = self.send(at, by_client, flags=0x11)
        self.send(at, not by_client, flags=0x11)
        return frame


def tls13_session(conn: Conn, *, alpn: tuple[str, ...] = (), at: float = 0.01) -> None:
    """Handshake, CONNECT and CONNACK of a TLS 1.3 session as OpenSSL sends them."""
    conn.open()
    conn.send(at, True, record(HANDSHAKE, client_hello(alpn=alpn), TLS10))
    conn.send(at, False, record(HANDSHAKE, server_hello(TLS13, AES256_GCM_13)) + change_cipher_spec()
              + appdata(23) + appdata(1699) + appdata(281) + appdata(69))
    conn.send(at, True, change_cipher_spec() + appdata(69))   # Finished
    conn.send(at, True, appdata(40))                          # CONNECT
    conn.send(at, False, appdata(266) + appdata(266) + appdata(21))  # two tickets, CONNACK


def pings(conn: Conn, times: list[float], *, length: int = 19, answered: bool = True) -> list[int]:
    frames = []
    for t in times:
        frames.append(conn.send(t, True, appdata(length)))
        if answered:
            conn.send(t + 0.001, False, appdata(length))
    return frames


def run(conn: Conn, *, assume: int | None = None, ports: frozenset[int] | None = None,
        ruleset: RuleSet | None = None) -> CaptureAnalysis:
    analysis = start(assume=assume, ports=ports, ruleset=ruleset)
    for n, (at, data) in enumerate(conn.frames, start=1):
        analysis.frame(n, int(at * NS), 101, data)
    analysis.finish()
    return analysis


def start(*, assume: int | None = None, ports: frozenset[int] | None = None,
          ruleset: RuleSet | None = None) -> CaptureAnalysis:
    kwargs = {} if ports is None else {"ports": ports}
    return CaptureAnalysis("synthetic", Options(assume_keep_alive_s=assume,
                                                ruleset=ruleset or load_ruleset(), **kwargs))


def rules(analysis: CaptureAnalysis) -> list[tuple[str, int, int]]:
    return sorted((f.rule_id, *f.frames) for f in analysis.findings)


# -- the keyless path --------------------------------------------------------------------------


def test_default_ports_include_8883() -> None:
    assert Options().ports == frozenset({1883, 8883})


def test_late_probable_ping_with_assumed_keep_alive() -> None:
    conn = Conn()
    tls13_session(conn)
    frames = pings(conn, [2.0, 4.0, 7.5])
    end = conn.close(8.0)
    analysis = run(conn, assume=2)
    (session,) = analysis.sessions
    assert Uncertainty.ENCRYPTED in session.uncertainty and session.client_id is None
    assert (session.keep_alive_source, session.effective_keep_alive_s) == (KeepAliveSource.ASSUMED, 2)
    assert (session.pingreq, session.pingresp) == (3, 3)
    assert session.client_packets == 5 and session.end_reason.value == "client_fin" and session.end_frame == end
    assert ("KA101", frames[1], frames[2]) in rules(analysis)
    assert ("KA102", frames[1], frames[2]) in rules(analysis)   # 3.5 s > 1.5 x 2 + 0.25
    assert {f.confidence for f in analysis.findings} == {"likely"}
    assert all("encrypted" in f.uncertainty for f in analysis.findings)
    ka901 = next(f for f in analysis.findings if f.rule_id == "KA901")
    assert "TLS 1.3 TLS_AES_256_GCM_SHA384" in ka901.message and "SNI broker.example" in ka901.message
    assert "19-byte records" in ka901.message and "assumed Keep Alive of 2 s" in ka901.message


def test_keep_alive_inferred_from_regular_pings_judges_earlier_silences_too() -> None:
    conn = Conn()
    tls13_session(conn)
    late = pings(conn, [3.2])                       # a late ping before K is known
    regular = pings(conn, [5.2, 7.2, 9.2, 11.2, 13.2])
    conn.close(13.5)
    analysis = run(conn)
    (session,) = analysis.sessions
    assert (session.keep_alive_source, session.effective_keep_alive_s) == (KeepAliveSource.INFERRED, 2)
    found = rules(analysis)
    assert [r for r in found if r[0] == "KA101"] == [("KA101", 7, late[0])]
    assert not any(r[0] in ("KA104", "KA107") for r in found)  # the cadence defined K
    assert {f.confidence for f in analysis.findings} == {"likely"}
    assert len(regular) == 5


def test_a_keep_alive_inferred_from_the_cadence_judges_no_broker_deadline() -> None:
    """Pings every 2 s make the inferred K 2 s, but a client that pings early (esp-mqtt at K/2)
    has a real K of 4 s or more, which the broker enforces: a 7 s silence is longer than the client
    usually lets pass (KA101, likely), but neither past the broker's deadline (KA102) nor a broker
    that failed to close (KA201), whose deadline is not known."""
    conn = Conn()
    tls13_session(conn)
    regular = pings(conn, [2.0, 4.0, 6.0, 8.0, 10.0])
    late = pings(conn, [17.0])
    conn.close(17.5)
    analysis = run(conn)
    (session,) = analysis.sessions
    assert (session.keep_alive_source, session.effective_keep_alive_s) == (KeepAliveSource.INFERRED, 2)
    found = rules(analysis)
    assert [r for r in found if r[0] != "KA901"] == [("KA101", regular[-1], late[0])]
    (ka901,) = [f for f in analysis.findings if f.rule_id == "KA901"]
    assert "the broker's deadline and its closes are not" in ka901.message
    (ka101,) = [f for f in analysis.findings if f.rule_id == "KA101"]
    assert "interval between pings when idle, taken for its Keep Alive, is 2 s" in ka101.message


def test_irregular_pings_leave_keep_alive_unknown_and_nothing_judged() -> None:
    conn = Conn()
    tls13_session(conn)
    pings(conn, [1.0, 4.0, 5.0, 11.0, 12.5])
    conn.close(13.0)
    analysis = run(conn)
    (session,) = analysis.sessions
    assert session.effective_keep_alive_s is None
    assert {Uncertainty.ENCRYPTED, Uncertainty.UNKNOWN_KEEP_ALIVE} <= session.uncertainty
    assert [f.rule_id for f in analysis.findings] == ["KA901"]
    assert "could not be inferred" in analysis.findings[0].message


def test_unanswered_ping_sized_record_before_a_close_is_not_a_ping() -> None:
    """A client's DISCONNECT (or TLS 1.3 close_notify) has the size of a PINGREQ."""
    conn = Conn()
    tls13_session(conn)
    pings(conn, [1.0])
    conn.send(1.5, True, appdata(19))   # DISCONNECT
    conn.send(1.5, True, appdata(19))   # close_notify
    conn.close(1.5)
    analysis = run(conn, assume=1)
    (session,) = analysis.sessions
    assert session.pingreq == 1
    assert not any(f.rule_id in ("KA203", "KA106") for f in analysis.findings)


def test_disconnect_answered_by_a_tls13_close_notify_is_not_a_ping_exchange() -> None:
    """The client's DISCONNECT, then the broker's close_notify (both 19 bytes under TLS 1.3),
    then the close: not a PINGREQ/PINGRESP pair. A ping answered well before a close still is."""
    conn = Conn()
    tls13_session(conn)
    pings(conn, [1.0, 2.0])
    pings(conn, [2.6])                  # DISCONNECT + close_notify, answered at 2.601
    conn.close(2.62)
    (session,) = run(conn, assume=1).sessions
    assert (session.pingreq, session.pingresp) == (2, 2)

    conn = Conn()
    tls13_session(conn)
    pings(conn, [1.0, 2.0])
    conn.close(2.5)                     # the last exchange was 0.5 s before the close: a ping
    (session,) = run(conn, assume=1).sessions
    assert (session.pingreq, session.pingresp) == (2, 2)


def test_ping_unanswered_while_the_connection_stays_open_is_judged() -> None:
    conn = Conn()
    tls13_session(conn)
    pings(conn, [1.0])
    ping = pings(conn, [2.0], answered=False)[0]
    pings(conn, [3.0, 4.0], length=100, answered=False)  # PUBLISHes keep the client active
    conn.close(5.0)
    found = rules(run(conn, assume=1))
    assert ("KA203", ping, ping) not in found and any(r[:2] == ("KA203", ping) for r in found)


def test_a_lone_ping_sized_broker_record_is_not_an_unsolicited_pingresp() -> None:
    conn = Conn()
    tls13_session(conn)
    conn.send(1.0, False, appdata(19))
    conn.close(1.5, by_client=False)
    analysis = run(conn, assume=2)
    assert not any(f.rule_id == "KA205" for f in analysis.findings)
    assert analysis.sessions[0].end_reason.value == "server_fin"


def test_tls12_gcm_encrypted_alert_ends_the_session() -> None:
    conn = Conn()
    conn.open()
    conn.send(0.01, True, record(HANDSHAKE, client_hello(versions=()), TLS10))
    conn.send(0.01, False, record(HANDSHAKE, server_hello(TLS12, ECDHE_RSA_AES128_GCM)
                                  + handshake(11, bytes(900)) + handshake(14, b"")))
    conn.send(0.02, True, record(HANDSHAKE, bytes(37)) + change_cipher_spec() + record(HANDSHAKE, bytes(40)))
    conn.send(0.02, False, change_cipher_spec() + record(HANDSHAKE, bytes(40)))
    conn.send(0.03, True, appdata(46))
    conn.send(0.03, False, appdata(28))
    pings(conn, [1.0, 2.0], length=26)
    alert_frame = conn.send(6.0, False, record(ALERT, bytes(26)))
    conn.close(6.0, by_client=False)
    analysis = run(conn, assume=2)
    (session,) = analysis.sessions
    assert (session.pingreq, session.pingresp) == (2, 2)
    assert (session.end_reason.value, session.end_frame) == ("server_fin", alert_frame)
    assert ("KA201", 12, alert_frame) in rules(analysis)


def test_cbc_has_no_probable_pings_but_activity_is_still_judged() -> None:
    conn = Conn()
    conn.open()
    conn.send(0.01, True, record(HANDSHAKE, client_hello(versions=()), TLS10))
    conn.send(0.01, False, record(HANDSHAKE, server_hello(TLS12, ECDHE_RSA_AES128_CBC_SHA)))
    conn.send(0.02, True, change_cipher_spec() + record(HANDSHAKE, bytes(64)))
    conn.send(0.03, True, appdata(64))
    pings(conn, [1.0, 2.0, 5.0], length=48)
    conn.close(5.5)
    analysis = run(conn, assume=2)
    (session,) = analysis.sessions
    assert (session.pingreq, session.pingresp) == (0, 0)
    assert "no record size identifies a ping" in next(f.message for f in analysis.findings if f.rule_id == "KA901")
    assert any(f.rule_id == "KA101" and f.confidence == "likely" for f in analysis.findings)


# -- detection -----------------------------------------------------------------------------------


def test_tls_on_443_counts_only_with_an_mqtt_alpn() -> None:
    for alpn, sessions in ((("x-amzn-mqtt-ca",), 1), (("mqtt", "h2"), 1), (("h2", "http/1.1"), 0), ((), 0)):
        conn = Conn(server_port=443)
        tls13_session(conn, alpn=alpn)
        pings(conn, [1.0])
        conn.close(2.0)
        assert len(run(conn).sessions) == sessions, alpn


def test_client_hello_over_several_segments_on_443() -> None:
    conn = Conn(server_port=443)
    conn.open()
    wire = record(HANDSHAKE, client_hello(alpn=("mqtt",), padding=2500))
    conn.send(0.01, True, wire[:1400])
    conn.send(0.01, True, wire[1400:])
    conn.send(0.01, False, record(HANDSHAKE, server_hello(TLS13, AES256_GCM_13)) + appdata(1000))
    conn.send(0.02, True, appdata(53))
    conn.send(0.02, True, appdata(40))
    pings(conn, [1.0])
    conn.close(1.5)
    (session,) = run(conn, assume=1).sessions
    assert session.pingreq == 1 and session.client_packets == 3


def test_plain_mqtt_on_8883_and_1883_stays_plain() -> None:
    for port in (1883, 8883):
        conn = Conn(server_port=port)
        conn.open()
        conn.send(0.01, True, connect(client_id="plain", keep_alive=1))
        conn.send(0.01, False, connack())
        conn.send(1.0, True, PINGREQ)
        conn.send(1.0, False, PINGRESP)
        conn.close(1.5)
        analysis = run(conn)
        (session,) = analysis.sessions
        assert session.client_id == "plain" and Uncertainty.ENCRYPTED not in session.uncertainty
        assert all(f.confidence == "confirmed" for f in analysis.findings)


def test_capture_starting_mid_tls_session() -> None:
    conn = Conn()
    conn.send(0.0, False, appdata(19))          # the broker's answer to an unseen ping
    pings(conn, [1.0, 2.0, 3.0, 4.0, 5.0, 8.0])
    conn.send(8.5, True, flags=0x04)            # RST
    analysis = run(conn)
    (session,) = analysis.sessions
    assert {Uncertainty.ENCRYPTED, Uncertainty.MID_STREAM} <= session.uncertainty
    assert session.pingreq == 0                  # version and suite unseen: no ping size
    assert any("handshake not captured" in f.message for f in analysis.findings)


def test_malformed_tls_never_raises_and_the_session_keeps_what_was_read() -> None:
    conn = Conn()
    tls13_session(conn)
    pings(conn, [1.0])
    conn.send(1.5, True, b"\x17\x03\x03\xff\xff garbage that is not TLS")
    conn.send(2.0, True, b"more garbage")
    pings(conn, [3.0])                            # a segment that starts a record: resynchronised
    conn.close(3.5)
    analysis = run(conn, assume=5)
    (session,) = analysis.sessions
    assert session.pingreq == 2 and session.end_reason.value == "client_fin"


# -- inference ------------------------------------------------------------------------------------


@pytest.mark.parametrize("gaps, k", [
    ([2.0, 2.0, 2.0], None),                       # too few
    ([2.0, 2.01, 1.99, 2.0], 2),
    ([60.0, 60.1, 59.9, 60.0, 150.0], 60),         # one late ping among regular ones
    ([60.0, 60.1, 150.0, 150.0, 30.0], None),      # not regular enough
    ([0.2, 0.2, 0.2, 0.2], None),                  # a ping storm says nothing about K
    ([29.6, 30.4, 30.0, 30.1, 30.0, 5.0], 30),
])
def test_infer_keep_alive(gaps: list[float], k: int | None) -> None:
    assert infer_keep_alive([int(g * NS) for g in gaps]) == k


def _records_then_regular_pings(conn: Conn, silences: list[float], *, k: float = 2.0) -> list[int]:
    """Client records (not ping-sized) after `silences`, then regular answered pings every `k`
    seconds from which K is inferred; the records' frame numbers."""
    frames, t = [], 1.0
    for gap in silences:
        t += gap
        frames.append(conn.send(t, True, appdata(60)))
    pings(conn, [t + k * (i + 1) for i in range(6)])
    conn.close(t + 6 * k + 0.5)
    return frames


def test_silences_left_out_before_k_is_inferred_are_said_to_be() -> None:
    """Only the longest `MAX_DEFERRED` silences before K is inferred are kept to be judged: when one
    left out was long enough to break a rule under the K found, the session's KA901 says so."""
    conn = Conn()
    tls13_session(conn)
    records = _records_then_regular_pings(conn, [3.0] * (MAX_DEFERRED + 44))
    analysis = run(conn)
    (session,) = analysis.sessions
    assert (session.keep_alive_source, session.effective_keep_alive_s) == (KeepAliveSource.INFERRED, 2)
    late = sorted(f.frames[1] for f in analysis.findings if f.rule_id == "KA101")
    # the first silence (from CONNECT, 3.99 s) is the longest; of those as long, the latest
    assert late == [records[0]] + records[-(MAX_DEFERRED - 1):]
    (ka901,) = [f for f in analysis.findings if f.rule_id == "KA901"]
    said = re.search(r"of the (\d+) silences before it was inferred only the longest (\d+) were "
                     r"kept to be judged, and (\d+) left out \(the longest 3 s\) may hide violations",
                     ka901.message)
    assert said is not None, ka901.message
    deferred, kept, left_out = map(int, said.groups())
    assert kept == MAX_DEFERRED and deferred == kept + left_out and left_out >= 44


def test_silences_left_out_that_break_nothing_are_not_mentioned() -> None:
    conn = Conn()
    tls13_session(conn)
    silences = [0.5] * 200 + [3.0] * 40 + [0.5] * 60   # 300: the 44 left out are all short
    random.Random(7).shuffle(silences)
    records = _records_then_regular_pings(conn, silences)
    analysis = run(conn)
    late = sorted(f.frames[1] for f in analysis.findings if f.rule_id == "KA101")
    assert late == [frame for frame, gap in zip(records, silences) if gap == 3.0]
    (ka901,) = [f for f in analysis.findings if f.rule_id == "KA901"]
    assert "inferred from" in ka901.message and "left out" not in ka901.message


_GAP = StreamGap(Direction.TO_SERVER, 5, 7, 100)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(-3, 40), st.booleans(), st.booleans(), st.integers(0, 3),
                          st.sampled_from([None, 1, 1 << 62, -(1 << 64)]), st.integers(0, 9)),
                max_size=3 * MAX_DEFERRED // 2 + 20))
def test_deferred_silences_keep_the_longest_as_a_heap_of_objects_did(
        specs: list[tuple[int, bool, bool, int, int | None, int]]) -> None:
    """The compact store keeps the silences a heap of (duration, arrival, object) kept, the
    oldest of equal ones dropped first, and gives them back unchanged, in start order."""
    store = keyless._Deferred()
    heap: list[tuple[int, int, Silence]] = []
    start = 10**18
    for n, (duration, first, stepped, inbound, before, kind) in enumerate(specs):
        start += 10**9
        silence = Silence(n + 1, start, n + 2, start + duration * 10**8, SilenceEnd.PACKET, first,
                          inbound, n if inbound else None, _GAP if kind == 0 else None,
                          "explained" if kind == 1 else None, 0x8D if kind == 2 else None, stepped,
                          None if before is None else start - before)
        store.add(silence)
        item = (silence.duration_ns, n, silence)
        (heapq.heappush if len(heap) < MAX_DEFERRED else heapq.heappushpop)(heap, item)
    assert store.silences() == sorted((s for _, _, s in heap), key=lambda s: s.start_ns)
    left_out = [d for d, _, _ in heap]
    assert store.dropped == max(0, len(specs) - MAX_DEFERRED)
    if store.dropped:
        assert store.dropped_longest_ns is not None and store.dropped_longest_ns <= min(left_out)


def _feed_together(conns: list[Conn]) -> CaptureAnalysis:
    analysis = start()
    merged = sorted((at, c, i, data) for c, conn in enumerate(conns) for i, (at, data) in enumerate(conn.frames))
    for n, (at, _, _, data) in enumerate(merged, start=1):
        analysis.frame(n, int(at * NS), 101, data)
    return analysis


def _held_per_session(records: int, *, ping: bool) -> float:
    """Bytes 50 open keyless sessions hold for `records` client records each, beyond what they
    hold for 5: records every 1-5 s, ping-sized and answered, or not."""
    held = []
    for count in (5, records):
        rng = random.Random(3)
        conns = []
        for j in range(50):
            conn = Conn(client_port=41000 + j)
            tls13_session(conn)
            t = 1.0
            for _ in range(count):
                t += rng.uniform(1.0, 5.0)
                if ping:
                    pings(conn, [t])
                else:
                    conn.send(t, True, appdata(60))
            conns.append(conn)
        tracemalloc.start()
        try:
            analysis = _feed_together(conns)
            held.append(tracemalloc.get_traced_memory()[0])
        finally:
            tracemalloc.stop()
        assert len(analysis.table) == 50
    return (held[1] - held[0]) / 50


def test_keyless_sessions_waiting_for_their_keep_alive_hold_little() -> None:
    """A session whose K is not known yet keeps its longest silences until it is, for the whole
    of its life if it never pings regularly: a broker capture holds thousands of such sessions at
    once. Silence objects in a heap took 86 KB a session here (97 KB with irregular pings); the
    compact store about 26 KB in all, and once `MAX_IDLE_SAMPLES` answered pings have not given K
    it keeps none (17 KB in all)."""
    assert _held_per_session(300, ping=False) < 40_000
    assert MAX_IDLE_SAMPLES < 300
    assert _held_per_session(300, ping=True) < 25_000


def test_a_broker_profile_may_give_the_keep_alive(tmp_path) -> None:
    profile = tmp_path / "fleet.toml"
    profile.write_text('[broker]\nid = "fleet"\nmultiplier = 1.5\nassume_keep_alive_s = 2\n'
                       'sources = ["our fleet: every device uses K = 2"]\n')
    conn = Conn()
    tls13_session(conn)
    frames = pings(conn, [2.0, 5.0])
    conn.close(5.5)
    analysis = run(conn, ruleset=load_ruleset("default", str(profile)))
    (session,) = analysis.sessions
    assert (session.keep_alive_source, session.effective_keep_alive_s) == (KeepAliveSource.ASSUMED, 2)
    assert ("KA101", frames[0], frames[1]) in rules(analysis)
    assert run(conn, assume=5, ruleset=load_ruleset("default", str(profile))).sessions[0].effective_keep_alive_s == 5


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.booleans(), st.binary(max_size=60)), max_size=12), st.booleans())
def test_garbage_after_a_handshake_never_raises(segments: list[tuple[bool, bytes]], tls13: bool) -> None:
    conn = Conn()
    if tls13:
        tls13_session(conn)
    else:
        conn.open()
        conn.send(0.01, True, record(HANDSHAKE, client_hello(), TLS10))
    for n, (from_client, data) in enumerate(segments):
        if data:
            conn.send(1.0 + n, from_client, data)
    conn.send(20.0, True, appdata(19))
    analysis = run(conn, assume=2)
    assert len(analysis.sessions) <= 1


def test_hello_retry_request_with_its_dummy_ccs_in_one_segment_keeps_ping_sizes() -> None:
    """OpenSSL sends the HelloRetryRequest and the middlebox-compatibility ChangeCipherSpec in one
    segment; the connection is TLS 1.3 from the HRR on, so the 19-byte pings are still seen."""
    for together in (False, True):
        conn = Conn()
        conn.open()
        conn.send(0.01, True, record(HANDSHAKE, client_hello(), TLS10))
        hrr = record(HANDSHAKE, server_hello(TLS13, AES256_GCM_13, hrr=True))
        if together:
            conn.send(0.01, False, hrr + change_cipher_spec())
        else:
            conn.send(0.01, False, hrr)
            conn.send(0.01, False, change_cipher_spec())
        conn.send(0.02, True, change_cipher_spec() + record(HANDSHAKE, client_hello()))
        conn.send(0.03, False, record(HANDSHAKE, server_hello(TLS13, AES256_GCM_13)) + appdata(23)
                  + appdata(1699) + appdata(281) + appdata(69))
        conn.send(0.04, True, appdata(69))
        conn.send(0.04, True, appdata(40))
        conn.send(0.05, False, appdata(266) + appdata(21))
        pings(conn, [2.0, 4.0, 7.5])
        conn.close(8.0)
        (session,) = run(conn, assume=2).sessions
        assert (session.pingreq, session.pingresp) == (3, 3), together


@pytest.mark.parametrize("lost, judged", [(slice(1000, 2000), True), (slice(2000, None), False)])
def test_a_loss_inside_a_record_hides_no_record(lost: slice, judged: bool) -> None:
    """Without keys records stand for packets: bytes lost inside a record cannot hide another
    (its header says where the next starts), so the silence after it is judged. A loss that ends
    the record, found only when later records came, leaves its end time unknown: not judged."""
    conn = Conn()
    tls13_session(conn)
    big = appdata(2990)
    last = 0
    for at, piece in ((0.5, slice(0, 1000)), (0.55, slice(1000, 2000)), (0.6, slice(2000, None))):
        if piece == lost:
            conn.seq[True] += len(big[piece])
        else:
            last = conn.send(at, True, big[piece])
    late = pings(conn, [3.5])[0]
    conn.close(4.0)
    analysis = run(conn, assume=2)
    (session,) = analysis.sessions
    assert ("hole" in session.uncertainty) is not judged
    assert (("KA101", last, late) in rules(analysis)) is judged


def test_a_ping_left_unanswered_long_before_the_close_is_judged() -> None:
    """Only a ping-sized record right before the close is taken for the DISCONNECT: a PINGREQ
    the broker never answered, seconds before the client gave up, is KA203 and KA106."""
    conn = Conn()
    tls13_session(conn)
    pings(conn, [1.2], answered=False)
    conn.close(6.2)
    analysis = run(conn, assume=2)
    (session,) = analysis.sessions
    assert session.pingreq == 1 and session.pingresp == 0
    assert {"KA203", "KA106"} <= {f.rule_id for f in analysis.findings}


class _Decrypted:
    """What tshark hands back for a capture, by frame (the plaintext source of the engine):
    here written down directly, for a loss no recorded capture can be decrypted across."""

    keys_given = True

    def __init__(self) -> None:
        self.by_frame: dict[int, list[bytes]] = {}

    def available(self, frame_no: int) -> bool:
        return True

    def chunks(self, frame_no: int) -> list[bytes]:
        return list(self.by_frame.get(frame_no, []))

    def fallback(self, stream_index: int) -> None:
        raise AssertionError("every record but the lost one has its plaintext")

    def warnings(self) -> list[str]:
        return []

    def close(self) -> None:
        pass


def test_tls12_loss_inside_a_decrypted_record_is_one_hole_of_its_plaintext() -> None:
    """TLS 1.2 GCM records carry their nonce, so records after a lost segment still decrypt. The
    truncated record stands for the lost bytes once (as its plaintext size), and the framer keeps
    its place: the pings and the DISCONNECT after it are read as without the loss."""
    outcomes = []
    for lose in (False, True):
        conn, plain = Conn(), _Decrypted()

        def rec12(data: bytes, at: float, from_client: bool) -> None:
            frame = conn.send(at, from_client, appdata(8 + len(data) + 16))
            plain.by_frame.setdefault(frame, []).append(data)

        conn.open()
        conn.send(0.01, True, record(HANDSHAKE, client_hello(versions=()), TLS10))
        conn.send(0.01, False, record(HANDSHAKE, server_hello(TLS12, ECDHE_RSA_AES128_GCM)))
        conn.send(0.02, True, change_cipher_spec() + record(HANDSHAKE, bytes(40)))
        conn.send(0.02, False, change_cipher_spec() + record(HANDSHAKE, bytes(40)))
        rec12(connect(keep_alive=2), 0.03, True)
        rec12(connack(), 0.031, False)
        pub = publish("t", b"x" * 2990)
        rec12(pub[:1000], 0.5, True)
        cut = record(APPDATA, bytes(8 + 1000 + 16))  # the middle record, over three segments
        conn.send(0.6, True, cut[:400])
        if lose:
            conn.seq[True] += 300
        else:
            conn.send(0.6, True, cut[400:700])
        last = conn.send(0.6, True, cut[700:])
        if not lose:
            plain.by_frame.setdefault(last, []).append(pub[1000:2000])
        rec12(pub[2000:], 0.7, True)
        for t in (1.5, 3.0):
            rec12(PINGREQ, t, True)
            rec12(PINGRESP, t + 0.001, False)
        rec12(disconnect(), 4.0, True)
        conn.close(4.0)
        analysis = CaptureAnalysis("synthetic", Options(ruleset=load_ruleset(), tls_keylogs=("k",)))
        analysis.plaintext = plain  # type: ignore[assignment]
        for n, (at, data) in enumerate(conn.frames, start=1):
            analysis.frame(n, int(at * NS), 101, data)
        analysis.finish()
        (session,) = analysis.sessions
        outcomes.append((session.client_packets, session.pingreq, session.pingresp,
                         session.end_reason.value, rules(analysis)))
        assert ("hole" in session.uncertainty) == lose
    assert outcomes[0] == outcomes[1] == (5, 2, 2, "client_disconnect", [])


def test_capture_starting_inside_a_tls_record_still_finds_the_session(tmp_path) -> None:
    """A capture that begins with the middle segment of a record (a large PUBLISH): those bytes
    cannot be placed, so they are passed over until a segment starts with a record header; the
    connection is MQTT over TLS, not dropped for failing to look like plain MQTT."""
    conn = Conn()
    conn.seq[True] += 7                      # mid-connection: no SYN, no hello
    conn.send(0.1, True, bytes(range(200)))  # inside a record
    conn.send(0.2, True, appdata(300))
    conn.send(0.3, False, appdata(40))
    conn.send(2.9, True, appdata(60))
    conn.close(3.0)
    (session,) = run(conn, assume=1).sessions
    assert {"encrypted", "mid_stream"} <= {u.value for u in session.uncertainty}
    assert session.client_packets == 2


def test_a_ping_sized_answer_read_before_the_clients_first_record_is_no_handshake_flight() -> None:
    """Under TLS 1.3 the broker's records before the client's first application-data record are
    its handshake flight, unless the client has sent more than the capture has shown: here the
    broker's answer to the client's first record (a ping, in a capture that holds no client
    Finished) is read 80 us before it, and acknowledges it. Taken for the flight, the answer was
    passed over, and every later ping was paired with the answer an interval later (KA204)."""
    conn = Conn()
    conn.open()
    conn.send(0.01, True, record(HANDSHAKE, client_hello(), TLS10))
    conn.send(0.01, False, record(HANDSHAKE, server_hello(TLS13, AES256_GCM_13)) + change_cipher_spec()
              + appdata(23) + appdata(1699) + appdata(281) + appdata(69))
    first = conn.seq[True]
    conn.seq[True] += 5 + 19                                 # the client's ping, sent first...
    conn.send(2.00008, False, appdata(19))                   # ...its answer, read first
    conn.seq[True] = first
    conn.send(2.0, True, appdata(19))
    pings(conn, [4.0, 6.0, 8.0, 10.0, 12.0])
    conn.close(12.5)
    analysis = run(conn, assume=3)
    (session,) = analysis.sessions
    assert (session.pingreq, session.pingresp) == (6, 6)
    assert not {"KA203", "KA204", "KA205"} & {f.rule_id for f in analysis.findings}, \
        [(f.rule_id, f.message) for f in analysis.findings]

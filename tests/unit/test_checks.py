"""The session timeline and the checks, driven by MQTT packets at chosen times (no capture needed).

Each case is a short script of what the client and the broker did, in seconds from CONNECT; the
expected findings are (rule id, first frame, last frame). Frames are numbered in script order.
"""

from __future__ import annotations

import pytest

from analyzer.checks import Judge
from analyzer.model import (
    ConnAckBody, ConnectBody, Direction, DisconnectBody, EndReason, Endpoint, FlowKey, MQTTPacket,
    PacketType, StreamEnd, StreamGap,
)
from analyzer.ruleset import load_ruleset
from analyzer.session.timeline import SessionTimeline

NS = 1_000_000_000
T0 = 1_700_000_000 * NS
FLOW = FlowKey(Endpoint("127.0.0.1", 50000), Endpoint("127.0.0.1", 1883), 0)


def connect(k: int, level: int = 4, client_id: str = "dev") -> tuple[str, PacketType, object]:
    body = ConnectBody("MQTT", level, k, client_id, True, False, False, False)
    return ("c", PacketType.CONNECT, body)


def connack(code: int = 0, server_keep_alive: int | None = None) -> tuple[str, PacketType, object]:
    return ("s", PacketType.CONNACK, ConnAckBody(code, False, server_keep_alive))


C = lambda ptype, body=None: ("c", ptype, body)  # noqa: E731 - a client packet
S = lambda ptype, body=None: ("s", ptype, body)  # noqa: E731 - a broker packet
END = lambda reason: ("end", reason, None)  # noqa: E731
GAP = ("gap", None, None)
PING, PONG, PUB = PacketType.PINGREQ, PacketType.PINGRESP, PacketType.PUBLISH


def run(script: list[tuple[float, tuple]], mid_stream: bool = False, assume: int | None = None,
        flags: int = 0, remaining_length: int = 0, ruleset=None, messages: bool = False):
    """Play `script` through a timeline and the rules (default pack); return (findings, session)."""
    ruleset = ruleset or load_ruleset()
    judge = Judge(ruleset)
    tl = SessionTimeline("t#0", "t.pcap", FLOW, 1, T0, mid_stream=mid_stream, assume_keep_alive_s=assume)
    findings = []
    for frame, (at_s, (who, what, body)) in enumerate(script, start=1):
        ts = T0 + int(at_s * NS)
        if who == "end":
            findings += judge.observations(tl.on_end(StreamEnd(frame, ts, what)), tl)
        elif who == "gap":
            tl.on_gap(StreamGap(Direction.TO_SERVER, frame, ts, 2), True)
        else:
            pkt_flags = flags if what in (PING, PONG) else 0
            rl = remaining_length if what in (PING, PONG) else 0
            pkt = MQTTPacket(Direction.TO_SERVER if who == "c" else Direction.TO_CLIENT, what,
                             pkt_flags, rl, frame, frame, ts, ts, body)
            findings += judge.observations(tl.on_packet(pkt, who == "c"), tl)
    findings += judge.finished(tl)
    if messages:
        return [(f.rule_id, f.message) for f in findings], tl.summary()
    return [(f.rule_id, *f.frames) for f in findings], tl.summary()


CASES = {
    "compliant pinger": (
        [(0, connect(2)), (0, connack()), (1.5, C(PING)), (1.5, S(PONG)), (3.0, C(PING)),
         (3.0, S(PONG)), (4, C(PacketType.DISCONNECT, DisconnectBody(None)))], []),
    "busy publisher never pings": (
        [(0, connect(2)), (0, connack())] + [(0.5 * i, C(PUB)) for i in range(1, 12)]
        + [(6, C(PacketType.DISCONNECT, DisconnectBody(None)))], []),
    "late pinger": (
        [(0, connect(2)), (0, connack()), (2.6, C(PING)), (2.6, S(PONG)),
         (5.2, C(PacketType.DISCONNECT, DisconnectBody(None)))],
        [("KA101", 1, 3), ("KA101", 3, 5)]),
    "silent client dropped on time": (
        [(0, connect(2)), (0, connack()), (3.1, END(EndReason.SERVER_FIN))],
        [("KA101", 1, 3)]),
    "silent client dropped late": (
        [(0, connect(2)), (0, connack()), (5.4, END(EndReason.SERVER_FIN))],
        [("KA101", 1, 3), ("KA102", 1, 3), ("KA201", 1, 3)]),
    "silent client never dropped": (
        [(0, connect(2)), (0, connack()), (9, END(EndReason.CAPTURE_END))],
        [("KA101", 1, 3), ("KA102", 1, 3), ("KA201", 1, 3)]),
    "capture ends before any deadline": (
        [(0, connect(10)), (0, connack()), (5, END(EndReason.CAPTURE_END))], []),
    "subscriber that only receives": (
        [(0, connect(2)), (0, connack()), (0.5, S(PUB)), (1.5, S(PUB)), (2.5, S(PUB)),
         (3.5, S(PUB)), (4.0, END(EndReason.SERVER_FIN))],
        [("KA101", 1, 7), ("KA102", 1, 7), ("KA103", 1, 7), ("KA201", 1, 7)]),
    "server keep alive shorter and ignored": (
        [(0, connect(10, level=5)), (0.1, connack(server_keep_alive=2)), (2.6, C(PING)),
         (2.6, S(PONG)), (4.6, C(PacketType.DISCONNECT, DisconnectBody(None)))],
        [("KA101", 2, 3), ("KA105", 2, 3), ("KA303", 1, 2)]),
    "broker closes early": (
        [(0, connect(4)), (0, connack()), (3, END(EndReason.SERVER_FIN))],
        [("KA202", 1, 3)]),
    "broker closes right after a client packet: not keep-alive": (
        [(0, connect(4)), (0, connack()), (1, C(PUB)), (1.2, END(EndReason.SERVER_RST))], []),
    "broker refuses the CONNECT and closes": (
        [(0, connect(4)), (0, connack(code=5)), (2.5, END(EndReason.SERVER_FIN))], []),
    "v5 DISCONNECT 0x8D before the deadline is early however short": (
        [(0, connect(4, level=5)), (0, connack()), (1, C(PUB)),
         (1.5, S(PacketType.DISCONNECT, DisconnectBody(0x8D)))],
        [("KA202", 3, 4)]),
    "v5 DISCONNECT 0x8B (server shutting down) explains the close": (
        [(0, connect(4, level=5)), (0, connack()), (3, S(PacketType.DISCONNECT, DisconnectBody(0x8B)))],
        []),
    "PINGREQ never answered, client stays": (
        [(0, connect(2)), (0, connack()), (1, C(PING)), (7, END(EndReason.CLIENT_FIN))],
        [("KA101", 3, 4), ("KA102", 3, 4), ("KA201", 3, 4), ("KA203", 3, 4), ("KA106", 3, 4)]),
    "PINGREQ answered late": (
        [(0, connect(2)), (0, connack()), (1, C(PING)), (3.5, S(PONG)), (3.6, C(PING)),
         (3.6, S(PONG)), (4, C(PacketType.DISCONNECT, DisconnectBody(None)))],
        [("KA203", 3, 4), ("KA101", 3, 5)]),
    "PINGREQ unanswered, client pings again and then closes": (
        [(0, connect(2)), (0, connack()), (1, C(PING)), (2.5, C(PING)), (3.5, END(EndReason.CLIENT_FIN))],
        [("KA203", 3, 5)]),
    "broker closes without answering a PINGREQ": (
        [(0, connect(2)), (0, connack()), (1, C(PING)), (1.5, END(EndReason.SERVER_FIN))],
        [("KA203", 3, 4)]),
    "keep alive zero": (
        [(0, connect(0)), (0, connack()), (100, C(PUB)), (101, END(EndReason.CLIENT_FIN))],
        [("KA301", 1, 1)]),
    "a capture gap hides what the client sent": (
        [(0, connect(2)), (0, connack()), (1, GAP), (4, C(PING)), (4, S(PONG)),
         (5, C(PacketType.DISCONNECT, DisconnectBody(None)))],
        [("KA902", 1, 4)]),
}


@pytest.mark.parametrize("script, expected", CASES.values(), ids=CASES.keys())
def test_checks_find_exactly_the_expected_violations(script, expected) -> None:
    found, _ = run(script)
    assert sorted(found) == sorted(expected)


def test_mid_stream_session_is_not_judged_without_a_keep_alive() -> None:
    script = [(0, C(PUB)), (30, C(PING)), (30, S(PONG)), (60, C(PING)), (60, S(PONG)),
              (61, END(EndReason.CAPTURE_END))]
    found, session = run(script, mid_stream=True)
    assert found == [("KA901", 1, 1)]
    assert {u.value for u in session.uncertainty} >= {"mid_stream", "unknown_keep_alive"}


def test_mid_stream_session_is_judged_with_an_assumed_keep_alive() -> None:
    script = [(0, C(PUB)), (30, C(PING)), (30, S(PONG)), (61, C(PING)), (61, S(PONG)),
              (62, END(EndReason.CAPTURE_END))]
    found, session = run(script, mid_stream=True, assume=20)
    assert sorted(found) == [("KA101", 1, 2), ("KA101", 2, 4), ("KA102", 2, 4), ("KA201", 2, 4),
                             ("KA901", 1, 1)]
    assert session.keep_alive_source.value == "assumed"


@pytest.mark.parametrize("flags, remaining_length", [(1, 0), (0, 1)])
def test_malformed_pings_are_reported(flags: int, remaining_length: int) -> None:
    script = [(0, connect(2)), (0, connack()), (1, C(PING)), (1, S(PONG)),
              (2, C(PacketType.DISCONNECT, DisconnectBody(None)))]
    found, _ = run(script, flags=flags, remaining_length=remaining_length)
    assert sorted(found) == [("KA401", 3, 3), ("KA401", 4, 4)]


def test_session_summary_counts_and_end() -> None:
    script = CASES["compliant pinger"][0]
    _, session = run(script)
    assert (session.client_packets, session.server_packets, session.pingreq, session.pingresp) == (4, 3, 2, 2)
    assert session.end_reason is EndReason.CLIENT_DISCONNECT and session.end_frame == 7
    assert session.max_gap_ns == int(1.5 * NS)


NEW_RULE_CASES = {
    "slow PINGRESP": (
        [(0, connect(10)), (0, connack()), (1, C(PING)), (7, S(PONG)),
         (8, C(PacketType.DISCONNECT, DisconnectBody(None)))],
        [("KA204", 3, 4)]),
    "unsolicited PINGRESP": (
        [(0, connect(10)), (0, connack()), (1, S(PONG)), (2, C(PacketType.DISCONNECT, DisconnectBody(None)))],
        [("KA205", 3, 3)]),
    "pings with no margin": (
        [(0, connect(10)), (0, connack()), (9.5, C(PING)), (9.5, S(PONG)), (19.1, C(PING)),
         (19.1, S(PONG)), (28.8, C(PING)), (28.8, S(PONG)),
         (29, C(PacketType.DISCONNECT, DisconnectBody(None)))],
        [("KA104", 1, 9)]),
    "two near-K pings are not yet a habit": (
        [(0, connect(10)), (0, connack()), (9.5, C(PING)), (9.5, S(PONG)), (19.1, C(PING)),
         (19.1, S(PONG)), (20, C(PacketType.DISCONNECT, DisconnectBody(None)))],
        []),
}


@pytest.mark.parametrize("script, expected", NEW_RULE_CASES.values(), ids=NEW_RULE_CASES.keys())
def test_ping_rules(script, expected) -> None:
    found, _ = run(script)
    assert sorted(found) == sorted(expected)


def test_ping_cadence_is_reported_when_enabled(tmp_path) -> None:
    pack = tmp_path / "cadence.toml"
    pack.write_text('[pack]\nextends = ["default"]\n[[rule]]\nid = "KA107"\nenabled = true\n')
    script = [(0, connect(60)), (0, connack())]
    for i in range(1, 5):
        script += [(30 * i, C(PING)), (30 * i, S(PONG))]
    script.append((121, C(PacketType.DISCONNECT, DisconnectBody(None))))
    tl_findings, _ = run(script, ruleset=load_ruleset(str(pack)), messages=True)
    assert [(rule, "0.50 x its 60 s" in text and "K/2" in text) for rule, text in tl_findings] == [("KA107", True)]

"""A PINGRESP whose PINGREQ is still held behind a capture hole is not an unsolicited PINGRESP."""

from __future__ import annotations

from analyzer.engine import CaptureAnalysis, Options
from analyzer.ruleset import load_ruleset
from tests.builders import PINGREQ, PINGRESP, connack, connect, disconnect, publish
from tests.unit.test_tls_keyless import NS, Conn


def test_pingresp_before_its_pingreq_is_released_from_behind_a_hole() -> None:
    conn = Conn(server_port=1883)
    conn.open()
    conn.send(0.03, True, connect(keep_alive=2))
    conn.send(0.031, False, connack())
    pub = publish("t", b"x" * 2990)
    conn.send(0.5, True, pub[:1000])
    conn.send(0.6, True, pub[1000:1400])
    conn.seq[True] += 300                      # 300 bytes never captured
    conn.send(0.6, True, pub[1700:2000])
    conn.send(0.7, True, pub[2000:])
    for t in (1.5, 3.0):                        # held behind the hole until it is declared
        conn.send(t, True, PINGREQ)
        conn.send(t + 0.001, False, PINGRESP)
    conn.send(4.0, True, disconnect())
    conn.close(4.0)
    analysis = CaptureAnalysis("synthetic", Options(ruleset=load_ruleset()))
    for n, (at, data) in enumerate(conn.frames, start=1):
        analysis.frame(n, int(at * NS), 101, data)
    analysis.finish()
    (session,) = analysis.sessions
    assert "hole" in session.uncertainty and session.pingreq == 2 and session.pingresp == 2
    assert "KA205" not in {f.rule_id for f in analysis.findings}

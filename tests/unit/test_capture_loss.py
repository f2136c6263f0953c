"""A PINGRESP whose PINGREQ is still held behind a capture hole is not an unsolicited PINGRESP."""

from __future__ import annotations

from analyzer.engine import CaptureAnalysis
from tests.builders import PINGREQ, PINGRESP, connack, connect, disconnect, publish
from tests.unit.test_tls_keyless import Conn, run


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
    analysis = run(conn)
    (session,) = analysis.sessions
    assert session.pingreq == 2 and session.pingresp == 2
    assert "KA205" not in {f.rule_id for f in analysis.findings}
    assert "hole" not in session.uncertainty  # the loss lies inside the PUBLISH's payload


def _late_ping_after(conn: Conn, lose: slice) -> tuple[CaptureAnalysis, int, int]:
    """A 2-second Keep Alive session: a PUBLISH in three segments, the bytes `lose` of it never
    captured, then a PINGREQ 2.9 s after it ends; (analysis, PUBLISH's last frame, PINGREQ's)."""
    conn.open()
    conn.send(0.03, True, connect(keep_alive=2))
    conn.send(0.031, False, connack())
    pub = publish("t", b"x" * 2990)
    sent = -1
    for at, piece in ((0.5, slice(0, 1000)), (0.55, slice(1000, 2000)), (0.6, slice(2000, None))):
        if piece == lose:
            conn.seq[True] += len(pub[piece])
        else:
            sent = conn.send(at, True, pub[piece])
    late = conn.send(3.5, True, PINGREQ)
    conn.send(3.501, False, PINGRESP)
    conn.send(4.0, True, disconnect())
    conn.close(4.0)
    return run(conn), sent, late


def test_a_loss_inside_a_publish_payload_hides_no_packet() -> None:
    """Bytes lost inside a PUBLISH's payload, which the framer skips anyway, cannot hide a packet
    (it knows where the next one starts): the silence after the PUBLISH is judged (KA101), not
    left unjudged as one a capture gap runs through (KA902)."""
    analysis, publish_end, late = _late_ping_after(Conn(server_port=1883), slice(1000, 2000))
    (session,) = analysis.sessions
    assert "hole" not in session.uncertainty and session.client_packets == 4
    assert ("KA101", (publish_end, late)) in {(f.rule_id, f.frames) for f in analysis.findings}
    assert "KA902" not in {f.rule_id for f in analysis.findings}


def test_a_loss_that_ends_a_packet_leaves_the_silence_after_it_unjudged() -> None:
    """The PUBLISH's last segment lost in transit: the loss is found after later packets came, so
    when the PUBLISH ended is not known, and the silence after it is not judged."""
    analysis, _, _ = _late_ping_after(Conn(server_port=1883), slice(2000, None))
    (session,) = analysis.sessions
    assert "hole" in session.uncertainty
    assert not {"KA101", "KA102"} & {f.rule_id for f in analysis.findings}


def test_a_segment_resent_after_later_ones_is_no_clock_step() -> None:
    """A client segment lost before the capture point is resent after the segments that followed
    it were captured: delivered in order, its packet ends after the next one starts. No time
    passed between them (the client sent them back to back), and the capture's clock did not step:
    the session is not marked `clock_step`, and its silences are judged as before."""
    conn = Conn(server_port=1883)
    conn.open()
    conn.send(0.03, True, connect(keep_alive=2))
    conn.send(0.031, False, connack())
    first, second = publish("t", b"a" * 10), publish("t", b"b" * 10)
    sent = conn.seq[True]
    conn.seq[True] += len(first)               # the first PUBLISH is lost on the way
    conn.send(1.0, True, second)                # the second is captured
    resent = conn.seq[True]
    conn.seq[True] = sent
    conn.send(1.3, True, first)                 # the first, resent after its timeout
    conn.seq[True] = resent
    late = conn.send(4.0, True, PINGREQ)        # 3 s after the second PUBLISH, the last sent
    conn.send(4.001, False, PINGRESP)
    conn.send(4.5, True, disconnect())
    conn.close(4.5)
    analysis = run(conn)
    (session,) = analysis.sessions
    assert session.client_packets == 5 and session.uncertainty == frozenset()
    assert [f.rule_id for f in analysis.findings] == ["KA101"]
    assert analysis.findings[0].frames[1] == late and analysis.findings[0].gap_s == 3.0

"""A PINGRESP whose PINGREQ is still held behind a capture hole is not an unsolicited PINGRESP."""

from __future__ import annotations

import pytest

from analyzer.engine import CaptureAnalysis
from tests.builders import PINGREQ, PINGRESP, connack, connect, disconnect, publish
from tests.unit.test_tls_keyless import Conn, run


def _connected(keep_alive: int) -> Conn:
    """A connection on 1883 with its handshake, CONNECT (at 30 ms) and CONNACK."""
    conn = Conn(server_port=1883)
    conn.open()
    conn.send(0.03, True, connect(keep_alive=keep_alive))
    conn.send(0.031, False, connack())
    return conn


def test_pingresp_before_its_pingreq_is_released_from_behind_a_hole() -> None:
    conn = _connected(keep_alive=2)
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
    conn = _connected(keep_alive=2)
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


def _pings_near_k(hidden: bool) -> Conn:
    """A 10 s Keep Alive session pinging 9.6 s after each of its packets (past 0.9 K, four times);
    `hidden`: two client bytes never captured in the middle of each of those silences."""
    conn = _connected(keep_alive=10)
    at = 0.031
    for _ in range(4):
        if hidden:
            conn.seq[True] += 2                 # (a PINGREQ's size: one may have been sent)
        at += 9.6
        conn.send(at, True, PINGREQ)
        conn.send(at + 0.001, False, PINGRESP)
    conn.send(at + 1, True, disconnect())
    conn.close(at + 1)
    return conn


def test_a_ping_after_a_capture_gap_is_not_counted_as_pinging_late(tmp_path) -> None:
    """KA104 counts the pings a client sends after more than 0.9 K of silence. A silence with
    client bytes missing in it may hold a ping the capture lost, so how long the client really
    waited before the next one is not known: such a silence is not counted (as it is not judged
    against K). Without the loss, the same pings are a KA104."""
    from analyzer.engine import NS
    from tests.unit.test_columnar_equivalence import assert_same_report
    from tests.unit.test_pipeline_variants import write_pcap

    plain = run(_pings_near_k(hidden=False))
    assert "KA104" in {f.rule_id for f in plain.findings}
    conn = _pings_near_k(hidden=True)
    lossy = run(conn)
    (session,) = lossy.sessions
    assert "hole" in session.uncertainty and session.pingreq == session.pingresp == 4
    assert lossy.findings == []
    # the columnar path says the same
    path = write_pcap(tmp_path / "lossy.pcap", 101, [(int(at * NS), data) for at, data in conn.frames])
    doc = assert_same_report([path])
    assert "KA104" not in {f["rule_id"] for f in doc["findings"]}


def _pings_behind_holes(answer_after: float) -> tuple[Conn, list[tuple[int, int]]]:
    """A 60 s Keep Alive session pinging every 20 s, two client bytes before each PINGREQ never
    captured: each PINGREQ is held behind its hole until the next client segment shows the bytes
    are lost, so the broker's PINGRESP (`answer_after` s later) comes before it in the stream;
    and (PINGREQ frame, PINGRESP frame) of each."""
    conn = _connected(keep_alive=60)
    pings = []
    for n in range(1, 4):
        conn.seq[True] += 2
        req = conn.send(20.0 * n, True, PINGREQ)
        pings.append((req, conn.send(20.0 * n + answer_after, False, PINGRESP)))
    conn.send(70.0, True, disconnect())
    conn.close(70.0)
    return conn, pings


def test_a_pingreq_held_behind_a_capture_gap_is_answered_by_the_pingresp_shown_before_it() -> None:
    """A PINGRESP the broker sent for a PINGREQ that the capture holds behind a hole (the broker
    acknowledged its bytes) is that PINGREQ's answer, not an unsolicited one; the PINGREQ, once
    released, is not left to wait for the next PINGRESP (20 s later: a slow answer that never
    was). An answer that is really slow is still one."""
    prompt, _ = _pings_behind_holes(0.001)
    analysis = run(prompt)
    (session,) = analysis.sessions
    assert "hole" in session.uncertainty and session.pingreq == session.pingresp == 3
    assert analysis.findings == []
    slow, pings = _pings_behind_holes(7.0)
    analysis = run(slow)
    assert [(f.rule_id, f.frames, f.gap_s) for f in analysis.findings] == [
        ("KA204", frames, 7.0) for frames in pings]


def test_ping_spacing_is_not_measured_across_a_capture_gap() -> None:
    """A session whose CONNECT was not captured gets a hint at its Keep Alive from how often it
    pings (KA901). Pings every 4 s, every other one of the first eight lost from the capture: the
    spacing across a loss (8 s) is not the client's, so the hint says 4 s."""
    conn = Conn(server_port=1883)
    conn.open()
    for n in range(1, 13):
        if n in (2, 4, 6, 8):
            conn.seq[True] += 2                 # this PINGREQ never captured...
            conn.seq[False] += 2                # ...nor its PINGRESP
            continue
        conn.send(4.0 * n, True, PINGREQ)
        conn.send(4.0 * n + 0.001, False, PINGRESP)
    conn.close(50.0)
    analysis = run(conn)
    (hint,) = [f.message for f in analysis.findings if f.rule_id == "KA901"]
    assert "PINGREQs come every 4 s (median)" in hint, hint


def _pings_one_answer_lost(spacing_s: float, lost: bytes = PINGRESP) -> Conn:
    """A 10 s Keep Alive session pinging every `spacing_s` s, each PINGRESP 1 ms after its
    PINGREQ, but the bytes `lost` (in the first PINGRESP's place) never captured."""
    conn = _connected(keep_alive=10)
    for n in range(1, 5):
        at = spacing_s * n
        conn.send(at, True, PINGREQ)
        if n == 1:
            conn.seq[False] += len(lost)
        else:
            conn.send(at + 0.001, False, PINGRESP)
    conn.send(spacing_s * 5, True, disconnect())
    conn.close(spacing_s * 5)
    return conn


@pytest.mark.parametrize("spacing_s", [6.0, 0.4])
def test_a_lost_pingresp_leaves_its_ping_unjudged_and_pairs_the_next_ones_right(
        spacing_s: float) -> None:
    """Broker bytes lost where a PINGRESP was: the oldest PINGREQ's answer may be in them, so it
    is not judged, and each later PINGRESP answers its own PINGREQ. Paired one late instead,
    every later ping came one spacing late (a KA204 each at 6 s); with pings 0.4 s apart the loss
    is found as the next PINGRESP arrives, after the next PINGREQ: it must not be unsolicited."""
    analysis = run(_pings_one_answer_lost(spacing_s))
    (session,) = analysis.sessions
    assert "hole" in session.uncertainty and (session.pingreq, session.pingresp) == (4, 3)
    assert analysis.findings == [], [(f.rule_id, f.message) for f in analysis.findings]


def test_lost_broker_bytes_hide_no_more_answers_than_they_could_hold() -> None:
    """A PINGREQ still waiting when two bytes of the broker's are lost counts as answered by them
    at most once: a broker that then never answers the next ping is still found (KA203)."""
    conn = _connected(keep_alive=2)
    conn.send(1.0, True, PINGREQ)
    conn.seq[False] += 2                        # its PINGRESP, lost
    late = conn.send(2.0, True, PINGREQ)        # never answered
    conn.send(2.5, False, b"", flags=0x10)      # the broker acknowledges it: the loss is found
    conn.send(9.0, True, disconnect())
    conn.close(9.0)
    analysis = run(conn)
    assert [(f.rule_id, f.frames[0]) for f in analysis.findings if f.rule_id == "KA203"] == [
        ("KA203", late)]


def test_a_broker_close_after_client_bytes_the_capture_lost_is_not_judged() -> None:
    """The client's DISCONNECT lost from the capture, the broker's FIN acknowledging it: the close
    may be the DISCONNECT's answer, so it is not a broker closing too early (KA202)."""
    conn = _connected(keep_alive=2)
    conn.send(1.0, True, PINGREQ)
    conn.send(1.001, False, PINGRESP)
    conn.seq[True] += len(disconnect())         # the DISCONNECT at 2.2 s, never captured
    conn.close(2.201, by_client=False)          # (1.2 s of silence: the deadline is 3 s)
    analysis = run(conn)
    (session,) = analysis.sessions
    assert "hole" in session.uncertainty
    assert analysis.findings == [], [(f.rule_id, f.message) for f in analysis.findings]


def test_a_pingresp_after_lost_broker_bytes_is_not_unsolicited() -> None:
    """Broker bytes lost while a PINGREQ waits (here a PUBLISH to the client, not its answer): the
    PINGRESP that follows answers it, not nothing (KA205). Bytes that could hold answers leave
    the pings they could answer unjudged, not gone."""
    conn = _connected(keep_alive=10)
    conn.send(5.0, True, PINGREQ)
    conn.seq[False] += len(publish("t", b"x" * 20))   # never captured
    conn.send(5.001, True, b"", flags=0x10)           # the client acknowledges it
    conn.send(6.5, False, PINGRESP)
    conn.send(8.0, True, disconnect())
    conn.close(8.0)
    analysis = run(conn)
    assert [f.rule_id for f in analysis.findings] == [], [(f.rule_id, f.message) for f in analysis.findings]


def test_a_pingresp_stamped_a_little_before_its_pingreq_still_answers_it() -> None:
    """Frames read from several queues of the capturing host are a few microseconds out of order:
    a PINGRESP stamped 5 us before its PINGREQ answers it (one sent a ping interval before every
    waiting PINGREQ, which a capture hole held back, answers none of them: the shipped
    `mid-stream` capture without three frames in a row, `test_shipped_captures`)."""
    conn = _connected(keep_alive=10)
    conn.send(1.000010, True, PINGREQ)
    conn.send(1.000005, False, PINGRESP)
    conn.send(3.0, True, disconnect())
    conn.close(3.0)
    analysis = run(conn)
    (session,) = analysis.sessions
    assert (session.pingreq, session.pingresp) == (1, 1) and analysis.findings == []


def test_a_pingreq_held_behind_a_hole_is_answered_even_while_a_lost_answer_waits() -> None:
    """A PINGREQ's answer lost, then the next PINGREQ and its answer lost too, then a PINGREQ held
    behind that hole: the broker's PINGRESP for it, read first, is not spent on the oldest ping
    (whose answer was in the lost bytes) and leaves the held one to wait for the next PINGRESP,
    5 s later (a KA203 and a KA204 that never were; seen on a public capture with three frames
    taken out)."""
    conn = _connected(keep_alive=5)
    conn.send(5.0, True, PINGREQ)
    conn.seq[False] += 2                        # its PINGRESP, lost
    conn.seq[True] += 2                         # the next PINGREQ, lost...
    conn.seq[False] += 2                        # ...and its PINGRESP
    conn.send(15.0, True, PINGREQ)              # held behind the client's hole
    conn.send(15.3, False, PINGRESP)
    conn.send(20.0, True, PINGREQ)              # shows the client's bytes were lost
    conn.send(20.3, False, PINGRESP)
    conn.send(22.0, True, disconnect())
    conn.close(22.0)
    analysis = run(conn)
    (session,) = analysis.sessions
    assert "hole" in session.uncertainty and (session.pingreq, session.pingresp) == (3, 2)
    assert not {"KA203", "KA204", "KA205"} & {f.rule_id for f in analysis.findings}, \
        [(f.rule_id, f.message) for f in analysis.findings]


_LOOKS_LIKE_HEADERS = b"9\x03abc\xd6F" + b"7" * 80
"""A payload whose bytes read as a PUBLISH ("9", 3 bytes) and then a PINGRESP with flags 0x6."""


@pytest.mark.parametrize("midway", [False, True], ids=["after-a-loss", "joined-midway"])
def test_payload_read_after_a_loss_gives_no_phantom_packet(midway: bool) -> None:
    """The segment after a loss (or the first one of a connection joined mid-way) starts inside a
    PUBLISH whose payload looks like headers: read as synced, it gave a client "PINGRESP with flags
    0x6 and Remaining Length 70" (KA401, seen on a public capture with two segments taken out).
    The framer finds its place again at the next packet that starts a segment."""
    conn = Conn(server_port=1883)
    first = publish("data/0", b"0" * 30)
    second = publish("data/1", _LOOKS_LIKE_HEADERS)
    at = second.index(b"9\x03")
    if midway:
        conn.seq[True] += 1000                 # no handshake captured: the stream's start unseen
    else:
        conn.open()
        conn.send(0.03, True, connect(keep_alive=10))
        conn.send(0.031, False, connack())
        conn.send(1.0, True, first[:-2])
        conn.seq[True] += 2 + at               # its end and the next PUBLISH's start never captured
    conn.send(1.2, True, second[at:])
    conn.send(1.5, False, b"", flags=0x10)     # the broker acknowledges all of it
    conn.send(5.0, True, PINGREQ)
    conn.send(5.001, False, PINGRESP)
    conn.send(8.0, True, disconnect())
    conn.close(8.0)
    analysis = run(conn)
    (session,) = analysis.sessions
    assert [f.rule_id for f in analysis.findings if f.rule_id.startswith("KA4")] == []
    assert session.pingreq == session.pingresp == 1  # the framer found its place again


def _closes_read_out_of_order(first_closer_is_client: bool, disconnect_first: bool,
                              keep_alive: int) -> Conn:
    """A session whose client is silent after its CONNECT; at 5 s one side closes
    (the client with a DISCONNECT first, if `disconnect_first`) and the other answers with its own
    FIN 0.3 ms later, but the capture shows the answer first (two capture queues): it acknowledges
    bytes it has not shown yet."""
    conn = _connected(keep_alive=keep_alive)
    closer = first_closer_is_client
    seq = conn.seq[closer]
    sent = (disconnect() if disconnect_first else b"")
    conn.seq[closer] += len(sent) + 1                        # what the closer sent, then its FIN...
    conn.send(5.0003, not closer, flags=0x11)                # ...acknowledged by the answer, read first
    conn.seq[closer] = seq
    if sent:
        conn.send(5.0, closer, sent)
    conn.send(5.0, closer, flags=0x11)
    conn.send(5.0004, closer, flags=0x10)
    return conn


@pytest.mark.parametrize(("closer", "disconnect_first", "keep_alive", "end", "rules"), [
    (False, False, 4, "server_fin", {"KA101", "KA202"}),             # the broker closed too early
    (True, False, 2, "client_fin", {"KA101", "KA102", "KA201"}),     # the client left, broker late
    (True, True, 2, "client_disconnect", {"KA101", "KA102", "KA201"}),
], ids=["broker-first", "client-first", "client-disconnect-first"])
def test_a_close_read_before_what_it_acknowledges_waits_for_it(
        closer: bool, disconnect_first: bool, keep_alive: int, end: str, rules: set[str]) -> None:
    """The close read first acknowledges the other side's FIN (or DISCONNECT): the other side
    closed first, whatever the capture's order. Taken at once, a broker that closed too early
    (KA202) looked like a client leaving, and a client's close was taken to follow bytes the
    capture lost (no verdict at all)."""
    analysis = run(_closes_read_out_of_order(closer, disconnect_first, keep_alive))
    (session,) = analysis.sessions
    assert (session.end_reason.value, session.uncertainty) == (end, frozenset())
    assert {f.rule_id for f in analysis.findings} == rules


def test_segments_cut_by_the_snap_length_and_read_out_of_order_lose_only_their_own_bytes() -> None:
    """A capture cut at 96 bytes a frame (`tcpdump -s 96`) keeps every PUBLISH's header; two
    segments of one read the other way round (two capture queues): the later one is held until the
    earlier comes, and its own cut bytes are still its own, not bytes lost in transit. Forgotten,
    they made a hole there and the silence after the PUBLISH went unjudged (KA902, not KA101)."""
    def session(swap: bool) -> CaptureAnalysis:
        conn = _connected(keep_alive=2)
        pub = publish("t", b"x" * 2990)
        first = conn.send(0.5, True, pub[:1000])
        conn.send(0.50002, True, pub[1000:2000])
        conn.send(0.50004, True, pub[2000:])
        conn.send(3.5, True, PINGREQ)
        conn.send(3.501, False, PINGRESP)
        conn.send(4.0, True, disconnect())
        conn.close(4.0)
        conn.frames = [(at, data[:96 - 14]) for at, data in conn.frames]  # (raw IP: 82 bytes)
        if swap:
            conn.frames[first], conn.frames[first + 1] = conn.frames[first + 1], conn.frames[first]
        return run(conn)

    in_order, swapped = session(swap=False), session(swap=True)
    assert [f.rule_id for f in in_order.findings] == ["KA101"]
    assert [f.rule_id for f in swapped.findings] == ["KA101"]
    assert in_order.sessions[0].uncertainty == swapped.sessions[0].uncertainty == frozenset()


def test_on_a_connection_joined_midway_a_pingresp_read_before_its_pingreq_answers_it() -> None:
    """The capture starts mid-session, and its first frame of the connection is the broker's
    PINGRESP, read before the PINGREQ it answers (stamped 80 us earlier, on another capture queue):
    the client's stream has not been seen yet, but the PINGRESP's acknowledgement shows where the
    bytes the broker had end. Left to wait for the next PINGRESP, that PINGREQ and every later one
    were answered one interval late (KA204 after KA204)."""
    conn = Conn(server_port=1883)
    pings = []
    for n in range(1, 6):
        at = 10.0 * n
        if n == 1:
            conn.seq[True] += 2                    # the PINGREQ, sent first...
            conn.send(at + 0.00008, False, PINGRESP)  # ...its answer, read first
            conn.seq[True] -= 2
            pings.append(conn.send(at, True, PINGREQ))
        else:
            pings.append(conn.send(at, True, PINGREQ))
            conn.send(at + 0.00008, False, PINGRESP)
    conn.close(55.0)
    analysis = run(conn)
    (session,) = analysis.sessions
    assert (session.pingreq, session.pingresp) == (5, 5)
    assert not {"KA203", "KA204", "KA205"} & {f.rule_id for f in analysis.findings}, \
        [(f.rule_id, f.message) for f in analysis.findings]


def test_a_last_ack_past_bytes_never_captured_says_they_were_lost() -> None:
    """The client's DISCONNECT and both FINs lost, its last ACK captured: its sequence number moved
    on past bytes never shown, so the silence after its last ping may have ended there. The
    capture runs on for minutes with another connection: the session must not be found silent
    past its deadlines (KA101, KA102) with a broker that never closed it (KA201)."""
    conn = _connected(keep_alive=10)
    for at in (5.0, 10.0):
        conn.send(at, True, PINGREQ)
        conn.send(at + 0.001, False, PINGRESP)
    conn.seq[True] += 2 + 1                    # DISCONNECT and FIN, lost
    conn.seq[False] += 1                       # the broker's FIN, lost
    conn.send(12.0, True, flags=0x10)          # the client's last ACK
    other = Conn(server_port=1883, client_port=40001)
    other.open()
    other.send(0.03, True, connect(keep_alive=60))
    other.send(0.031, False, connack())
    for at in range(30, 300, 30):
        other.send(float(at), True, PINGREQ)
        other.send(at + 0.001, False, PINGRESP)
    conn.frames = sorted(conn.frames + other.frames, key=lambda f: f[0])
    analysis = run(conn)
    first = next(s for s in analysis.sessions if s.flow.client.port == 40000)
    assert "hole" in first.uncertainty
    assert not {"KA101", "KA102", "KA201"} & {f.rule_id for f in analysis.findings}, \
        [(f.rule_id, f.message) for f in analysis.findings]


@pytest.mark.parametrize("ack_captured", [True, False])
def test_on_a_connection_joined_midway_an_answer_lost_before_the_brokers_first_bytes_is_noted(
        ack_captured: bool) -> None:
    """The capture starts mid-session with the client's PINGREQ, which acknowledges the broker's
    stream up to where its PINGRESP will start; that PINGRESP is lost, and the client's ACK of it
    is the only trace (its acknowledgement moves on while the broker's stream has not been seen),
    or is lost too (the broker's first captured bytes start past what the client had said). Not
    noted, the broker's first captured bytes, the next PINGRESP an interval later, answered that
    first PINGREQ: every ping of the session came an interval late (KA204 after KA204)."""
    conn = Conn(server_port=1883)
    conn.send(10.0, True, PINGREQ)
    conn.seq[False] += 2                        # its PINGRESP, lost
    if ack_captured:
        conn.send(10.0001, True, flags=0x10)    # the client's ACK of it
    conn.send(15.0, False, publish("t", b"x"))  # the broker's first captured bytes
    for n in range(2, 6):
        conn.send(10.0 * n, True, PINGREQ)
        conn.send(10.0 * n + 0.0001, False, PINGRESP)
    conn.close(55.0)
    analysis = run(conn)
    (session,) = analysis.sessions
    assert "hole" in session.uncertainty and (session.pingreq, session.pingresp) == (5, 4)
    assert not {"KA203", "KA204", "KA205"} & {f.rule_id for f in analysis.findings}, \
        [(f.rule_id, f.message) for f in analysis.findings]

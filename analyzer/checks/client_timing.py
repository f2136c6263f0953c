"""Client timing: did the client send a control packet within every Keep Alive interval?

KA101 (gap over K), KA102 (gap over 1.5 x K, the spec's broker deadline), KA103 (the gap happened
while the broker kept sending: the classic timer reset by received traffic), KA105 (the broker set a
shorter Server Keep Alive and the client kept its own), and KA902 (a capture gap inside a silence
that would otherwise have been judged: a PINGREQ may be hidden there, so no verdict is given).

A Keep Alive inferred from the client's ping cadence (MQTT over TLS without keys) is the interval
at which it pings when idle, not its K: a client that pings early makes it smaller, one that pings
late larger. A silence over it is KA101 ("longer than the client usually lets pass", likely), but
the broker's deadline, 1.5 x the real K, is not known: no KA102 (nor KA201/KA202,
`broker_timing`). On a generated capture read as TLS without keys, K inferred as 5 s and 8 s
for clients whose K was 10 s made the broker "late" 8 times and the clients past its deadline 8.
"""

from __future__ import annotations

from analyzer.checks.base import NS, SessionView, finding, fmt_s, judged_keep_alive, seconds
from analyzer.model import Finding, KeepAliveSource
from analyzer.ruleset.model import RuleSet
from analyzer.session.observations import Silence, SilenceEnd

SPEC_MULTIPLIER = 1.5
"""MQTT-3.1.2-24 / MQTT-3.1.2-22: the deadline a broker must enforce, whatever a real broker does."""

_HOW_IT_ENDED = {
    SilenceEnd.PACKET: "before its next packet (frame {end})",
    SilenceEnd.SERVER_CLOSE: "until the broker closed the connection (frame {end})",
    SilenceEnd.CLIENT_CLOSE: "and then closed the connection (frame {end})",
    SilenceEnd.OPEN: "and was still silent when the capture ended (frame {end})",
}


def client_silence(silence: Silence, session: SessionView, ruleset: RuleSet) -> list[Finding]:
    """Judge one client silence against the effective keep-alive."""
    k = judged_keep_alive(session)
    if k is None or silence.clock_step:
        return []
    tol_ns = int(ruleset.tolerance_s * NS)
    gap = silence.duration_ns
    if gap <= k * NS + tol_ns:
        return []
    if silence.hole is not None:
        return _hidden_by_gap(silence, session, ruleset, k)
    frames = (silence.start_frame, silence.end_frame)
    what = (f"client sent no control packet for {fmt_s(seconds(gap))} s "
            + _HOW_IT_ENDED[silence.end].format(end=silence.end_frame))
    whose = ("its Keep Alive is" if session.keep_alive_source != KeepAliveSource.INFERRED else
             "its interval between pings when idle, taken for its Keep Alive, is")
    out = [finding(ruleset, "KA101", session, frames, silence.start_ns + k * NS,
                   f"{what}; {whose} {k} s", gap_ns=gap, limit_s=float(k), keep_alive_s=k)]
    deadline_s = SPEC_MULTIPLIER * k
    if gap > deadline_s * NS + tol_ns and session.keep_alive_source != KeepAliveSource.INFERRED:
        out.append(finding(ruleset, "KA102", session, frames,
                           silence.start_ns + int(deadline_s * NS),
                           f"client silent for {fmt_s(seconds(gap))} s; the broker deadline is "
                           f"{fmt_s(deadline_s)} s (1.5 x {k} s)",
                           gap_ns=gap, limit_s=deadline_s, keep_alive_s=k))
    if silence.inbound:
        out.append(finding(ruleset, "KA103", session, frames, silence.start_ns + k * NS,
                           f"the broker sent {silence.inbound} packet(s) to the client during its "
                           f"{fmt_s(seconds(gap))} s silence (first at frame "
                           f"{silence.inbound_first_frame}) and the client did not ping: its "
                           "keep-alive timer looks reset by received traffic",
                           gap_ns=gap, limit_s=float(k), keep_alive_s=k))
    requested = _requested_keep_alive(session)
    if session.keep_alive_source == KeepAliveSource.CONNACK and requested and requested > k:
        out.append(finding(ruleset, "KA105", session, frames, silence.start_ns + k * NS,
                           f"the broker set Server Keep Alive {k} s (the client asked for "
                           f"{requested} s) but the client was silent for {fmt_s(seconds(gap))} s",
                           gap_ns=gap, limit_s=float(k), keep_alive_s=k))
    return [f for f in out if f is not None]


def _requested_keep_alive(session: SessionView) -> int | None:
    connect = getattr(session, "connect", None)
    return connect.keep_alive_s if connect is not None else None


def _hidden_by_gap(silence: Silence, session: SessionView, ruleset: RuleSet, k: int) -> list[Finding]:
    hole = silence.hole
    assert hole is not None
    found = finding(
        ruleset, "KA902", session, (silence.start_frame, silence.end_frame), hole.ts_ns,
        f"{hole.missing_bytes} client bytes were not captured (before frame {hole.frame_no}) inside "
        f"a {fmt_s(seconds(silence.duration_ns))} s silence: a control packet may be hidden there, "
        f"so the interval is not judged against the {k} s Keep Alive",
        gap_ns=silence.duration_ns, limit_s=float(k), keep_alive_s=k)
    return [found] if found is not None else []

"""PINGREQ / PINGRESP: answered in time (KA203), promptly (KA204), only when asked (KA205), awaited
by the client (KA106), well formed (KA401)."""

from __future__ import annotations

from dataclasses import replace

from analyzer.checks.base import NS, SessionView, finding, fmt_s, judged_keep_alive, seconds
from analyzer.model import Finding, PacketType
from analyzer.ruleset.model import RuleSet
from analyzer.session.observations import MalformedPing, PingOutcome, UnsolicitedPingresp


def ping_outcome(ping: PingOutcome, session: SessionView, ruleset: RuleSet) -> list[Finding]:
    """Judge one PINGREQ's fate, on both sides (not across a clock step: its wait is unknown)."""
    if ping.clock_step:
        return []
    out = [_pingresp_missing(ping, session, ruleset), _pingresp_slow(ping, session, ruleset),
           _not_awaited(ping, session, ruleset)]
    return [f for f in out if f is not None]


def _pingresp_slow(ping: PingOutcome, session: SessionView, ruleset: RuleSet) -> Finding | None:
    """KA204: answered, but later than clients wait (coreMQTT gives up after 5 s)."""
    rule = ruleset.rule("KA204")
    if rule is None or ping.answer_ns is None:
        return None
    threshold_s = rule.params["threshold_s"]
    latency = ping.answer_ns - ping.pingreq_ns
    if latency <= (threshold_s + ruleset.tolerance_s) * NS:
        return None
    return finding(ruleset, "KA204", session, (ping.pingreq_frame, ping.end_frame), ping.answer_ns,
                   f"PINGRESP (frame {ping.end_frame}) came {fmt_s(seconds(latency))} s after the "
                   f"PINGREQ (frame {ping.pingreq_frame}); clients give up after about "
                   f"{fmt_s(threshold_s)} s", gap_ns=latency, limit_s=threshold_s,
                   keep_alive_s=session.keep_alive_s)


def unsolicited_pingresp(obs: UnsolicitedPingresp, session: SessionView, ruleset: RuleSet) -> list[Finding]:
    """KA205: a PINGRESP that answers nothing the client sent."""
    pkt = obs.packet
    found = finding(ruleset, "KA205", session, (pkt.first_frame, pkt.last_frame), pkt.ts_first_ns,
                    f"the broker sent a PINGRESP (frame {pkt.first_frame}) with no PINGREQ outstanding",
                    keep_alive_s=session.keep_alive_s)
    return [found] if found is not None else []


def _pingresp_missing(ping: PingOutcome, session: SessionView, ruleset: RuleSet) -> Finding | None:
    k = judged_keep_alive(session)
    tol_ns = int(ruleset.tolerance_s * NS)
    frames = (ping.pingreq_frame, ping.end_frame)
    waited = ping.end_ns - ping.pingreq_ns
    if k is not None:
        wait_s = ruleset.param("KA203", "wait_k") * k
        if waited > wait_s * NS + tol_ns:
            got = (f"the PINGRESP came only after {fmt_s(seconds(waited))} s (frame {ping.end_frame})"
                   if ping.answer_ns is not None else
                   f"none came in the {fmt_s(seconds(waited))} s observed")
            return finding(ruleset, "KA203", session, frames, ping.pingreq_ns + int(wait_s * NS),
                           f"PINGREQ (frame {ping.pingreq_frame}) not answered within {fmt_s(wait_s)} s; "
                           f"{got}", gap_ns=waited, limit_s=wait_s, keep_alive_s=k)
    if ping.answer_ns is None and ping.closed_by == "server" and waited >= tol_ns:
        return finding(ruleset, "KA203", session, frames, ping.end_ns,
                       f"the broker closed the connection {fmt_s(seconds(waited))} s after the "
                       f"PINGREQ (frame {ping.pingreq_frame}) without answering it",
                       gap_ns=waited, keep_alive_s=k)
    return None


def _not_awaited(ping: PingOutcome, session: SessionView, ruleset: RuleSet) -> Finding | None:
    k = judged_keep_alive(session)
    if k is None:
        return None
    limit_s = ruleset.param("KA106", "close_within_k") * k
    deadline_ns = ping.pingreq_ns + int((limit_s + ruleset.tolerance_s) * NS)
    answered_in_time = ping.answer_ns is not None and ping.answer_ns <= deadline_ns
    pinged_again = ping.repinged_ns is not None and ping.repinged_ns <= deadline_ns
    if answered_in_time or pinged_again or ping.end_ns <= deadline_ns:
        return None
    waited = ping.end_ns - ping.pingreq_ns
    if ping.closed_by == "client":
        then = f"the client closed the connection only after {fmt_s(seconds(waited))} s"
    elif ping.answer_ns is not None:
        then = f"the client was still connected when a PINGRESP finally came after {fmt_s(seconds(waited))} s"
    else:
        then = f"the client was still connected {fmt_s(seconds(waited))} s later"
    return finding(ruleset, "KA106", session, (ping.pingreq_frame, ping.end_frame),
                   ping.pingreq_ns + int(limit_s * NS),
                   f"PINGREQ (frame {ping.pingreq_frame}) unanswered; the client should close within "
                   f"{fmt_s(limit_s)} s and did not ping again; {then}",
                   gap_ns=waited, limit_s=limit_s, keep_alive_s=k)


def malformed_ping(obs: MalformedPing, session: SessionView, ruleset: RuleSet) -> list[Finding]:
    """KA401: PINGREQ must be exactly C0 00 and PINGRESP D0 00."""
    pkt = obs.packet
    proper = "C0 00" if pkt.type == PacketType.PINGREQ else "D0 00"
    sender = "client" if obs.from_client else "broker"
    found = finding(ruleset, "KA401", session, (pkt.first_frame, pkt.last_frame), pkt.ts_first_ns,
                    f"{sender} sent {pkt.type.name} with flags 0x{pkt.flags:X} and Remaining Length "
                    f"{pkt.remaining_length}; it must be exactly {proper}",
                    keep_alive_s=session.keep_alive_s)
    if found is None:
        return []
    return [replace(found, side=sender)]

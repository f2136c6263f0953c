"""Broker enforcement: did the broker close a silent client inside its profile's window?

KA201: the client's silence outlasted multiplier x K + the profile's lateness + tolerance and the
broker still had not closed the connection (it accepted a later packet, closed late, or the
connection was still open when the client closed it or the capture ended).
KA202: the broker closed while the silence was still under multiplier x K - early allowance -
tolerance, and nothing explains the close as something other than keep-alive enforcement.
"""

from __future__ import annotations

from analyzer.checks.base import NS, SessionView, finding, fmt_s, judged_keep_alive, seconds
from analyzer.model import Finding
from analyzer.ruleset.model import RuleSet
from analyzer.session.observations import Silence, SilenceEnd
from analyzer.session.timeline import KEEP_ALIVE_TIMEOUT

_KEPT_OPEN = {
    SilenceEnd.PACKET: "the broker kept the connection and accepted the client's next packet (frame {end})",
    SilenceEnd.SERVER_CLOSE: "the broker closed the connection only at frame {end}, {late} s late",
    SilenceEnd.CLIENT_CLOSE: "the broker had not closed the connection when the client did (frame {end})",
    SilenceEnd.OPEN: "the connection was still open when the capture ended (frame {end})",
}


def broker_enforcement(silence: Silence, session: SessionView, ruleset: RuleSet) -> list[Finding]:
    """Judge the broker's reaction to one client silence."""
    k = judged_keep_alive(session)
    if k is None or silence.hole is not None:
        return []
    profile = ruleset.profile
    tol_ns = int(ruleset.tolerance_s * NS)
    deadline_s = profile.multiplier * k
    latest_ns = silence.start_ns + int((deadline_s + profile.late_s) * NS)
    if silence.end_ns > latest_ns + tol_ns:
        return _not_enforced(silence, session, ruleset, k, deadline_s, latest_ns)
    if silence.end == SilenceEnd.SERVER_CLOSE:
        earliest_ns = silence.start_ns + int((deadline_s - profile.early_s) * NS)
        if silence.end_ns < earliest_ns - tol_ns and _is_keep_alive_close(silence, ruleset, k):
            return _closed_early(silence, session, ruleset, k, deadline_s)
    return []


def _is_keep_alive_close(silence: Silence, ruleset: RuleSet, k: int) -> bool:
    """A close counts as keep-alive enforcement unless something else explains it."""
    if silence.close_explained is not None:
        return False
    if silence.disconnect_reason == KEEP_ALIVE_TIMEOUT:
        return True
    min_idle_ns = ruleset.param("KA202", "min_idle_k") * k * NS
    return silence.duration_ns >= min_idle_ns


def _not_enforced(silence: Silence, session: SessionView, ruleset: RuleSet, k: int,
                  deadline_s: float, latest_ns: int) -> list[Finding]:
    gap = silence.duration_ns
    how = _KEPT_OPEN[silence.end].format(end=silence.end_frame,
                                         late=fmt_s(seconds(silence.end_ns - latest_ns)))
    window = f"{fmt_s(deadline_s)} s ({ruleset.profile.multiplier:g} x {k} s"
    window += f" + {fmt_s(ruleset.profile.late_s)} s allowed late)" if ruleset.profile.late_s else ")"
    found = finding(ruleset, "KA201", session, (silence.start_frame, silence.end_frame), latest_ns,
                    f"client silent for {fmt_s(seconds(gap))} s, past the broker deadline of "
                    f"{window}; {how}", gap_ns=gap,
                    limit_s=deadline_s + ruleset.profile.late_s, keep_alive_s=k)
    return [found] if found is not None else []


def _closed_early(silence: Silence, session: SessionView, ruleset: RuleSet, k: int,
                  deadline_s: float) -> list[Finding]:
    gap = silence.duration_ns
    said = (" with DISCONNECT 0x8D (Keep Alive timeout)"
            if silence.disconnect_reason == KEEP_ALIVE_TIMEOUT else "")
    found = finding(ruleset, "KA202", session, (silence.start_frame, silence.end_frame),
                    silence.end_ns,
                    f"the broker closed the connection{said} after {fmt_s(seconds(gap))} s of client "
                    f"silence; it may not before {fmt_s(deadline_s)} s "
                    f"({ruleset.profile.multiplier:g} x {k} s)",
                    gap_ns=gap, limit_s=deadline_s, keep_alive_s=k)
    return [found] if found is not None else []

"""Broker enforcement: did the broker close a silent client inside its profile's window?

The broker profile says which K the broker enforces (K_enf: the client's, after the profile's
limits) and the window in which its close is on time (`BrokerProfile.window_s`).
KA201: the client's silence outlasted the window's end + tolerance and the broker still had not
closed the connection (it accepted a later packet, closed late, or the connection was still open
when the client closed it or the capture ended).
KA202: the broker closed before the window's start - tolerance, and nothing explains the close as
something other than keep-alive enforcement.
Neither when K was inferred from the client's ping cadence: the broker enforces the client's real
K, which the cadence does not tell (`client_timing`).
"""

from __future__ import annotations

from analyzer.checks.base import NS, SessionView, finding, fmt_s, judged_keep_alive, seconds
from analyzer.model import Finding, KeepAliveSource
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
    """Judge the broker's reaction to one client silence against the profile's on-time window."""
    k = judged_keep_alive(session)
    if (k is None or silence.hole is not None or silence.clock_step
            or session.keep_alive_source == KeepAliveSource.INFERRED):
        return []
    k_enf = ruleset.profile.enforced_keep_alive(k)
    if k_enf is None:
        return []
    tol_ns = int(ruleset.tolerance_s * NS)
    earliest_s, latest_s = ruleset.profile.window_s(k_enf)
    start_ns = _timer_start(silence, ruleset)
    latest_ns = start_ns + int(latest_s * NS)
    if silence.end_ns > latest_ns + tol_ns:
        return _not_enforced(silence, session, ruleset, k_enf, latest_ns)
    if silence.end == SilenceEnd.SERVER_CLOSE:
        if silence.end_ns < start_ns + int(earliest_s * NS) - tol_ns and \
                _is_keep_alive_close(silence, ruleset, k):
            return _closed_early(silence, session, ruleset, k_enf, earliest_s)
    return []


def _timer_start(silence: Silence, ruleset: RuleSet) -> int:
    """Where the broker's clock starts: the client's last packet, or CONNACK for the first
    silence of a broker whose timer starts there (AWS IoT Core documents this)."""
    if ruleset.profile.timer_start == "connack" and silence.connack_ns is not None:
        return max(silence.start_ns, silence.connack_ns)
    return silence.start_ns


def _is_keep_alive_close(silence: Silence, ruleset: RuleSet, k: int) -> bool:
    """A close counts as keep-alive enforcement unless something else explains it."""
    if silence.close_explained is not None:
        return False
    if silence.disconnect_reason == KEEP_ALIVE_TIMEOUT:
        return True
    min_idle_ns = ruleset.param("KA202", "min_idle_k") * k * NS
    return silence.duration_ns >= min_idle_ns


def _window_text(ruleset: RuleSet, k_enf: int) -> str:
    profile = ruleset.profile
    text = f"{fmt_s(profile.deadline_s(k_enf))} s ({profile.multiplier:g} x {k_enf} s"
    if profile.profile_id != "spec":
        earliest, latest = profile.window_s(k_enf)
        text += f"; {profile.profile_id} closes between {fmt_s(earliest)} and {fmt_s(latest)} s"
    return text + ")"


def _not_enforced(silence: Silence, session: SessionView, ruleset: RuleSet, k_enf: int,
                  latest_ns: int) -> list[Finding]:
    gap = silence.duration_ns
    how = _KEPT_OPEN[silence.end].format(end=silence.end_frame,
                                         late=fmt_s(seconds(silence.end_ns - latest_ns)))
    limit_s = seconds(latest_ns - _timer_start(silence, ruleset))
    found = finding(ruleset, "KA201", session, (silence.start_frame, silence.end_frame), latest_ns,
                    f"client silent for {fmt_s(seconds(gap))} s, past the broker deadline of "
                    f"{_window_text(ruleset, k_enf)}; {how}", gap_ns=gap,
                    limit_s=round(limit_s, 6), keep_alive_s=k_enf)
    return [found] if found is not None else []


def _closed_early(silence: Silence, session: SessionView, ruleset: RuleSet, k_enf: int,
                  earliest_s: float) -> list[Finding]:
    gap = silence.duration_ns
    said = (" with DISCONNECT 0x8D (Keep Alive timeout)"
            if silence.disconnect_reason == KEEP_ALIVE_TIMEOUT else "")
    found = finding(ruleset, "KA202", session, (silence.start_frame, silence.end_frame),
                    silence.end_ns,
                    f"the broker closed the connection{said} after {fmt_s(seconds(gap))} s of client "
                    f"silence; it may not before {fmt_s(earliest_s)} s "
                    f"(deadline {_window_text(ruleset, k_enf)})",
                    gap_ns=gap, limit_s=round(earliest_s, 6), keep_alive_s=k_enf)
    return [found] if found is not None else []

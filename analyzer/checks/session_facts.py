"""Facts about a whole session: keep-alive disabled (KA301), outside the broker profile's limits
(KA302), overridden by the broker (KA303), or unknown because the capture missed the CONNECT (KA901)."""

from __future__ import annotations

from statistics import median

from analyzer.checks.base import NS, finding, fmt_s, seconds
from analyzer.model import Finding, KeepAliveSource, Uncertainty
from analyzer.ruleset.model import RuleSet
from analyzer.session.timeline import SessionTimeline


def session_facts(tl: SessionTimeline, ruleset: RuleSet) -> list[Finding]:
    """Judge a finished session as a whole."""
    out = [_keep_alive_disabled(tl, ruleset), _out_of_profile(tl, ruleset),
           _server_override(tl, ruleset), _start_unseen(tl, ruleset)]
    return [f for f in out if f is not None]


def _keep_alive_disabled(tl: SessionTimeline, ruleset: RuleSet) -> Finding | None:
    if tl.keep_alive_s != 0 or tl.connect_frame is None:
        return None
    where = "the broker's CONNACK" if tl.keep_alive_source == KeepAliveSource.CONNACK else "CONNECT"
    frame = tl.connack_frame if tl.keep_alive_source == KeepAliveSource.CONNACK else tl.connect_frame
    return finding(ruleset, "KA301", tl, (frame, frame), tl.start_ns,
                   f"Keep Alive is 0 in {where}: neither side will detect a dead connection at the "
                   "MQTT level", keep_alive_s=0)


def _out_of_profile(tl: SessionTimeline, ruleset: RuleSet) -> Finding | None:
    if tl.keep_alive_s is None or tl.connect_frame is None:
        return None
    why = ruleset.profile.outside_limits(tl.keep_alive_s)
    if why is None:
        return None
    return finding(ruleset, "KA302", tl, (tl.connect_frame, tl.connect_frame), tl.start_ns,
                   f"Keep Alive {tl.keep_alive_s} s is {why} under the {ruleset.profile.profile_id} "
                   "profile", keep_alive_s=tl.keep_alive_s)


def _server_override(tl: SessionTimeline, ruleset: RuleSet) -> Finding | None:
    connack = tl.connack
    if connack is None or connack.server_keep_alive_s is None or tl.connack_frame is None:
        return None
    asked = f"{tl.connect.keep_alive_s} s" if tl.connect else "an unseen value"
    twice = (f"; property 0x13 appears {connack.server_keep_alive_count} times (a protocol error)"
             if connack.server_keep_alive_count > 1 else "")
    first = tl.connect_frame or tl.connack_frame
    return finding(ruleset, "KA303", tl, (first, tl.connack_frame), tl.start_ns,
                   f"the broker set Server Keep Alive {connack.server_keep_alive_s} s in CONNACK; the "
                   f"client asked for {asked}{twice}", keep_alive_s=connack.server_keep_alive_s)


def _start_unseen(tl: SessionTimeline, ruleset: RuleSet) -> Finding | None:
    if tl.connect is not None:
        return None
    if Uncertainty.ENCRYPTED in tl.uncertainty:
        return _encrypted(tl, ruleset)
    if tl.keep_alive_source == KeepAliveSource.ASSUMED:
        judged = f"judged with the assumed Keep Alive of {tl.keep_alive_s} s"
    else:
        judged = "its Keep Alive is unknown, so its timing was not judged (use --assume-keep-alive)"
    hint = ""
    if len(tl.ping_spacings_ns) >= 2:
        typical = median(tl.ping_spacings_ns) / NS
        hint = f"; PINGREQs come every {fmt_s(typical)} s (median), suggesting a Keep Alive near that"
    return finding(ruleset, "KA901", tl, (tl.start_frame, tl.start_frame), tl.start_ns,
                   f"the capture does not hold this session's CONNECT (it started before the "
                   f"capture); {judged}{hint}", keep_alive_s=tl.keep_alive_s)


def _encrypted(tl: SessionTimeline, ruleset: RuleSet) -> Finding | None:
    """KA901 for MQTT over TLS judged without keys: the CONNECT was sent but cannot be read."""
    facts = getattr(tl, "tls_facts", "") or "TLS"
    ping_length = getattr(tl, "ping_record_length", None)
    pings = (f"{ping_length}-byte records are taken for PINGREQ/PINGRESP" if ping_length else
             "no record size identifies a ping under this cipher suite")
    if tl.keep_alive_source == KeepAliveSource.ASSUMED:
        judged = f"judged with the assumed Keep Alive of {tl.keep_alive_s} s"
    elif tl.keep_alive_source == KeepAliveSource.INFERRED:
        judged = (f"judged with a Keep Alive of {tl.keep_alive_s} s inferred from "
                  f"{getattr(tl, 'inferred_from', 0)} answered probable pings (the client's idle ping "
                  "interval; a client that pings before K makes this smaller than its real K, "
                  "one that pings late larger: silences over it are judged, the broker's deadline "
                  "and its closes are not)")
        unkept = getattr(tl, "unkept", None)
        if unkept is not None:
            left_out, deferred, longest_ns = unkept
            judged += (f"; of the {deferred} silences before it was inferred only the longest "
                       f"{deferred - left_out} were kept to be judged, and {left_out} left out (the "
                       f"longest {fmt_s(seconds(longest_ns))} s) may hide violations")
    else:
        judged = ("its Keep Alive is unknown and could not be inferred from regular pings, so its "
                  "timing was not judged (use --assume-keep-alive, or --tls-keylog to decrypt)")
    return finding(ruleset, "KA901", tl, (tl.start_frame, tl.start_frame), tl.start_ns,
                   f"MQTT over TLS ({facts}) without keys: the CONNECT cannot be read; each TLS "
                   f"application-data record counts as one packet and {pings}; {judged}",
                   keep_alive_s=tl.keep_alive_s)

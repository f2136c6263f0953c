"""How a client schedules its pings: no margin left (KA104), and its cadence (KA107, info).

Both read the timeline's histogram of idle->PINGREQ gaps in whole percent of K, so they see every
ping of a session of any length in bounded memory. Neither runs when K was inferred from the pings
themselves (MQTT over TLS without keys): the cadence would only be compared with itself.
"""

from __future__ import annotations

from analyzer.checks.base import NS, finding, fmt_s
from analyzer.model import Finding, KeepAliveSource
from analyzer.ruleset.model import RuleSet
from analyzer.session.timeline import SessionTimeline

_PATTERNS = (  # (low, high) ratio of K -> what the cadence looks like (client library habits)
    ((0.9, 1.1), "about K: a library that pings exactly at Keep Alive (paho, libmosquitto, MQTT.js)"),
    ((0.4, 0.6), "about K/2 (esp-mqtt and MQTT.js tick at half the interval)"),
    ((0.2, 0.3), "about K/4 (the Azure IoT .NET SDK pings four times per period)"),
)


def ping_cadence(tl: SessionTimeline, ruleset: RuleSet) -> list[Finding]:
    if tl.keep_alive_source == KeepAliveSource.INFERRED:
        return []
    out = [_no_margin(tl, ruleset), _cadence(tl, ruleset)]
    return [f for f in out if f is not None]


def _no_margin(tl: SessionTimeline, ruleset: RuleSet) -> Finding | None:
    """KA104: several pings sent in the last tenth of the interval: one delay from a drop."""
    rule = ruleset.rule("KA104")
    if rule is None or not tl.keep_alive_s:
        return None
    low = rule.params["near_k"] * 100
    high = 100 + ruleset.tolerance_s * 100 / tl.keep_alive_s
    near = sum(n for pct, n in tl.ping_gap_percent.items() if low < pct <= high)
    if near < rule.params["min_count"]:
        return None
    total = sum(tl.ping_gap_percent.values())
    return finding(ruleset, "KA104", tl, (tl.start_frame, tl.end_frame), tl.end_ns,
                   f"{near} of {total} pings came after more than {rule.params['near_k']:g} x the "
                   f"{tl.keep_alive_s} s Keep Alive of silence: one network delay from "
                   "KA101, and from a drop by brokers that enforce exactly", keep_alive_s=tl.keep_alive_s)


def _cadence(tl: SessionTimeline, ruleset: RuleSet) -> Finding | None:
    """KA107 (info): the median idle->PINGREQ gap, as a fraction of K and as a known pattern."""
    rule = ruleset.rule("KA107")
    total = sum(tl.ping_gap_percent.values())
    if rule is None or not tl.keep_alive_s or total < rule.params["min_pings"]:
        return None
    ratio = _median(tl.ping_gap_percent, total) / 100
    seconds = ratio * tl.keep_alive_s
    pattern = next((text for (lo, hi), text in _PATTERNS if lo <= ratio <= hi), None)
    if pattern is None and abs(seconds - 30) <= 1:
        pattern = "a fixed 30 s, whatever K is (coreMQTT's default)"
    if pattern is None and seconds < 2 and ratio < 0.25:
        pattern = "a ping storm: under 2 s of silence, far more often than K asks"
    looks = f"; it looks like {pattern}" if pattern else ""
    return finding(ruleset, "KA107", tl, (tl.start_frame, tl.end_frame), tl.end_ns,
                   f"the client pings after {fmt_s(seconds)} s of silence (median of {total}), "
                   f"{ratio:.2f} x its {tl.keep_alive_s} s Keep Alive{looks}",
                   gap_ns=int(seconds * NS), keep_alive_s=tl.keep_alive_s)


def _median(histogram: dict[int, int], total: int) -> float:
    seen = 0
    for pct in sorted(histogram):
        seen += histogram[pct]
        if seen * 2 >= total:
            return float(pct)
    return 0.0

"""What every check shares: the session it judges, the rules in force, and how a finding is made."""

from __future__ import annotations

from typing import Protocol

from analyzer.model import CONFIRMED, LIKELY, Finding, FlowKey, KeepAliveSource, Uncertainty
from analyzer.ruleset.model import RuleSet

NS = 1_000_000_000


class SessionView(Protocol):
    """The read-only part of a session timeline the checks may look at."""

    session_id: str
    capture: str
    flow: FlowKey
    keep_alive_s: int | None
    keep_alive_source: KeepAliveSource
    uncertainty: set[Uncertainty]

    @property
    def client_id(self) -> str | None: ...


def seconds(ns: int) -> float:
    return ns / NS


def fmt_s(value_s: float) -> str:
    """Seconds for messages: enough digits to compare with a limit, no noise."""
    return f"{value_s:.3f}".rstrip("0").rstrip(".") if value_s < 100 else f"{value_s:.1f}"


def finding(ruleset: RuleSet, rule_id: str, session: SessionView, frames: tuple[int, int],
            ts_ns: int, message: str, *, gap_ns: int | None = None, limit_s: float | None = None,
            keep_alive_s: int | None = None) -> Finding | None:
    """Build a finding for `rule_id`, or None when the pack disables that rule.

    A session judged from encrypted TLS records (uncertainty `encrypted`) only ever gives `likely`
    findings: its packets were inferred from record sizes, not read."""
    rule = ruleset.rule(rule_id)
    if rule is None:
        return None
    return Finding(
        rule_id=rule.rule_id, rule=rule.name, severity=rule.severity, side=rule.side,
        session_id=session.session_id, capture=session.capture, client_id=session.client_id,
        frames=frames, ts_ns=ts_ns, stream_index=session.flow.stream_index, message=message,
        spec=rule.spec, gap_s=None if gap_ns is None else round(seconds(gap_ns), 6),
        limit_s=limit_s, keep_alive_s=keep_alive_s,
        uncertainty=tuple(sorted(u.value for u in session.uncertainty)),
        confidence=LIKELY if Uncertainty.ENCRYPTED in session.uncertainty else CONFIRMED,
    )


def judged_keep_alive(session: SessionView) -> int | None:
    """The keep-alive to judge against, or None when there is none (unknown, or 0 = disabled)."""
    k = session.keep_alive_s
    return k if k else None

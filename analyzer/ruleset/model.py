"""The loaded, validated form of a rule pack and a broker profile."""

from __future__ import annotations

import datetime as dt
import fnmatch
from dataclasses import dataclass, field
from typing import Mapping, Sequence

from analyzer.model import Finding, RuleSetInfo, Severity
from analyzer.spool import Spool


@dataclass(frozen=True, slots=True)
class Rule:
    """One rule of a pack: its permanent id, what it is called and how severe it is."""

    rule_id: str
    name: str
    side: str
    severity: Severity
    spec: tuple[str, ...] = ()
    summary: str = ""
    params: Mapping[str, float] = field(default_factory=dict)
    enabled: bool = True


@dataclass(frozen=True, slots=True)
class Suppression:
    """A reviewed exception: `rule_id` is silenced for client ids matching `client_id` (a glob)
    until `expires`; after that date the findings come back and the run warns."""

    rule_id: str
    client_id: str
    reason: str
    expires: dt.date
    source: str = ""

    def matches(self, rule_id: str, client_id: str | None) -> bool:
        return rule_id == self.rule_id and fnmatch.fnmatchcase(client_id or "", self.client_id)

    def expired(self, today: dt.date) -> bool:
        return today > self.expires


@dataclass(frozen=True, slots=True)
class BrokerProfile:
    """How a broker enforces Keep Alive: which K it enforces and when its close counts as on time.

    The broker should close a silent client `multiplier` x K_enf after the client's last packet
    (capped at `deadline_max_s`), where K_enf is the client's effective Keep Alive after the
    profile's limits. Real brokers check on ticks and round, so the close is on time anywhere in
    [nominal - early, nominal + late]; see `rules/README.md`.
    """

    profile_id: str
    multiplier: float = 1.5
    early_s: float = 0.0
    early_k: float = 0.0
    late_s: float = 0.0
    late_k: float = 0.0
    late_max_s: float | None = None
    deadline_max_s: float | None = None
    min_keep_alive_s: int | None = None
    max_keep_alive_s: int | None = None
    above_max: str = "allow"
    zero_keep_alive: str = "disabled"
    timer_start: str = "connect"
    sends_disconnect_0x8d: bool | None = None
    assume_keep_alive_s: int | None = None
    """The Keep Alive of sessions whose CONNECT cannot be read (not captured, or MQTT over TLS
    without keys), for a fleet that uses one value; `--assume-keep-alive` wins over it."""
    description: str = ""
    sources: tuple[str, ...] = ()

    def enforced_keep_alive(self, k: int) -> int | None:
        """The K this broker enforces for a client whose effective K is `k` (None: no enforcement)."""
        if k == 0:
            return self.max_keep_alive_s if self.zero_keep_alive == "max" else None
        if self.min_keep_alive_s is not None and k < self.min_keep_alive_s:
            return self.min_keep_alive_s
        if self.max_keep_alive_s is not None and k > self.max_keep_alive_s and self.above_max == "clamp":
            return self.max_keep_alive_s
        return k

    def deadline_s(self, k_enf: int) -> float:
        """When the broker should close a client silent since its last packet, nominally."""
        nominal = self.multiplier * k_enf
        return min(nominal, self.deadline_max_s) if self.deadline_max_s is not None else nominal

    def window_s(self, k_enf: int) -> tuple[float, float]:
        """(earliest, latest) silence at which this broker's close is on time."""
        deadline = self.deadline_s(k_enf)
        late = self.late_s + self.late_k * k_enf
        if self.late_max_s is not None:
            late = min(late, self.late_max_s)
        return deadline - self.early_s - self.early_k * k_enf, deadline + late

    def outside_limits(self, k: int) -> str | None:
        """Why K is outside what this broker accepts, or None when it is inside."""
        if k == 0:
            return "Keep Alive 0 is refused" if self.zero_keep_alive == "reject" else (
                f"Keep Alive 0 is replaced by {self.max_keep_alive_s} s"
                if self.zero_keep_alive == "max" else None)
        if self.min_keep_alive_s is not None and k < self.min_keep_alive_s:
            return f"below the minimum of {self.min_keep_alive_s} s (enforced as {self.min_keep_alive_s} s)"
        if self.max_keep_alive_s is not None and k > self.max_keep_alive_s:
            what = {"clamp": f"enforced as {self.max_keep_alive_s} s", "reject": "refused"}.get(
                self.above_max, "accepted but outside the profile")
            return f"above the maximum of {self.max_keep_alive_s} s ({what})"
        return None


@dataclass(frozen=True, slots=True)
class RuleSet:
    """The rules in force, the shared parameters and the broker profile they judge against."""

    rules: Mapping[str, Rule]
    profile: BrokerProfile
    tolerance_s: float = 0.25
    packs: tuple[str, ...] = ("default",)
    suppressions: tuple[Suppression, ...] = ()

    def rule(self, rule_id: str) -> Rule | None:
        """The rule if it is in the pack and enabled, else None (its check is then skipped)."""
        rule = self.rules.get(rule_id)
        return rule if rule is not None and rule.enabled else None

    def param(self, rule_id: str, name: str) -> float:
        return self.rules[rule_id].params[name]

    @property
    def info(self) -> RuleSetInfo:
        return RuleSetInfo(packs=self.packs, profile=self.profile.profile_id)


def apply_suppressions(findings: Sequence[Finding], suppressions: tuple[Suppression, ...],
                       today: dt.date) -> tuple[Sequence[Finding], Sequence[Finding], list[str]]:
    """Split findings into (kept, suppressed); expired suppressions no longer apply and are
    returned as warnings, so an exception cannot outlive its review date unnoticed."""
    active = [s for s in suppressions if not s.expired(today)]
    warnings = [f"suppression of {s.rule_id} for client ids {s.client_id!r} ({s.source}) expired on "
                f"{s.expires.isoformat()}; its findings are reported again (reason was: {s.reason})"
                for s in suppressions if s.expired(today)]
    if not active:
        return findings, (), warnings
    kept: Spool[Finding] = Spool()
    suppressed: Spool[Finding] = Spool()
    for f in findings:
        (suppressed if any(s.matches(f.rule_id, f.client_id) for s in active) else kept).append(f)
    return kept, suppressed, warnings

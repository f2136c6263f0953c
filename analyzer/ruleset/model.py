"""The loaded, validated form of a rule pack and a broker profile."""

from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Mapping

from analyzer.model import RuleSetInfo, Severity


@dataclass(frozen=True, slots=True)
class Rule:
    """One rule of a pack: its permanent id, what it is called and how severe it is."""

    rule_id: str
    name: str
    side: str
    severity: Severity
    spec: tuple[str, ...]
    summary: str
    params: Mapping[str, float] = field(default_factory=lambda: MappingProxyType({}))
    enabled: bool = True


@dataclass(frozen=True, slots=True)
class BrokerProfile:
    """How a broker enforces Keep Alive: the window in which its close counts as on time."""

    profile_id: str
    multiplier: float = 1.5
    early_s: float = 0.0
    late_s: float = 0.0
    timer_start: str = "connect"
    description: str = ""


@dataclass(frozen=True, slots=True)
class RuleSet:
    """The rules in force, the shared parameters and the broker profile they judge against."""

    rules: Mapping[str, Rule]
    profile: BrokerProfile
    tolerance_s: float = 0.25
    packs: tuple[str, ...] = ("default",)

    def rule(self, rule_id: str) -> Rule | None:
        """The rule if it is in the pack and enabled, else None (its check is then skipped)."""
        rule = self.rules.get(rule_id)
        return rule if rule is not None and rule.enabled else None

    def param(self, rule_id: str, name: str) -> float:
        return self.rules[rule_id].params[name]

    @property
    def info(self) -> RuleSetInfo:
        return RuleSetInfo(packs=self.packs, profile=self.profile.profile_id)

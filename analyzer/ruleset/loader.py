"""Read rule packs and broker profiles (TOML, `tomllib`) and validate them as they load.

Built-in packs ship inside the wheel (`analyzer/_rules`, mapped from the repository's `rules/`) and
are found with `importlib.resources`; in a source checkout the repository's `rules/` is used. Any
problem is a `RuleSetError` naming the file and the key, because a CI gate must not run on a pack
that silently means something else.
"""

from __future__ import annotations

import tomllib
from importlib import resources
from pathlib import Path
from types import MappingProxyType
from typing import Any

from analyzer.errors import RuleSetError
from analyzer.model import Severity
from analyzer.ruleset.model import BrokerProfile, Rule, RuleSet

_RULE_KEYS = {"id", "name", "side", "severity", "spec", "summary", "params", "enabled"}
_PROFILE_KEYS = {"id", "description", "multiplier", "early_s", "late_s", "timer_start", "sources"}
_SIDES = {"client", "broker", "either", "-"}


def rules_root() -> Path:
    """Where the built-in packs are: inside the installed package, or the source checkout's rules/."""
    packaged = resources.files("analyzer") / "_rules"
    if packaged.is_dir():
        return Path(str(packaged))
    return Path(__file__).resolve().parents[2] / "rules"


def load_ruleset(pack: str = "default", profile: str = "spec") -> RuleSet:
    """Load a built-in pack and broker profile by id."""
    root = rules_root()
    pack_data, pack_path = _read(root / "packs" / f"{pack}.toml")
    profile_data, profile_path = _read(root / "brokers" / f"{profile}.toml")
    rules = _parse_rules(pack_data, pack_path)
    params = pack_data.get("params", {})
    tolerance = _number(params.get("tolerance_s", 0.25), pack_path, "params.tolerance_s")
    return RuleSet(rules=MappingProxyType(rules), profile=_parse_profile(profile_data, profile_path),
                   tolerance_s=tolerance, packs=(pack,))


def _read(path: Path) -> tuple[dict[str, Any], Path]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh), path
    except FileNotFoundError:
        raise RuleSetError(f"{path}: no such rule pack or broker profile") from None
    except tomllib.TOMLDecodeError as exc:
        raise RuleSetError(f"{path}: not valid TOML: {exc}") from None


def _parse_rules(data: dict[str, Any], path: Path) -> dict[str, Rule]:
    rules: dict[str, Rule] = {}
    for i, raw in enumerate(data.get("rule", [])):
        where = f"rule[{i}]"
        unknown = set(raw) - _RULE_KEYS
        if unknown:
            raise RuleSetError(f"{path}: {where}: unknown key {sorted(unknown)[0]!r}")
        try:
            severity = Severity.parse(raw["severity"])
            rule = Rule(rule_id=raw["id"], name=raw["name"], side=raw["side"], severity=severity,
                        spec=tuple(raw.get("spec", ())), summary=raw.get("summary", ""),
                        params=MappingProxyType({k: _number(v, path, f"{where}.params.{k}")
                                                 for k, v in raw.get("params", {}).items()}),
                        enabled=bool(raw.get("enabled", True)))
        except KeyError as exc:
            raise RuleSetError(f"{path}: {where}: missing or invalid key {exc}") from None
        if rule.side not in _SIDES:
            raise RuleSetError(f"{path}: {where}.side: {rule.side!r} is not one of {sorted(_SIDES)}")
        rules[rule.rule_id] = rule
    return rules


def _parse_profile(data: dict[str, Any], path: Path) -> BrokerProfile:
    raw = data.get("broker")
    if not isinstance(raw, dict):
        raise RuleSetError(f"{path}: missing [broker] table")
    unknown = set(raw) - _PROFILE_KEYS
    if unknown:
        raise RuleSetError(f"{path}: broker: unknown key {sorted(unknown)[0]!r}")
    return BrokerProfile(
        profile_id=str(raw.get("id", path.stem)),
        multiplier=_number(raw.get("multiplier", 1.5), path, "broker.multiplier"),
        early_s=_number(raw.get("early_s", 0.0), path, "broker.early_s"),
        late_s=_number(raw.get("late_s", 0.0), path, "broker.late_s"),
        timer_start=str(raw.get("timer_start", "connect")),
        description=str(raw.get("description", "")),
    )


def _number(value: object, path: Path, key: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise RuleSetError(f"{path}: {key}: expected a number, got {value!r}")
    return float(value)

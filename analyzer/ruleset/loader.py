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
_PROFILE_NUMBERS = ("multiplier", "early_s", "early_k", "late_s", "late_k", "late_max_s",
                    "deadline_max_s")
_PROFILE_INTEGERS = ("min_keep_alive_s", "max_keep_alive_s")
_PROFILE_CHOICES = {"above_max": ("clamp", "reject", "allow"),
                    "zero_keep_alive": ("disabled", "max", "reject"),
                    "timer_start": ("connect", "connack")}
_PROFILE_KEYS = {"id", "description", "sources", "sends_disconnect_0x8d", *_PROFILE_NUMBERS,
                 *_PROFILE_INTEGERS, *_PROFILE_CHOICES}
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
    fields: dict[str, Any] = {
        name: _number(raw[name], path, f"broker.{name}") for name in _PROFILE_NUMBERS if name in raw}
    for name in _PROFILE_INTEGERS:
        if name in raw:
            fields[name] = _integer(raw[name], path, f"broker.{name}")
    for name, choices in _PROFILE_CHOICES.items():
        if name in raw:
            if raw[name] not in choices:
                raise RuleSetError(f"{path}: broker.{name}: {raw[name]!r} is not one of {list(choices)}")
            fields[name] = raw[name]
    if "sends_disconnect_0x8d" in raw:
        if not isinstance(raw["sends_disconnect_0x8d"], bool):
            raise RuleSetError(f"{path}: broker.sends_disconnect_0x8d: expected true or false")
        fields["sends_disconnect_0x8d"] = raw["sends_disconnect_0x8d"]
    sources = raw.get("sources")
    if not isinstance(sources, list) or not sources or not all(isinstance(s, str) for s in sources):
        raise RuleSetError(f"{path}: broker.sources: every profile must cite its sources (a list of strings)")
    return BrokerProfile(profile_id=str(raw.get("id", path.stem)),
                         description=str(raw.get("description", "")), sources=tuple(sources),
                         **fields)


def _integer(value: object, path: Path, key: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise RuleSetError(f"{path}: {key}: expected a whole number of seconds, got {value!r}")
    return value


def _number(value: object, path: Path, key: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise RuleSetError(f"{path}: {key}: expected a number, got {value!r}")
    return float(value)

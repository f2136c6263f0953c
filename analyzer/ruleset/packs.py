"""Rule packs: parse, validate and merge `extends` chains (schema in `rules/README.md`).

A pack names built-in packs or files it extends; its `[[rule]]` entries then change the rules it
inherits (severity, parameters, enabled) or add rules of the catalog, its `[params]` override shared
parameters and its `[[suppress]]` entries add to the inherited suppressions.
"""

from __future__ import annotations

import datetime as dt
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from analyzer.errors import RuleSetError
from analyzer.model import Severity
from analyzer.ruleset.catalog import RULE_PARAMS
from analyzer.ruleset.model import Rule, Suppression
from analyzer.ruleset.values import number, text

_TOP_KEYS = {"pack", "params", "rule", "suppress"}
_PACK_KEYS = {"id", "description", "extends", "profile"}
_RULE_KEYS = {"id", "name", "side", "severity", "spec", "summary", "params", "enabled"}
_SUPPRESS_KEYS = {"rule", "client_id", "reason", "expires"}
_PARAMS = {"tolerance_s"}
_SIDES = {"client", "broker", "either", "-"}


@dataclass
class LoadedPack:
    """A pack with everything it extends merged in."""

    rules: dict[str, Rule] = field(default_factory=dict)
    tolerance_s: float = 0.25
    suppressions: list[Suppression] = field(default_factory=list)
    profile: str | None = None
    chain: list[str] = field(default_factory=list)


def read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise RuleSetError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise RuleSetError(f"{path}: is a directory, not a TOML file") from None
    except tomllib.TOMLDecodeError as exc:
        raise RuleSetError(f"{path}: not valid TOML: {exc}") from None


def load_pack(path: Path, builtin: Path, seen: tuple[Path, ...] = ()) -> LoadedPack:
    """Load the pack at `path` and, first, every pack it extends (built-in ids resolve in `builtin`)."""
    path = path.resolve()
    if path in seen:
        raise RuleSetError(f"{path}: pack.extends: a pack cannot extend itself (cycle)")
    data = read_toml(path)
    _check_keys(data, _TOP_KEYS, path, "")
    head = data.get("pack", {})
    _check_keys(head, _PACK_KEYS, path, "pack.")
    merged = LoadedPack()
    for base in _extends(head, path):
        parent = load_pack(_resolve(base, path, builtin), builtin, (*seen, path))
        merged = _merge(merged, parent)
    pack_id = text(head.get("id", path.stem), path, "pack.id")
    merged.chain.append(pack_id)
    if "profile" in head:
        merged.profile = text(head["profile"], path, "pack.profile")
    params = data.get("params", {})
    _check_keys(params, _PARAMS, path, "params.")
    if "tolerance_s" in params:
        merged.tolerance_s = number(params["tolerance_s"], path, "params.tolerance_s")
    for i, raw in enumerate(_table_list(data, "rule", path)):
        rule = _rule(raw, merged.rules, path, f"rule[{i}]")
        merged.rules[rule.rule_id] = rule
    merged.suppressions += [_suppression(raw, path, f"suppress[{i}]")
                            for i, raw in enumerate(_table_list(data, "suppress", path))]
    return merged


def _merge(into: LoadedPack, parent: LoadedPack) -> LoadedPack:
    into.rules.update(parent.rules)
    into.tolerance_s = parent.tolerance_s
    into.suppressions += parent.suppressions
    into.profile = parent.profile or into.profile
    into.chain += parent.chain
    return into


def _extends(head: dict[str, Any], path: Path) -> list[str]:
    value = head.get("extends", [])
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise RuleSetError(f"{path}: pack.extends: expected a pack id or a list of them")
    return value


def _resolve(base: str, path: Path, builtin: Path) -> Path:
    """A built-in pack id, or a path relative to the extending pack."""
    if "/" not in base and not base.endswith(".toml"):
        candidate = builtin / f"{base}.toml"
        if candidate.exists():
            return candidate
        raise RuleSetError(f"{path}: pack.extends: no built-in pack {base!r}")
    return (path.parent / base).resolve()


def _rule(raw: dict[str, Any], inherited: dict[str, Rule], path: Path, where: str) -> Rule:
    _check_keys(raw, _RULE_KEYS, path, f"{where}.")
    rule_id = text(raw.get("id"), path, f"{where}.id") if "id" in raw else None
    if rule_id not in RULE_PARAMS:
        raise RuleSetError(f"{path}: {where}.id: unknown rule {rule_id!r} (known: "
                           f"{', '.join(sorted(RULE_PARAMS))})")
    base = inherited.get(rule_id)
    params = {k: number(v, path, f"{where}.params.{k}") for k, v in _table(raw, "params", path, where).items()}
    unknown = set(params) - RULE_PARAMS[rule_id]
    if unknown:
        raise RuleSetError(f"{path}: {where}.params.{sorted(unknown)[0]}: {rule_id} has no such parameter "
                           f"(it takes: {', '.join(sorted(RULE_PARAMS[rule_id])) or 'none'})")
    changes: dict[str, Any] = {}
    if "severity" in raw:
        changes["severity"] = _severity(raw["severity"], path, f"{where}.severity")
    if "enabled" in raw:
        if not isinstance(raw["enabled"], bool):
            raise RuleSetError(f"{path}: {where}.enabled: expected true or false")
        changes["enabled"] = raw["enabled"]
    for key in ("name", "summary"):
        if key in raw:
            changes[key] = text(raw[key], path, f"{where}.{key}")
    if "spec" in raw:
        changes["spec"] = tuple(text(s, path, f"{where}.spec") for s in raw["spec"])
    if "side" in raw:
        if raw["side"] not in _SIDES:
            raise RuleSetError(f"{path}: {where}.side: {raw['side']!r} is not one of {sorted(_SIDES)}")
        changes["side"] = raw["side"]
    if base is not None:
        return replace(base, params={**base.params, **params}, **changes)
    missing = [k for k in ("name", "side", "severity") if k not in changes]
    if missing:
        raise RuleSetError(f"{path}: {where}.{missing[0]}: required for a rule not inherited from "
                           "another pack")
    return Rule(rule_id=rule_id, params=params, **changes)


def _severity(value: object, path: Path, key: str) -> Severity:
    try:
        return Severity.parse(text(value, path, key))
    except KeyError:
        raise RuleSetError(f"{path}: {key}: {value!r} is not one of error, warning, info") from None


def _suppression(raw: dict[str, Any], path: Path, where: str) -> Suppression:
    _check_keys(raw, _SUPPRESS_KEYS, path, f"{where}.")
    for key in ("rule", "client_id", "reason", "expires"):
        if key not in raw:
            raise RuleSetError(f"{path}: {where}.{key}: required (a suppression needs a rule, a client id "
                               "glob, a reason and an expiry date)")
    rule_id = text(raw["rule"], path, f"{where}.rule")
    if rule_id not in RULE_PARAMS:
        raise RuleSetError(f"{path}: {where}.rule: unknown rule {rule_id!r}")
    expires = raw["expires"]
    if not isinstance(expires, dt.date) or isinstance(expires, dt.datetime):
        raise RuleSetError(f"{path}: {where}.expires: expected a TOML date such as 2027-06-30")
    reason = text(raw["reason"], path, f"{where}.reason").strip()
    if not reason:
        raise RuleSetError(f"{path}: {where}.reason: say why the rule is silenced")
    return Suppression(rule_id, text(raw["client_id"], path, f"{where}.client_id"), reason, expires,
                       str(path))


def _check_keys(table: object, allowed: set[str], path: Path, prefix: str) -> None:
    if not isinstance(table, dict):
        raise RuleSetError(f"{path}: {prefix.rstrip('.') or 'document'}: expected a table")
    unknown = set(table) - allowed
    if unknown:
        raise RuleSetError(f"{path}: {prefix}{sorted(unknown)[0]}: unknown key")


def _table(raw: dict[str, Any], key: str, path: Path, where: str) -> dict[str, Any]:
    value = raw.get(key, {})
    if not isinstance(value, dict):
        raise RuleSetError(f"{path}: {where}.{key}: expected a table")
    return value


def _table_list(data: dict[str, Any], key: str, path: Path) -> list[dict[str, Any]]:
    value = data.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise RuleSetError(f"{path}: {key}: expected [[{key}]] tables")
    return value

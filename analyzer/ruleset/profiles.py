"""Broker profiles: parse and validate `rules/brokers/<id>.toml` (schema in `rules/README.md`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from analyzer.errors import RuleSetError
from analyzer.ruleset.model import BrokerProfile
from analyzer.ruleset.values import integer, number

_NUMBERS = ("multiplier", "early_s", "early_k", "late_s", "late_k", "late_max_s", "deadline_max_s")
_INTEGERS = ("min_keep_alive_s", "max_keep_alive_s", "assume_keep_alive_s")
_CHOICES = {"above_max": ("clamp", "reject", "allow"),
            "zero_keep_alive": ("disabled", "max", "reject"),
            "timer_start": ("connect", "connack")}
_KEYS = {"id", "description", "sources", "sends_disconnect_0x8d", *_NUMBERS, *_INTEGERS, *_CHOICES}


def parse_profile(data: dict[str, Any], path: Path) -> BrokerProfile:
    """Validate one profile file's contents; every problem names the file and the key."""
    raw = data.get("broker")
    if not isinstance(raw, dict):
        raise RuleSetError(f"{path}: missing [broker] table")
    unknown = set(raw) - _KEYS
    if unknown:
        raise RuleSetError(f"{path}: broker.{sorted(unknown)[0]}: unknown key")
    fields: dict[str, Any] = {name: number(raw[name], path, f"broker.{name}")
                              for name in _NUMBERS if name in raw}
    fields.update({name: integer(raw[name], path, f"broker.{name}") for name in _INTEGERS if name in raw})
    for name, choices in _CHOICES.items():
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
    if fields.get("multiplier", 1.5) <= 0:
        raise RuleSetError(f"{path}: broker.multiplier: must be positive")
    return BrokerProfile(profile_id=str(raw.get("id", path.stem)),
                         description=str(raw.get("description", "")), sources=tuple(sources),
                         **fields)

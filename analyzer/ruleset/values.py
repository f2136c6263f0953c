"""Typed reading of TOML values, with errors that name the file and the key."""

from __future__ import annotations

from pathlib import Path

from analyzer.errors import RuleSetError


def number(value: object, path: Path, key: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise RuleSetError(f"{path}: {key}: expected a number, got {value!r}")
    return float(value)


def integer(value: object, path: Path, key: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise RuleSetError(f"{path}: {key}: expected a whole number of seconds, got {value!r}")
    return value


def text(value: object, path: Path, key: str) -> str:
    if not isinstance(value, str):
        raise RuleSetError(f"{path}: {key}: expected a string, got {value!r}")
    return value

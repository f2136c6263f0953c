"""Settings: every option of `analyze`/`check` from the command line, the environment or a file.

Precedence: command line > environment (`MQTT_KEEPALIVE_<NAME>`) > project file > default. The
project file is the first found walking up from the current directory: `mqtt-keepalive.toml`
(settings at its top level) or a `pyproject.toml` holding `[tool.mqtt-keepalive]` (a pyproject.toml
without that table is passed over). Keys are the long option names (`fail-on`, or `fail_on`);
relative paths in a file are relative to that file. An empty environment variable counts as unset.

A bad value is a `ConfigError` (exit 2) naming the variable, or the file and key: a CI gate must
not run with a setting that silently means something else.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from analyzer.errors import ConfigError

ENV_PREFIX = "MQTT_KEEPALIVE_"
TOOL_KEY = "mqtt-keepalive"
FILE_NAME = "mqtt-keepalive.toml"
NOT_SETTINGS = frozenset({"DEBUG"})
"""`MQTT_KEEPALIVE_<NAME>` variables that are not settings (no warning for them)."""

FAIL_ON = ("error", "warning", "info", "never")
FORMATS = ("table", "json", "jsonl", "csv", "github", "parquet")
TABLES = ("findings", "sessions", "clients")
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})

Parse = Callable[[object], Any]
"""Turns a raw value (a string from the environment, a TOML value from a file) into the setting's
value; raises ValueError with the reason."""


def _integer(low: int, high: int | None = None) -> Parse:
    def parse(raw: object) -> int:
        if isinstance(raw, str) and raw.strip().lstrip("-").isdigit():
            raw = int(raw)
        if isinstance(raw, bool) or not isinstance(raw, int):
            raise ValueError(f"expected a whole number, got {raw!r}")
        if raw < low or (high is not None and raw > high):
            raise ValueError(f"{raw} is out of range {low}..{high if high is not None else ''}")
        return raw
    return parse


def _ports(raw: object) -> tuple[int, ...]:
    """`1883,8884` (environment), `[1883, 8884]` or `1883` (file)."""
    items = raw.replace(",", " ").split() if isinstance(raw, str) else raw
    if not isinstance(items, list):
        items = [items]
    if not items:
        raise ValueError("expected at least one port")
    return tuple(_integer(1, 65535)(item) for item in items)


def _paths(raw: object) -> tuple[str, ...]:
    """Files: `a.keys:b.keys` (environment, separated as in PATH), `["a.keys", "b.keys"]` or
    `"a.keys"` (file)."""
    items = [p for p in raw.split(os.pathsep) if p.strip()] if isinstance(raw, str) else raw
    if not isinstance(items, list):
        items = [items]
    return tuple(_text(item) for item in items)


def _choice(choices: tuple[str, ...]) -> Parse:
    def parse(raw: object) -> str:
        value = raw.strip().lower() if isinstance(raw, str) else raw
        if value not in choices:
            raise ValueError(f"{raw!r} is not one of {', '.join(choices)}")
        return value  # type: ignore[return-value]
    return parse


def _flag(raw: object) -> bool:
    if isinstance(raw, bool):
        return raw
    if isinstance(raw, str) and raw.strip().lower() in _TRUE | _FALSE:
        return raw.strip().lower() in _TRUE
    raise ValueError(f"expected true or false, got {raw!r}")


def _text(raw: object) -> str:
    if not isinstance(raw, str) or not raw.strip():
        raise ValueError(f"expected a non-empty string, got {raw!r}")
    return raw.strip()


@dataclass(frozen=True)
class Setting:
    name: str
    """The option's long name without dashes and with `_`: `fail_on` is `--fail-on`,
    `MQTT_KEEPALIVE_FAIL_ON` and `fail-on` in a file."""
    parse: Parse
    default: Any
    is_path: Callable[[str], bool] | None = None
    """For values that may be paths: which ones are, so a file's relative path is resolved."""

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.name.upper()


def _always(_value: str) -> bool:
    return True


def _looks_like_path(value: str) -> bool:
    """As the rule-set loader decides: a built-in id has no `/` and no `.toml` suffix."""
    return "/" in value or value.endswith(".toml")


def default_jobs() -> int:
    return os.cpu_count() or 1


SETTINGS: dict[str, Setting] = {s.name: s for s in (
    Setting("port", _ports, (1883, 8883)),
    Setting("assume_keep_alive", _integer(0, 65535), None),
    Setting("rules", _text, "default", _looks_like_path),
    Setting("profile", _text, None, _looks_like_path),
    Setting("fail_on", _choice(FAIL_ON), "error"),
    Setting("format", _choice(FORMATS), "table"),
    Setting("output", _text, None, _always),
    Setting("table", _choice(TABLES), "findings"),
    Setting("junit", _text, None, _always),
    Setting("html", _text, None, _always),
    Setting("jobs", _integer(1), None),
    Setting("dask", _text, None),
    Setting("allow_empty", _flag, False),
    Setting("exit_zero", _flag, False),
    Setting("quiet", _flag, False),
    Setting("tls_keylog", _paths, (), _always),
    Setting("columnar", _flag, None),
)}
"""Every setting; `jobs` None means one per core (`default_jobs()`), `profile` None the pack's own
or `spec`, `dask` None no cluster (else a Dask scheduler address, `tcp://host:8786`), `tls_keylog`
the SSLKEYLOGFILE key logs that decrypt MQTT over TLS (none: TLS is judged without its contents),
`columnar` the columnar analysis path (`engine.Options.columnar`; None: for captures of 8 MiB or
more)."""


@dataclass(frozen=True)
class ConfigFile:
    path: Path
    table: Mapping[str, Any]
    prefix: str
    """How keys are named in messages: `tool.mqtt-keepalive.` for pyproject.toml, else ``."""


@dataclass
class Resolved:
    """Effective values of some settings and where each came from."""

    values: dict[str, Any] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)
    file: ConfigFile | None = None
    warnings: list[str] = field(default_factory=list)

    def __getitem__(self, name: str) -> Any:
        return self.values[name]


def find_file(start: Path | None = None) -> ConfigFile | None:
    """The settings file that applies in `start` (default: the current directory)."""
    folder = (start or Path.cwd()).resolve()
    for candidate in (folder, *folder.parents):
        own = candidate / FILE_NAME
        if own.is_file():
            return ConfigFile(own, _read(own), "")
        pyproject = candidate / "pyproject.toml"
        if pyproject.is_file():
            tool = _read(pyproject).get("tool", {})
            if isinstance(tool, dict) and TOOL_KEY in tool:
                return ConfigFile(pyproject, _table(tool[TOOL_KEY], pyproject), f"tool.{TOOL_KEY}.")
    return None


def _read(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read ({exc.strerror})") from None


def _table(value: object, path: Path) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise ConfigError(f"{path}: tool.{TOOL_KEY}: expected a table")
    return value


def file_values(config: ConfigFile) -> dict[str, tuple[Any, str]]:
    """Every key of the file, validated: name -> (value, source). Unknown keys are errors."""
    out: dict[str, tuple[Any, str]] = {}
    for key, raw in config.table.items():
        name = key.replace("-", "_")
        where = f"{config.path}: {config.prefix}{key}"
        setting = SETTINGS.get(name)
        if setting is None:
            raise ConfigError(f"{where}: unknown key (known: {', '.join(_keys())})")
        value = _parse(setting, raw, where)
        if setting.is_path and isinstance(value, str) and setting.is_path(value):
            value = _relative_to(config, value)
        elif setting.is_path and isinstance(value, tuple):
            value = tuple(_relative_to(config, v) if setting.is_path(v) else v for v in value)
        out[name] = (value, f"{config.path} ({config.prefix}{key})")
    return out


def _relative_to(config: ConfigFile, value: str) -> str:
    """A relative path in a project file is relative to that file."""
    return str(config.path.parent / value) if not os.path.isabs(value) else value


def env_values(environ: Mapping[str, str], names: list[str]) -> dict[str, tuple[Any, str]]:
    """The non-empty `MQTT_KEEPALIVE_<NAME>` variables of the settings `names`, validated."""
    out: dict[str, tuple[Any, str]] = {}
    for name in names:
        setting = SETTINGS[name]
        raw = environ.get(setting.env, "")
        if raw.strip():
            out[name] = (_parse(setting, raw, setting.env), setting.env)
    return out


def unknown_env(environ: Mapping[str, str]) -> list[str]:
    """`MQTT_KEEPALIVE_*` variables that name no setting (probably misspelt)."""
    known = {s.env for s in SETTINGS.values()} | {ENV_PREFIX + n for n in NOT_SETTINGS}
    return sorted(k for k in environ if k.startswith(ENV_PREFIX) and k not in known)


def _parse(setting: Setting, raw: object, where: str) -> Any:
    try:
        return setting.parse(raw)
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def _keys() -> list[str]:
    return [name.replace("_", "-") for name in SETTINGS]


def resolve(names: list[str], given: Mapping[str, Any], *, environ: Mapping[str, str] | None = None,
            cwd: Path | None = None) -> Resolved:
    """The effective value of each setting in `names`: `given` (the command line) first, then the
    environment, then the project file, then the default."""
    environ = os.environ if environ is None else environ
    config = find_file(cwd)
    from_file = file_values(config) if config else {}
    from_env = env_values(environ, [n for n in names if n not in given])
    resolved = Resolved(file=config)
    resolved.warnings = [f"{var} is not a setting of mqtt-keepalive (settings: "
                         f"{', '.join(s.env for s in SETTINGS.values())})"
                         for var in unknown_env(environ)]
    for name in names:
        if name in given:
            resolved.values[name], resolved.sources[name] = given[name], "command line"
        elif name in from_env:
            resolved.values[name], resolved.sources[name] = from_env[name]
        elif name in from_file:
            resolved.values[name], resolved.sources[name] = from_file[name]
        else:
            resolved.values[name], resolved.sources[name] = SETTINGS[name].default, "default"
    return resolved

"""Settings (command line > MQTT_KEEPALIVE_<NAME> > project file > default), `config show`,
`rules list|validate|profiles` and `explain`.

Precedence is tested twice: in-process on `analyzer.config.resolve` (every source, every kind of
value) and end to end, where the setting changes the verdict of `check` on a shipped capture
(late-pinger has only warnings: exit 0 under --fail-on error, 1 under warning).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from analyzer import config
from analyzer.errors import ConfigError
from analyzer.explain import EXPLANATIONS, PARAMS
from analyzer.ruleset import builtin_ids, load_ruleset
from analyzer.ruleset.catalog import RULE_PARAMS

ROOT = Path(__file__).resolve().parents[2]
CAPTURES = ROOT / "captures"
LATE = CAPTURES / "late-pinger.pcap"  # 4 x KA101 (warning)
SILENT = CAPTURES / "silent-client.pcap"  # KA201 under spec, not under mosquitto-2.0
BASE_ENV = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "NO_COLOR": "1",
            "PYTHONIOENCODING": "utf-8", "LANG": "C.UTF-8"}


def run(*args: object, cwd: Path = ROOT, **env: str) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([sys.executable, "-m", "analyzer", *map(str, args)], cwd=cwd,
                          env={**BASE_ENV, **env}, capture_output=True, text=True, timeout=120,
                          check=False, stdin=subprocess.DEVNULL)
    assert "Traceback" not in proc.stderr and "internal error" not in proc.stderr, proc.stderr
    return proc


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A project whose pyproject.toml says fail-on warning, profile mosquitto-2.0, its own pack."""
    (tmp_path / "ci").mkdir()
    (tmp_path / "ci" / "fleet.toml").write_text(
        '[pack]\nid = "fleet"\nextends = ["ci-strict"]\n')
    (tmp_path / "pyproject.toml").write_text(
        '[project]\nname = "devices"\n\n[tool.mqtt-keepalive]\nfail-on = "warning"\n'
        'profile = "mosquitto-2.0"\nport = [1883, 8884]\nrules = "ci/fleet.toml"\n')
    (tmp_path / "src" / "deep").mkdir(parents=True)
    return tmp_path


# -- resolution in-process ----------------------------------------------------------------------------


def test_defaults_without_any_source(tmp_path: Path) -> None:
    r = config.resolve(list(config.SETTINGS), {}, environ={}, cwd=tmp_path)
    assert r.file is None
    assert set(r.sources.values()) == {"default"}
    assert (r["fail_on"], r["port"], r["rules"], r["profile"], r["jobs"]) == (
        "error", (1883, 8883), "default", None, None)


def test_file_env_and_command_line_precedence(project: Path) -> None:
    cwd = project / "src" / "deep"  # found by walking up
    names = ["fail_on", "profile", "port", "rules", "jobs"]
    file_only = config.resolve(names, {}, environ={}, cwd=cwd)
    assert file_only["fail_on"] == "warning" and file_only["port"] == (1883, 8884)
    assert file_only["rules"] == str(project / "ci" / "fleet.toml")  # relative to the file
    assert file_only.sources["fail_on"] == f"{project / 'pyproject.toml'} (tool.mqtt-keepalive.fail-on)"
    env = {"MQTT_KEEPALIVE_FAIL_ON": "info", "MQTT_KEEPALIVE_PORT": "1883, 8884,9000",
           "MQTT_KEEPALIVE_PROFILE": "", "MQTT_KEEPALIVE_JOBS": "3"}
    with_env = config.resolve(names, {}, environ=env, cwd=cwd)
    assert (with_env["fail_on"], with_env["port"], with_env["jobs"]) == ("info", (1883, 8884, 9000), 3)
    assert with_env.sources["fail_on"] == "MQTT_KEEPALIVE_FAIL_ON"
    assert with_env["profile"] == "mosquitto-2.0"  # an empty variable is unset
    flags = config.resolve(names, {"fail_on": "error"}, environ=env, cwd=cwd)
    assert (flags["fail_on"], flags.sources["fail_on"]) == ("error", "command line")


def test_own_file_beats_pyproject_and_pyproject_without_table_is_passed_over(project: Path) -> None:
    sub = project / "src"
    (sub / "pyproject.toml").write_text('[project]\nname = "inner"\n')  # no tool table
    assert config.resolve(["fail_on"], {}, environ={}, cwd=sub)["fail_on"] == "warning"
    (sub / "mqtt-keepalive.toml").write_text('fail_on = "never"\nallow-empty = true\n')
    r = config.resolve(["fail_on", "allow_empty"], {}, environ={}, cwd=sub)
    assert (r["fail_on"], r["allow_empty"]) == ("never", True)
    assert r.file is not None and r.file.path == sub / "mqtt-keepalive.toml"


@pytest.mark.parametrize(("env", "message"), [
    ({"MQTT_KEEPALIVE_FAIL_ON": "fatal"}, "MQTT_KEEPALIVE_FAIL_ON: 'fatal' is not one of"),
    ({"MQTT_KEEPALIVE_PORT": "1883,http"}, "MQTT_KEEPALIVE_PORT: expected a whole number"),
    ({"MQTT_KEEPALIVE_PORT": "70000"}, "MQTT_KEEPALIVE_PORT: 70000 is out of range"),
    ({"MQTT_KEEPALIVE_JOBS": "0"}, "MQTT_KEEPALIVE_JOBS: 0 is out of range"),
    ({"MQTT_KEEPALIVE_EXIT_ZERO": "maybe"}, "MQTT_KEEPALIVE_EXIT_ZERO: expected true or false"),
])
def test_bad_environment_value_names_the_variable(tmp_path: Path, env: dict[str, str],
                                                  message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        config.resolve(list(config.SETTINGS), {}, environ=env, cwd=tmp_path)


@pytest.mark.parametrize(("table", "key"), [
    ('fail-on = "fatal"', "tool.mqtt-keepalive.fail-on"),
    ("jobs = \"many\"", "tool.mqtt-keepalive.jobs"),
    ("port = [1883, true]", "tool.mqtt-keepalive.port"),
    ('colour = "red"', "tool.mqtt-keepalive.colour: unknown key"),
])
def test_bad_file_value_names_file_and_key(tmp_path: Path, table: str, key: str) -> None:
    (tmp_path / "pyproject.toml").write_text(f"[tool.mqtt-keepalive]\n{table}\n")
    with pytest.raises(ConfigError, match=f"{tmp_path / 'pyproject.toml'}: {key}"):
        config.resolve(["fail_on"], {}, environ={}, cwd=tmp_path)


def test_unknown_variable_is_a_warning(tmp_path: Path) -> None:
    r = config.resolve(["fail_on"], {}, environ={"MQTT_KEEPALIVE_FAILON": "x",
                                                  "MQTT_KEEPALIVE_DEBUG": "1"}, cwd=tmp_path)
    assert len(r.warnings) == 1 and r.warnings[0].startswith("MQTT_KEEPALIVE_FAILON is not a setting")


# -- end to end -------------------------------------------------------------------------------------


def test_check_follows_precedence(project: Path) -> None:
    cwd = project / "src" / "deep"
    assert run("check", LATE, "--rules", "default", "-q").returncode == 0  # default: fail on error
    assert run("check", LATE, "--rules", "default", "-q", cwd=cwd).returncode == 1  # file: warning
    assert run("check", LATE, "--rules", "default", "-q", cwd=cwd,
               MQTT_KEEPALIVE_FAIL_ON="error").returncode == 0  # env beats the file
    assert run("check", LATE, "--rules", "default", "-q", "--fail-on", "warning", cwd=cwd,
               MQTT_KEEPALIVE_FAIL_ON="error").returncode == 1  # the flag beats the env


def test_check_takes_profile_and_pack_from_the_file(project: Path) -> None:
    proc = run("check", SILENT, "-f", "json", "--fail-on", "never", cwd=project)
    assert proc.returncode == 0, proc.stderr
    assert '"packs": [\n      "default",\n      "ci-strict",\n      "fleet"\n    ]' in proc.stdout
    assert '"KA201"' not in proc.stdout and '"profile": "mosquitto-2.0"' in proc.stdout


def test_bad_settings_are_exit_2(project: Path) -> None:
    proc = run("check", LATE, cwd=project, MQTT_KEEPALIVE_FAIL_ON="fatal")
    assert proc.returncode == 2 and "error: MQTT_KEEPALIVE_FAIL_ON: 'fatal'" in proc.stderr
    (project / "mqtt-keepalive.toml").write_text("jobs = -1\n")
    proc = run("check", LATE, cwd=project)
    assert proc.returncode == 2 and f"{project / 'mqtt-keepalive.toml'}: jobs:" in proc.stderr


def test_config_show_says_where_each_value_came_from(project: Path) -> None:
    proc = run("config", "show", "--jobs", "4", cwd=project / "src",
               MQTT_KEEPALIVE_FAIL_ON="info", MQTT_KEEPALIVE_ALLOW_EMPTY="yes")
    assert proc.returncode == 0, proc.stderr
    lines = {line.split()[0]: line.split() for line in proc.stdout.splitlines()}
    assert lines["project"][-1] == str(project / "pyproject.toml")
    assert lines["fail-on"][1:] == ["info", "MQTT_KEEPALIVE_FAIL_ON"]
    assert lines["allow-empty"][1:] == ["true", "MQTT_KEEPALIVE_ALLOW_EMPTY"]
    assert lines["jobs"][1:] == ["4", "command", "line"]
    assert lines["profile"][1:] == ["mosquitto-2.0", str(project / "pyproject.toml"),
                                    "(tool.mqtt-keepalive.profile)"]
    assert lines["format"][1:] == ["table", "default"]
    assert " ".join(lines["columnar"][1:]) == "auto (captures of 8 MiB or more) default"
    proc = run("config", "show", cwd=project / "src", MQTT_KEEPALIVE_COLUMNAR="false")
    lines = {line.split()[0]: line.split() for line in proc.stdout.splitlines()}
    assert lines["columnar"][1:] == ["false", "MQTT_KEEPALIVE_COLUMNAR"]


# -- rules, profiles, explain ----------------------------------------------------------------------------

SHIPPED = sorted((ROOT / "rules").glob("*/*.toml"))


def test_rules_validate_every_shipped_pack_and_profile() -> None:
    proc = run("rules", "validate", *SHIPPED)
    assert proc.returncode == 0, proc.stderr
    assert len(proc.stdout.splitlines()) == len(SHIPPED)
    assert "valid rule pack default -> ci-strict" in proc.stdout
    assert "valid broker profile aws-iot-core" in proc.stdout


def test_rules_validate_reports_each_bad_file(tmp_path: Path) -> None:
    (tmp_path / "bad-profile.toml").write_text(
        '[broker]\nid = "x"\nmultiplier = "1.5"\nsources = ["a"]\n')
    (tmp_path / "bad-pack.toml").write_text('[pack]\nid = "x"\n\n[[rule]]\nid = "KA102"\nseverity = "err"\n')
    (tmp_path / "other.toml").write_text('[server]\nport = 1\n')
    proc = run("rules", "validate", "bad-profile.toml", "bad-pack.toml", "other.toml",
               ROOT / "rules" / "packs" / "default.toml", cwd=tmp_path)
    assert proc.returncode == 2
    assert "bad-profile.toml: broker.multiplier: expected a number" in proc.stderr
    assert "bad-pack.toml: rule[0].severity" in proc.stderr
    assert "other.toml: neither a rule pack" in proc.stderr
    assert "default.toml: valid rule pack" in proc.stdout


def test_rules_validate_settings_file(project: Path) -> None:
    proc = run("rules", "validate", "pyproject.toml", "ci/fleet.toml", cwd=project)
    assert proc.returncode == 0, proc.stderr
    assert "pyproject.toml: valid settings file (4 setting(s))" in proc.stdout


def test_rules_list_shows_the_active_pack_and_profile() -> None:
    proc = run("rules", "list", "--rules", "ci-strict", "--profile", "mosquitto-2.0")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("pack: default -> ci-strict; tolerance 0.1 s")
    assert "[1.5K - 0.5, 1.5K + 7] s" in lines[1] and "mosquitto-2.0" in lines[1]
    rows = {line.split()[0]: line.split() for line in lines if line.startswith("KA")}
    assert set(rows) == set(RULE_PARAMS)
    assert rows["KA101"][1:5] == ["client-interval-exceeded", "client", "error", "yes"]
    assert rows["KA107"][4] == "no" and rows["KA203"][5] == "wait_k=1"


def test_rules_profiles_one_line_each() -> None:
    proc = run("rules", "profiles")
    lines = proc.stdout.splitlines()
    assert [line.split()[0] for line in lines] == builtin_ids("brokers")
    aws = next(line for line in lines if line.startswith("aws-iot-core"))
    assert "30..1200 s (above: clamp)" in aws and "timer from CONNACK" in aws


def test_explain_ka102() -> None:
    proc = run("explain", "KA102")
    assert proc.returncode == 0
    out = proc.stdout
    assert out.startswith("KA102 client-deadline-exceeded\n")
    assert "default severity: error" in out and "MQTT-3.1.2-24, MQTT-3.1.2-22" in out
    for title in ("What it checks:", "Why:", "Example:"):
        assert title in out
    assert "5.41 > 3 + 0.25" in out
    assert "parameter wait_k = 1: a PINGRESP is expected" in run("explain", "pingresp-missing").stdout


def test_explain_unknown_rule_lists_the_known_ones() -> None:
    proc = run("explain", "KA999")
    assert proc.returncode == 2 and "unknown rule 'KA999'" in proc.stderr and "KA902" in proc.stderr


def test_every_rule_and_parameter_is_explained() -> None:
    assert set(EXPLANATIONS) == set(RULE_PARAMS)
    assert set(PARAMS) == {f"{r}.{p}" for r, params in RULE_PARAMS.items() for p in params}
    default = load_ruleset().rules
    assert set(default) == set(RULE_PARAMS)

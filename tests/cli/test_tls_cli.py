"""`--tls-keylog` end to end: real subprocesses (`python -m analyzer`), the recorded TLS captures.

What a user sees when decryption cannot happen matters as much as when it can: a key log that is
not there, a file that is not a key log, or no tshark is exit 2 with one line that says what to
do (never a traceback, never verdicts judged without the keys they asked for); keys that decrypt
nothing are a warning and the connection is judged without its contents.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
CAPTURES = REPO / "captures"
LATE = str(CAPTURES / "tls-late-pinger.pcap")
LATE_KEYS = str(CAPTURES / "tls-late-pinger.keys")
OTHER_KEYS = str(CAPTURES / "tls-compliant-pinger.keys")

needs_tshark = pytest.mark.skipif(shutil.which("tshark") is None, reason="needs tshark")


def run(*args: str, cwd: Path | None = None, **env: str) -> subprocess.CompletedProcess[str]:
    import os

    environ = {k: v for k, v in os.environ.items() if not k.startswith("MQTT_KEEPALIVE_")}
    return subprocess.run([sys.executable, "-m", "analyzer", *args], capture_output=True, text=True,
                          cwd=cwd or REPO, env={**environ, **env}, timeout=120)


def findings(result: subprocess.CompletedProcess[str]) -> list[tuple[str, list[int]]]:
    data: dict[str, Any] = json.loads(result.stdout)
    return sorted((f["rule_id"], f["frames"]) for f in data["findings"])


LATE_FINDINGS = [("KA101", [10, 15]), ("KA101", [15, 18]), ("KA101", [18, 21]), ("KA101", [21, 24])]


@pytest.mark.parametrize("command", ["analyze", "check"])
def test_without_tshark_it_is_exit_2_with_what_to_install(tmp_path: Path, command: str) -> None:
    result = run(command, LATE, "--tls-keylog", LATE_KEYS, PATH=str(tmp_path))  # an empty PATH dir
    assert result.returncode == 2
    assert "error: decrypting TLS needs Wireshark's tshark" in result.stderr
    assert "apt-get install tshark" in result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""


@pytest.mark.parametrize("command", ["analyze", "check", "sessions"])
def test_a_missing_key_log_is_exit_2_before_any_analysis(command: str) -> None:
    result = run(command, LATE, "--tls-keylog", "no-such.keys")
    assert result.returncode == 2
    assert result.stderr.strip() == "error: --tls-keylog no-such.keys: no such file"


@needs_tshark
@pytest.mark.parametrize("capture", [LATE, str(CAPTURES / "late-pinger.pcap")], ids=["tls", "plain"])
def test_a_file_that_is_no_key_log_is_exit_2(tmp_path: Path, capture: str) -> None:
    """Whether or not the capture holds TLS: the option is wrong either way."""
    (tmp_path / "server.key").write_text("-----BEGIN PRIVATE KEY-----\n-----END PRIVATE KEY-----\n")
    result = run("analyze", capture, "--tls-keylog", str(tmp_path / "server.key"))
    assert result.returncode == 2
    assert "server.key: no TLS secret in this key log" in result.stderr
    assert "Traceback" not in result.stderr


@needs_tshark
def test_the_right_keys_give_the_plain_verdicts() -> None:
    result = run("analyze", LATE, "--tls-keylog", LATE_KEYS, "-f", "json")
    assert result.returncode == 0, result.stderr
    assert findings(result) == LATE_FINDINGS


@needs_tshark
def test_keys_of_another_session_fall_back_to_judging_without_contents() -> None:
    result = run("analyze", LATE, "--tls-keylog", OTHER_KEYS, "--port", "8883", "-f", "json")
    assert result.returncode in (0, 1), result.stderr
    data = json.loads(result.stdout)
    assert [s["uncertainty"] for s in data["sessions"]] == [["encrypted"]]
    assert any("key log" in w for w in data["captures"][0]["warnings"])
    assert "warning:" in result.stderr and "Traceback" not in result.stderr


@needs_tshark
def test_several_key_logs_are_merged() -> None:
    result = run("analyze", LATE, "--tls-keylog", OTHER_KEYS, "--tls-keylog", LATE_KEYS, "-f", "json")
    assert result.returncode == 0, result.stderr
    assert findings(result) == LATE_FINDINGS


@needs_tshark
def test_key_logs_from_the_environment_and_the_project_file(tmp_path: Path) -> None:
    from_env = run("analyze", LATE, "-f", "json", MQTT_KEEPALIVE_TLS_KEYLOG=f"{OTHER_KEYS}:{LATE_KEYS}")
    assert findings(from_env) == LATE_FINDINGS
    (tmp_path / "keys").mkdir()
    shutil.copy(LATE_KEYS, tmp_path / "keys" / "late.keys")
    (tmp_path / "mqtt-keepalive.toml").write_text('tls-keylog = ["keys/late.keys"]\n')
    sub = tmp_path / "deep"
    sub.mkdir()
    from_file = run("analyze", LATE, "-f", "json", cwd=sub)  # relative to the file, found upwards
    assert from_file.returncode == 0, from_file.stderr
    assert findings(from_file) == LATE_FINDINGS
    shown = run("config", "show", cwd=sub)
    assert f"{tmp_path / 'keys' / 'late.keys'}" in shown.stdout


@needs_tshark
def test_check_gates_on_the_decrypted_verdicts() -> None:
    assert run("check", LATE, "--tls-keylog", LATE_KEYS, "-q").returncode == 0  # KA101: warnings
    assert run("check", LATE, "--tls-keylog", LATE_KEYS, "-q", "--fail-on", "warning").returncode == 1
    sessions = run("sessions", LATE, "--tls-keylog", LATE_KEYS, "-f", "json")
    assert [s["client_id"] for s in json.loads(sessions.stdout)] == ["ka-tls-late-pinger"]

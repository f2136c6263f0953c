"""`mqtt-keepalive check`, the CI gate, end to end: real subprocesses on the shipped captures.

What a CI job sees: the exit code (0 pass, 1 findings at or above --fail-on, 2 unusable input,
options or rule pack, 3 no MQTT session), stdout, stderr and the files written (JUnit, JSON, the
GitHub job summary and step outputs). Also the integration files: the composite action's script
(run here as the runner would run it), action.yml and .pre-commit-hooks.yaml.

Speed: every command is declared at module level with `cmd(...)` and all of them start at import in
a small thread pool (each run is ~0.5 s of interpreter start-up); a test only reads its result.
Derived inputs (an empty capture, copies in nested folders, rule packs) are written once into
`WORK`, the working directory of every run.
"""

from __future__ import annotations

import atexit
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
CAPTURES = ROOT / "captures"
SILENT = CAPTURES / "silent-client.pcap"  # K=2, mosquitto closes at 5.41 s: KA101, KA102, KA201
EARLY = CAPTURES / "broker-closes-early.pcap"  # K=4, broker closes at 3.01 s: KA202
LATE = CAPTURES / "late-pinger.pcap"  # 4 x KA101 (warning)
COMPLIANT = CAPTURES / "compliant-pinger.pcap"  # nothing
KA_ZERO = CAPTURES / "keep-alive-zero.pcap"  # KA301 (info)

WORK = Path(tempfile.mkdtemp(prefix="mqtt-keepalive-check-"))
atexit.register(shutil.rmtree, WORK, True)


# -- derived inputs -------------------------------------------------------------------------------


def _records(path: Path) -> tuple[bytes, list[bytes]]:
    data = path.read_bytes()
    out, off = [], 24
    while off < len(data):
        incl = struct.unpack("<I", data[off + 8:off + 12])[0]
        out.append(data[off:off + 16 + incl])
        off += 16 + incl
    return data[:24], out


def _write_inputs() -> None:
    header, frames = _records(SILENT)
    (WORK / "empty.pcap").write_bytes(header)  # a valid capture without a single frame
    (WORK / "handshake.pcap").write_bytes(header + b"".join(frames[:3]))  # TCP, no MQTT
    (WORK / "notes.txt").write_text("not a capture\n")
    nested = WORK / "recordings" / "site-a" / "2026"
    nested.mkdir(parents=True)
    shutil.copy(LATE, nested / "late.pcap")
    shutil.copy(COMPLIANT, WORK / "recordings" / "site-a" / "compliant.pcap")
    shutil.copy(SILENT, WORK / "recordings" / "silent.pcap")
    (WORK / "recordings" / "README.md").write_text("ignored: not a capture\n")
    packs = WORK / "packs"
    packs.mkdir()
    for name, text in PACKS.items():
        (packs / name).write_text(text)


def _suppress(expires: str) -> str:
    return f"""[pack]
id = "fleet"
extends = ["default"]

[[suppress]]
rule = "KA101"
client_id = "ka-late-*"
reason = "firmware 1.2 pings 0.6 s late; fix scheduled"
expires = {expires}
"""


PACKS = {
    "suppress-active.toml": _suppress("2099-12-31"),
    "suppress-expired.toml": _suppress("2020-01-01"),
    "broker-only.toml": ('[pack]\nid = "broker-only"\nextends = ["default"]\n\n'
                         + "".join(f'[[rule]]\nid = "{r}"\nenabled = false\n\n'
                                   for r in ("KA101", "KA102", "KA103"))),
    "unknown-key.toml": '[pack]\nid = "x"\nextends = ["default"]\ncolour = "red"\n',
    "unknown-rule.toml": ('[pack]\nid = "x"\nextends = ["default"]\n\n'
                          '[[rule]]\nid = "KA999"\nseverity = "error"\n'),
    "bad-type.toml": '[pack]\nid = "x"\nextends = ["default"]\n\n[params]\ntolerance_s = "quarter"\n',
    "bad-severity.toml": ('[pack]\nid = "x"\nextends = ["default"]\n\n'
                          '[[rule]]\nid = "KA101"\nseverity = "fatal"\n'),
}


# -- running the command --------------------------------------------------------------------------


@dataclass(frozen=True)
class Run:
    rc: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)

    def rule_ids(self) -> set[str]:
        return {f["rule_id"] for f in self.json()["findings"]}


BASE_ENV = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "NO_COLOR": "1",
            "PYTHONIOENCODING": "utf-8", "LANG": "C.UTF-8"}


def run(args: tuple[str, ...], env: dict[str, str] | None = None, cwd: Path = WORK) -> Run:
    """`python -m analyzer ARGS` with a clean environment (no CI, no GITHUB_*) plus `env`."""
    proc = subprocess.run([sys.executable, "-m", "analyzer", *args], capture_output=True,
                          cwd=cwd, env={**BASE_ENV, **(env or {})}, timeout=120, check=False,
                          stdin=subprocess.DEVNULL)
    result = Run(proc.returncode, proc.stdout.decode(), proc.stderr.decode())
    assert "Traceback" not in result.err and "internal error" not in result.err, result.err
    return result


@dataclass(frozen=True)
class Cmd:
    args: tuple[str, ...]
    env: tuple[tuple[str, str], ...] = field(default=())


_POOL = ThreadPoolExecutor(max_workers=3)
_RESULTS: dict[Cmd, Future[Run]] = {}


def cmd(*args: object, **env: str) -> Cmd:
    command = Cmd(tuple(map(str, args)), tuple(sorted(env.items())))
    _RESULTS[command] = _POOL.submit(run, command.args, dict(command.env))
    return command


def result(command: Cmd) -> Run:
    return _RESULTS[command].result()


_write_inputs()


# -- exit codes -----------------------------------------------------------------------------------

EXIT_MATRIX = {
    "clean": (0, [COMPLIANT]),
    "error finding": (1, [SILENT]),
    "warnings under fail-on error": (0, [LATE]),
    "warnings under fail-on warning": (1, [LATE, "--fail-on", "warning"]),
    "info under fail-on warning": (0, [KA_ZERO, "--fail-on", "warning"]),
    "info under fail-on info": (1, [KA_ZERO, "--fail-on", "info"]),
    "fail-on never": (0, [SILENT, "--fail-on", "never"]),
    "exit-zero on findings": (0, [SILENT, "--exit-zero"]),
    "capture without frames": (3, ["empty.pcap"]),
    "capture without MQTT": (3, ["handshake.pcap"]),
    "allow-empty": (0, ["handshake.pcap", "--allow-empty"]),
    "exit-zero on empty": (0, ["empty.pcap", "--exit-zero"]),
    "empty beside a session": (0, ["empty.pcap", COMPLIANT]),
    "not a capture": (2, ["notes.txt"]),
    "exit-zero never hides 2": (2, ["notes.txt", COMPLIANT, "--exit-zero"]),
    "missing file": (2, ["no-such.pcap"]),
    "glob matching nothing": (2, ["nothing/*.pcapng"]),
    "bad option value": (2, [COMPLIANT, "--fail-on", "fatal"]),
    "unknown built-in pack": (2, [COMPLIANT, "--rules", "no-such-pack"]),
    "unknown built-in profile": (2, [COMPLIANT, "--profile", "no-such-broker"]),
    "jobs 0": (2, [COMPLIANT, "--jobs", "0"]),
}
EXIT_CMDS = {name: cmd("check", *args) for name, (_, args) in EXIT_MATRIX.items()}


@pytest.mark.parametrize("name", list(EXIT_MATRIX))
def test_exit_code_matrix(name: str) -> None:
    r = result(EXIT_CMDS[name])
    assert r.rc == EXIT_MATRIX[name][0], (r.rc, r.err)
    if r.rc in (0, 1, 3) and "--exit-zero" not in EXIT_MATRIX[name][1]:
        assert r.err.rstrip().endswith(f"-> exit {r.rc}"), r.err


def test_empty_says_why_and_how_to_accept() -> None:
    err = result(EXIT_CMDS["capture without MQTT"]).err
    assert "error: no MQTT session found in 1 capture" in err
    assert "--allow-empty" in err and "--port" in err
    assert "(--exit-zero)" in result(EXIT_CMDS["exit-zero on empty"]).err


EMPTY_JSON = cmd("check", "empty.pcap", "--format", "json")


def test_every_output_states_the_gate_verdict() -> None:
    """Exit 3 (nothing to judge) is the verdict the JSON summary states, not the engine's 0."""
    r = result(EMPTY_JSON)
    assert r.rc == 3 and json.loads(r.out)["summary"]["exit_code"] == 3


def test_input_errors_name_the_input() -> None:
    assert "nothing/*.pcapng: no file matches" in result(EXIT_CMDS["glob matching nothing"]).err
    assert "no-such.pcap" in result(EXIT_CMDS["missing file"]).err
    assert "no-such-pack" in result(EXIT_CMDS["unknown built-in pack"]).err
    assert "mosquitto-2.0" in result(EXIT_CMDS["unknown built-in profile"]).err  # lists built-ins


# -- inputs: globs, directories, jobs ---------------------------------------------------------------

DIRECTORY = cmd("check", "recordings", "-f", "json", "--fail-on", "never")
RECURSIVE_GLOB = cmd("check", "recordings/**/*.pcap", "-f", "json", "--fail-on", "never")
SHALLOW_GLOB = cmd("check", "recordings/*.pcap", "-f", "json", "--fail-on", "never")
OVERLAP = cmd("check", "recordings/silent.pcap", "recordings/*.pcap", "-f", "json")
SHIPPED = {jobs: cmd("check", CAPTURES, "-f", "json", "--fail-on", "never", "--jobs", jobs)
           for jobs in (1, 2)}


def _paths(r: Run) -> list[str]:
    return [c["path"] for c in r.json()["captures"]]


def test_directory_is_searched_recursively_for_captures() -> None:
    r = result(DIRECTORY)
    assert r.rc == 0
    assert sorted(Path(p).name for p in _paths(r)) == ["compliant.pcap", "late.pcap", "silent.pcap"]


def test_globs_are_expanded_sorted_and_recursive() -> None:
    assert _paths(result(RECURSIVE_GLOB)) == sorted([
        "recordings/silent.pcap", "recordings/site-a/compliant.pcap",
        "recordings/site-a/2026/late.pcap"])
    assert _paths(result(SHALLOW_GLOB)) == ["recordings/silent.pcap"]


def test_an_input_named_twice_is_analysed_once() -> None:
    assert _paths(result(OVERLAP)) == ["recordings/silent.pcap"]


def test_jobs_do_not_change_the_report() -> None:
    one, two = result(SHIPPED[1]), result(SHIPPED[2])
    assert one.rc == two.rc == 0
    assert one.out == two.out
    assert len(one.json()["captures"]) == len(list(CAPTURES.glob("*.pcap")))


# -- profiles and packs -----------------------------------------------------------------------------

SILENT_SPEC = cmd("check", SILENT, "--profile", "spec", "-f", "json")
SILENT_MOSQUITTO = cmd("check", SILENT, "--profile", "mosquitto-2.0", "-f", "json")
BROKER_ONLY = {p: cmd("check", SILENT, "--rules", "packs/broker-only.toml", "--profile", p,
                      "--fail-on", "warning", "-f", "json") for p in ("spec", "mosquitto-2.0")}
EARLY_SPEC = cmd("check", EARLY, "--profile", "spec", "-f", "json")
EARLY_ARTEMIS = cmd("check", EARLY, "--profile", "artemis-legacy", "-f", "json")
LATE_STRICT = cmd("check", LATE, "--rules", "ci-strict", "-f", "json")


def test_mosquittos_late_close_is_ka201_under_spec_only() -> None:
    spec, mosquitto = result(SILENT_SPEC), result(SILENT_MOSQUITTO)
    # closed 5.41 s after the last packet: spec's deadline is 3 s (+0.25), mosquitto's window
    # [1.5K - 0.5, 1.5K + 7] = [2.5, 10] s
    assert spec.rule_ids() == {"KA101", "KA102", "KA201"}
    assert mosquitto.rule_ids() == {"KA101", "KA102"}  # the client's own lateness stays
    assert spec.json()["ruleset"]["profile"] == "spec"
    assert mosquitto.json()["ruleset"]["profile"] == "mosquitto-2.0"


def test_same_capture_fails_under_spec_and_passes_under_mosquitto() -> None:
    spec, mosquitto = result(BROKER_ONLY["spec"]), result(BROKER_ONLY["mosquitto-2.0"])
    assert (spec.rc, spec.rule_ids()) == (1, {"KA201"})
    [finding] = spec.json()["findings"]
    assert finding["limit_s"] == 3.0 and finding["gap_s"] > 5.4
    assert (mosquitto.rc, mosquitto.rule_ids()) == (0, set())


def test_early_close_is_ka202_under_spec_and_on_time_for_artemis() -> None:
    spec, artemis = result(EARLY_SPEC), result(EARLY_ARTEMIS)
    assert (spec.rc, spec.rule_ids()) == (1, {"KA202"})  # 3.01 s < 1.5 x 4 - 0.25
    assert (artemis.rc, artemis.rule_ids()) == (0, set())  # artemis-legacy closes at 0.75 x 4 = 3 s


def test_ci_strict_turns_warnings_into_errors() -> None:
    r = result(LATE_STRICT)
    assert r.rc == 1
    assert {(f["rule_id"], f["severity"]) for f in r.json()["findings"]} == {("KA101", "error")}
    assert r.json()["ruleset"]["packs"] == ["default", "ci-strict"]


SUPPRESS_ACTIVE = cmd("check", LATE, "--rules", "packs/suppress-active.toml", "--fail-on", "warning",
                      "-f", "json")
SUPPRESS_EXPIRED = cmd("check", LATE, "--rules", "packs/suppress-expired.toml", "--fail-on",
                       "warning", "-f", "json")


def test_suppression_silences_a_rule_for_matching_clients() -> None:
    r = result(SUPPRESS_ACTIVE)
    assert r.rc == 0
    assert r.json()["findings"] == []
    assert r.json()["summary"]["suppressed"] == 4
    assert "warning:" not in r.err


def test_expired_suppression_warns_and_findings_come_back() -> None:
    r = result(SUPPRESS_EXPIRED)
    assert r.rc == 1
    assert r.rule_ids() == {"KA101"} and len(r.json()["findings"]) == 4
    [line] = [x for x in r.err.splitlines() if x.startswith("warning:")]
    assert "KA101" in line and "expired on 2020-01-01" in line and "suppress-expired.toml" in line


BAD_PACKS = {
    "unknown-key.toml": "pack.colour",
    "unknown-rule.toml": "rule[0].id",
    "bad-type.toml": "params.tolerance_s",
    "bad-severity.toml": "rule[0].severity",
    "missing.toml": "no such file",
}
BAD_PACK_CMDS = {name: cmd("check", COMPLIANT, "--rules", f"packs/{name}") for name in BAD_PACKS}


@pytest.mark.parametrize("name", list(BAD_PACKS))
def test_bad_pack_is_exit_2_naming_file_and_key(name: str) -> None:
    r = result(BAD_PACK_CMDS[name])
    assert r.rc == 2
    assert name in r.err and BAD_PACKS[name] in r.err, r.err
    assert r.out == ""  # nothing analysed


# -- CI outputs ------------------------------------------------------------------------------------

JUNIT_CLEAN = cmd("check", COMPLIANT, "--junit", "reports/clean/keepalive.xml")
JUNIT_FAILING = cmd("check", SILENT, LATE, "--junit", "reports/failing.xml", "-q")
JUNIT_EMPTY = cmd("check", "empty.pcap", "--junit", "reports/empty.xml")


def test_junit_is_written_on_a_clean_run() -> None:
    r = result(JUNIT_CLEAN)
    assert r.rc == 0
    root = ET.parse(WORK / "reports" / "clean" / "keepalive.xml").getroot()
    assert root.tag == "testsuites" and root.get("failures") == "0"
    [suite] = root.findall("testsuite")
    assert suite.get("tests") == "1" and suite.findall("testcase/failure") == []


def test_junit_failures_are_the_findings_at_or_above_fail_on() -> None:
    junitparser = pytest.importorskip("junitparser")
    r = result(JUNIT_FAILING)
    assert r.rc == 1 and r.err == ""  # -q: no summary line
    xml = junitparser.JUnitXml.fromfile(str(WORK / "reports" / "failing.xml"))
    failures = [res for suite in xml for case in suite for res in case.result
                if isinstance(res, junitparser.Failure)]
    assert [f.type for f in failures] == ["KA102"]  # the warnings are not failures under error


def test_junit_is_written_when_nothing_was_found() -> None:
    assert result(JUNIT_EMPTY).rc == 3
    root = ET.parse(WORK / "reports" / "empty.xml").getroot()
    assert root.get("tests") == "0"


GH_TABLE = cmd("check", SILENT, GITHUB_ACTIONS="true", GITHUB_STEP_SUMMARY=str(WORK / "summary-1.md"))
GH_JSON_FILE = cmd("check", SILENT, LATE, "-f", "json", "-o", "gh.json", GITHUB_ACTIONS="true",
                   GITHUB_STEP_SUMMARY=str(WORK / "summary-2.md"))
GH_JSON_STDOUT = cmd("check", SILENT, "-f", "json", GITHUB_ACTIONS="true")
GH_FORMAT = cmd("check", SILENT, "-f", "github", GITHUB_STEP_SUMMARY=str(WORK / "summary-3.md"))
CLIENTS_CSV = cmd("check", CAPTURES, "-f", "csv", "--table", "clients", "--fail-on", "never")

ANNOTATION = re.compile(r"^::(error|warning|notice) file=([^,]+),title=(KA\d{3}) [a-z-]+::.+$")


def _annotations(text: str) -> list[tuple[str, str, str]]:
    found = [ANNOTATION.match(line) for line in text.splitlines() if line.startswith("::")]
    assert all(found), text
    return [m.groups() for m in found if m]


def test_github_actions_get_annotations_and_a_step_summary() -> None:
    r = result(GH_TABLE)
    assert r.rc == 1
    assert "Findings (worst first)" in r.out  # the table is still there, annotations after it
    assert _annotations(r.out) == [("error", str(SILENT), "KA102"), ("warning", str(SILENT), "KA101"),
                                   ("warning", str(SILENT), "KA201")]
    summary = (WORK / "summary-1.md").read_text()
    assert summary.startswith("## mqtt-keepalive: failed") and "| KA102 |" in summary


def test_github_annotations_with_a_report_file() -> None:
    r = result(GH_JSON_FILE)
    assert r.rc == 1
    assert {a[2] for a in _annotations(r.out)} == {"KA101", "KA102", "KA201"}
    assert len(json.loads((WORK / "gh.json").read_text())["findings"]) == 7
    assert "ka-late-pinger" in (WORK / "summary-2.md").read_text()


def test_json_on_stdout_is_not_mixed_with_annotations() -> None:
    r = result(GH_JSON_STDOUT)
    assert r.json()["summary"]["exit_code"] == 1
    assert "no GitHub annotations" in r.err


def test_format_github_outside_actions() -> None:
    r = result(GH_FORMAT)
    assert r.rc == 1 and len(_annotations(r.out)) == len(r.out.splitlines()) == 3
    assert "KA201" in (WORK / "summary-3.md").read_text()


def test_clients_table() -> None:
    r = result(CLIENTS_CSV)
    header, *rows = r.out.splitlines()
    assert header.startswith("client_id,") and "p95_gap_over_k" in header
    assert any(row.startswith("ka-silent-client,") for row in rows)


# -- integration files -----------------------------------------------------------------------------


def test_github_action_script(tmp_path: Path) -> None:
    """The action's run step as the runner runs it: inputs in the environment, globs unexpanded."""
    outputs, summary = tmp_path / "github-output", tmp_path / "step-summary.md"
    env = {**BASE_ENV, "GITHUB_ACTIONS": "true", "GITHUB_OUTPUT": str(outputs),
           "GITHUB_STEP_SUMMARY": str(summary), "RUNNER_TEMP": str(tmp_path),
           "ACTION_PYTHON": sys.executable,
           "INPUT_CAPTURES": f"{LATE}\n{CAPTURES}/silent-*.pcap  {COMPLIANT}",
           "MQTT_KEEPALIVE_RULES": "", "MQTT_KEEPALIVE_PROFILE": "mosquitto-2.0",
           "MQTT_KEEPALIVE_FAIL_ON": "warning", "MQTT_KEEPALIVE_JUNIT": str(tmp_path / "ka.xml")}
    proc = subprocess.run(["bash", str(ROOT / "ci" / "github-action.sh")], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 1, proc.stderr
    set_outputs = dict(line.split("=", 1) for line in outputs.read_text().splitlines())
    report = json.loads(Path(set_outputs["report"]).read_text())
    assert set_outputs == {"findings": "6", "report": str(tmp_path / "mqtt-keepalive-report.json"),
                           "exit-code": "1"}
    assert len(report["findings"]) == 6 and report["ruleset"]["profile"] == "mosquitto-2.0"
    assert len(report["captures"]) == 3
    assert {a[2] for a in _annotations(proc.stdout)} == {"KA101", "KA102"}
    assert summary.read_text().startswith("## mqtt-keepalive")
    ET.parse(tmp_path / "ka.xml")


def test_github_action_script_without_captures(tmp_path: Path) -> None:
    env = {**BASE_ENV, "INPUT_CAPTURES": " \n", "ACTION_PYTHON": sys.executable,
           "RUNNER_TEMP": str(tmp_path)}
    proc = subprocess.run(["bash", str(ROOT / "ci" / "github-action.sh")], env=env,
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 2 and "captures input is empty" in proc.stdout


def test_action_yml_passes_inputs_through_the_environment() -> None:
    from analyzer.config import SETTINGS

    yaml = pytest.importorskip("yaml")  # PyYAML: not a runtime dependency
    action = yaml.safe_load((ROOT / "action.yml").read_text())
    assert action["runs"]["using"] == "composite"
    assert set(action["inputs"]) == {"captures", "rules", "profile", "fail-on", "junit"}
    assert {"findings", "report"} <= set(action["outputs"])
    install, check = action["runs"]["steps"]
    for step in (install, check):
        assert "${{" not in step["run"], "inputs must reach the script through env:, not its text"
    known = {s.env for s in SETTINGS.values()}
    for name, value in check["env"].items():
        assert name in known or not name.startswith("MQTT_KEEPALIVE_"), name
        if name.startswith("MQTT_KEEPALIVE_"):
            setting = name.removeprefix("MQTT_KEEPALIVE_").lower().replace("_", "-")
            assert value == "${{ inputs." + setting + " }}"
    assert "ci/github-action.sh" in check["run"] and (ROOT / "ci" / "github-action.sh").exists()


def test_pre_commit_hooks() -> None:
    yaml = pytest.importorskip("yaml")
    hooks = {h["id"]: h for h in yaml.safe_load((ROOT / ".pre-commit-hooks.yaml").read_text())}
    check, rules = hooks["mqtt-keepalive-check"], hooks["mqtt-keepalive-rules"]
    assert check["entry"].startswith("mqtt-keepalive check") and check["pass_filenames"]
    assert rules["entry"] == "mqtt-keepalive rules validate"
    for name in ("a.pcap", "x/b.pcapng", "c.pcap.gz", "d.pcapng.xz"):
        assert re.search(check["files"], name), name
    for name in ("a.pcap.txt", "b.cap"):
        assert not re.search(check["files"], name), name
    for name in ("rules/packs/default.toml", "rules/brokers/spec.toml", "ci/our-keepalive.toml"):
        assert re.search(rules["files"], name), name
    assert not re.search(rules["files"], "pyproject.toml")

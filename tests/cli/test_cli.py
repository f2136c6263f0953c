"""The `mqtt-keepalive` command end to end: real subprocesses (`python -m analyzer`), real captures.

Every case runs the command on the small captures shipped in `captures/` (recorded from a real
mosquitto, see `captures/README.md`) or on damaged copies derived from them, and checks what a
script sees: the exit code, stdout and stderr. The bulk of the bit-flip fuzzing calls the engine
in-process (`analyzer.analyze`); a few flipped files also go through the CLI.

Speed: each run is ~0.5 s of interpreter start-up, so every command is declared once at module
level with `cmd(...)`, the derived inputs are written once into one directory (`WORK`, the cwd of
every run), and `_prefetch` starts all declared commands in a small thread pool when the module
starts; each test then only checks its command's result.
"""

from __future__ import annotations

import gzip
import io
import json
import random
import re
import shutil
import struct
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema
import pandas as pd
import pytest

import analyzer
from analyzer import Options, analyze
from analyzer.model import Severity
from analyzer.report import render

ROOT = Path(__file__).resolve().parents[2]
CAPTURES = ROOT / "captures"
SCHEMA = json.loads((ROOT / "analyzer" / "schemas" / "report.schema.json").read_text())
VALIDATOR = jsonschema.Draft202012Validator(SCHEMA)

SILENT = CAPTURES / "silent-client.pcap"  # KA101, KA102 (error), KA201
COMPLIANT = CAPTURES / "compliant-pinger.pcap"  # no finding
LATE = CAPTURES / "late-pinger.pcap"  # 4 x KA101 (warning)
KA_ZERO = CAPTURES / "keep-alive-zero.pcap"  # KA301 (info) only
SUBSCRIBER = CAPTURES / "receive-only-subscriber.pcap"  # two sessions, #0 with findings
MQTT5 = CAPTURES / "mqtt5-paho.pcap"

SUMMARY_RE = re.compile(r"^\d+ sessions?, \d+ errors?, \d+ warnings?, \d+ info -> exit (\d)$")
PCAP_HEADER = 24
RECORD_HEADER = 16


# -- running the command ------------------------------------------------------------------------


@dataclass(frozen=True)
class Run:
    rc: int
    out: str
    err: str

    @property
    def err_lines(self) -> list[str]:
        return self.err.splitlines()

    def json(self) -> Any:
        return json.loads(self.out)

    def jsonl(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.out.splitlines()]


def run(args: tuple[str, ...], stdin: bytes = b"", cwd: Path = ROOT,
        env_extra: tuple[tuple[str, str], ...] = ()) -> Run:
    """`python -m analyzer ARGS` with `stdin` piped in (empty by default, never a terminal)."""
    env = {"PATH": "/usr/bin:/bin", "NO_COLOR": "1", "PYTHONIOENCODING": "utf-8", "LANG": "C.UTF-8",
           **dict(env_extra)}
    proc = subprocess.run([sys.executable, "-m", "analyzer", *args], input=stdin,
                          capture_output=True, cwd=cwd, env=env, timeout=60, check=False)
    result = Run(proc.returncode, proc.stdout.decode("utf-8"), proc.stderr.decode("utf-8"))
    assert "Traceback" not in result.err, result.err
    assert "internal error" not in result.err, result.err
    assert result.rc in (0, 1, 2), result
    return result


@dataclass(frozen=True)
class Cmd:
    args: tuple[str, ...]
    stdin: bytes = b""
    after_scapy: bool = False
    """Its input is written with scapy, whose import is slow: started once that is done."""
    env: tuple[tuple[str, str], ...] = ()
    """Environment variables beyond `run`'s own."""


PREFETCH: list[Cmd] = []
WORK: Path = ROOT  # the directory of derived inputs; set by `_prefetch`
_RESULTS: dict[Cmd, Future[Run]] = {}
_POOL = ThreadPoolExecutor(max_workers=3)


def cmd(*args: object, stdin: bytes = b"", after_scapy: bool = False, **env: str) -> Cmd:
    """Declare a command (run in WORK); declared at module level, it is prefetched."""
    command = Cmd(tuple(map(str, args)), stdin, after_scapy, tuple(env.items()))
    PREFETCH.append(command)
    return command


def _submit(command: Cmd) -> Future[Run]:
    if command not in _RESULTS:
        _RESULTS[command] = _POOL.submit(run, command.args, command.stdin, WORK, command.env)
    return _RESULTS[command]


def result_of(command: Cmd) -> Run:
    return _submit(command).result()


# -- checks --------------------------------------------------------------------------------------


def assert_summary_only(result: Run, rc: int) -> None:
    """stderr is exactly the one-line summary, and it names the exit code."""
    assert len(result.err_lines) == 1, result.err
    match = SUMMARY_RE.match(result.err_lines[0])
    assert match, result.err
    assert int(match.group(1)) == rc == result.rc


def assert_one_error_line(result: Run, *needles: str) -> str:
    """Exactly one `error:` line on stderr, naming the problem, and otherwise only the summary."""
    errors = [line for line in result.err_lines if line.startswith("error: ")]
    assert len(errors) == 1, result.err
    for needle in needles:
        assert needle in errors[0], result.err
    others = [line for line in result.err_lines if line not in errors]
    assert all(SUMMARY_RE.match(line) for line in others), result.err
    return errors[0]


def assert_valid(document: Any) -> None:
    errors = sorted(VALIDATOR.iter_errors(document), key=str)
    assert not errors, [f"{list(e.absolute_path)}: {e.message}" for e in errors[:5]]


def validate_record(record: dict[str, Any], kind: str) -> None:
    sub = {"$schema": SCHEMA["$schema"], "$defs": SCHEMA["$defs"], "$ref": f"#/$defs/{kind}"}
    errors = list(jsonschema.Draft202012Validator(sub).iter_errors(record))
    assert not errors, [e.message for e in errors[:5]]


def rule_ids(document: dict[str, Any]) -> Counter[str]:
    return Counter(f["rule_id"] for f in document["findings"])


# -- deriving damaged captures -------------------------------------------------------------------


def pcap_records(data: bytes) -> list[tuple[int, int]]:
    """(offset, total length) of every record of a little-endian classic pcap."""
    assert data[:4] in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1"), "shipped captures are LE pcap"
    out, off = [], PCAP_HEADER
    while off < len(data):
        incl = struct.unpack_from("<I", data, off + 8)[0]
        out.append((off, RECORD_HEADER + incl))
        off += RECORD_HEADER + incl
    assert off == len(data)
    return out


def cut_inside_record(src: Path, frame: int, into: int) -> bytes:
    """`src` cut `into` bytes into record number `frame` (1-based)."""
    data = src.read_bytes()
    off, length = pcap_records(data)[frame - 1]
    assert 0 < into < length
    return data[: off + into]


def drop_frames(data: bytes, count: int) -> bytes:
    """The capture without its first `count` records (as if started mid-session)."""
    return data[:PCAP_HEADER] + data[pcap_records(data)[count][0]:]


def step_clock(data: bytes, from_frame: int, seconds: int) -> bytes:
    """Shift the timestamps of every record from `from_frame` on by `seconds` (a clock step)."""
    out = bytearray(data)
    for n, (off, _length) in enumerate(pcap_records(data), start=1):
        if n >= from_frame:
            struct.pack_into("<I", out, off, struct.unpack_from("<I", out, off)[0] + seconds)
    return bytes(out)


def flipped_variant(rng: random.Random, data: bytes) -> bytes:
    """`data` with 1-24 random bytes XOR-ed; sometimes also cut short or gzip-wrapped."""
    out = bytearray(data)
    for _ in range(rng.randint(1, 24)):
        out[rng.randrange(len(out))] ^= rng.randrange(1, 256)
    roll = rng.random()
    if roll < 0.1:
        out = out[: rng.randrange(len(out))]
    elif roll < 0.2:
        out = bytearray(gzip.compress(bytes(out), mtime=0))
        if rng.random() < 0.5:  # and damage the compressed stream too
            out[rng.randrange(10, len(out))] ^= 0xFF
    return bytes(out)


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


CUTS = {  # name -> (capture, frame, bytes into it, exit code, findings before the cut)
    # silent-client cut inside frame 9, after the broker's FIN #8: all three findings precede it
    "cut-silent-in-data.pcap": (SILENT, 9, 20, 1, {"KA101": 1, "KA102": 1, "KA201": 1}),
    "cut-silent-in-record-header.pcap": (SILENT, 9, 8, 1, {"KA101": 1, "KA102": 1, "KA201": 1}),
    # late-pinger cut inside frame 18 (the PINGRESP to PINGREQ #17): the four late pings stay
    "cut-late-in-data.pcap": (LATE, 18, 30, 0, {"KA101": 4}),
}
FLIP_SOURCES = [SILENT, LATE, COMPLIANT, SUBSCRIBER, KA_ZERO, MQTT5]
FLIP_FORMATS = ["json", "table"]


def flip_names(fmt: str) -> list[str]:
    return [f"flip-{fmt}-{i}-{src.name}" for i, src in enumerate(FLIP_SOURCES)]


def make_inputs(work: Path) -> None:
    """Every derived input except the scapy ones, under `work`, by the names the commands use."""
    write(work / "empty.pcap", b"")
    write(work / "notes.pcap", b"this is a text file, not a capture\n" * 3)
    write(work / "header-cut.pcap", COMPLIANT.read_bytes()[:10])  # inside the global header
    corrupt = bytearray(gzip.compress(COMPLIANT.read_bytes(), mtime=0))
    corrupt[10:40] = bytes(30)
    write(work / "corrupt.pcap.gz", bytes(corrupt))
    for name, (src, frame, into, _rc, _rules) in CUTS.items():
        write(work / name, cut_inside_record(src, frame, into))
    write(work / "late-mid.pcap", drop_frames(LATE.read_bytes(), 4))
    write(work / "clock-step.pcap", step_clock(SILENT.read_bytes(), 8, -10))
    top = work / "recordings"
    write(top / "a" / "silent-client.pcap", SILENT.read_bytes())
    write(top / "b" / "late.dump.gz", gzip.compress(LATE.read_bytes(), mtime=0))
    write(top / "compliant.cap", COMPLIANT.read_bytes())
    write(top / "notes.txt", b"not a capture\n")
    write(top / "README.md", b"# recordings\n")
    shelf = work / "shelf"  # a recording that went wrong beside a good one
    write(shelf / "late.pcap", LATE.read_bytes())
    write(shelf / "lost.pcap", b"tcpdump: eth0: No such device exists\n")
    write(shelf / "notes.txt", b"not a capture\n")
    (work / "empty-dir").mkdir()
    (work / "out").mkdir()
    for src, short in ((COMPLIANT, "cp.pcap"), (KA_ZERO, "kz.pcap"), (LATE, "lp.pcap")):
        shutil.copy(src, work / short)
    for fmt in FLIP_FORMATS:
        rng = random.Random(f"cli-{fmt}")
        for src, name in zip(FLIP_SOURCES, flip_names(fmt)):
            write(work / name, flipped_variant(rng, src.read_bytes()))


def make_port_inputs(work: Path) -> None:
    """compliant-pinger with the broker moved from port 1883 to 8884 (scapy): whole, and cut to
    start mid-session (its SYN, SYN-ACK, ACK and CONNECT frames dropped)."""
    from scapy.all import TCP, rdpcap, wrpcap  # slow import: only here

    packets = rdpcap(str(COMPLIANT))
    for pkt in packets:
        tcp = pkt[TCP]
        if tcp.sport == 1883:
            tcp.sport = 8884
        if tcp.dport == 1883:
            tcp.dport = 8884
        del tcp.chksum
    wrpcap(str(work / "broker-8884.pcap"), packets)
    wrpcap(str(work / "mid-8884.pcap"), packets[4:])


@pytest.fixture(scope="module", autouse=True)
def _prefetch(request: pytest.FixtureRequest,
              tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Write the derived inputs and start every declared command in the background (unless only
    a few tests of this module were selected: then each runs its own command when it needs it)."""
    global WORK  # noqa: PLW0603 - one directory shared by the module's commands
    WORK = tmp_path_factory.mktemp("cli")
    make_inputs(WORK)
    selected = sum(item.module is request.module for item in request.session.items)
    scapy_done = False
    for command in PREFETCH if selected > 10 else ():  # in file order: first tests first
        if command.after_scapy and not scapy_done:
            make_port_inputs(WORK)  # while the commands declared before run
            scapy_done = True
        _submit(command)
    if not scapy_done:
        make_port_inputs(WORK)
    yield
    _POOL.shutdown(wait=True, cancel_futures=True)


# -- exit codes and --fail-on --------------------------------------------------------------------


EXIT_CASES = [  # capture, options, exit code, findings that must be there
    pytest.param(COMPLIANT, [], 0, {}, id="compliant-default-0"),
    pytest.param(SILENT, [], 1, {"KA102": 1}, id="silent-default-error-1"),
    pytest.param(SILENT, ["--fail-on", "never"], 0, {"KA102": 1}, id="silent-never-0"),
    pytest.param(LATE, [], 0, {"KA101": 4}, id="late-default-0"),
    pytest.param(LATE, ["--fail-on", "warning"], 1, {"KA101": 4}, id="late-warning-1"),
    pytest.param(KA_ZERO, ["--fail-on", "warning"], 0, {"KA301": 1}, id="ka-zero-warning-0"),
    pytest.param(KA_ZERO, ["--fail-on", "info"], 1, {"KA301": 1}, id="ka-zero-info-1"),
]
EXIT_CMDS = {p.id: cmd("analyze", p.values[0], "--format", "json", *p.values[1])
             for p in EXIT_CASES}


@pytest.mark.parametrize(("capture", "options", "rc", "rules"), EXIT_CASES)
def test_exit_code_follows_fail_on(request: pytest.FixtureRequest, capture: Path,
                                   options: list[str], rc: int, rules: dict[str, int]) -> None:
    result = result_of(EXIT_CMDS[request.node.callspec.id])
    assert result.rc == rc
    assert_summary_only(result, rc)
    doc = result.json()
    assert_valid(doc)
    assert doc["summary"]["exit_code"] == result.rc
    found = rule_ids(doc)
    for rule, count in rules.items():
        assert found[rule] == count, found
    if capture == COMPLIANT:
        assert doc["findings"] == [] and len(doc["sessions"]) == 1
    elif capture == SILENT:
        assert {f["severity"] for f in doc["findings"] if f["rule_id"] == "KA102"} == {"error"}
    elif capture == LATE:  # only warnings: KA101, never KA102
        assert set(found) == {"KA101"}
        assert {f["severity"] for f in doc["findings"]} == {"warning"}
    elif capture == KA_ZERO:  # only the info
        assert set(found) == {"KA301"} and doc["findings"][0]["severity"] == "info"


# -- output formats ------------------------------------------------------------------------------


SILENT_JSON = EXIT_CMDS["silent-default-error-1"]
ALL_SHIPPED_JSON = cmd("analyze", CAPTURES, "--format", "json", "--fail-on", "never")
SILENT_JSONL = cmd("analyze", SILENT, "--format", "jsonl")
SILENT_CSV = cmd("analyze", SILENT, "--format", "csv")
SUBSCRIBER_CSV_SESSIONS = cmd("analyze", SUBSCRIBER, "--format", "csv", "--table", "sessions")
SILENT_TABLE = cmd("analyze", SILENT)
OUTPUT_CMDS = {fmt: cmd("analyze", SILENT, "--format", fmt, "-o", f"out/report.{fmt}")
               for fmt in ("table", "json")}
OUTPUT_MISSING_DIR = cmd("analyze", SILENT, "--format", "json", "-o", "no-such-dir/report.json")


def test_json_report_is_the_contract() -> None:
    result = result_of(SILENT_JSON)
    assert result.rc == 1
    assert_summary_only(result, 1)
    doc = result.json()
    assert_valid(doc)
    assert doc["schema"] == "mqtt-keepalive/report/1"
    assert doc["tool"] == {"name": "mqtt-keepalive", "version": analyzer.__version__}
    assert doc["summary"]["exit_code"] == result.rc
    assert doc["summary"]["findings"]["error"] >= 1
    (capture,) = doc["captures"]
    assert capture["path"] == str(SILENT) and capture["format"] == "pcap"
    assert capture["frames"] == 10 and capture["error"] is None
    (session,) = doc["sessions"]
    assert session["session_id"] == "silent-client.pcap#0"
    assert session["client_id"] == "ka-silent-client"
    assert session["keep_alive_s"] == 2 and session["keep_alive_source"] == "connect"
    assert session["broker"]["port"] == 1883 and session["end_reason"] == "server_fin"
    (ka102,) = [f for f in doc["findings"] if f["rule_id"] == "KA102"]
    assert ka102["frames"] == [4, 8]
    assert ka102["session_id"] == "silent-client.pcap#0"
    assert ka102["limit_s"] == pytest.approx(3.0) and ka102["gap_s"] > 5
    assert "tcp.stream == 0" in ka102["wireshark_filter"]


def test_json_of_every_shipped_capture_validates() -> None:
    result = result_of(ALL_SHIPPED_JSON)
    assert result.rc == 0
    assert_summary_only(result, 0)
    doc = result.json()
    assert_valid(doc)
    assert [c["path"] for c in doc["captures"]] == [str(p) for p in sorted(CAPTURES.glob("*.pcap"))]
    assert doc["summary"]["exit_code"] == 0


def test_jsonl_records_one_per_line() -> None:
    result = result_of(SILENT_JSONL)
    assert result.rc == 1
    assert_summary_only(result, 1)
    records = result.jsonl()
    types = [r["type"] for r in records]
    assert set(types) == {"capture", "session", "finding", "summary"}
    assert types[0] == "capture" and types[-1] == "summary" and types.count("summary") == 1
    for record in records:
        validate_record({k: v for k, v in record.items() if k != "type"}, record["type"])
    assert records[-1]["exit_code"] == result.rc
    doc = result_of(SILENT_JSON).json()  # the same content as the JSON document
    strip = [{k: v for k, v in r.items() if k != "type"} for r in records]
    assert [r for r, t in zip(strip, types) if t == "finding"] == doc["findings"]
    assert [r for r, t in zip(strip, types) if t == "session"] == doc["sessions"]
    assert [r for r, t in zip(strip, types) if t == "capture"] == doc["captures"]
    assert strip[-1] == doc["summary"]


def test_csv_findings_parse_with_pandas() -> None:
    result = result_of(SILENT_CSV)
    assert result.rc == 1
    assert_summary_only(result, 1)
    frame = pd.read_csv(io.StringIO(result.out))
    assert {"rule_id", "severity", "session_id", "first_frame", "last_frame"} <= set(frame.columns)
    assert sorted(frame["rule_id"]) == ["KA101", "KA102", "KA201"]
    ka102 = frame[frame["rule_id"] == "KA102"].iloc[0]
    assert (ka102["first_frame"], ka102["last_frame"]) == (4, 8)
    assert ka102["severity"] == "error" and ka102["session_id"] == "silent-client.pcap#0"


def test_csv_sessions_table() -> None:
    result = result_of(SUBSCRIBER_CSV_SESSIONS)
    assert result.rc == 1
    assert_summary_only(result, 1)
    frame = pd.read_csv(io.StringIO(result.out))
    assert list(frame["session_id"]) == ["receive-only-subscriber.pcap#0",
                                         "receive-only-subscriber.pcap#1"]
    assert list(frame["client_id"]) == ["ka-receive-only-subscriber",
                                        "ka-receive-only-subscriber-pub"]
    assert list(frame["keep_alive_s"]) == [2, 10]
    assert "rule_id" not in frame.columns


def test_table_shows_rules_and_frames() -> None:
    result = result_of(SILENT_TABLE)
    assert result.rc == 1
    assert_summary_only(result, 1)
    for text in ("KA101", "KA102", "KA201", "4-8", "silent-client.pcap#0", "ka-silent-client"):
        assert text in result.out
    assert "\x1b[" not in result.out  # not a terminal: plain text


@pytest.mark.parametrize("fmt", sorted(OUTPUT_CMDS))
def test_output_file_leaves_stdout_empty(fmt: str) -> None:
    result = result_of(OUTPUT_CMDS[fmt])
    assert result.rc == 1
    assert result.out == ""
    assert_summary_only(result, 1)
    text = (WORK / "out" / f"report.{fmt}").read_text(encoding="utf-8")
    if fmt == "json":
        assert json.loads(text) == result_of(SILENT_JSON).json()
    else:
        assert "KA102" in text and "4-8" in text and "\x1b[" not in text


def test_output_into_a_missing_directory() -> None:
    result = result_of(OUTPUT_MISSING_DIR)
    assert result.rc == 2
    assert result.out == ""
    assert len(result.err_lines) == 1
    assert_one_error_line(result, "no-such-dir")
    assert not (WORK / "no-such-dir").exists()


# -- stdin, several inputs, directories ---------------------------------------------------------


STDIN_CMDS = {
    "plain": cmd("analyze", "-", "--format", "json", stdin=SILENT.read_bytes()),
    "gzip": cmd("analyze", "-", "--format", "json",
                stdin=gzip.compress(SILENT.read_bytes(), mtime=0)),
}
EMPTY_STDIN = cmd("analyze", "-", "--format", "json", stdin=b"")
_gz = gzip.compress(SILENT.read_bytes(), mtime=0)
TRUNCATED_GZIP_STDIN = cmd("analyze", "-", stdin=_gz[: len(_gz) * 2 // 3])
SEVERAL_INPUTS = [SILENT, LATE, COMPLIANT, SUBSCRIBER]
SEVERAL = cmd("analyze", *SEVERAL_INPUTS, "--format", "json")
DIRECTORY = cmd("analyze", "recordings", "--format", "json")
BROKEN_IN_DIRECTORY = cmd("analyze", "shelf", "--format", "json")


@pytest.mark.parametrize("compression", sorted(STDIN_CMDS))
def test_capture_on_stdin(compression: str) -> None:
    result = result_of(STDIN_CMDS[compression])
    assert result.rc == 1
    assert_summary_only(result, 1)
    doc = result.json()
    assert_valid(doc)
    assert doc["captures"][0]["path"] == "-" and doc["captures"][0]["frames"] == 10
    assert [s["session_id"] for s in doc["sessions"]] == ["stdin#0"]

    def essence(findings: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
        return [(f["rule_id"], f["severity"], tuple(f["frames"]), f["gap_s"]) for f in findings]

    assert essence(doc["findings"]) == essence(result_of(SILENT_JSON).json()["findings"])


def test_empty_stdin_is_unusable_input() -> None:
    result = result_of(EMPTY_STDIN)
    assert result.rc == 2
    assert_one_error_line(result, "-", "empty")
    assert result.json()["summary"]["exit_code"] == 2


def test_truncated_gzip_on_stdin_is_a_warning() -> None:
    result = result_of(TRUNCATED_GZIP_STDIN)
    assert result.rc in (0, 1)
    warnings = [line for line in result.err_lines if line.startswith("warning: -:")]
    assert len(warnings) == 1, result.err
    assert SUMMARY_RE.match(result.err_lines[-1]) and len(result.err_lines) == 2
    assert "stdin#0" in result.out


def test_several_captures_at_once() -> None:
    result = result_of(SEVERAL)
    assert result.rc == 1
    assert_summary_only(result, 1)
    doc = result.json()
    assert_valid(doc)
    assert [c["path"] for c in doc["captures"]] == [str(p) for p in SEVERAL_INPUTS]
    assert [s["session_id"] for s in doc["sessions"]] == [
        "silent-client.pcap#0", "late-pinger.pcap#0", "compliant-pinger.pcap#0",
        "receive-only-subscriber.pcap#0", "receive-only-subscriber.pcap#1"]
    by_session = Counter(f["session_id"] for f in doc["findings"])
    assert by_session["silent-client.pcap#0"] >= 3
    assert by_session["late-pinger.pcap#0"] == 4
    assert by_session["receive-only-subscriber.pcap#0"] >= 3
    assert "compliant-pinger.pcap#0" not in by_session
    assert "receive-only-subscriber.pcap#1" not in by_session
    for finding in doc["findings"]:  # each finding names its own capture
        assert Path(finding["capture"]).name == finding["session_id"].split("#")[0]


def test_directory_argument() -> None:
    result = result_of(DIRECTORY)
    assert result.rc == 1
    assert_summary_only(result, 1)
    doc = result.json()
    assert_valid(doc)
    # captures found recursively by content (not name), sorted; notes.txt and README.md left alone
    assert [c["path"] for c in doc["captures"]] == [
        "recordings/a/silent-client.pcap", "recordings/b/late.dump.gz", "recordings/compliant.cap"]
    assert all(c["error"] is None for c in doc["captures"])
    assert [s["session_id"] for s in doc["sessions"]] == [
        "silent-client.pcap#0", "late.dump.gz#0", "compliant.cap#0"]
    assert rule_ids(doc)["KA101"] == 5 and rule_ids(doc)["KA102"] == 1


def test_directory_reports_a_file_named_like_a_capture_that_is_not_one() -> None:
    """`lost.pcap` holds text: left out, the directory would pass on the good capture alone."""
    result = result_of(BROKEN_IN_DIRECTORY)
    assert result.rc == 2
    assert_one_error_line(result, "shelf/lost.pcap", "not a pcap or pcapng capture")
    doc = result.json()
    assert_valid(doc)
    assert [(c["path"], c["error"] is None) for c in doc["captures"]] == [
        ("shelf/late.pcap", True), ("shelf/lost.pcap", False)]  # notes.txt left alone
    assert [s["session_id"] for s in doc["sessions"]] == ["late.pcap#0"]
    assert rule_ids(doc)["KA101"] == 4


# -- ports, mid-session captures, --assume-keep-alive --------------------------------------------


PORT_WHOLE = cmd("analyze", "broker-8884.pcap", "--format", "json", after_scapy=True)
MID_UNSEEN = cmd("analyze", "mid-8884.pcap", "--format", "json", after_scapy=True)
MID_SEEN = cmd("analyze", "mid-8884.pcap", "--format", "json", "--port", "8884", after_scapy=True)
MID_ASSUMED = cmd("analyze", "mid-8884.pcap", "--format", "json", "-p", "1883", "-p", "8884",
                  "--assume-keep-alive", "2", after_scapy=True)
LATE_MID_ASSUMED = cmd("analyze", "late-mid.pcap", "--format", "json", "--fail-on", "warning",
                       "--assume-keep-alive", "2")


def test_connect_is_recognised_on_any_port() -> None:
    result = result_of(PORT_WHOLE)
    assert result.rc == 0
    assert_summary_only(result, 0)
    doc = result.json()
    assert_valid(doc)
    (session,) = doc["sessions"]
    assert session["broker"]["port"] == 8884
    assert session["client_id"] == "ka-compliant-pinger" and session["keep_alive_s"] == 2
    assert doc["findings"] == []


def test_mid_session_on_another_port_needs_port() -> None:
    result = result_of(MID_UNSEEN)
    assert result.rc == 0
    assert_summary_only(result, 0)
    doc = result.json()
    assert_valid(doc)
    assert doc["captures"][0]["tcp_streams"] == 1
    assert doc["captures"][0]["mqtt_sessions"] == 0
    assert doc["sessions"] == [] and doc["findings"] == []


def test_mid_session_seen_with_port() -> None:
    result = result_of(MID_SEEN)
    assert result.rc == 0
    assert_summary_only(result, 0)
    doc = result.json()
    assert_valid(doc)
    (session,) = doc["sessions"]
    assert session["session_id"] == "mid-8884.pcap#0"
    assert session["broker"]["port"] == 8884
    assert session["keep_alive_source"] == "unknown" and session["connect_frame"] is None
    assert "mid_stream" in session["uncertainty"]
    assert [f["rule_id"] for f in doc["findings"]] == ["KA901"]


def test_assume_keep_alive_on_a_mid_session_capture() -> None:
    result = result_of(MID_ASSUMED)  # --port given twice: both ports are MQTT ports
    assert result.rc == 0
    assert_summary_only(result, 0)
    doc = result.json()
    assert_valid(doc)
    (session,) = doc["sessions"]
    assert session["keep_alive_source"] == "assumed"
    assert session["effective_keep_alive_s"] == 2
    assert "unknown_keep_alive" not in session["uncertainty"]
    assert [f["rule_id"] for f in doc["findings"]] == ["KA901"]  # pings every 1.2 s < 2 s


def test_assumed_keep_alive_is_judged() -> None:
    """late-pinger cut to start after its CONNECT, judged with an assumed K of 2 s: the three late
    pings whose gaps are in the capture (2.6 s > 2 s) are found, and fail --fail-on warning."""
    judged = result_of(LATE_MID_ASSUMED)
    assert judged.rc == 1
    assert_summary_only(judged, 1)
    doc = judged.json()
    assert_valid(doc)
    assert doc["sessions"][0]["keep_alive_source"] == "assumed"
    assert rule_ids(doc) == Counter({"KA101": 3, "KA901": 1})
    # frames are renumbered in the cut file: PINGREQs #8, #11, #14, #17 became 4, 7, 10, 13
    assert [f["frames"] for f in doc["findings"] if f["rule_id"] == "KA101"] == [
        [4, 7], [7, 10], [10, 13]]


# -- bad input -----------------------------------------------------------------------------------


UNUSABLE = {name: cmd("analyze", name, "--format", "json") for name in (
    "empty.pcap", "notes.pcap", "header-cut.pcap", "corrupt.pcap.gz")}
MISSING_PATH = cmd("analyze", "no-such.pcap")
BAD_NEXT_TO_GOOD = cmd("analyze", COMPLIANT, "header-cut.pcap", LATE, "--format", "jsonl")
CUT_CMDS = {name: cmd("analyze", name, "--format", "json") for name in CUTS}
USAGE_ERRORS = {
    "format": cmd("analyze", COMPLIANT, "--format", "xml"),
    "fail-on": cmd("analyze", COMPLIANT, "--fail-on", "sometimes"),
}


@pytest.mark.parametrize("name", sorted(UNUSABLE))
def test_unusable_file_is_exit_2_with_one_error_line(name: str) -> None:
    result = result_of(UNUSABLE[name])
    assert result.rc == 2
    assert_one_error_line(result, name)
    doc = result.json()  # what could be read is still reported
    assert_valid(doc)
    assert doc["captures"][0]["error"]
    assert doc["sessions"] == [] and doc["summary"]["exit_code"] == 2


def test_header_cut_error_says_so() -> None:
    assert "cut short" in assert_one_error_line(result_of(UNUSABLE["header-cut.pcap"]))


def test_missing_path_is_exit_2() -> None:
    """A missing path is reported like any unusable input: one error line, exit 2."""
    result = result_of(MISSING_PATH)
    assert result.rc == 2
    line = assert_one_error_line(result, "no-such.pcap", "no such file")
    assert line.count("no-such.pcap") == 1, line  # the path once, not twice


def test_bad_file_next_to_good_ones() -> None:
    result = result_of(BAD_NEXT_TO_GOOD)
    assert result.rc == 2
    assert_one_error_line(result, "header-cut.pcap", "cut short")
    records = result.jsonl()
    assert [r["session_id"] for r in records if r["type"] == "session"] == [
        "compliant-pinger.pcap#0", "late-pinger.pcap#0"]
    assert records[-1]["type"] == "summary" and records[-1]["exit_code"] == 2


@pytest.mark.parametrize("name", sorted(CUTS))
def test_capture_cut_inside_a_record(name: str) -> None:
    _src, frame, _into, rc, rules = CUTS[name]
    result = result_of(CUT_CMDS[name])
    assert result.rc == rc
    warnings = [line for line in result.err_lines if line.startswith("warning: ")]
    assert len(warnings) == 1 and name in warnings[0] and "cut short" in warnings[0]
    assert len(result.err_lines) == 2, result.err  # the warning and the summary, no error
    assert SUMMARY_RE.match(result.err_lines[-1]) and result.err_lines[-1].endswith(f"exit {rc}")
    doc = result.json()
    assert_valid(doc)
    (capture,) = doc["captures"]
    assert capture["error"] is None and capture["warnings"] and capture["frames"] == frame - 1
    assert len(doc["sessions"]) == 1
    assert rule_ids(doc) == Counter(rules)
    assert doc["summary"]["exit_code"] == rc


@pytest.mark.parametrize("option", sorted(USAGE_ERRORS))
def test_bad_option_is_a_usage_error(option: str) -> None:
    result = result_of(USAGE_ERRORS[option])
    assert result.rc == 2
    assert result.out == ""
    assert f"--{option}" in result.err and "Usage:" in result.err


# -- bit flips -----------------------------------------------------------------------------------


FLIP_CMDS = {fmt: cmd("analyze", *flip_names(fmt), "--format", fmt) for fmt in FLIP_FORMATS}


def test_bit_flipped_captures_never_raise(tmp_path: Path) -> None:
    """200 seeded variants of the shipped captures through the engine and every reporter."""
    shipped = sorted(CAPTURES.glob("*.pcap"))
    options = Options(assume_keep_alive_s=2)
    rng = random.Random(20240611)
    codes: Counter[int] = Counter()
    for i in range(200):
        src = shipped[i % len(shipped)]
        path = write(tmp_path / f"v{i:03d}-{src.name}", flipped_variant(rng, src.read_bytes()))
        try:
            report = analyze([str(path)], options)
            code = report.exit_code(Severity.ERROR)
            assert code in (0, 1, 2)
            for fmt in ("table", "jsonl", "csv") if i % 4 == 0 else ("jsonl",):
                render(report, fmt, io.StringIO(), Severity.ERROR)
            out = io.StringIO()
            render(report, "json", out, Severity.ERROR)
            assert json.loads(out.getvalue())["summary"]["exit_code"] == code
        except Exception as exc:  # noqa: BLE001 - name the variant that broke
            pytest.fail(f"variant {i} of {src.name} ({path}): {type(exc).__name__}: {exc}")
        codes[code] += 1
        path.unlink()
    assert codes[2] > 0 and codes[0] + codes[1] > 0, codes  # both broken and readable ones


@pytest.mark.parametrize("fmt", FLIP_FORMATS)
def test_bit_flipped_captures_through_the_cli(fmt: str) -> None:
    result = result_of(FLIP_CMDS[fmt])  # run() already checked: no traceback, exit 0, 1 or 2
    assert SUMMARY_RE.match(result.err_lines[-1]), result.err
    assert result.err_lines[-1].endswith(f"exit {result.rc}")
    names = flip_names(fmt)
    for line in result.err_lines[:-1]:
        assert line.startswith(("warning: ", "error: ")), line
        assert any(name in line for name in names), line
    if fmt == "json":
        doc = result.json()
        assert len(doc["captures"]) == len(names)
        assert doc["summary"]["exit_code"] == result.rc


# -- the sessions command ------------------------------------------------------------------------


SESSIONS_TABLE = cmd("sessions", "cp.pcap", "kz.pcap", "lp.pcap")
SESSIONS_JSON = cmd("sessions", SUBSCRIBER, SILENT, "--format", "json")
SESSIONS_BAD = cmd("sessions", "notes.pcap", "--format", "json")


def test_sessions_table_one_row_per_session() -> None:
    result = result_of(SESSIONS_TABLE)
    assert result.rc == 0
    assert result.err == ""
    rows = [line for line in result.out.splitlines() if ".pcap#" in line]
    assert len(rows) == 3
    expected = [("cp.pcap#0", "ka-compliant-pinger", "2 / - / 2"),
                ("kz.pcap#0", "ka-keep-alive-zero", "0 / - / 0"),
                ("lp.pcap#0", "ka-late-pinger", "2 / - / 2")]
    for row, (session_id, client_id, keep_alive) in zip(rows, expected):
        assert session_id in row and client_id in row and keep_alive in row, row
    assert "KA1" not in result.out  # sessions, not findings


def test_sessions_json_is_a_list_of_session_records() -> None:
    result = result_of(SESSIONS_JSON)
    assert result.rc == 0
    assert result.err == ""
    records = result.json()
    assert isinstance(records, list) and len(records) == 3
    for record in records:
        validate_record(record, "session")
    assert [(r["session_id"], r["client_id"], r["keep_alive_s"]) for r in records] == [
        ("receive-only-subscriber.pcap#0", "ka-receive-only-subscriber", 2),
        ("receive-only-subscriber.pcap#1", "ka-receive-only-subscriber-pub", 10),
        ("silent-client.pcap#0", "ka-silent-client", 2)]
    wanted = {r["session_id"] for r in records}  # the same records `analyze` reports
    assert records == [s for s in result_of(ALL_SHIPPED_JSON).json()["sessions"]
                       if s["session_id"] in wanted]


def test_sessions_with_an_unusable_file() -> None:
    result = result_of(SESSIONS_BAD)
    assert result.rc == 2
    assert_one_error_line(result, "notes.pcap")
    assert result.json() == []


# -- version and help ----------------------------------------------------------------------------


VERSION = cmd("--version")
HELP = cmd("--help")
ANALYZE_HELP = cmd("analyze", "--help")
HELP_WIDTHS = [cmd(name, "--help", COLUMNS=width) for name in ("analyze", "check") for width in ("80", "200")]


def test_version() -> None:
    result = result_of(VERSION)
    assert result.rc == 0
    assert result.out == f"mqtt-keepalive {analyzer.__version__}\n"
    assert result.err == ""


def test_help() -> None:
    top = result_of(HELP)
    assert top.rc == 0 and "analyze" in top.out and "sessions" in top.out
    sub = result_of(ANALYZE_HELP)
    assert sub.rc == 0
    for option in ("--format", "--output", "--port", "--assume-keep-alive", "--fail-on", "--table"):
        assert option in sub.out


def test_help_gives_the_extras_install_commands_whole() -> None:
    """The help's install hints can be pasted, on a narrow terminal too: the extra's brackets are
    not taken for markup, and no width cuts the command short."""
    for command in HELP_WIDTHS:
        result = result_of(command)
        assert result.rc == 0
        text = re.sub(r"[\s\u2502]+", " ", result.out)  # the help's box and wrapping undone
        assert "pip install 'mqtt-keepalive[html]'" in text, result.out
        assert "pip install 'mqtt-keepalive[dask]'" in text, result.out


# -- regressions --------------------------------------------------------------------------------


CLOCK_STEP = cmd("analyze", "clock-step.pcap", "--format", "json")
EMPTY_DIR = cmd("analyze", "empty-dir")


def test_clock_step_backwards_still_gives_a_valid_report() -> None:
    """Timestamps going back 10 s mid-session: no verdict across the step, and the user is told."""
    result = result_of(CLOCK_STEP)
    report = result.json()
    assert_valid(report)
    assert report["sessions"][0]["uncertainty"] == ["clock_step"]
    assert any("timestamps go back" in w for w in report["captures"][0]["warnings"])
    assert "warning:" in result.err and "timestamps go back" in result.err


def test_directory_without_captures_is_unusable_input() -> None:
    result = result_of(EMPTY_DIR)
    assert result.rc == 2
    assert_one_error_line(result, "empty-dir")


def test_closed_stdout_is_not_reported_as_findings() -> None:
    args = [sys.executable, "-m", "analyzer", "analyze", *[str(CAPTURES)] * 12,
            "--format", "jsonl", "--fail-on", "never"]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT)
    assert proc.stdout is not None
    proc.stdout.read(100)
    proc.stdout.close()  # more than a pipe buffer is still to come: the writer gets EPIPE
    _, err = proc.communicate(timeout=60)
    assert "Traceback" not in err.decode()
    assert proc.returncode == 0

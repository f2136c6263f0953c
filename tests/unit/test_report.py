"""Reporters over hand-built Reports: the JSON contract, JSONL, CSV, and the console tables.

The demo report reproduces the example in ``docs/report-format.md`` field for field, so the
contract's example is itself a test case. The odd report holds what breaks naive reporters:
IPv6, no client id, unknown keep-alive, markup and non-ASCII in a client id, an escape sequence.
"""

from __future__ import annotations

import dataclasses
import io
import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import pandas as pd
import pytest
from rich.console import Console

from analyzer.model import (
    CaptureSummary,
    Endpoint,
    EndReason,
    Finding,
    FlowKey,
    KeepAliveSource,
    Report,
    RuleSetInfo,
    Session,
    Severity,
    Uncertainty,
)
from analyzer.report import FORMATS, json_schema, render
from analyzer.report.console import (
    FLEET_CAPTURES,
    MAX_TABLE_ROWS,
    printable,
    render_console,
    render_sessions,
    summary_line,
)
from analyzer.report.csv import render_csv
from analyzer.report.json import render_json
from analyzer.report.jsonl import render_jsonl
from analyzer.report.records import finding_record, session_record
from analyzer.report.tables import FINDING_COLUMNS, SESSION_COLUMNS

S = 1_000_000_000
BOLD_ID = "[bold]capteur-\u00e9t\u00e9"
ESC_ID = "evil\x1b[31mred"
REPORT_DOC = Path(__file__).resolve().parents[3] / "shared" / "docs" / "report-format.md"

EXPECTED_DEMO: dict[str, Any] = {
    "schema": "mqtt-keepalive/report/1",
    "tool": {"name": "mqtt-keepalive", "version": "0.1.0"},
    "ruleset": {"packs": ["default"], "profile": "spec"},
    "captures": [
        {"path": "captures/demo.pcap", "format": "pcap", "linktypes": [1], "frames": 812,
         "bytes": 64211, "tcp_streams": 3, "mqtt_sessions": 2,
         "skipped": {"non_tcp": 4}, "error": None}
    ],
    "sessions": [
        {"session_id": "demo.pcap#0", "capture": "captures/demo.pcap",
         "client": {"ip": "127.0.0.1", "port": 51234}, "broker": {"ip": "127.0.0.1", "port": 1883},
         "client_id": "sensor-7", "protocol_level": 4,
         "keep_alive_s": 60, "server_keep_alive_s": None, "effective_keep_alive_s": 60,
         "keep_alive_source": "connect",
         "connect_frame": 4, "start": 1795633706.0012, "end": 1795633718.0001,
         "end_reason": "client_disconnect", "end_frame": 30,
         "client_packets": 9, "server_packets": 8, "pingreq": 2, "pingresp": 2,
         "max_gap_s": 5.0057, "uncertainty": []}
    ],
    "findings": [
        {"rule_id": "KA102", "rule": "client-deadline-exceeded", "severity": "error",
         "side": "client", "session_id": "demo.pcap#1", "capture": "captures/demo.pcap",
         "client_id": "meter-3", "frames": [41, 57], "at": 1795633760.5,
         "gap_s": 95.2, "limit_s": 90.0, "keep_alive_s": 60,
         "spec": ["MQTT-3.1.2-24"],
         "message": "client silent for 95.2 s; the broker deadline is 90.0 s (1.5 x 60 s)",
         "wireshark_filter": "frame.number >= 41 && frame.number <= 57 && tcp.stream == 1"}
    ],
    "summary": {"sessions": 2, "findings": {"error": 1, "warning": 0, "info": 0}, "exit_code": 1},
}
"""The example of docs/report-format.md (demo.pcap#1 added to sessions to match summary)."""


def flow(client: tuple[str, int], server: tuple[str, int], stream: int) -> FlowKey:
    return FlowKey(Endpoint(*client), Endpoint(*server), stream)


def session(**changes: Any) -> Session:
    """The demo session #0; tests override what they vary."""
    fields: dict[str, Any] = dict(
        session_id="demo.pcap#0", capture="captures/demo.pcap",
        flow=flow(("127.0.0.1", 51234), ("127.0.0.1", 1883), 0), client_id="sensor-7",
        protocol_level=4, keep_alive_s=60, server_keep_alive_s=None, effective_keep_alive_s=60,
        keep_alive_source=KeepAliveSource.CONNECT, connect_frame=4,
        start_ns=1_795_633_706_001_200_000, end_ns=1_795_633_718_000_100_000,
        end_reason=EndReason.CLIENT_DISCONNECT, end_frame=30, client_packets=9,
        server_packets=8, pingreq=2, pingresp=2, max_gap_ns=5_005_700_000,
    )
    fields.update(changes)
    return Session(**fields)


def finding(**changes: Any) -> Finding:
    """The demo KA102 finding; tests override what they vary."""
    fields: dict[str, Any] = dict(
        rule_id="KA102", rule="client-deadline-exceeded", severity=Severity.ERROR, side="client",
        session_id="demo.pcap#1", capture="captures/demo.pcap", client_id="meter-3",
        frames=(41, 57), ts_ns=1_795_633_760_500_000_000, stream_index=1,
        message="client silent for 95.2 s; the broker deadline is 90.0 s (1.5 x 60 s)",
        spec=("MQTT-3.1.2-24",), gap_s=95.2, limit_s=90.0, keep_alive_s=60,
    )
    fields.update(changes)
    return Finding(**fields)


DEMO_CAPTURE = CaptureSummary(
    path="captures/demo.pcap", format="pcap", linktypes=(1,), frames=812, bytes=64211,
    tcp_streams=3, mqtt_sessions=2, skipped={"non_tcp": 4},
)
DEMO = Report(
    captures=(DEMO_CAPTURE,),
    sessions=(
        session(),
        session(session_id="demo.pcap#1", client_id="meter-3",
                flow=flow(("127.0.0.1", 51240), ("127.0.0.1", 1883), 1), connect_frame=35,
                end_reason=EndReason.SERVER_FIN, end_frame=57, max_gap_ns=95_200_000_000),
    ),
    findings=(finding(),),
)

ODD_CAPTURE = "captures/odd.pcapng"
ODD = Report(
    captures=(
        CaptureSummary(path=ODD_CAPTURE, format="pcapng", linktypes=(1, 113), frames=40,
                       bytes=5000, tcp_streams=3, mqtt_sessions=3,
                       skipped={"non_ip": 2, "non_tcp": 1}, warnings=("2 frames truncated",)),
    ),
    sessions=(
        session(session_id="odd.pcapng#0", capture=ODD_CAPTURE,
                flow=flow(("2001:db8::1", 50000), ("2001:db8::2", 1883), 0), client_id=None,
                protocol_level=None, keep_alive_s=None, effective_keep_alive_s=None,
                keep_alive_source=KeepAliveSource.UNKNOWN, connect_frame=None,
                end_reason=EndReason.CAPTURE_END, end_frame=40, max_gap_ns=None,
                uncertainty=frozenset({Uncertainty.UNKNOWN_KEEP_ALIVE, Uncertainty.MID_STREAM})),
        session(session_id="odd.pcapng#1", capture=ODD_CAPTURE, client_id=BOLD_ID,
                protocol_level=5, keep_alive_s=120, server_keep_alive_s=30,
                effective_keep_alive_s=30, keep_alive_source=KeepAliveSource.CONNACK,
                connect_frame=7, end_reason=EndReason.SERVER_DISCONNECT, end_frame=33,
                connack_code=0),
        session(session_id="odd.pcapng#2", capture=ODD_CAPTURE, client_id=ESC_ID,
                flow=flow(("10.0.0.5", 40000), ("10.0.0.1", 1883), 2), protocol_level=3),
    ),
    findings=(
        finding(rule_id="KA901", rule="session-start-unseen", severity=Severity.INFO, side="-",
                session_id="odd.pcapng#0", capture=ODD_CAPTURE, client_id=None, frames=(3, 3),
                stream_index=0, message="no CONNECT seen", spec=(), gap_s=None, limit_s=None,
                keep_alive_s=None, uncertainty=("unknown_keep_alive", "mid_stream")),
        finding(rule_id="KA101", rule="client-interval-exceeded", severity=Severity.WARNING,
                session_id="odd.pcapng#1", capture=ODD_CAPTURE, client_id=BOLD_ID,
                frames=(9, 20), ts_ns=1_795_633_800_123_456_789, stream_index=1,
                message=f"[red]{BOLD_ID}[/red] silent for 31.00004 s", gap_s=31.00004,
                limit_s=30.0, keep_alive_s=30),
        finding(rule_id="KA105", rule="server-keep-alive-ignored", severity=Severity.ERROR,
                session_id="odd.pcapng#1", capture=ODD_CAPTURE, client_id=BOLD_ID,
                frames=(20, 31), ts_ns=1_795_633_900_000_000_000, stream_index=1,
                message="gap 59.5 s exceeds the Server Keep Alive 30 s", gap_s=59.5,
                limit_s=30.0, keep_alive_s=30, spec=("MQTT-3.1.2-21", "MQTT-3.2.2-21")),
    ),
    ruleset=RuleSetInfo(packs=("default", "ci-strict"), profile="mosquitto-2.0"),
)


def json_of(report: Report, fail_on: Severity | None = Severity.ERROR) -> dict[str, Any]:
    out = io.StringIO()
    render_json(report, fail_on, out)
    doc: dict[str, Any] = json.loads(out.getvalue())
    return doc


def console_text(report: Report, sessions_command: bool = False) -> str:
    out = io.StringIO()
    console = Console(file=out, width=200, force_terminal=False)
    if sessions_command:
        render_sessions(report, console)
    else:
        render_console(report, Severity.ERROR, console)
    return out.getvalue()


def without_extras(actual: Any, expected: Any) -> Any:
    """``actual`` cut down to the keys ``expected`` documents (extra fields are allowed)."""
    if isinstance(expected, dict):
        return {k: without_extras(actual[k], v) for k, v in expected.items() if k in actual}
    if isinstance(expected, list) and len(actual) == len(expected):
        return [without_extras(a, e) for a, e in zip(actual, expected, strict=True)]
    return actual


# JSON


@pytest.mark.parametrize("report", [DEMO, ODD, Report((), (), ())], ids=["demo", "odd", "empty"])
def test_json_validates_against_the_shipped_schema(report: Report) -> None:
    schema = json_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    jsonschema.validate(json_of(report), schema, cls=jsonschema.Draft202012Validator)


def test_json_reproduces_the_documented_example() -> None:
    doc = json_of(DEMO)
    doc["sessions"] = doc["sessions"][:1]
    assert without_extras(doc, EXPECTED_DEMO) == EXPECTED_DEMO


def test_json_documented_keys_come_first_in_documented_order() -> None:
    doc = json_of(DEMO)
    assert list(doc)[: len(EXPECTED_DEMO)] == list(EXPECTED_DEMO)
    assert doc["warnings"] == [] and doc["summary"]["suppressed"] == 0
    assert list(doc["summary"])[:3] == list(EXPECTED_DEMO["summary"])
    for section in ("captures", "sessions", "findings"):
        documented = list(EXPECTED_DEMO[section][0])
        assert list(doc[section][0])[: len(documented)] == documented
    assert doc["captures"][0]["warnings"] == []
    assert doc["findings"][0]["uncertainty"] == []
    assert doc["sessions"][0]["tcp_stream"] == 0


@pytest.mark.skipif(not REPORT_DOC.exists(), reason="../shared/docs is not checked out")
def test_expected_demo_is_still_the_documented_example() -> None:
    block = re.search(r"```json\n(.*?)```", REPORT_DOC.read_text(encoding="utf-8"), re.S)
    assert block is not None
    assert json.loads(block.group(1)) == EXPECTED_DEMO


def test_json_odd_values() -> None:
    doc = json_of(ODD, fail_on=None)
    unknown, v5, _ = doc["sessions"]
    assert unknown["client"] == {"ip": "2001:db8::1", "port": 50000}
    assert unknown["client_id"] is None and unknown["protocol_level"] is None
    assert unknown["keep_alive_source"] == "unknown" and unknown["max_gap_s"] is None
    assert unknown["uncertainty"] == ["mid_stream", "unknown_keep_alive"]
    assert v5["client_id"] == BOLD_ID
    assert (v5["keep_alive_s"], v5["server_keep_alive_s"], v5["effective_keep_alive_s"]) == (
        120, 30, 30)
    info, warning, error = doc["findings"]
    assert info["side"] == "-" and info["uncertainty"] == ["mid_stream", "unknown_keep_alive"]
    assert warning["at"] == 1795633800.123457 and warning["gap_s"] == 31.0
    assert error["spec"] == ["MQTT-3.1.2-21", "MQTT-3.2.2-21"]
    assert doc["captures"][0]["warnings"] == ["2 frames truncated"]
    assert doc["ruleset"] == {"packs": ["default", "ci-strict"], "profile": "mosquitto-2.0"}
    assert doc["summary"] == {"sessions": 3, "findings": {"error": 1, "warning": 1, "info": 1},
                              "suppressed": 0,
                              "exit_code": 0}


def test_json_is_ascii_and_round_trips_non_ascii() -> None:
    out = io.StringIO()
    render_json(ODD, Severity.ERROR, out)
    assert out.getvalue().isascii() and out.getvalue().endswith("}\n")
    assert json.loads(out.getvalue())["sessions"][1]["client_id"] == BOLD_ID


def test_capture_error_gives_exit_code_2() -> None:
    broken = CaptureSummary(path="x.pcap", format="unknown", linktypes=(), frames=0, bytes=0,
                            tcp_streams=0, mqtt_sessions=0, error="not a capture file")
    doc = json_of(Report((broken,), (), ()))
    assert doc["captures"][0]["error"] == "not a capture file"
    assert doc["summary"]["exit_code"] == 2


def test_records_round_times_and_durations() -> None:
    s = session_record(session(start_ns=1_795_633_706_000_000_499, max_gap_ns=1_234_567_890))
    assert s["start"] == 1795633706.0 and s["max_gap_s"] == 1.2346
    f = finding_record(finding(gap_s=1.23456789, limit_s=None))
    assert f["gap_s"] == 1.2346 and f["limit_s"] is None


# JSONL


def test_jsonl_lines_parse_and_types_come_in_order() -> None:
    out = io.StringIO()
    render_jsonl(ODD, Severity.WARNING, out)
    lines = out.getvalue().splitlines()
    records = [json.loads(line) for line in lines]
    assert [r["type"] for r in records] == (
        ["capture"] + ["session"] * 3 + ["finding"] * 3 + ["summary"])
    assert all(next(iter(r)) == "type" for r in records)
    assert records[1]["session_id"] == "odd.pcapng#0"
    assert records[-1]["exit_code"] == 1
    doc = json_of(ODD)
    assert {k: v for k, v in records[4].items() if k != "type"} == doc["findings"][0]


# CSV


def test_csv_findings_parse_back() -> None:
    out = io.StringIO()
    render_csv(ODD, out)
    frame = pd.read_csv(io.StringIO(out.getvalue()), keep_default_na=False)
    assert list(frame.columns) == list(FINDING_COLUMNS)
    assert list(frame["rule_id"]) == ["KA901", "KA101", "KA105"]
    assert list(frame["first_frame"]) == [3, 9, 20] and list(frame["last_frame"]) == [3, 20, 31]
    assert list(frame["client_id"]) == ["", BOLD_ID, BOLD_ID]
    assert frame.loc[2, "spec"] == "MQTT-3.1.2-21;MQTT-3.2.2-21"
    assert frame.loc[0, "gap_s"] == "" and frame.loc[1, "gap_s"] == "31.0"


def test_csv_sessions_parse_back() -> None:
    out = io.StringIO()
    render_csv(ODD, out, table="sessions")
    frame = pd.read_csv(io.StringIO(out.getvalue()))
    assert list(frame.columns) == list(SESSION_COLUMNS)
    assert list(frame["session_id"]) == ["odd.pcapng#0", "odd.pcapng#1", "odd.pcapng#2"]
    assert frame.loc[0, "client_ip"] == "2001:db8::1"
    assert pd.isna(frame.loc[0, "effective_keep_alive_s"])
    assert frame.loc[0, "uncertainty"] == "mid_stream;unknown_keep_alive"
    assert frame.loc[1, "server_keep_alive_s"] == 30


@pytest.mark.parametrize("table, columns", [("findings", FINDING_COLUMNS),
                                            ("sessions", SESSION_COLUMNS)])
def test_csv_of_an_empty_report_is_the_header(table: str, columns: dict[str, str]) -> None:
    out = io.StringIO()
    render_csv(Report((), (), ()), out, table=table)  # type: ignore[arg-type]
    assert out.getvalue() == ",".join(columns) + "\n"


# Console


def test_console_shows_rules_frames_and_escaped_client_ids() -> None:
    text = console_text(ODD)
    for needle in ("KA901 session-start-unseen", "KA101", "KA105", "9-20", "20-31",
                   BOLD_ID, f"[red]{BOLD_ID}[/red]", "[2001:db8::1]:50000", "30 (connack)",
                   "5.0", "3.1", "2 frames truncated", "skipped: non_ip 2, non_tcp 1"):
        assert needle in text, needle
    assert "\x1b" not in text and "evil\\x1b[31mred" in text


def test_console_findings_are_worst_first() -> None:
    text = console_text(ODD)
    assert text.index("KA105") < text.index("KA101") < text.index("KA901")


def test_console_demo_and_empty_capture() -> None:
    text = console_text(DEMO)
    assert "captures/demo.pcap" in text and "95.2 / 90 s" in text and "41-57" in text
    empty = Report((DEMO_CAPTURE,), (), ())
    assert "no MQTT session" in console_text(empty) and "no findings" in console_text(empty)


def test_sessions_command_table() -> None:
    text = console_text(ODD, sessions_command=True)
    assert "[2001:db8::1]:50000 -> [2001:db8::2]:1883" in text
    assert "120 / 30 / 30 (connack)" in text and "- / - / ?" in text
    assert "server_disconnect @ 33" in text and BOLD_ID in text


@pytest.mark.parametrize("n", [0, 3, 7])
def test_sessions_command_prints_many_sessions_in_tables_of_a_few_rows(
        n: int, monkeypatch: pytest.MonkeyPatch) -> None:
    import analyzer.report.console as console_module

    monkeypatch.setattr(console_module, "SESSIONS_PER_TABLE", 3)
    tables: list[int] = []
    real = console_module._session_list

    def spy(title: str, sessions: list[Session]) -> Any:
        tables.append(len(sessions))
        return real(title, sessions)

    monkeypatch.setattr(console_module, "_session_list", spy)
    sessions = tuple(session(session_id=f"s{i:04d}") for i in range(n))
    text = console_text(Report((DEMO_CAPTURE,), sessions, ()), sessions_command=True)
    assert re.findall(r"s\d{4}", text) == [s.session_id for s in sessions]
    titles = re.findall(r"^MQTT sessions.*?$", text, re.MULTILINE)
    if n <= 3:
        assert [t.strip() for t in titles] == ["MQTT sessions"] and tables == [n]
    else:
        assert [t.strip() for t in titles] == ["MQTT sessions 1-3 of 7", "MQTT sessions 4-6 of 7",
                                               "MQTT sessions 7-7 of 7"]
        assert tables == [3, 3, 1]


@pytest.mark.parametrize("report, fail_on, line", [
    (DEMO, Severity.ERROR, "2 sessions, 1 error, 0 warnings, 0 info -> exit 1"),
    (ODD, None, "3 sessions, 1 error, 1 warning, 1 info -> exit 0"),
    (Report((), (session(),), ()), Severity.INFO,
     "1 session, 0 errors, 0 warnings, 0 info -> exit 0"),
])
def test_summary_line(report: Report, fail_on: Severity | None, line: str) -> None:
    assert summary_line(report, fail_on) == line


def test_printable_escapes_controls_and_truncates() -> None:
    assert printable("a\x00b\u202e") == "a\\x00b\\u202e"
    assert printable("x" * 10, max_chars=4) == "xxx\u2026"


def test_printable_takes_every_character_as_one_by_one() -> None:
    """Text with nothing to escape is returned as it is (a fast path for the common case); every
    code point, alone and between letters, comes out as the per-character rule makes it."""
    import unicodedata

    def one_by_one(value: str) -> str:
        return "".join((f"\\x{ord(ch):02x}" if ord(ch) < 0x100 else f"\\u{ord(ch):04x}")
                       if unicodedata.category(ch)[0] == "C" else ch for ch in value)

    for code in range(0x110000):  # the fast path's premise, for every code point
        ch = chr(code)
        assert not ch.isprintable() or unicodedata.category(ch)[0] != "C", hex(code)
    for code in range(0, 0x110000, 97):
        ch = chr(code)
        assert printable(ch) == one_by_one(ch), hex(code)
    for text in ("dev-17", "caf\u00e9 \u00a0nbsp", "tab\there", "line\u2028sep", "emoji \U0001f600"):
        assert printable(f"a{text}b") == one_by_one(f"a{text}b")


def test_quantile_is_numpys_to_the_last_bit() -> None:
    """The clients table's p95 of gap / K, without numpy's per-call cost: the same float as
    `numpy.quantile` for lengths from 1 up, ties, and values over several magnitudes."""
    import random

    import numpy as np

    from analyzer.report.tables import quantile

    rng = random.Random(7)
    for _ in range(3_000):
        n = rng.choice((1, 2, 3, 4, 7, 20, 21, 37, 100, 256, 513))
        values = [rng.random() * rng.choice((1, 10, 1e3, 1e-3)) for _ in range(n)]
        if rng.random() < 0.3:
            values = [round(v, 1) for v in values]  # ties
        for q in (0.95, 0.5, 0.05, 0.0, 1.0):
            assert quantile(values, q) == float(np.quantile(np.array(values), q)), (values, q)


# Registry


@pytest.mark.parametrize("fmt", FORMATS)
def test_registry_renders_every_format(fmt: str) -> None:
    out = io.StringIO()
    render(DEMO, fmt, out, Severity.ERROR)
    assert "KA102" in out.getvalue() and "\x1b" not in out.getvalue()


def test_registry_rejects_unknown_format() -> None:
    with pytest.raises(ValueError, match="unknown report format"):
        render(DEMO, "xml", io.StringIO(), None)


def fleet(n: int) -> Report:
    """`n` captures of one session each: c007 with two errors, every fifth with a warning, c050 cut
    short with an escape sequence in its error, c060 skipping frames, c071 read with a warning."""
    captures, sessions, findings = [], [], []
    for i in range(n):
        name = f"c{i:03d}.pcap"
        summary = dataclasses.replace(DEMO_CAPTURE, path=f"fleet/{name}", frames=100 + i, skipped={})
        if i == 50:
            summary = dataclasses.replace(summary, error="cut short\x1b[31m", warnings=("odd",))
        if i == 60:
            summary = dataclasses.replace(summary, skipped={"non_tcp": 3})
        if i == 71:
            summary = dataclasses.replace(summary, warnings=("capture loss",))
        captures.append(summary)
        sessions.append(session(session_id=f"{name}#0", capture=f"fleet/{name}"))
        mine = dict(session_id=f"{name}#0", capture=f"fleet/{name}", message=f"m{i:03d}")
        if i == 7:
            findings += [finding(**mine, ts_ns=S * 5), finding(**mine, ts_ns=S * 9)]
        if i % 5 == 0:
            findings.append(finding(**mine, rule_id="KA101", rule="client-interval-exceeded",
                                    severity=Severity.WARNING, ts_ns=S * (100 + i)))
    return Report(tuple(captures), tuple(sessions), tuple(findings))


def test_console_prints_many_captures_as_a_fleet() -> None:
    """More than `FLEET_CAPTURES` captures: a heading with the fleet's counts, one row per capture
    worst first (the one that could not be read whole, with its error escaped, then the one read
    with a warning, then by errors and warnings found), the worst findings of all naming their
    sessions, and what was left out."""
    n = MAX_TABLE_ROWS + 3
    text = console_text(fleet(n))
    assert text.startswith(f"{n} captures, {sum(100 + i for i in range(n))} frames, {n} MQTT sessions")
    assert "1 could not be read whole" in text and "1 read with warnings" in text
    table = text[text.index("Captures (worst first)"):text.index("Findings (worst first)")]
    rows = re.findall(r"fleet/(c\d{3})\.pcap", table)
    warned = [f"c{i:03d}" for i in range(0, n, 5) if i != 50]
    rest = [f"c{i:03d}" for i in range(n) if i % 5 and i not in (7, 71)]
    assert rows == (["c050", "c071", "c007"] + warned + rest)[:MAX_TABLE_ROWS]
    assert "3 more captures not shown" in text
    assert "error: cut short\\x1b[31m; warning: odd" in table and "\x1b" not in text
    assert re.search(r"c007\.pcap .* 2 +. +0 +. +0 ", table)
    assert re.search(r"c060\.pcap .* skipped: non_tcp 3", table)
    assert re.search(r"c071\.pcap .* warning: capture loss", table)
    listed = text[text.index("Findings (worst first)"):]
    assert re.findall(r"m\d{3}", listed) == ["m007", "m007"] + [f"m{i:03d}" for i in range(0, n, 5)]
    assert re.findall(r"(c\d{3})\.pcap#0", listed)[:3] == ["c007", "c007", "c000"]
    assert "Findings by rule" not in text  # every finding was shown
    assert len(text.splitlines()) < 4 * MAX_TABLE_ROWS  # not a pair of tables per capture


def test_console_fleet_counts_the_findings_it_left_out() -> None:
    report = fleet(FLEET_CAPTURES + 1)
    many = tuple(finding(session_id="c003.pcap#0", capture="fleet/c003.pcap", ts_ns=S * i,
                         message=f"x{i:03d}") for i in range(MAX_TABLE_ROWS + 4))
    text = console_text(dataclasses.replace(report, findings=report.findings + many))
    assert re.findall(r"fleet/(c\d{3})\.pcap", text)[:2] == ["c003", "c007"]
    shown = len(re.findall(r"\b[xm]\d{3}\b", text))
    assert shown == MAX_TABLE_ROWS
    assert f"{len(report.findings) + len(many) - MAX_TABLE_ROWS} more findings not shown" in text
    assert "Findings by rule" in text


def test_console_keeps_a_table_pair_per_capture_up_to_the_fleet_size() -> None:
    text = console_text(fleet(FLEET_CAPTURES))
    assert "Captures (worst first)" not in text
    assert len(re.findall(r"^MQTT sessions *$", text, re.MULTILINE)) == FLEET_CAPTURES  # a table each
    assert text.startswith("fleet/c000.pcap  pcap")


def test_console_caps_each_table_and_counts_what_it_left_out() -> None:
    """More sessions and findings than a table shows: the first sessions in order, the worst
    findings exactly as sorting them all would give, how many were left out, and every finding
    counted by rule. A report within the cap shows everything, with no such note."""
    n = MAX_TABLE_ROWS + 7
    sessions = tuple(
        session(session_id=f"s{i:04d}", flow=flow(("127.0.0.1", 50000 + i), ("127.0.0.1", 1883), i))
        for i in range(n))
    kinds = [("KA101", "client-late-ping", Severity.WARNING),
             ("KA102", "client-deadline-exceeded", Severity.ERROR),
             ("KA901", "note", Severity.INFO)]
    findings = tuple(
        finding(session_id=f"s{i % n:04d}", rule_id=kinds[i % 3][0], rule=kinds[i % 3][1],
                severity=kinds[i % 3][2], ts_ns=S * (1000 + i % 40), message=f"m{i:04d}")
        for i in range(3 * n))
    text = console_text(Report((DEMO_CAPTURE,), sessions, findings))

    assert re.findall(r"s\d{4}", text) == [f"s{i:04d}" for i in range(MAX_TABLE_ROWS)]
    assert "7 more sessions not shown" in text
    worst = sorted(findings, key=lambda f: (-int(f.severity), f.ts_ns, f.rule_id, f.frames))
    assert re.findall(r"m\d{4}", text) == [f.message for f in worst[:MAX_TABLE_ROWS]]
    assert f"{3 * n - MAX_TABLE_ROWS} more findings not shown" in text
    by_rule = text[text.index("Findings by rule"):]
    assert [line.split()[3] for line in by_rule.splitlines() if "KA" in line] == ["KA102", "KA101", "KA901"]
    assert all(re.search(rf"{rule_id} \S+\s+\S\s+{n}\b", by_rule) for rule_id, _, _ in kinds)
    # the session column counts findings of the sessions shown
    assert re.search(r"s0000 .* 3\s+\S\s*$", text, re.MULTILINE)

    small = console_text(DEMO)
    assert "not shown" not in small and "Findings by rule" not in small


def gappy_report() -> Report:
    """10 findings and 7 sessions with values missing in some rows of every chunk of 3, and in
    every row of the third."""
    gone = [i % 3 == 1 or i // 3 == 2 for i in range(10)]
    findings = tuple(finding(message=f"m{i}", gap_s=None if gone[i] else 95.2 + i,
                             keep_alive_s=None if gone[i] else 60) for i in range(10))
    sessions = tuple(session(session_id=f"s{i}", max_gap_ns=None if gone[i] else 5_000_000_000,
                             connect_frame=None if gone[i] else 4) for i in range(7))
    return Report((DEMO_CAPTURE,), sessions, findings)


@pytest.mark.parametrize("table", ["findings", "sessions"])
def test_csv_written_in_chunks_is_the_one_table(monkeypatch: pytest.MonkeyPatch, table: str) -> None:
    """Findings and sessions go to CSV a few thousand rows at a time (a spooled report is never
    one DataFrame): the text is exactly that of the whole table, including chunks where a
    column is missing throughout (its dtype is fixed, so `1` never becomes `1.0`)."""
    import analyzer.report.tables as tables_module
    from analyzer.report.tables import findings_frame, sessions_frame

    monkeypatch.setattr(tables_module, "ROWS_AT_ONCE", 3)
    report = gappy_report()
    out = io.StringIO()
    render_csv(report, out, table=table)  # type: ignore[arg-type]
    whole = (findings_frame if table == "findings" else sessions_frame)(report)
    assert out.getvalue() == whole.to_csv(index=False, lineterminator="\n")
    assert out.getvalue().count("\n") == 1 + (10 if table == "findings" else 7)


@pytest.mark.parametrize("table", ["findings", "sessions"])
def test_parquet_written_in_chunks_reads_back_as_the_one_table(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path, table: str) -> None:
    """Parquet gets findings and sessions a few rows at a time too (one row group per chunk):
    pandas reads back exactly the whole table, dtypes included, also from a chunk where a column
    is missing throughout; an empty table is still a file with every column."""
    pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    import analyzer.report.tables as tables_module
    from analyzer.report.parquet import write_parquet
    from analyzer.report.tables import findings_frame, sessions_frame

    monkeypatch.setattr(tables_module, "ROWS_AT_ONCE", 3)
    build = findings_frame if table == "findings" else sessions_frame
    for report, groups in ((gappy_report(), 4 if table == "findings" else 3),
                           (Report((DEMO_CAPTURE,), (), ()), 1)):
        (path,) = write_parquet(report, str(tmp_path / str(groups)), (table,))
        pd.testing.assert_frame_equal(pd.read_parquet(path), build(report))
        assert pq.ParquetFile(path).num_row_groups == groups

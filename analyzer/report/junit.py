"""``--format junit``: the report as JUnit XML, for GitLab, Jenkins and GitHub test-report actions.

The mapping (``ecosystem.md`` section 2.2):

- one ``<testsuites name="mqtt-keepalive">`` root carrying the totals;
- one ``<testsuite>`` per capture, named by its path; a capture that could not be read (its
  ``error``) gets a ``<testcase name="read capture">`` holding an ``<error>``;
- one ``<testcase>`` per MQTT session, named ``"<client id> <client ip:port> -> <broker ip:port>"``
  (``(no client id)`` when the CONNECT was not seen or the id was empty) with ``classname`` = the
  session id, which is unique in a report (GitLab keeps only the first of duplicate names);
- one ``<failure>`` per finding at or above ``--fail-on``, worst first (Jenkins and GitLab show the
  first failure of a test case most prominently); findings below it are listed in the test case's
  ``<system-out>``, so the report still carries them without failing anything.

``tests``/``failures``/``errors`` count test cases, ``<failure>`` and ``<error>`` elements, the
same totals a JUnit reader such as junitparser recomputes. Every suite carries ``name``, ``tests``,
``failures``, ``errors``, ``skipped`` and ``time``, and every test case ``name``, ``classname`` and
``time``, which satisfies both the Ant/Jenkins schema and GitLab's parser. The document is written
even when nothing failed and when there are no sessions at all (suites with ``tests="0"``), so a
CI job that uploads it ``when: always`` never finds it missing.

Client ids, capture paths and messages are data, some of it from the network: ElementTree does all
the escaping, and ``xml_safe`` first removes the characters XML 1.0 cannot represent at all (C0
controls other than tab, newline and carriage return, lone surrogates, U+FFFE/U+FFFF), which an
escape cannot save. The output is pure ASCII (anything else as a character reference) under a
UTF-8 declaration, so it is the same bytes whatever the encoding of the stream it goes to, like
the JSON reporter's ``ensure_ascii``.
"""

from __future__ import annotations

import io
import re
import xml.etree.ElementTree as ET
from collections import defaultdict
from datetime import UTC, datetime
from typing import BinaryIO, TextIO

from analyzer.model import CONFIRMED, CaptureSummary, Finding, Report, Session, Severity
from analyzer.report.console import frames_cell, worst_first
from analyzer.report.records import TOOL_NAME

READ_CAPTURE = "read capture"
"""Name of the test case that stands for an unreadable capture."""

NO_CLIENT_ID = "(no client id)"

XML_DECLARATION = '<?xml version="1.0" encoding="UTF-8"?>\n'

_NS_PER_S = 1_000_000_000

_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
"""Everything outside XML 1.0's ``Char`` production."""


def xml_safe(value: object) -> str:
    """``value`` as text with the characters XML 1.0 forbids removed (escaping is ElementTree's)."""
    return _NOT_XML.sub("", str(value))


def _seconds(value_ns: int) -> str:
    """A duration as JUnit's ``time``: decimal seconds, never negative, never in exponent form."""
    return f"{max(value_ns, 0) / _NS_PER_S:.3f}"


def iso_utc(ts_ns: int) -> str:
    """Epoch nanoseconds as ISO 8601 UTC to the microsecond: ``2026-11-24T09:27:30.950233Z``."""
    seconds, rest_ns = divmod(ts_ns, _NS_PER_S)
    moment = datetime.fromtimestamp(seconds, tz=UTC).replace(microsecond=rest_ns // 1000)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _measure(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}".rstrip("0").rstrip(".") + " s"


def testcase_name(s: Session) -> str:
    """``"<client id> <client ip:port> -> <broker ip:port>"``, unique within a capture."""
    client_id = s.client_id or NO_CLIENT_ID
    return f"{client_id} {s.flow.client} -> {s.flow.server}"


def failure_message(f: Finding) -> str:
    """The one-line ``message``: ``"KA102 client-deadline-exceeded: <message>"``."""
    return f"{f.rule_id} {f.rule}: {f.message}"


def failure_text(f: Finding) -> str:
    """The evidence, one ``label: value`` line each, as a failure's body."""
    keep_alive = "-" if f.keep_alive_s is None else f"{f.keep_alive_s} s"
    lines = [
        f"severity: {f.severity.label}",
        f"capture: {f.capture}",
        f"session: {f.session_id}",
        f"client id: {NO_CLIENT_ID if not f.client_id else f.client_id}",
        f"frames: {frames_cell(f)}",
        f"time: {iso_utc(f.ts_ns)}",
        f"gap: {_measure(f.gap_s)}",
        f"limit: {_measure(f.limit_s)}",
        f"keep-alive: {keep_alive}",
        f"spec: {', '.join(f.spec) if f.spec else '-'}",
        f"wireshark filter: {f.wireshark_filter}",
    ]
    if f.uncertainty:
        lines.append(f"uncertainty: {', '.join(f.uncertainty)}")
    if f.confidence != CONFIRMED:
        lines.append(f"confidence: {f.confidence} (MQTT over TLS judged from encrypted record sizes)")
    return "\n".join(lines) + "\n"


def _below_line(f: Finding) -> str:
    """One line of ``<system-out>`` for a finding below ``--fail-on``."""
    return (f"{f.severity.label} {failure_message(f)} (frames {frames_cell(f)}, "
            f"filter: {f.wireshark_filter})")


def _fails(f: Finding, fail_on: Severity | None) -> bool:
    return fail_on is not None and f.severity >= fail_on


def _element(parent: ET.Element, tag: str, text: str | None = None, **attrib: str) -> ET.Element:
    node = ET.SubElement(parent, tag, {k: xml_safe(v) for k, v in attrib.items()})
    if text is not None:
        node.text = xml_safe(text)
    return node


def _testcase(suite: ET.Element, name: str, classname: str, time_ns: int,
              findings: list[Finding], fail_on: Severity | None) -> int:
    """Append one session's test case; returns how many ``<failure>`` elements it got."""
    case = _element(suite, "testcase", name=name, classname=classname, time=_seconds(time_ns))
    ordered = worst_first(findings)
    failing = [f for f in ordered if _fails(f, fail_on)]
    for f in failing:
        _element(case, "failure", failure_text(f), message=failure_message(f), type=f.rule_id)
    below = [f for f in ordered if not _fails(f, fail_on)]
    if below:
        _element(case, "system-out", "\n".join(_below_line(f) for f in below) + "\n")
    return len(failing)


def _captures(report: Report) -> list[tuple[str, CaptureSummary | None]]:
    """Every capture in report order, plus any capture only a session or finding names."""
    groups: dict[str, CaptureSummary | None] = {c.path: c for c in report.captures}
    for path in [s.capture for s in report.sessions] + [f.capture for f in report.findings]:
        groups.setdefault(path, None)
    return list(groups.items())


def junit_tree(report: Report, fail_on: Severity | None) -> ET.Element:
    """The ``<testsuites>`` element of the report (what ``render_junit`` serialises)."""
    root = ET.Element("testsuites", {"name": TOOL_NAME})
    by_session: dict[str, list[Finding]] = defaultdict(list)
    for f in report.findings:
        by_session[f.session_id].append(f)
    totals = {"tests": 0, "failures": 0, "errors": 0, "time": 0}
    for path, summary in _captures(report):
        suite = _element(root, "testsuite", name=path)
        tests = failures = errors = time_ns = 0
        if summary is not None and summary.error:
            case = _element(suite, "testcase", name=READ_CAPTURE, classname=path, time=_seconds(0))
            _element(case, "error", summary.error, message=summary.error, type="capture-error")
            tests, errors = 1, 1
        sessions = [s for s in report.sessions if s.capture == path]
        for s in sessions:
            duration = max(s.end_ns - s.start_ns, 0)
            failures += _testcase(suite, testcase_name(s), s.session_id, duration,
                                  by_session.pop(s.session_id, []), fail_on)
            tests += 1
            time_ns += duration
        # A finding whose session is not in the report (never expected) still gets a test case,
        # so a failure is never dropped from the CI gate.
        orphans = sorted({f.session_id for f in report.findings
                          if f.capture == path and f.session_id in by_session})
        for session_id in orphans:
            failures += _testcase(suite, session_id, session_id, 0,
                                  by_session.pop(session_id), fail_on)
            tests += 1
        suite.set("tests", str(tests))
        suite.set("failures", str(failures))
        suite.set("errors", str(errors))
        suite.set("skipped", "0")
        suite.set("time", _seconds(time_ns))
        totals["tests"] += tests
        totals["failures"] += failures
        totals["errors"] += errors
        totals["time"] += time_ns
    root.set("tests", str(totals["tests"]))
    root.set("failures", str(totals["failures"]))
    root.set("errors", str(totals["errors"]))
    root.set("time", _seconds(totals["time"]))
    return root


def junit_bytes(report: Report, fail_on: Severity | None) -> bytes:
    """The whole document: a UTF-8 declaration, then ASCII-only XML, then a newline."""
    root = junit_tree(report, fail_on)
    ET.indent(root)
    body = ET.tostring(root, encoding="us-ascii")
    return XML_DECLARATION.encode("ascii") + body + b"\n"


def render_junit(report: Report, fail_on: Severity | None, out: BinaryIO | TextIO) -> None:
    """Write the report as JUnit XML to a binary or a text stream (the bytes are ASCII either way).

    ``fail_on`` decides which findings are ``<failure>`` (at or above it) and which are only listed
    in ``<system-out>``; None (``--fail-on never``) fails nothing.
    """
    data = junit_bytes(report, fail_on)
    if isinstance(out, (io.RawIOBase, io.BufferedIOBase)) or (
        not isinstance(out, io.TextIOBase) and "b" in getattr(out, "mode", "")
    ):
        out.write(data)  # type: ignore[arg-type]
    else:
        out.write(data.decode("ascii"))  # type: ignore[arg-type]

"""``--format junit``: the report as JUnit XML, for GitLab, Jenkins and GitHub test-report actions.

The mapping (``ecosystem.md`` section 2.2):

- one ``<testsuites name="mqtt-keepalive">`` root carrying the totals;
- one ``<testsuite>`` per capture, named by its path; a capture that could not be read (its
  ``error``) gets a ``<testcase name="read capture">`` holding an ``<error>``;
- one ``<testcase>`` per MQTT session, named ``"<client id> <client ip:port> -> <broker ip:port>"``
  (``(no client id)`` when the CONNECT was not seen or the id was empty) with ``classname`` = the
  session id, which is unique in a capture (GitLab keeps only the first of duplicate names); it
  holds the findings of that session id in that capture;
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

The document is written as it is read, one test case at a time, so memory does not grow with the
report (a capture of millions of frames has tens of thousands of sessions): each suite's cases
go to a temporary file first, since the start tags carry the totals, and each capture's findings
are paired with its sessions as both come in stream order (`_joined`).
"""

from __future__ import annotations

import io
import re
import shutil
import tempfile
import xml.etree.ElementTree as ET
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime
from itertools import chain, groupby
from typing import Any, BinaryIO, TextIO

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


def _captures(report: Report) -> list[tuple[str, CaptureSummary | None]]:
    """Every capture in report order, plus any capture only a session or finding names."""
    groups: dict[str, CaptureSummary | None] = {c.path: c for c in report.captures}
    for path in chain((s.capture for s in report.sessions), (f.capture for f in report.findings)):
        groups.setdefault(path, None)
    return list(groups.items())


Case = tuple[str, str, int, list[Finding]]
"""A test case to write: name, classname, time (ns) and its session's findings."""


class _Unordered(Exception):
    """The records are not in the engine's order: they cannot be paired as they come."""


def _joined(sessions: Iterable[Session], findings: Iterable[Finding]) -> Iterator[Case]:
    """One capture's test cases: its sessions in report order, each with the findings of its
    session id, then the findings of no session (never expected), by session id.

    The engine writes both in stream order (`CaptureAnalysis.finish`), and a session id ends in
    its stream number, so the findings of a session are those of its stream, and the two
    sequences are paired as they come: memory stays flat however many there are. Raises
    `_Unordered` when that does not hold (`_grouped` then pairs them)."""
    found = _in_stream_order(findings)
    ahead = next(found, None)
    last_stream = -1
    orphans: dict[str, list[Finding]] = defaultdict(list)
    for stream, group in groupby(sessions, key=lambda s: s.flow.stream_index):
        if stream <= last_stream:
            raise _Unordered
        last_stream = stream
        group = list(group)  # (sessions of one stream: more than one only when it came back)
        if any(not s.session_id.endswith(f"#{stream}") for s in group):
            raise _Unordered
        by_id: dict[str, list[Finding]] = defaultdict(list)
        while ahead is not None and ahead.stream_index <= stream:
            f, ahead = ahead, next(found, None)
            (by_id if f.stream_index == stream else orphans)[f.session_id].append(f)
        for s in group:
            yield _session_case(s, by_id.pop(s.session_id, []))
        for session_id, rest in by_id.items():
            orphans[session_id] += rest
    while ahead is not None:
        orphans[ahead.session_id].append(ahead)
        ahead = next(found, None)
    for session_id in sorted(orphans):
        yield session_id, session_id, 0, orphans[session_id]


def _session_case(s: Session, findings: list[Finding]) -> Case:
    return testcase_name(s), s.session_id, max(s.end_ns - s.start_ns, 0), findings


def _in_stream_order(findings: Iterable[Finding]) -> Iterator[Finding]:
    """`findings`, raising `_Unordered` at one out of stream order or whose session id does not
    end in its stream number."""
    last = -1
    for f in findings:
        if f.stream_index < last or not f.session_id.endswith(f"#{f.stream_index}"):
            raise _Unordered
        last = f.stream_index
        yield f


def _grouped(sessions: Iterable[Session], findings: Iterable[Finding]) -> Iterator[Case]:
    """`_joined`'s cases for records in any order, with every finding of the capture in memory."""
    by_session: dict[str, list[Finding]] = defaultdict(list)
    for f in findings:
        by_session[f.session_id].append(f)
    for s in sessions:
        yield _session_case(s, by_session.pop(s.session_id, []))
    for session_id in sorted(by_session):
        yield session_id, session_id, 0, by_session[session_id]


def _start_tag(tag: str, **attrib: str) -> bytes:
    """`<tag a="...">`, escaped and encoded as ElementTree writes the element."""
    empty = ET.tostring(ET.Element(tag, {k: xml_safe(v) for k, v in attrib.items()}), encoding="us-ascii")
    return empty[:-3] + b">"  # (without " />")


def _case_xml(case: Case, fail_on: Severity | None) -> tuple[bytes, int]:
    """One test case as it stands in the document (indented at its depth), and its failures."""
    name, classname, time_ns, findings = case
    element = _element(ET.Element("cases"), "testcase", name=name, classname=classname,
                       time=_seconds(time_ns))
    ordered = worst_first(findings)
    failing = [f for f in ordered if _fails(f, fail_on)]
    for f in failing:
        _element(element, "failure", failure_text(f), message=failure_message(f), type=f.rule_id)
    below = [f for f in ordered if not _fails(f, fail_on)]
    if below:
        _element(element, "system-out", "\n".join(_below_line(f) for f in below) + "\n")
    return _indented(element), len(failing)


def _indented(case: ET.Element) -> bytes:
    """A test case's XML, indented as at its depth in the document (``ET.indent`` of the whole)."""
    ET.indent(case, level=2)
    return ET.tostring(case, encoding="us-ascii")


def _suite(path: str, summary: CaptureSummary | None, cases: Iterable[Case],
           fail_on: Severity | None, out: BinaryIO) -> tuple[int, int, int, int]:
    """Write one ``<testsuite>``, its cases first to a temporary file (its start tag carries their
    totals); returns (tests, failures, errors, time in ns)."""
    tests = failures = errors = time_ns = 0
    with tempfile.TemporaryFile(prefix="mqtt-keepalive-junit-") as body:
        if summary is not None and summary.error:
            element = _element(ET.Element("cases"), "testcase", name=READ_CAPTURE, classname=path,
                               time=_seconds(0))
            _element(element, "error", summary.error, message=summary.error, type="capture-error")
            body.write(b"\n    " + _indented(element))
            tests, errors = 1, 1
        for case in cases:
            xml, failed = _case_xml(case, fail_on)
            body.write(b"\n    " + xml)
            tests += 1
            failures += failed
            time_ns += case[2]
        tag = _start_tag("testsuite", name=path, tests=str(tests), failures=str(failures),
                         errors=str(errors), skipped="0", time=_seconds(time_ns))
        if not tests:
            out.write(tag[:-1] + b" />")
        else:
            out.write(tag)
            body.seek(0)
            shutil.copyfileobj(body, out)
            out.write(b"\n  </testsuite>")
    return tests, failures, errors, time_ns


def _suites(report: Report, fail_on: Severity | None, out: BinaryIO) -> tuple[int, int, int, int]:
    """Every capture's ``<testsuite>``, each after a newline and its indent; returns the totals.

    The engine writes each capture's records together, captures in report order, so one pass over
    the sessions and one over the findings hand each suite its own (`_ByCapture`), however many
    captures a fleet has. A report in another order (hand-built) raises `_Unordered`; the suites
    are then written again, each from a pass over the whole report and a lookup (`_grouped`)."""
    captures = _captures(report)
    paths = [path for path, _summary in captures]
    try:
        return _write_suites(captures, _ByCapture(report.sessions, paths).take,
                             _ByCapture(report.findings, paths).take, _joined, fail_on, out)
    except _Unordered:
        out.seek(0)
        out.truncate()
        return _write_suites(captures, lambda path: (s for s in report.sessions if s.capture == path),
                             lambda path: (f for f in report.findings if f.capture == path),
                             _grouped, fail_on, out)


def _write_suites(captures: list[tuple[str, CaptureSummary | None]],
                  sessions: Callable[[str], Iterator[Session]], findings: Callable[[str], Iterator[Finding]],
                  pair: Callable[[Iterator[Session], Iterator[Finding]], Iterator[Case]],
                  fail_on: Severity | None, out: BinaryIO) -> tuple[int, int, int, int]:
    totals = [0, 0, 0, 0]
    for path, summary in captures:
        out.write(b"\n  ")
        counts = _suite(path, summary, pair(sessions(path), findings(path)), fail_on, out)
        totals = [a + b for a, b in zip(totals, counts)]
    return totals[0], totals[1], totals[2], totals[3]


class _ByCapture:
    """Records in report order, handed out one capture at a time (`take`, in the order of
    `paths`, each drained before the next): raises `_Unordered` when a capture's records are not
    all together, or not in that order."""

    def __init__(self, records: Iterable[Any], paths: list[str]) -> None:
        self._records = iter(records)
        self._ahead = next(self._records, None)
        self._rank = {path: i for i, path in enumerate(paths)}

    def take(self, path: str) -> Iterator[Any]:
        while self._ahead is not None and self._ahead.capture == path:
            record, self._ahead = self._ahead, next(self._records, None)
            yield record
        if self._ahead is not None and self._rank[self._ahead.capture] <= self._rank[path]:
            raise _Unordered


def write_junit(report: Report, fail_on: Severity | None, out: BinaryIO) -> None:
    """The whole document to a binary stream: a UTF-8 declaration, then ASCII-only XML, then a
    newline. The suites go to a temporary file first (the root's start tag carries their totals),
    so memory does not grow with the report: every session's test case is written as it comes.
    A test case has its session's findings, worst first: ``<failure>`` for those at or above
    ``fail_on`` (None: none), the others listed in its ``<system-out>``."""
    with tempfile.TemporaryFile(prefix="mqtt-keepalive-junit-") as suites:
        tests, failures, errors, time_ns = _suites(report, fail_on, suites)
        root = _start_tag("testsuites", name=TOOL_NAME, tests=str(tests), failures=str(failures),
                          errors=str(errors), time=_seconds(time_ns))
        out.write(XML_DECLARATION.encode("ascii"))
        if not suites.tell():
            out.write(root[:-1] + b" />\n")
            return
        out.write(root)
        suites.seek(0)
        shutil.copyfileobj(suites, out)
        out.write(b"\n</testsuites>\n")


def junit_bytes(report: Report, fail_on: Severity | None) -> bytes:
    """The whole document (`write_junit`) as bytes."""
    out = io.BytesIO()
    write_junit(report, fail_on, out)
    return out.getvalue()


def render_junit(report: Report, fail_on: Severity | None, out: BinaryIO | TextIO) -> None:
    """Write the report as JUnit XML to a binary or a text stream (the bytes are ASCII either way).

    ``fail_on`` decides which findings are ``<failure>`` (at or above it) and which are only listed
    in ``<system-out>``; None (``--fail-on never``) fails nothing.
    """
    if isinstance(out, (io.RawIOBase, io.BufferedIOBase)) or (
        not isinstance(out, io.TextIOBase) and "b" in getattr(out, "mode", "")
    ):
        write_junit(report, fail_on, out)  # type: ignore[arg-type]
        return
    with tempfile.TemporaryFile(prefix="mqtt-keepalive-junit-") as data:
        write_junit(report, fail_on, data)
        data.seek(0)
        while chunk := data.read(1 << 20):
            out.write(chunk.decode("ascii"))

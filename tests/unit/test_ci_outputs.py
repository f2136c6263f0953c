"""CI outputs of the ``check`` gate: JUnit XML, GitHub annotations and summary, clients table.

Most reports here come from analysing the shipped captures (``captures/README.md`` says what each
one shows), so the outputs are tested on what the pipeline really produces; the exact-text tests
use small hand-built reports so that they do not depend on the wording of the checks.

JUnit XML is read back with junitparser (a JUnit reader independent of ElementTree, the writer)
and validated against the JUnit schema Jenkins' xunit plugin ships (``junit-10.xsd``) with lxml.
"""

from __future__ import annotations

import dataclasses
import io
import re
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from junitparser import Error as JUnitError
from junitparser import Failure, JUnitXml
from lxml import etree

from analyzer import analyze
from analyzer.model import (
    CaptureSummary,
    EndReason,
    Endpoint,
    Finding,
    FlowKey,
    KeepAliveSource,
    Report,
    Session,
    Severity,
)
from analyzer.report import render
from analyzer.report.csv import render_csv
from analyzer.report.github import (
    annotations,
    escape_data,
    escape_property,
    render_github,
    step_summary,
)
from analyzer.report import junit
from analyzer.report.junit import junit_bytes, render_junit
from analyzer.report.tables import CLIENT_COLUMNS, clients_frame

CAPTURES = Path(__file__).resolve().parents[2] / "captures"
S = 1_000_000_000
HOSTILE_ID = 'a\x01<b>&"'
HOSTILE_ID_XML = 'a<b>&"'
"""What survives of HOSTILE_ID in XML: \\x01 is not an XML 1.0 character, the rest is escaped."""


def cap(name: str) -> str:
    return str(CAPTURES / f"{name}.pcap")


@pytest.fixture(scope="module")
def mixed() -> Report:
    """One error capture, one warnings-only capture, one clean capture, in one analysis."""
    return analyze([cap("silent-client"), cap("late-pinger"), cap("compliant-pinger")])


@pytest.fixture(scope="module")
def silent12() -> Report:
    """silent-client analysed twelve times: twelve KA102 errors and twice as many warnings."""
    return analyze([cap("silent-client")] * 12)


def counts_at_or_above(findings: tuple[Finding, ...], fail_on: Severity | None) -> int:
    return sum(1 for f in findings if fail_on is not None and f.severity >= fail_on)


# -- hand-built records ---------------------------------------------------------------------------


def make_session(**changes: Any) -> Session:
    client_ip = changes.pop("client_ip", "10.0.0.7")
    port = changes.pop("client_port", 40000)
    stream = changes.pop("stream", 0)
    fields: dict[str, Any] = dict(
        session_id=f"t.pcap#{stream}", capture="caps/t.pcap",
        flow=FlowKey(Endpoint(client_ip, port), Endpoint("10.0.0.1", 1883), stream),
        client_id="dev-1", protocol_level=4, keep_alive_s=2, server_keep_alive_s=None,
        effective_keep_alive_s=2, keep_alive_source=KeepAliveSource.CONNECT, connect_frame=4,
        start_ns=1_795_640_000 * S, end_ns=1_795_640_010 * S + 250_000_000,
        end_reason=EndReason.CLIENT_DISCONNECT, end_frame=30, client_packets=9,
        server_packets=8, pingreq=2, pingresp=2, max_gap_ns=2 * S,
    )
    fields.update(changes)
    return Session(**fields)


def make_finding(**changes: Any) -> Finding:
    fields: dict[str, Any] = dict(
        rule_id="KA102", rule="client-deadline-exceeded", severity=Severity.ERROR, side="client",
        session_id="t.pcap#0", capture="caps/t.pcap", client_id="dev-1", frames=(4, 8),
        ts_ns=1_795_640_005 * S, stream_index=0,
        message="client silent for 5.409 s; the broker deadline is 3 s (1.5 x 2 s)",
        spec=("MQTT-3.1.2-24",), gap_s=5.409, limit_s=3.0, keep_alive_s=2,
    )
    fields.update(changes)
    return Finding(**fields)


def capture_summary(path: str = "caps/t.pcap", **changes: Any) -> CaptureSummary:
    fields: dict[str, Any] = dict(path=path, format="pcap", linktypes=(1,), frames=30, bytes=3000,
                                  tcp_streams=1, mqtt_sessions=1)
    fields.update(changes)
    return CaptureSummary(**fields)


def with_client_id(report: Report, client_id: str) -> Report:
    """``report`` with every session's and finding's client id replaced."""
    return dataclasses.replace(
        report,
        sessions=tuple(dataclasses.replace(s, client_id=client_id) for s in report.sessions),
        findings=tuple(dataclasses.replace(f, client_id=client_id) for f in report.findings),
    )


# -- JUnit ----------------------------------------------------------------------------------------

JUNIT_XSD = """<?xml version="1.0" encoding="UTF-8"?>
<!-- junit-10.xsd of Jenkins' xunit plugin (jenkinsci/xunit-plugin,
     src/main/resources/org/jenkinsci/plugins/xunit/types/model/xsd/junit-10.xsd),
     Copyright (c) 2014 Gregory Boissinot, MIT License; copied unchanged but for this comment. -->
<xs:schema xmlns:xs="http://www.w3.org/2001/XMLSchema">
    <xs:simpleType name="SUREFIRE_TIME">
        <xs:restriction base="xs:string">
            <xs:pattern value="(([0-9]{0,3},)*[0-9]{3}|[0-9]{0,3})*(\\.[0-9]*)?"/>
        </xs:restriction>
    </xs:simpleType>
    <xs:complexType name="rerunType" mixed="true">
        <xs:sequence>
            <xs:element name="stackTrace" type="xs:string" minOccurs="0" />
            <xs:element name="system-out" type="xs:string" minOccurs="0" />
            <xs:element name="system-err" type="xs:string" minOccurs="0" />
        </xs:sequence>
        <xs:attribute name="message" type="xs:string" />
        <xs:attribute name="type" type="xs:string" use="required" />
    </xs:complexType>
    <xs:element name="failure">
        <xs:complexType mixed="true">
            <xs:attribute name="type" type="xs:string"/>
            <xs:attribute name="message" type="xs:string"/>
        </xs:complexType>
    </xs:element>
    <xs:element name="error">
        <xs:complexType mixed="true">
            <xs:attribute name="type" type="xs:string"/>
            <xs:attribute name="message" type="xs:string"/>
        </xs:complexType>
    </xs:element>
    <xs:element name="skipped">
        <xs:complexType mixed="true">
            <xs:attribute name="type" type="xs:string"/>
            <xs:attribute name="message" type="xs:string"/>
        </xs:complexType>
    </xs:element>
    <xs:element name="properties">
        <xs:complexType>
            <xs:sequence>
                <xs:element ref="property" minOccurs="0" maxOccurs="unbounded"/>
            </xs:sequence>
        </xs:complexType>
    </xs:element>
    <xs:element name="property">
        <xs:complexType>
            <xs:attribute name="name" type="xs:string" use="required"/>
            <xs:attribute name="value" type="xs:string" use="required"/>
        </xs:complexType>
    </xs:element>
    <xs:element name="system-err" type="xs:string"/>
    <xs:element name="system-out" type="xs:string"/>
    <xs:element name="rerunFailure" type="rerunType"/>
    <xs:element name="rerunError" type="rerunType"/>
    <xs:element name="flakyFailure" type="rerunType"/>
    <xs:element name="flakyError" type="rerunType"/>
    <xs:element name="testcase">
        <xs:complexType>
            <xs:sequence>
                <xs:choice minOccurs="0" maxOccurs="unbounded">
                    <xs:element ref="skipped"/>
                    <xs:element ref="error"/>
                    <xs:element ref="failure"/>
                    <xs:element ref="rerunFailure" minOccurs="0" maxOccurs="unbounded"/>
                    <xs:element ref="rerunError" minOccurs="0" maxOccurs="unbounded"/>
                    <xs:element ref="flakyFailure" minOccurs="0" maxOccurs="unbounded"/>
                    <xs:element ref="flakyError" minOccurs="0" maxOccurs="unbounded"/>
                    <xs:element ref="system-out"/>
                    <xs:element ref="system-err"/>
                </xs:choice>
            </xs:sequence>
            <xs:attribute name="name" type="xs:string" use="required"/>
            <xs:attribute name="time" type="xs:string"/>
            <xs:attribute name="classname" type="xs:string"/>
            <xs:attribute name="group" type="xs:string"/>
        </xs:complexType>
    </xs:element>
    <xs:element name="testsuite">
        <xs:complexType>
            <xs:choice minOccurs="0" maxOccurs="unbounded">
                <xs:element ref="testsuite"/>
                <xs:element ref="properties"/>
                <xs:element ref="testcase"/>
                <xs:element ref="system-out"/>
                <xs:element ref="system-err"/>
            </xs:choice>
            <xs:attribute name="name" type="xs:string" use="required"/>
            <xs:attribute name="tests" type="xs:string" use="required"/>
            <xs:attribute name="failures" type="xs:string" use="required"/>
            <xs:attribute name="errors" type="xs:string" use="required"/>
            <xs:attribute name="group" type="xs:string" />
            <xs:attribute name="time" type="SUREFIRE_TIME"/>
            <xs:attribute name="skipped" type="xs:string" />
            <xs:attribute name="timestamp" type="xs:string" />
            <xs:attribute name="hostname" type="xs:string" />
            <xs:attribute name="id" type="xs:string" />
            <xs:attribute name="package" type="xs:string" />
            <xs:attribute name="file" type="xs:string"/>
            <xs:attribute name="log" type="xs:string"/>
            <xs:attribute name="url" type="xs:string"/>
        </xs:complexType>
    </xs:element>
    <xs:element name="testsuites">
        <xs:complexType>
            <xs:sequence>
                <xs:element ref="testsuite" minOccurs="0" maxOccurs="unbounded" />
            </xs:sequence>
            <xs:attribute name="name" type="xs:string" />
            <xs:attribute name="time" type="SUREFIRE_TIME"/>
            <xs:attribute name="tests" type="xs:string" />
            <xs:attribute name="failures" type="xs:string" />
            <xs:attribute name="errors" type="xs:string" />
        </xs:complexType>
    </xs:element>
</xs:schema>
"""

REQUIRED_ATTRIBUTES = {
    "testsuite": ("name", "tests", "failures", "errors", "skipped", "time"),
    "testcase": ("name", "classname", "time"),
}
"""What the Ant schema, Jenkins' junit step and GitLab rely on beyond junit-10.xsd's minimum."""


def junit_of(report: Report, fail_on: Severity | None = Severity.ERROR) -> bytes:
    out = io.BytesIO()
    render_junit(report, fail_on, out)
    return out.getvalue()


def assert_valid_junit(data: bytes) -> etree._Element:
    """Well-formed, valid against junit-10.xsd, and carrying every attribute CI servers read."""
    schema = etree.XMLSchema(etree.fromstring(JUNIT_XSD.encode()))
    root = etree.fromstring(data)
    schema.assertValid(root)
    for tag, names in REQUIRED_ATTRIBUTES.items():
        for node in root.iter(tag):
            missing = [name for name in names if node.get(name) is None]
            assert not missing, f"<{tag} name={node.get('name')!r}> lacks {missing}"
    for node in root.iter("testsuites", "testsuite", "testcase"):
        assert re.fullmatch(r"\d+\.\d{3}", node.get("time", "")), node.get("time")
    return root


def read_junit(data: bytes) -> JUnitXml:
    return JUnitXml.fromfile(io.BytesIO(data))


def test_junit_counts_names_and_failures(mixed: Report) -> None:
    data = junit_of(mixed, Severity.ERROR)
    assert_valid_junit(data)
    xml = read_junit(data)
    assert xml.name == "mqtt-keepalive"
    suites = list(xml)
    assert [s.name for s in suites] == [c.path for c in mixed.captures]
    assert xml.tests == len(mixed.sessions)
    assert xml.failures == counts_at_or_above(mixed.findings, Severity.ERROR) >= 1
    assert xml.errors == 0
    for suite, capture in zip(suites, mixed.captures, strict=True):
        sessions = [s for s in mixed.sessions if s.capture == capture.path]
        findings = tuple(f for f in mixed.findings if f.capture == capture.path)
        assert (suite.tests, suite.failures, suite.errors, suite.skipped) == (
            len(sessions), counts_at_or_above(findings, Severity.ERROR), 0, 0)
        cases = list(suite)
        assert [c.classname for c in cases] == [s.session_id for s in sessions]
        for case, s in zip(cases, sessions, strict=True):
            assert case.name == f"{s.client_id} {s.flow.client} -> {s.flow.server}"
            assert case.time == pytest.approx((s.end_ns - s.start_ns) / S, abs=1e-3)
    # The totals written are the totals a JUnit reader recomputes from the test cases.
    written = (xml.tests, xml.failures, xml.errors, xml.skipped)
    xml.update_statistics()
    assert (xml.tests, xml.failures, xml.errors, xml.skipped) == written


def test_junit_failure_carries_the_evidence(mixed: Report) -> None:
    xml = read_junit(junit_of(mixed, Severity.ERROR))
    suite = next(s for s in xml if s.name.endswith("silent-client.pcap"))
    (case,) = list(suite)
    assert re.fullmatch(r"ka-silent-client 127\.0\.0\.1:\d+ -> 127\.0\.0\.1:1883", case.name)
    assert case.classname == "silent-client.pcap#0"
    failures = [r for r in case.result if isinstance(r, Failure)]
    ka102 = next(f for f in mixed.findings if f.rule_id == "KA102")
    (failure,) = [f for f in failures if f.type == "KA102"]
    assert failure.message == f"KA102 client-deadline-exceeded: {ka102.message}"
    assert failure.message.startswith("KA102 client-deadline-exceeded: client silent for 5.4")
    lines = dict(line.split(": ", 1) for line in failure.text.strip().splitlines())
    assert lines["capture"] == cap("silent-client")
    assert lines["frames"] == "4-8"
    assert lines["gap"] == "5.409 s" and lines["limit"] == "3 s" and lines["keep-alive"] == "2 s"
    assert lines["spec"] == ", ".join(ka102.spec) and "MQTT-3.1.2-24" in lines["spec"]
    assert lines["wireshark filter"] == "frame.number >= 4 && frame.number <= 8 && tcp.stream == 0"
    assert lines["time"].endswith("Z")
    at = datetime.fromisoformat(lines["time"])
    offset = at.utcoffset()
    assert offset is not None and offset.total_seconds() == 0
    expected = datetime.fromtimestamp(ka102.ts_ns // S, tz=UTC)
    assert abs((at - expected).total_seconds() - (ka102.ts_ns % S) / S) < 1e-6
    # The warnings of the same session are below --fail-on error: listed, not failed.
    assert len(failures) == counts_at_or_above(
        tuple(f for f in mixed.findings if f.session_id == "silent-client.pcap#0"), Severity.ERROR)
    assert "KA101 client-interval-exceeded: " in case.system_out
    assert "KA201 broker-deadline-not-enforced: " in case.system_out


def test_junit_fail_on_decides_failure_or_system_out(mixed: Report) -> None:
    warnings = read_junit(junit_of(mixed, Severity.WARNING))
    errors = read_junit(junit_of(mixed, Severity.ERROR))
    never = read_junit(junit_of(mixed, None))
    assert warnings.failures == counts_at_or_above(mixed.findings, Severity.WARNING)
    assert never.failures == 0 and never.tests == len(mixed.sessions)

    def late(xml: JUnitXml) -> Any:
        return next(iter(next(s for s in xml if s.name.endswith("late-pinger.pcap"))))

    late_warnings = [f for f in mixed.findings if f.capture.endswith("late-pinger.pcap")]
    assert late_warnings and all(f.severity == Severity.WARNING for f in late_warnings)
    assert len(late(warnings).result) == len(late_warnings)
    assert {r.type for r in late(warnings).result} == {"KA101"}
    assert late(errors).is_passed and late(errors).result == []
    assert late(errors).system_out.count("KA101 client-interval-exceeded") == len(late_warnings)
    compliant = next(iter(next(s for s in errors if s.name.endswith("compliant-pinger.pcap"))))
    assert compliant.is_passed


def test_junit_text_and_binary_streams_get_the_same_document(mixed: Report) -> None:
    text = io.StringIO()
    render_junit(mixed, Severity.ERROR, text)
    data = junit_of(mixed, Severity.ERROR)
    assert text.getvalue().encode("ascii") == data == junit_bytes(mixed, Severity.ERROR)
    assert data.startswith(b'<?xml version="1.0" encoding="UTF-8"?>\n<testsuites')


def test_junit_clean_report_still_writes_a_file(tmp_path: Path) -> None:
    report = analyze([cap("compliant-pinger")])
    assert report.exit_code(Severity.WARNING) == 0
    path = tmp_path / "junit.xml"
    with path.open("wb") as fh:
        render_junit(report, Severity.WARNING, fh)
    assert_valid_junit(path.read_bytes())
    xml = JUnitXml.fromfile(str(path))
    assert (xml.tests, xml.failures, xml.errors) == (1, 0, 0)
    (case,) = list(next(iter(xml)))
    assert case.is_passed and case.name.startswith("ka-compliant-pinger ")


def test_junit_report_without_sessions() -> None:
    no_sessions = Report((capture_summary(mqtt_sessions=0), capture_summary("caps/u.pcap")), (), ())
    data = junit_of(no_sessions)
    assert_valid_junit(data)
    xml = read_junit(data)
    assert [(s.name, s.tests, s.failures, s.errors) for s in xml] == [
        ("caps/t.pcap", 0, 0, 0), ("caps/u.pcap", 0, 0, 0)]
    empty = junit_of(Report((), (), ()))
    root = assert_valid_junit(empty)
    assert (root.tag, root.get("tests"), len(root)) == ("testsuites", "0", 0)


def test_junit_unreadable_capture_is_an_error_case(tmp_path: Path) -> None:
    junk = tmp_path / "junk.pcap"
    junk.write_bytes(b"this is not a capture at all" * 4)
    report = analyze([str(junk), cap("compliant-pinger")])
    assert any(c.error for c in report.captures)
    data = junit_of(report)
    assert_valid_junit(data)
    xml = read_junit(data)
    bad = next(s for s in xml if s.name == str(junk))
    (case,) = list(bad)
    assert case.name == "read capture"
    (error,) = case.result
    assert isinstance(error, JUnitError)
    assert error.message == next(c.error for c in report.captures if c.path == str(junk))
    assert (bad.tests, bad.errors, bad.failures) == (1, 1, 0)
    assert (xml.tests, xml.errors) == (1 + len(report.sessions), 1)


def test_junit_hostile_client_id_round_trips(mixed: Report) -> None:
    hostile = with_client_id(mixed, HOSTILE_ID)
    data = junit_of(hostile, Severity.WARNING)
    assert data.isascii()
    assert_valid_junit(data)
    xml = read_junit(data)
    names = [case.name for suite in xml for case in suite]
    assert len(names) == len(mixed.sessions)
    assert all(name.startswith(HOSTILE_ID_XML + " 127.0.0.1:") for name in names)
    failure = next(r for suite in xml for case in suite for r in case.result)
    assert f"client id: {HOSTILE_ID_XML}\n" in failure.text


@pytest.mark.parametrize("value", [
    "\x00\x1b[31m\x7f", "\ud800lone surrogate", "\ufffe\uffff", "caf\u00e9 \U0001f600", "]]>",
    "tab\tnew\nline\rcr",
])
def test_junit_any_string_survives(value: str) -> None:
    report = Report(
        (capture_summary(f"caps/{value}.pcap", error=f"unreadable {value}"),),
        (make_session(client_id=value, capture=f"caps/{value}.pcap"),),
        (make_finding(client_id=value, capture=f"caps/{value}.pcap", message=value),),
    )
    data = junit_of(report)
    assert data.isascii()
    assert_valid_junit(data)
    xml = read_junit(data)
    assert (xml.tests, xml.failures, xml.errors) == (2, 1, 1)


def test_junit_orphan_finding_is_not_dropped() -> None:
    report = Report((capture_summary(),), (), (make_finding(session_id="t.pcap#9"),))
    xml = read_junit(junit_of(report))
    (case,) = list(next(iter(xml)))
    assert case.classname == "t.pcap#9" and xml.failures == 1


def test_registry_renders_junit(mixed: Report) -> None:
    out = io.StringIO()
    render(mixed, "junit", out, Severity.ERROR)
    assert out.getvalue().encode() == junit_bytes(mixed, Severity.ERROR)


def case_findings(data: bytes) -> list[tuple[str, str, list[str]]]:
    """(suite, classname, the failure messages and system-out lines) of every test case."""
    out = []
    for suite in etree.fromstring(data):
        for case in suite:
            told = [f.get("message") for f in case.iter("failure")]
            told += [line for s in case.iter("system-out") for line in (s.text or "").splitlines()]
            out.append((suite.get("name"), case.get("classname"), told))
    return out


def test_junit_pairs_findings_as_they_come_in_the_engines_order(mixed: Report) -> None:
    """Sessions and findings come in stream order from the engine: each capture's are paired as
    they come (no capture's findings held at once), and the cases are the ones a lookup of every
    finding by session id gives."""
    assert mixed.findings
    for capture in mixed.captures:
        sessions = [s for s in mixed.sessions if s.capture == capture.path]
        findings = [f for f in mixed.findings if f.capture == capture.path]
        joined = list(junit._joined(sessions, findings))
        assert joined == list(junit._grouped(sessions, findings))
        assert sum(len(case[3]) for case in joined) == len(findings)
    # Out of that order, the whole capture is looked up instead: the same cases come out.
    sessions = tuple(make_session(stream=i, client_port=40000 + i) for i in range(3))
    findings = tuple(make_finding(session_id=f"t.pcap#{i}", stream_index=i, ts_ns=(1_795_640_005 + i) * S,
                                  frames=(4 + i, 8 + i)) for i in (0, 1, 1, 2))
    ordered = Report((capture_summary(),), sessions, findings)
    shuffled = dataclasses.replace(ordered, findings=tuple(reversed(findings)))
    with pytest.raises(junit._Unordered):
        list(junit._joined(shuffled.sessions, shuffled.findings))
    cases = case_findings(junit_of(ordered))
    assert [len(told) for _suite, _case, told in cases] == [1, 2, 1]
    assert case_findings(junit_of(shuffled)) == cases
    assert_valid_junit(junit_of(shuffled))


class Counted(list):  # type: ignore[type-arg]
    """A report's records that count how often they are read through."""

    passes = 0

    def __iter__(self):  # type: ignore[no-untyped-def]
        self.passes += 1
        return super().__iter__()


def test_junit_reads_a_fleet_report_in_one_pass(mixed: Report) -> None:
    """Each capture's records come together, in report order: the document is written from one
    pass over the sessions and one over the findings (after the one that lists the captures),
    not one per capture. Out of that order (a hand-built report), it is the same document."""
    sessions, findings = Counted(mixed.sessions), Counted(mixed.findings)
    assert len(mixed.captures) == 3 and len(sessions) == 3
    counted = dataclasses.replace(mixed, sessions=sessions, findings=findings)
    assert junit_of(counted) == junit_of(mixed)
    assert (sessions.passes, findings.passes) == (2, 2)
    swapped = dataclasses.replace(mixed, sessions=(sessions[1], sessions[0], sessions[2]))
    assert junit_of(swapped) == junit_of(mixed)


@pytest.mark.parametrize("clean_first", [True, False])
def test_findings_stay_with_their_own_capture(tmp_path: Path, clean_first: bool) -> None:
    """Two captures with the same file name (so the same session ids) in two directories: in
    JUnit each suite's test cases, and in the clients table each client, carry that capture's
    findings, not the other's, whichever comes first."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    late = tmp_path / "a" / "device.pcap"
    clean = tmp_path / "b" / "device.pcap"
    late.write_bytes(Path(cap("silent-client")).read_bytes())
    clean.write_bytes(Path(cap("compliant-pinger")).read_bytes())
    report = analyze([str(clean), str(late)] if clean_first else [str(late), str(clean)])
    assert {s.session_id for s in report.sessions if s.capture == str(late)} & {
        s.session_id for s in report.sessions if s.capture == str(clean)}
    found = [f for f in report.findings if f.capture == str(late)]
    assert found and len(found) == len(report.findings)
    data = junit_of(report, Severity.WARNING)
    assert_valid_junit(data)
    suites = {suite.name: suite for suite in read_junit(data)}
    assert (suites[str(late)].failures, suites[str(clean)].failures) == (len(found), 0)
    assert all(not told for suite, _case, told in case_findings(data) if suite == str(clean))
    clients = clients_frame(report).set_index("client_id")
    assert clients.loc["ka-silent-client", "findings"] == len(found)
    assert clients.loc["ka-compliant-pinger", "findings"] == 0


# -- GitHub annotations ---------------------------------------------------------------------------

SMALL = Report(
    (capture_summary(),),
    (make_session(),),
    (
        make_finding(rule_id="KA101", rule="client-interval-exceeded", severity=Severity.WARNING,
                     message="client sent no control packet for 2.6 s", frames=(8, 11),
                     ts_ns=1_795_640_003 * S),
        make_finding(),
        make_finding(rule_id="KA301", rule="keep-alive-disabled", severity=Severity.INFO,
                     message="Keep Alive is 0", frames=(4, 4), ts_ns=1_795_640_001 * S),
    ),
)

SMALL_ERROR = (
    "::error file=caps/t.pcap,title=KA102 client-deadline-exceeded::client silent for 5.409 s; "
    "the broker deadline is 3 s (1.5 x 2 s) (frames 4-8, filter: frame.number >= 4 && "
    "frame.number <= 8 && tcp.stream == 0)"
)
SMALL_WARNING = (
    "::warning file=caps/t.pcap,title=KA101 client-interval-exceeded::client sent no control "
    "packet for 2.6 s (frames 8-11, filter: frame.number >= 8 && frame.number <= 11 && "
    "tcp.stream == 0)"
)
SMALL_NOTICE = (
    "::notice file=caps/t.pcap,title=KA301 keep-alive-disabled::Keep Alive is 0 (frame 4, "
    "filter: frame.number >= 4 && frame.number <= 4 && tcp.stream == 0)"
)


def test_annotations_exact_lines_worst_first() -> None:
    assert annotations(SMALL, Severity.ERROR) == [SMALL_ERROR, SMALL_WARNING]
    assert annotations(SMALL, None) == [SMALL_ERROR, SMALL_WARNING]
    assert annotations(SMALL, Severity.INFO) == [SMALL_ERROR, SMALL_WARNING, SMALL_NOTICE]


def test_annotations_of_a_real_capture(mixed: Report) -> None:
    lines = annotations(mixed, Severity.ERROR)
    by_kind = Counter(line.split(" ", 1)[0] for line in lines)
    severities = Counter(f.severity for f in mixed.findings)
    assert by_kind == {"::error": severities[Severity.ERROR],
                       "::warning": severities[Severity.WARNING]}
    assert lines[0].startswith(
        f"::error file={cap('silent-client')},title=KA102 client-deadline-exceeded::"
        "client silent for 5.4")
    assert lines[0].endswith(
        " (frames 4-8, filter: frame.number >= 4 && frame.number <= 8 && tcp.stream == 0)")
    kinds = [line.split(" ", 1)[0] for line in lines]
    assert kinds == sorted(kinds, key=["::error", "::warning"].index)
    assert not any(line.startswith("::notice") for line in annotations(analyze(
        [cap("compliant-pinger")]), Severity.ERROR))


def test_escaping_rules() -> None:
    assert escape_data("50% a:b, c\r\nd") == "50%25 a:b, c%0D%0Ad"
    assert escape_property("50% a:b, c\r\nd") == "50%25 a%3Ab%2C c%0D%0Ad"
    report = Report((), (), (make_finding(capture="C:\\caps\\a,b%.pcap", rule="x:y,z",
                                          message="100%\r\n::error::injected", frames=(3, 3)),))
    assert annotations(report, Severity.ERROR) == [
        "::error file=C%3A\\caps\\a%2Cb%25.pcap,title=KA102 x%3Ay%2Cz::"
        "100%25%0D%0A::error::injected (frame 3, filter: frame.number >= 3 && "
        "frame.number <= 3 && tcp.stream == 0)"]


def test_annotations_cap_ten_per_kind_with_a_more_notice(silent12: Report) -> None:
    severities = Counter(f.severity for f in silent12.findings)
    errors, warnings = severities[Severity.ERROR], severities[Severity.WARNING]
    assert errors == 12 and warnings > 10
    lines = annotations(silent12, Severity.ERROR)
    assert len(lines) == 21
    assert all(line.startswith("::error ") for line in lines[:10])
    assert all(line.startswith("::warning ") for line in lines[10:20])
    assert lines[-1] == (f"::notice::2 more errors and {warnings - 10} more warnings not shown as "
                         "annotations; see the report")
    small = annotations(silent12, Severity.ERROR, limit_per_kind=3)
    assert small[-1] == (f"::notice::9 more errors and {warnings - 3} more warnings not shown as "
                         "annotations; see the report")
    three = analyze([cap("silent-client")] * 3)
    within = annotations(three, Severity.ERROR)
    assert len(within) == 3 + 3 * (warnings // 12) <= 20
    assert not within[-1].startswith("::notice")


def test_annotations_keep_the_more_notice_visible_among_notices() -> None:
    infos = tuple(make_finding(rule_id="KA301", rule="keep-alive-disabled", severity=Severity.INFO,
                               message=f"info {i}", ts_ns=(1_795_640_000 + i) * S)
                  for i in range(12))
    errors = tuple(make_finding(message=f"error {i}", ts_ns=(1_795_640_000 + i) * S)
                   for i in range(11))
    lines = annotations(Report((), (), infos + errors), Severity.INFO)
    notices = [line for line in lines if line.startswith("::notice")]
    assert len(notices) == 10 and len(lines) == 10 + 10
    assert lines[-1] == ("::notice::1 more error, 0 more warnings and 3 more info not shown as "
                         "annotations; see the report")
    # Notices alone within the limit: no note at all.
    assert len(annotations(Report((), (), infos[:10]), Severity.INFO)) == 10


def test_annotations_name_unreadable_captures_first(tmp_path: Path) -> None:
    junk = tmp_path / "junk.pcap"
    junk.write_bytes(b"not a capture" * 10)
    report = analyze([cap("silent-client"), str(junk)])
    lines = annotations(report, Severity.ERROR)
    assert lines[0].startswith(f"::error file={junk},title=capture not read::")
    assert lines[1].startswith("::error file=") and "title=KA102" in lines[1]


# -- GitHub job summary ---------------------------------------------------------------------------


def test_step_summary_markdown(mixed: Report) -> None:
    text = step_summary(mixed, Severity.ERROR)
    lines = text.splitlines()
    assert lines[0] == "## mqtt-keepalive: failed: findings at or above error (exit 1)"
    assert "### Findings by rule" in lines and "### Clients (worst first)" in lines
    rules = lines.index("### Findings by rule")
    assert lines[rules + 2] == "| Rule | Name | Severity | Count |"
    by_rule = Counter((f.rule_id, f.rule, f.severity.label) for f in mixed.findings)
    rows = [line for line in lines[rules + 4:] if line.startswith("| KA")]
    assert len(rows) == len(by_rule)
    assert rows[0].startswith("| KA102 | client-deadline-exceeded | error | ")
    for (rule_id, rule, severity), n in by_rule.items():
        assert f"| {rule_id} | {rule} | {severity} | {n} |" in rows
    clients = lines.index("### Clients (worst first)")
    assert lines[clients + 2] == ("| Client | Sessions | Captures | K (s) | Max gap / K | "
                                  "p95 gap / K | Findings | Errors | Warnings |")
    client_rows = lines[clients + 4:]
    assert [row.split(" | ")[0] for row in client_rows] == [
        "| ka-silent-client", "| ka-late-pinger", "| ka-compliant-pinger"]
    assert client_rows[1].startswith("| ka-late-pinger | 1 | 1 | 2 | 1.30 | 1.30 | 4 | 0 | 4 |")
    assert step_summary(analyze([cap("compliant-pinger")]), Severity.WARNING).startswith(
        "## mqtt-keepalive: passed (exit 0)\n")


def test_step_summary_caps_clients_and_escapes_ids() -> None:
    sessions = tuple(make_session(session_id=f"t.pcap#{i}", client_id=f"dev-{i:02d}", stream=i)
                     for i in range(55))
    hostile = make_session(session_id="t.pcap#99", client_id="x|y*z<b>[l](u)\n", stream=99)
    findings = (make_finding(session_id="t.pcap#99", client_id=hostile.client_id),)
    text = step_summary(Report((capture_summary(),), (hostile, *sessions), findings),
                        Severity.ERROR)
    lines = text.splitlines()
    clients = lines.index("### Clients (worst first)")
    rows = [line for line in lines[clients:] if line.startswith("| ") and "---" not in line][1:]
    assert len(rows) == 50
    assert rows[0].startswith("| x\\|y\\*z\\<b\\>\\[l\\](u)\\\\x0a | 1 | 1 | 2 | 1.00 | ")
    assert lines[-1] == "... 6 more clients (see the report)"
    assert all(row.count(" | ") == 8 for row in rows)


def test_step_summary_of_an_empty_report() -> None:
    text = step_summary(Report((), (), ()), Severity.ERROR)
    assert text.startswith("## mqtt-keepalive: passed (exit 0)\n")
    assert "No findings." in text and "No sessions." in text


def test_render_github_appends_the_summary(mixed: Report, tmp_path: Path) -> None:
    summary = tmp_path / "step_summary.md"
    summary.write_text("# an earlier step\n", encoding="utf-8")
    out = io.StringIO()
    render_github(mixed, Severity.ERROR, out, str(summary))
    assert out.getvalue() == "".join(line + "\n" for line in annotations(mixed, Severity.ERROR))
    assert summary.read_text(encoding="utf-8") == (
        "# an earlier step\n" + step_summary(mixed, Severity.ERROR))
    out2 = io.StringIO()
    render(mixed, "github", out2, Severity.ERROR, summary_path=None)
    assert out2.getvalue() == out.getvalue()
    assert summary.read_text(encoding="utf-8").count("## mqtt-keepalive") == 1


# -- clients table --------------------------------------------------------------------------------


def test_clients_frame_of_real_captures() -> None:
    report = analyze([cap(n) for n in ("compliant-pinger", "silent-client", "late-pinger",
                                       "keep-alive-zero", "mid-stream", "no-pingresp")])
    frame = clients_frame(report)
    assert list(frame.columns) == list(CLIENT_COLUMNS)
    assert {c: str(t) for c, t in frame.dtypes.items()} == CLIENT_COLUMNS
    assert len(frame) == len(report.sessions)
    key = frame[["errors", "warnings", "max_gap_over_k"]].astype("float64").fillna(-1.0)
    assert list(map(tuple, key.to_numpy())) == sorted(map(tuple, key.to_numpy()), reverse=True)
    rows = frame.set_index("client_id")
    assert rows.loc["ka-compliant-pinger", "findings"] == 0
    assert rows.loc["ka-late-pinger", "warnings"] == 4
    assert rows.loc["ka-late-pinger", "keep_alive_s"] == "2"
    assert rows.loc["ka-late-pinger", "max_gap_over_k"] == pytest.approx(1.3, abs=1e-3)
    assert rows.loc["ka-silent-client", "errors"] >= 1
    assert rows.index[0] in ("ka-silent-client", "ka-no-pingresp")
    # K = 0 and unknown K: counted, never a ratio.
    assert rows.loc["ka-keep-alive-zero", "keep_alive_s"] == "0"
    assert pd.isna(rows.loc["ka-keep-alive-zero", "max_gap_over_k"])
    assert pd.isna(rows.loc["127.0.0.1", "keep_alive_s"])  # mid-stream: no CONNECT, no id
    assert pd.isna(rows.loc["127.0.0.1", "p95_gap_over_k"])
    assert rows.loc["127.0.0.1", "findings"] >= 1
    late = next(s for s in report.sessions if s.client_id == "ka-late-pinger")
    expected = np.quantile(np.array(late.gap_samples_ns) / S / 2, 0.95)
    assert rows.loc["ka-late-pinger", "p95_gap_over_k"] == pytest.approx(expected, abs=1e-4)


def test_clients_frame_pools_gap_samples_per_client() -> None:
    a = make_session(session_id="t.pcap#0", stream=0, effective_keep_alive_s=2,
                     max_gap_ns=3 * S, gap_samples_ns=(1 * S, 2 * S, 3 * S, 1_500_000_000))
    b = make_session(session_id="u.pcap#0", capture="caps/u.pcap", stream=0,
                     effective_keep_alive_s=4, max_gap_ns=5 * S,
                     gap_samples_ns=(4 * S, 5 * S, 2 * S, 3_300_000_000, 100_000_000))
    unknown = make_session(session_id="t.pcap#1", stream=1, effective_keep_alive_s=None,
                           keep_alive_s=None, max_gap_ns=9 * S, gap_samples_ns=(9 * S,))
    zero = make_session(session_id="t.pcap#2", stream=2, effective_keep_alive_s=0,
                        max_gap_ns=20 * S, gap_samples_ns=(20 * S,))
    anonymous = make_session(session_id="t.pcap#3", stream=3, client_id=None,
                             client_ip="10.0.0.9", max_gap_ns=S, gap_samples_ns=(S,))
    empty_id = make_session(session_id="t.pcap#4", stream=4, client_id="",
                            client_ip="10.0.0.9", max_gap_ns=3 * S, gap_samples_ns=(3 * S,))
    other = make_session(session_id="t.pcap#5", stream=5, client_id="dev-2", max_gap_ns=7 * S,
                         gap_samples_ns=(7 * S,))
    findings = (
        make_finding(session_id="t.pcap#5", client_id="dev-2", severity=Severity.WARNING),
        make_finding(session_id="t.pcap#0"),
        make_finding(session_id="u.pcap#0", severity=Severity.INFO),
    )
    report = Report((), (a, b, unknown, zero, anonymous, empty_id, other), findings)
    frame = clients_frame(report)
    assert list(frame["client_id"]) == ["dev-1", "dev-2", "10.0.0.9"]
    dev1 = frame.iloc[0].to_dict()
    pooled = np.array([1, 2, 3, 1.5]) / 2
    pooled = np.concatenate([pooled, np.array([4, 5, 2, 3.3, 0.1]) / 4])
    assert dev1["sessions"] == 4 and dev1["captures"] == 2
    assert dev1["keep_alive_s"] == "0;2;4"
    assert dev1["max_gap_over_k"] == pytest.approx(max(3 / 2, 5 / 4))
    assert dev1["p95_gap_over_k"] == pytest.approx(np.quantile(pooled, 0.95), abs=1e-4)
    assert pd.Series(pooled).quantile(0.95) == pytest.approx(dev1["p95_gap_over_k"], abs=1e-4)
    assert (dev1["findings"], dev1["errors"], dev1["warnings"]) == (2, 1, 0)
    anon = frame.iloc[2].to_dict()
    assert (anon["sessions"], anon["max_gap_over_k"], anon["findings"]) == (2, 1.5, 0)
    assert anon["p95_gap_over_k"] == pytest.approx(np.quantile([0.5, 1.5], 0.95))


def test_clients_frame_ratios_are_each_gaps_own_float_steps() -> None:
    """The gaps of a session are divided at once (NumPy), to the same bits as `gap / 1e9 / k`
    one by one: the p95 of the pool is exactly the one of those ratios."""
    import random

    from analyzer.report.tables import P95, ClientsTable, quantile

    rng = random.Random(5)
    sessions = []
    for n in range(40):
        k = rng.choice([1, 3, 7, 60, 1200, 65535])
        gaps = tuple(rng.randrange(1, 10 ** rng.randint(6, 14)) for _ in range(rng.randint(1, 30)))
        sessions.append(make_session(session_id=f"t.pcap#{n}", stream=n, client_id=f"dev-{n % 4}",
                                     effective_keep_alive_s=k, max_gap_ns=max(gaps),
                                     gap_samples_ns=gaps))
    table = ClientsTable()
    for s in sessions:
        table.add_session(s)
    pools = [[g / 1e9 / s.effective_keep_alive_s for s in sessions[client::4]
              for g in s.gap_samples_ns] for client in range(4)]
    for client, pool in enumerate(pools):
        assert table.clients[f"dev-{client}"].samples.tolist() == pool  # bit for bit
    rows = table.frame().set_index("client_id")
    for client, pool in enumerate(pools):
        assert rows.loc[f"dev-{client}", "p95_gap_over_k"] == round(quantile(pool, P95), 4)


def test_clients_frame_counts_findings_without_a_session_by_their_client_id() -> None:
    """A finding whose session is not in the report (in its capture) counts for its own client
    id: a client with sessions, or one of its own (no sessions, no capture, no K); one without a
    client id is not counted."""
    dev = make_session(session_id="t.pcap#0", stream=0, max_gap_ns=S)
    late = make_session(session_id="t.pcap#1", stream=1, client_id="late", max_gap_ns=S)
    findings = (
        make_finding(session_id="t.pcap#0", severity=Severity.WARNING),
        make_finding(session_id="gone.pcap#4", client_id="ghost", severity=Severity.WARNING),
        make_finding(session_id="gone.pcap#5", client_id="dev-1"),
        make_finding(session_id="gone.pcap#6", client_id=None),
        make_finding(session_id="gone.pcap#7", client_id="shade", severity=Severity.WARNING),
        make_finding(session_id="t.pcap#0", capture="other/t.pcap", client_id="ghost",
                     severity=Severity.INFO),  # the same session id, another capture
    )
    frame = clients_frame(Report((), (dev, late), findings))
    assert list(frame["client_id"]) == ["dev-1", "ghost", "shade", "late"]
    rows = frame.set_index("client_id")
    assert rows.loc["dev-1", ["sessions", "findings", "errors", "warnings"]].tolist() == [1, 2, 1, 1]
    ghost = rows.loc["ghost"]
    assert ghost[["sessions", "captures", "findings", "errors", "warnings"]].tolist() == [0, 0, 2, 0, 1]
    assert pd.isna(ghost["keep_alive_s"]) and pd.isna(ghost["max_gap_over_k"])
    assert rows.loc["late", "findings"] == 0


def test_clients_frame_order_ties_and_missing_ratios() -> None:
    sessions = (
        make_session(session_id="t.pcap#0", stream=0, client_id="low", max_gap_ns=1 * S),
        make_session(session_id="t.pcap#1", stream=1, client_id="none",
                     effective_keep_alive_s=None, max_gap_ns=None),
        make_session(session_id="t.pcap#2", stream=2, client_id="high", max_gap_ns=5 * S),
        make_session(session_id="t.pcap#3", stream=3, client_id="warned", max_gap_ns=S // 2),
    )
    findings = (make_finding(session_id="t.pcap#3", client_id="warned",
                             severity=Severity.WARNING),)
    frame = clients_frame(Report((), sessions, findings))
    assert list(frame["client_id"]) == ["warned", "high", "low", "none"]
    assert frame.index.tolist() == [0, 1, 2, 3]


def test_clients_csv() -> None:
    report = analyze([cap("late-pinger"), cap("silent-client")])
    out = io.StringIO()
    render_csv(report, out, table="clients")
    text = out.getvalue()
    assert text.splitlines()[0] == ",".join(CLIENT_COLUMNS)
    back = pd.read_csv(io.StringIO(text))
    assert list(back["client_id"]) == ["ka-silent-client", "ka-late-pinger"]
    expected = clients_frame(report)
    assert back["max_gap_over_k"].tolist() == pytest.approx(
        expected["max_gap_over_k"].astype("float64").tolist(), nan_ok=True)
    empty = io.StringIO()
    render_csv(Report((), (), ()), empty, table="clients")
    assert empty.getvalue() == ",".join(CLIENT_COLUMNS) + "\n"
    via_registry = io.StringIO()
    render(report, "csv", via_registry, Severity.ERROR, table="clients")
    assert via_registry.getvalue() == text

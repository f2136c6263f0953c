"""`confidence` in every reporter: `confirmed` findings look as before, `likely` ones say so."""

from __future__ import annotations

import io
import json

import jsonschema
import pandas as pd
from rich.console import Console

from analyzer.model import (
    EndReason, Endpoint, Finding, FlowKey, KeepAliveSource, Report, Session, Severity, Uncertainty,
)
from analyzer.report import json_schema, render
from analyzer.report.github import finding_annotation
from analyzer.report.junit import failure_text

S = 1_000_000_000
FLOW = FlowKey(Endpoint("127.0.0.1", 40000), Endpoint("127.0.0.1", 8883), 0)
SESSION = Session(
    session_id="tls.pcap#0", capture="tls.pcap", flow=FLOW, client_id=None, protocol_level=None,
    keep_alive_s=None, server_keep_alive_s=None, effective_keep_alive_s=2,
    keep_alive_source=KeepAliveSource.INFERRED, connect_frame=None, start_ns=1_800_000_000 * S,
    end_ns=1_800_000_010 * S, end_reason=EndReason.CLIENT_FIN, end_frame=30, client_packets=8,
    server_packets=9, pingreq=5, pingresp=5, max_gap_ns=2_700_000_000,
    uncertainty=frozenset({Uncertainty.ENCRYPTED}),
)


def finding(confidence: str) -> Finding:
    return Finding(
        rule_id="KA101", rule="client-interval-exceeded", severity=Severity.WARNING, side="client",
        session_id="tls.pcap#0", capture="tls.pcap", client_id=None, frames=(23, 26),
        ts_ns=1_800_000_008 * S, stream_index=0, message="client sent no control packet for 2.7 s",
        spec=("MQTT-3.1.2-23",), gap_s=2.7, limit_s=2.0, keep_alive_s=2,
        uncertainty=("encrypted",) if confidence == "likely" else (), confidence=confidence)


REPORT = Report(captures=(), sessions=(SESSION,), findings=(finding("likely"), finding("confirmed")))


def rendered(fmt: str, **kwargs: object) -> str:
    out = io.StringIO()
    render(REPORT, fmt, out, Severity.ERROR, **kwargs)  # type: ignore[arg-type]
    return out.getvalue()


def test_json_has_confidence_in_every_finding_and_validates() -> None:
    doc = json.loads(rendered("json"))
    assert [f["confidence"] for f in doc["findings"]] == ["likely", "confirmed"]
    jsonschema.validate(doc, json_schema(), cls=jsonschema.Draft202012Validator)
    bad = json.loads(json.dumps(doc))
    bad["findings"][0]["confidence"] = "certain"
    assert not jsonschema.Draft202012Validator(json_schema()).is_valid(bad)


def test_jsonl_and_csv_carry_it() -> None:
    lines = [json.loads(line) for line in rendered("jsonl").splitlines()]
    assert [r["confidence"] for r in lines if r["type"] == "finding"] == ["likely", "confirmed"]
    table = pd.read_csv(io.StringIO(rendered("csv")))
    assert list(table["confidence"]) == ["likely", "confirmed"]
    assert list(table.columns)[-1] == "confidence"


def test_console_shows_likely_and_nothing_for_confirmed() -> None:
    out = io.StringIO()
    render(REPORT, "table", out, Severity.ERROR, console=Console(file=out, width=200, force_terminal=False))
    rows = [line for line in out.getvalue().splitlines() if "KA101" in line]
    assert len(rows) == 2
    assert sum("warning (likely)" in row for row in rows) == 1


def test_junit_and_github_say_likely() -> None:
    assert "confidence: likely" in failure_text(finding("likely"))
    assert "confidence" not in failure_text(finding("confirmed"))
    assert "title=KA101 client-interval-exceeded (likely)::" in finding_annotation(finding("likely"))
    assert "(likely)" not in finding_annotation(finding("confirmed"))

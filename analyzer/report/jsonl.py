"""``--format jsonl``: one JSON record per line, each tagged with its ``"type"``.

The same records as the JSON document, so a consumer can switch formats without remapping fields.
Live mode writes records one at a time as they become final, hence ``write_record``; a finished
report is written as captures, sessions, findings, then one ``summary`` line that tells a reader
the stream is complete.
"""

from __future__ import annotations

from typing import Any, TextIO

from analyzer.model import Report, Severity
from analyzer.report.json import dumps
from analyzer.report.records import (
    capture_record,
    finding_record,
    session_record,
    summary_record,
)

RECORD_TYPES = ("capture", "session", "finding", "summary")


def record_line(record_type: str, record: dict[str, Any]) -> str:
    """One line of JSONL: ``type`` first (for readers that grep), then the record's own fields."""
    if record_type not in RECORD_TYPES:
        raise ValueError(f"unknown JSONL record type {record_type!r}")
    return dumps({"type": record_type, **record}) + "\n"


def write_record(out: TextIO, record_type: str, record: dict[str, Any]) -> None:
    """Write and flush one record, so a live consumer sees it as soon as it is final."""
    out.write(record_line(record_type, record))
    out.flush()


def render_jsonl(report: Report, fail_on: Severity | None, out: TextIO) -> None:
    """Write every record of a finished report, then the summary."""
    for c in report.captures:
        out.write(record_line("capture", capture_record(c)))
    for s in report.sessions:
        out.write(record_line("session", session_record(s)))
    for f in report.findings:
        out.write(record_line("finding", finding_record(f)))
    out.write(record_line("summary", summary_record(report, fail_on)))

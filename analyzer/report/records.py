"""Report records as plain dicts: the one place that knows the JSON contract's field names.

``docs/report-format.md`` is a contract that scripts and CI systems parse, so every field name,
order, unit and rounding lives here and nowhere else: the JSON and JSONL writers dump these dicts,
and ``tables.py`` flattens the same dicts into DataFrames, so CSV, Parquet and HTML can never drift
from the JSON. Fields beyond the documented ones are appended after them (the contract allows new
fields, never renamed or removed ones).

Nothing here judges anything: the values come from the model records as they are, converted to
report units (integer nanoseconds become float epoch seconds; enums become their strings).
"""

from __future__ import annotations

from collections.abc import Iterable
from importlib import metadata
from typing import Any

from analyzer.model import (
    CaptureSummary,
    Endpoint,
    Finding,
    Report,
    RuleSetInfo,
    Session,
    Severity,
)

SCHEMA_ID = "mqtt-keepalive/report/1"
"""Bump the trailing number whenever a documented field is renamed or removed."""

TOOL_NAME = "mqtt-keepalive"

Record = dict[str, Any]

_NS_PER_S = 1_000_000_000


def tool_version() -> str:
    """The running tool's version, so a report says which release judged it.

    ``analyzer._version`` is tried first because it works from a source checkout that was never
    installed; the installed distribution's metadata is the fallback; "0.0.0" means neither exists.
    """
    try:
        from analyzer._version import __version__

        return str(__version__)
    except ImportError:
        pass
    try:
        return metadata.version(TOOL_NAME)
    except metadata.PackageNotFoundError:
        return "0.0.0"


def epoch_s(ts_ns: int) -> float:
    """Integer nanoseconds to epoch seconds, rounded to the microsecond the contract promises.

    ``int / int`` is correctly rounded in Python, so no precision is lost before the rounding.
    """
    return round(ts_ns / _NS_PER_S, 6)


def duration_s(value_ns: int | None) -> float | None:
    """A duration in nanoseconds to seconds at 0.1 ms (finer is noise for keep-alive), or None."""
    return None if value_ns is None else round(value_ns / _NS_PER_S, 4)


def _measure(value: float | None) -> float | None:
    """A finding's measured seconds, rounded to 0.1 ms like every other duration."""
    return None if value is None else round(float(value), 4)


def _strings(values: Iterable[object]) -> list[str]:
    """Enum members or strings as a sorted list of their string values (stable output order)."""
    return sorted(str(getattr(v, "value", v)) for v in values)


def _endpoint(e: Endpoint) -> Record:
    return {"ip": e.ip, "port": e.port}


def tool_record() -> Record:
    """The ``tool`` object: who wrote the report."""
    return {"name": TOOL_NAME, "version": tool_version()}


def ruleset_record(r: RuleSetInfo) -> Record:
    """The ``ruleset`` object: which packs and broker profile judged the sessions."""
    return {"packs": list(r.packs), "profile": r.profile}


def capture_record(c: CaptureSummary) -> Record:
    """One entry of ``captures``; ``warnings`` is an extra field after the documented ones."""
    return {
        "path": c.path,
        "format": c.format,
        "linktypes": list(c.linktypes),
        "frames": c.frames,
        "bytes": c.bytes,
        "tcp_streams": c.tcp_streams,
        "mqtt_sessions": c.mqtt_sessions,
        "skipped": {reason: c.skipped[reason] for reason in sorted(c.skipped)},
        "error": c.error,
        "warnings": list(c.warnings),
    }


def session_record(s: Session) -> Record:
    """One entry of ``sessions``.

    Extra fields after the documented ones: ``tcp_stream`` (Wireshark's ``tcp.stream``, to filter
    the whole connection), ``connack_code`` (why a broker refused a session, if it did) and
    ``assigned_client_id`` (the id a v5 broker gave a client whose CONNECT had an empty one).
    """
    return {
        "session_id": s.session_id,
        "capture": s.capture,
        "client": _endpoint(s.flow.client),
        "broker": _endpoint(s.flow.server),
        "client_id": s.client_id,
        "protocol_level": s.protocol_level,
        "keep_alive_s": s.keep_alive_s,
        "server_keep_alive_s": s.server_keep_alive_s,
        "effective_keep_alive_s": s.effective_keep_alive_s,
        "keep_alive_source": s.keep_alive_source.value,
        "connect_frame": s.connect_frame,
        "start": epoch_s(s.start_ns),
        "end": epoch_s(s.end_ns),
        "end_reason": s.end_reason.value,
        "end_frame": s.end_frame,
        "client_packets": s.client_packets,
        "server_packets": s.server_packets,
        "pingreq": s.pingreq,
        "pingresp": s.pingresp,
        "max_gap_s": duration_s(s.max_gap_ns),
        "uncertainty": _strings(s.uncertainty),
        "tcp_stream": s.flow.stream_index,
        "connack_code": s.connack_code,
        "assigned_client_id": s.assigned_client_id,
    }


def finding_record(f: Finding) -> Record:
    """One entry of ``findings``; ``uncertainty`` and ``confidence`` are extra fields after the
    documented ones. ``confidence`` is ``confirmed`` (judged from MQTT packets read on the wire)
    or ``likely`` (MQTT over TLS without keys: judged from the sizes of encrypted records).

    A Finding carries everything its record needs (client id, stream index, keep-alive), so no
    session lookup is needed: a reporter renders, it does not join.
    """
    first, last = f.frames
    return {
        "rule_id": f.rule_id,
        "rule": f.rule,
        "severity": f.severity.label,
        "side": f.side,
        "session_id": f.session_id,
        "capture": f.capture,
        "client_id": f.client_id,
        "frames": [first, last],
        "at": epoch_s(f.ts_ns),
        "gap_s": _measure(f.gap_s),
        "limit_s": _measure(f.limit_s),
        "keep_alive_s": f.keep_alive_s,
        "spec": list(f.spec),
        "message": f.message,
        "wireshark_filter": f.wireshark_filter,
        "uncertainty": _strings(f.uncertainty),
        "confidence": f.confidence,
    }


def summary_record(report: Report, fail_on: Severity | None) -> Record:
    """The ``summary`` object; the exit code depends on ``--fail-on``, hence the parameter.
    ``suppressed`` (extra) counts findings silenced by the rule pack's suppressions."""
    return {
        "sessions": len(report.sessions),
        "findings": report.severity_counts(),
        "exit_code": report.exit_code(fail_on),
        "suppressed": len(report.suppressed),
    }


STREAMED: Any = object()
"""Stands in for the session and finding lists of a document that a writer streams."""


def report_document(report: Report, fail_on: Severity | None, *, records: bool = True) -> Record:
    """The whole JSON document, keys in the documented order. With `records=False` the sessions
    and findings lists are `STREAMED` placeholders, for writers that render them one by one."""
    return {
        "schema": SCHEMA_ID,
        "tool": tool_record(),
        "ruleset": ruleset_record(report.ruleset),
        "captures": [capture_record(c) for c in report.captures],
        "sessions": [session_record(s) for s in report.sessions] if records else STREAMED,
        "findings": [finding_record(f) for f in report.findings] if records else STREAMED,
        "summary": summary_record(report, fail_on),
        "warnings": list(report.warnings),
    }

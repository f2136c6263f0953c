"""A Report as pandas DataFrames with a fixed column order and dtypes.

This is the one tabular schema: CSV writes it today, Parquet and the HTML report will write it
later, so a column is added here or nowhere. Rows are built from the JSON records
(``records.py``), so every value has the JSON's units and rounding; nested fields are flattened
(``client`` -> ``client_ip``, ``client_port``; ``frames`` -> ``first_frame``, ``last_frame``) and
lists become ``;``-joined strings, which every tabular format can hold.

Dtypes are pandas' nullable extension types ("string", "Int64", "Float64") because many fields are
legitimately absent (no CONNECT seen, no gap measured), and a plain int64 column would silently
turn into float64 at the first missing value.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from analyzer.model import Report
from analyzer.report.records import Record, finding_record, session_record

LIST_SEPARATOR = ";"

FINDING_COLUMNS: dict[str, str] = {
    "rule_id": "string",
    "rule": "string",
    "severity": "string",
    "side": "string",
    "session_id": "string",
    "capture": "string",
    "client_id": "string",
    "first_frame": "Int64",
    "last_frame": "Int64",
    "at": "Float64",
    "gap_s": "Float64",
    "limit_s": "Float64",
    "keep_alive_s": "Int64",
    "spec": "string",
    "message": "string",
    "wireshark_filter": "string",
    "uncertainty": "string",
}
"""Findings table: column name -> dtype, in output order (the JSON order, flattened)."""

SESSION_COLUMNS: dict[str, str] = {
    "session_id": "string",
    "capture": "string",
    "client_ip": "string",
    "client_port": "Int64",
    "broker_ip": "string",
    "broker_port": "Int64",
    "client_id": "string",
    "protocol_level": "Int64",
    "keep_alive_s": "Int64",
    "server_keep_alive_s": "Int64",
    "effective_keep_alive_s": "Int64",
    "keep_alive_source": "string",
    "connect_frame": "Int64",
    "start": "Float64",
    "end": "Float64",
    "end_reason": "string",
    "end_frame": "Int64",
    "client_packets": "Int64",
    "server_packets": "Int64",
    "pingreq": "Int64",
    "pingresp": "Int64",
    "max_gap_s": "Float64",
    "uncertainty": "string",
    "tcp_stream": "Int64",
    "connack_code": "Int64",
}
"""Sessions table: column name -> dtype, in output order (the JSON order, flattened)."""


def _joined(values: list[str]) -> str:
    return LIST_SEPARATOR.join(values)


def finding_row(record: Record) -> dict[str, Any]:
    """Flatten one finding record to the findings table's columns."""
    row = dict(record)
    row["first_frame"], row["last_frame"] = row.pop("frames")
    row["spec"] = _joined(row["spec"])
    row["uncertainty"] = _joined(row["uncertainty"])
    return row


def session_row(record: Record) -> dict[str, Any]:
    """Flatten one session record to the sessions table's columns."""
    row = dict(record)
    client, broker = row.pop("client"), row.pop("broker")
    row.update(client_ip=client["ip"], client_port=client["port"])
    row.update(broker_ip=broker["ip"], broker_port=broker["port"])
    row["uncertainty"] = _joined(row["uncertainty"])
    return row


def _frame(rows: list[dict[str, Any]], columns: dict[str, str]) -> pd.DataFrame:
    """Rows to a DataFrame with exactly ``columns`` in order and dtype, even when empty.

    Columns are built one at a time so a None becomes <NA> under its declared dtype, rather than
    pandas first inferring object or float64 for the whole row set.
    """
    data = {
        name: pd.Series([row.get(name) for row in rows], dtype=dtype)
        for name, dtype in columns.items()
    }
    return pd.DataFrame(data, columns=list(columns))


def findings_frame(report: Report) -> pd.DataFrame:
    """One row per finding, in the report's order."""
    return _frame([finding_row(finding_record(f)) for f in report.findings], FINDING_COLUMNS)


def sessions_frame(report: Report) -> pd.DataFrame:
    """One row per MQTT session, in the report's order."""
    return _frame([session_row(session_record(s)) for s in report.sessions], SESSION_COLUMNS)

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

import math
from array import array
from collections.abc import Iterable, Iterator
from itertools import islice
from typing import Any

import numpy as np
import pandas as pd

from analyzer.model import Finding, Report, Session, Severity
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
    "confidence": "string",
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

CLIENT_COLUMNS: dict[str, str] = {
    "client_id": "string",
    "sessions": "Int64",
    "captures": "Int64",
    "keep_alive_s": "string",
    "max_gap_over_k": "Float64",
    "p95_gap_over_k": "Float64",
    "findings": "Int64",
    "errors": "Int64",
    "warnings": "Int64",
}
"""Clients table: column name -> dtype, in output order."""

RATIO_DECIMALS = 4
"""Gap / K ratios are rounded like durations: 0.1 ms of a 1 s Keep Alive."""

P95 = 0.95


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


def frame_of(rows: list[dict[str, Any]], columns: dict[str, str]) -> pd.DataFrame:
    """Rows to a DataFrame with exactly ``columns`` in order and dtype, even when empty.

    Columns are built one at a time so a None becomes <NA> under its declared dtype, rather than
    pandas first inferring object or float64 for the whole row set.
    """
    return frame_of_columns({name: [row.get(name) for row in rows] for name in columns}, columns)


def frame_of_columns(values: dict[str, list[Any]], columns: dict[str, str]) -> pd.DataFrame:
    """`frame_of` for data already in columns (`values`: each column's values, by name)."""
    data = {name: pd.Series(values[name], dtype=dtype) for name, dtype in columns.items()}
    return pd.DataFrame(data, columns=list(columns))


ROWS_AT_ONCE = 2_000
"""Findings or sessions put in one DataFrame at a time by `frames_in_chunks`: a large capture's
report is spooled on disk, and one frame of all its rows would undo that. Smaller chunks leave a
lower high-water mark (on the 1M-frame bench capture, building every findings chunk took a process
from 112 to 140 MiB at 10,000 rows, to 129 MiB at 2,000), and CSV writes no slower."""


def frames_in_chunks(report: Report, table: str) -> Iterator[pd.DataFrame]:
    """The findings or sessions table as consecutive frames of at most `ROWS_AT_ONCE` rows (one
    empty frame for an empty table). The dtypes are fixed, so the frames together hold exactly
    what `findings_frame` or `sessions_frame` would, whatever is missing in which chunk."""
    record, row, columns = ((finding_record, finding_row, FINDING_COLUMNS) if table == "findings"
                            else (session_record, session_row, SESSION_COLUMNS))
    items = iter(report.findings if table == "findings" else report.sessions)
    first = True
    while True:
        rows = [row(record(item)) for item in islice(items, ROWS_AT_ONCE)]
        if rows or first:
            yield frame_of(rows, columns)
        if len(rows) < ROWS_AT_ONCE:
            return
        first = False


def findings_frame(report: Report) -> pd.DataFrame:
    """One row per finding, in the report's order."""
    return frame_of([finding_row(finding_record(f)) for f in report.findings], FINDING_COLUMNS)


def sessions_frame(report: Report) -> pd.DataFrame:
    """One row per MQTT session, in the report's order."""
    return frame_of([session_row(session_record(s)) for s in report.sessions], SESSION_COLUMNS)


def client_key(s: Session) -> str:
    """Who a session belongs to: its client id, or its client IP when the id is missing or empty.

    An empty id is legal (the broker then assigns one, different on every connection), so it cannot
    group a device's sessions; the address can.
    """
    return s.client_id if s.client_id else s.flow.client.ip


def _ratio(value: float) -> float:
    return round(float(value), RATIO_DECIMALS)


def quantile(values: Iterable[float], q: float) -> float:
    """`numpy.quantile(values, q)` (linear interpolation) of a non-empty sequence, to the last
    bit: the same order statistics and numpy's own interpolation (`_lerp`: from the upper value
    down when past halfway). A fleet has a client per device and numpy's call costs about 100 µs
    of overhead each, 85 times this on a few dozen samples (0.7 s of a 1M-frame capture's
    clients table)."""
    ordered = sorted(values)
    virtual = q * (len(ordered) - 1)
    below = math.floor(virtual)
    gamma = virtual - below
    a, b = ordered[below], ordered[min(below + 1, len(ordered) - 1)]
    diff = b - a
    return b - diff * (1 - gamma) if gamma >= 0.5 else a + diff * gamma


class _Client:
    """What the clients table needs of one client's sessions and findings, gathered as they are
    read (a large report's sessions are spooled on disk, and holding them all would undo that).
    A fleet has tens of thousands of clients, most with one capture and one K: those are held as
    themselves, a set only once there is a second, and a capture's path once (on the 10M-frame
    benchmark capture, gathering its 59,623 clients took the HTML report's process 62 MiB higher
    instead of 91 MiB)."""

    __slots__ = ("sessions", "captures", "keep_alives", "max_ratio", "samples", "findings", "errors",
                 "warnings")

    def __init__(self) -> None:
        self.sessions = 0
        self.captures: str | set[str] | None = None
        self.keep_alives: int | set[int] | None = None
        self.max_ratio: float | None = None
        self.samples: array | None = None
        """Every gap sample of its sessions with a known K, over that K."""
        self.findings = self.errors = self.warnings = 0

    def capture_count(self) -> int:
        return len(_values(self.captures))

    def keep_alive_text(self) -> str | None:
        """The distinct K values, ascending, joined."""
        values = _values(self.keep_alives)
        return _joined([str(k) for k in sorted(values)]) if values else None


def _added(held: Any, value: Any) -> Any:
    """`held` (None, one value, or a set of values) with `value`: a set only from a second."""
    if held is None:
        return value
    if isinstance(held, set):
        held.add(value)
        return held
    return held if value == held else {held, value}


def _values(held: Any) -> set[Any]:
    """What `_added` holds, as a set."""
    return set() if held is None else held if isinstance(held, set) else {held}


def clients_frame(report: Report) -> pd.DataFrame:
    """One row per client, worst first: errors, then warnings, then max gap / K, all descending.

    Ratios are gap / the session's effective Keep Alive; a session whose K is unknown or 0 counts
    in ``sessions`` and the finding columns but adds no ratio, so a client with only such sessions
    has <NA> ratios. ``p95_gap_over_k`` is the 95th percentile (linear interpolation, numpy's
    default) of every gap sample of the client's sessions, each divided by its own session's K;
    the samples of a session with very many gaps are an even subsample (``MAX_GAP_SAMPLES``), so a
    long session weighs no more than 256 gaps in the pool. ``keep_alive_s`` lists the distinct
    effective K values, ascending, joined with ``;``. A finding is counted for the client of its
    session in its capture (or its own client id if its session is not in the report).
    """
    table = ClientsTable()
    for s in report.sessions:
        table.add_session(s)
    for f in report.findings:
        table.add_finding(f)
    return table.frame()


class ClientsTable:
    """`clients_frame` gathered as the report's records are read, for a reader that makes other
    things of them on the same pass (the HTML report): every session first, then every finding,
    then `frame()`."""

    def __init__(self) -> None:
        self.clients: dict[str, _Client] = {}
        """By client key: first the clients of sessions, in order, then those only findings name."""
        self.owner: dict[tuple[str, str], _Client] = {}
        self._paths: dict[str, str] = {}
        """Each capture's path once (the sessions read from a spool each bring their own copy)."""

    def add_session(self, s: Session) -> None:
        key = client_key(s)
        client = self.clients.get(key)
        if client is None:
            client = self.clients[key] = _Client()
        client.sessions += 1
        capture = self._paths.setdefault(s.capture, s.capture)
        client.captures = _added(client.captures, capture)
        k = s.effective_keep_alive_s
        if k is not None:
            client.keep_alives = _added(client.keep_alives, k)
        if k:
            if s.max_gap_ns is not None:
                ratio = s.max_gap_ns / 1e9 / k
                if client.max_ratio is None or ratio > client.max_ratio:
                    client.max_ratio = ratio
            if s.gap_samples_ns:
                # `gap / 1e9 / k` of each, in the same float steps, without a Python step per gap
                ratios = np.asarray(s.gap_samples_ns, dtype=np.float64) / 1e9 / k
                if client.samples is None:
                    client.samples = array("d")
                client.samples.frombytes(ratios.tobytes())
        self.owner[(capture, s.session_id)] = client

    def add_finding(self, f: Finding) -> None:
        client = self.owner.get((f.capture, f.session_id))
        if client is None:
            if not f.client_id:
                return
            client = self.clients.get(f.client_id)
            if client is None:
                client = self.clients[f.client_id] = _Client()
        client.findings += 1
        client.errors += f.severity == Severity.ERROR
        client.warnings += f.severity == Severity.WARNING

    def frame(self) -> pd.DataFrame:
        """The table, worst first. Made once: the clients gathered go as their rows are made."""
        clients = self.clients
        self.clients, self.owner = {}, {}
        columns: dict[str, list[Any]] = {name: [] for name in CLIENT_COLUMNS}
        for key in list(clients):
            client = clients.pop(key)
            for name, value in (
                ("client_id", key),
                ("sessions", client.sessions),
                ("captures", client.capture_count()),
                ("keep_alive_s", client.keep_alive_text()),
                ("max_gap_over_k", None if client.max_ratio is None else _ratio(client.max_ratio)),
                ("p95_gap_over_k", _ratio(quantile(client.samples, P95)) if client.samples else None),
                ("findings", client.findings),
                ("errors", client.errors),
                ("warnings", client.warnings),
            ):
                columns[name].append(value)
        frame = frame_of_columns(columns, CLIENT_COLUMNS).sort_values(
            ["errors", "warnings", "max_gap_over_k", "client_id"], ascending=[False, False, False, True],
            na_position="last", kind="stable")
        return frame.reset_index(drop=True)

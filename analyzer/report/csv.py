"""``--format csv``: one table (findings, sessions or clients) as CSV, in ``tables.py``'s schema.

A missing value is an empty cell. An empty report still writes the header row, so a spreadsheet or
``pandas.read_csv`` gets the columns either way. Lines end in ``\\n`` whatever the platform, because
``out`` is already a text stream that translates newlines itself.
"""

from __future__ import annotations

from collections.abc import Callable
from itertools import islice
from typing import Any, Literal, TextIO

import pandas as pd

from analyzer.model import Report
from analyzer.report.records import Record, finding_record, session_record
from analyzer.report.tables import (
    FINDING_COLUMNS,
    SESSION_COLUMNS,
    clients_frame,
    finding_row,
    findings_frame,
    frame_of,
    session_row,
    sessions_frame,
)

Table = Literal["findings", "sessions", "clients"]

TABLES: dict[str, Callable[[Report], pd.DataFrame]] = {
    "findings": findings_frame,
    "sessions": sessions_frame,
    "clients": clients_frame,
}


ROWS_AT_ONCE = 10_000
"""Findings or sessions put in one DataFrame at a time: a large capture's report is spooled on
disk, and one frame of all its rows would undo that. The dtypes are fixed (`tables`), so the
chunks write exactly the text one frame would."""

IN_CHUNKS: dict[str, tuple[Callable[[Any], Record], Callable[[Record], dict[str, Any]], dict[str, str]]] = {
    "findings": (finding_record, finding_row, FINDING_COLUMNS),
    "sessions": (session_record, session_row, SESSION_COLUMNS),
}


def render_csv(report: Report, out: TextIO, table: Table = "findings") -> None:
    """Write one table of the report as CSV with a header row."""
    try:
        build = TABLES[table]
    except KeyError:
        raise ValueError(f"unknown table {table!r}; expected one of {sorted(TABLES)}") from None
    if table not in IN_CHUNKS:  # clients: one row per client, built from every session at once
        build(report).to_csv(out, index=False, lineterminator="\n")
        return
    record, row, columns = IN_CHUNKS[table]
    items = iter(report.findings if table == "findings" else report.sessions)
    header = True
    while True:
        rows = [row(record(item)) for item in islice(items, ROWS_AT_ONCE)]
        if rows or header:
            frame_of(rows, columns).to_csv(out, index=False, header=header, lineterminator="\n")
        if len(rows) < ROWS_AT_ONCE:
            return
        header = False

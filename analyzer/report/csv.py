"""``--format csv``: one table (findings, sessions or clients) as CSV, in ``tables.py``'s schema.

A missing value is an empty cell. An empty report still writes the header row, so a spreadsheet or
``pandas.read_csv`` gets the columns either way. Lines end in ``\\n`` whatever the platform, because
``out`` is already a text stream that translates newlines itself.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal, TextIO

import pandas as pd

from analyzer.model import Report
from analyzer.report.tables import clients_frame, findings_frame, frames_in_chunks, sessions_frame

Table = Literal["findings", "sessions", "clients"]

TABLES: dict[str, Callable[[Report], pd.DataFrame]] = {
    "findings": findings_frame,
    "sessions": sessions_frame,
    "clients": clients_frame,
}


def render_csv(report: Report, out: TextIO, table: Table = "findings") -> None:
    """Write one table of the report as CSV with a header row: findings and sessions a few
    thousand rows at a time (`tables.frames_in_chunks`), which writes exactly the text of one
    frame of them all."""
    if table not in TABLES:
        raise ValueError(f"unknown table {table!r}; expected one of {sorted(TABLES)}")
    if table == "clients":  # one row per client: a frame of the clients' totals
        clients_frame(report).to_csv(out, index=False, lineterminator="\n")
        return
    for i, frame in enumerate(frames_in_chunks(report, table)):
        frame.to_csv(out, index=False, header=i == 0, lineterminator="\n")

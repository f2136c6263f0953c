"""``--format json``: the whole report as one JSON document (``docs/report-format.md``).

Output is strict JSON: ``allow_nan=False`` turns a NaN or infinity (always a bug upstream) into an
error here rather than into a token that most JSON parsers reject. Non-ASCII is escaped so that the
document survives any stdout encoding; client ids come from the network and may hold anything.
"""

from __future__ import annotations

import json
from typing import Any, TextIO

from analyzer.model import Report, Severity
from analyzer.report.records import report_document


def dumps(document: Any, *, indent: int | None = None) -> str:
    """Serialise one record or document with the settings every JSON output shares."""
    return json.dumps(document, indent=indent, ensure_ascii=True, allow_nan=False)


def render_json(report: Report, fail_on: Severity | None, out: TextIO) -> None:
    """Write the report as one indented JSON document followed by a newline."""
    out.write(dumps(report_document(report, fail_on), indent=2))
    out.write("\n")

"""``--format json``: the whole report as one JSON document (``docs/report-format.md``).

Output is strict JSON: ``allow_nan=False`` turns a NaN or infinity (always a bug upstream) into an
error here rather than into a token that most JSON parsers reject. Non-ASCII is escaped so that the
document survives any stdout encoding; client ids come from the network and may hold anything.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any, TextIO

from analyzer.model import Report, Severity
from analyzer.report.records import STREAMED, finding_record, report_document, session_record


def dumps(document: Any, *, indent: int | None = None) -> str:
    """Serialise one record or document with the settings every JSON output shares."""
    return json.dumps(document, indent=indent, ensure_ascii=True, allow_nan=False)


def render_json(report: Report, fail_on: Severity | None, out: TextIO) -> None:
    """Write the report as one indented JSON document followed by a newline.

    The text is exactly `dumps(report_document(...), indent=2)`, but written record by record:
    a long capture's sessions and findings are spooled on disk, and building the whole document
    in memory would undo that.
    """
    document = report_document(report, fail_on, records=False)
    keys = list(document)
    for i, key in enumerate(keys):
        out.write("{\n" if i == 0 else ",\n")
        value = document[key]
        if value is STREAMED:
            out.write(f'  {dumps(key)}: ')
            _write_list(out, (session_record(s) for s in report.sessions) if key == "sessions"
                        else (finding_record(f) for f in report.findings))
        else:
            out.write(_indented(f"{dumps(key)}: {dumps(value, indent=2)}", "  "))
    out.write("\n}\n")


def _write_list(out: TextIO, records: Iterable[Any]) -> None:
    """A list as `json.dumps(..., indent=2)` writes it one level into the document."""
    first = True
    for record in records:
        out.write("[\n" if first else ",\n")
        out.write(_indented(dumps(record, indent=2), "    "))
        first = False
    out.write("[]" if first else "\n  ]")


def _indented(text: str, prefix: str) -> str:
    """`text` with `prefix` before every line (JSON text escapes newlines inside strings)."""
    return prefix + text.replace("\n", "\n" + prefix)

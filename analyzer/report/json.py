"""``--format json``: the whole report as one JSON document (``docs/report-format.md``).

Output is strict JSON: ``allow_nan=False`` turns a NaN or infinity (always a bug upstream) into an
error here rather than into a token that most JSON parsers reject. Non-ASCII is escaped so that the
document survives any stdout encoding; client ids come from the network and may hold anything.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any, TextIO

from analyzer.model import Report, Severity
from analyzer.report.parallel import rendered
from analyzer.report.records import STREAMED, finding_record, report_document, session_record


def dumps(document: Any, *, indent: int | None = None) -> str:
    """Serialise one record or document with the settings every JSON output shares."""
    if indent == 2:
        try:
            return _indented_2(document, "")
        except (TypeError, ValueError):  # anything else (or NaN): the standard encoder's way or error
            pass
    return json.dumps(document, indent=indent, ensure_ascii=True, allow_nan=False)


_INF = float("inf")


def _indented_2(value: Any, pad: str) -> str:
    """`json.dumps(value, indent=2, ensure_ascii=True, allow_nan=False)` for the plain values
    records are made of (dict with str keys, list, tuple, str, int, float, bool, None), the same
    text, in about 60% of the time: with an indent the standard library encodes in Python, a
    generator step per token, and a large capture's report has millions of tokens. Raises
    TypeError or ValueError for anything else (then the standard encoder takes over)."""
    kind = value.__class__
    if kind is dict:
        if not value:
            return "{}"
        inner = pad + "  "
        parts = []
        for key, item in value.items():
            if key.__class__ is not str:
                raise TypeError(key)
            item_kind = item.__class__
            if item_kind is str:
                text = _ascii(item)
            elif item_kind is int:
                text = _int(item)
            elif item is None:
                text = "null"
            elif item_kind is float:
                if item != item or item == _INF or item == -_INF:
                    raise ValueError(item)
                text = _float(item)
            else:
                text = _indented_2(item, inner)
            parts.append(f"{inner}{_ascii(key)}: {text}")
        return "{\n" + ",\n".join(parts) + "\n" + pad + "}"
    if kind is list or kind is tuple:
        if not value:
            return "[]"
        inner = pad + "  "
        texts = []
        for item in value:  # (most lists hold strings or frame numbers)
            item_kind = item.__class__
            if item_kind is str:
                texts.append(_ascii(item))
            elif item_kind is int:
                texts.append(_int(item))
            else:
                texts.append(_indented_2(item, inner))
        return "[\n" + inner + (",\n" + inner).join(texts) + "\n" + pad + "]"
    if kind is str:
        return _ascii(value)
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if kind is int:
        return _int(value)
    if kind is float:
        if value != value or value == _INF or value == -_INF:
            raise ValueError(value)
        return _float(value)
    raise TypeError(kind)


_ascii = json.encoder.encode_basestring_ascii  # type: ignore[attr-defined]
_int, _float = int.__repr__, float.__repr__


def render_json(report: Report, fail_on: Severity | None, out: TextIO, jobs: int = 1) -> None:
    """Write the report as one indented JSON document followed by a newline.

    The text is exactly `dumps(report_document(...), indent=2)`, but written record by record:
    a long capture's sessions and findings are spooled on disk, and building the whole document
    in memory would undo that. A long list is rendered by `jobs` processes
    (`analyzer.report.parallel`), still written in order.
    """
    document = report_document(report, fail_on, records=False)
    keys = list(document)
    for i, key in enumerate(keys):
        out.write("{\n" if i == 0 else ",\n")
        value = document[key]
        if value is STREAMED:
            out.write(f'  {dumps(key)}: ')
            if key == "sessions":
                _write_list(out, report.sessions, session_record, jobs)
            else:
                _write_list(out, report.findings, finding_record, jobs)
        else:
            out.write(_indented(f"{dumps(key)}: {dumps(value, indent=2)}", "  "))
    out.write("\n}\n")


def _write_list(out: TextIO, records: Sequence[Any], record: Callable[[Any], Any], jobs: int) -> None:
    """A list of `record`s of `records` as `json.dumps(..., indent=2)` writes it one level into
    the document."""
    out.flush()  # (a forked renderer starts with a copy of what is buffered)
    first = True
    for text in rendered(records, partial(_records_text, record), jobs):
        out.write("[\n" if first else ",\n")
        out.write(text)
        first = False
    out.write("[]" if first else "\n  ]")


def _records_text(record: Callable[[Any], Any], records: list[Any]) -> str:
    """Consecutive items of a list written by `_write_list`."""
    return ",\n".join([_nested(record(r), "    ") for r in records])


def _nested(record: Any, prefix: str) -> str:
    """`_indented(dumps(record, indent=2), prefix)`, written at that depth at once rather than
    indented afterwards (a second pass over a long capture's every record)."""
    try:
        return prefix + _indented_2(record, prefix)
    except (TypeError, ValueError):  # as `dumps`: the standard encoder's way, or its error
        return _indented(dumps(record, indent=2), prefix)


def _indented(text: str, prefix: str) -> str:
    """`text` with `prefix` before every line (JSON text escapes newlines inside strings)."""
    return prefix + text.replace("\n", "\n" + prefix)

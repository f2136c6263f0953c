"""Reporters: turn a finished ``model.Report`` into output; they render, they never judge.

``render`` is the one entry point the CLI needs, so adding a format touches this registry and a new
module, not the CLI. pandas and rich are imported only when their format is asked for, because
importing pandas alone costs a noticeable fraction of a second on every ``--format json`` run.

This package (with ``cli``) is the only place allowed to import pandas or rich.
"""

from __future__ import annotations

import json as _stdlib_json  # plain `json` would be shadowed by the submodule
from importlib import resources
from typing import TYPE_CHECKING, Any, Literal, TextIO

from analyzer.model import Report, Severity

if TYPE_CHECKING:
    from rich.console import Console

Format = Literal["json", "jsonl", "csv", "table", "junit", "github"]
FORMATS: tuple[str, ...] = ("json", "jsonl", "csv", "table", "junit", "github")


def render(
    report: Report,
    fmt: str,
    out: TextIO,
    fail_on: Severity | None,
    *,
    table: Literal["findings", "sessions", "clients"] = "findings",
    console: Console | None = None,
    summary_path: str | None = None,
    jobs: int = 1,
) -> None:
    """Write ``report`` to ``out`` in format ``fmt``.

    ``table`` picks the CSV table. ``console`` lets the caller control colour and width for the
    ``table`` format; without one, a Console on ``out`` detects a terminal itself (so a pipe or a
    file gets plain text) and honours ``NO_COLOR``. ``summary_path`` is where ``github`` appends
    its Markdown job summary: the CLI passes ``$GITHUB_STEP_SUMMARY`` (reporters never read the
    environment); without it only the annotations are written. ``jobs``: processes that may
    render a long report's records (``json``; the output is the same).
    """
    if fmt == "json":
        from analyzer.report.json import render_json

        render_json(report, fail_on, out, jobs)
    elif fmt == "jsonl":
        from analyzer.report.jsonl import render_jsonl

        render_jsonl(report, fail_on, out)
    elif fmt == "csv":
        from analyzer.report.csv import render_csv

        render_csv(report, out, table=table)
    elif fmt == "table":
        from rich.console import Console

        from analyzer.report.console import render_console

        render_console(report, fail_on, console or Console(file=out))
    elif fmt == "junit":
        from analyzer.report.junit import render_junit

        render_junit(report, fail_on, out)
    elif fmt == "github":
        from analyzer.report.github import render_github

        render_github(report, fail_on, out, summary_path)
    else:
        raise ValueError(f"unknown report format {fmt!r}; expected one of {', '.join(FORMATS)}")


def json_schema() -> dict[str, Any]:
    """The JSON Schema of the ``--format json`` document, as shipped inside the package."""
    path = resources.files("analyzer") / "schemas" / "report.schema.json"
    schema: dict[str, Any] = _stdlib_json.loads(path.read_text(encoding="utf-8"))
    return schema


__all__ = ["FORMATS", "Format", "json_schema", "render"]

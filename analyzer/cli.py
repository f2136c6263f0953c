"""The `mqtt-keepalive` command: parse options, call `analyze()`, render, map to an exit code.

Glue only; no analysis happens here. Data goes to stdout (or `-o FILE`); the summary, warnings and
errors go to stderr. Exit codes: 0 clean, 1 findings at or above `--fail-on`, 2 unusable input,
options or rule pack, 4 an internal error (a bug).
"""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager
from enum import Enum
from pathlib import Path
from typing import Annotated, Iterator, TextIO

import typer

from analyzer._version import __version__
from analyzer.engine import Options, analyze
from analyzer.errors import AnalyzerError
from analyzer.model import Report, Severity
from analyzer.ruleset import load_ruleset

ISSUES_URL = "see README.md, Reporting bugs"

app = typer.Typer(
    name="mqtt-keepalive",
    help="Check MQTT Keep Alive compliance of clients and brokers from packet captures.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


class OutputFormat(str, Enum):
    table = "table"
    json = "json"
    jsonl = "jsonl"
    csv = "csv"


class FailOn(str, Enum):
    error = "error"
    warning = "warning"
    info = "info"
    never = "never"

    @property
    def severity(self) -> Severity | None:
        return None if self is FailOn.never else Severity.parse(self.value)


class CsvTable(str, Enum):
    findings = "findings"
    sessions = "sessions"


Captures = Annotated[list[str], typer.Argument(
    help="pcap or pcapng files (gzip/bz2/xz too), directories of them, or - for stdin.",
    show_default=False)]
Ports = Annotated[list[int], typer.Option(
    "--port", "-p", help="TCP port carrying MQTT (repeatable). Any port is also recognised when "
    "a connection opens with an MQTT CONNECT.", min=1, max=65535)]
AssumeKeepAlive = Annotated[int | None, typer.Option(
    "--assume-keep-alive", metavar="SECONDS", min=0, max=65535,
    help="Keep Alive to judge sessions whose CONNECT is not in the capture.")]
Output = Annotated[Path | None, typer.Option(
    "--output", "-o", help="Write the report to this file instead of stdout.", dir_okay=False)]


def _version(value: bool) -> None:
    if value:
        typer.echo(f"mqtt-keepalive {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: Annotated[bool, typer.Option(
        "--version", callback=_version, is_eager=True, help="Print the version and exit.")] = False) -> None:
    """Check MQTT Keep Alive compliance of clients and brokers from packet captures."""


@app.command("analyze")
def analyze_command(
    captures: Captures,
    fmt: Annotated[OutputFormat, typer.Option("--format", "-f", help="Report format.")] = OutputFormat.table,
    output: Output = None,
    port: Ports = [1883],  # noqa: B006 - typer reads the default from here
    assume_keep_alive: AssumeKeepAlive = None,
    fail_on: Annotated[FailOn, typer.Option(
        "--fail-on", help="Exit 1 when a finding is at least this severe.")] = FailOn.error,
    table: Annotated[CsvTable, typer.Option(
        "--table", help="Which table --format csv writes.")] = CsvTable.findings,
) -> None:
    """Analyse captures and report every keep-alive violation with its evidence."""
    report = _run(captures, port, assume_keep_alive)
    from analyzer.report import render

    with _sink(output) as out, _reader_may_leave(report.exit_code(fail_on.severity)):
        render(report, fmt.value, out, fail_on.severity, table=table.value,
               console=_console(out, output))
    _finish(report, fail_on.severity)


@app.command("sessions")
def sessions_command(
    captures: Captures,
    output: Output = None,
    port: Ports = [1883],  # noqa: B006
    assume_keep_alive: AssumeKeepAlive = None,
    fmt: Annotated[OutputFormat, typer.Option(
        "--format", "-f", help="table, or csv/json/jsonl for the sessions only.")] = OutputFormat.table,
) -> None:
    """List the MQTT sessions in captures: client, client id, version, keep-alive, how it ended."""
    report = _run(captures, port, assume_keep_alive)
    with _sink(output) as out, _reader_may_leave(2 if any(c.error for c in report.captures) else 0):
        _render_sessions(report, fmt, out, output)
    _warn_about_captures(report)
    raise typer.Exit(2 if any(c.error for c in report.captures) else 0)


def _render_sessions(report: Report, fmt: OutputFormat, out: TextIO, output: Path | None) -> None:
    if fmt is OutputFormat.table:
        from analyzer.report.console import render_sessions

        render_sessions(report, _console(out, output))
    elif fmt is OutputFormat.csv:
        from analyzer.report.csv import render_csv

        render_csv(report, out, table="sessions")
    else:
        from analyzer.report.json import dumps
        from analyzer.report.records import session_record

        records = [session_record(s) for s in report.sessions]
        if fmt is OutputFormat.json:
            out.write(dumps(records, indent=2) + "\n")
        else:
            out.writelines(dumps({"type": "session", **r}) + "\n" for r in records)


def _run(captures: list[str], ports: list[int], assume_keep_alive: int | None) -> Report:
    try:
        options = Options(ports=frozenset(ports), assume_keep_alive_s=assume_keep_alive,
                          ruleset=load_ruleset())
        return analyze(captures, options)
    except AnalyzerError as exc:
        _error(str(exc))
        raise typer.Exit(exc.exit_code) from None


def _finish(report: Report, fail_on: Severity | None) -> None:
    from analyzer.report.console import summary_line

    _warn_about_captures(report)
    typer.echo(summary_line(report, fail_on), err=True)
    raise typer.Exit(report.exit_code(fail_on))


def _warn_about_captures(report: Report) -> None:
    for warning in report.warnings:
        typer.echo(f"warning: {warning}", err=True)
    for capture in report.captures:
        for warning in capture.warnings:
            typer.echo(f"warning: {capture.path}: {warning}", err=True)
        if capture.error:
            _error(f"{capture.path}: {capture.error}")


def _error(message: str) -> None:
    typer.echo(f"error: {message}", err=True)


@contextmanager
def _reader_may_leave(exit_code: int) -> Iterator[None]:
    """`... | head` closes stdout early: stop writing, and exit as the verdict says (click would
    exit 1, which here means findings)."""
    try:
        yield
    except BrokenPipeError:
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - silences the flush at exit
        raise typer.Exit(exit_code) from None


@contextmanager
def _sink(output: Path | None) -> Iterator[TextIO]:
    if output is None:
        yield sys.stdout
        return
    try:
        with output.open("w", encoding="utf-8", newline="") as fh:
            yield fh
    except OSError as exc:
        _error(f"cannot write {output}: {exc.strerror}")
        raise typer.Exit(2) from None


def _console(out: TextIO, output: Path | None):  # noqa: ANN202 - rich is imported lazily
    from rich.console import Console

    return Console(file=out, force_terminal=False if output else None,
                   width=160 if output or not out.isatty() else None)


def main() -> None:
    """Console entry point: a bug becomes exit 4 with a short note, never a traceback with locals."""
    try:
        app()
    except SystemExit:
        raise
    except KeyboardInterrupt:
        _error("interrupted")
        sys.exit(130)
    except Exception as exc:  # noqa: BLE001 - the last line of defence
        _error(f"internal error ({type(exc).__name__}: {exc}); this is a bug in mqtt-keepalive "
               f"{__version__}: please report it on the project's issue tracker ({ISSUES_URL}) "
               "with the command line; MQTT_KEEPALIVE_DEBUG=1 shows the traceback")
        if _debug():
            raise
        sys.exit(4)


def _debug() -> bool:
    return os.environ.get("MQTT_KEEPALIVE_DEBUG") == "1"

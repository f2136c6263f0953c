"""`analyze` (a readable report, exit 0/1/2) and `sessions` (one line per MQTT session)."""

from __future__ import annotations

from typing import TextIO

import typer

from analyzer.cli.common import (
    AssumeKeepAlive,
    Captures,
    CsvTable,
    EXTRAS,
    Dask,
    FailOn,
    FailOnOpt,
    Format,
    Jobs,
    Html,
    Junit,
    Output,
    OutputFormat,
    Ports,
    Profile,
    Rules,
    Table,
    TlsKeylog,
    app,
    console,
    html_around,
    reader_may_leave,
    render_report,
    require_parquet_output,
    run_analysis,
    settings,
    severity,
    sink,
    warn_about_captures,
    write_junit,
    write_parquet,
)
from analyzer.model import Report, Severity


@app.command("analyze", epilog=EXTRAS)
def analyze_command(
    ctx: typer.Context,
    captures: Captures,
    fmt: Format = OutputFormat.table,
    output: Output = None,
    port: Ports = [1883, 8883],  # noqa: B006 - typer reads the default from here
    assume_keep_alive: AssumeKeepAlive = None,
    fail_on: FailOnOpt = FailOn.error,
    table: Table = CsvTable.findings,
    rules: Rules = "default",
    profile: Profile = None,
    junit: Junit = None,
    html: Html = None,
    jobs: Jobs = None,
    dask: Dask = None,
    tls_keylog: TlsKeylog = [],  # noqa: B006 - typer reads the default from here
) -> None:
    """Analyse captures and report every keep-alive violation with its evidence."""
    s = settings(ctx, fmt=fmt, output=output, port=port, assume_keep_alive=assume_keep_alive,
                 fail_on=fail_on, table=table, rules=rules, profile=profile, junit=junit, html=html, jobs=jobs,
                 dask=dask, tls_keylog=tls_keylog, columnar=False)
    require_parquet_output(s)
    report = run_analysis(captures, s)
    fail = severity(s["fail_on"])
    write_junit(report, s["junit"], fail)
    with html_around(report, s, captures):
        render_report(report, s, report.exit_code(fail))
    finish(report, fail)


def finish(report: Report, fail_on: Severity | None) -> None:
    from analyzer.report.console import summary_line

    warn_about_captures(report)
    typer.echo(summary_line(report, fail_on), err=True)
    raise typer.Exit(report.exit_code(fail_on))


@app.command("sessions")
def sessions_command(
    ctx: typer.Context,
    captures: Captures,
    output: Output = None,
    port: Ports = [1883, 8883],  # noqa: B006
    assume_keep_alive: AssumeKeepAlive = None,
    fmt: Format = OutputFormat.table,
    tls_keylog: TlsKeylog = [],  # noqa: B006
) -> None:
    """List the MQTT sessions in captures: client, client id, version, keep-alive, how it ended."""
    s = settings(ctx, port=port, assume_keep_alive=assume_keep_alive, tls_keylog=tls_keylog, columnar=False)
    s.values.update(rules="default", profile=None, jobs=None)
    if fmt is OutputFormat.github:
        typer.echo("error: sessions has no github format (table, json, jsonl, csv or parquet)", err=True)
        raise typer.Exit(2)
    target = str(output) if output else None
    s.values.update(format=fmt.value, output=target)
    require_parquet_output(s)
    report = run_analysis(captures, s)
    code = 2 if any(c.error for c in report.captures) else 0
    if fmt is OutputFormat.parquet:
        write_parquet(report, str(target), ("sessions",))
        warn_about_captures(report)
        raise typer.Exit(code)
    with sink(target) as out, reader_may_leave(code):
        _render_sessions(report, fmt, out, target is not None)
    warn_about_captures(report)
    raise typer.Exit(code)


def _render_sessions(report: Report, fmt: OutputFormat, out: TextIO, to_file: bool) -> None:
    if fmt is OutputFormat.table:
        from analyzer.report.console import render_sessions

        render_sessions(report, console(out, to_file))
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

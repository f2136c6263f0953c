"""`check`: the CI gate. Exit 0 pass, 1 findings at or above `--fail-on`, 2 unusable input, options
or rule pack, 3 no MQTT session at all (unless `--allow-empty`), 4 internal error; `--exit-zero`
turns 1 and 3 into 0, never 2.

Under GitHub Actions (`GITHUB_ACTIONS=true`) the worst findings also become annotations on stdout
and a Markdown summary is appended to `$GITHUB_STEP_SUMMARY`, whatever `--format` says.
"""

from __future__ import annotations

import glob
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import typer

from analyzer import config
from analyzer.cli.common import (
    AllowEmpty,
    AssumeKeepAlive,
    Captures,
    CsvTable,
    EXTRAS,
    Dask,
    ExitZero,
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
    Quiet,
    Rules,
    Table,
    TlsKeylog,
    app,
    error,
    html_around,
    jobs as processes,
    render_report,
    require_parquet_output,
    run_analysis,
    settings,
    severity,
    warn_about_captures,
    write_junit,
)
from analyzer.model import Report, Severity

EMPTY = 3


@app.command("check", epilog=EXTRAS)
def check_command(
    ctx: typer.Context,
    captures: Captures,
    rules: Rules = "default",
    profile: Profile = None,
    port: Ports = [1883, 8883],  # noqa: B006 - typer reads the default from here
    assume_keep_alive: AssumeKeepAlive = None,
    fail_on: FailOnOpt = FailOn.error,
    junit: Junit = None,
    html: Html = None,
    fmt: Format = OutputFormat.table,
    output: Output = None,
    table: Table = CsvTable.findings,
    allow_empty: AllowEmpty = False,
    exit_zero: ExitZero = False,
    jobs: Jobs = None,
    dask: Dask = None,
    quiet: Quiet = False,
    tls_keylog: TlsKeylog = [],  # noqa: B006 - typer reads the default from here
) -> None:
    """Gate a CI job on captures: files, directories (recursive) and globs (quote them: '**' works)."""
    s = settings(ctx, rules=rules, profile=profile, port=port, assume_keep_alive=assume_keep_alive,
                 fail_on=fail_on, junit=junit, html=html, fmt=fmt, output=output, table=table,
                 allow_empty=allow_empty, exit_zero=exit_zero, jobs=jobs, dask=dask, quiet=quiet,
                 tls_keylog=tls_keylog, columnar=False)
    require_parquet_output(s)
    paths = expand_globs(captures)
    workers = (f"on the Dask cluster {s['dask']}" if s["dask"]
               else f"with {_count([0] * processes(s), 'job')}")
    with progress(not s["quiet"], f"analysing {_count(paths)} {workers}") as advance:
        report = run_analysis(paths, s, advance)
    fail = severity(s["fail_on"])
    code = gate_code(report, fail, s["allow_empty"])
    final = 0 if s["exit_zero"] and code in (1, EMPTY) else code
    report = report.gated(final)
    write_junit(report, s["junit"], fail)
    with html_around(report, s, paths):
        render_report(report, s, final)
    github_outputs(report, s)
    _messages(report, s, code, final)
    raise typer.Exit(final)


def expand_globs(args: list[str]) -> list[str]:
    """Expand glob patterns (`**` recursive), sorted; a pattern matching nothing is exit 2. Paths
    that exist, and URLs (`s3://b/*.pcap`: listed by `--dask`), are kept as given (a file may be named `a[1].pcap`); duplicates are dropped."""
    out: list[str] = []
    for arg in args:
        if arg != "-" and "://" not in arg and glob.has_magic(arg) and not os.path.lexists(arg):
            matches = sorted(glob.glob(arg, recursive=True))
            if not matches:
                error(f"{arg}: no file matches this pattern")
                raise typer.Exit(2)
            out += matches
        else:
            out.append(arg)
    return list(dict.fromkeys(out))


def gate_code(report: Report, fail_on: Severity | None, allow_empty: bool) -> int:
    """The engine's 0/1/2, or 3 when a clean run found no MQTT session at all."""
    code = report.exit_code(fail_on)
    if code == 0 and not report.sessions and not allow_empty:
        return EMPTY
    return code


def _count(paths: list[str], what: str = "input") -> str:
    return f"{len(paths)} {what}" + ("" if len(paths) == 1 else "s")


@contextmanager
def progress(wanted: bool, text: str) -> Iterator[Callable[[int, int], None] | None]:
    """A bar by bytes read on stderr, only for a person watching: not with `-q`, not when stderr is
    not a terminal, not when `CI` is set. Yields the engine's progress callback (or None)."""
    if not wanted or not sys.stderr.isatty() or os.environ.get("CI"):
        yield None
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn, DownloadColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn,
    )

    with Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
                  TimeElapsedColumn(), TimeRemainingColumn(), console=Console(stderr=True),
                  transient=True) as bar:
        task = bar.add_task(text, total=None)
        yield lambda done, total: bar.update(task, completed=done, total=total or None)


def github_outputs(report: Report, s: config.Resolved) -> None:
    """Under GitHub Actions, when the report itself is not already in the github format: the
    annotations on stdout (unless the report is data on stdout they would corrupt) and the job
    summary appended to `$GITHUB_STEP_SUMMARY`."""
    if os.environ.get("GITHUB_ACTIONS") != "true" or s["format"] == "github":
        return
    from analyzer.report import github

    fail = severity(s["fail_on"])
    if s["output"] is None and s["format"] != "table":
        typer.echo("note: no GitHub annotations, the report is on stdout; use -o FILE", err=True)
    else:
        # mypy mistakes the function for github.py's own `from __future__ import annotations`
        for line in github.annotations(report, fail):  # type: ignore[operator]
            typer.echo(line)
    summary = os.environ.get("GITHUB_STEP_SUMMARY")
    if summary:
        try:
            with open(summary, "a", encoding="utf-8", newline="\n") as fh:
                fh.write(github.step_summary(report, fail))
        except OSError as exc:
            error(f"cannot append the job summary to {summary}: {exc.strerror}")


def _messages(report: Report, s: config.Resolved, code: int, final: int) -> None:
    from analyzer.report.console import summary_line

    warn_about_captures(report)
    if code == EMPTY:
        ports = ",".join(map(str, s["port"]))
        error(f"no MQTT session found in {_count([c.path for c in report.captures], 'capture')}: no CONNECT "
              f"and no TCP traffic on port {ports} (--port N); --allow-empty accepts this")
    if not s["quiet"]:
        zeroed = " (--exit-zero)" if final != code else ""
        typer.echo(summary_line(report, severity(s["fail_on"])) + zeroed, err=True)

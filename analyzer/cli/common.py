"""What the commands share: the typer app, option definitions, settings, rule sets and output sinks.

Glue only; no analysis happens in `analyzer.cli`. Data goes to stdout (or `-o FILE`); the summary,
warnings and errors go to stderr. Option values come from the command line, the environment or a
project file (`analyzer.config`); a command names the settings it takes with the same words as its
parameters (`fmt` is the `format` setting).
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, NoReturn, TextIO

import typer

from analyzer import config
from analyzer._version import __version__
from analyzer.engine import Options, analyze
from analyzer.errors import AnalyzerError
from analyzer.model import Report, Severity
from analyzer.ruleset import RuleSet, load_ruleset

app = typer.Typer(
    name="mqtt-keepalive",
    help="Check MQTT Keep Alive compliance of clients and brokers from packet captures.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


EXTRAS = ("Optional extras: --html needs pip install 'mqtt-keepalive\\[html]', --dask needs pip "
          "install 'mqtt-keepalive\\[dask]'.")
"""The commands' epilog: the install commands whole at any width (in an option's narrow help
column rich cuts a long word short). Brackets escaped: rich would read them as markup."""


class OutputFormat(str, Enum):
    table = "table"
    json = "json"
    jsonl = "jsonl"
    csv = "csv"
    github = "github"
    parquet = "parquet"


class FailOn(str, Enum):
    error = "error"
    warning = "warning"
    info = "info"
    never = "never"


class CsvTable(str, Enum):
    findings = "findings"
    sessions = "sessions"
    clients = "clients"


def severity(fail_on: str) -> Severity | None:
    """`--fail-on` as a severity; None for `never`."""
    return None if fail_on == "never" else Severity.parse(fail_on)


_ENV = "Env: MQTT_KEEPALIVE_{}."

Captures = Annotated[list[str], typer.Argument(
    help="pcap or pcapng files (gzip/bz2/xz too), directories of them, or - for stdin.",
    show_default=False)]
Ports = Annotated[list[int], typer.Option(
    "--port", "-p", help="TCP port carrying MQTT, plain, over TLS or over WebSocket (repeatable; "
    "replaces the default 1883 and 8883). Any port is also recognised when a connection opens "
    "with an MQTT CONNECT, a WebSocket upgrade to mqtt, or a TLS ClientHello offering the mqtt "
    "ALPN. " + _ENV.format("PORT (1883,8884)"),
    min=1, max=65535)]
AssumeKeepAlive = Annotated[int | None, typer.Option(
    "--assume-keep-alive", metavar="SECONDS", min=0, max=65535,
    help="Keep Alive to judge sessions whose CONNECT is not in the capture.")]
Output = Annotated[Path | None, typer.Option(
    "--output", "-o", help="Write the report to this file instead of stdout (with --format "
    "parquet: a directory, required).")]
Format = Annotated[OutputFormat, typer.Option("--format", "-f", help="Report format.")]
FailOnOpt = Annotated[FailOn, typer.Option(
    "--fail-on", help="Exit 1 when a finding is at least this severe. " + _ENV.format("FAIL_ON"))]
Table = Annotated[CsvTable, typer.Option("--table", help="Which table --format csv writes.")]
Rules = Annotated[str, typer.Option(
    "--rules", metavar="PACK", help="Rule pack: a built-in id (default, ci-strict) or a TOML file. "
    + _ENV.format("RULES"))]
Profile = Annotated[str | None, typer.Option(
    "--profile", metavar="ID|PATH", show_default="the pack's, else spec",
    help="Broker profile to judge the broker against: a built-in id (mqtt-keepalive rules "
    "profiles) or a TOML file.")]
Junit = Annotated[Path | None, typer.Option(
    "--junit", metavar="FILE", dir_okay=False,
    help="Also write a JUnit XML report here (always written, even when everything passes).")]
Html = Annotated[Path | None, typer.Option(
    "--html", metavar="FILE", dir_okay=False,
    help="Also write a self-contained HTML report here: overview, and each session with findings "
    "drawn against its deadlines (needs the html extra: see below).")]
Jobs = Annotated[int | None, typer.Option(
    "--jobs", "-j", min=1, show_default="one per core",
    help="Analyse this many files in parallel processes.")]
Dask = Annotated[str | None, typer.Option(
    "--dask", metavar="ADDRESS",
    help="Analyse the files on this Dask distributed cluster (its scheduler, tcp://host:8786) "
    "instead of local processes; workers must see the captures (shared storage or fsspec URLs). "
    "Needs the dask extra: see below. " + _ENV.format("DASK"))]
AllowEmpty = Annotated[bool, typer.Option(
    "--allow-empty/--no-allow-empty", help="Pass (exit 0) when no MQTT session is found.")]
ExitZero = Annotated[bool, typer.Option(
    "--exit-zero/--no-exit-zero", help="Exit 0 on findings and on no session (never on exit 2).")]
TlsKeylog = Annotated[list[str], typer.Option(
    "--tls-keylog", metavar="FILE", show_default=False,
    help="Decrypt MQTT over TLS with this SSLKEYLOGFILE key log (repeatable: one per client, "
    "merged). Needs tshark (apt-get install tshark). Without it, TLS connections are judged "
    "without their contents. " + _ENV.format("TLS_KEYLOG (a.keys:b.keys)"))]
Quiet = Annotated[bool, typer.Option(
    "--quiet/--no-quiet", "-q", help="No progress display and no summary line on stderr.")]

_SETTING_OF_PARAM = {"fmt": "format"}


def _version(value: bool) -> None:
    if value:
        typer.echo(f"mqtt-keepalive {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: Annotated[bool, typer.Option(
        "--version", callback=_version, is_eager=True, help="Print the version and exit.")] = False) -> None:
    """Check MQTT Keep Alive compliance of clients and brokers from packet captures."""


# -- settings ---------------------------------------------------------------------------------------


def settings(ctx: typer.Context, **params: Any) -> config.Resolved:
    """Resolve the settings named by `params` (the command's parameters): a value typed on the
    command line wins, else the environment, the project file, the default."""
    given = {}
    for param, value in params.items():
        source = ctx.get_parameter_source(param)
        if source is not None and source.name == "COMMANDLINE":  # typer may vendor its own click
            given[_SETTING_OF_PARAM.get(param, param)] = _plain(value)
    names = [_SETTING_OF_PARAM.get(p, p) for p in params]
    try:
        resolved = config.resolve(names, given)
    except AnalyzerError as exc:
        fail(exc)
    for warning in resolved.warnings:
        typer.echo(f"warning: {warning}", err=True)
    return resolved


def _plain(value: Any) -> Any:
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, list):
        return tuple(value)
    return value


def load_rules(pack: str, profile: str | None) -> RuleSet:
    try:
        return load_ruleset(pack, profile)
    except AnalyzerError as exc:
        fail(exc)


def analysis_options(s: config.Resolved) -> Options:
    """Engine options from the resolved settings (exit 2 on a bad rule pack or key log)."""
    return Options(ports=frozenset(s["port"]), assume_keep_alive_s=s["assume_keep_alive"],
                   ruleset=load_rules(s["rules"], s["profile"]),
                   tls_keylogs=tls_keylogs(s.values.get("tls_keylog", ())),
                   columnar=s.values.get("columnar"))


def tls_keylogs(paths: tuple[str, ...]) -> tuple[str, ...]:
    """The `--tls-keylog` files, each checked before any capture is read: a key log that is not
    there is a mistake in the command line (exit 2), not a reason to judge TLS without keys. So is
    asking for decryption without tshark, which does it: the message says what to install (the
    Python API, given key logs and no tshark, judges TLS without its contents and warns)."""
    if paths:
        from analyzer.tls.decrypt import find_tshark

        try:
            find_tshark()
        except AnalyzerError as exc:
            fail(exc)
    for path in paths:
        if not os.path.isfile(path):
            what = "is not a file" if os.path.exists(path) else "no such file"
            error(f"--tls-keylog {path}: {what}")
            raise typer.Exit(2)
        if not os.access(path, os.R_OK):
            error(f"--tls-keylog {path}: cannot be read (permission denied)")
            raise typer.Exit(2)
    if paths:  # a file with no secret at all is the wrong file: say so whether or not TLS shows up
        from analyzer.tls.decrypt import merge_keylogs

        with tempfile.TemporaryDirectory(prefix="mqtt-keepalive-") as scratch:
            try:
                merge_keylogs(paths, Path(scratch) / "keys.log")
            except AnalyzerError as exc:
                fail(exc)
    return tuple(paths)


def jobs(s: config.Resolved) -> int:
    """The processes a command may use: `--jobs`, by default one per core; 1 for a command that
    takes no `--jobs`."""
    if "jobs" not in s.values:
        return 1
    return s["jobs"] or config.default_jobs()


def run_analysis(captures: list[str], s: config.Resolved,
                 progress: Callable[[int, int], None] | None = None) -> Report:
    """The engine over `captures` with the resolved settings (exit 2 on a bad rule pack)."""
    options = analysis_options(s)
    try:
        return analyze(captures, options, jobs(s), progress,
                       dask_address=s.values.get("dask"))
    except AnalyzerError as exc:
        fail(exc)


# -- messages and exits ---------------------------------------------------------------------------


def error(message: str) -> None:
    typer.echo(f"error: {message}", err=True)


def fail(exc: AnalyzerError) -> NoReturn:
    """Report a usage, config or rule-pack error and exit with its code (2)."""
    error(str(exc))
    raise typer.Exit(exc.exit_code) from None


def warn_about_captures(report: Report) -> None:
    for warning in report.warnings:
        typer.echo(f"warning: {warning}", err=True)
    for capture in report.captures:
        for warning in capture.warnings:
            typer.echo(f"warning: {capture.path}: {warning}", err=True)
        if capture.error:
            error(f"{capture.path}: {capture.error}")


@contextmanager
def reader_may_leave(exit_code: int) -> Iterator[None]:
    """`... | head` closes stdout early: stop writing, and exit as the verdict says (click would
    exit 1, which here means findings)."""
    try:
        yield
    except BrokenPipeError:
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - silences the flush at exit
        raise typer.Exit(exit_code) from None


@contextmanager
def sink(output: str | None) -> Iterator[TextIO]:
    """stdout, or the file `output` (exit 2 when it cannot be written)."""
    if output is None:
        yield sys.stdout
        return
    try:
        with open(output, "w", encoding="utf-8", newline="") as fh:
            yield fh
    except OSError as exc:
        error(f"cannot write {output}: {exc.strerror}")
        raise typer.Exit(2) from None


def console(out: TextIO, to_file: bool):  # noqa: ANN201 - rich is imported lazily
    from rich.console import Console

    return Console(file=out, force_terminal=False if to_file else None,
                   width=160 if to_file or not out.isatty() else None)


def render_report(report: Report, s: config.Resolved, exit_code: int) -> None:
    """The report in `--format` to stdout or `-o`; the github format appends its job summary to
    `$GITHUB_STEP_SUMMARY` when that is set."""
    from analyzer.report import render

    if s["format"] == "parquet":
        write_parquet(report, s["output"])
        return
    with sink(s["output"]) as out, reader_may_leave(exit_code):
        render(report, s["format"], out, severity(s["fail_on"]), table=s["table"],
               console=console(out, s["output"] is not None),
               summary_path=os.environ.get("GITHUB_STEP_SUMMARY") or None,
               jobs=jobs(s))


def require_parquet_output(s: config.Resolved) -> None:
    """`--format parquet` writes a directory: without `-o DIR` it is exit 2, before any analysis."""
    if s["format"] == "parquet" and s["output"] is None:
        error("--format parquet writes a directory of Parquet files: give it with -o DIR")
        raise typer.Exit(2)


def write_parquet(report: Report, directory: str, tables: tuple[str, ...] = ("sessions", "findings")) -> None:
    """`--format parquet -o DIR`: DIR/sessions.parquet and DIR/findings.parquet."""
    from analyzer.report.parquet import write_parquet as write

    try:
        write(report, directory, tables)
    except AnalyzerError as exc:
        fail(exc)
    except OSError as exc:
        error(f"cannot write {directory}: {exc.strerror or exc}")
        raise typer.Exit(2) from None


@contextmanager
def html_around(report: Report, s: config.Resolved, inputs: list[str]) -> Iterator[None]:
    """`--html FILE` around the writing of the main report: the overview and, re-read from the
    captures (`inputs`: what the report was made from, so that a rotation's files are read
    together again), the packets of the sessions drawn in detail (the report itself keeps no
    per-packet data). With more than one process (`--jobs`), the captures are re-read by another
    process, started before the main report is written, while this one writes it and then makes
    the rest of the page. The page is written also when the main report stopped early (a reader
    that left, an output that could not be written); not when the run is interrupted."""
    path = s["html"]
    if path is None:
        yield
        return
    from functools import partial

    from analyzer.errors import ConfigError
    from analyzer.report.html import charts, collect_timelines, detail_sessions, render_html
    from analyzer.report.parallel import Background, in_background

    def page(timelines: Background | None) -> None:
        try:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            with open(path, "w", encoding="utf-8") as fh:
                render_html(report, fh, timelines=timelines)
        except ConfigError as exc:
            fail(exc)
        except OSError as exc:
            error(f"cannot write {path}: {exc.strerror}")
            raise typer.Exit(2) from None

    timelines: Background | None = None
    try:
        try:
            charts.load_plotly()  # (before the captures are read again for nothing)
        except ConfigError as exc:
            fail(exc)
        chosen, _left_out = detail_sessions(report)
        work = partial(collect_timelines, inputs, analysis_options(s),
                       {x.session_id for x in chosen}, known=chosen)
        timelines = in_background(work, "timelines", fork=jobs(s) > 1)
        try:
            yield
        except typer.Exit:
            page(timelines)
            raise
        page(timelines)
    finally:
        if timelines is not None:
            timelines.cancel()


def write_junit(report: Report, path: str | None, fail_on: Severity | None) -> None:
    """`--junit FILE`: written whatever the verdict; missing parent directories are created."""
    if path is None:
        return
    from analyzer.report.junit import render_junit

    try:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w", encoding="utf-8", newline="\n") as fh:
            render_junit(report, fail_on, fh)
    except OSError as exc:
        error(f"cannot write {path}: {exc.strerror}")
        raise typer.Exit(2) from None

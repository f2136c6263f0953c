"""`live`: watch MQTT keep-alive as it happens, from an interface or a capture stream on a pipe.

Glue only: the source (`analyzer.sources.live`, `analyzer.sources.stream`) and the runner
(`analyzer.live`) do the work; this module picks the outputs. Live findings go out as they become
certain: JSONL records on stdout (with `--format jsonl`, or when stdout is not a terminal), or on a
terminal a table of open sessions with the findings printed above it. The final report comes at
the end, in the same formats and with the same exit codes as `analyze`.
"""

from __future__ import annotations

import signal
import sys
import time
from pathlib import Path
from typing import Annotated, Any, TextIO

import typer

from analyzer.cli.common import (
    AssumeKeepAlive,
    CsvTable,
    FailOn,
    FailOnOpt,
    Format,
    Output,
    OutputFormat,
    Ports,
    Profile,
    Quiet,
    Rules,
    app,
    error,
    load_rules,
    reader_may_leave,
    render_report,
    settings,
    severity,
    warn_about_captures,
)
from analyzer.engine import Options
from analyzer.errors import InputError
from analyzer.model import Finding, Session

NS = 1_000_000_000

Interface = Annotated[str | None, typer.Option(
    "--interface", "-i", metavar="IFACE",
    help="Capture on this interface (Linux; `any` for all). Needs CAP_NET_RAW (root).")]
Read = Annotated[str | None, typer.Option(
    "--read", "-r", metavar="FILE|-",
    help="Read a pcap/pcapng stream as it arrives: - for stdin (tcpdump -U -w - ... |), or a FIFO.")]
Bpf = Annotated[str | None, typer.Option(
    "--bpf", metavar="EXPR", help="Extra capture filter for -i, ANDed with the port filter.")]
Duration = Annotated[str | None, typer.Option(
    "--duration", "-d", metavar="TIME", help="Stop after this long (30s, 10m, 2h, 1h30m).")]
Write = Annotated[Path | None, typer.Option(
    "--write", "-w", metavar="FILE", dir_okay=False,
    help="Keep the captured MQTT traffic in this file (pcapng if it ends in .pcapng, else pcap) "
    "for `analyze`.")]


@app.command("live")
def live_command(
    ctx: typer.Context,
    interface: Interface = None,
    read: Read = None,
    port: Ports = [1883, 8883],  # noqa: B006 - typer reads the default from here
    bpf: Bpf = None,
    fmt: Format = OutputFormat.table,
    output: Output = None,
    duration: Duration = None,
    write: Write = None,
    assume_keep_alive: AssumeKeepAlive = None,
    fail_on: FailOnOpt = FailOn.error,
    rules: Rules = "default",
    profile: Profile = None,
    quiet: Quiet = False,
) -> None:
    """Watch MQTT keep-alive live: report a missed deadline the moment it passes."""
    s = settings(ctx, fmt=fmt, output=output, port=port, assume_keep_alive=assume_keep_alive,
                 fail_on=fail_on, rules=rules, profile=profile, quiet=quiet)
    s.values.setdefault("table", CsvTable.findings.value)
    if (interface is None) == (read is None):
        _usage("give exactly one source: -i IFACE (capture) or -r FILE|- (a capture stream)")
    final_fmt = s["format"]
    if s.sources.get("format") == "default":
        final_fmt = "table" if sys.stdout.isatty() else "jsonl"
        s.values["format"] = final_fmt
    duration_s = None
    if duration is not None:
        from analyzer.live import parse_duration

        try:
            duration_s = parse_duration(duration)
        except InputError as exc:
            _usage(str(exc))
    options = Options(ports=frozenset(s["port"]), assume_keep_alive_s=s["assume_keep_alive"],
                      ruleset=load_rules(s["rules"], s["profile"]))
    source = _source(interface, read, sorted(s["port"]), bpf)
    writer = None
    if write is not None:
        from analyzer.sources.stream import CaptureWriter

        try:
            writer = CaptureWriter(str(write))
        except InputError as exc:
            source.close()
            _usage(str(exc))

    # Where the live stream goes: JSONL on stdout unless the final report (not JSONL) takes stdout.
    report_on_stdout = s["output"] is None
    stream_jsonl = final_fmt == "jsonl" or not sys.stdout.isatty()
    if report_on_stdout and final_fmt != "jsonl" and not sys.stdout.isatty():
        stream_jsonl = False  # the final report owns stdout: live findings go to stderr as text
    display = None
    if stream_jsonl:
        outputs = _JsonlOutputs(sys.stdout)
    elif sys.stdout.isatty() and not s["quiet"]:
        display = _LiveTable(sys.stdout)
        outputs = display
    else:
        outputs = _TextOutputs(sys.stderr)

    from analyzer.live import LiveRunner

    runner = LiveRunner(source, options, on_finding=outputs.finding, on_session=outputs.session,
                        on_tick=display.tick if display is not None else None,
                        writer=writer, duration_s=duration_s)
    previous = {sig: signal.signal(sig, lambda *_: runner.stop("interrupt"))
                for sig in (signal.SIGINT, signal.SIGTERM)}
    if not s["quiet"]:
        what = f"interface {interface}" if interface else ("stdin" if read == "-" else read)
        typer.echo(f"live: watching {what} (ports {','.join(map(str, sorted(s['port'])))}); "
                   "Ctrl-C ends and prints the report", err=True)
    fail = severity(s["fail_on"])
    try:
        with reader_may_leave(1):
            if display is not None:
                with display:
                    result = runner.run()
            else:
                result = runner.run()
    except InputError as exc:
        error(str(exc))
        raise typer.Exit(2) from None
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    report = result.report
    code = report.exit_code(fail)
    if not s["quiet"]:
        typer.echo(f"live: ended by {result.ended_by}; {source.stats()}", err=True)
    if stream_jsonl and report_on_stdout and final_fmt == "jsonl":
        # findings and sessions already went out one by one: end with the capture and summary
        from analyzer.report.jsonl import write_record
        from analyzer.report.records import capture_record, summary_record

        with reader_may_leave(code):
            for c in report.captures:
                write_record(sys.stdout, "capture", capture_record(c))
            write_record(sys.stdout, "summary", summary_record(report, fail))
    else:
        render_report(report, s, code)
    from analyzer.report.console import summary_line

    warn_about_captures(report)
    if not s["quiet"]:
        typer.echo(summary_line(report, fail), err=True)
    raise typer.Exit(code)


def _usage(message: str) -> None:
    error(message)
    raise typer.Exit(2)


def _source(interface: str | None, read: str | None, ports: list[int], bpf: str | None) -> Any:
    if interface is not None:
        from analyzer.sources.live import InterfaceSource

        source: Any = InterfaceSource(interface, ports, bpf)
    else:
        if bpf:
            _usage("--bpf applies to -i only; filter the stream where it is captured")
        from analyzer.sources.stream import PipeSource

        source = PipeSource(read or "-")
    try:
        source.start()
    except InputError as exc:
        _usage(str(exc))
    return source


# -- outputs ------------------------------------------------------------------------------------


class _JsonlOutputs:
    def __init__(self, out: TextIO) -> None:
        self.out = out

    def finding(self, f: Finding) -> None:
        from analyzer.report.jsonl import write_record
        from analyzer.report.records import finding_record

        write_record(self.out, "finding", finding_record(f))

    def session(self, s: Session) -> None:
        from analyzer.report.jsonl import write_record
        from analyzer.report.records import session_record

        write_record(self.out, "session", session_record(s))


def finding_line(f: Finding) -> str:
    stamp = time.strftime("%H:%M:%S", time.localtime(f.ts_ns / NS))
    who = f.client_id if f.client_id is not None else "?"
    return f"{stamp} {f.severity.label.upper():7} {f.rule_id} {f.rule} client {who!r} " \
           f"frames {f.frames[0]}-{f.frames[1]}: {f.message}"


class _TextOutputs:
    def __init__(self, out: TextIO) -> None:
        self.out = out

    def finding(self, f: Finding) -> None:
        self.out.write(finding_line(f) + "\n")
        self.out.flush()

    def session(self, s: Session) -> None:
        pass


_STYLE = {"error": "bold red", "warning": "yellow", "info": "cyan"}


class _LiveTable:
    """A rich Live table of open sessions; findings are printed above it as they come."""

    BAR = 30

    def __init__(self, out: TextIO) -> None:
        from rich.console import Console
        from rich.live import Live

        self.console = Console(file=out)
        self.live = Live(console=self.console, auto_refresh=False, transient=True)
        self.closed = 0

    def __enter__(self) -> _LiveTable:  # noqa: PYI034
        self.live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.live.__exit__(None, None, None)

    def finding(self, f: Finding) -> None:
        from rich.text import Text

        self.live.console.print(Text(finding_line(f), style=_STYLE.get(f.severity.label, "")))

    def session(self, s: Session) -> None:
        self.closed += 1

    def tick(self, analysis: Any, now_ns: int) -> None:
        from rich.table import Table
        from rich.text import Text

        table = Table(title=f"open MQTT sessions ({self.closed} closed, {analysis.last_frame} frames)",
                      title_justify="left", expand=False)
        for name in ("client id", "client", "K", "since last client packet", "", "state"):
            table.add_column(name)
        for tl in analysis.open_sessions()[-40:]:
            k = tl.keep_alive_s
            since = tl.silent_since_ns
            silent = None if since is None else max(0, now_ns - since) / NS
            bar, state, style = self._bar(silent, k)
            table.add_row(str(tl.client_id or "?"), str(tl.flow.client), "?" if k is None else str(k),
                          bar, "" if silent is None else f"{silent:6.1f} s", Text(state, style=style))
        self.live.update(table, refresh=True)

    def _bar(self, silent: float | None, k: int | None) -> tuple[Any, str, str]:
        from rich.text import Text

        if silent is None:
            return Text(""), "connecting", "dim"
        if not k:
            return Text(""), "no keep-alive" if k == 0 else "K unknown", "dim"
        full = 1.5 * k
        scale = self.BAR / (full * 1.2)
        filled = min(self.BAR, int(silent * scale))
        at_k, at_full = int(k * scale), int(full * scale)
        style = "green" if silent <= k else "yellow" if silent <= full else "red"
        state = "ok" if silent <= k else "late (> K)" if silent <= full else "overdue (> 1.5 K)"
        cells = []
        for i in range(self.BAR):
            ch = "█" if i < filled else ("|" if i in (at_k, at_full) else "·")
            cells.append(ch)
        return Text("".join(cells), style=style), state, style

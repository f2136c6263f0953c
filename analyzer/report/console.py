"""``--format table`` and the ``sessions`` command: the report for a person at a terminal.

The caller owns the Console: it decides colour (a terminal, ``NO_COLOR``, ``--no-color``) and width,
and a Console built with ``force_terminal=False`` writes plain text with no escape codes, which is
what pipes, files and tests get.

Client ids, capture paths and messages are data, some of it from the network, so none of it is ever
parsed as rich markup: every cell is a ``Text`` (never a markup string), and ``printable`` escapes
control and format characters first, because rich strips only a few control codes and passes ESC
through, which would let a client id drive the reader's terminal.
"""

from __future__ import annotations

import unicodedata
from collections import Counter
from collections.abc import Iterable

from rich.console import Console
from rich.table import Table
from rich.text import Text

from analyzer.model import (
    LIKELY,
    CaptureSummary,
    Finding,
    KeepAliveSource,
    Report,
    Session,
    Severity,
)
from analyzer.report.records import severity_counts

VERSION_NAMES: dict[int, str] = {3: "3.1", 4: "3.1.1", 5: "5.0"}
"""CONNECT protocol level -> the MQTT version people know it by."""

SEVERITY_STYLES: dict[Severity, str] = {
    Severity.ERROR: "bold red",
    Severity.WARNING: "yellow",
    Severity.INFO: "cyan",
}

K_MARKS: dict[KeepAliveSource, str] = {
    KeepAliveSource.CONNECT: "",
    KeepAliveSource.CONNACK: " (connack)",
    KeepAliveSource.ASSUMED: " (assumed)",
    KeepAliveSource.INFERRED: " (inferred)",
    KeepAliveSource.UNKNOWN: "",
}
"""Suffix on a keep-alive that did not come from the client's own CONNECT, so it is not misread."""

MAX_CLIENT_ID_CHARS = 64
"""Client ids may be 65535 bytes; a table shows the start, the JSON keeps all of it."""

MISSING = "-"


def printable(value: str, max_chars: int | None = None) -> str:
    """``value`` with control, format and unassigned characters shown as ``\\x..``/``\\u....``.

    Truncated to ``max_chars`` (with an ellipsis) when given, so one hostile value cannot flood a
    table.
    """
    if max_chars is not None and len(value) > max_chars:
        value = value[: max_chars - 1] + "\u2026"
    return "".join(
        (f"\\x{ord(ch):02x}" if ord(ch) < 0x100 else f"\\u{ord(ch):04x}")
        if unicodedata.category(ch)[0] == "C"
        else ch
        for ch in value
    )


def _text(value: object, style: str = "") -> Text:
    """A table cell from any value, never interpreted as markup; None shows as a dim dash."""
    if value is None:
        return Text(MISSING, style="dim")
    return Text(printable(str(value)), style=style)


def client_id_cell(client_id: str | None) -> Text:
    """None (no CONNECT seen) and "" (an empty id, legal in MQTT) must look different."""
    if client_id is None:
        return Text(MISSING, style="dim")
    if client_id == "":
        return Text('""', style="dim")
    return Text(printable(client_id, MAX_CLIENT_ID_CHARS))


def version_name(protocol_level: int | None) -> str:
    """3/4/5 as 3.1/3.1.1/5.0; anything else is shown raw rather than guessed."""
    if protocol_level is None:
        return "?"
    return VERSION_NAMES.get(protocol_level, f"level {protocol_level}")


def keep_alive_cell(s: Session) -> str:
    """Effective keep-alive in seconds, marked with its source unless the CONNECT set it."""
    if s.effective_keep_alive_s is None:
        return "?"
    return f"{s.effective_keep_alive_s}{K_MARKS[s.keep_alive_source]}"


def _num(value: int | None) -> str:
    return MISSING if value is None else str(value)


def _secs(value: float) -> str:
    """Seconds with up to three decimals and no trailing zeros (95.2, 90, 5.006)."""
    return f"{value:.3f}".rstrip("0").rstrip(".")


def severity_cell(f: Finding) -> Text:
    """The severity, with "(likely)" after it when the finding was inferred from encrypted TLS
    record sizes: a reader must not take it for one read from the MQTT packets."""
    cell = Text(f.severity.label, style=SEVERITY_STYLES[f.severity])
    if f.confidence == LIKELY:
        cell.append(" (likely)", style="italic")
    return cell


def frames_cell(f: Finding) -> str:
    first, last = f.frames
    return str(first) if first == last else f"{first}-{last}"


def gap_limit_cell(f: Finding) -> str:
    gap = MISSING if f.gap_s is None else _secs(f.gap_s)
    if f.limit_s is None:
        return MISSING if f.gap_s is None else f"{gap} s"
    return f"{gap} / {_secs(f.limit_s)} s"


def worst_first(findings: Iterable[Finding]) -> list[Finding]:
    """Severity descending, then time, so the reader meets the errors first and in order."""
    return sorted(findings, key=lambda f: (-int(f.severity), f.ts_ns, f.rule_id, f.frames))


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 or word == "info" else f"{n} {word}s"


def summary_line(report: Report, fail_on: Severity | None) -> str:
    """One line for stderr, e.g. ``2 sessions, 1 error, 0 warnings, 0 info -> exit 1``."""
    counts = severity_counts(report.findings)
    parts = [_plural(len(report.sessions), "session")]
    parts += [_plural(n, label) for label, n in counts.items()]
    return f"{', '.join(parts)} -> exit {report.exit_code(fail_on)}"


def _heading(path: str, c: CaptureSummary | None) -> list[Text]:
    """Path and counts of one capture, then its warnings (yellow) and error (red)."""
    head = Text(printable(path), style="bold")
    if c is None:
        return [head + Text("  (no capture summary)", style="dim")]
    facts = (
        f"  {c.format}, {_plural(c.frames, 'frame')}, {_plural(c.tcp_streams, 'TCP stream')}, "
        f"{_plural(c.mqtt_sessions, 'MQTT session')}"
    )
    if c.skipped:
        facts += "; skipped: " + ", ".join(f"{k} {c.skipped[k]}" for k in sorted(c.skipped))
    lines = [head + Text(printable(facts))]
    lines += [Text(f"warning: {printable(w)}", style="yellow") for w in c.warnings]
    if c.error:
        lines.append(Text(f"error: {printable(c.error)}", style="bold red"))
    return lines


def _sessions_table(sessions: list[Session], findings: list[Finding]) -> Table:
    per_session = Counter(f.session_id for f in findings)
    table = Table(title="MQTT sessions", title_justify="left")
    for name in ("Session", "Client", "Client id", "MQTT", "K (s)", "End", "Findings"):
        table.add_column(name, overflow="fold")
    for s in sessions:
        table.add_row(
            _text(s.session_id),
            _text(s.flow.client),
            client_id_cell(s.client_id),
            version_name(s.protocol_level),
            keep_alive_cell(s),
            s.end_reason.value,
            str(per_session[s.session_id]),
        )
    return table


def _findings_table(findings: list[Finding]) -> Table:
    table = Table(title="Findings (worst first)", title_justify="left")
    for name in ("Severity", "Rule", "Client id", "Frames", "Gap / limit", "Message"):
        table.add_column(name, overflow="fold")
    for f in worst_first(findings):
        table.add_row(
            severity_cell(f),
            _text(f"{f.rule_id} {f.rule}"),
            client_id_cell(f.client_id),
            frames_cell(f),
            gap_limit_cell(f),
            _text(f.message),
        )
    return table


def _by_capture(report: Report) -> list[tuple[str, CaptureSummary | None]]:
    """Every capture with its summary, plus any capture that only sessions or findings name."""
    groups: dict[str, CaptureSummary | None] = {c.path: c for c in report.captures}
    named = [s.capture for s in report.sessions] + [f.capture for f in report.findings]
    for path in named:
        groups.setdefault(path, None)
    return list(groups.items())


def render_console(report: Report, fail_on: Severity | None, console: Console) -> None:
    """Per capture: a heading, its sessions, then its findings worst first.

    ``fail_on`` is accepted for symmetry with the other reporters; the verdict line itself
    (``summary_line``) goes to stderr, printed by the CLI for every format.
    """
    del fail_on
    for path, summary in _by_capture(report):
        sessions = [s for s in report.sessions if s.capture == path]
        findings = [f for f in report.findings if f.capture == path]
        for line in _heading(path, summary):
            console.print(line)
        if sessions:
            console.print(_sessions_table(sessions, findings))
        else:
            console.print(Text("no MQTT session", style="dim"))
        if findings:
            console.print(_findings_table(findings))
        else:
            console.print(Text("no findings", style="green"))
        console.print()


def render_sessions(report: Report, console: Console) -> None:
    """The ``sessions`` command: one row per MQTT session with its keep-alive facts."""
    table = Table(title="MQTT sessions", title_justify="left")
    columns = ("Capture", "Session", "Client -> broker", "Client id", "MQTT",
               "K req / server / eff (s)", "CONNECT frame", "End")
    for name in columns:
        table.add_column(name, overflow="fold")
    for s in report.sessions:
        k = f"{_num(s.keep_alive_s)} / {_num(s.server_keep_alive_s)} / {keep_alive_cell(s)}"
        table.add_row(
            _text(s.capture),
            _text(s.session_id),
            _text(f"{s.flow.client} -> {s.flow.server}"),
            client_id_cell(s.client_id),
            version_name(s.protocol_level),
            k,
            _num(s.connect_frame),
            f"{s.end_reason.value} @ {s.end_frame}",
        )
    console.print(table)

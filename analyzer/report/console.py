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
from dataclasses import dataclass, field
from itertools import islice

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

MAX_TABLE_ROWS = 100
"""Rows each table of a capture shows at most: the first sessions, the worst findings. Beyond it
the output says how many it left out and counts the findings by rule; `--format json`, `jsonl` and
`csv` hold every record. So a capture with a hundred thousand findings prints in moments and in
bounded memory rather than building a table no one reads."""

FLEET_CAPTURES = 20
"""A report of more captures than this prints as a fleet (`render_fleet`): a row per capture,
then the worst findings of them all, instead of a heading and two tables per capture. Thousands of
recordings would otherwise print tens of thousands of lines, and laying out rich tables takes
several milliseconds a capture: longer than analysing a small capture."""


def printable(value: str, max_chars: int | None = None) -> str:
    """``value`` with control, format and unassigned characters shown as ``\\x..``/``\\u....``.

    Truncated to ``max_chars`` (with an ellipsis) when given, so one hostile value cannot flood a
    table.
    """
    if max_chars is not None and len(value) > max_chars:
        value = value[: max_chars - 1] + "\u2026"
    if value.isprintable():  # no character of category C (nor a separator but space): as it is
        return value
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


def worst_first_key(f: Finding) -> tuple:
    """Severity descending, then time, so the reader meets the errors first and in order."""
    return (-int(f.severity), f.ts_ns, f.rule_id, f.frames)


def worst_first(findings: Iterable[Finding]) -> list[Finding]:
    """`findings` in `worst_first_key` order (a stable sort: ties keep their order)."""
    return sorted(findings, key=worst_first_key)


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 or word == "info" else f"{n} {word}s"


def summary_line(report: Report, fail_on: Severity | None) -> str:
    """One line for stderr, e.g. ``2 sessions, 1 error, 0 warnings, 0 info -> exit 1``."""
    counts = report.severity_counts()
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
        facts += f"; skipped: {_skipped(c)}"
    lines = [head + Text(printable(facts))]
    lines += [Text(f"warning: {printable(w)}", style="yellow") for w in c.warnings]
    if c.error:
        lines.append(Text(f"error: {printable(c.error)}", style="bold red"))
    return lines


def _skipped(c: CaptureSummary) -> str:
    """The frames a capture skipped, by reason: ``non_tcp 4, truncated 1``."""
    return ", ".join(f"{k} {c.skipped[k]}" for k in sorted(c.skipped))


def _sessions_table(sessions: list[Session], per_session: Counter[str]) -> Table:
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


def _findings_table(ordered: list[Finding], with_session: bool = False) -> Table:
    """`with_session`: a column naming each finding's session (its capture and TCP stream), for
    findings of several captures."""
    table = Table(title="Findings (worst first)", title_justify="left")
    names = ("Severity", "Rule") + ("Session",) * with_session
    for name in names + ("Client id", "Frames", "Gap / limit", "Message"):
        table.add_column(name, overflow="fold")
    for f in ordered:
        where = (_text(f.session_id),) * with_session
        table.add_row(
            severity_cell(f),
            _text(f"{f.rule_id} {f.rule}"),
            *where,
            client_id_cell(f.client_id),
            frames_cell(f),
            gap_limit_cell(f),
            _text(f.message),
        )
    return table


def _rules_table(by_rule: Counter[tuple[int, str, str]]) -> Table:
    table = Table(title="Findings by rule", title_justify="left")
    for name in ("Severity", "Rule", "Findings"):
        table.add_column(name, overflow="fold")
    for (severity, rule_id, rule), n in sorted(by_rule.items(), key=lambda item: (-item[0][0], item[0][1])):
        level = Severity(severity)
        table.add_row(Text(level.label, style=SEVERITY_STYLES[level]), _text(f"{rule_id} {rule}"),
                      str(n))
    return table


@dataclass
class _CaptureView:
    """What the table output shows of one capture, gathered in one pass over the records: the
    first sessions, the worst findings, and counts."""

    summary: CaptureSummary | None
    sessions: list[Session] = field(default_factory=list)
    session_count: int = 0
    worst: list[tuple[tuple, int, Finding]] = field(default_factory=list)
    """(worst-first key, arrival, finding), cut back to the worst `MAX_TABLE_ROWS` now and then."""
    finding_count: int = 0
    per_session: Counter[str] = field(default_factory=Counter)
    """Findings per shown session."""
    by_rule: Counter[tuple[int, str, str]] = field(default_factory=Counter)

    def add_finding(self, f: Finding) -> None:
        self.worst.append((worst_first_key(f), self.finding_count, f))
        self.finding_count += 1
        self.by_rule[(int(f.severity), f.rule_id, f.rule)] += 1
        if f.session_id in self.per_session:
            self.per_session[f.session_id] += 1
        if len(self.worst) >= 4 * MAX_TABLE_ROWS:
            self.worst = self._ordered()

    def _ordered(self) -> list[tuple[tuple, int, Finding]]:
        # the arrival breaks ties, as `worst_first`'s stable sort keeps them in order
        return sorted(self.worst, key=lambda item: item[:2])[:MAX_TABLE_ROWS]

    def worst_findings(self) -> list[Finding]:
        return [f for _key, _seq, f in self._ordered()]


def _by_capture(report: Report) -> dict[str, _CaptureView]:
    """Every capture with what its tables show, plus any capture that only sessions or findings
    name, in that order."""
    views = {c.path: _CaptureView(c) for c in report.captures}
    for s in report.sessions:
        view = views.get(s.capture) or views.setdefault(s.capture, _CaptureView(None))
        view.session_count += 1
        if len(view.sessions) < MAX_TABLE_ROWS:
            view.sessions.append(s)
            view.per_session[s.session_id] = 0
    for f in report.findings:
        view = views.get(f.capture) or views.setdefault(f.capture, _CaptureView(None))
        view.add_finding(f)
    return views


def render_console(report: Report, fail_on: Severity | None, console: Console) -> None:
    """Per capture: a heading, its sessions, then its findings worst first (at most
    `MAX_TABLE_ROWS` of each, then the count of those left out and the findings by rule); more
    than `FLEET_CAPTURES` captures print as a fleet (`render_fleet`).

    ``fail_on`` is accepted for symmetry with the other reporters; the verdict line itself
    (``summary_line``) goes to stderr, printed by the CLI for every format.
    """
    del fail_on
    if len(report.captures) > FLEET_CAPTURES:
        render_fleet(report, console)
        return
    for path, view in _by_capture(report).items():
        for line in _heading(path, view.summary):
            console.print(line)
        if view.sessions:
            console.print(_sessions_table(view.sessions, view.per_session))
            _left_out(console, view.session_count - len(view.sessions), "session")
        else:
            console.print(Text("no MQTT session", style="dim"))
        _print_findings(console, view)
        console.print()


def _print_findings(console: Console, view: _CaptureView, with_session: bool = False) -> None:
    """The worst findings of `view` (at most `MAX_TABLE_ROWS`), then how many were left out and
    all of them by rule; or that there are none."""
    if not view.finding_count:
        console.print(Text("no findings", style="green"))
        return
    shown = view.worst_findings()
    console.print(_findings_table(shown, with_session))
    if view.finding_count > len(shown):
        _left_out(console, view.finding_count - len(shown), "finding")
        console.print(_rules_table(view.by_rule))


@dataclass
class _CaptureRow:
    """One capture's row in the fleet's table."""

    path: str
    summary: CaptureSummary | None
    sessions: int = 0
    findings: Counter[Severity] = field(default_factory=Counter)

    @property
    def unread(self) -> bool:
        """Could not be read whole (or no summary of it was reported)."""
        return self.summary is None or self.summary.error is not None

    @property
    def warned(self) -> bool:
        """Read with warnings (cut short, capture loss, ...)."""
        return self.summary is not None and bool(self.summary.warnings)

    def worst_first_key(self, order: int) -> tuple:
        """How it was read first (not whole, then with warnings: what was found in it may be
        incomplete), then by errors, warnings and info found."""
        return (not self.unread, not self.warned, *(-self.findings[level] for level in _LEVELS),
                order)


_LEVELS = (Severity.ERROR, Severity.WARNING, Severity.INFO)


def render_fleet(report: Report, console: Console) -> None:
    """Many captures (more than `FLEET_CAPTURES`): the fleet's counts, a row per capture worst
    first (`_CaptureRow.worst_first_key`: how it was read, what it holds, what was found in it),
    then the worst findings of all
    of them with their sessions, at most `MAX_TABLE_ROWS` rows of each, and the findings by rule
    when some were left out. Gathered in one pass; memory grows with the captures, not with their
    sessions or findings."""
    rows = {c.path: _CaptureRow(c.path, c) for c in report.captures}
    fleet = _CaptureView(None)
    for s in report.sessions:
        row = rows.get(s.capture) or rows.setdefault(s.capture, _CaptureRow(s.capture, None))
        row.sessions += 1
    for f in report.findings:
        row = rows.get(f.capture) or rows.setdefault(f.capture, _CaptureRow(f.capture, None))
        row.findings[f.severity] += 1
        fleet.add_finding(f)
    ranked = [row for _, row in sorted(enumerate(rows.values()),
                                       key=lambda item: item[1].worst_first_key(item[0]))]
    unread = sum(row.unread for row in ranked)
    warned = sum(row.warned and not row.unread for row in ranked)
    frames = sum(row.summary.frames for row in ranked if row.summary is not None)
    heading = (f"{_plural(len(ranked), 'capture')}, {_plural(frames, 'frame')}, "
               f"{_plural(sum(row.sessions for row in ranked), 'MQTT session')}")
    console.print(Text(heading, style="bold"))
    if unread:
        console.print(Text(f"{unread} could not be read whole (see Notes)", style="bold red"))
    if warned:
        console.print(Text(f"{warned} read with warnings (see Notes)", style="yellow"))
    shown = ranked[:MAX_TABLE_ROWS]
    console.print(_captures_table(shown))
    _left_out(console, len(ranked) - len(shown), "capture")
    _print_findings(console, fleet, with_session=True)
    console.print()


def _captures_table(rows: list[_CaptureRow]) -> Table:
    table = Table(title="Captures (worst first)", title_justify="left")
    for name in ("Capture", "Frames", "MQTT sessions", "Errors", "Warnings", "Info", "Notes"):
        table.add_column(name, overflow="fold")
    for row in rows:
        c = row.summary
        table.add_row(_text(row.path), _num(None if c is None else c.frames), str(row.sessions),
                      *(str(row.findings[level]) for level in _LEVELS), _notes(c))
    return table


def _notes(c: CaptureSummary | None) -> Text:
    """How a capture was read: its error (red), its read warnings (yellow), skipped frames."""
    if c is None:
        return Text("no capture summary", style="dim")
    notes = Text()
    if c.error:
        notes.append(f"error: {printable(c.error)}", style="bold red")
    for warning in c.warnings:
        notes.append(("; " if notes else "") + f"warning: {printable(warning)}", style="yellow")
    if c.skipped:
        notes.append(("; " if notes else "") + f"skipped: {printable(_skipped(c))}")
    return notes


def _left_out(console: Console, n: int, word: str) -> None:
    if n > 0:
        console.print(Text(f"... {_plural(n, 'more ' + word)} not shown (--format json, jsonl or csv "
                           "lists every one)", style="dim"))


SESSIONS_PER_TABLE = 1_000
"""Rows of one table of the ``sessions`` command. rich lays a table out whole: one table of the
6,912 sessions of the 1M-frame benchmark capture took the command from 79 to 106 MiB. More
sessions than this are printed as consecutive tables of this many rows, so memory stays that of
one table however many sessions there are."""


def render_sessions(report: Report, console: Console) -> None:
    """The ``sessions`` command: one row per MQTT session with its keep-alive facts (in tables of
    at most `SESSIONS_PER_TABLE` rows, each titled with the rows it holds when there are several)."""
    total = len(report.sessions)
    sessions = iter(report.sessions)
    done = 0
    while True:
        chunk = list(islice(sessions, SESSIONS_PER_TABLE))
        title = "MQTT sessions"
        if total > SESSIONS_PER_TABLE:
            title += f" {done + 1:,}-{done + len(chunk):,} of {total:,}"
        console.print(_session_list(title, chunk))
        done += len(chunk)
        if done >= total or not chunk:
            return


def _session_list(title: str, sessions: list[Session]) -> Table:
    table = Table(title=title, title_justify="left")
    columns = ("Capture", "Session", "Client -> broker", "Client id", "MQTT",
               "K req / server / eff (s)", "CONNECT frame", "End")
    for name in columns:
        table.add_column(name, overflow="fold")
    for s in sessions:
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
    return table

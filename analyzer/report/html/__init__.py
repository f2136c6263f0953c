"""``--html FILE``: one self-contained HTML page that shows keep-alive problems as pictures.

The page holds plotly.js once (inline), the data of every chart and of the sessions list as JSON
in ``<script type="application/json">`` elements, a stylesheet and a small filter script, so it
opens offline from a file. It is built from the same ``Report`` and clients table
(``tables.clients_frame``) as the other formats, plus optional per-session packet timelines
(``packets.collect_timelines``).

What it shows: an overview (captures, sessions, findings by rule and severity, the worst clients
with each one's longest silence / K, the distribution of Keep Alive values and of gap / K); a
summary row for every session, searchable and filterable by client id, rule and severity; and for
the worst sessions with findings (or every session with ``detail="all"``), at most ``max_charts``
of them, a timeline of the session's heartbeat against its deadlines (``timeline.py``). Charts are
drawn by plotly.js when they scroll into view, so a page with hundreds of them opens quickly.

The CLI's use::

    from analyzer.report.html import collect_timelines, detail_sessions, render_html
    chosen, _ = detail_sessions(report, detail)
    timelines = collect_timelines(paths, options, {s.session_id for s in chosen}, known=chosen)
    with open(path, "w", encoding="utf-8") as out:
        render_html(report, out, timelines=timelines, detail=detail)

plotly is an optional dependency (``pip install 'mqtt-keepalive[html]'``); without it
``render_html`` raises ``ConfigError`` with that advice before writing anything.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import heapq
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, TextIO

import pandas as pd

from analyzer.model import LIKELY, Finding, Report, Session, Severity
from analyzer.report.console import printable, version_name
from analyzer.report.html import charts, page
from analyzer.report.html.page import esc
from analyzer.report.html.timeline import (
    END_TEXT,
    TIMELINE_HEIGHT,
    end_text,
    timeline_figure,
)
from analyzer.report.packets import SessionPackets, collect_timelines
from analyzer.report.records import tool_version
from analyzer.report.tables import ClientsTable

DETAILS = ("findings", "all")
ROWS_AT_ONCE = 2_000
"""Rows of the sessions list made into text at a time."""
MAX_CHARTS = 200
"""Detailed session timelines drawn at most (the worst sessions first)."""
EAGER_CHARTS = 4
"""Session charts drawn at once on load; the others when they scroll into view."""
MAX_CLIENT_ROWS = 200
MAX_CAPTURE_ROWS = 500
MAX_FINDING_ROWS = 5_000
"""Findings listed in the page at most; past it the page says how many were left out."""
MAX_CARD_FINDINGS = 500
OPEN_FINDINGS = 6
"""A card's findings table is open when it has at most this many rows."""
MAX_ID_CHARS = 200
NS = 1_000_000_000


def _ratio(s: Session) -> float | None:
    if not s.effective_keep_alive_s or s.max_gap_ns is None:
        return None
    return s.max_gap_ns / (s.effective_keep_alive_s * NS)


_WORST_FIRST = sorted(Severity, reverse=True)


class _Tally:
    """What the page needs of one session's findings without holding them (a long capture has
    hundreds of thousands; only the sessions drawn keep theirs): how many of each severity and of
    each rule."""

    __slots__ = ("by_severity", "by_rule")

    def __init__(self) -> None:
        self.by_severity = [0] * (max(Severity) + 1)
        self.by_rule: dict[str, int] = {}

    def add(self, f: Finding) -> None:
        self.by_severity[f.severity] += 1
        self.by_rule[f.rule_id] = self.by_rule.get(f.rule_id, 0) + 1

    @property
    def worst(self) -> Severity | None:
        return next((s for s in _WORST_FIRST if self.by_severity[s]), None)

    def labels(self) -> list[str]:
        """The severities present, by name."""
        return sorted(s.label for s in Severity if self.by_severity[s])

    def rule_counts(self) -> list[tuple[str, int]]:
        return sorted(self.by_rule.items())


_NONE = _Tally()
"""A session without findings (never changed)."""


def _tallies(report: Report, also: Callable[[Finding], None] | None = None) -> dict[str, _Tally]:
    """Each session's findings counted, by session id (only sessions with findings); `also` is
    told of every finding on the way (one pass over a long capture's spool)."""
    per: dict[str, _Tally] = {}
    for f in report.findings:
        tally = per.get(f.session_id)
        if tally is None:
            tally = per[f.session_id] = _Tally()
        tally.add(f)
        if also is not None:
            also(f)
    return per


@dataclass
class _RuleGroup:
    """The findings of one rule at one severity (the overview's rules table)."""

    findings: int = 0
    sessions: set[str] = field(default_factory=set)
    clients: set[str | None] = field(default_factory=set)


def rank_sessions(report: Report, tallies: dict[str, _Tally] | None = None) -> list[Session]:
    """Sessions worst first: worst severity, errors, warnings, longest silence / K, then order.
    `tallies`: `_tallies(report)`, if already counted."""
    per = _tallies(report) if tallies is None else tallies
    return [s for _, s in sorted(enumerate(report.sessions), key=_rank_key(per))]


def _rank_key(per: dict[str, _Tally]) -> Callable[[tuple[int, Session]], tuple[Any, ...]]:
    """`rank_sessions`' order of (position, session) pairs; no two keys are equal."""

    def key(item: tuple[int, Session]) -> tuple[Any, ...]:
        n, s = item
        tally = per.get(s.session_id, _NONE)
        worst = tally.worst
        return (
            -(int(worst) if worst else 0),
            -tally.by_severity[Severity.ERROR],
            -tally.by_severity[Severity.WARNING],
            -(_ratio(s) or 0.0),
            n,
        )

    return key


def detail_sessions(
    report: Report, detail: str = "findings", max_charts: int = MAX_CHARTS,
    tallies: dict[str, _Tally] | None = None,
) -> tuple[list[Session], int]:
    """The sessions that get a timeline chart, worst first, and how many were left out by the cap.

    ``detail="findings"``: sessions with at least one finding; ``"all"``: every session. Pass the
    ids of the returned sessions, and the sessions as ``known``, to ``collect_timelines``. Only
    the chosen are held as the sessions are read (a long capture's are spooled on disk).
    """
    if detail not in DETAILS:
        raise ValueError(f"unknown detail {detail!r}; expected one of {', '.join(DETAILS)}")
    per = _tallies(report) if tallies is None else tallies
    wanted = 0

    def candidates() -> Iterator[tuple[int, Session]]:
        nonlocal wanted
        for item in enumerate(report.sessions):
            if detail == "all" or item[1].session_id in per:
                wanted += 1
                yield item

    chosen = heapq.nsmallest(max_charts, candidates(), key=_rank_key(per))  # = sorted(...)[:n]
    return [s for _, s in chosen], max(0, wanted - max_charts)


def render_html(
    report: Report,
    out: TextIO,
    *,
    timelines: dict[str, SessionPackets] | Callable[[], dict[str, SessionPackets]] | None = None,
    detail: str = "findings",
    max_charts: int = MAX_CHARTS,
) -> None:
    """Write ``report`` as one self-contained HTML page to ``out``.

    ``timelines`` (from ``collect_timelines``) gives the charts their packets; without it the
    session charts show findings and the session end only. It may be a function that returns
    them, called once the page's other data is made: the timelines are re-read from the captures
    meanwhile (``parallel.in_background``). ``detail`` picks the sessions that get
    a chart (``"findings"`` or ``"all"``), at most ``max_charts`` of them, worst first. Raises
    ``ConfigError`` (naming ``pip install 'mqtt-keepalive[html]'``) when plotly is missing, and
    ``ValueError`` for an unknown ``detail``, both before writing anything.
    """
    charts.load_plotly()
    # the clients table and the gap / K histogram are the only users of the sessions' gap samples
    # (up to 2 KiB a session): made first, from the report's records as they are read (one pass
    # over the sessions for both), and what the table gathered is gone before the sessions are held
    clients = ClientsTable()
    ratios = charts.GapRatios()
    for s in report.sessions:
        clients.add_session(s)
        ratios.add(s)
    for f in report.findings:
        clients.add_finding(f)
    clients_df = clients.frame()
    del clients
    # the page ranks and lists every session, so it holds them (read from a long capture's spool
    # once more), without their samples (on a 10M-frame capture, about 100 MiB less); the page is
    # written part by part, its sessions list a few thousand rows at a time
    report = dataclasses.replace(
        report, sessions=[dataclasses.replace(s, gap_samples_ns=()) if s.gap_samples_ns else s
                          for s in report.sessions])
    # the findings are counted as read, and only those the page lists are kept
    builder = _Page(report, clients_df, ratios.figure())
    chosen, left_out = detail_sessions(report, detail, max_charts, builder.tallies)
    builder.timelines = (timelines() if callable(timelines) else timelines) or {}
    parts = builder.body(chosen, left_out, detail)
    first = next(parts)  # (the findings are read before anything is written)
    out.write(
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        "<title>MQTT Keep Alive report</title>"
        f"<style>{page.CSS}</style>\n"
        f"<script>{charts.plotly_js()}</script></head>\n<body>\n"
    )
    out.write(first)
    for part in parts:
        out.write(part)
    out.write(f"\n<script>{page.JS}</script>\n</body></html>\n")


class _Page:
    def __init__(self, report: Report, clients_df: pd.DataFrame,
                 gap_figure: tuple[str, dict[str, int]]) -> None:
        """`clients_df`, `gap_figure`: `clients_frame` and `charts.gap_ratio_figure` of the
        report (whose sessions here may have left their gap samples behind)."""
        self.report = report
        self.timelines: dict[str, SessionPackets] = {}
        """The packets of the sessions drawn (`body`)."""
        self.clients_df = clients_df
        self.gap_figure = gap_figure
        self.rules: dict[tuple[str, str, Severity], _RuleGroup] = {}
        """By (rule id, rule, severity)."""
        self.tallies = _tallies(report, self._count_rule)
        self.ranked = rank_sessions(report, self.tallies)
        self.charted: dict[str, list[Finding]] = {}
        """The findings of the sessions drawn, by session id (`body`)."""
        self.findings_listed = 0

    def _count_rule(self, f: Finding) -> None:
        group = self.rules.get((f.rule_id, f.rule, f.severity))
        if group is None:
            group = self.rules[(f.rule_id, f.rule, f.severity)] = _RuleGroup()
        group.findings += 1
        group.sessions.add(f.session_id)
        group.clients.add(f.client_id)

    # -- page -------------------------------------------------------------------------------

    def body(self, chosen: list[Session], left_out: int, detail: str) -> Iterator[str]:
        """The page's body, part by part (the sessions list of a long capture is long); the
        findings are read before the first part."""
        self.charted = {s.session_id: [] for s in chosen}
        listed: list[Finding] = []  # the first findings of the other sessions, and how many
        uncharted = 0
        for f in self.report.findings:
            found = self.charted.get(f.session_id)
            if found is not None:
                found.append(f)
                continue
            uncharted += 1
            if len(listed) < MAX_FINDING_ROWS:
                listed.append(f)
        others = self.other_findings(listed, uncharted)
        yield self.header(bool(others))
        yield "\n<main>\n"
        yield self.overview()
        yield "\n"
        yield from self.sessions_section(chosen)
        for part in (self.cards(chosen, left_out, detail), others, self.tables(), self.footer()):
            yield "\n"
            yield part
        yield "\n</main>"

    def header(self, other_findings: bool) -> str:
        r = self.report
        counts = r.severity_counts()
        when = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
        return (
            '<header class="top"><h1>MQTT Keep Alive report</h1><div class="sub">'
            f"{len(r.captures):,} capture(s), {len(r.sessions):,} session(s): "
            f"{counts['error']:,} error(s), {counts['warning']:,} warning(s), "
            f"{counts['info']:,} info &middot; rule packs {esc(', '.join(r.ruleset.packs))}, "
            f"broker profile {esc(r.ruleset.profile)} &middot; mqtt-keepalive "
            f"{esc(tool_version())} &middot; written {when}</div><nav>"
            '<a href="#overview">overview</a><a href="#sessions">sessions</a>'
            '<a href="#details">timelines</a>'
            + ('<a href="#other-findings">findings without a chart</a>' if other_findings else "")
            + '<a href="#clients-captures">clients and captures</a></nav></header>'
        )

    def overview(self) -> str:
        r = self.report
        counts = r.severity_counts()
        clean = sum(1 for s in r.sessions if s.session_id not in self.tallies)
        unusable = sum(1 for c in r.captures if c.error)
        tiles = [
            ("", len(r.captures), "captures analysed"),
            ("", len(r.sessions), "MQTT sessions"),
            ("ok", clean, "sessions without findings"),
            ("error", counts["error"], "errors"),
            ("warning", counts["warning"], "warnings"),
            ("info", counts["info"], "info"),
        ]
        if unusable:
            tiles.insert(1, ("error", unusable, "captures unusable"))
        if r.suppressed:
            tiles.append(("", len(r.suppressed), "suppressed by the rule pack"))
        out = ['<section id="overview"><h2>Overview</h2><div class="tiles">']
        out += [
            f'<div class="tile {c}"><b>{n:,}</b><span>{label}</span></div>' for c, n, label in tiles
        ]
        out.append("</div>")
        out += [f'<p class="notes">warning: {esc(w)}</p>' for w in r.warnings]
        fig, not_shown, height = charts.client_margin_figure(self.clients_df)
        more = (
            f" (the worst {charts.CLIENT_BARS}; {not_shown:,} more in the clients table)"
            if not_shown
            else ""
        )
        out.append(
            '<div class="grid21"><div class="panel"><h3>Clients, worst first: each '
            f'one\'s longest silence against its deadlines{more}</h3><p class="help">One'
            " bar per client: its longest silence as a multiple of its Keep Alive K. "
            '<b class="z-green">Green</b>: on time (within K). <b class="z-amber">Amber'
            '</b>: late, past K (the client broke MQTT-3.1.2-23). <b class="z-red">Red'
            "</b>: silent past 1.5 x K, when the broker must disconnect it. The black tick"
            " is the client's 95th percentile gap.</p>"
            + page.plot_div("fig-clients", eager=True, height=height)
            + page.data_script("fig-clients", fig)
            + "</div>"
            + self.rules_table()
            + "</div>"
        )
        hist, n = self.gap_figure
        out.append(
            '<div class="grid2"><div class="panel"><h3>Gap / K across all sessions</h3>'
            f'<p class="help">{n["gaps"]:,} client gaps (at most 256 a session, evenly '
            f"sampled) and the longest silence of each of {n['sessions']:,} sessions with "
            "a known K; lines at 1.0 and 1.5 x K.</p>"
            + page.plot_div("fig-gaps", eager=True, height=charts.HIST_HEIGHT)
            + page.data_script("fig-gaps", hist)
            + "</div>"
        )
        out.append(
            '<div class="panel"><h3>Keep Alive values</h3><p class="help">Sessions per '
            "effective Keep Alive (the CONNECT's, or the broker's Server Keep Alive).</p>"
            + page.plot_div("fig-k", eager=True, height=charts.HIST_HEIGHT)
            + page.data_script("fig-k", charts.keep_alive_figure(r))
            + "</div></div>"
        )
        out.append("</section>")
        return "\n".join(out)

    def tables(self) -> str:
        return (
            '<section id="clients-captures"><h2>Clients and captures</h2><div class="grid2">'
            + self.clients_table()
            + self.captures_table()
            + "</div></section>"
        )

    def rules_table(self) -> str:
        # counted as the findings were read (`__init__`): a table of every finding (pandas) would
        # take a long capture's HTML run hundreds of MiB higher for a dozen rows
        groups = self.rules
        if not groups:
            return (
                '<div class="panel"><h3>Findings by rule and severity</h3><p>No findings.</p></div>'
            )
        ranked = sorted(groups.items(), key=lambda g: (-int(g[0][2]), -g[1].findings, g[0][0]))
        rows = [
            f'<tr><td><span class="badge {esc(severity.label)}">{esc(severity.label)}</span></td>'
            f'<td><b>{esc(rule_id)}</b> <span class="rulename">{esc(rule)}</span></td>'
            f'<td class="num">{group.findings:,}</td>'
            f'<td class="num">{len(group.sessions):,}</td>'
            f'<td class="num">{len(group.clients):,}</td></tr>'
            for (rule_id, rule, severity), group in ranked
        ]
        return (
            '<div class="panel"><h3>Findings by rule and severity</h3>'
            + page.table(["severity", "rule", "findings", "sessions", "clients"], rows)
            + "</div>"
        )

    def clients_table(self) -> str:
        df = self.clients_df
        rows = []
        for c in df.head(MAX_CLIENT_ROWS).itertuples():
            ratio = None if pd.isna(c.max_gap_over_k) else float(c.max_gap_over_k)
            p95 = "-" if pd.isna(c.p95_gap_over_k) else f"{float(c.p95_gap_over_k):.2f}"
            rows.append(
                f'<tr><td>{esc(c.client_id, 80)}</td><td class="num">{c.sessions:,}</td>'
                f"<td>{esc(c.keep_alive_s) or '?'}</td>{_ratio_cell(ratio)}"
                f'<td class="num">{p95}</td><td class="num">{c.errors:,}</td>'
                f'<td class="num">{c.warnings:,}</td><td class="num">{c.findings:,}</td></tr>'
            )
        more = (
            f'<p class="help">{len(df) - MAX_CLIENT_ROWS:,} more clients not listed (see '
            "<code>--table clients</code>).</p>"
            if len(df) > MAX_CLIENT_ROWS
            else ""
        )
        return (
            '<div class="panel"><h3>Clients, worst first</h3><div class="scroll short">'
            + page.table(
                [
                    "client id (or IP)",
                    "sessions",
                    "K (s)",
                    "longest silence / K",
                    "p95 gap / K",
                    "errors",
                    "warnings",
                    "findings",
                ],
                rows,
            )
            + "</div>"
            + more
            + "</div>"
        )

    def captures_table(self) -> str:
        caps = sorted(self.report.captures, key=lambda c: c.error is None)
        rows = []
        for c in caps[:MAX_CAPTURE_ROWS]:
            status = (
                f'<span class="badge error">unusable</span> {esc(c.error)}'
                if c.error
                else "; ".join(esc(w) for w in c.warnings) or "ok"
            )
            rows.append(
                f"<tr><td>{esc(c.path)}</td><td>{esc(c.format)}</td>"
                f'<td class="num">{c.frames:,}</td><td class="num">{c.tcp_streams:,}</td>'
                f'<td class="num">{c.mqtt_sessions:,}</td><td>{status}</td></tr>'
            )
        more = (
            f'<p class="help">{len(caps) - MAX_CAPTURE_ROWS:,} more captures not listed.</p>'
            if len(caps) > MAX_CAPTURE_ROWS
            else ""
        )
        return (
            '<div class="panel"><h3>Captures analysed</h3><div class="scroll short">'
            + page.table(
                ["capture", "format", "frames", "TCP streams", "MQTT sessions", "status"], rows
            )
            + "</div>"
            + more
            + "</div>"
        )

    # -- sessions ---------------------------------------------------------------------------

    def _search(self, s: Session) -> str:
        return " ".join(
            x
            for x in (
                printable(s.client_id or "", MAX_ID_CHARS),
                printable(s.assigned_client_id or "", MAX_ID_CHARS),
                s.session_id,
                s.capture,
                s.flow.client.ip,
            )
            if x
        ).lower()

    def session_attrs(self, s: Session) -> str:
        tally = self.tallies.get(s.session_id, _NONE)
        rules = sorted(tally.by_rule)
        sevs = tally.labels() or ["ok"]
        return (
            f'data-search="{esc(self._search(s))}" data-rules="{esc(" ".join(rules))}" '
            f'data-sevs="{esc(" ".join(sevs))}"'
        )

    def session_rows(self, chosen: list[Session]) -> Iterator[str]:
        """The sessions list's data, worst first, for the page's script to draw as a table: the
        text of ``page.script_json`` of

        ``{"captures": [path, ...], "ends": {end_reason: words}, "rows": [row, ...]}``, a row
        being ``[worst severity, client id, assigned client id, session id, capture index, client
        IP, MQTT version, K, longest silence / K, PINGREQ, PINGRESP, end reason, end frame,
        [[rule, count], ...], chart number or -1, severities]`` (a missing id is null), in pieces
        of `ROWS_AT_ONCE` rows (a long capture's sessions are read from its spool). Strings go
        through ``script_json`` (so ``</script>`` in a client id stays data) and the script sets
        them as text, never as HTML.
        """
        charted = {s.session_id: n for n, s in enumerate(chosen)}
        captures: dict[str, int] = {}
        for s in self.ranked:  # (numbered in the rows' order)
            captures.setdefault(s.capture, len(captures))
        yield (page.script_json({"captures": list(captures),
                                 "ends": {e.value: w for e, w in END_TEXT.items()}})[:-1]
               + ',"rows":[')
        rows: list[list[Any]] = []
        first = True
        for s in self.ranked:
            tally = self.tallies.get(s.session_id, _NONE)
            worst = tally.worst
            ratio = _ratio(s)
            rows.append(
                [
                    worst.label if worst else "ok",
                    None if s.client_id is None else printable(s.client_id, MAX_ID_CHARS),
                    None
                    if not s.assigned_client_id
                    else printable(s.assigned_client_id, MAX_ID_CHARS),
                    s.session_id,
                    captures[s.capture],
                    s.flow.client.ip,
                    version_name(s.protocol_level),
                    _k_text(s),
                    None if ratio is None else round(ratio, 2),
                    s.pingreq,
                    s.pingresp,
                    s.end_reason.value,
                    s.end_frame,
                    [[r, n] for r, n in tally.rule_counts()],
                    charted.get(s.session_id, -1),
                    " ".join(tally.labels()) or "ok",
                ]
            )
            if len(rows) == ROWS_AT_ONCE:
                yield ("" if first else ",") + page.script_json(rows)[1:-1]
                rows, first = [], False
        if rows:
            yield ("" if first else ",") + page.script_json(rows)[1:-1]
        yield "]}"

    def sessions_section(self, chosen: list[Session]) -> Iterator[str]:
        rules = sorted({rule_id for rule_id, _rule, _severity in self.rules})
        options = "".join(f'<option value="{esc(r)}">{esc(r)}</option>' for r in rules)
        total = len(self.report.sessions)
        yield (
            '<section id="sessions"><h2>Sessions</h2><div class="filters">'
            '<input type="search" id="q" placeholder="search client id, session, capture, IP"'
            ' aria-label="search sessions">'
            f'<select id="rule" aria-label="rule"><option value="">any rule</option>{options}'
            '</select><select id="sev" aria-label="severity"><option value="">any severity'
            '</option><option value="error">with errors</option><option value="warning">'
            'with warnings</option><option value="info">with info</option><option value="ok">'
            "without findings</option></select>"
            f'<span id="shown">{total:,} sessions</span></div>'
            '<p class="help">Every session, worst first. "longest silence / K": the longest '
            "client gap (including a silence the broker or the capture ended) over the "
            "effective Keep Alive. The filter applies to the timelines below too.</p>"
            '<noscript><p class="notes">The sessions list needs JavaScript; the timelines and '
            "findings below do not.</p></noscript>"
            '<div class="scroll"><table class="sessions" id="sessions-table"><thead><tr>'
            "<th></th><th>client id</th><th>session</th><th>MQTT</th><th>K (s)</th>"
            "<th>longest silence / K</th><th>PINGREQ / RESP</th><th>end</th><th>findings</th>"
            "<th></th></tr></thead><tbody></tbody></table></div>"
            '<button type="button" id="more" class="hidden">show more</button>'
            '<script type="application/json" id="sessions-data">'
        )
        yield from self.session_rows(chosen)
        yield "</script></section>"

    def cards(self, chosen: list[Session], left_out: int, detail: str) -> str:
        what = " with findings" if detail == "findings" else ""
        head = (
            f'<section id="details"><h2>Session timelines ({len(chosen):,} sessions{what}'
            ", worst first)</h2>"
            '<p class="help">Top: the client\'s silence as a multiple of K, rising from the '
            "end of each client packet and dropping when the next one starts (a diamond: a "
            "PINGREQ ended it), green within K, amber past K, red past 1.5 x K; the dashed "
            "lines are the K and 1.5 x K deadlines every client packet starts anew. Triangles: "
            "findings, where they happened (hover: rule, frames, message). Middle: client and "
            "broker packets, each PINGREQ joined to its PINGRESP. Bottom: PINGRESP latency. "
            "Solid vertical line: the end (red: the broker ended it, blue: the client).</p>"
        )
        if left_out:
            head += (
                f'<p class="notes">{left_out:,} more sessions{what} have no chart here '
                f"(at most {len(chosen):,} are drawn, the worst first); they are in the "
                "sessions list above and their findings are listed below.</p>"
            )
        if not chosen:
            head += "<p>No session needs a chart: no findings.</p>"
        return head + "\n".join(self.card(n, s) for n, s in enumerate(chosen)) + "</section>"

    def card(self, n: int, s: Session) -> str:
        found = self.charted[s.session_id]
        tally = self.tallies.get(s.session_id, _NONE)
        worst = tally.worst
        badge = worst.label if worst else "ok"
        packets = self.timelines.get(s.session_id)
        note = ""
        if packets is not None and packets.capture and packets.capture != s.capture:
            note = (
                "no packet timeline: another capture with the same file name "
                f"({packets.capture}) holds this session id"
            )
            packets = None
        fig, facts = timeline_figure(s, found, packets)
        if note:
            facts.notes[:] = [note]
        ratio = _ratio(s)
        verdict = _verdict(s, ratio, found)
        lat = sorted(facts.ping_latency_ms)
        latency = (
            f"; PINGRESP latency median {lat[len(lat) // 2]:.2f} ms, max {lat[-1]:.2f} ms"
            if lat
            else ""
        )
        unanswered = f", <b>{facts.unanswered} PINGREQ unanswered</b>" if facts.unanswered else ""
        start = dt.datetime.fromtimestamp(s.start_ns / NS, dt.UTC)
        facts_line = (
            f"{esc(s.capture)} &middot; {esc(s.flow.client)} &rarr; {esc(s.flow.server)} &middot; "
            f"MQTT {version_name(s.protocol_level)} &middot; K {_k_text(s)} s &middot; started "
            f"{start:%Y-%m-%d %H:%M:%S.%f} UTC, lasted {(s.end_ns - s.start_ns) / NS:.3f} s "
            f"&middot; {s.client_packets:,} client / {s.server_packets:,} broker packets, "
            f"{s.pingreq:,} PINGREQ / {s.pingresp:,} PINGRESP{latency}{unanswered} &middot; end: "
            f"{esc(end_text(s))}"
        )
        notes = "".join(f'<p class="notes">{esc(note)}</p>' for note in facts.notes)
        if s.uncertainty:
            notes += (
                '<p class="notes">uncertain: '
                f"{esc(', '.join(sorted(u.value for u in s.uncertainty)))}</p>"
            )
        chips = "".join(
            f'<span class="chip">{esc(r)} &times;{k}</span>' for r, k in tally.rule_counts()
        )
        fig_id = f"fig-s-{n}"
        return (
            f'<section class="card {badge}" id="s-{n}" {self.session_attrs(s)}>'
            f'<div><span class="badge {badge}">{badge}</span>'
            f"<h3>{_client_id(s.client_id, MAX_ID_CHARS)}</h3>"
            f'<span class="sid">{esc(s.session_id)}</span> {chips}</div>'
            f'<div class="verdict">{verdict}</div><div class="facts">{facts_line}</div>{notes}'
            + page.plot_div(fig_id, eager=n < EAGER_CHARTS, height=TIMELINE_HEIGHT)
            + page.data_script(fig_id, fig)
            + self.findings_list(found, s)
            + "</section>"
        )

    def findings_list(self, found: list[Finding], s: Session) -> str:
        if not found:
            return ""
        rows = []
        for f in found[:MAX_CARD_FINDINGS]:
            if self.findings_listed >= MAX_FINDING_ROWS:
                break
            self.findings_listed += 1
            rows.append(_finding_row(f, s))
        more = len(found) - len(rows)
        note = (
            f'<p class="notes">{more:,} more findings of this session are not listed: see '
            "the JSON or CSV report.</p>"
            if more
            else ""
        )
        is_open = " open" if len(found) <= OPEN_FINDINGS else ""
        return (
            f"<details{is_open}><summary>{len(found):,} finding(s)</summary>"
            + page.table(
                [
                    "severity",
                    "rule",
                    "frames",
                    "at (s)",
                    "gap / limit (s)",
                    "message",
                    "Wireshark filter",
                ],
                rows,
                "findings",
            )
            + note
            + "</details>"
        )

    def other_findings(self, listed: list[Finding], count: int) -> str:
        """The findings of the sessions not drawn: the first `listed` of all `count`."""
        if not count:
            return ""
        wanted = {f.session_id for f in listed}
        by_id = {s.session_id: s for s in self.report.sessions if s.session_id in wanted}
        rows = []
        for f in listed:
            if self.findings_listed >= MAX_FINDING_ROWS:
                break
            self.findings_listed += 1
            rows.append(_finding_row(f, by_id.get(f.session_id), with_session=True))
        more = count - len(rows)
        note = (
            f'<p class="notes">{more:,} more findings are not listed (the page lists at most '
            f"{MAX_FINDING_ROWS:,}): see the JSON or CSV report.</p>"
            if more
            else ""
        )
        return (
            '<section id="other-findings"><h2>Findings of sessions without a chart</h2>'
            f'<details><summary>{count:,} finding(s)</summary><div class="scroll">'
            + page.table(
                [
                    "session",
                    "client id",
                    "severity",
                    "rule",
                    "frames",
                    "at (s)",
                    "gap / limit (s)",
                    "message",
                    "Wireshark filter",
                ],
                rows,
                "findings",
            )
            + "</div>"
            + note
            + "</details></section>"
        )

    def footer(self) -> str:
        return (
            "<footer>Times in charts and tables are seconds from the session's first frame "
            "unless marked UTC; frames are Wireshark frame numbers. Generated by "
            f"mqtt-keepalive {esc(tool_version())}; this file needs no network access."
            "</footer>"
        )


def _client_id(client_id: str | None, max_chars: int | None = None) -> str:
    if client_id is None:
        return '<span class="z-none">(no CONNECT seen)</span>'
    if client_id == "":
        return '<span class="z-none">"" (empty)</span>'
    return esc(client_id, max_chars)


def _k_text(s: Session) -> str:
    if s.effective_keep_alive_s is None:
        return "?"
    mark = "" if s.keep_alive_source.value == "connect" else f" ({s.keep_alive_source.value})"
    return f"{s.effective_keep_alive_s}{mark}"


def _zone(ratio: float | None) -> str:
    if ratio is None:
        return "z-none"
    return "z-green" if ratio <= 1.0 else "z-amber" if ratio <= 1.5 else "z-red"


def _ratio_cell(ratio: float | None) -> str:
    if ratio is None:
        return '<td class="num z-none">-</td>'
    return f'<td class="num {_zone(ratio)}">{ratio:.2f}</td>'


def _verdict(s: Session, ratio: float | None, found: list[Finding]) -> str:
    k = s.effective_keep_alive_s
    if k == 0:
        return '<span class="z-none">Keep Alive 0 (disabled): silences are not judged</span>'
    if k is None:
        return (
            '<span class="z-none">Keep Alive unknown (no CONNECT seen): silences are drawn '
            "in seconds, not judged</span>"
        )
    if ratio is None:
        return '<span class="z-none">no client gap measured</span>'
    gap_s = (s.max_gap_ns or 0) / NS
    longest = f"longest client silence {gap_s:.3f} s = {ratio:.2f} x K"
    if ratio > 1.5:
        return f'<span class="z-red">Silent past 1.5 x K</span>: {longest}'
    if ratio > 1.0:
        return f'<span class="z-amber">Late: past K</span>: {longest}'
    extra = " (other findings below)" if found else ""
    return f'<span class="z-green">On time</span>: {longest}{extra}'


def _finding_row(f: Finding, s: Session | None, with_session: bool = False) -> str:
    at = f"{(f.ts_ns - s.start_ns) / NS:.3f}" if s is not None else "-"
    gap = "-" if f.gap_s is None else f"{f.gap_s:.3f}"
    limit = "" if f.limit_s is None else f" / {f.limit_s:g}"
    first, last = f.frames
    likely = (' <i title="inferred from encrypted TLS record sizes">likely</i>'
              if f.confidence == LIKELY else "")
    lead = (
        f"<td>{esc(f.session_id)}</td><td>{_client_id(f.client_id, 80)}</td>"
        if with_session
        else ""
    )
    return (
        f'<tr class="finding" data-rule="{esc(f.rule_id)}" data-frames="{first}-{last}" '
        f'data-session="{esc(f.session_id)}">{lead}'
        f'<td><span class="badge {f.severity.label}">{f.severity.label}</span>{likely}</td>'
        f"<td><b>{esc(f.rule_id)}</b> {esc(f.rule)}</td><td>{first}-{last}</td>"
        f'<td class="num">{at}</td><td class="num">{gap}{limit}</td><td>{esc(f.message)}</td>'
        f"<td><code>{esc(f.wireshark_filter)}</code></td></tr>"
    )


__all__ = [
    "DETAILS",
    "MAX_CHARTS",
    "SessionPackets",
    "collect_timelines",
    "detail_sessions",
    "rank_sessions",
    "render_html",
]

"""``--format github``: workflow-command annotations on stdout and a Markdown job summary.

GitHub shows only 10 annotations of each kind per step (``ecosystem.md`` section 2.4), so
``annotations`` emits the worst 10 errors and 10 warnings (and, with ``--fail-on info``, 10
notices), then one ``::notice::`` saying how many were left out; the full picture goes to the job
summary (``$GITHUB_STEP_SUMMARY``, appended to, as every step shares the file), which the CLI passes
in as ``summary_path``: reporters never read the environment.

Captures have no line numbers, so an annotation names the capture with ``file=`` and carries the
frames and the Wireshark display filter in its message. Values are escaped with GitHub's rules (the
runner's ``escapeData`` / ``escapeProperty``): ``%``, CR and LF in the message, and also ``:`` and
``,`` in properties, so neither a capture path nor a message can end the command early or inject
another. In the summary, values from the network (client ids) are shown with control characters
made visible (``console.printable``), truncated, and with Markdown punctuation backslash-escaped,
so an id cannot break the table or turn into a link, an image or HTML.
"""

from __future__ import annotations

from collections import Counter
from typing import TextIO

from analyzer.model import LIKELY, Finding, Report, Severity
from analyzer.report.console import MAX_CLIENT_ID_CHARS, printable, worst_first
from analyzer.report.records import TOOL_NAME

LIMIT_PER_KIND = 10
"""Annotations GitHub shows per kind (error, warning, notice) per step."""

MAX_CLIENT_ROWS = 50
"""Rows of the per-client table in the job summary; the rest is one "... N more" line."""

COMMANDS: dict[Severity, str] = {
    Severity.ERROR: "error",
    Severity.WARNING: "warning",
    Severity.INFO: "notice",
}

CAPTURE_ERROR_TITLE = "capture not read"

_MARKDOWN_SPECIALS = frozenset("\\`*_[]<>|~&@")
"""Escaped wherever they appear: enough to stop emphasis, code, links, images, HTML, entities,
mentions and cell breaks inside a table cell (characters that matter only at a line start never
start a cell)."""


def escape_data(value: str) -> str:
    """A workflow command's message: ``%`` first, then CR and LF."""
    return value.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def escape_property(value: str) -> str:
    """A workflow command's property value: the message escapes plus ``:`` and ``,``."""
    return escape_data(value).replace(":", "%3A").replace(",", "%2C")


def command(kind: str, message: str, **properties: str) -> str:
    """One workflow command line (no newline), e.g. ``::error file=a.pcap,title=T::message``."""
    props = ",".join(f"{name}={escape_property(value)}" for name, value in properties.items())
    return f"::{kind}{' ' + props if props else ''}::{escape_data(message)}"


def frames_text(f: Finding) -> str:
    first, last = f.frames
    return f"frame {first}" if first == last else f"frames {first}-{last}"


def finding_annotation(f: Finding) -> str:
    """``::error file=<capture>,title=<id> <name>::<message> (frames a-b, filter: ...)``; the
    title ends in ``(likely)`` for a finding inferred from encrypted TLS record sizes."""
    message = f"{f.message} ({frames_text(f)}, filter: {f.wireshark_filter})"
    likely = " (likely)" if f.confidence == LIKELY else ""
    return command(COMMANDS[f.severity], message, file=f.capture, title=f"{f.rule_id} {f.rule}{likely}")


def _more(n: int, word: str) -> str:
    return f"{n} more {word}" if n == 1 or word == "info" else f"{n} more {word}s"


def _listing(parts: list[str]) -> str:
    return parts[0] if len(parts) == 1 else f"{', '.join(parts[:-1])} and {parts[-1]}"


def annotations(report: Report, fail_on: Severity | None,
                limit_per_kind: int = LIMIT_PER_KIND) -> list[str]:
    """Workflow commands for the worst findings, at most ``limit_per_kind`` of each kind.

    Errors (unreadable captures first, then error findings) and warnings are always annotated,
    notices only when ``fail_on`` is info. When some were left out, a last
    ``::notice::N more errors and M more warnings not shown as annotations; see the report`` says
    so; when notices are annotated too, that line is itself a notice, so one notice fewer is
    annotated to keep it visible.
    """
    kinds = [Severity.ERROR, Severity.WARNING]
    if fail_on is not None and fail_on <= Severity.INFO:
        kinds.append(Severity.INFO)
    lines: dict[Severity, list[str]] = {kind: [] for kind in kinds}
    lines[Severity.ERROR] += [command("error", c.error, file=c.path, title=CAPTURE_ERROR_TITLE)
                              for c in report.captures if c.error]
    for f in worst_first(report.findings):
        if f.severity in lines:
            lines[f.severity].append(finding_annotation(f))
    budget = {kind: limit_per_kind for kind in kinds}
    left = {kind: max(len(lines[kind]) - limit_per_kind, 0) for kind in kinds}
    if Severity.INFO in kinds and any(left.values()):
        budget[Severity.INFO] = max(limit_per_kind - 1, 0)
        left[Severity.INFO] = max(len(lines[Severity.INFO]) - budget[Severity.INFO], 0)
    out = [line for kind in kinds for line in lines[kind][: budget[kind]]]
    if any(left.values()):
        parts = [_more(left[Severity.ERROR], "error"), _more(left[Severity.WARNING], "warning")]
        if Severity.INFO in kinds:
            parts.append(_more(left[Severity.INFO], "info"))
        out.append(command("notice", f"{_listing(parts)} not shown as annotations; see the report"))
    return out


def md_cell(value: object, max_chars: int | None = MAX_CLIENT_ID_CHARS) -> str:
    """A Markdown table cell from data: controls visible, truncated, punctuation escaped."""
    text = printable(str(value), max_chars)
    return "".join("\\" + ch if ch in _MARKDOWN_SPECIALS else ch for ch in text)


def _ratio_cell(value: float) -> str:
    return f"{value:.2f}"


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 or word == "info" else f"{n} {word}s"


def _row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def verdict(report: Report, fail_on: Severity | None) -> str:
    """The heading's words for the exit code ``check`` returns with this ``fail_on``."""
    code = report.exit_code(fail_on)
    if code == 2:
        return "unusable input (exit 2)"
    if code == 1:
        assert fail_on is not None
        return f"failed: findings at or above {fail_on.label} (exit 1)"
    return "passed (exit 0)"


def _rules_table(report: Report) -> list[str]:
    counts = Counter((f.rule_id, f.rule, f.severity) for f in report.findings)
    rows = sorted(counts.items(), key=lambda item: (-int(item[0][2]), -item[1], item[0][0]))
    out = [_row(["Rule", "Name", "Severity", "Count"]), _row(["---", "---", "---", "---:"])]
    out += [_row([md_cell(rule_id), md_cell(rule), severity.label, str(n)])
            for (rule_id, rule, severity), n in rows]
    return out


CLIENT_HEADERS: dict[str, str] = {
    "client_id": "Client",
    "sessions": "Sessions",
    "captures": "Captures",
    "keep_alive_s": "K (s)",
    "max_gap_over_k": "Max gap / K",
    "p95_gap_over_k": "p95 gap / K",
    "findings": "Findings",
    "errors": "Errors",
    "warnings": "Warnings",
}
"""Column of ``tables.clients_frame`` -> its heading in the summary, in that order."""


def clients_markdown(report: Report, max_rows: int = MAX_CLIENT_ROWS) -> list[str]:
    """The per-client table (``tables.clients_frame``) as Markdown, worst first, capped."""
    import pandas as pd

    from analyzer.report.tables import clients_frame

    frame = clients_frame(report)
    out = [_row(list(CLIENT_HEADERS.values())),
           _row(["---"] + ["---:"] * (len(CLIENT_HEADERS) - 1))]
    for record in frame.head(max_rows).to_dict("records"):
        cells = []
        for column in CLIENT_HEADERS:
            value = record[column]
            if pd.isna(value):
                cells.append("-")
            elif column in ("max_gap_over_k", "p95_gap_over_k"):
                cells.append(_ratio_cell(value))
            else:
                cells.append(md_cell(value))
        out.append(_row(cells))
    if len(frame) > max_rows:
        out += ["", f"... {len(frame) - max_rows} more clients (see the report)"]
    return out


def step_summary(report: Report, fail_on: Severity | None) -> str:
    """The job summary in Markdown: verdict heading, findings per rule, then clients worst first."""
    counts = report.severity_counts()
    facts = [_plural(len(report.captures), "capture"), _plural(len(report.sessions), "session")]
    facts += [_plural(n, label) for label, n in counts.items()]
    fail = "never" if fail_on is None else fail_on.label
    lines = [f"## {TOOL_NAME}: {verdict(report, fail_on)}", "",
             f"{', '.join(facts)}; fail on {fail}.", ""]
    unreadable = [c for c in report.captures if c.error]
    if unreadable:
        lines += ["### Captures not read", ""]
        for c in unreadable:
            error = c.error or ""
            text = error if error.startswith(c.path) else f"{c.path}: {error}"
            lines.append(f"- {md_cell(text, None)}")
        lines.append("")
    lines += ["### Findings by rule", ""]
    lines += _rules_table(report) if report.findings else ["No findings."]
    lines += ["", "### Clients (worst first)", ""]
    lines += clients_markdown(report) if report.sessions or report.findings else ["No sessions."]
    return "\n".join(lines) + "\n"


def render_github(report: Report, fail_on: Severity | None, out: TextIO,
                  summary_path: str | None = None) -> None:
    """Write the annotations to ``out``; append the job summary to ``summary_path`` if given."""
    for line in annotations(report, fail_on):
        out.write(line + "\n")
    if summary_path:
        with open(summary_path, "a", encoding="utf-8", newline="\n") as fh:
            fh.write(step_summary(report, fail_on))

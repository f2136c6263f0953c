"""The HTML report: one self-contained, well-formed page that holds every finding and escapes
network data, with packet timelines re-read from the shipped captures.

Captures and their packet counts are the ones documented in ``captures/README.md``. The browser
half (it opens, draws and shows no console errors) is ``tests/scenarios/test_html_browser.py``.
"""

from __future__ import annotations

import io
import json
import random
import re
import shutil
import sys
import time
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import lxml.html
import pytest

from analyzer.engine import Options, analyze
from analyzer.errors import ConfigError
from analyzer.model import (
    CaptureSummary,
    Direction,
    Endpoint,
    EndReason,
    Finding,
    FlowKey,
    KeepAliveSource,
    MQTTPacket,
    PacketType,
    Report,
    Session,
    Severity,
)
from analyzer.report.html import MAX_CHARTS, detail_sessions, render_html
from analyzer.report.html.timeline import timeline_spec
from analyzer.report.packets import SessionPackets, collect_timelines

pytest.importorskip("plotly")

S = 1_000_000_000
CAPTURES = Path(__file__).resolve().parents[2] / "captures"
THREE = [
    str(CAPTURES / n) for n in ("silent-client.pcap", "late-pinger.pcap", "compliant-pinger.pcap")
]
HOSTILE_ID = "</script><script>alert(1)</script><img src=x onerror=alert(2)>\"'&amp;\x1b[31m\u2028"
MAX_10K_BYTES = 10_000_000
"""The page for 10,000 sessions (200 charted, no packet timelines) stays under 10 MB; plotly.js
itself is about 4.8 MB of it."""

VOID = {
    "area",
    "base",
    "br",
    "col",
    "embed",
    "hr",
    "img",
    "input",
    "link",
    "meta",
    "source",
    "track",
    "wbr",
}


# -- helpers ------------------------------------------------------------------------------------


class _Balance(HTMLParser):
    """Checks that every element is closed, in order (void elements excepted)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.doctype = False

    def handle_decl(self, decl: str) -> None:
        self.doctype = self.doctype or decl.lower() == "doctype html"

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag not in VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        pass

    def handle_endtag(self, tag: str) -> None:
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> at line {self.getpos()[0]}, open: {self.stack[-3:]}")
            return
        self.stack.pop()


def well_formed(page: str) -> lxml.html.HtmlElement:
    """Assert the page is balanced HTML with a doctype; return it parsed by lxml."""
    checker = _Balance()
    checker.feed(page)
    checker.close()
    assert checker.doctype, "no <!DOCTYPE html>"
    assert not checker.errors, checker.errors[:5]
    assert not checker.stack, f"unclosed: {checker.stack}"
    parser = lxml.html.HTMLParser()
    doc = lxml.html.document_fromstring(page.encode("utf-8"), parser=parser)
    assert not [e for e in parser.error_log if e.level_name == "ERROR"], list(parser.error_log)
    return doc


def render(report: Report, **kwargs: Any) -> str:
    out = io.StringIO()
    render_html(report, out, **kwargs)
    return out.getvalue()


def data_scripts(doc: lxml.html.HtmlElement) -> dict[str, Any]:
    """Every ``<script type="application/json">`` by id, parsed."""
    return {
        el.get("id"): json.loads(el.text) for el in doc.xpath('//script[@type="application/json"]')
    }


def flow(stream: int, port: int = 40000) -> FlowKey:
    return FlowKey(Endpoint("10.0.0.2", port), Endpoint("10.0.0.1", 1883), stream)


def session(
    sid: str,
    stream: int = 0,
    client_id: str | None = "dev",
    k: int | None = 60,
    max_gap_s: float | None = 30.0,
    **changes: Any,
) -> Session:
    start = 1_795_000_000 * S + stream * S
    fields: dict[str, Any] = {
        "session_id": sid,
        "capture": f"fleet/{sid.split('#')[0]}",
        "flow": flow(stream, 40000 + stream % 20000),
        "client_id": client_id,
        "protocol_level": 4,
        "keep_alive_s": k,
        "server_keep_alive_s": None,
        "effective_keep_alive_s": k,
        "keep_alive_source": KeepAliveSource.CONNECT if k is not None else KeepAliveSource.UNKNOWN,
        "connect_frame": 4,
        "start_ns": start,
        "end_ns": start + 3600 * S,
        "end_reason": EndReason.CLIENT_DISCONNECT,
        "end_frame": 900,
        "client_packets": 120,
        "server_packets": 120,
        "pingreq": 100,
        "pingresp": 100,
        "max_gap_ns": None if max_gap_s is None else int(max_gap_s * S),
    }
    fields.update(changes)
    return Session(**fields)


def finding(
    s: Session,
    rule_id: str = "KA101",
    frames: tuple[int, int] = (10, 12),
    at_s: float = 100.0,
    severity: Severity = Severity.WARNING,
    **changes: Any,
) -> Finding:
    fields: dict[str, Any] = {
        "rule_id": rule_id,
        "rule": "client-interval-exceeded",
        "severity": severity,
        "side": "client",
        "session_id": s.session_id,
        "capture": s.capture,
        "client_id": s.client_id,
        "frames": frames,
        "ts_ns": s.start_ns + int(at_s * S),
        "stream_index": s.flow.stream_index,
        "message": f"client silent for 75 s; its Keep Alive is {s.keep_alive_s} s",
        "gap_s": 75.0,
        "limit_s": 60.0,
        "keep_alive_s": s.keep_alive_s,
    }
    fields.update(changes)
    return Finding(**fields)


# -- the shipped captures -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def three() -> tuple[Report, dict[str, SessionPackets], str]:
    """The silent client, the late pinger and the compliant pinger, analysed together."""
    options = Options()
    report = analyze(THREE, options)
    chosen, _ = detail_sessions(report, "all")
    timelines = collect_timelines(THREE, options, {s.session_id for s in chosen})
    return report, timelines, render(report, timelines=timelines, detail="all")


def test_page_is_well_formed_and_self_contained(three: tuple[Report, dict, str]) -> None:
    report, _, page = three
    doc = well_formed(page)
    # plotly.js inlined exactly once, and nothing loaded from anywhere
    assert page.count("plotly.js v") == 1
    assert not doc.xpath("//script[@src] | //link | //img | //iframe | //object | //embed")
    for el in doc.xpath("//*[@src or @href]"):
        for attr in ("src", "href"):
            value = el.get(attr) or ""
            assert not re.match(r"^\s*(https?:)?//", value, re.IGNORECASE), (el.tag, value)
    for style in doc.xpath("//style"):
        assert not re.search(r"@import|url\(", style.text or "", re.IGNORECASE)
    # every chart has its data, and the data is JSON
    scripts = data_scripts(doc)
    plots = doc.xpath('//div[@class="plot"]')
    assert len(plots) == 3 + len(report.sessions)
    for div in plots:
        spec = scripts[div.get("data-fig")]
        assert spec["data"] and spec["layout"]
    assert len(scripts["sessions-data"]["rows"]) == len(report.sessions)


def test_every_finding_is_in_the_page(three: tuple[Report, dict, str]) -> None:
    report, _, page = three
    assert {f.rule_id for f in report.findings} == {"KA101", "KA102", "KA201"}
    doc = well_formed(page)
    rows = doc.xpath('//tr[@class="finding"]')
    listed = {(r.get("data-session"), r.get("data-rule"), r.get("data-frames")) for r in rows}
    scripts = data_scripts(doc)
    for f in report.findings:
        key = (f.session_id, f.rule_id, f"{f.frames[0]}-{f.frames[1]}")
        assert key in listed, key
        row = next(
            r
            for r in rows
            if (r.get("data-session"), r.get("data-rule"), r.get("data-frames")) == key
        )
        assert f.rule_id in row.text_content() and f.message in row.text_content()
        # and marked on its session's chart, with rule id, frames and message in the hover
        card = doc.xpath(
            f'//section[@class and contains(@class, "card")][.//span[@class="sid"]'
            f'="{f.session_id}"]'
        )[0]
        spec = scripts[card.xpath('.//div[@class="plot"]')[0].get("data-fig")]
        marks = next(t for t in spec["data"] if t.get("name") == "finding")
        assert any(f.rule_id in label for label in marks["text"])
        assert any(
            f"frames {f.frames[0]}-{f.frames[1]}" in hover and f.message in hover
            for hover in marks["customdata"]
        )


def test_overview_tells_silent_late_and_compliant_apart(three: tuple[Report, dict, str]) -> None:
    _, _, page = three
    doc = well_formed(page)
    bars = data_scripts(doc)["fig-clients"]["data"][0]
    verdict = {
        name: (x, color, label)
        for name, x, color, label in zip(
            bars["y"], bars["x"], bars["marker"]["color"], bars["text"]
        )
    }
    assert verdict["ka-silent-client"][1] == "#dc2626" and verdict["ka-silent-client"][0] > 1.5
    assert verdict["ka-late-pinger"][1] == "#d97706" and 1.0 < verdict["ka-late-pinger"][0] <= 1.5
    assert verdict["ka-compliant-pinger"][1] == "#16a34a"
    assert "on time" in verdict["ka-compliant-pinger"][2]
    cards = [c.text_content() for c in doc.xpath('//section[contains(@class, "card")]')]
    assert "Silent past 1.5 x K" in cards[0] and "ka-silent-client" in cards[0]
    assert "Late: past K" in cards[1] and "ka-late-pinger" in cards[1]
    assert "On time" in cards[2] and "ka-compliant-pinger" in cards[2]
    assert "end: broker closed (FIN), frame 8" in cards[0]


def test_histograms_have_deadline_lines(three: tuple[Report, dict, str]) -> None:
    _, _, page = three
    scripts = data_scripts(well_formed(page))
    shapes = scripts["fig-gaps"]["layout"]["shapes"]
    lines = {s["x0"] for s in shapes if s["type"] == "line"}
    assert {1.0, 1.5} <= lines
    assert scripts["fig-k"]["data"][0]["x"] == ["2 s"]


def test_gap_histogram_binned_as_read_counts_every_sample(three: tuple[Report, dict, str],
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """The gap / K histogram bins the samples a few at a time (a long capture's never all in
    memory): the same counts, bar for bar, as binning them all at once."""
    from analyzer.report.html import charts

    report, _, _ = three
    samples = sum(len(s.gap_samples_ns) for s in report.sessions)
    whole, counts = charts.gap_ratio_figure(report)
    monkeypatch.setattr(charts, "GAPS_AT_ONCE", 2)
    assert charts.gap_ratio_figure(report) == (whole, counts)
    assert counts["gaps"] == samples > 2
    assert sum(json.loads(whole)["data"][0]["y"]) == samples


def test_timelines_match_the_captures(three: tuple[Report, dict, str]) -> None:
    report, timelines, _ = three
    by_name = {s.session_id: s for s in report.sessions}
    silent = timelines["silent-client.pcap#0"]
    late = timelines["late-pinger.pcap#0"]
    # captures/README.md: silent-client CONNECT #4, CONNACK #6, nothing else from the client
    assert silent.counts() == (1, 1) and not silent.capped
    assert [(p.type, p.first_frame) for p in silent.packets()] == [
        (PacketType.CONNECT, 4),
        (PacketType.CONNACK, 6),
    ]
    # late-pinger: CONNECT, PINGREQ #8 #11 #14 #17 (each answered), DISCONNECT #20
    assert late.counts() == (6, 5) and late.total == 11
    pings = [p.first_frame for p in late.packets() if p.type == PacketType.PINGREQ]
    assert pings == [8, 11, 14, 17]
    assert sum(p.type == PacketType.PINGRESP for p in late.packets()) == 4
    for sid, packets in timelines.items():
        s = by_name[sid]
        assert packets.counts() == (s.client_packets, s.server_packets)
        assert packets.capture == s.capture


def test_late_pinger_chart_shows_four_late_pings_and_answers(
    three: tuple[Report, dict, str],
) -> None:
    report, timelines, _ = three
    s = next(x for x in report.sessions if x.session_id == "late-pinger.pcap#0")
    found = [f for f in report.findings if f.session_id == s.session_id]
    spec, facts = timeline_spec(s, found, timelines[s.session_id])
    late_peaks = [t for t in spec["data"] if t.get("name") == "silence ended by a PINGREQ"]
    assert sum(len(t["y"]) for t in late_peaks) == 4
    assert all(1.0 < y < 1.5 for t in late_peaks for y in t["y"])
    assert len(facts.ping_latency_ms) == 4 and facts.unanswered == 0
    assert all(0 < ms < 10 for ms in facts.ping_latency_ms)


def test_timeline_figures_are_valid_plotly(three: tuple[Report, dict, str]) -> None:
    """The timelines are built as plain dicts for speed: plotly's validation must accept them."""
    import plotly.graph_objects as go

    report, timelines, _ = three
    for s in report.sessions:
        found = [f for f in report.findings if f.session_id == s.session_id]
        spec, _ = timeline_spec(s, found, timelines.get(s.session_id))
        go.Figure(spec)  # raises on any unknown or invalid property
    odd = session("odd.pcap#0", k=None, max_gap_s=None, client_id=None)
    go.Figure(timeline_spec(odd, [finding(odd, "KA901", severity=Severity.INFO)], None)[0])


def test_capped_session_keeps_long_gaps_and_the_last_packet() -> None:
    """Past the cap only long client gaps (at most limit // 10) and the last client packet stay."""
    s = session("long.pcap#0", k=10, max_gap_s=25.0, client_packets=2000, server_packets=1999)
    packets = SessionPackets(s.session_id, capture=s.capture, limit=100)
    t, frame = s.start_ns, 1

    def add(from_client: bool, kind: PacketType, ts: int, body: Any = None) -> None:
        nonlocal frame
        direction = Direction.TO_SERVER if from_client else Direction.TO_CLIENT
        packets.add(
            from_client, MQTTPacket(direction, kind, 0, 0, frame, frame, ts, ts + 1000, body=body)
        )
        frame += 1

    from analyzer.model import ConnectBody

    add(True, PacketType.CONNECT, t, ConnectBody("MQTT", 4, 10, "dev", True, False, False, False))
    for i in range(1999):
        t += 25 * S if i % 100 == 50 else 4 * S
        add(True, PacketType.PINGREQ, t)
        add(False, PacketType.PINGRESP, t + S // 1000)
    assert len(packets) == 100 and packets.capped and packets.total == 3999
    assert packets.client_total == 2000 and packets.keep_alive_s == 10
    assert len(packets.late_end_ns) == 10 and packets.late_gaps_dropped == 10
    assert packets.last_client is not None and packets.last_client.ts_first_ns == t
    assert packets.nbytes() < 100 * 34 + 10 * 33 + 1
    spec, facts = timeline_spec(s, [], packets)
    assert any("long session" in note for note in facts.notes)
    peaks = [
        y for tr in spec["data"] if tr.get("name", "").startswith("silence ended") for y in tr["y"]
    ]
    assert max(peaks) == pytest.approx(2.5, abs=0.01)  # the 25 s gaps of K = 10 s


def test_collect_reads_only_the_wanted_captures() -> None:
    options = Options()
    assert collect_timelines(THREE, options, set()) == {}
    got = collect_timelines(THREE, options, {"late-pinger.pcap#0", "nowhere.pcap#3"})
    assert set(got) == {"late-pinger.pcap#0"}
    assert collect_timelines(["-"], options, {"stdin#0"}) == {}


@pytest.mark.parametrize("name", ["ipv6-pinger.pcap", "ws-late-pinger.pcap", "tls-late-pinger.pcap",
                                  "split-and-coalesced.pcap", "linux-cooked"])
def test_following_the_drawn_connections_reads_what_the_full_reading_reads(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    """IPv6, WebSocket, TLS without keys, segments split and coalesced, a link type the columnar
    decoder leaves to the per-frame one: the reading that follows only the drawn sessions'
    connections takes every one of them (no full reading) and finds the same packets."""
    from analyzer.report import packets
    from tests.unit.test_pipeline_variants import records, to_sll2, write_pcap

    if name == "linux-cooked":
        _, frames = records("late-pinger.pcap")
        path = str(write_pcap(tmp_path / "cooked.pcap", 276, [(ts, to_sll2(d)) for ts, d in frames]))
    else:
        path = str(CAPTURES / name)
    report = analyze([path], Options())
    chosen, _ = detail_sessions(report, "all")
    ids = {s.session_id for s in chosen}
    full = collect_timelines([path], Options(), ids)
    assert full and all(len(p) for p in full.values())
    monkeypatch.setattr(packets, "analyze", None)  # the full reading would fail
    assert collect_timelines([path], Options(), ids, known=chosen) == full


def test_same_file_name_in_two_folders_is_not_mixed_up(tmp_path: Path) -> None:
    for folder, name in (("a", "late-pinger.pcap"), ("b", "silent-client.pcap")):
        (tmp_path / folder).mkdir()
        shutil.copy(CAPTURES / name, tmp_path / folder / "x.pcap")
    paths = [str(tmp_path / "a"), str(tmp_path / "b")]
    report = analyze(paths, Options())
    assert [s.session_id for s in report.sessions] == ["x.pcap#0", "x.pcap#0"]
    timelines = collect_timelines(paths, Options(), {"x.pcap#0"})
    assert timelines["x.pcap#0"].capture == str(tmp_path / "a" / "x.pcap")
    for known in (report.sessions, report.sessions[::-1]):  # either record under the one id
        assert collect_timelines(paths, Options(), {"x.pcap#0"}, known=known) == timelines
    page = render(report, timelines=timelines, detail="all")
    well_formed(page)
    assert "another capture with the same file name" in page


# -- hostile and odd input ----------------------------------------------------------------------


def test_hostile_client_id_is_escaped_everywhere() -> None:
    s = session("evil.pcap#0", client_id=HOSTILE_ID, max_gap_s=95.0)
    other = session("evil.pcap#1", stream=1, client_id="", assigned_client_id=HOSTILE_ID)
    f = finding(s, message=f"client {HOSTILE_ID} silent", severity=Severity.ERROR)
    report = Report(
        (CaptureSummary("fleet/evil.pcap", "pcap", (1,), 10, 100, 2, 2),), (s, other), (f,)
    )
    page = render(report)
    assert HOSTILE_ID not in page
    assert "<script>alert" not in page and "<img" not in page
    doc = well_formed(page)
    assert not doc.xpath("//img") and not doc.xpath("//*[@onerror]")
    for script in doc.xpath("//script"):
        assert "alert(" not in (script.text or "") or script.get("type") == "application/json"
    # the id reads back as itself (control characters shown as \x.., like on the terminal)
    shown = HOSTILE_ID.replace("\x1b", "\\x1b")
    assert doc.xpath('//section[contains(@class, "card")]//h3')[0].text_content() == shown
    rows = data_scripts(doc)["sessions-data"]["rows"]
    assert rows[0][1] == shown and rows[1][1] == "" and rows[1][2] == shown
    assert shown in doc.xpath('//tr[@class="finding"]')[0].text_content()


def test_no_timelines_unknown_keep_alive_and_no_findings() -> None:
    """A report from standard input: no packets, K unknown, a session without findings."""
    a = session("stdin#0", k=None, max_gap_s=None, client_id=None, end_reason=EndReason.CAPTURE_END)
    b = session("stdin#1", stream=1, client_id="quiet", max_gap_s=20.0)
    f = finding(
        a,
        "KA901",
        frames=(1, 1),
        severity=Severity.INFO,
        rule="session-start-unseen",
        gap_s=None,
        limit_s=None,
    )
    report = Report((CaptureSummary("-", "pcap", (1,), 10, 100, 2, 2),), (a, b), (f,))
    page = render(report, timelines={})
    doc = well_formed(page)
    assert len(doc.xpath('//section[contains(@class, "card")]')) == 1
    assert "no packet timeline for this session" in page
    assert "Keep Alive unknown (no CONNECT seen)" in page
    empty = render(Report((), (), ()))
    assert "No session needs a chart" in empty
    well_formed(empty)


def test_detail_all_charts_every_session_and_bad_detail_fails() -> None:
    sessions = tuple(session(f"c.pcap#{i}", stream=i, client_id=f"d{i}") for i in range(5))
    report = Report((), sessions, (finding(sessions[3]),))
    assert [s.session_id for s in detail_sessions(report)[0]] == ["c.pcap#3"]
    assert len(detail_sessions(report, "all")[0]) == 5
    assert detail_sessions(report, "all", max_charts=2) == (
        list(detail_sessions(report, "all")[0][:2]),
        3,
    )
    with pytest.raises(ValueError, match="detail"):
        render(report, detail="everything")


def test_missing_plotly_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [m for m in sys.modules if m == "plotly" or m.startswith("plotly.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "plotly", None)
    out = io.StringIO()
    with pytest.raises(ConfigError, match=re.escape("pip install 'mqtt-keepalive[html]'")):
        render_html(Report((), (), ()), out)
    assert out.getvalue() == ""


# -- scale --------------------------------------------------------------------------------------


def fleet(n: int = 10_000, late_every: int = 40) -> Report:
    """n sessions of one hour over n / 100 captures; every `late_every`-th pings late."""
    rnd = random.Random(7)
    sessions, findings = [], []
    for i in range(n):
        k = rnd.choice([10, 30, 60, 120])
        late = i % late_every == 0
        gaps = tuple(int(k * S * rnd.uniform(0.3, 1.3 if late else 0.98)) for _ in range(256))
        s = session(
            f"fleet-{i // 100:03d}.pcap#{i % 100}",
            stream=i,
            client_id=f"dev-{i:05d}",
            k=k,
            max_gap_s=max(gaps) / S,
            gap_samples_ns=gaps,
        )
        sessions.append(s)
        if late:
            findings += [finding(s, frames=(10 + j, 12 + j), at_s=100.0 * j) for j in range(3)]
    captures = tuple(
        CaptureSummary(f"fleet/fleet-{c:03d}.pcap", "pcap", (1,), 1000, 10**5, 100, 100)
        for c in range(n // 100)
    )
    return Report(captures, tuple(sessions), tuple(findings))


def test_ten_thousand_sessions_stay_small_and_fast() -> None:
    report = fleet()
    started = time.monotonic()
    page = render(report)
    elapsed = time.monotonic() - started
    size = len(page.encode("utf-8"))
    assert size < MAX_10K_BYTES, f"{size:,} bytes"
    assert elapsed < 15, f"{elapsed:.1f} s"
    doc = lxml.html.document_fromstring(page.encode("utf-8"))
    assert len(data_scripts(doc)["sessions-data"]["rows"]) == 10_000
    assert len(doc.xpath('//section[contains(@class, "card")]')) == MAX_CHARTS
    left_out = 10_000 // 40 - MAX_CHARTS
    assert f"{left_out:,} more sessions with findings have no chart here" in page
    # the findings of the sessions left out are still listed
    assert len(doc.xpath('//tr[@class="finding"]')) == len(report.findings)


def test_the_sessions_list_is_the_same_written_in_pieces(monkeypatch: pytest.MonkeyPatch) -> None:
    """The sessions list's data is written a few thousand rows at a time: the same page whatever
    the piece, and the one JSON document of every row (an empty list too)."""
    import re

    from analyzer.report import html

    def page_of(report: Report) -> str:
        return re.sub(r"written \d{4}-\d\d-\d\d \d\d:\d\d UTC", "", render(report))

    report = fleet(300)
    monkeypatch.setattr(html, "ROWS_AT_ONCE", 10_000)
    whole = page_of(report)
    rows = data_scripts(lxml.html.document_fromstring(whole.encode()))["sessions-data"]["rows"]
    assert len(rows) == 300
    for size in (1, 7, 299, 300):
        monkeypatch.setattr(html, "ROWS_AT_ONCE", size)
        assert page_of(report) == whole
    empty = data_scripts(lxml.html.document_fromstring(page_of(Report((), (), ())).encode()))
    assert empty["sessions-data"]["rows"] == [] and empty["sessions-data"]["captures"] == []


def test_the_findings_listed_are_capped_for_the_whole_page(monkeypatch: pytest.MonkeyPatch) -> None:
    """The page lists at most MAX_FINDING_ROWS findings: those of the sessions without a chart
    first, in the report's order, then the drawn sessions' as the cap leaves room; every finding
    is still counted, and each list says how many it left out."""
    from analyzer.report import html

    monkeypatch.setattr(html, "MAX_FINDING_ROWS", 5)
    sessions = [session(f"cap.pcap#{i}", stream=i, client_id=f"dev-{i}") for i in range(3)]
    worst = [finding(sessions[0], "KA102", frames=(n, n + 1), severity=Severity.ERROR)
             for n in range(4)]
    rest = [finding(s, frames=(100 + n, 101 + n)) for s in sessions[1:] for n in range(4)]
    report = Report((CaptureSummary("fleet/cap.pcap", "pcap", (1,), 1000, 10**5, 3, 3),),
                    tuple(sessions), tuple(worst + rest))
    doc = lxml.html.document_fromstring(render(report, max_charts=1).encode("utf-8"))
    others = doc.xpath('//section[@id="other-findings"]')[0]
    assert others.xpath(".//summary")[0].text_content() == "8 finding(s)"
    listed = [row.get("data-frames") for row in others.xpath('.//tr[@class="finding"]')]
    assert listed == [f"{f.frames[0]}-{f.frames[1]}" for f in rest[:5]]
    assert "3 more findings are not listed" in others.text_content()
    card = doc.xpath('//section[contains(@class, "card")]')[0]
    assert "cap.pcap#0" in card.text_content()
    assert card.xpath('.//tr[@class="finding"]') == []
    assert "4 more findings of this session are not listed" in card.text_content()
    assert "KA102 \u00d74" in card.text_content()  # its findings still drawn and counted

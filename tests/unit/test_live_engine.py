"""Live mode's engine side: deadlines reported the moment they pass, each finding once, and the
final report identical to offline analysis."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from analyzer.engine import CaptureAnalysis, Options
from analyzer.sources import open_capture

CAPTURES = Path(__file__).resolve().parents[2] / "captures"
NS = 1_000_000_000


def frames(name: str) -> list[tuple[int, int, int, bytes]]:
    with open_capture(str(CAPTURES / name)) as reader:
        return [(n, ts, lt, data) for n, ts, lt, data, _ in reader]


def test_silent_client_deadlines_fire_on_the_clock_before_the_broker_closes() -> None:
    recorded = frames("silent-client.pcap")
    close_frame = 8  # mosquitto's FIN, 5.4 s after CONNECT
    analysis = CaptureAnalysis("live", Options())
    for n, ts, lt, data in recorded[: close_frame - 1]:
        analysis.frame(n, ts, lt, data)
    connect_end = recorded[3][1]  # CONNECT is frame 4 (K = 2 s)
    assert analysis.tick(connect_end + int(2.2 * NS)) == []          # under K + 0.25 s
    early = analysis.tick(connect_end + int(2.3 * NS))
    assert [f.rule_id for f in early] == ["KA101"]
    later = analysis.tick(connect_end + int(3.3 * NS))
    assert sorted(f.rule_id for f in later) == ["KA102", "KA201"]
    assert analysis.tick(connect_end + int(4 * NS)) == []              # nothing twice
    for n, ts, lt, data in recorded[close_frame - 1:]:
        analysis.frame(n, ts, lt, data)
    assert analysis.tick(recorded[-1][1]) == []                        # the close adds nothing new
    analysis.finish()
    final = sorted((f.rule_id, f.frames) for f in analysis.findings)
    assert final == [("KA101", (4, 8)), ("KA102", (4, 8)), ("KA201", (4, 8))]


def test_compliant_client_gets_nothing_on_the_clock() -> None:
    analysis = CaptureAnalysis("live", Options())
    for n, ts, lt, data in frames("compliant-pinger.pcap"):
        analysis.frame(n, ts, lt, data)
        assert analysis.tick(ts + NS // 2) == []


def test_unanswered_ping_is_reported_when_its_wait_ends() -> None:
    recorded = frames("no-pingresp.pcap")
    analysis = CaptureAnalysis("live", Options())
    for n, ts, lt, data in recorded[:8]:   # up to and including the PINGREQ (frame 8)
        analysis.frame(n, ts, lt, data)
    ping_ts = recorded[7][1]
    rules = {f.rule_id for f in analysis.tick(ping_ts + int(2.3 * NS))}
    assert "KA203" in rules and "KA106" not in rules
    assert "KA106" in {f.rule_id for f in analysis.tick(ping_ts + int(4.3 * NS))}


def test_a_long_live_run_reports_everything_once_and_holds_only_open_sessions(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A live run over a stream of many sessions (opening, closing, reconnecting, late, silent):
    every session that ends is reported once as it ends, those still open at the end once more
    when it ends, and every finding once, as the report has them (the report being the offline
    one). Memory holds only the open sessions' state: the closed sessions and findings go to the
    spools' files as offline, and what was said early of a session is forgotten once it ends."""
    from analyzer import spool
    from analyzer.engine import analyze
    from analyzer.live import LiveRunner
    from analyzer.reassembly.flows import MQTT
    from analyzer.sources.stream import PipeSource
    from tests.unit.test_columnar_equivalence import _load_generate

    path = tmp_path / "fleet.pcap"
    _load_generate().generate(path, 20_000, 60, 3)
    monkeypatch.setattr(spool, "IN_MEMORY", 40)
    monkeypatch.setattr(spool, "BATCH", 16)
    sessions: list[Any] = []
    findings: list[Any] = []
    held: list[tuple[int, int]] = []

    def tick(analysis: CaptureAnalysis, _now_ns: int) -> None:
        tracked = sum(1 for f in analysis.table.flows() if f.kind == MQTT and f.state is not None)
        held.append((len(analysis._emitted), tracked))

    source = PipeSource(str(path))
    source.start()
    result = LiveRunner(source, Options(), on_finding=findings.append, on_session=sessions.append,
                        on_tick=tick).run()
    report = result.report
    offline = analyze([str(path)], Options())
    assert list(report.sessions) == list(offline.sessions)
    assert list(report.findings) == list(offline.findings)
    ids = [s.session_id for s in sessions]
    assert len(ids) == len(set(ids)) and set(ids) == {s.session_id for s in report.sessions}
    keys = [(f.session_id, f.rule_id, f.frames[0]) for f in findings]
    assert len(keys) == len(set(keys)) == result.reported
    assert set(keys) == {(f.session_id, f.rule_id, f.frames[0]) for f in report.findings}
    assert len(report.sessions) > 100 and len(report.findings) > 100
    assert report.sessions._spilled and report.findings._spilled  # type: ignore[attr-defined]
    assert held and all(said <= tracked for said, tracked in held)
    assert max(said for said, _ in held) > 0 and not result.analysis._emitted  # all ended


def test_a_close_waiting_for_the_fin_it_acknowledges_raises_nothing_on_the_clock() -> None:
    """The broker's FIN and the client's answer, read the other way round (two capture queues):
    the client's FIN acknowledges the broker's, which has not come yet. The connection is closing,
    so a clock running on must not find the client silent past its deadlines, nor the broker
    late; when the broker's FIN comes, its early close is judged as offline."""
    recorded = frames("broker-closes-early.pcap")
    analysis = CaptureAnalysis("live", Options())
    for n, ts, lt, data in recorded[:7] + [recorded[8]]:  # the client's FIN (frame 9) first
        analysis.frame(n, ts, lt, data)
    assert analysis.tick(recorded[8][1] + 10 * NS) == []
    analysis.rewind(recorded[8][1])  # (as the live loop does for frames delivered late)
    for n, ts, lt, data in [recorded[7]] + recorded[9:]:
        analysis.frame(n, ts, lt, data)
    analysis.finish()
    assert sorted((f.rule_id, f.frames) for f in analysis.findings) == [("KA202", (4, 8))]

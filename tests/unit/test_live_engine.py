"""Live mode's engine side: deadlines reported the moment they pass, each finding once, and the
final report identical to offline analysis."""

from __future__ import annotations

from pathlib import Path

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

"""`--jobs N`: the same report, in the same order, from worker processes as from one."""

from __future__ import annotations

from pathlib import Path

import pytest

import analyzer.engine as engine
from analyzer import analyze

CAPTURES = Path(__file__).resolve().parents[2] / "captures"


def test_process_pool_gives_the_same_report(monkeypatch) -> None:
    monkeypatch.setattr(engine, "POOL_MIN_BYTES", 0)  # the shipped captures are small
    inputs = [str(CAPTURES)]
    calls: list[tuple[int, int]] = []
    one = analyze(inputs, jobs=1)
    two = analyze(inputs, jobs=2, progress=lambda done, total: calls.append((done, total)))
    assert two == one
    assert len(one.captures) == len(list(CAPTURES.glob("*.pcap")))
    assert calls and calls[-1][0] == calls[-1][1] > 0      # progress reached the total


def test_many_captures_hold_the_memory_of_one_spool(monkeypatch, tmp_path: Path) -> None:
    """The records of a fleet's captures are gathered into one spool of each kind as each capture
    comes in (in one process and from the pool): the report lists every capture's records in
    capture order, and what stays in memory is one spool's first records, not every capture's."""
    from analyzer import spool
    from analyzer.report.records import finding_record, session_record
    from tests.unit.test_rotation import _fleet

    paths = _fleet(tmp_path, 8)
    alone = [analyze([p]) for p in paths]
    monkeypatch.setattr(engine, "POOL_MIN_BYTES", 0)
    monkeypatch.setattr(spool, "IN_MEMORY", 3)  # each capture's spools go to disk too
    for jobs in (1, 2):
        report = analyze([str(tmp_path)], jobs=jobs)
        assert [session_record(s) for s in report.sessions] == [
            session_record(s) for r in alone for s in r.sessions]
        assert [finding_record(f) for f in report.findings] == [
            finding_record(f) for r in alone for f in r.findings]
        held = [report.sessions, report.findings]
        assert all(isinstance(s, spool.Spool) and len(s._head) <= 3 for s in held)


def test_the_fleet_benchmark_checks_what_it_times(tmp_path: Path) -> None:
    """`bench/fleet.py` on a small fleet: it generates the recordings, times both ways, finds every
    recording's planted violations and no other, and the same report both ways."""
    import subprocess
    import sys

    bench = Path(__file__).resolve().parents[2] / "bench" / "fleet.py"
    done = subprocess.run([sys.executable, str(bench), "--files", "3", "--frames", "4000", "--runs", "1",
                           "--dir", str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    last = done.stdout.splitlines()[-1]
    assert "3 recordings, 12,000 frames" in last
    assert "missed 0, extra 0" in last and "planted 0," not in last
    assert last.endswith("the same report every way: yes")
    assert len(list((tmp_path / "fleet-3x4000" / "captures").glob("device-*.pcap"))) == 3


def test_the_benchmark_checks_what_it_times(tmp_path: Path) -> None:
    """`bench/run.py` on a small generated capture: a row for every way it times (the analyzer
    three ways with `--frame-by-frame`), every planted violation found and no other, and the same
    report every way."""
    import subprocess
    import sys

    bench = Path(__file__).resolve().parents[2] / "bench"
    capture = tmp_path / "small.pcap"
    subprocess.run([sys.executable, str(bench / "generate.py"), str(capture), "--frames", "20000",
                    "--clients", "100"], check=True, capture_output=True, timeout=120)
    done = subprocess.run([sys.executable, str(bench / "run.py"), str(capture), "--runs", "1",
                           "--frame-by-frame"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    rows = [line for line in done.stdout.splitlines() if line.startswith("small.pcap ")]
    tools = {"analyze (--jobs", "analyze --jobs 1 ", "analyze --jobs 1, per frame", "scapy", "bare",
             "floor"}
    assert all(any(tool in row for row in rows) for tool in tools), done.stdout
    last = done.stdout.splitlines()[-1]
    assert "20,000 frames" in last or "20,001 frames" in last, last
    assert "missed 0, extra 0" in last and "planted 0," not in last
    assert last.endswith("the same report every way: yes")
    # the targets line says what the table's own figures say
    (line,) = [line for line in done.stdout.splitlines() if line.startswith("small.pcap: targets")]
    default = next(row.split() for row in rows if "analyze (--jobs" in row)
    frames_s = int(default[-4].replace(",", ""))
    met = frames_s >= 700_000
    assert f">= 700,000 frames/s {'met' if met else 'NOT met'} ({frames_s:,})" in line
    peak = max(float(row.split()[-2]) for row in rows if " analyze " in row)
    assert f"peak RSS <= 100 MiB every way {'met' if peak <= 100 else 'NOT met'} ({peak:.0f} MiB)" in line
    (floor,) = [line for line in done.stdout.splitlines() if line.startswith("small.pcap: the floor")]
    floor_row = next(row.split() for row in rows if " floor " in row)
    assert f"{floor_row[-4]} frames/s" + (f", {floor_row[-3]}x tshark" if floor_row[-3] != "-" else "") in floor


def _bench_shape(tmp_path: Path, shape: str) -> tuple[Path, str]:
    """`bench/run.py --shape SHAPE --runs 1` on a small generated capture: the capture, and the
    run's last line (its verdict)."""
    import subprocess
    import sys

    bench = Path(__file__).resolve().parents[2] / "bench"
    capture = tmp_path / "small.pcap"
    subprocess.run([sys.executable, str(bench / "generate.py"), str(capture), "--frames", "6000",
                    "--clients", "40"], check=True, capture_output=True, timeout=120)
    done = subprocess.run([sys.executable, str(bench / "run.py"), str(capture), "--runs", "1",
                           "--shape", shape], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert not any("bare reader" in line or "floor" in line for line in done.stdout.splitlines())
    return capture, done.stdout.splitlines()[-1]


@pytest.mark.parametrize("shape", ["pcapng", "sll2", "ipv6", "snap96"])
def test_the_benchmark_times_a_capture_in_another_shape(tmp_path: Path, shape: str) -> None:
    """`bench/run.py --shape`: a copy of the capture as pcapng, Linux cooked v2, over IPv6 or with
    each frame cut to 96 bytes beside it, read as the same frames (the same planted violations
    found, and the report is the Ethernet pcap's but for the capture's name)."""
    import json

    capture, last = _bench_shape(tmp_path, shape)
    copy = next(p for p in tmp_path.iterdir() if p.name.startswith(f"small-{shape}.pcap"))
    assert last.startswith(copy.name) and "missed 0, extra 0" in last and "planted 0," not in last
    from analyzer.engine import Options, analyze

    original, shaped = (analyze([str(p)], Options()) for p in (capture, copy))
    assert shaped.captures[0].frames == original.captures[0].frames
    assert json.dumps([(f.rule_id, f.frames, f.ts_ns) for f in shaped.findings]) == json.dumps(
        [(f.rule_id, f.frames, f.ts_ns) for f in original.findings])


@pytest.mark.parametrize("shape", ["tls", "midstream"])
def test_the_benchmark_times_tls_and_a_capture_started_late(tmp_path: Path, shape: str) -> None:
    """`bench/run.py --shape tls|midstream`: the capture as MQTT over TLS seen without keys (every
    frame kept, every session judged from record sizes, the lone pings found by their size), or
    without its first third (sessions whose CONNECT was not captured). Neither keeps the ground
    truth, so none is claimed; every way of running still writes the same report."""
    from analyzer.engine import Options, analyze

    capture, last = _bench_shape(tmp_path, shape)
    copy = tmp_path / f"small-{shape}.pcap"
    assert last.startswith(copy.name) and "no ground truth" in last, last
    assert last.endswith("the same report every way: yes"), last
    assert not (tmp_path / f"small-{shape}.truth.json").exists()
    original, shaped = (analyze([str(p)], Options()) for p in (capture, copy))
    frames = original.captures[0].frames
    if shape == "tls":
        assert shaped.captures[0].frames == frames
        assert shaped.sessions and all("encrypted" in s.uncertainty for s in shaped.sessions)
        assert sum(s.pingreq for s in shaped.sessions) > len(shaped.sessions)
    else:
        assert shaped.captures[0].frames == frames - frames // 3
        late = [s for s in shaped.sessions if s.connect_frame is None]
        assert late and all(s.client_id is None for s in late)

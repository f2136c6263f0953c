"""One capture split among `--jobs` processes by connection (`analyzer.split`): the same report, in
the same order, as one process gives; and where a split could not be exact, one process's.

Each case compares the report of `jobs=1` with that of `jobs=2` (or 3), its JSON document and its
records, and says whether the split was kept or the capture analysed again in one process.
"""

from __future__ import annotations

import functools
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings

from analyzer import analyze, engine, split
from analyzer.engine import Options
from analyzer.reassembly import flows
from analyzer.reassembly.flows import FlowTable
from analyzer.sources import open_capture
from tests.builders import PINGREQ, PINGRESP, connack, connect
from tests.property.test_columnar_property import (
    ACK, FIN, NS, Capture, build, scripts,
)
from analyzer.columnar import feed
from tests.unit.test_columnar_equivalence import (
    CAPTURES, PER_FRAME_BELOW, SHIPPED, _objects, differences, document, evictions_inside_runs,
    generate,
)
from tests.unit.test_pipeline_variants import VARIANTS, write_pcap


@pytest.fixture(scope="module", autouse=True, params=[0, PER_FRAME_BELOW],
                ids=["passes-of-any-size", "shipped-passes"])
def pass_sizes(request: pytest.FixtureRequest):
    """Every case twice: with passes of any size, every batch judged in passes (the captures
    here are small, and a split's processes judge their passes beside the others' frames), and
    with the shipped `PER_FRAME_BELOW` and `JUDGED_A_FRAME`. The processes are forked, so they see
    the values set here."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(feed, "PER_FRAME_BELOW", request.param)
        if not request.param:
            patch.setattr(feed, "JUDGED_A_FRAME", float("inf"))
        yield


@pytest.fixture(autouse=True)
def small_captures_split(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """Split captures of any size, and record each split's outcome (True: kept)."""
    monkeypatch.setattr(engine, "SPLIT_MIN_BYTES", 0)
    outcomes: list[bool] = []
    real = split.analyze_split

    def spy(*args: Any) -> Any:
        result = real(*args)
        outcomes.append(result is not None)
        return result

    monkeypatch.setattr(engine, "analyze_split", spy)
    return outcomes


def assert_split_is_exact(path: Path | str, jobs: int = 2, **options: Any) -> dict[str, Any]:
    """`jobs` processes give what one gives; returns the JSON document."""
    one = analyze([str(path)], Options(**options), jobs=1)
    many = analyze([str(path)], Options(**options), jobs=jobs)
    doc_one, doc_many = document(one), document(many)
    assert doc_many == doc_one, "\n".join(differences(doc_many, doc_one))
    assert _objects(many) == _objects(one)  # also what JSON leaves out (gap samples)
    return doc_one


def _dealt_to(shard: int, count: int = 2, first_port: int = 40000) -> int:
    """A client port (client 10.1.0.N, broker 10.0.0.1:1883) whose connection goes to `shard`."""
    probe = split.Shard(shard, count)
    for port in range(first_port, first_port + 100):
        if probe.owns((bytes([10, 1, 0, port % 200 + 1]), port, bytes([10, 0, 0, 1]), 1883)):
            return port
    raise AssertionError


def _client(cap: Capture, shard: int, first_port: int = 40000):
    conn = cap.conn(0)
    conn.port = _dealt_to(shard, first_port=first_port)
    conn.ip = bytes([10, 1, 0, conn.port % 200 + 1])
    return conn


# -- shipped and generated captures ---------------------------------------------------------------


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_capture(name: str) -> None:
    assert_split_is_exact(CAPTURES / name)


@pytest.mark.parametrize("jobs", [2, 3])
def test_generated_fleet_capture(tmp_path: Path, jobs: int, small_captures_split: list[bool]) -> None:
    """A broker-side capture of 300 clients (reconnects, late and silent ones, HTTP noise): the
    split is kept, and every planted violation is still found."""
    path = tmp_path / "fleet.pcap"
    truth = generate(path, 40_000, 300, 5)["violations"]
    doc = assert_split_is_exact(path, jobs)
    assert small_captures_split == [True]
    planted = Counter((v["rule_id"], v["client_id"]) for v in truth)
    found = Counter((f["rule_id"], f["client_id"]) for f in doc["findings"]
                    if f["rule_id"] in {"KA101", "KA102", "KA201"})
    assert found == planted and len(planted) > 50
    assert doc["captures"][0]["tcp_streams"] > 300


@pytest.mark.parametrize("jobs", [2, 3])
def test_idle_sweeps_inside_runs(tmp_path: Path, jobs: int, small_captures_split: list[bool]) -> None:
    """Each process works out its own connections' evictions inside its runs: the split gives the
    report one process gives, evictions and the connection seen again after one included."""
    doc = assert_split_is_exact(evictions_inside_runs(tmp_path / "evictions.pcap"), jobs)
    assert small_captures_split == [True]
    assert Counter(s["end_reason"] for s in doc["sessions"])["idle_evicted"] >= 2


def test_a_process_whose_connections_are_all_idle_evicts_them_on_time(
        tmp_path: Path, small_captures_split: list[bool]) -> None:
    """One busy client, and sixteen sessions that fall silent (some closed): for minutes, every
    frame is of the busy client's connection, which one process tracks, so the other's runs hold
    none of its own frames; the idle sweeps inside those runs still evict its sessions, at the
    frames one process evicts them at (they were left to the next frame of its own: never)."""
    from tests.builders import disconnect
    from tests.unit.test_columnar_equivalence import opened, pcap_of

    busy = opened(30000, 0, "busy", 5)
    at = 1.0
    while at < 900:
        busy.send(at, True, PINGREQ)
        busy.send(at + 0.001, False, PINGRESP)
        at += 1
    conns = [busy]
    for i in range(16):
        conn = opened(33000 + i, 4 + i, f"quiet-{i}", 100)
        conn.send(10 + i, True, PINGREQ)
        conn.send(10.001 + i, False, PINGRESP)
        if i % 4 == 0:
            conn.send(20 + i, True, disconnect())
            conn.close(20.001 + i)
        conns.append(conn)
    doc = assert_split_is_exact(pcap_of(tmp_path / "one-busy.pcap", conns))
    assert small_captures_split == [True]
    assert Counter(s["end_reason"] for s in doc["sessions"])["idle_evicted"] == 12


@pytest.mark.parametrize("variant", ["linux cooked v2", "raw ip", "802.1Q tag"])
def test_frames_of_other_shapes(tmp_path: Path, variant: str, small_captures_split: list[bool]) -> None:
    """Frames the columnar decoder does not take (another link layer, a VLAN tag) are dealt out
    one by one: a fleet, and a takeover across processes, give what one process gives."""
    fleet = tmp_path / "fleet.pcap"
    generate(fleet, 6_000, 60, 5)
    cap = Capture()
    _takeover(cap, 0, 1)
    for path in (fleet, cap.write(tmp_path / "takeover.pcap")):
        with open_capture(str(path)) as reader:
            frames = [(ts, data) for _, ts, _, data, _ in reader]
            linktype = next(iter(reader.linktypes))
        doc = assert_split_is_exact(write_pcap(tmp_path / f"{variant}-{path.name}",
                                               *VARIANTS[variant](linktype, frames)))
        assert doc["captures"][0]["mqtt_sessions"] > 1 and not doc["captures"][0]["skipped"]
    assert small_captures_split == [True, True]
    assert not [f for f in doc["findings"] if f["rule_id"] == "KA202"]


# -- client ids: takeovers across processes ---------------------------------------------------------


def _takeover(cap: Capture, older_shard: int, newer_shard: int, split_connect: bool = False) -> None:
    """An older session that a newer connection with the same client id takes over while it is
    still open; the broker closes the older one 3 s later, before 1.5 x K: explained by the
    takeover, not KA202."""
    older = _client(cap, older_shard)
    older.session("dev", keep_alive=5)
    cap.wait(NS)
    newer = _client(cap, newer_shard, first_port=older.port + 1)
    newer.handshake()
    raw = connect(keep_alive=5, client_id="dev")
    if split_connect:
        newer.c(raw[:6])
        newer.c(raw[6:])
    else:
        newer.c(raw)
    newer.s(connack())
    cap.wait(3 * NS)
    older.s(flags=FIN | ACK)
    older.c(flags=FIN | ACK)
    newer.c(PINGREQ)
    newer.s(PINGRESP)


@pytest.mark.parametrize("shards", [(0, 1), (1, 0), (0, 0)])
def test_takeover_by_a_connection_of_another_process(tmp_path: Path, shards: tuple[int, int],
                                                     small_captures_split: list[bool]) -> None:
    cap = Capture()
    _takeover(cap, *shards)
    doc = assert_split_is_exact(cap.write(tmp_path / "takeover.pcap"))
    assert small_captures_split == [True]
    assert not [f for f in doc["findings"] if f["rule_id"] == "KA202"]
    assert len(doc["sessions"]) == 2


def test_takeover_without_the_shared_connects_would_cry_wolf(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, small_captures_split: list[bool]) -> None:
    """Processes that ignored each other's CONNECTs would report the older session's close as
    KA202; the parent sees that they did and analyses the capture in one process instead."""
    cap = Capture()
    _takeover(cap, 0, 1)
    path = cap.write(tmp_path / "takeover.pcap")
    monkeypatch.setattr(split.Shard, "foreign_connect", lambda *args: None)
    assert not [f for f in analyze([str(path)], Options(), jobs=2).findings if f.rule_id == "KA202"]
    assert small_captures_split == [False]
    monkeypatch.setattr(split, "_consistent", lambda parts: True)
    assert [f for f in analyze([str(path)], Options(), jobs=2).findings if f.rule_id == "KA202"]


def test_connect_cut_over_segments_falls_back_to_one_process(tmp_path: Path,
                                                              small_captures_split: list[bool]) -> None:
    """The newer CONNECT comes in two segments: the other process cannot read its client id, the
    parent sees what it missed, and the capture is analysed again in one process."""
    cap = Capture()
    _takeover(cap, 0, 1, split_connect=True)
    doc = assert_split_is_exact(cap.write(tmp_path / "cut.pcap"))
    assert small_captures_split == [False]
    assert not [f for f in doc["findings"] if f["rule_id"] == "KA202"]


def test_retransmitted_connect_of_another_process(tmp_path: Path, small_captures_split: list[bool]) -> None:
    """A CONNECT sent twice (the first copy unanswered): one CONNECT, not two, for the others."""
    cap = Capture()
    older = _client(cap, 0)
    older.session("dev", keep_alive=5)
    newer = _client(cap, 1, first_port=older.port + 1)
    newer.handshake()
    raw = connect(keep_alive=5, client_id="dev")
    newer.c(raw)
    newer.cseq = (newer.cseq - len(raw)) % (1 << 32)
    cap.wait(NS // 5)
    newer.c(raw)
    newer.s(connack())
    cap.wait(NS)
    older.c(PINGREQ)
    older.s(PINGRESP)
    assert_split_is_exact(cap.write(tmp_path / "again.pcap"))
    assert small_captures_split == [True]


# -- the connection table's limits ------------------------------------------------------------------


def test_table_overflow_falls_back_to_one_process(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                  small_captures_split: list[bool]) -> None:
    """More connections than `max_flows` (12 here) at once: one table sheds some, smaller ones may
    not, so the split is not kept."""
    monkeypatch.setattr(engine, "FlowTable", functools.partial(FlowTable, max_flows=12))
    cap = Capture()
    for i in range(16):
        cap.conn(i).session(f"c{i}", keep_alive=60)
    assert_split_is_exact(cap.write(tmp_path / "many.pcap"))
    assert small_captures_split == [False]


@pytest.mark.parametrize("mqtt", [True, False])
def test_stream_numbers_one_table_would_have_forgotten(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                       small_captures_split: list[bool], mqtt: bool) -> None:
    """Connections evicted while idle keep their number when they come back, if they are among the
    last `MAX_REMEMBERED` (3 here) evicted: six are, three per process, so each process remembers
    all of its own while one table would have forgotten the first three. Those get new numbers
    when they come back, and their later sessions and findings with them."""
    monkeypatch.setattr(flows, "MAX_REMEMBERED", 3)
    cap = Capture()
    conns = [_client(cap, i % 2, first_port=40000 + 10 * i) for i in range(6)]
    for conn in conns:
        if mqtt:  # sessions already running when the capture started
            conn.c(PINGREQ)
            conn.s(PINGRESP)
        else:
            conn.c(flags=ACK, payload=b"\x00")
    cap.wait(4000 * NS)  # past idle eviction of MQTT and other connections
    for conn in conns:
        if mqtt:
            conn.c(PINGREQ)
            cap.wait(20 * NS)  # late for the Keep Alive the first spacing suggests
            conn.c(PINGREQ)
        else:
            conn.c(flags=ACK, payload=b"\x00")
    doc = assert_split_is_exact(cap.write(tmp_path / "idle.pcap"))
    assert small_captures_split == [True]
    assert doc["captures"][0]["tcp_streams"] == 9
    if mqtt:
        assert len(doc["sessions"]) == 12


def test_the_merge_numbers_streams_without_holding_them_all() -> None:
    """Replaying one table's numbering over the parts' logs (`_numbers`) holds a few entries per
    part and the table's memory, not one per stream (a 10M-frame capture has hundreds of
    thousands): beyond the numbers themselves (8 bytes a stream), the peak stays within a few
    MiB. The streams are numbered in capture order, across the parts."""
    import tracemalloc
    from array import array

    from analyzer.reassembly.flows import TableLog

    n = 200_000  # streams per part, their first frames interleaved
    logs = [TableLog(first_frames=array("q", range(part, 2 * n, 2)),
                     remembered_frames=array("q", range(part + 1, 2 * n, 4)),
                     remembered_created=array("q", range(part, 2 * n, 4))) for part in (0, 1)]
    tracemalloc.start()
    try:
        streams, numbers = split._numbers(logs)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert streams == 2 * n
    assert numbers[0].tolist() == list(range(0, 2 * n, 2))
    assert numbers[1].tolist() == list(range(1, 2 * n, 2))
    assert peak < 2 * n * 8 + (8 << 20), f"{peak:,} bytes"


# -- random captures --------------------------------------------------------------------------------


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                 HealthCheck.function_scoped_fixture])
@given(script=scripts)
def test_random_captures(tmp_path_factory: pytest.TempPathFactory, script) -> None:
    """The property test's random captures (shared client ids, second CONNECTs, losses, clock
    steps, idle evictions, 4-tuple reuse): a kept split or not, the report is one process's."""
    path = build(script).write(tmp_path_factory.mktemp("random") / "random.pcap")
    assert_split_is_exact(path)


def test_progress_of_a_split_capture(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                     small_captures_split: list[bool]) -> None:
    """A split capture's progress is the bytes its first process has read, as it reads them,
    up to the file's size."""
    monkeypatch.setattr(engine, "PROGRESS_EVERY_FRAMES", 500)
    monkeypatch.setattr(split, "PROGRESS_EVERY_S", 0.005)
    path = tmp_path / "fleet.pcap"
    generate(path, 40_000, 100, 3)
    calls: list[tuple[int, int]] = []
    analyze([str(path)], Options(), jobs=2, progress=lambda done, total: calls.append((done, total)))
    size = path.stat().st_size
    assert small_captures_split == [True]
    assert calls[-1] == (size, size)
    assert any(0 < done < size for done, _ in calls)
    assert [done for done, _ in calls] == sorted(done for done, _ in calls)


def _second_fails(paths: list[str], options: Options, index: int, count: int) -> Any:
    if index == 1:
        raise RuntimeError("worker 1 failed")
    return _REAL_RUN_SHARD(paths, options, index, count)


_REAL_RUN_SHARD = split._run_shard


def test_a_failing_process_leaves_no_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A process that fails: its error reaches the caller, and the other's record files are
    removed."""
    import tempfile

    path = tmp_path / "fleet.pcap"
    generate(path, 5_000, 50, 2)
    spill = tmp_path / "spill"
    spill.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(spill))
    monkeypatch.setattr(split, "_run_shard", _second_fails)
    with pytest.raises(RuntimeError, match="worker 1 failed"):
        analyze([str(path)], Options(), jobs=2)
    assert not list(spill.glob("mqtt-keepalive-split-*"))


def test_cli_splits_one_large_capture(tmp_path: Path, small_captures_split: list[bool]) -> None:
    """`mqtt-keepalive analyze --jobs 2 FILE` on one capture: the JSON of `--jobs 1`."""
    from typer.testing import CliRunner

    from analyzer.cli import app

    path = tmp_path / "fleet.pcap"
    generate(path, 20_000, 100, 9)
    runner = CliRunner()
    one = runner.invoke(app, ["analyze", "--format", "json", "--jobs", "1", str(path)])
    two = runner.invoke(app, ["analyze", "--format", "json", "--jobs", "2", str(path)])
    assert one.exit_code == two.exit_code == 1
    assert two.stdout == one.stdout
    assert small_captures_split == [True]


@pytest.mark.parametrize("as_fields", [True, False])
def test_a_parts_records_are_renumbered_as_read(tmp_path: Path, as_fields: bool) -> None:
    """The merge renumbers a part's sessions and findings as it reads them, in their fields: the
    fields of each read record renumbered, whether the file holds batches of fields (what a
    process writes) or of records; and the merged spool holds the records those fields build."""
    import pickle
    from array import array

    from analyzer.spool import Spool

    path = tmp_path / "fleet.pcap"
    generate(path, 20_000, 100, 9)
    _summary, sessions, findings = engine.analyze_capture(open_capture(str(path)), Options())
    assert sessions and findings
    numbers = array("q", range(1000, 1000 + 2 * max(s.flow.stream_index for s in sessions) + 2))
    for records, kind in ((list(sessions), split.SESSIONS), (list(findings), split.FINDINGS)):
        if as_fields:
            written = split._spooled(records)
        else:
            written = str(tmp_path / "records")
            with open(written, "wb") as fh:
                pickle.dump((None, records), fh)
        try:
            with open(written, "rb") as fh:
                got = list(split._renumbered(fh, numbers, kind))
        finally:
            Path(written).unlink()
        assert got == [kind.renumbered(kind.fields(r), numbers) for r in records]
        built = [kind.cls(*row) for row in got]
        assert {r.session_id.rpartition("#")[2] for r in built} <= {str(n) for n in numbers}
        assert built != records
        streams = [r.flow.stream_index if kind is split.SESSIONS else r.stream_index for r in records]
        assert [r.session_id for r in built] == [
            f"{r.session_id.rpartition('#')[0]}#{numbers[n]}" for r, n in zip(records, streams)]
        assert list(Spool.of_fields(kind.cls, got)) == built



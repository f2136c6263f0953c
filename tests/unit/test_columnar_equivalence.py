"""The columnar path and the frame-by-frame path give identical reports.

`Options(columnar=True)` reads classic pcap captures in `FrameBatch`es and analyses their steady
frames with NumPy (`analyzer.columnar`); `columnar=False` runs every frame through
`CaptureAnalysis.frame`. The contract is the whole report, byte for byte: the same sessions,
findings, capture summaries, warnings and errors. Each case here renders both reports as the CLI's
`--format json` does and compares the parsed documents (they hold no time of day; the tool version
is the same in both).

Inputs: the shipped captures, synthetic broker captures from `bench/generate.py`, rotated and
merged files, compressed, truncated and corrupt copies, other link layers, other options, batch
and run boundaries forced small, stdin, and the public corpus in `../shared/captures-public`
(skipped when it is absent, like `tests/corpus`).
"""

from __future__ import annotations

import bz2
import datetime as dt
import gzip
import importlib.util
import io
import json
import lzma
import os
import shutil
import struct
import sys
import threading
from pathlib import Path
from collections import Counter
from collections.abc import Callable
from types import ModuleType
from typing import Any

import pytest

from analyzer.columnar import feed
from analyzer.engine import Options, analyze
from analyzer.model import Report, Severity
from analyzer.report.json import render_json
from analyzer.ruleset import load_ruleset
from analyzer.sources import open_capture
from tests.unit.test_pipeline_variants import VARIANTS, write_pcap, write_pcapng

ROOT = Path(__file__).resolve().parents[2]
CAPTURES = ROOT / "captures"
SHIPPED = sorted(p.name for p in CAPTURES.glob("*.pcap"))
PUBLIC = ROOT.parent / "shared" / "captures-public"
RULESET = load_ruleset()
PER_FRAME_BELOW = feed.PER_FRAME_BELOW
JUDGED_A_FRAME = feed.JUDGED_A_FRAME
"""The shipped value (the module's fixture sets 0 for the other tests)."""
TODAY = dt.date(2026, 1, 1)


def _load_bench(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"bench_{name}", ROOT / "bench" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _load_generate() -> ModuleType:
    return _load_bench("generate")


generate = _load_bench("generate").generate
bench_run = _load_bench("run")

# -- comparing the two paths --------------------------------------------------------------------


def report(paths: list[str | Path], **options: Any) -> Report:
    options.setdefault("ruleset", RULESET)
    options.setdefault("today", TODAY)
    return analyze([str(p) for p in paths], Options(**options))


def document(paths: list[str | Path] | Report, **options: Any) -> dict[str, Any]:
    """The report (of `paths`) as the JSON document `--format json` writes."""
    found = paths if isinstance(paths, Report) else report(paths, **options)
    out = io.StringIO()
    render_json(found, Severity.ERROR, out)
    return json.loads(out.getvalue())


def differences(columnar: Any, per_frame: Any, where: str = "$", limit: int = 12) -> list[str]:
    """Where two JSON documents differ, as `path: columnar != per-frame` lines (the first few)."""
    out: list[str] = []

    def walk(a: Any, b: Any, path: str) -> None:
        if len(out) >= limit:
            return
        if type(a) is not type(b):
            out.append(f"{path}: {a!r:.300} != {b!r:.300}")
        elif isinstance(a, dict):
            for key in list(a) + [k for k in b if k not in a]:
                if key not in a or key not in b:
                    out.append(f"{path}.{key}: only on the {'columnar' if key in a else 'per-frame'} path")
                else:
                    walk(a[key], b[key], f"{path}.{key}")
        elif isinstance(a, list):
            if len(a) != len(b):
                out.append(f"{path}: {len(a)} items != {len(b)} items")
            for i, (x, y) in enumerate(zip(a, b)):
                walk(x, y, f"{path}[{i}]")
        elif a != b:
            out.append(f"{path}: {a!r:.300} != {b!r:.300}")

    walk(columnar, per_frame, where)
    return out


def _objects(found: Report) -> dict[str, Any]:
    """The report's records as objects: they also hold what JSON leaves out (the gap samples of a
    session, which the HTML report draws)."""
    return {"captures": list(found.captures), "sessions": list(found.sessions),
            "findings": list(found.findings), "suppressed": list(found.suppressed),
            "warnings": list(found.warnings)}


def report_differences(paths: list[str | Path], **options: Any) -> tuple[dict[str, Any], list[str]]:
    """The columnar path's JSON document, and how the two paths' reports differ (nothing: [])."""
    columnar, per_frame = report(paths, columnar=True, **options), report(paths, columnar=False, **options)
    doc_c, doc_f = document(columnar), document(per_frame)
    if doc_c != doc_f:
        return doc_c, differences(doc_c, doc_f)
    objects_c, objects_f = _objects(columnar), _objects(per_frame)
    out = []
    for key, items in objects_c.items():
        if items != objects_f[key]:
            pairs = [(i, x, y) for i, (x, y) in enumerate(zip(items, objects_f[key])) if x != y]
            out += [f"report.{key}[{i}]: {x!r:.400} != {y!r:.400}" for i, x, y in pairs[:3]]
            out += [] if pairs else [f"report.{key}: {len(items)} items != {len(objects_f[key])} items"]
    return doc_c, out


def assert_same_report(paths: list[str | Path], **options: Any) -> dict[str, Any]:
    """Both paths give the same report; returns its JSON document (for checks that the case did
    something)."""
    doc, found = report_differences(paths, **options)
    if found:
        lines = "\n  ".join(found)
        pytest.fail(f"columnar and per-frame reports differ for {[str(p) for p in paths]} "
                    f"(options {options}):\n  {lines}", pytrace=False)
    return doc


@pytest.fixture(scope="module", autouse=True)
def passes_of_any_size():
    """Every pass made, however few its frames (`PER_FRAME_BELOW` 0), and every batch judged in
    passes however often they judge its frames (`JUDGED_A_FRAME` infinite): the captures here are
    small, and what is compared is the passes' work against the per-frame path's. The shipped
    values, which send small passes, and the batches after one whose passes judged its frames
    over and over, the per-frame way, are tested on their own
    (`test_small_passes_go_the_per_frame_way`,
    `test_batches_after_one_judged_over_and_over_go_the_per_frame_way`)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(feed, "PER_FRAME_BELOW", 0)
        patch.setattr(feed, "JUDGED_A_FRAME", float("inf"))
        yield


# -- capture helpers ----------------------------------------------------------------------------


def record_offsets(data: bytes) -> list[int]:
    """Where each record header of a little-endian classic pcap starts."""
    offsets, pos = [], 24
    while pos + 16 <= len(data):
        offsets.append(pos)
        pos += 16 + struct.unpack_from("<I", data, pos + 8)[0]
    return offsets


def count_per_frame(monkeypatch: pytest.MonkeyPatch) -> Callable[[Path], int]:
    """A function that reads a capture the columnar way and says how many of its frames took the
    per-frame way (`CaptureAnalysis.frame`): what a test of what the bulk takes counts."""
    from analyzer.engine import CaptureAnalysis

    counted = [0]
    real_frame = CaptureAnalysis.frame

    def frame(analysis: CaptureAnalysis, *args: Any) -> None:
        counted[0] += 1
        real_frame(analysis, *args)

    monkeypatch.setattr(CaptureAnalysis, "frame", frame)

    def count(capture: Path) -> int:
        counted[0] = 0
        report([capture], columnar=True)
        return counted[0]

    return count


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory: pytest.TempPathFactory):
    """`bench/generate.py` captures by (frames, clients, seed), generated once per module."""
    top = tmp_path_factory.mktemp("synthetic")
    made: dict[tuple[int, int, int], Path] = {}

    def make(frames: int, clients: int, seed: int) -> Path:
        key = (frames, clients, seed)
        if key not in made:
            path = top / f"gen-{frames}-{clients}-{seed}.pcap"
            generate(path, frames, clients, seed)
            made[key] = path
        return made[key]

    return make


# -- the shipped captures -----------------------------------------------------------------------


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_capture(name: str) -> None:
    doc = assert_same_report([CAPTURES / name])
    assert doc["captures"][0]["error"] is None


@pytest.mark.parametrize("name", sorted(p.name for p in CAPTURES.glob("*.keys")))
def test_shipped_tls_capture_with_its_key_log(name: str) -> None:
    capture = CAPTURES / name.replace(".keys", ".pcap")
    assert_same_report([capture], tls_keylogs=(str(CAPTURES / name),))


def test_all_shipped_captures_in_one_run() -> None:
    doc = assert_same_report([CAPTURES])
    assert len(doc["captures"]) == len(SHIPPED)


# -- synthetic broker captures (bench/generate.py) ----------------------------------------------

SYNTHETIC = [  # (frames, clients, seed): few clients (long sessions) to many
    (3_000, 3, 1), (3_000, 40, 2), (6_000, 5, 3), (8_000, 120, 4), (20_000, 12, 5),
]


@pytest.mark.parametrize(("frames", "clients", "seed"), SYNTHETIC)
def test_synthetic_capture(synthetic, frames: int, clients: int, seed: int) -> None:
    doc = assert_same_report([synthetic(frames, clients, seed)])
    assert doc["captures"][0]["frames"] >= frames and doc["sessions"]


@pytest.fixture
def shipped_passes(monkeypatch: pytest.MonkeyPatch) -> tuple[list[int], list[int]]:
    """The shipped `PER_FRAME_BELOW`, and the sizes of what went the per-frame way for being too
    few for a pass (`_Run._singly`) and of the passes made (`steady.plan`), call by call."""
    monkeypatch.setattr(feed, "PER_FRAME_BELOW", PER_FRAME_BELOW)
    singly: list[int] = []
    passes: list[int] = []
    real_singly, real_plan = feed._Run._singly, feed.steady.plan

    def spy_singly(run: feed._Run, rest: Any) -> None:
        singly.append(len(rest))
        real_singly(run, rest)

    def spy_plan(*args: Any, **kwargs: Any) -> Any:
        passes.append(len(args[4]))
        return real_plan(*args, **kwargs)

    monkeypatch.setattr(feed._Run, "_singly", spy_singly)
    monkeypatch.setattr(feed.steady, "plan", spy_plan)
    return singly, passes


@pytest.mark.parametrize(("frames", "clients", "seed"), SYNTHETIC)
def test_small_passes_go_the_per_frame_way(synthetic, shipped_passes, frames: int, clients: int,
                                          seed: int) -> None:
    """With the shipped `PER_FRAME_BELOW`, what is left of a run for a pass of fewer frames goes
    the per-frame way, in capture order (a run's first pass too, when it is that small): the same
    report, and no pass was made over fewer frames."""
    singly, passes = shipped_passes
    assert_same_report([synthetic(frames, clients, seed)])
    assert singly and max(singly) < PER_FRAME_BELOW
    assert all(size >= PER_FRAME_BELOW for size in passes)


def test_frames_captured_twice_are_steady(synthetic, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """Every frame captured twice (`tcpdump -i any` on a host with a bridge sees each on both
    interfaces): a copy of bytes the stream already has is, to the stream, a segment without data
    (it only counts it), so it is steady, and the copies of steady frames go in bulk with them:
    the per-frame way takes about twice the frames it takes of the capture taken once (those and
    their copies; 15 times as many before, all the copies: 2.5 times the per-frame path's time).
    The same report."""

    original = synthetic(20_000, 120, 4)
    with open_capture(str(original)) as reader:
        frames = [(ts, data) for _, ts, _, data, _ in reader]
    twice = write_pcap(tmp_path / "twice.pcap", 1,
                       [copy for ts, data in frames for copy in ((ts, data), (ts + 1_000, data))])
    assert_same_report([twice])
    count = count_per_frame(monkeypatch)
    once, doubled = count(original), count(twice)
    assert 0 < once and doubled < 3 * once, (once, doubled)


def _not_tcp(i: int) -> bytes:
    """An Ethernet frame that carries no TCP, of several kinds in turn (what `decode_segment`
    skips as `non_tcp`, and around them what it skips otherwise or decodes the long way)."""
    eth4, eth6 = b"\x00\x11\x22\x33\x44\x55\x66\x77\x88\x99\xaa\xbb\x08\x00", b"\x00" * 12 + b"\x86\xdd"
    addresses = bytes([10, 9, 9, i % 200 + 1, 10, 9, 9, 250])
    udp = struct.pack("!HHHH", 5353, 40000 + i % 100, 8 + 300, 0) + bytes(300)
    kind = i % 7
    if kind < 3:  # UDP over IPv4
        return eth4 + struct.pack("!BBHHHBBH", 0x45, 0, 20 + len(udp), 0, 0, 64, 17, 0) + addresses + udp
    if kind == 3:  # ICMP over IPv4, with an IP option (a longer header)
        icmp = b"\x08\x00" + bytes(62)
        return (eth4 + struct.pack("!BBHHHBBH", 0x46, 0, 24 + len(icmp), 0, 0, 64, 1, 0) + addresses
                + b"\x01\x01\x01\x00" + icmp)
    if kind == 4:  # UDP over IPv6
        return eth6 + struct.pack("!IHBB", 6 << 28, len(udp), 17, 64) + bytes(15) + b"\x01" + bytes(15) + b"\x02" + udp
    if kind == 5:  # ICMPv6 behind a hop-by-hop header (walked by the per-frame decoder)
        icmp = bytes([0, 0, 1, 4, 0, 0, 0, 0]) + b"\x80\x00" + bytes(30)
        return eth6 + struct.pack("!IHBB", 6 << 28, len(icmp), 0, 64) + bytes(15) + b"\x01" + bytes(15) + b"\x02" + icmp
    return b"\xff" * 12 + b"\x08\x06" + bytes(28)  # ARP


def test_frames_without_tcp_are_counted_in_bulk(synthetic, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """A gateway's capture: three frames without TCP (UDP, ICMP, over IPv4 and IPv6) for each MQTT
    one. They are counted as skipped in bulk rather than one by one (each went the per-frame way,
    and a batch of mostly such frames sent its MQTT frames that way too: 22 us a frame without
    TCP); the report is the same both ways, and the MQTT sessions' are the capture's without them."""

    original = synthetic(20_000, 120, 4)
    with open_capture(str(original)) as reader:
        frames = [(ts, data) for _, ts, _, data, _ in reader]
    mixed = []
    for i, (ts, data) in enumerate(frames):
        mixed.append((ts, data))
        mixed += [(ts, _not_tcp(3 * i + k)) for k in range(3)]
    capture = write_pcap(tmp_path / "gateway.pcap", 1, mixed)
    doc = assert_same_report([capture])
    arp = sum(1 for i in range(3 * len(frames)) if i % 7 == 6)
    assert doc["captures"][0]["skipped"] == {"non_ip": arp, "non_tcp": 3 * len(frames) - arp}
    plain = document([original])
    assert [f["rule_id"] for f in doc["findings"]] == [f["rule_id"] for f in plain["findings"]]
    assert len(doc["sessions"]) == len(plain["sessions"])

    count = count_per_frame(monkeypatch)
    alone, together = count(original), count(capture)
    # the ARP frames and the ICMPv6 behind its extension header go the per-frame way (2 in 7)
    assert together < alone + 3 * len(frames) * 2 / 7 + 200, (alone, together)


def _busy_publishers(path: Path, clients: int, segments: int) -> Path:
    """Clients that publish in bursts, the sender (or the capturing host's receive offload)
    coalescing each burst into one segment of 1 to 300 small packets, a PINGREQ or two among
    them, answered; every client late once (a 3 s silence against its Keep Alive of 2)."""
    import random

    from tests.builders import PINGREQ, PINGRESP, connack, connect, publish, puback
    from tests.unit.test_tls_keyless import Conn

    rng = random.Random(5)
    frames: list[tuple[int, int, bytes]] = []
    for c in range(clients):
        conn = Conn(server_port=1883, client_port=30000 + c)
        conn.open()
        conn.send(0.01, True, connect(keep_alive=2, client_id=f"busy-{c}"))
        conn.send(0.011, False, connack())
        t = 0.1 + c * 0.0001
        for i in range(segments):
            burst = [publish(f"s/{c}", b"v" * rng.randrange(0, 40), qos=rng.choice((0, 0, 1)))
                     for _ in range(rng.choice((1, 2, 3, 4, 20, 150, 300)))]
            if i % 7 == 3:
                burst.insert(rng.randrange(len(burst) + 1), PINGREQ)
            conn.send(t, True, b"".join(burst))
            conn.send(t + 0.0002, False, (PINGRESP if i % 7 == 3 else b"") + puback(1) * (i % 3),
                      flags=0x18 if i % 7 == 3 or i % 3 else 0x10)
            t += 3.0 if i == segments // 2 else 0.5
        frames += [(int(at * 1e9), c, data) for at, data in conn.frames]
    frames.sort(key=lambda f: f[0])
    eth = b"\x02\x00\x00\x00\x00\x01\x02\x00\x00\x00\x00\x02\x08\x00"
    return write_pcap(path, 1, [(ts, eth + data) for ts, _, data in frames])


def test_segments_of_many_packets_are_steady(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A busy client's segment may hold hundreds of packets: they are framed in bulk, one round of
    packet headers at a time over the segments that still have one (it took three at most, so
    every such segment went the per-frame way: a million small PUBLISHes in 55,005 segments took
    7.4 s, 0.81 s now). A segment with more than `MAX_PACKETS_A_SEGMENT` still goes the per-frame
    way. The same report."""
    from analyzer.columnar import steady

    capture = _busy_publishers(tmp_path / "busy.pcap", 8, 300)
    doc = assert_same_report([capture])
    assert len(doc["sessions"]) == 8
    assert sorted(f["rule_id"] for f in doc["findings"]) == ["KA101"] * 8
    assert all(s["client_packets"] > 10_000 for s in doc["sessions"])
    count = count_per_frame(monkeypatch)
    many = count(capture)
    monkeypatch.setattr(steady, "MAX_PACKETS_A_SEGMENT", 20)
    few = count(capture)
    frames = doc["captures"][0]["frames"]
    assert many < frames // 10 < few, (many, few, frames)
    assert_same_report([capture])


def test_passes_that_take_few_frames_end_the_run_with_a_last_pass(
        synthetic, shipped_passes, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Clients whose every data segment is sent again with a byte more (a retransmission that
    overlaps what came and adds to it is never steady, nor is the stream it garbles, so a pass
    takes about a frame per connection and leaves the rest): after two passes that took few of
    their frames, the next is the last, rather than judging the run whole `MAX_PASSES` times. The
    same report."""
    with open_capture(str(synthetic(8_000, 120, 4))) as reader:
        frames = [(ts, data) for _, ts, _, data, _ in reader]
    doubled = []
    for ts, data in frames:
        doubled.append((ts, data))
        if len(data) > 54:  # a segment with data (Ethernet, IPv4 and TCP headers of 54 bytes)
            longer = struct.pack("!H", len(data) - 14 + 1)  # the IPv4 total length
            doubled.append((ts + 1_000, data[:16] + longer + data[18:] + b"\x00"))
    capture = write_pcap(tmp_path / "doubled.pcap", 1, doubled)
    runs: list[int] = []
    real_run = feed._Run.run

    def spy_run(run: feed._Run) -> int:
        runs.append(run.lo)
        return real_run(run)

    monkeypatch.setattr(feed._Run, "run", spy_run)
    _singly, passes = shipped_passes
    assert_same_report([capture])
    assert runs and passes and len(passes) <= 3 * len(runs)


def test_busy_capture_is_judged_in_passes_and_per_frame(synthetic, shipped_passes) -> None:
    """Many clients, so runs of thousands of frames: passes are made, and what a run leaves for
    a small one goes the per-frame way; the same report."""
    singly, passes = shipped_passes
    assert_same_report([synthetic(8_000, 120, 4)])
    assert passes and singly


def test_a_connection_opening_costs_one_pass(synthetic, monkeypatch: pytest.MonkeyPatch) -> None:
    """Hundreds of devices connecting within a minute: each connection's SYN, SYN-ACK, ACK,
    CONNECT and CONNACK go the per-frame way in one pass. Each waited for a pass of its own, so a
    run of new sessions was judged pass after pass, each over nearly all it had left (2.7 passes
    a frame here, 1.5 now: the frames after a CONNACK wait for one more, where they are steady).
    The same report."""
    runs: list[int] = []
    passes: list[int] = []
    real_run, real_plan = feed._Run.run, feed.steady.plan

    def spy_run(run: feed._Run) -> int:
        end = real_run(run)
        runs.append(end - run.lo)
        return end

    def spy_plan(*args: Any, **kwargs: Any) -> Any:
        passes.append(len(args[4]))
        return real_plan(*args, **kwargs)

    monkeypatch.setattr(feed._Run, "run", spy_run)
    monkeypatch.setattr(feed.steady, "plan", spy_plan)
    doc = assert_same_report([synthetic(6_000, 600, 5)])
    assert len(doc["sessions"]) > 500
    assert sum(passes) < 2 * sum(runs), (passes, runs)


def opened(port: int, at: float, client_id: str, keep_alive: int) -> Any:
    """A `test_tls_keyless.Conn` from client port `port` to 1883, with its handshake, CONNECT and
    CONNACK sent at `at` seconds."""
    from tests.builders import connack, connect
    from tests.unit.test_tls_keyless import Conn

    conn = Conn(server_port=1883, client_port=port)
    conn.send(at, True, flags=0x02)
    conn.send(at + 0.001, False, flags=0x12)
    conn.send(at + 0.002, True, flags=0x10)
    conn.send(at + 0.003, True, connect(keep_alive=keep_alive, client_id=client_id))
    conn.send(at + 0.004, False, connack())
    return conn


def pcap_of(path: Path, conns: list[Any]) -> Path:
    """The frames of `Conn`s, in time order (each connection's in its own), behind Ethernet."""
    frames = sorted((int(at * 1e9), n, k, data) for n, conn in enumerate(conns)
                    for k, (at, data) in enumerate(conn.frames))
    eth = b"\x02\x00\x00\x00\x00\x01\x02\x00\x00\x00\x00\x02\x08\x00"
    return write_pcap(path, 1, [(ts, eth + data) for ts, _, _, data in frames])


def evictions_inside_runs(path: Path) -> Path:
    """Ten clients pinging every 2 s for 15 minutes (frames enough for long runs, across dozens of
    idle sweeps), and among them connections the sweeps evict: sessions closed by a DISCONNECT and
    FINs (60 s after them), HTTP exchanges, one closed by FINs (300 s after their last frame, 60 s
    after the FINs), and MQTT sessions with a Keep Alive of 100 s that fall silent (600 s after
    their last packet): one speaks again after it was evicted (on its 4-tuple, without a SYN: a
    connection seen again), one just before, one never."""
    from tests.builders import PINGREQ, PINGRESP, disconnect
    from tests.unit.test_tls_keyless import Conn

    conns = []
    for i in range(10):
        conn = opened(30000 + i, 0.1 * i, f"steady-{i}", 5)
        at = 1 + 0.1 * i
        while at < 900:
            conn.send(at, True, PINGREQ)
            conn.send(at + 0.001, False, PINGRESP)
            at += 2
        conns.append(conn)
    for i in range(12):
        conn = opened(31000 + i, 3 + 70 * i, f"closing-{i}", 5)
        conn.send(5 + 70 * i, True, disconnect())
        conn.close(5.001 + 70 * i)
        conns.append(conn)
    for i in range(8):
        conn = Conn(server_port=80, client_port=32000 + i)
        conn.send(2 + 100 * i, True, b"GET / HTTP/1.1\r\n\r\n")
        conn.send(2.01 + 100 * i, False, b"HTTP/1.1 200 OK\r\n\r\n")
        if i % 2:
            conn.close(2.02 + 100 * i)
        conns.append(conn)
    for i, back in enumerate((None, 700.0, 560.0)):
        conn = opened(33000 + i, 4, f"quiet-{i}", 100)
        conn.send(10, True, PINGREQ)
        conn.send(10.001, False, PINGRESP)
        if back is not None:
            conn.send(back, True, PINGREQ)
            conn.send(back + 0.001, False, PINGRESP)
        conns.append(conn)
    return pcap_of(path, conns)


def test_idle_sweeps_inside_a_run_evict_as_frame_by_frame(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """An idle sweep every 30 s of network time ended a run (it reads every connection's last
    activity), so runs held no more than 30 s of traffic: a capture of a few frames a second was
    judged in a pass or more for every few hundred frames. A run now goes on across sweeps whose
    evictions are known ahead, and ends before one only where a connection it evicts speaks again
    or what the run did to a connection could change its idle limit. The same report, with every
    kind of eviction, and far fewer runs than sweeps."""
    from analyzer.engine import CaptureAnalysis

    capture = evictions_inside_runs(tmp_path / "evictions.pcap")
    runs, swept, cuts = [], [], []
    real_run, real_swept, real_cut = feed._Run.run, CaptureAnalysis.swept, feed._Run._cut

    def spy_run(run: feed._Run) -> int:
        runs.append(run.lo)
        return real_run(run)

    def spy_swept(analysis: CaptureAnalysis, frame_no: int, now_ns: int, evicted: list) -> None:
        swept.append(len(evicted))
        real_swept(analysis, frame_no, now_ns, evicted)

    def spy_cut(run: feed._Run, p: int) -> bool:
        cuts.append(p)
        return real_cut(run, p)

    monkeypatch.setattr(feed._Run, "run", spy_run)
    monkeypatch.setattr(CaptureAnalysis, "swept", spy_swept)
    monkeypatch.setattr(feed._Run, "_cut", spy_cut)
    doc = assert_same_report([capture])
    ends = Counter(s["end_reason"] for s in doc["sessions"])
    assert ends["idle_evicted"] >= 2 and ends["client_disconnect"] == 12, ends
    assert len(doc["sessions"]) == 10 + 12 + 3 + 1  # quiet-1 seen again after its eviction
    # (each kind of eviction inside runs, and runs ended before the sweeps that could not be
    # known ahead: 10 runs, 20 sweeps inside them; 30 runs before)
    assert sum(swept) >= 5 and cuts and len(runs) <= len(swept) // 2, (len(runs), swept, cuts)


@pytest.mark.parametrize("shape", ["midstream", "tls"])
def test_captures_that_keep_cutting_runs_are_read_in_long_runs(synthetic, shipped_passes,
                                                               tmp_path: Path, shape: str) -> None:
    """Sessions whose CONNECT came before the capture started may still send one, so their data
    used to end a run wherever it came after a frame waiting for a later pass; so did every TLS
    connection's. A capture started on a running broker, or of MQTT over TLS, was then read in
    runs of a few frames, each paying for its passes' NumPy work (a 1M-frame TLS capture: over
    ten minutes, against 20 s frame by frame). Such runs now make their first pass their last, and
    a TLS connection's frames all go the per-frame way in the pass that meets them: the same
    report, in a pass per few hundred frames at most (the old way made 330 and 5,042 here)."""
    capture = tmp_path / "gen.pcap"
    shutil.copyfile(synthetic(20_000, 120, 4), capture)
    shaped = bench_run.shaped(capture, shape)
    _singly, passes = shipped_passes
    doc = assert_same_report([shaped])
    frames = doc["captures"][0]["frames"]
    assert len(doc["sessions"]) > 100 and frames > 10_000
    if shape == "tls":
        assert all("encrypted" in session["uncertainty"] for session in doc["sessions"])
    else:
        assert sum(session["client_id"] is None for session in doc["sessions"]) > 50
    assert passes and len(passes) < frames / 200


def test_synthetic_capture_options(synthetic) -> None:
    """--assume-keep-alive and other port sets: port 80 (the background HTTP) as an MQTT port,
    and only a port nobody uses, so MQTT is found by its CONNECT."""
    path = synthetic(3_000, 40, 2)
    assert_same_report([path], assume_keep_alive_s=5)
    assert_same_report([path], assume_keep_alive_s=1, ports=frozenset({1883}))
    assert_same_report([path], ports=frozenset({80, 1883}))
    assert_same_report([path], ports=frozenset({1884}))


def test_shipped_captures_with_options() -> None:
    assert_same_report([CAPTURES / "mid-stream.pcap"], assume_keep_alive_s=1)
    assert_same_report([CAPTURES / "mid-stream.pcap"], assume_keep_alive_s=60)
    assert_same_report([CAPTURES / "late-pinger.pcap"], assume_keep_alive_s=1)
    assert_same_report([CAPTURES / "late-pinger.pcap"], ports=frozenset({1884}))
    assert_same_report([CAPTURES / "ws-paho.pcap"], ports=frozenset({1883}))
    assert_same_report([CAPTURES], ports=frozenset({9001, 1883}), assume_keep_alive_s=30)


@pytest.mark.parametrize(("batch_bytes", "clients"), [(4096, 3), (65_536, 40)])
def test_small_batches(synthetic, monkeypatch: pytest.MonkeyPatch, batch_bytes: int, clients: int) -> None:
    """Batch boundaries inside records and sessions, many batches per capture."""
    import analyzer.sources.pcap as pcap

    monkeypatch.setattr(pcap, "BATCH_BYTES", batch_bytes)
    assert_same_report([synthetic(3_000, clients, 1)])


@pytest.mark.parametrize("tagged_every", [2, 3])
def test_batches_of_mostly_other_shapes(synthetic, tmp_path: Path, spy_clear: list[int],
                                        tagged_every: int) -> None:
    """A capture whose frames come in stretches with and without three VLAN tags (a shape the
    columnar decoder does not take): a batch of mostly tagged frames goes the per-frame way as a
    whole, after the steady connections of the batches before it are written back
    (`Store.clear`); the next untagged batches load them again."""
    with open_capture(str(synthetic(20_000, 40, 1))) as reader:
        frames = [(ts, data) for _, ts, _, data, _ in reader]

    def tag(frame: tuple[int, bytes]) -> tuple[int, bytes]:
        ts, data = frame
        return ts, data[:12] + b"\x88\xa8\x00\x07\x81\x00\x00\x08\x81\x00\x00\x09" + data[12:]

    # stretches of 5,000 frames: longer than a batch (a 2 MiB read, about 9,000 of these frames)
    mixed = [tag(frame) if (i // 5_000) % tagged_every == 1 else frame for i, frame in enumerate(frames)]
    assert_same_report([write_pcap(tmp_path / "mixed.pcap", 1, mixed)])
    assert spy_clear and max(spy_clear) > 0  # residents were written back before such a batch


def test_batches_of_mqtt_over_tls_go_the_per_frame_way_until_the_traffic_changes(
        synthetic, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A capture of MQTT over TLS for its first half (without keys: nothing is ever steady), then
    of plain MQTT from other clients: after a batch of mostly TLS frames, the batches go the
    per-frame way as a whole, but for one in every `PER_FRAME_RETRY`, judged in passes again; once
    the TLS traffic is gone, passes take the batches again. The same report."""
    import analyzer.sources.pcap as pcap

    capture = tmp_path / "gen.pcap"
    shutil.copyfile(synthetic(20_000, 120, 4), capture)
    with open_capture(str(bench_run.shaped(capture, "tls"))) as reader:
        tls = [(ts, data) for _, ts, _, data, _ in reader]
    with open_capture(str(capture)) as reader:
        plain = [(ts, data) for _, ts, _, data, _ in reader]
    middle = tls[len(tls) // 2][0]

    def other_clients(data: bytes) -> bytes:  # 10.1.x.y -> 10.2.x.y, as source or destination
        if b"\x0a\x01" not in (data[26:28], data[30:32]):
            return data
        return data[:27] + b"\x02" + data[28:31] + b"\x02" + data[32:]

    frames = [f for f in tls if f[0] < middle]
    frames += [(ts, other_clients(data)) for ts, data in plain if ts >= middle]
    mixed = write_pcap(tmp_path / "mixed.pcap", 1, frames)
    monkeypatch.setattr(pcap, "BATCH_BYTES", 32_768)
    monkeypatch.setattr(pcap, "CHUNK", 32_768)
    monkeypatch.setattr(feed, "PER_FRAME_RETRY", 4)
    ways = batch_ways(monkeypatch)
    doc = assert_same_report([mixed])
    assert any("encrypted" in s["uncertainty"] for s in doc["sessions"])
    assert any("encrypted" not in s["uncertainty"] for s in doc["sessions"])
    cut = next(i for i, (ts, _) in enumerate(frames) if ts >= middle) + 1
    tls_part = [whole for first, whole in ways if first < cut - 20_000 // 8]
    plain_part = [whole for first, whole in ways if first > cut + 20_000 // 4]
    assert len(tls_part) > 2 * feed.PER_FRAME_RETRY and len(plain_part) > 2 * feed.PER_FRAME_RETRY
    # from the first batch found mostly TLS on: the per-frame way, but for one in PER_FRAME_RETRY
    first = tls_part.index(True)
    assert first <= 2
    assert tls_part[first:] == [(i + 1) % feed.PER_FRAME_RETRY != 0
                                for i in range(len(tls_part) - first)]
    assert not any(plain_part[feed.PER_FRAME_RETRY:])  # passes again, from the first retry on


def batch_ways(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, bool]]:
    """Each batch the columnar way is fed, as it comes: (its first frame, whether it went the
    per-frame way as a whole)."""
    ways: list[tuple[int, bool]] = []
    real_feed, real_per_frame = feed.ColumnarFeed.feed, feed.ColumnarFeed._per_frame

    def spy_feed(self: feed.ColumnarFeed, batch: Any, offset: int = 0) -> None:
        ways.append((batch.first_frame, False))
        real_feed(self, batch, offset)

    def spy_per_frame(self: feed.ColumnarFeed, batch: Any, offset: int) -> None:
        ways[-1] = (ways[-1][0], True)
        real_per_frame(self, batch, offset)

    monkeypatch.setattr(feed.ColumnarFeed, "feed", spy_feed)
    monkeypatch.setattr(feed.ColumnarFeed, "_per_frame", spy_per_frame)
    return ways


def test_batches_after_one_judged_over_and_over_go_the_per_frame_way(
        synthetic, monkeypatch: pytest.MonkeyPatch) -> None:
    """With the shipped `JUDGED_A_FRAME` and `PER_FRAME_BELOW`: in a capture of a few busy
    clients (20, each with hundreds of frames a batch: a late ping or a reconnect here and there
    holds the rest back for another pass), every batch judged in passes costs more than it saves,
    and sends the next one, then two, four, up to `PER_FRAME_RETRY` - 1, the per-frame way; in one
    of many clients (1,000), only the first batch does (every connection opens there), and the
    others are judged in passes. The same reports either way."""
    monkeypatch.setattr(feed, "JUDGED_A_FRAME", JUDGED_A_FRAME)
    monkeypatch.setattr(feed, "PER_FRAME_BELOW", PER_FRAME_BELOW)
    monkeypatch.setattr(feed, "PER_FRAME_RETRY", 4)
    ways = batch_ways(monkeypatch)
    assert_same_report([synthetic(80_000, 20, 3)])
    whole = [w for _, w in ways]
    expected: list[bool] = []
    backoff = 1
    while len(expected) < len(whole):
        expected += [False] + [True] * backoff
        backoff = min(2 * backoff, 3)
    assert len(whole) >= 8
    assert whole == expected[:len(whole)], whole
    ways.clear()
    assert_same_report([synthetic(80_000, 1_000, 3)])
    assert len(ways) >= 8 and [w for _, w in ways] == [False, True] + [False] * (len(ways) - 2), ways


def test_runs_ended_early_over_and_over_do_not_judge_the_rest_of_the_batch_each_time(
        synthetic, monkeypatch: pytest.MonkeyPatch) -> None:
    """A capture of a few clients over days (5 of them in 80,000 frames) has idle sweeps every few
    dozen frames that evict a connection about to speak again, which ends a run there; a run
    after one ended early takes about twice what that one took, not the rest of the batch, so the
    passes judge each frame a few times, not about 50 (each of a hundred runs a batch judging the
    thousands of frames after it). Every batch judged in passes here (the module's
    `passes_of_any_size`); the same report as frame by frame."""
    judged: list[int] = []
    real_plan = feed._Run._plan

    def spy_plan(self: Any, rest: Any, last: bool) -> Any:
        judged.append(len(rest))
        return real_plan(self, rest, last)

    monkeypatch.setattr(feed._Run, "_plan", spy_plan)
    capture = synthetic(80_000, 5, 3)
    assert_same_report([capture])
    frames = len(record_offsets(capture.read_bytes()))
    assert len(judged) > 1_000  # runs ended early, over and over
    assert sum(judged) < 5 * frames, (sum(judged), frames)


@pytest.fixture
def spy_clear(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The residents `Store.clear` found, call by call."""
    import analyzer.columnar.steady as steady

    found: list[int] = []
    real = steady.Store.clear

    def clear(store: "steady.Store") -> None:
        found.append(int(store.resident.sum()))
        real(store)

    monkeypatch.setattr(steady.Store, "clear", clear)
    return found


@pytest.mark.parametrize("max_run", [3, 64])
def test_short_runs(synthetic, monkeypatch: pytest.MonkeyPatch, max_run: int) -> None:
    """Runs cut short (`MAX_RUN`): steady state carried from one run into the next."""
    import analyzer.columnar.feed as feed

    monkeypatch.setattr(feed, "MAX_RUN", max_run)
    assert_same_report([synthetic(3_000, 3, 1)])


def test_long_steady_sessions_are_written_as_they_go(synthetic, monkeypatch: pytest.MonkeyPatch) -> None:
    """Connections steady for the whole capture are written into their objects once they hold
    `MAX_HELD` silences together at a batch's end, so the store never holds more than that and a
    batch's worth: the report is still the per-frame path's."""
    import analyzer.columnar.steady as steady
    import analyzer.sources.pcap as pcap

    monkeypatch.setattr(pcap, "BATCH_BYTES", 16_384)
    monkeypatch.setattr(steady, "MAX_HELD", 4)
    held: list[tuple[int, int]] = []  # what the residents held at a batch's end, then after it
    real_end = steady.Store.end

    def most(store: steady.Store) -> int:
        return sum(len(v) for v in store.gaps.values())

    def end(store: steady.Store) -> None:
        before = most(store)
        real_end(store)
        held.append((before, most(store)))

    monkeypatch.setattr(steady.Store, "end", end)
    assert_same_report([synthetic(6_000, 5, 3)])
    assert max(before for before, _ in held) > 4  # some were written mid-capture...
    assert max(after for _, after in held) <= 4  # ...so none held more, whatever the file's length


def test_packets_of_a_few_sessions_read_again_the_columnar_way(synthetic) -> None:
    """The HTML report's second reading (`collect_timelines`) hooks only the sessions it draws
    (`Options.hooked_sessions`), so the others stay on the columnar path: the hook hears of those
    sessions only, and their packets are the ones a hook on every session gets frame by frame."""
    from analyzer.report.packets import TimelineCollector, collect_timelines

    path = str(synthetic(8_000, 120, 4))
    ids = [s.session_id for s in report([path]).sessions]
    wanted = set(ids[::9]) | {ids[-1]}
    heard: set[str] = set()

    def hook(session_id: str, from_client: bool, packet: Any) -> None:
        heard.add(session_id)

    report([path], packet_hook=hook, hooked_sessions=frozenset(wanted), columnar=True)
    assert heard == wanted
    every = TimelineCollector(ids, capture=path)
    report([path], packet_hook=every)  # frame by frame, every session hooked
    drawn = collect_timelines([path], Options(ruleset=RULESET, today=TODAY), wanted)
    assert set(drawn) == wanted
    for session_id in wanted:
        assert drawn[session_id] == every.timelines[session_id]
    assert sum(packets.total for packets in drawn.values()) > 5 * len(wanted)


def test_packets_of_known_sessions_read_following_only_their_connections(synthetic,
                                                                         monkeypatch) -> None:
    """Given the report's records of the sessions to draw, the second reading follows only their
    connections (the others' frames keep time): the same packets as a hook on every session frame
    by frame, found without analysing the capture again; a record the reading does not find as
    it is (here one from another analysis) is read again the full way, and still right."""
    from dataclasses import replace

    from analyzer.report import packets
    from analyzer.report.packets import TimelineCollector, collect_timelines

    path = str(synthetic(8_000, 120, 4))
    sessions = list(report([path]).sessions)
    chosen = sessions[::9] + sessions[-1:]
    ids = {s.session_id for s in chosen}
    every = TimelineCollector(None, capture=path)
    report([path], packet_hook=every)  # frame by frame, every session hooked
    full_readings: list[frozenset[str]] = []
    real_analyze = packets.analyze

    def spy(paths: list[str], options: Options, jobs: int = 1) -> Report:
        full_readings.append(options.hooked_sessions)
        return real_analyze(paths, options, jobs=jobs)

    monkeypatch.setattr(packets, "analyze", spy)
    options = Options(ruleset=RULESET, today=TODAY)
    drawn = collect_timelines([path], options, ids, known=chosen)
    assert full_readings == []
    assert set(drawn) == ids
    for session_id in ids:
        assert drawn[session_id] == every.timelines[session_id]
    assert sum(p.total for p in drawn.values()) > 5 * len(ids)

    other = replace(chosen[0], end_frame=chosen[0].end_frame + 1)  # not what this capture gives
    drawn = collect_timelines([path], options, ids, known=[other, *chosen[1:]])
    assert full_readings == [frozenset({other.session_id})]
    for session_id in ids:
        assert drawn[session_id] == every.timelines[session_id]


def test_connect_cut_over_segments_on_another_port_takes_over_in_order(tmp_path: Path) -> None:
    """A connection on a port not configured for MQTT opens with a CONNECT cut over two segments,
    whose client id takes an open session over; the broker then closes the older session before
    1.5 x K. The run must end before the CONNECT's second segment, so that the takeover comes
    before that close as in capture order (not KA202)."""
    from tests.builders import PINGREQ, PINGRESP, connack, connect
    from tests.property.test_columnar_property import ACK, FIN, NS, Capture

    cap = Capture()
    older = cap.conn(0)
    older.session("dev", keep_alive=5)
    for _ in range(9):  # past an idle sweep: a new run, where the older session starts steady
        cap.wait(4 * NS)
        older.c(PINGREQ)
        older.s(PINGRESP)
    newer = cap.conn(1)
    newer.server_port = 2000
    newer.handshake()
    raw = connect(keep_alive=5, client_id="dev")
    newer.c(raw[:10])  # the CONNECT's start: enough to be taken for one
    older.c(PINGREQ)
    older.s(PINGRESP)
    newer.c(raw[10:])
    newer.s(connack())
    cap.wait(3 * NS)
    older.s(flags=FIN | ACK)
    older.c(flags=FIN | ACK)
    newer.c(PINGREQ)
    newer.s(PINGRESP)
    doc = assert_same_report([cap.write(tmp_path / "cut-connect.pcap")])
    assert len(doc["sessions"]) == 2
    assert not [f for f in doc["findings"] if f["rule_id"] == "KA202"]


@pytest.mark.parametrize("first", [b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", b"\x00\x01binary"])
def test_connection_shown_not_mqtt_by_its_first_data_stays_ignored(tmp_path: Path, first: bytes) -> None:
    """A connection on a port not configured for MQTT whose first data is something else (an HTTP
    request that is no upgrade, other bytes) is ignored for good, in bulk: a CONNECT on it in a
    later run, after an idle sweep, does not make it an MQTT session."""
    from tests.builders import PINGREQ, PINGRESP, connack, connect
    from tests.property.test_columnar_property import NS, Capture

    cap = Capture()
    mqtt = cap.conn(0)
    mqtt.session("dev", keep_alive=20)
    other = cap.conn(1)
    other.server_port = 8080
    other.handshake()
    other.c(first)
    other.s(b"HTTP/1.1 200 OK\r\n\r\n")
    for _ in range(3):  # past an idle sweep
        cap.wait(15 * NS)
        mqtt.c(PINGREQ)
        mqtt.s(PINGRESP)
    other.c(connect(keep_alive=20, client_id="late"))
    other.s(connack())
    doc = assert_same_report([cap.write(tmp_path / "ignored.pcap")])
    assert [s["client_id"] for s in doc["sessions"]] == ["dev"]


def test_connections_opened_by_data_that_is_not_mqtt_are_ignored_in_bulk(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A broker-side capture is full of short connections whose first frame (no SYN seen) carries
    something that is not MQTT: background HTTP. Such a frame only numbers its connection, in
    capture order with the frames that open the others, and the connection's later frames are
    steady: none goes the per-frame way (each did, about 10 us a frame). Opened by a CONNECT, a
    WebSocket upgrade, a ClientHello, on an MQTT port or by a SYN, a connection is not taken
    that way. The same report."""
    from tests.builders import PINGREQ, PINGRESP, connect
    from tests.property.test_columnar_property import FIN, NS, Capture

    cap = Capture()
    devices = [cap.conn(i) for i in range(20)]
    for i, device in enumerate(devices):
        device.session(f"dev-{i}", keep_alive=30)
    opened = {  # port: first data
        80: b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", 8080: b"\x00\x01binary",
        8081: connect(keep_alive=30, client_id="on-8081"),
        8082: (b"GET /mqtt HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
               b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
               b"Sec-WebSocket-Protocol: mqtt\r\n\r\n"),
        8883: b"GET / HTTP/1.1\r\n\r\n",
    }
    n = 20
    for round_ in range(30):
        for device in devices:
            device.c(PINGREQ)
            device.s(PINGRESP)
        for port, first in opened.items():
            other = cap.conn(n)
            n += 1
            other.server_port = port
            if round_ % 5 == 4:
                other.handshake()
            other.c(first, flags=0x18 | (FIN if round_ % 3 == 2 else 0))
            other.s(b"HTTP/1.1 200 OK\r\n\r\n")
            if round_ % 3 == 1:
                other.c(flags=FIN | 0x10)
                other.s(flags=FIN | 0x10)
        cap.wait(NS)
    capture = cap.write(tmp_path / "background.pcap")
    doc = assert_same_report([capture])
    assert {s["client_id"] for s in doc["sessions"]} >= {"dev-0", "on-8081"}
    assert doc["captures"][0]["tcp_streams"] == 20 + 30 * len(opened)

    from analyzer.engine import CaptureAnalysis

    ports: Counter[int] = Counter()
    real_frame = CaptureAnalysis.frame

    def frame(analysis: CaptureAnalysis, frame_no: int, ts_ns: int, linktype: int, data: bytes) -> None:
        sport, dport = struct.unpack_from("!HH", data, 34)
        ports[min(sport, dport)] += 1  # (the server's port)
        real_frame(analysis, frame_no, ts_ns, linktype, data)

    monkeypatch.setattr(CaptureAnalysis, "frame", frame)
    report([capture], columnar=True)
    # only the connections opened by a SYN (one round in five, six frames at most each) went the
    # per-frame way; the others as before (98 frames each port)
    assert ports[80] <= 6 * 6 and ports[8080] <= 6 * 6, ports
    assert ports[8081] == ports[8082] == ports[8883] == 98, ports


def test_a_connection_opened_by_a_syn_on_no_mqtt_port_costs_only_its_syn(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """After the SYN of a new connection on no MQTT port, the connection is undecided: its
    handshake and first data (here HTTP) are steady, and wait for the next pass rather than go
    the per-frame way with the SYN, as a new MQTT connection's CONNECT and CONNACK do. The same
    report."""
    from tests.builders import PINGREQ, PINGRESP
    from tests.property.test_columnar_property import NS, Capture

    cap = Capture()
    devices = [cap.conn(i) for i in range(20)]
    for i, device in enumerate(devices):
        device.session(f"dev-{i}", keep_alive=30)
    for n in range(20, 50):
        for device in devices:
            device.c(PINGREQ)
            device.s(PINGRESP)
        web = cap.conn(n)
        web.server_port = 80
        web.handshake()
        web.c(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        web.s(b"HTTP/1.1 200 OK\r\n\r\n")
        cap.wait(NS)
    capture = cap.write(tmp_path / "web.pcap")
    assert_same_report([capture])
    from analyzer.engine import CaptureAnalysis

    web_frames: list[int] = []
    real_frame = CaptureAnalysis.frame

    def frame(analysis: CaptureAnalysis, frame_no: int, ts_ns: int, linktype: int, data: bytes) -> None:
        if 80 in struct.unpack_from("!HH", data, 34):
            web_frames.append(data[47])  # (the TCP flags)
        real_frame(analysis, frame_no, ts_ns, linktype, data)

    monkeypatch.setattr(CaptureAnalysis, "frame", frame)
    report([capture], columnar=True)
    assert web_frames == [0x02] * 30  # each connection's SYN (five frames each before)


# -- rotated and merged files -------------------------------------------------------------------


@pytest.mark.parametrize("parts", [2, 3])
def test_rotated_files(synthetic, tmp_path: Path, parts: int) -> None:
    """A capture split like `tcpdump -C` (dev.pcap0, dev.pcap1...): one analysis across the files,
    whether given as a directory or file by file in any order."""
    data = synthetic(6_000, 5, 3).read_bytes()
    offsets = record_offsets(data)
    cuts = [offsets[len(offsets) * i // parts] for i in range(parts)] + [len(data)]
    files = []
    for i in range(parts):
        path = tmp_path / f"dev.pcap{i}"
        path.write_bytes(data[:24] + data[cuts[i]:cuts[i + 1]])
        files.append(path)
    doc = assert_same_report([tmp_path])
    assert len(doc["captures"]) == 1 and "rotated files" in doc["captures"][0]["warnings"][0]
    if parts == 2:
        assert_same_report(files, assume_keep_alive_s=2)
    else:
        assert_same_report(files[::-1])


def test_rotated_file_cut_after_one_record(synthetic, tmp_path: Path) -> None:
    data = synthetic(3_000, 40, 2).read_bytes()
    second = record_offsets(data)[1]
    (tmp_path / "ring_001.pcap").write_bytes(data[:second])
    (tmp_path / "ring_002.pcap").write_bytes(data[:24] + data[second:])
    assert_same_report([tmp_path])


def test_rotation_of_pcap_and_pcapng_files(synthetic, tmp_path: Path) -> None:
    """A rotation whose files alternate between pcap (read in batches) and pcapng (frame by frame
    on both paths): one analysis carried from one reader to the other."""
    with open_capture(str(synthetic(6_000, 5, 3))) as reader:
        frames = [(ts, data) for _, ts, _, data, _ in reader]
    cuts = [len(frames) * i // 4 for i in range(5)]
    for i in range(4):
        write = write_pcapng if i % 2 else write_pcap
        write(tmp_path / f"dev.cap{i}", 1, frames[cuts[i]:cuts[i + 1]])
    doc = assert_same_report([tmp_path])
    assert len(doc["captures"]) == 1 and doc["captures"][0]["format"] == "pcap/pcapng"


def test_merged_and_overlapping_captures(synthetic, tmp_path: Path) -> None:
    """Unrelated captures analysed together, numbered copies of the same moment (not a rotation),
    and one file holding two recordings one after the other (the clock goes back)."""
    one, two = synthetic(3_000, 40, 2), synthetic(3_000, 3, 1)
    assert_same_report([CAPTURES / "late-pinger.pcap", one, two, CAPTURES / "silent-client.pcap"])
    shutil.copy(CAPTURES / "busy-publisher.pcap", tmp_path / "probe1.pcap")
    shutil.copy(CAPTURES / "busy-publisher.pcap", tmp_path / "probe2.pcap")
    doc = assert_same_report([tmp_path])
    assert len(doc["captures"]) == 2
    data = one.read_bytes()
    half = record_offsets(data)[1_500]
    back = tmp_path / "clock-back.pcap"
    back.write_bytes(data[:24] + data[half:] + data[24:half])
    doc = assert_same_report([back])
    assert any("timestamps go back" in w for w in doc["captures"][0]["warnings"])


YEAR_S = 365 * 86_400


@pytest.mark.parametrize("case", ["ntp step back", "clock set at boot", "one corrupt timestamp",
                                  "one timestamp near zero"])
def test_a_clock_step_leaves_unjudged_only_what_spans_it(synthetic, tmp_path: Path, case: str) -> None:
    """The capture's clock steps: back a minute once (an NTP correction), forward 26 years once
    (a gateway without a clock, whose tcpdump started before NTP set the date), or one frame's
    timestamp a year ahead or near 1970 (corrupt). Only intervals open at a step go unjudged:
    every finding before and after it is the one the same frames without the step give, on both
    paths, and no session is split (connections are as idle after a step as before it).

    Network time used to stay at the newest timestamp before a step back, so every frame of the
    next minute was another step (each interval of that minute unjudged, each frame a walk over
    every connection: 40 times the capture's time); and a leap forward was taken for time gone by,
    so every open session was silent for 26 years (thousands of false violations), and every
    connection idle (evicted, then seen again as sessions started before the capture)."""
    source = synthetic(20_000, 300, 4)
    data = bytearray(source.read_bytes())
    assert data[:4] == b"\x4d\x3c\xb2\xa1"  # nanosecond timestamps
    offsets = record_offsets(bytes(data))
    middle = len(offsets) // 2
    moved, by, steps = {
        "ntp step back": (range(middle, len(offsets)), -60, [middle + 1]),
        "clock set at boot": (range(middle), -26 * YEAR_S, [middle + 1]),
        "one corrupt timestamp": (range(middle, middle + 1), YEAR_S, [middle + 1, middle + 2]),
        "one timestamp near zero": (range(middle, middle + 1), -1_780_000_000, [middle + 1, middle + 2]),
    }[case]
    for i in moved:
        pos = offsets[i]
        sec, frac = struct.unpack_from("<II", data, pos)
        struct.pack_into("<II", data, pos, sec + by, frac)
    stepped = tmp_path / "stepped.pcap"
    stepped.write_bytes(bytes(data))

    def found(doc: dict[str, Any]) -> set[tuple[str, tuple[int, ...], Any]]:
        return {(f["rule_id"], tuple(f["frames"]), f["gap_s"]) for f in doc["findings"]}

    plain, doc = document([source]), assert_same_report([stepped])
    kept = {f for f in found(plain) if not any(f[1][0] < step <= f[1][-1] for step in steps)}
    assert 100 < len(kept) < len(found(plain))
    assert found(doc) == kept
    assert len(doc["sessions"]) == len(plain["sessions"])
    (warning,) = doc["captures"][0]["warnings"]
    way = "back" if by < 0 and case != "clock set at boot" else "forward"
    assert f"timestamps go {way} {abs(by)}." in warning and f"at frame {steps[0]} " in warning
    assert warning.endswith("(and 1 more step after it)") == (len(steps) == 2), warning


def test_a_capture_cut_by_a_snap_length_gives_the_same_report(synthetic, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """`tcpdump -s 96`: every frame cut after 96 bytes, so PUBLISH payloads are mostly not
    captured. Keep-alive needs only packet headers, and every byte lost lies inside a payload the
    framer skips: the report is the whole capture's (each cut used to count as a capture gap a
    packet may hide in: a third of the findings were KA902, the silence not judged). Cut frames
    are steady as whole ones are: the per-frame way takes no more of them (it took every one,
    which made such a capture three times slower to read)."""
    source = synthetic(20_000, 300, 4)
    data = source.read_bytes()

    def snap(length: int) -> tuple[Path, bytearray]:
        out = bytearray(data[:16] + struct.pack("<I", length) + data[20:24])
        for pos in record_offsets(data):
            sec, frac, incl, orig = struct.unpack_from("<IIII", data, pos)
            kept = min(incl, length)
            out += struct.pack("<IIII", sec, frac, kept, orig) + data[pos + 16:pos + 16 + kept]
        path = tmp_path / f"snap{length}.pcap"
        path.write_bytes(bytes(out))
        return path, out

    # shorter snap lengths cut packet headers too (56: a packet's first two bytes are kept, 70:
    # sixteen): what cannot be framed is not steady, and both paths agree
    for length in (56, 70):
        assert_same_report([snap(length)[0]])
    snapped, out = snap(96)

    def records(doc: dict[str, Any]) -> tuple[list[Any], list[Any]]:
        strip = ("session_id", "capture")
        return ([{k: v for k, v in r.items() if k not in strip} for r in doc["sessions"]],
                [{k: v for k, v in r.items() if k not in strip} for r in doc["findings"]])

    whole, doc = records(document([source])), records(assert_same_report([snapped]))
    assert doc == whole
    assert any(f["rule_id"] == "KA101" for f in doc[1])

    def twice(capture: bytes, name: str) -> Path:
        """As `tcpdump -i any` takes it beside a bridge: every frame twice."""
        copy = bytearray(capture[:24])
        for pos in record_offsets(capture):
            copy += capture[pos:pos + 16 + struct.unpack_from("<I", capture, pos + 8)[0]] * 2
        path = tmp_path / name
        path.write_bytes(bytes(copy))
        return path

    assert (records(assert_same_report([twice(bytes(out), "snap96-any.pcap")]))
            == records(document([twice(data, "any.pcap")])))

    count = count_per_frame(monkeypatch)
    whole_frames, cut_frames = count(source), count(snapped)
    assert 0 < cut_frames <= whole_frames * 1.05, (whole_frames, cut_frames)


# -- compressed, truncated and corrupt copies ---------------------------------------------------

COMPRESSORS = {"gz": gzip.compress, "bz2": bz2.compress, "xz": lzma.compress}


@pytest.mark.parametrize("suffix", COMPRESSORS)
def test_compressed_copies(synthetic, tmp_path: Path, suffix: str) -> None:
    for source in (CAPTURES / "split-and-coalesced.pcap", synthetic(3_000, 40, 2)):
        path = tmp_path / f"{source.name}.{suffix}"
        path.write_bytes(COMPRESSORS[suffix](source.read_bytes()))
        doc = assert_same_report([path])
        assert doc["captures"][0]["error"] is None and not doc["captures"][0]["warnings"]


def _cuts(data: bytes) -> dict[str, int]:
    """Byte offsets to cut a capture at: inside the file header, inside record headers and record
    data, exactly between records, and the last byte."""
    offsets = record_offsets(data)
    mid = offsets[len(offsets) // 2]
    return {
        "file header": 10,
        "after file header": 24,
        "first record header": 24 + 7,
        "first record data": 24 + 16 + 5,
        "second record header": offsets[1] + 15,
        "middle record header": mid + 8,
        "middle record data": mid + 16 + 20,
        "between records": mid,
        "last byte": len(data) - 1,
    }


@pytest.mark.parametrize("capture", ["late-pinger.pcap", "synthetic"])
def test_truncated_copies(synthetic, tmp_path: Path, capture: str) -> None:
    source = CAPTURES / capture if capture != "synthetic" else synthetic(3_000, 40, 2)
    data = source.read_bytes()
    for where, cut in _cuts(data).items():
        path = tmp_path / f"cut-{cut}.pcap"
        path.write_bytes(data[:cut])
        summary = assert_same_report([path])["captures"][0]
        clean = where in ("after file header", "between records")
        assert bool(summary["error"] or summary["warnings"]) != clean, where


def test_truncated_gzip_copies(synthetic, tmp_path: Path) -> None:
    """Compressed streams cut short: the warning ("compressed stream ends early") and every frame
    before it must be the same on both paths."""
    for source in (CAPTURES / "receive-only-subscriber.pcap", synthetic(3_000, 40, 2)):
        compressed = gzip.compress(source.read_bytes())
        for cut in (len(compressed) // 3, len(compressed) - 10, len(compressed) - 1):
            path = tmp_path / f"{source.stem}-{cut}.pcap.gz"
            path.write_bytes(compressed[:cut])
            doc = assert_same_report([path])
            assert doc["captures"][0]["warnings"]


def test_gzip_of_a_truncated_capture(synthetic, tmp_path: Path) -> None:
    """A complete gzip stream of a capture cut inside a record."""
    data = synthetic(3_000, 40, 2).read_bytes()
    cut = _cuts(data)["middle record data"]
    path = tmp_path / "cut.pcap.gz"
    path.write_bytes(gzip.compress(data[:cut]))
    doc = assert_same_report([path])
    assert doc["captures"][0]["warnings"]


def test_corrupt_record_length(synthetic, tmp_path: Path) -> None:
    """A captured length larger than the file's snaplen and 256 KiB allow (just over, or absurd),
    on the first, the second, a middle and the last record: reading stops there with an error."""
    data = synthetic(3_000, 40, 2).read_bytes()
    offsets = record_offsets(data)
    last = len(offsets) - 1
    for k, length in ((0, 0xFFFFFFF0), (1, 300_000), (last // 2, 0xFFFFFFF0), (last, 300_000)):
        bad = bytearray(data)
        struct.pack_into("<I", bad, offsets[k] + 8, length)
        path = tmp_path / f"corrupt-{k}.pcap"
        path.write_bytes(bytes(bad))
        summary = assert_same_report([path])["captures"][0]
        assert "corrupt record header" in summary["error"] and summary["frames"] == k


def test_record_length_past_the_end(synthetic, tmp_path: Path) -> None:
    """A plausible captured length that swallows the following records: the last one runs past
    the end of the file (a cut-short warning); a middle one makes the rest of the file garbage."""
    data = synthetic(3_000, 40, 2).read_bytes()
    offsets = record_offsets(data)
    for k in (len(offsets) - 1, len(offsets) // 2):
        bad = bytearray(data)
        struct.pack_into("<I", bad, offsets[k] + 8, 200_000)
        path = tmp_path / f"long-{k}.pcap"
        path.write_bytes(bytes(bad))
        summary = assert_same_report([path])["captures"][0]
        assert summary["warnings"] or summary["error"]


# -- other link layers and frame shapes ---------------------------------------------------------


@pytest.mark.parametrize("variant", VARIANTS, ids=list(VARIANTS))
@pytest.mark.parametrize("name", ["compliant-pinger.pcap", "late-pinger.pcap", "split-and-coalesced.pcap",
                                  "ws-paho.pcap"])
def test_link_layer_variants(tmp_path: Path, name: str, variant: str) -> None:
    """The shipped captures rewritten as other capture setups write them (`test_pipeline_variants`):
    frames the columnar decoder does not take (raw IP, Linux cooked, VLAN tags) go the per-frame
    way and must be judged exactly as on that path."""
    with open_capture(str(CAPTURES / name)) as reader:
        frames = [(ts, data) for _, ts, _, data, _ in reader]
        linktype = next(iter(reader.linktypes))
    try:
        new_linktype, new_frames = VARIANTS[variant](linktype, frames)
    except AssertionError:  # the variant changes nothing in this capture
        pytest.skip("variant does not apply")
    assert_same_report([write_pcap(tmp_path / "v.pcap", new_linktype, new_frames)])


def test_frames_behind_two_vlan_tags_are_steady(synthetic, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """Behind a service tag and a customer tag (802.1ad, "QinQ", as on a provider's trunk) frames
    are decoded in bulk as behind one: the per-frame way takes no more of them than of the
    untagged capture (it took every one, 1.7 times the untagged capture's time). The same report."""

    original = synthetic(20_000, 120, 4)
    with open_capture(str(original)) as reader:
        frames = [(ts, data) for _, ts, _, data, _ in reader]
    _, tagged = VARIANTS["802.1ad and 802.1Q tags"](1, frames)
    capture = write_pcap(tmp_path / "qinq.pcap", 1, tagged)
    assert_same_report([capture])
    count = count_per_frame(monkeypatch)
    untagged, tagged_frames = count(original), count(capture)
    assert 0 < tagged_frames <= untagged, (untagged, tagged_frames)


def test_damaged_captures_of_every_shape(tmp_path: Path) -> None:
    """The shipped captures in the link layers the columnar decoder takes (Linux cooked v1 and
    v2, raw IP, a VLAN tag), as pcap and pcapng, with random bytes damaged, cut short or
    gzip-wrapped (`flipped_variant`, as the CLI's fuzzing): the columnar path never raises and
    reports what frame by frame reports, whatever the damage reached (headers, lengths, times)."""
    import random

    from tests.cli.test_cli import flipped_variant

    rng = random.Random(20261127)
    shapes = []
    for capture in sorted(CAPTURES.glob("*.pcap")):
        with open_capture(str(capture)) as reader:
            frames = [(ts, data) for _, ts, _, data, _ in reader]
            linktype = next(iter(reader.linktypes))
        for variant in ("linux cooked v1", "linux cooked v2", "raw ip", "802.1Q tag",
                        "802.1ad and 802.1Q tags"):
            try:
                new_linktype, new_frames = VARIANTS[variant](linktype, frames)
            except AssertionError:
                continue
            writer = write_pcapng if len(shapes) % 2 else write_pcap
            shapes.append(writer(tmp_path / f"{capture.stem}-{len(shapes)}", new_linktype, new_frames))
    for i in range(240):
        path = tmp_path / f"damaged-{i}"
        path.write_bytes(flipped_variant(rng, shapes[i % len(shapes)].read_bytes()))
        assert_same_report([path], assume_keep_alive_s=2)


# -- stdin --------------------------------------------------------------------------------------


class _Stdin:
    """What `open_capture('-')` uses of `sys.stdin`."""

    def __init__(self, buffer: io.BufferedReader) -> None:
        self.buffer = buffer

    def isatty(self) -> bool:
        return False


def _piped(monkeypatch: pytest.MonkeyPatch, data: bytes, **options: Any) -> Report:
    """The report of `data` read as '-' from a pipe that delivers 3,000 bytes at a time."""
    read_fd, write_fd = os.pipe()

    def feed() -> None:
        with os.fdopen(write_fd, "wb", buffering=0) as pipe:
            for i in range(0, len(data), 3000):
                pipe.write(data[i:i + 3000])

    writer = threading.Thread(target=feed)
    writer.start()
    with os.fdopen(read_fd, "rb") as pipe:
        monkeypatch.setattr(sys, "stdin", _Stdin(pipe))
        found = report(["-"], **options)
    writer.join()
    return found


@pytest.mark.parametrize("cut", ["whole", "inside a record"])
def test_stdin_pipe(synthetic, monkeypatch: pytest.MonkeyPatch, cut: str) -> None:
    """'-' read from a pipe, whole or ending inside a record."""
    data = synthetic(3_000, 40, 2).read_bytes()
    if cut != "whole":
        data = data[:_cuts(data)["middle record data"]]
    columnar_found, per_frame_found = (_piped(monkeypatch, data, columnar=way) for way in (True, False))
    columnar, per_frame = document(columnar_found), document(per_frame_found)
    assert columnar == per_frame, "\n".join(differences(columnar, per_frame))
    assert _objects(columnar_found) == _objects(per_frame_found)
    assert bool(columnar["captures"][0]["warnings"]) == (cut != "whole")


def _corrupted(data: bytes) -> bytes:
    """A gzip stream of `data` whose checksum is wrong: it fails at its very end."""
    packed = bytearray(gzip.compress(data))
    packed[-8] ^= 0xFF
    return bytes(packed)


@pytest.mark.parametrize("source", ["stdin", "gzip file", "stdin gzip", "corrupt gzip file",
                                    "truncated gzip file"])
def test_a_stream_is_read_ahead_to_learn_its_size(synthetic, monkeypatch: pytest.MonkeyPatch,
                                                 tmp_path: Path, source: str) -> None:
    """By default a capture whose size the file system does not give (standard input, a compressed
    file) is read ahead up to `COLUMNAR_MIN_BYTES` to choose the way: the columnar one when it
    holds that much, frame by frame when it ends first. What was read ahead is analysed (the same
    report as frame by frame), and a stream that fails while being read ahead fails where the
    frame-by-frame walker meets it: the same frames read, the same error or warning."""
    from analyzer import engine

    data = synthetic(3_000, 40, 2).read_bytes()
    if "gzip" in source:
        packed = gzip.compress(data)
        data = {"corrupt": _corrupted(data), "truncated": packed[:len(packed) // 2]}.get(
            source.split()[0], packed)
    path = tmp_path / "capture.pcap.gz"
    path.write_bytes(data)
    fed: list[int] = []
    real = feed.ColumnarFeed.feed
    monkeypatch.setattr(feed.ColumnarFeed, "feed",
                        lambda self, batch, offset: fed.append(len(batch)) or real(self, batch, offset))

    def analysed(**options: Any) -> Report:
        return _piped(monkeypatch, data, **options) if "stdin" in source else report([path], **options)

    expected = document(analysed(columnar=False))
    assert expected["captures"][0]["frames"] > 100
    if "corrupt" in source or "truncated" in source:
        summary = expected["captures"][0]
        assert summary["error"] if "corrupt" in source else summary["warnings"]
    decompressed = len(gzip.decompress(data)) if source in ("gzip file", "stdin gzip") else len(data)
    for threshold, columnar in ((decompressed // 2, True), (4 * decompressed + (1 << 20), False)):
        monkeypatch.setattr(engine, "COLUMNAR_MIN_BYTES", threshold)
        fed.clear()
        found = document(analysed())
        assert found == expected, "\n".join(differences(found, expected))
        if "corrupt" not in source and "truncated" not in source:
            assert bool(fed) is columnar, threshold
            assert sum(fed) == (expected["captures"][0]["frames"] if columnar else 0)


# -- the public corpus (../shared/captures-public) -----------------------------------------------


def _public() -> list[Any]:
    if not PUBLIC.is_dir():
        return [pytest.param(None, marks=pytest.mark.skip(reason=f"public corpus not found at {PUBLIC}"),
                             id="no-corpus")]
    return sorted(p.name for p in PUBLIC.glob("*.pcap"))


@pytest.mark.corpus
@pytest.mark.parametrize("name", _public())
def test_public_capture(name: str) -> None:
    """Each public capture with the default ports and, where its tshark oracle used others, with
    those (as `tests/corpus` analyses it)."""
    path = PUBLIC / name
    assert_same_report([path])
    oracle = path.with_name(name + ".tshark.json")
    if oracle.exists():
        ports = frozenset(json.loads(oracle.read_text())["server_ports"])
        if ports != Options(ruleset=RULESET).ports:
            assert_same_report([path], ports=ports)


def test_cli_switch_gives_the_same_document(tmp_path: Path) -> None:
    """`MQTT_KEEPALIVE_COLUMNAR=1` turns the columnar path on for the command; the document it
    writes is the one the frame-by-frame command writes."""
    import subprocess

    capture = Path(__file__).resolve().parents[2] / "captures" / "busy-publisher.pcap"
    outputs = []
    for switch in ("false", "true"):
        out = tmp_path / f"report-{switch}.json"
        env = dict(os.environ, MQTT_KEEPALIVE_COLUMNAR=switch)
        done = subprocess.run([sys.executable, "-m", "analyzer", "analyze", str(capture), "--format",
                               "json", "-o", str(out)], env=env, capture_output=True, text=True)
        assert done.returncode in (0, 1), done.stderr
        outputs.append(out.read_text())
    assert outputs[0] == outputs[1]


@pytest.mark.parametrize("switch, used", [("true", True), ("1", True), ("false", False), (None, False)])
def test_cli_switch_selects_the_path(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                     switch: str | None, used: bool) -> None:
    """The `columnar` setting (here from the environment) picks the path the command runs."""
    from typer.testing import CliRunner

    import analyzer.cli  # noqa: F401 - registers the commands
    from analyzer.cli.common import app
    from analyzer.columnar import feed

    calls = []
    real = feed.ColumnarFeed.feed
    monkeypatch.setattr(feed.ColumnarFeed, "feed", lambda self, *a, **k: calls.append(1) or real(self, *a, **k))
    if switch is None:
        monkeypatch.delenv("MQTT_KEEPALIVE_COLUMNAR", raising=False)
    else:
        monkeypatch.setenv("MQTT_KEEPALIVE_COLUMNAR", switch)
    capture = Path(__file__).resolve().parents[2] / "captures" / "late-pinger.pcap"
    result = CliRunner().invoke(app, ["analyze", str(capture), "--format", "json", "-o",
                                      str(tmp_path / "r.json")])
    assert result.exit_code == 0, result.output
    assert "not a setting" not in result.output
    assert bool(calls) is used


def test_a_capture_is_read_the_columnar_way_by_its_size_unless_told(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """By default (`Options.columnar` None) a capture file of `COLUMNAR_MIN_BYTES` or more is read
    the columnar way and a smaller one frame by frame; true or false says so for every capture.
    The report is the same."""
    from analyzer import engine

    fed: list[str] = []
    real = feed.ColumnarFeed.feed

    def feeding(self: feed.ColumnarFeed, *args: Any, **kwargs: Any) -> Any:
        fed.append(self.analysis.path)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(feed.ColumnarFeed, "feed", feeding)
    path = CAPTURES / "late-pinger.pcap"
    size = path.stat().st_size

    def columnar(threshold: int, **options: Any) -> bool:
        monkeypatch.setattr(engine, "COLUMNAR_MIN_BYTES", threshold)
        fed.clear()
        found = document([path], **options)
        assert found == expected
        return str(path) in fed

    expected = document([path], columnar=False)
    assert columnar(size)
    assert not columnar(size + 1)
    assert columnar(size + 1, columnar=True)
    assert not columnar(size, columnar=False)
    with open_capture(str(path)) as reader:
        assert engine._columnar(Options(columnar=True), reader)
        assert not engine._columnar(Options(columnar=False), reader)


def test_a_rotation_of_large_and_small_files_by_default(synthetic, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """By default each file of a rotation takes the way its size gives: the large ones the columnar
    way, the small ones frame by frame, one analysis carried across both (the report is the one
    frame by frame gives)."""
    from analyzer import engine

    data = synthetic(6_000, 5, 3).read_bytes()
    offsets = record_offsets(data)
    cuts = [24, offsets[len(offsets) * 2 // 5], offsets[len(offsets) * 3 // 5], len(data)]
    files = []
    for i in range(3):  # large, small, large
        path = tmp_path / f"dev.pcap{i}"
        path.write_bytes(data[:24] + data[cuts[i]:cuts[i + 1]])
        files.append(path)
    sizes = [p.stat().st_size for p in files]
    assert sizes[1] < min(sizes[0], sizes[2])
    monkeypatch.setattr(engine, "COLUMNAR_MIN_BYTES", sizes[1] + 1)
    fed: list[str] = []
    real = feed.ColumnarFeed.feed
    monkeypatch.setattr(feed.ColumnarFeed, "feed",
                        lambda self, batch, offset: fed.append(batch.first_frame + offset) or real(self, batch, offset))
    mixed = document([tmp_path])
    second, third = len(offsets) * 2 // 5 + 1, len(offsets) * 3 // 5 + 1  # their first frames
    assert min(fed) == 1 and third in fed and not [f for f in fed if second <= f < third]
    assert mixed == document([tmp_path], columnar=False)
    assert "rotated files" in mixed["captures"][0]["warnings"][0]

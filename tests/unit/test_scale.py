"""Many files and a cluster: the same report from one process, a process pool and a Dask cluster;
`--dask` end to end; `--format parquet -o DIR` round-trips with pandas.

The cluster is a `distributed.LocalCluster` of two worker processes started here (the whole module
is skipped when Dask distributed is not installed: `pip install 'mqtt-keepalive[dask]'`).
"""

from __future__ import annotations

import gzip
import io
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from analyzer import analyze, engine
from analyzer.errors import ConfigError
from analyzer.model import Report, Severity

distributed = pytest.importorskip("distributed")

ROOT = Path(__file__).resolve().parents[2]
CAPTURES = ROOT / "captures"
ENV = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "NO_COLOR": "1", "PYTHONIOENCODING": "utf-8",
       "LANG": "C.UTF-8"}


@pytest.fixture(scope="module")
def cluster() -> Iterator[Any]:
    with distributed.LocalCluster(n_workers=2, processes=True, threads_per_worker=1,
                                  dashboard_address=None, host="127.0.0.1") as local:
        yield local


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shipped captures plus copies under other names (more files than workers, and
    duplicate content whose sessions must stay apart by capture)."""
    top = tmp_path_factory.mktemp("scale") / "fleet"
    shutil.copytree(CAPTURES, top, ignore=shutil.ignore_patterns("*.py", "*.md"))
    (top / "copies").mkdir()
    for name in ("late-pinger.pcap", "silent-client.pcap"):
        shutil.copy(CAPTURES / name, top / "copies" / f"copy-of-{name}")
    return top


def document(report: Report) -> dict[str, Any]:
    from analyzer.report.json import render_json

    out = io.StringIO()
    render_json(report, Severity.ERROR, out)
    return json.loads(out.getvalue())


def test_jobs_and_dask_give_the_same_report(cluster: Any, fleet: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(engine, "POOL_MIN_BYTES", 0)  # the shipped captures are small
    monkeypatch.chdir(fleet.parent)  # relative inputs: workers must not depend on the cwd
    inputs = ["fleet"]
    one = analyze(inputs, jobs=1)
    done: list[tuple[int, int]] = []
    two = analyze(inputs, jobs=2)
    on_dask = analyze(inputs, dask_address=cluster.scheduler_address,
                      progress=lambda d, t: done.append((d, t)))
    expected = document(one)
    assert len(one.captures) == len(list(CAPTURES.glob("*.pcap"))) + 2 and one.sessions and one.findings
    assert document(two) == expected
    assert document(on_dask) == expected
    assert on_dask == one
    assert done and done[-1][0] == done[-1][1] > 0


def test_dask_reads_file_urls(cluster: Any, fleet: Path) -> None:
    url = "file://" + str(fleet)
    local = document(analyze([str(fleet)], jobs=1))
    remote = analyze([url], dask_address=cluster.scheduler_address)
    assert all(c.path.startswith(url + "/") for c in remote.captures)
    assert json.loads(json.dumps(document(remote)).replace(url, str(fleet))) == local


def test_a_url_directory_lists_what_a_local_directory_would(tmp_path: Path) -> None:
    """Captures by content (inside compressed files too) or by name: `lost.pcap` (text) is
    listed, to be reported unusable; compressed text is not."""
    from analyzer.scale.dask import capture_paths
    from analyzer.sources.files import expand_inputs

    shutil.copy(CAPTURES / "late-pinger.pcap", tmp_path / "late.dump")
    (tmp_path / "lost.pcap").write_bytes(b"tcpdump: eth0: No such device exists\n")
    (tmp_path / "notes.txt").write_bytes(b"not a capture\n")
    (tmp_path / "app.log.gz").write_bytes(gzip.compress(b"not a capture either\n"))
    url = "file://" + str(tmp_path)
    listed = capture_paths([url], [], lambda paths, _unusable: expand_inputs(paths))
    assert listed == [f"{url}/late.dump", f"{url}/lost.pcap"]
    assert [p.replace(url, str(tmp_path)) for p in listed] == expand_inputs([str(tmp_path)])


def test_a_worker_copies_remote_urls_and_names_them_as_given(tmp_path: Path) -> None:
    """What a worker does with a non-local fsspec URL (here the in-process memory file system)."""
    fsspec = pytest.importorskip("fsspec")
    from analyzer.scale.dask import analyze_task

    fs = fsspec.filesystem("memory")
    fs.pipe("/fleet/late-pinger.pcap", (CAPTURES / "late-pinger.pcap").read_bytes())
    url = "memory://fleet/late-pinger.pcap"
    [(summary, sessions, findings)] = analyze_task([(url, url)], engine.Options())
    [(l_summary, l_sessions, l_findings)] = engine._analyze_group([str(CAPTURES / "late-pinger.pcap")],
                                                                  engine.Options())
    assert summary.path == url and summary.frames == l_summary.frames
    assert [s.capture for s in sessions] == [url] * len(l_sessions)
    assert [s.session_id for s in sessions] == [s.session_id for s in l_sessions]
    assert [f.capture for f in findings] == [url] * len(l_findings) and findings
    missing = analyze_task([("memory://fleet/none.pcap",) * 2], engine.Options())
    assert missing[0][0].error and missing[0][0].path == "memory://fleet/none.pcap"


@pytest.fixture
def shards_merged(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """Captures from 1 MiB on are dealt out among the cluster's tasks; each merge's outcome
    (True: kept) is recorded (the client merges)."""
    from analyzer import split

    monkeypatch.setattr(engine, "SPLIT_MIN_BYTES", 1 << 20)
    outcomes: list[bool] = []
    real = split.merge_shards

    def spy(parts: Any) -> Any:
        result = real(parts)
        outcomes.append(result is not None)
        return result

    monkeypatch.setattr(split, "merge_shards", spy)
    return outcomes


def test_dask_deals_a_large_capture_out_among_its_workers(
        cluster: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, shards_merged: list[bool]) -> None:
    """A 40,000-frame broker capture beside a small one: the large one is analysed by a task per
    worker thread, merged on the client into exactly the report one process writes (sessions,
    findings, stream numbers, the capture named as given)."""
    from tests.unit.test_columnar_equivalence import generate

    (tmp_path / "fleet").mkdir()
    generate(tmp_path / "fleet" / "broker.pcap", 40_000, 300, 5)
    shutil.copy(CAPTURES / "late-pinger.pcap", tmp_path / "fleet" / "late-pinger.pcap")
    monkeypatch.chdir(tmp_path)  # relative inputs, absolute on the workers, as given in the report
    one = analyze(["fleet"], jobs=1)
    on_dask = analyze(["fleet"], dask_address=cluster.scheduler_address)
    assert shards_merged == [True]  # the large capture only, and the merge was kept
    assert document(on_dask) == document(one)
    assert on_dask == one
    assert {c.path for c in on_dask.captures} == {"fleet/broker.pcap", "fleet/late-pinger.pcap"}
    assert len(one.sessions) > 300 and len(one.findings) > 50


def test_dask_keeps_a_task_per_capture_when_large_captures_fill_the_workers(
        cluster: Any, tmp_path: Path, shards_merged: list[bool]) -> None:
    """Two large captures on two workers: dealing each out would only read each twice."""
    from tests.unit.test_columnar_equivalence import generate

    for seed, name in ((1, "north"), (2, "south")):  # names of two brokers, not of a rotation
        generate(tmp_path / f"{name}.pcap", 10_000, 100, seed)
    one = analyze([str(tmp_path)], jobs=1)
    assert len(one.captures) == 2 and all(c.bytes >= 1 << 20 for c in one.captures)
    on_dask = analyze([str(tmp_path)], dask_address=cluster.scheduler_address)
    assert shards_merged == []
    assert document(on_dask) == document(one)


def test_dask_analyses_a_capture_again_as_one_task_when_the_merge_cannot_be_kept(
        cluster: Any, tmp_path: Path, shards_merged: list[bool]) -> None:
    """A CONNECT cut over two segments, with the client id of another task's connection: that
    task could not read it, so the parts are not merged; the capture is analysed again in one
    task, into one process's report."""
    from tests.property.test_columnar_property import Capture
    from tests.unit.test_split import _takeover

    cap = Capture()
    _takeover(cap, 0, 1, split_connect=True)
    path = str(cap.write(tmp_path / "cut.pcap"))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(engine, "SPLIT_MIN_BYTES", 0)
        on_dask = analyze([path], dask_address=cluster.scheduler_address)
    assert shards_merged == [False]
    assert document(on_dask) == document(analyze([path], jobs=1))


def test_dask_cannot_read_stdin(cluster: Any) -> None:
    with pytest.raises(ConfigError, match="standard input"):
        analyze(["-"], dask_address=cluster.scheduler_address)


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([sys.executable, "-m", "analyzer", *args], capture_output=True, text=True,
                          cwd=cwd, env=ENV, timeout=120, check=False, stdin=subprocess.DEVNULL)
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc


def test_cli_dask_end_to_end_with_json_and_parquet(cluster: Any, fleet: Path, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    pd = pytest.importorskip("pandas")
    pytest.importorskip("pyarrow")
    from analyzer.report.tables import findings_frame, sessions_frame

    address = cluster.scheduler_address
    out = tmp_path / "report.json"
    proc = _cli("analyze", "fleet", "--dask", address, "--format", "json", "-o", str(out),
                cwd=fleet.parent)
    assert proc.returncode == 1, proc.stderr  # the shipped captures hold error findings
    monkeypatch.chdir(fleet.parent)
    expected = analyze(["fleet"], jobs=1)
    assert json.loads(out.read_text()) == document(expected)

    pq = tmp_path / "pq"
    proc = _cli("check", "fleet", "--dask", address, "--format", "parquet", "-o", str(pq), "-q",
                cwd=fleet.parent)
    assert proc.returncode == 1, proc.stderr
    assert sorted(os.listdir(pq)) == ["findings.parquet", "sessions.parquet"]
    for name, frame in (("sessions", sessions_frame(expected)), ("findings", findings_frame(expected))):
        back = pd.read_parquet(pq / f"{name}.parquet")
        assert list(back.columns) == list(frame.columns) and len(back) == len(frame) > 0
        pd.testing.assert_frame_equal(back, frame)


def test_parquet_needs_an_output_directory(tmp_path: Path) -> None:
    pytest.importorskip("pyarrow")
    from typer.testing import CliRunner

    from analyzer.cli import app

    runner = CliRunner()
    capture = str(CAPTURES / "compliant-pinger.pcap")
    result = runner.invoke(app, ["analyze", capture, "--format", "parquet"])
    assert result.exit_code == 2
    result = runner.invoke(app, ["sessions", capture, "--format", "parquet", "-o", str(tmp_path / "s")])
    assert result.exit_code == 0 and os.listdir(tmp_path / "s") == ["sessions.parquet"]

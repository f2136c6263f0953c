"""Helper processes end with the process they work for, even when it is killed (Linux).

Each test runs the tool's own pools in a child interpreter that stops at a known point (its
helpers started and idle, or done, with their files made), prints what it knows, and is then
killed with SIGKILL, which leaves it no chance to clean up: its helpers must end on their own,
and take their temporary files with them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CAPTURES = ROOT / "captures"

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="helpers end with their parent on Linux")

ANALYSING = """
import os, sys, time
from analyzer import split
from analyzer.engine import Options

analysed = split._run_shard

def analysing(*args):  # each process analyses its share, then takes its time to hand it over
    parts = analysed(*args)
    files = " ".join(f for p in parts for f in (p.sessions, p.findings))
    print(os.getpid(), "|", files, flush=True)
    time.sleep(120)
    return parts

split._run_shard = analysing  # (the pool's processes are forked: they see this)
split.analyze_split([sys.argv[1]], Options(), 2)
"""

MERGING = """
import sys, time
from analyzer import split
from analyzer.engine import Options

def merging(parts, *args):  # the parent stops as it merges the parts' records
    print("|", " ".join(f for p in parts for f in (p.sessions, p.findings)), flush=True)
    time.sleep(120)

split._merged = merging
split.analyze_split([sys.argv[1]], Options(), 2)
"""

FLEET = """
import multiprocessing, sys, time
from analyzer import engine

engine.POOL_MIN_BYTES = 0
taken = engine._Gathered.add

def add(self, results):  # after the first capture's results, this process stops taking more
    taken(self, results)
    print(" ".join(str(p.pid) for p in multiprocessing.active_children()), "|", flush=True)
    time.sleep(120)

engine._Gathered.add = add
engine.analyze(sys.argv[1:], jobs=2)
"""

RENDERING = """
import multiprocessing, time
from analyzer.report.parallel import rendered

def render(records):
    return "x" * (1 << 18)  # a queue of a few such pieces is more than its pipe holds

texts = rendered([(i, "r") for i in range(40_000)], render, 2)
next(texts)  # the renderer has started; with its queue full it will wait for this writer
print(" ".join(str(p.pid) for p in multiprocessing.active_children()), "|", flush=True)
time.sleep(120)
"""


def _killed_at_its_stop(script: str, args: list[str], tmp_path: Path,
                        stops: int = 1) -> tuple[list[int], list[str]]:
    """Run `script` until it has printed `stops` lines of pids and files, then SIGKILL it."""
    out = tmp_path / "out"
    with out.open("w") as stdout:  # (a file: a pipe would stay open as long as a helper lives)
        proc = subprocess.Popen([sys.executable, "-c", script, *args], stdout=stdout,
                                stderr=subprocess.DEVNULL, cwd=ROOT)
        deadline = time.monotonic() + 60
        while (out.read_text().count("|") < stops and proc.poll() is None
               and time.monotonic() < deadline):
            time.sleep(0.05)
        assert proc.poll() is None, "the script ended before its stop"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    pids: list[int] = []
    files: list[str] = []
    for line in out.read_text().splitlines():
        before, after = line.split("|")
        pids += [int(p) for p in before.split()]
        files += after.split()
    return pids, files


def _ended(pid: int) -> bool:
    """Gone, or a zombie waiting for whoever adopted it to reap it."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except FileNotFoundError:
        return True


def _outliving(pids: list[int]) -> list[int]:
    """The helpers still running 15 s from now (killed then, so that none is left behind)."""
    deadline = time.monotonic() + 15
    while not all(_ended(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    alive = [pid for pid in pids if not _ended(pid)]
    for pid in alive:
        os.kill(pid, signal.SIGKILL)
    return alive


def _left(files: list[str]) -> list[str]:
    """The files still there (removed now, so that none is left behind)."""
    left = [f for f in files if Path(f).exists()]
    for f in left:
        Path(f).unlink()
    return left


def test_a_split_analysis_killed_while_its_processes_work_leaves_no_process_and_no_file(
        tmp_path: Path) -> None:
    """The parent of a split analysis is killed while its processes still work (their part files
    made): they end, and remove the files the parent would have."""
    pids, files = _killed_at_its_stop(ANALYSING, [str(CAPTURES / "late-pinger.pcap")], tmp_path,
                                      stops=2)
    assert len(pids) == 2 and len(files) == 4
    assert _outliving(pids) == []
    assert _left(files) == []


def test_a_split_analysis_killed_while_merging_leaves_no_file(tmp_path: Path) -> None:
    """The parent is killed while it merges the parts (its processes gone): the part files are
    gone with it."""
    pids, files = _killed_at_its_stop(MERGING, [str(CAPTURES / "late-pinger.pcap")], tmp_path)
    assert pids == [] and len(files) == 4
    assert _left(files) == []


def test_a_killed_fleet_analysis_leaves_no_process(tmp_path: Path) -> None:
    """The parent of a pool analysing many captures is killed after the first result: the pool's
    processes, idle or busy, end instead of waiting for tasks forever."""
    captures = sorted(str(p) for p in CAPTURES.glob("*.pcap"))[:6]
    pids, _ = _killed_at_its_stop(FLEET, captures, tmp_path)
    assert pids
    assert _outliving(pids) == []


def test_a_killed_writers_renderers_end(tmp_path: Path) -> None:
    """The writer of a long JSON report is killed while its renderers have pieces ready: they end
    too, instead of waiting for it forever with their queue full."""
    pids, _ = _killed_at_its_stop(RENDERING, [], tmp_path)
    assert pids
    assert _outliving(pids) == []

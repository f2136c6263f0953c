"""A long report's records rendered by several processes: the same text, in order, and a failure
that is reported instead of a hang or a document with a hole in it.

The tests that fork (`forking`) run in a fresh interpreter of their own
(`test_forking_in_a_fresh_interpreter`): rendering forks only when no other thread runs, and
other tests leave threads behind (Dask's offload thread, for one)."""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
from pathlib import Path

import pytest

from analyzer import spool
from analyzer.report import parallel
from analyzer.report.parallel import RenderFailed, rendered
from analyzer.spool import Chain, Spool, pieces


def _spool(n: int, start: int = 0) -> Spool[tuple[int, str]]:
    return Spool((i, f"record {i}") for i in range(start, start + n))


SEQUENCES = {
    "in memory": lambda: _spool(700),
    "spilled, with a tail": lambda: _spool(spool.IN_MEMORY + 3 * spool.BATCH + 17),
    "spilled, no tail": lambda: _spool(spool.IN_MEMORY + 2 * spool.BATCH),
    "chain": lambda: Chain([_spool(2_500), [], _spool(5_000, 2_500), [(7_500, "last")]]),
    "list": lambda: [(i, "x") for i in range(3_000)],
    "empty": lambda: Spool(),
}


@pytest.mark.parametrize("name", SEQUENCES)
def test_pieces_are_the_records_in_order(name: str) -> None:
    """Pieces hold every record once, in order, none empty, at most a batch each."""
    records = SEQUENCES[name]()
    loaded = [load() for load in pieces(records)]
    assert all(0 < len(piece) <= spool.BATCH for piece in loaded)
    assert [r for piece in loaded for r in piece] == list(records)


FRESH = "MQTT_KEEPALIVE_TEST_FRESH_INTERPRETER"


@pytest.fixture
def forking() -> None:
    """Only in the fresh interpreter that `test_forking_in_a_fresh_interpreter` starts."""
    if not os.environ.get(FRESH):
        pytest.skip("forks: run in a fresh interpreter by test_forking_in_a_fresh_interpreter")
    assert parallel._may_fork()


def test_forking_in_a_fresh_interpreter() -> None:
    """The `forking` tests, in an interpreter where no other thread runs."""
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-k", "forks_", __file__],
        cwd=Path(__file__).resolve().parents[2], env={**os.environ, FRESH: "1"},
        capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert " passed" in done.stdout and "skipped" not in done.stdout, done.stdout[-2000:]


def _text(records: list[tuple[int, str]]) -> str:
    """A piece's text, with the process that rendered it."""
    return f"{os.getpid()}:" + ",".join(str(i) for i, _ in records)


@pytest.mark.parametrize("jobs", [2, 3])
@pytest.mark.parametrize("name", ["spilled, with a tail", "chain", "list"])
def test_forks_several_processes_give_the_text_of_one(monkeypatch: pytest.MonkeyPatch, name: str,
                                                      jobs: int, forking: None) -> None:
    """With `jobs` processes, each piece comes back rendered, in order; every process took its
    share (pieces n, n + jobs, ...), this one the first."""
    monkeypatch.setattr(parallel, "PARALLEL_MIN", 1)
    records = SEQUENCES[name]()
    one = list(rendered(records, _text, 1))
    many = list(rendered(records, _text, jobs))
    assert [t.split(":", 1)[1] for t in many] == [t.split(":", 1)[1] for t in one]
    pids = [t.split(":", 1)[0] for t in many]
    assert pids[0] == str(os.getpid())
    assert len(set(pids)) == jobs
    assert all(pids[n] == pids[n % jobs] for n in range(len(pids)))
    assert not multiprocessing.active_children()


def test_a_short_list_is_rendered_here(monkeypatch: pytest.MonkeyPatch) -> None:
    records = SEQUENCES["spilled, with a tail"]()
    monkeypatch.setattr(parallel, "PARALLEL_MIN", len(records) + 1)
    assert {t.split(":", 1)[0] for t in rendered(records, _text, 4)} == {str(os.getpid())}


def _fails_on_piece_two(records: list[tuple[int, str]]) -> str:
    if records[0][0] == spool.BATCH:
        raise ValueError("no text for this one")
    return _text(records)


def _dies_on_piece_two(records: list[tuple[int, str]]) -> str:
    if records[0][0] == spool.BATCH:
        os._exit(3)
    return _text(records)


@pytest.mark.parametrize(("render", "message"), [
    (_fails_on_piece_two, "a rendering process failed: ValueError: no text for this one"),
    (_dies_on_piece_two, r"a rendering process ended \(exit code 3\)"),
])
def test_forks_a_failing_process_is_reported(monkeypatch: pytest.MonkeyPatch, render, message: str,
                                            forking: None) -> None:
    """A process that raises or dies on its piece: RenderFailed says so, after the pieces before
    it, and no process is left behind."""
    monkeypatch.setattr(parallel, "PARALLEL_MIN", 1)
    monkeypatch.setattr(parallel, "WAIT_S", 0.2)
    records = SEQUENCES["spilled, with a tail"]()
    got: list[str] = []
    with pytest.raises(RenderFailed, match=message):
        for text in rendered(records, render, 2):  # piece 1 (records 1024..) is the other's
            got.append(text)
    assert len(got) == 1
    assert not multiprocessing.active_children()


def test_forks_a_reader_that_stops_early_leaves_no_process(monkeypatch: pytest.MonkeyPatch,
                                                          forking: None) -> None:
    """The writer stops (say, a closed pipe): the other processes are ended."""
    monkeypatch.setattr(parallel, "PARALLEL_MIN", 1)
    texts = rendered(SEQUENCES["spilled, with a tail"](), _text, 3)
    next(texts)
    texts.close()
    assert not multiprocessing.active_children()


def test_spools_are_read_by_position() -> None:
    """Reading a spilled spool does not move its file's offset (processes forked with it share
    that offset), and an appended batch is read back after the file object's buffer."""
    records = _spool(spool.IN_MEMORY + 2 * spool.BATCH)
    fh = records._file
    assert fh is not None
    fh.seek(5)
    assert list(records) == [(i, f"record {i}") for i in range(spool.IN_MEMORY + 2 * spool.BATCH)]
    assert fh.tell() == 5


def test_forks_not_while_another_thread_runs(monkeypatch: pytest.MonkeyPatch, forking: None) -> None:
    """Another thread may hold a lock the forked process would need: render here instead."""
    import threading

    monkeypatch.setattr(parallel, "PARALLEL_MIN", 1)
    records = SEQUENCES["spilled, with a tail"]()
    assert len({t.split(":", 1)[0] for t in rendered(records, _text, 2)}) == 2
    release = threading.Event()
    other = threading.Thread(target=release.wait)
    other.start()
    try:
        assert {t.split(":", 1)[0] for t in rendered(records, _text, 2)} == {str(os.getpid())}
    finally:
        release.set()
        other.join()


def test_forks_the_cli_json_of_two_processes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                             forking: None) -> None:
    """`analyze --format json --jobs 2` on a capture split between two processes: the document of
    `--jobs 1`, byte for byte, though the other process rendered some of its records."""
    from typer.testing import CliRunner

    from analyzer import engine
    from analyzer.cli import app
    from tests.unit.test_columnar_equivalence import generate

    monkeypatch.setattr(parallel, "PARALLEL_MIN", 1)
    monkeypatch.setattr(spool, "BATCH", 16)  # pieces for both processes
    monkeypatch.setattr(engine, "SPLIT_MIN_BYTES", 0)
    taken: list[str] = []
    real_take = parallel._take
    monkeypatch.setattr(parallel, "_take", lambda *a: taken.append(real_take(*a)) or taken[-1])
    path = tmp_path / "fleet.pcap"
    generate(path, 20_000, 100, 9)
    runner = CliRunner()
    one = runner.invoke(app, ["analyze", "--format", "json", "--jobs", "1", str(path)])
    assert not taken
    two = runner.invoke(app, ["analyze", "--format", "json", "--jobs", "2", str(path)])
    assert one.exit_code == two.exit_code == 1
    assert two.stdout == one.stdout
    assert taken  # pieces of text the other process rendered


def test_forks_no_more_processes_than_pieces(monkeypatch: pytest.MonkeyPatch, forking: None) -> None:
    """Three pieces and `--jobs 8`: three processes render, this one and two forked."""
    monkeypatch.setattr(parallel, "PARALLEL_MIN", 1)
    records = _spool(3 * spool.BATCH)
    started: list[int] = []
    real = multiprocessing.context.ForkProcess.start
    monkeypatch.setattr(multiprocessing.context.ForkProcess, "start",
                        lambda self: started.append(1) or real(self))
    texts = list(rendered(records, _text, 8))
    assert len(texts) == 3 and len({t.split(":", 1)[0] for t in texts}) == 3
    assert len(started) == 2


def _pid_and(value: int) -> tuple[int, int]:
    return os.getpid(), value


class _Unpicklable(Exception):
    def __init__(self, a: int, b: int) -> None:  # pickles, but cannot be unpickled
        super().__init__(f"{a} and {b}")


def _raises(exc: BaseException) -> None:
    raise exc


def test_forks_background_work_is_done_by_another_process(forking: None) -> None:
    """The result comes back from the forked process; the work ran there, and nothing is left."""
    work = parallel.in_background(lambda: _pid_and(7), "test")
    pid, value = work()
    assert value == 7 and pid != os.getpid()
    assert work() == (pid, 7)  # asked again: the same result, no second run
    assert not multiprocessing.active_children()


@pytest.mark.parametrize(("exc", "raised", "message"), [
    (ValueError("bad capture"), ValueError, "bad capture"),
    (_Unpicklable(1, 2), RenderFailed, "a background process failed: _Unpicklable: 1 and 2"),
])
def test_forks_background_work_that_fails_raises_here(forking: None, exc: BaseException,
                                                      raised: type, message: str) -> None:
    work = parallel.in_background(lambda: _raises(exc), "test")
    with pytest.raises(raised, match=message):
        work()
    assert not multiprocessing.active_children()


def test_forks_background_work_that_dies_is_reported(monkeypatch: pytest.MonkeyPatch,
                                                     forking: None) -> None:
    monkeypatch.setattr(parallel, "WAIT_S", 0.2)
    work = parallel.in_background(lambda: os._exit(5), "test")
    with pytest.raises(RenderFailed, match=r"a background process ended \(exit code 5\)"):
        work()
    assert not multiprocessing.active_children()


def test_forks_cancelled_background_work_leaves_no_process(forking: None) -> None:
    import time

    work = parallel.in_background(lambda: time.sleep(60), "test")
    assert multiprocessing.active_children()
    work.cancel()
    assert not multiprocessing.active_children()


def test_background_work_without_fork_runs_here_when_asked() -> None:
    """`fork=False` (`--jobs 1`), or forking not safe: the work runs in this process, only when
    its result is asked for."""
    ran: list[int] = []
    work = parallel.in_background(lambda: ran.append(os.getpid()) or len(ran), "test", fork=False)
    assert not ran and not multiprocessing.active_children()
    assert work() == 1 and work() == 1 and ran == [os.getpid()]


def test_forks_html_timelines_read_by_another_process(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                      forking: None) -> None:
    """`--html` with `--jobs 2`: the captures are read again for the charts by another process
    while this one writes the JSON report and makes the rest of the page; the page and the report
    are the ones `--jobs 1` writes."""
    import re

    from typer.testing import CliRunner

    from analyzer.cli import app
    from analyzer.report import html

    pytest.importorskip("plotly")
    readers = tmp_path / "readers"
    real = html.collect_timelines

    def collect(*args, **kwargs):  # type: ignore[no-untyped-def]
        with open(readers, "a") as fh:
            fh.write(f"{os.getpid()}\n")
        return real(*args, **kwargs)

    monkeypatch.setattr(html, "collect_timelines", collect)
    captures = Path(__file__).resolve().parents[2] / "captures"
    pages, documents = [], []
    for jobs in ("1", "2"):
        page = tmp_path / f"jobs{jobs}.html"
        done = CliRunner().invoke(app, ["analyze", str(captures / "late-pinger.pcap"),
                                        str(captures / "silent-client.pcap"), "--jobs", jobs,
                                        "--html", str(page), "--format", "json"])
        assert done.exit_code == 1, done.output
        documents.append(done.stdout)
        pages.append(re.sub(r"written \d{4}-\d\d-\d\d \d\d:\d\d UTC", "", page.read_text()))
    assert readers.read_text().split() == [str(os.getpid()), readers.read_text().split()[1]]
    assert readers.read_text().split()[1] != str(os.getpid())
    assert pages[0] == pages[1] and "KA101" in pages[0] and '"fig-s-0"' in pages[0]
    assert documents[0] == documents[1] and '"KA101"' in documents[0]
    assert not multiprocessing.active_children()


def _slow_result() -> str:
    import time

    time.sleep(0.5)
    return "x" * (1 << 20)  # more than a pipe holds: sending waits for a reader


def test_forks_background_work_whose_reader_left_ends_quietly(capfd: pytest.CaptureFixture[str],
                                                              forking: None) -> None:
    """The waiting process is gone before the result is sent (killed, say): the other process
    does not wait for a reader forever, and ends without a traceback on the terminal they share."""
    work = parallel.in_background(_slow_result, "test")
    work._receive.close()  # as when this process is gone
    work._worker.join(10)
    assert work._worker.exitcode == 0
    assert "Traceback" not in capfd.readouterr().err


"""Report work done by forked processes: a long list of records turned into text by several
processes and written in order by this one (`rendered`), and one piece of work done beside this
process's own (`in_background`).

Rendering a large capture's report is serial work after a parallel analysis: on the benchmark's
1M-frame capture, writing the JSON document's 20,000 sessions and findings took about a tenth of
the whole run. Records are cut into the pieces their spools hold (`analyzer.spool.pieces`); with
`jobs` processes, this process renders every `jobs`-th piece, starting with the first, and each of
`jobs - 1` forked processes renders its own share of the others, reading only its pieces of the
spool files (by position, so the processes do not share a file offset), and hands the text back
through a queue of a few pieces. The text comes out in the records' order, so the document is
the one a single process writes, byte for byte.

Forked processes see the records as this process holds them, without pickling them over; where
forking is not available or not safe (`_may_fork`), or the list is short, or `jobs` is 1,
everything is rendered here (and background work is done here, when its result is asked for).
"""

from __future__ import annotations

import multiprocessing
import os
import pickle
import queue as queues
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Generic, TypeVar

from analyzer import lifetime
from analyzer.spool import pieces

T = TypeVar("T")

PARALLEL_MIN = 4_096
"""Records below which the list is rendered here (about a tenth of a second of work): forking
costs a few milliseconds a process."""
QUEUED = 4
"""Pieces of text a process may have rendered ahead of the writer."""
WAIT_S = 1.0
"""How often the writer checks that a process it waits for is still alive."""


class RenderFailed(RuntimeError):
    """A rendering process failed or died; the message says how."""


def rendered(records: Sequence[T], render: Callable[[list[T]], str], jobs: int) -> Iterator[str]:
    """`render` of each piece of `records` (none empty), in order; by `jobs` processes when the list
    is long. Flush any buffered output before: a forked process starts with a copy of it."""
    loads = list(pieces(records))
    jobs = min(jobs, len(loads))  # (no process without a piece)
    if jobs <= 1 or len(records) < PARALLEL_MIN or not _may_fork():
        for load in loads:
            yield render(load())
        return
    sys.stdout.flush()
    sys.stderr.flush()
    context = multiprocessing.get_context("fork")
    channels = [context.Queue(QUEUED) for _ in range(jobs - 1)]
    workers = [context.Process(target=_render_share,
                               args=(loads, render, i, jobs, channels[i - 1], os.getpid()),
                               daemon=True, name=f"mqtt-keepalive-render-{i}")
               for i in range(1, jobs)]
    for worker in workers:
        worker.start()
    try:
        for n, load in enumerate(loads):
            share = n % jobs
            if share == 0:
                yield render(load())
            else:
                yield _take(channels[share - 1], workers[share - 1])
        for worker in workers:
            worker.join()
    finally:
        for worker in workers:
            if worker.is_alive():
                worker.terminate()
                worker.join()
        for channel in channels:
            channel.close()


def in_background(work: Callable[[], T], name: str, fork: bool = True) -> Background[T]:
    """`work()` started in a forked process, while this one goes on; calling what is returned
    waits for the result (pickled over) and returns it, or raises what `work` raised (RenderFailed
    if that cannot be sent, or if the process died). Without `fork`, or where forking is not safe
    (`_may_fork`), `work` runs here, when its result is first asked for. Buffered output is
    flushed first (as by `rendered`).

    The HTML report reads the capture again for the packets of the sessions it draws: a pass over
    the whole capture that needs nothing the page's other work makes, and takes as long."""
    return Background(work, name, fork)


class Background(Generic[T]):
    """See `in_background`. `cancel()` stops the work if its result will not be asked for."""

    def __init__(self, work: Callable[[], T], name: str, fork: bool = True) -> None:
        self._work: Callable[[], T] | None = work
        self._outcome: tuple[bool, Any] | None = None
        self._worker: Any = None
        if not fork or not _may_fork():
            return
        sys.stdout.flush()
        sys.stderr.flush()
        context = multiprocessing.get_context("fork")
        self._receive, send = context.Pipe(duplex=False)
        self._worker = context.Process(target=_work_alone,
                                       args=(work, send, self._receive, os.getpid()),
                                       daemon=True, name=f"mqtt-keepalive-{name}")
        self._worker.start()
        send.close()  # (the child's end: this process only reads)
        self._work = None

    def __call__(self) -> T:
        if self._outcome is None:
            if self._work is not None:
                self._outcome = (True, self._work())
            else:
                try:
                    self._outcome = _received(self._receive, self._worker)
                finally:
                    self.cancel()
        ok, value = self._outcome
        if not ok:
            raise value
        return value  # type: ignore[no-any-return]

    def cancel(self) -> None:
        """End the process (if there is one and it still runs); a no-op once the result is in."""
        if self._worker is not None:
            self._receive.close()
            if self._worker.is_alive():
                self._worker.terminate()
            self._worker.join()
            self._worker = None


def _work_alone(work: Callable[[], Any], send: Any, receive: Any, owner: int) -> None:
    """In a forked process: `work()`, or what it raised, sent back to process `owner`. It ends
    with `owner`; where it cannot ask for that, its copy of the reading end, closed first, makes
    sending fail instead of waiting for a reader forever."""
    lifetime.end_with(owner)
    receive.close()
    try:
        outcome: tuple[bool, Any] = (True, work())
    except BaseException as exc:  # noqa: BLE001 - whatever it is, the waiting process must hear of it
        outcome = (False, exc)
        try:
            pickle.loads(pickle.dumps(exc))  # some exceptions pickle but cannot be unpickled
        except Exception:  # noqa: BLE001
            outcome = (False, RenderFailed(f"a background process failed: {type(exc).__name__}: {exc}"))
    try:
        try:
            send.send(outcome)
        except (OSError, EOFError):
            raise
        except Exception as exc:  # noqa: BLE001 - a result that cannot be pickled
            send.send((False, RenderFailed(f"a background process failed: {type(exc).__name__}: {exc}")))
    except (OSError, EOFError):
        pass  # the waiting process stopped waiting (it failed, or was interrupted): nobody to tell
    finally:
        send.close()


def _received(receive: Any, worker: Any) -> tuple[bool, Any]:
    """What `_work_alone` sent; (False, RenderFailed) if the process ended without sending."""
    while not receive.poll(WAIT_S):
        if not worker.is_alive() and not receive.poll(WAIT_S):
            return False, RenderFailed(f"a background process ended (exit code {worker.exitcode}) "
                                       "before its work was done")
    try:
        return receive.recv()  # type: ignore[no-any-return]
    except EOFError:  # its end of the pipe closed: it ended, or is ending
        worker.join(WAIT_S)
        return False, RenderFailed(f"a background process ended (exit code {worker.exitcode}) "
                                   "before its work was done")


def _may_fork() -> bool:
    """Can this process fork renderers safely? Not without `fork`, not as a daemon (which may not
    have children), and not while another thread runs (a lock it holds would stay held forever in
    the child: the `--dask` client's threads, say)."""
    return ("fork" in multiprocessing.get_all_start_methods()
            and not multiprocessing.current_process().daemon and threading.active_count() == 1)


def _render_share(loads: list[Callable[[], list[T]]], render: Callable[[list[T]], str], share: int,
                  jobs: int, channel: Any, writer: int) -> None:
    """In a forked process: the pieces `share`, `share + jobs`, ... rendered, in order, for the
    process `writer`."""
    lifetime.end_with(writer)  # else, with its queue full, it would wait for a gone writer forever
    try:
        for load in loads[share::jobs]:
            channel.put((True, render(load())))
    except BaseException as exc:  # noqa: BLE001 - whatever it is, the writer must hear of it
        channel.put((False, f"{type(exc).__name__}: {exc}"))
    channel.close()
    channel.join_thread()  # everything put is in the pipe before the process ends


def _take(channel: Any, worker: Any) -> str:
    """The next piece of text from `worker`; RenderFailed if it failed or ended without it."""
    while True:
        try:
            ok, text = channel.get(timeout=WAIT_S)
        except queues.Empty:
            if worker.is_alive():
                continue
            try:  # it may have ended just after its last piece reached the pipe
                ok, text = channel.get(timeout=WAIT_S)
            except queues.Empty:
                raise RenderFailed(f"a rendering process ended (exit code {worker.exitcode}) "
                                   "before its share of the report was written") from None
        if not ok:
            raise RenderFailed(f"a rendering process failed: {text}")
        return text  # type: ignore[no-any-return]

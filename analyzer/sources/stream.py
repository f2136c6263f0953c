"""Live-mode plumbing shared by every source: a pcap/pcapng stream read as it arrives (`-r -`,
`-r FILE`) and the evidence writer (`--write`).

A live source is polled by the runner with a timeout: `poll(timeout_s)` returns the frames that
arrived, as `(ts_ns, linktype, data, wire_len)` tuples (the runner numbers them), `[]` when the
timeout passed without any, and `None` once the source has ended. Reading a pipe blocks, so
`PipeSource` reads in a daemon thread and hands frames over in batches through a queue: the
runner's 0.2 s clock never waits for the writer of the pipe.
"""

from __future__ import annotations

import os
import struct
import threading
from collections import deque
from typing import BinaryIO

from analyzer.errors import InputError
from analyzer.sources.files import CaptureReader, open_capture

LiveFrame = tuple[int, int, bytes, int]
"""(ts_ns, linktype, data, wire_len)."""

BATCH = 512
MAX_PENDING = 256 * BATCH
"""Frames read ahead of the engine at most; then the reader waits (and the pipe fills)."""


class PipeSource:
    """A capture stream (stdin for '-', or a file or FIFO) read in a thread as it arrives."""

    kind = "pipe"

    def __init__(self, path: str) -> None:
        self.path = path
        self.reader: CaptureReader | None = None
        self.error: str | None = None
        self.frames = 0
        self._ready = threading.Condition()
        self._pending: deque[LiveFrame] = deque()
        """Frames read and not yet polled: each is handed over as soon as it is read, never held
        back for a batch, so a frame followed by silence is seen at once. Appends and pops of a
        deque need no lock; the condition is only taken to wake a side that waits."""
        self._poller_waits = False
        self._reader_waits = False
        self._ended = False
        self._failure: InputError | None = None
        self._opened = threading.Event()
        self._thread = threading.Thread(target=self._run, name="capture-reader", daemon=True)

    # -- life cycle ---------------------------------------------------------------------------

    def start(self) -> None:
        """Start reading; an opening error (not a capture, empty) is raised by `poll`."""
        if self.path == "-":
            # open_capture checks this too, but only in the thread; say it before anything runs
            import sys

            if sys.stdin is None or sys.stdin.isatty():
                raise InputError("-r -: standard input is a terminal; pipe a capture into it "
                                 "(tcpdump -U -w - ... | mqtt-keepalive live -r -)")
            _grow_pipe(sys.stdin.fileno())
        elif not os.path.exists(self.path):
            raise InputError(f"{self.path}: no such file")
        self._thread.start()

    def _run(self) -> None:
        try:
            reader = open_capture(self.path)
        except InputError as exc:
            self._end(InputError(f"{self.path}: {exc}"))
            return
        except OSError as exc:
            self._end(InputError(f"{self.path}: {exc.strerror or exc}"))
            return
        self.reader = reader
        self._opened.set()
        ready, pending = self._ready, self._pending
        try:
            # a generator of the reader yields each frame as soon as its bytes are in (read1)
            for _n, ts_ns, linktype, data, wire_len in reader:
                if len(pending) >= MAX_PENDING:  # the engine is behind: wait for it
                    with ready:
                        self._reader_waits = True
                        while len(pending) >= MAX_PENDING:
                            ready.wait()
                        self._reader_waits = False
                pending.append((ts_ns, linktype, data, wire_len))
                if self._poller_waits:  # (set under the lock before the poller looks: no lost wake-up)
                    with ready:
                        ready.notify_all()
        except OSError as exc:  # a broken pipe, EIO
            reader.error = reader.error or f"read failed: {exc.strerror or exc}"
        finally:
            self._end(None)

    def _end(self, failure: InputError | None) -> None:
        with self._ready:
            self._failure, self._ended = failure, True
            self._ready.notify_all()

    def poll(self, timeout_s: float) -> list[LiveFrame] | None:
        """Frames that arrived within `timeout_s` (at most `4 x BATCH`, so the caller keeps
        ticking under load); None at the end of the stream."""
        pending = self._pending
        if not pending:
            with self._ready:
                self._poller_waits = True
                if not pending and not self._ended:
                    self._ready.wait(max(timeout_s, 0.0))
                self._poller_waits = False
        if pending:
            popleft = pending.popleft
            frames = [popleft() for _ in range(min(len(pending), 4 * BATCH))]
            if self._reader_waits:
                with self._ready:
                    self._ready.notify_all()  # room for the reader
            self.frames += len(frames)
            return frames
        if self._failure is not None:
            raise self._failure
        return None if self._ended else []

    def stats(self) -> str:
        return "kernel drop counts unavailable on a pipe (the capturing tcpdump prints its own)"

    def dropped(self) -> int | None:
        return None

    def close(self) -> None:
        if self.reader is not None and not self._thread.is_alive():
            self.reader.close()


class CaptureWriter:
    """`--write FILE`: the frames fed to the engine, in order, with their original timestamps and
    link type, so Wireshark frame numbers in live findings hold in the file. pcapng when the name
    ends in `.pcapng` (one interface per link type, nanosecond timestamps), classic nanosecond
    pcap otherwise (one link type: a frame of another is left out with a warning)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.ng = path.endswith(".pcapng")
        try:
            self._fh: BinaryIO = open(path, "wb")  # noqa: SIM115 - closed by close()
        except OSError as exc:
            raise InputError(f"cannot write {path}: {exc.strerror}") from None
        self._ifaces: dict[int, int] = {}
        self._linktype: int | None = None
        self.skipped = 0
        self.written = 0
        self.error: str | None = None
        if self.ng:
            body = struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1) + _ng_option(4, b"mqtt-keepalive live") + _ng_end()
            self._block(0x0A0D0D0A, body)

    def _block(self, block_type: int, body: bytes) -> None:
        total = 12 + len(body)
        self._fh.write(struct.pack("<II", block_type, total) + body + struct.pack("<I", total))

    def write(self, ts_ns: int, linktype: int, data: bytes, wire_len: int) -> None:
        if self.error is not None:
            return
        try:
            if self.ng:
                iface = self._ifaces.get(linktype)
                if iface is None:
                    iface = self._ifaces[linktype] = len(self._ifaces)
                    opts = _ng_option(9, b"\x09") + _ng_end()  # if_tsresol: 10^-9
                    self._block(1, struct.pack("<HHI", linktype, 0, 0) + opts)
                pad = (-len(data)) % 4
                self._block(6, struct.pack("<IIIII", iface, ts_ns >> 32, ts_ns & 0xFFFFFFFF,
                                           len(data), wire_len) + data + b"\0" * pad)
            else:
                if self._linktype is None:
                    self._linktype = linktype
                    self._fh.write(struct.pack("<IHHiIII", 0xA1B23C4D, 2, 4, 0, 0, 262144, linktype))
                elif linktype != self._linktype:
                    self.skipped += 1
                    return
                sec, nsec = divmod(ts_ns, 1_000_000_000)
                self._fh.write(struct.pack("<IIII", sec, nsec, len(data), wire_len) + data)
            self.written += 1
        except OSError as exc:
            self.error = f"cannot write {self.path}: {exc.strerror}"

    def flush(self) -> None:
        """Called on every tick: the file on disk lags the capture by at most one tick."""
        if self.error is None:
            try:
                self._fh.flush()
            except OSError as exc:
                self.error = f"cannot write {self.path}: {exc.strerror}"

    def close(self) -> None:
        try:
            self._fh.close()
        except OSError as exc:
            self.error = self.error or f"cannot write {self.path}: {exc.strerror}"


def _grow_pipe(fd: int) -> None:
    """A larger pipe (1 MiB instead of 64 KiB) lets the capturing writer ride out our pauses."""
    try:
        import fcntl

        fcntl.fcntl(fd, 1031, 1 << 20)  # F_SETPIPE_SZ (Linux); not a pipe or not allowed: fine
    except (OSError, ImportError, ValueError):
        pass


def _ng_option(code: int, value: bytes) -> bytes:
    return struct.pack("<HH", code, len(value)) + value + b"\0" * ((-len(value)) % 4)


def _ng_end() -> bytes:
    return b"\0\0\0\0"

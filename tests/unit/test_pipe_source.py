"""A capture read from a pipe hands every frame to the engine as soon as it is read: a frame
followed by silence must not wait in the reader for the next one (a silent client's CONNECT is
exactly that, and its deadline is measured from it)."""

from __future__ import annotations

import os
import struct
import threading
import time
from pathlib import Path

from analyzer.sources.stream import PipeSource

HEADER = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 101)


def record(ts: int, data: bytes) -> bytes:
    return struct.pack("<IIII", ts, 0, len(data), len(data)) + data


def test_a_frame_followed_by_silence_is_delivered_without_waiting_for_more(tmp_path: Path) -> None:
    fifo = tmp_path / "capture.fifo"
    os.mkfifo(fifo)
    source = PipeSource(str(fifo))
    writer_ready = threading.Event()
    fds: list[int] = []

    def open_writer() -> None:  # opening a FIFO blocks until the other end opens
        fds.append(os.open(fifo, os.O_WRONLY))
        writer_ready.set()

    threading.Thread(target=open_writer, daemon=True).start()
    source.start()
    assert writer_ready.wait(5)
    (fd,) = fds
    try:
        os.write(fd, HEADER + record(1, b"first"))
        time.sleep(0.3)                      # read, and waiting for the engine to take it
        os.write(fd, record(2, b"second"))   # read while the first is still waiting
        time.sleep(0.3)
        got = source.poll(1.0) or []
        if len(got) < 2:
            got += source.poll(1.0) or []    # then silence: this one must not wait for a third
        assert [data for _ts, _lt, data, _wl in got] == [b"first", b"second"]
    finally:
        os.close(fd)
    assert source.poll(2.0) in ([], None)
    source.close()

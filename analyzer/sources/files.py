"""Capture files as a stream of frames: opening (path or stdin), transparent gzip/bz2/xz
decompression, format detection by magic bytes, and expanding directories into captures.

The format is decided by the first bytes, never by the file name: captures arrive as `dump`,
`x.cap`, `trace.pcap.gz` that is really pcapng, or on a pipe with no name at all. Nothing is
loaded whole: compressed input is decompressed as it is read, and a pipe is read as fast as its
writer delivers (behind `tcpdump -U -w -`, each frame is yielded as it arrives).

Opening problems (missing, unreadable, not a capture) raise `InputError` with a one-line reason;
problems found while iterating are recorded on the reader (`warnings`, `error`) instead, because
the frames already read are still evidence worth reporting.
"""

from __future__ import annotations

import bz2
import contextlib
import gzip
import io
import lzma
import os
import stat
import sys
import zlib
from collections import deque
from collections.abc import Callable, Generator, Iterable
from types import TracebackType
from typing import IO, TYPE_CHECKING, cast

from analyzer.errors import InputError
from analyzer.sources import pcap, pcapng
from analyzer.sources.pcap import CHUNK, Read, Record

if TYPE_CHECKING:
    from analyzer.sources.batch import FrameBatch

HEAD = 28
"""Bytes needed to check a file header: a pcap header is 24, the smallest pcapng SHB 28."""

Stream = IO[bytes] | io.BufferedIOBase | io.RawIOBase
"""A binary stream: a file, stdin, a decompressor, or the replaying wrapper below."""

DECOMPRESSORS: dict[str, Callable[[Stream], io.BufferedIOBase]] = {
    # closed by CaptureReader.close, hence no context managers
    "gzip": lambda f: gzip.GzipFile(fileobj=f, mode="rb"),  # noqa: SIM115
    "bz2": lambda f: bz2.BZ2File(f),  # noqa: SIM115
    "xz": lambda f: lzma.LZMAFile(cast(IO[bytes], f)),  # noqa: SIM115
}
UNSUPPORTED = {b"\x28\xb5\x2f\xfd": "zstd", b"\x04\x22\x4d\x18": "lz4", b"PK\x03\x04": "zip"}
DECOMPRESS_ERRORS = (OSError, EOFError, ValueError, lzma.LZMAError, zlib.error)


def _kind(head: bytes) -> str | None:
    """'pcap', 'pcapng', a DECOMPRESSORS key, or None, from the first bytes."""
    magic = head[:4]
    if magic in pcap.PCAP_MAGICS or magic in pcap.OTHER_PCAP_MAGICS:
        return "pcap"
    if magic == pcapng.SHB_MAGIC:
        return "pcapng"
    if head[:2] == b"\x1f\x8b":
        return "gzip"
    if head[:3] == b"BZh" and head[3:4] in (b"1", b"2", b"3", b"4", b"5", b"6", b"7", b"8", b"9"):
        return "bz2"
    if head[:6] == b"\xfd7zXZ\x00":
        return "xz"
    return None


def _no_records() -> Generator[Record, None, None]:
    yield from ()


class CaptureReader:
    """One open capture. Iterate it once for (frame_no, ts_ns, linktype, data, wire_len) tuples.

    `linktypes` holds the pcap header's link type from the start; for pcapng it grows as
    interface blocks are read. `bytes_read` counts (decompressed) bytes of whole records consumed,
    updated every ~1 MiB and exactly when iteration stops. Iteration never raises for bad data:
    it ends, leaving a reason in `error` (corrupt) or `warnings` (cut short).
    """

    def __init__(self, path: str, format: str, compression: str | None, closers: list[Stream]):
        self.path = path
        self.format = format
        self.compression = compression
        self.linktypes: set[int] = set()
        self.bytes_read = 0
        self.warnings: list[str] = []
        self.error: str | None = None
        self.tls_secrets = False
        """A pcapng section carried TLS secrets (a Decryption Secrets Block) before its packets."""
        self._closers = closers
        self._records: Generator[Record, None, None] = _no_records()  # open_capture sets it
        self._batches: Callable[[], Generator[FrameBatch, None, None]] | None = None
        self._head = 0
        """Bytes read for sniffing (`_head`), which the walker starts with."""
        self._size: int | None = None
        """The capture's size in bytes where the file says it (a plain file, not compressed)."""
        self._ahead: _ReadAhead | None = None

    def holds_at_least(self, size: int) -> bool:
        """Is the capture (decompressed) `size` bytes or more? A file's size says; a stream
        (standard input, a compressed file) is read ahead until it tells, before the walker
        starts: up to `size` bytes held in memory, which the walker then reads first."""
        if self._size is not None:
            return self._size >= size
        if self._ahead is None:
            return False
        return self._head + self._ahead.fill(size - self._head) >= size

    @property
    def batches_available(self) -> bool:
        """Whether `batches()` can read this capture (not yet read): a classic pcap's records are
        cut into batches as read, and so are a pcapng's blocks."""
        return self._batches is not None

    def batches(self) -> Generator[FrameBatch, None, None]:
        """Read the capture as `FrameBatch`es instead of record tuples (the columnar path); either
        this or iteration, once."""
        assert self._batches is not None
        self._records = self._batches()  # type: ignore[assignment]
        self._batches = None
        return self._records  # type: ignore[return-value]

    def __iter__(self) -> Generator[Record, None, None]:
        # The walker itself, not a wrapper: a wrapper generator would double the per-frame cost.
        return self._records

    def close(self) -> None:
        """Stop the walker (fixing `bytes_read`) and close what we opened; stdin stays open."""
        self._records.close()
        for stream in self._closers:
            with contextlib.suppress(*DECOMPRESS_ERRORS):
                stream.close()
        self._closers = []

    def __enter__(self) -> CaptureReader:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<CaptureReader {self.path!r} {self.format} {self.bytes_read} bytes read>"


class _Prefixed(io.RawIOBase):
    """Replays the bytes already read for sniffing, then continues with the raw stream: stdin
    cannot seek back, and a decompressor needs its input from the first byte."""

    def __init__(self, prefix: bytes, raw: Stream) -> None:
        super().__init__()
        self._prefix = prefix
        self._at = 0  # an index, not re-slicing: the prefix can be a whole 1 MiB chunk
        self._raw = raw
        self._read = _read_fn(raw)

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        rest = len(self._prefix) - self._at
        if size is None or size < 0:
            out, self._at = self._prefix[self._at :] + self._raw.read(), len(self._prefix)
            return out
        if rest > 0:
            out = self._prefix[self._at : self._at + size]
            self._at += len(out)
            return out
        return self._read(size)

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


class _ReadAhead:
    """A stream's `Read` that can look ahead (`fill`): what it read ahead is handed out first, and
    a read that failed while looking ahead fails again where the walker would have met it."""

    def __init__(self, read: Read) -> None:
        self._read = read
        self._chunks: deque[bytes] = deque()
        self._held = 0
        self._ended = False
        self._failed: BaseException | None = None

    def fill(self, size: int) -> int:
        """Read ahead until `size` bytes are held or the stream ends (or fails); bytes held."""
        while self._held < size and not self._ended and self._failed is None:
            try:
                chunk = self._read(CHUNK)
            except Exception as exc:  # noqa: BLE001 - raised again by `read`, in its turn
                self._failed = exc
                break
            if not chunk:
                self._ended = True
                break
            self._chunks.append(chunk)
            self._held += len(chunk)
        return self._held

    def read(self, size: int = -1) -> bytes:
        chunks = self._chunks
        if chunks:
            chunk = chunks[0]
            if 0 <= size < len(chunk):
                chunks[0] = chunk[size:]
                chunk = chunk[:size]
            else:
                chunks.popleft()
            self._held -= len(chunk)
            return chunk
        if self._failed is not None:
            failed, self._failed = self._failed, None
            raise failed
        if self._ended:
            return b""
        return self._read(size)


def _read_fn(stream: Stream) -> Read:
    """`read1` where there is one: it returns what a pipe holds now instead of waiting for more."""
    return getattr(stream, "read1", stream.read)


def _head(read: Read, compression: str | None) -> bytes:
    """Read at least HEAD bytes (fewer only at the end of the stream) for sniffing."""
    parts: list[bytes] = []
    have = 0
    try:
        while have < HEAD:
            chunk = read(CHUNK)
            if not chunk:
                break
            parts.append(chunk)
            have += len(chunk)
    except EOFError:
        if not parts:
            raise InputError(f"{compression} stream ends before any data") from None
    except DECOMPRESS_ERRORS as exc:
        what = f"corrupt {compression} data" if compression else "cannot read"
        raise InputError(f"{what}: {exc}") from None
    return b"".join(parts)


def _open_raw(path: str) -> tuple[Stream, list[Stream]]:
    """The byte stream for `path` and what closing the reader must close (never stdin)."""
    if path == "-":
        if sys.stdin is None:
            raise InputError("no standard input to read from")
        if sys.stdin.isatty():
            raise InputError("standard input is a terminal; pipe a capture into it")
        return sys.stdin.buffer, []
    try:
        raw = open(path, "rb")  # noqa: SIM115 - closed by CaptureReader.close
    except FileNotFoundError:
        raise InputError("no such file") from None
    except PermissionError:
        raise InputError("permission denied") from None
    except IsADirectoryError:
        raise InputError("is a directory") from None
    except OSError as exc:
        raise InputError((exc.strerror or str(exc)).lower()) from None
    return raw, [raw]


def _not_a_capture(head: bytes, compression: str | None) -> InputError:
    other = UNSUPPORTED.get(head[:4])
    if other is not None:
        return InputError(f"{other}-compressed file; only gzip, bz2 and xz are read: unpack it")
    where = f" once {compression}-decompressed" if compression else ""
    return InputError(f"not a pcap or pcapng capture{where} (starts with 0x{head[:4].hex()})")


def open_capture(path: str) -> CaptureReader:
    """Open a capture file, or stdin for '-'; see the module docstring for what is accepted."""
    raw, closers = _open_raw(path)
    try:
        return _open_stream(path, raw, closers)
    except BaseException:
        for stream in closers:
            stream.close()
        raise


def _open_stream(path: str, raw: Stream, closers: list[Stream]) -> CaptureReader:
    read = _read_fn(raw)
    head = _head(read, None)
    if not head:
        raise InputError("empty file")
    compression, kind = None, _kind(head)
    if kind in DECOMPRESSORS:
        compression = kind
        stream = DECOMPRESSORS[compression](_Prefixed(head, raw))
        closers.insert(0, stream)
        read = _read_fn(stream)
        head = _head(read, compression)
        if not head:
            raise InputError(f"empty file once {compression}-decompressed")
        kind = _kind(head)
    ahead = _ReadAhead(read)
    read = ahead.read
    if kind == "pcap":
        order, frac_ns, snaplen, linktype = pcap.parse_header(head)
        reader = CaptureReader(path, "pcap", compression, closers)
        reader.linktypes.add(linktype)
        reader._records = pcap.iter_pcap(reader, read, head, order, frac_ns, snaplen, linktype)
        reader._batches = lambda: pcap.iter_pcap_batches(reader, read, head, order, frac_ns, snaplen,
                                                         linktype)
    elif kind == "pcapng":
        pcapng.check_section_header(head)
        reader = CaptureReader(path, "pcapng", compression, closers)
        reader._records = pcapng.iter_pcapng(reader, read, head)
        reader._batches = lambda: pcapng.iter_pcapng_batches(reader, read, head)
    else:
        raise _not_a_capture(head, compression)
    reader._head, reader._ahead = len(head), ahead
    if compression is None:  # (standard input too, when it is a file: `< capture.pcap`)
        with contextlib.suppress(OSError, AttributeError, ValueError, io.UnsupportedOperation):
            info = os.fstat(raw.fileno())
            if stat.S_ISREG(info.st_mode):
                reader._size = info.st_size
    return reader


def expand_inputs(paths: Iterable[str]) -> list[str]:
    """Turn command-line inputs into capture paths, in the order given.

    '-' stays; a directory becomes the captures found in it, recursively, sorted by path (files
    recognised by their first bytes or their name, so `*.log` next to `*.pcap` is left alone, and
    a `*.pcap` that holds no capture is reported); a plain file stays
    even if it is not a capture, so that open_capture reports why. A missing path, or a directory
    that cannot be listed, raises InputError: skipping it would let a check pass on nothing."""
    out: list[str] = []
    for path in paths:
        if path == "-":
            out.append(path)
        elif os.path.isdir(path):
            out.extend(sorted(_captures_under(path)))
        elif os.path.exists(path) or os.path.lexists(path):
            out.append(path)
        else:
            raise InputError(f"{path}: no such file or directory")
    return out


def _captures_under(top: str) -> Iterable[str]:
    def fail(exc: OSError) -> None:
        raise InputError(f"{exc.filename}: cannot list directory ({exc.strerror})")

    for folder, _dirs, names in os.walk(top, onerror=fail):
        for name in names:
            path = os.path.join(folder, name)
            if _is_capture(path):
                yield path


CAPTURE_SUFFIXES = (".pcap", ".pcapng", ".cap")
COMPRESSED_SUFFIXES = (".gz", ".bz2", ".xz", ".zst", ".lz4", ".zip")
"""Read (gzip, bz2, xz) or reported as an unsupported compression (`UNSUPPORTED`)."""


def named_like_capture(name: str) -> bool:
    """`x.pcap`, `x.pcapng`, `x.cap`, maybe compressed (`x.pcap.gz`). A directory scan takes
    such a file whatever it holds: one that is empty, cut inside its header or not a capture at
    all is then reported as unusable instead of silently left out of the check."""
    name = name.lower()
    stem, dot, suffix = name.rpartition(".")
    if dot and f".{suffix}" in COMPRESSED_SUFFIXES:
        name = stem
    return name.endswith(CAPTURE_SUFFIXES)


def _is_capture(path: str) -> bool:
    """A regular file named like a capture (`named_like_capture`), or starting like a capture or
    a compressed capture. An unreadable or corrupt candidate counts, so open_capture reports it
    rather than it silently vanishing."""
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            return False  # FIFOs and devices: opening one could block forever
        if named_like_capture(os.path.basename(path)):
            return True
        with open(path, "rb") as raw:
            return starts_like_capture(raw)
    except FileNotFoundError:
        return False  # a dangling symlink
    except OSError:
        return True  # unreadable: open_capture says why


def starts_like_capture(raw: IO[bytes]) -> bool:
    """Does this binary file (at its start) hold a capture, maybe compressed? One that cannot be
    read or decompressed counts (open_capture reports it)."""
    try:
        kind = _kind(raw.read(8))
        if kind in DECOMPRESSORS:
            raw.seek(0)
            with DECOMPRESSORS[kind](raw) as inner:
                kind = _kind(inner.read(8))
    except DECOMPRESS_ERRORS:
        return True
    return kind in ("pcap", "pcapng")

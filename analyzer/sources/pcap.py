"""Classic libpcap files: the file header and the record walker, plus the chunked-buffer helpers
that the pcapng walker shares.

Theory of operation. The walkers are the hot path of the whole tool (one iteration per frame of
every capture), so they are written for CPython's cost model: the capture is read in chunks of
about 1 MiB (a batch of the columnar path: in one read) into one `bytes` buffer, and each record
costs one precompiled `struct.unpack_from`, one slice and one plain tuple. Nothing per record
calls a function of ours, builds an object or touches an attribute. When a record does not fit in
what is buffered, `fill` returns a new buffer that starts at that record and holds at least the
bytes it needs (or fewer at end of file).

Bad data never raises out of a walker: it is written to the reader's `error` (corrupt, stop) or
`warnings` (cut short, stop), because records already yielded stay valid and the run goes on.
"""

from __future__ import annotations

import lzma
import struct
import zlib
from collections.abc import Callable, Generator
from typing import TYPE_CHECKING, Protocol

from analyzer.errors import InputError

if TYPE_CHECKING:
    from analyzer.sources.batch import FrameBatch

Read = Callable[[int], bytes]
"""Reads up to n bytes, fewer when that is what is available now (a pipe), b"" only at the end."""

Record = tuple[int, int, int, bytes, int]
"""(frame_no, ts_ns, linktype, data, wire_len): plain tuples, a dataclass per frame costs ~1 us."""

CHUNK = 1 << 20
MAX_STANDARD = 262_144
"""Wireshark's WTAP_MAX_PACKET_SIZE_STANDARD: a record this large is suspicious unless the
snaplen admits it."""
MAX_ANY = 128 << 20
"""Wireshark's largest legitimate record (D-Bus); beyond it a length is corrupt whatever the
snaplen says, and buffering it would cost that much memory."""

NS = 1_000_000_000

# magic as it appears in the file -> (struct byte order, nanoseconds per fraction unit)
PCAP_MAGICS: dict[bytes, tuple[str, int]] = {
    b"\xd4\xc3\xb2\xa1": ("<", 1000),
    b"\xa1\xb2\xc3\xd4": (">", 1000),
    b"\x4d\x3c\xb2\xa1": ("<", 1),
    b"\xa1\xb2\x3c\x4d": (">", 1),
}
# pcap variants Wireshark knows, which we recognise so the error says what they are
OTHER_PCAP_MAGICS: dict[bytes, str] = {
    b"\x34\xcd\xb2\xa1": "modified (Kuznetzov) pcap",
    b"\xa1\xb2\xcd\x34": "modified (Kuznetzov) pcap",
    b"\xac\x01\x00\x1c": "IXIA hardware pcap",
    b"\x1c\x00\x01\xac": "IXIA hardware pcap",
    b"\xab\x01\x00\x1c": "IXIA software pcap",
    b"\x1c\x00\x01\xab": "IXIA software pcap",
}


class ReadState(Protocol):
    """What a walker reports into (the `CaptureReader`)."""

    bytes_read: int
    warnings: list[str]
    error: str | None
    linktypes: set[int]
    tls_secrets: bool


class StreamFailed(Exception):
    """The underlying stream failed while refilling; `truncated` when a compressed stream simply
    ended early (a cut-short capture), otherwise the data is corrupt or unreadable."""

    def __init__(self, reason: str, truncated: bool) -> None:
        super().__init__(reason)
        self.reason = reason
        self.truncated = truncated


def fill(read: Read, buf: bytes, pos: int, need: int) -> bytes:
    """Return `buf[pos:]` extended by reads until it holds `need` bytes (shorter only at the end).

    Reads stop as soon as `need` is met, so a pipe fed one packet at a time is not waited on
    for a whole chunk, and a failing read can only hit a record that was incomplete anyway."""
    parts = [buf[pos:]] if pos < len(buf) else []
    have = max(len(buf) - pos, 0)
    while have < need:
        chunk = read_once(read, max(CHUNK, need - have))
        if not chunk:
            break
        parts.append(chunk)
        have += len(chunk)
    return _joined(parts)


def read_once(read: Read, size: int) -> bytes:
    """One `read` of up to `size` bytes, its failure as `StreamFailed`."""
    try:
        return read(size)
    except EOFError as exc:  # gzip/bz2/xz: compressed stream ended before its end marker
        raise StreamFailed(f"compressed stream ends early ({exc})", True) from exc
    except (OSError, ValueError, lzma.LZMAError, zlib.error) as exc:
        raise StreamFailed(f"cannot read further: {exc}", False) from exc


def _joined(parts: list[bytes]) -> bytes:
    """`b"".join(parts)`, without copying a lone part. A batch of a file comes in one read, joined
    only to the record the last batch cut: it came in reads of 1 MiB, each joined to nothing and
    then joined together, two copies more, each into fresh memory the kernel zeroes (9% of a
    split process's time on the benchmark's capture)."""
    if len(parts) == 1:
        return parts[0]
    return b"".join(parts)


def cut_short(frame: int, offset: int) -> str:
    return (
        f"capture cut short in the middle of a record after frame {frame} (byte {offset}); "
        "everything before it was read"
    )


def stream_failed(state: ReadState, exc: StreamFailed, frame: int, offset: int) -> None:
    """Record a refill failure: truncation is a warning, corruption an error."""
    if exc.truncated:
        state.warnings.append(f"{cut_short(frame, offset)}: {exc.reason}")
    else:
        state.error = f"stopped after frame {frame} (byte {offset}): {exc.reason}"


def parse_header(head: bytes) -> tuple[str, int, int, int]:
    """Check a pcap file header; return (byte order, ns per fraction unit, snaplen, linktype).

    The link type keeps its low 16 bits only: the upper bits may carry the FCS length. `thiszone`
    is ignored, as libpcap and Wireshark do (writers always put 0 there)."""
    magic = head[:4]
    if magic in OTHER_PCAP_MAGICS:
        raise InputError(
            f"unsupported pcap magic 0x{magic.hex()} ({OTHER_PCAP_MAGICS[magic]}); "
            "convert it with editcap first"
        )
    order, frac_ns = PCAP_MAGICS[magic]
    if len(head) < 24:
        raise InputError(f"pcap file header cut short ({len(head)} of 24 bytes)")
    major, minor, _zone, _sigfigs, snaplen, network = struct.unpack_from(order + "HHiIII", head, 4)
    if (major, minor) not in ((2, 4), (2, 3)):
        raise InputError(f"unsupported pcap version {major}.{minor} (2.4 expected)")
    return order, frac_ns, snaplen, network & 0xFFFF


def iter_pcap(
    state: ReadState, read: Read, buf: bytes, order: str, frac_ns: int, snaplen: int, linktype: int
) -> Generator[Record, None, None]:
    """Yield every record of a pcap whose 24-byte header starts `buf`."""
    unpack = struct.Struct(order + "IIII").unpack_from
    cap = min(max(MAX_STANDARD, snaplen), MAX_ANY)
    pos, base, end, frame, ns = 24, 0, len(buf), 0, NS
    try:
        while True:
            try:
                sec, frac, incl, orig = unpack(buf, pos)
            except struct.error:  # under 16 bytes buffered: cheaper than testing every time
                need = 16
            else:
                if incl > cap:
                    state.error = (
                        f"corrupt record header for frame {frame + 1} at byte {base + pos}: "
                        f"captured length {incl} is larger than {MAX_STANDARD} and the snaplen "
                        f"{snaplen}; stopped reading"
                    )
                    return
                start = pos + 16
                stop = start + incl
                if stop <= end:
                    frame += 1
                    pos = stop  # before the yield: a yielded record counts as consumed
                    yield frame, sec * ns + frac * frac_ns, linktype, buf[start:stop], orig
                    continue
                need = 16 + incl
            try:
                buf = fill(read, buf, pos, need)
            except StreamFailed as exc:
                stream_failed(state, exc, frame, base + pos)
                return
            base += pos
            pos, end = 0, len(buf)
            state.bytes_read = base
            if end < need:
                if end:
                    state.warnings.append(cut_short(frame, base))
                return
    finally:
        state.bytes_read = base + pos


BATCH_BYTES = 2 << 20
"""Bytes of records read per batch (`iter_pcap_batches`): large enough that the per-batch work
of the columnar path is spread over thousands of frames (larger batches were no faster on the
benchmark), small enough that the batch and the arrays made from it stay a small part of memory
(8 MiB batches cost about 20 MiB more at peak)."""


MAX_BATCH_FRAMES = 16_384
"""Records a batch holds at most (a buffer of more is cut into several batches): a batch's columns
and its passes' arrays grow with its frames, and `BATCH_BYTES` of short frames (a capture cut at
96 bytes: 19,000) are twice the benchmark's 9,000 to 14,000, which took `--jobs 1` on that
capture from 93 MiB at peak to 100.4."""


def read_on(read: Read, rest: bytes, need: int) -> tuple[bytes, StreamFailed | None]:
    """The next batch's buffer: `rest` (what the last one left unread) and reads after it until
    it holds `BATCH_BYTES` (or `need`, if more), the stream ends, or a read fails. A read at a
    time, each asking for all that is missing (a file gives it in one), so a failure loses
    nothing read before it: it is returned, for the caller to report once those bytes are
    walked."""
    parts, have = ([rest] if rest else []), len(rest)
    target = max(BATCH_BYTES, need)
    while have < target:
        try:
            chunk = read_once(read, target - have)
        except StreamFailed as exc:
            return _joined(parts), exc
        if not chunk:
            break
        parts.append(chunk)
        have += len(chunk)
    return _joined(parts), None


def iter_pcap_batches(
    state: ReadState, read: Read, buf: bytes, order: str, frac_ns: int, snaplen: int, linktype: int
) -> Generator[FrameBatch, None, None]:
    """Every record of a pcap whose 24-byte header starts `buf`, in `FrameBatch`es.

    The same walk as `iter_pcap` (same checks, same warnings and errors, same `bytes_read`), but
    the loop per record only finds where the next one starts; timestamps and lengths are then read
    for the whole batch at once, so a frame costs a fraction of a microsecond before analysis."""
    from analyzer.sources.batch import FrameBatch, record_columns

    unpack = struct.Struct(order + "I").unpack_from
    cap = min(max(MAX_STANDARD, snaplen), MAX_ANY)
    pos, base, frame = 24, 0, 0
    failed: StreamFailed | None = None
    try:
        while True:
            end = len(buf)
            starts: list[int] = []
            add = starts.append
            bad = False
            while pos + 16 <= end:
                incl = unpack(buf, pos + 8)[0]
                if incl > cap:
                    bad = True
                    break
                if pos + 16 + incl > end:
                    break
                add(pos)
                pos += 16 + incl
            for at in range(0, len(starts), MAX_BATCH_FRAMES):
                part = starts[at:at + MAX_BATCH_FRAMES]
                yield FrameBatch.of(buf, record_columns(buf, part, order, frac_ns), frame + 1, linktype)
                frame += len(part)
                done = at + len(part)
                state.bytes_read = base + (starts[done] if done < len(starts) else pos)
            if bad:
                state.error = (
                    f"corrupt record header for frame {frame + 1} at byte {base + pos}: captured "
                    f"length {unpack(buf, pos + 8)[0]} is larger than {MAX_STANDARD} and the snaplen "
                    f"{snaplen}; stopped reading"
                )
                return
            if failed is not None:  # what was read before the failure is analysed first
                stream_failed(state, failed, frame, base + pos)
                return
            need = 16 + (unpack(buf, pos + 8)[0] if end - pos >= 16 else 0)
            rest, buf = buf[pos:], b""  # the analysed batch's bytes go as soon as its users let them
            base, pos = base + pos, 0
            buf, failed = read_on(read, rest, need)
            state.bytes_read = base
            if failed is not None:
                continue
            if not buf:
                return
            if len(buf) < 16 or (unpack(buf, 8)[0] <= cap and len(buf) < 16 + unpack(buf, 8)[0]):
                state.warnings.append(cut_short(frame, base))
                return
    finally:
        state.bytes_read = base + pos

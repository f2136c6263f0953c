"""pcapng files: section header check and the block walker.

Frames are numbered as Wireshark numbers them, which is not "packets only": Wireshark makes a
record, with a frame number, of every Enhanced (6), Simple (3) and obsolete (2) Packet Block, but
also of every Custom Block (0xBAD, 0x40000BAD, whatever its PEN), systemd Journal Export Block (9)
and Sysdig event block (checked against tshark 4.0 and Wireshark's pcapng.c). Those non-packet
records take their frame number and are not yielded, so later frame numbers still match what a
user sees in Wireshark. Section and interface headers, name resolution, statistics, decryption
secrets and unknown block types are not records and are skipped.

Wireshark reads a block whose length is not a multiple of 4 by rounding the length up (some
writers left the padding out of it); so do we, with one warning, rather than refuse a file that
Wireshark opens.

Timestamps use each interface's `if_tsresol` and `if_tsoffset`, converted to nanoseconds with
integer arithmetic only and rounded down, exactly as Wireshark does. A Simple Packet Block has no
timestamp; it is given the previous frame's (0 before any), so network time never goes backwards.

A new Section Header Block starts over: its own byte order, and no interfaces until its IDBs.
"""

from __future__ import annotations

import struct
from collections.abc import Generator
from typing import TYPE_CHECKING

from analyzer.errors import InputError
from analyzer.sources.pcap import (
    MAX_ANY,
    MAX_BATCH_FRAMES,
    MAX_STANDARD,
    NS,
    Read,
    ReadState,
    Record,
    StreamFailed,
    cut_short,
    fill,
    read_on,
    stream_failed,
)

if TYPE_CHECKING:
    from analyzer.sources.batch import FrameBatch

SHB_MAGIC = b"\x0a\x0d\x0d\x0a"
SHB = 0x0A0D0D0A
DSB = 0x0000000A
"""Decryption Secrets Block: key material the capture carries (`editcap --inject-secrets`)."""
TLS_KEY_LOG = 0x544C534B
"""A DSB's secrets type for a TLS key log ("TLSK")."""
BYTE_ORDERS = {b"\x4d\x3c\x2b\x1a": "<", b"\x1a\x2b\x3c\x4d": ">"}
MAX_BLOCK = 32 + MAX_ANY + 131_072
"""Wireshark's MAX_BLOCK_SIZE: an EPB holding the largest record, plus 128 KiB of options."""
NUMBERED_ONLY = frozenset({0x9, 0x204, 0x208, 0x216, 0x217, 0x221, 0x222, 0xBAD, 0x40000BAD})
"""Block types Wireshark gives a frame number although they hold no packet (see above)."""

Interface = tuple[int, int, int, int, tuple[int, int] | None, int, int]
"""(linktype, hi_mul, lo_mul, largest plausible captured length, adjust, snaplen, hi_max): the
timestamp words give ts_ns = hi * hi_mul + lo * lo_mul, then (when adjust = (divisor, offset_ns)
is set) ts_ns // divisor + offset_ns. The common case (10^-n resolution, n <= 9, no offset) is then
two multiplications and an addition, which matters at a million packets per second. A high word
above hi_max may give a time out of range (`TS_LIMIT`): such a packet leaves the fast path."""

TS_LIMIT = 1 << 62
"""The latest time taken, in ns either side of 1970 (the years 1823 to 2116): the columnar path
keeps times in 64-bit integers, with room to add deadlines. A corrupt block's timestamp beyond it
is taken as this limit, on both paths alike, with a warning."""


class _Structs:
    """The structs of one byte order, compiled once per walk."""

    def __init__(self, order: str) -> None:
        self.head = struct.Struct(order + "II").unpack_from  # block type, total length
        self.epb_head = struct.Struct(order + "7I").unpack_from  # type, length, EPB fields
        self.u32 = struct.Struct(order + "I").unpack_from
        self.epb = struct.Struct(order + "IIIII").unpack_from  # if, ts hi, ts lo, caplen, len
        self.pb = struct.Struct(order + "HHIIII").unpack_from  # if, drops, hi, lo, caplen, len
        self.idb = struct.Struct(order + "HHI").unpack_from  # linktype, reserved, snaplen
        self.opt = struct.Struct(order + "HH").unpack_from  # option code, length
        self.i64 = struct.Struct(order + "q").unpack_from
        self.version = struct.Struct(order + "HH").unpack_from


def check_section_header(head: bytes) -> None:
    """Raise InputError unless `head` starts with a usable Section Header Block."""
    if len(head) < 28:
        raise InputError(f"pcapng section header cut short ({len(head)} bytes)")
    order = BYTE_ORDERS.get(head[8:12])
    if order is None:
        raise InputError(
            f"not a valid pcapng section header (byte-order magic 0x{head[8:12].hex()})"
        )
    (length,) = struct.unpack_from(order + "I", head, 4)
    if length < 28 or length % 4:
        raise InputError(f"not a valid pcapng section header (block length {length})")
    major, minor = struct.unpack_from(order + "HH", head, 12)
    if major != 1:
        raise InputError(f"unsupported pcapng version {major}.{minor} (1.0 expected)")


def _interface(s: _Structs, buf: bytes, pos: int, stop: int) -> Interface:
    """Parse an Interface Description Block; raise ValueError on a malformed option."""
    linktype, _reserved, snaplen = s.idb(buf, pos + 8)
    mul, div, offset = 1000, 1, 0  # default resolution: microseconds
    opt, end = pos + 16, stop - 4
    while opt + 4 <= end:
        code, length = s.opt(buf, opt)
        opt += 4
        if code == 0:
            break
        if opt + length > end:
            raise ValueError(f"option {code} overruns the block")
        if code == 9 and length >= 1:
            mul, div = _resolution(buf[opt])
        elif code == 14 and length == 8:
            offset = s.i64(buf, opt)[0] * NS
        opt += (length + 3) & ~3
    cap = min(max(MAX_STANDARD, snaplen), MAX_ANY)
    adjust = None if div == 1 and offset == 0 else (div, offset)
    # the largest high word for which every low word gives a time within TS_LIMIT
    hi_max = ((TS_LIMIT - offset) * div - 0xFFFFFFFF * mul) // (mul << 32) if offset >= -TS_LIMIT else -1
    return linktype, mul << 32, mul, cap, adjust, snaplen, hi_max


def _resolution(tsresol: int) -> tuple[int, int]:
    """if_tsresol -> (multiplier, divisor) to nanoseconds: high bit set means 2^-n, else 10^-n."""
    exp = tsresol & 0x7F
    if tsresol & 0x80:
        return NS, 1 << exp
    if exp <= 9:
        return 10 ** (9 - exp), 1
    return 1, 10 ** (exp - 9)


class _Corrupt(Exception):
    """A block that cannot be right; the message says why."""


Packet = tuple[int | None, int, int, int, int]
"""(ts_ns or None for a Simple Packet Block, linktype, where its data starts in the buffer,
captured length, wire length)."""

NUMBERED = (None, -1, 0, 0, 0)
"""What `_Walk.block` gives for a block that takes a frame number and holds no packet."""


def _block(
    s: _Structs,
    ifaces: list[Interface],
    buf: bytes,
    pos: int,
    blen: int,
    btype: int,
    state: ReadState,
) -> Packet | None:
    """Handle any whole block the fast path did not: its packet, or None for a block that is not
    one. Raises _Corrupt."""
    if btype == 6 or btype == 2:  # Enhanced Packet Block, or the obsolete Packet Block
        if blen < 32:
            raise _Corrupt(f"packet block of {blen} bytes")
        if btype == 6:
            iface, hi, lo, caplen, orig = s.epb(buf, pos + 8)
        else:
            iface, _drops, hi, lo, caplen, orig = s.pb(buf, pos + 8)
        if caplen > blen - 32:
            raise _Corrupt(f"captured length {caplen} overruns its {blen}-byte block")
        if iface >= len(ifaces):
            raise _Corrupt(f"packet on undeclared interface {iface}")
        linktype, hi_mul, lo_mul, cap, adjust, snaplen, _hi_max = ifaces[iface]
        if caplen > cap:
            raise _Corrupt(f"captured length {caplen} > {MAX_STANDARD} and > snaplen {snaplen}")
        ts = hi * hi_mul + lo * lo_mul
        if adjust:
            ts = ts // adjust[0] + adjust[1]
        return ts, linktype, pos + 28, caplen, orig
    if btype == 3:  # Simple Packet Block: interface 0, no timestamp
        if not ifaces or blen < 16:
            raise _Corrupt(f"simple packet block of {blen} bytes with {len(ifaces)} interfaces")
        linktype, snaplen = ifaces[0][0], ifaces[0][5]
        orig = s.u32(buf, pos + 8)[0]
        return None, linktype, pos + 12, min(orig, blen - 16, snaplen or orig), orig
    if btype == 1:
        if blen < 20:
            raise _Corrupt(f"interface description block of {blen} bytes")
        try:
            ifaces.append(_interface(s, buf, pos, pos + blen))
        except (ValueError, struct.error) as exc:
            raise _Corrupt(f"malformed interface description block: {exc}") from None
        state.linktypes.add(ifaces[-1][0])
    elif btype == DSB:
        if blen >= 16 and s.u32(buf, pos + 8)[0] == TLS_KEY_LOG:
            state.tls_secrets = True
    elif btype == SHB:
        version = s.version(buf, pos + 12) if blen >= 28 else None
        if version is None or version[0] != 1:
            raise _Corrupt(f"section header of {blen} bytes, version {version}")
        ifaces.clear()
    return None


class _Walk:
    """What a walk over the blocks knows between them (the section's byte order, its interfaces),
    and every block the walkers' inline fast path for Enhanced Packet Blocks leaves (`block`)."""

    def __init__(self, state: ReadState, buf: bytes) -> None:
        self.state = state
        self.structs = {"<": _Structs("<"), ">": _Structs(">")}
        self.order = BYTE_ORDERS[buf[8:12]]
        """The current section's byte order."""
        self.s = self.structs[self.order]
        """Its structs."""
        self.ifaces: list[Interface] = []
        """The current section's interfaces (one list, emptied by a new section)."""
        self._unpadded = False
        self._out_of_range = False

    def block(self, buf: bytes, pos: int, end: int, base: int, frame: int) -> tuple[int, Packet | None]:
        """The block at `pos` (`buf` holds bytes up to `end`, the stream's byte `base` at 0):
        (its length, its packet, `NUMBERED`, or None) once it is whole; (-n, None) when `buf`
        must hold n bytes from `pos` first. Raises _Corrupt, saying why."""
        if end - pos < 12:
            return -12, None
        s = self.s
        btype, blen = s.head(buf, pos)
        if btype == SHB:  # its byte-order magic sets the order of the whole section
            order = BYTE_ORDERS.get(buf[pos + 8 : pos + 12])
            if order is None:
                raise _Corrupt("section header with an invalid byte-order magic")
            self.order = order
            s = self.s = self.structs[order]
            blen = s.head(buf, pos)[1]
        if blen < 12:
            raise _Corrupt(f"block length {blen} is under 12")
        if blen & 3:
            if not self._unpadded:
                self._unpadded = True
                self.state.warnings.append(
                    f"block length {blen} at byte {base + pos} (after frame {frame}) is "
                    "not a multiple of 4; rounded up, as Wireshark does"
                )
            blen = (blen + 3) & ~3
        if pos + blen > end:
            if blen > MAX_BLOCK:
                raise _Corrupt(f"block length {blen} is beyond any real block")
            return -blen, None
        trailer = s.u32(buf, pos + blen - 4)[0]
        if (trailer + 3) & ~3 != blen:
            raise _Corrupt(f"block length {blen} does not match its trailing copy {trailer}")
        if btype in NUMBERED_ONLY:
            return blen, NUMBERED
        packet = _block(s, self.ifaces, buf, pos, blen, btype, self.state)
        if packet is not None and packet[0] is not None and not -TS_LIMIT <= packet[0] <= TS_LIMIT:
            ts = max(-TS_LIMIT, min(TS_LIMIT, packet[0]))
            if not self._out_of_range:
                self._out_of_range = True
                self.state.warnings.append(
                    f"frame {frame + 1}: timestamp out of range ({packet[0]} ns since 1970, a "
                    f"corrupt block?); taken as {ts}, and so is any later one out of range")
            packet = (ts, *packet[1:])
        return blen, packet


def _corrupt(state: ReadState, exc: _Corrupt, frame: int, offset: int) -> None:
    state.error = f"corrupt block after frame {frame} at byte {offset}: {exc}; stopped"


def iter_pcapng(state: ReadState, read: Read, buf: bytes) -> Generator[Record, None, None]:
    """Yield every packet of a pcapng whose first Section Header Block starts `buf`.

    Enhanced Packet Blocks that are whole in the buffer and sound take the inline fast path (one
    unpack of their 28-byte head); everything else goes through `_Walk.block`."""
    walk = _Walk(state, buf)
    s, ifaces, n_ifaces = walk.s, walk.ifaces, 0
    pos, base, end, frame, last_ts = 0, 0, len(buf), 0, 0
    try:
        while True:
            try:
                btype, blen, iface, hi, lo, caplen, orig = s.epb_head(buf, pos)
            except struct.error:  # under 28 bytes buffered
                btype = 0
            if btype == 6:
                stop = pos + blen
                if (
                    stop <= end
                    and caplen + 32 <= blen
                    and not blen & 3
                    and s.u32(buf, stop - 4)[0] == blen
                    and iface < n_ifaces
                ):
                    linktype, hi_mul, lo_mul, cap, adjust, _snaplen, hi_max = ifaces[iface]
                    if caplen <= cap and hi <= hi_max:
                        frame += 1
                        last_ts = hi * hi_mul + lo * lo_mul
                        if adjust:
                            last_ts = last_ts // adjust[0] + adjust[1]
                        start = pos + 28
                        pos = stop  # before the yield: a yielded record counts as consumed
                        yield frame, last_ts, linktype, buf[start : start + caplen], orig
                        continue
            try:
                size, packet = walk.block(buf, pos, end, base, frame)
            except _Corrupt as exc:
                _corrupt(state, exc, frame, base + pos)
                return
            if size > 0:
                s, n_ifaces = walk.s, len(ifaces)
                pos += size
                if packet is not None:
                    frame += 1
                    if packet is not NUMBERED:
                        ts, linktype, start, caplen, orig = packet
                        last_ts = last_ts if ts is None else ts
                        yield frame, last_ts, linktype, buf[start : start + caplen], orig
                continue
            need = -size
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


def iter_pcapng_batches(state: ReadState, read: Read, buf: bytes) -> Generator[FrameBatch, None, None]:
    """`iter_pcapng`'s packets in `FrameBatch`es over the buffer as read (about `BATCH_BYTES` at a
    time), with the same checks, warnings, errors and `bytes_read`.

    The loop per block only finds where the next Enhanced Packet Block starts, by its length;
    `_Checked` then reads their heads at once and takes them up to the first that `iter_pcapng`'s
    fast path would not take, which `_Walk.block` handles as it does there. A batch ends before a
    packet whose number does not follow on (a block that takes a number and holds no packet); its
    packets may come from interfaces of different link types (`FrameBatch.linktypes`). The first
    packet is a batch of its own, so that
    the reader knows, when it is taken, exactly what it knows on the per-frame path after the
    first record (TLS secrets that came before it)."""
    import numpy as np  # only when batches are read

    from analyzer.sources.batch import FrameBatch

    walk = _Walk(state, buf)
    pos, base, end, frame, last_ts = 0, 0, len(buf), 0, 0
    pieces: list[tuple[np.ndarray, ...]] = []
    """The batch's packets so far: (data start, captured length, wire length, ts_ns, link type)
    columns."""
    singles: list[tuple[int, int, int, int, int]] = []
    """Packets taken one by one since the last piece, as those columns' values."""
    held = 0
    first_packet = True
    singly = 1
    """Blocks to take one by one (`_Walk.block`) before looking ahead again: the first packet, the
    block the look-ahead stopped at, and more each time in a row that it took few (up to
    `MOST_SINGLY`), so that a file where no look-ahead pays (every block unpadded, say) costs
    about what it costs frame by frame."""
    misses = 0
    """Look-aheads in a row that took fewer than `FEW` blocks."""
    window = FEW
    """How many blocks to look ahead at once: doubled whenever all were taken."""
    failed: StreamFailed | None = None

    def single_pieces() -> None:
        pieces.append(tuple(np.array(c, dtype=np.int64) for c in zip(*singles)))
        singles.clear()

    def batch() -> FrameBatch:
        nonlocal held
        if singles:
            single_pieces()
        columns = tuple(np.concatenate(c) if len(pieces) > 1 else c[0] for c in zip(*pieces))
        pieces.clear()
        first, held = frame - held + 1, 0
        return FrameBatch.of(buf, columns[:4], first, columns[4])  # type: ignore[arg-type]

    try:
        while True:
            if held >= MAX_BATCH_FRAMES:
                yield batch()
            if not singly:
                starts: list[int] = []
                add = starts.append
                at, head, left = pos, walk.s.head, min(window, MAX_BATCH_FRAMES - held)
                try:
                    while left:  # Enhanced Packet Blocks whole in the buffer, by their lengths
                        btype, blen = head(buf, at)
                        if btype != 6 or blen < 32 or at + blen > end:
                            break
                        add(at)
                        at += blen
                        left -= 1
                except struct.error:  # under 8 bytes left
                    pass
                if starts:
                    taken = _Checked(buf, starts, walk)
                    if taken.count:
                        if singles:
                            single_pieces()
                        pieces.append(taken.columns)
                        held += taken.count
                        frame += taken.count
                        last_ts = taken.last_ts
                    if taken.count == len(starts):
                        pos, window, misses = at, 2 * window, 0
                        if not left:
                            continue
                    else:
                        misses = misses + 1 if taken.count < FEW else 0
                        pos, window, singly = starts[taken.count], FEW, min(1 << misses, MOST_SINGLY)
            elif not first_packet:
                singly -= 1
            try:
                size, packet = walk.block(buf, pos, end, base, frame)
            except _Corrupt as exc:
                if held:
                    yield batch()
                _corrupt(state, exc, frame, base + pos)
                return
            if size > 0:
                pos += size
                if packet is not None:
                    if held and packet is NUMBERED:
                        yield batch()
                    frame += 1
                    if packet is not NUMBERED:
                        ts, linktype, start, caplen, orig = packet
                        last_ts = last_ts if ts is None else ts
                        singles.append((start, caplen, orig, last_ts, linktype))
                        held += 1
                        if first_packet:
                            first_packet = False
                            yield batch()
                continue
            need = -size
            if held:
                yield batch()
            state.bytes_read = base + pos
            if failed is not None:  # what was read before the failure is analysed first
                stream_failed(state, failed, frame, base + pos)
                return
            rest, buf = buf[pos:], b""  # the analysed batch's bytes go as soon as its users let them
            base, pos = base + pos, 0
            buf, failed = read_on(read, rest, need)
            end = len(buf)
            state.bytes_read = base
            if failed is None and end < need:
                if end:
                    state.warnings.append(cut_short(frame, base))
                return
    finally:
        state.bytes_read = base + pos


FEW = 64
"""The look-ahead's first window (`iter_pcapng_batches`), and what it must take to pay."""
MOST_SINGLY = 1024
"""Blocks taken one by one at most between two look-aheads."""


class _Checked:
    """Of the Enhanced Packet Blocks at `starts` (whole in `buf`, one after the other), the first
    `count` that `iter_pcapng`'s fast path takes: their `columns` (data start, captured length,
    wire length, ts_ns, link type) and the last one's time."""

    def __init__(self, buf: bytes, starts: list[int], walk: _Walk) -> None:
        import numpy as np
        from numpy.lib.stride_tricks import sliding_window_view

        raw = np.frombuffer(buf, dtype=np.uint8)
        at = np.asarray(starts, dtype=np.int64)
        u32 = np.dtype(walk.order + "u4")
        heads = sliding_window_view(raw, 28)[at].copy().view(u32).astype(np.int64)
        blen, iface, hi, lo, caplen, wire = (heads[:, k] for k in range(1, 7))
        trailer = sliding_window_view(raw, 4)[at + blen - 4].copy().view(u32)[:, 0]
        ifaces = walk.ifaces
        ok = (caplen + 32 <= blen) & ((blen & 3) == 0) & (trailer == blen) & (iface < len(ifaces))
        if ifaces:
            table = np.array([(lt, hi_mul, lo_mul, cap, adjust is None, min(hi_max, 1 << 32))
                              for lt, hi_mul, lo_mul, cap, adjust, _snaplen, hi_max in ifaces],
                             dtype=np.int64)
            row = table[np.minimum(iface, len(ifaces) - 1)]
            ok &= (caplen <= row[:, 3]) & (hi <= row[:, 5])
        else:
            row = np.zeros((len(at), 6), dtype=np.int64)
        count = self.count = len(at) if ok.all() else int(np.argmin(ok))
        if not count:
            return
        hi, lo, row = hi[:count], lo[:count], row[:count]
        ts = hi * row[:, 1] + lo * row[:, 2]  # within TS_LIMIT (hi_max): no overflow
        for k in np.flatnonzero(row[:, 4] == 0).tolist():  # an interface with if_tsresol or
            divisor, offset = ifaces[int(iface[k])][4]  # type: ignore[misc]  # if_tsoffset
            ts[k] = (int(hi[k]) * int(row[k, 1]) + int(lo[k]) * int(row[k, 2])) // divisor + offset
        self.columns = (at[:count] + 28, caplen[:count], wire[:count], ts, row[:, 0])
        self.last_ts = int(ts[-1])

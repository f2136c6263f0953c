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

from analyzer.errors import InputError
from analyzer.sources.pcap import (
    MAX_ANY,
    MAX_STANDARD,
    NS,
    Read,
    ReadState,
    Record,
    StreamFailed,
    cut_short,
    fill,
    stream_failed,
)

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

Interface = tuple[int, int, int, int, tuple[int, int] | None, int]
"""(linktype, hi_mul, lo_mul, largest plausible captured length, adjust, snaplen): the timestamp
words give ts_ns = hi * hi_mul + lo * lo_mul, then (when adjust = (divisor, offset_ns) is set)
ts_ns // divisor + offset_ns. The common case (10^-n resolution, n <= 9, no offset) is then two
multiplications and an addition, which matters at a million packets per second."""


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
    return linktype, mul << 32, mul, cap, adjust, snaplen


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


def _block(
    s: _Structs,
    ifaces: list[Interface],
    buf: bytes,
    pos: int,
    blen: int,
    btype: int,
    state: ReadState,
) -> tuple[int | None, int, bytes, int] | None:
    """Handle any whole block the fast path did not: (ts_ns or None, linktype, data, wire_len)
    for a packet, None for a block that is not one. Raises _Corrupt."""
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
        linktype, hi_mul, lo_mul, cap, adjust, snaplen = ifaces[iface]
        if caplen > cap:
            raise _Corrupt(f"captured length {caplen} > {MAX_STANDARD} and > snaplen {snaplen}")
        ts = hi * hi_mul + lo * lo_mul
        if adjust:
            ts = ts // adjust[0] + adjust[1]
        return ts, linktype, buf[pos + 28 : pos + 28 + caplen], orig
    if btype == 3:  # Simple Packet Block: interface 0, no timestamp
        if not ifaces or blen < 16:
            raise _Corrupt(f"simple packet block of {blen} bytes with {len(ifaces)} interfaces")
        linktype, snaplen = ifaces[0][0], ifaces[0][5]
        orig = s.u32(buf, pos + 8)[0]
        caplen = min(orig, blen - 16, snaplen or orig)
        return None, linktype, buf[pos + 12 : pos + 12 + caplen], orig
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


def iter_pcapng(state: ReadState, read: Read, buf: bytes) -> Generator[Record, None, None]:
    """Yield every packet of a pcapng whose first Section Header Block starts `buf`.

    Enhanced Packet Blocks that are whole in the buffer and sound take the inline fast path (one
    unpack of their 28-byte head); everything else goes through `_block`."""
    structs = {"<": _Structs("<"), ">": _Structs(">")}
    s = structs[BYTE_ORDERS[buf[8:12]]]
    ifaces: list[Interface] = []
    pos, base, end, frame, last_ts, n_ifaces, bad, unpadded = 0, 0, len(buf), 0, 0, 0, "", False
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
                    linktype, hi_mul, lo_mul, cap, adjust, _snaplen = ifaces[iface]
                    if caplen <= cap:
                        frame += 1
                        last_ts = hi * hi_mul + lo * lo_mul
                        if adjust:
                            last_ts = last_ts // adjust[0] + adjust[1]
                        start = pos + 28
                        pos = stop  # before the yield: a yielded record counts as consumed
                        yield frame, last_ts, linktype, buf[start : start + caplen], orig
                        continue
            if end - pos >= 12:
                btype, blen = s.head(buf, pos)
                if btype == SHB:  # its byte-order magic sets the order of the whole section
                    order = BYTE_ORDERS.get(buf[pos + 8 : pos + 12])
                    if order is None:
                        bad = "section header with an invalid byte-order magic"
                        break
                    s = structs[order]
                    blen = s.head(buf, pos)[1]
                if blen < 12:
                    bad = f"block length {blen} is under 12"
                    break
                if blen & 3:
                    if not unpadded:
                        unpadded = True
                        state.warnings.append(
                            f"block length {blen} at byte {base + pos} (after frame {frame}) is "
                            "not a multiple of 4; rounded up, as Wireshark does"
                        )
                    blen = (blen + 3) & ~3
                if pos + blen <= end:
                    trailer = s.u32(buf, pos + blen - 4)[0]
                    if (trailer + 3) & ~3 != blen:
                        bad = f"block length {blen} does not match its trailing copy {trailer}"
                        break
                    if btype in NUMBERED_ONLY:
                        frame += 1
                    try:
                        packet = _block(s, ifaces, buf, pos, blen, btype, state)
                    except _Corrupt as exc:
                        bad = str(exc)
                        break
                    n_ifaces = len(ifaces)
                    pos += blen
                    if packet is not None:
                        ts, linktype, data, orig = packet
                        last_ts = last_ts if ts is None else ts
                        frame += 1
                        yield frame, last_ts, linktype, data, orig
                    continue
                if blen > MAX_BLOCK:
                    bad = f"block length {blen} is beyond any real block"
                    break
                need = blen
            else:
                need = 12
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
        state.error = f"corrupt block after frame {frame} at byte {base + pos}: {bad}; stopped"
    finally:
        state.bytes_read = base + pos

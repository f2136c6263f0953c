"""MQTT 3.1, 3.1.1 and 5.0 decoding of exactly what keep-alive analysis needs.

That is: the fixed header of every packet (type, flags, Remaining Length) and the bodies of CONNECT,
CONNACK and DISCONNECT. Everything else is skipped by the framer without being buffered.

Body decoders take the bytes that arrived (possibly a prefix of the packet when it was cut short) and
raise `DecodeError` on bytes that cannot be MQTT. They never keep a password, a will message or a
payload. CONNACK and DISCONNECT are decoded without knowing the protocol level: their Remaining
Length tells (a 3.x CONNACK is exactly 2 bytes; a 5.0 one has at least a property length).
"""

from __future__ import annotations

import struct

from analyzer.errors import DecodeError
from analyzer.model import ConnAckBody, ConnectBody, DisconnectBody, PacketType

MAX_VARINT_BYTES = 4
"""The spec caps Remaining Length (and every variable byte integer) at 4 bytes: 268,435,455."""

PROTOCOL_NAMES = {b"MQTT": "MQTT", b"MQIsdp": "MQIsdp"}

SERVER_KEEP_ALIVE = 0x13
ASSIGNED_CLIENT_IDENTIFIER = 0x12
SESSION_EXPIRY_INTERVAL = 0x11

# MQTT 5 property id -> how its value is encoded (spec 2.2.2.2).
_BYTE, _TWO, _FOUR, _VARINT, _UTF8, _BINARY, _PAIR = range(7)
PROPERTY_KINDS: dict[int, int] = {
    0x01: _BYTE, 0x02: _FOUR, 0x03: _UTF8, 0x08: _UTF8, 0x09: _BINARY, 0x0B: _VARINT,
    0x11: _FOUR, 0x12: _UTF8, 0x13: _TWO, 0x15: _UTF8, 0x16: _BINARY, 0x17: _BYTE,
    0x18: _FOUR, 0x19: _BYTE, 0x1A: _UTF8, 0x1C: _UTF8, 0x1F: _UTF8, 0x21: _TWO,
    0x22: _TWO, 0x23: _TWO, 0x24: _BYTE, 0x25: _BYTE, 0x26: _PAIR, 0x27: _FOUR,
    0x28: _BYTE, 0x29: _BYTE, 0x2A: _BYTE,
}

_U16 = struct.Struct("!H")
_U32 = struct.Struct("!I")

NEED_DATA = None
"""Returned by `decode_varint` when the bytes end inside the integer: wait for more."""


def decode_varint(buf: bytes | bytearray, pos: int) -> tuple[int, int] | None:
    """Decode a variable byte integer at `pos`.

    Returns:
        (value, number of bytes used), or `NEED_DATA` when `buf` ends inside the integer.
    Raises:
        DecodeError: a fifth continuation byte (the spec's 4-byte limit).
    """
    value = 0
    for i in range(MAX_VARINT_BYTES):
        if pos + i >= len(buf):
            return NEED_DATA
        byte = buf[pos + i]
        value |= (byte & 0x7F) << (7 * i)
        if not byte & 0x80:
            return value, i + 1
    raise DecodeError("variable byte integer longer than 4 bytes")


def encode_varint(value: int) -> bytes:
    """The minimal encoding of `value` (used by tests and byte builders)."""
    if not 0 <= value <= 268_435_455:
        raise ValueError(f"{value} does not fit a variable byte integer")
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


class PartialDecode(DecodeError):
    """The body is malformed after a point; `partial` holds what was decoded before it."""

    def __init__(self, reason: str, partial: object) -> None:
        super().__init__(reason)
        self.partial = partial


class _Cursor:
    """Bounds-checked reading over a body; running off the end raises `DecodeError`."""

    __slots__ = ("buf", "pos")

    def __init__(self, buf: bytes) -> None:
        self.buf = buf
        self.pos = 0

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.buf):
            raise DecodeError(f"needed {n} bytes at offset {self.pos}, only {len(self.buf) - self.pos} left")
        chunk = self.buf[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def u8(self) -> int:
        return self.take(1)[0]

    def u16(self) -> int:
        return _U16.unpack(self.take(2))[0]

    def u32(self) -> int:
        return _U32.unpack(self.take(4))[0]

    def varint(self) -> int:
        decoded = decode_varint(self.buf, self.pos)
        if decoded is NEED_DATA:
            raise DecodeError(f"variable byte integer cut short at offset {self.pos}")
        value, used = decoded
        self.pos += used
        return value

    def binary(self) -> bytes:
        return self.take(self.u16())

    def utf8(self) -> str:
        return self.binary().decode("utf-8", errors="replace")

    @property
    def remaining(self) -> int:
        return len(self.buf) - self.pos


def decode_properties(cur: _Cursor) -> dict[int, list[object]]:
    """Read a v5 property block; returns property id -> values in order of appearance."""
    length = cur.varint()
    end = cur.pos + length
    if end > len(cur.buf):
        raise DecodeError(f"property length {length} runs past the packet")
    props: dict[int, list[object]] = {}
    while cur.pos < end:
        prop_id = cur.varint()
        kind = PROPERTY_KINDS.get(prop_id)
        if kind is None:
            raise DecodeError(f"unknown property id 0x{prop_id:02x}")
        props.setdefault(prop_id, []).append(_read_property(cur, kind))
    if cur.pos != end:
        raise DecodeError("a property runs past the property length")
    return props


def property_block_size(data: bytes) -> int:
    """Bytes the v5 property block at the start of `data` takes, checked as `decode_properties`
    checks it (DecodeError where it would raise), without keeping its values."""
    cur = _Cursor(data)
    decode_properties(cur)
    return cur.pos


def _read_property(cur: _Cursor, kind: int) -> object:
    if kind == _BYTE:
        return cur.u8()
    if kind == _TWO:
        return cur.u16()
    if kind == _FOUR:
        return cur.u32()
    if kind == _VARINT:
        return cur.varint()
    if kind == _UTF8:
        return cur.utf8()
    if kind == _BINARY:
        return cur.binary()
    return (cur.utf8(), cur.utf8())


def decode_connect(body: bytes) -> ConnectBody:
    """Decode CONNECT's variable header and client identifier (the rest is not needed).

    Raises:
        DecodeError: an unknown protocol name, or bytes that end before the client identifier.
    """
    cur = _Cursor(body)
    raw_name = cur.binary()
    name = PROTOCOL_NAMES.get(raw_name)
    if name is None:
        raise DecodeError(f"CONNECT with unknown protocol name {raw_name[:16]!r}")
    level = cur.u8() & 0x7F  # the high bit marks a bridge in mosquitto and others
    flags = cur.u8()
    common = {"protocol_name": name, "protocol_level": level, "keep_alive_s": cur.u16(),
              "clean_start": bool(flags & 0x02), "has_username": bool(flags & 0x80),
              "has_password": bool(flags & 0x40), "has_will": bool(flags & 0x04)}
    # Keep Alive is read; a malformed rest (properties, client id) must not lose it.
    try:
        session_expiry_s = None
        if level >= 5:
            session_expiry_s = _first_int(decode_properties(cur), SESSION_EXPIRY_INTERVAL)
        client_id = cur.utf8() if cur.remaining >= 2 else None
    except DecodeError as exc:
        raise PartialDecode(f"CONNECT after Keep Alive: {exc}",
                            ConnectBody(**common, client_id=None)) from None
    return ConnectBody(**common, client_id=client_id, session_expiry_s=session_expiry_s)


def decode_connack(body: bytes) -> ConnAckBody:
    """Decode CONNACK: 2 bytes in 3.x; in 5.0 a property block follows (Server Keep Alive, ...)."""
    cur = _Cursor(body)
    ack_flags = cur.u8()
    code = cur.u8()
    server_keep_alive = assigned = None
    count = 0
    if cur.remaining:
        props = decode_properties(cur)
        ska_values = props.get(SERVER_KEEP_ALIVE, [])
        count = len(ska_values)
        server_keep_alive = ska_values[0] if ska_values else None
        assigned_values = props.get(ASSIGNED_CLIENT_IDENTIFIER)
        assigned = assigned_values[0] if assigned_values else None
    return ConnAckBody(
        reason_code=code,
        session_present=bool(ack_flags & 0x01),
        server_keep_alive_s=server_keep_alive,  # type: ignore[arg-type]
        assigned_client_id=assigned,  # type: ignore[arg-type]
        server_keep_alive_count=count,
    )


def decode_disconnect(body: bytes) -> DisconnectBody:
    """Decode DISCONNECT: empty in 3.x; a v5 reason code when there is a body."""
    return DisconnectBody(reason_code=body[0] if body else None)


def _first_int(props: dict[int, list[object]], prop_id: int) -> int | None:
    values = props.get(prop_id)
    return values[0] if values else None  # type: ignore[return-value]


BODY_DECODERS = {
    PacketType.CONNECT: decode_connect,
    PacketType.CONNACK: decode_connack,
    PacketType.DISCONNECT: decode_disconnect,
}
"""Packet types whose body is decoded; every other body is skipped unread."""

_FIXED_FLAGS = {6: 2, 8: 2, 10: 2}


def header_is_plausible(first_byte: int, remaining_length: int) -> bool:
    """A strict test for the first packet read after a resynchronisation point.

    Inside a synchronised stream every header is accepted (and malformed ones reported); but when
    the framer does not know where packets start (a stream joined mid-way, or after lost bytes),
    accepting anything would turn payload bytes into phantom packets. So there the reserved flags
    must be exactly as the spec fixes them and fixed-size packets must have their size.
    """
    ptype, flags = first_byte >> 4, first_byte & 0x0F
    if ptype == 0:
        return False
    if ptype == 3:
        return (flags & 0x06) != 0x06 and remaining_length >= 2
    if flags != _FIXED_FLAGS.get(ptype, 0):
        return False
    if ptype in (12, 13):
        return remaining_length == 0
    if ptype in (2, 4, 5, 6, 7, 11):
        return remaining_length >= 2
    if ptype in (8, 9, 10):
        return remaining_length >= 3
    if ptype == 1:
        return remaining_length >= 10
    return True

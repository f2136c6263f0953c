"""Byte builders for MQTT control packets, shared by tests.

These are written from the MQTT 3.1.1 / 5.0 specifications independently of `analyzer.mqtt.codec`
(the variable byte integer encoder here is its own), so tests that decode these bytes check the
analyzer against the spec, not against itself.
"""

from __future__ import annotations

import struct

MAX_VARINT = 268_435_455


def varint(value: int) -> bytes:
    """Minimal variable byte integer encoding (MQTT 3.1.1 2.2.3 / 5.0 1.5.5)."""
    assert 0 <= value <= MAX_VARINT, value
    out = bytearray()
    while True:
        value, digit = divmod(value, 128)
        out.append(digit | (0x80 if value else 0))
        if not value:
            return bytes(out)


def u16(value: int) -> bytes:
    return struct.pack("!H", value)


def u32(value: int) -> bytes:
    return struct.pack("!I", value)


def utf8(text: str | bytes) -> bytes:
    raw = text.encode() if isinstance(text, str) else text
    return u16(len(raw)) + raw


def packet(first_byte: int, body: bytes = b"") -> bytes:
    """A control packet: fixed header (first byte, Remaining Length) then `body`."""
    return bytes([first_byte]) + varint(len(body)) + body


# -- MQTT 5 properties --------------------------------------------------------------------------

def prop_u16(prop_id: int, value: int) -> bytes:
    return varint(prop_id) + u16(value)


def prop_u32(prop_id: int, value: int) -> bytes:
    return varint(prop_id) + u32(value)


def prop_str(prop_id: int, value: str) -> bytes:
    return varint(prop_id) + utf8(value)


def properties(*encoded: bytes) -> bytes:
    """A property block: its length, then the properties."""
    block = b"".join(encoded)
    return varint(len(block)) + block


SERVER_KEEP_ALIVE = 0x13
ASSIGNED_CLIENT_ID = 0x12
SESSION_EXPIRY = 0x11


# -- packets ------------------------------------------------------------------------------------

def connect_body(*, level: int = 4, keep_alive: int = 60, client_id: str = "client-1",
                 name: bytes | None = None, clean: bool = True, username: str | None = None,
                 password: bytes | None = None, will: tuple[str, bytes] | None = None,
                 props: bytes | None = None, will_props: bytes | None = None) -> bytes:
    """The variable header and payload of a CONNECT (level 3 = 3.1, 4 = 3.1.1, 5 = 5.0).

    `level` is written as given, so a bridge's level (0x84) can be built too. `props` defaults to an
    empty property block for level 5.
    """
    if name is None:
        name = b"MQIsdp" if level & 0x7F == 3 else b"MQTT"
    flags = (0x02 if clean else 0) | (0x80 if username is not None else 0)
    flags |= 0x40 if password is not None else 0
    if will is not None:
        flags |= 0x04
    v5 = level & 0x7F >= 5
    out = utf8(name) + bytes([level, flags]) + u16(keep_alive)
    if v5:
        out += props if props is not None else properties()
    out += utf8(client_id)
    if will is not None:
        if v5:
            out += will_props if will_props is not None else properties()
        out += utf8(will[0]) + utf8(will[1])
    if username is not None:
        out += utf8(username)
    if password is not None:
        out += utf8(password)
    return out


def connect(**kwargs: object) -> bytes:
    return packet(0x10, connect_body(**kwargs))  # type: ignore[arg-type]


def connack(code: int = 0, session_present: bool = False, props: bytes | None = None) -> bytes:
    """CONNACK: 3.x when `props` is None (2 bytes), 5.0 with the given property block otherwise."""
    body = bytes([1 if session_present else 0, code])
    if props is not None:
        body += props
    return packet(0x20, body)


def publish(topic: str = "t", payload: bytes = b"", qos: int = 0, packet_id: int = 1,
            dup: bool = False, retain: bool = False, v5: bool = False) -> bytes:
    first = 0x30 | (0x08 if dup else 0) | (qos << 1) | (0x01 if retain else 0)
    body = utf8(topic) + (u16(packet_id) if qos else b"") + (properties() if v5 else b"")
    return packet(first, body + payload)


def publish_header(topic: str, payload_len: int, qos: int = 0) -> bytes:
    """Fixed header, topic (and packet id) of a PUBLISH whose payload is sent separately."""
    variable = utf8(topic) + (u16(1) if qos else b"")
    return bytes([0x30 | (qos << 1)]) + varint(len(variable) + payload_len) + variable


def subscribe(packet_id: int = 1, *topics: str) -> bytes:
    filters = b"".join(utf8(t) + b"\x00" for t in (topics or ("a/b",)))
    return packet(0x82, u16(packet_id) + filters)


def suback(packet_id: int = 1, codes: bytes = b"\x00") -> bytes:
    return packet(0x90, u16(packet_id) + codes)


def puback(packet_id: int = 1) -> bytes:
    return packet(0x40, u16(packet_id))


PINGREQ = b"\xc0\x00"
PINGRESP = b"\xd0\x00"


def disconnect(reason: int | None = None, props: bytes | None = None) -> bytes:
    body = b"" if reason is None else bytes([reason])
    if props is not None:
        body += props
    return packet(0xE0, body)

"""Is this TCP connection MQTT? On a configured port, yes; on any other, only if it opens with CONNECT.

The signature is the one Zeek's dynamic protocol detection uses for MQTT: a CONNECT fixed header
(0x10), a Remaining Length, then the protocol name `MQTT` (3.1.1, 5.0) or `MQIsdp` (3.1) with its
2-byte length prefix.
"""

from __future__ import annotations

from analyzer.errors import DecodeError
from analyzer.mqtt.codec import decode_varint, property_block_size

_NAMES = (b"\x00\x04MQTT", b"\x00\x06MQIsdp")


def looks_like_connect(payload: bytes) -> bool:
    """True when `payload` starts with an MQTT CONNECT."""
    return _after_name(payload) is not None


def _after_name(payload: bytes) -> tuple[int, int] | None:
    """For a `payload` that starts like a CONNECT (the signature above): where its protocol name
    ends, and where the packet ends (perhaps past the payload); None for anything else."""
    if len(payload) < 8 or payload[0] != 0x10:
        return None
    try:
        decoded = decode_varint(payload, 1)
    except DecodeError:
        return None
    if decoded is None:
        return None
    start = 1 + decoded[1]
    for name in _NAMES:
        if payload.startswith(name, start):
            return start + len(name), start + decoded[0]
    return None


def connect_client_id(payload: bytes) -> str | None:
    """The client id of a CONNECT that `payload` starts with and holds whole ('' when empty);
    None if it does not (or if it is malformed before its client id).

    Read in place: a split analysis asks this of every other process's CONNECT, and the columnar
    path of every first data of a connection. It says what `decode_connect` says of the packet's
    body (the tests hold the two to the same answers), without building its record."""
    found = _after_name(payload)
    if found is None:
        return None
    at, end = found
    if end > len(payload):
        return None
    if at + 4 > end:  # protocol level, connect flags, Keep Alive
        return None
    level = payload[at] & 0x7F  # (the high bit marks a bridge)
    at += 4
    if level >= 5:
        try:
            at += property_block_size(payload[at:end])
        except DecodeError:
            return None
    if end - at < 2:
        return ""
    size = payload[at] << 8 | payload[at + 1]
    at += 2
    if at + size > end:
        return None
    return payload[at:at + size].decode("utf-8", errors="replace")

"""Is this TCP connection MQTT? On a configured port, yes; on any other, only if it opens with CONNECT.

The signature is the one Zeek's dynamic protocol detection uses for MQTT: a CONNECT fixed header
(0x10), a Remaining Length, then the protocol name `MQTT` (3.1.1, 5.0) or `MQIsdp` (3.1) with its
2-byte length prefix.
"""

from __future__ import annotations

from analyzer.errors import DecodeError
from analyzer.mqtt.codec import decode_connect, decode_varint

_NAMES = (b"\x00\x04MQTT", b"\x00\x06MQIsdp")


def looks_like_connect(payload: bytes) -> bool:
    """True when `payload` starts with an MQTT CONNECT."""
    if len(payload) < 8 or payload[0] != 0x10:
        return False
    try:
        decoded = decode_varint(payload, 1)
    except DecodeError:
        return False
    if decoded is None:
        return False
    start = 1 + decoded[1]
    return any(payload.startswith(name, start) for name in _NAMES)


def connect_client_id(payload: bytes) -> str | None:
    """The client id of a CONNECT that `payload` starts with and holds whole ('' when empty);
    None if it does not."""
    if not looks_like_connect(payload):
        return None
    try:
        decoded = decode_varint(payload, 1)
        if decoded is None or 1 + decoded[1] + decoded[0] > len(payload):
            return None
        body = decode_connect(payload[1 + decoded[1]:1 + decoded[1] + decoded[0]])
    except DecodeError:
        return None
    return body.client_id or ""

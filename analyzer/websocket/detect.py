"""Is this connection MQTT over WebSocket? Its client's first bytes are an HTTP Upgrade to `mqtt`.

A browser or gateway opens MQTT over WebSocket with `GET <path> HTTP/1.1`, `Upgrade: websocket`
and `Sec-WebSocket-Protocol: mqtt` (MQTT 3.1.1 / 5.0, MQTT-6.0.0-3) or the old `mqttv3.1`. The
request may arrive over several segments: `upgrade_verdict` says None until its header block is
complete (or too long to be one).
"""

from __future__ import annotations

import re

MAX_REQUEST_BYTES = 16 * 1024
"""A request head longer than this is not waited for."""

MQTT_SUBPROTOCOLS = frozenset({"mqtt", "mqttv3.1"})

_WEBSOCKET = re.compile(rb"websocket", re.IGNORECASE)
"""The Upgrade token, in any case (ASCII only, as `str.lower` of a Latin-1 head: no other
character lowers to an ASCII letter)."""


def parse_head(head: bytes) -> tuple[str, dict[str, str]]:
    """The start line and the header fields (names lowercased, repeated fields joined by ', ')."""
    lines = head.decode("latin-1").split("\r\n")
    fields: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep:
            continue
        name, value = name.strip().lower(), value.strip()
        fields[name] = f"{fields[name]}, {value}" if name in fields else value
    return lines[0], fields


def tokens(value: str) -> list[str]:
    """The comma-separated tokens of a header value, lowercased."""
    return [t.strip().lower() for t in value.split(",") if t.strip()]


def upgrade_verdict(head: bytes, *, require_mqtt: bool = True) -> bool | None:
    """True when `head` (a client's first bytes) opens MQTT over WebSocket; None: need more bytes.

    With `require_mqtt` False (a configured MQTT port), any WebSocket upgrade will do.
    """
    if not head.startswith(b"GET "):
        return False if len(head) >= 4 or not b"GET ".startswith(head) else None
    end = head.find(b"\r\n\r\n")
    if end < 0:
        return None if len(head) < MAX_REQUEST_BYTES else False
    if _WEBSOCKET.search(head, 0, end) is None:  # (most HTTP: not parsed, the same answer)
        return False
    _, fields = parse_head(head[:end])
    if "websocket" not in tokens(fields.get("upgrade", "")):
        return False
    if not require_mqtt:
        return True
    return any(t in MQTT_SUBPROTOCOLS for t in tokens(fields.get("sec-websocket-protocol", "")))

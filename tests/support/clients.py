"""MQTT clients for recordings: a raw-socket client for exact (mis)behaviour, and paho-mqtt.

Real libraries never send a late ping on purpose, a malformed PINGREQ or a CONNECT followed by
silence, so the keep-alive scenarios drive the wire byte by byte with :class:`RawClient`: every
packet is sent exactly when the scenario says, in the segments it says. Where the point is what a
real library does on its own (its ping cadence), :func:`run_paho_session` runs paho-mqtt.

The encoders are deliberately minimal (QoS 0, no Will, no authentication): a capture of the
keep-alive mechanism needs nothing else, and fewer bytes keep the shipped captures small.
"""

from __future__ import annotations

import contextlib
import select
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from tests.support.broker import address_family, require_loopback

# Control packet types (MQTT 3.1.1 table 2.1, the same in 3.1 and 5.0).
CONNECT = 1
CONNACK = 2
PUBLISH = 3
SUBSCRIBE = 8
SUBACK = 9
PINGREQ = 12
PINGRESP = 13
DISCONNECT = 14

PROTOCOL_NAMES = {3: b"MQIsdp", 4: b"MQTT", 5: b"MQTT"}

SERVER_KEEP_ALIVE = 0x13

# MQTT 5 property identifiers by value encoding; a parser must know them all to skip one.
_BYTE_PROPERTIES = frozenset({0x01, 0x17, 0x19, 0x24, 0x25, 0x28, 0x29, 0x2A})
_U16_PROPERTIES = frozenset({0x13, 0x21, 0x22, 0x23})
_U32_PROPERTIES = frozenset({0x02, 0x11, 0x18, 0x27})
_VARINT_PROPERTIES = frozenset({0x0B})
_STRING_PROPERTIES = frozenset({0x03, 0x08, 0x12, 0x15, 0x1A, 0x1C, 0x1F})
_BINARY_PROPERTIES = frozenset({0x09, 0x16})
_PAIR_PROPERTIES = frozenset({0x26})


# --- encoding --------------------------------------------------------------------------------


def encode_varint(value: int) -> bytes:
    """MQTT variable byte integer (at most 4 bytes, up to 268,435,455)."""
    if not 0 <= value <= 268_435_455:
        raise ValueError(f"variable byte integer out of range: {value}")
    out = bytearray()
    while True:
        value, digit = divmod(value, 128)
        out.append(digit | (0x80 if value else 0))
        if not value:
            return bytes(out)


def encode_string(value: str | bytes) -> bytes:
    """A length-prefixed UTF-8 string (or binary data)."""
    data = value.encode() if isinstance(value, str) else value
    return struct.pack("!H", len(data)) + data


def encode_packet(packet_type: int, body: bytes = b"", flags: int = 0) -> bytes:
    """Fixed header (type, flags, remaining length) followed by ``body``."""
    return bytes([(packet_type << 4) | (flags & 0x0F)]) + encode_varint(len(body)) + body


def u16_property(identifier: int, value: int) -> bytes:
    """One MQTT 5 two-byte-integer property, e.g. ``u16_property(0x21, 10)`` (Receive Maximum)."""
    return bytes([identifier]) + struct.pack("!H", value)


def u32_property(identifier: int, value: int) -> bytes:
    """One MQTT 5 four-byte-integer property, e.g. ``u32_property(0x11, 60)`` (Session Expiry)."""
    return bytes([identifier]) + struct.pack("!I", value)


def _properties_block(level: int, properties: bytes) -> bytes:
    """The MQTT 5 property length and properties; nothing at all before 5.0."""
    if level < 5:
        if properties:
            raise ValueError("properties exist only in MQTT 5")
        return b""
    return encode_varint(len(properties)) + properties


def connect_packet(
    client_id: str,
    keep_alive: int,
    *,
    level: int = 4,
    clean: bool = True,
    properties: bytes = b"",
) -> bytes:
    """CONNECT for MQTT 3.1 (level 3, ``MQIsdp``), 3.1.1 (4) or 5.0 (5, with ``properties``)."""
    if level not in PROTOCOL_NAMES:
        raise ValueError(f"unknown protocol level {level}")
    flags = 0x02 if clean else 0x00
    variable_header = (
        encode_string(PROTOCOL_NAMES[level])
        + bytes([level, flags])
        + struct.pack("!H", keep_alive)
        + _properties_block(level, properties)
    )
    return encode_packet(CONNECT, variable_header + encode_string(client_id))


def publish_packet(topic: str, payload: bytes, *, level: int = 4) -> bytes:
    """PUBLISH QoS 0 (no packet identifier), not retained."""
    return encode_packet(PUBLISH, encode_string(topic) + _properties_block(level, b"") + payload)


def subscribe_packet(topic: str, *, packet_id: int = 1, level: int = 4) -> bytes:
    """SUBSCRIBE to one topic filter at QoS 0 (fixed-header flags 0b0010 are mandatory)."""
    body = struct.pack("!H", packet_id) + _properties_block(level, b"")
    return encode_packet(SUBSCRIBE, body + encode_string(topic) + b"\x00", flags=0x02)


def pingreq_packet(*, flags: int = 0, body: bytes = b"") -> bytes:
    """PINGREQ: ``C0 00``; non-zero ``flags`` or a ``body`` make the malformed variants."""
    return encode_packet(PINGREQ, body, flags=flags)


def disconnect_packet(*, level: int = 4, reason: int | None = None) -> bytes:
    """DISCONNECT: ``E0 00``; in MQTT 5 optionally with a reason code."""
    if reason is None:
        return encode_packet(DISCONNECT)
    if level < 5:
        raise ValueError("DISCONNECT reason codes exist only in MQTT 5")
    return encode_packet(DISCONNECT, bytes([reason]))


# --- decoding --------------------------------------------------------------------------------


def decode_varint(data: bytes, offset: int = 0) -> tuple[int, int] | None:
    """``(value, offset after it)``, or ``None`` if the bytes end inside the integer."""
    value = 0
    for index in range(4):
        if offset + index >= len(data):
            return None
        byte = data[offset + index]
        value |= (byte & 0x7F) << (7 * index)
        if not byte & 0x80:
            return value, offset + index + 1
    raise ValueError("variable byte integer longer than 4 bytes")


def take_packet(buffer: bytearray) -> bytes | None:
    """Remove and return the first complete MQTT packet in ``buffer``, or ``None`` if incomplete."""
    decoded = decode_varint(bytes(buffer[1:5])) if buffer else None
    if decoded is None:
        return None
    remaining, header_tail = decoded
    end = 1 + header_tail + remaining
    if len(buffer) < end:
        return None
    packet = bytes(buffer[:end])
    del buffer[:end]
    return packet


def packet_body(packet: bytes) -> bytes:
    """The bytes after the fixed header."""
    decoded = decode_varint(packet, 1)
    if decoded is None:
        raise ValueError("truncated fixed header")
    return packet[decoded[1] :]


def _property_value(data: bytes, identifier: int, offset: int) -> tuple[Any, int]:
    """Decode one property value starting at ``offset``; return it and the next offset."""
    if identifier in _BYTE_PROPERTIES:
        return data[offset], offset + 1
    if identifier in _U16_PROPERTIES:
        return struct.unpack_from("!H", data, offset)[0], offset + 2
    if identifier in _U32_PROPERTIES:
        return struct.unpack_from("!I", data, offset)[0], offset + 4
    if identifier in _VARINT_PROPERTIES:
        decoded = decode_varint(data, offset)
        if decoded is None:
            raise ValueError("truncated property")
        return decoded
    if identifier in _STRING_PROPERTIES | _BINARY_PROPERTIES:
        length = struct.unpack_from("!H", data, offset)[0]
        raw = data[offset + 2 : offset + 2 + length]
        return (raw.decode() if identifier in _STRING_PROPERTIES else raw), offset + 2 + length
    if identifier in _PAIR_PROPERTIES:
        key, offset = _property_value(data, 0x03, offset)
        value, offset = _property_value(data, 0x03, offset)
        return (key, value), offset
    raise ValueError(f"unknown MQTT 5 property 0x{identifier:02x}")


def parse_properties(data: bytes) -> dict[int, Any]:
    """MQTT 5 properties (without their length prefix) as ``{identifier: value}``.

    User properties (0x26) may repeat; the last one wins, which is enough for keep-alive work.
    """
    properties: dict[int, Any] = {}
    offset = 0
    while offset < len(data):
        identifier = data[offset]
        properties[identifier], offset = _property_value(data, identifier, offset + 1)
    return properties


@dataclass(frozen=True, slots=True)
class ConnAck:
    """A parsed CONNACK; ``server_keep_alive`` is property 0x13 when an MQTT 5 broker sent it."""

    raw: bytes
    session_present: bool
    reason_code: int
    properties: dict[int, Any] = field(default_factory=dict)

    @property
    def server_keep_alive(self) -> int | None:
        """The Server Keep Alive the client must use instead of its own, if any."""
        value = self.properties.get(SERVER_KEEP_ALIVE)
        return int(value) if value is not None else None


def parse_connack(raw: bytes, level: int) -> ConnAck:
    """Parse CONNACK bytes (fixed header included) for the protocol level that was requested."""
    if raw[0] >> 4 != CONNACK:
        raise ValueError(f"not a CONNACK: {raw.hex()}")
    body = packet_body(raw)
    properties: dict[int, Any] = {}
    if level >= 5 and len(body) > 2:
        decoded = decode_varint(body, 2)
        if decoded is None:
            raise ValueError("truncated CONNACK properties")
        length, start = decoded
        properties = parse_properties(body[start : start + length])
    return ConnAck(raw, bool(body[0] & 0x01), body[1], properties)


# --- the raw client --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Received:
    """One packet from the broker and when it arrived (``time.monotonic()`` seconds)."""

    at: float
    packet: bytes

    @property
    def type(self) -> int:
        """The control packet type (upper nibble of the first byte)."""
        return self.packet[0] >> 4


class RawClient:
    """A TCP connection that sends exactly the MQTT bytes it is told to, when it is told to.

    A reader thread drains everything the broker sends from the moment the socket opens (so a
    subscriber really receives and the broker's send buffer never fills) and records each packet
    with its arrival time. ``close()`` ends with FIN, ``abort()`` with RST, because brokers and the
    analyzer treat the two differently.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 1883,
        *,
        level: int = 4,
        nodelay: bool = True,
        timeout_s: float = 5.0,
    ) -> None:
        self.host = require_loopback(host)
        self.port = port
        self.level = level
        self.timeout_s = timeout_s
        self.sock = socket.socket(address_family(host), socket.SOCK_STREAM)
        if nodelay:
            # One send() must be one segment, or the scenario does not control segmentation.
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.peer_closed_at: float | None = None
        self._received: list[Received] = []
        self._changed = threading.Condition()
        self._stop = threading.Event()
        self._reader = threading.Thread(target=self._read_loop, daemon=True)
        self._open = False

    # life cycle

    def open(self) -> RawClient:
        """Open the TCP connection and start draining it."""
        self.sock.settimeout(self.timeout_s)
        self.sock.connect((self.host, self.port))
        self.sock.settimeout(None)
        self._open = True
        self._reader.start()
        return self

    def __enter__(self) -> RawClient:
        return self.open()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._open:
            self.close()

    def close(self, wait_s: float = 2.0) -> None:
        """Close with FIN, and give the broker ``wait_s`` to close its side too (a clean end)."""
        if not self._open:
            return
        with contextlib.suppress(OSError):  # the broker may already have reset the connection
            self.sock.shutdown(socket.SHUT_WR)
        self.wait_closed(wait_s)
        self._finish()

    def abort(self) -> None:
        """Close with RST (SO_LINGER 0), as a crashed device or a killed process looks."""
        if not self._open:
            return
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self._finish()

    def _finish(self) -> None:
        """Stop the reader first, so it never selects on a closed (or reused) file descriptor."""
        self._stop.set()
        self._reader.join(timeout=2)
        self.sock.close()
        self._open = False

    # sending

    def send(self, data: bytes) -> float:
        """Send ``data`` in one ``sendall`` and return when (``time.monotonic()``)."""
        self.sock.sendall(data)
        return time.monotonic()

    def connect(
        self,
        client_id: str,
        keep_alive: int,
        *,
        clean: bool = True,
        properties: bytes = b"",
    ) -> ConnAck:
        """Send CONNECT at this client's protocol level and wait for the CONNACK."""
        self.send(connect_packet(client_id, keep_alive, level=self.level, clean=clean, properties=properties))
        (connack,) = self.wait_for(CONNACK)
        return parse_connack(connack.packet, self.level)

    def publish(self, topic: str, payload: bytes) -> float:
        """Send one PUBLISH QoS 0."""
        return self.send(publish_packet(topic, payload, level=self.level))

    def subscribe(self, topic: str, packet_id: int = 1) -> Received:
        """Send SUBSCRIBE and wait for the SUBACK, so publishes sent afterwards are delivered."""
        self.send(subscribe_packet(topic, packet_id=packet_id, level=self.level))
        return self.wait_for(SUBACK)[-1]

    def pingreq(self) -> float:
        """Send a well-formed PINGREQ (``C0 00``)."""
        return self.send(pingreq_packet())

    def disconnect(self) -> float:
        """Send DISCONNECT (normal disconnection, no reason code)."""
        return self.send(disconnect_packet(level=self.level))

    # receiving

    @property
    def received(self) -> list[Received]:
        """Every packet received so far, in arrival order."""
        with self._changed:
            return list(self._received)

    def count(self, packet_type: int) -> int:
        """How many packets of ``packet_type`` arrived so far."""
        return sum(1 for item in self.received if item.type == packet_type)

    def wait_for(self, packet_type: int, count: int = 1, timeout_s: float | None = None) -> list[Received]:
        """Wait until ``count`` packets of ``packet_type`` have arrived in total; return them."""
        def enough() -> bool:
            return sum(1 for item in self._received if item.type == packet_type) >= count

        self._wait(enough, timeout_s, f"{count} packet(s) of type {packet_type}")
        return [item for item in self.received if item.type == packet_type]

    def wait_closed(self, timeout_s: float | None = None) -> bool:
        """Wait for the broker to close (FIN or RST); return whether it did in time."""
        try:
            self._wait(lambda: self.peer_closed_at is not None, timeout_s, "the peer's close")
        except TimeoutError:
            return False
        return True

    def _wait(self, ready: Callable[[], bool], timeout_s: float | None, what: str) -> None:
        with self._changed:
            timeout = self.timeout_s if timeout_s is None else timeout_s
            if not self._changed.wait_for(ready, timeout):
                raise TimeoutError(f"no {what} within {timeout} s")

    def _readable(self, timeout_s: float) -> bool:
        """Whether `_recv` has something to return now."""
        readable, _, _ = select.select([self.sock], [], [], timeout_s)
        return bool(readable)

    def _recv(self) -> bytes:
        return self.sock.recv(65536)

    def _read_loop(self) -> None:
        """Split the byte stream into packets until the peer closes or we stop."""
        buffer = bytearray()
        while not self._stop.is_set():
            if not self._readable(0.05):
                continue
            try:
                data = self._recv()
            except OSError:
                data = b""
            now = time.monotonic()
            if not data:
                self._record_close(now)
                return
            buffer.extend(data)
            self._record_packets(buffer, now)

    def _record_packets(self, buffer: bytearray, now: float) -> None:
        with self._changed:
            while (packet := take_packet(buffer)) is not None:
                self._received.append(Received(now, packet))
            self._changed.notify_all()

    def _record_close(self, now: float) -> None:
        with self._changed:
            self.peer_closed_at = now
            self._changed.notify_all()


# --- paho-mqtt -------------------------------------------------------------------------------


def run_paho_session(
    host: str,
    port: int,
    *,
    client_id: str,
    keep_alive: int,
    protocol: int,
    duration_s: float,
    ws_path: str | None = None,
    tls_context: Any = None,
) -> list[str]:
    """Connect a paho-mqtt client, let its own network loop run ``duration_s``, disconnect.

    The scenario does nothing but wait: every PINGREQ in the capture is paho's own decision, which
    is the point of recording it. Returns paho's log lines (it logs each PINGREQ/PINGRESP).
    ``tls_context``: an ``ssl.SSLContext`` for MQTT over TLS (``tls_set_context``).
    """
    import paho.mqtt.client as mqtt

    log: list[str] = []
    connected = threading.Event()
    disconnected = threading.Event()
    extra: dict[str, Any] = {} if protocol == mqtt.MQTTv5 else {"clean_session": True}
    if ws_path is not None:  # MQTT over WebSocket (paho's websockets transport)
        extra["transport"] = "websockets"
    client = mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=protocol, **extra
    )
    if ws_path is not None:
        client.ws_set_options(path=ws_path)
    if tls_context is not None:
        client.tls_set_context(tls_context)
    client.on_log = lambda _c, _u, _level, message: log.append(f"{time.monotonic():.3f} {message}")
    client.on_connect = lambda *_args: connected.set()
    client.on_disconnect = lambda *_args: disconnected.set()
    client.connect(require_loopback(host), port, keepalive=keep_alive)
    client.loop_start()
    try:
        if not connected.wait(5):
            raise TimeoutError("paho did not get a CONNACK")
        time.sleep(duration_s)
        client.disconnect()
        # loop_stop() does not flush: wait until paho's thread has sent DISCONNECT and closed.
        disconnected.wait(5)
    finally:
        client.loop_stop()
    return log

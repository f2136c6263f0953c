"""A raw MQTT-over-WebSocket client (RFC 6455) for recordings, and WebSocket frame encoders.

:class:`RawWSClient` is :class:`RawClient` behind a WebSocket: ``open()`` performs the HTTP Upgrade
(subprotocol ``mqtt``), every ``send()`` is one masked binary frame in one segment, and
``ws_ping()`` / ``ws_close()`` send the control frames no MQTT library lets a scenario time
exactly. The reader thread unwraps the broker's frames and records the MQTT packets inside.
"""

from __future__ import annotations

import base64
import os
import struct
import time

from tests.support.broker import port_accepts
from tests.support.clients import RawClient, Received, take_packet

CONTINUATION, TEXT, BINARY, CLOSE, PING, PONG = 0, 1, 2, 8, 9, 10


def ws_frame(opcode: int, payload: bytes = b"", *, fin: bool = True, mask: bytes | None = None,
             rsv: int = 0, length_form: int | None = None) -> bytes:
    """One WebSocket frame. ``mask``: the 4-byte key (client frames) or None (server frames).
    ``length_form`` forces the 7/16/64-bit length encoding (126, 127) for tests."""
    first = (0x80 if fin else 0) | (rsv << 4) | opcode
    n = len(payload)
    form = length_form if length_form is not None else (n if n < 126 else 126 if n < 65536 else 127)
    mask_bit = 0x80 if mask is not None else 0
    if form < 126:
        head = bytes([first, mask_bit | n])
    elif form == 126:
        head = bytes([first, mask_bit | 126]) + struct.pack("!H", n)
    else:
        head = bytes([first, mask_bit | 127]) + struct.pack("!Q", n)
    if mask is None:
        return head + payload
    masked = bytes(b ^ mask[i & 3] for i, b in enumerate(payload))
    return head + mask + masked


def upgrade_request(host: str, port: int, *, path: str = "/mqtt", protocol: str = "mqtt") -> bytes:
    """The client's HTTP Upgrade request, as browsers and paho send it."""
    key = base64.b64encode(os.urandom(16)).decode()
    return (f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
            f"Sec-WebSocket-Protocol: {protocol}\r\n\r\n").encode()


def wait_listening(host: str, port: int, timeout_s: float = 5.0) -> None:
    """Wait until a second listener (mosquitto's websockets one opens after the first) accepts."""
    deadline = time.monotonic() + timeout_s
    while not port_accepts(host, port):
        if time.monotonic() > deadline:
            raise TimeoutError(f"nothing listens on {host}:{port}")
        time.sleep(0.05)


class RawWSClient(RawClient):
    """A :class:`RawClient` whose MQTT bytes travel in WebSocket binary frames."""

    def __init__(self, *args, protocol: str = "mqtt", **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.protocol = protocol
        self.pongs: list[float] = []
        self.close_received_at: float | None = None

    def open(self) -> RawWSClient:
        """Open TCP, perform the Upgrade (waiting for the 101), then start draining frames."""
        self.sock.settimeout(self.timeout_s)
        self.sock.connect((self.host, self.port))
        self.sock.sendall(upgrade_request(self.host, self.port, protocol=self.protocol))
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise ConnectionError(f"the broker closed during the Upgrade: {head!r}")
            head += chunk
        if not head.startswith(b"HTTP/1.1 101"):
            raise ConnectionError(f"the broker refused the Upgrade: {head.splitlines()[0]!r}")
        self._pending = bytearray(head.split(b"\r\n\r\n", 1)[1])
        self.sock.settimeout(None)
        self._open = True
        self._reader.start()
        return self

    def send(self, data: bytes) -> float:
        """Send ``data`` as one masked binary frame (one ``sendall``, one segment)."""
        return self.send_frame(BINARY, data)

    def send_frame(self, opcode: int, payload: bytes = b"", *, fin: bool = True) -> float:
        """Send one masked frame of any kind."""
        self.sock.sendall(ws_frame(opcode, payload, fin=fin, mask=os.urandom(4)))
        return time.monotonic()

    def ws_ping(self, payload: bytes = b"") -> float:
        """A WebSocket ping: not an MQTT control packet."""
        return self.send_frame(PING, payload)

    def ws_close(self, code: int = 1000) -> float:
        """A WebSocket close frame with a status code."""
        return self.send_frame(CLOSE, struct.pack("!H", code))

    def _read_loop(self) -> None:
        """Unwrap the broker's (unmasked) frames; record the MQTT packets in the binary ones."""
        raw = getattr(self, "_pending", bytearray())
        mqtt = bytearray()
        while not self._stop.is_set():
            self._unwrap(raw, mqtt)
            if not self._readable(0.05):
                continue
            try:
                data = self._recv()
            except OSError:
                data = b""
            if not data:
                self._record_close(time.monotonic())
                return
            raw.extend(data)

    def _unwrap(self, raw: bytearray, mqtt: bytearray) -> None:
        now = time.monotonic()
        while len(raw) >= 2:
            size, at = raw[1] & 0x7F, 2
            if size == 126:
                if len(raw) < 4:
                    return
                size, at = struct.unpack("!H", raw[2:4])[0], 4
            elif size == 127:
                if len(raw) < 10:
                    return
                size, at = struct.unpack("!Q", raw[2:10])[0], 10
            if len(raw) < at + size:
                return
            opcode, payload = raw[0] & 0x0F, bytes(raw[at: at + size])
            del raw[: at + size]
            if opcode in (BINARY, CONTINUATION):
                mqtt.extend(payload)
                with self._changed:
                    while (packet := take_packet(mqtt)) is not None:
                        self._received.append(Received(now, packet))
                    self._changed.notify_all()
            elif opcode == PONG:
                with self._changed:
                    self.pongs.append(now)
                    self._changed.notify_all()
            elif opcode == CLOSE:
                self.close_received_at = now



def run_paho_ws_session(host: str, port: int, *, client_id: str, keep_alive: int,
                        duration_s: float, path: str = "/mqtt") -> list[str]:
    """paho-mqtt over WebSocket (``transport="websockets"``, MQTT 3.1.1): connect, let its own loop
    run ``duration_s``, disconnect. Returns paho's log lines."""
    import paho.mqtt.client as mqtt

    from tests.support.clients import run_paho_session

    return run_paho_session(host, port, client_id=client_id, keep_alive=keep_alive,
                            protocol=mqtt.MQTTv311, duration_s=duration_s, ws_path=path)

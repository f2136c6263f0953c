"""A tiny scripted MQTT broker for broker misbehaviour that no real broker shows on demand.

mosquitto answers every PINGREQ and never closes a client early, so the broker-side rules (KA202
broker-closed-early, KA203 pingresp-missing) need a peer that misbehaves on purpose. This one
accepts a single connection on loopback, answers CONNACK, and then follows its script. It speaks
only as much MQTT as the keep-alive scenarios need: CONNECT in, CONNACK and PINGRESP out.
"""

from __future__ import annotations

import select
import socket
import threading
import time
from types import TracebackType

from tests.support.broker import address_family, require_loopback
from tests.support.clients import CONNACK, CONNECT, PINGREQ, PINGRESP, encode_packet, packet_body, take_packet


def connack_for(connect: bytes) -> bytes:
    """A success CONNACK in the client's own protocol version (5.0 adds an empty property list)."""
    body = packet_body(connect)
    name_length = int.from_bytes(body[:2], "big")
    level = body[2 + name_length]
    return encode_packet(CONNACK, b"\x00\x00\x00" if level >= 5 else b"\x00\x00")


class ScriptedBroker:
    """Serve one MQTT connection in a thread, following a script.

    ``answer_pings=False``: never send PINGRESP. ``close_after_idle_s=X``: once the client has sent
    no complete control packet for X seconds (counted from the end of its last one, CONNECT
    included), close with FIN, then wait for the client's FIN. Otherwise it keeps the connection
    until the client closes. ``events`` records what happened, with ``time.monotonic()`` stamps.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        answer_pings: bool = True,
        close_after_idle_s: float | None = None,
    ) -> None:
        self.host = require_loopback(host)
        self.answer_pings = answer_pings
        self.close_after_idle_s = close_after_idle_s
        self.events: list[tuple[float, str]] = []
        self._listener = socket.socket(address_family(host), socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind((self.host, port))
        self._listener.listen(1)
        self.port = int(self._listener.getsockname()[1])
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def __enter__(self) -> ScriptedBroker:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._listener.close()

    def wait_done(self, timeout_s: float) -> bool:
        """Wait until the connection is over (both sides closed); return whether it is."""
        self._thread.join(timeout_s)
        return not self._thread.is_alive()

    def _note(self, what: str) -> None:
        self.events.append((time.monotonic(), what))

    def _serve(self) -> None:
        """Accept one connection and run the conversation until it ends or we are stopped."""
        conn = self._accept()
        if conn is None:
            return
        with conn:
            self._converse(conn)

    def _accept(self) -> socket.socket | None:
        while not self._stop.is_set():
            readable, _, _ = select.select([self._listener], [], [], 0.05)
            if readable:
                conn, _ = self._listener.accept()
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                self._note("accepted")
                return conn
        return None

    def _converse(self, conn: socket.socket) -> None:
        """Read packets and answer per script; return when the client has closed."""
        buffer = bytearray()
        last_packet_at = time.monotonic()
        closed_by_us = False
        while not self._stop.is_set():
            readable, _, _ = select.select([conn], [], [], 0.02)
            now = time.monotonic()
            if readable:
                data = self._recv(conn)
                if not data:
                    self._note("client closed")
                    return
                buffer.extend(data)
                while (packet := take_packet(buffer)) is not None:
                    last_packet_at = now
                    self._handle(conn, packet)
            if not closed_by_us and self._idle_expired(now - last_packet_at):
                conn.shutdown(socket.SHUT_WR)
                closed_by_us = True
                self._note(f"closed after {now - last_packet_at:.3f} s idle")

    def _recv(self, conn: socket.socket) -> bytes:
        try:
            return conn.recv(65536)
        except OSError:
            return b""

    def _idle_expired(self, idle_s: float) -> bool:
        return self.close_after_idle_s is not None and idle_s >= self.close_after_idle_s

    def _handle(self, conn: socket.socket, packet: bytes) -> None:
        """Answer CONNECT always, PINGREQ if the script says so; ignore everything else."""
        packet_type = packet[0] >> 4
        self._note(f"received type {packet_type}")
        if packet_type == CONNECT:
            self._send(conn, connack_for(packet), "CONNACK")
        elif packet_type == PINGREQ and self.answer_pings:
            self._send(conn, encode_packet(PINGRESP), "PINGRESP")

    def _send(self, conn: socket.socket, packet: bytes, name: str) -> None:
        """Send one answer; after our own FIN the write fails, which is the script, not an error."""
        try:
            conn.sendall(packet)
        except OSError as exc:
            self._note(f"could not send {name}: {exc}")
        else:
            self._note(f"sent {name}")

#!/usr/bin/env python3
"""Record the shipped keep-alive captures from a real mosquitto (or a scripted broker) on lo.

    sudo python captures/record.py [--out captures/] [--port 1883] [scenario ...]

Each scenario is one small function: it starts a broker, starts tcpdump on ``lo`` for that
broker's port, drives the client(s), stops both and leaves ``<out>/<scenario>.pcap`` (classic
pcap, nanosecond timestamps). Without scenario names, all are recorded. tcpdump needs root.

Port 1883 by default, not a random one: Wireshark and the analyzer's port-based detection
recognise MQTT there without "decode as", which matters for ``mid-stream`` (no CONNECT to detect
MQTT by). ``--port 0`` picks a free port instead, for tests that must not collide.

Timing is scheduled against one start time per scenario (no drift), client ids are fixed
(``ka-<scenario>``) and payloads are constant, so a re-recording differs only in ports, sequence
numbers and a few milliseconds.

The TLS scenarios (``tls-*``, ``tls12-*``, ``wss-*``) are twins of plain ones over a mosquitto TLS
listener (port 8883, or 8081 for WebSocket over TLS) with a throw-away CA made by ``openssl``; their
client writes its session secrets next to the capture, ``<scenario>.keys`` (SSLKEYLOGFILE format),
which is what decrypts them (``mqtt-keepalive analyze X.pcap --tls-keylog X.keys``). A
re-recording also differs in every key and ciphertext.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import ssl
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))  # tests/ is not installed; the machinery lives in tests/support

from tests.support.broker import MosquittoBroker, free_port  # noqa: E402
from tests.support.capture import TcpdumpCapture  # noqa: E402
from tests.support.clients import (  # noqa: E402
    PINGRESP,
    PUBLISH,
    RawClient,
    pingreq_packet,
    publish_packet,
    run_paho_session,
)
from tests.support.scripted_broker import ScriptedBroker  # noqa: E402
from tests.support.tls import (  # noqa: E402
    CertificateFiles,
    TLSRawClient,
    TLSRawWSClient,
    client_context,
    make_certificates,
    tls_listener_lines,
)
from tests.support.ws_client import RawWSClient, run_paho_ws_session, wait_listening  # noqa: E402

DEFAULT_PORT = 1883
WS_PORT = 9001
"""mosquitto's websockets listener in the ws-* scenarios: mosquitto's customary port, not an MQTT
port, so the analyzer must find MQTT there by the HTTP Upgrade alone."""
TLS_PORT = 8883
"""mosquitto's TLS listener in the tls-* scenarios: the registered port of MQTT over TLS, where
Wireshark dissects MQTT inside TLS without "decode as" (given the keys)."""
WSS_PORT = 8081
"""The WebSocket-over-TLS listener of the wss-* scenarios (mosquitto's customary wss port)."""

# mosquitto log lines worth keeping in a recording's notes.
NOTEWORTHY = ("connected from", "exceeded timeout", "disconnect", "error", "malformed", "closed", "connack")


class ScenarioError(RuntimeError):
    """The traffic did not show what the scenario claims; the capture must not be shipped."""


@dataclass
class Recording:
    """What a scenario needs (where to write, which port) and what it reports back."""

    name: str
    path: Path
    port: int
    notes: list[str] = field(default_factory=list)
    keylog: Path | None = None
    """Where a TLS scenario's client writes its session secrets (moved beside the capture)."""

    @property
    def client_id(self) -> str:
        """The fixed client id of the scenario's main client."""
        return f"ka-{self.name}"

    @property
    def broker_port(self) -> int | None:
        """The port to give a broker: ``None`` (free port) when ``--port 0``."""
        return self.port or None

    def note(self, text: str) -> None:
        """Keep an observation for the summary (and the README)."""
        self.notes.append(text)

    def tls_context(self, files: CertificateFiles, version: str = "1.3") -> ssl.SSLContext:
        """A client context for this recording (TLS ``version`` 1.3 or 1.2) logging its secrets to
        a fresh key log beside the partial capture (the key log appends, so a stale one goes)."""
        self.keylog = self.path.with_name(f".{self.name}.keys.partial")
        self.keylog.unlink(missing_ok=True)
        return client_context(files, self.keylog, version=version)


Scenario = Callable[[Recording], None]
SCENARIOS: dict[str, Scenario] = {}


def scenario(name: str) -> Callable[[Scenario], Scenario]:
    """Register a scenario function under its capture name."""
    def register(function: Scenario) -> Scenario:
        SCENARIOS[name] = function
        return function
    return register


# --- helpers ---------------------------------------------------------------------------------


class Clock:
    """Seconds since the scenario's reference point; sleeps to absolute offsets, so no drift."""

    def __init__(self) -> None:
        self.start = time.monotonic()

    def now(self) -> float:
        """Seconds since the reference point."""
        return time.monotonic() - self.start

    def sleep_until(self, offset_s: float) -> None:
        """Sleep until ``offset_s`` after the reference point (at once if that has passed)."""
        time.sleep(max(0.0, offset_s - self.now()))


@contextmanager
def mosquitto_capture(
    rec: Recording, host: str = "127.0.0.1", max_keepalive: int | None = None
) -> Iterator[MosquittoBroker]:
    """A mosquitto on ``rec``'s port with tcpdump already capturing it; notes the broker's log."""
    broker = MosquittoBroker(host=host, port=rec.broker_port, max_keepalive=max_keepalive)
    with broker, TcpdumpCapture(rec.path, [broker.port]):
        yield broker
    note_broker_log(rec, broker.log_text())


@contextmanager
def scripted_capture(
    rec: Recording, *, answer_pings: bool = True, close_after_idle_s: float | None = None
) -> Iterator[ScriptedBroker]:
    """The scripted broker on ``rec``'s port with tcpdump already capturing it."""
    broker = ScriptedBroker(port=rec.port, answer_pings=answer_pings, close_after_idle_s=close_after_idle_s)
    with broker, TcpdumpCapture(rec.path, [broker.port]):
        yield broker
    rec.note("scripted broker: " + "; ".join(what for _, what in broker.events))


@contextmanager
def mosquitto_ws_capture(rec: Recording) -> Iterator[tuple[MosquittoBroker, int]]:
    """A mosquitto with a websockets listener (port 9001, or a free one with ``--port 0``) and
    tcpdump capturing that listener only; yields the broker and the websockets port."""
    ws_port = WS_PORT if rec.port else free_port()
    broker = MosquittoBroker(port=rec.broker_port,
                             extra_lines=[f"listener {ws_port} 127.0.0.1", "protocol websockets"])
    with broker:
        wait_listening(broker.host, ws_port)  # it opens after the plain listener
        with TcpdumpCapture(rec.path, [ws_port]):
            yield broker, ws_port
    note_broker_log(rec, broker.log_text())


@contextmanager
def mosquitto_tls_capture(rec: Recording, *, websockets: bool = False
                          ) -> Iterator[tuple[MosquittoBroker, int, CertificateFiles]]:
    """A mosquitto with a TLS listener (port 8883; WebSocket over TLS on 8081 with
    ``websockets``; a free port with ``--port 0``) and tcpdump capturing that listener only; yields
    the broker, the TLS port and the certificates (a fresh CA, removed afterwards)."""
    tls_port = (WSS_PORT if websockets else TLS_PORT) if rec.port else free_port()
    with tempfile.TemporaryDirectory(prefix="ka-certs-") as certs:
        files = make_certificates(Path(certs))
        broker = MosquittoBroker(port=rec.broker_port,
                                 extra_lines=tls_listener_lines(files, tls_port, websockets=websockets))
        with broker:
            wait_listening(broker.host, tls_port)  # it opens after the plain listener
            with TcpdumpCapture(rec.path, [tls_port]):
                yield broker, tls_port, files
    note_broker_log(rec, broker.log_text())


def note_broker_log(rec: Recording, log: str) -> None:
    """Keep mosquitto's lines about our clients (connects, timeouts, protocol errors).

    Lines about ``<unknown>`` (and, on a TLS listener, "unexpected eof") come from the readiness
    probe, before the capture started; the per-packet "Received/Sending" lines only repeat what the
    capture shows.
    """
    for line in log.splitlines():
        text = line.split(": ", 1)[-1]
        if "unexpected eof" in text:
            continue  # the readiness probe of a TLS listener (a bare TCP connect), before the capture
        if any(word in text.lower() for word in NOTEWORTHY) and "<unknown>" not in text:
            rec.note("mosquitto: " + text)


def connected(rec: Recording, host: str, port: int, keep_alive: int, *, level: int = 4,
              client_id: str | None = None, websocket: bool = False,
              context: ssl.SSLContext | None = None) -> RawClient:
    """An open raw client (over WebSocket if asked, over TLS with a ``context``) that has sent
    CONNECT and received a successful CONNACK."""
    if context is None:
        client = (RawWSClient if websocket else RawClient)(host, port, level=level).open()
    else:
        kind = TLSRawWSClient if websocket else TLSRawClient
        client = kind(host, port, level=level, context=context).open()
        rec.note(f"TLS: {client.tls.version}")  # type: ignore[attr-defined]
    connack = client.connect(client_id or rec.client_id, keep_alive)
    if connack.reason_code != 0:
        raise ScenarioError(f"CONNACK refused: {connack.raw.hex()}")
    return client


def ping_session(rec: Recording, host: str, port: int, *, keep_alive: int, interval_s: float,
                 pings: int, tail_s: float, websocket: bool = False,
                 context: ssl.SSLContext | None = None) -> None:
    """CONNECT, ``pings`` PINGREQs every ``interval_s``, DISCONNECT ``tail_s`` after the last."""
    client = connected(rec, host, port, keep_alive, websocket=websocket, context=context)
    clock = Clock()
    for index in range(1, pings + 1):
        clock.sleep_until(index * interval_s)
        client.pingreq()
    client.wait_for(PINGRESP, pings)
    clock.sleep_until(pings * interval_s + tail_s)
    client.disconnect()
    client.close()
    rec.note(f"{pings} PINGREQ every {interval_s} s, {client.count(PINGRESP)} PINGRESP")


def await_broker_close(rec: Recording, client: RawClient, clock: Clock, timeout_s: float,
                       since: str = "CONNACK") -> None:
    """Wait for the broker to close a silent client; note when (client clock, after ``since``)."""
    if not client.wait_closed(timeout_s):
        raise ScenarioError(f"the broker did not close within {timeout_s} s")
    assert client.peer_closed_at is not None
    rec.note(f"broker closed {client.peer_closed_at - clock.start:.2f} s after {since} (client clock)")
    client.close()


# --- scenarios -------------------------------------------------------------------------------


@scenario("compliant-pinger")
def compliant_pinger(rec: Recording) -> None:
    """K=2, PINGREQ every 1.2 s for ~7 s: the textbook client. Expected: no finding."""
    with mosquitto_capture(rec) as broker:
        ping_session(rec, broker.host, broker.port, keep_alive=2, interval_s=1.2, pings=5, tail_s=1.0)


@scenario("busy-publisher")
def busy_publisher(rec: Recording) -> None:
    """K=2, PUBLISH QoS 0 every 0.5 s and never a PINGREQ: traffic is keep-alive enough."""
    with mosquitto_capture(rec) as broker:
        client = connected(rec, broker.host, broker.port, keep_alive=2)
        clock = Clock()
        for index in range(1, 15):
            clock.sleep_until(index * 0.5)
            client.publish(f"ka/{rec.name}", b"n=%02d" % index)
        client.disconnect()
        client.close()


@scenario("silent-client")
def silent_client(rec: Recording) -> None:
    """K=2, CONNECT and then silence until mosquitto drops it (its scan runs every ~5 s)."""
    with mosquitto_capture(rec) as broker:
        client = connected(rec, broker.host, broker.port, keep_alive=2)
        await_broker_close(rec, client, Clock(), timeout_s=13)


@scenario("receive-only-subscriber")
def receive_only_subscriber(rec: Recording) -> None:
    """A K=2 subscriber that only receives (a K=10 publisher feeds it) until mosquitto drops it."""
    with mosquitto_capture(rec) as broker:
        topic = f"ka/{rec.name}"
        subscriber = connected(rec, broker.host, broker.port, keep_alive=2)
        subscriber.subscribe(topic)
        clock = Clock()
        publisher = connected(rec, broker.host, broker.port, keep_alive=10, client_id=f"{rec.client_id}-pub")
        index = 0
        while subscriber.peer_closed_at is None and clock.now() < 13:
            index += 1
            clock.sleep_until(index * 0.4)
            publisher.publish(topic, b"n=%02d" % index)
        publisher.disconnect()
        publisher.close()
        rec.note(f"publisher sent {index} PUBLISH; subscriber received {subscriber.count(PUBLISH)}")
        await_broker_close(rec, subscriber, clock, timeout_s=1, since="SUBACK")


@scenario("server-keep-alive-ignored")
def server_keep_alive_ignored(rec: Recording) -> None:
    """MQTT 5, K=30; CONNACK says Server Keep Alive 10; the client pings every 12 s anyway.

    Not the 1-4 s of the other scenarios: mosquitto 2.0.11 refuses ``max_keepalive`` below 10
    ("Invalid max_keepalive value"). 12 s exceeds the server's 10 s yet stays under mosquitto's
    floor(1.5 x 10) = 15 s, so the broker keeps the client and the capture ends cleanly.
    """
    with mosquitto_capture(rec, max_keepalive=10) as broker:
        client = RawClient(broker.host, broker.port, level=5).open()
        connack = client.connect(rec.client_id, 30)
        if connack.server_keep_alive != 10:
            raise ScenarioError(f"expected Server Keep Alive 10, CONNACK was {connack.raw.hex()}")
        rec.note(f"CONNACK {connack.raw.hex()} (Server Keep Alive {connack.server_keep_alive})")
        clock = Clock()
        for index in (1, 2):
            clock.sleep_until(index * 12.0)
            client.pingreq()
        client.wait_for(PINGRESP, 2)
        clock.sleep_until(2 * 12.0 + 0.5)
        client.disconnect()
        client.close()


@scenario("late-pinger")
def late_pinger(rec: Recording) -> None:
    """K=2, PINGREQ every 2.6 s: late (> K) but under 1.5 x K, so mosquitto keeps it."""
    with mosquitto_capture(rec) as broker:
        ping_session(rec, broker.host, broker.port, keep_alive=2, interval_s=2.6, pings=4, tail_s=0.5)


@scenario("keep-alive-zero")
def keep_alive_zero(rec: Recording) -> None:
    """K=0 (mechanism off): two PUBLISH 3 s apart, DISCONNECT. Only the K=0 itself is news."""
    with mosquitto_capture(rec) as broker:
        client = connected(rec, broker.host, broker.port, keep_alive=0)
        clock = Clock()
        for index in (1, 2):
            clock.sleep_until(index * 3.0)
            client.publish(f"ka/{rec.name}", b"n=%02d" % index)
        clock.sleep_until(6.5)
        client.disconnect()
        client.close()


@scenario("mqtt31-paho")
def mqtt31_paho(rec: Recording) -> None:
    """paho-mqtt speaking MQTT 3.1 (MQIsdp), K=3, its own loop for 5 s: what a real library does."""
    import paho.mqtt.client as mqtt

    with mosquitto_capture(rec) as broker:
        log = run_paho_session(broker.host, broker.port, client_id=rec.client_id, keep_alive=3,
                               protocol=mqtt.MQTTv31, duration_s=5)
    rec.notes.extend("paho: " + line for line in log)


@scenario("mqtt5-paho")
def mqtt5_paho(rec: Recording) -> None:
    """paho-mqtt speaking MQTT 5, K=2, its own loop (and its own pings) for 6 s."""
    import paho.mqtt.client as mqtt

    with mosquitto_capture(rec) as broker:
        log = run_paho_session(broker.host, broker.port, client_id=rec.client_id, keep_alive=2,
                               protocol=mqtt.MQTTv5, duration_s=6)
    rec.notes.extend("paho: " + line for line in log)


@scenario("ipv6-pinger")
def ipv6_pinger(rec: Recording) -> None:
    """compliant-pinger over ::1: the decoder must handle IPv6 the same way."""
    with mosquitto_capture(rec, host="::1") as broker:
        ping_session(rec, broker.host, broker.port, keep_alive=2, interval_s=1.2, pings=5, tail_s=1.0)


@scenario("no-pingresp")
def no_pingresp(rec: Recording) -> None:
    """A broker that never answers PINGREQ; the K=2 client waits silently 5 s, then closes."""
    with scripted_capture(rec, answer_pings=False) as broker:
        client = connected(rec, broker.host, broker.port, keep_alive=2)
        clock = Clock()
        clock.sleep_until(1.2)
        client.pingreq()
        clock.sleep_until(1.2 + 5.0)
        if client.received[1:]:
            raise ScenarioError("the scripted broker answered")
        client.close()
        broker.wait_done(2)


@scenario("broker-closes-early")
def broker_closes_early(rec: Recording) -> None:
    """A broker that closes after 3 s of silence, although K=4 allows 6 s."""
    with scripted_capture(rec, close_after_idle_s=3.0) as broker:
        client = connected(rec, broker.host, broker.port, keep_alive=4)
        await_broker_close(rec, client, Clock(), timeout_s=8)
        broker.wait_done(2)


@scenario("malformed-ping")
def malformed_ping(rec: Recording) -> None:
    """K=2, then a PINGREQ with flags 0x1 (``C1 00``): what does mosquitto do with it?

    The DISCONNECT follows 0.8 s later at most, so every gap stays under K even for an analyzer
    that does not count the malformed packet: the only finding is the malformed ping itself.
    """
    with mosquitto_capture(rec) as broker:
        client = connected(rec, broker.host, broker.port, keep_alive=2)
        clock = Clock()
        clock.sleep_until(1.0)
        client.send(pingreq_packet(flags=0x1))
        closed = client.wait_closed(0.8)
        answers = [item.packet.hex() for item in client.received[1:]]
        if closed:
            assert client.peer_closed_at is not None
            after = client.peer_closed_at - clock.start - 1.0
            rec.note(f"mosquitto closed {after:.3f} s after C1 00; answers {answers}")
        else:
            rec.note(f"mosquitto kept the connection after C1 00; answers {answers}")
            client.disconnect()
        client.close()


@scenario("mid-stream")
def mid_stream(rec: Recording) -> None:
    """tcpdump starts after CONNECT/CONNACK and the first ping: the session start is unseen."""
    with MosquittoBroker(port=rec.broker_port) as broker:
        client = connected(rec, broker.host, broker.port, keep_alive=2)
        clock = Clock()
        clock.sleep_until(1.0)
        client.pingreq()
        with TcpdumpCapture(rec.path, [broker.port]):
            for index in range(2, 8):
                clock.sleep_until(float(index))
                client.pingreq()
            client.wait_for(PINGRESP, 7)
            clock.sleep_until(7.5)
            client.disconnect()
            client.close()
    note_broker_log(rec, broker.log_text())


@scenario("split-and-coalesced")
def split_and_coalesced(rec: Recording) -> None:
    """One PUBLISH in three segments 0.3 s apart, then PINGREQ+PUBLISH+PINGREQ in one segment."""
    with mosquitto_capture(rec) as broker:
        client = connected(rec, broker.host, broker.port, keep_alive=2)
        clock = Clock()
        big = publish_packet(f"ka/{rec.name}", bytes(range(256)) * 11 + bytes(184))  # ~3000 bytes
        thirds = [big[:1000], big[1000:2000], big[2000:]]
        for index, piece in enumerate(thirds):
            clock.sleep_until(0.5 + 0.3 * index)
            client.send(piece)
        clock.sleep_until(2.0)
        client.send(pingreq_packet() + publish_packet(f"ka/{rec.name}", b"small") + pingreq_packet())
        client.wait_for(PINGRESP, 2)
        clock.sleep_until(3.0)
        client.disconnect()
        client.close()
        rec.note(f"PUBLISH of {len(big)} bytes sent as {[len(p) for p in thirds]}")


@scenario("ws-late-pinger")
def ws_late_pinger(rec: Recording) -> None:
    """late-pinger over WebSocket (mosquitto's websockets listener, a raw WebSocket client): K=2,
    PINGREQ every 2.6 s, each in its own masked binary frame."""
    with mosquitto_ws_capture(rec) as (broker, ws_port):
        ping_session(rec, broker.host, ws_port, keep_alive=2, interval_s=2.6, pings=4, tail_s=0.5,
                     websocket=True)


@scenario("ws-compliant-with-ws-pings")
def ws_compliant_with_ws_pings(rec: Recording) -> None:
    """K=2 over WebSocket; a WebSocket ping every 1 s (each answered by a pong) but no MQTT packet
    for 5 s: the WebSocket is alive, the MQTT keep-alive is not."""
    with mosquitto_ws_capture(rec) as (broker, ws_port):
        client = connected(rec, broker.host, ws_port, keep_alive=2, websocket=True)
        assert isinstance(client, RawWSClient)
        clock = Clock()
        for index in range(1, 6):
            clock.sleep_until(float(index))
            if client.peer_closed_at is not None:
                break
            client.ws_ping(b"p%d" % index)
        closed = client.wait_closed(0.3)
        rec.note(f"{len(client.pongs)} WebSocket pongs; broker "
                 + (f"closed {client.peer_closed_at - clock.start:.2f} s after CONNACK"
                    if closed and client.peer_closed_at is not None else "kept the client"))
        if not closed:
            client.disconnect()
            clock.sleep_until(5.5)
            client.ws_close()
        client.close()


@scenario("ws-paho")
def ws_paho(rec: Recording) -> None:
    """paho-mqtt 2.2 with ``transport="websockets"``, MQTT 3.1.1, K=2, its own loop for 5 s."""
    with mosquitto_ws_capture(rec) as (broker, ws_port):
        log = run_paho_ws_session(broker.host, ws_port, client_id=rec.client_id, keep_alive=2,
                                  duration_s=5)
    rec.notes.extend("paho: " + line for line in log)


@scenario("tls-late-pinger")
def tls_late_pinger(rec: Recording) -> None:
    """late-pinger over TLS 1.3 (mosquitto's TLS listener on 8883): K=2, PINGREQ every 2.6 s, each
    in its own TLS record."""
    with mosquitto_tls_capture(rec) as (broker, port, files):
        ping_session(rec, broker.host, port, keep_alive=2, interval_s=2.6, pings=4, tail_s=0.5,
                     context=rec.tls_context(files, "1.3"))


@scenario("tls12-late-pinger")
def tls12_late_pinger(rec: Recording) -> None:
    """late-pinger over TLS 1.2 (ECDHE-RSA-AES128-GCM-SHA256): the key log's CLIENT_RANDOM line,
    not the TLS 1.3 traffic secrets, decrypts it."""
    with mosquitto_tls_capture(rec) as (broker, port, files):
        ping_session(rec, broker.host, port, keep_alive=2, interval_s=2.6, pings=4, tail_s=0.5,
                     context=rec.tls_context(files, "1.2"))


@scenario("tls-compliant-pinger")
def tls_compliant_pinger(rec: Recording) -> None:
    """compliant-pinger over TLS 1.3: K=2, PINGREQ every 1.2 s. Expected: no finding."""
    with mosquitto_tls_capture(rec) as (broker, port, files):
        ping_session(rec, broker.host, port, keep_alive=2, interval_s=1.2, pings=5, tail_s=1.0,
                     context=rec.tls_context(files, "1.3"))


@scenario("tls-split-and-coalesced")
def tls_split_and_coalesced(rec: Recording) -> None:
    """split-and-coalesced over TLS 1.3: one PUBLISH in one TLS record cut over three segments
    0.3 s apart; then one segment of two TLS records, PINGREQ+PUBLISH in the first, PINGREQ in the
    second."""
    with mosquitto_tls_capture(rec) as (broker, port, files):
        client = connected(rec, broker.host, port, keep_alive=2, context=rec.tls_context(files, "1.3"))
        assert isinstance(client, TLSRawClient)
        clock = Clock()
        big = publish_packet(f"ka/{rec.name}", bytes(range(256)) * 11 + bytes(184))  # ~3000 bytes
        record = client.tls.seal(big)
        pieces = [record[:1000], record[1000:2000], record[2000:]]
        for index, piece in enumerate(pieces):
            clock.sleep_until(0.5 + 0.3 * index)
            client.tls.send_raw(piece)
        clock.sleep_until(2.0)
        client.send_records([pingreq_packet() + publish_packet(f"ka/{rec.name}", b"small"),
                             pingreq_packet()])
        client.wait_for(PINGRESP, 2)
        clock.sleep_until(3.0)
        client.disconnect()
        client.close()
        rec.note(f"PUBLISH of {len(big)} bytes in a TLS record of {len(record)} bytes sent as "
                 f"{[len(p) for p in pieces]}")


@scenario("wss-late-pinger")
def wss_late_pinger(rec: Recording) -> None:
    """late-pinger over WebSocket over TLS 1.3 (mosquitto's websockets listener with a
    certificate, port 8081): the Upgrade and every WebSocket frame in its own TLS record."""
    with mosquitto_tls_capture(rec, websockets=True) as (broker, port, files):
        ping_session(rec, broker.host, port, keep_alive=2, interval_s=2.6, pings=4, tail_s=0.5,
                     websocket=True, context=rec.tls_context(files, "1.3"))


# --- command line ----------------------------------------------------------------------------


def record(name: str, out: Path, port: int) -> Recording:
    """Run one scenario into ``out/<name>.pcap`` and hand the file to the invoking user.

    The capture is written beside the target and moved into place only if the scenario succeeded,
    so a failed re-recording never replaces a good shipped capture with a broken one.
    """
    final = out / f"{name}.pcap"
    rec = Recording(name, out / f".{name}.pcap.partial", port)
    try:
        SCENARIOS[name](rec)
    except BaseException:
        rec.path.unlink(missing_ok=True)
        if rec.keylog is not None:
            rec.keylog.unlink(missing_ok=True)
        raise
    # tcpdump drops privileges and leaves the file to its own user; under sudo give it back.
    uid = int(os.environ.get("SUDO_UID", os.getuid()))
    gid = int(os.environ.get("SUDO_GID", os.getgid()))
    if rec.keylog is not None:  # the key log first: a capture never lies beside a stale one
        os.chown(rec.keylog, uid, gid)
        os.replace(rec.keylog, out / f"{name}.keys")
        rec.keylog = out / f"{name}.keys"
    os.chown(rec.path, uid, gid)
    os.replace(rec.path, final)
    rec.path = final
    return rec


def summary(rec: Recording) -> str:
    """Size, sha256 and notes of one recording, for the console and the README."""
    data = rec.path.read_bytes()
    lines = [f"{rec.name}: {rec.path} {len(data)} bytes sha256 {hashlib.sha256(data).hexdigest()}"]
    if rec.keylog is not None:
        keys = rec.keylog.read_bytes()
        lines.append(f"    key log {rec.keylog} {len(keys)} bytes sha256 {hashlib.sha256(keys).hexdigest()}")
    lines += [f"    {note}" for note in rec.notes]
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent,
                        help="directory for the .pcap files (default: captures/)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT,
                        help="broker port (default 1883; 0 = a free port)")
    parser.add_argument("scenarios", nargs="*", metavar="scenario",
                        help=f"scenarios to record (default: all): {', '.join(SCENARIOS)}")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    unknown = [name for name in args.scenarios if name not in SCENARIOS]
    if unknown:
        print(f"unknown scenario(s): {', '.join(unknown)}; known: {', '.join(SCENARIOS)}", file=sys.stderr)
        return 2
    if os.geteuid() != 0 or shutil.which("tcpdump") is None:
        print("tcpdump on lo needs root: sudo python captures/record.py", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    failed = []
    for name in args.scenarios or list(SCENARIOS):
        try:
            print(summary(record(name, args.out, args.port)), flush=True)
        except Exception as exc:  # one broken scenario must not stop the others
            print(f"{name}: FAILED: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
            failed.append(name)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

"""MQTT over TLS on loopback: a throw-away CA and server certificate, mosquitto TLS listeners and
TLS clients that write their session keys to a key log (SSLKEYLOGFILE format).

A TLS capture is only evidence for the analyzer together with the keys that decrypt it, so every
client here writes ``keylog_filename`` from its ``ssl.SSLContext``: CLIENT_RANDOM lines for TLS 1.2
and the five traffic secrets for TLS 1.3, exactly what Wireshark and tshark read.

:class:`TLSSocket` runs TLS over ``ssl.MemoryBIO`` on a plain socket instead of wrapping it in an
``ssl.SSLSocket``, for two reasons:

* the scenario must control the records on the wire as :class:`~tests.support.clients.RawClient`
  controls segments: one ``sendall`` is one TLS record in one segment, :meth:`TLSSocket.send_records`
  puts several records in one segment, :meth:`TLSSocket.seal` returns a record's bytes so a
  scenario can cut it over several segments. An ``SSLSocket`` hides all of that;
* the raw clients read in one thread and write in another; an ``SSLSocket`` shares one OpenSSL
  object between the two without a lock, here every TLS call holds one.

It offers the socket methods the raw clients use, so :class:`TLSRawClient` and
:class:`TLSRawWSClient` are the raw TCP and WebSocket clients with their ``sock`` swapped.
Only loopback is ever a target.
"""

from __future__ import annotations

import os
import pwd
import select
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.support.broker import require_loopback, service_user
from tests.support.clients import RawClient
from tests.support.ws_client import RawWSClient

OPENSSL = "openssl"
TLS12_CIPHER = "ECDHE-RSA-AES128-GCM-SHA256"
"""The TLS 1.2 suite of the ``tls12`` scenarios: AES-GCM (an AEAD, as every modern deployment
uses), with ECDHE so the key log's CLIENT_RANDOM line is the only way in."""


# --- certificates ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CertificateFiles:
    """A throw-away CA and a server certificate for 127.0.0.1, ::1 and localhost (PEM files)."""

    ca: Path
    cert: Path
    key: Path


def _openssl(*args: str, cwd: Path) -> None:
    result = subprocess.run([OPENSSL, *args], cwd=cwd, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(args)} failed: {result.stderr.strip()}")


def make_certificates(directory: Path) -> CertificateFiles:
    """A self-signed CA and a server certificate it signs, made with the ``openssl`` command.

    The server certificate names the loopback addresses as IP SANs, so clients verify it with
    hostname checking on (as real deployments must) while connecting to 127.0.0.1. RSA 2048 keys:
    the TLS 1.2 scenarios use an ECDHE-RSA suite. The files are handed to mosquitto's service
    user, which reads them after dropping root; `directory`'s parents must let it through (a
    `tempfile.mkdtemp` directory does, pytest's `tmp_path`, under a 0700 parent, does not).
    """
    directory.mkdir(parents=True, exist_ok=True)
    ext = directory / "server.ext"
    ext.write_text("subjectAltName = IP:127.0.0.1, IP:::1, DNS:localhost\n"
                   "extendedKeyUsage = serverAuth\nbasicConstraints = CA:FALSE\n")
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj",
             "/CN=mqtt-keepalive test CA", "-keyout", "ca.key", "-out", "ca.crt", cwd=directory)
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost",
             "-keyout", "server.key", "-out", "server.csr", cwd=directory)
    _openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
             "-CAcreateserial", "-days", "2", "-extfile", "server.ext", "-out", "server.crt",
             cwd=directory)
    files = CertificateFiles(directory / "ca.crt", directory / "server.crt", directory / "server.key")
    _hand_to_broker(directory, files)
    return files


def _hand_to_broker(directory: Path, files: CertificateFiles) -> None:
    """Let mosquitto's service user (it drops root before it loads certificates) read the files."""
    user = service_user()
    if user is None:
        return
    entry = pwd.getpwnam(user)
    for path in (directory, files.ca, files.cert, files.key):
        os.chown(path, entry.pw_uid, entry.pw_gid)


def tls_listener_lines(files: CertificateFiles, port: int, host: str = "127.0.0.1", *,
                       websockets: bool = False) -> list[str]:
    """mosquitto.conf lines for one more TLS listener (MQTT, or MQTT over WebSocket over TLS).

    In mosquitto.conf, ``certfile``/``keyfile`` belong to the listener defined last.
    """
    lines = [f"listener {port} {require_loopback(host)}"]
    if websockets:
        lines.append("protocol websockets")
    return lines + tls_lines(files)


def tls_lines(files: CertificateFiles) -> list[str]:
    """The lines that make the listener defined last a TLS listener (no client certificates)."""
    return [f"cafile {files.ca}", f"certfile {files.cert}", f"keyfile {files.key}"]


# --- client contexts -------------------------------------------------------------------------


def client_context(files: CertificateFiles, keylog: Path | str, *, version: str = "1.3") -> ssl.SSLContext:
    """A verifying client context pinned to one TLS version that logs its secrets to ``keylog``.

    ``version`` ``"1.3"`` (the default suites) or ``"1.2"`` (``TLS12_CIPHER`` only): a capture is
    decrypted only if it is known which of the two it is, so a scenario never leaves it to
    negotiation.
    """
    context = ssl.create_default_context(cafile=str(files.ca))
    if version == "1.3":
        context.minimum_version = context.maximum_version = ssl.TLSVersion.TLSv1_3
    elif version == "1.2":
        context.minimum_version = context.maximum_version = ssl.TLSVersion.TLSv1_2
        context.set_ciphers(TLS12_CIPHER)
    else:
        raise ValueError(f"unknown TLS version {version!r} (1.2 or 1.3)")
    context.keylog_filename = str(keylog)
    return context


# --- a TLS socket under the scenario's control ------------------------------------------------


class TLSSocket:
    """A client TLS connection over a plain TCP socket, with the records under the caller's control.

    Offers what the raw clients call on a socket (``connect``, ``sendall``, ``recv``, ``fileno``,
    ``setsockopt``, ``settimeout``, ``shutdown``, ``close``). ``recv`` returns decrypted bytes and
    ``b""`` once the peer closed (close_notify or FIN).
    """

    def __init__(self, sock: socket.socket, context: ssl.SSLContext, server_hostname: str) -> None:
        self.raw = sock
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self._tls = context.wrap_bio(self._incoming, self._outgoing, server_hostname=server_hostname)
        self._lock = threading.Lock()
        self._plain = bytearray()
        self._eof = False

    # socket methods the raw clients use

    def fileno(self) -> int:
        return self.raw.fileno()

    def setsockopt(self, *args: Any) -> None:
        self.raw.setsockopt(*args)

    def settimeout(self, value: float | None) -> None:
        self.raw.settimeout(value)

    def connect(self, address: tuple[str, int]) -> None:
        """TCP connect, then the whole TLS handshake."""
        require_loopback(address[0])
        self.raw.connect(address)
        while True:
            try:
                with self._lock:
                    self._tls.do_handshake()
                self._flush()
                return
            except ssl.SSLWantReadError:
                self._flush()
                data = self.raw.recv(65536)
                if not data:
                    raise ConnectionError("the broker closed during the TLS handshake") from None
                self._incoming.write(data)

    @property
    def version(self) -> str | None:
        """The negotiated protocol (``TLSv1.3``, ``TLSv1.2``)."""
        return self._tls.version()

    def sendall(self, data: bytes) -> None:
        """``data`` as one TLS record (up to 16 KiB) in one ``sendall`` on the TCP socket."""
        self.raw.sendall(self.seal(data))

    def send_records(self, pieces: Sequence[bytes]) -> None:
        """Each piece its own TLS record, all of them in one ``sendall`` (one segment)."""
        self.raw.sendall(b"".join(self.seal(piece) for piece in pieces))

    def seal(self, data: bytes) -> bytes:
        """The TLS record(s) carrying ``data``, not sent: the caller chooses the segments."""
        with self._lock:
            self._tls.write(data)
            return self._outgoing.read()

    def send_raw(self, wire: bytes) -> None:
        """Bytes from :meth:`seal` (or part of them) on the TCP socket as they are."""
        self.raw.sendall(wire)

    def recv(self, size: int) -> bytes:
        """Decrypted bytes (blocking until there are some), ``b""`` once the peer has closed.

        Handshake messages after the handshake (TLS 1.3 session tickets) are consumed on the way.
        """
        while True:
            plain = self._read_plain(size)
            if plain or self._eof:
                return plain
            data = self.raw.recv(65536)
            if not data:
                self._eof = True
                return b""
            self._incoming.write(data)

    def _read_plain(self, size: int) -> bytes:
        with self._lock:
            try:
                while len(self._plain) < size:
                    chunk = self._tls.read(size - len(self._plain))
                    if not chunk:  # the peer's close_notify: read() returns b"", it does not raise
                        self._eof = True
                        break
                    self._plain += chunk
            except ssl.SSLWantReadError:
                pass
            except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
                self._eof = True
            taken = bytes(self._plain[:size])
            del self._plain[:size]
            return taken

    def pending(self) -> bool:
        """True when decrypted bytes wait, which ``select`` on the socket cannot see."""
        return bool(self._plain) or self._tls.pending() > 0

    def close_notify(self) -> None:
        """Send the TLS close_notify alert (without waiting for the peer's)."""
        with self._lock:
            try:
                self._tls.unwrap()
            except (ssl.SSLWantReadError, ssl.SSLError):
                pass  # the peer's close_notify is not awaited
            alert = self._outgoing.read()
        if alert:
            self.raw.sendall(alert)

    def shutdown(self, how: int) -> None:
        """The TCP shutdown alone, as paho and most device stacks close (no close_notify): after
        a DISCONNECT mosquitto has usually closed already, and an alert sent then only draws an
        RST. :meth:`close_notify` sends the alert when a scenario wants it."""
        self.raw.shutdown(how)

    def close(self) -> None:
        self.raw.close()

    def _flush(self) -> None:
        with self._lock:
            wire = self._outgoing.read()
        if wire:
            self.raw.sendall(wire)


def _ready(sock: TLSSocket, timeout_s: float) -> bool:
    """Readable: decrypted bytes wait, or the socket has bytes."""
    if sock.pending():
        return True
    readable, _, _ = select.select([sock.raw], [], [], timeout_s)
    return bool(readable)


class _ReadsTLS:
    """How the TLS clients read: readiness that also sees bytes already decrypted, which a
    `select` on the socket misses."""

    tls: TLSSocket

    def _readable(self, timeout_s: float) -> bool:
        return _ready(self.tls, timeout_s)

    def _recv(self) -> bytes:
        return self.tls.recv(65536)


class TLSRawClient(_ReadsTLS, RawClient):
    """:class:`RawClient` over TLS: each ``send`` is one TLS record in one TCP segment.

    ``send_records`` writes several records in one segment, ``send_split`` one record over several
    segments (``tls`` is the :class:`TLSSocket`).
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 8883, *, context: ssl.SSLContext,
                 **kwargs: Any) -> None:
        super().__init__(host, port, **kwargs)
        self.tls = TLSSocket(self.sock, context, server_hostname=self.host)
        self.sock = self.tls  # type: ignore[assignment] - offers the socket methods used

    def send_records(self, pieces: Sequence[bytes]) -> float:
        """Several TLS records (one per piece) in one TCP segment."""
        self.tls.send_records(pieces)
        return time.monotonic()

    def send_split(self, data: bytes, cuts: Iterable[int], pause_s: float = 0.0) -> float:
        """``data`` in one TLS record, cut into TCP segments at the record offsets ``cuts``."""
        wire = self.tls.seal(data)
        bounds = [0, *cuts, len(wire)]
        for index, (start, end) in enumerate(zip(bounds, bounds[1:])):
            if index and pause_s:
                time.sleep(pause_s)
            self.tls.send_raw(wire[start:end])
        return time.monotonic()


class TLSRawWSClient(_ReadsTLS, RawWSClient):
    """:class:`~tests.support.ws_client.RawWSClient` over TLS (``wss://``): the HTTP Upgrade and
    every WebSocket frame travel in TLS records, one record per frame."""

    def __init__(self, host: str = "127.0.0.1", port: int = 8081, *, context: ssl.SSLContext,
                 **kwargs: Any) -> None:
        super().__init__(host, port, **kwargs)
        self.tls = TLSSocket(self.sock, context, server_hostname=self.host)
        self.sock = self.tls  # type: ignore[assignment]


# --- paho-mqtt ----------------------------------------------------------------------------------


def run_paho_tls_session(host: str, port: int, *, context: ssl.SSLContext, client_id: str,
                         keep_alive: int, protocol: int, duration_s: float,
                         ws_path: str | None = None) -> list[str]:
    """paho-mqtt over TLS (``tls_set_context``), its own loop for ``duration_s``; its log lines."""
    from tests.support.clients import run_paho_session

    return run_paho_session(host, port, client_id=client_id, keep_alive=keep_alive,
                            protocol=protocol, duration_s=duration_s, ws_path=ws_path,
                            tls_context=context)

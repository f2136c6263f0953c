"""A throw-away mosquitto broker on a loopback port.

Recordings and live tests need a real broker whose configuration is known exactly (no system
config, no persistence, no retained state from an earlier run), that listens only on loopback and
that is gone when the test is. Each :class:`MosquittoBroker` gets its own temp directory with its
config and its log.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType

MOSQUITTO = "/usr/sbin/mosquitto"

# Only loopback may ever be a target: a typo must not open a listener on a real interface.
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "::1"})


def require_loopback(host: str) -> str:
    """Return ``host`` if it is a loopback address; refuse anything else."""
    if host not in LOOPBACK_HOSTS:
        raise ValueError(f"only loopback hosts are allowed, not {host!r}")
    return host


def address_family(host: str) -> socket.AddressFamily:
    """The socket family for a literal loopback address."""
    return socket.AF_INET6 if ":" in require_loopback(host) else socket.AF_INET


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on ``host`` right now.

    The kernel picks it (bind to port 0), so parallel runs do not collide on a fixed number. There
    is a small window before the caller binds it; that is acceptable for tests on loopback.
    """
    with socket.socket(address_family(host), socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_accepts(host: str, port: int, timeout_s: float = 0.2) -> bool:
    """True when a TCP connect to ``host:port`` succeeds."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def render_config(
    host: str,
    port: int,
    *,
    max_keepalive: int | None = None,
    extra_lines: Iterable[str] = (),
) -> str:
    """The mosquitto.conf text for one loopback listener.

    ``log_dest stdout`` (redirected to a file by :class:`MosquittoBroker`) rather than
    ``log_dest file``: started as root, mosquitto drops privileges to the ``mosquitto`` user and
    could no longer open a log file inside our root-owned temp directory.
    """
    lines = [
        f"listener {port} {host}",
        "allow_anonymous true",
        "persistence false",
        "log_dest stdout",
        "log_type all",
        "connection_messages true",
    ]
    if max_keepalive is not None:
        lines.append(f"max_keepalive {max_keepalive}")
    lines.extend(extra_lines)
    return "\n".join(lines) + "\n"


class MosquittoBroker:
    """Run ``/usr/sbin/mosquitto`` with a generated config for the duration of a ``with`` block.

    Entering writes the config, starts the broker and returns only once the port accepts TCP
    connections, so a capture started afterwards never misses the client's SYN. Leaving stops the
    broker and removes the temp directory (call :meth:`log_text` inside the block if you need it).
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int | None = None,
        max_keepalive: int | None = None,
        extra_lines: Iterable[str] = (),
        binary: str = MOSQUITTO,
        start_timeout_s: float = 5.0,
    ) -> None:
        self.host = require_loopback(host)
        self.port = port if port is not None else free_port(host)
        self.config_text = render_config(
            self.host, self.port, max_keepalive=max_keepalive, extra_lines=extra_lines
        )
        self._binary = binary
        self._start_timeout_s = start_timeout_s
        self._dir: Path | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._final_log = ""

    @property
    def log_path(self) -> Path:
        """Where the broker's log goes (inside the temp directory)."""
        if self._dir is None:
            raise RuntimeError("the broker is not running")
        return self._dir / "mosquitto.log"

    def log_text(self) -> str:
        """Everything mosquitto has logged (connections, timeouts, protocol errors).

        Still available after the block: the log is kept in memory when the temp dir goes, because
        what the broker said about a scenario is often only interesting once it has ended.
        """
        if self._dir is None:
            return self._final_log
        return self.log_path.read_text(errors="replace")

    def __enter__(self) -> MosquittoBroker:
        self._dir = Path(tempfile.mkdtemp(prefix="ka-mosquitto-"))
        config = self._dir / "mosquitto.conf"
        config.write_text(self.config_text)
        with self.log_path.open("wb") as log:
            self._process = subprocess.Popen(
                [self._binary, "-c", str(config)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        try:
            self._wait_until_ready()
        except BaseException:
            self._stop()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop()

    def _wait_until_ready(self) -> None:
        """Block until the listener accepts; fail early with the log if mosquitto exited."""
        assert self._process is not None
        deadline = time.monotonic() + self._start_timeout_s
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"mosquitto exited at start:\n{self.log_text()}")
            if port_accepts(self.host, self.port):
                return
            time.sleep(0.05)
        raise TimeoutError(f"mosquitto did not listen on {self.host}:{self.port}:\n{self.log_text()}")

    def _stop(self) -> None:
        """Terminate the broker (SIGTERM is its normal shutdown) and clean up."""
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._process = None
        if self._dir is not None:
            self._final_log = self.log_text()
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

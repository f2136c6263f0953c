"""A throw-away mosquitto broker on a loopback port.

Recordings and live tests need a real broker whose configuration is known exactly (no system
config, no persistence, no retained state from an earlier run), that listens only on loopback and
that is gone when the test is. Each :class:`MosquittoBroker` gets its own temp directory with its
config and its log.
"""

from __future__ import annotations

import os
import pwd
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


def service_user() -> str | None:
    """The user mosquitto runs as once started by root: ``mosquitto``, else ``nobody``.

    mosquitto drops root privileges by itself; naming the user in the config makes that explicit,
    and lets us hand it the temp directory so it can write its log there.
    """
    if os.geteuid() != 0:
        return None
    for name in ("mosquitto", "nobody"):
        try:
            pwd.getpwnam(name)
        except KeyError:
            continue
        return name
    return None


def render_config(
    host: str,
    port: int,
    log_path: Path,
    *,
    user: str | None = None,
    max_keepalive: int | None = None,
    extra_lines: Iterable[str] = (),
) -> str:
    """The mosquitto.conf text for one loopback listener, logging everything to ``log_path``.

    A log file rather than stdout: mosquitto flushes its log file per line but leaves stdout
    block-buffered when it is not a terminal, so a redirected stdout is empty while it runs.
    """
    lines = [
        f"listener {port} {host}",
        "allow_anonymous true",
        "persistence false",
        f"log_dest file {log_path}",
        "log_type all",
        "connection_messages true",
    ]
    if user is not None:
        lines.append(f"user {user}")
    if max_keepalive is not None:
        lines.append(f"max_keepalive {max_keepalive}")
    lines.extend(extra_lines)
    return "\n".join(lines) + "\n"


class MosquittoBroker:
    """Run ``/usr/sbin/mosquitto`` with a generated config for the duration of a ``with`` block.

    Entering writes the config, starts the broker and returns only once the port accepts TCP
    connections, so a capture started afterwards never misses the client's SYN. Leaving stops the
    broker and removes the temp directory; :meth:`log_text` still works afterwards.
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
        self.max_keepalive = max_keepalive
        self.extra_lines = tuple(extra_lines)
        self.config_text = ""
        self._binary = binary
        self._start_timeout_s = start_timeout_s
        self._dir: Path | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._final_log = ""

    def log_text(self) -> str:
        """Everything mosquitto has said: start-up errors (stderr), then its log file.

        Still available after the block: the text is kept in memory when the temp dir goes,
        because what the broker said about a scenario is often only interesting once it ended.
        """
        if self._dir is None:
            return self._final_log
        parts = [self._dir / "stderr.txt", self._dir / "mosquitto.log"]
        return "".join(path.read_text(errors="replace") for path in parts if path.exists())

    def _write_config(self, directory: Path) -> Path:
        """Write mosquitto.conf into ``directory`` and make the directory the broker's."""
        user = service_user()
        if user is not None:
            entry = pwd.getpwnam(user)
            os.chown(directory, entry.pw_uid, entry.pw_gid)
        self.config_text = render_config(
            self.host,
            self.port,
            directory / "mosquitto.log",
            user=user,
            max_keepalive=self.max_keepalive,
            extra_lines=self.extra_lines,
        )
        config = directory / "mosquitto.conf"
        config.write_text(self.config_text)
        return config

    def __enter__(self) -> MosquittoBroker:
        self._dir = Path(tempfile.mkdtemp(prefix="ka-mosquitto-"))
        config = self._write_config(self._dir)
        with (self._dir / "stderr.txt").open("wb") as stderr:
            self._process = subprocess.Popen(
                [self._binary, "-c", str(config)],
                stdin=subprocess.DEVNULL,
                stdout=stderr,
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

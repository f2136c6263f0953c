"""Capture loopback traffic with tcpdump, and read captures back with tshark.

A keep-alive capture is only evidence if it holds the whole session: the SYN and CONNECT at the
start (or the analyzer cannot know Keep Alive) and the last FIN or DISCONNECT at the end (or it
cannot judge who closed). :class:`TcpdumpCapture` therefore does not return before tcpdump says it
is capturing, and does not stop it before the last packets have had time to arrive.
"""

from __future__ import annotations

import signal
import subprocess
import threading
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from types import TracebackType

TCPDUMP = "tcpdump"
TSHARK = "tshark"


def port_filter(ports: Iterable[int]) -> str:
    """The BPF filter ``tcp port A or tcp port B ...`` for the given ports."""
    clauses = [f"tcp port {int(port)}" for port in ports]
    if not clauses:
        raise ValueError("at least one port is needed: an unfiltered lo capture catches strangers")
    return " or ".join(clauses)


def tcpdump_command(path: Path, ports: Iterable[int], interface: str = "lo") -> list[str]:
    """The tcpdump command line: whole packets, nanosecond stamps, written packet by packet.

    ``--immediate-mode`` hands each packet to tcpdump at once: otherwise libpcap's TPACKET_V3
    ring holds packets for up to its 1 s block timeout, and SIGINT loses the last second (the
    DISCONNECT and the FINs, exactly what a keep-alive capture needs). ``-U`` then writes each
    packet to the file as it comes, so what is on disk when we stop is what was captured;
    ``--time-stamp-precision=nano`` keeps the kernel's resolution, which sub-second gap rules need;
    ``-s 0`` keeps full segments, so a PUBLISH that spans segments is still reassemblable.
    """
    return [
        TCPDUMP,
        "-i",
        interface,
        "--immediate-mode",
        "-U",
        "-s",
        "0",
        "--time-stamp-precision=nano",
        "-w",
        str(path),
        port_filter(ports),
    ]


class TcpdumpCapture:
    """Run tcpdump on ``lo`` for the ports of one scenario for the duration of a ``with`` block.

    Needs root (or CAP_NET_RAW). The file is classic pcap with nanosecond timestamps (tcpdump does
    not write pcapng). ``stderr_text`` keeps tcpdump's messages, including its packet counts.
    """

    def __init__(
        self,
        path: Path | str,
        ports: Iterable[int],
        *,
        interface: str = "lo",
        start_timeout_s: float = 5.0,
        settle_s: float = 0.3,
    ) -> None:
        self.path = Path(path)
        self.command = tcpdump_command(self.path, list(ports), interface)
        self._start_timeout_s = start_timeout_s
        self._settle_s = settle_s
        self._process: subprocess.Popen[str] | None = None
        self._stderr_lines: list[str] = []
        self._listening = threading.Event()
        self._reader: threading.Thread | None = None

    @property
    def stderr_text(self) -> str:
        """What tcpdump wrote to stderr so far."""
        return "".join(self._stderr_lines)

    def __enter__(self) -> TcpdumpCapture:
        self._process = subprocess.Popen(
            self.command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self._reader = threading.Thread(target=self._drain_stderr, daemon=True)
        self._reader.start()
        try:
            self._wait_until_listening()
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
        # Loopback is fast, but the last FIN/ACK may still be in flight when the scenario returns.
        time.sleep(self._settle_s)
        self._stop()

    def _drain_stderr(self) -> None:
        """Collect stderr lines; tcpdump prints "listening on" once the filter is installed."""
        assert self._process is not None and self._process.stderr is not None
        for line in self._process.stderr:
            self._stderr_lines.append(line)
            if "listening on" in line:
                self._listening.set()

    def _wait_until_listening(self) -> None:
        """Block until tcpdump captures; fail with its messages if it exits or stays silent."""
        assert self._process is not None
        deadline = time.monotonic() + self._start_timeout_s
        while not self._listening.wait(0.05):
            if self._process.poll() is not None:
                raise RuntimeError(f"tcpdump exited at start: {self.stderr_text.strip()}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"tcpdump did not start listening: {self.stderr_text.strip()}")

    def _stop(self) -> None:
        """SIGINT (tcpdump's clean stop: it flushes and prints its counts), then wait."""
        if self._process is None:
            return
        if self._process.poll() is None:
            self._process.send_signal(signal.SIGINT)
            try:
                self._process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        if self._reader is not None:
            self._reader.join(timeout=2)
        self._process = None


def tshark_fields(
    path: Path | str,
    fields: Sequence[str],
    *,
    display_filter: str = "",
    mqtt_ports: Iterable[int] = (),
) -> list[list[str]]:
    """Rows of tshark ``-T fields`` output, one list of field values per matching frame.

    Wireshark dissects MQTT only on 1883 (and 8883) by default: ``mqtt_ports`` adds "decode as"
    entries for captures made on other ports. Several MQTT packets in one frame yield
    comma-separated values in one field, as tshark prints them.
    """
    command = [TSHARK, "-n", "-r", str(path), "-T", "fields", "-E", "separator=\t"]
    for port in mqtt_ports:
        command += ["-d", f"tcp.port=={int(port)},mqtt"]
    if display_filter:
        command += ["-Y", display_filter]
    for field in fields:
        command += ["-e", field]
    result = subprocess.run(command, capture_output=True, text=True, check=True)
    return [line.split("\t") for line in result.stdout.splitlines()]

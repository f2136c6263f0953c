"""Smoke test of the recording machinery: record ``compliant-pinger`` afresh and look at it.

The shipped captures are only as good as the recorder, and the recorder depends on this machine's
tcpdump, mosquitto and kernel. This test runs ``captures/record.py`` exactly as a maintainer would
(as a subprocess, on a free port so it cannot collide with a broker on 1883) and checks with
tshark, an independent dissector, that the session is complete: CONNECT, the PINGREQ/PINGRESP
exchanges and the DISCONNECT.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
RECORDER = REPO / "captures" / "record.py"
MOSQUITTO = Path("/usr/sbin/mosquitto")

CONNECT, CONNACK, PINGREQ, PINGRESP, DISCONNECT = 1, 2, 12, 13, 14


def recording_possible() -> bool:
    """tcpdump on lo needs root; the scenario needs mosquitto; the checks need tshark."""
    tools = shutil.which("tcpdump") and shutil.which("tshark") and MOSQUITTO.exists()
    return bool(tools) and os.geteuid() == 0


pytestmark = [
    pytest.mark.recording,
    pytest.mark.skipif(not recording_possible(), reason="needs root, tcpdump, tshark and mosquitto"),
]


def tshark(pcap: Path, *args: str) -> list[list[str]]:
    """tshark ``-T fields`` rows for ``pcap``."""
    command = ["tshark", "-n", "-r", str(pcap), "-T", "fields", "-E", "separator=\t", *args]
    result = subprocess.run(command, capture_output=True, text=True, check=True)
    return [line.split("\t") for line in result.stdout.splitlines()]


def broker_port(pcap: Path) -> int:
    """The port the client's SYN went to: the broker's (a free port, so not dissected as MQTT)."""
    rows = tshark(pcap, "-Y", "tcp.flags.syn == 1 && tcp.flags.ack == 0", "-e", "tcp.dstport")
    assert rows, "no SYN: the capture started after the connection"
    return int(rows[0][0])


def mqtt_packets(pcap: Path, port: int) -> list[tuple[str, int, int | None]]:
    """``(side, type, keep_alive)`` per MQTT packet, side ``client`` or ``broker``."""
    rows = tshark(pcap, "-d", f"tcp.port=={port},mqtt", "-Y", "mqtt",
                  "-e", "tcp.srcport", "-e", "mqtt.msgtype", "-e", "mqtt.kalive")
    packets = []
    for srcport, types, keep_alive in rows:
        side = "broker" if int(srcport) == port else "client"
        for packet_type in types.split(","):  # several MQTT packets in one segment
            packets.append((side, int(packet_type), int(keep_alive) if keep_alive else None))
    return packets


@pytest.fixture(scope="module")
def compliant_pinger(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh ``compliant-pinger.pcap`` (one recording, ~8 s, shared by the module's tests)."""
    out = tmp_path_factory.mktemp("recording")
    result = subprocess.run(
        [sys.executable, str(RECORDER), "--out", str(out), "--port", "0", "compliant-pinger"],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return out / "compliant-pinger.pcap"


def test_recording_holds_the_whole_session(compliant_pinger: Path) -> None:
    packets = mqtt_packets(compliant_pinger, broker_port(compliant_pinger))
    client = [packet_type for side, packet_type, _ in packets if side == "client"]
    broker = [packet_type for side, packet_type, _ in packets if side == "broker"]
    assert client == [CONNECT, *[PINGREQ] * 5, DISCONNECT]
    assert broker == [CONNACK, *[PINGRESP] * 5]
    assert packets[0] == ("client", CONNECT, 2)


def test_recording_ends_with_both_fins(compliant_pinger: Path) -> None:
    fins = tshark(compliant_pinger, "-Y", "tcp.flags.fin == 1", "-e", "tcp.srcport")
    assert len(fins) == 2, "the capture was stopped before the connection closed"


def test_recording_has_nanosecond_timestamps(compliant_pinger: Path) -> None:
    # 0xa1b23c4d is the nanosecond pcap magic (little-endian on disk: 4d 3c b2 a1).
    assert compliant_pinger.read_bytes()[:4] in (b"\x4d\x3c\xb2\xa1", b"\xa1\xb2\x3c\x4d")


def record(out: Path, scenario: str) -> Path:
    """Record one scenario of ``captures/record.py`` afresh, on a free port."""
    result = subprocess.run(
        [sys.executable, str(RECORDER), "--out", str(out), "--port", "0", scenario],
        capture_output=True, text=True, timeout=90,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return out / f"{scenario}.pcap"


def analyzed(pcap: Path) -> tuple[list[str], list]:
    """Rule ids found (sorted) and the sessions, with the broker's port configured."""
    from analyzer import Options, analyze

    report = analyze([str(pcap)], Options(ports=frozenset({broker_port(pcap)})))
    return sorted(f.rule_id for f in report.findings), list(report.sessions)


def test_fresh_compliant_pinger_has_no_finding(compliant_pinger: Path) -> None:
    rules, sessions = analyzed(compliant_pinger)
    assert rules == []
    assert [s.pingreq for s in sessions] == [5]


def test_fresh_silent_client_is_caught_and_dropped_by_mosquitto(tmp_path: Path) -> None:
    """mosquitto drops a silent client somewhere after 1.5 x K (its check runs every ~5 s): the
    client findings are certain, the broker's close is late under the spec profile, never early."""
    rules, sessions = analyzed(record(tmp_path, "silent-client"))
    assert rules == ["KA101", "KA102", "KA201"]
    assert sessions[0].end_reason.value == "server_fin"


def test_fresh_late_pinger_gets_one_ka101_per_gap(tmp_path: Path) -> None:
    rules, sessions = analyzed(record(tmp_path, "late-pinger"))
    assert rules == ["KA101"] * 4
    assert sessions[0].end_reason.value == "client_disconnect"

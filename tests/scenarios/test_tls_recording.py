"""Fresh MQTT-over-TLS traffic from a real mosquitto, decrypted and checked against tshark.

The shipped TLS captures were made once; these tests record on the machine they run on (tcpdump on
`lo`, so root): the recorder's TLS scenario as a maintainer runs it, paho-mqtt over TLS 1.3 and
TLS 1.2 and over WebSocket over TLS (what a real library writes: one record per packet, its own
pings), and a PUBLISH larger than one TLS record. In each, the plaintext `decrypt_capture` returns
must frame into exactly the MQTT packets tshark's dissector shows with the same key log, and the
analysis with the key log must find the session.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from analyzer import Options, analyze
from analyzer.model import Direction, MQTTPacket
from analyzer.mqtt.framer import MQTTFramer
from analyzer.tls.decrypt import Plaintext, decrypt_capture
from tests.support.broker import MosquittoBroker, free_port
from tests.support.capture import TcpdumpCapture, tshark_fields
from tests.support.clients import PINGRESP, publish_packet
from tests.support.tls import (
    CertificateFiles,
    TLSRawClient,
    client_context,
    make_certificates,
    run_paho_tls_session,
    tls_listener_lines,
)
from tests.support.ws_client import wait_listening

REPO = Path(__file__).resolve().parents[2]
RECORDER = REPO / "captures" / "record.py"
MOSQUITTO = Path("/usr/sbin/mosquitto")


def recording_possible() -> bool:
    tools = all(shutil.which(t) for t in ("tcpdump", "tshark", "openssl")) and MOSQUITTO.exists()
    return tools and os.geteuid() == 0


pytestmark = [
    pytest.mark.recording,
    pytest.mark.skipif(not recording_possible(), reason="needs root, tcpdump, tshark, openssl and mosquitto"),
]


class TLSBroker:
    """A mosquitto with a TLS listener and a WebSocket-over-TLS listener on free ports."""

    def __init__(self, files: CertificateFiles) -> None:
        self.files = files
        self.tls_port, self.wss_port = free_port(), free_port()
        self.broker = MosquittoBroker(extra_lines=[*tls_listener_lines(files, self.tls_port),
                                                   *tls_listener_lines(files, self.wss_port, websockets=True)])


@pytest.fixture(scope="module")
def tls_broker() -> Iterator[TLSBroker]:
    # not under pytest's tmp_path: its 0700 parent keeps mosquitto's service user out
    with tempfile.TemporaryDirectory(prefix="ka-certs-") as certs:
        made = TLSBroker(make_certificates(Path(certs)))
        with made.broker:
            wait_listening("127.0.0.1", made.tls_port)
            wait_listening("127.0.0.1", made.wss_port)
            yield made


def tshark_mqtt(pcap: Path, keylog: Path, port: int) -> list[tuple[int, int]]:
    """(frame, type) of every MQTT PDU tshark dissects with the key log (MQTT over TLS on `port`)."""
    command = ["tshark", "-n", "-r", str(pcap), "-o", f"tls.keylog_file:{keylog}",
               "-d", f"tls.port=={port},mqtt", "-Y", "mqtt", "-T", "fields", "-E", "occurrence=a",
               "-e", "frame.number", "-e", "mqtt.msgtype"]
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    return [(int(f), int(t)) for f, types in (line.split("\t") for line in out.splitlines())
            for t in types.split(",")]


def framed(pcap: Path, plain: Plaintext, port: int) -> list[tuple[int, int]]:
    """(frame, type) of every MQTT packet the project's framer cuts from the plaintext."""
    rows = tshark_fields(pcap, ["frame.number", "tcp.srcport"], display_filter="tcp.len > 0")
    from_broker = {int(f): int(p) == port for f, p in rows}
    framers = {side: MQTTFramer(Direction.TO_CLIENT if side else Direction.TO_SERVER) for side in (False, True)}
    out = []
    for frame in plain.frames():
        for chunk in plain.chunks(frame):
            for event in framers[from_broker[frame]].feed(chunk, frame, 0):
                assert isinstance(event, MQTTPacket), event
                out.append((frame, int(event.type)))
    return out


def test_recorder_tls_scenario_decrypts_to_what_tshark_dissects(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, str(RECORDER), "--out", str(tmp_path), "--port", "0",
                             "tls-split-and-coalesced"], capture_output=True, text=True, timeout=90)
    assert result.returncode == 0, result.stdout + result.stderr
    pcap, keylog = tmp_path / "tls-split-and-coalesced.pcap", tmp_path / "tls-split-and-coalesced.keys"
    assert keylog.exists() and not list(tmp_path.glob(".*partial"))
    (syn,) = tshark_fields(pcap, ["tcp.dstport"], display_filter="tcp.flags.syn == 1 && tcp.flags.ack == 0")
    port = int(syn[0])
    plain = decrypt_capture(str(pcap), [str(keylog)])
    expected = tshark_mqtt(pcap, keylog, port)
    assert framed(pcap, plain, port) == expected
    assert [t for _, t in expected].count(12) == 2  # both PINGREQs of the coalesced segment


@pytest.mark.parametrize("version", ["1.3", "1.2"])
def test_paho_over_tls(tls_broker: TLSBroker, tmp_path: Path, version: str) -> None:
    import paho.mqtt.client as mqtt

    pcap, keylog = tmp_path / "paho.pcap", tmp_path / "paho.keys"
    context = client_context(tls_broker.files, keylog, version=version)
    with TcpdumpCapture(pcap, [tls_broker.tls_port]):
        log = run_paho_tls_session("127.0.0.1", tls_broker.tls_port, context=context,
                                   client_id=f"ka-paho-tls{version}", keep_alive=1,
                                   protocol=mqtt.MQTTv311, duration_s=1.6)
    assert any("PINGREQ" in line for line in log), log
    plain = decrypt_capture(str(pcap), [str(keylog)])
    expected = tshark_mqtt(pcap, keylog, tls_broker.tls_port)
    assert framed(pcap, plain, tls_broker.tls_port) == expected and len(expected) >= 5
    report = analyze([str(pcap)], Options(ports=frozenset({tls_broker.tls_port}), tls_keylogs=(str(keylog),)))
    (session,) = report.sessions
    assert session.client_id == f"ka-paho-tls{version}" and session.pingreq >= 1


def test_paho_over_websocket_over_tls(tls_broker: TLSBroker, tmp_path: Path) -> None:
    import paho.mqtt.client as mqtt

    pcap, keylog = tmp_path / "paho-wss.pcap", tmp_path / "paho-wss.keys"
    context = client_context(tls_broker.files, keylog)
    with TcpdumpCapture(pcap, [tls_broker.wss_port]):
        run_paho_tls_session("127.0.0.1", tls_broker.wss_port, context=context, client_id="ka-paho-wss",
                             keep_alive=1, protocol=mqtt.MQTTv311, duration_s=1.6, ws_path="/mqtt")
    plain = decrypt_capture(str(pcap), [str(keylog)])
    assert plain
    report = analyze([str(pcap)], Options(tls_keylogs=(str(keylog),)))
    (session,) = report.sessions
    assert session.client_id == "ka-paho-wss" and session.pingreq >= 1 and session.pingresp >= 1


def test_a_publish_larger_than_a_tls_record(tls_broker: TLSBroker, tmp_path: Path) -> None:
    """20000 bytes are two TLS records (16384 + the rest): both are there, in full, and the framer
    finds the one PUBLISH where its second record ends."""
    pcap, keylog = tmp_path / "big.pcap", tmp_path / "big.keys"
    big = publish_packet("ka/big", bytes(range(256)) * 78)  # 19968 payload bytes
    with TcpdumpCapture(pcap, [tls_broker.tls_port]):
        client = TLSRawClient("127.0.0.1", tls_broker.tls_port,
                              context=client_context(tls_broker.files, keylog)).open()
        client.connect("ka-big", 2)
        client.send(big)
        client.pingreq()
        client.wait_for(PINGRESP)
        client.disconnect()
        client.close()
    plain = decrypt_capture(str(pcap), [str(keylog)])
    records = [len(c) for f in plain.frames() for c in plain.chunks(f)]
    assert 16384 in records and sum(records) > len(big)
    expected = tshark_mqtt(pcap, keylog, tls_broker.tls_port)
    assert framed(pcap, plain, tls_broker.tls_port) == expected
    assert [t for _, t in expected][:4] == [1, 2, 3, 12]

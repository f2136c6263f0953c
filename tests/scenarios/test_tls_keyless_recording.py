"""MQTT over TLS recorded afresh and judged without keys: the late ping is found, as `likely`.

A real mosquitto with a TLS listener on a free loopback port, a raw client over Python's `ssl`
(`tests.support.tls.TLSRawClient`: each MQTT packet one TLS record in one segment) that pings on
time and then late, and tcpdump on lo. The analysis gets no key log: it sees TLS records only, and
must still flag the late ping (KA101), on the probable-ping sizes of TLS 1.3 (19 bytes), TLS 1.2
AES-GCM (26) and TLS 1.2 ChaCha20-Poly1305 (18), with `confidence: likely` and the `encrypted`
uncertainty. The same TLS 1.3 capture with the client's key log must give the verdicts of plain
TCP, `confirmed`.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from analyzer import Options, analyze
from analyzer.model import KeepAliveSource, Report, Uncertainty
from tests.support.broker import MOSQUITTO, MosquittoBroker, free_port
from tests.support.capture import TcpdumpCapture
from tests.support.clients import PINGRESP
from tests.support.tls import CertificateFiles, TLSRawClient, client_context, make_certificates, tls_lines

K = 2
ON_TIME_S = 1.8
LATE_S = 2.7
"""Over K + 0.25 s tolerance (KA101), under 1.5 x K + 0.25 (no KA102), and under the 3 s after
which mosquitto may drop a client with K = 2 (floor(1.5 x K))."""


def recording_possible() -> bool:
    tools = shutil.which("tcpdump") and shutil.which("openssl") and Path(MOSQUITTO).exists()
    return bool(tools) and os.geteuid() == 0


pytestmark = [
    pytest.mark.recording,
    pytest.mark.skipif(not recording_possible(), reason="needs root, tcpdump, openssl and mosquitto"),
]


@dataclass(frozen=True)
class Recorded:
    pcap: Path
    keylog: Path
    port: int


@pytest.fixture(scope="module")
def certificates() -> Iterator[CertificateFiles]:
    """A throw-away CA and server certificate (in /tmp, which mosquitto's user can traverse)."""
    with tempfile.TemporaryDirectory(prefix="ka-tls-certs-") as directory:
        yield make_certificates(Path(directory))


def record(out: Path, files: CertificateFiles, *, version: str, ciphers: str | None = None,
           regular_pings: int = 1) -> Recorded:
    """One session: CONNECT (K = 2), `regular_pings` pings on time, one late ping, DISCONNECT."""
    port = free_port()
    pcap, keylog = out / f"tls{version}.pcap", out / f"tls{version}.keys"
    context = client_context(files, keylog, version=version)
    if ciphers:
        context.set_ciphers(ciphers)
    with MosquittoBroker(port=port, extra_lines=tls_lines(files)), TcpdumpCapture(pcap, [port]):
        with TLSRawClient("127.0.0.1", port, context=context) as client:
            client.connect("ka-tls-keyless", K)
            for n in range(1, regular_pings + 1):
                time.sleep(ON_TIME_S)
                client.pingreq()
                client.wait_for(PINGRESP, n)
            time.sleep(LATE_S)
            client.pingreq()
            client.wait_for(PINGRESP, regular_pings + 1)
            client.disconnect()
    return Recorded(pcap, keylog, port)


def keyless(rec: Recorded, assume: int | None = None) -> Report:
    return analyze([str(rec.pcap)], Options(ports=frozenset({rec.port}), assume_keep_alive_s=assume))


def assert_late_ping_is_likely(report: Report, regular_pings: int) -> None:
    (session,) = report.sessions
    assert Uncertainty.ENCRYPTED in session.uncertainty
    assert session.client_id is None and session.effective_keep_alive_s == K
    assert session.pingreq == session.pingresp == regular_pings + 1
    late = [f for f in report.findings if f.rule_id == "KA101"]
    assert len(late) == 1 and LATE_S - 0.1 < (late[0].gap_s or 0) < LATE_S + 0.3
    assert not any(f.rule_id in ("KA102", "KA203", "KA205") for f in report.findings)
    assert {f.confidence for f in report.findings} == {"likely"}
    assert all("encrypted" in f.uncertainty for f in report.findings)


def test_tls13_late_ping_with_keep_alive_inferred(tmp_path: Path, certificates: CertificateFiles) -> None:
    rec = record(tmp_path, certificates, version="1.3", regular_pings=4)
    report = keyless(rec)
    assert_late_ping_is_likely(report, 4)
    assert report.sessions[0].keep_alive_source == KeepAliveSource.INFERRED
    ka901 = next(f for f in report.findings if f.rule_id == "KA901")
    assert "TLS 1.3" in ka901.message and "19-byte" in ka901.message and "inferred" in ka901.message

    decrypted = analyze([str(rec.pcap)], Options(ports=frozenset({rec.port}), tls_keylogs=(str(rec.keylog),)))
    (session,) = decrypted.sessions
    if Uncertainty.ENCRYPTED in session.uncertainty:
        pytest.skip(f"the key log did not decrypt here: {decrypted.captures[0].warnings}")
    assert session.client_id == "ka-tls-keyless" and session.keep_alive_source == KeepAliveSource.CONNECT
    assert [(f.rule_id, f.frames, f.confidence) for f in decrypted.findings if f.rule_id == "KA101"] == [
        ("KA101", f.frames, "confirmed") for f in report.findings if f.rule_id == "KA101"]


@pytest.mark.parametrize("ciphers, ping", [
    ("ECDHE-RSA-AES128-GCM-SHA256", "26-byte"),
    ("ECDHE-RSA-CHACHA20-POLY1305", "18-byte"),
], ids=["aes-gcm", "chacha20"])
def test_tls12_late_ping_with_assumed_keep_alive(tmp_path: Path, certificates: CertificateFiles,
                                                 ciphers: str, ping: str) -> None:
    rec = record(tmp_path, certificates, version="1.2", ciphers=ciphers)
    report = keyless(rec, assume=K)
    assert_late_ping_is_likely(report, 1)
    assert report.sessions[0].keep_alive_source == KeepAliveSource.ASSUMED
    ka901 = next(f for f in report.findings if f.rule_id == "KA901")
    assert "TLS 1.2" in ka901.message and ping in ka901.message


def test_keys_for_one_of_two_clients(tmp_path: Path, certificates: CertificateFiles) -> None:
    """With a key log for one client only, the other connection falls back to the keyless path
    (and the capture says so); each session is judged as far as its keys allow."""
    port, pcap = free_port(), tmp_path / "two.pcap"
    with MosquittoBroker(port=port, extra_lines=tls_lines(certificates)), TcpdumpCapture(pcap, [port]):
        for name in ("with-keys", "without-keys"):
            context = client_context(certificates, tmp_path / f"{name}.keys", version="1.3")
            with TLSRawClient("127.0.0.1", port, context=context) as client:
                client.connect(name, K)
                time.sleep(LATE_S)
                client.pingreq()
                client.wait_for(PINGRESP)
                client.disconnect()
    report = analyze([str(pcap)], Options(ports=frozenset({port}), assume_keep_alive_s=K,
                                          tls_keylogs=(str(tmp_path / "with-keys.keys"),)))
    decrypted, keyless_session = report.sessions
    if Uncertainty.ENCRYPTED in decrypted.uncertainty:
        pytest.skip(f"the key log did not decrypt here: {report.captures[0].warnings}")
    assert decrypted.client_id == "with-keys" and keyless_session.client_id is None
    assert Uncertainty.ENCRYPTED in keyless_session.uncertainty
    by_session = {(f.session_id, f.rule_id): f.confidence for f in report.findings}
    assert by_session[(decrypted.session_id, "KA101")] == "confirmed"
    assert by_session[(keyless_session.session_id, "KA101")] == "likely"
    assert any("had no decrypted data (tcp.stream 1)" in w for w in report.captures[0].warnings)

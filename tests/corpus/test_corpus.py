"""Every capture of the public corpus, compared with its tshark oracle.

Sessions must agree with tshark on client and broker endpoints, keep-alive, client id, protocol
level, the number of client->broker MQTT packets and of PINGREQs. Where we disagree, the test below
proves who is right from the capture itself. Skipped when `../shared` is absent.
"""

from __future__ import annotations

import shutil
import subprocess

import pytest

from tests.corpus.oracle import CORPUS, Disagreement, compare, corpus_captures

pytestmark = pytest.mark.corpus

CAPTURES = corpus_captures()

# Disagreements in which tshark is wrong, each proven by `test_known_disagreement_is_ours_right`.
KNOWN = {
    ("mqttset-reduced__benign.pcap", 9, "client_packets"):
        "frame 8952 carries a PUBLISH whose bytes (seq 5904, 13 bytes) appear nowhere earlier in the "
        "capture; tshark calls it a retransmission because an ACK-only frame with a higher sequence "
        "number was captured just before it, and does not dissect it",
}


@pytest.fixture(scope="module")
def results() -> dict[str, tuple[int, list[Disagreement]]]:
    if not CAPTURES:
        pytest.skip(f"public corpus not found at {CORPUS}")
    return {capture.name: compare(capture) for capture in CAPTURES}


def test_corpus_agrees_with_tshark_on_98_percent_of_streams(results) -> None:
    streams = sum(n for n, _ in results.values())
    disagreeing = {(d.capture, d.tcp_stream) for _, found in results.values() for d in found}
    agreement = 1 - len(disagreeing) / streams
    assert streams > 3000
    assert agreement >= 0.98, sorted(disagreeing)[:20]


def test_every_disagreement_is_explained(results) -> None:
    unexplained = [d for _, found in results.values() for d in found
                   if (d.capture, d.tcp_stream, d.field) not in KNOWN]
    assert unexplained == []


@pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark is not installed")
def test_benign_stream_9_frame_8952_is_a_first_transmission(results) -> None:
    """The bytes tshark skips as a 'retransmission' were never captured before frame 8952."""
    capture = CORPUS / "mqttset-reduced__benign.pcap"
    rows = subprocess.run(
        ["tshark", "-r", str(capture), "-o", "tcp.relative_sequence_numbers:FALSE", "-Y",
         "tcp.stream == 9 && ip.src == 192.168.0.174 && tcp.len > 0", "-T", "fields",
         "-e", "frame.number", "-e", "tcp.seq", "-e", "tcp.len"],
        capture_output=True, text=True, check=True).stdout.split("\n")
    segments = [tuple(map(int, row.split("\t"))) for row in rows if row]
    frame_8952 = next(s for s in segments if s[0] == 8952)
    start, end = frame_8952[1], frame_8952[1] + frame_8952[2]
    earlier_cover = [s for s in segments if s[0] < 8952 and s[1] < end and s[1] + s[2] > start]
    assert earlier_cover == []
    found = results["mqttset-reduced__benign.pcap"][1]
    ours = next(d for d in found if d.tcp_stream == 9)
    assert (ours.tshark, ours.ours) == (558, 559)

"""Capture loss in real traffic: a recording of a real mosquitto, with frames taken out of it.

A capture misses frames (a busy sniffer, a SPAN port dropping under load): here a client sends a
PUBLISH and a PINGREQ back to back every 6 s, tcpdump on `lo` records it all, and `editcap` then
takes the PUBLISHes (and any broker frame acknowledging them alone) out of the file, as a lossy
capture would have lost them. Each PINGREQ is then held behind a hole until the capture shows the
bytes are lost, and the broker's PINGRESP, sent a fraction of a millisecond after it, is read
before it. That PINGRESP answers it: no ping is slow (KA204), none unanswered (KA203), and no
PINGRESP unsolicited (KA205). And with a PINGRESP taken out instead, its PINGREQ's answer is not
known, and the next PINGRESP still answers the next PINGREQ.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from analyzer import Options, analyze
from tests.support.broker import MosquittoBroker
from tests.support.capture import TcpdumpCapture, tshark_fields
from tests.support.clients import PINGRESP, RawClient

MOSQUITTO = Path("/usr/sbin/mosquitto")


def recording_possible() -> bool:
    tools = all(shutil.which(t) for t in ("tcpdump", "tshark", "editcap")) and MOSQUITTO.exists()
    return tools and os.geteuid() == 0


pytestmark = [
    pytest.mark.recording,
    pytest.mark.skipif(not recording_possible(), reason="needs root, tcpdump, tshark, editcap and mosquitto"),
]

CYCLES = 3
SPACING_S = 6.0
"""Between the client's pings: more than KA204's 5 s, so a PINGREQ left to wait for the next
PINGRESP would be a slow answer."""


@pytest.fixture(scope="module")
def recording(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int, list[list[str]]]:
    """The whole recording, the broker's port, and tshark's (frame, source port, TCP payload
    length, MQTT types) of each of its frames."""
    full = tmp_path_factory.mktemp("loss") / "full.pcap"
    with MosquittoBroker() as broker, TcpdumpCapture(full, [broker.port]):
        with RawClient(port=broker.port) as client:
            client.connect("held-pinger", keep_alive=30)
            for n in range(1, CYCLES + 1):
                client.publish("held/pinger", b"x" * 200)
                client.pingreq()
                client.wait_for(PINGRESP, n)
                time.sleep(SPACING_S)
            client.disconnect()
    rows = tshark_fields(full, ["frame.number", "tcp.srcport", "tcp.len", "mqtt.msgtype"],
                         display_filter=f"tcp.port == {broker.port}", mqtt_ports=[broker.port])
    whole = analyze([str(full)], Options())
    assert [f.rule_id for f in whole.findings] == []
    return full, broker.port, rows


def without(full: Path, frames: list[int]) -> list:
    """The findings of the recording without `frames` (`editcap`), and its one session."""
    lossy = full.with_name(f"without-{'-'.join(map(str, frames))}.pcap")
    subprocess.run(["editcap", str(full), str(lossy), *map(str, sorted(frames))], check=True,
                   capture_output=True)
    result = analyze([str(lossy)], Options())
    (session,) = result.sessions
    assert "hole" in {u.value for u in session.uncertainty}
    return [result.findings, session]


def test_a_pingreq_held_behind_lost_frames_is_answered_by_the_pingresp_read_before_it(
        recording: tuple[Path, int, list[list[str]]]) -> None:
    full, port, rows = recording
    publishes = [int(f) for f, sport, _, types in rows
                 if int(sport) != port and types.split(",")[:1] == ["3"]]
    assert len(publishes) == CYCLES, rows  # (each PUBLISH its own segment: TCP_NODELAY)
    # a broker frame that acknowledges a PUBLISH alone (a bare ACK before the PINGREQ came) goes
    # with it, as it would in a capture that lost the PUBLISH's moment
    after = {int(f): (int(sport), int(size)) for f, sport, size, _ in rows}
    dropped = list(publishes)
    for frame in publishes:
        if after.get(frame + 1) == (port, 0):
            dropped.append(frame + 1)
    findings, session = without(full, dropped)
    assert session.pingreq == session.pingresp == CYCLES
    assert not {"KA203", "KA204", "KA205"} & {f.rule_id for f in findings}, [
        (f.rule_id, f.message) for f in findings]


def test_a_lost_pingresp_leaves_its_ping_unjudged_and_the_next_ones_paired_right(
        recording: tuple[Path, int, list[list[str]]]) -> None:
    """The first PINGRESP lost: its PINGREQ's answer is not known (it may be in the lost bytes),
    and the next PINGRESP answers the next PINGREQ. Paired with the next one instead, every later
    ping came 6 s late (KA204), each answer shifted by one."""
    full, port, rows = recording
    first = next(int(f) for f, sport, _, types in rows if int(sport) == port and types == "13")
    findings, session = without(full, [first])
    assert session.pingreq == CYCLES and session.pingresp == CYCLES - 1
    assert not {"KA203", "KA204", "KA205"} & {f.rule_id for f in findings}, [
        (f.rule_id, f.message) for f in findings]


@pytest.mark.parametrize("width", [1, 2])
def test_losing_any_frames_of_the_recording_adds_no_verdict(
        recording: tuple[Path, int, list[list[str]]], tmp_path: Path, width: int) -> None:
    """Every frame of the recording taken out in turn (and every two in a row): the analysis may
    leave intervals unjudged, but never finds a verdict the whole recording does not have (it
    has none)."""
    from analyzer.sources import open_capture
    from tests.unit.test_pipeline_variants import write_pcap

    full, port, _ = recording
    with open_capture(str(full)) as reader:
        frames = [(ts, linktype, data) for _, ts, linktype, data, _ in reader]
    (linktype,) = {linktype for _, linktype, _ in frames}
    options = Options(ports=frozenset({port}))
    added = {}
    for i in range(len(frames) - width + 1):
        lossy = write_pcap(tmp_path / "lossy.pcap", linktype,
                           [(ts, data) for ts, _, data in frames[:i] + frames[i + width:]])
        found = [f.rule_id for f in analyze([str(lossy)], options).findings
                 if f.severity.name in ("ERROR", "WARNING")]
        if found:
            added[i + 1] = found
    assert added == {}, f"first frame taken out -> verdicts: {added}"

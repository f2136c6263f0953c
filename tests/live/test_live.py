"""`mqtt-keepalive live` end to end on loopback: a real mosquitto, a raw-socket client that goes
silent, and the findings timed as they arrive on the tool's stdout (JSONL, flushed per record).

Needs root (capturing on lo), tcpdump and mosquitto; skipped otherwise. Keep-alive values are 2 s,
so each scenario takes a few seconds."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.support import MosquittoBroker, RawClient
from tests.support.scripted_broker import ScriptedBroker

MOSQUITTO = Path("/usr/sbin/mosquitto")
K = 2
TOLERANCE = 0.25
SLACK = 1.0


def live_possible() -> bool:
    return os.geteuid() == 0 and bool(shutil.which("tcpdump")) and MOSQUITTO.exists()


pytestmark = [
    pytest.mark.live,
    pytest.mark.skipif(not live_possible(), reason="needs root, tcpdump and mosquitto"),
]

CLI = [sys.executable, "-m", "analyzer"]


class JsonlReader:
    """Reads a process's stdout line by line in a thread, stamping each record on arrival
    (time.monotonic(), the clock RawClient uses)."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self.records: list[tuple[float, dict]] = []
        self._proc = proc
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        assert self._proc.stdout is not None
        for line in self._proc.stdout:
            now = time.monotonic()
            self.records.append((now, json.loads(line)))

    def join(self, timeout: float = 30) -> None:
        self._thread.join(timeout)

    def first(self, record_type: str, rule_id: str | None = None) -> tuple[float, dict] | None:
        for at, rec in self.records:
            if rec["type"] == record_type and (rule_id is None or rec.get("rule_id") == rule_id):
                return at, rec
        return None


def wait_started(proc: subprocess.Popen[bytes], seconds: float = 1.5) -> None:
    """The capture socket is open once the tool has printed its banner; give it a moment."""
    time.sleep(seconds)
    assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""


def silent_client(port: int) -> tuple[float, float | None]:
    """CONNECT with K = 2 s, then silence until the broker closes. Returns (CONNECT sent, closed)."""
    with RawClient("127.0.0.1", port) as client:
        from tests.support.clients import connect_packet

        sent = client.send(connect_packet("ka-live-silent", K))
        client.wait_for(2)  # CONNACK
        closed = client.wait_closed(3 * K + 2)
        return sent, client.peer_closed_at if closed else None


@pytest.fixture(scope="module")
def interface_run(tmp_path_factory: pytest.TempPathFactory) -> dict:
    tmp = tmp_path_factory.mktemp("live")
    evidence = tmp / "ev.pcap"
    with MosquittoBroker() as broker:
        proc = subprocess.Popen(
            CLI + ["live", "-i", "lo", "--port", str(broker.port), "--format", "jsonl",
                   "--duration", "12s", "--write", str(evidence)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        reader = JsonlReader(proc)
        wait_started(proc)
        sent, closed = silent_client(broker.port)
        proc.wait(30)
        reader.join()
        stderr = proc.stderr.read().decode() if proc.stderr else ""
    return {"records": reader, "sent": sent, "closed": closed, "code": proc.returncode,
            "stderr": stderr, "evidence": evidence}


def arrival_after_deadline(run: dict, rule_id: str, deadline_s: float) -> float:
    found = run["records"].first("finding", rule_id)
    assert found is not None, f"no {rule_id}: {run['records'].records} {run['stderr']}"
    return found[0] - (run["sent"] + deadline_s)


def test_ka101_arrives_within_a_second_of_k_plus_tolerance(interface_run: dict) -> None:
    late = arrival_after_deadline(interface_run, "KA101", K + TOLERANCE)
    print(f"KA101 arrived {late:+.3f} s after CONNECT + K + tolerance")
    assert -0.05 < late < SLACK


def test_ka102_arrives_within_a_second_of_its_deadline_before_the_broker_closes(interface_run: dict) -> None:
    late = arrival_after_deadline(interface_run, "KA102", 1.5 * K + TOLERANCE)
    print(f"KA102 arrived {late:+.3f} s after CONNECT + 1.5 K + tolerance")
    assert -0.05 < late < SLACK
    at, found = interface_run["records"].first("finding", "KA102")
    assert interface_run["closed"] is not None, "mosquitto never closed the silent client"
    print(f"mosquitto closed {interface_run['closed'] - interface_run['sent']:.3f} s after CONNECT")
    # mosquitto closes anywhere from floor(1.5 K) to ~6 s later: when it closed after the finding
    # arrived, the finding was made by the clock and names a frame before the broker's FIN
    if interface_run["closed"] > at:
        _t, session = interface_run["records"].first("session")
        assert found["frames"][1] < session["end_frame"], (found, session)


def test_ka102_is_made_by_the_clock_when_the_broker_never_closes(tmp_path: Path) -> None:
    """A broker that never drops the client: the finding cannot come from a close."""
    with ScriptedBroker() as broker:
        proc = subprocess.Popen(
            CLI + ["live", "-i", "lo", "--port", str(broker.port), "--format", "jsonl",
                   "--duration", "7s"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        reader = JsonlReader(proc)
        wait_started(proc)
        with RawClient("127.0.0.1", broker.port) as client:
            from tests.support.clients import connect_packet

            sent = client.send(connect_packet("ka-live-never-dropped", K))
            client.wait_for(2)  # CONNACK
            time.sleep(1.5 * K + TOLERANCE + 1.5)
            found = reader.first("finding", "KA102")
        proc.wait(30)
        reader.join()
    assert found is not None, reader.records
    assert -0.05 < found[0] - (sent + 1.5 * K + TOLERANCE) < SLACK


def test_closed_session_and_final_summary_are_streamed(interface_run: dict) -> None:
    records = interface_run["records"]
    session = records.first("session")
    assert session is not None and session[1]["client_id"] == "ka-live-silent"
    assert session[1]["keep_alive_s"] == K
    summary = records.first("summary")
    assert summary is not None and summary[1]["exit_code"] == 1
    assert interface_run["code"] == 1, interface_run["stderr"]
    assert "dropped by the kernel" in interface_run["stderr"]


def test_written_evidence_gives_the_same_verdict_offline(interface_run: dict) -> None:
    result = subprocess.run(CLI + ["analyze", str(interface_run["evidence"]), "--port",
                                   str(interface_run["records"].first("session")[1]["broker"]["port"]),
                                   "--format", "json"], capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 1, result.stderr
    offline = json.loads(result.stdout)
    live = [rec for _, rec in interface_run["records"].records]
    # an early finding names the frame it was certain at; its final form (offline) the closing
    # frame: the same rule on the same interval, from the same first frame
    live_findings = sorted((f["rule_id"], f["frames"][0]) for f in live if f["type"] == "finding")
    offline_findings = sorted((f["rule_id"], f["frames"][0]) for f in offline["findings"])
    assert live_findings == offline_findings
    (live_session,) = [rec for rec in live if rec["type"] == "session"]
    (offline_session,) = offline["sessions"]
    for key in ("client", "broker", "client_id", "keep_alive_s", "connect_frame", "end_reason",
                "end_frame", "client_packets", "server_packets"):
        assert live_session[key] == offline_session[key], key


def test_pipe_source_fed_by_tcpdump_reports_ka102_early(tmp_path: Path) -> None:
    with MosquittoBroker() as broker:
        tcpdump = subprocess.Popen(
            # --immediate-mode: without it libpcap hands packets over in blocks, seconds late on a
            # quiet link (the README says so)
            ["tcpdump", "-i", "lo", "--immediate-mode", "-U", "-s", "0", "-w", "-", f"tcp port {broker.port}"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        proc = subprocess.Popen(CLI + ["live", "-r", "-", "--port", str(broker.port), "--format", "jsonl"],
                                stdin=tcpdump.stdout, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert tcpdump.stdout is not None
        tcpdump.stdout.close()  # the tool owns the read end
        reader = JsonlReader(proc)
        wait_started(proc)
        sent, _closed = silent_client(broker.port)
        tcpdump.terminate()  # the end of the stream ends the run
        tcpdump.wait(10)
        proc.wait(30)
        reader.join()
        stderr = proc.stderr.read().decode() if proc.stderr else ""
    run = {"records": reader, "sent": sent, "stderr": stderr}
    late = arrival_after_deadline(run, "KA102", 1.5 * K + TOLERANCE)
    print(f"pipe: KA102 arrived {late:+.3f} s after CONNECT + 1.5 K + tolerance")
    assert -0.05 < late < SLACK
    assert -0.05 < late < SLACK
    assert proc.returncode == 1, stderr


def test_unknown_interface_is_exit_2_with_the_list() -> None:
    result = subprocess.run(CLI + ["live", "-i", "nosuch0", "--duration", "1s"],
                            capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode == 2
    assert result.stderr.startswith("error: no interface 'nosuch0'; interfaces: ")
    assert "lo" in result.stderr and "Traceback" not in result.stderr


def test_reading_a_non_capture_is_exit_2(tmp_path: Path) -> None:
    junk = tmp_path / "notes.txt"
    junk.write_text("not a capture at all\n")
    result = subprocess.run(CLI + ["live", "-r", str(junk), "--format", "jsonl"],
                            capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode == 2, result.stderr
    assert "not a pcap or pcapng capture" in result.stderr
    assert "Traceback" not in result.stderr
    piped = subprocess.run(CLI + ["live", "-r", "-", "--format", "jsonl"], input=b"garbage" * 10,
                           capture_output=True, timeout=30, check=False)
    assert piped.returncode == 2
    assert b"error:" in piped.stderr and b"Traceback" not in piped.stderr


def test_a_stream_cut_mid_record_is_exit_2(tmp_path: Path) -> None:
    data = (Path(__file__).resolve().parents[2] / "captures" / "silent-client.pcap").read_bytes()
    result = subprocess.run(CLI + ["live", "-r", "-", "--format", "jsonl"], input=data[:-10],
                            capture_output=True, timeout=30, check=False)
    assert result.returncode == 2, result.stderr
    assert b"error:" in result.stderr and b"Traceback" not in result.stderr

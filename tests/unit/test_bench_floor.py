"""`bench/floor.py`: the least of a keep-alive analysis, which `bench/run.py` times beside the
analyzer. It must do the work it stands for, or the floor it prints would be lower than it is."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from analyzer.engine import Options, analyze

BENCH = Path(__file__).resolve().parents[2] / "bench"


def _floor(capture: Path, jobs: int) -> str:
    done = subprocess.run([sys.executable, str(BENCH / "floor.py"), str(capture), "--jobs", str(jobs)],
                          capture_output=True, text=True, timeout=120, check=True)
    return done.stdout.strip()


def test_the_floor_finds_the_silences_over_k_the_analyzer_finds(tmp_path: Path) -> None:
    """On a generated capture (in order, nothing lost), the floor counts every client silence over
    K that the analyzer reports as KA101, but for those still open when the capture ends, and
    frames every MQTT packet; split over two processes it counts the same."""
    capture = tmp_path / "small.pcap"
    subprocess.run([sys.executable, str(BENCH / "generate.py"), str(capture), "--frames", "20000",
                    "--clients", "100"], check=True, capture_output=True, timeout=120)
    report = analyze([str(capture)], Options())
    ka101 = [f for f in report.findings if f.rule_id == "KA101"]
    open_at_end = [f for f in ka101 if "still silent when the capture ended" in f.message]
    assert len(ka101) > len(open_at_end)
    one = _floor(capture, 1)
    packets = sum(s.client_packets + s.server_packets for s in report.sessions)
    assert one == (f"{report.captures[0].frames} frames, {packets} MQTT packets, "
                   f"{len(ka101) - len(open_at_end)} client silences over K (1 process)")
    assert _floor(capture, 2) == one.replace("(1 process)", "(2 processes)")


def test_the_floor_refuses_what_it_cannot_read(tmp_path: Path) -> None:
    capture = tmp_path / "not.pcap"
    capture.write_bytes(b"\x0a\x0d\x0d\x0a" + bytes(40))
    done = subprocess.run([sys.executable, str(BENCH / "floor.py"), str(capture)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode != 0 and "not a little-endian pcap" in done.stderr

"""Load test of `mqtt-keepalive live`: replay a large capture onto `lo` at increasing rates and
count what each live source handled and lost.

    sudo python3 bench/live_load.py [--frames 400000] [--seconds 5] [--rates 10000,25000,50000]

Needs root, tcpreplay (`apt-get install -y tcpreplay`) and tcpdump. Loopback only: the replayed
frames carry addresses of 10.0.0.0/8 and a foreign MAC, so the kernel drops them after the capture
tap (PACKET_OTHERHOST) and nothing reaches any socket. Each run is bounded: `--seconds` of
replay at the given rate (tcpreplay --limit), then the live tool is stopped.

Sources measured:
- `-i lo`: `mqtt-keepalive live -i lo` (scapy raw socket + kernel BPF filter);
- pipe: `tcpdump -i lo --immediate-mode -U -w - tcp port 1883 | mqtt-keepalive live -r -`.
"handled" is the frame count of the final report; "lost" = replayed MQTT frames - handled (kernel
drops of our socket, or of tcpdump's ring when the pipe backs up). A rate is "no loss" when
lost == 0; the highest such rate per source is printed at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-m", "analyzer"]
DEFAULT_RATES = "5000,10000,20000,30000,40000,50000,75000,100000,150000"


def prepare(work: Path, frames: int) -> tuple[Path, int]:
    """A synthetic capture filtered to the MQTT port (so every replayed frame must be seen)."""
    big = work / "big.pcap"
    subprocess.run([sys.executable, str(REPO / "bench" / "generate.py"), str(big), "--frames",
                    str(frames)], check=True, capture_output=True)
    mqtt = work / "mqtt.pcap"
    subprocess.run(["tcpdump", "-r", str(big), "-w", str(mqtt), "tcp port 1883"], check=True,
                   capture_output=True)
    count = int(subprocess.run(["tcpdump", "-r", str(mqtt), "-qn", "--count"], capture_output=True, check=False,
                               text=True).stdout.split()[0])
    return mqtt, count


def replay(capture: Path, rate: int, limit: int) -> tuple[int, float]:
    """tcpreplay onto lo at `rate` frames/s, `limit` frames; (frames sent, seconds taken)."""
    t0 = time.monotonic()
    out = subprocess.run(["tcpreplay", "-i", "lo", f"--pps={rate}", f"--limit={limit}", str(capture)], check=False,
                         capture_output=True, text=True)
    took = time.monotonic() - t0
    sent = limit
    for line in out.stdout.splitlines():
        if line.strip().startswith("Successful packets:"):
            sent = int(line.split(":")[1])
    return sent, took


def final_report(path: Path) -> dict:
    """The `capture` record of a JSONL final report."""
    for line in path.read_text().splitlines():
        rec = json.loads(line)
        if rec["type"] == "capture":
            return rec
    return {}


def run_interface(capture: Path, rate: int, limit: int, work: Path) -> tuple[int, int, str]:
    report = work / f"if-{rate}.jsonl"
    proc = subprocess.Popen(CLI + ["live", "-i", "lo", "--port", "1883", "--format", "jsonl", "-o",
                                   str(report), "-q", "--duration", "10m"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    time.sleep(1.5)
    sent, _took = replay(capture, rate, limit)
    time.sleep(1.0)
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=120)
    rec = final_report(report)
    drops = ""
    for w in rec.get("warnings", []):
        if "kernel dropped" in w:
            drops = w.split("dropped")[1].split("frames")[0].strip()
    return sent, int(rec.get("frames", 0)), drops or "0"


def run_pipe(capture: Path, rate: int, limit: int, work: Path) -> tuple[int, int, str]:
    report = work / f"pipe-{rate}.jsonl"
    tcpdump = subprocess.Popen(["tcpdump", "-i", "lo", "--immediate-mode", "-U", "-s", "0", "-B",
                                "32768", "-w", "-", "tcp port 1883"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=False)
    proc = subprocess.Popen(CLI + ["live", "-r", "-", "--port", "1883", "--format", "jsonl", "-o",
                                   str(report), "-q"],
                            stdin=tcpdump.stdout, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert tcpdump.stdout is not None
    tcpdump.stdout.close()
    time.sleep(1.5)
    sent, _took = replay(capture, rate, limit)
    time.sleep(1.0)
    tcpdump.send_signal(signal.SIGINT)
    _o, tcpdump_err = tcpdump.communicate(timeout=60)
    proc.communicate(timeout=120)
    rec = final_report(report)
    drops = "?"
    for line in tcpdump_err.decode(errors="replace").splitlines():
        if "dropped by kernel" in line:
            drops = line.split()[0]
    return sent, int(rec.get("frames", 0)), drops


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=400_000, help="size of the generated capture")
    parser.add_argument("--seconds", type=float, default=5.0, help="replay time per rate")
    parser.add_argument("--rates", default=DEFAULT_RATES)
    parser.add_argument("--sources", default="interface,pipe")
    args = parser.parse_args()
    if os.geteuid() != 0 or not shutil.which("tcpreplay") or not shutil.which("tcpdump"):
        print("needs root, tcpreplay and tcpdump", file=sys.stderr)
        return 2
    rates = [int(r) for r in args.rates.split(",")]
    with tempfile.TemporaryDirectory(prefix="ka-live-load-") as tmp:
        work = Path(tmp)
        capture, available = prepare(work, args.frames)
        print(f"replaying {capture.name}: {available} MQTT frames available; {args.seconds:g} s per rate")
        best: dict[str, int] = {}
        for source in args.sources.split(","):
            runner = run_interface if source == "interface" else run_pipe
            for rate in rates:
                limit = min(available, int(rate * args.seconds))
                sent, handled, drops = runner(capture, rate, limit, work)
                lost = sent - handled
                print(f"{source:9} rate {rate:7}/s  sent {sent:7}  handled {handled:7}  lost {lost:6}  "
                      f"kernel drops {drops}", flush=True)
                if lost == 0:
                    best[source] = max(best.get(source, 0), rate)
                if lost > 0.2 * sent:
                    break  # far past saturation
        for source, rate in best.items():
            print(f"highest no-loss rate, {source}: {rate} frames/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())

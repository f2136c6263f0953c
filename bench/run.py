"""Time `mqtt-keepalive analyze` against tshark, scapy's raw reader and two bare Python readers.

    python bench/run.py                        # generates /tmp/mqtt-keepalive-bench/1m.pcap first
    python bench/run.py --sizes 1m 10m         # both sizes (10m: 2.2 GB, one run each by default)
    python bench/run.py FILE.pcap ... [--runs 3]
    python bench/run.py --shape pcapng         # the same captures as pcapng (dumpcap, Wireshark)
    python bench/run.py --shape sll2           # as `tcpdump -i any` writes them (Linux cooked v2)
    python bench/run.py --shape ipv6           # over IPv6 (2001:db8::/96 + each IPv4 address)
    python bench/run.py --shape tls --runs 1   # MQTT over TLS 1.3, without keys (tshark: minutes)
    python bench/run.py --shape midstream      # started on a running broker: its first third cut
    python bench/run.py --shape snap96         # as `tcpdump -s 96` keeps it: each frame's first 96 bytes

Each tool runs as a whole process, several times, alternating, so a busy machine slows all of
them alike; the table shows medians, frames/s, the ratio to tshark and peak memory, since
`--jobs N` analyses one capture in N worker processes besides the parent, in two figures (sampled
every 50 ms): the peak RSS of the largest process (for the root, the kernel's rusage if higher),
and the peak of the whole process tree's summed PSS (proportional set size: a page shared by n
processes counts 1/n in each, so a forked worker's pages shared with its parent count once). The
analyzer runs with `--jobs 1` (one process) and with its default, one process per core. The bare
reader (`bare_reader.py`: records, headers and MQTT framing in plain Python, nothing judged) shows
what plain Python costs on the machine at hand; the floor (`floor.py`: the bare reader in as
many processes as the default analysis, each reading the whole capture for its share of the
connections, with each client's K and its silences over K, nothing else) is what the least of a
keep-alive analysis split that way costs in Python, frame by frame. Also checks the analyzer's
findings against the generator's ground truth when a `<file>.truth.json` sits beside the capture,
and that every way of running it wrote the same report. `--shape` times a copy of each capture in
another shape (made beside it on first use, its ground truth with it where the shape keeps it);
the bare readers, which read only Ethernet pcap, are left out there. The `tls` and `midstream`
shapes change what can be judged (record sizes instead of packets; sessions whose CONNECT was
not captured), so they have no ground truth: only the reports of every way are compared.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import struct
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEFAULT = Path("/tmp/mqtt-keepalive-bench/1m.pcap")
SIZES = {"1m": 1_000_000, "10m": 10_000_000}
"""Captures `--sizes` generates (beside DEFAULT), by frames."""

TSHARK = ["tshark", "-r", "{f}", "-Y", "mqtt", "-T", "fields", "-e", "frame.time_epoch",
          "-e", "tcp.stream", "-e", "mqtt.msgtype", "-e", "mqtt.kalive"]
ANALYZE = [sys.executable, "-m", "analyzer", "analyze", "{f}", "--format", "json", "-o", "{out}",
           "--fail-on", "never"]
BARE = [sys.executable, str(HERE / "bare_reader.py"), "{f}"]
FLOOR = [sys.executable, str(HERE / "floor.py"), "{f}"]
SCAPY = [sys.executable, "-c",
         ("import sys\nfrom scapy.utils import RawPcapReader\nn=0\n"
          "for _ in RawPcapReader(sys.argv[1]): n+=1\nprint(n)"), "{f}"]


def run(command: list[str], capture: Path, out: Path,
        env: dict[str, str] | None = None) -> tuple[float, float, float]:
    """Wall seconds, the peak RSS of its largest process and the peak summed PSS of its process
    tree (MiB) of one run of `command` (`env`: added to the environment)."""
    args = [a.format(f=capture, out=out) for a in command]
    start = time.perf_counter()
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env=dict(os.environ, **env) if env else None)
    peak = [0, 0]
    sampler = threading.Thread(target=_sample_tree, args=(proc.pid, peak), daemon=True)
    sampler.start()
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - start
    sampler.join()
    if os.waitstatus_to_exitcode(status) not in (0, 1):
        raise SystemExit(f"{args[0]} failed on {capture}")
    return elapsed, max(usage.ru_maxrss * 1024, peak[0]) / 2**20, peak[1] / 2**20


def _sample_tree(root: int, peak: list[int]) -> None:
    """Until `root` exits, every 50 ms: the largest RSS among it and its descendants (`peak[0]`),
    and their summed PSS (`peak[1]`: each page shared by n processes counts 1/n in each, so the
    sum is the memory the whole run holds, pages a forked worker shares with its parent once)."""
    page = os.sysconf("SC_PAGE_SIZE")
    while True:
        children: dict[int, list[int]] = {}
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    with open(f"/proc/{entry}/stat") as fh:
                        ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
                except (OSError, IndexError, ValueError):
                    continue
                children.setdefault(ppid, []).append(int(entry))
        largest, pss, todo = 0, 0, [root]
        while todo:
            pid = todo.pop()
            try:
                with open(f"/proc/{pid}/statm") as fh:
                    largest = max(largest, int(fh.read().split()[1]) * page)
                with open(f"/proc/{pid}/smaps_rollup") as fh:
                    pss += next(int(line.split()[1]) * 1024 for line in fh if line.startswith("Pss:"))
            except (OSError, IndexError, ValueError, StopIteration):
                if pid == root:
                    return  # it exited (and was reaped)
            todo += children.get(pid, [])
        peak[0], peak[1] = max(peak[0], largest), max(peak[1], pss)
        time.sleep(0.05)


def frames_in(capture: Path) -> int:
    """The capture's frames, counted a batch at a time where the format allows (a 10M-frame
    capture: seconds, not half a minute, before the first timed run)."""
    from analyzer.sources import open_capture

    with open_capture(str(capture)) as reader:
        if reader.batches_available:
            return sum(len(batch) for batch in reader.batches())
        return sum(1 for _ in reader)


def require_installed(script: str) -> None:
    """Exit with a message, not a traceback, when this Python cannot import the tool to time.
    Then make sure its bytecode is written, as `pip install` writes it: an editable install run
    with PYTHONDONTWRITEBYTECODE set would otherwise compile every module it imports, in every
    process, on every run (0.1 s a process that imports the analysis), which no installed copy
    does."""
    try:
        import analyzer  # timed as installed, so it must be importable here
    except ImportError:
        sys.exit(f"{script} times the installed tool, but {sys.executable} cannot import it: run "
                 "it with the Python it is installed for (after the quick start: . .venv/bin/activate)")
    import compileall

    for folder in analyzer.__path__:
        compileall.compile_dir(folder, quiet=1)


SHAPES = ("pcap", "pcapng", "sll2", "ipv6", "tls", "midstream", "snap96")
UNJUDGED_ALIKE = ("tls", "midstream")
"""Shapes whose copy cannot keep the ground truth."""


def shaped(capture: Path, shape: str) -> Path:
    """`capture` (Ethernet pcap) as pcapng, as Linux cooked v2, over IPv6 or TLS, cut, or each
    frame cut to 96 bytes, beside it, with its ground truth where the shape keeps it (the same
    frames, times and numbers; keep-alive needs only packet headers, which 96 bytes keep here)."""
    if shape == "pcap":
        return capture
    copy = capture.with_name(f"{capture.stem}-{shape}{'.pcapng' if shape == 'pcapng' else '.pcap'}")
    truth = capture.with_suffix(".truth.json")
    if (truth.exists() and shape not in UNJUDGED_ALIKE
            and not copy.with_suffix(".truth.json").exists()):
        shutil.copyfile(truth, copy.with_suffix(".truth.json"))
    if copy.exists():
        return copy
    from analyzer.sources import open_capture

    partial = copy.with_name(copy.name + ".part")
    skip = frames_in(capture) // 3 if shape == "midstream" else 0
    tls = _TLSWrap() if shape == "tls" else None
    with open_capture(str(capture)) as reader, open(partial, "wb") as out:
        if shape == "pcapng":  # a section, one Ethernet interface in nanoseconds, a block a frame
            out.write(struct.pack("<IIIHHqI", 0x0A0D0D0A, 28, 0x1A2B3C4D, 1, 0, -1, 28))
            out.write(struct.pack("<IIHHIHHB3xHHI", 1, 32, 1, 0, 0, 9, 1, 9, 0, 0, 32))
        else:
            snaplen = 96 if shape == "snap96" else 262144
            out.write(struct.pack("<IHHiIII", 0xA1B23C4D, 2, 4, 0, 0, snaplen, 276 if shape == "sll2" else 1))
        for batch in reader.batches():
            for i in range(len(batch)):
                _, ts, _, data, wire = batch.frame(i)
                if skip:
                    skip -= 1
                    continue
                if tls is not None:
                    data = tls.frame(data)
                    wire = len(data)
                if shape == "pcapng":
                    body = struct.pack("<IIIII", 0, ts >> 32, ts & 0xFFFFFFFF, len(data), wire) + data
                    body += bytes(-len(body) % 4)
                    out.write(struct.pack("<II", 6, 12 + len(body)) + body + struct.pack("<I", 12 + len(body)))
                elif shape == "sll2":  # Ethernet -> Linux cooked v2: protocol, interface, ARPHRD, packet type, address
                    data = data[12:14] + b"\0\0" + struct.pack("!iHBB", 1, 1, 0, 6) + data[6:12] + b"\0\0" + data[14:]
                    out.write(struct.pack("<IIII", ts // 10**9, ts % 10**9, len(data), wire + 6) + data)
                elif shape == "ipv6":  # IPv4 -> IPv6 (a TCP frame; the generator's have no options)
                    if data[12:14] == b"\x08\x00" and data[23] == 6:
                        total = int.from_bytes(data[16:18], "big")
                        prefix = bytes.fromhex("20010db8") + bytes(8)
                        data = (data[:12] + b"\x86\xdd" + struct.pack("!IHBB", 6 << 28, total - 20, 6, 64)
                                + prefix + data[26:30] + prefix + data[30:34] + data[34:])
                        wire += 20
                    out.write(struct.pack("<IIII", ts // 10**9, ts % 10**9, len(data), wire) + data)
                else:
                    data = data[:96] if shape == "snap96" else data
                    out.write(struct.pack("<IIII", ts // 10**9, ts % 10**9, len(data), wire) + data)
    partial.rename(copy)
    return copy


class _TLSWrap:
    """The generator's MQTT connections as MQTT over TLS 1.3 (AES-128-GCM), as seen without keys:
    the client's first data (its CONNECT) becomes a ClientHello, the broker's (CONNACK) a
    ServerHello with its protected handshake, and every later segment's bytes one application-data
    record of their length plus the AEAD's 17 (so a PINGREQ is a 19-byte record). Sequence and
    acknowledgement numbers move with the bytes added."""

    def __init__(self) -> None:
        def vec(size: int, body: bytes) -> bytes:
            return len(body).to_bytes(size, "big") + body

        def record(ctype: int, body: bytes) -> bytes:
            return struct.pack("!BHH", ctype, 0x0303, len(body)) + body

        def hello(kind: int, body: bytes) -> bytes:
            return record(22, bytes([kind]) + len(body).to_bytes(3, "big") + body)

        versions = struct.pack("!H", 43)
        self.client_hello = hello(1, b"\x03\x03" + bytes(32) + vec(1, bytes(32)) + vec(2, b"\x13\x01")
                                  + vec(1, b"\x00") + vec(2, versions + vec(2, vec(1, b"\x03\x04"))))
        self.server_hello = (hello(2, b"\x03\x03" + bytes(32) + vec(1, bytes(32)) + b"\x13\x01\x00"
                                   + vec(2, versions + vec(2, b"\x03\x04")))
                             + record(20, b"\x01") + record(23, bytes(2500)))
        self.record = record
        self.added: dict[bytes, int] = {}  # bytes added so far, by direction (addresses and ports)

    def frame(self, data: bytes) -> bytes:
        if data[12:14] != b"\x08\x00" or data[23] != 6 or 1883 not in struct.unpack("!HH", data[34:38]):
            return data
        way, back = data[26:38], data[30:34] + data[26:30] + data[36:38] + data[34:36]
        seq, ack = struct.unpack("!II", data[38:46])
        mine, theirs = self.added.get(way), self.added.get(back, 0)
        payload = data[54:]
        if payload:
            wrapped = (self.record(23, bytes(len(payload) + 17)) if mine is not None
                       else self.client_hello if data[36:38] == b"\x07\x5b" else self.server_hello)
            self.added[way] = (mine or 0) + len(wrapped) - len(payload)
            payload = wrapped
        ack = (ack + theirs) % (1 << 32) if data[47] & 0x10 else ack
        return (data[:16] + struct.pack("!H", 40 + len(payload)) + data[18:38]
                + struct.pack("!II", (seq + (mine or 0)) % (1 << 32), ack) + data[46:54] + payload)


def check_truth(capture: Path, report: Path) -> str:
    truth_file = capture.with_suffix(".truth.json")
    if not truth_file.exists():
        return "no ground truth"
    truth = Counter((v["rule_id"], v["client_id"]) for v in json.loads(truth_file.read_text())["violations"])
    found = Counter((f["rule_id"], f["client_id"]) for f in json.loads(report.read_text())["findings"]
                    if f["rule_id"] in {"KA101", "KA102", "KA201"})
    missed = sum((truth - found).values())
    extra = sum((found - truth).values())
    return f"planted {sum(truth.values())}, missed {missed}, extra {extra}"


TARGET_FRAMES_S = 700_000
TARGET_X_TSHARK = 15.0
"""The speed the default analysis is to reach on the 1M-frame capture."""
TARGET_RSS_MIB = 100
"""The peak memory of any process of any way of running the analysis, on every capture."""


def targets(name: str, frames_s: float, x_tshark: float | None, peak_mib: float) -> str:
    """The line that says whether the default analysis met the targets on capture `name`."""
    def verdict(met: bool) -> str:
        return "met" if met else "NOT met"

    parts = [f">= {TARGET_FRAMES_S:,} frames/s {verdict(frames_s >= TARGET_FRAMES_S)} "
             f"({frames_s:,.0f})"]
    if x_tshark is not None:
        parts.append(f">= {TARGET_X_TSHARK:g}x tshark {verdict(x_tshark >= TARGET_X_TSHARK)} "
                     f"({x_tshark:.1f}x)")
    parts.append(f"peak RSS <= {TARGET_RSS_MIB} MiB every way {verdict(peak_mib <= TARGET_RSS_MIB)} "
                 f"({peak_mib:.0f} MiB)")
    return f"{name}: targets (speed: set for 1M frames): " + "; ".join(parts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("captures", nargs="*", type=Path)
    parser.add_argument("--sizes", nargs="+", choices=sorted(SIZES),
                        help="generated captures to time (when no capture is named): 1m, 10m")
    parser.add_argument("--runs", type=int, help="runs per tool (default 3; 1 for 10m)")
    parser.add_argument("--frame-by-frame", action="store_true",
                        help="also time --jobs 1 frame by frame (MQTT_KEEPALIVE_COLUMNAR=false; "
                             "by default a capture of 8 MiB or more is read the columnar way)")
    parser.add_argument("--shape", choices=SHAPES, default="pcap",
                        help="time the captures in this shape (a copy made beside each)")
    args = parser.parse_args()
    require_installed("bench/run.py")
    generated = {DEFAULT.with_name(f"{size}.pcap"): SIZES[size] for size in (args.sizes or ["1m"])}
    captures = args.captures or list(generated)
    for capture in captures:
        if capture in generated and not capture.exists():
            capture.parent.mkdir(parents=True, exist_ok=True)
            subprocess.run([sys.executable, str(HERE / "generate.py"), str(capture),
                            "--frames", str(generated[capture])], check=True)
    captures = [shaped(capture, args.shape) for capture in captures]
    cores = os.cpu_count() or 1
    tools: dict[str, tuple[list[str], dict[str, str] | None]] = {
        f"analyze (--jobs {cores})": (ANALYZE, None), "analyze --jobs 1": (ANALYZE + ["--jobs", "1"], None),
        "scapy RawPcapReader": (SCAPY, None)}
    if args.shape == "pcap":
        tools["bare reader (framing only)"] = (BARE, None)
        tools[f"floor ({cores} processes)" if cores > 1 else "floor"] = (FLOOR, None)
    if args.frame_by_frame:
        tools["analyze --jobs 1, per frame"] = (ANALYZE + ["--jobs", "1"],
                                                {"MQTT_KEEPALIVE_COLUMNAR": "false"})
    if shutil.which("tshark"):
        tools["tshark -T fields"] = (TSHARK, None)
    print(f"{'capture':<16} {'tool':<28} {'median s':>9} {'frames/s':>10} {'x tshark':>9} "
          f"{'max RSS MiB':>12} {'tree PSS MiB':>13}")
    for capture in captures:
        frames = frames_in(capture)
        outs = {name: Path("/tmp/mqtt-keepalive-bench") / f"{capture.stem}.report{i}.json"
                for i, name in enumerate(tools)}
        DEFAULT.parent.mkdir(parents=True, exist_ok=True)
        times: dict[str, list[float]] = {t: [] for t in tools}
        rss: dict[str, float] = {t: 0.0 for t in tools}
        pss: dict[str, float] = {t: 0.0 for t in tools}
        runs = args.runs or (1 if frames > 5_000_000 else 3)
        for _ in range(runs):
            for name, (command, env) in tools.items():
                elapsed, largest, tree = run(command, capture, outs[name], env)
                times[name].append(elapsed)
                rss[name], pss[name] = max(rss[name], largest), max(pss[name], tree)
        tshark_median = statistics.median(times["tshark -T fields"]) if "tshark -T fields" in times else None
        for name in tools:
            median = statistics.median(times[name])
            ratio = f"{tshark_median / median:.1f}" if tshark_median else "-"
            print(f"{capture.name:<16} {name:<28} {median:>9.2f} {frames / median:>10,.0f} {ratio:>9} "
                  f"{rss[name]:>12.0f} {pss[name]:>13.0f}")
        default = next(name for name in tools if name.startswith("analyze (--jobs"))
        print(targets(capture.name, frames / statistics.median(times[default]),
                      tshark_median / statistics.median(times[default]) if tshark_median else None,
                      max(rss[name] for name in tools if name.startswith("analyze"))))
        floor = next((name for name in tools if name.startswith("floor")), None)
        if floor is not None:
            floor_s = statistics.median(times[floor])
            print(f"{capture.name}: the floor (the least of a keep-alive analysis split as the "
                  f"default splits it, in Python): {frames / floor_s:,.0f} frames/s"
                  + (f", {tshark_median / floor_s:.1f}x tshark" if tshark_median else ""))
        reports = [outs[name] for name in tools if name.startswith("analyze")]
        same = all(r.read_bytes() == reports[0].read_bytes() for r in reports[1:])
        print(f"{capture.name}: {frames:,} frames; analyzer vs ground truth: "
              f"{check_truth(capture, reports[0])}; the same report every way: {'yes' if same else 'NO'}")


if __name__ == "__main__":
    main()

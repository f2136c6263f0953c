"""Generate a synthetic broker-side MQTT capture of a given size, with its ground truth.

    python bench/generate.py OUT.pcap --frames 1000000 [--clients 2000] [--seed 7]

Many clients on one broker (10.0.0.1:1883), each with a TCP handshake, CONNECT/CONNACK (3.1.1 or
5.0), PUBLISHes (some spanning three segments, some sharing a segment with a PINGREQ), PINGREQ /
PINGRESP with jitter, ACKs, and a DISCONNECT + FIN at the end; plus background HTTP-like traffic on
port 80. A share of clients misbehave on purpose: late pingers (every 1.2 x K: KA101 each gap), and
silent clients (never ping: KA101 + KA102, and KA201 because the broker closes them only
1 s after 1.5 x K). The planted violations
are written to OUT.truth.json so a benchmark can check the analyzer found exactly those.
Deterministic for a given seed. Written with struct, not scapy, so a million frames take seconds.
"""

from __future__ import annotations

import argparse
import heapq
import json
import random
import struct
from pathlib import Path

NS = 1_000_000_000
BROKER = bytes([10, 0, 0, 1])
ETH = b"\x02\x00\x00\x00\x00\x01" + b"\x02\x00\x00\x00\x00\x02" + b"\x08\x00"


def _ip_tcp(src: bytes, sport: int, dst: bytes, dport: int, seq: int, ack: int, flags: int,
            payload: bytes) -> bytes:
    tcp = struct.pack("!HHIIBBHHH", sport, dport, seq % (1 << 32), ack % (1 << 32), 0x50, flags,
                      65535, 0, 0)
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 40 + len(payload), 0, 0x4000, 64, 6, 0, src, dst)
    return ETH + ip + tcp + payload


class Writer:
    """A pcap writer with nanosecond timestamps."""

    def __init__(self, path: Path) -> None:
        self.fh = path.open("wb")
        self.fh.write(struct.pack("<IHHiIII", 0xA1B23C4D, 2, 4, 0, 0, 262144, 1))
        self.frames = 0
        self.last_ns = 0

    def frame(self, ts_ns: int, data: bytes) -> int:
        ts_ns = max(ts_ns, self.last_ns)
        self.last_ns = ts_ns
        self.fh.write(struct.pack("<IIII", ts_ns // NS, ts_ns % NS, len(data), len(data)) + data)
        self.frames += 1
        return self.frames


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b, n = n & 0x7F, n >> 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _packet(first: int, body: bytes) -> bytes:
    return bytes([first]) + _varint(len(body)) + body


def connect(client_id: str, keep_alive: int, level: int) -> bytes:
    props = b"\x00" if level == 5 else b""
    cid = client_id.encode()
    return _packet(0x10, b"\x00\x04MQTT" + bytes([level, 0x02]) + struct.pack("!H", keep_alive)
                   + props + struct.pack("!H", len(cid)) + cid)


def publish(topic: str, size: int) -> bytes:
    t = topic.encode()
    return _packet(0x30, struct.pack("!H", len(t)) + t + b"x" * size)


PINGREQ, PINGRESP = b"\xc0\x00", b"\xd0\x00"


class Client:
    """One simulated device; `step()` emits its next exchange and returns when to call it again."""

    def __init__(self, idx: int, rng: random.Random, w: Writer, truth: list[dict], t0: int) -> None:
        self.idx, self.rng, self.w, self.truth = idx, rng, w, truth
        self.ip = bytes([10, 1, idx // 250 % 250, idx % 250 + 1])
        self.port = 20000 + idx % 40000
        self.kind = rng.choices(["ok", "subscriber", "late", "silent"], [80, 12, 5, 3])[0]
        self.k = rng.choice([10, 30, 60])
        self.level = 5 if rng.random() < 0.3 else 4
        self.cseq, self.sseq = rng.randrange(1 << 32), rng.randrange(1 << 32)
        self.state = "connect"
        self.last_client_ns = t0
        self.pings = 0

    def c2s(self, ts: int, payload: bytes, flags: int = 0x18) -> int:
        n = self.w.frame(ts, _ip_tcp(self.ip, self.port, BROKER, 1883, self.cseq, self.sseq, flags, payload))
        self.cseq += len(payload) + (1 if flags & 0x03 else 0)
        return n

    def s2c(self, ts: int, payload: bytes, flags: int = 0x18) -> int:
        n = self.w.frame(ts, _ip_tcp(BROKER, 1883, self.ip, self.port, self.sseq, self.cseq, flags, payload))
        self.sseq += len(payload) + (1 if flags & 0x03 else 0)
        return n

    def step(self, t: int) -> int | None:
        return getattr(self, f"_{self.state}")(t)

    def _connect(self, t: int) -> int:
        self.c2s(t, b"", 0x02)
        self.s2c(t + 50_000, b"", 0x12)
        self.c2s(t + 100_000, b"", 0x10)
        self.c2s(t + 150_000, connect(f"dev-{self.idx}", self.k, self.level))
        connack = b"\x20\x03\x00\x00\x00" if self.level == 5 else b"\x20\x02\x00\x00"
        self.s2c(t + 200_000, connack)
        self.last_client_ns = t + 150_000
        self.state = "run"
        if self.kind == "silent":
            self.state = "close_silent"
            return t + 150_000 + int(1.5 * self.k * NS) + NS
        return t + self._next_gap()

    def _next_gap(self) -> int:
        if self.kind == "late":
            return int(1.2 * self.k * NS)
        return int(self.k * self.rng.uniform(0.3, 0.9) * NS)

    def _run(self, t: int) -> int | None:
        gap = t - self.last_client_ns
        if self.kind == "late":
            self.truth.append({"rule_id": "KA101", "client_id": f"dev-{self.idx}", "gap_s": gap / NS})
        r = self.rng.random()
        if r < 0.45:
            self.c2s(t, PINGREQ)
            self.s2c(t + 80_000, PINGRESP)
            self.c2s(t + 120_000, b"", 0x10)
        elif r < 0.6:
            body = publish(f"t/{self.idx}", 2900)
            for i in range(3):
                self.c2s(t + i * 20_000, body[i * 980 : (i + 1) * 980] if i < 2 else body[1960:])
            self.s2c(t + 80_000, b"", 0x10)
            t += 40_000  # the packet ends in the third segment
        elif r < 0.75:
            self.c2s(t, publish(f"t/{self.idx}", 20) + PINGREQ)
            self.s2c(t + 80_000, PINGRESP)
        else:
            self.c2s(t, publish(f"t/{self.idx}", self.rng.randrange(10, 300)))
            self.s2c(t + 80_000, b"", 0x10)
        if self.kind == "subscriber":
            for j in range(3):
                self.s2c(t + 200_000 + j * 1000, publish(f"cmd/{self.idx}", 40))
            self.c2s(t + 300_000, b"", 0x10)
        self.last_client_ns = t
        self.pings += 1
        if self.pings >= 40 and self.rng.random() < 0.1:
            self.state = "disconnect"
        return t + self._next_gap()

    def _disconnect(self, t: int) -> None:
        if self.kind == "late":  # the DISCONNECT also comes 1.2 x K after the last packet
            self.truth.append({"rule_id": "KA101", "client_id": f"dev-{self.idx}",
                               "gap_s": (t - self.last_client_ns) / NS})
        self.c2s(t, b"\xe0\x00")
        self.c2s(t + 1000, b"", 0x11)
        self.s2c(t + 50_000, b"", 0x11)
        self.c2s(t + 100_000, b"", 0x10)

    def _close_silent(self, t: int) -> None:
        for rule in ("KA101", "KA102", "KA201"):
            self.truth.append({"rule_id": rule, "client_id": f"dev-{self.idx}",
                               "gap_s": (t - self.last_client_ns) / NS})
        self.s2c(t, b"", 0x11)
        self.c2s(t + 50_000, b"", 0x11)
        self.s2c(t + 100_000, b"", 0x10)


def background(w: Writer, rng: random.Random, t: int) -> None:
    """A short HTTP-like exchange on port 80: traffic the analyzer must skip cheaply."""
    ip = bytes([192, 168, 5, rng.randrange(1, 250)])
    port = rng.randrange(1024, 65000)
    w.frame(t, _ip_tcp(ip, port, BROKER, 80, 1, 1, 0x18, b"GET / HTTP/1.1\r\n\r\n"))
    w.frame(t + 30_000, _ip_tcp(BROKER, 80, ip, port, 1, 19, 0x18, b"HTTP/1.1 200 OK\r\n\r\n" + b"y" * 400))


def generate(out: Path, frames: int, clients: int, seed: int) -> dict:
    rng = random.Random(seed)
    w = Writer(out)
    truth: list[dict] = []
    t0 = 1_780_000_000 * NS
    heap: list[tuple[int, int]] = []
    population: list[Client] = []
    next_id = 0
    for _ in range(clients):
        population.append(Client(next_id, rng, w, truth, t0))
        heapq.heappush(heap, (t0 + rng.randrange(60 * NS), next_id))
        next_id += 1
    while w.frames < frames and heap:
        t, idx = heapq.heappop(heap)
        if rng.random() < 0.08:
            background(w, rng, t)
        nxt = population[idx].step(t)
        if nxt is not None:
            heapq.heappush(heap, (nxt, idx))
        else:  # the device reconnects on a new connection after a pause
            population.append(Client(next_id, rng, w, truth, t))
            heapq.heappush(heap, (t + rng.randrange(NS, 10 * NS), next_id))
            next_id += 1
    w.fh.close()
    censored(truth, [population[idx] for _, idx in heap], w.last_ns)
    return {"frames": w.frames, "clients": next_id, "seed": seed, "violations": truth}


def censored(truth: list[dict], open_clients: list[Client], end_ns: int) -> None:
    """Silences still open when the file ends count only once they passed a limit (+0.25 s)."""
    for client in open_clients:
        if client.state == "connect":
            continue
        silent = end_ns - client.last_client_ns
        limits = [("KA101", client.k)] + [(r, 1.5 * client.k) for r in ("KA102", "KA201")]
        for rule, limit_s in limits:
            if silent > (limit_s + 0.25) * NS:
                truth.append({"rule_id": rule, "client_id": f"dev-{client.idx}", "gap_s": silent / NS})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--frames", type=int, default=1_000_000)
    parser.add_argument("--clients", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    truth = generate(args.out, args.frames, args.clients, args.seed)
    args.out.with_suffix(".truth.json").write_text(json.dumps(truth))
    print(f"{args.out}: {truth['frames']} frames, {truth['clients']} client connections, "
          f"{len(truth['violations'])} planted violations")


if __name__ == "__main__":
    main()

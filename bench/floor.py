"""The floor under a pure-Python keep-alive analysis split over processes as `--jobs N` splits it.

    python bench/floor.py CAPTURE.pcap [--jobs N]     # N: default one per core

What the bare reader (`bare_reader.py`) does, plus the least a keep-alive verdict needs, in
`--jobs N` processes that each read the whole capture and keep a share of its connections, as
`analyzer.split` does (dealt here by their ports): for each connection on port 1883 or 8883, its
client's Keep Alive from the CONNECT, and for each client packet, or the connection's close,
whether the client had been silent for longer than it (KA101). Nothing else: a segment that is not
the next in its direction is dropped (after a loss, so is the rest of that direction), and there is
no session, no finding kept, no report, no other rule, no TLS, WebSocket, IPv6 or VLAN handling.
Classic little-endian pcap, Ethernet, IPv4 only.

`bench/run.py` times it beside the analyzer. The analysis does all of this and much more, in the
same split, so on the machine at hand it is no faster than this floor: a speed target above the
floor's is out of reach of an analysis that reads its frames in Python one by one (the record walk
alone, which every process of the split makes, is about a quarter of the floor's time). On the
benchmark's 1M-frame capture it counts 12,389 of the 12,412 KA101 planted (the other 23 are
silences the capture ends in, which it does not judge). Prints frames, MQTT packets and client
silences over K, summed over the processes.
"""

from __future__ import annotations

import argparse
import os
import struct
import sys
from multiprocessing import get_context

PORTS = (1883, 8883)
FRAC_NS = {b"\xd4\xc3\xb2\xa1": 1000, b"\x4d\x3c\xb2\xa1": 1}
"""Nanoseconds per fraction unit, by a little-endian pcap's magic (micro- or nanoseconds)."""
CHUNK = 2 << 20
NS = 1_000_000_000
SYN, FIN, RST = 0x02, 0x01, 0x04


def share(path: str, index: int, count: int) -> tuple[int, int, int]:
    """Frames, MQTT packets and client silences over K of the connections dealt to `index`."""
    record = struct.Struct("<IIII").unpack_from
    # ethertype, protocol, addresses, ports, sequence number
    headers = struct.Struct("!12xH9xB2x4s4sHHI").unpack_from
    frames = packets = late = 0
    # per connection (client endpoint first): next sequence number and bytes not yet framed per
    # direction (client, broker), the client's K in ns (0: no CONNECT yet), its last packet's time
    conns: dict[tuple[bytes, int, bytes, int], list] = {}
    with open(path, "rb") as fh:
        frac_ns = FRAC_NS[fh.read(24)[:4]]
        buf, pos = b"", 0
        while chunk := fh.read(CHUNK):
            buf, pos = buf[pos:] + chunk, 0
            end = len(buf)
            while pos + 16 <= end:
                sec, frac, incl, _orig = record(buf, pos)
                start = pos + 16
                if start + incl > end:
                    break
                pos = start + incl
                frames += 1
                if incl < 54:
                    continue
                ethertype, protocol, src, dst, sport, dport, seq = headers(buf, start)
                if ethertype != 0x0800 or protocol != 6:
                    continue
                if dport in PORTS:
                    key, side = (src, sport, dst, dport), 0
                elif sport in PORTS:
                    key, side = (dst, dport, src, sport), 1
                else:
                    continue
                if (sport ^ dport) % count != index:
                    continue
                ts = sec * NS + frac * frac_ns
                tcp = start + 14 + (buf[start + 14] & 15) * 4
                flags = buf[tcp + 13]
                data = tcp + (buf[tcp + 12] >> 4) * 4
                conn = conns.get(key)
                if flags & SYN:
                    if conn is None:
                        conn = conns[key] = [0, 0, b"", b"", 0, ts]
                    conn[side] = (seq + 1) & 0xFFFFFFFF
                    continue
                if conn is None:
                    continue
                if flags & (FIN | RST):
                    if conn[4] and ts - conn[5] > conn[4]:
                        late += 1
                    del conns[key]
                    continue
                size = pos - data
                if size <= 0 or seq != conn[side]:
                    continue
                conn[side] = (seq + size) & 0xFFFFFFFF
                left = conn[2 + side]
                stream, at, stop = (left + buf[data:pos], 0, len(left) + size) if left else (buf, data, pos)
                # the bare reader's framing, inline as there (a call a segment would be timed too)
                while at + 2 <= stop:  # fixed header: type byte, remaining length (1 to 4 bytes)
                    length, shift, i = 0, 0, at + 1
                    while i < stop and i < at + 5:
                        byte = stream[i]
                        length |= (byte & 127) << shift
                        shift += 7
                        i += 1
                        if byte < 128:
                            break
                    else:
                        break
                    if i + length > stop:
                        break
                    packets += 1
                    if side == 0:
                        if stream[at] >> 4 == 1 and length >= 10:  # CONNECT: K after name, level, flags
                            name = int.from_bytes(stream[i:i + 2], "big")
                            conn[4] = int.from_bytes(stream[i + name + 4:i + name + 6], "big") * NS
                        elif conn[4] and ts - conn[5] > conn[4]:
                            late += 1
                        conn[5] = ts
                    at = i + length
                conn[2 + side] = stream[at:stop] if at < stop else b""
    return frames, packets, late


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("capture")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    with open(args.capture, "rb") as fh:
        if fh.read(4) not in FRAC_NS:
            raise SystemExit(f"{args.capture}: not a little-endian pcap")
    if args.jobs == 1:
        results = [share(args.capture, 0, 1)]
    else:
        with get_context("fork").Pool(args.jobs) as pool:
            results = pool.starmap(share, [(args.capture, i, args.jobs) for i in range(args.jobs)])
    frames = results[0][0]
    packets = sum(r[1] for r in results)
    late = sum(r[2] for r in results)
    print(f"{frames} frames, {packets} MQTT packets, {late} client silences over K "
          f"({args.jobs} process{'es' if args.jobs > 1 else ''})")


if __name__ == "__main__":
    sys.exit(main())

"""The floor for a pure-Python reader: pcap records, headers and MQTT framing, nothing judged.

    python bench/bare_reader.py CAPTURE.pcap

Reads a classic little-endian pcap (Ethernet, IPv4) in 2 MiB chunks with one `struct.unpack_from` per record
header and one per Ethernet/IPv4/TCP header, keeps the bytes each direction of a TCP connection
on port 1883 or 8883 has not framed yet, and counts the MQTT packets it frames. No reassembly
(segments are taken in capture order), no sessions, no rules. `bench/run.py` times it beside the
analyzer, so that the table says how fast plain Python gets through the same file on the machine
at hand, whatever that machine is. Prints frames and MQTT packets.
"""

from __future__ import annotations

import struct
import sys

PORTS = (1883, 8883)
CHUNK = 2 << 20


def main(path: str) -> None:
    record = struct.Struct("<IIII").unpack_from
    headers = struct.Struct("!12xH9xB2x4s4sHH").unpack_from  # ethertype, protocol, IPs, ports
    frames = packets = 0
    pending: dict[tuple[bytes, int, bytes, int], bytes] = {}
    with open(path, "rb") as fh:
        if fh.read(4) not in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1"):  # micro- or nanoseconds
            print(f"{path}: not a little-endian pcap", file=sys.stderr)
            sys.exit(2)
        fh.read(20)
        buf, pos = b"", 0
        while chunk := fh.read(CHUNK):
            buf, pos = buf[pos:] + chunk, 0
            end = len(buf)
            while pos + 16 <= end:
                incl = record(buf, pos)[2]
                start = pos + 16
                if start + incl > end:
                    break
                pos = start + incl
                frames += 1
                if incl < 54:
                    continue
                ethertype, protocol, src, dst, sport, dport = headers(buf, start)
                if ethertype != 0x0800 or protocol != 6 or (sport not in PORTS and dport not in PORTS):
                    continue
                tcp = start + 14 + (buf[start + 14] & 15) * 4
                data = tcp + (buf[tcp + 12] >> 4) * 4
                if data >= pos:
                    continue
                key = (src, sport, dst, dport)
                left = pending.pop(key, b"")
                stream, at, stop = (left + buf[data:pos], 0, len(left) + pos - data) if left else (buf, data, pos)
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
                    at = i + length
                if at < stop:
                    pending[key] = stream[at:stop]
    print(f"{frames} frames, {packets} MQTT packets")


if __name__ == "__main__":
    main(sys.argv[1])

"""The same traffic, captured differently, gives the same verdicts.

Real recorded captures are rewritten the way other capture setups would have written them: every
frame captured twice (tcpdump -i any on a bridge), frames reordered, a Linux cooked (SLL2) or raw-IP
link layer, Ethernet padding, the pcapng format, gzip. The findings (rule, gap, limit) must not
change; only frame numbers may, where frames were added.
"""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import pytest

from analyzer import analyze
from analyzer.sources import open_capture

CAPTURES = Path(__file__).resolve().parents[2] / "captures"
NS = 1_000_000_000


def records(name: str) -> tuple[int, list[tuple[int, bytes]]]:
    with open_capture(str(CAPTURES / name)) as reader:
        frames = [(ts, data) for _, ts, _, data, _ in reader]
        return next(iter(reader.linktypes)), frames


def write_pcap(path: Path, linktype: int, frames: list[tuple[int, bytes]]) -> Path:
    out = [struct.pack("<IHHiIII", 0xA1B23C4D, 2, 4, 0, 0, 262144, linktype)]
    for ts, data in frames:
        out.append(struct.pack("<IIII", ts // NS, ts % NS, len(data), len(data)) + data)
    path.write_bytes(b"".join(out))
    return path


def write_pcapng(path: Path, linktype: int, frames: list[tuple[int, bytes]]) -> Path:
    def block(btype: int, body: bytes) -> bytes:
        body += b"\x00" * (-len(body) % 4)
        return struct.pack("<II", btype, len(body) + 12) + body + struct.pack("<I", len(body) + 12)

    tsresol = struct.pack("<HHB3x", 9, 1, 9) + b"\x00" * 4  # if_tsresol = 10^-9, then opt_endofopt
    out = [block(0x0A0D0D0A, struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1)),
           block(1, struct.pack("<HHI", linktype, 0, 0) + tsresol)]
    for ts, data in frames:
        out.append(block(6, struct.pack("<IIIII", 0, ts >> 32, ts & 0xFFFFFFFF, len(data), len(data)) + data))
    path.write_bytes(b"".join(out))
    return path


def verdicts(path: Path) -> list[tuple[str, float | None, float | None]]:
    report = analyze([str(path)])
    assert report.captures[0].error is None
    return sorted((f.rule_id, f.gap_s and round(f.gap_s, 3), f.limit_s) for f in report.findings)


def to_sll2(data: bytes) -> bytes:
    """Ethernet -> Linux cooked v2 (what `tcpdump -i any` writes with libpcap >= 1.10)."""
    return data[12:14] + b"\x00\x00" + struct.pack("!iHBB", 1, 1, 0, 6) + data[6:12] + b"\x00\x00" + data[14:]


def to_sll(data: bytes) -> bytes:
    """Ethernet -> Linux cooked v1 (`tcpdump -i any` with libpcap before 1.10)."""
    return struct.pack("!HHH", 0, 1, 6) + data[6:12] + b"\x00\x00" + data[12:14] + data[14:]


VARIANTS = {
    "every frame captured twice": lambda lt, fr: (lt, [f for f in fr for _ in (0, 1)]),
    "ack captured before its data": lambda lt, fr: (lt, _reorder(fr, _ack_after_data)),
    "ethernet padding": lambda lt, fr: (lt, [(ts, d + b"\x00" * 20) for ts, d in fr]),
    "linux cooked v2": lambda lt, fr: (276, [(ts, to_sll2(d)) for ts, d in fr]),
    "linux cooked v1": lambda lt, fr: (113, [(ts, to_sll(d)) for ts, d in fr]),
    "raw ip": lambda lt, fr: (101, [(ts, d[14:]) for ts, d in fr]),
    "802.1Q tag": lambda lt, fr: (lt, [(ts, d[:12] + b"\x81\x00\x00\x07" + d[12:]) for ts, d in fr]),
    "802.1ad and 802.1Q tags": lambda lt, fr: (
        lt, [(ts, d[:12] + b"\x88\xa8\x00\x64\x81\x00\x00\x07" + d[12:]) for ts, d in fr]),
    "three tags": lambda lt, fr: (
        lt, [(ts, d[:12] + b"\x88\xa8\x00\x64\x81\x00\x00\x07\x81\x00\x00\x08" + d[12:]) for ts, d in fr]),
}


def _tcp(data: bytes) -> tuple[bytes, int, int]:
    """(source IP and port, TCP payload length, TCP flags) of an Ethernet/IPv4-or-IPv6 frame."""
    if data[12:14] == b"\x08\x00":
        ihl, total = (data[14] & 15) * 4, struct.unpack_from("!H", data, 16)[0]
        tcp = 14 + ihl
        length = total - ihl - (data[tcp + 12] >> 4) * 4
        return data[26:30] + data[tcp : tcp + 2], length, data[tcp + 13]
    tcp = 14 + 40
    length = struct.unpack_from("!H", data, 18)[0] - (data[tcp + 12] >> 4) * 4
    return data[22:38] + data[tcp : tcp + 2], length, data[tcp + 13]


def _ack_after_data(a: bytes, b: bytes) -> bool:
    """`a` carries data and `b` is the other side's bare ACK (of it): no data, no FIN, SYN or RST."""
    (src_a, len_a, _), (src_b, len_b, flags_b) = _tcp(a), _tcp(b)
    return len_a > 0 and len_b == 0 and flags_b == 0x10 and src_a != src_b


def _reorder(frames: list[tuple[int, bytes]], swap) -> list[tuple[int, bytes]]:
    """Swap adjacent frames where `swap` says a capture could have seen them the other way round.
    The frame moved forward is stamped a microsecond before the other, which keeps its own time."""
    out = list(frames)
    swapped = 0
    i = 0
    while i < len(out) - 1:
        (ts_a, a), (_, b) = out[i], out[i + 1]
        if swap(a, b):
            out[i], out[i + 1] = (ts_a - 1000, b), (ts_a, a)
            swapped += 1
            i += 2
        else:
            i += 1
    assert swapped, "the variant changed nothing"
    return out


@pytest.mark.parametrize("capture", ["late-pinger.pcap", "receive-only-subscriber.pcap",
                                     "no-pingresp.pcap", "split-and-coalesced.pcap"])
@pytest.mark.parametrize("variant", VARIANTS, ids=VARIANTS.keys())
def test_capture_variants_give_the_same_verdicts(tmp_path: Path, capture: str, variant: str) -> None:
    linktype, frames = records(capture)
    expected = verdicts(CAPTURES / capture)
    new_linktype, new_frames = VARIANTS[variant](linktype, frames)
    assert verdicts(write_pcap(tmp_path / "v.pcap", new_linktype, new_frames)) == expected


def test_pcapng_and_gzip_give_the_same_verdicts_and_frames(tmp_path: Path) -> None:
    linktype, frames = records("silent-client.pcap")
    expected = analyze([str(CAPTURES / "silent-client.pcap")]).findings
    ng = write_pcapng(tmp_path / "v.pcapng", linktype, frames)
    gz = tmp_path / "v.pcapng.gz"
    gz.write_bytes(gzip.compress(ng.read_bytes()))
    for path in (ng, gz):
        found = analyze([str(path)]).findings
        assert [(f.rule_id, f.frames, f.gap_s) for f in found] == [(f.rule_id, f.frames, f.gap_s) for f in expected]


def test_duplicated_frames_keep_the_first_transmission_time(tmp_path: Path) -> None:
    """A late copy of every client frame (a retransmission 0.4 s later) changes no gap."""
    linktype, frames = records("late-pinger.pcap")
    delayed = frames + [(ts + int(0.4 * NS), data) for ts, data in frames]
    delayed.sort(key=lambda f: f[0])
    assert verdicts(write_pcap(tmp_path / "v.pcap", linktype, delayed)) == verdicts(CAPTURES / "late-pinger.pcap")


def test_rotated_files_are_one_capture(tmp_path: Path) -> None:
    """A session split over two rotated files (`tcpdump -C`) is judged across the rotation, with
    frame numbers counted on as `mergecap -a` would."""
    linktype, frames = records("late-pinger.pcap")
    write_pcap(tmp_path / "dev.pcap1", linktype, frames[10:])
    write_pcap(tmp_path / "dev.pcap0", linktype, frames[:10])
    report = analyze([str(tmp_path)])
    expected = analyze([str(CAPTURES / "late-pinger.pcap")])
    assert [(f.rule_id, f.frames) for f in report.findings] == [(f.rule_id, f.frames) for f in expected.findings]
    assert len(report.sessions) == 1 and report.sessions[0].connect_frame == 4
    assert len(report.captures) == 1 and "rotated files" in report.captures[0].warnings[0]


def test_numbered_files_that_overlap_in_time_stay_separate(tmp_path: Path) -> None:
    """Two recordings of the same moment (copies, or two probes) are not one rotation."""
    linktype, frames = records("silent-client.pcap")
    write_pcap(tmp_path / "probe1.pcap", linktype, frames)
    write_pcap(tmp_path / "probe2.pcap", linktype, frames)
    report = analyze([str(tmp_path)])
    assert len(report.captures) == 2 and len(report.sessions) == 2
    assert sorted(f.rule_id for f in report.findings) == ["KA101", "KA101", "KA102", "KA102", "KA201", "KA201"]

"""Capture sources: pcap and pcapng parsing, decompression, stdin, directories and bad input.

Captures are built byte by byte with `struct` (helpers below), so each case says exactly what is on
disk; scapy writes some as an independent writer, and tshark and tcpdump, when installed, read the
same files as independent oracles for frame numbers and timestamps.
"""

from __future__ import annotations

import bz2
import gzip
import lzma
import os
import random
import selectors
import shutil
import struct
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from analyzer.errors import InputError
from analyzer.sources import CaptureReader, expand_inputs, open_capture

ROOT = Path(__file__).resolve().parents[2]
NS = 1_000_000_000
T0 = 1_700_000_000
ETH = bytes.fromhex("020000000002020000000001") + b"\x08\x00" + bytes(30)
Rec = tuple[int, int, int, bytes, int]

# --- capture builders ---------------------------------------------------------------------------


def pcap_file(
    records: list[tuple[int, bytes] | tuple[int, bytes, int]],
    *,
    order: str = "<",
    nano: bool = False,
    linktype: int = 1,
    snaplen: int = 65535,
    version: tuple[int, int] = (2, 4),
) -> bytes:
    """A classic pcap; records are (ts_ns, data[, wire_len])."""
    magic = 0xA1B23C4D if nano else 0xA1B2C3D4
    out = [struct.pack(order + "IHHiIII", magic, *version, 0, 0, snaplen, linktype)]
    for rec in records:
        ts, data = rec[0], rec[1]
        wire = rec[2] if len(rec) > 2 else len(data)  # type: ignore[misc]
        frac = ts % NS if nano else ts % NS // 1000
        out.append(struct.pack(order + "IIII", ts // NS, frac, len(data), wire) + data)
    return b"".join(out)


def pad4(data: bytes) -> bytes:
    return data + bytes(-len(data) % 4)


def block(btype: int, body: bytes, order: str = "<") -> bytes:
    body = pad4(body)
    length = 12 + len(body)
    return struct.pack(order + "II", btype, length) + body + struct.pack(order + "I", length)


def option(code: int, value: bytes, order: str = "<") -> bytes:
    return struct.pack(order + "HH", code, len(value)) + pad4(value)


def shb(order: str = "<", version: tuple[int, int] = (1, 0)) -> bytes:
    return block(0x0A0D0D0A, struct.pack(order + "IHHq", 0x1A2B3C4D, *version, -1), order)


def idb(
    linktype: int = 1,
    snaplen: int = 0,
    tsresol: int | None = None,
    tsoffset: int | None = None,
    order: str = "<",
) -> bytes:
    opts = b""
    if tsresol is not None:
        opts += option(9, bytes([tsresol]), order)
    if tsoffset is not None:
        opts += option(14, struct.pack(order + "q", tsoffset), order)
    if opts:
        opts += struct.pack(order + "HH", 0, 0)
    return block(1, struct.pack(order + "HHI", linktype, 0, snaplen) + opts, order)


def epb(iface: int, units: int, data: bytes, wire: int | None = None, order: str = "<") -> bytes:
    wire = len(data) if wire is None else wire
    head = struct.pack(order + "IIIII", iface, units >> 32, units & 0xFFFFFFFF, len(data), wire)
    return block(6, head + data, order)


def spb(data: bytes, wire: int | None = None, order: str = "<") -> bytes:
    wire = len(data) if wire is None else wire
    return block(3, struct.pack(order + "I", wire) + data, order)


def packet_block(iface: int, units: int, data: bytes, order: str = "<") -> bytes:
    head = struct.pack(
        order + "HHIIII", iface, 0, units >> 32, units & 0xFFFFFFFF, len(data), len(data)
    )
    return block(2, head + data, order)


def frame(n: int) -> bytes:
    """A distinct Ethernet frame per n, so a record cannot be confused with its neighbour."""
    return ETH + struct.pack("!I", n)


def write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def read_all(path: Path | str) -> tuple[list[Rec], CaptureReader]:
    with open_capture(str(path)) as reader:
        records = list(reader)
    return records, reader


def input_error(path: Path | str) -> str:
    with pytest.raises(InputError) as info:
        open_capture(str(path))
    return str(info.value)


def tshark_frames(path: Path) -> list[tuple[int, int | None, str]]:
    """(frame.number, frame.time_epoch in ns or None, frame.interface_id) as tshark reads them."""
    out = subprocess.run(
        [
            "tshark",
            "-r",
            str(path),
            "-T",
            "fields",
            "-e",
            "frame.number",
            "-e",
            "frame.time_epoch",
            "-e",
            "frame.interface_id",
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    rows = []
    for line in out.splitlines():
        number, epoch, iface = line.split("\t")
        rows.append((int(number), epoch_ns(epoch) if epoch else None, iface))
    return rows


def epoch_ns(text: str) -> int:
    """'1700000000.123456789' -> ns, exactly (no float on the way)."""
    sec, _, frac = text.partition(".")
    return int(sec) * NS + int(frac.ljust(9, "0")[:9])


needs_tshark = pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark not installed")
needs_tcpdump = pytest.mark.skipif(shutil.which("tcpdump") is None, reason="tcpdump not installed")


def rich_pcapng() -> tuple[bytes, list[Rec]]:
    """Three interfaces at different resolutions, every packet block type, blocks to skip, a
    non-packet record that still takes a frame number, and a big-endian second section."""
    t = T0 * NS
    blocks = [
        shb(),
        idb(1),  # if 0: default microseconds
        idb(1, tsresol=9),  # if 1: nanoseconds
        idb(101, tsresol=0x80 | 20, tsoffset=100),  # if 2: 2^-20 s, +100 s, raw IP
        epb(0, T0 * 10**6 + 123456, frame(1)),  # frame 1
        epb(1, T0 * NS + 987654321, frame(2)),  # frame 2
        block(0x12345678, b"unknown block type"),  # skipped, no frame number
        block(4, struct.pack("<HH", 0, 0)),  # NRB: skipped
        spb(frame(3)),  # frame 3: SPB, previous timestamp
        epb(2, (T0 << 20) + 12345, frame(4), wire=1500),  # frame 4
        block(5, struct.pack("<IIIHH", 0, 0, 0, 0, 0)),  # ISB: skipped
        block(0xBAD, struct.pack("<I", 32473) + b"abc"),  # custom: frame 5, not yielded
        packet_block(0, T0 * 10**6 + 5, frame(6)),  # frame 6: obsolete Packet Block
        block(0xA, struct.pack("<II", 0x544C534B, 4) + b"keys"),  # DSB: skipped
        shb(">"),
        idb(1, tsresol=3, order=">"),  # new section: if 0 is milliseconds
        epb(0, T0 * 1000 + 7, frame(7), order=">"),  # frame 7
    ]
    expected = [
        (1, t + 123456000, 1, frame(1), len(frame(1))),
        (2, t + 987654321, 1, frame(2), len(frame(2))),
        (3, t + 987654321, 1, frame(3), len(frame(3))),
        (4, t + 100 * NS + 12345 * NS // 2**20, 101, frame(4), 1500),
        (6, t + 5000, 1, frame(6), len(frame(6))),
        (7, t + 7_000_000, 1, frame(7), len(frame(7))),
    ]
    return b"".join(blocks), expected


# --- pcap ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("order", ["<", ">"])
@pytest.mark.parametrize("nano", [False, True])
def test_pcap_micro_and_nano_in_both_byte_orders(tmp_path: Path, order: str, nano: bool) -> None:
    frac = 123456789 if nano else 123456000
    data = pcap_file(
        [(T0 * NS + frac, frame(1)), (T0 * NS + 2 * NS, frame(2), 1514), (0, b"")],
        order=order,
        nano=nano,
        linktype=113,
    )
    records, reader = read_all(write(tmp_path, "x.bin", data))
    assert records == [
        (1, T0 * NS + frac, 113, frame(1), len(frame(1))),
        (2, T0 * NS + 2 * NS, 113, frame(2), 1514),
        (3, 0, 113, b"", 0),
    ]
    assert (reader.format, reader.linktypes, reader.compression) == ("pcap", {113}, None)
    assert (reader.warnings, reader.error, reader.bytes_read) == ([], None, len(data))


def test_pcap_linktype_keeps_low_16_bits_only(tmp_path: Path) -> None:
    fcs_bits = (4 << 28) | (1 << 26)  # "4-byte FCS present", in the upper bits of the field
    records, reader = read_all(write(tmp_path, "f", pcap_file([(0, ETH)], linktype=fcs_bits | 1)))
    assert reader.linktypes == {1} and records[0][2] == 1


def test_pcap_records_spanning_chunks_and_large_records(tmp_path: Path) -> None:
    rng = random.Random(5)
    sizes = [rng.choice((0, 1, 60, 1500, 9000, 65535, 200_000)) for _ in range(120)]
    payloads = [rng.randbytes(n) for n in sizes]  # about 3 MiB: several 1 MiB refills
    data = pcap_file([(T0 * NS + i * 1000, p) for i, p in enumerate(payloads)], snaplen=262144)
    records, reader = read_all(write(tmp_path, "big.pcap", data))
    assert [r[3] for r in records] == payloads
    assert [r[0] for r in records] == list(range(1, 121))
    assert reader.bytes_read == len(data) and reader.error is None


@needs_tcpdump
@pytest.mark.parametrize("nano", [False, True])
def test_pcap_timestamps_match_tcpdump(tmp_path: Path, nano: bool) -> None:
    rng = random.Random(1)
    stamps = sorted(
        T0 * NS + rng.randrange(10**12) // (1 if nano else 1000) * (1 if nano else 1000)
        for _ in range(50)
    )
    path = write(
        tmp_path, "t.pcap", pcap_file([(ts, frame(i)) for i, ts in enumerate(stamps)], nano=nano)
    )
    out = subprocess.run(
        ["tcpdump", "-r", str(path), "-tt", "-nn", "--time-stamp-precision=nano"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout.splitlines()
    records, _ = read_all(path)
    assert [r[1] for r in records] == [epoch_ns(line.split()[0]) for line in out] == stamps


def test_scapy_written_pcap_and_pcapng_are_read_back(tmp_path: Path) -> None:
    scapy_all = pytest.importorskip("scapy.all")
    utils = pytest.importorskip("scapy.utils")
    pkts = []
    for i in range(5):
        pkt = (
            scapy_all.Ether()
            / scapy_all.IP(src="10.0.0.2", dst="10.0.0.1")
            / scapy_all.TCP(sport=40000 + i, dport=1883)
            / scapy_all.Raw(b"\xc0\x00")
        )
        pkt.time = T0 + i + 0.25
        pkts.append(pkt)
    utils.wrpcap(str(tmp_path / "s.pcap"), pkts)
    utils.wrpcapng(str(tmp_path / "s.pcapng"), pkts)
    for name, fmt in (("s.pcap", "pcap"), ("s.pcapng", "pcapng")):
        records, reader = read_all(tmp_path / name)
        assert reader.format == fmt and reader.linktypes == {1}
        assert [r[3] for r in records] == [bytes(p) for p in pkts]
        assert [r[1] for r in records] == [(T0 + i) * NS + NS // 4 for i in range(5)]


# --- pcapng -------------------------------------------------------------------------------------


def test_pcapng_interfaces_sections_and_block_types(tmp_path: Path) -> None:
    data, expected = rich_pcapng()
    records, reader = read_all(write(tmp_path, "rich", data))
    assert records == expected
    assert (reader.format, reader.linktypes) == ("pcapng", {1, 101})
    assert (reader.warnings, reader.error, reader.bytes_read) == ([], None, len(data))


@needs_tshark
def test_pcapng_frame_numbers_and_timestamps_match_tshark(tmp_path: Path) -> None:
    path = write(tmp_path, "rich.pcapng", rich_pcapng()[0])
    records, _ = read_all(path)
    oracle = tshark_frames(path)
    # tshark numbers the custom block too (frame 5, no interface); we skip it but keep numbering
    packets = [(n, ts) for n, ts, iface in oracle if iface]
    assert [r[0] for r in records] == [n for n, _ in packets]
    assert len(oracle) == records[-1][0]
    for (n, ts), rec in zip(packets, records, strict=True):
        if ts is not None:  # tshark shows no time for the Simple Packet Block
            assert rec[1] == ts, f"frame {n}"


def test_simple_packet_block_timestamp_and_snaplen(tmp_path: Path) -> None:
    data = b"".join(
        [
            shb(),
            idb(1, snaplen=20),
            spb(frame(1)[:20], wire=60),  # before any timestamp: 0
            epb(0, T0 * 10**6, frame(2)[:20], wire=60),
            spb(frame(3)[:20], wire=60),  # the previous frame's timestamp
        ]
    )
    records, _ = read_all(write(tmp_path, "spb", data))
    assert [(r[0], r[1], r[3], r[4]) for r in records] == [
        (1, 0, frame(1)[:20], 60),
        (2, T0 * NS, frame(2)[:20], 60),
        (3, T0 * NS, frame(3)[:20], 60),
    ]


@pytest.mark.parametrize(
    ("tsresol", "tsoffset", "units", "expected"),
    [
        (None, None, 1_500_000, 1_500_000_000),
        (0, None, 3, 3 * NS),  # seconds
        (12, None, 1_999_999_999_999, 1_999_999_999),  # picoseconds: rounded down
        (0x80 | 10, None, 1536, 1_500_000_000),  # 2^-10 s
        (0x80 | 30, None, 1, 0),  # under a nanosecond: rounded down
        (6, -5, 10**6, -4 * NS),  # negative offset
    ],
)
def test_if_tsresol_and_if_tsoffset(
    tmp_path: Path, tsresol: int | None, tsoffset: int | None, units: int, expected: int
) -> None:
    data = shb() + idb(1, tsresol=tsresol, tsoffset=tsoffset) + epb(0, units, ETH)
    records, _ = read_all(write(tmp_path, "r", data))
    assert records[0][1] == expected


def test_unpadded_block_length_is_rounded_up_like_wireshark(tmp_path: Path) -> None:
    odd = frame(2)[:43]
    body = struct.pack("<IIIII", 0, 0, 2, len(odd), len(odd)) + odd
    unpadded = 12 + len(body)  # 75: the length fields leave the padding out
    bad = struct.pack("<II", 6, unpadded) + pad4(body) + struct.pack("<I", unpadded)
    data = shb() + idb() + epb(0, 1, frame(1)) + bad + epb(0, 3, frame(3))
    records, reader = read_all(write(tmp_path, "u", data))
    assert [r[3] for r in records] == [frame(1), odd, frame(3)]
    assert (
        reader.error is None and len(reader.warnings) == 1 and "multiple of 4" in reader.warnings[0]
    )


# --- compression, stdin, directories ----------------------------------------------------------

COMPRESSORS: dict[str, Callable[[bytes], bytes]] = {
    "gzip": gzip.compress,
    "bz2": bz2.compress,
    "xz": lzma.compress,
}


@pytest.mark.parametrize("compression", sorted(COMPRESSORS))
@pytest.mark.parametrize("fmt", ["pcap", "pcapng"])
def test_compressed_captures(tmp_path: Path, compression: str, fmt: str) -> None:
    if fmt == "pcap":
        plain = pcap_file([(T0 * NS + i * 1000, frame(i)) for i in range(3000)])
    else:
        plain = rich_pcapng()[0]
    expected, _ = read_all(write(tmp_path, "plain", plain))
    records, reader = read_all(write(tmp_path, "packed.pcap", COMPRESSORS[compression](plain)))
    assert records == expected
    assert (reader.format, reader.compression, reader.bytes_read) == (fmt, compression, len(plain))
    assert (reader.warnings, reader.error) == ([], None)


STDIN_SCRIPT = """
from analyzer.sources import open_capture
with open_capture("-") as reader:
    n = sum(1 for _ in reader)
print(n, reader.format, reader.compression, reader.bytes_read, reader.warnings, reader.error)
"""


def run_python(code: str, stdin: bytes) -> str:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", code],
        input=stdin,
        capture_output=True,
        env=env,
        timeout=60,
        check=True,
    )
    return done.stdout.decode().strip()


@pytest.mark.parametrize("compress", [None, "gzip", "xz"])
def test_stdin(compress: str | None) -> None:
    plain = pcap_file([(T0 * NS + i, frame(i)) for i in range(500)], nano=True)
    data = COMPRESSORS[compress](plain) if compress else plain
    assert run_python(STDIN_SCRIPT, data) == f"500 pcap {compress} {len(plain)} [] None"


def test_stdin_pcapng_cut_short() -> None:
    data, _ = rich_pcapng()
    out = run_python(STDIN_SCRIPT, data[:-10])
    assert out.startswith("5 pcapng None") and "cut short" in out


def test_stdin_yields_each_frame_as_it_arrives() -> None:
    """A pipe from `tcpdump -U -w -` must not wait for a full chunk before the first frame."""
    code = (
        "import sys\nfrom analyzer.sources import open_capture\n"
        "for rec in open_capture('-'):\n    print(rec[0], len(rec[3]), flush=True)\n"
    )
    data = pcap_file([(T0 * NS, frame(1)), (T0 * NS, frame(2))])
    first_end = 24 + 16 + len(frame(1))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env
    ) as proc:
        assert proc.stdin is not None and proc.stdout is not None
        for i in range(0, first_end, 7):  # dribble the header and first record in
            proc.stdin.write(data[i : min(i + 7, first_end)])
            proc.stdin.flush()
        with selectors.DefaultSelector() as sel:
            sel.register(proc.stdout, selectors.EVENT_READ)
            assert sel.select(timeout=20), "frame 1 not yielded before more input arrived"
        assert proc.stdout.readline() == f"1 {len(frame(1))}\n".encode()
        proc.stdin.write(data[first_end:])
        proc.stdin.close()
        assert proc.stdout.read() == f"2 {len(frame(2))}\n".encode()
    assert proc.returncode == 0


def test_expand_inputs(tmp_path: Path) -> None:
    cap = pcap_file([(0, ETH)])
    write(tmp_path, "d/b.pcap", cap)
    write(tmp_path, "d/a/deep/x.dump", rich_pcapng()[0])  # no telling extension
    write(tmp_path, "d/a/c.pcap.gz", gzip.compress(cap))
    write(tmp_path, "d/a/c.pcapng.xz", lzma.compress(rich_pcapng()[0]))
    write(tmp_path, "d/notes.txt", b"hello")
    write(tmp_path, "d/log.gz", gzip.compress(b"not a capture"))
    write(tmp_path, "d/empty.pcap", b"")  # named like a capture: taken, to be reported
    write(tmp_path, "d/cut.PCAPNG.bz2", b"BZh9")
    write(tmp_path, "d/z.pcap.zst", bytes.fromhex("28b52ffd") + bytes(20))  # unsupported: reported
    write(tmp_path, "d/text.cap", b"hello")
    write(tmp_path, "d/pcap.txt", b"hello")
    text = write(tmp_path, "readme.md", b"# not a capture")
    d = tmp_path / "d"
    assert expand_inputs([str(text), str(d), "-"]) == [
        str(text),
        str(d / "a/c.pcap.gz"),
        str(d / "a/c.pcapng.xz"),
        str(d / "a/deep/x.dump"),
        str(d / "b.pcap"),
        str(d / "cut.PCAPNG.bz2"),
        str(d / "empty.pcap"),
        str(d / "text.cap"),
        str(d / "z.pcap.zst"),
        "-",
    ]
    with pytest.raises(InputError, match="no such file"):
        expand_inputs([str(tmp_path / "missing.pcap")])


# --- input that cannot be opened ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"", "empty file"),
        (b"Hello, world\n", "not a pcap or pcapng capture (starts with 0x48656c6c)"),
        (pcap_file([], version=(2, 2)), "unsupported pcap version 2.2"),
        (bytes.fromhex("34cdb2a1") + bytes(20), "unsupported pcap magic 0x34cdb2a1"),
        (pcap_file([])[:10], "pcap file header cut short"),
        (shb()[:8] + b"\x00\x00\x00\x00" + shb()[12:], "not a valid pcapng section header"),
        (shb(version=(2, 0)), "unsupported pcapng version 2.0"),
        (b"\x28\xb5\x2f\xfd" + bytes(40), "zstd-compressed"),
        (gzip.compress(b"plain text, not a capture"), "once gzip-decompressed"),
        (gzip.compress(b""), "empty file once gzip-decompressed"),
        (b"\x1f\x8b\x08\x00" + bytes(6) + b"\xff" * 40, "corrupt gzip data"),
    ],
)
def test_unusable_files_raise_input_error(tmp_path: Path, content: bytes, reason: str) -> None:
    assert reason in input_error(write(tmp_path, "in", content))


def test_missing_directory_and_unreadable(tmp_path: Path) -> None:
    assert input_error(tmp_path / "nope.pcap") == "no such file"
    assert input_error(tmp_path) == "is a directory"
    if os.geteuid() != 0:  # root reads anything
        path = write(tmp_path, "locked.pcap", pcap_file([]))
        path.chmod(0)
        assert input_error(path) == "permission denied"


# --- bad data inside a capture ----------------------------------------------------------------


def test_pcap_cut_short_in_record_header_and_body(tmp_path: Path) -> None:
    data = pcap_file([(T0 * NS, frame(i)) for i in range(3)])
    last = len(data) - 16 - len(frame(2))
    for keep in (5, 20):  # 5 of the last record's 16 header bytes; its header and 4 data bytes
        records, reader = read_all(write(tmp_path, f"cut{keep}", data[: last + keep]))
        assert [r[3] for r in records] == [frame(0), frame(1)]
        assert reader.error is None and reader.bytes_read == last
        assert reader.warnings == [
            f"capture cut short in the middle of a record after frame 2 (byte {last}); "
            "everything before it was read"
        ]


def test_pcap_corrupt_record_length(tmp_path: Path) -> None:
    good = pcap_file([(T0 * NS, frame(i)) for i in range(2)])
    data = good + struct.pack("<IIII", T0, 0, 0xFFFFFFF0, 60) + bytes(100)
    records, reader = read_all(write(tmp_path, "bad", data))
    assert [r[3] for r in records] == [frame(0), frame(1)]
    assert reader.error is not None
    assert "frame 3" in reader.error and f"byte {len(good)}" in reader.error
    assert reader.warnings == [] and reader.bytes_read == len(good)


def test_pcap_large_record_allowed_by_snaplen(tmp_path: Path) -> None:
    big = bytes(300_000)  # over 256 KiB, but the snaplen says such records are expected
    records, reader = read_all(write(tmp_path, "big", pcap_file([(0, big)], snaplen=1 << 20)))
    assert records[0][3] == big and reader.error is None


def _pcapng_with(bad_block: bytes) -> tuple[bytes, int]:
    good = shb() + idb() + epb(0, 1, frame(1)) + epb(0, 2, frame(2))
    return good + bad_block + epb(0, 3, frame(3)), len(good)


@pytest.mark.parametrize(
    ("bad_block", "reason"),
    [
        (struct.pack("<II", 6, 8) + bytes(8), "under 12"),
        (epb(0, 3, frame(9))[:-4] + struct.pack("<I", 999), "trailing copy"),
        (block(6, struct.pack("<IIIII", 0, 0, 3, 400, 400) + bytes(40)), "overruns"),
        (epb(7, 3, frame(9)), "undeclared interface 7"),
        (struct.pack("<II", 6, 0x7FFFFFF0) + bytes(64), "beyond any real block"),
        (
            block(1, struct.pack("<HHI", 1, 0, 0) + struct.pack("<HH", 9, 200)),
            "interface description",
        ),
    ],
)
def test_pcapng_corrupt_blocks(tmp_path: Path, bad_block: bytes, reason: str) -> None:
    data, offset = _pcapng_with(bad_block)
    records, reader = read_all(write(tmp_path, "bad", data))
    assert [r[3] for r in records] == [frame(1), frame(2)]
    assert reader.error is not None and reason in reader.error
    assert f"after frame 2 at byte {offset}" in reader.error


def test_pcapng_cut_short(tmp_path: Path) -> None:
    data, _ = _pcapng_with(b"")
    records, reader = read_all(write(tmp_path, "cut", data[:-9]))
    assert [r[0] for r in records] == [1, 2]
    assert reader.error is None and "cut short" in reader.warnings[0]


def read_batched(path: Path | str) -> tuple[list[Rec], CaptureReader, list[int]]:
    """The records as the columnar path reads them (`CaptureReader.batches`), and batch sizes."""
    with open_capture(str(path)) as reader:
        assert reader.batches_available
        batches = list(reader.batches())
    return [b.frame(i) for b in batches for i in range(len(b))], reader, [len(b) for b in batches]


def test_pcapng_batches_hold_the_records(tmp_path: Path) -> None:
    """Read in batches, a pcapng gives the same records, numbers and state as frame by frame:
    a batch ends where a frame number is skipped (a custom block), holds the link type of each
    frame where they differ, and the first frame is a batch of its own."""
    data, expected = rich_pcapng()
    records, reader, sizes = read_batched(write(tmp_path, "rich", data))
    assert records == expected
    assert sizes == [1, 3, 2]  # 1 | 2, 3, 4 (raw IP) | 6, 7 (after the custom block's 5)
    with open_capture(str(write(tmp_path, "rich", data))) as again:
        batches = list(again.batches())
    assert [b.linktype for b in batches] == [1, -1, 1]
    assert batches[1].linktypes.tolist() == [1, 1, 101]  # type: ignore[union-attr]
    assert (reader.warnings, reader.error, reader.bytes_read) == ([], None, len(data))


@pytest.mark.parametrize("cut", [None, -9, -40])
def test_pcapng_batches_of_bad_files_say_what_frame_by_frame_says(tmp_path: Path, cut: int | None) -> None:
    corrupt, _ = _pcapng_with(epb(7, 3, frame(9)))
    path = write(tmp_path, "bad", corrupt[:cut] if cut else corrupt)
    records, reader = read_all(path)
    batched, batch_reader, _ = read_batched(path)
    assert batched == records
    assert (batch_reader.warnings, batch_reader.error, batch_reader.bytes_read) == (
        reader.warnings, reader.error, reader.bytes_read)


def _long_pcapng(rng: random.Random, packets: int) -> bytes:
    """A pcapng of several megabytes that uses every block the batches must end at or step over,
    spread through it: custom blocks (a frame number and no packet), Simple and obsolete Packet
    Blocks, a second interface of another link type, skipped blocks, an unpadded block length,
    and a second section in the other byte order."""
    blocks = [shb(), idb(1), idb(101, tsresol=9)]
    order = "<"
    for i in range(packets):
        data = rng.randbytes(rng.randint(40, 600))
        kind = rng.random()
        if i == packets // 2:
            order = ">"
            blocks += [shb(">"), idb(1, tsresol=3, order=">")]
        if kind < 0.002 and order == "<":
            blocks.append(block(0xBAD, struct.pack("<I", 32473) + b"x"))
        elif kind < 0.004:
            blocks.append(spb(data, order=order))
        elif kind < 0.006:
            blocks.append(packet_block(0, T0 * 10**6 + i, data, order=order))
        elif kind < 0.01 and order == "<":
            blocks.append(epb(1, T0 * NS + i, data))
        elif kind < 0.012:
            blocks.append(block(0x12345678, b"skipped", order))
        else:
            blocks.append(epb(0, T0 * 10**6 + i, data, order=order))
    blocks.insert(40, unpadded_epb(0, 2, b"odd" * 3))
    return b"".join(blocks)


def unpadded_epb(iface: int, units: int, data: bytes) -> bytes:
    """An Enhanced Packet Block whose length fields leave the padding out (as some writers do)."""
    body = struct.pack("<IIIII", iface, units >> 32, units & 0xFFFFFFFF, len(data), len(data)) + data
    return struct.pack("<II", 6, 12 + len(body)) + pad4(body) + struct.pack("<I", 12 + len(body))


def _turns_pcapng(rng: random.Random, packets: int) -> bytes:
    """Two interfaces of different link types taking turns, every block unpadded (so that no
    block is one the batches' look-ahead takes)."""
    blocks = [shb(), idb(1), idb(113)]
    for i in range(packets):
        blocks.append(unpadded_epb(i % 2, T0 * 10**6 + i, rng.randbytes(rng.randint(40, 600) | 1)))
    return b"".join(blocks)


def test_long_pcapng_batches_say_what_frame_by_frame_says(tmp_path: Path) -> None:
    """Over many batches, plain, compressed, cut anywhere, or failing to decompress: the batches
    hold exactly the records the frame-by-frame walk yields, and leave the same warnings, error,
    byte count and link types."""
    rng = random.Random(5)
    data = _long_pcapng(rng, 16_000)
    assert len(data) > 4 << 20
    packed = bytearray(gzip.compress(data, compresslevel=1))
    crc = bytes(packed[:-8]) + bytes([packed[-8] ^ 0xFF]) + bytes(packed[-7:])
    xz = bytearray(lzma.compress(data))
    xz[len(xz) // 2 : len(xz) // 2 + 4096] = bytes(4096)
    inputs = {"plain": data, "gzip": bytes(packed), "crc.gz": crc, "cut.gz": bytes(packed[:len(packed) // 3]),
              "bad.xz": bytes(xz)}
    inputs.update({f"cut-{n}": data[:n] for n in rng.sample(range(28, len(data)), 6)})
    inputs["turns"] = _turns_pcapng(rng, 3_000)
    for name, content in inputs.items():
        path = write(tmp_path, name, content)
        records, reader = read_all(path)
        batched, batch_reader, sizes = read_batched(path)
        assert len(batched) == len(records) and batched == records, name
        assert (batch_reader.warnings, batch_reader.error, batch_reader.bytes_read,
                batch_reader.linktypes) == (reader.warnings, reader.error, reader.bytes_read,
                                            reader.linktypes), name
        if name == "plain":
            assert len(records) > 15_800 and reader.warnings and max(sizes) > 2_000  # ("unpadded")
        if name == "turns":
            assert len(records) == 3_000 and max(sizes) > 1_000


def test_a_pcapng_timestamp_out_of_range_is_taken_as_the_limit_with_a_warning(tmp_path: Path) -> None:
    """A corrupt Enhanced Packet Block's timestamp (here the year 300,000) is taken as the latest
    time the analysis keeps, on both paths, with one warning; the capture is still analysed, the
    same way frame by frame and in batches (whose 64-bit columns could not hold it)."""
    from analyzer.engine import Options, analyze
    from analyzer.sources.pcapng import TS_LIMIT

    data = (shb() + idb() + epb(0, T0 * 10**6, frame(1)) + epb(0, 0xFFFFFFFF << 32, frame(2))
            + epb(0, 0xFFFFFFFF << 32, frame(3)) + epb(0, T0 * 10**6 + 5, frame(4)))
    path = write(tmp_path, "future.pcapng", data)
    records, reader = read_all(path)
    assert [r[1] for r in records] == [T0 * NS, TS_LIMIT, TS_LIMIT, T0 * NS + 5000]
    assert len(reader.warnings) == 1 and "frame 2: timestamp out of range" in reader.warnings[0]
    batched, batch_reader, _ = read_batched(path)
    assert batched == records and batch_reader.warnings == reader.warnings
    reports = [analyze([str(path)], Options(columnar=way)) for way in (True, False)]
    assert [(r.captures, list(r.sessions), list(r.findings)) for r in reports] == [
        (reports[1].captures, list(reports[1].sessions), list(reports[1].findings))] * 2
    assert reports[0].captures[0].frames == 4


def test_decompression_errors_stop_without_raising(tmp_path: Path) -> None:
    rng = random.Random(3)
    payloads = [rng.randbytes(200) for _ in range(10_000)]  # incompressible: a 2 MB stream
    plain = pcap_file([(0, p) for p in payloads])

    packed = bytearray(gzip.compress(plain))
    packed[-8] ^= 0xFF  # the CRC-32 in the gzip trailer: noticed only at the very end
    records, reader = read_all(write(tmp_path, "crc.gz", bytes(packed)))
    assert [r[3] for r in records] == payloads
    assert reader.error is not None and "CRC check failed" in reader.error

    records, reader = read_all(write(tmp_path, "cut.gz", bytes(packed[: len(packed) // 2])))
    assert 0 < len(records) < len(payloads) and [r[3] for r in records] == payloads[: len(records)]
    assert reader.error is None and "cut short" in reader.warnings[0]
    assert "compressed stream ends early" in reader.warnings[0]

    packed = bytearray(lzma.compress(plain))
    packed[len(packed) // 2 : len(packed) // 2 + 4096] = bytes(4096)
    records, reader = read_all(write(tmp_path, "bad.xz", bytes(packed)))
    assert 0 < len(records) < len(payloads) and [r[3] for r in records[:100]] == payloads[:100]
    assert reader.error is not None


# --- reader lifecycle ---------------------------------------------------------------------------


def test_close_midway_reports_bytes_consumed_and_ends_iteration(tmp_path: Path) -> None:
    data = pcap_file([(0, frame(i)) for i in range(10)])
    reader = open_capture(str(write(tmp_path, "c", data)))
    it = iter(reader)
    next(it), next(it)
    reader.close()
    assert reader.bytes_read == 24 + 2 * (16 + len(frame(0)))
    assert list(reader) == []


def test_reader_closes_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "c.gz", gzip.compress(pcap_file([(0, ETH)])))
    with open_capture(str(path)) as reader:
        streams = list(reader._closers)
    assert streams and all(s.closed for s in streams)


def test_mutated_captures_never_raise(tmp_path: Path) -> None:
    """Random byte damage anywhere after the file header: iteration ends, it never raises."""
    rng = random.Random(11)
    seeds = [rich_pcapng()[0], pcap_file([(T0 * NS + i, frame(i)) for i in range(40)])]
    path = tmp_path / "m"
    for n in range(600):
        data = bytearray(seeds[n % 2])
        for _ in range(rng.randint(1, 4)):
            at = rng.randrange(28, len(data))
            data[at : at + rng.randint(1, 4)] = rng.randbytes(rng.randint(0, 4))
        path.write_bytes(bytes(data[: rng.randint(28, len(data))] if n % 3 == 0 else data))
        records, reader = read_all(path)
        assert all(len(r) == 5 and isinstance(r[3], bytes) for r in records)
        assert [r[0] for r in records] == sorted({r[0] for r in records})
        assert reader.bytes_read <= len(data)
        batched, batch_reader, _ = read_batched(path)  # and the batches say the same
        assert batched == records
        assert (batch_reader.warnings, batch_reader.error, batch_reader.bytes_read) == (
            reader.warnings, reader.error, reader.bytes_read)


def test_a_buffer_of_many_short_records_is_cut_into_batches_of_at_most_max_frames(tmp_path: Path) -> None:
    """A batch's columns and its passes' arrays grow with its frames: a buffer of short records
    (a capture cut at a small snap length) is cut into batches of at most `MAX_BATCH_FRAMES`,
    which give the same records, numbered on, as frame by frame."""
    from analyzer.sources import pcap

    count = 3 * pcap.MAX_BATCH_FRAMES + 5
    body = b"".join(struct.pack("<IIII", 1_700_000_000 + i // 1000, (i % 1000) * 1000, 20, 60)
                    + bytes([i % 251]) * 20 for i in range(count))
    path = write(tmp_path, "short", struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1) + body)
    assert 36 * count < pcap.BATCH_BYTES  # (one read's buffer holds them all)
    records, reader, sizes = read_batched(path)
    assert max(sizes) == pcap.MAX_BATCH_FRAMES and sum(sizes) == count and len(sizes) == 4
    with open_capture(str(path)) as again:
        assert records == list(again)
    assert (reader.warnings, reader.error, reader.bytes_read) == ([], None, path.stat().st_size)


def test_a_pcapng_buffer_of_many_short_packets_is_cut_into_batches_of_at_most_max_frames(
        tmp_path: Path) -> None:
    """The same bound for pcapng (`editcap -F pcapng -s 96` of the benchmark's capture peaked at
    99.5 MiB with `--jobs 1` without it, 95.4 with it): batches of at most `MAX_BATCH_FRAMES`
    packets, with the same records, numbered on, as frame by frame."""
    from analyzer.sources import pcap

    count = 2 * pcap.MAX_BATCH_FRAMES + 5
    body = b"".join(epb(0, 1_700_000_000_000_000 + 1000 * i, bytes([i % 251]) * 20, wire=60)
                    for i in range(count))
    path = write(tmp_path, "short", shb() + idb() + body)
    assert len(body) < pcap.BATCH_BYTES  # (one read's buffer holds them all)
    records, reader, sizes = read_batched(path)
    assert max(sizes) == pcap.MAX_BATCH_FRAMES and sum(sizes) == count
    assert sizes[0] == 1 and len(sizes) == 4  # (the first packet is a batch of its own)
    with open_capture(str(path)) as again:
        assert records == list(again)
    assert (reader.warnings, reader.error, reader.bytes_read) == ([], None, path.stat().st_size)

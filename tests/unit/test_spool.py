"""Spooled sessions and findings: what goes in comes out, in order, sorted like `list.sort`, and
the streamed JSON document is byte for byte the one built in memory."""

from __future__ import annotations

import io
import random
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import pytest

from analyzer import spool as spool_module
from analyzer.engine import analyze
from analyzer.model import Severity
from analyzer.report.json import dumps, render_json
from analyzer.report.records import report_document
from analyzer.spool import Chain, Spool

CAPTURES = Path(__file__).resolve().parents[2] / "captures"


@pytest.mark.parametrize("n", [0, 1, 1023, 1024, 1025, 5000, 30_000])
def test_records_come_back_in_order_from_memory_and_disk(n: int) -> None:
    records = [(i, str(i)) for i in range(n)]
    spool = Spool(records, in_memory=100)
    assert len(spool) == n and bool(spool) == (n > 0)
    assert list(spool) == records
    assert list(spool) == records  # iterating twice reads the disk part again


@pytest.mark.parametrize("in_memory", [0, 6_000])
@pytest.mark.parametrize("n", [0, 7, 99, 100, 5_000, 12_345])
def test_sort_is_stable_and_equals_list_sort_beyond_memory(n: int, in_memory: int, monkeypatch) -> None:
    """Sorted externally (many runs to merge), or, up to `SORT_IN_MEMORY` records, in memory."""
    monkeypatch.setattr(spool_module, "RUN", 1000)
    monkeypatch.setattr(spool_module, "SORT_IN_MEMORY", in_memory)
    rng = random.Random(n)
    records = [(rng.randint(0, 20), i) for i in range(n)]
    spool = Spool(records, in_memory=100)
    spool.sort(key=lambda r: r[0])
    assert list(spool) == sorted(records, key=lambda r: r[0])
    assert len(spool) == n


def test_dataclass_records_survive_the_disk_and_other_processes() -> None:
    report = analyze([str(CAPTURES)])
    sessions = Spool(report.sessions, in_memory=2)
    assert list(sessions) == list(report.sessions)
    import pickle

    assert pickle.loads(pickle.dumps(sessions)) == list(report.sessions)


def test_chain_reads_parts_as_one() -> None:
    chain = Chain([Spool([1, 2], in_memory=1), [], (3,), Spool([4, 5, 6], in_memory=0)])
    assert len(chain) == 6 and list(chain) == [1, 2, 3, 4, 5, 6] and chain == [1, 2, 3, 4, 5, 6]


def test_streamed_json_equals_the_document_built_in_memory(monkeypatch) -> None:
    """Sessions and findings spilled to disk (tiny in-memory limit), rendered record by record:
    the text is exactly `json.dumps(document, indent=2)`."""
    monkeypatch.setattr(spool_module, "IN_MEMORY", 3)
    report = analyze([str(CAPTURES), "/nonexistent/file.pcap"])
    assert len(report.sessions) > 3 and len(report.findings) > 3
    streamed = io.StringIO()
    render_json(report, Severity.ERROR, streamed)
    assert streamed.getvalue() == dumps(report_document(report, Severity.ERROR), indent=2) + "\n"


def _numbered(start: int, n: int, in_memory: int | None = None) -> Spool:
    return Spool(((i, str(i)) for i in range(start, start + n)), in_memory=in_memory)


@pytest.mark.parametrize("into", [0, 10, 1023, 1024, 1500, 5000])
@pytest.mark.parametrize(("n", "in_memory"), [(0, None), (600, None), (1024, None), (1025, None),
                                             (4097, None), (3000, 0), (3000, 100)])
def test_absorb_appends_a_spool_in_order_and_empties_it(into: int, n: int, in_memory: int | None) -> None:
    """A spool absorbed after `into` records holds them next, in order, read through and in
    pieces; the spool absorbed is empty; more records appended still come last."""
    target = _numbered(0, into)
    source = _numbered(into, n, in_memory)
    target.absorb(source)
    target += [(-1, "after")]
    expected = [(i, str(i)) for i in range(into + n)] + [(-1, "after")]
    assert len(target) == len(expected)
    assert list(target) == expected
    assert [r for load in spool_module.pieces(target) for r in load()] == expected
    assert len(source) == 0 and list(source) == [] and source._file is None


def test_absorb_copies_what_is_on_disk_as_it_is(monkeypatch: pytest.MonkeyPatch) -> None:
    """Once this spool's memory is full, an absorbed spool's batches on disk are not read back."""
    target = _numbered(0, 2000)
    source = _numbered(2000, 5000)
    read = []
    real = Spool._read_batch
    monkeypatch.setattr(Spool, "_read_batch", lambda self, i: read.append(i) or real(self, i))
    target.absorb(source)
    assert not read
    monkeypatch.undo()
    assert list(target) == [(i, str(i)) for i in range(7000)]


def test_absorb_takes_any_sequence() -> None:
    target = _numbered(0, 5)
    target.absorb([(5, "5"), (6, "6")])
    target.absorb(Chain([_numbered(7, 3000)]))
    assert list(target) == [(i, str(i)) for i in range(3007)]


@dataclass
class _Row:
    """A record that tells when it is built."""

    a: int
    b: str
    built: ClassVar[list[int]] = []

    def __post_init__(self) -> None:
        self.built.append(self.a)


@pytest.mark.parametrize("n", [0, 5, spool_module.IN_MEMORY, spool_module.IN_MEMORY + 1,
                               spool_module.IN_MEMORY + spool_module.BATCH,
                               spool_module.IN_MEMORY + 3 * spool_module.BATCH + 17])
def test_a_spool_of_fields_is_the_spool_of_its_records(n: int) -> None:
    """`Spool.of_fields` holds what a spool of the built records holds, in the same batches
    (pieces) and the same bytes on disk, and the rows past its memory are never built."""
    built = _Row.built
    rows = [(i, f"r{i}") for i in range(n)]
    expected = Spool(_Row(*row) for row in rows)
    built.clear()
    got = Spool.of_fields(_Row, iter(rows))
    in_memory = min(n, spool_module.IN_MEMORY)
    tail = (n - in_memory) % spool_module.BATCH
    assert built == list(range(in_memory)) + list(range(n - tail, n))  # the head and the tail only
    assert len(got) == n and list(got) == list(expected)
    assert [len(load()) for load in got.pieces()] == [len(load()) for load in expected.pieces()]
    assert got._bounds == expected._bounds
    if got._file is not None:
        assert expected._file is not None
        got._file.seek(0)
        expected._file.seek(0)
        assert got._file.read() == expected._file.read()


@pytest.mark.parametrize(("n", "in_memory"), [(0, None), (5, None), (1024, None), (3000, 100),
                                             (5000, 0), (7000, None)])
def test_since_gives_the_records_from_a_position_reading_only_the_batches_that_hold_them(
        n: int, in_memory: int | None, monkeypatch: pytest.MonkeyPatch) -> None:
    """`since(k)` is `list(spool)[k:]` from any position, after appends and after an absorbed
    spool's batches were copied in; it reads back no batch that ends before position k (live
    mode asks it, every fifth of a second, for what came since it last looked)."""
    spool = _numbered(0, 2000)
    spool.absorb(_numbered(2000, n, in_memory))
    spool += [(i, str(i)) for i in range(2000 + n, 2300 + n)]
    expected = list(spool)
    read: list[int] = []
    real = Spool._read_batch
    monkeypatch.setattr(Spool, "_read_batch", lambda self, i: read.append(i) or real(self, i))
    for k in sorted({0, 1, 1023, 1024, 1025, 2047, 2048, 2500, len(expected) - 1, len(expected),
                     len(expected) + 5, *range(0, len(expected), 997)}):
        read.clear()
        assert spool.since(k) == expected[k:], k
        assert spool_module.since(expected, k) == expected[k:]
        if k >= spool_module.IN_MEMORY:  # the head is in memory; on disk, only from k's batch on
            assert all(spool._ends[i + 1] > k - spool_module.IN_MEMORY for i in read), (k, read)

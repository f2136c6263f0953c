"""Append-only record sequences that keep memory flat however long the capture.

A multi-GB capture yields hundreds of thousands of sessions and findings. Held as objects they
would make memory grow with the file; a `Spool` keeps the first few thousand in memory (small
captures never touch the disk) and pickles the rest, in batches, to an anonymous temporary file
that it reads back on every iteration. Reporters only need `len()` and repeated iteration, which a
spool and a `Chain` of spools both give.
"""

from __future__ import annotations

import bisect
import dataclasses
import heapq
import os
import pickle
import shutil
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from functools import lru_cache
from itertools import chain
from operator import attrgetter
from typing import IO, Any, Callable, Generic, TypeVar

T = TypeVar("T")

IN_MEMORY = 1024
"""Records kept as objects before the spool starts writing to disk."""
BATCH = 1024
"""Records per pickled batch: large enough that pickling costs little per record."""
RUN = 2048
"""Records sorted in memory at a time when a spool too large for memory is sorted."""
RUN_BATCH = 128
"""Records per pickled batch of a sorted run: the merge holds one batch of every run."""
SORT_IN_MEMORY = 8192
"""A spool of at most this many records is sorted in memory: read once, sorted, written once
(a few MiB for a moment), where the external sort reads and writes every record three times."""


class _Records:
    """Comparison and display shared by the sequences here: by their records, in order."""

    def __eq__(self, other: object) -> bool:
        """Equal to any list, tuple or sequence of this module holding the same records."""
        if isinstance(other, (list, tuple, _Records)):
            return len(self) == len(other) and list(self) == list(other)  # type: ignore[arg-type]
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"{type(self).__name__}({list(self)!r})"  # type: ignore[call-overload]


class Spool(_Records, Generic[T]):
    """An append-only, re-iterable sequence of picklable records, mostly on disk when large."""

    def __init__(self, records: Iterable[T] = (), *, in_memory: int | None = None) -> None:
        self._head: list[T] = []
        self._batch: list[T] = []
        self._file: IO[bytes] | None = None
        self._bounds = [0]
        """Where each batch written to the file starts, and where the last ends."""
        self._ends = [0]
        """How many records the file holds up to the end of each batch (`_bounds`' counts)."""
        self._spilled = 0
        self._in_memory = IN_MEMORY if in_memory is None else in_memory
        for record in records:
            self.append(record)

    @classmethod
    def of_fields(cls, record_class: type, rows: Iterable[tuple]) -> Spool[Any]:
        """A spool of `record_class` records given by their fields (`__init__` order), as
        `Spool(record_class(*row) for row in rows)` holds them; the rows past its memory go to
        disk as they are (`_dump`'s way for a batch of one dataclass), not built first."""
        spool: Spool[Any] = cls()
        head, limit = spool._head, spool._in_memory
        batch: list[tuple] = []
        for row in rows:
            if len(head) < limit:
                head.append(record_class(*row))
                continue
            batch.append(row)
            if len(batch) >= BATCH:
                spool._spill_fields(record_class, batch)
                batch = []
        spool._batch = [record_class(*row) for row in batch]
        return spool

    def _spill_fields(self, record_class: type, rows: list[tuple]) -> None:
        self._write(lambda file: _dump_fields(record_class, rows, file), len(rows))

    def append(self, record: T) -> None:
        if len(self._head) < self._in_memory:
            self._head.append(record)
            return
        self._batch.append(record)
        if len(self._batch) >= BATCH:
            self._spill()

    def __iadd__(self, records: Iterable[T]) -> Spool[T]:
        for record in records:
            self.append(record)
        return self

    def absorb(self, records: Sequence[T]) -> None:
        """Append `records`; a spool is left empty. A spool's records on disk are copied as they
        are, not read back and written again (when this spool's memory is full already, as it
        is once it has taken a full one's); records in memory, and any other sequence's, are
        appended one by one."""
        if not isinstance(records, Spool):
            self += records
            return
        for record in records._head:
            self.append(record)
        if records._file is not None and len(self._head) < self._in_memory:
            for i in range(len(records._bounds) - 1):
                self += records._read_batch(i)
        elif records._file is not None:
            if self._batch:
                self._spill()  # what this spool holds after its memory comes first
            file = self._at_end()
            base = file.tell()
            records._file.seek(0)
            shutil.copyfileobj(records._file, file, 1 << 20)
            file.flush()
            self._bounds += [base + end for end in records._bounds[1:]]
            self._ends += [self._spilled + end for end in records._ends[1:]]
            self._spilled += records._spilled
        for record in records._batch:
            self.append(record)
        records.close()
        records._head, records._batch, records._spilled = [], [], 0

    def _spill(self) -> None:
        self._write(lambda file: _dump(self._batch, file), len(self._batch))
        self._batch = []

    def _write(self, dump: Callable[[IO[bytes]], None], count: int) -> None:
        """A batch of `count` records, written by `dump`, to the end of the file."""
        file = self._at_end()
        dump(file)
        file.flush()  # read back by position (`_read_batch`), past the file object's buffer
        self._bounds.append(file.tell())
        self._spilled += count
        self._ends.append(self._spilled)

    def _at_end(self) -> IO[bytes]:
        """The spool's file (made at the first batch), positioned at its end."""
        if self._file is None:
            self._file = tempfile.TemporaryFile(prefix="mqtt-keepalive-")
        self._file.seek(0, 2)
        return self._file

    def __len__(self) -> int:
        return len(self._head) + self._spilled + len(self._batch)

    def __bool__(self) -> bool:
        return len(self) > 0

    def sort(self, key: Callable[[T], Any]) -> None:
        """Sort in place, stably. In memory when everything is there (refilled, it stays there)
        or there are at most `SORT_IN_MEMORY` records; otherwise an external merge sort: sorted
        runs of `RUN` records go to a temporary file, and a k-way merge of them refills the spool,
        so memory stays bounded by the number of runs, not of records."""
        if self._file is None or len(self) <= SORT_IN_MEMORY:
            records = sorted(self, key=key)
            self.close()
            self._head, self._batch, self._spilled = [], [], 0
            self += records
            return
        runs_file = tempfile.TemporaryFile(prefix="mqtt-keepalive-sort-")
        runs: list[list[int]] = []  # the file offset of every batch, per run
        run: list[T] = []
        for record in self:
            run.append(record)
            if len(run) == RUN:
                runs.append(_write_run(runs_file, run, key))
                run = []
        if run:
            runs.append(_write_run(runs_file, run, key))
        self.close()
        self._head, self._batch, self._spilled = [], [], 0
        readers = [_read_run(runs_file, offsets) for offsets in runs]
        merged = heapq.merge(*(_keyed(reader, i, key) for i, reader in enumerate(readers)))
        for _k, _i, _n, record in merged:
            self.append(record)
        runs_file.close()

    def __iter__(self) -> Iterator[T]:
        yield from self._head
        for i in range(len(self._bounds) - 1):
            yield from self._read_batch(i)
        yield from self._batch

    def since(self, start: int) -> list[T]:
        """The records from position `start` on, reading back only the file's batches that hold
        them: live mode asks for what came since it last looked, mostly still in memory."""
        if start < len(self._head):
            return list(self)[start:]
        at = start - len(self._head)
        if at >= self._spilled:
            return self._batch[at - self._spilled:]
        first = bisect.bisect_right(self._ends, at) - 1  # the batch that holds record `at`
        out = self._read_batch(first)[at - self._ends[first]:]
        for i in range(first + 1, len(self._bounds) - 1):
            out += self._read_batch(i)
        return out + self._batch

    def _read_batch(self, i: int) -> list[T]:
        """Batch `i` of the file, read by position: the file's offset is not moved, so processes
        forked with this spool can read it at the same time (`pieces`)."""
        assert self._file is not None
        start, end = self._bounds[i], self._bounds[i + 1]
        fd, parts = self._file.fileno(), []
        while start < end:
            data = os.pread(fd, end - start, start)
            if not data:
                raise EOFError(f"spool file ends at byte {start}, before {end}")
            parts.append(data)
            start += len(data)
        return _loads(b"".join(parts))

    def pieces(self) -> Iterator[Callable[[], list[T]]]:
        """The records in consecutive pieces of up to `BATCH`, each read only when called: for
        processes that each take some of the pieces (`analyzer.report.parallel`)."""
        head, tail = self._head, list(self._batch)
        for start in range(0, len(head), BATCH):
            yield lambda start=start: head[start:start + BATCH]  # type: ignore[misc]
        for i in range(len(self._bounds) - 1):
            yield lambda i=i: self._read_batch(i)  # type: ignore[misc]
        if tail:
            yield lambda: tail

    def __getitem__(self, index: int) -> T:
        """Records by position; slices and negative indices too (cheap only within memory)."""
        if isinstance(index, slice):
            return list(self)[index]  # type: ignore[return-value]
        if 0 <= index < len(self._head):
            return self._head[index]
        return list(self)[index]

    def __reduce__(self):  # to another process (jobs > 1, Dask): as a plain list
        return (list, (list(self),))

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        self._bounds = [0]
        self._ends = [0]


def _dump(batch: list, file: IO[bytes]) -> None:
    """Pickle a batch; a batch of one dataclass (sessions, findings) as field tuples, since
    pickling slotted dataclasses one by one looks their fields up again for every record."""
    cls = batch[0].__class__ if batch else None
    getter = _field_getter(cls) if cls is not None and dataclasses.is_dataclass(cls) else None
    if getter is not None and all(r.__class__ is cls for r in batch):
        _dump_fields(cls, [getter(r) for r in batch], file)
    else:
        _dump_fields(None, batch, file)


def _dump_fields(cls: type | None, rows: list, file: IO[bytes]) -> None:
    """What `_dump` writes: (the batch's dataclass, each record's fields), or (None, the records)."""
    pickle.dump((cls, rows), file, protocol=pickle.HIGHEST_PROTOCOL)


def _load(file: IO[bytes]) -> list:
    return _built(*load_fields(file))


def _loads(data: bytes) -> list:
    return _built(*pickle.loads(data))


def _built(cls: type | None, rows: list) -> list:
    """A batch's records from what `_dump` wrote."""
    return rows if cls is None else [cls(*row) for row in rows]


def load_fields(file: IO[bytes]) -> tuple[type | None, list]:
    """The next batch as `_dump` wrote it: (its dataclass, each record's fields in `__init__`
    order), or (None, the records); EOFError at the end. For a reader that changes some fields
    on the way, so that each record is built once."""
    return pickle.load(file)


@lru_cache(maxsize=None)
def _field_getter(cls: type) -> Callable[[Any], tuple] | None:
    """A getter of every field, in `__init__` order; None if some field is not an init argument."""
    fields = dataclasses.fields(cls)
    if len(fields) < 2 or not all(f.init for f in fields):
        return None
    return attrgetter(*(f.name for f in fields))


def _write_run(file: IO[bytes], run: list, key: Callable[[Any], Any]) -> list[int]:
    run.sort(key=key)
    offsets = []
    file.seek(0, 2)
    for start in range(0, len(run), RUN_BATCH):
        offsets.append(file.tell())
        _dump(run[start:start + RUN_BATCH], file)
    return offsets


def _read_run(file: IO[bytes], offsets: list[int]) -> Iterator[Any]:
    for offset in offsets:
        file.seek(offset)
        yield from _load(file)


def _keyed(records: Iterator[Any], run: int, key: Callable[[Any], Any]) -> Iterator[tuple]:
    """(key, run, position, record): ties between runs go to the earlier run, within a run to the
    earlier record, so the merge is as stable as `list.sort`; records are never compared."""
    for n, record in enumerate(records):
        yield key(record), run, n, record


class Chain(_Records, Sequence[T]):
    """Several sequences read as one, without copying them."""

    def __init__(self, parts: Iterable[Sequence[T]]) -> None:
        self._parts = [p for p in parts if len(p)]

    def __len__(self) -> int:
        return sum(len(p) for p in self._parts)

    def __iter__(self) -> Iterator[T]:
        return chain.from_iterable(self._parts)

    def __getitem__(self, index):  # type: ignore[override]
        return list(self)[index]

    def pieces(self) -> Iterator[Callable[[], list[T]]]:
        """As `Spool.pieces`, over every part in turn."""
        for part in self._parts:
            yield from pieces(part)


def since(records: Sequence[T], start: int) -> list[T]:
    """`list(records[start:])`, for a list or a `Spool` (which reads back only what it needs)."""
    if isinstance(records, Spool):
        return records.since(start)
    return list(records[start:])


def pieces(records: Sequence[T]) -> Iterator[Callable[[], list[T]]]:
    """`records` in consecutive pieces, each read only when called (`Spool.pieces`); the same
    pieces every time, in every process that holds the same records."""
    if isinstance(records, (Spool, Chain)):
        yield from records.pieces()
        return
    for start in range(0, len(records), BATCH):
        yield lambda start=start: list(records[start:start + BATCH])  # type: ignore[misc]

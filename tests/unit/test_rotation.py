"""Files whose names look like one rotation are cut into groups where they cannot continue each
other, so a fleet's numbered recordings are analysed in parallel, and never where the engine would
join them."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from analyzer import analyze, engine
from analyzer.engine import Options, _analyze_group
from analyzer.report.records import capture_record, finding_record, session_record
from analyzer.sources import rotation
from analyzer.sources.rotation import rotation_groups
from tests.unit.test_pipeline_variants import NS, records, write_pcap


def _fleet(folder: Path, count: int, name: str = "device-{:04d}.pcap", step_ns: int = NS) -> list[str]:
    """`count` recordings of the shipped late pinger, each starting `step_ns` after the one before
    (they overlap: each lasts minutes)."""
    linktype, frames = records("late-pinger.pcap")
    paths = []
    for i in range(count):
        path = folder / name.format(i + 1)
        write_pcap(path, linktype, [(ts + i * step_ns, data) for ts, data in frames])
        paths.append(str(path))
    return paths


def _document(results: list) -> list:
    return [(capture_record(summary), [session_record(s) for s in sessions],
             [finding_record(f) for f in findings]) for summary, sessions, findings in results]


def test_a_fleets_overlapping_recordings_are_groups_of_their_own(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """`device-0001.pcap` ... share a rotation key, but each starts before the one before it has
    ended: one group each, analysed by the pool with the report of one process."""
    paths = _fleet(tmp_path, 6)
    assert rotation_groups(list(reversed(paths))) == [[p] for p in paths]
    monkeypatch.setattr(engine, "POOL_MIN_BYTES", 0)
    one, two = analyze([str(tmp_path)], jobs=1), analyze([str(tmp_path)], jobs=2)
    assert len(one.captures) == 6 and len(one.sessions) == 6
    assert ([session_record(s) for s in two.sessions], [finding_record(f) for f in two.findings]) == (
        [session_record(s) for s in one.sessions], [finding_record(f) for f in one.findings])


def test_a_rotation_stays_one_group(tmp_path: Path) -> None:
    """Files that continue each other (`tcpdump -C`) are one group, in time order."""
    linktype, frames = records("late-pinger.pcap")
    second = write_pcap(tmp_path / "dev.pcap1", linktype, frames[10:])
    first = write_pcap(tmp_path / "dev.pcap0", linktype, frames[:10])
    assert rotation_groups([str(second), str(first)]) == [[str(first), str(second)]]


def test_files_stay_together_where_the_frames_read_prove_nothing(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """A file that starts after the frames read of the one before, but before that one ends: the
    group is not cut (the engine still tells them apart: two captures)."""
    linktype, frames = records("late-pinger.pcap")
    later = frames[5][0] - frames[0][0]
    monkeypatch.setattr(rotation, "SAMPLED_FRAMES", 3)
    a = write_pcap(tmp_path / "probe1.pcap", linktype, frames)
    b = write_pcap(tmp_path / "probe2.pcap", linktype, [(ts + later, data) for ts, data in frames])
    assert rotation_groups([str(a), str(b)]) == [[str(a), str(b)]]
    assert len(analyze([str(tmp_path)]).captures) == 2


@pytest.mark.parametrize("seed", range(12))
def test_groups_are_cut_only_where_the_engine_starts_a_new_capture(tmp_path: Path, seed: int,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Random numbered files cut from the shipped captures, some continuing each other, some
    overlapping, some far apart: analysing each group on its own gives what analysing all of them
    as one group gives (where the engine decides on its own where a capture ends)."""
    rng = random.Random(seed)
    monkeypatch.setattr(rotation, "SAMPLED_FRAMES", rng.choice([2, 5, 64]))
    shipped = ["late-pinger.pcap", "busy-publisher.pcap", "compliant-pinger.pcap"]
    linktype, frames = records(rng.choice(shipped))
    paths, at = [], 0
    for i in range(rng.randint(2, 6)):
        cut = sorted(rng.sample(range(1, len(frames)), 2))
        piece = frames[cut[0]:cut[1]]
        shift = at - piece[0][0]
        path = tmp_path / f"cap_{i:03d}.pcap"
        write_pcap(path, linktype, [(ts + shift, data) for ts, data in piece])
        paths.append(str(path))
        span = piece[-1][0] - piece[0][0]
        at += rng.choice([span, span + NS, span // 2, 0, 3600 * NS])  # continues, overlaps, far
    groups = rotation_groups(paths)
    assert sorted(p for g in groups for p in g) == sorted(paths)
    assert len({rotation._rotation_key(p) for p in paths}) == 1
    whole = _analyze_group(rotation._in_time_order(paths), Options())
    cut = [result for group in groups for result in _analyze_group(group, Options())]
    assert _document(cut) == _document(whole)

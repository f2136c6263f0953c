"""Memory follows open sessions: a finished session's objects are freed when it is reported.

Reference counting frees them only if they form no reference cycle; otherwise they wait for the
cyclic garbage collector, which a large capture runs less often (and then memory grows with the
file). The tests turn the collector off, analyse a capture whose sessions all end, and count
what is left.
"""

from __future__ import annotations

import gc
from pathlib import Path

import pytest

from analyzer.engine import Options, analyze
from analyzer.session.connection import Connection
from analyzer.session.timeline import SessionTimeline
from tests.unit.test_columnar_equivalence import generate


def _alive(kind: type) -> int:
    return sum(1 for obj in gc.get_objects() if isinstance(obj, kind))


@pytest.mark.parametrize("columnar", [False, True])
def test_finished_sessions_are_freed_without_the_collector(tmp_path: Path, columnar: bool) -> None:
    path = tmp_path / "fleet.pcap"
    generate(path, 20_000, 30, 11)  # devices disconnect and reconnect: many sessions end
    gc.collect()
    before = (_alive(Connection), _alive(SessionTimeline))
    gc.disable()
    try:
        report = analyze([str(path)], Options(columnar=columnar))
        assert len(report.sessions) > 30  # sessions ended and were reported along the way
        assert (_alive(Connection), _alive(SessionTimeline)) == before
    finally:
        gc.enable()


def test_the_collector_setting_is_restored(tmp_path: Path) -> None:
    path = tmp_path / "small.pcap"
    generate(path, 2_000, 5, 3)
    threshold = gc.get_threshold()
    analyze([str(path)])
    assert gc.get_threshold() == threshold

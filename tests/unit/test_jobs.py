"""`--jobs N`: the same report, in the same order, from worker processes as from one."""

from __future__ import annotations

from pathlib import Path

import analyzer.engine as engine
from analyzer import analyze

CAPTURES = Path(__file__).resolve().parents[2] / "captures"


def test_process_pool_gives_the_same_report(monkeypatch) -> None:
    monkeypatch.setattr(engine, "POOL_MIN_BYTES", 0)  # the shipped captures are small
    inputs = [str(CAPTURES)]
    calls: list[tuple[int, int]] = []
    one = analyze(inputs, jobs=1)
    two = analyze(inputs, jobs=2, progress=lambda done, total: calls.append((done, total)))
    assert two == one
    assert len(one.captures) == len(list(CAPTURES.glob("*.pcap")))
    assert calls and calls[-1][0] == calls[-1][1] > 0      # progress reached the total

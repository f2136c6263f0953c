"""`bench/perturb.py`: the altered copies it makes of a capture, and its run on a shipped one."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "bench"))

import perturb  # noqa: E402


def test_copies_drop_runs_of_frames_but_not_a_connections_last_ones() -> None:
    frames = [(n * 10_000_000, bytes([n])) for n in range(5)]
    ends = [False, False, True, False, True]           # frames 3 and 5 end their connections
    copies = dict(perturb.variants("drop", frames, ends))
    assert copies[(1, 1)] == frames[1:]
    assert copies[(3, 1)] is None and copies[(2, 2)] is None and copies[(5, 1)] is None
    assert copies[(4, 1)] == frames[:3] + frames[4:]
    assert len(copies) == 5 + 4 + 3


def test_copies_duplicate_swap_within_a_millisecond_and_resend_later() -> None:
    frames = [(0, b"a"), (500_000, b"b"), (2_000_000, b"c"), (2_100_000, b"d")]
    swaps = dict(perturb.variants("swap", frames, [False] * 4))
    assert set(swaps) == {(1, 1), (3, 1)}                    # b-c are 1.5 ms apart
    assert swaps[(1, 1)] == [frames[1], frames[0], frames[2], frames[3]]
    dups = dict(perturb.variants("dup", frames, [False] * 4))
    assert dups[(2, 0)] == [frames[0], frames[1], frames[1], frames[2], frames[3]]
    resent = dict(perturb.variants("resend", frames, [False] * 4))
    assert resent[(1, 3)] == frames + [(2_100_000, b"a")]    # a copy of a, stamped as d
    assert resent[(2, 1)] == frames[:3] + [(2_000_000, b"b")] + frames[3:]


def test_a_shipped_capture_keeps_its_verdicts_however_it_is_altered() -> None:
    run = subprocess.run([sys.executable, str(REPO / "bench" / "perturb.py"),
                          str(REPO / "captures" / "broker-closes-early.pcap")],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    lines = run.stdout.splitlines()
    assert [line.split(":")[0] for line in lines] == [
        f"broker-closes-early.pcap {kind}" for kind in perturb.KINDS]
    assert all(line.endswith(", 0 changed") for line in lines)
    assert "tail losses not run" in lines[0]

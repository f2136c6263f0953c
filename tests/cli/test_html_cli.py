"""`--html FILE` on analyze and check: one self-contained file with every finding."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("plotly")
CAPTURES = Path(__file__).resolve().parents[2] / "captures"


@pytest.mark.parametrize("command", ["analyze", "check"])
def test_html_report_is_written_with_every_finding(tmp_path: Path, command: str) -> None:
    html = tmp_path / "out" / "report.html"
    proc = subprocess.run(
        [sys.executable, "-m", "analyzer", command, str(CAPTURES / "silent-client.pcap"),
         str(CAPTURES / "late-pinger.pcap"), "--html", str(html), "--format", "json",
         "-o", str(tmp_path / "r.json")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1, proc.stderr
    text = html.read_text(encoding="utf-8")
    assert "Traceback" not in proc.stderr
    for rule, frames in [("KA102", "4-8"), ("KA201", "4-8"), ("KA101", "8-11")]:
        assert rule in text and frames in text
    assert 'src="http' not in text and "ka-silent-client" in text


def test_html_draws_a_rotated_capture_from_all_its_files(tmp_path: Path) -> None:
    """A capture rotated into two files is one capture to the analysis, and its session's chart
    is drawn from both files: the late pinger's four late pings, as from the single file."""
    import json

    import lxml.html

    from tests.unit.test_pipeline_variants import records, write_pcap

    linktype, frames = records("late-pinger.pcap")
    rotated = tmp_path / "ring"
    rotated.mkdir()
    write_pcap(rotated / "late_00000_20261125205942.pcap", linktype, frames[:12])
    write_pcap(rotated / "late_00001_20261125205947.pcap", linktype, frames[12:])
    html = tmp_path / "report.html"
    proc = subprocess.run([sys.executable, "-m", "analyzer", "analyze", str(rotated), "--html",
                           str(html)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr  # warnings only
    assert "rotated files analysed as one capture" in proc.stderr
    doc = lxml.html.document_fromstring(html.read_bytes())
    figure = json.loads(doc.xpath('//script[@id="fig-s-0"]')[0].text)
    late = [t for t in figure["data"] if t.get("name") == "silence ended by a PINGREQ"]
    assert sum(len(t["y"]) for t in late) == 4


def test_html_is_written_when_the_report_cannot_be(tmp_path: Path) -> None:
    """The main report's output cannot be written (exit 2, said once): the page still is."""
    html = tmp_path / "report.html"
    proc = subprocess.run(
        [sys.executable, "-m", "analyzer", "analyze", str(CAPTURES / "late-pinger.pcap"), "--html",
         str(html), "--format", "json", "-o", str(tmp_path / "missing" / "dir" / "r.json")],
        capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.count("cannot write") == 1
    assert "KA101" in html.read_text(encoding="utf-8")

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

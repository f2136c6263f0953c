"""Every shipped capture gives exactly the expected findings, with the right frames.

The captures were recorded from a real mosquitto (or the scripted broker) by `captures/record.py`;
`tests/scenarios/expected.toml` holds the verdicts, `captures/README.md` the reasons for them.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from analyzer import analyze
from analyzer.report.records import session_record

REPO = Path(__file__).resolve().parents[2]
EXPECTED = tomllib.loads((Path(__file__).with_name("expected.toml")).read_text())


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_shipped_capture_gives_exactly_the_expected_findings(name: str) -> None:
    report = analyze([str(REPO / "captures" / f"{name}.pcap")])
    found = sorted([f.rule_id, *f.frames] for f in report.findings)
    assert found == sorted(EXPECTED[name]["findings"])
    assert report.captures[0].error is None and report.captures[0].warnings == ()


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_shipped_capture_sessions_are_as_recorded(name: str) -> None:
    report = analyze([str(REPO / "captures" / f"{name}.pcap")])
    records = [session_record(s) for s in report.sessions]
    expected = EXPECTED[name]["sessions"]
    assert len(records) == len(expected)
    for record, want in zip(records, expected):
        got = {key: record[key] for key in want}
        if "client_id" in want and want["client_id"] == "":
            got["client_id"] = record["client_id"] or ""
        assert got == want


def test_every_shipped_capture_has_expectations_and_a_readme_row() -> None:
    shipped = {p.stem for p in (REPO / "captures").glob("*.pcap")}
    assert shipped == set(EXPECTED)
    readme = (REPO / "captures" / "README.md").read_text()
    assert all(f"`{name}.pcap`" in readme for name in shipped)

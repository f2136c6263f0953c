"""Every shipped capture gives exactly the expected findings, with the right frames.

The captures were recorded from a real mosquitto (or the scripted broker) by `captures/record.py`;
`tests/scenarios/expected.toml` holds the verdicts, `captures/README.md` the reasons for them.
A capture of MQTT over TLS names its key log (`keylog`), given to the analysis as `--tls-keylog`
would: its expected verdicts are those with the keys.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from analyzer import Options, analyze
from analyzer.model import Report
from analyzer.report.records import session_record

REPO = Path(__file__).resolve().parents[2]
EXPECTED = tomllib.loads((Path(__file__).with_name("expected.toml")).read_text())


def analyzed(name: str) -> Report:
    """The shipped capture `name` analysed with default options (and its key log, if it has one)."""
    keylog = EXPECTED[name].get("keylog")
    keylogs = (str(REPO / "captures" / keylog),) if keylog else ()
    return analyze([str(REPO / "captures" / f"{name}.pcap")], Options(tls_keylogs=keylogs))


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_shipped_capture_gives_exactly_the_expected_findings(name: str) -> None:
    report = analyzed(name)
    found = sorted([f.rule_id, *f.frames] for f in report.findings)
    assert found == sorted(EXPECTED[name]["findings"])
    assert report.captures[0].error is None and report.captures[0].warnings == ()


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_shipped_capture_sessions_are_as_recorded(name: str) -> None:
    report = analyzed(name)
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


def test_every_shipped_key_log_belongs_to_a_capture_that_names_it() -> None:
    keys = {p.name for p in (REPO / "captures").glob("*.keys")}
    named = {e["keylog"] for e in EXPECTED.values() if "keylog" in e}
    assert keys == named
    assert all((REPO / "captures" / k).with_suffix(".pcap").exists() for k in keys)


LOSSY_CASES = [
    *[(name, False, width) for name in sorted(EXPECTED) for width in (1, 2, 3)],
    *[(name, True, width) for name in sorted(EXPECTED) if "keylog" in EXPECTED[name] for width in (1, 2)],
]
"""Every shipped capture, read without keys (TLS judged by record sizes), and each TLS one with its
key log too (tshark decrypts each lossy copy: runs of three frames are left to the keyless cases)."""


@pytest.mark.parametrize(("name", "with_keys", "width"), LOSSY_CASES,
                         ids=[f"{n}-{'keys' if k else 'nokeys'}-{w}" for n, k, w in LOSSY_CASES])
def test_losing_frames_of_a_shipped_capture_adds_no_verdict(name: str, with_keys: bool, width: int,
                                                            tmp_path: Path) -> None:
    """A capture that lost frames (a sniffer that could not keep up) knows less than the whole
    one: it may leave intervals and pings unjudged (KA902) and say `hole`, but it never finds a
    violation, or a broker's fault, that the whole capture does not have. Each frame of each
    capture is taken out in turn, and each run of `width` frames. With TLS keys, a lost record
    leaves tshark unable to decrypt the rest of that direction (TLS 1.3 counts records in its
    nonces): those records are holes, not handshake messages to pass over."""
    from collections import Counter

    from analyzer.sources import open_capture
    from tests.unit.test_pipeline_variants import write_pcap

    def verdicts(report: Report) -> Counter[str]:
        return Counter(f.rule_id for f in report.findings if f.severity.name in ("ERROR", "WARNING"))

    keylog = EXPECTED[name].get("keylog") if with_keys else None
    options = Options(tls_keylogs=(str(REPO / "captures" / keylog),) if keylog else ())
    shipped = REPO / "captures" / f"{name}.pcap"
    with open_capture(str(shipped)) as reader:
        frames = [(ts, linktype, data) for _, ts, linktype, data, _ in reader]
    (linktype,) = {linktype for _, linktype, _ in frames}
    whole = verdicts(analyze([str(shipped)], options))
    added = {}
    for i in range(len(frames) - width + 1):
        lossy = write_pcap(tmp_path / "lossy.pcap", linktype,
                           [(ts, data) for ts, _, data in frames[:i] + frames[i + width:]])
        new = verdicts(analyze([str(lossy)], options)) - whole
        if new:
            added[i + 1] = dict(new)
    assert added == {}, f"first frame taken out -> verdicts it adds: {added}"


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_frames_duplicated_or_read_out_of_order_change_no_verdict(name: str, tmp_path: Path) -> None:
    """A frame captured twice (on `any`, beside a bridge), or two frames stamped within 1 ms read
    the other way round (two capture queues): the traffic is the same, so are the verdicts. Each
    frame of each capture is duplicated in turn, and each such pair swapped (TLS read without
    keys here: the lossy test runs tshark enough)."""
    from collections import Counter

    from analyzer.sources import open_capture
    from tests.unit.test_pipeline_variants import write_pcap

    def verdicts(path: Path) -> Counter[str]:
        return Counter(f.rule_id for f in analyze([str(path)], Options()).findings
                       if f.severity.name in ("ERROR", "WARNING"))

    shipped = REPO / "captures" / f"{name}.pcap"
    with open_capture(str(shipped)) as reader:
        frames = [(ts, data) for _, ts, _, data, _ in reader]
        (linktype,) = set(reader.linktypes)
    whole = verdicts(shipped)
    changed = {}
    for i in range(len(frames)):
        variants = {"duplicated": frames[:i + 1] + frames[i:]}
        if i + 1 < len(frames) and abs(frames[i + 1][0] - frames[i][0]) < 1_000_000:
            variants["swapped"] = frames[:i] + [frames[i + 1], frames[i]] + frames[i + 2:]
        for kind, variant in variants.items():
            got = verdicts(write_pcap(tmp_path / "variant.pcap", linktype, variant))
            if got != whole:
                changed[(kind, i + 1)] = (dict(got - whole), dict(whole - got))
    assert changed == {}, f"(how, frame) -> (verdicts added, verdicts lost): {changed}"

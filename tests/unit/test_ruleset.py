"""Rule packs and broker profiles: loading, merging, validation, suppressions, and verdicts that
change with the profile for the right reason."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from analyzer import Options, analyze
from analyzer.errors import RuleSetError
from analyzer.model import Severity
from analyzer.ruleset import builtin_ids, load_profile, load_ruleset

CAPTURES = Path(__file__).resolve().parents[2] / "captures"
REQUIRED_PROFILES = {"spec", "mosquitto-2.0", "emqx-5", "emqx-4", "hivemq", "vernemq", "rabbitmq",
                     "nanomq", "aws-iot-core", "azure-iot-hub"}


def rules_of(capture: str, pack: str = "default", profile: str | None = None,
             today: dt.date | None = None) -> list[str]:
    options = Options(ruleset=load_ruleset(pack, profile), today=today)
    return sorted(f.rule_id for f in analyze([str(CAPTURES / capture)], options).findings)


def write(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


# -- built-in packs and profiles ------------------------------------------------------------------

def test_every_required_profile_ships_and_cites_sources() -> None:
    assert REQUIRED_PROFILES <= set(builtin_ids("brokers"))
    for profile_id in builtin_ids("brokers"):
        profile = load_profile(profile_id)
        assert profile.profile_id == profile_id and profile.sources


def test_ci_strict_extends_default_and_raises_every_warning() -> None:
    default, strict = load_ruleset("default"), load_ruleset("ci-strict")
    assert strict.packs == ("default", "ci-strict")
    assert set(strict.rules) == set(default.rules)
    assert strict.tolerance_s < default.tolerance_s
    for rule_id, rule in default.rules.items():
        if rule.severity == Severity.WARNING:
            assert strict.rules[rule_id].severity == Severity.ERROR, rule_id


@pytest.mark.parametrize("profile_id, k, window", [
    ("spec", 60, (90.0, 90.0)),
    ("mosquitto-2.0", 3, (4.0, 11.5)),        # floor(1.5 x 3) = 4: half a second early; ~7 s scans
    ("emqx-4", 60, (90.0, 135.0)),            # two checks at 0.75 K
    ("emqx-5", 60, (90.0, 120.0)),            # one 30 s tick late at most
    ("azure-iot-hub", 1200, (1767.0, 1767.0)),  # the deadline is capped at 1767 s
])
def test_profile_windows(profile_id: str, k: int, window: tuple[float, float]) -> None:
    profile = load_profile(profile_id)
    assert profile.window_s(profile.enforced_keep_alive(k)) == pytest.approx(window)


def test_aws_clamps_keep_alive_and_says_so() -> None:
    aws = load_profile("aws-iot-core")
    assert aws.enforced_keep_alive(10) == 30 and aws.enforced_keep_alive(5000) == 1200
    assert aws.enforced_keep_alive(60) == 60
    assert "minimum" in aws.outside_limits(10) and aws.outside_limits(60) is None


# -- the same capture under different profiles ----------------------------------------------------

def test_mosquitto_late_close_is_ka201_under_spec_and_on_time_under_mosquitto() -> None:
    """mosquitto closed the silent client 5.4 s after its last packet (K = 2): late for the spec's
    3 s, inside mosquitto 2.0's own window (floor(1.5 K) + its ~7 s scan)."""
    assert rules_of("silent-client.pcap", profile="spec") == ["KA101", "KA102", "KA201"]
    assert rules_of("silent-client.pcap", profile="mosquitto-2.0") == ["KA101", "KA102"]


def test_early_close_is_ka202_under_spec_but_expected_of_an_old_artemis() -> None:
    """The scripted broker closed a K = 4 client after 3 s: early for 1.5 K = 6 s, exactly what
    ActiveMQ Artemis before 1.3 does (0.75 K)."""
    assert rules_of("broker-closes-early.pcap", profile="spec") == ["KA202"]
    assert rules_of("broker-closes-early.pcap", profile="artemis-legacy") == []


def test_keep_alive_below_aws_minimum_is_ka302() -> None:
    assert "KA302" in rules_of("compliant-pinger.pcap", profile="aws-iot-core")
    assert "KA302" not in rules_of("compliant-pinger.pcap", profile="spec")


def test_ci_strict_makes_late_pings_errors() -> None:
    options = Options(ruleset=load_ruleset("ci-strict"))
    report = analyze([str(CAPTURES / "late-pinger.pcap")], options)
    assert {f.severity for f in report.findings} == {Severity.ERROR}
    assert report.exit_code(Severity.ERROR) == 1


# -- user packs -------------------------------------------------------------------------------------

def test_user_pack_extends_and_overrides(tmp_path: Path) -> None:
    pack = write(tmp_path, "fleet.toml", """
[pack]
id = "fleet"
extends = ["default"]
profile = "mosquitto-2.0"
[params]
tolerance_s = 0.5
[[rule]]
id = "KA101"
severity = "info"
[[rule]]
id = "KA203"
params = { wait_k = 3.0 }
""")
    ruleset = load_ruleset(pack)
    assert ruleset.packs == ("default", "fleet") and ruleset.profile.profile_id == "mosquitto-2.0"
    assert ruleset.tolerance_s == 0.5
    assert ruleset.rules["KA101"].severity == Severity.INFO
    assert ruleset.param("KA203", "wait_k") == 3.0
    assert ruleset.rules["KA102"].severity == Severity.ERROR


@pytest.mark.parametrize("text, key", [
    ('[pack]\nid = "x"\ncolour = "red"\n', "pack.colour"),
    ('[pack]\nextends = ["default"]\n[[rule]]\nid = "KA999"\n', "rule[0].id"),
    ('[pack]\nextends = ["default"]\n[[rule]]\nid = "KA101"\nseverity = "fatal"\n', "rule[0].severity"),
    ('[pack]\nextends = ["default"]\n[[rule]]\nid = "KA203"\nparams = { wait = 2 }\n', "rule[0].params.wait"),
    ('[pack]\nextends = ["default"]\n[params]\ntolerance_s = "0.3"\n', "params.tolerance_s"),
    ('[pack]\nextends = ["nope"]\n', "pack.extends"),
    ('[pack]\nextends = ["default"]\n[[suppress]]\nrule = "KA101"\nclient_id = "x"\nreason = "r"\n',
     "suppress[0].expires"),
    ('[pack\n', "not valid TOML"),
])
def test_bad_pack_is_an_error_naming_file_and_key(tmp_path: Path, text: str, key: str) -> None:
    pack = write(tmp_path, "bad.toml", text)
    with pytest.raises(RuleSetError) as err:
        load_ruleset(pack)
    assert str(tmp_path / "bad.toml") in str(err.value) and key in str(err.value)


def test_bad_profile_is_an_error_naming_file_and_key(tmp_path: Path) -> None:
    profile = write(tmp_path, "broker.toml", '[broker]\nid = "b"\nmultiplier = 1.5\nlate_s = "soon"\n'
                                             'sources = ["x"]\n')
    with pytest.raises(RuleSetError, match="broker.late_s"):
        load_ruleset("default", profile)
    no_sources = write(tmp_path, "nosrc.toml", '[broker]\nid = "b"\nmultiplier = 1.5\n')
    with pytest.raises(RuleSetError, match="sources"):
        load_ruleset("default", no_sources)


def test_unknown_builtin_names_the_known_ones() -> None:
    with pytest.raises(RuleSetError, match="mosquitto-2.0"):
        load_ruleset("default", "mosquito")


# -- suppressions -----------------------------------------------------------------------------------

SUPPRESS = """
[pack]
extends = ["default"]
[[suppress]]
rule = "KA101"
client_id = "ka-late-*"
reason = "firmware 1.x pings late; fix scheduled"
expires = 2027-06-30
"""


def test_suppression_silences_matching_clients_until_it_expires(tmp_path: Path) -> None:
    options = Options(ruleset=load_ruleset(write(tmp_path, "s.toml", SUPPRESS)), today=dt.date(2027, 1, 1))
    report = analyze([str(CAPTURES / "late-pinger.pcap")], options)
    assert report.findings == () and len(report.suppressed) == 4 and report.warnings == ()
    expired = Options(ruleset=options.ruleset, today=dt.date(2027, 7, 1))
    report = analyze([str(CAPTURES / "late-pinger.pcap")], expired)
    assert [f.rule_id for f in report.findings] == ["KA101"] * 4
    assert len(report.warnings) == 1 and "expired on 2027-06-30" in report.warnings[0]


def test_suppression_only_matches_its_glob(tmp_path: Path) -> None:
    ruleset = load_ruleset(write(tmp_path, "s.toml", SUPPRESS))
    report = analyze([str(CAPTURES / "silent-client.pcap")], Options(ruleset=ruleset, today=dt.date(2027, 1, 1)))
    assert "KA101" in {f.rule_id for f in report.findings}

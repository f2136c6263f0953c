"""The same scenario over plain TCP, WebSocket and TLS (with its key log) gets the same verdicts.

Each TLS capture in `captures/` is the twin of a plain one, recorded by the same scenario code over
mosquitto's TLS listener. The command line a user types (`mqtt-keepalive analyze X.pcap
--tls-keylog X.keys --format json`) must report the same findings and the same sessions for both.
Frame numbers differ (the TLS handshake takes frames, and WebSocket its Upgrade), so frames are
compared by their role, which tshark tells independently: "the client's 2nd MQTT packet, a
PINGREQ", "the broker's FIN".
"""

from __future__ import annotations

import functools
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
CAPTURES = REPO / "captures"

pytestmark = pytest.mark.skipif(shutil.which("tshark") is None, reason="needs tshark")

TWINS = [
    ("late-pinger", "tls-late-pinger"),
    ("late-pinger", "tls12-late-pinger"),
    ("compliant-pinger", "tls-compliant-pinger"),
    ("split-and-coalesced", "tls-split-and-coalesced"),
    ("ws-late-pinger", "wss-late-pinger"),
    ("late-pinger", "ws-late-pinger"),
    ("late-pinger", "wss-late-pinger"),
]
WS_PORTS = {"ws-late-pinger": 9001}
"""Plain WebSocket captures on a port tshark does not take for HTTP by itself."""

Role = tuple[Any, ...]


def keylog(name: str) -> Path | None:
    path = CAPTURES / f"{name}.keys"
    return path if path.exists() else None


def tshark(name: str, *args: str) -> list[list[str]]:
    command = ["tshark", "-n", "-r", str(CAPTURES / f"{name}.pcap"), "-T", "fields",
               "-E", "separator=/t", "-E", "occurrence=a"]
    if keylog(name):
        command += ["-o", f"tls.keylog_file:{keylog(name)}"]
    if name in WS_PORTS:
        command += ["-d", f"tcp.port=={WS_PORTS[name]},http"]
    result = subprocess.run([*command, *args], capture_output=True, text=True, check=True)
    return [line.split("\t") for line in result.stdout.splitlines()]


def roles(name: str) -> dict[int, Role]:
    """frame -> its role in the session, from tshark's dissection: the MQTT packets it completes
    (side, index among that side's packets, type), or the FIN/RST it carries (side, flag, index).

    MQTT inside WebSocket is not handed to tshark 4.0's MQTT dissector; each binary WebSocket
    payload of these captures is one MQTT packet, whose type is its first byte's high nibble."""
    rows = tshark(name, "-Y", "mqtt || websocket.opcode == 2 || tcp.flags.fin == 1 || "
                  "tcp.flags.reset == 1 || (tcp.flags.syn == 1 && tcp.flags.ack == 0)",
                  "-e", "frame.number", "-e", "tcp.srcport", "-e", "mqtt.msgtype",
                  "-e", "websocket.opcode", "-e", "data.data", "-e", "tcp.flags.fin",
                  "-e", "tcp.flags.reset", "-e", "tcp.flags.syn", "-e", "tcp.dstport")
    syn = [row for row in rows if row[7] in ("1", "True")]
    assert len(syn) == 1, "one connection, opened in the capture"
    broker_port = int(syn[0][8])
    counts: dict[tuple[str, str], int] = {}
    out: dict[int, Role] = {}
    for frame, port, types, opcode, data, fin, rst, _syn, _dport in rows:
        side = "broker" if int(port) == broker_port else "client"
        if types:
            kinds = [int(t) for t in types.split(",")]
        elif opcode:
            kinds = [bytes.fromhex(d)[0] >> 4 for d in data.split(",")]
        else:
            kinds = []
        role: list[Any] = []
        for kind in kinds:
            index = counts.setdefault((side, "mqtt"), 0)
            counts[(side, "mqtt")] = index + 1
            role.append((side, index, kind))
        for flag, is_set in (("fin", fin), ("rst", rst)):
            if is_set in ("1", "True"):
                index = counts.setdefault((side, flag), 0)
                counts[(side, flag)] = index + 1
                role.append((side, flag, index))
        out[int(frame)] = tuple(role)
    return out


def report(name: str) -> dict[str, Any]:
    """`mqtt-keepalive analyze NAME.pcap [--tls-keylog NAME.keys] --format json`."""
    command = [sys.executable, "-m", "analyzer", "analyze", str(CAPTURES / f"{name}.pcap"),
               "--format", "json", "--fail-on", "never"]
    if keylog(name):
        command += ["--tls-keylog", str(keylog(name))]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    return json.loads(result.stdout)


@functools.cache
def verdicts(name: str) -> tuple[list[tuple[str, Role, Role]], list[dict[str, Any]]]:
    """Findings as (rule, role of the first frame, role of the last) and sessions as their
    role-independent fields, from the command line's JSON report (once per capture and run)."""
    data = report(name)
    role = roles(name)
    findings = sorted((f["rule_id"], role.get(f["frames"][0], ()), role.get(f["frames"][-1], ()))
                      for f in data["findings"])
    keys = ("protocol_level", "keep_alive_s", "effective_keep_alive_s", "keep_alive_source",
            "end_reason", "client_packets", "pingreq", "pingresp", "uncertainty")
    sessions = [{**{k: s[k] for k in keys}, "end": role.get(s["end_frame"], ())} for s in data["sessions"]]
    assert data["captures"][0]["error"] is None
    return findings, sessions


@pytest.mark.parametrize(("plain", "twin"), TWINS, ids=[f"{a}~{b}" for a, b in TWINS])
def test_twin_gets_the_same_findings_on_the_same_roles(plain: str, twin: str) -> None:
    plain_findings, plain_sessions = verdicts(plain)
    twin_findings, twin_sessions = verdicts(twin)
    assert twin_findings == plain_findings
    assert twin_sessions == plain_sessions
    assert len(twin_sessions) == 1 and twin_sessions[0]["uncertainty"] == []


def test_the_late_pingers_have_four_late_intervals() -> None:
    """The comparison is not vacuous: late-pinger's verdicts are four KA101 on its pings."""
    findings, _ = verdicts("late-pinger")
    assert [rule for rule, _, _ in findings] == ["KA101"] * 4
    assert findings[0][1] == (("client", 0, 1),)  # from the CONNECT ...
    assert findings[0][2] == (("client", 1, 12),)  # ... to the first PINGREQ


@pytest.mark.parametrize("name", ["tls-late-pinger", "tls12-late-pinger"])
def test_without_keys_the_same_late_pings_are_caught_as_likely(name: str) -> None:
    """The keyless path against the keyed truth of the same capture: with the Keep Alive given
    (`--assume-keep-alive`, as the CONNECT inside says), the same KA101 on the same frames, marked
    likely, and the session marked encrypted."""
    keyed = report(name)
    k = keyed["sessions"][0]["keep_alive_s"]
    command = [sys.executable, "-m", "analyzer", "analyze", str(CAPTURES / f"{name}.pcap"),
               "--port", "8883", "--assume-keep-alive", str(k), "--format", "json",
               "--fail-on", "never"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    keyless = json.loads(result.stdout)
    late = [(f["rule_id"], f["frames"]) for f in keyed["findings"] if f["rule_id"] == "KA101"]
    assert len(late) == 4 and {f["confidence"] for f in keyed["findings"]} == {"confirmed"}
    assert [(f["rule_id"], f["frames"]) for f in keyless["findings"] if f["rule_id"] == "KA101"] == late
    assert {f["confidence"] for f in keyless["findings"]} == {"likely"}
    assert "encrypted" in keyless["sessions"][0]["uncertainty"]

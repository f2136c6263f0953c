"""`analyzer.tls.decrypt` on the recorded TLS captures, with tshark's own dissection as the oracle.

The plaintext `decrypt_capture` hands back must hold every MQTT packet, in the frame that completes
it: the project's own framer (and WebSocket decoder) run on it must find, frame by frame, the MQTT
packet types tshark's MQTT dissector shows for the same capture and keys (`-Y mqtt -e mqtt.msgtype
-E occurrence=a`, every PDU of a frame). The recorded captures cover TLS 1.3 and TLS 1.2, one record
over three segments, two records in one segment, several MQTT packets in one record, and MQTT over
WebSocket over TLS.
"""

from __future__ import annotations

import bz2
import functools
import gzip
import lzma
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from analyzer.engine import Options, analyze
from analyzer.errors import InputError, UsageError
from analyzer.model import Direction, MQTTPacket
from analyzer.mqtt.framer import MQTTFramer
from analyzer.tls.decrypt import Plaintext, decrypt_capture
from analyzer.websocket.decoder import WebSocketDecoder, WSData

REPO = Path(__file__).resolve().parents[2]
CAPTURES = REPO / "captures"
TLS_PORT, WSS_PORT = 8883, 8081
CONNECT, CONNACK, PUBLISH, PINGREQ, PINGRESP, DISCONNECT = 1, 2, 3, 12, 13, 14

pytestmark = pytest.mark.skipif(shutil.which("tshark") is None, reason="needs tshark")

MQTT_OVER_TLS = ["tls-late-pinger", "tls12-late-pinger", "tls-compliant-pinger", "tls-split-and-coalesced"]


def pcap(name: str) -> Path:
    return CAPTURES / f"{name}.pcap"


def keys(name: str) -> Path:
    return CAPTURES / f"{name}.keys"


@functools.cache
def decrypted(name: str) -> Plaintext:
    """A shipped capture decrypted with its own key log (once per test run)."""
    return decrypt_capture(str(pcap(name)), [str(keys(name))])


def tshark(path: Path, *args: str) -> list[list[str]]:
    """tshark `-T fields` rows (tab-separated; several values of a field comma-separated)."""
    command = ["tshark", "-n", "-r", str(path), "-T", "fields", "-E", "separator=/t",
               "-E", "occurrence=a", *args]
    result = subprocess.run(command, capture_output=True, text=True, check=True)
    return [line.split("\t") for line in result.stdout.splitlines()]


def tshark_mqtt(path: Path, keylog: Path) -> list[tuple[int, bool, int]]:
    """(frame, sent by the broker, MQTT type) of every MQTT PDU tshark's dissector finds."""
    rows = tshark(path, "-o", f"tls.keylog_file:{keylog}", "-Y", "mqtt",
                  "-e", "frame.number", "-e", "tcp.srcport", "-e", "mqtt.msgtype")
    return [(int(frame), int(port) == TLS_PORT, int(t)) for frame, port, types in rows
            for t in types.split(",")]


@functools.cache
def sides(path: Path) -> dict[int, tuple[int, bool]]:
    """frame -> (tcp.stream, sent by the broker) for every TCP frame with payload."""
    rows = tshark(path, "-Y", "tcp.len > 0", "-e", "frame.number", "-e", "tcp.stream",
                  "-e", "tcp.srcport")
    return {int(f): (int(s), int(p) in (TLS_PORT, WSS_PORT)) for f, s, p in rows}


def framed(plain: Plaintext, frame_sides: dict[int, tuple[int, bool]],
           websocket: bool = False) -> list[tuple[int, bool, int]]:
    """(frame, sent by the broker, type) of every MQTT packet the project's framer (behind its
    WebSocket decoder with `websocket`) cuts from the plaintext, fed frame by frame."""
    framers: dict[tuple[int, bool], MQTTFramer] = {}
    decoders: dict[tuple[int, bool], WebSocketDecoder] = {}
    out = []
    for frame in plain.frames():
        key = frame_sides[frame]
        framer = framers.setdefault(key, MQTTFramer(Direction.TO_CLIENT if key[1] else Direction.TO_SERVER))
        for chunk in plain.chunks(frame):
            if websocket:
                decoder = decoders.setdefault(key, WebSocketDecoder(from_client=not key[1]))
                payloads = [e.payload for e in decoder.feed(chunk, frame, 0) if isinstance(e, WSData)]
            else:
                payloads = [chunk]
            for payload in payloads:
                for event in framer.feed(payload, frame, 0):
                    assert isinstance(event, MQTTPacket), event
                    assert event.last_frame == frame
                    out.append((frame, key[1], int(event.type)))
    return out


def same_plaintext(a: Plaintext, b: Plaintext) -> bool:
    return a.frames() == b.frames() and all(a.chunks(f) == b.chunks(f) for f in a.frames())


# -- against tshark's MQTT dissector ----------------------------------------------------------------


@pytest.mark.parametrize("name", MQTT_OVER_TLS)
def test_plaintext_holds_every_mqtt_packet_tshark_dissects(name: str) -> None:
    plain = decrypted(name)
    assert plain and plain.warnings == ()
    expected = tshark_mqtt(pcap(name), keys(name))
    assert framed(plain, sides(pcap(name))) == expected
    client = [t for _, broker, t in expected if not broker]
    assert client[0] == CONNECT and client[-1] == DISCONNECT  # the whole session is in there


def test_several_mqtt_packets_in_one_record_and_two_records_in_one_segment_are_all_kept() -> None:
    name = "tls-split-and-coalesced"
    plain = decrypted(name)
    first, second = plain.chunks(21)  # one TCP segment, two TLS records
    assert [first[0] >> 4, second] == [PINGREQ, b"\xc0\x00"]
    assert first[:2] == b"\xc0\x00" and first[2] >> 4 == PUBLISH  # PINGREQ + PUBLISH in one record
    assert [t for f, _, t in framed(plain, sides(pcap(name))) if f == 21] == [PINGREQ, PUBLISH, PINGREQ]
    assert tshark(pcap(name), "-o", f"tls.keylog_file:{keys(name)}", "-Y", "frame.number == 21",
                  "-e", "mqtt.msgtype") == [["12,3,12"]]


def test_a_record_over_three_segments_belongs_to_the_frame_that_completes_it() -> None:
    name = "tls-split-and-coalesced"
    plain = decrypted(name)
    lengths = tshark(pcap(name), "-Y", "frame.number == 15 || frame.number == 17 || frame.number == 19", "-e", "tcp.len")
    assert lengths == [["1000"], ["1000"], ["1053"]]
    assert plain.chunks(15) == [] and plain.chunks(17) == []
    (publish,) = plain.chunks(19)
    assert publish[0] >> 4 == PUBLISH and len(publish) == 3031


def test_tls_1_2_and_tls_1_3_give_the_same_mqtt_session() -> None:
    versions = {}
    for name in ("tls-late-pinger", "tls12-late-pinger"):
        (suite,) = tshark(pcap(name), "-Y", "tls.handshake.type == 2", "-e", "tls.handshake.ciphersuite")
        versions[name] = suite[0]
        plain = decrypted(name)
        client = [t for _, broker, t in framed(plain, sides(pcap(name))) if not broker]
        assert client == [CONNECT, PINGREQ, PINGREQ, PINGREQ, PINGREQ, DISCONNECT]
    assert versions == {"tls-late-pinger": "0x1302", "tls12-late-pinger": "0xc02f"}  # AES-256-GCM (1.3), ECDHE-RSA-AES128-GCM (1.2)
    labels = {line.split(" ")[0] for line in keys("tls12-late-pinger").read_text().splitlines()
              if not line.startswith("#")}
    assert labels == {"CLIENT_RANDOM"}


def test_mqtt_over_websocket_over_tls() -> None:
    """tshark 4.0 does not hand WebSocket payloads to its MQTT dissector, but unmasks them: the
    first byte of each binary payload (one MQTT packet per WebSocket frame here) is the oracle."""
    name = "wss-late-pinger"
    plain = decrypted(name)
    rows = tshark(pcap(name), "-o", f"tls.keylog_file:{keys(name)}", "-Y", "websocket.opcode == 2",
                  "-e", "frame.number", "-e", "tcp.srcport", "-e", "data.data")
    expected = [(int(f), int(p) == WSS_PORT, bytes.fromhex(d)[0] >> 4) for f, p, d in rows]
    got = framed(plain, sides(pcap(name)), websocket=True)
    assert got == expected
    assert [t for _, broker, t in got if not broker] == [CONNECT, *[PINGREQ] * 4, DISCONNECT]
    assert plain.chunks(10)[0].startswith(b"GET /mqtt HTTP/1.1\r\n")  # the Upgrade, in plaintext


# -- keys ---------------------------------------------------------------------------------------------


def test_keys_of_another_session_decrypt_nothing() -> None:
    plain = decrypt_capture(str(pcap("tls-late-pinger")), [str(keys("tls-compliant-pinger"))])
    assert not plain and plain.frames() == [] and plain.chunks(10) == []


def test_several_key_logs_are_merged() -> None:
    alone = decrypted("tls-late-pinger")
    merged = decrypt_capture(str(pcap("tls-late-pinger")),
                             [str(keys("tls-compliant-pinger")), str(keys("tls-late-pinger"))])
    assert alone and same_plaintext(alone, merged)


def test_an_unreadable_key_log_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="cannot read the TLS key log .*missing.keys"):
        decrypt_capture(str(pcap("tls-late-pinger")), [str(tmp_path / "missing.keys")])


def test_a_file_without_secrets_is_no_key_log(tmp_path: Path) -> None:
    not_keys = tmp_path / "server.key"
    not_keys.write_text("-----BEGIN PRIVATE KEY-----\nMIIE...\n-----END PRIVATE KEY-----\n")
    with pytest.raises(UsageError, match="server.key: no TLS secret in this key log"):
        decrypt_capture(str(pcap("tls-late-pinger")), [str(not_keys)])
    plain = decrypt_capture(str(pcap("tls-late-pinger")), [str(not_keys), str(keys("tls-late-pinger"))])
    assert plain and len(plain.warnings) == 1 and "server.key" in plain.warnings[0]


def test_secrets_embedded_in_a_pcapng_need_no_key_log(tmp_path: Path) -> None:
    if shutil.which("editcap") is None:
        pytest.skip("needs editcap")
    name = "tls-late-pinger"
    embedded = tmp_path / f"{name}.pcapng"
    subprocess.run(["editcap", "--inject-secrets", f"tls,{keys(name)}", str(pcap(name)), str(embedded)],
                   check=True, capture_output=True)
    with_file = decrypted(name)
    assert same_plaintext(with_file, decrypt_capture(str(embedded), []))
    assert not decrypt_capture(str(pcap(name)), [])
    # and the analysis uses them by itself: the findings with the key log, confirmed
    keyed = analyze([str(pcap(name))], Options(tls_keylogs=(str(keys(name)),)))
    alone = analyze([str(embedded)])
    assert [(f.rule_id, f.frames, f.confidence) for f in alone.findings] == \
        [(f.rule_id, f.frames, f.confidence) for f in keyed.findings]
    assert {f.confidence for f in alone.findings} == {"confirmed"} and alone.findings


@pytest.mark.parametrize(("suffix", "opener"), [(".gz", gzip.open), (".bz2", bz2.open), (".xz", lzma.open)])
def test_compressed_captures_are_decrypted_as_they_are_analysed(tmp_path: Path, suffix: str,
                                                                opener: object) -> None:
    name = "tls-split-and-coalesced"
    packed = tmp_path / f"capture{suffix}"
    with opener(packed, "wb") as out:  # type: ignore[operator]
        out.write(pcap(name).read_bytes())
    expected = decrypted(name)
    assert same_plaintext(expected, decrypt_capture(str(packed), [str(keys(name))]))


# -- tshark ------------------------------------------------------------------------------------------


def test_without_tshark_the_error_says_what_to_install(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # a real lookup in a directory without tshark
    with pytest.raises(InputError, match="apt-get install tshark"):
        decrypt_capture(str(pcap("tls-late-pinger")), [str(keys("tls-late-pinger"))])


def test_a_file_tshark_cannot_read_is_an_input_error(tmp_path: Path) -> None:
    junk = tmp_path / "junk.pcap"
    junk.write_bytes(b"\xd4\xc3\xb2\xa1" + bytes(20) + b"\xff" * 64)  # a pcap header gone wrong
    with pytest.raises(InputError, match="tshark could not read"):
        decrypt_capture(str(junk), [str(keys("tls-late-pinger"))])
    with pytest.raises(InputError, match="stdin"):
        decrypt_capture("-", [str(keys("tls-late-pinger"))])


def test_a_capture_cut_short_keeps_what_came_before_the_cut(tmp_path: Path) -> None:
    name = "tls-late-pinger"
    cut = tmp_path / "cut.pcap"
    cut.write_bytes(pcap(name).read_bytes()[:5000])  # inside frame 20
    plain = decrypt_capture(str(cut), [str(keys(name))])
    full = decrypted(name)
    assert plain.frames() == [f for f in full.frames() if f < 20]
    assert all(plain.chunks(f) == full.chunks(f) for f in plain.frames())
    assert len(plain.warnings) == 1 and "cut short" in plain.warnings[0]


def test_plaintext_does_not_depend_on_the_users_wireshark_profile(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """A profile that disables TLS, or decodes the port as something else, changes nothing."""
    profile = tmp_path / "profile"
    profile.mkdir()
    (profile / "disabled_protos").write_text("tls\ndata\n")
    (profile / "decode_as_entries").write_text(
        "decode_as_entry: tcp.port,8883,(none),HTTP\n")
    monkeypatch.setenv("WIRESHARK_CONFIG_DIR", str(profile))
    monkeypatch.setenv("HOME", str(tmp_path))
    name = "tls-late-pinger"
    assert tshark(pcap(name), "-o", f"tls.keylog_file:{keys(name)}", "-Y", "mqtt", "-e", "frame.number") == []
    plain = decrypt_capture(str(pcap(name)), [str(keys(name))])
    assert framed(plain, sides(pcap(name))) == tshark_mqtt_clean(name)


def tshark_mqtt_clean(name: str) -> list[tuple[int, bool, int]]:
    """`tshark_mqtt` with an empty personal configuration."""
    import os

    old = os.environ.pop("WIRESHARK_CONFIG_DIR", None)
    try:
        return tshark_mqtt(pcap(name), keys(name))
    finally:
        if old is not None:
            os.environ["WIRESHARK_CONFIG_DIR"] = old


def test_every_tls_subdissector_of_the_installed_tshark_is_known() -> None:
    """A newer tshark's TLS heuristics are found at run time, but its TLS-port registrations are
    not: this fails on a tshark whose `tls.port` table (or heuristics) outgrew the list."""
    from analyzer.tls.decrypt import KNOWN_SUBDISSECTORS, find_tshark, tls_heuristics, tls_port_dissectors

    tshark_path = find_tshark()
    installed = set(tls_port_dissectors(tshark_path)) | set(tls_heuristics(tshark_path))
    assert installed and installed <= set(KNOWN_SUBDISSECTORS)


def test_tshark_off_path_is_found_through_pyshark(tmp_path: Path) -> None:
    """Wireshark installers on Windows and macOS leave tshark off PATH; pyshark knows where it
    is (here: told by its config.ini), so decryption still finds it."""
    pytest.importorskip("pyshark")
    tshark = shutil.which("tshark")
    if tshark is None:
        pytest.skip("needs tshark")
    empty = tmp_path / "empty"
    empty.mkdir()
    probe = [sys.executable, "-c", "from analyzer.tls.decrypt import find_tshark; print(find_tshark())"]
    env = {**os.environ, "PATH": str(empty), "PYTHONPATH": str(REPO)}
    lost = subprocess.run(probe, cwd=tmp_path, env=env, capture_output=True, text=True)
    assert lost.returncode != 0 and "apt-get install tshark" in lost.stderr
    (tmp_path / "config.ini").write_text(f"[tshark]\ntshark_path = {tshark}\n")
    found = subprocess.run(probe, cwd=tmp_path, env=env, capture_output=True, text=True)
    assert found.returncode == 0, found.stderr
    assert found.stdout.strip() == tshark


def test_a_segment_lost_inside_a_decrypted_record_gives_uncertainty_not_verdicts(tmp_path: Path) -> None:
    """Drop the middle segment of the PUBLISH record cut over three (TLS 1.3): tshark then decrypts
    none of the client's later records (their nonces count records). The session says `hole`,
    and the silence across it is KA902 (uncertain), never a missed-deadline verdict; the broker's
    PINGRESPs, whose PINGREQs hid behind the loss, are not called unsolicited."""
    if shutil.which("editcap") is None:
        pytest.skip("needs editcap")
    name = "tls-split-and-coalesced"
    cut = tmp_path / "cut.pcap"
    subprocess.run(["editcap", str(pcap(name)), str(cut), "17"], check=True, capture_output=True)
    lossy = analyze([str(cut)], Options(tls_keylogs=(str(keys(name)),)))
    (session,) = lossy.sessions
    assert "hole" in session.uncertainty and session.pingresp == 2
    assert [f.rule_id for f in lossy.findings] == ["KA902"]


def test_records_tshark_could_not_decrypt_after_a_loss_are_holes_and_said(tmp_path: Path) -> None:
    """Drop the broker's session ticket (frame 10, a TLS 1.3 handshake record of its own): tshark
    then decrypts none of the broker's later records, the CONNACK and every PINGRESP. Taken for
    handshake messages (no plaintext), they left every ping unanswered: KA203 three times. They
    are holes in the broker's stream, the pings go unjudged, and the capture says why."""
    if shutil.which("editcap") is None:
        pytest.skip("needs editcap")
    name = "tls-compliant-pinger"
    cut = tmp_path / "cut.pcap"
    subprocess.run(["editcap", str(pcap(name)), str(cut), "10"], check=True, capture_output=True)
    plain = decrypt_capture(str(cut), [str(keys(name))])
    assert plain.undecrypted(11) == 2 and plain.chunks(11) == []  # a ticket, the CONNACK (was 12)
    assert plain.undecrypted(13) == 0 and plain.chunks(13) == [b"\xc0\x00"]  # a PINGREQ still opens
    assert plain.undecrypted(6) == 0  # the broker's handshake flight, decrypted to handshake records
    lossy = analyze([str(cut)], Options(tls_keylogs=(str(keys(name)),)))
    (session,) = lossy.sessions
    assert "hole" in session.uncertainty and session.pingreq == 5 and session.pingresp == 0
    assert [f.rule_id for f in lossy.findings if f.severity.name in ("ERROR", "WARNING")] == []
    (warning,) = lossy.captures[0].warnings
    assert "could not be decrypted (tcp.stream 0)" in warning and "hole" in warning


def test_fields_count_the_protected_records_tshark_could_not_decrypt() -> None:
    """Every record has a length; a record in the clear, or a protected one tshark decrypted, also
    a content type (TLS 1.3: the inner one)."""
    from analyzer.tls.decrypt import parse_fields

    lines = ["6\t122,1,23,1699\t22,20,22,22\t\n",   # hellos and the decrypted handshake flight
             "11\t250,21\t\t\n",                    # two protected records, neither decrypted
             "12\t250,21\t22,23\tc000\n",           # a ticket and a PINGREQ, both decrypted
             "14\t19,19\t23\td000\n"]               # one of two decrypted
    assert list(parse_fields(lines)) == [(11, [], 2), (12, [b"\xc0\x00"], 0), (14, [b"\xd0\x00"], 1)]

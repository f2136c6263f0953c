"""TLSRecordParser, suite sizes and TLS detection: bytes in, records and hellos out.

Frame N is fed at N * 1000 ns, so every event names the segment that carried it.
"""

from __future__ import annotations

import pytest

from analyzer.tls.detect import client_hello_verdict, looks_like_tls, offers_mqtt
from analyzer.tls.records import (
    ChangeCipherSpec, ClientHello, ServerHello, TLSAlert, TLSError, TLSGap, TLSRecord, TLSRecordParser,
)
from analyzer.tls.suites import probable_ping_length, record_length, suite_name
from tests.tls_builders import (
    AES128_GCM_13, AES256_GCM_13, ALERT, APPDATA, CHACHA_13, ECDHE_RSA_AES128_CBC_SHA,
    ECDHE_RSA_AES128_GCM, ECDHE_RSA_CHACHA, HANDSHAKE, TLS10, TLS12, TLS13, alert, appdata,
    change_cipher_spec, client_hello, handshake, record, server_hello,
)


def ts(frame: int) -> int:
    return frame * 1000


def feed(parser: TLSRecordParser, pieces: list[bytes], first_frame: int = 1) -> list:
    out: list = []
    for frame, piece in enumerate(pieces, start=first_frame):
        out += parser.feed(piece, frame, ts(frame))
    return out


def records_of(events: list) -> list[tuple[int, int, int, int]]:
    return [(e.content_type, e.length, e.first_frame, e.last_frame) for e in events if isinstance(e, TLSRecord)]


# -- records ----------------------------------------------------------------------------------


def test_one_record_per_segment_and_several_per_segment() -> None:
    events = feed(TLSRecordParser(), [appdata(19), appdata(19) + appdata(40) + appdata(0)])
    assert records_of(events) == [(APPDATA, 19, 1, 1), (APPDATA, 19, 2, 2), (APPDATA, 40, 2, 2),
                                  (APPDATA, 0, 2, 2)]
    first = events[0]
    assert (first.ts_first_ns, first.ts_last_ns, first.version) == (ts(1), ts(1), TLS12)


def test_a_record_over_segments_starts_and_ends_where_its_bytes_did() -> None:
    wire = appdata(1000)
    events = feed(TLSRecordParser(), [wire[:2], wire[2:4], wire[4:500], wire[500:]])
    assert records_of(events) == [(APPDATA, 1000, 1, 4)]
    assert (events[0].ts_first_ns, events[0].ts_last_ns) == (ts(1), ts(4))


@pytest.mark.parametrize("cut", range(1, 24))
def test_cut_anywhere_in_a_small_record(cut: int) -> None:
    wire = appdata(19) + appdata(19)
    events = feed(TLSRecordParser(), [wire[:cut], wire[cut:]])
    first_last = [(e.first_frame, e.last_frame) for e in events]
    assert first_last[0] == ((1, 2) if cut < 24 else (1, 1))
    assert first_last[1] == (2, 2)


def test_client_hello_facts() -> None:
    hello = client_hello(sni="broker.example", alpn=("x-amzn-mqtt-ca", "h2"), etm=True)
    events = feed(TLSRecordParser(), [record(HANDSHAKE, hello, TLS10)])
    ch, rec = events
    assert isinstance(ch, ClientHello) and isinstance(rec, TLSRecord)
    assert (ch.sni, ch.alpn, ch.supported_versions) == ("broker.example", ("x-amzn-mqtt-ca", "h2"),
                                                         (TLS13, TLS12))
    assert ch.cipher_suites == (AES128_GCM_13, ECDHE_RSA_AES128_GCM) and ch.encrypt_then_mac
    assert rec.version == TLS10 and offers_mqtt(ch)


def test_client_hello_over_two_records_and_three_segments() -> None:
    hello = client_hello(padding=3000)
    wire = record(HANDSHAKE, hello[:1500]) + record(HANDSHAKE, hello[1500:])
    events = feed(TLSRecordParser(), [wire[:700], wire[700:2000], wire[2000:]])
    assert [type(e).__name__ for e in events] == ["TLSRecord", "ClientHello", "TLSRecord"]
    assert events[1].frame_no == 3 and events[1].sni == "broker.example"


def test_server_hello_tls13_version_comes_from_supported_versions() -> None:
    parser = TLSRecordParser()
    events = feed(parser, [record(HANDSHAKE, server_hello(TLS13, AES256_GCM_13))
                           + change_cipher_spec() + appdata(1699)])
    sh = next(e for e in events if isinstance(e, ServerHello))
    assert (sh.version, sh.cipher_suite, sh.retry) == (TLS13, AES256_GCM_13, False)
    assert parser.tls13 and not parser.encrypted  # 1.3: the CCS is a dummy
    assert any(isinstance(e, ChangeCipherSpec) for e in events)


def test_hello_retry_request_is_flagged_and_the_real_hello_still_read() -> None:
    events = feed(TLSRecordParser(), [record(HANDSHAKE, server_hello(hrr=True)),
                                      record(HANDSHAKE, server_hello(TLS13, CHACHA_13))])
    hellos = [e for e in events if isinstance(e, ServerHello)]
    assert [(h.retry, h.cipher_suite) for h in hellos] == [(True, AES128_GCM_13), (False, CHACHA_13)]


def test_tls12_handshake_then_encrypted_finished_and_alert() -> None:
    parser = TLSRecordParser()
    flight = record(HANDSHAKE, server_hello(TLS12, ECDHE_RSA_AES128_GCM, alpn="mqtt")
                    + handshake(11, bytes(1677)) + handshake(14, b""))
    encrypted_finished = record(HANDSHAKE, bytes(40))
    events = feed(parser, [flight, change_cipher_spec() + encrypted_finished, appdata(26),
                           record(ALERT, bytes(26))])
    sh = next(e for e in events if isinstance(e, ServerHello))
    assert (sh.version, sh.alpn) == (TLS12, "mqtt")
    recs = [e for e in events if isinstance(e, TLSRecord)]
    assert [(r.content_type, r.encrypted) for r in recs] == [
        (HANDSHAKE, False), (20, False), (HANDSHAKE, True), (APPDATA, True), (ALERT, True)]
    alerts = [e for e in events if isinstance(e, TLSAlert)]
    assert len(alerts) == 1 and alerts[0].encrypted and alerts[0].frame_no == 4


def test_clear_alert_has_level_and_description() -> None:
    events = feed(TLSRecordParser(), [alert(2, 40)])
    (al, _rec) = events
    assert (al.level, al.description, al.encrypted, al.close_notify) == (2, 40, False, False)


# -- gaps and bad input ------------------------------------------------------------------------


def test_gap_inside_a_payload_keeps_sync() -> None:
    parser = TLSRecordParser()
    wire = appdata(100)
    out = parser.feed(wire[:30], 1, ts(1))
    out += parser.gap(50, 2, ts(2))
    out += parser.feed(wire[80:] + appdata(19), 3, ts(3))
    assert isinstance(out[0], TLSGap) and out[0].missing == 50
    recs = [e for e in out if isinstance(e, TLSRecord)]
    assert [(r.length, r.first_frame, r.last_frame, r.truncated) for r in recs] == [
        (100, 1, 3, True), (19, 3, 3, False)]


def test_gap_ending_a_record_completes_it_truncated() -> None:
    parser = TLSRecordParser()
    wire = appdata(100)
    out = parser.feed(wire[:55], 1, ts(1)) + parser.gap(50, 2, ts(2))
    assert [(type(e).__name__, getattr(e, "truncated", None)) for e in out] == [
        ("TLSGap", None), ("TLSRecord", True)]
    assert records_of(parser.feed(appdata(19), 3, ts(3))) == [(APPDATA, 19, 3, 3)]


def test_gap_over_a_header_resyncs_at_a_segment_that_starts_a_record() -> None:
    parser = TLSRecordParser()
    out = parser.feed(appdata(20)[:3], 1, ts(1))
    out += parser.gap(500, 2, ts(2))
    out += parser.feed(b"\x99" * 30, 3, ts(3))          # the middle of something: dropped
    out += parser.feed(appdata(19) + appdata(26), 4, ts(4))
    assert records_of(out) == [(APPDATA, 19, 4, 4), (APPDATA, 26, 4, 4)]
    assert parser.unsynced_bytes == 30


@pytest.mark.parametrize("wire, reason", [
    (b"\x63\x03\x03\x00\x05hello", "content type 99"),
    (b"\x17\x02\x00\x00\x05hello", "version 0x0200"),
    (b"\x17\x03\x03\xff\xff" + bytes(10), "exceeds"),
    (record(HANDSHAKE, handshake(1, b"\x03\x03" + bytes(10))), "malformed ClientHello"),
    (record(HANDSHAKE, handshake(2, b"\x03")), "malformed ServerHello"),
])
def test_malformed_input_is_an_error_event_then_resync(wire: bytes, reason: str) -> None:
    parser = TLSRecordParser()
    out = parser.feed(wire, 1, ts(1)) + parser.feed(appdata(19), 2, ts(2))
    errors = [e for e in out if isinstance(e, TLSError)]
    assert errors and reason in errors[0].reason
    assert (APPDATA, 19, 2, 2) in records_of(out)


def test_eof_reports_the_record_in_progress_truncated() -> None:
    parser = TLSRecordParser()
    parser.feed(appdata(100)[:40], 1, ts(1))
    (rec,) = parser.eof(2, ts(2))
    assert (rec.first_frame, rec.last_frame, rec.truncated) == (1, 2, True)
    assert parser.eof(3, ts(3)) == []


def test_garbage_never_raises() -> None:
    parser = TLSRecordParser()
    for n, chunk in enumerate([b"\x16\x03\x01\x00\x10" + bytes(3), bytes(range(256)) * 4, b"\x17",
                               b"\x03\x03", b"\x00\x01", b"\x16\x03\x03\x00\x04\x01\x00\x00\x10"]):
        parser.feed(chunk, n + 1, ts(n + 1))
        parser.gap(3, n + 1, ts(n + 1))
    parser.eof(99, ts(99))


# -- sizes ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("version, suite, ping", [
    (TLS13, AES128_GCM_13, 19), (TLS13, AES256_GCM_13, 19), (TLS13, CHACHA_13, 19),
    (TLS13, 0x1305, 11),                        # AES-128-CCM-8: 8-byte tag
    (TLS12, ECDHE_RSA_AES128_GCM, 26), (TLS12, 0xC0AC, 26), (TLS12, 0xC0AE, 18),
    (TLS12, ECDHE_RSA_CHACHA, 18),
    (TLS12, ECDHE_RSA_AES128_CBC_SHA, None),   # padding makes pings and PUBACKs the same size
    (TLS10, ECDHE_RSA_AES128_GCM, None), (TLS12, 0x1234, None), (TLS12, AES128_GCM_13, None),
])
def test_probable_ping_length(version: int, suite: int, ping: int | None) -> None:
    assert probable_ping_length(version, suite) == ping


def test_cbc_sizes_are_computed_honestly() -> None:
    # AES-128-CBC-SHA: 16-byte IV, then 2 + 20 (MAC) + 1 (pad length) = 23 padded to 32.
    assert record_length(TLS12, ECDHE_RSA_AES128_CBC_SHA, 2) == 48
    assert record_length(TLS12, ECDHE_RSA_AES128_CBC_SHA, 4) == 48
    assert record_length(TLS12, ECDHE_RSA_AES128_CBC_SHA, 12) == 64
    # encrypt-then-MAC: 16 + pad(2 + 1) + 20
    assert record_length(TLS12, ECDHE_RSA_AES128_CBC_SHA, 2, encrypt_then_mac=True) == 52
    assert record_length(TLS12, 0xC028, 2) == 16 + 64  # SHA384: 2 + 48 + 1 -> 64
    assert suite_name(0xC02F) == "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256"
    assert suite_name(0xABCD) == "cipher suite 0xABCD"


# -- detection -----------------------------------------------------------------------------------


def test_client_hello_verdict() -> None:
    wire = record(HANDSHAKE, client_hello(alpn=("mqtt",)), TLS10)
    assert client_hello_verdict(wire[:3]) is None
    assert client_hello_verdict(wire[:100]) is None
    hello = client_hello_verdict(wire)
    assert isinstance(hello, ClientHello) and offers_mqtt(hello)
    assert not offers_mqtt(client_hello_verdict(record(HANDSHAKE, client_hello(alpn=("h2",)))))
    assert client_hello_verdict(b"GET / HTTP/1.1\r\n") is False
    assert client_hello_verdict(record(HANDSHAKE, handshake(2, b"x" * 40))) is False


@pytest.mark.parametrize("first, tls", [
    (b"\x16\x03\x01\x02\x00", True), (b"\x17\x03\x03\x00\x13", True), (b"\x15\x03\x03", True),
    (b"\x10\x0c\x00\x04MQTT", False), (b"\x30\x03\x00", False), (b"GET /", False), (b"\x16\x03", False),
])
def test_looks_like_tls(first: bytes, tls: bool) -> None:
    assert looks_like_tls(first) is tls

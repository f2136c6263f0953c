"""MQTT codec: variable byte integers, CONNECT / CONNACK / DISCONNECT bodies, header plausibility.

Every input is built as real bytes (see `tests/builders.py`, written from the spec, not from the
codec); every expectation is what the keep-alive analysis relies on.
"""

from __future__ import annotations

import dataclasses

import pytest

from analyzer.errors import DecodeError
from analyzer.model import ConnAckBody, ConnectBody, DisconnectBody
from analyzer.mqtt.codec import (
    NEED_DATA, PartialDecode, decode_connack, decode_connect, decode_disconnect, decode_varint,
    encode_varint, header_is_plausible,
)
from analyzer.mqtt.detect import looks_like_connect
from tests.builders import (
    ASSIGNED_CLIENT_ID, SERVER_KEEP_ALIVE, SESSION_EXPIRY, connect, connect_body, properties,
    prop_str, prop_u16, prop_u32, u16, utf8, varint,
)

# -- variable byte integers -----------------------------------------------------------------

# (encoded bytes, value): the boundaries of every encoded length, spec 1.5.5 table 1-1.
VARINT_TABLE = [
    (b"\x00", 0),
    (b"\x01", 1),
    (b"\x7f", 127),
    (b"\x80\x01", 128),
    (b"\xff\x7f", 16_383),
    (b"\x80\x80\x01", 16_384),
    (b"\xff\xff\x7f", 2_097_151),
    (b"\x80\x80\x80\x01", 2_097_152),
    (b"\xff\xff\xff\x7f", 268_435_455),
]


@pytest.mark.parametrize(("encoded", "value"), VARINT_TABLE)
def test_decode_varint(encoded: bytes, value: int) -> None:
    assert decode_varint(encoded, 0) == (value, len(encoded))


@pytest.mark.parametrize(("encoded", "value"), VARINT_TABLE)
def test_decode_varint_at_offset_ignores_following_bytes(encoded: bytes, value: int) -> None:
    buf = b"\x30" + encoded + b"\xff\xff\xff\xff\xff"
    assert decode_varint(buf, 1) == (value, len(encoded))


@pytest.mark.parametrize(("encoded", "value"), VARINT_TABLE)
def test_encode_varint_is_minimal(encoded: bytes, value: int) -> None:
    assert encode_varint(value) == encoded


@pytest.mark.parametrize(("encoded", "value"), [
    (b"\x80\x00", 0),              # non-minimal encodings are accepted (3.1.1 does not forbid them)
    (b"\x81\x80\x00", 1),
    (b"\xff\x80\x80\x00", 127),
])
def test_decode_varint_non_minimal(encoded: bytes, value: int) -> None:
    assert decode_varint(encoded, 0) == (value, len(encoded))


@pytest.mark.parametrize("cut", [b"", b"\x80", b"\xff\xff", b"\x80\x80\x80"])
def test_decode_varint_cut_short_needs_data(cut: bytes) -> None:
    assert decode_varint(cut, 0) is NEED_DATA
    assert decode_varint(b"\x30" + cut, 1) is NEED_DATA


@pytest.mark.parametrize("encoded", [
    b"\xff\xff\xff\xff\x01",       # a 5th byte: 268,435,456 does not fit
    b"\x80\x80\x80\x80\x00",       # even when it would encode a small value
    b"\xff\xff\xff\xff",           # the 4th byte already announces a 5th: no need to wait for it
])
def test_decode_varint_over_four_bytes_raises(encoded: bytes) -> None:
    with pytest.raises(DecodeError):
        decode_varint(encoded, 0)


@pytest.mark.parametrize("value", [-1, 268_435_456, 2**32])
def test_encode_varint_out_of_range(value: int) -> None:
    with pytest.raises(ValueError):
        encode_varint(value)


# -- CONNECT --------------------------------------------------------------------------------

CONNECT_TABLE = [
    # (id, body bytes, expected ConnectBody)
    ("3.1 MQIsdp", connect_body(level=3, keep_alive=30, client_id="old-client"),
     ConnectBody("MQIsdp", 3, 30, "old-client", True, False, False, False)),
    ("3.1.1", connect_body(level=4, keep_alive=60, client_id="c1", clean=False),
     ConnectBody("MQTT", 4, 60, "c1", False, False, False, False)),
    ("3.1.1 keep alive 0", connect_body(level=4, keep_alive=0),
     ConnectBody("MQTT", 4, 0, "client-1", True, False, False, False)),
    ("3.1.1 keep alive max", connect_body(level=4, keep_alive=65535),
     ConnectBody("MQTT", 4, 65535, "client-1", True, False, False, False)),
    ("3.1.1 bridge bit", connect_body(level=0x84, keep_alive=45, client_id="bridge"),
     ConnectBody("MQTT", 4, 45, "bridge", True, False, False, False)),
    ("3.1 bridge bit", connect_body(level=0x83, keep_alive=45, client_id="bridge"),
     ConnectBody("MQIsdp", 3, 45, "bridge", True, False, False, False)),
    ("3.1.1 empty client id", connect_body(level=4, keep_alive=10, client_id=""),
     ConnectBody("MQTT", 4, 10, "", True, False, False, False)),
    ("3.1.1 user, password, will",
     connect_body(level=4, keep_alive=20, username="u", password=b"pw", will=("w/t", b"bye")),
     ConnectBody("MQTT", 4, 20, "client-1", True, True, True, True)),
    ("5.0 no properties", connect_body(level=5, keep_alive=15, client_id="v5"),
     ConnectBody("MQTT", 5, 15, "v5", True, False, False, False)),
    ("5.0 session expiry",
     connect_body(level=5, keep_alive=15, client_id="v5",
                  props=properties(prop_u32(SESSION_EXPIRY, 3600))),
     ConnectBody("MQTT", 5, 15, "v5", True, False, False, False, session_expiry_s=3600)),
    ("5.0 session expiry among other properties",
     connect_body(level=5, keep_alive=15, client_id="v5",
                  props=properties(prop_u16(0x21, 10),            # Receive Maximum
                                   prop_u32(SESSION_EXPIRY, 0xFFFFFFFF),
                                   varint(0x26) + utf8("k") + utf8("v"))),  # User Property
     ConnectBody("MQTT", 5, 15, "v5", True, False, False, False, session_expiry_s=0xFFFFFFFF)),
    ("5.0 empty client id, will with properties",
     connect_body(level=5, keep_alive=5, client_id="", will=("w", b"x"),
                  will_props=properties(prop_u32(0x18, 5))),
     ConnectBody("MQTT", 5, 5, "", True, False, False, True)),
]


@pytest.mark.parametrize(("body", "expected"), [c[1:] for c in CONNECT_TABLE],
                         ids=[c[0] for c in CONNECT_TABLE])
def test_decode_connect(body: bytes, expected: ConnectBody) -> None:
    assert decode_connect(body) == expected


@pytest.mark.parametrize("level", [3, 4, 5])
def test_connect_never_keeps_the_password_or_will(level: int) -> None:
    secret, will_message = b"s3cr3t-Pa55w0rd", b"will-payload-XYZ"
    body = connect_body(level=level, username="alice", password=secret, will=("w/t", will_message))
    decoded = decode_connect(body)
    assert decoded.has_password and decoded.has_username and decoded.has_will
    values = [getattr(decoded, f.name) for f in dataclasses.fields(decoded)]
    for value in values:
        for hidden in (secret, will_message):
            assert hidden not in (value if isinstance(value, bytes) else str(value).encode())
    assert secret.decode() not in repr(decoded)
    assert will_message.decode() not in repr(decoded)
    assert not hasattr(decoded, "__dict__")  # slotted: no way to smuggle extra attributes in


@pytest.mark.parametrize("body", [
    utf8(b"HTTP") + bytes([4, 2]) + u16(60) + utf8("c"),      # unknown protocol name
    utf8(b"MQTT") + bytes([4, 2]),                            # ends before Keep Alive
    utf8(b"MQ"),                                              # name length runs past the body
    b"",
], ids=["unknown-name", "no-keep-alive", "short-name", "empty"])
def test_decode_connect_rejects_non_connect(body: bytes) -> None:
    with pytest.raises(DecodeError) as info:
        decode_connect(body)
    assert getattr(info.value, "partial", None) is None


PARTIAL_CONNECT_TABLE = [
    # (id, body, keep alive still expected)
    ("v5 property length past the packet",
     utf8(b"MQTT") + bytes([5, 2]) + u16(42) + varint(200) + prop_u32(SESSION_EXPIRY, 1), 42),
    ("v5 unknown property",
     utf8(b"MQTT") + bytes([5, 2]) + u16(43) + properties(b"\x7f\x00") + utf8("c"), 43),
    ("v5 property cut inside its value",
     utf8(b"MQTT") + bytes([5, 2]) + u16(44) + varint(3) + b"\x11\x00\x00", 44),
    ("v5 property length varint cut",
     utf8(b"MQTT") + bytes([5, 2]) + u16(45) + b"\x80", 45),
    ("3.1.1 client id length past the packet",
     utf8(b"MQTT") + bytes([4, 2]) + u16(46) + u16(50) + b"abc", 46),
]


@pytest.mark.parametrize(("body", "keep_alive"), [c[1:] for c in PARTIAL_CONNECT_TABLE],
                         ids=[c[0] for c in PARTIAL_CONNECT_TABLE])
def test_malformed_connect_after_keep_alive_keeps_keep_alive(body: bytes, keep_alive: int) -> None:
    with pytest.raises(PartialDecode) as info:
        decode_connect(body)
    assert isinstance(info.value, DecodeError)
    partial = info.value.partial
    assert isinstance(partial, ConnectBody)
    assert partial.keep_alive_s == keep_alive
    assert partial.protocol_name == "MQTT"


def test_connect_without_client_id_field_is_not_an_error() -> None:
    # A CONNECT cut right after the variable header (e.g. body capped) still gives Keep Alive.
    body = utf8(b"MQTT") + bytes([4, 2]) + u16(33)
    assert decode_connect(body) == ConnectBody("MQTT", 4, 33, None, True, False, False, False)


# -- CONNACK --------------------------------------------------------------------------------

CONNACK_TABLE = [
    # (id, body, expected)
    ("3.x accepted", b"\x00\x00", ConnAckBody(0, False)),
    ("3.x session present", b"\x01\x00", ConnAckBody(0, True)),
    ("3.x not authorised", b"\x00\x05", ConnAckBody(5, False)),
    ("5.0 no properties", b"\x00\x00" + properties(), ConnAckBody(0, False)),
    ("5.0 server keep alive", b"\x00\x00" + properties(prop_u16(SERVER_KEEP_ALIVE, 30)),
     ConnAckBody(0, False, server_keep_alive_s=30, server_keep_alive_count=1)),
    ("5.0 server keep alive 0", b"\x01\x00" + properties(prop_u16(SERVER_KEEP_ALIVE, 0)),
     ConnAckBody(0, True, server_keep_alive_s=0, server_keep_alive_count=1)),
    ("5.0 assigned client id", b"\x00\x00" + properties(prop_str(ASSIGNED_CLIENT_ID, "auto-1f3a")),
     ConnAckBody(0, False, assigned_client_id="auto-1f3a")),
    ("5.0 both, among others",
     b"\x00\x00" + properties(prop_u16(0x21, 20), prop_str(ASSIGNED_CLIENT_ID, "auto-2"),
                              bytes([0x24, 1]), prop_u16(SERVER_KEEP_ALIVE, 120),
                              varint(0x26) + utf8("k") + utf8("v")),
     ConnAckBody(0, False, server_keep_alive_s=120, assigned_client_id="auto-2",
                 server_keep_alive_count=1)),
    ("5.0 duplicated server keep alive",
     b"\x00\x00" + properties(prop_u16(SERVER_KEEP_ALIVE, 10), prop_u16(SERVER_KEEP_ALIVE, 99)),
     ConnAckBody(0, False, server_keep_alive_s=10, server_keep_alive_count=2)),
    ("5.0 refused with reason code", b"\x00\x87" + properties(), ConnAckBody(0x87, False)),
]


@pytest.mark.parametrize(("body", "expected"), [c[1:] for c in CONNACK_TABLE],
                         ids=[c[0] for c in CONNACK_TABLE])
def test_decode_connack(body: bytes, expected: ConnAckBody) -> None:
    assert decode_connack(body) == expected


@pytest.mark.parametrize("body", [
    b"\x00\x00" + properties(b"\x7f\x00\x01"),                       # unknown property id
    b"\x00\x00" + properties(b"\x00"),                               # property id 0 is not a property
    b"\x00\x00" + varint(10) + prop_u16(SERVER_KEEP_ALIVE, 5),       # property length past the end
    b"\x00\x00" + varint(2) + prop_u16(SERVER_KEEP_ALIVE, 5),        # a property runs past its block
    b"\x00",                                                         # too short for 3.x
    b"",
], ids=["unknown-property", "property-0", "length-past-end", "property-past-block", "one-byte", "empty"])
def test_decode_connack_malformed(body: bytes) -> None:
    with pytest.raises(DecodeError):
        decode_connack(body)


# -- DISCONNECT -----------------------------------------------------------------------------

@pytest.mark.parametrize(("body", "expected"), [
    (b"", DisconnectBody(None)),                                   # 3.x, or v5 "normal" shorthand
    (b"\x00", DisconnectBody(0)),
    (b"\x04", DisconnectBody(4)),                                  # with will message
    (b"\x8d", DisconnectBody(0x8D)),                               # keep alive timeout (server)
    (b"\x8e" + properties(prop_str(0x1F, "taken over")), DisconnectBody(0x8E)),
])
def test_decode_disconnect(body: bytes, expected: DisconnectBody) -> None:
    assert decode_disconnect(body) == expected


# -- header plausibility --------------------------------------------------------------------

PLAUSIBLE_TABLE = [
    # (first byte, remaining length, plausible)
    (0x10, 10, True),     # CONNECT: at least the 3.1.1 variable header
    (0x10, 12, True),
    (0x10, 9, False),
    (0x11, 12, False),    # reserved flags must be 0
    (0x20, 2, True),      # CONNACK
    (0x20, 3, True),
    (0x20, 1, False),
    (0x22, 2, False),
    (0x30, 2, True),      # PUBLISH QoS 0
    (0x30, 1000, True),
    (0x3B, 5, True),      # DUP, QoS 1, RETAIN
    (0x34, 4, True),      # QoS 2
    (0x36, 4, False),     # QoS 3 does not exist
    (0x30, 1, False),     # no room for the topic length
    (0x40, 2, True),      # PUBACK
    (0x41, 2, False),
    (0x50, 2, True),      # PUBREC
    (0x62, 2, True),      # PUBREL: flags fixed at 0010
    (0x60, 2, False),
    (0x70, 2, True),      # PUBCOMP
    (0x70, 1, False),
    (0x82, 5, True),      # SUBSCRIBE: flags fixed at 0010
    (0x80, 5, False),
    (0x82, 2, False),
    (0x90, 3, True),      # SUBACK
    (0x90, 2, False),
    (0xA2, 5, True),      # UNSUBSCRIBE
    (0xA0, 5, False),
    (0xB0, 2, True),      # UNSUBACK
    (0xC0, 0, True),      # PINGREQ is exactly 2 bytes
    (0xC0, 1, False),
    (0xC1, 0, False),
    (0xD0, 0, True),      # PINGRESP
    (0xD0, 2, False),
    (0xE0, 0, True),      # DISCONNECT 3.x
    (0xE0, 1, True),      # DISCONNECT 5.0 with a reason code
    (0xE2, 0, False),
    (0xF0, 0, True),      # AUTH (5.0)
    (0x00, 0, False),     # type 0 is reserved
    (0x00, 10, False),
    (0x16, 0x0301, False),  # a TLS handshake record: 16 03 01 ...
    (0x17, 0x0303, False),  # TLS application data
    (0x47, 0x4554, False),  # "GET " - HTTP
]


@pytest.mark.parametrize(("first", "rl", "plausible"), PLAUSIBLE_TABLE,
                         ids=[f"{f:02x}-{rl}" for f, rl, _ in PLAUSIBLE_TABLE])
def test_header_is_plausible(first: int, rl: int, plausible: bool) -> None:
    assert header_is_plausible(first, rl) is plausible


# -- detection ------------------------------------------------------------------------------

@pytest.mark.parametrize(("payload", "is_connect"), [
    (connect(level=4), True),
    (connect(level=3), True),
    (connect(level=5), True),
    (connect(level=4, client_id="x" * 300), True),           # two-byte Remaining Length
    (connect(level=4)[:8], True),                            # the signature fits in 8 bytes
    (connect(level=4)[:7], False),
    (b"\x10\x0c" + utf8(b"HTTP") + b"\x04\x02\x00\x3c", False),
    (b"\x20\x02\x00\x00", False),                            # CONNACK
    (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", False),  # TLS ClientHello
    (b"\x10\xff\xff\xff\xff\x01\x00\x04MQTT", False),        # Remaining Length over 4 bytes
    (b"", False),
], ids=["3.1.1", "3.1", "5.0", "rl-2-bytes", "8-bytes", "7-bytes", "other-name", "connack", "tls", "rl-5-bytes",
        "empty"])
def test_looks_like_connect(payload: bytes, is_connect: bool) -> None:
    assert looks_like_connect(payload) is is_connect

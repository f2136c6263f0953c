"""`connect_client_id`, read in place, says what the full CONNECT decoder says of the same bytes.

A split analysis takes the client ids of the other processes' CONNECTs from it, and the columnar
path the first data of new connections; the per-frame path decodes the same packets with
`decode_connect`. Were the two to disagree on a malformed or cut CONNECT, a takeover by client id
would be judged differently by the two paths. So the reference here is `decode_connect` over the
packet's body, on built CONNECTs of every protocol level, cut anywhere, with a byte changed
anywhere, and on random bytes behind a CONNECT's first byte.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from analyzer.errors import DecodeError
from analyzer.mqtt.codec import decode_connect, decode_varint
from analyzer.mqtt.detect import connect_client_id, looks_like_connect
from tests.builders import connect, prop_str, prop_u16, prop_u32, properties


def _decoded(payload: bytes) -> str | None:
    """The client id as the per-frame path finds it: a whole CONNECT's body decoded in full."""
    if not looks_like_connect(payload):
        return None
    try:
        decoded = decode_varint(payload, 1)
        if decoded is None or 1 + decoded[1] + decoded[0] > len(payload):
            return None
        body = decode_connect(payload[1 + decoded[1]:1 + decoded[1] + decoded[0]])
    except DecodeError:
        return None
    return body.client_id or ""


PROPERTIES = st.lists(st.sampled_from([
    prop_u32(0x11, 3600), prop_u16(0x21, 10), prop_str(0x15, "SCRAM"), prop_u32(0x27, 1 << 16),
    prop_str(0x26, "k") + b"\x00\x01v",  # a user property: a pair of strings
    b"\x7f\x00",  # an unknown property id: malformed
]), max_size=4).map(lambda props: properties(*props))

CONNECTS = st.builds(
    lambda level, client_id, props, keep_alive, username, trailing: connect(
        level=level, client_id=client_id, props=props if level & 0x7F >= 5 else None,
        keep_alive=keep_alive, username=username) + trailing,
    level=st.sampled_from([3, 4, 5, 0x84, 0x85, 6]),
    client_id=st.text(max_size=30),
    props=PROPERTIES,
    keep_alive=st.integers(0, 65535),
    username=st.none() | st.text(max_size=8),
    trailing=st.binary(max_size=8),  # the next packet in the same segment
)


@given(CONNECTS)
@settings(max_examples=400)
def test_whole_connects(payload: bytes) -> None:
    assert connect_client_id(payload) == _decoded(payload)


@given(CONNECTS, st.data())
@settings(max_examples=400)
def test_cut_connects(payload: bytes, data: st.DataObject) -> None:
    cut = payload[:data.draw(st.integers(0, len(payload)))]
    assert connect_client_id(cut) == _decoded(cut)


@given(CONNECTS, st.data())
@settings(max_examples=600)
def test_connects_with_a_byte_changed(payload: bytes, data: st.DataObject) -> None:
    at = data.draw(st.integers(0, len(payload) - 1))
    changed = payload[:at] + bytes([data.draw(st.integers(0, 255))]) + payload[at + 1:]
    assert connect_client_id(changed) == _decoded(changed)


@given(st.binary(max_size=60))
@settings(max_examples=400)
def test_random_bytes_after_a_connect_header(rest: bytes) -> None:
    for payload in (b"\x10" + rest, b"\x10" + bytes([len(rest)]) + rest,
                    b"\x10" + bytes([len(rest) + 10]) + b"\x00\x04MQTT" + rest,
                    b"\x10" + bytes([len(rest) + 8]) + b"\x00\x04MQTT\x05\x02\x00\x3c" + rest):
        assert connect_client_id(payload) == _decoded(payload)


def test_what_the_analysis_relies_on() -> None:
    """The answers themselves, on the shapes that matter."""
    assert connect_client_id(connect(client_id="dev-1")) == "dev-1"
    assert connect_client_id(connect(level=5, client_id="dev-5", props=properties(prop_u32(0x11, 9)))) == "dev-5"
    assert connect_client_id(connect(level=3, client_id="old")) == "old"
    assert connect_client_id(connect(client_id="")) == ""
    assert connect_client_id(connect(client_id="dev-1")[:-1]) is None  # not whole
    assert connect_client_id(b"\x30" + connect(client_id="x")[1:]) is None  # not a CONNECT
    assert connect_client_id(connect(level=5, client_id="x", props=properties(b"\x7f\x00"))) is None

"""WebSocketDecoder and MQTT-over-WebSocket detection: bytes in, MQTT bytes and WebSocket events out.

Frame N is sent at N * 1000 ns, so every event names the segment that carried it. Client frames are
masked (as RFC 6455 requires), server frames are not.
"""

from __future__ import annotations

import pytest

from analyzer import analyze
from analyzer.engine import CaptureAnalysis, Options
from analyzer.model import Direction, MQTTPacket, PacketType
from analyzer.mqtt.framer import MQTTFramer
from analyzer.websocket import (
    WebSocketDecoder,
    WSData,
    WSError,
    WSGap,
    WSOpen,
    upgrade_verdict,
)
from analyzer.websocket.decoder import unmask
from tests.builders import PINGREQ, PINGRESP, connect, disconnect, publish
from tests.support.ws_client import (
    BINARY,
    CLOSE,
    CONTINUATION,
    PING,
    PONG,
    TEXT,
    ws_frame,
)

KEY = b"\x37\xfa\x21\x3d"
REQUEST = (b"GET /mqtt HTTP/1.1\r\nHost: broker:9001\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
           b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
           b"Sec-WebSocket-Protocol: mqtt\r\n\r\n")
RESPONSE = (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\nSec-WebSocket-Protocol: mqtt\r\n\r\n")


def ts(frame: int) -> int:
    return frame * 1000


def cframe(opcode: int, payload: bytes = b"", **kw) -> bytes:
    return ws_frame(opcode, payload, mask=KEY, **kw)


def feed(dec: WebSocketDecoder, pieces: list[bytes], first_frame: int = 1) -> list:
    out: list = []
    for frame, piece in enumerate(pieces, start=first_frame):
        out += dec.feed(piece, frame, ts(frame))
    return out


def data_of(events: list) -> bytes:
    return b"".join(e.payload for e in events if isinstance(e, WSData))


def kinds(events: list) -> list[str]:
    return [type(e).__name__ for e in events if not isinstance(e, WSData)]


def client(handshake: bool = False) -> WebSocketDecoder:
    return WebSocketDecoder(True, handshake=handshake)


def server(handshake: bool = False) -> WebSocketDecoder:
    return WebSocketDecoder(False, handshake=handshake)


# -- handshake and detection ------------------------------------------------------------------


@pytest.mark.parametrize(("head", "verdict"), [
    (REQUEST, True),
    (REQUEST.replace(b"mqtt\r\n", b"mqttv3.1\r\n"), True),
    (REQUEST.replace(b"Protocol: mqtt", b"Protocol: chat, MQTT"), True),
    (REQUEST.replace(b"Protocol: mqtt", b"Protocol: chat"), False),
    (REQUEST.replace(b"Upgrade: websocket", b"Upgrade: h2c"), False),
    (REQUEST.replace(b"Upgrade: websocket", b"upgrade:  WebSocket "), True),
    (REQUEST.replace(b"Upgrade: websocket", b"UPGRADE: h2c, WEBSOCKET"), True),
    (REQUEST.replace(b"Upgrade: websocket", b"Upgrade: websocke"), False),
    (REQUEST.replace(b"Upgrade: websocket", b"Upgrade: h2c") + b"Upgrade: websocket\r\n\r\n", False),
    (REQUEST.replace(b"GET ", b"POST "), False),
    (REQUEST[:40], None),
    (b"GE", None),
    (b"\x10\x0c\x00\x04MQTT", False),
    (b"GET / HTTP/1.1\r\n" + b"X: y\r\n" * 4000, False),
])
def test_upgrade_verdict(head: bytes, verdict: bool | None) -> None:
    assert upgrade_verdict(head) is verdict


def test_any_websocket_upgrade_counts_on_a_configured_port() -> None:
    head = REQUEST.replace(b"Protocol: mqtt", b"Protocol: chat")
    assert upgrade_verdict(head, require_mqtt=False) is True


def test_handshake_then_frames_in_the_same_segment_and_split_heads() -> None:
    dec = client(handshake=True)
    first = cframe(BINARY, connect(client_id="c", keep_alive=2))
    events = feed(dec, [REQUEST[:30], REQUEST[30:] + first[:3], first[3:]])
    assert [type(e).__name__ for e in events if not isinstance(e, WSData)] == ["WSOpen"]
    assert events[0].frame_no == 2 and events[0].subprotocol == "mqtt"
    assert data_of(events) == connect(client_id="c", keep_alive=2)


def test_server_101_and_refusal() -> None:
    dec = server(handshake=True)
    events = feed(dec, [RESPONSE + ws_frame(BINARY, PINGRESP)])
    assert isinstance(events[0], WSOpen) and data_of(events) == PINGRESP
    refused = server(handshake=True)
    events = feed(refused, [b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n", ws_frame(BINARY, PINGRESP)])
    assert kinds(events) == ["WSError"] and data_of(events) == b""


def test_server_frames_after_a_101_the_capture_lost_are_read() -> None:
    """The client's upgrade was captured, the server's 101 not (capture loss): the server's first
    bytes are frames, not an HTTP answer. They are read as frames (after one error saying the
    answer was missed), not held as an HTTP head that never ends, which left every PINGRESP
    unseen and every ping a KA203; bytes that start no frame are passed over until one does."""
    dec = server(handshake=True)
    events = feed(dec, [ws_frame(BINARY, b"\x20\x02\x00\x00"), ws_frame(BINARY, PINGRESP)])
    assert kinds(events) == ["WSError"] and "not captured" in events[0].reason
    assert data_of(events) == b"\x20\x02\x00\x00" + PINGRESP
    garbled = server(handshake=True)
    events = feed(garbled, [b"\xff\xff\xff\xff\xff", ws_frame(BINARY, PINGRESP)])
    assert kinds(events) == ["WSError"] and data_of(events) == PINGRESP
    short = server(handshake=True)  # (a first frame shorter than "HTTP/")
    events = feed(short, [ws_frame(BINARY, PINGRESP), ws_frame(BINARY, PINGRESP)])
    assert len(ws_frame(BINARY, PINGRESP)) < 5 and data_of(events) == PINGRESP + PINGRESP
    split = server(handshake=True)  # (an answer cut into pieces is still an answer)
    events = feed(split, [RESPONSE[:3], RESPONSE[3:] + ws_frame(BINARY, PINGRESP)])
    assert isinstance(events[0], WSOpen) and data_of(events) == PINGRESP


# -- frames -----------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [0, 1, 125, 126, 127, 65535, 65536, 70000])
@pytest.mark.parametrize("masked", [True, False])
def test_payload_lengths(size: int, masked: bool) -> None:
    payload = bytes(i * 7 % 251 for i in range(size))
    dec = client() if masked else server()
    frame = ws_frame(BINARY, payload, mask=KEY if masked else None)
    header = len(frame) - size
    assert header == (2 if size < 126 else 4 if size < 65536 else 10) + (4 if masked else 0)
    events = feed(dec, [frame])
    assert data_of(events) == payload and kinds(events) == []


@pytest.mark.parametrize("form", [126, 127])
def test_non_minimal_length_forms_are_read(form: int) -> None:
    events = feed(client(), [cframe(BINARY, PINGREQ, length_form=form)])
    assert data_of(events) == PINGREQ


def test_unmask_at_every_offset() -> None:
    data = bytes(range(64))
    masked = bytes(b ^ KEY[i & 3] for i, b in enumerate(data))
    for cut in range(len(data)):
        assert unmask(masked[:cut], KEY, 0) + unmask(masked[cut:], KEY, cut) == data


def test_bytes_split_at_every_position() -> None:
    """Every cut through headers (lengths, key) and payloads gives the same bytes and events."""
    stream = (cframe(BINARY, connect(client_id="c", keep_alive=2)) + cframe(PING, b"hi") + cframe(BINARY, PINGREQ + publish("t", b"x" * 200))
              + cframe(BINARY, b"\x30", fin=False) + cframe(PONG) + cframe(CONTINUATION, b"\x02\x00", fin=False)
              + cframe(CONTINUATION, b"t", fin=True) + cframe(CLOSE, b"\x03\xe8bye"))
    whole = feed(client(), [stream])
    want = data_of(whole)
    assert want == connect(client_id="c", keep_alive=2) + PINGREQ + publish("t", b"x" * 200) + b"\x30\x02\x00t"
    assert kinds(whole) == ["WSControl", "WSControl", "WSClose"]
    for i in range(1, len(stream)):
        for j in (i + 1, i + 3, len(stream)):
            if j > len(stream) or j <= i:
                continue
            events = feed(client(), [stream[:i], stream[i:j], stream[j:]])
            assert data_of(events) == want, (i, j)
            assert kinds(events) == ["WSControl", "WSControl", "WSClose"], (i, j)


def test_split_key_bytes_take_the_frame_of_their_segment() -> None:
    frame = cframe(BINARY, PINGREQ)  # 2 header bytes, 4 key bytes, 2 payload bytes
    events = feed(client(), [frame[:4], frame[4:7], frame[7:]])
    assert [(e.payload, e.frame_no) for e in events] == [(PINGREQ[:1], 2), (PINGREQ[1:], 3)]


def test_fragmented_message_and_interleaved_control() -> None:
    message = publish("topic", b"payload")
    events = feed(client(), [cframe(BINARY, message[:3], fin=False), cframe(PING),
                             cframe(CONTINUATION, message[3:9], fin=False),
                             cframe(CONTINUATION, message[9:], fin=True)])
    assert data_of(events) == message
    assert [(type(e).__name__, e.frame_no) for e in events] == [
        ("WSData", 1), ("WSControl", 2), ("WSData", 3), ("WSData", 4)]


def test_ping_pong_close_are_events_not_data() -> None:
    events = feed(client(), [cframe(PING, b"x"), cframe(PONG), cframe(CLOSE, b"\x03\xe8"), cframe(BINARY, PINGREQ)])
    assert kinds(events) == ["WSControl", "WSControl", "WSClose"]
    assert events[0].opcode == PING and events[1].opcode == PONG
    assert events[2].code == 1000 and data_of(events) == b""  # nothing after the close


@pytest.mark.parametrize(("frame", "reason"), [
    (bytes([0x83, 0x80]) + KEY, "reserved opcode"),
    (bytes([0xC2, 0x80]) + KEY, "reserved bits"),
    (ws_frame(PING, b"x" * 126, mask=KEY), "control frame"),
    (ws_frame(PING, b"", fin=False, mask=KEY), "control frame"),
    (bytes([0x82, 0xFF]) + b"\x80" + bytes(7) + KEY, "64-bit"),
])
def test_malformed_frames_are_errors_then_resync(frame: bytes, reason: str) -> None:
    dec = client()
    events = feed(dec, [frame, b"\x00garbage", cframe(BINARY, PINGREQ)])
    errors = [e for e in events if isinstance(e, WSError)]
    assert len(errors) == 1 and reason in errors[0].reason and errors[0].frame_no == 1
    assert data_of(events) == PINGREQ  # the next segment that starts a frame resynchronises


@pytest.mark.parametrize(("frames", "reason"), [
    ([ws_frame(BINARY, PINGREQ)], "unmasked client frame"),
    ([cframe(TEXT, PINGREQ)], "text frame"),
    ([cframe(CONTINUATION, PINGREQ)], "continuation frame without"),
    ([cframe(BINARY, b"\xc0", fin=False), cframe(BINARY, PINGREQ)], "before the fragmented one"),
    ([cframe(CLOSE, b"\x03")], "1-byte body"),
])
def test_protocol_violations_are_reported(frames: list[bytes], reason: str) -> None:
    events = feed(client(), frames)
    assert any(isinstance(e, WSError) and reason in e.reason for e in events)


def test_masked_server_frame_is_reported_and_unmasked() -> None:
    events = feed(server(), [ws_frame(BINARY, PINGRESP, mask=KEY)])
    assert kinds(events) == ["WSError"] and data_of(events) == PINGRESP


def test_garbage_never_raises() -> None:
    import random

    rng = random.Random(5)
    for _ in range(300):
        dec = WebSocketDecoder(rng.random() < 0.5, handshake=rng.random() < 0.3)
        for frame in range(1, 6):
            dec.feed(bytes(rng.randrange(256) for _ in range(rng.randrange(40))), frame, ts(frame))
            if rng.random() < 0.2:
                dec.gap(rng.randrange(1, 50), frame, ts(frame))
        dec.eof(9, ts(9))


# -- gaps -------------------------------------------------------------------------------------


def test_gap_inside_a_payload_keeps_sync_and_the_mask_offset() -> None:
    payload = publish("t", b"y" * 40)
    frame = cframe(BINARY, payload) + cframe(BINARY, PINGREQ)
    dec = client()
    events = dec.feed(frame[:10], 1, ts(1))
    events += dec.gap(20, 2, ts(2))
    events += dec.feed(frame[30:], 3, ts(3))
    gaps = [e for e in events if isinstance(e, WSGap)]
    assert [g.missing for g in gaps] == [20] and kinds(events) == ["WSGap"]
    assert data_of(events) == payload[:4] + payload[24:] + PINGREQ


def test_gap_in_a_header_resyncs_at_the_next_frame() -> None:
    dec = client()
    events = dec.feed(cframe(BINARY, PINGREQ)[:3], 1, ts(1))
    events += dec.gap(10, 2, ts(2))
    events += dec.feed(b"\x01\x02", 3, ts(3))            # mid-frame: dropped
    events += dec.feed(cframe(BINARY, PINGREQ), 4, ts(4))  # a frame starts: in sync again
    assert kinds(events) == ["WSGap"] and data_of(events) == PINGREQ
    assert dec.unsynced_bytes == 2


# -- with the MQTT framer ---------------------------------------------------------------------


def mqtt_through(frames: list[bytes]) -> list[MQTTPacket]:
    dec, framer = client(), MQTTFramer(Direction.TO_SERVER)
    out: list = []
    for n, piece in enumerate(frames, start=1):
        for e in dec.feed(piece, n, ts(n)):
            if isinstance(e, WSData):
                out += framer.feed(e.payload, e.frame_no, e.ts_ns)
    return out


def test_several_packets_in_one_message_and_one_packet_over_several() -> None:
    big = publish("t", b"z" * 300)
    packets = mqtt_through([cframe(BINARY, connect(client_id="c", keep_alive=2) + PINGREQ), cframe(BINARY, big[:100]),
                            cframe(BINARY, big[100:]), cframe(PING), cframe(BINARY, disconnect())])
    assert [(p.type, p.first_frame, p.last_frame) for p in packets] == [
        (PacketType.CONNECT, 1, 1), (PacketType.PINGREQ, 1, 1), (PacketType.PUBLISH, 2, 3),
        (PacketType.DISCONNECT, 5, 5)]


# -- through the engine -----------------------------------------------------------------------


def test_ws_late_pinger_equals_the_plain_late_pinger() -> None:
    from pathlib import Path

    captures = Path(__file__).resolve().parents[2] / "captures"
    plain = analyze([str(captures / "late-pinger.pcap")])
    ws = analyze([str(captures / "ws-late-pinger.pcap")])
    assert [f.rule_id for f in plain.findings] == [f.rule_id for f in ws.findings] == ["KA101"] * 4
    assert [round(f.gap_s or 0, 1) for f in plain.findings] == \
        [round(f.gap_s or 0, 1) for f in ws.findings]


def test_websocket_on_a_configured_port_is_unwrapped(tmp_path) -> None:
    from pathlib import Path

    capture = Path(__file__).resolve().parents[2] / "captures" / "ws-late-pinger.pcap"
    report = analyze([str(capture)], Options(ports=frozenset({9001})))
    assert [f.rule_id for f in report.findings] == ["KA101"] * 4
    assert report.sessions[0].client_id == "ka-ws-late-pinger"


def test_plain_connections_keep_the_plain_sink() -> None:
    from analyzer.session.connection import _Side

    analysis = CaptureAnalysis("x", Options())
    flow, _ = analysis._new_flow((b"\x7f\x00\x00\x01", 5000, b"\x7f\x00\x00\x01", 1883), 1, 0, 0x02)
    conn = flow.state
    conn.segment(True, 100, 0, 0x02, b"", 0, 1, ts(1))
    conn.segment(True, 101, 0, 0x18, connect(client_id="c", keep_alive=2), 0, 2, ts(2))
    assert all(type(half.sink) is _Side for half in conn.halves) and not conn.websocket


# -- a synthetic connection through CaptureAnalysis.frame (raw IPv4) ---------------------------

_C, _S = b"\x0a\x00\x00\x01", b"\x0a\x00\x00\x02"
NS = 1_000_000_000


class _Tcp:
    """Raw-IPv4 TCP frames of one connection, client port 40000 -> server port 9001."""

    def __init__(self, server_port: int = 9001) -> None:
        self.seq = {True: 1000, False: 5000}
        self.server_port = server_port

    def frame(self, from_client: bool, payload: bytes = b"", flags: int = 0x18) -> bytes:
        import struct

        src, dst = (_C, _S) if from_client else (_S, _C)
        sport, dport = (40000, self.server_port) if from_client else (self.server_port, 40000)
        seq, ack = self.seq[from_client], self.seq[not from_client]
        tcp = struct.pack("!HHIIBBHHH", sport, dport, seq, ack, 5 << 4, flags, 65535, 0, 0)
        total = 20 + len(tcp) + len(payload)
        ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, total, 0, 0, 64, 6, 0, src, dst)
        self.seq[from_client] = (seq + len(payload) + (1 if flags & 0x03 else 0)) % (1 << 32)
        return ip + tcp + payload


def run(frames: list[tuple[float, bytes]], options: Options | None = None) -> CaptureAnalysis:
    analysis = CaptureAnalysis("synthetic", options or Options())
    for n, (at, data) in enumerate(frames, start=1):
        analysis.frame(n, int(at * NS), 101, data)
    analysis.finish()
    return analysis


def test_close_frame_ends_the_session_and_ws_pings_do_not_count() -> None:
    t = _Tcp()
    frames = [
        (0.0, t.frame(True, flags=0x02)), (0.0, t.frame(False, flags=0x12)), (0.0, t.frame(True, flags=0x10)),
        (0.01, t.frame(True, REQUEST[:50])), (0.01, t.frame(True, REQUEST[50:])),       # 4, 5
        (0.02, t.frame(False, RESPONSE)),                                             # 6
        (0.03, t.frame(True, cframe(BINARY, connect(client_id="w", keep_alive=2)))),  # 7
        (0.04, t.frame(False, ws_frame(BINARY, b"\x20\x02\x00\x00"))),               # 8 CONNACK
        (1.0, t.frame(True, cframe(PING))), (1.0, t.frame(False, ws_frame(PONG))),    # 9, 10
        (2.0, t.frame(True, cframe(PING))), (2.0, t.frame(False, ws_frame(PONG))),    # 11, 12
        (3.0, t.frame(True, cframe(PING))), (3.0, t.frame(False, ws_frame(PONG))),    # 13, 14
        (4.5, t.frame(False, ws_frame(CLOSE, b"\x03\xe9"))),                         # 15: server close
        (4.6, t.frame(True, cframe(CLOSE, b"\x03\xe9"))),                            # 16
        (4.7, t.frame(False, flags=0x11)), (4.7, t.frame(True, flags=0x11)),
    ]
    analysis = run(frames)
    (session,) = analysis.sessions
    assert session.client_id == "w" and session.end_reason.value == "server_fin"
    assert session.end_frame == 15
    found = sorted((f.rule_id, *f.frames) for f in analysis.findings)
    assert ("KA101", 7, 15) in found and ("KA102", 7, 15) in found
    assert not any(f.rule_id == "KA401" for f in analysis.findings)


def test_client_close_frame_is_a_client_fin_and_plain_port_still_plain() -> None:
    t = _Tcp()
    frames = [
        (0.0, t.frame(True, flags=0x02)), (0.0, t.frame(False, flags=0x12)),
        (0.01, t.frame(True, REQUEST)), (0.02, t.frame(False, RESPONSE)),
        (0.03, t.frame(True, cframe(BINARY, connect(client_id="w", keep_alive=2)))),
        (0.04, t.frame(False, ws_frame(BINARY, b"\x20\x02\x00\x00"))),
        (1.0, t.frame(True, cframe(BINARY, PINGREQ))), (1.0, t.frame(False, ws_frame(BINARY, PINGRESP))),
        (1.5, t.frame(True, cframe(CLOSE, b"\x03\xe8"))),  # 9
    ]
    analysis = run(frames)
    (session,) = analysis.sessions
    assert session.end_reason.value == "client_fin" and session.end_frame == 9
    assert analysis.findings == []


def test_http_without_the_mqtt_subprotocol_is_not_mqtt() -> None:
    t = _Tcp()
    head = REQUEST.replace(b"Protocol: mqtt", b"Protocol: chat")
    analysis = run([(0.0, t.frame(True, flags=0x02)), (0.0, t.frame(False, flags=0x12)),
                    (0.01, t.frame(True, head)), (0.02, t.frame(False, RESPONSE)),
                    (0.03, t.frame(True, cframe(BINARY, connect(client_id="w", keep_alive=2))))])
    assert analysis.sessions == []

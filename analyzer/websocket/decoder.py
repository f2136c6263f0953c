"""One direction of a WebSocket connection (RFC 6455), decoded into the MQTT bytes it carries (sans-I/O).

Theory of operation
-------------------
The decoder sits between TCP reassembly and the `MQTTFramer`. It is fed in-order stream bytes with
the frame number and timestamp of the segment that carried them (`feed`), told about lost bytes
(`gap`) and the end of the stream (`eof`); each call returns the events it completed:

* `WSOpen`: the HTTP Upgrade request (client) or its `101 Switching Protocols` answer (server) ended;
* `WSData`: payload bytes of binary (or, reported as an error, text) data frames and their
  continuations, unmasked, with the frame number and time of the segment that carried them, so an
  MQTT packet inside a WebSocket message is timed exactly as on plain TCP. Several MQTT packets in
  one message and one MQTT packet over several messages are the framer's business: it only sees
  the byte stream;
* `WSGap`: MQTT bytes the capture lost (the framer resynchronises);
* `WSControl`: a ping or pong. These are not MQTT control packets and never reset keep-alive, so
  they are reported for counting only and never reach the framer;
* `WSClose`: a close frame; the sender ends the WebSocket (and so the MQTT session) there;
* `WSError`: bytes that break RFC 6455 (or MQTT-6.0.0-1). Never an exception.

Frame headers may be cut anywhere by segment boundaries (including inside the extended length or
the masking key); payload bytes are unmasked with the key rotated by their offset in the frame.
After lost bytes outside a payload, or a header that cannot be a frame's, the decoder waits for a
segment that starts with a plausible frame header (`unsynced_bytes` counts what it drops).
"""

from __future__ import annotations

from analyzer.websocket.detect import MAX_REQUEST_BYTES, parse_head, tokens

CONTINUATION, TEXT, BINARY, CLOSE, PING, PONG = 0, 1, 2, 8, 9, 10
_OPCODES = frozenset({CONTINUATION, TEXT, BINARY, CLOSE, PING, PONG})

HANDSHAKE, FRAMES, UNSYNCED, CLOSED, REFUSED = "handshake", "frames", "unsynced", "closed", "refused"


class WSOpen:
    __slots__ = ("frame_no", "subprotocol", "ts_ns")

    def __init__(self, frame_no: int, ts_ns: int, subprotocol: str) -> None:
        self.frame_no, self.ts_ns, self.subprotocol = frame_no, ts_ns, subprotocol

    def __repr__(self) -> str:
        return f"WSOpen({self.frame_no}, {self.subprotocol!r})"


class WSData:
    __slots__ = ("frame_no", "payload", "ts_ns")

    def __init__(self, payload: bytes, frame_no: int, ts_ns: int) -> None:
        self.payload, self.frame_no, self.ts_ns = payload, frame_no, ts_ns

    def __repr__(self) -> str:
        return f"WSData({self.payload!r}, {self.frame_no})"


class WSGap:
    __slots__ = ("frame_no", "missing", "ts_ns")

    def __init__(self, missing: int, frame_no: int, ts_ns: int) -> None:
        self.missing, self.frame_no, self.ts_ns = missing, frame_no, ts_ns

    def __repr__(self) -> str:
        return f"WSGap({self.missing}, {self.frame_no})"


class WSControl:
    __slots__ = ("frame_no", "length", "opcode", "ts_ns")

    def __init__(self, opcode: int, frame_no: int, ts_ns: int, length: int) -> None:
        self.opcode, self.frame_no, self.ts_ns, self.length = opcode, frame_no, ts_ns, length

    def __repr__(self) -> str:
        return f"WSControl({'ping' if self.opcode == PING else 'pong'}, {self.frame_no})"


class WSClose:
    __slots__ = ("code", "frame_no", "reason", "ts_ns")

    def __init__(self, frame_no: int, ts_ns: int, code: int | None, reason: str) -> None:
        self.frame_no, self.ts_ns, self.code, self.reason = frame_no, ts_ns, code, reason

    def __repr__(self) -> str:
        return f"WSClose({self.frame_no}, {self.code})"


class WSError:
    __slots__ = ("frame_no", "reason", "ts_ns")

    def __init__(self, frame_no: int, ts_ns: int, reason: str) -> None:
        self.frame_no, self.ts_ns, self.reason = frame_no, ts_ns, reason

    def __repr__(self) -> str:
        return f"WSError({self.frame_no}, {self.reason!r})"


Event = WSOpen | WSData | WSGap | WSControl | WSClose | WSError


def unmask(chunk: bytes, key: bytes, offset: int) -> bytes:
    """XOR `chunk` with the masking key, the chunk starting `offset` bytes into the frame payload."""
    n = len(chunk)
    if not n:
        return chunk
    k = key[offset & 3:] + key[: offset & 3]
    stream = (k * (n // 4 + 1))[:n]
    return (int.from_bytes(chunk, "big") ^ int.from_bytes(stream, "big")).to_bytes(n, "big")


def header_length(b1: int) -> int:
    """Bytes of a frame header whose second byte is `b1`."""
    size = b1 & 0x7F
    return 2 + (2 if size == 126 else 8 if size == 127 else 0) + (4 if b1 & 0x80 else 0)


class WebSocketDecoder:
    """Decoding state of one direction of one WebSocket connection; see the module docstring."""

    __slots__ = (
        "_ctrl",
        "_fin",
        "_hdr",
        "_hs",
        "_in_payload",
        "_key",
        "_left",
        "_lenient",
        "_message",
        "_moff",
        "_opcode",
        "_text_reported",
        "compressed",
        "frames",
        "from_client",
        "pings",
        "pongs",
        "state",
        "subprotocol",
        "unsynced_bytes",
    )

    def __init__(self, from_client: bool, *, handshake: bool = True) -> None:
        self.from_client = from_client
        self.state = HANDSHAKE if handshake else FRAMES
        self.subprotocol = ""
        self.compressed = False
        self.unsynced_bytes = 0
        self.frames = 0
        self.pings = 0
        self.pongs = 0
        self._hs = b""
        self._hdr = b""            # a frame header cut by a segment boundary
        self._opcode = 0
        self._fin = True
        self._left = 0             # payload bytes still to come of the frame in progress
        self._key: bytes | None = None
        self._moff = 0             # offset of the next payload byte in the frame (for the key)
        self._in_payload = False
        self._message: int | None = None   # opcode of a fragmented data message in progress
        self._ctrl = b""
        self._lenient = False      # after a resync: a continuation without its start is fine
        self._text_reported = False

    # -- input --------------------------------------------------------------------------------

    def feed(self, data: bytes, frame_no: int, ts_ns: int) -> list[Event]:
        """Take the next in-order bytes of this direction; return the events they complete."""
        out: list[Event] = []
        state = self.state
        pos = 0
        if state is not FRAMES:
            if state is HANDSHAKE:
                pos = self._handshake(data, frame_no, ts_ns, out)
            elif state is UNSYNCED:
                if self._plausible(data):
                    self.state, self._lenient = FRAMES, True
                else:
                    self.unsynced_bytes += len(data)
                    return out
            else:  # CLOSED or REFUSED: nothing more is WebSocket/MQTT
                return out
        end = len(data)
        while pos < end and self.state is FRAMES:
            if self._in_payload:
                pos = self._payload(data, pos, frame_no, ts_ns, out)
            else:
                pos = self._header(data, pos, frame_no, ts_ns, out)
        return out

    def gap(self, missing: int, frame_no: int, ts_ns: int) -> list[Event]:
        """`missing` bytes of this direction were never captured."""
        out: list[Event] = []
        state = self.state
        if state is FRAMES and self._in_payload and not self._hdr and missing <= self._left:
            self._left -= missing
            self._moff += missing
            if self._opcode < CLOSE:
                out.append(WSGap(missing, frame_no, ts_ns))
            if not self._left:
                self._end_frame(frame_no, ts_ns, out, truncated=True)
            return out
        if state is HANDSHAKE:
            out.append(WSError(frame_no, ts_ns, "bytes of the HTTP Upgrade were not captured"))
            self._hs = b""
        if state in (HANDSHAKE, FRAMES, UNSYNCED):
            out.append(WSGap(missing, frame_no, ts_ns))
            self._unsync()
        return out

    def eof(self, frame_no: int, ts_ns: int) -> list[Event]:
        """The stream ended. A frame cut short needs no event: the framer reports its packet."""
        self._hdr, self._in_payload, self._ctrl = b"", False, b""
        return []

    # -- the handshake -------------------------------------------------------------------------

    def _handshake(self, data: bytes, frame_no: int, ts_ns: int, out: list[Event]) -> int:
        """Consume the HTTP head; return where the frames start in `data` (len(data): not yet)."""
        if not self.from_client and not self._hs and data[:5] != b"HTTP/"[:len(data[:5])]:
            # the server's first bytes are no HTTP answer: the capture lost its 101 (the client's
            # upgrade decided the connection), so its frames are read from the first that starts
            out.append(WSError(frame_no, ts_ns, "the server's answer to the WebSocket upgrade "
                                                "was not captured"))
            self._unsync()
            if not self._plausible(data):
                self.unsynced_bytes += len(data)
                return len(data)
            self.state, self._lenient = FRAMES, True
            return 0
        head = self._hs + data
        end = head.find(b"\r\n\r\n")
        if end < 0:
            if len(head) > MAX_REQUEST_BYTES:
                out.append(WSError(frame_no, ts_ns, "HTTP head too long for a WebSocket upgrade"))
                self._hs, self.state = b"", REFUSED
            else:
                self._hs = head
            return len(data)
        self._hs = b""
        rest = len(head) - end - 4
        start, fields = parse_head(head[:end])
        offered = fields.get("sec-websocket-protocol", "")
        if self.from_client:
            if not start.startswith("GET ") or "websocket" not in tokens(fields.get("upgrade", "")):
                out.append(WSError(frame_no, ts_ns, f"not a WebSocket upgrade request: {start[:60]!r}"))
                self.state = REFUSED
                return len(data)
        else:
            parts = start.split(" ", 2)
            if len(parts) < 2 or not parts[0].startswith("HTTP/") or parts[1] != "101":
                out.append(WSError(frame_no, ts_ns, f"the server refused the WebSocket upgrade: {start[:60]!r}"))
                self.state = REFUSED
                return len(data)
            if "permessage-deflate" in fields.get("sec-websocket-extensions", "").lower():
                self.compressed = True
        self.subprotocol = offered
        self.state = FRAMES
        out.append(WSOpen(frame_no, ts_ns, offered))
        return len(data) - rest

    # -- frames --------------------------------------------------------------------------------

    def _plausible(self, data: bytes) -> bool:
        """Does a segment starting with `data` start with a frame header? (resynchronising)"""
        if len(data) < 2:
            return False
        b0, b1 = data[0], data[1]
        opcode = b0 & 0x0F
        if b0 & 0x70 or opcode not in _OPCODES or bool(b1 & 0x80) != self.from_client:
            return False
        return opcode < CLOSE or (b0 & 0x80 and b1 & 0x7F <= 125)

    def _unsync(self) -> None:
        self.state = UNSYNCED
        self._hdr, self._in_payload, self._left, self._ctrl = b"", False, 0, b""
        self._message = None

    def _error(self, frame_no: int, ts_ns: int, reason: str, out: list[Event]) -> None:
        """Bytes that cannot be frames: report, and wait for a segment that starts a frame."""
        out.append(WSError(frame_no, ts_ns, reason))
        self._unsync()

    def _header(self, data: bytes, pos: int, frame_no: int, ts_ns: int, out: list[Event]) -> int:
        held = len(self._hdr)
        buf = self._hdr + data[pos: pos + 14]
        if len(buf) < 2:
            self._hdr = buf
            return len(data)
        need = header_length(buf[1])
        if len(buf) < need:
            self._hdr = buf
            return len(data)
        self._hdr = b""
        pos += need - held
        b0, b1 = buf[0], buf[1]
        fin, opcode, masked, size = bool(b0 & 0x80), b0 & 0x0F, bool(b1 & 0x80), b1 & 0x7F
        at = 2
        if size == 126:
            size, at = int.from_bytes(buf[2:4], "big"), 4
        elif size == 127:
            size, at = int.from_bytes(buf[2:10], "big"), 10
            if size >> 63:
                self._error(frame_no, ts_ns, "64-bit payload length with the most significant bit set", out)
                return pos
        if b0 & 0x70 and not (self.compressed and b0 & 0x40 and not b0 & 0x30):
            self._error(frame_no, ts_ns, f"reserved bits set (0x{b0 & 0x70:02x}) without an extension", out)
            return pos
        if opcode not in _OPCODES:
            self._error(frame_no, ts_ns, f"reserved opcode 0x{opcode:x}", out)
            return pos
        if opcode >= CLOSE and (not fin or size > 125):
            self._error(frame_no, ts_ns, "control frame fragmented or longer than 125 bytes", out)
            return pos
        if masked != self.from_client:
            out.append(WSError(frame_no, ts_ns, "unmasked client frame" if self.from_client
                               else "masked server frame"))
        if b0 & 0x40:
            out.append(WSError(frame_no, ts_ns, "compressed (permessage-deflate) frame: payload not decoded"))
            opcode_effective = -1
        else:
            opcode_effective = opcode
        if opcode < CLOSE:
            if opcode == CONTINUATION:
                if self._message is None and not self._lenient:
                    out.append(WSError(frame_no, ts_ns, "continuation frame without a message to continue"))
            else:
                if self._message is not None:
                    out.append(WSError(frame_no, ts_ns, "new data message before the fragmented one ended"))
                if opcode == TEXT and not self._text_reported:
                    self._text_reported = True
                    out.append(WSError(frame_no, ts_ns, "text frame: MQTT must be sent in binary frames"))
                self._message = opcode
            if fin:
                self._message = None
            self._lenient = False
        self.frames += 1
        self._opcode = opcode if opcode_effective >= 0 else 0x10  # 0x10: data not passed on
        self._fin = fin
        self._key = buf[at: at + 4] if masked else None
        self._moff = 0
        self._left = size
        self._ctrl = b""
        self._in_payload = True
        if not size:
            self._end_frame(frame_no, ts_ns, out)
        return pos

    def _payload(self, data: bytes, pos: int, frame_no: int, ts_ns: int, out: list[Event]) -> int:
        take = min(self._left, len(data) - pos)
        chunk = data[pos: pos + take]
        if self._key is not None:
            chunk = unmask(chunk, self._key, self._moff)
        self._moff += take
        self._left -= take
        opcode = self._opcode
        if opcode < CLOSE:
            out.append(WSData(chunk, frame_no, ts_ns))
        elif opcode < 0x10:
            self._ctrl += chunk
        if not self._left:
            self._end_frame(frame_no, ts_ns, out)
        return pos + take

    def _end_frame(self, frame_no: int, ts_ns: int, out: list[Event], truncated: bool = False) -> None:
        self._in_payload = False
        opcode = self._opcode
        if opcode == PING or opcode == PONG:
            if opcode == PING:
                self.pings += 1
            else:
                self.pongs += 1
            out.append(WSControl(opcode, frame_no, ts_ns, self._moff))
        elif opcode == CLOSE:
            body, code, reason = self._ctrl, None, ""
            if len(body) == 1 and not truncated:
                out.append(WSError(frame_no, ts_ns, "close frame with a 1-byte body"))
            elif len(body) >= 2:
                code = int.from_bytes(body[:2], "big")
                reason = body[2:].decode("utf-8", "replace")
            out.append(WSClose(frame_no, ts_ns, code, reason))
            self.state = CLOSED
        self._ctrl = b""

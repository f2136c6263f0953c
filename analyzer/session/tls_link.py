"""MQTT over TLS on one connection: what its TLS records become, with keys or without.

Theory of operation
-------------------
Each direction's reassembled bytes go through a `TLSRecordParser` (`TLSSide`). The `TLSLink` of
the connection reads the hellos (version, suite, SNI, ALPN), and turns every complete
application-data record into MQTT, in one of two ways:

* decrypted: when the key logs gave plaintext for the record (`PlaintextSource.chunks` of the
  frame that completed it, popped in record order), the plaintext goes to the MQTT framer, or to
  a WebSocket decoder when the client's first plaintext is an HTTP upgrade (WebSocket over TLS).
  The record's first byte is timed by the frame that started it and the rest by the frame that
  completed it, so packets are timed as on plain TCP and the verdicts are the same. Under TLS 1.3
  some protected records hold handshake messages or alerts and have no plaintext: they are
  skipped, unless tshark could not decrypt them (`PlaintextSource.undecrypted`: after a capture
  loss it loses count of that direction's records). Under TLS 1.2 every one carries application
  data. A record that carried application data without plaintext is a hole in the MQTT stream (the
  framer resynchronises, the session gets `hole`, the capture a warning).
* keyless: otherwise each record is one MQTT packet of unknown type (`PacketType.ENCRYPTED`), or
  a probable PINGREQ/PINGRESP when its length is that of an encrypted 2-byte packet for the
  negotiated version and suite (`tls.suites.probable_ping_length`). The session is a
  `KeylessTimeline` (`session.keyless`), and all its findings are "likely".

Which one is decided per connection at its first application-data record that has plaintext.
Until then records are held: under TLS 1.3 the client's first protected records are its Finished
(and certificate), which never have application-data plaintext. After `HOLD_CLIENT_RECORDS` client
records without plaintext, or at the end, the connection falls back to keyless and the capture
gets a warning. Without key logs there is nothing to wait for: keyless from the first record.

A connection on a port that is not an MQTT port whose ClientHello did not offer MQTT by ALPN is
`tentative`: it is MQTT only if its first client plaintext is a CONNECT or a WebSocket upgrade to
`mqtt`; anything else (HTTPS, no plaintext) rejects it and it is dropped without a session.

Alerts: an alert in the clear that is fatal or close_notify, and any encrypted alert record (TLS
1.2: nearly always close_notify), end the session as its sender's close, like a FIN. TLS 1.3 hides
alerts inside application-data records; there the FIN or RST that follows ends it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from analyzer.model import Direction, FramingError, MQTTPacket, PacketType
from analyzer.mqtt.detect import looks_like_connect
from analyzer.mqtt.framer import MQTTFramer
from analyzer.tls.plaintext import PlaintextSource
from analyzer.tls.records import (
    APPLICATION_DATA, TLS13, VERSION_NAMES, ClientHello, ServerHello, TLSAlert, TLSError,
    TLSGap, TLSRecord, TLSRecordParser,
)
from analyzer.tls.suites import plaintext_length, probable_ping_length, suite_name
from analyzer.websocket import WebSocketDecoder, upgrade_verdict

if TYPE_CHECKING:
    from analyzer.session.connection import Connection

UNDECIDED, KEYLESS, DECRYPTED = "undecided", "keyless", "decrypted"
HOLD_CLIENT_RECORDS = 4
"""Client application-data records without plaintext before a connection is judged keyless."""
MAX_HEAD_CHUNKS = 16
"""Plaintext chunks of a tentative connection's first client request waited for."""
FATAL = 2


class TLSSide:
    """Stream sink for one direction of an MQTT-over-TLS connection: bytes to its record parser,
    records to the connection's `TLSLink`."""

    __slots__ = ("chunk_frame", "chunk_next", "chunks", "conn", "failed_frame", "failed_left",
                 "framer", "is_a", "parser", "ws")

    def __init__(self, conn: Connection, is_a: bool, framer: MQTTFramer) -> None:
        self.conn, self.is_a, self.framer = conn, is_a, framer
        self.parser = TLSRecordParser()
        self.ws: WebSocketDecoder | None = None
        self.chunk_frame = 0
        self.chunk_next = 0
        self.chunks: list[bytes] = []
        self.failed_frame = 0
        self.failed_left = 0
        """TLS 1.3 records of `failed_frame` the keys did not open, not yet matched to a record."""

    def data(self, payload: bytes, frame_no: int, ts_ns: int) -> None:
        events = self.parser.feed(payload, frame_no, ts_ns)
        if events:
            self.conn.tls.on_events(self, events)  # type: ignore[union-attr]

    def gap(self, missing: int, frame_no: int, ts_ns: int) -> None:
        """Lost bytes: a hole in the session's timeline, unless the session is judged from its
        records (keyless) and the loss lies inside one (`TLSRecordParser.absorbs`)."""
        link = self.conn.tls
        hides = not (link.mode == KEYLESS  # type: ignore[union-attr]
                     and self.parser.absorbs(missing, own=self.conn.cut_frame == frame_no))
        link.on_events(self, self.parser.gap(missing, frame_no, ts_ns))  # type: ignore[union-attr]
        if hides:
            self.conn.on_gap(self.is_a, missing, frame_no, ts_ns)


class TLSLink:
    """The TLS state of one connection; see the module docstring."""

    def __init__(self, conn: Connection, source: PlaintextSource | None, *, tentative: bool) -> None:
        self.conn = conn
        self.source = source if source is not None and source.keys_given else None
        self.tentative = tentative
        self.mode = UNDECIDED if self.source is not None else KEYLESS
        self.client_hello: ClientHello | None = None
        self.server_hello: ServerHello | None = None
        self.ping_length: int | None = None
        self.client_records = 0
        """Application-data records the client sent (the first ones are handshake under 1.3)."""
        self.errors = 0
        self._held: list[tuple[TLSSide, TLSRecord]] = []
        self._held_client = 0
        self._plain_kind: str | None = None   # "mqtt" or "ws", from the first client plaintext
        self._head: list[tuple[TLSSide, bytes, TLSRecord]] = []

    # -- what the parsers found ------------------------------------------------------------------

    def on_events(self, side: TLSSide, events: list) -> None:
        for event in events:
            if self.conn.rejected:
                return
            cls = event.__class__
            if cls is TLSRecord:
                if event.content_type == APPLICATION_DATA:
                    self._app_record(side, event)
            elif cls is ClientHello:
                self._client_hello(side, event)
            elif cls is ServerHello:
                self._server_hello(event)
            elif cls is TLSAlert:
                if event.encrypted or event.level == FATAL or event.close_notify:
                    self.settle()
                    self.conn.tls_close(side, event.frame_no, event.ts_ns)
            elif cls is TLSGap:
                # a loss inside a record: the truncated record has no plaintext and becomes the
                # hole itself (`_undecrypted`), measured in plaintext bytes, not ciphertext
                if self.mode == DECRYPTED and not event.in_record:
                    self._consume_gap(side, event)
            elif cls is TLSError:
                self.errors += 1
                self.conn.on_events(side.is_a, [FramingError(side.framer.direction, event.frame_no,
                                                             event.ts_ns, f"TLS: {event.reason}")])

    def _client_hello(self, side: TLSSide, hello: ClientHello) -> None:
        if self.client_hello is None:
            self.client_hello = hello
        if side.is_a != self.conn.client_is_a and self.conn.timeline is None:
            self.conn.swap_roles()  # the ClientHello's sender is the client

    def _server_hello(self, hello: ServerHello) -> None:
        self.server_hello = hello
        if hello.version == TLS13:
            for side in self.conn.sides:
                side.parser.tls13 = True  # type: ignore[union-attr]
        if not hello.retry:
            self.ping_length = probable_ping_length(hello.version, hello.cipher_suite,
                                                    encrypt_then_mac=hello.encrypt_then_mac)

    @property
    def hides_alerts(self) -> bool:
        """TLS 1.3 sends alerts (close_notify among them) as application-data records, so a
        2-byte alert has the size of an encrypted 2-byte MQTT packet."""
        return self._tls13

    def describe(self) -> str:
        """The TLS facts of this connection for messages: version, suite, SNI, ALPN."""
        hello, client = self.server_hello, self.client_hello
        parts = []
        if hello is not None:
            parts.append(f"{VERSION_NAMES.get(hello.version, f'version 0x{hello.version:04X}')} "
                         f"{suite_name(hello.cipher_suite)}")
        else:
            parts.append("TLS (handshake not captured)")
        if client is not None and client.sni:
            parts.append(f"SNI {client.sni}")
        if hello is not None and hello.alpn:
            parts.append(f"ALPN {hello.alpn}")
        return ", ".join(parts)

    # -- application data -------------------------------------------------------------------------

    def _app_record(self, side: TLSSide, rec: TLSRecord) -> None:
        to_server = side.is_a == self.conn.client_is_a
        if to_server:
            self.client_records += 1
        # TLS 1.3: the server's protected handshake flight comes before the client's Finished. Not
        # once the client sent more than the capture has shown: its bytes may be held back behind
        # a capture hole while the broker's CONNACK and PINGRESPs are read (with keys, a record
        # with plaintext is not of the flight either).
        flight = (not to_server and not self.client_records and self._tls13
                  and not self.conn.half(client=True).held_back)
        if self.mode == KEYLESS:
            if not flight:
                self._keyless(side, rec)
        elif self.mode == DECRYPTED:
            chunk = self._next_chunk(side, rec.last_frame)
            if chunk is not None:
                self._plain(side, chunk, rec)
            elif not flight:
                self._without_plaintext(side, rec)
        else:
            self._undecided(side, rec, to_server, flight)

    @property
    def _tls13(self) -> bool:
        return self.server_hello is not None and self.server_hello.version == TLS13

    def _undecided(self, side: TLSSide, rec: TLSRecord, to_server: bool, flight: bool) -> None:
        assert self.source is not None
        if not self.source.available(rec.last_frame):  # the keys opened nothing in this file
            self._fall_back(warn=False)
            if self.mode == KEYLESS and not flight:
                self._keyless(side, rec)
            return
        chunk = self._next_chunk(side, rec.last_frame)
        if chunk is not None:
            held, self.mode, self._held = self._held, DECRYPTED, []
            for held_side, held_rec in held:
                self._without_plaintext(held_side, held_rec)
            self._plain(side, chunk, rec)
            return
        if flight:
            return
        self._held.append((side, rec))
        self._held_client += to_server
        if self._held_client >= HOLD_CLIENT_RECORDS:
            self.settle()

    def settle(self) -> None:
        """Decide now (the connection ends, or too many records came without plaintext)."""
        if self.mode == UNDECIDED:
            self._fall_back(warn=True)

    def _fall_back(self, *, warn: bool) -> None:
        if self.tentative:  # no MQTT ALPN and no plaintext: nothing says this is MQTT
            self._held = []
            self.conn.reject()
            return
        self.mode = KEYLESS
        if warn and self.source is not None and (self._held or self.client_records):
            self.source.fallback(self.conn.index)
        held, self._held = self._held, []
        for side, rec in held:
            self._keyless(side, rec)

    def _keyless(self, side: TLSSide, rec: TLSRecord) -> None:
        """One record as one MQTT packet of unknown type, or a probable ping by its length."""
        to_server = side.is_a == self.conn.client_is_a
        ping = (self.ping_length is not None and rec.length == self.ping_length and not rec.truncated)
        ptype = (PacketType.PINGREQ if to_server else PacketType.PINGRESP) if ping else PacketType.ENCRYPTED
        direction = Direction.TO_SERVER if to_server else Direction.TO_CLIENT
        self.conn.on_events(side.is_a, [MQTTPacket(
            direction, ptype, 0, 0, rec.first_frame, rec.last_frame, rec.ts_first_ns,
            rec.ts_last_ns, None, rec.truncated, 0, True)])

    # -- decrypted ----------------------------------------------------------------------------------

    def _next_chunk(self, side: TLSSide, frame_no: int) -> bytes | None:
        """The next not yet used plaintext chunk of `frame_no` (records complete in order)."""
        assert self.source is not None
        if side.chunk_frame != frame_no:
            side.chunk_frame, side.chunk_next = frame_no, 0
            side.chunks = self.source.chunks(frame_no)
        if side.chunk_next >= len(side.chunks):
            return None
        side.chunk_next += 1
        return side.chunks[side.chunk_next - 1]

    def _plain(self, side: TLSSide, chunk: bytes, rec: TLSRecord) -> None:
        if self._plain_kind is None and side.is_a == self.conn.client_is_a:
            self._head.append((side, chunk, rec))
            kind = self._head_kind(b"".join(c for _, c, _ in self._head))
            if kind is None:
                return
            head, self._head = self._head, []
            if kind == "reject":
                self.conn.reject()
                return
            self._plain_kind = kind
            if kind == "ws":
                self.conn.use_websocket_over_tls()
            for s, c, r in head:
                self._feed(s, c, r)
            return
        self._feed(side, chunk, rec)

    def _head_kind(self, head: bytes) -> str | None:
        """What the client's first plaintext opens: "mqtt", "ws", "reject", or None (more).

        On an MQTT port, as on plain TCP (`Connection._decide`): `GET ` is WebSocket, anything
        else MQTT. A tentative connection needs a CONNECT, or a complete upgrade to `mqtt`."""
        if not self.tentative:
            return "ws" if head.startswith(b"GET ") else "mqtt"
        more = len(self._head) < MAX_HEAD_CHUNKS
        if head.startswith(b"GET "):
            verdict = upgrade_verdict(head)
            if verdict is None and more:
                return None
            return "ws" if verdict else "reject"
        if looks_like_connect(head):
            return "mqtt"
        return None if more and len(head) < 8 and head[:1] == b"\x10" else "reject"

    def _feed(self, side: TLSSide, chunk: bytes, rec: TLSRecord) -> None:
        """Plaintext to the framer (or WebSocket decoder): its first byte timed by the record's
        first frame, the rest by the frame that completed the record."""
        if rec.first_frame != rec.last_frame and len(chunk) > 1:
            pieces = ((chunk[:1], rec.first_frame, rec.ts_first_ns), (chunk[1:], rec.last_frame, rec.ts_last_ns))
        else:
            pieces = ((chunk, rec.last_frame, rec.ts_last_ns),)
        for piece, frame_no, ts_ns in pieces:
            if side.ws is not None:
                events = side.ws.feed(piece, frame_no, ts_ns)
                if events:
                    self.conn.on_ws_events(side, events)
            else:
                events = side.framer.feed(piece, frame_no, ts_ns)
                if events:
                    self.conn.on_events(side.is_a, events)

    def _without_plaintext(self, side: TLSSide, rec: TLSRecord) -> None:
        """An application-data record of a connection the keys open gave no plaintext. Under TLS
        1.3 that is a handshake message (a session ticket) or an alert, which carry no MQTT,
        unless tshark could not decrypt it (`_failed`) or the capture lost part of it; under TLS
        1.2 every such record carries application data. Either way its MQTT bytes are missing."""
        if not self._tls13 or rec.truncated or self._failed(side, rec.last_frame):
            self._undecrypted(side, rec)

    def _failed(self, side: TLSSide, frame_no: int) -> bool:
        """Is a TLS 1.3 record completed in `frame_no` one the keys did not open? After a capture
        loss tshark loses count of a direction's records (their nonces) and decrypts none of the
        later ones: skipped as handshake messages, they made every later ping unanswered."""
        assert self.source is not None
        if side.failed_frame != frame_no:
            side.failed_frame, side.failed_left = frame_no, self.source.undecrypted(frame_no)
        if not side.failed_left:
            return False
        side.failed_left -= 1
        self.source.failed(self.conn.index)
        return True

    def _undecrypted(self, side: TLSSide, rec: TLSRecord) -> None:
        """A record that carried MQTT bytes without plaintext: they are missing (unless it was
        empty), a hole in the session as bytes the capture lost are."""
        hello = self.server_hello
        plain = None if hello is None else plaintext_length(
            hello.version, hello.cipher_suite, rec.length, encrypt_then_mac=hello.encrypt_then_mac)
        if plain == 0:
            return
        missing = plain or rec.length
        self._consume_gap(side, TLSGap(missing, rec.last_frame, rec.ts_last_ns))
        if not rec.truncated:  # (a truncated record's loss is the capture's: `TLSSide.gap` told)
            self.conn.on_gap(side.is_a, missing, rec.last_frame, rec.ts_last_ns)

    def _consume_gap(self, side: TLSSide, gap: TLSGap) -> None:
        """Plaintext lost (capture loss, or a TLS 1.2 record without plaintext): a hole in MQTT."""
        if side.ws is not None:
            events = side.ws.gap(gap.missing, gap.frame_no, gap.ts_ns)
            if events:
                self.conn.on_ws_events(side, events)
        else:
            events = side.framer.gap(gap.missing, gap.frame_no, gap.ts_ns)
            if events:
                self.conn.on_events(side.is_a, events)

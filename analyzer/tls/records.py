"""One direction of a TLS connection, cut into records (sans-I/O).

Theory of operation
-------------------
Without keys, a TLS connection still tells a lot: every record has a clear 5-byte header (content
type, version, length), and the handshake's first messages (ClientHello, ServerHello) are in the
clear. That is enough to see when each side sent something and how big it was, which is what
keep-alive needs (`analyzer.session.tls_link` turns application-data records into client and
broker activity). With keys, the same records say in which frame each decrypted chunk belongs.

`TLSRecordParser` is fed in-order stream bytes with the frame number and timestamp of the segment
that carried them (`feed`), told about lost bytes (`gap`) and about the end of the stream (`eof`).
Each call returns the events it completed, never raises, and an empty list means "need more bytes":

* `TLSRecord`: a complete record, with the frame (and time) of its first header byte and of its
  last byte. A record cut by a capture gap is still reported, `truncated`, because its start was
  seen. Content events come before the record that carried them.
* `ClientHello` / `ServerHello`: SNI, ALPN, offered versions and suites; the negotiated version
  (TLS 1.3 says it in the `supported_versions` extension, its legacy field says 1.2), the cipher
  suite, encrypt-then-MAC, and whether it was a HelloRetryRequest.
* `TLSAlert` (level and description when in the clear, None when encrypted) and
  `ChangeCipherSpec`.
* `TLSGap`: bytes the capture lost. Inside a record's payload the parser stays in step (the length
  is known); anywhere else it waits for a segment that starts with a plausible record header.
* `TLSError`: bytes that cannot be TLS (bad content type, version or length; a hello that does not
  parse). The parser then resynchronises as after a gap.

Only handshake messages sent in the clear are read, and only ClientHello and ServerHello are kept
(up to `MAX_HELLO_BYTES`); certificates and the rest are counted down and dropped. Payloads of
application data are never buffered. After a ChangeCipherSpec under TLS 1.2 and older, this
direction's handshake records are encrypted (Finished) and no longer read; under TLS 1.3 the
ChangeCipherSpec is a compatibility dummy and protected records are application data on the wire,
so the caller says which version was negotiated (`tls13`).
"""

from __future__ import annotations

from dataclasses import dataclass

CHANGE_CIPHER_SPEC, ALERT, HANDSHAKE, APPLICATION_DATA, HEARTBEAT = 20, 21, 22, 23, 24
CONTENT_TYPES = frozenset({CHANGE_CIPHER_SPEC, ALERT, HANDSHAKE, APPLICATION_DATA, HEARTBEAT})
CLIENT_HELLO, SERVER_HELLO = 1, 2

SSL3, TLS10, TLS11, TLS12, TLS13 = 0x0300, 0x0301, 0x0302, 0x0303, 0x0304
VERSION_NAMES = {SSL3: "SSL 3.0", TLS10: "TLS 1.0", TLS11: "TLS 1.1", TLS12: "TLS 1.2", TLS13: "TLS 1.3"}

HEADER_LENGTH = 5
MAX_RECORD_LENGTH = (1 << 14) + 2048
"""The largest TLSCiphertext fragment any version allows (RFC 5246 6.2.3; TLS 1.3 allows less)."""
MAX_HELLO_BYTES = 1 << 16
"""A ClientHello or ServerHello longer than this is not buffered (real ones are a few KB)."""

EXT_SERVER_NAME, EXT_ALPN, EXT_ENCRYPT_THEN_MAC, EXT_SUPPORTED_VERSIONS = 0, 16, 22, 43
HELLO_RETRY_RANDOM = bytes.fromhex("cf21ad74e59a6111be1d8c021e65b891c2a211167abb8c5e079e09e2c8a8339c")
"""ServerHello.random of a TLS 1.3 HelloRetryRequest (RFC 8446 4.1.3)."""

SYNCED, UNSYNCED = "synced", "unsynced"


# -- events -------------------------------------------------------------------------------------


@dataclass(slots=True)
class TLSRecord:
    """One record as it crossed the wire (slotted, not frozen: one per record, see `model`)."""

    content_type: int
    version: int
    length: int
    """Bytes of the record's fragment (ciphertext when protected), without the 5-byte header."""
    first_frame: int
    last_frame: int
    ts_first_ns: int
    ts_last_ns: int
    encrypted: bool = False
    """Sent after this direction switched to protected records (TLS 1.2 ChangeCipherSpec)."""
    truncated: bool = False
    """Bytes of it were not captured."""


@dataclass(frozen=True, slots=True)
class ClientHello:
    """What a ClientHello offers (nothing secret: it is sent in the clear)."""

    frame_no: int
    ts_ns: int
    legacy_version: int
    sni: str | None
    alpn: tuple[str, ...]
    supported_versions: tuple[int, ...]
    cipher_suites: tuple[int, ...]
    encrypt_then_mac: bool


@dataclass(frozen=True, slots=True)
class ServerHello:
    """What the server chose. `version` is the negotiated one (TLS 1.3 from supported_versions)."""

    frame_no: int
    ts_ns: int
    version: int
    cipher_suite: int
    alpn: str | None
    encrypt_then_mac: bool
    retry: bool
    """A TLS 1.3 HelloRetryRequest: the real ServerHello follows a second ClientHello."""


@dataclass(frozen=True, slots=True)
class TLSAlert:
    """An alert record. `level`/`description` are None when it was encrypted."""

    frame_no: int
    ts_ns: int
    level: int | None
    description: int | None

    @property
    def encrypted(self) -> bool:
        return self.description is None

    @property
    def close_notify(self) -> bool:
        return self.description == 0


@dataclass(frozen=True, slots=True)
class ChangeCipherSpec:
    frame_no: int
    ts_ns: int


@dataclass(frozen=True, slots=True)
class TLSGap:
    """`missing` bytes of this direction were never captured."""

    missing: int
    frame_no: int
    ts_ns: int
    in_record: bool = False
    """The bytes fell inside a record, which ends truncated and stands for them itself."""


@dataclass(frozen=True, slots=True)
class TLSError:
    """Bytes that are not TLS where TLS was expected; the parser resynchronises after it."""

    frame_no: int
    ts_ns: int
    reason: str


Event = TLSRecord | ClientHello | ServerHello | TLSAlert | ChangeCipherSpec | TLSGap | TLSError


def plausible_header(data: bytes, pos: int = 0) -> bool:
    """Does `data[pos:]` start with a believable record header (a resynchronisation point)?"""
    if len(data) - pos < HEADER_LENGTH:
        return False
    length = (data[pos + 3] << 8) | data[pos + 4]
    return (data[pos] in CONTENT_TYPES and data[pos + 1] == 3 and data[pos + 2] <= 4
            and 0 < length <= MAX_RECORD_LENGTH)


# -- hello decoding -----------------------------------------------------------------------------


class _Malformed(Exception):
    """A hello that does not parse; caught in the parser and turned into a `TLSError`."""


class _Reader:
    """Big-endian fields of one handshake message; running past its end is `_Malformed`."""

    __slots__ = ("data", "pos", "end")

    def __init__(self, data: bytes, pos: int = 0, end: int | None = None) -> None:
        self.data, self.pos, self.end = data, pos, len(data) if end is None else end

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > self.end:
            raise _Malformed("field runs past the end of its message")
        out = self.data[self.pos: self.pos + n]
        self.pos += n
        return out

    def u8(self) -> int:
        return self.take(1)[0]

    def u16(self) -> int:
        return int.from_bytes(self.take(2), "big")

    def vector(self, size_bytes: int) -> _Reader:
        """A length-prefixed vector as its own reader (the outer one skips past it)."""
        n = int.from_bytes(self.take(size_bytes), "big")
        start = self.pos
        self.take(n)
        return _Reader(self.data, start, start + n)

    @property
    def left(self) -> int:
        return self.end - self.pos


def _extensions(r: _Reader) -> dict[int, _Reader]:
    """Extension type -> its data (the first of duplicates). TLS 1.2 hellos may have none."""
    found: dict[int, _Reader] = {}
    if not r.left:
        return found
    block = r.vector(2)
    while block.left:
        ext_type = block.u16()
        found.setdefault(ext_type, block.vector(2))
    return found


def _server_name(r: _Reader) -> str | None:
    names = r.vector(2)
    while names.left:
        name_type, name = names.u8(), names.vector(2)
        if name_type == 0:
            return name.take(name.left).decode("ascii", "replace")
    return None


def _alpn(r: _Reader) -> tuple[str, ...]:
    protocols = r.vector(2)
    out = []
    while protocols.left:
        name = protocols.vector(1)
        out.append(name.take(name.left).decode("ascii", "replace"))
    return tuple(out)


def decode_client_hello(body: bytes, frame_no: int, ts_ns: int) -> ClientHello:
    """RFC 8446 4.1.2 (and RFC 5246 7.4.1.2): raises `_Malformed`."""
    r = _Reader(body)
    legacy = r.u16()
    r.take(32)  # random
    r.vector(1)  # legacy_session_id
    suites_raw = r.vector(2)
    suites = tuple(suites_raw.u16() for _ in range(suites_raw.left // 2))
    r.vector(1)  # compression methods
    ext = _extensions(r)
    sni = _server_name(ext[EXT_SERVER_NAME]) if EXT_SERVER_NAME in ext else None
    alpn = _alpn(ext[EXT_ALPN]) if EXT_ALPN in ext else ()
    versions: tuple[int, ...] = ()
    if EXT_SUPPORTED_VERSIONS in ext:
        v = ext[EXT_SUPPORTED_VERSIONS].vector(1)
        versions = tuple(v.u16() for _ in range(v.left // 2))
    return ClientHello(frame_no, ts_ns, legacy, sni, alpn, versions, suites,
                       EXT_ENCRYPT_THEN_MAC in ext)


def decode_server_hello(body: bytes, frame_no: int, ts_ns: int) -> ServerHello:
    """RFC 8446 4.1.3: the negotiated version is supported_versions' when present."""
    r = _Reader(body)
    legacy = r.u16()
    random = r.take(32)
    r.vector(1)  # legacy_session_id_echo
    suite = r.u16()
    r.u8()  # compression method
    ext = _extensions(r)
    version = ext[EXT_SUPPORTED_VERSIONS].u16() if EXT_SUPPORTED_VERSIONS in ext else legacy
    alpn = None
    if EXT_ALPN in ext:
        chosen = _alpn(ext[EXT_ALPN])
        alpn = chosen[0] if chosen else None
    return ServerHello(frame_no, ts_ns, version, suite, alpn, EXT_ENCRYPT_THEN_MAC in ext,
                       random == HELLO_RETRY_RANDOM)


# -- the parser ---------------------------------------------------------------------------------


class TLSRecordParser:
    """Record state of one direction of one TLS connection; see the module docstring."""

    __slots__ = (
        "state", "encrypted", "tls13", "records", "unsynced_bytes",
        "_hdr", "_hdr_frame", "_hdr_ts",
        "_rec", "_left", "_small",
        "_hs", "_hs_skip", "_hs_readable",
    )

    def __init__(self) -> None:
        self.state = SYNCED
        self.encrypted = False
        """This direction sends protected records (after its ChangeCipherSpec under TLS <= 1.2)."""
        self.tls13 = False
        """Set by the caller once TLS 1.3 was negotiated: a ChangeCipherSpec is then a dummy."""
        self.records = 0
        self.unsynced_bytes = 0
        self._hdr = b""              # a record header cut by a segment boundary
        self._hdr_frame = 0
        self._hdr_ts = 0
        self._rec: TLSRecord | None = None  # the record whose payload is arriving
        self._left = 0               # payload bytes still to come
        self._small = bytearray()    # the body of an alert or ChangeCipherSpec in the clear
        self._hs = bytearray()       # handshake bytes not yet parsed into messages
        self._hs_skip = 0            # bytes of an uninteresting handshake message still to drop
        self._hs_readable = True     # the handshake stream is intact and in the clear

    # -- input --------------------------------------------------------------------------------

    def feed(self, data: bytes, frame_no: int, ts_ns: int) -> list[Event]:
        """Take the next in-order bytes of this direction; return the events they complete."""
        if (self.state is SYNCED and self._rec is None and not self._hdr and data[:1] == b"\x17"
                and len(data) > HEADER_LENGTH and data[1] == 3 and data[2] <= 4
                and (data[3] << 8 | data[4]) == len(data) - HEADER_LENGTH <= MAX_RECORD_LENGTH):
            # one whole application-data record, the usual segment: what the loop below makes of it
            self.records += 1
            self._hdr_frame, self._hdr_ts = frame_no, ts_ns
            return [TLSRecord(APPLICATION_DATA, 0x300 | data[2], len(data) - HEADER_LENGTH, frame_no,
                              frame_no, ts_ns, ts_ns, self.encrypted)]
        out: list[Event] = []
        if self.state is UNSYNCED:
            if not plausible_header(data):
                self.unsynced_bytes += len(data)
                return out
            self.state = SYNCED
        pos, end = 0, len(data)
        while pos < end and self.state is SYNCED:
            if self._rec is not None:
                pos = self._payload(data, pos, frame_no, ts_ns, out)
            else:
                pos = self._header(data, pos, frame_no, ts_ns, out)
        if self.state is UNSYNCED and pos < end:
            self.unsynced_bytes += end - pos
        return out

    def absorbs(self, missing: int, *, own: bool) -> bool:
        """Would a loss of `missing` bytes here lie inside a record, so that no record can start
        in it, and leave every record's timing known? (See `MQTTFramer.absorbs`: a loss that ends
        the record does so only for bytes of the gap's `own` frame, cut by the snap length.)"""
        if self._rec is None:
            return False
        return missing < self._left or (own and missing == self._left)

    def gap(self, missing: int, frame_no: int, ts_ns: int) -> list[Event]:
        """`missing` bytes of this direction were never captured."""
        rec = self._rec
        inside = self.absorbs(missing, own=True)  # (its timing aside)
        out: list[Event] = [TLSGap(missing, frame_no, ts_ns, inside)]
        if inside:
            rec.truncated = True
            self._left -= missing
            if rec.content_type == HANDSHAKE:
                self._hs_readable = False
                self._hs.clear()
            if not self._left:
                self._end_record(frame_no, ts_ns, out)
            return out
        if rec is not None:
            rec.truncated = True
            self._end_record(frame_no, ts_ns, out)
        self._unsync()
        return out

    def eof(self, frame_no: int, ts_ns: int) -> list[Event]:
        """The stream ended: a record cut short is reported, truncated (its start was seen)."""
        out: list[Event] = []
        if self._rec is not None:
            self._rec.truncated = True
            self._end_record(frame_no, ts_ns, out)
        self._hdr = b""
        return out

    @property
    def in_record(self) -> bool:
        return self._rec is not None or bool(self._hdr)

    # -- records ------------------------------------------------------------------------------

    def _unsync(self) -> None:
        self.state = UNSYNCED
        self._hdr, self._rec, self._left = b"", None, 0
        self._small.clear()
        self._hs.clear()
        self._hs_skip = 0
        self._hs_readable = False  # a handshake message may have been cut: stop reading them

    def _error(self, frame_no: int, ts_ns: int, reason: str, out: list[Event]) -> None:
        out.append(TLSError(frame_no, ts_ns, reason))
        if self._rec is not None:
            self._rec.truncated = True
            self._end_record(frame_no, ts_ns, out)
        self._unsync()

    def _header(self, data: bytes, pos: int, frame_no: int, ts_ns: int, out: list[Event]) -> int:
        held = len(self._hdr)
        if held:
            head = self._hdr + data[pos: pos + HEADER_LENGTH - held]
        else:
            head = data[pos: pos + HEADER_LENGTH]
            self._hdr_frame, self._hdr_ts = frame_no, ts_ns
        if len(head) < HEADER_LENGTH:
            self._hdr = head
            return len(data)
        self._hdr = b""
        pos += HEADER_LENGTH - held
        ctype, major, minor = head[0], head[1], head[2]
        length = (head[3] << 8) | head[4]
        if ctype not in CONTENT_TYPES:
            self._error(frame_no, ts_ns, f"record content type {ctype} is not TLS", out)
            return pos
        if major != 3 or minor > 4:
            self._error(frame_no, ts_ns, f"record version 0x{major:02x}{minor:02x} is not TLS", out)
            return pos
        if length > MAX_RECORD_LENGTH:
            self._error(frame_no, ts_ns, f"record length {length} exceeds {MAX_RECORD_LENGTH}", out)
            return pos
        self._rec = TLSRecord(ctype, (major << 8) | minor, length, self._hdr_frame, frame_no,
                              self._hdr_ts, ts_ns, self.encrypted)
        self._left = length
        if not length:
            self._end_record(frame_no, ts_ns, out)
        return pos

    def _payload(self, data: bytes, pos: int, frame_no: int, ts_ns: int, out: list[Event]) -> int:
        rec = self._rec
        assert rec is not None
        take = min(self._left, len(data) - pos)
        ctype = rec.content_type
        if ctype == APPLICATION_DATA:
            pass  # never buffered
        elif ctype == HANDSHAKE:
            if self._hs_readable and not rec.encrypted:
                self._handshake(data[pos: pos + take], frame_no, ts_ns, out)
        elif ctype in (ALERT, CHANGE_CIPHER_SPEC) and len(self._small) < 8:
            self._small += data[pos: pos + min(take, 8)]
        self._left -= take
        pos += take
        if not self._left and self._rec is rec:
            self._end_record(frame_no, ts_ns, out)
        return pos

    def _end_record(self, frame_no: int, ts_ns: int, out: list[Event]) -> None:
        rec = self._rec
        assert rec is not None
        self._rec, self._left = None, 0
        rec.last_frame, rec.ts_last_ns = frame_no, ts_ns
        self.records += 1
        ctype = rec.content_type
        if ctype == ALERT:
            body = bytes(self._small)
            if rec.encrypted or len(body) != 2 or rec.length != 2:
                out.append(TLSAlert(frame_no, ts_ns, None, None))
            else:
                out.append(TLSAlert(frame_no, ts_ns, body[0], body[1]))
        elif ctype == CHANGE_CIPHER_SPEC and not rec.encrypted:
            out.append(ChangeCipherSpec(frame_no, ts_ns))
            if not self.tls13:
                self.encrypted = True
                self._hs_readable = False
                self._hs.clear()
        self._small.clear()
        out.append(rec)

    # -- handshake messages --------------------------------------------------------------------

    def _handshake(self, chunk: bytes, frame_no: int, ts_ns: int, out: list[Event]) -> None:
        """Handshake bytes in the clear: messages may span records and share them."""
        if self._hs_skip:
            drop = min(self._hs_skip, len(chunk))
            self._hs_skip -= drop
            chunk = chunk[drop:]
        if not chunk:
            return
        hs = self._hs
        hs += chunk
        while hs and not self._hs_skip:
            if len(hs) < 4:
                return
            mtype = hs[0]
            mlen = (hs[1] << 16) | (hs[2] << 8) | hs[3]
            if mtype not in (CLIENT_HELLO, SERVER_HELLO):
                drop = min(mlen, len(hs) - 4)
                del hs[: 4 + drop]
                self._hs_skip = mlen - drop
                continue
            if mlen > MAX_HELLO_BYTES:
                self._hs_readable = False
                hs.clear()
                out.append(TLSError(frame_no, ts_ns, f"handshake message of {mlen} bytes: not read"))
                return
            if len(hs) < 4 + mlen:
                return
            body = bytes(hs[4: 4 + mlen])
            del hs[: 4 + mlen]
            self._hello(mtype, body, frame_no, ts_ns, out)

    def _hello(self, mtype: int, body: bytes, frame_no: int, ts_ns: int, out: list[Event]) -> None:
        try:
            if mtype == CLIENT_HELLO:
                out.append(decode_client_hello(body, frame_no, ts_ns))
            else:
                hello = decode_server_hello(body, frame_no, ts_ns)
                out.append(hello)
                if hello.version == TLS13:
                    self.tls13 = True  # a HelloRetryRequest too: the ChangeCipherSpec after it is a dummy
                    if not hello.retry:
                        self._hs_readable = False  # the rest of the server's handshake is protected
        except _Malformed as exc:
            name = "ClientHello" if mtype == CLIENT_HELLO else "ServerHello"
            out.append(TLSError(frame_no, ts_ns, f"malformed {name}: {exc}"))
            self._hs_readable = False
            self._hs.clear()

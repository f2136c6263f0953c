"""Cut one direction of a reassembled TCP byte stream into MQTT control packets (sans-I/O).

Theory of operation
-------------------
The framer is fed in-order stream bytes together with the frame number and timestamp of the segment
that carried them (`feed`), told about bytes the capture lost (`gap`) and about the end of the stream
(`eof`). Each call returns the events it completed: `MQTTPacket` or `FramingError`. An empty list is
the normal "need more bytes" answer.

A packet's first byte fixes `first_frame`/`ts_first_ns`, its last byte `last_frame`/`ts_last_ns`, so a
packet spread over many segments is timed as the spec measures Keep Alive (from the end of one packet
to the start of the next). Only the fixed header is kept for most packets; the body is counted down
and dropped as it passes (a 200 MB PUBLISH costs nothing). CONNECT, CONNACK and DISCONNECT bodies are
buffered up to `body_cap` bytes and decoded.

Synchronisation: a stream that starts mid-way (no SYN), lost bytes that land in a header, or bytes
that are not MQTT leave the framer not knowing where the next packet starts. It then waits for the
next segment boundary (senders almost always start a segment with a packet) and accepts the first
header there only if `header_is_plausible`; until then bytes are dropped and counted in
`unsynced_bytes`. Lost bytes inside a payload being skipped keep the framer in sync.

A segment can start inside a packet all the same (a PUBLISH larger than a segment goes on in the
next), and payload bytes can look like a header: ASCII digits are PUBLISH headers. So the sync
found after losing its place (a capture loss, bytes that are not MQTT) or on a stream joined
mid-way (`hunting`) is `tentative` until a packet ends exactly where a segment does (where the
sender's write ended), and while it is, every header must be plausible: the first that is not
was payload read as a header, and the framer waits for the next boundary again. Read as synced,
such payload gave phantom packets (a client's "PINGRESP with flags 0x6", KA401) after a loss.
"""

from __future__ import annotations

from analyzer.errors import DecodeError
from analyzer.model import Direction, FramingError, MQTTPacket, PacketType
from analyzer.mqtt.codec import BODY_DECODERS, decode_varint, header_is_plausible

DEFAULT_BODY_CAP = 64 * 1024
_BODY_TYPES = frozenset(int(t) for t in BODY_DECODERS)
_TYPES = tuple(PacketType)

Event = MQTTPacket | FramingError


def plausible_start(data: bytes) -> bool | None:
    """Whether `data` starts with a believable fixed header (strictly: a point to resynchronise
    at); None when it is too short to say."""
    try:
        decoded = decode_varint(data, 1)
    except DecodeError:
        return False
    if decoded is None:
        return None
    return header_is_plausible(data[0], decoded[0])


class MQTTFramer:
    """Framing state of one direction of one TCP connection."""

    __slots__ = (
        "direction", "body_cap", "synced", "hunting", "tentative", "unsynced_bytes", "packets",
        "_head", "_head_frame", "_head_ts",
        "_ptype", "_flags", "_rl", "_hlen", "_first_frame", "_ts_first", "_left", "_body",
    )

    def __init__(self, direction: Direction, *, synced: bool = True,
                 body_cap: int = DEFAULT_BODY_CAP) -> None:
        self.direction = direction
        self.body_cap = body_cap
        self.synced = synced
        """False until a plausible header is found at a segment boundary."""
        self.hunting = False
        """The framer lost its place in the stream, or the stream was joined mid-way (the caller
        says so): the next header it finds at a segment boundary is a guess."""
        self.tentative = False
        """Synced at a guess (`hunting`), not yet confirmed by a packet that ended where a segment
        did (see the module docstring). A stream's first byte after its SYN starts a packet."""
        self.unsynced_bytes = 0
        self.packets = 0
        self._head = b""           # bytes of a fixed header cut by a segment boundary
        self._head_frame = 0
        self._head_ts = 0
        self._ptype = -1           # packet in progress: -1 when none
        self._flags = 0
        self._rl = 0
        self._hlen = 0
        self._first_frame = 0
        self._ts_first = 0
        self._left = 0             # body bytes still to come for the packet in progress
        self._body: bytearray | None = None

    # -- input --------------------------------------------------------------------------------

    def feed(self, data: bytes, frame_no: int, ts_ns: int) -> list[Event]:
        """Take the next in-order bytes of the stream; return the events they complete."""
        if (self._ptype < 0 and self.synced and not self._head and not self._head_frame
                and not self.tentative and len(data) > 1 and data[1] < 0x80
                and len(data) == 2 + data[1]
                and data[0] >> 4 not in _BODY_TYPES):
            # The commonest segment: exactly one bodiless packet (a ping, an ack) with a one-byte
            # Remaining Length; what `_read_packets` would make of it, without its loop.
            first = data[0]
            self.packets += 1
            return [MQTTPacket(self.direction, _TYPES[first >> 4], first & 0x0F, data[1], frame_no,
                               frame_no, ts_ns, ts_ns, None, False, 2)]
        out: list[Event] = []
        pos = 0
        if self._ptype >= 0:
            pos = self._continue_body(data, frame_no, ts_ns, out)
        elif self.synced:
            if self._head:
                data = self._head + data
                self._head = b""
        elif not self._sync(data, frame_no, ts_ns):
            return out
        else:
            data, self._head = self._head + data, b""
        if pos < len(data):
            self._read_packets(data, pos, frame_no, ts_ns, out)
        return out

    def absorbs(self, missing: int, *, own: bool) -> bool:
        """Would a loss of `missing` bytes here hide nothing from the timeline? It must fall inside
        the payload being skipped, so that no packet can start in it (the framer knows where the
        next one starts). A loss that ends the packet gives its end the gap's time, which is right
        only when the bytes were the gap's frame's `own` (cut by the capture's snap length): bytes
        lost in transit are found missing later, so such a loss must leave the payload unfinished.
        PUBLISHes cut by a snap length lose only bytes of the first kind."""
        if self._ptype < 0 or self._body is not None:
            return False
        return missing < self._left or (own and missing == self._left)

    def gap(self, missing: int, frame_no: int, ts_ns: int) -> list[Event]:
        """`missing` bytes of the stream were never captured.

        Inside a payload that is being skipped, the loss changes nothing (a loss that ends exactly
        where the payload does completes the packet, as truncated, and keeps sync). Anywhere else the
        packet in progress, even one of which only a header byte was seen, is reported truncated and
        the framer resynchronises at the next segment.
        """
        if self.absorbs(missing, own=True):  # (its timing aside)
            self._left -= missing
            if self._left:
                return []
            packet = self._packet(frame_no, ts_ns, truncated=True)
            self._ptype = -1
            return [packet]
        out = self._cut_short(frame_no, ts_ns)
        self._reset(synced=False)
        return out

    def eof(self, frame_no: int, ts_ns: int) -> list[Event]:
        """The stream ended; a packet still in progress is reported as truncated."""
        out = self._cut_short(frame_no, ts_ns)
        self._reset(synced=self.synced)
        return out

    def bulk_state(self) -> tuple[int, int, int, int, int, int, int] | None:
        """Where the framer stands, for feeding it in bulk (the columnar path): the packet in
        progress as (bytes left, type, flags, remaining length, header length, first frame,
        first ts), all 0 at a packet boundary; None when it holds bytes (a cut header, a body
        being kept) or has lost sync or not yet confirmed it, which only `feed` handles."""
        if (not self.synced or self.tentative or self._head or self._head_frame
                or self._body is not None):
            return None
        if self._ptype < 0:
            return (0, 0, 0, 0, 0, 0, 0)
        return (self._left, self._ptype, self._flags, self._rl, self._hlen, self._first_frame,
                self._ts_first)

    def resume(self, state: tuple[int, int, int, int, int, int, int] | None, packets: int) -> None:
        """Stand where bulk feeding left it (`bulk_state`'s form; None: at a packet boundary),
        having framed `packets` more."""
        self.packets += packets
        if state is None:
            self._ptype, self._left = -1, 0
        else:
            (self._left, self._ptype, self._flags, self._rl, self._hlen, self._first_frame,
             self._ts_first) = state

    @property
    def in_packet(self) -> bool:
        """True while a packet has started but not finished (its first byte was sent)."""
        return self._ptype >= 0 or bool(self._head)

    # -- internals ----------------------------------------------------------------------------

    def _sync(self, data: bytes, frame_no: int, ts_ns: int) -> bool:
        """Unsynchronised: does a packet start here (with any held header bytes before `data`)?

        Too few bytes to judge are held for the next segment. Held bytes that turn out not to start
        a packet are dropped, and `data` is judged alone: it starts a segment.
        """
        if self._head:
            plausible = plausible_start(self._head + data)
            if plausible is not False:
                return self._judged(plausible, self._head + data, frame_no, ts_ns)
            self.unsynced_bytes += len(self._head)
            self._head, self._head_frame = b"", 0
        return self._judged(plausible_start(data), data, frame_no, ts_ns)

    def _judged(self, plausible: bool | None, data: bytes, frame_no: int, ts_ns: int) -> bool:
        if plausible is None:  # too few bytes to judge: wait for the next segment
            if not self._head_frame:
                self._head_frame, self._head_ts = frame_no, ts_ns
            self._head = data
            return False
        if not plausible:
            self.unsynced_bytes += len(data)
            self._head_frame = 0
            return False
        self.synced, self.tentative, self.hunting = True, self.hunting, False
        return True

    def _cut_short(self, frame_no: int, ts_ns: int) -> list[Event]:
        """The packet in progress (or whose header had begun) as a truncated packet, if any."""
        if self._ptype >= 0:
            return [self._packet(frame_no, ts_ns, truncated=True)]
        if self._head and self.synced:
            head = self._head
            self.packets += 1
            return [MQTTPacket(self.direction, _TYPES[head[0] >> 4], head[0] & 0x0F, 0,
                               self._head_frame, frame_no, self._head_ts, ts_ns, None, True,
                               len(head))]
        return []

    def _continue_body(self, data: bytes, frame_no: int, ts_ns: int, out: list[Event]) -> int:
        take = min(self._left, len(data))
        if self._body is not None:
            room = self.body_cap - len(self._body)
            if room > 0:
                self._body += data[: min(take, room)]
        self._left -= take
        if self._left == 0:
            out.append(self._packet(frame_no, ts_ns))
            self._ptype = -1
            if take == len(data):
                self.tentative = False  # (it ended where the segment did)
        return take

    def _read_packets(self, data: bytes, pos: int, frame_no: int, ts_ns: int,
                      out: list[Event]) -> None:
        end = len(data)
        head_frame, head_ts = (self._head_frame, self._head_ts) if pos == 0 and self._head_frame else (frame_no, ts_ns)
        self._head_frame = 0
        tentative = self.tentative
        while pos < end:
            if pos + 1 < end and data[pos + 1] < 0x80:  # a one-byte Remaining Length: most packets
                rl, used = data[pos + 1], 1
            else:
                try:
                    decoded = decode_varint(data, pos + 1)
                except DecodeError as exc:
                    if tentative:
                        self._lose_sync(end - pos)
                    else:
                        out.append(FramingError(self.direction, frame_no, ts_ns, str(exc)))
                        self._reset(synced=False)
                    return
                if decoded is None:  # the header itself continues in the next segment
                    self._head, self._head_frame, self._head_ts = data[pos:], head_frame, head_ts
                    return
                rl, used = decoded
            first = data[pos]
            if tentative and not header_is_plausible(first, rl):
                self._lose_sync(end - pos)
                return
            body_start = pos + 1 + used
            stop = body_start + rl
            ptype = first >> 4
            if stop <= end:
                body = None
                if ptype in _BODY_TYPES:
                    errors: list[Event] = [] if tentative else out
                    body = self._decode_body(ptype, data[body_start:stop], frame_no, ts_ns, errors)
                    if tentative and errors:
                        self._lose_sync(end - pos)
                        return
                if tentative and stop == end:
                    tentative = self.tentative = False  # (it ended where the segment did)
                self.packets += 1
                out.append(MQTTPacket(self.direction, _TYPES[ptype], first & 0x0F, rl, head_frame,
                                      frame_no, head_ts, ts_ns, body, False, 1 + used))
                pos = stop
                head_frame, head_ts = frame_no, ts_ns
                continue
            self._start_packet(first, rl, 1 + used, head_frame, head_ts)
            self._body = bytearray(data[body_start : body_start + self.body_cap]) if ptype in _BODY_TYPES else None
            self._left = stop - end
            return

    def _start_packet(self, first: int, rl: int, hlen: int, frame_no: int, ts_ns: int) -> None:
        self._ptype, self._flags, self._rl, self._hlen = first >> 4, first & 0x0F, rl, hlen
        self._first_frame, self._ts_first = frame_no, ts_ns

    def _packet(self, frame_no: int, ts_ns: int, truncated: bool = False) -> MQTTPacket:
        body = None
        if self._body is not None:
            sink: list[Event] = []
            body = self._decode_body(self._ptype, bytes(self._body), frame_no, ts_ns, sink,
                                     quiet=truncated or self._rl > self.body_cap)
            self._body = None
        self.packets += 1
        return MQTTPacket(self.direction, _TYPES[self._ptype], self._flags, self._rl,
                          self._first_frame, frame_no, self._ts_first, ts_ns, body, truncated,
                          self._hlen)

    def _decode_body(self, ptype: int, raw: bytes, frame_no: int, ts_ns: int, out: list[Event],
                     quiet: bool = False) -> object:
        try:
            return BODY_DECODERS[_TYPES[ptype]](raw)
        except DecodeError as exc:
            if not quiet:
                out.append(FramingError(self.direction, frame_no, ts_ns,
                                        f"{_TYPES[ptype].name}: {exc}"))
            return getattr(exc, "partial", None)

    def _lose_sync(self, dropped: int) -> None:
        """A tentative sync proved wrong (a header no sender writes, a body that does not decode):
        what was read from there on was payload, and the next segment boundary is looked at."""
        self.unsynced_bytes += dropped
        self._reset(synced=False)

    def _reset(self, *, synced: bool) -> None:
        self._head = b""
        self._head_frame = 0
        self._ptype = -1
        self._body = None
        self._left = 0
        self.synced = synced
        self.tentative = False
        if not synced:
            self.hunting = True

"""The shared vocabulary: records that flow between the pipeline's layers.

Every record is a frozen, slotted dataclass and every time is an ``int`` of nanoseconds since the
epoch; float seconds appear only in reports. Nothing here keeps a password or a payload.

Per-frame work (source -> decode -> reassembly) deliberately passes plain tuples instead of these
records: building a frozen dataclass costs about 2 microseconds (measured here for 11 fields: frozen
2.0 us, slots only 0.32 us, a tuple 0.03 us), more than the whole per-frame budget of the hot path.
Records start at the MQTT layer. The records made once per control packet (`MQTTPacket`, and the
timeline's `Silence`) are slotted but not frozen for the same reason; nothing mutates them.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field, fields, replace
from enum import Enum, IntEnum
from itertools import repeat
from operator import attrgetter
from typing import Any, TypeVar

_R = TypeVar("_R")


def _quick_pickle(cls: type[_R]) -> type[_R]:
    """Pickle a frozen, slotted record's fields as a tuple, restored without a line of Python per
    field. Findings are pickled one by one when they cross processes (a pool's results with
    `--jobs`, a split's records kept apart, `--dask`), and the dataclass's own `__getstate__` and
    `__setstate__` look the fields up and loop over them in Python for every record: about twice
    the cost. (A session's cost is mostly its nested endpoints, enums and gap samples: no gain
    measured there. Spools pickle field tuples themselves: `spool._dump`.)"""
    names = tuple(f.name for f in fields(cls))  # type: ignore[arg-type]
    if len(names) < 2:
        raise TypeError(f"{cls.__name__}: attrgetter gives a tuple from two fields on")
    get = attrgetter(*names)
    count = len(names)
    put = object.__setattr__

    def __getstate__(self: Any) -> tuple[Any, ...]:
        return get(self)  # type: ignore[no-any-return]

    def __setstate__(self: Any, state: Sequence[Any]) -> None:
        if len(state) != count:
            raise TypeError(f"{cls.__name__}: {len(state)} values pickled for {count} fields")
        deque(map(put, repeat(self, count), names, state), 0)  # frozen: object's own setattr

    cls.__getstate__ = __getstate__  # type: ignore[attr-defined]
    cls.__setstate__ = __setstate__  # type: ignore[attr-defined]
    return cls


class PacketType(IntEnum):
    """MQTT control packet types, with the spec's names (type 0 is reserved).

    `ENCRYPTED` is not an MQTT type: it stands for a TLS application-data record whose content
    could not be read (MQTT over TLS without keys), timed as one client or broker packet of unknown
    type. It can never come out of the framer, which reads 4-bit types.
    """

    RESERVED = 0
    CONNECT = 1
    CONNACK = 2
    PUBLISH = 3
    PUBACK = 4
    PUBREC = 5
    PUBREL = 6
    PUBCOMP = 7
    SUBSCRIBE = 8
    SUBACK = 9
    UNSUBSCRIBE = 10
    UNSUBACK = 11
    PINGREQ = 12
    PINGRESP = 13
    DISCONNECT = 14
    AUTH = 15
    ENCRYPTED = 16


class Direction(IntEnum):
    """Which way bytes travel inside a flow: from the side that opened it, or back."""

    TO_SERVER = 0
    TO_CLIENT = 1


class EndReason(str, Enum):
    """How a session ended; the values are the report contract's `end_reason` strings."""

    CLIENT_DISCONNECT = "client_disconnect"
    SERVER_DISCONNECT = "server_disconnect"
    CLIENT_FIN = "client_fin"
    SERVER_FIN = "server_fin"
    CLIENT_RST = "client_rst"
    SERVER_RST = "server_rst"
    IDLE_EVICTED = "idle_evicted"
    CAPTURE_END = "capture_end"

    @property
    def by_server(self) -> bool:
        return self in (EndReason.SERVER_DISCONNECT, EndReason.SERVER_FIN, EndReason.SERVER_RST)

    @property
    def by_client(self) -> bool:
        return self in (EndReason.CLIENT_DISCONNECT, EndReason.CLIENT_FIN, EndReason.CLIENT_RST)


class Uncertainty(str, Enum):
    """Why a session's verdicts may be incomplete (report contract `uncertainty` values)."""

    MID_STREAM = "mid_stream"
    HOLE = "hole"
    CAPTURE_END = "capture_end"
    ENCRYPTED = "encrypted"
    UNKNOWN_KEEP_ALIVE = "unknown_keep_alive"
    CLOCK_STEP = "clock_step"
    """The capture's timestamps went backwards during the session: intervals across it are not judged."""


class Severity(IntEnum):
    """Finding severity; ordered so that `max()` gives the worst."""

    INFO = 1
    WARNING = 2
    ERROR = 3

    @property
    def label(self) -> str:
        return self.name.lower()

    @classmethod
    def parse(cls, text: str) -> "Severity":
        return cls[text.upper()]


class KeepAliveSource(str, Enum):
    """Where a session's effective keep-alive came from (report `keep_alive_source`)."""

    CONNECT = "connect"
    CONNACK = "connack"
    ASSUMED = "assumed"
    INFERRED = "inferred"
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One side of a TCP connection; `ip` is the text form (IPv6 compressed)."""

    ip: str
    port: int

    def __str__(self) -> str:
        return f"[{self.ip}]:{self.port}" if ":" in self.ip else f"{self.ip}:{self.port}"

    def __reduce__(self) -> tuple:
        # Pickled with every session and finding a large capture spills to disk (`spool`): the
        # dataclass default looks the fields up again for each one.
        return (Endpoint, (self.ip, self.port))


@dataclass(frozen=True, slots=True)
class FlowKey:
    """A TCP connection with its roles decided: `client` opened it, `server` is the broker."""

    client: Endpoint
    server: Endpoint
    stream_index: int
    """Wireshark's `tcp.stream`: order of the connection's first frame in its capture, from 0."""

    def __reduce__(self) -> tuple:
        return (FlowKey, (self.client, self.server, self.stream_index))  # see `Endpoint.__reduce__`


@dataclass(frozen=True, slots=True)
class ConnectBody:
    """What keep-alive analysis needs from CONNECT. The password is never kept."""

    protocol_name: str
    protocol_level: int
    keep_alive_s: int
    client_id: str | None
    clean_start: bool
    has_username: bool
    has_password: bool
    has_will: bool
    session_expiry_s: int | None = None


@dataclass(frozen=True, slots=True)
class ConnAckBody:
    """CONNACK: return code (3.x) or reason code (5.0), and the v5 properties we use."""

    reason_code: int
    session_present: bool
    server_keep_alive_s: int | None = None
    assigned_client_id: str | None = None
    server_keep_alive_count: int = 0
    """How many times property 0x13 appeared (more than once is a protocol error)."""


@dataclass(frozen=True, slots=True)
class DisconnectBody:
    """DISCONNECT: the v5 reason code (None for 3.x, or a v5 DISCONNECT with no body = 0x00)."""

    reason_code: int | None


Body = ConnectBody | ConnAckBody | DisconnectBody | None


@dataclass(slots=True)
class MQTTPacket:
    """One MQTT control packet as it crossed the wire.

    `ts_first_ns` is when its first byte was first sent, `ts_last_ns` when its last byte was; they
    differ for a packet spanning several segments. `truncated` is set when the stream ended (or lost
    bytes) before the whole packet arrived; `body` is then whatever could be decoded.
    """

    direction: Direction
    type: PacketType
    flags: int
    remaining_length: int
    first_frame: int
    last_frame: int
    ts_first_ns: int
    ts_last_ns: int
    body: Body = None
    truncated: bool = False
    header_length: int = 2
    """Bytes of fixed header (1 + the remaining-length varint); more than minimal is legal in 3.1.1."""
    encrypted: bool = False
    """Made from an encrypted TLS record, not read: its type is `ENCRYPTED`, or PINGREQ/PINGRESP
    guessed from the record's length (`analyzer.session.keyless`)."""


@dataclass(frozen=True, slots=True)
class FramingError:
    """Bytes that are not MQTT where MQTT was expected. The framer resynchronises after it."""

    direction: Direction
    frame_no: int
    ts_ns: int
    reason: str


@dataclass(frozen=True, slots=True)
class StreamGap:
    """Bytes missing from one direction of a TCP stream (capture loss, or a stream cut short)."""

    direction: Direction
    frame_no: int
    ts_ns: int
    missing_bytes: int


@dataclass(frozen=True, slots=True)
class StreamEnd:
    """One TCP connection ended: FIN or RST seen (by whom), idle eviction, or capture end."""

    frame_no: int
    ts_ns: int
    reason: EndReason


CONFIRMED, LIKELY = "confirmed", "likely"
"""Finding confidence: read from MQTT packets, or inferred from encrypted TLS record sizes."""


@_quick_pickle
@dataclass(frozen=True, slots=True)
class Finding:
    """One rule violation (or informational observation) with its evidence."""

    rule_id: str
    rule: str
    severity: Severity
    side: str
    session_id: str
    capture: str
    client_id: str | None
    frames: tuple[int, int]
    ts_ns: int
    stream_index: int
    message: str
    spec: tuple[str, ...] = ()
    gap_s: float | None = None
    limit_s: float | None = None
    keep_alive_s: int | None = None
    uncertainty: tuple[str, ...] = ()
    confidence: str = CONFIRMED
    """`confirmed` (from packets read on the wire) or `likely` (from the sizes of encrypted TLS
    records: MQTT over TLS without keys)."""

    @property
    def wireshark_filter(self) -> str:
        first, last = self.frames
        return (
            f"frame.number >= {first} && frame.number <= {last} && tcp.stream == {self.stream_index}"
        )


@dataclass(frozen=True, slots=True)
class Session:
    """One MQTT connection, summarised once it has ended (or the capture has)."""

    session_id: str
    capture: str
    flow: FlowKey
    client_id: str | None
    protocol_level: int | None
    keep_alive_s: int | None
    server_keep_alive_s: int | None
    effective_keep_alive_s: int | None
    keep_alive_source: KeepAliveSource
    connect_frame: int | None
    start_ns: int
    end_ns: int
    end_reason: EndReason
    end_frame: int
    client_packets: int
    server_packets: int
    pingreq: int
    pingresp: int
    max_gap_ns: int | None
    uncertainty: frozenset[Uncertainty] = frozenset()
    connack_code: int | None = None
    assigned_client_id: str | None = None
    """The client id a v5 broker assigned in CONNACK (when CONNECT's was empty)."""
    gap_samples_ns: Sequence[int] = ()
    """Client gaps (ended by a client packet), all of them or an even sample of at most
    `MAX_GAP_SAMPLES`: what distribution tables (p95 gap / K) are built from. Not in the JSON.
    An `array('q')`: 8 bytes a sample instead of 36 as a tuple of ints, for fleets of sessions."""


MAX_GAP_SAMPLES = 256


@dataclass(frozen=True, slots=True)
class CaptureSummary:
    """What was read from one capture, what was skipped and why, and any error that stopped it."""

    path: str
    format: str
    linktypes: tuple[int, ...]
    frames: int
    bytes: int
    tcp_streams: int
    mqtt_sessions: int
    skipped: dict[str, int] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()
    error: str | None = None


@dataclass(frozen=True, slots=True)
class RuleSetInfo:
    """Which rule packs and broker profile judged a report."""

    packs: tuple[str, ...] = ("default",)
    profile: str = "spec"


@dataclass(frozen=True, slots=True)
class Report:
    """Everything a reporter renders."""

    captures: tuple[CaptureSummary, ...]
    sessions: Sequence[Session]
    """Any re-iterable sequence: a long capture's sessions and findings are spooled to disk
    (`analyzer.spool`), so reporters iterate them rather than index them."""
    findings: Sequence[Finding]
    ruleset: RuleSetInfo = RuleSetInfo()
    suppressed: Sequence[Finding] = ()
    """Findings silenced by a suppression of the rule pack (reported as a count, never judged)."""
    warnings: tuple[str, ...] = ()
    """Run-level warnings, e.g. an expired suppression."""
    gate_exit_code: int | None = None
    """Set by the `check` gate, whose verdict also knows exit 3 (nothing found) and --exit-zero;
    every reporter then states that verdict."""

    _counts: dict[Severity, int] | None = field(default=None, init=False, repr=False, compare=False)
    """`severity_counts`, once taken: every format asks (the summary, the exit code, the verdict),
    and a long capture's findings are read back from disk on each pass over them."""

    def severity_counts(self) -> dict[str, int]:
        """Findings per severity label, worst first, every label present even at zero."""
        tally = self._tally()
        return {s.label: tally[s] for s in sorted(Severity, reverse=True)}

    def worst_severity(self) -> Severity | None:
        return max((s for s, n in self._tally().items() if n), default=None)

    def gated(self, exit_code: int) -> Report:
        """This report with the `check` gate's verdict (`gate_exit_code`); the same findings, so
        the same tally."""
        report = replace(self, gate_exit_code=exit_code)
        object.__setattr__(report, "_counts", self._counts)
        return report

    def _tally(self) -> dict[Severity, int]:
        counts = self._counts
        if counts is None:
            counts = dict.fromkeys(Severity, 0)
            for f in self.findings:
                counts[f.severity] += 1
            object.__setattr__(self, "_counts", counts)  # a report's findings never change
        return counts

    def exit_code(self, fail_on: Severity | None) -> int:
        """0 clean, 1 findings at or above `fail_on` (None = never fail), 2 unusable input."""
        if self.gate_exit_code is not None:
            return self.gate_exit_code
        if any(c.error for c in self.captures):
            return 2
        worst = self.worst_severity()
        if fail_on is not None and worst is not None and worst >= fail_on:
            return 1
        return 0

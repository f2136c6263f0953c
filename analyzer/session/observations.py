"""Facts the session timeline observes, for the checks to judge.

The timeline never decides what is a violation; it reports intervals and exchanges exactly as they
happened on the wire, and the checks (driven by the rule pack and the broker profile) decide. Each
observation is emitted once, when it is complete, so memory stays flat however long a session runs.
`Silence` and `PingOutcome` come once per client packet or ping: slotted, not frozen (see `model`).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from analyzer.model import MQTTPacket, StreamGap


class SilenceEnd(str, Enum):
    """What ended a stretch of client silence."""

    PACKET = "packet"              # the client's next control packet
    CLIENT_CLOSE = "client_close"  # the client closed the TCP connection (FIN or RST)
    SERVER_CLOSE = "server_close"  # the broker closed it (FIN, RST or a v5 DISCONNECT)
    OPEN = "open"                  # still open when the capture ended (or the flow was evicted)


@dataclass(slots=True)
class Silence:
    """An interval in which the client sent no control packet.

    It runs from the end of a client packet (`start_*`: the frame carrying its last byte) to the
    start of the next one, or to whatever ended the connection or the capture (`end_*`).
    """

    start_frame: int
    start_ns: int
    end_frame: int
    end_ns: int
    end: SilenceEnd
    first: bool
    """The interval starts at CONNECT (or at CONNACK when the keep-alive came from it)."""
    inbound: int
    """Unsolicited broker packets (PUBLISH, PUBREL) that arrived during it."""
    inbound_first_frame: int | None
    hole: StreamGap | None
    """The first client->broker capture gap inside it: a client packet may be hidden there."""
    close_explained: str | None = None
    """For a broker close: a reason it is not keep-alive enforcement (refused CONNECT, a v5
    DISCONNECT reason other than 0x8D, a malformed client packet, a session takeover)."""
    disconnect_reason: int | None = None
    clock_step: bool = False
    """The capture's clock went backwards inside it: its length means nothing."""
    connack_ns: int | None = None
    """For the first silence: when CONNACK was sent (brokers that start their timer there)."""

    @property
    def duration_ns(self) -> int:
        return self.end_ns - self.start_ns


@dataclass(slots=True)
class PingOutcome:
    """What became of one PINGREQ: answered (and when), or still unanswered when observation ended."""

    pingreq_frame: int
    pingreq_ns: int
    """When the PINGREQ was sent (its last byte)."""
    answer_frame: int | None
    answer_ns: int | None
    repinged_ns: int | None
    """When the client sent another PINGREQ while this one was unanswered."""
    end_frame: int
    end_ns: int
    """Where observation of this PINGREQ stopped: its answer, the connection's end or capture end."""
    closed_by: str | None
    """'client' or 'server' when the connection closed before an answer; None otherwise."""
    clock_step: bool = False
    """The capture's clock stepped while it waited: how long it waited means nothing."""


@dataclass(frozen=True, slots=True)
class MalformedPing:
    """A PINGREQ or PINGRESP whose flags or Remaining Length are not zero."""

    packet: MQTTPacket
    from_client: bool


@dataclass(frozen=True, slots=True)
class UnsolicitedPingresp:
    """A PINGRESP from the broker with no PINGREQ outstanding (and none that could hide unseen)."""

    packet: MQTTPacket

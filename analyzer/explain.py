"""What each rule checks, why it matters and a worked example: the text of `mqtt-keepalive explain`.

Names, sides, severities, spec references and parameter values come from the rule pack (the single
source for those); this module holds only the prose, one entry per rule of the catalog
(`analyzer.ruleset.catalog.RULE_PARAMS`), and a sentence per parameter. K is the effective Keep
Alive (the CONNECT value, or a v5 Server Keep Alive from CONNACK); every time comparison allows the
pack's `tolerance_s` (0.25 s by default).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Explanation:
    checks: str
    why: str
    example: str


EXPLANATIONS: dict[str, Explanation] = {
    "KA101": Explanation(
        "Every gap between two client control packets (or between the client's last packet and the "
        "close) must not exceed K. Anything the client sends counts, not only PINGREQ.",
        "A client must send a control packet within each Keep Alive interval (MQTT-3.1.2-23; 5.0: "
        "MQTT-3.1.2-20). A late client works only as long as the broker is lenient.",
        "K = 2 s; PINGREQs 2.6 s apart: 2.6 > 2 + 0.25, so each gap is a KA101 "
        "(captures/late-pinger.pcap)."),
    "KA102": Explanation(
        "A client gap longer than 1.5 x K: the point at which the specification requires the broker "
        "to drop the client, whatever a real broker does.",
        "MQTT-3.1.2-24 (5.0: MQTT-3.1.2-22): a broker must disconnect a client it has not heard "
        "from for one and a half times the Keep Alive. The device will be dropped, and its session "
        "and will message handled as after a network failure.",
        "K = 2 s, deadline 3 s; the client sent nothing after CONNECT and mosquitto closed 5.41 s "
        "later: 5.41 > 3 + 0.25, a KA102 (captures/silent-client.pcap)."),
    "KA103": Explanation(
        "A KA101/KA102 gap during which the broker kept sending packets (usually PUBLISH) to the "
        "client.",
        "A common client bug: the keep-alive timer is reset by received traffic instead of sent "
        "traffic, so a subscriber that only receives never pings and is dropped by a strict broker.",
        "K = 2 s; a subscriber is silent for 5.5 s while the broker forwards 13 PUBLISH to it: "
        "KA101 + KA102 + KA103 (captures/receive-only-subscriber.pcap)."),
    "KA104": Explanation(
        "A session with several pings sent after more than `near_k` x K of silence (but not over "
        "K + tolerance).",
        "Pinging at the very end of the interval leaves no margin: one scheduling or network delay "
        "turns the ping into a KA101, and brokers that enforce exactly may drop the client.",
        "K = 10 s, near_k 0.9, min_count 3: pings after 9.6, 9.8 and 10.0 s of silence are three "
        "pings in the last tenth of the interval: a KA104."),
    "KA105": Explanation(
        "An MQTT 5 CONNACK set a Server Keep Alive shorter than the client's own K and a later gap "
        "still exceeds the Server Keep Alive.",
        "The client must use the Server Keep Alive instead of its own value (MQTT-3.1.2-21, "
        "MQTT-3.2.2-21); a client that ignores it is dropped by the broker that asked.",
        "The client asks K = 30 s, the broker answers Server Keep Alive 10 s and the client pings "
        "every 12 s: 12 > 10 + 0.25, KA101 + KA105 (captures/server-keep-alive-ignored.pcap)."),
    "KA106": Explanation(
        "A PINGREQ stayed unanswered and the client neither closed the connection nor pinged again "
        "within `close_within_k` x K.",
        "A PINGRESP that does not come within a reasonable time means the connection is dead; the "
        "client should close it and reconnect (MQTT 3.1.2.10) instead of waiting forever.",
        "K = 2 s; PINGREQ at 1.2 s, never answered; the client closes only 5.0 s later: 5.0 > 2 x 2 "
        "+ 0.25, a KA106 (captures/no-pingresp.pcap)."),
    "KA107": Explanation(
        "The median silence before each PINGREQ as a fraction of K, matched against known client "
        "library habits (K, K/2, K/4, a fixed 30 s, ping storms). Off in the default pack.",
        "Fingerprints a fleet: which devices use which library and how much margin they leave. Not "
        "a violation, so it is an info finding and disabled unless a pack enables it.",
        "K = 60 s; a client pings after 30 s of silence each time: ratio 0.50, \"about K/2\"."),
    "KA201": Explanation(
        "The client's silence outlasted the broker profile's latest on-time close (its deadline "
        "plus allowed lateness) + tolerance, and the broker still had not closed the connection.",
        "A broker that does not enforce Keep Alive keeps half-open connections and stale sessions, "
        "delays will messages and lets a dead device look online. Judged against the chosen "
        "profile (`--profile`): `spec` allows no lateness.",
        "K = 2 s; mosquitto closes 5.41 s after the client's last packet. Under `spec` the latest "
        "close is 3 s: 5.41 > 3 + 0.25, a KA201. Under `mosquitto-2.0` the window is [2.5, 10] s: "
        "on time (captures/silent-client.pcap)."),
    "KA202": Explanation(
        "The broker closed the connection before the profile's earliest on-time close - tolerance, "
        "and nothing else explains the close (refused CONNECT, protocol error, session takeover, a "
        "close within `min_idle_k` x K of the client's last packet unless DISCONNECT said 0x8D).",
        "A broker that drops clients early breaks compliant devices: they reconnect in loops and "
        "lose their sessions. Judged against the chosen profile.",
        "K = 4 s, deadline 6 s; the broker closes after 3.01 s of silence: 3.01 < 6 - 0.25, a KA202 "
        "(captures/broker-closes-early.pcap)."),
    "KA203": Explanation(
        "A PINGREQ got no PINGRESP within `wait_k` x K, or the broker closed the connection without "
        "answering it.",
        "The broker must answer every PINGREQ with a PINGRESP (MQTT-3.12.4-1); clients treat a "
        "missing PINGRESP as a dead connection and reconnect.",
        "K = 2 s; PINGREQ at 1.2 s, no PINGRESP in the 5.0 s until the connection closed: 5.0 > "
        "1 x 2 + 0.25, a KA203 (captures/no-pingresp.pcap)."),
    "KA204": Explanation(
        "A PINGRESP that came, but more than `threshold_s` after its PINGREQ.",
        "Clients wait a fixed time for PINGRESP (coreMQTT: 5 s) and then close; a slow broker makes "
        "them reconnect although the connection works.",
        "PINGREQ at 10.0 s, PINGRESP at 16.0 s: 6.0 > 5 + 0.25, a KA204."),
    "KA205": Explanation(
        "A PINGRESP from the broker while no PINGREQ was outstanding.",
        "PINGRESP only answers a PINGREQ (MQTT 3.13); an unsolicited one points to a broken broker "
        "or proxy and can confuse clients that count answers.",
        "The client sent one PINGREQ, the broker answered twice: the second PINGRESP is a KA205."),
    "KA301": Explanation(
        "The session's effective Keep Alive is 0.",
        "K = 0 turns the mechanism off (MQTT 3.1.2.10): neither side detects a dead connection at "
        "the MQTT level; a half-open TCP connection can then hold a session for hours.",
        "CONNECT with Keep Alive 0: one KA301 (captures/keep-alive-zero.pcap)."),
    "KA302": Explanation(
        "The client's Keep Alive is outside what the broker profile accepts or enforces: below its "
        "minimum, above its maximum, or 0 where the profile rejects or replaces 0.",
        "Cloud brokers clamp or refuse such values (AWS IoT Core: 30..1200 s; Azure IoT Hub: at "
        "most 1177 s), so the device is timed against a K it did not ask for.",
        "`--profile aws-iot-core`, CONNECT with K = 10 s: below the minimum of 30 s (enforced as "
        "30 s), a KA302."),
    "KA303": Explanation(
        "An MQTT 5 CONNACK carries a Server Keep Alive (reported as old -> new).",
        "The broker replaced the client's Keep Alive (MQTT-3.2.2-21): every later gap is judged "
        "against the broker's value. Information, not a violation.",
        "CONNECT K = 30 s, CONNACK Server Keep Alive 10 s: a KA303 (30 -> 10)."),
    "KA401": Explanation(
        "A PINGREQ or PINGRESP whose fixed header flags or Remaining Length are not zero (it must be "
        "exactly C0 00 or D0 00).",
        "Reserved flags must be as specified and a receiver must close the connection on a "
        "malformed packet (MQTT-2.2.2-1, MQTT-2.1.3-1); lenient brokers hide client bugs.",
        "A client sends C1 00 and mosquitto answers it: a KA401 (captures/malformed-ping.pcap)."),
    "KA901": Explanation(
        "The capture does not hold the session's CONNECT, so its Keep Alive is unknown; the session "
        "is judged only with `--assume-keep-alive`. For MQTT over TLS without keys the CONNECT was "
        "sent but cannot be read: the finding says which TLS version, suite and ping record size "
        "were used, and whether K was assumed, inferred from regular probable pings, or unknown.",
        "A verdict without K would be a guess. The finding says so, and suggests a K from the ping "
        "spacing when there are pings.",
        "A capture started after CONNECT with PINGREQs every 1.0 s: a KA901 suggesting K near 1 s "
        "(captures/mid-stream.pcap)."),
    "KA902": Explanation(
        "Bytes are missing from the client's TCP stream inside a silence that would have been "
        "judged: a control packet may be hidden there, so no verdict is given.",
        "Capture drops (a full buffer, a snap length) must not become false violations.",
        "K = 2 s; a 4 s silence with 30 client bytes not captured in the middle: a KA902 instead of "
        "a KA101."),
}

PARAMS: dict[str, str] = {
    "KA104.near_k": "pings after more than this many K of silence leave no margin",
    "KA104.min_count": "this many such pings in one session make a habit, not an accident",
    "KA106.close_within_k": "the client should close within this many K of an unanswered PINGREQ",
    "KA107.min_pings": "sessions with fewer idle->PINGREQ gaps get no cadence finding",
    "KA202.min_idle_k": "closes sooner than this many K after the client's last packet are answers "
                        "to that packet, not keep-alive enforcement (unless DISCONNECT 0x8D)",
    "KA203.wait_k": "a PINGRESP is expected within this many K",
    "KA204.threshold_s": "a PINGRESP later than this many seconds is slow",
}
"""`<rule>.<parameter>` -> what it means."""


def explanation(rule_id: str) -> Explanation | None:
    return EXPLANATIONS.get(rule_id)


def param_meaning(rule_id: str, name: str) -> str:
    return PARAMS.get(f"{rule_id}.{name}", "")

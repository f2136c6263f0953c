"""Is this connection TLS, and does it say it carries MQTT?

On an MQTT port (1883, 8883 by default) a client whose first bytes are a TLS handshake record
(`16 03 0x`) speaks MQTT over TLS. No MQTT packet can start like a TLS record: first bytes 0x14 to
0x17 are CONNECT (flags must be 0) or PUBLISH with QoS 3, both malformed, so the test cannot
mistake plain MQTT for TLS.

On any other port (443, 8443, ...) TLS is HTTPS until shown otherwise: it counts as MQTT when its
ClientHello offers an MQTT ALPN protocol (`mqtt`; AWS IoT Core's `x-amzn-mqtt-ca` for MQTT over
443), or when decrypted plaintext shows an MQTT CONNECT or a WebSocket upgrade to `mqtt` (decided
later, by the connection). A ClientHello may span several segments: `client_hello_verdict` says
None until it is complete.
"""

from __future__ import annotations

from analyzer.tls.records import HANDSHAKE, ClientHello, TLSError, TLSRecordParser

MQTT_ALPN = frozenset({"mqtt", "x-amzn-mqtt-ca"})
MAX_HELLO_HEAD = 32 * 1024
"""A ClientHello not complete within this many bytes is not waited for."""


def looks_like_tls(data: bytes) -> bool:
    """Do these first bytes of a direction start a TLS record (any content type but heartbeat)?"""
    return len(data) >= 3 and 20 <= data[0] <= 23 and data[1] == 3 and data[2] <= 4


def looks_like_client_hello(data: bytes) -> bool:
    """A handshake record header, and (when present) a ClientHello message type after it."""
    return (looks_like_tls(data) and data[0] == HANDSHAKE
            and (len(data) < 6 or data[5] == 1))


def client_hello_verdict(head: bytes) -> ClientHello | bool | None:
    """The ClientHello that `head` (a client's first bytes) starts with; None: need more bytes;
    False: not a TLS ClientHello."""
    if not looks_like_client_hello(head):
        return False if len(head) >= 6 or not head else None
    for event in TLSRecordParser().feed(head, 0, 0):
        if isinstance(event, ClientHello):
            return event
        if isinstance(event, TLSError):
            return False
    return None if len(head) < MAX_HELLO_HEAD else False


def offers_mqtt(hello: ClientHello) -> bool:
    """Does the ClientHello offer MQTT by ALPN?"""
    return any(p.lower() in MQTT_ALPN for p in hello.alpn)

"""MQTT over WebSocket (RFC 6455): the upgrade handshake and the frame layer, sans-I/O.

`detect.upgrade_verdict` recognises a client's HTTP Upgrade to the `mqtt` subprotocol;
`decoder.WebSocketDecoder` turns one direction of a reassembled stream into the MQTT bytes it
carries (and the WebSocket events around them) for the `MQTTFramer`.
"""

from analyzer.websocket.decoder import (
    WebSocketDecoder,
    WSClose,
    WSControl,
    WSData,
    WSError,
    WSGap,
    WSOpen,
)
from analyzer.websocket.detect import upgrade_verdict

__all__ = [
    "WSClose",
    "WSControl",
    "WSData",
    "WSError",
    "WSGap",
    "WSOpen",
    "WebSocketDecoder",
    "upgrade_verdict",
]

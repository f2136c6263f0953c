"""Machinery that produces real keep-alive traffic on loopback, for recordings and tests.

The analyzer is judged against captures of real brokers and real clients, so the same code must
serve two callers: ``captures/record.py``, which records the shipped captures, and the tests that
record fresh traffic on the machine they run on. Everything here talks to 127.0.0.1 or ::1 only.

- :mod:`tests.support.broker`: a throw-away mosquitto on a free port.
- :mod:`tests.support.capture`: tcpdump on ``lo`` that is provably capturing before traffic starts.
- :mod:`tests.support.clients`: a raw-socket MQTT client for exact (mis)behaviour, and paho-mqtt
  where a real library's own timing is the point.
- :mod:`tests.support.scripted_broker`: a tiny broker for behaviour no real broker shows.
- :mod:`tests.support.tls`: a throw-away CA (``openssl``), mosquitto TLS listeners, and TLS clients
  (raw and paho-mqtt) that log their session secrets, so the captures can be decrypted.
"""

from tests.support.broker import MosquittoBroker, free_port
from tests.support.capture import TcpdumpCapture, tshark_fields
from tests.support.clients import ConnAck, RawClient, Received, run_paho_session
from tests.support.scripted_broker import ScriptedBroker

__all__ = [
    "ConnAck",
    "MosquittoBroker",
    "RawClient",
    "Received",
    "ScriptedBroker",
    "TcpdumpCapture",
    "free_port",
    "run_paho_session",
    "tshark_fields",
]

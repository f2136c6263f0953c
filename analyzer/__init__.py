"""mqtt-keepalive: MQTT Keep Alive compliance of devices and brokers, from packet captures.

Public API: `analyze(paths, Options(...)) -> Report`; the records are in `analyzer.model`.
"""

from analyzer._version import __version__
from analyzer.engine import Options, analyze
from analyzer.model import Report

__all__ = ["Options", "Report", "__version__", "analyze"]

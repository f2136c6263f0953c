"""Compare the analyzer's sessions with the tshark oracles of the public capture corpus."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from analyzer import Options, analyze
from analyzer.model import Session

CORPUS = Path(__file__).resolve().parents[3] / "shared" / "captures-public"
FIELDS = ("client", "server", "keep_alive", "client_id", "protocol_level", "client_packets", "pingreq")


@dataclass(frozen=True)
class Disagreement:
    capture: str
    tcp_stream: int
    field: str
    tshark: object
    ours: object


def corpus_captures() -> list[Path]:
    if not CORPUS.is_dir():
        return []
    return sorted(p for p in CORPUS.iterdir() if p.suffix in (".pcap", ".pcapng"))


def oracle_values(stream: dict) -> dict[str, object]:
    connect = stream.get("connect") or {}
    to_server = stream["counts"].get("client_to_server", {})
    return {
        "client": (stream["client"]["ip"], stream["client"]["port"]),
        "server": (stream["server"]["ip"], stream["server"]["port"]),
        "keep_alive": connect.get("keep_alive"),
        "client_id": connect.get("client_id"),
        "protocol_level": connect.get("protocol_level"),
        "client_packets": sum(to_server.values()),
        "pingreq": to_server.get("PINGREQ", 0),
    }


def our_values(session: Session | None) -> dict[str, object]:
    if session is None:
        return {name: None for name in FIELDS}
    connect_seen = session.connect_frame is not None
    return {
        "client": (session.flow.client.ip, session.flow.client.port),
        "server": (session.flow.server.ip, session.flow.server.port),
        "keep_alive": session.keep_alive_s,
        "client_id": session.client_id if connect_seen else None,
        "protocol_level": session.protocol_level,
        "client_packets": session.client_packets,
        "pingreq": session.pingreq,
    }


def compare(capture: Path) -> tuple[int, list[Disagreement]]:
    """Return (number of oracle MQTT streams, disagreements) for one capture."""
    oracle = json.loads(capture.with_name(capture.name + ".tshark.json").read_text())
    report = analyze([str(capture)], Options(ports=frozenset(oracle["server_ports"])))
    ours = {s.flow.stream_index: s for s in report.sessions}
    found: list[Disagreement] = []
    for stream in oracle["streams"]:
        index = stream["tcp_stream"]
        want, got = oracle_values(stream), our_values(ours.get(index))
        if want["client_id"] is not None and got["client_id"] is not None:
            got["client_id"] = _same_id(got["client_id"], want["client_id"])
        for name in FIELDS:
            if want[name] != got[name]:
                found.append(Disagreement(capture.name, index, name, want[name], got[name]))
    return len(oracle["streams"]), found


def _same_id(ours: object, theirs: object) -> object:
    """The assigned client id (CONNACK) is ours; the oracle gives CONNECT's; compare CONNECT's."""
    return ours

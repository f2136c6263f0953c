"""Properties of the TLS record parser (Hypothesis).

(a) Any segmentation of a TLS byte stream gives the same records and hellos as the whole stream fed
    at once; each record is timed by the segments that carried its first and last byte.
(b) The parser never raises on arbitrary bytes, cut anywhere, with gaps: it only returns events.
"""

from __future__ import annotations

from bisect import bisect_right

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from analyzer.tls.records import ClientHello, ServerHello, TLSAlert, TLSRecord, TLSRecordParser
from tests.tls_builders import (
    AES128_GCM_13, CHACHA_13, ECDHE_RSA_AES128_GCM, HANDSHAKE, TLS12, TLS13, alert, appdata,
    change_cipher_spec, client_hello, record, server_hello,
)

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

hellos = st.one_of(
    st.builds(lambda alpn, pad: record(HANDSHAKE, client_hello(alpn=alpn, padding=pad)),
              st.sampled_from([(), ("mqtt",), ("x-amzn-mqtt-ca", "http/1.1")]), st.integers(0, 600)),
    st.builds(lambda v, s: record(HANDSHAKE, server_hello(v, s)),
              st.sampled_from([TLS12, TLS13]), st.sampled_from([AES128_GCM_13, CHACHA_13, ECDHE_RSA_AES128_GCM])),
)
protected = st.one_of(
    st.builds(appdata, st.one_of(st.integers(0, 64), st.integers(1000, 17000))),
    st.just(change_cipher_spec()),
    st.just(alert(1, 0)),
)
streams = st.tuples(st.lists(hellos, max_size=2), st.lists(protected, min_size=1, max_size=8)).map(
    lambda parts: parts[0] + parts[1])


def summary(events: list) -> list[tuple]:
    out = []
    for e in events:
        if isinstance(e, TLSRecord):
            out.append(("record", e.content_type, e.length, e.truncated))
        elif isinstance(e, ClientHello):
            out.append(("client_hello", e.alpn, e.sni))
        elif isinstance(e, ServerHello):
            out.append(("server_hello", e.version, e.cipher_suite))
        elif isinstance(e, TLSAlert):
            out.append(("alert", e.level, e.description))
        else:
            out.append((type(e).__name__,))
    return out


@SETTINGS
@given(streams, st.data())
def test_any_segmentation_gives_the_same_records(pieces: list[bytes], data: st.DataObject) -> None:
    wire = b"".join(pieces)
    cuts = sorted(set(data.draw(st.lists(st.integers(1, max(1, len(wire) - 1)), max_size=20))))
    bounds = [0, *[c for c in cuts if 0 < c < len(wire)], len(wire)]
    whole = TLSRecordParser().feed(wire, 1, 1000)
    parser = TLSRecordParser()
    cut: list = []
    for frame, (start, end) in enumerate(zip(bounds, bounds[1:]), start=1):
        cut += parser.feed(wire[start:end], frame, frame * 1000)
    assert summary(cut) == summary(whole)
    assert len([e for e in whole if isinstance(e, TLSRecord)]) == len(pieces)
    starts = [0]
    for p in pieces:
        starts.append(starts[-1] + len(p))
    records = [e for e in cut if isinstance(e, TLSRecord)]
    for rec, start, end in zip(records, starts, starts[1:]):
        assert rec.first_frame == bisect_right(bounds, start)   # the segment holding its first byte
        assert rec.last_frame == bisect_right(bounds, end - 1)  # ... and its last byte


@SETTINGS
@given(streams, st.sampled_from([TLS12, 0x0301, TLS13]))
def test_a_record_a_segment_gives_the_same_records(pieces: list[bytes], version: int) -> None:
    """Each record in a segment of its own (the usual segment, which the parser takes in one step)
    gives the records, versions, protection and count that the stream fed at once gives, each
    timed by its own segment."""
    pieces = [p[:1] + version.to_bytes(2, "big") + p[3:] if p[0] == 23 else p for p in pieces]
    whole_parser = TLSRecordParser()
    whole = [e for e in whole_parser.feed(b"".join(pieces), 1, 1000) if isinstance(e, TLSRecord)]
    parser = TLSRecordParser()
    cut = [e for frame, piece in enumerate(pieces, start=1)
           for e in parser.feed(piece, frame, frame * 1000) if isinstance(e, TLSRecord)]
    assert [(r.content_type, r.version, r.length, r.encrypted, r.truncated) for r in cut] == [
        (r.content_type, r.version, r.length, r.encrypted, r.truncated) for r in whole]
    assert [(r.first_frame, r.last_frame, r.ts_first_ns, r.ts_last_ns) for r in cut] == [
        (n, n, n * 1000, n * 1000) for n in range(1, len(pieces) + 1)]
    assert parser.records == whole_parser.records == len(pieces)


@SETTINGS
@given(st.lists(st.tuples(st.binary(max_size=80), st.integers(0, 40)), max_size=12),
       st.sampled_from([b"", appdata(19), record(HANDSHAKE, client_hello())]))
def test_the_parser_never_raises(chunks: list[tuple[bytes, int]], prefix: bytes) -> None:
    parser = TLSRecordParser()
    parser.feed(prefix, 1, 1)
    for frame, (chunk, missing) in enumerate(chunks, start=2):
        events = parser.feed(chunk, frame, frame)
        assert isinstance(events, list)
        if missing:
            parser.gap(missing, frame, frame)
    parser.eof(99, 99)

"""Byte builders for TLS records and hellos, shared by tests.

Written from RFC 8446 (TLS 1.3) and RFC 5246 (TLS 1.2) independently of `analyzer.tls.records`, so
tests that parse these bytes check the parser against the RFCs, not against itself. Encrypted
records are random bytes of the right length: without keys, length is all anyone sees.
"""

from __future__ import annotations

import os
import struct

TLS10, TLS12, TLS13 = 0x0301, 0x0303, 0x0304
CCS, ALERT, HANDSHAKE, APPDATA = 20, 21, 22, 23
AES128_GCM_13, AES256_GCM_13, CHACHA_13 = 0x1301, 0x1302, 0x1303
ECDHE_RSA_AES128_GCM, ECDHE_RSA_CHACHA, ECDHE_RSA_AES128_CBC_SHA = 0xC02F, 0xCCA8, 0xC013
HRR_RANDOM = bytes.fromhex("cf21ad74e59a6111be1d8c021e65b891c2a211167abb8c5e079e09e2c8a8339c")


def u8(n: int) -> bytes:
    return bytes([n])


def u16(n: int) -> bytes:
    return struct.pack("!H", n)


def vec(size: int, body: bytes) -> bytes:
    """A vector with a `size`-byte length prefix."""
    return len(body).to_bytes(size, "big") + body


def record(ctype: int, fragment: bytes, version: int = TLS12) -> bytes:
    """TLSPlaintext / TLSCiphertext: type, legacy_record_version, length, fragment."""
    return u8(ctype) + u16(version) + u16(len(fragment)) + fragment


def handshake(msg_type: int, body: bytes) -> bytes:
    return u8(msg_type) + len(body).to_bytes(3, "big") + body


def extension(ext_type: int, data: bytes) -> bytes:
    return u16(ext_type) + vec(2, data)


def sni_ext(name: str) -> bytes:
    return extension(0, vec(2, u8(0) + vec(2, name.encode())))


def alpn_ext(*protocols: str) -> bytes:
    return extension(16, vec(2, b"".join(vec(1, p.encode()) for p in protocols)))


def client_hello(*, sni: str | None = "broker.example", alpn: tuple[str, ...] = (),
                 versions: tuple[int, ...] = (TLS13, TLS12),
                 suites: tuple[int, ...] = (AES128_GCM_13, ECDHE_RSA_AES128_GCM),
                 etm: bool = False, padding: int = 0) -> bytes:
    """A ClientHello handshake message (RFC 8446 4.1.2)."""
    exts = b""
    if sni is not None:
        exts += sni_ext(sni)
    if alpn:
        exts += alpn_ext(*alpn)
    if versions:
        exts += extension(43, vec(1, b"".join(u16(v) for v in versions)))
    if etm:
        exts += extension(22, b"")
    if padding:
        exts += extension(21, bytes(padding))
    body = (u16(TLS12) + os.urandom(32) + vec(1, os.urandom(32))
            + vec(2, b"".join(u16(s) for s in suites)) + vec(1, b"\x00") + vec(2, exts))
    return handshake(1, body)


def server_hello(version: int = TLS13, suite: int = AES128_GCM_13, *, hrr: bool = False,
                 etm: bool = False, alpn: str | None = None) -> bytes:
    """A ServerHello (or HelloRetryRequest) handshake message (RFC 8446 4.1.3)."""
    exts = b""
    if version == TLS13:
        exts += extension(43, u16(TLS13))
    if etm:
        exts += extension(22, b"")
    if alpn:
        exts += alpn_ext(alpn)
    random = HRR_RANDOM if hrr else os.urandom(32)
    body = u16(TLS12) + random + vec(1, os.urandom(32)) + u16(suite) + u8(0) + vec(2, exts)
    return handshake(2, body)


def appdata(length: int) -> bytes:
    """A protected application-data record whose fragment is `length` bytes."""
    return record(APPDATA, os.urandom(length))


def alert(level: int = 1, description: int = 0) -> bytes:
    return record(ALERT, bytes([level, description]))


def change_cipher_spec() -> bytes:
    return record(CCS, b"\x01")

"""Cipher suites, and how long the record carrying a given plaintext is under each.

Why this exists: without keys, the only thing a TLS record says about its MQTT content is its
length. PINGREQ (`C0 00`) and PINGRESP (`D0 00`) are 2 bytes, the smallest MQTT packets, and a
record carrying exactly one of them has a length that follows from the negotiated version and
suite alone:

* TLS 1.3 (every suite is an AEAD): plaintext + 1 (the inner content type) + the tag
  (16; 8 for AES-CCM-8): 19 bytes for a ping (RFC 8446 5.2, no padding assumed: OpenSSL, BoringSSL,
  mbedTLS and wolfSSL do not pad by default).
* TLS 1.2 AES-GCM / AES-CCM (and ARIA/Camellia-GCM): the 8-byte explicit nonce + plaintext + tag
  16 (8 for CCM-8): 26 bytes (RFC 5288 3, RFC 6655 3).
* TLS 1.2 ChaCha20-Poly1305: no explicit nonce (RFC 7905 2): plaintext + 16 = 18 bytes.
* TLS 1.1/1.2 CBC: the explicit IV + the plaintext, its MAC and the padding-length byte padded up
  to the block size (MAC-then-encrypt, RFC 5246 6.2.3.2), or plaintext + padding-length byte padded,
  then the MAC (encrypt-then-MAC, RFC 7366). Minimal padding is assumed (senders may pad more).
  Padding to a block makes a 2-byte ping and a 3- or 4-byte PUBACK/PUBREC/DISCONNECT the same
  length, so under CBC no record is taken for a ping (`probable_ping_length` is None).

TLS 1.0 and older are not sized: no explicit IV, and clients split records 1/n-1.
"""

from __future__ import annotations

from dataclasses import dataclass

from analyzer.tls.records import TLS11, TLS12, TLS13

PING_PLAINTEXT = 2
OTHER_SMALL_PACKETS = (3, 4)
"""Plaintext lengths of the next-smallest MQTT packets (a v5 DISCONNECT with a reason code,
PUBACK, PUBREC, PUBREL, PUBCOMP, UNSUBACK): a ping size they share is not a ping size."""


@dataclass(frozen=True, slots=True)
class Suite:
    """How a suite protects a record: an AEAD (nonce, tag) or a block cipher with a MAC."""

    name: str
    aead: bool
    explicit_nonce: int = 0
    """TLS 1.2 AEAD: bytes of explicit nonce sent in each record (8 for GCM and CCM, 0 for ChaCha20)."""
    tag: int = 16
    block: int = 0
    """CBC: the cipher's block size, which is also the explicit IV's length (TLS >= 1.1)."""
    mac: int = 0
    """CBC: the HMAC's length."""
    tls13: bool = False


def _gcm(name: str) -> Suite:
    return Suite(name, True, explicit_nonce=8)


def _ccm(name: str, tag: int = 16) -> Suite:
    return Suite(name, True, explicit_nonce=8, tag=tag)


def _chacha(name: str) -> Suite:
    return Suite(name, True)


def _cbc(name: str, block: int, mac: int) -> Suite:
    return Suite(name, False, block=block, mac=mac)


SUITES: dict[int, Suite] = {
    # TLS 1.3 (RFC 8446 B.4)
    0x1301: Suite("TLS_AES_128_GCM_SHA256", True, tls13=True),
    0x1302: Suite("TLS_AES_256_GCM_SHA384", True, tls13=True),
    0x1303: Suite("TLS_CHACHA20_POLY1305_SHA256", True, tls13=True),
    0x1304: Suite("TLS_AES_128_CCM_SHA256", True, tls13=True),
    0x1305: Suite("TLS_AES_128_CCM_8_SHA256", True, tag=8, tls13=True),
    # TLS 1.2 AES-GCM (RFC 5288, 5289, 5487)
    0x009C: _gcm("TLS_RSA_WITH_AES_128_GCM_SHA256"),
    0x009D: _gcm("TLS_RSA_WITH_AES_256_GCM_SHA384"),
    0x009E: _gcm("TLS_DHE_RSA_WITH_AES_128_GCM_SHA256"),
    0x009F: _gcm("TLS_DHE_RSA_WITH_AES_256_GCM_SHA384"),
    0x00A8: _gcm("TLS_PSK_WITH_AES_128_GCM_SHA256"),
    0x00A9: _gcm("TLS_PSK_WITH_AES_256_GCM_SHA384"),
    0x00AA: _gcm("TLS_DHE_PSK_WITH_AES_128_GCM_SHA256"),
    0x00AB: _gcm("TLS_DHE_PSK_WITH_AES_256_GCM_SHA384"),
    0xC02B: _gcm("TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256"),
    0xC02C: _gcm("TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384"),
    0xC02F: _gcm("TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256"),
    0xC030: _gcm("TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384"),
    # TLS 1.2 AES-CCM (RFC 6655, 7251)
    0xC09C: _ccm("TLS_RSA_WITH_AES_128_CCM"),
    0xC09D: _ccm("TLS_RSA_WITH_AES_256_CCM"),
    0xC09E: _ccm("TLS_DHE_RSA_WITH_AES_128_CCM"),
    0xC09F: _ccm("TLS_DHE_RSA_WITH_AES_256_CCM"),
    0xC0A0: _ccm("TLS_RSA_WITH_AES_128_CCM_8", 8),
    0xC0A1: _ccm("TLS_RSA_WITH_AES_256_CCM_8", 8),
    0xC0A4: _ccm("TLS_PSK_WITH_AES_128_CCM"),
    0xC0A5: _ccm("TLS_PSK_WITH_AES_256_CCM"),
    0xC0A8: _ccm("TLS_PSK_WITH_AES_128_CCM_8", 8),
    0xC0A9: _ccm("TLS_PSK_WITH_AES_256_CCM_8", 8),
    0xC0AC: _ccm("TLS_ECDHE_ECDSA_WITH_AES_128_CCM"),
    0xC0AD: _ccm("TLS_ECDHE_ECDSA_WITH_AES_256_CCM"),
    0xC0AE: _ccm("TLS_ECDHE_ECDSA_WITH_AES_128_CCM_8", 8),
    0xC0AF: _ccm("TLS_ECDHE_ECDSA_WITH_AES_256_CCM_8", 8),
    # TLS 1.2 ChaCha20-Poly1305 (RFC 7905)
    0xCCA8: _chacha("TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256"),
    0xCCA9: _chacha("TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256"),
    0xCCAA: _chacha("TLS_DHE_RSA_WITH_CHACHA20_POLY1305_SHA256"),
    0xCCAB: _chacha("TLS_PSK_WITH_CHACHA20_POLY1305_SHA256"),
    0xCCAC: _chacha("TLS_ECDHE_PSK_WITH_CHACHA20_POLY1305_SHA256"),
    0xCCAD: _chacha("TLS_DHE_PSK_WITH_CHACHA20_POLY1305_SHA256"),
    0xCCAE: _chacha("TLS_RSA_PSK_WITH_CHACHA20_POLY1305_SHA256"),
    # TLS 1.1/1.2 CBC (RFC 5246 A.5, 4492, 5289, 5487): sized, but never taken for pings
    0x000A: _cbc("TLS_RSA_WITH_3DES_EDE_CBC_SHA", 8, 20),
    0x002F: _cbc("TLS_RSA_WITH_AES_128_CBC_SHA", 16, 20),
    0x0033: _cbc("TLS_DHE_RSA_WITH_AES_128_CBC_SHA", 16, 20),
    0x0035: _cbc("TLS_RSA_WITH_AES_256_CBC_SHA", 16, 20),
    0x0039: _cbc("TLS_DHE_RSA_WITH_AES_256_CBC_SHA", 16, 20),
    0x003C: _cbc("TLS_RSA_WITH_AES_128_CBC_SHA256", 16, 32),
    0x003D: _cbc("TLS_RSA_WITH_AES_256_CBC_SHA256", 16, 32),
    0x0067: _cbc("TLS_DHE_RSA_WITH_AES_128_CBC_SHA256", 16, 32),
    0x006B: _cbc("TLS_DHE_RSA_WITH_AES_256_CBC_SHA256", 16, 32),
    0x008C: _cbc("TLS_PSK_WITH_AES_128_CBC_SHA", 16, 20),
    0x008D: _cbc("TLS_PSK_WITH_AES_256_CBC_SHA", 16, 20),
    0x00AE: _cbc("TLS_PSK_WITH_AES_128_CBC_SHA256", 16, 32),
    0x00AF: _cbc("TLS_PSK_WITH_AES_256_CBC_SHA384", 16, 48),
    0xC009: _cbc("TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA", 16, 20),
    0xC00A: _cbc("TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA", 16, 20),
    0xC013: _cbc("TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA", 16, 20),
    0xC014: _cbc("TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA", 16, 20),
    0xC023: _cbc("TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256", 16, 32),
    0xC024: _cbc("TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA384", 16, 48),
    0xC027: _cbc("TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256", 16, 32),
    0xC028: _cbc("TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA384", 16, 48),
}


def suite_name(code: int) -> str:
    suite = SUITES.get(code)
    return suite.name if suite is not None else f"cipher suite 0x{code:04X}"


def _padded(n: int, block: int) -> int:
    return -(-n // block) * block


def record_length(version: int, suite_code: int, plaintext: int, *,
                  encrypt_then_mac: bool = False) -> int | None:
    """The fragment length of a record protecting `plaintext` bytes (minimal padding), or None
    when the version or suite is not one this module sizes."""
    suite = SUITES.get(suite_code)
    if suite is None:
        return None
    if version == TLS13:
        return plaintext + 1 + suite.tag if suite.tls13 else None
    if version not in (TLS11, TLS12) or suite.tls13:
        return None
    if suite.aead:
        return suite.explicit_nonce + plaintext + suite.tag if version == TLS12 else None
    if encrypt_then_mac:
        return suite.block + _padded(plaintext + 1, suite.block) + suite.mac
    return suite.block + _padded(plaintext + suite.mac + 1, suite.block)


def plaintext_length(version: int, suite_code: int, fragment: int, *,
                     encrypt_then_mac: bool = False) -> int | None:
    """How many plaintext bytes a protected record of `fragment` bytes carries, when the suite
    says exactly (AEAD); None for CBC (padding) or an unknown suite."""
    empty = record_length(version, suite_code, 0, encrypt_then_mac=encrypt_then_mac)
    suite = SUITES.get(suite_code)
    if empty is None or suite is None or not suite.aead:
        return None
    return max(fragment - empty, 0)


def probable_ping_length(version: int, suite_code: int, *, encrypt_then_mac: bool = False) -> int | None:
    """The length of a record carrying exactly one PINGREQ or PINGRESP, when no other small MQTT
    packet shares it; None when the size tells nothing (CBC padding, unknown suite or version)."""
    ping = record_length(version, suite_code, PING_PLAINTEXT, encrypt_then_mac=encrypt_then_mac)
    if ping is None:
        return None
    for other in OTHER_SMALL_PACKETS:
        if record_length(version, suite_code, other, encrypt_then_mac=encrypt_then_mac) == ping:
            return None
    return ping

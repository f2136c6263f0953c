"""MQTT over TLS: decrypted through tshark when the key log is given (`decrypt`).

Without keys, and to place decrypted data: `records` cuts each direction into TLS records
(sans-I/O), `suites` says how long an encrypted ping is under each cipher suite, `detect` finds TLS
(and an MQTT ALPN) in a connection's first bytes, and `plaintext` hands the engine a capture's
decrypted data when a connection first needs it.
"""

"""Where a capture's decrypted TLS application data comes from, for the connections that need it.

The engine owns one `PlaintextSource` per analysis. It asks `analyzer.tls.decrypt` (which runs
tshark with the key logs) only when a TLS connection first needs plaintext, so captures without
TLS, and runs without `--tls-keylog`, never start tshark. The files of a rotation are one analysis
with frame numbers that count on across files (`mergecap -a`): each file is decrypted on its own
and looked up with its frame offset.

Decryption that cannot run (no tshark, a capture on stdin, an unreadable file) is not fatal: the
connections are judged from their record sizes instead (the keyless path) and the capture gets a
warning. A key log that is itself unusable (`UsageError` from `decrypt`) is the user's option
being wrong, and stops the run with exit 2 as any bad option does.

This module is the only part of `analyzer.tls` that leads to I/O, and only through the engine.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Callable
from typing import Protocol

from analyzer.errors import InputError


class Plaintext(Protocol):
    """What `analyzer.tls.decrypt.decrypt_capture` returns (see there)."""

    def chunks(self, frame_no: int) -> list[bytes]: ...
    def undecrypted(self, frame_no: int) -> int: ...
    def __bool__(self) -> bool: ...


class PlaintextSource:
    """Decrypted application data of one analysis (a capture or the files of a rotation)."""

    def __init__(self, keylogs: tuple[str, ...], warn: Callable[[str], None]) -> None:
        self.keylogs = keylogs
        self.warn = warn
        self._offsets: list[int] = []
        self._paths: list[str] = []
        self._secrets: list[bool] = []
        """Per file: the capture carries its own TLS secrets (a pcapng Decryption Secrets Block)."""
        self._loaded: dict[int, Plaintext | None] = {}
        self.fallback_streams: list[int] = []
        """TLS connections that had no plaintext although keys were given (judged keyless)."""
        self.failed_records: dict[int, int] = {}
        """tcp.stream -> records of that decrypted connection the keys did not open (holes)."""

    @property
    def keys_given(self) -> bool:
        return bool(self.keylogs) or any(self._secrets)

    def add_file(self, path: str, frame_offset: int) -> None:
        """A capture file whose frame N is the analysis' frame `frame_offset + N`."""
        self._offsets.append(frame_offset)
        self._paths.append(path)
        self._secrets.append(False)

    def embedded_secrets(self, frame_offset: int) -> None:
        """The file added at `frame_offset` carries TLS secrets itself: decrypt it even without
        key logs."""
        if frame_offset in self._offsets:
            self._secrets[self._offsets.index(frame_offset)] = True

    def available(self, frame_no: int) -> bool:
        """Is there any plaintext in the file that holds `frame_no`?"""
        plain = self._file(frame_no)
        return plain is not None and bool(plain[0])

    def chunks(self, frame_no: int) -> list[bytes]:
        """The plaintext of each application-data record completed in `frame_no`, in order."""
        plain = self._file(frame_no)
        if plain is None or not plain[0]:
            return []
        return plain[0].chunks(frame_no - plain[1])

    def undecrypted(self, frame_no: int) -> int:
        """How many TLS 1.3 protected records completed in `frame_no` the keys did not open."""
        plain = self._file(frame_no)
        if plain is None or not plain[0]:
            return 0
        return plain[0].undecrypted(frame_no - plain[1])

    def fallback(self, stream_index: int) -> None:
        self.fallback_streams.append(stream_index)

    def failed(self, stream_index: int) -> None:
        """A record of a connection judged from its plaintext could not be decrypted."""
        self.failed_records[stream_index] = self.failed_records.get(stream_index, 0) + 1

    def warnings(self) -> list[str]:
        """The end-of-capture summary of connections judged without (some of) their plaintext."""
        out = []
        if self.fallback_streams:
            out.append(f"TLS keys were given but {len(self.fallback_streams)} MQTT-over-TLS "
                       f"connection(s) had no decrypted data (tcp.stream "
                       f"{_listed(self.fallback_streams)}): judged from TLS record sizes "
                       "(uncertainty encrypted, findings likely)")
        if self.failed_records:
            streams = sorted(self.failed_records)
            out.append(f"{sum(self.failed_records.values())} TLS record(s) of {len(streams)} decrypted "
                       f"MQTT-over-TLS connection(s) could not be decrypted (tcp.stream "
                       f"{_listed(streams)}), as after a capture loss, when tshark loses count of "
                       "a direction's records: their MQTT bytes count as not captured (uncertainty "
                       "hole), and what they may hold is not judged")
        return out

    def close(self) -> None:
        """Drop the decrypted data (the analysis is over)."""
        for plain in self._loaded.values():
            close = getattr(plain, "close", None)
            if close is not None:
                close()
        self._loaded.clear()
        self.keylogs = ()  # and never decrypt again
        self._secrets = [False] * len(self._secrets)

    def _file(self, frame_no: int) -> tuple[Plaintext | None, int] | None:
        if not self._offsets:
            return None
        index = max(bisect_right(self._offsets, frame_no - 1) - 1, 0)
        if not self.keylogs and not self._secrets[index]:
            return None
        if index not in self._loaded:
            self._loaded[index] = self._load(self._paths[index])
        return self._loaded[index], self._offsets[index]

    def _load(self, path: str) -> Plaintext | None:
        try:
            from analyzer.tls.decrypt import decrypt_capture
        except ImportError:
            self.warn("TLS decryption is not available in this installation: MQTT over TLS is "
                      "judged from TLS record sizes")
            return None
        try:
            plain = decrypt_capture(path, self.keylogs)
        except InputError as exc:
            self.warn(f"TLS not decrypted ({exc}): MQTT over TLS is judged from TLS record sizes")
            return None
        for warning in getattr(plain, "warnings", ()):
            self.warn(warning)
        if not plain:
            self.warn("the TLS key log(s) decrypted nothing in this capture: MQTT over TLS is "
                      "judged from TLS record sizes")
        return plain


def _listed(streams: list[int]) -> str:
    """The first ten stream numbers, and how many more."""
    more = f" and {len(streams) - 10} more" if len(streams) > 10 else ""
    return ", ".join(str(i) for i in streams[:10]) + more

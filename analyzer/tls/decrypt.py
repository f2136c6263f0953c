"""Decrypted TLS application data of a capture, by frame, through tshark and the clients' key logs.

Theory of operation
-------------------
MQTT over TLS (port 8883, and MQTT over WebSocket over TLS on 443/8081/...) can only be judged
from its plaintext, and the plaintext can only be had with the session secrets the client logged
(`SSLKEYLOGFILE`: `CLIENT_RANDOM` lines for TLS 1.2, the `*_TRAFFIC_SECRET` lines for TLS 1.3).
Implementing TLS 1.2 and 1.3 record decryption here would mean a cryptography dependency and the
key schedules of every suite; Wireshark already does all of it, and its decryption is the one the
user checks the evidence with. So tshark decrypts, and the project's own WebSocket decoder and MQTT
framer run on what it hands back, exactly as on plain TCP: the verdicts of a TLS capture with
keys equal those of its plain twin.

What is asked of tshark is the raw plaintext of every application-data record, not its dissection
of MQTT:

    tshark -n -r CAPTURE -o tls.keylog_file:MERGED_KEYS -o tls.desegment_ssl_records:TRUE
           -o tcp.desegment_tcp_streams:TRUE
           --disable-protocol mqtt --disable-protocol http ... (every TLS subdissector)
           -Y "tls.app_data && data" -T fields -e frame.number -e data.data
           -E occurrence=a -E aggregator=, -E separator=/t -E header=n -E quote=n

* Every dissector TLS could hand its plaintext to is disabled: MQTT (8883), HTTP and so its
  WebSocket upgrade, HTTP/2, everything tshark 4.0 registers on a TLS port or as a TLS heuristic
  (`KNOWN_SUBDISSECTORS`), and any TLS heuristic a newer tshark adds (asked with `tshark -G
  heuristic-decodes` while the first run goes; one more run if there is one). Each decrypted record
  then falls through to the `data` dissector, and `data.data` holds its bytes: one occurrence per
  record, in record order. Nothing is lost to a dissector's view of MQTT: tshark's JSON repeats a
  key for each PDU of a frame and pyshark's JSON mode keeps one of them, and even a complete
  dissection would have to be trusted to show every PDU; raw bytes need no trust.
* A record cut over several TCP segments is reassembled by tshark and reported in the frame that
  completes it, the frame a keep-alive measurement must use for the end of a packet; several
  records in one segment are several occurrences in that frame.
* tshark runs with an empty personal configuration (`WIRESHARK_CONFIG_DIR`), so the user's
  Wireshark profile (decode-as entries, disabled protocols or heuristics, other key files) cannot
  change what this capture and these keys yield; with the defaults, the `tls_tcp` heuristic finds
  TLS on any port.
* Only frames with decrypted application data are printed (`-Y`), as hex, and read as they
  stream. The plaintext is kept in a spooled temporary file (in memory up to
  `SPOOL_BYTES`), so a long capture does not hold its decrypted payloads in memory.

Why not pyshark: it runs the same tshark, but its JSON mode drops repeated fields (all but one MQTT
PDU or data record per frame), and its PDML mode parses the whole dissection tree of every frame
as XML through an asyncio event loop, to end with the same hex strings `-T fields` prints
directly. Plain tshark through `subprocess` is faster, has no Python dependency and reports its
errors plainly. The `tshark` program is needed either way (`apt-get install tshark`).

Several key logs (clients that each wrote their own) are merged into one temporary file: tshark
takes one `tls.keylog_file`. Secrets a pcapng carries itself (a Decryption Secrets Block, from
`editcap --inject-secrets tls,KEYS`) are used too, so `keylogs` may be empty for such a file.

Errors: no tshark is an `InputError` saying what to install; an unreadable key log, or key logs
that hold no TLS secret at all, a `UsageError` (exit 2: the option is wrong, not the capture).
Keys that decrypt nothing give an empty `Plaintext` (falsy): the caller falls back to judging
the connection without its contents and says so.
"""

from __future__ import annotations

import bz2
import functools
import lzma
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from analyzer.errors import InputError, UsageError

TSHARK = "tshark"
INSTALL_HINT = ("decrypting TLS needs Wireshark's tshark program, which is not installed or not on "
                "PATH: install it (Debian/Ubuntu: apt-get install tshark; Fedora: dnf install "
                "wireshark-cli; macOS: brew install wireshark)")
SPOOL_BYTES = 32 << 20
"""Plaintext up to this size stays in memory; beyond it, it goes to a temporary file."""

KEY_LABELS = frozenset({
    "CLIENT_RANDOM", "RSA", "PMS_CLIENT_RANDOM",
    "CLIENT_EARLY_TRAFFIC_SECRET", "CLIENT_HANDSHAKE_TRAFFIC_SECRET",
    "SERVER_HANDSHAKE_TRAFFIC_SECRET", "CLIENT_TRAFFIC_SECRET_0", "SERVER_TRAFFIC_SECRET_0",
    "EARLY_EXPORTER_SECRET", "EXPORTER_SECRET",
})
"""First words of the lines of an SSLKEYLOGFILE that carry a secret (NSS key log format, as
OpenSSL, BoringSSL, NSS, Python's `ssl` and Wireshark write and read them)."""

KNOWN_SUBDISSECTORS = (
    # MQTT itself; HTTP and its WebSocket upgrade; those ALPN picks (http/1.1, h2, stun.*, coap,
    # ntske/1), which no `tshark -G` report lists
    "mqtt", "http", "http2", "websocket", "stun", "turnchannel", "coap", "nts-ke",
    # the `tls.port` table of tshark 4.0 (`tshark -G decodes`)
    "amqp", "couchbase", "diameter", "dnp3", "dns", "doip", "enip", "imap", "ldap", "mbtcp", "mongo",
    "opa.fe", "pop", "q931", "rpkirtr", "sip", "skinny", "smtp", "tpkt",
    # the TLS heuristics of tshark 4.0 (`tshark -G heuristic-decodes`)
    "rdpmt", "mq", "5gli", "fix", "credssp", "aim",
)
"""Protocols tshark may hand decrypted TLS application data to, disabled so that it reaches the
`data` dissector instead. Names a tshark does not know are ignored by `--disable-protocol`. A newer
tshark's new TLS heuristics are asked for at run time (`tls_heuristics`); its new TLS-port
registrations only matter if MQTT runs on their port, and the test suite compares this list with
the installed tshark's."""

FIELDS_FILTER = "(tls.app_data && data) || tls.record.opaque_type"
"""Frames with an application-data record whose plaintext reached the `data` dissector, and frames
with TLS 1.3 protected records (to count those tshark could not decrypt)."""


# --- the result --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Span:
    """Where one record's plaintext lies in the store."""

    offset: int
    length: int


@dataclass(frozen=True, slots=True)
class Plaintext:
    """Decrypted TLS application data of one capture: frame number -> the plaintext of each
    application-data record that frame completes, in record order.

    Frame numbers are the capture's (1-based, every record counts, as Wireshark numbers them). A
    record spread over several segments belongs to the frame of its last byte. Falsy when the keys
    decrypted nothing. `warnings` are about the inputs (a key log with no secret in it, a capture
    tshark could read only in part).
    """

    index: Mapping[int, tuple[Span, ...]] = field(default_factory=dict)
    store: IO[bytes] | None = field(default=None, repr=False, compare=False)
    warnings: tuple[str, ...] = ()
    failed: Mapping[int, int] = field(default_factory=dict)
    """Frame number -> TLS 1.3 protected records of it that tshark could not decrypt (a record
    whose sequence number it lost track of after a capture loss, say): unlike a record that
    decrypted to a handshake message or an alert, such a record hides application data."""

    def chunks(self, frame_no: int) -> list[bytes]:
        """The plaintext records completed in `frame_no`, in order; empty if none."""
        spans = self.index.get(frame_no)
        if not spans or self.store is None:
            return []
        out = []
        for span in spans:
            self.store.seek(span.offset)
            out.append(self.store.read(span.length))
        return out

    def undecrypted(self, frame_no: int) -> int:
        """How many TLS 1.3 protected records completed in `frame_no` could not be decrypted."""
        return self.failed.get(frame_no, 0)

    def __bool__(self) -> bool:
        return bool(self.index)

    def frames(self) -> list[int]:
        """The frames that carry plaintext, in order."""
        return sorted(self.index)

    @property
    def records(self) -> int:
        """How many application-data records were decrypted."""
        return sum(len(spans) for spans in self.index.values())

    def close(self) -> None:
        """Drop the stored plaintext (it also goes when the object is collected)."""
        if self.store is not None:
            self.store.close()


# --- decryption ----------------------------------------------------------------------------------


def decrypt_capture(path: str, keylogs: Sequence[str]) -> Plaintext:
    """Decrypt every TLS application-data record of the capture at `path` that the secrets in
    `keylogs` (SSLKEYLOGFILE files; several are merged) or the capture itself open.

    Raises `InputError` when tshark is missing or cannot read the capture at all, `UsageError`
    when a key log cannot be read or no key log holds a TLS secret.
    """
    tshark = find_tshark()
    if path == "-":
        raise InputError("TLS decryption needs a capture file: a capture on stdin can be read only once")
    with tempfile.TemporaryDirectory(prefix="mqtt-keepalive-tls-") as tmp:
        workdir = Path(tmp)
        keylog, warnings = merge_keylogs(keylogs, workdir / "keys.log")
        capture = readable_capture(path, workdir)
        with ThreadPoolExecutor(1) as pool:  # tshark starts slowly: ask while the run goes
            heuristics = pool.submit(tls_heuristics, tshark)
            plain = _run(tshark_command(tshark, capture, keylog, KNOWN_SUBDISSECTORS), path,
                         workdir, list(warnings))
            unknown = tuple(name for name in heuristics.result() if name not in KNOWN_SUBDISSECTORS)
        if not unknown:
            return plain
        plain.close()  # a heuristic this module does not know may have taken records: again
        return _run(tshark_command(tshark, capture, keylog, KNOWN_SUBDISSECTORS + unknown), path,
                    workdir, list(warnings))


def find_tshark() -> str:
    """The tshark to run; `InputError` with what to install when there is none.

    With the `tshark` extra installed, pyshark finds it: on PATH, and also where Wireshark's
    installers put it without touching PATH (Program Files on Windows, Wireshark.app on macOS) or
    where pyshark's own `config.ini` says. That is the part of pyshark this tool needs; running
    tshark and reading its output is done here (see the module docstring).
    """
    try:
        from pyshark.tshark.tshark import get_process_path
    except ImportError:
        found = shutil.which(TSHARK)
    else:
        try:
            found = get_process_path()
        except Exception:  # pyshark's TSharkNotFoundException, or its config.ini unreadable
            found = shutil.which(TSHARK)
    if found is None:
        raise InputError(INSTALL_HINT)
    return found


def tshark_command(tshark: str, capture: str, keylog: Path | None,
                   subdissectors: Iterable[str]) -> list[str]:
    """The tshark command line that prints, per frame with plaintext or protected records,
    `frame<TAB>lengths<TAB>content types<TAB>hex,hex,...` (a TLS 1.3 protected record shows its
    inner content type only when it was decrypted)."""
    command = [tshark, "-n", "-r", capture,
               "-o", "tls.desegment_ssl_records:TRUE", "-o", "tcp.desegment_tcp_streams:TRUE"]
    if keylog is not None:
        command += ["-o", f"tls.keylog_file:{keylog}"]
    for name in subdissectors:
        command += ["--disable-protocol", name]
    command += ["-Y", FIELDS_FILTER, "-T", "fields", "-e", "frame.number", "-e", "tls.record.length",
                "-e", "tls.record.content_type", "-e", "data.data",
                "-E", "occurrence=a", "-E", "aggregator=,", "-E", "separator=/t",
                "-E", "header=n", "-E", "quote=n"]
    return command


def _environment(workdir: Path) -> dict[str, str]:
    """tshark's environment: an empty personal configuration, so no profile changes the result."""
    config = workdir / "wireshark"
    config.mkdir(exist_ok=True)
    return {**os.environ, "WIRESHARK_CONFIG_DIR": str(config)}


def _run(command: list[str], path: str, workdir: Path, warnings: list[str]) -> Plaintext:
    """Run tshark and store the plaintext as it streams out."""
    store = tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES)  # noqa: SIM115 - owned by Plaintext
    index: dict[int, tuple[Span, ...]] = {}
    failed: dict[int, int] = {}
    with open(workdir / "stderr.txt", "w+", encoding="utf-8", errors="replace") as errors:
        try:
            process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                       stderr=errors, env=_environment(workdir), text=True,
                                       encoding="ascii", errors="replace")
        except OSError as exc:
            store.close()
            raise InputError(f"cannot run tshark: {exc.strerror or exc}") from None
        assert process.stdout is not None
        with process:
            for frame_no, records, undecrypted in parse_fields(process.stdout):
                if undecrypted:
                    failed[frame_no] = undecrypted
                if not records:
                    continue
                spans = []
                for record in records:
                    spans.append(Span(store.tell(), len(record)))
                    store.write(record)
                index[frame_no] = tuple(spans)
        errors.seek(0)
        message = tshark_message(errors.read())
    if process.returncode != 0:
        if not index:
            store.close()
            raise InputError(f"tshark could not read {path}: {message or f'exit code {process.returncode}'}")
        warnings.append(f"tshark stopped early ({message or f'exit code {process.returncode}'}): "
                        "TLS plaintext after that point is missing")
    return Plaintext(index, store, tuple(warnings), failed)


def parse_fields(lines: Iterable[str]) -> Iterator[tuple[int, list[bytes], int]]:
    """`frame<TAB>lengths<TAB>content types<TAB>hex[,hex...]` lines as (frame number, plaintext of
    each record, records not decrypted). Every record has a length; a record in the clear, and a
    protected one tshark decrypted, a content type: a record with a length and no content type
    is protected and was not decrypted."""
    for line in lines:
        number, lengths, types, values = (line.rstrip("\r\n").split("\t") + ["", "", ""])[:4]
        if not number.isdigit():
            continue
        records = [bytes.fromhex(value) for value in values.split(",") if value]
        undecrypted = max(0, _count(lengths) - _count(types))
        if records or undecrypted:
            yield int(number), records, undecrypted


def _count(values: str) -> int:
    return len([value for value in values.split(",") if value])


def tshark_message(stderr: str) -> str:
    """tshark's own complaint, without the root warning it prints on every run."""
    lines = [line.strip() for line in stderr.splitlines()
             if line.strip() and "could be dangerous" not in line]
    return "; ".join(lines)[:500]


# --- key logs --------------------------------------------------------------------------------------


def merge_keylogs(keylogs: Sequence[str], into: Path) -> tuple[Path | None, list[str]]:
    """One key log file from several (tshark reads one), and warnings about files with no secret.

    None when no key log is given (the capture's own secrets, if any, still apply). Raises
    `UsageError` when a file cannot be read, or when none of them holds a single secret (a wrong
    file given as key log, such as a certificate or a private key, must not pass for "no keys").
    """
    if not keylogs:
        return None, []
    warnings: list[str] = []
    secrets = 0
    with open(into, "w", encoding="ascii", errors="replace", newline="\n") as out:
        for name in keylogs:
            count = 0
            for line in _keylog_lines(name):
                if line.split(" ", 1)[0] in KEY_LABELS:
                    out.write(line + "\n")
                    count += 1
            if count == 0:
                warnings.append(f"{name}: no TLS secret in this key log (expected SSLKEYLOGFILE "
                                "lines such as CLIENT_RANDOM or CLIENT_TRAFFIC_SECRET_0)")
            secrets += count
    if secrets == 0:
        raise UsageError("; ".join(warnings))
    return into, warnings


def _keylog_lines(name: str) -> list[str]:
    """The stripped lines of one key log; `UsageError` when it cannot be read."""
    try:
        data = Path(name).read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read the TLS key log {name}: {exc.strerror or exc}") from None
    return [line.strip() for line in data.decode("ascii", errors="replace").splitlines()]


# --- the capture -----------------------------------------------------------------------------------


def readable_capture(path: str, workdir: Path) -> str:
    """A path tshark can read: bz2- and xz-compressed captures (which this tool reads and tshark
    does not) are decompressed into `workdir`; frame numbers do not change."""
    from analyzer.sources.files import _kind  # the same content sniffing the reader uses

    try:
        with open(path, "rb") as fh:
            kind = _kind(fh.read(28))
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror or exc}") from None
    opener = {"bz2": bz2.open, "xz": lzma.open}.get(kind or "")
    if opener is None:
        return path
    target = workdir / "capture"
    try:
        with opener(path, "rb") as source, open(target, "wb") as out:
            shutil.copyfileobj(source, out, 1 << 20)
    except (OSError, EOFError, lzma.LZMAError) as exc:
        raise InputError(f"cannot decompress {path}: {exc}") from None
    return str(target)


# --- what tshark could hand the plaintext to ------------------------------------------------------


@functools.cache
def tls_heuristics(tshark: str) -> tuple[str, ...]:
    """The protocols of the installed tshark's TLS heuristics (`-G heuristic-decodes`, table
    `tls`), asked once per process; empty when tshark cannot say."""
    names = []
    for line in _dump(tshark, "heuristic-decodes").splitlines():
        table, name = (line.split("\t") + [""])[:2]
        if table == "tls" and name and name not in ("tls", "data"):
            names.append(name)
    return tuple(names)


def tls_port_dissectors(tshark: str) -> tuple[str, ...]:
    """The dissectors of the installed tshark's `tls.port` table (`-G decodes`), for the test that
    keeps `KNOWN_SUBDISSECTORS` up to date."""
    names = []
    for line in _dump(tshark, "decodes").splitlines():
        table, _, handle = (line.split("\t") + ["", ""])[:3]
        if table == "tls.port" and handle:
            names.append(handle)
    return tuple(dict.fromkeys(names))


def _dump(tshark: str, what: str) -> str:
    """`tshark -G what`, or "" when it fails (the known list still applies)."""
    with tempfile.TemporaryDirectory(prefix="mqtt-keepalive-tshark-") as tmp:
        try:
            result = subprocess.run([tshark, "-G", what], capture_output=True, text=True,
                                    errors="replace", env=_environment(Path(tmp)), timeout=60)
        except (OSError, subprocess.TimeoutExpired):
            return ""
    return result.stdout if result.returncode == 0 else ""

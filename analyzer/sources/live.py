"""`-i IFACE`: capture from a network interface on Linux, without per-packet dissection.

scapy's `L2ListenSocket` opens the AF_PACKET socket for a named interface (and compiles and attaches
the kernel BPF filter through libpcap); for `any` we open an unbound SOCK_DGRAM packet socket
ourselves (scapy has no `any`), compile the filter for raw IP (what such a socket's filter sees) and
rebuild the Linux cooked (SLL, link type 113) header libpcap would write. Frames are then read with
plain non-blocking `recvmsg` calls on the socket, nanosecond kernel timestamps from SO_TIMESTAMPNS,
and never dissected: the engine decodes the bytes itself.

Like libpcap, a frame that loopback shows twice (outgoing, then incoming) is kept once. Kernel drop
counts come from the PACKET_STATISTICS socket option (the counters reset on each read, so they
are summed here).
"""

from __future__ import annotations

import os
import select
import socket
import struct
from typing import Any

from analyzer.errors import InputError
from analyzer.sources.stream import LiveFrame

ETH_P_ALL = 0x0003
SOL_PACKET = 263
PACKET_AUXDATA = 8
PACKET_STATISTICS = 6
SO_TIMESTAMPNS = 35
SO_ATTACH_FILTER = 26
SO_RCVBUFFORCE = 33
PACKET_OUTGOING = 4
ARPHRD_ETHER, ARPHRD_LOOPBACK, ARPHRD_NONE = 1, 772, 65534
TP_STATUS_VLAN_VALID, TP_STATUS_VLAN_TPID_VALID = 0x10, 0x40
LINKTYPE_ETHERNET, LINKTYPE_RAW, LINKTYPE_LINUX_SLL = 1, 101, 113
DLT_RAW_LINUX = 12
SNAPLEN = 262_144
RCVBUF = 32 << 20
BATCH = 2048

LINKTYPE_OF_ARPHRD = {ARPHRD_ETHER: LINKTYPE_ETHERNET, ARPHRD_LOOPBACK: LINKTYPE_ETHERNET,
                      ARPHRD_NONE: LINKTYPE_RAW}


def capture_filter(ports: list[int] | tuple[int, ...], bpf: str | None) -> str:
    """`tcp port A or tcp port B`, and `(EXPR)` from --bpf."""
    expr = " or ".join(f"tcp port {int(p)}" for p in ports)
    if bpf:
        expr = f"({expr}) and ({bpf})"
    return expr


def interfaces() -> list[str]:
    """The interfaces that exist (`/sys/class/net`), sorted; `any` is always possible."""
    try:
        return sorted(os.listdir("/sys/class/net"))
    except OSError:
        try:
            from scapy.interfaces import get_if_list

            return sorted(get_if_list())
        except Exception:  # noqa: BLE001 - only used for an error message
            return []


def _arphrd(iface: str) -> int | None:
    try:
        with open(f"/sys/class/net/{iface}/type") as fh:
            return int(fh.read().strip())
    except (OSError, ValueError):
        return None


def _permission(iface: str) -> InputError:
    return InputError(f"no permission to capture on {iface}: capturing needs CAP_NET_RAW "
                      "(run as root, or grant it: sudo setcap cap_net_raw,cap_net_admin=eip "
                      "$(readlink -f $(which python3)))")


class InterfaceSource:
    """A live capture on one interface (or `any`)."""

    kind = "interface"

    def __init__(self, iface: str, ports: list[int] | tuple[int, ...], bpf: str | None = None) -> None:
        self.iface = iface
        self.path = f"{iface} (live)"
        self.filter = capture_filter(ports, bpf)
        self.linktype = LINKTYPE_LINUX_SLL
        self.frames = 0
        self.received = 0
        self.kernel_drops = 0
        self._scapy: Any = None
        self._sock: socket.socket | None = None
        self._lo_index: int | None = None

    # -- opening ------------------------------------------------------------------------------

    def start(self) -> None:
        if os.name != "posix" or not hasattr(socket, "AF_PACKET"):
            raise InputError("live capture (-i) is supported on Linux only; pipe a capture in with -r -")
        if self.iface == "any":
            self._open_any()
        else:
            self._open_named()
        sock = self._sock
        assert sock is not None
        try:
            sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, RCVBUF)
        except OSError:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF)
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        sock.setsockopt(SOL_PACKET, PACKET_AUXDATA, 1)
        sock.setblocking(False)
        try:
            self._lo_index = socket.if_nametoindex("lo")
        except OSError:
            self._lo_index = None
        self._stats()  # reset the counters: drops before now are not ours

    def _open_named(self) -> None:
        known = interfaces()
        if known and self.iface not in known:
            raise InputError(f"no interface {self.iface!r}; interfaces: {', '.join(known + ['any'])}")
        arphrd = _arphrd(self.iface)
        linktype = LINKTYPE_OF_ARPHRD.get(arphrd) if arphrd is not None else LINKTYPE_ETHERNET
        if linktype is None:
            raise InputError(f"{self.iface}: link type ARPHRD {arphrd} is not supported; "
                             "capture with -i any, or tcpdump -w - piped into -r -")
        self.linktype = linktype
        self._quiet_scapy()
        try:
            from scapy.arch.linux import L2ListenSocket
            from scapy.error import Scapy_Exception
        except ImportError as exc:  # pragma: no cover - scapy is a dependency
            raise InputError(f"scapy is needed for -i: {exc}") from None
        try:
            self._scapy = L2ListenSocket(iface=self.iface, filter=self.filter, promisc=False)
        except PermissionError:
            raise _permission(self.iface) from None
        except Scapy_Exception as exc:
            raise InputError(f"bad capture filter {self.filter!r}: {_one_line(exc)}") from None
        except ValueError as exc:  # scapy: interface not found
            raise InputError(f"{_one_line(exc)}; interfaces: {', '.join(known + ['any'])}") from None
        except OSError as exc:
            if exc.errno in (1, 13):
                raise _permission(self.iface) from None
            raise InputError(f"cannot capture on {self.iface}: {exc.strerror or exc}") from None
        self._sock = self._scapy.ins

    def _open_any(self) -> None:
        self._quiet_scapy()
        try:
            sock = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(ETH_P_ALL))
        except PermissionError:
            raise _permission("any") from None
        try:
            _attach(sock, self.filter, DLT_RAW_LINUX)
        except InputError:
            sock.close()
            raise
        # frames queued before the filter was attached are unfiltered: drop them
        sock.setblocking(False)
        try:
            while True:
                sock.recv(1)
        except BlockingIOError:
            pass
        self._sock = sock
        self.linktype = LINKTYPE_LINUX_SLL

    @staticmethod
    def _quiet_scapy() -> None:
        import logging

        logging.getLogger("scapy").setLevel(logging.ERROR)

    # -- reading ------------------------------------------------------------------------------

    def poll(self, timeout_s: float) -> list[LiveFrame] | None:
        """Frames captured within `timeout_s` (at most BATCH at once, so ticks keep coming)."""
        sock = self._sock
        assert sock is not None
        out: list[LiveFrame] = []
        recvmsg = sock.recvmsg
        anc = socket.CMSG_SPACE(16) + socket.CMSG_SPACE(20)
        linktype = self.linktype
        cooked = self.iface == "any"
        lo = self._lo_index
        for _ in range(2):
            try:
                while len(out) < BATCH:
                    data, ancdata, _flags, addr = recvmsg(SNAPLEN, anc)
                    self.received += 1
                    if addr[2] == PACKET_OUTGOING and (addr[3] == ARPHRD_LOOPBACK or
                                                       (lo is not None and addr[0] == "lo")):
                        continue  # loopback shows each frame twice; keep the incoming copy
                    ts_ns = 0
                    vlan = wire_len = None
                    for level, kind, value in ancdata:
                        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
                            sec, nsec = struct.unpack("qq", value[:16])
                            ts_ns = sec * 1_000_000_000 + nsec
                        elif level == SOL_PACKET and kind == PACKET_AUXDATA:
                            status, wire_len, _snap, _mac, _net, tci, tpid = struct.unpack("IIIHHHH", value[:20])
                            if tci or status & TP_STATUS_VLAN_VALID:
                                vlan = (tpid if status & TP_STATUS_VLAN_TPID_VALID else 0x8100, tci)
                    wire = len(data) if wire_len is None else wire_len
                    if cooked:
                        hw = addr[4][:8]
                        data = struct.pack("!HHH", addr[2], addr[3], len(hw)) + hw.ljust(8, b"\0") \
                            + struct.pack("!H", addr[1]) + data
                        wire += 16
                    elif vlan is not None and linktype == LINKTYPE_ETHERNET:
                        data = data[:12] + struct.pack("!HH", *vlan) + data[12:]
                        wire += 4
                    if not ts_ns:
                        import time

                        ts_ns = time.time_ns()
                    out.append((ts_ns, linktype, data, wire))
            except BlockingIOError:
                pass
            except OSError as exc:
                if exc.errno == 100:  # ENETDOWN: the interface went down
                    raise InputError(f"{self.iface}: the interface went down") from None
                raise InputError(f"capture on {self.iface} failed: {exc.strerror or exc}") from None
            if out or timeout_s <= 0:
                break
            ready, _, _ = select.select([sock], [], [], timeout_s)
            if not ready:
                break
        self.frames += len(out)
        return out

    def _stats(self) -> tuple[int, int]:
        if self._sock is None:
            return 0, 0
        try:
            packets, drops = struct.unpack("II", self._sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, 8))
        except OSError:
            return 0, 0
        self.kernel_drops += drops
        return packets, drops

    def dropped(self) -> int | None:
        """Frames the kernel dropped since the capture started (its buffer was full)."""
        self._stats()
        return self.kernel_drops

    def stats(self) -> str:
        drops = self.dropped()
        return f"{self.frames} frames captured on {self.iface}, {drops} dropped by the kernel"

    def close(self) -> None:
        if self._scapy is not None:
            self._scapy.close()
        elif self._sock is not None:
            self._sock.close()
        self._sock = None


def _attach(sock: socket.socket, expr: str, linktype: int) -> None:
    """Compile `expr` for `linktype` with libpcap (through scapy) and attach it to `sock`."""
    from scapy.arch.common import compile_filter
    from scapy.error import Scapy_Exception
    from scapy.libs.structures import sock_fprog

    try:
        bp = compile_filter(expr, linktype=linktype)
    except (Scapy_Exception, ImportError, OSError) as exc:
        raise InputError(f"bad capture filter {expr!r}: {_one_line(exc)}") from None
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, sock_fprog(bp.bf_len, bp.bf_insns))


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__

"""RTP ports: the even ports of one range on one local address, and binding them.

No RTCP socket is opened: RTP ports are even and the odd port above stays unused.
"""

from __future__ import annotations

import functools
import ipaddress
import socket

__all__ = ["MediaPortsExhausted", "PortAllocator", "bind_rtp_socket", "ip_literal"]

_DSCP_EXPEDITED_FORWARDING = 46 << 2


class MediaPortsExhausted(OSError):
    """Every RTP port of the range is in use."""


class PortAllocator:
    """Hands out the even ports of ``[first, last]`` on one local address.

    Ports rotate rather than being reused at once, so late packets of an ended
    call do not land in a new one.
    """

    __slots__ = ("host", "first", "last", "sessions_open", "_ports", "_next", "_in_use")

    def __init__(self, host: str, first: int, last: int) -> None:
        if not 0 < first <= last <= 65535:
            raise ValueError(f"invalid RTP port range {first}-{last}")
        start = first + (first & 1)
        self._ports = range(start, last + 1, 2)
        if not self._ports:
            raise ValueError(f"RTP port range {first}-{last} holds no even port")
        self.host = host
        self.first = first
        self.last = last
        self._next = 0
        self._in_use: set[int] = set()
        # RtpSessions opened on these ports and not yet closed (a port is released a loop
        # turn after its session closes, when the socket is gone).
        self.sessions_open = 0

    @property
    def capacity(self) -> int:
        return len(self._ports)

    @property
    def in_use(self) -> int:
        return len(self._in_use)

    def reserve(self) -> int:
        """The next free even port, marked in use until :meth:`release`."""
        ports = self._ports
        for _ in range(len(ports)):
            port = ports[self._next]
            self._next = (self._next + 1) % len(ports)
            if port not in self._in_use:
                self._in_use.add(port)
                return port
        raise MediaPortsExhausted(f"all {len(ports)} RTP ports {self.first}-{self.last} are in use")

    def release(self, port: int) -> None:
        self._in_use.discard(port)


@functools.lru_cache(maxsize=1024)  # every leg opened names one of a few addresses
def ip_literal(host: str) -> str:
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        raise ValueError(f"RTP address must be an IP literal, got {host!r}") from None


def bind_rtp_socket(host: str, port: int) -> socket.socket:
    """A non-blocking UDP socket on ``host:port``, marked Expedited Forwarding (best effort)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        sock.setblocking(False)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    try:
        if family == socket.AF_INET:
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_TOS, _DSCP_EXPEDITED_FORWARDING)
        else:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_TCLASS, _DSCP_EXPEDITED_FORWARDING)
    except OSError:
        pass  # marking is best effort
    return sock

"""The PROXY protocol on a listening socket: a gate protocol in front of the server's own.

From a trusted peer the gate reads the PROXY header (v1 or v2, :mod:`.proxy`), remembers the
source it names for that TCP connection, and hands the transport and any bytes after the
header to the server's protocol (``transport.set_protocol``), which from then on reads the
socket directly: the gate costs nothing after the first bytes. From any other peer the
handover happens at once, before a byte is read. A trusted peer that sends no PROXY header
within ``timeout`` seconds, or a malformed one, is dropped.

:class:`ClientResolver` is what the servers call when they need a request's client IP: the
source a PROXY header named, else the forwarding headers from a trusted peer
(:meth:`TrustedProxies.client`), else the peer.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from .proxy import NEED_MORE, NOT_PROXY, V2_MAX, ProxyError, TrustedProxies, parse_header

ProtocolFactory = Callable[[], Any]
HEADER_TIMEOUT_S = 5.0


def peer_ip(peer: Any) -> str:
    """A peer address tuple's IP, IPv4-mapped IPv6 unwrapped (the rate-limit key form)."""
    host = str(peer[0]) if isinstance(peer, tuple) and peer else "unknown"
    return host.removeprefix("::ffff:")


class ClientResolver:
    """Client IPs behind trusted proxies; remembers PROXY sources per TCP peer address.

    A keep-alive connection asks for its client once per request, so an entry lives as long
    as its connection may: it is replaced when a new connection from the same peer address
    (the balancer's IP and port) brings a PROXY header, dropped if the gate sees the
    connection end before its hand-over, and at most ``max_entries`` are kept (the
    oldest dropped first).
    """

    def __init__(self, proxies: TrustedProxies, max_entries: int = 65_536) -> None:
        self.proxies = proxies
        self.max_entries = max_entries
        self._sources: OrderedDict[Any, str] = OrderedDict()

    def remember(self, peer: Any, source: str) -> None:
        """Record the client a PROXY header named for the connection from ``peer``."""
        self._sources[peer] = source
        self._sources.move_to_end(peer)
        while len(self._sources) > self.max_entries:
            self._sources.popitem(last=False)

    def forget(self, peer: Any) -> None:
        """Drop what was remembered for ``peer`` (its connection ended)."""
        self._sources.pop(peer, None)

    def __len__(self) -> int:
        return len(self._sources)

    def client_of(self, peer: Any, headers: Any) -> str:
        """The client IP of a request on the connection from ``peer`` with ``headers``
        (a multidict: every ``X-Forwarded-For``/``Forwarded`` line counts)."""
        source = self._sources.get(peer)
        if source is not None:
            return source
        ip = peer_ip(peer)
        if not self.proxies.trusts(ip):
            return ip
        return self.proxies.client(
            ip, headers.getall("X-Forwarded-For", []), headers.getall("Forwarded", [])
        )


def _feed(protocol: Any, data: bytes) -> None:
    if isinstance(protocol, asyncio.BufferedProtocol):
        view = memoryview(data)
        while view:
            buf = memoryview(protocol.get_buffer(len(view)))
            n = min(len(buf), len(view))
            buf[:n] = view[:n]
            protocol.buffer_updated(n)
            view = view[n:]
    else:
        protocol.data_received(data)


class ProxyGate(asyncio.Protocol):
    """One accepted connection until its server protocol takes over (see the module)."""

    def __init__(self, inner: ProtocolFactory, resolver: ClientResolver, timeout: float) -> None:
        self.inner = inner
        self.resolver = resolver
        self.timeout = timeout
        self.transport: Any = None
        self.peer: Any = None
        self.buffer = b""
        self.timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: Any) -> None:  # uvloop's are not asyncio classes
        self.transport = transport
        self.peer = transport.get_extra_info("peername")
        if not self.resolver.proxies.trusts(peer_ip(self.peer)):
            self._hand_over(b"")
            return
        self.timer = asyncio.get_running_loop().call_later(self.timeout, transport.abort)

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        self.buffer += data
        try:
            kind, source, used = parse_header(self.buffer)
        except ProxyError:
            self.transport.abort()
            return
        if kind == NEED_MORE:
            if len(self.buffer) > V2_MAX:
                self.transport.abort()
            return
        if kind != NOT_PROXY and source is not None:
            self.resolver.remember(self.peer, source)
        self._hand_over(self.buffer[used:])

    def _hand_over(self, rest: bytes) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        transport = self.transport
        assert transport is not None
        protocol = self.inner()
        transport.set_protocol(protocol)
        protocol.connection_made(transport)
        self.buffer = b""
        if rest:
            _feed(protocol, rest)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.timer is not None:
            self.timer.cancel()
        self.resolver.forget(self.peer)


def gated(
    inner: ProtocolFactory, resolver: ClientResolver, timeout: float = HEADER_TIMEOUT_S
) -> ProtocolFactory:
    """A protocol factory that puts a :class:`ProxyGate` in front of ``inner``'s."""
    return lambda: ProxyGate(inner, resolver, timeout)

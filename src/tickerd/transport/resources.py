"""File descriptors: the open-file limit, and an accept loop that still answers at that limit.

Theory of operation
-------------------
At the process's open-file limit ``accept()`` fails with EMFILE and the event loop's own
accept loop leaves the connection in the backlog: the client waits, then times out, and
nothing says why. :class:`Listener` runs the accept loop itself and keeps one spare
descriptor (a handle on ``/dev/null``). When ``accept()`` fails for want of descriptors it
closes the spare, accepts the waiting connection with it, writes a 503 (the same -1008 body
as a full server), shuts its side down and keeps the socket a moment so the client reads the
answer instead of a reset; then it reopens the spare and accepts again. While it lingers,
accepting pauses: one refusal at a time, no busy loop. Each such refusal is counted and
logged at most once per :data:`LOG_EVERY_S`.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import resource
import socket
import ssl
import time
from collections.abc import Callable
from typing import Any

import orjson

from ..errors import BinanceError, ErrorCode

log = logging.getLogger("tickerd.server")

# Descriptors kept for what is not a client socket: listening sockets, the store, logs,
# the event loop's own, the spare below, feeds' outgoing connections.
RESERVED_FDS = 64
LOG_EVERY_S = 10.0
LINGER_S = 0.5  # how long a refused socket is kept for the client to read the 503
PAUSE_S = 0.1  # accepting pauses this long when not even the spare can be had
TLS_HANDSHAKE_TIMEOUT_S = 10.0
ACCEPT_BATCH = 64  # connections accepted per readiness callback, so others get a turn
_NO_FDS = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)


def raise_fd_limit() -> tuple[int, int]:
    """Raise the soft RLIMIT_NOFILE to the hard limit; return the (soft, hard) now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        # ValueError: e.g. an unlimited hard limit the kernel caps lower.
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return soft, hard


def fd_warning(max_connections: int, http_sockets: int, soft_limit: int) -> str | None:
    """One line when ``max_connections`` WebSocket connections cannot fit in the fd limit
    next to ``http_sockets`` HTTP sockets and :data:`RESERVED_FDS`; None when they fit."""
    room = soft_limit - RESERVED_FDS - http_sockets
    if max_connections <= room:
        return None
    return (
        f"--max-connections {max_connections} exceeds what the open-file limit allows: "
        f"RLIMIT_NOFILE is {soft_limit}, which leaves about {max(room, 0)} WebSocket "
        f"connections after {http_sockets} HTTP sockets and {RESERVED_FDS} reserved; "
        f"past that, handshakes are answered 503"
    )


def soft_fd_limit() -> int:
    """The soft RLIMIT_NOFILE in force."""
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


class Throttle:
    """Counts events and logs a WARNING line about them at most once per ``every_s``."""

    def __init__(self, every_s: float = LOG_EVERY_S) -> None:
        self.every_s = every_s
        self.count = 0  # every event, logged or not
        self._unlogged = 0
        self._next_at = 0.0

    def event(self, message: str, *args: object) -> None:
        """Count one event; log ``message`` (plus how many went unlogged) if it is time."""
        self.count += 1
        self._unlogged += 1
        now = time.monotonic()
        if now >= self._next_at:
            log.warning(message + " (%d since the last such line)", *args, self._unlogged)
            self._unlogged = 0
            self._next_at = now + self.every_s


def refusal_bytes() -> bytes:
    """A complete HTTP 503 answer with Binance's -1008 body, closing the connection."""
    body = orjson.dumps(BinanceError.of(ErrorCode.SERVER_BUSY, status=503).to_wire())
    head = (
        "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nRetry-After: 1\r\nConnection: close\r\n\r\n"
    )
    return head.encode() + body


def _open_spare() -> int | None:
    try:
        return os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None


class Listener(asyncio.AbstractServer):
    """Listening TCP sockets with their own accept loop and a spare descriptor (see above).

    It stands where ``loop.create_server``'s server would (``sockets``, ``close()``,
    ``wait_closed()``). Each accepted socket is handed to ``factory`` through
    ``loop.connect_accepted_socket`` (with ``ssl`` when given; a TLS handshake not done in
    :data:`TLS_HANDSHAKE_TIMEOUT_S` closes the socket).
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        factory: Callable[[], asyncio.BaseProtocol],
        socks: list[socket.socket],
        ssl_context: ssl.SSLContext | None = None,
        what: str = "connections",
    ) -> None:
        self.loop = loop
        self.factory = factory
        self.sockets = socks
        self.ssl = ssl_context
        self.what = what
        self.refused = Throttle()
        self._spare = _open_spare()
        self._closed = False
        self._paused = False
        self._refusal = refusal_bytes()
        self._pending: dict[asyncio.Task[Any], socket.socket] = {}
        self._watch()

    def _watch(self) -> None:
        for sock in self.sockets:
            self.loop.add_reader(sock.fileno(), self._accept, sock)

    def get_loop(self) -> asyncio.AbstractEventLoop:
        """The loop it accepts on."""
        return self.loop

    def is_serving(self) -> bool:
        """Whether it still accepts."""
        return not self._closed

    async def start_serving(self) -> None:
        """Nothing: it accepts from construction on."""

    async def serve_forever(self) -> None:
        """Wait until closed."""
        while not self._closed:
            await asyncio.sleep(1.0)

    def close(self) -> None:
        """Stop accepting and close the listening socket (accepted connections stay)."""
        if self._closed:
            return
        self._closed = True
        for sock in self.sockets:
            if not self._paused:
                self.loop.remove_reader(sock.fileno())
            sock.close()
        if self._spare is not None:
            os.close(self._spare)
            self._spare = None

    async def wait_closed(self) -> None:
        """Wait for connections accepted but not yet handed over."""
        if self._pending:
            await asyncio.gather(*self._pending, return_exceptions=True)

    def _accept(self, sock: socket.socket) -> None:
        for _ in range(ACCEPT_BATCH):
            try:
                conn, _addr = sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in _NO_FDS:
                    self._out_of_fds(sock)
                    return
                continue  # ECONNABORTED and the like: that client is gone, take the next
            conn.setblocking(False)
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self.ssl is None:
                coro = self.loop.connect_accepted_socket(self.factory, conn)
            else:
                coro = self.loop.connect_accepted_socket(
                    self.factory, conn, ssl=self.ssl, ssl_handshake_timeout=TLS_HANDSHAKE_TIMEOUT_S
                )
            task = self.loop.create_task(coro)
            self._pending[task] = conn
            task.add_done_callback(self._handed_over)

    def _handed_over(self, task: asyncio.Task[Any]) -> None:
        conn = self._pending.pop(task)
        if task.cancelled() or task.exception() is not None:
            conn.close()  # the TLS handshake failed or timed out, or the peer left

    def _pause(self, seconds: float) -> None:
        if not self._paused and not self._closed:
            self._paused = True
            for sock in self.sockets:
                self.loop.remove_reader(sock.fileno())
            self.loop.call_later(seconds, self._resume)

    def _resume(self) -> None:
        if self._spare is None:
            self._spare = _open_spare()
        if self._closed:
            return
        self._paused = False
        self._watch()

    def _out_of_fds(self, sock: socket.socket) -> None:
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        if self._spare is None:
            self._spare = _open_spare()
            self._pause(PAUSE_S)
            return
        os.close(self._spare)
        self._spare = None
        try:
            conn, _addr = sock.accept()
        except OSError:
            self._pause(PAUSE_S)
            return
        self.refused.event(
            "open-file limit reached (RLIMIT_NOFILE %d): %s answered 503", soft, self.what
        )
        if self.ssl is not None:  # no answer can be written before a TLS handshake
            conn.close()
            self._pause(0.0)
            return
        conn.setblocking(False)
        try:
            conn.send(self._refusal)
            conn.shutdown(socket.SHUT_WR)
        except OSError:
            conn.close()
            self._pause(0.0)
            return
        fd = conn.fileno()

        def drain() -> None:
            try:
                if conn.recv(65536):
                    return
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                pass
            finish()  # the client closed (or failed): done before the linger ends

        def finish() -> None:
            if conn.fileno() >= 0:
                self.loop.remove_reader(fd)
                conn.close()

        self.loop.add_reader(fd, drain)
        self.loop.call_later(LINGER_S, finish)
        self._pause(LINGER_S)  # after finish(): the spare is reopened once the socket is gone


async def listen(
    loop: asyncio.AbstractEventLoop,
    factory: Callable[[], asyncio.BaseProtocol],
    host: str,
    port: int,
    *,
    backlog: int = 4096,
    ssl_context: ssl.SSLContext | None = None,
    what: str = "WebSocket handshakes",
    sock: socket.socket | None = None,
) -> Listener:
    """Bind ``host:port`` (SO_REUSEADDR) and accept into ``factory`` through a :class:`Listener`;
    with ``sock`` (a listening socket handed over, e.g. a reuseport worker's) accept on it."""
    if sock is not None:
        sock.listen(backlog)
        sock.setblocking(False)
        return Listener(loop, factory, [sock], ssl_context, what)
    infos = await loop.getaddrinfo(
        host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )
    socks: list[socket.socket] = []
    bound = 0
    try:
        for family, kind, proto, _name, address in dict.fromkeys(infos):
            sock = socket.socket(family, kind, proto)
            socks.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            if bound:  # port 0: every address on the one port the first was given
                address = (address[0], bound, *address[2:])
            sock.bind(address)
            bound = sock.getsockname()[1]
            sock.listen(backlog)
            sock.setblocking(False)
    except BaseException:
        for sock in socks:
            sock.close()
        raise
    return Listener(loop, factory, socks, ssl_context, what)

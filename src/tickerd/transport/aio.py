"""aiohttp plumbing shared by the HTTP surfaces: REST, push ingest and the control plane."""

from __future__ import annotations

import asyncio
import hmac
import socket
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from aiohttp.http_parser import RawRequestMessage
from aiohttp.streams import StreamReader
from aiohttp.web_protocol import RequestHandler

SHUTDOWN_TIMEOUT_S = 2.0
KEEPALIVE_TIMEOUT_S = 75.0

RequestFactory = Callable[
    [RawRequestMessage, StreamReader, RequestHandler, Any, "asyncio.Task[None]"],
    web.BaseRequest,
]


def netloc(host: str, port: int) -> str:
    """``host:port`` as a URL writes it (an IPv6 host in brackets)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class Site:
    """One aiohttp runner listening on one port: what each HTTP surface starts and stops."""

    def __init__(self) -> None:
        self._runner: web.BaseRunner | None = None
        self._port: int | None = None

    @property
    def running(self) -> bool:
        """Whether it listens."""
        return self._runner is not None

    @property
    def port(self) -> int:
        """The port listened on (useful when started on port 0)."""
        assert self._port is not None, "not started"
        return self._port

    async def listen(
        self,
        runner: web.BaseRunner,
        host: str,
        port: int,
        *,
        sock: socket.socket | None = None,
        wrap: ProtocolWrapper | None = None,
        **site: Any,
    ) -> None:
        """Set ``runner`` up and listen on ``host:port`` (or on ``sock``, a listening socket
        handed over; ``wrap`` puts a protocol in front of aiohttp's: the PROXY protocol gate).

        On failure (e.g. the port is taken) the runner is cleaned up before the error
        propagates.
        """
        await runner.setup()
        try:
            if sock is None and wrap is None:
                await web.TCPSite(runner, host, port, reuse_address=True, **site).start()
            else:
                if sock is None:
                    sock = socket.create_server((host, port), family=_family(host), backlog=128)
                await _HandedSite(runner, sock, wrap, **site).start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self._port = int(runner.addresses[0][1])

    async def serve(
        self,
        handler: Callable[[web.BaseRequest], Awaitable[web.StreamResponse]],
        host: str,
        port: int,
        *,
        max_body_bytes: int,
        sock: socket.socket | None = None,
        wrap: ProtocolWrapper | None = None,
        **site: Any,
    ) -> None:
        """Listen with aiohttp's low-level server: one handler for every request, bodies
        bounded, no access log, idle keep-alive connections closed after a while."""
        server = web.Server(
            handler,
            request_factory=bounded_requests(max_body_bytes),
            access_log=None,
            lingering_time=0.0,  # a body left unread closes the connection, not drained
            keepalive_timeout=KEEPALIVE_TIMEOUT_S,
        )
        runner = web.ServerRunner(server, handle_signals=False, shutdown_timeout=SHUTDOWN_TIMEOUT_S)
        await self.listen(runner, host, port, sock=sock, wrap=wrap, **site)

    async def stop(self) -> None:
        """Stop listening and close the connections."""
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()


ProtocolWrapper = Callable[[Callable[[], Any]], Callable[[], Any]]


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


class _HandedSite(web.SockSite):
    """A site on a given listening socket, its protocol factory optionally wrapped."""

    def __init__(
        self, runner: web.BaseRunner, sock: socket.socket, wrap: ProtocolWrapper | None, **kw: Any
    ) -> None:
        super().__init__(runner, sock, **kw)
        self._wrap = wrap

    async def start(self) -> None:
        await web.BaseSite.start(self)
        server = self._runner.server
        assert server is not None
        factory: Callable[[], Any] = server if self._wrap is None else self._wrap(server)
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(factory, sock=self._sock, backlog=self._backlog)


def bounded_requests(max_body_bytes: int) -> RequestFactory:
    """A request factory for ``web.Server`` whose requests refuse bodies over the bound."""

    def make(
        message: RawRequestMessage,
        payload: StreamReader,
        protocol: RequestHandler,
        writer: Any,
        task: asyncio.Task[None],
    ) -> web.BaseRequest:
        loop = asyncio.get_running_loop()
        return web.BaseRequest(
            message, payload, protocol, writer, task, loop, client_max_size=max_body_bytes
        )

    return make


def bearer_matches(request: web.BaseRequest, token: bytes) -> bool:
    """Whether ``Authorization: Bearer <token>`` carries ``token`` (compared in constant time)."""
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(
        given.strip().encode("utf-8", "replace"), token
    )

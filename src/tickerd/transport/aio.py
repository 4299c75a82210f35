"""aiohttp plumbing shared by the HTTP surfaces: REST, push ingest and the control plane."""

from __future__ import annotations

import asyncio
import hmac
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

    async def listen(self, runner: web.BaseRunner, host: str, port: int, **site: Any) -> None:
        """Set ``runner`` up and listen on ``host:port``.

        On failure (e.g. the port is taken) the runner is cleaned up before the error
        propagates.
        """
        await runner.setup()
        try:
            await web.TCPSite(runner, host, port, reuse_address=True, **site).start()
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
        await self.listen(runner, host, port, **site)

    async def stop(self) -> None:
        """Stop listening and close the connections."""
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()


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

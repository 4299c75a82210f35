"""The REST server: aiohttp's low-level HTTP server underneath, the sans-I/O :class:`RestApi` on top.

https://developers.binance.com/docs/derivatives/usds-margined-futures/general-info

Every request, whatever its method and path, is one call of :meth:`RestApi.handle` with the
raw path, the raw query string, the peer's IP (the same rate-limit key the WebSocket server
uses, so both surfaces share one budget) and the server clock's time; the reply's status,
headers and body are written as they are. There is no router, middleware or access log.

Bounds: aiohttp refuses request lines and header fields over 8190 bytes; no request body is
ever read (``client_max_size`` is 1 KiB should anything try); a body left unread closes the
connection instead of being drained (``lingering_time`` 0); idle keep-alive connections are
closed after ``KEEPALIVE_TIMEOUT_S``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from aiohttp import web
from aiohttp.http_parser import RawRequestMessage
from aiohttp.streams import StreamReader
from aiohttp.web_protocol import RequestHandler

from ..clock import Clock
from ..config import Settings
from ..rest import RestApi, RestReply
from .ws import client_ip

log = logging.getLogger("tickerd.server")

CLIENT_MAX_SIZE = 1024
KEEPALIVE_TIMEOUT_S = 75.0
SHUTDOWN_TIMEOUT_S = 2.0


class HTTPServer:
    """Serves :class:`RestApi` over HTTP/1.1 on ``settings.host:settings.rest_port``."""

    def __init__(self, api: RestApi, clock: Clock, settings: Settings) -> None:
        self.api = api
        self.clock = clock
        self.settings = settings
        # What answers a request: the API itself, or the control plane's fault wrapper
        # while a fault aimed at REST clients is armed (swapped, so no fault costs nothing).
        self.handle: Callable[[str, str, str, str, int], RestReply] = api.handle
        self._runner: web.ServerRunner | None = None
        self._port: int | None = None

    @property
    def port(self) -> int:
        """The port listened on (useful when started on port 0)."""
        assert self._port is not None, "not started"
        return self._port

    async def start(self) -> None:
        """Listen on ``settings.host:settings.rest_port``."""
        server = web.Server(
            self._handle,
            request_factory=self._make_request,
            access_log=None,
            lingering_time=0.0,
            keepalive_timeout=KEEPALIVE_TIMEOUT_S,
        )
        runner = web.ServerRunner(server, handle_signals=False, shutdown_timeout=SHUTDOWN_TIMEOUT_S)
        await runner.setup()
        site = web.TCPSite(
            runner, self.settings.host, self.settings.rest_port, backlog=1024, reuse_address=True
        )
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self._port = int(runner.addresses[0][1])

    async def stop(self) -> None:
        """Stop listening and close the connections."""
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        url = request.rel_url
        transport = request.transport
        peer = transport.get_extra_info("peername") if transport is not None else None
        reply = self.handle(
            request.method,
            url.raw_path,
            url.raw_query_string,
            client_ip(peer),
            self.clock.now_ms(),
        )
        return web.Response(status=reply.status, body=reply.body, headers=reply.headers)

    def _make_request(
        self,
        message: RawRequestMessage,
        payload: StreamReader,
        protocol: RequestHandler,
        writer: Any,
        task: asyncio.Task[None],
    ) -> web.BaseRequest:
        return web.BaseRequest(
            message,
            payload,
            protocol,
            writer,
            task,
            asyncio.get_running_loop(),
            client_max_size=CLIENT_MAX_SIZE,
        )

"""The REST server: aiohttp's low-level HTTP server underneath, the sans-I/O :class:`RestApi` on top.

https://developers.binance.com/docs/derivatives/usds-margined-futures/general-info

Every request, whatever its method and path, is one call of :meth:`RestApi.handle` with the
raw path, the raw query string, the peer's IP (the same rate-limit key the WebSocket server
uses, so both surfaces share one budget) and the server clock's time; the reply's status,
headers and body are written as they are. There is no router, middleware or access log.
The one path not Binance's, ``/healthz``, answers the service's health check (no weight,
no faults) with its status (200 or 503) and JSON document.

Bounds: aiohttp refuses request lines and header fields over 8190 bytes; no request body is
ever read (``client_max_size`` is 1 KiB should anything try); a body left unread closes the
connection instead of being drained (``lingering_time`` 0); connections are capped per IP and
in total and idle ones closed after ``--http-idle-timeout`` (``aio.HttpLimits``).
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy

from ..clock import Clock
from ..rest import RestApi, RestReply
from .aio import HttpLimits, Site
from .ws import peer_client

log = logging.getLogger("tickerd.server")

CLIENT_MAX_SIZE = 1024
NO_HEADERS: CIMultiDictProxy[str] = CIMultiDictProxy(CIMultiDict())
HEALTH_PATH = "/healthz"


@dataclass(frozen=True, slots=True)
class RestOptions:
    """Where the REST twins listen (port 0: any free port), their connection limits, and
    the TLS context that makes them ``https://``."""

    host: str = "127.0.0.1"
    port: int = 9001
    limits: HttpLimits = field(default_factory=HttpLimits)
    ssl_context: ssl.SSLContext | None = None
    sock: Any = None  # a listening socket handed over (a supervisor's worker), else bind


class HTTPServer:
    """Serves :class:`RestApi` over HTTP/1.1 on ``options.host:options.port``; ``health``
    answers ``/healthz`` (status and document; without it, the path is the API's)."""

    def __init__(
        self,
        api: RestApi,
        clock: Clock,
        options: RestOptions,
        *,
        health: Callable[[], tuple[int, dict[str, Any]]] | None = None,
    ) -> None:
        self.api = api
        self.clock = clock
        self.options = options
        self.health = health
        # What answers a request: the API itself, or the control plane's fault wrapper
        # while a fault aimed at REST clients is armed (swapped, so no fault costs nothing).
        self.handle: Callable[[str, str, str, str, int], RestReply] = api.handle
        self.site = Site()
        # Load-balancer hooks (see WSServer): the client of a request, a protocol in front.
        self.client_of: Callable[[Any, Any], str] = peer_client
        self.wrap: Callable[[Callable[[], Any]], Callable[[], Any]] | None = None

    @property
    def port(self) -> int:
        """The port listened on (useful when started on port 0)."""
        return self.site.port

    async def start(self) -> None:
        """Listen on ``options.host:options.port``."""
        await self.site.serve(
            self._handle,
            self.options.host,
            self.options.port,
            max_body_bytes=CLIENT_MAX_SIZE,
            limits=self.options.limits,
            ssl_context=self.options.ssl_context,
            sock=self.options.sock,
            wrap=self.wrap,
            # the connection caps count a client as requests do (a PROXY source, else the peer)
            client_of=lambda peer: self.client_of(peer, NO_HEADERS),
            backlog=1024,
        )

    async def stop(self) -> None:
        """Stop listening and close the connections."""
        await self.site.stop()

    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        url = request.rel_url
        path = url.raw_path
        if path == HEALTH_PATH and self.health is not None:
            status, doc = self.health()
            return web.Response(
                status=status, body=orjson.dumps(doc), content_type="application/json"
            )
        transport = request.transport
        peer = transport.get_extra_info("peername") if transport is not None else None
        reply = self.handle(
            request.method,
            path,
            url.raw_query_string,
            self.client_of(peer, request.headers),
            self.clock.now_ms(),
        )
        return web.Response(status=reply.status, body=reply.body, headers=reply.headers)

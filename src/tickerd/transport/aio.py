"""aiohttp plumbing shared by the HTTP surfaces: REST, push ingest and the control plane.

Every surface accepts through a :class:`~tickerd.transport.resources.Listener`, so a
connection at the open-file limit is answered 503. The surfaces served by :meth:`Site.serve`
(REST, push) cap their open connections, per client IP and in total (:class:`HttpLimits`),
and close idle or half-open ones after ``idle_timeout``. A connection past a cap is still
accepted, so that it can be answered: its first request gets 503 (Binance's -1008 body,
``Connection: close``), and it is closed after :data:`REFUSED_GRACE_S` if it sends nothing.
Refused connections waiting for that answer are bounded too (``max_connections`` of them);
past that a new one is sent the 503 at once, before its request, and closed (a best
effort: a client that has not read it when the close arrives sees a reset). So the
descriptors of a surface stay within twice its cap.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import socket
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web
from aiohttp.http_parser import RawRequestMessage
from aiohttp.streams import StreamReader
from aiohttp.web_protocol import RequestHandler

from ..errors import BinanceError, ErrorCode
from .resources import Throttle, listen, refusal_bytes
from .ws import client_ip

SHUTDOWN_TIMEOUT_S = 2.0
REFUSED_GRACE_S = 2.0  # a refused connection that sends no request is closed after this

RequestFactory = Callable[
    [RawRequestMessage, StreamReader, RequestHandler, Any, "asyncio.Task[None]"],
    web.BaseRequest,
]


def netloc(host: str, port: int) -> str:
    """``host:port`` as a URL writes it (an IPv6 host in brackets)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


Handler = Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]
log = logging.getLogger("tickerd.http")

ProtocolWrapper = Callable[[Callable[[], Any]], Callable[[], Any]]


@dataclass(frozen=True, slots=True)
class HttpLimits:
    """Bounds on one HTTP surface's connections (defaults: those of ``Settings``)."""

    idle_timeout: float = 15.0
    max_connections: int = 1024
    max_connections_per_ip: int = 128


class GatedServer(web.Server):
    """aiohttp's low-level server with :class:`HttpLimits` on its connections."""

    def __init__(
        self,
        handler: Handler,
        limits: HttpLimits,
        what: str,
        client_of: Callable[[Any], str] = client_ip,
        **kwargs: Any,
    ) -> None:
        super().__init__(self._gate, keepalive_timeout=limits.idle_timeout, **kwargs)
        self.handler = handler
        self.limits = limits
        self.what = what
        self.client_of = client_of  # peer address -> the client IP the caps count
        self.admitted: dict[RequestHandler, str] = {}  # connection -> client IP
        self.per_ip: dict[str, int] = {}
        self.refused: set[RequestHandler] = set()
        self.refusals = Throttle()
        self._busy = orjson.dumps(BinanceError.of(ErrorCode.SERVER_BUSY, status=503).to_wire())
        self._unknown = orjson.dumps(BinanceError.of(ErrorCode.UNKNOWN, status=500).to_wire())
        self._refusal = refusal_bytes()

    def connection_made(self, handler: RequestHandler, transport: asyncio.Transport) -> None:
        super().connection_made(handler, transport)
        ip = self.client_of(transport.get_extra_info("peername"))
        limits = self.limits
        held = self.per_ip.get(ip, 0)
        if len(self.admitted) < limits.max_connections and held < limits.max_connections_per_ip:
            self.admitted[handler] = ip
            self.per_ip[ip] = held + 1
            return
        self.refusals.event(
            "%s: connection from %s answered 503 (%d open from it, %d in all; limits %d, %d)",
            self.what, ip, held, len(self.admitted),
            limits.max_connections_per_ip, limits.max_connections,
        )  # fmt: skip
        if len(self.refused) >= limits.max_connections:
            transport.write(self._refusal)
            handler.force_close()
            return
        self.refused.add(handler)
        self._loop.call_later(REFUSED_GRACE_S, handler.force_close)

    def connection_lost(self, handler: RequestHandler, exc: BaseException | None = None) -> None:
        super().connection_lost(handler, exc)
        ip = self.admitted.pop(handler, None)
        if ip is None:
            self.refused.discard(handler)
            return
        held = self.per_ip[ip] - 1
        if held:
            self.per_ip[ip] = held
        else:
            del self.per_ip[ip]

    async def _gate(self, request: web.BaseRequest) -> web.StreamResponse:
        if request.protocol in self.refused:
            response = web.Response(
                status=503,
                body=self._busy,
                headers={"Content-Type": "application/json", "Retry-After": "1"},
            )
            response.force_close()
            return response
        try:
            return await self.handler(request)
        except web.HTTPException:
            raise
        except Exception:
            # A defect: logged with its traceback, answered in Binance's shape (-1000)
            # rather than aiohttp's plain-text page.
            log.exception("%s: %s %s failed", self.what, request.method, request.path)
            return web.Response(
                status=500, body=self._unknown, headers={"Content-Type": "application/json"}
            )


class ListenerSite(web.BaseSite):
    """An aiohttp site on a :class:`~tickerd.transport.resources.Listener`: at the fd limit
    a new connection is still answered 503, and a TLS handshake has a short deadline.

    It binds ``host:port``, or accepts on ``sock`` (a listening socket handed over); ``wrap``
    puts a protocol in front of aiohttp's (the PROXY protocol gate)."""

    __slots__ = ("_host", "_port", "_sock", "_wrap")

    def __init__(
        self,
        runner: web.BaseRunner,
        host: str,
        port: int,
        *,
        sock: socket.socket | None = None,
        wrap: ProtocolWrapper | None = None,
        **site: Any,
    ) -> None:
        super().__init__(runner, **site)
        self._host = host
        self._port = port if sock is None else int(sock.getsockname()[1])
        self._sock = sock
        self._wrap = wrap

    @property
    def name(self) -> str:
        """The URL it serves."""
        scheme = "https" if self._ssl_context else "http"
        return f"{scheme}://{netloc(self._host, self._port)}"

    async def start(self) -> None:
        """Listen."""
        await super().start()
        server = self._runner.server
        assert server is not None
        factory: Callable[[], Any] = server if self._wrap is None else self._wrap(server)
        self._server = await listen(
            asyncio.get_running_loop(), factory, self._host, self._port,
            backlog=self._backlog, ssl_context=self._ssl_context, what="HTTP requests",
            sock=self._sock,
        )  # fmt: skip


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
            await ListenerSite(runner, host, port, sock=sock, wrap=wrap, **site).start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self._port = int(runner.addresses[0][1])

    async def serve(  # noqa: PLR0913 - keyword-only options
        self,
        handler: Handler,
        host: str,
        port: int,
        *,
        max_body_bytes: int,
        limits: HttpLimits | None = None,
        ssl_context: ssl.SSLContext | None = None,
        sock: socket.socket | None = None,
        wrap: ProtocolWrapper | None = None,
        client_of: Callable[[Any], str] = client_ip,
        **site: Any,
    ) -> None:
        """Listen with aiohttp's low-level server: one handler for every request, bodies
        bounded, no access log, connections capped and idle ones closed (``limits``, each
        client IP as ``client_of`` tells it from the peer address); HTTPS with
        ``ssl_context``."""
        runner = gated_runner(
            handler, limits or HttpLimits(), f"HTTP port {port}", max_body_bytes, client_of
        )
        await self.listen(runner, host, port, ssl_context=ssl_context, sock=sock, wrap=wrap, **site)
        server = runner.server
        assert isinstance(server, GatedServer)
        server.what = f"HTTP port {self.port}"

    async def stop(self) -> None:
        """Stop listening and close the connections."""
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()


def gated_runner(
    handler: Handler,
    limits: HttpLimits,
    what: str,
    max_body_bytes: int,
    client_of: Callable[[Any], str] = client_ip,
) -> web.ServerRunner:
    """A runner of aiohttp's low-level server: one handler for every request, bodies
    bounded by ``max_body_bytes``, connections by ``limits`` (``what`` names the surface
    in the refusal log), no access log."""
    server = GatedServer(
        handler,
        limits,
        what,
        client_of,
        request_factory=bounded_requests(max_body_bytes),
        access_log=None,
        lingering_time=0.0,  # a body left unread closes the connection, not drained
    )
    return web.ServerRunner(server, handle_signals=False, shutdown_timeout=SHUTDOWN_TIMEOUT_S)


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

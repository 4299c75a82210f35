"""The ops surface of one service: ``/metrics``, ``/status`` and ``/dashboard`` on their own port.

``tickerd serve`` listens on ``--ops-host`` (loopback by default) ``--ops-port`` (9003;
-1: off). It is read-only and needs no token, but ``/status`` names client IPs: exposing
the port beyond loopback is the operator's choice. Routes:

- ``GET /metrics``: Prometheus text format (:mod:`tickerd.ops.metrics`);
- ``GET /status[?top=N]``: JSON (:mod:`tickerd.ops.status`);
- ``GET /dashboard``: a page (plain HTML, CSS and JS shipped in the package, nothing
  fetched from elsewhere) fed by the WebSocket ``GET /dashboard/live``
  (:mod:`tickerd.ops.live`); ``GET /`` redirects to it.

A worker of ``--workers N`` serves the same routes on a unix socket (``OpsOptions.path``)
in a directory only its supervisor's user can enter, plus ``GET /group?top=N``: its
metrics text, status, prices and request total in one JSON document, which the
supervisor's ops process merges (:mod:`tickerd.ops.group`).

Whether the port is on or off, the surface counts ticks per feed and logs feed state
changes (:class:`~tickerd.ops.tracker.FeedTracker`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from importlib.resources import files
from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from ..transport.aio import Handler, HttpLimits, Site, gated_runner, netloc
from .live import LiveChannel, PriceRow
from .metrics import registry
from .status import DEFAULT_TOP, MAX_LISTED, status
from .tracker import FeedTracker

if TYPE_CHECKING:
    from ..app import Service

log = logging.getLogger("tickerd.ops")

#: The ops port's connections: scrapers and dashboards (at most ``MAX_CLIENTS`` of those
#: live) need few; idle or half-open ones close as on REST; past a cap, a 503.
OPS_LIMITS = HttpLimits(max_connections=256, max_connections_per_ip=64)
#: Largest request body: every route is a GET.
OPS_MAX_BODY_BYTES = 1024
#: Seconds between checks of the feeds' states (each change is logged).
FEED_CHECK_INTERVAL_S = 1.0
_STATIC = {
    "/dashboard": ("dashboard.html", "text/html; charset=utf-8"),
    "/dashboard/dashboard.css": ("dashboard.css", "text/css; charset=utf-8"),
    "/dashboard/dashboard.js": ("dashboard.js", "text/javascript; charset=utf-8"),
}
# The page loads its own script and style and talks to its own origin, nothing else.
_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


@dataclass(frozen=True, slots=True)
class OpsOptions:
    """Where the ops surface listens (port 0: any free port, -1: off; ``path``: a unix
    socket instead, a worker's private channel to its supervisor)."""

    host: str = "127.0.0.1"
    port: int = 9003
    path: str | None = None


def json_response(doc: object, status_code: int = 200) -> web.Response:
    """``doc`` as an uncached JSON response."""
    return web.Response(
        status=status_code,
        body=orjson.dumps(doc),
        content_type="application/json",
        headers={"Cache-Control": "no-store"},
    )


def top_of(request: web.BaseRequest) -> int | None:
    """``?top=N`` (default :data:`DEFAULT_TOP`), or None when it is not 1 to MAX_LISTED."""
    raw = request.query.get("top", str(DEFAULT_TOP))
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 4 and 1 <= int(raw) <= MAX_LISTED):
        return None
    return int(raw)


def ops_handler(routes: Mapping[str, Handler], pages: Iterable[str], page: Handler) -> Handler:
    """The ops port's one handler: ``GET`` (or ``HEAD``) of ``routes`` and of the
    dashboard's ``pages`` (served by ``page``); 404 for other paths, 405 for other methods."""
    table = {**routes, **dict.fromkeys(pages, page)}

    async def handle(request: web.BaseRequest) -> web.StreamResponse:
        handler = table.get(request.path)
        if handler is None:
            raise web.HTTPNotFound()
        if request.method not in ("GET", "HEAD"):
            raise web.HTTPMethodNotAllowed(request.method, ["GET", "HEAD"])
        return await handler(request)

    return handle


def _unix_peer(peer: object) -> str:
    """The client of a unix socket (the supervisor's ops process): one for the caps."""
    return "unix"


def static_pages() -> dict[str, tuple[bytes, str]]:
    """The dashboard's files by route: their bytes and content type."""
    return {
        path: (files(__package__).joinpath("static", name).read_bytes(), kind)
        for path, (name, kind) in _STATIC.items()
    }


def page_response(page: tuple[bytes, str]) -> web.Response:
    """One of :func:`static_pages` under the page's Content-Security-Policy."""
    body, kind = page
    return web.Response(
        body=body,
        headers={
            "Content-Type": kind,
            "Content-Security-Policy": _CSP,
            "X-Content-Type-Options": "nosniff",
            "Cache-Control": "no-cache",
        },
    )


class OpsSurface:
    """The ops surface of a :class:`~tickerd.app.Service` (see the module docstring)."""

    def __init__(self, service: Service, options: OpsOptions) -> None:
        self.service = service
        self.options = options
        self.tracker = FeedTracker(service.feeds, service.book)
        self.started = time.monotonic()
        self.live = LiveChannel(self._view)
        self.site = Site()
        self._watch: asyncio.Task[None] | None = None
        self._registry: CollectorRegistry | None = None
        self._unix: web.ServerRunner | None = None
        self._pages = static_pages()

    # -- hooks the service calls ---------------------------------------------------------

    def count_ticks(self) -> None:
        """Count the ticks the book applies from now on (after the store's restore)."""
        self.tracker.attach()

    def feed_ended(self, name: str, failed: bool = False) -> None:
        """Feed ``name``'s task returned (``failed``: it raised)."""
        self.tracker.ended(name, failed)

    # -- lifecycle -----------------------------------------------------------------------

    @property
    def url(self) -> str | None:
        """``http://host:port`` of the ops surface, or None when it is off."""
        if not self.site.running:
            return None
        return f"http://{netloc(self.options.host, self.site.port)}"

    async def start(self) -> None:
        """Start watching the feeds; listen when ``--ops-port`` is not -1."""
        self.tracker.running = True
        self.started = time.monotonic()
        self._watch = asyncio.create_task(
            self.tracker.watch(FEED_CHECK_INTERVAL_S), name="tickerd-feed-watch"
        )
        o = self.options
        if o.port < 0 and o.path is None:
            return
        self._registry = registry(self.service, self.tracker)
        routes: dict[str, Handler] = {
            "/": self._root,
            "/metrics": self._metrics,
            "/status": self._status,
            "/dashboard/live": self.live.handle,
        }
        if o.path is not None:
            routes["/group"] = self._group
        handler = ops_handler(routes, self._pages, self._page)
        if o.path is not None:
            runner = gated_runner(
                handler, OPS_LIMITS, f"ops socket {o.path}", OPS_MAX_BODY_BYTES, _unix_peer
            )
            await runner.setup()
            await web.UnixSite(runner, o.path).start()
            self._unix = runner
            log.debug("tickerd worker ops: unix socket %s", o.path)
            return
        try:
            await self.site.serve(
                handler, o.host, o.port, max_body_bytes=OPS_MAX_BODY_BYTES, limits=OPS_LIMITS
            )
        except OSError as exc:
            raise OSError(
                exc.errno,
                f"cannot listen on the ops port {netloc(o.host, o.port)}: "
                f"{exc.strerror or exc} (--ops-port -1 turns the ops surface off)",
            ) from None
        log.info("tickerd ops ready: %s", self.url)

    async def stop(self) -> None:
        """Close the dashboards, stop listening, stop the feed watch and tick counting."""
        await self.live.close()
        await self.site.stop()
        if self._unix is not None:
            await self._unix.cleanup()
            self._unix = None
        if self._watch is not None:
            self._watch.cancel()
            await asyncio.gather(self._watch, return_exceptions=True)
            self._watch = None
        self.tracker.detach()

    # -- routes --------------------------------------------------------------------------

    async def _root(self, request: web.BaseRequest) -> web.StreamResponse:
        raise web.HTTPFound("/dashboard")

    async def _metrics(self, request: web.BaseRequest) -> web.StreamResponse:
        assert self._registry is not None
        body = generate_latest(self._registry)
        return web.Response(
            body=body, headers={"Content-Type": CONTENT_TYPE_LATEST, "Cache-Control": "no-store"}
        )

    async def _status(self, request: web.BaseRequest) -> web.StreamResponse:
        top = top_of(request)
        if top is None:
            return json_response(
                {"error": f"top must be a whole number from 1 to {MAX_LISTED}"}, 400
            )
        uptime = time.monotonic() - self.started
        return json_response(status(self.service, self.tracker, uptime, top))

    async def _view(self, top: int) -> tuple[dict[str, Any], list[PriceRow], int]:
        service = self.service
        doc = status(service, self.tracker, time.monotonic() - self.started, top)
        prices = [(t.symbol, t.price, t.time_ms) for t in service.book.ticks()[:MAX_LISTED]]
        total = sum(service.protocol.counters.requests().values())
        if service.http is not None:
            total += sum(service.http.counters.requests().values())
        return doc, prices, total

    async def _group(self, request: web.BaseRequest) -> web.StreamResponse:
        top = top_of(request)
        if top is None:
            return json_response(
                {"error": f"top must be a whole number from 1 to {MAX_LISTED}"}, 400
            )
        doc, prices, total = await self._view(top)
        assert self._registry is not None
        metrics = generate_latest(self._registry).decode()
        return json_response(
            {"metrics": metrics, "status": doc, "prices": prices, "requests": total}
        )

    async def _page(self, request: web.BaseRequest) -> web.StreamResponse:
        return page_response(self._pages[request.path])

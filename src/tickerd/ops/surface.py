"""The ops surface of one service: ``/metrics``, ``/status`` and ``/dashboard`` on their own port.

``tickerd serve`` listens on ``--ops-host`` (loopback by default) ``--ops-port`` (9003;
-1: off). It is read-only and needs no token, but ``/status`` names client IPs: exposing
the port beyond loopback is the operator's choice. Routes:

- ``GET /metrics``: Prometheus text format (:mod:`tickerd.ops.metrics`);
- ``GET /status[?top=N]``: JSON (:mod:`tickerd.ops.status`);
- ``GET /dashboard``: a page (plain HTML, CSS and JS shipped in the package, nothing
  fetched from elsewhere) fed by the WebSocket ``GET /dashboard/live``
  (:mod:`tickerd.ops.live`); ``GET /`` redirects to it.

Whether the port is on or off, the surface counts ticks per feed and logs feed state
changes (:class:`~tickerd.ops.tracker.FeedTracker`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from importlib.resources import files
from typing import TYPE_CHECKING

import orjson
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from ..transport.aio import KEEPALIVE_TIMEOUT_S, SHUTDOWN_TIMEOUT_S, Site, netloc
from .live import LiveChannel
from .metrics import registry
from .status import DEFAULT_TOP, MAX_LISTED, status
from .tracker import FeedTracker

if TYPE_CHECKING:
    from ..app import Service

log = logging.getLogger("tickerd.ops")

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
    """Where the ops surface listens (port 0: any free port, -1: off)."""

    host: str = "127.0.0.1"
    port: int = 9003


def _json(doc: object, status_code: int = 200) -> web.Response:
    return web.Response(
        status=status_code,
        body=orjson.dumps(doc),
        content_type="application/json",
        headers={"Cache-Control": "no-store"},
    )


class OpsSurface:
    """The ops surface of a :class:`~tickerd.app.Service` (see the module docstring)."""

    def __init__(self, service: Service, options: OpsOptions) -> None:
        self.service = service
        self.options = options
        self.tracker = FeedTracker(service.feeds, service.book)
        self.started = time.monotonic()
        self.live = LiveChannel(service, self.tracker, self.started)
        self.site = Site()
        self._watch: asyncio.Task[None] | None = None
        self._registry: CollectorRegistry | None = None
        self._pages = {
            path: (files(__package__).joinpath("static", name).read_bytes(), kind)
            for path, (name, kind) in _STATIC.items()
        }

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
        self.started = self.live.started = time.monotonic()
        self._watch = asyncio.create_task(
            self.tracker.watch(FEED_CHECK_INTERVAL_S), name="tickerd-feed-watch"
        )
        o = self.options
        if o.port < 0:
            return
        self._registry = registry(self.service, self.tracker)
        app = web.Application(client_max_size=1024)
        app.router.add_get("/", self._root)
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/status", self._status)
        app.router.add_get("/dashboard/live", self.live.handle)
        for path in self._pages:
            app.router.add_get(path, self._page)
        runner = web.AppRunner(
            app,
            handle_signals=False,
            access_log=None,
            shutdown_timeout=SHUTDOWN_TIMEOUT_S,
            keepalive_timeout=KEEPALIVE_TIMEOUT_S,
        )
        try:
            await self.site.listen(runner, o.host, o.port)
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
        if self._watch is not None:
            self._watch.cancel()
            await asyncio.gather(self._watch, return_exceptions=True)
            self._watch = None
        self.tracker.detach()

    # -- routes --------------------------------------------------------------------------

    async def _root(self, request: web.Request) -> web.StreamResponse:
        raise web.HTTPFound("/dashboard")

    async def _metrics(self, request: web.Request) -> web.StreamResponse:
        assert self._registry is not None
        body = generate_latest(self._registry)
        return web.Response(
            body=body, headers={"Content-Type": CONTENT_TYPE_LATEST, "Cache-Control": "no-store"}
        )

    async def _status(self, request: web.Request) -> web.StreamResponse:
        raw = request.query.get("top", str(DEFAULT_TOP))
        if not (raw.isascii() and raw.isdigit() and len(raw) <= 4 and 1 <= int(raw) <= MAX_LISTED):
            return _json({"error": f"top must be a whole number from 1 to {MAX_LISTED}"}, 400)
        uptime = time.monotonic() - self.started
        return _json(status(self.service, self.tracker, uptime, int(raw)))

    async def _page(self, request: web.Request) -> web.StreamResponse:
        body, kind = self._pages[request.path]
        return web.Response(
            body=body,
            headers={
                "Content-Type": kind,
                "Content-Security-Policy": _CSP,
                "X-Content-Type-Options": "nosniff",
                "Cache-Control": "no-cache",
            },
        )

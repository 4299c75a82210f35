"""Wiring and lifecycle: build the book, prime and start feeds, open the server, stop cleanly."""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
from typing import Any

from .book import PriceBook
from .clock import Clock, ControlledClock, SystemClock
from .config import Settings
from .control import Control
from .feeds import Feed, build_feeds
from .ops import OpsSurface
from .protocol import Protocol
from .ratelimit import RateLimiter
from .rest import RestApi
from .store import PriceStore
from .symbols import SymbolUniverse
from .transport.aio import netloc
from .transport.control_http import ControlHTTPServer
from .transport.http import HTTPServer
from .transport.ws import WSServer

log = logging.getLogger("tickerd.server")


class Service:
    """One tickerd instance: universe, book, limiter, protocol, feeds, WS and REST servers."""

    def __init__(
        self,
        settings: Settings,
        *,
        clock: Clock | None = None,
        universe: SymbolUniverse | None = None,
        feeds: list[Feed] | None = None,
    ) -> None:
        self.settings = settings
        # Everything that tells time reads one ControlledClock, which the control plane can
        # freeze, set or move (one method call over the base clock: cheap on the hot path).
        self.controlled_clock = ControlledClock(clock or SystemClock())
        self.clock: Clock = self.controlled_clock
        if universe is None:
            universe = (
                SymbolUniverse.load(settings.symbols_file)
                if settings.symbols_file
                else SymbolUniverse.default()
            )
        self.universe = universe
        self.book = PriceBook(universe)
        self.limiter = RateLimiter(settings.weight_limit)
        self.protocol = Protocol(self.book, self.limiter)
        # The REST twins charge the same limiter: one weight budget per IP for both surfaces.
        self.rest = RestApi(self.book, self.limiter, universe)
        if feeds is None:
            plan = build_feeds(settings, universe, self.clock)
            feeds = plan.feeds
            if plan.clock is not None:  # a replay brings its own time: control that one
                self.controlled_clock = ControlledClock(plan.clock)
                self.clock = self.controlled_clock
        self.feeds = feeds
        self.ws: WSServer | None = None
        self.http: HTTPServer | None = None
        self.control_http: ControlHTTPServer | None = None
        self.store: PriceStore | None = (
            PriceStore(settings.store, flush_interval=settings.store_flush_interval)
            if settings.store
            else None
        )
        # The control plane: refuses --control-port without --control-token and loads the
        # --scenario file here, so bad settings stop the service before it listens.
        self.control = Control(self)
        self.ops = OpsSurface(self)  # ops: /metrics, /status, /dashboard; feed-state logs
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def url(self) -> str:
        """The WebSocket API URL clients connect to."""
        assert self.ws is not None
        return f"ws://{netloc(self.settings.host, self.ws.port)}{self.settings.path}"

    @property
    def rest_url(self) -> str | None:
        """The REST base URL (``http://host:port``), or None when REST is off."""
        if self.http is None:
            return None
        return f"http://{netloc(self.settings.host, self.http.port)}"

    def health(self) -> dict[str, Any]:
        """What ``GET /healthz`` answers."""
        health: dict[str, Any] = {
            "status": "ok",
            "symbols": len(self.book),
            "connections": len(self.ws.connections) if self.ws else 0,
        }
        # Feeds that report on themselves (mirror: stale symbols, reconnects; push: counts).
        feeds: dict[str, Any] = {}
        for feed in self.feeds:
            status = getattr(feed, "status", None)
            if callable(status):
                feeds[feed.name] = status()
        if feeds:
            health["feeds"] = feeds
        return health

    async def start(self) -> None:
        """Restore stored prices, prime the book, start the feeds, then open the port."""
        if self.store is not None:
            # Stored last prices go in first; feeds prime over them (the synthetic feed
            # keeps them and walks on from them, a feed with newer prices overwrites them).
            await self.store.open()
            await self.store.restore(self.book)
            self.store.attach(self.book)
        self.ops.count_ticks()  # ops: feed ticks from priming on, restored ones not
        for feed in self.feeds:
            feed.prime(self.book)
        for feed in self.feeds:
            # Optional async preparation before the port opens (push binds its port, the
            # mirror fetches a first snapshot); an exception here aborts the start.
            start = getattr(feed, "start", None)
            if start is not None:
                await start(self.book)
        for feed in self.feeds:
            self._tasks.append(asyncio.create_task(self._run_feed(feed), name=feed.name))
        self.ws = WSServer(self.protocol, self.clock, self.settings, health=self.health)
        await self.ws.start()
        if self.settings.rest_port >= 0:
            self.http = HTTPServer(self.rest, self.clock, self.settings)
            try:
                await self.http.start()
            except BaseException:
                self.http = None
                raise
            # Logged before the WS line: once "tickerd ready" appears, both are up.
            log.info("tickerd REST ready: %s", self.rest_url)
        await self.ops.start()  # ops: logs "tickerd ops ready: URL" when --ops-port is on
        self.control.bind(self.ws, self.http)
        if self.settings.control_port >= 0:
            self.control_http = ControlHTTPServer(self.control, self.settings)
            try:
                await self.control_http.start()
            except BaseException:
                self.control_http = None
                raise
            log.info("tickerd control ready: %s", self.control_http.url)
        # A --scenario file starts now: its 0 ms steps apply before clients are told "ready".
        self.control.start()
        # Everything built so far lives as long as the service: keep it out of the cyclic
        # collector's full passes, which otherwise walk it every few thousand requests.
        gc.freeze()
        log.info("tickerd ready: %s (%d symbols)", self.url, len(self.book))

    async def stop(self) -> None:
        """Close connections, stop feeds."""
        self.control.stop()
        await self.ops.stop()  # ops
        if self.control_http is not None:
            await self.control_http.stop()
        if self.http is not None:
            await self.http.stop()
        if self.ws is not None:
            await self.ws.stop()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        if self.store is not None:
            await self.store.close()  # the last flush: a clean stop loses nothing

    async def _run_feed(self, feed: Feed) -> None:
        try:
            await feed.run(self.book)
            self.ops.feed_ended(feed.name)  # ops
            log.info("feed %s finished", feed.name)
        except asyncio.CancelledError:
            raise
        except Exception:
            self.ops.feed_ended(feed.name, failed=True)  # ops
            log.exception("feed %s failed; its prices stay as they were", feed.name)

    async def serve_forever(self) -> None:
        """Start, run until SIGINT or SIGTERM, then stop cleanly."""
        loop = asyncio.get_running_loop()
        stopping = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stopping.set)
        await self.start()
        try:
            await stopping.wait()
        finally:
            log.info("tickerd stopping")
            await self.stop()

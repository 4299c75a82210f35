"""Wiring and lifecycle: build the book, prime and start feeds, open the server, stop cleanly."""

from __future__ import annotations

import asyncio
import logging
import signal
from typing import Any

from .book import PriceBook
from .clock import Clock, SystemClock
from .config import Settings
from .feeds import Feed, build_feeds
from .protocol import Protocol
from .ratelimit import RateLimiter
from .rest import RestApi
from .symbols import SymbolUniverse
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
        self.clock: Clock = clock or SystemClock()
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
            self.clock = plan.clock or self.clock
        self.feeds = feeds
        self.ws: WSServer | None = None
        self.http: HTTPServer | None = None
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def url(self) -> str:
        """The WebSocket API URL clients connect to."""
        assert self.ws is not None
        host = self.settings.host
        host = f"[{host}]" if ":" in host else host
        return f"ws://{host}:{self.ws.port}{self.settings.path}"

    @property
    def rest_url(self) -> str | None:
        """The REST base URL (``http://host:port``), or None when REST is off."""
        if self.http is None:
            return None
        host = self.settings.host
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{self.http.port}"

    def health(self) -> dict[str, Any]:
        """What ``GET /healthz`` answers."""
        return {
            "status": "ok",
            "symbols": len(self.book),
            "connections": len(self.ws.connections) if self.ws else 0,
        }

    async def start(self) -> None:
        """Prime the book, start the feeds, then open the port."""
        for feed in self.feeds:
            feed.prime(self.book)
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
        log.info("tickerd ready: %s (%d symbols)", self.url, len(self.book))

    async def stop(self) -> None:
        """Close connections, stop feeds."""
        if self.http is not None:
            await self.http.stop()
        if self.ws is not None:
            await self.ws.stop()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()

    async def _run_feed(self, feed: Feed) -> None:
        try:
            await feed.run(self.book)
            log.info("feed %s finished", feed.name)
        except asyncio.CancelledError:
            raise
        except Exception:
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

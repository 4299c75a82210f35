"""Wiring and lifecycle: build the book, prime and start feeds, open the servers, stop cleanly.

This is where :class:`~tickerd.config.Settings` ends: every component below gets its own
small options or plain arguments. A start that fails halfway (a port in use) stops what
it had started before the error propagates.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from . import hotpath
from .book import PriceBook
from .clock import Clock, ControlledClock, SystemClock
from .config import Settings
from .control.errors import ControlError
from .control.hooks import FaultInjector
from .control.runtime import Control
from .control.scenario import load_scenario
from .errors import TickerdError
from .feeds import Feed, FeedRegistry, FeedState, build_feeds
from .health import FeedHealth, assess
from .limit_log import LimitLog
from .ops import OpsOptions, OpsSurface
from .protocol import Protocol
from .ratelimit import RateLimiter
from .rest import RestApi
from .store import PriceStore
from .streams.hub import StreamHub
from .streams.rest_stats import RestStatistics
from .symbols import SymbolUniverse
from .tls import TLSFiles
from .transport.aio import HttpLimits, netloc
from .transport.control_http import ControlHTTPServer, ControlOptions
from .transport.http import HTTPServer, RestOptions
from .transport.resources import fd_warning, soft_fd_limit
from .transport.streams import StreamGate
from .transport.ws import WSServer
from .validation import check_settings
from .wiring import stream_gate, stream_hub, stream_server, ws_options

if TYPE_CHECKING:
    from .cluster.node import ClusterNode
    from .cluster.proxy_gate import ClientResolver

log = logging.getLogger("tickerd.server")

_SYMBOLS_NAMED = 5  # a feed with at most this many symbols has them named at start-up


class Service:
    """One tickerd instance: universe, book, limiter, protocol, feeds, control plane, and
    the WebSocket, REST and control servers."""

    def __init__(
        self,
        settings: Settings,
        *,
        clock: Clock | None = None,
        universe: SymbolUniverse | None = None,
        feeds: list[Feed] | None = None,
        sockets: dict[str, Any] | None = None,
        worker: int | None = None,
    ) -> None:
        check_settings(settings)  # the rules of the flags, for Settings built in Python
        self.settings = settings
        # --workers: the listening sockets the supervisor hands over ("ws", "rest"), and
        # which worker this is (shown on /healthz).
        self.sockets = sockets or {}
        self.worker = worker
        # Refused before anything is built: a control port without a token.
        if settings.control_port >= 0 and not settings.control_token:
            raise ControlError("the control plane needs a token: set --control-token")
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
        # -- cluster hook: --redis swaps in the shared limiter, the book bus, the feed lease
        self.cluster = _cluster_node(settings, self.book, self.controlled_clock)
        self.proxies = _client_resolver(settings)  # --trusted-proxy
        # -- end of the cluster hook
        self.limiter = self.cluster.limiter if self.cluster else RateLimiter(settings.weight_limit)
        self.limiter.listener = LimitLog()
        self.protocol = Protocol(self.book, self.limiter)
        # The 24-hour statistics and candles, shared by the streams and the REST twins.
        self.hub: StreamHub = stream_hub(settings, self.book)
        # The REST twins charge the same limiter: one weight budget per IP for both surfaces.
        self.rest = RestApi(self.book, self.limiter, universe, RestStatistics(self.hub))
        if feeds is None:
            plan = build_feeds(settings, universe, self.clock)
            feeds = plan.feeds
            if plan.clock is not None:  # a replay brings its own time: control that one
                self.controlled_clock = ControlledClock(plan.clock)
                self.clock = self.controlled_clock
        self.registry = FeedRegistry(feeds)
        self.ws: WSServer | None = None
        self.streams: StreamGate | None = None
        self.stream_ws: WSServer | None = None  # --stream-port
        self.http: HTTPServer | None = None
        self.control_http: ControlHTTPServer | None = None
        self.store: PriceStore | None = (
            PriceStore(settings.store, flush_interval=settings.store_flush_interval)
            if settings.store
            else None
        )
        if self.store is not None:  # the windows and candles are kept too
            self.store.keep_statistics(self.hub)
        self.tls = TLSFiles.of(settings.tls_cert, settings.tls_key)  # bad files: TLSError
        # A bad --scenario file stops the service here, before anything listens.
        startup = load_scenario(settings.scenario) if settings.scenario else None
        self.faults = FaultInjector(self.controlled_clock, self.limiter)
        self.control = Control(
            book=self.book,
            limiter=self.limiter,
            universe=universe,
            clock=self.controlled_clock,
            faults=self.faults,
            feeds=self.registry,
            weight_limit=settings.weight_limit,
            startup=startup,
        )
        # ops: /metrics, /status, /dashboard; feed-state logs
        self.ops = OpsSurface(self, OpsOptions(settings.ops_host, settings.ops_port))
        self._tasks: list[asyncio.Task[None]] = []
        self._started: list[Feed] = []
        self._failures: dict[str, str] = {}  # feed name → why its task died
        if self.cluster is not None:
            self.cluster.clock = self.clock
            self.cluster.bind(self.control, self._start_feeds_owned, self._stop_feeds)

    @property
    def feeds(self) -> list[Feed]:
        """The feeds this service runs (assignable until :meth:`start`)."""
        return self.registry.feeds

    @feeds.setter
    def feeds(self, feeds: Sequence[Feed]) -> None:
        self.registry.feeds = list(feeds)

    @property
    def url(self) -> str:
        """The WebSocket API URL clients connect to."""
        assert self.ws is not None
        scheme = "wss" if self.tls else "ws"
        return f"{scheme}://{netloc(self.settings.host, self.ws.port)}{self.settings.path}"

    @property
    def stream_url(self) -> str | None:
        """The market streams' base URL (``ws://host:port``), or None when they are off."""
        server = self.stream_ws or (self.ws if self.streams is not None else None)
        if server is None:
            return None
        return f"{'wss' if self.tls else 'ws'}://{netloc(self.settings.host, server.port)}"

    @property
    def rest_url(self) -> str | None:
        """The REST base URL (``http://host:port``), or None when REST is off."""
        if self.http is None:
            return None
        return f"{'https' if self.tls else 'http'}://{netloc(self.settings.host, self.http.port)}"

    # -- health ----------------------------------------------------------------------------

    def health_report(self) -> tuple[int, dict[str, Any]]:
        """What ``GET /healthz`` answers on the WebSocket and REST ports: 200 or 503 and
        the document (see :mod:`tickerd.health`)."""
        feeds = [FeedHealth(f.name, self._feed_status(f), self._priced(f)) for f in self.registry]
        if self.cluster is not None:
            feeds = self.cluster.health_feeds(feeds)
        connections = sum(len(w.connections) for w in (self.ws, self.stream_ws) if w)
        status, doc = assess(feeds, symbols=len(self.book), connections=connections)
        if self.worker is not None:
            doc["worker"] = {"index": self.worker, "pid": os.getpid()}
        return status, doc

    def health(self) -> dict[str, Any]:
        """The ``/healthz`` document alone."""
        return self.health_report()[1]

    def _feed_status(self, feed: Feed) -> dict[str, Any]:
        status = dict(feed.status())
        failure = self._failures.get(feed.name)
        if failure is not None:
            status["state"] = FeedState.FAILED
            status["failure"] = failure
        return status

    def _priced(self, feed: Feed) -> bool:
        symbols = feed.symbols
        if symbols is None:
            return len(self.book) > 0
        book = self.book
        return any(book.get(s) is not None for s in symbols)

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Restore stored prices, prime the book, start the feeds, then open the ports.

        If any step fails, everything started so far is stopped before the error
        propagates: no feed task, open store or listening port is left behind.
        """
        try:
            await self._start()
        except BaseException:
            await self.stop()
            raise

    async def _start(self) -> None:
        s = self.settings
        # What runs, logged once every port is open (a failed start logs only its error).
        summary = [f"tickerd hot path: {hotpath.describe()}"]
        if self.store is not None:
            # Stored last prices go in first; feeds prime over them (the synthetic feed
            # keeps them and walks on from them, a feed with newer prices overwrites them).
            await self.store.open()
            restored = await self.store.restore(self.book, self.clock.now_ms())
            stats = await self.store.restore_statistics(self.clock.now_ms())
            self.store.attach(self.book)
            line = f"tickerd store: {self.store.path} ({restored} prices restored)"
            summary.append(line + (f", the statistics of {stats} symbols" if stats else ""))
        self.ops.count_ticks()  # ops: feed ticks from priming on, restored ones not
        if self.cluster is None:
            await self._start_feeds(summary)
        else:  # the feeds start where the cluster's feed lease is held
            await self.cluster.start()
        tls = self.tls.context if self.tls else None
        self.ws = WSServer(
            self.protocol,
            self.clock,
            ws_options(s, self.sockets.get("ws"), tls),
            health=self.health_report,
        )
        if s.rest_port >= 0:
            self.http = HTTPServer(
                self.rest, self.clock, self._rest_options(), health=self.health_report
            )
        if self.proxies is not None:
            self._trust_proxies(self.ws, self.http)
        if s.streams == "on":
            self.streams = stream_gate(s, self.hub, self.clock)
            await self.streams.start()
            if s.stream_port < 0:
                self.ws.streams = self.streams
            else:  # --stream-port: the streams on a port of their own
                sock = self.sockets.get("streams")
                self.stream_ws = stream_server(s, self.ws, self.streams, sock, self.health_report)
                await self.stream_ws.start()
                log.info("tickerd streams ready: %s", self.stream_url)
        await self.ws.start()
        if self.http is not None:
            await self.http.start()
            # Logged before the WS line: once "tickerd ready" appears, both are up.
            log.info("tickerd REST ready: %s", self.rest_url)
        await self.ops.start()  # ops: logs "tickerd ops ready: URL" when --ops-port is on
        self.faults.bind(self.ws, self.http)
        if s.control_port >= 0:
            assert s.control_token  # checked in __init__
            options = ControlOptions(s.control_token, s.control_host, s.control_port)
            control_http = ControlHTTPServer(self.control, options)
            await control_http.start()
            self.control_http = control_http
            log.info("tickerd control ready: %s", control_http.url)
        # A --scenario file starts now: its 0 ms steps apply before clients are told "ready".
        self.control.start()
        for line in summary:
            log.info("%s", line)
        if (fd_note := self._fd_warning()) is not None:
            log.warning("%s", fd_note)
        served = self.registry.claimed().union(t.symbol for t in self.book.ticks())
        log.info("tickerd ready: %s (%d symbols)", self.url, len(served))

    def _rest_options(self) -> RestOptions:
        s = self.settings
        limits = HttpLimits(
            s.http_idle_timeout, s.http_max_connections, s.http_max_connections_per_ip
        )
        tls = self.tls.context if self.tls else None
        return RestOptions(s.host, s.rest_port, limits, tls, self.sockets.get("rest"))

    def _fd_warning(self) -> str | None:
        """A line when ``--max-connections`` does not fit in the fd limit beside the HTTP
        caps (each twice: admitted and refused connections) of REST and the push ingest."""
        s = self.settings
        http = 2 * s.http_max_connections if s.rest_port >= 0 else 0
        if "push" in s.feed:
            http += 2 * HttpLimits().max_connections
        return fd_warning(s.max_connections, http, soft_fd_limit())

    async def _start_feeds(self, summary: list[str]) -> None:
        for feed in self.registry:
            feed.prime(self.book)
        for feed in self.registry:
            # Before the port opens (push binds its port, the mirror fetches a first
            # snapshot); an exception here aborts the start.
            self._started.append(feed)
            await feed.start(self.book)
        for feed in self.registry:
            self._tasks.append(asyncio.create_task(self._run_feed(feed), name=feed.name))
            summary.append(f"tickerd feed {feed.name}: {self._describe(feed)}")

    async def _start_feeds_owned(self) -> None:
        """Start the feeds on the member holding the cluster's feed lease."""
        summary: list[str] = []
        try:
            await self._start_feeds(summary)
        except Exception:
            log.exception("the feeds did not start here")
            await self._stop_feeds()
            return
        for line in summary:
            log.info("%s", line)

    async def _stop_feeds(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        for feed in reversed(self._started):
            try:
                await feed.stop()
            except Exception:
                log.exception("feed %s did not stop cleanly", feed.name)
        self._started.clear()

    def _trust_proxies(self, *servers: WSServer | HTTPServer | None) -> None:
        from .cluster.proxy_gate import gated

        resolver = self.proxies
        assert resolver is not None
        for server in servers:
            if server is not None:
                server.client_of = resolver.client_of
                server.wrap = lambda factory: gated(factory, resolver)

    def _describe(self, feed: Feed) -> str:
        symbols = feed.symbols
        if symbols is None:
            return "every TRADING symbol"
        text = f"{len(symbols)} symbol{'' if len(symbols) == 1 else 's'}"
        if 0 < len(symbols) <= _SYMBOLS_NAMED:
            text += f" ({', '.join(sorted(symbols))})"
        return text

    async def stop(self) -> None:
        """Close connections, stop feeds, flush the store (safe after a failed start)."""
        self.control.stop()
        await self.ops.stop()  # ops
        if self.control_http is not None:
            await self.control_http.stop()
        if self.http is not None:
            await self.http.stop()
        if self.ws is not None:
            await self.ws.stop()
        if self.stream_ws is not None:
            await self.stream_ws.stop()
        if self.streams is not None:
            await self.streams.stop()
        if self.cluster is not None:
            await self.cluster.stop()
        await self._stop_feeds()
        if self.store is not None:
            await self.store.close()  # the last flush: a clean stop loses nothing

    async def _run_feed(self, feed: Feed) -> None:
        try:
            await feed.run(self.book)
            self.ops.feed_ended(feed.name)  # ops
            log.info("feed %s finished", feed.name)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._failures[feed.name] = f"{type(exc).__name__}: {exc}"
            self.ops.feed_ended(feed.name, failed=True)  # ops
            log.exception("feed %s failed; its prices stay as they were", feed.name)

    async def serve_forever(self, *, on_ready: Callable[[], None] | None = None) -> None:
        """Start, call ``on_ready``, run until SIGINT or SIGTERM, then stop cleanly."""
        loop = asyncio.get_running_loop()
        stopping = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stopping.set)
        if self.tls is not None:
            loop.add_signal_handler(signal.SIGHUP, self.tls.reload)
        await self.start()
        try:
            if on_ready is not None:
                on_ready()
            await stopping.wait()
        finally:
            log.info("tickerd stopping")
            await self.stop()


def _cluster_node(settings: Settings, book: PriceBook, clock: Clock) -> ClusterNode | None:
    """The cluster member of ``--redis``, or None (no Redis import without it)."""
    if not settings.redis:
        return None
    try:
        from .cluster.node import ClusterNode, NodeOptions
    except ImportError as exc:
        raise TickerdError(
            f"--redis needs the cluster extra (pip install 'tickerd[cluster]'): {exc}"
        ) from None
    options = NodeOptions(
        settings.redis,
        settings.weight_limit,
        feed_lease_ms=settings.feed_lease_ms,
        prefix=settings.redis_prefix,
    )
    try:
        return ClusterNode(options, book, clock)
    except ValueError as exc:  # redis-py's word on a malformed URL
        raise TickerdError(f"--redis: {exc}") from None


def _client_resolver(settings: Settings) -> ClientResolver | None:
    """The ``--trusted-proxy`` rules, or None."""
    if not settings.trusted_proxy:
        return None
    from .cluster.proxy import TrustedProxies, parse_networks
    from .cluster.proxy_gate import ClientResolver

    try:
        return ClientResolver(TrustedProxies(parse_networks(settings.trusted_proxy)))
    except ValueError as exc:
        raise TickerdError(str(exc)) from None

"""The live mirror: keeps the book equal to Binance's last USDⓈ-M Futures prices.

Sources (developers.binance.com/docs/derivatives/usds-margined-futures/...):
``websocket-market-streams`` (combined streams, lower-case names, 1024 streams and
10 incoming messages per second per connection, 24 h lifetime, a server ping every
3 minutes), ``websocket-market-streams/Aggregate-Trade-Streams`` (``p`` price, ``T`` trade
time, ``a`` aggregate trade id), ``market-data/rest-api/Symbol-Price-Ticker-v2``
(``GET /fapi/v2/ticker/price``: every symbol's last price and its time, weight 2) and
``error-code`` / ``general-info`` (429, 418 with ``Retry-After``; 451 for a restricted
location). Since 2026-04-23 aggTrade is served under the ``/market`` route only
(:mod:`.stream_routes`): a base URL without a route gets it, one with a wrong route is
refused at start, and the full URL is logged at INFO on every connect. Event and snapshot
checks (integer aggregate ids, trade times not past the service clock plus the skew) live
in the sans-I/O :class:`~.mirror_state.MirrorState`; this module only supervises I/O.

Theory of operation
-------------------
The mirrored symbols are cut into shards of at most ``shard_size`` streams (Binance's cap
is 1024; 200 keeps handshake URLs short), each kept connected by
:class:`~.mirror_shards.ShardSupervisor` (drops, backoff, rollover before the 24 h cut).

* **Bootstrap**: one ``GET /fapi/v2/ticker/price`` after every connect that followed a gap
  (the first connect included), coalesced over ``bootstrap_delay_s`` so shards that come
  back together cost one request. Connecting before the snapshot means no trade falls
  between the two. ``start`` also tries one bootstrap before the server opens its port;
  whatever its fate the streams connect at once, and a refused snapshot is retried after
  its ``Retry-After``.
* **Universe**: ``GET /fapi/v1/exchangeInfo`` at start and every ``universe_every_s``
  (:mod:`.mirror_universe`): new symbols are served (and streamed, when the mirror takes
  every symbol), status changes applied, tick-size changes adopted, each logged once.
* **Ordering**: a tick is applied only if it is not older than the book's tick for that
  symbol and, for stream events, its aggregate id is newer than the last one applied —
  the overlap of a rollover and a late snapshot never move a price backward.
* **Refusals**: HTTP 429/418/451 from REST and any refused handshake are logged at ERROR on
  ``tickerd.feeds.mirror`` with the status and ``Retry-After``. No REST request leaves
  before a REST refusal's ``Retry-After`` has passed, and no handshake (any shard) before a
  handshake refusal's — or, for a 429/418/451 without the header, before ``backoff_max_s``.
  REST weight and stream connections are limited separately by Binance (general-info,
  websocket-market-streams), so a refused snapshot never holds back the streams.
* **Proxy**: REST and streams go through ``proxy`` when given, else through the
  ``HTTPS_PROXY``/``HTTP_PROXY`` of the environment unless ``NO_PROXY`` exempts the host.
* **Staleness**: a symbol is stale when nothing arrived on its stream for
  ``stale_after_s`` since the later of its last event and its shard's last connect. Stale
  symbols are still served (Binance, too, answers its last price however old); they are
  listed by :meth:`MirrorFeed.stale_symbols` and in ``/healthz`` (docs/DECISIONS.md).
"""

from __future__ import annotations

import asyncio
import logging
import random
import ssl
import time
from collections.abc import Callable, Collection
from dataclasses import asdict
from typing import Any

import aiohttp

from ..book import PriceBook
from ..clock import Clock, SystemClock
from ..symbols import SymbolUniverse
from .mirror_shards import Shard, ShardSupervisor, StreamTimers
from .mirror_state import MirrorState, MirrorStats, UpstreamDataError, UpstreamError
from .mirror_universe import EXCHANGE_INFO_PATH, apply_exchange_info, log_change
from .recording import TradeRecorder
from .state import FeedState
from .stream_routes import routed_url
from .upstream import RETRYABLE, UpstreamGate, http_get

__all__ = ["MirrorFeed", "MirrorStats", "UpstreamDataError", "UpstreamError"]

log = logging.getLogger("tickerd.feeds.mirror")

TICKER_PATH = "/fapi/v2/ticker/price"
MAX_STREAMS_PER_CONNECTION = 1024  # websocket-market-streams
DEFAULT_SHARD_SIZE = 200
DEFAULT_ROLLOVER_S = 23 * 3600 + 50 * 60
DEFAULT_UNIVERSE_S = 3600.0
_MAX_STALE_LISTED = 20  # stale symbols named in status() and in log lines


class MirrorFeed:
    """Mirrors Binance's last prices into the book (see the module docstring).

    ``symbols``: the contracts to mirror; None until :func:`~tickerd.feeds.build_feeds`
    assigns the rest, and if still None at run time, every TRADING contract. Intervals are
    seconds; ``rng`` seeds the backoff jitter; ``monotonic`` is the clock of every interval
    and ``clock`` the service clock that bounds trade times. ``follow_listings``: stream
    the symbols the upstream lists later (default: when ``symbols`` is None).
    ``universe_every_s`` 0 turns the exchangeInfo refresh off; ``proxy`` is an http(s)
    proxy URL for REST and streams (None: the environment's; "": none at all).
    """

    name = "mirror"

    def __init__(  # noqa: PLR0913 - keyword-only options
        self,
        universe: SymbolUniverse,
        *,
        rest_url: str,
        stream_url: str,
        symbols: Collection[str] | None = None,
        shard_size: int = DEFAULT_SHARD_SIZE,
        rollover_after_s: float = DEFAULT_ROLLOVER_S,
        stale_after_s: float = 60.0,
        idle_timeout_s: float = 300.0,
        connect_timeout_s: float = 10.0,
        close_timeout_s: float = 5.0,
        bootstrap_timeout_s: float = 10.0,
        bootstrap_delay_s: float = 0.2,
        backoff_initial_s: float = 0.5,
        backoff_max_s: float = 60.0,
        stable_after_s: float = 60.0,
        universe_every_s: float = DEFAULT_UNIVERSE_S,
        follow_listings: bool | None = None,
        proxy: str | None = None,
        ssl_context: ssl.SSLContext | None = None,
        max_message_bytes: int = 64 * 1024,
        max_bootstrap_bytes: int = 8 * 1024 * 1024,
        rng: random.Random | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        clock: Clock | None = None,
        recorder: TradeRecorder | None = None,
    ) -> None:
        if not 1 <= shard_size <= MAX_STREAMS_PER_CONNECTION:
            raise ValueError(f"shard_size must be 1..{MAX_STREAMS_PER_CONNECTION}")
        if min(rollover_after_s, stale_after_s, idle_timeout_s, backoff_initial_s) <= 0:
            raise ValueError("intervals must be positive")
        if universe_every_s < 0:
            raise ValueError("universe_every_s must be 0 (off) or positive")
        self.universe = universe
        self.rest_url = rest_url.rstrip("/")
        self.stream_url = routed_url(stream_url, "aggTrade")  # StreamRouteError: refused
        self.symbols: frozenset[str] | None = None if symbols is None else frozenset(symbols)
        self.follow_listings = symbols is None if follow_listings is None else follow_listings
        self.shard_size = shard_size
        self.stale_after_s = stale_after_s
        self.bootstrap_timeout_s = bootstrap_timeout_s
        self.bootstrap_delay_s = bootstrap_delay_s
        self.universe_every_s = universe_every_s
        self.proxy = proxy
        self.ssl_context = ssl_context
        self.max_bootstrap_bytes = max_bootstrap_bytes
        self.monotonic = monotonic
        self.clock: Clock = clock if clock is not None else SystemClock()
        self.recorder = recorder
        self.timers = StreamTimers(
            rollover_after_s, idle_timeout_s, connect_timeout_s, close_timeout_s,
            stable_after_s, max_message_bytes,
        )  # fmt: skip
        self._stats = MirrorStats()
        self.gate = UpstreamGate(
            self._stats,
            backoff_initial_s=backoff_initial_s,
            backoff_max_s=backoff_max_s,
            rng=rng if rng is not None else random.Random(0),
            monotonic=monotonic,
        )
        self.state: MirrorState | None = None
        self.shards: list[Shard] = []
        self._stale_reported: frozenset[str] = frozenset()
        self._session: aiohttp.ClientSession | None = None
        self._bootstrap_wanted = asyncio.Event()
        self._shards_added = asyncio.Event()

    @property
    def stats(self) -> MirrorStats:
        """The counters of everything the mirror saw since start."""
        return self._stats

    # -- the Feed interface -------------------------------------------------------------

    def mirrored(self) -> list[str]:
        """The symbols this feed mirrors, in name order."""
        if self.symbols is None:
            return [s.symbol for s in self.universe.trading()]
        return sorted(self.symbols)

    def claim(self, symbols: frozenset[str]) -> None:
        """Mirror ``symbols`` (build_feeds gives it those no other feed declares)."""
        self.symbols = symbols

    def prime(self, book: PriceBook) -> None:
        """Attach the book; :meth:`start` fetches the first prices."""
        self._state(book)

    async def start(self, book: PriceBook) -> None:
        """Try the universe and one snapshot before the server opens its port; failures
        are logged, not fatal (:meth:`run` keeps trying)."""
        self._state(book)
        if self.universe_every_s:
            try:
                await self.refresh_universe(book)
            except RETRYABLE as exc:
                self.gate.report("initial exchangeInfo", exc, None, "rest")
        self._plan_shards()
        try:
            await self._bootstrap(book)
        except RETRYABLE as exc:
            self.gate.report("initial bootstrap", exc, None, "rest")

    async def run(self, book: PriceBook) -> None:
        """Stream forever: one supervisor per shard, a bootstrapper, a stale watchdog and
        the exchangeInfo refresher. The shards start at once, whatever the snapshot did."""
        self._state(book)
        if not self.shards:
            self._plan_shards()
        supervisor = ShardSupervisor(
            timers=self.timers,
            gate=self.gate,
            stats=self._stats,
            session=self._session_,
            proxy=self.proxy,
            on_text=lambda shard, text: self._on_event(shard, text, book),
            on_binary=lambda: self._state(book).reject("binary", "-", "binary message ignored"),
            on_gap=self._bootstrap_wanted.set,
            monotonic=self.monotonic,
        )
        tasks: list[asyncio.Task[None]] = []
        try:
            tasks.append(asyncio.create_task(self._bootstrapper(book), name="mirror-bootstrap"))
            tasks.append(asyncio.create_task(self._watch_stale(), name="mirror-stale"))
            if self.universe_every_s:
                tasks.append(asyncio.create_task(self._universe_loop(book), name="mirror-info"))
            if self.recorder is not None:
                tasks.append(asyncio.create_task(self.recorder.run(), name="mirror-record"))
            started = 0
            while True:  # new listings add shards while the mirror runs
                for shard in self.shards[started:]:
                    name = f"mirror-shard-{shard.index}"
                    tasks.append(asyncio.create_task(supervisor.run(shard), name=name))
                started = len(self.shards)
                self._shards_added.clear()
                waiter = asyncio.ensure_future(self._shards_added.wait())
                done, _ = await asyncio.wait({waiter, *tasks}, return_when=asyncio.FIRST_COMPLETED)
                waiter.cancel()
                for task in done - {waiter}:
                    task.result()  # a task that died of a bug: the feed fails with it
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for shard in self.shards:
                for conn in list(shard.conns):
                    await conn.close(self.timers.close_timeout_s)
                shard.conns.clear()
            if self._session is not None:
                session, self._session = self._session, None
                await session.close()
            if self.recorder is not None:
                self.recorder.close()  # the last rows, then finished days zipped

    async def stop(self) -> None:
        """Close the HTTP session a :meth:`start` opened without a :meth:`run`."""
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()

    # -- status ---------------------------------------------------------------------------

    def stale_symbols(self) -> list[str]:
        """Mirrored symbols whose stream has been silent longer than ``stale_after_s``."""
        if self.state is None:
            return []
        groups = ((s.symbols, s.subscribed_at) for s in self.shards)
        return self.state.stale(groups, self.monotonic(), self.stale_after_s)

    def feed_state(self) -> FeedState:
        """starting (never connected), down (a shard has no connection), stale, or up."""
        if not self.shards or self._stats.connects == 0:
            return FeedState.STARTING
        if any(not any(c.alive for c in s.conns) for s in self.shards):
            return FeedState.DOWN
        return FeedState.STALE if self.stale_symbols() else FeedState.UP

    def status(self) -> dict[str, Any]:
        """What ``/healthz`` reports for this feed."""
        stale = self.stale_symbols()
        return {
            "state": self.feed_state(),
            "symbols": sum(len(s.symbols) for s in self.shards),
            "shards": len(self.shards),
            "connections": sum(1 for s in self.shards for c in s.conns if c.alive),
            "stale": len(stale),
            "stale_symbols": stale[:_MAX_STALE_LISTED],
            "stream_url": self.stream_url,
            **asdict(self._stats),
            **({"recording": self.recorder.status()} if self.recorder is not None else {}),
        }

    # -- universe -------------------------------------------------------------------------

    async def refresh_universe(self, book: PriceBook) -> None:
        """Fetch ``/fapi/v1/exchangeInfo`` once and apply it (see :mod:`.mirror_universe`);
        new TRADING symbols of a mirror that follows listings get streams of their own."""
        url = self.rest_url + EXCHANGE_INFO_PATH
        body = await self._get(url)
        change = apply_exchange_info(self.universe, body, where=f"GET {url}")
        self._stats.universe_refreshes += 1
        if change:
            book.refresh_status()
        log_change(change, log)
        if not (self.follow_listings and self.shards and change.added):
            return
        covered = {sym for shard in self.shards for sym in shard.symbols}
        new = [
            sym for sym in change.added
            if sym not in covered and (info := self.universe.get(sym)) is not None and info.trading
        ]  # fmt: skip
        if new:
            if self.symbols is not None:
                self.symbols = self.symbols | frozenset(new)
            self._add_shards(sorted(new))

    async def _universe_loop(self, book: PriceBook) -> None:
        failures = 0
        delay = self.universe_every_s
        while True:
            await asyncio.sleep(delay)
            try:
                await self.refresh_universe(book)
                failures, delay = 0, self.universe_every_s
            except RETRYABLE as exc:
                ra = exc.retry_after_s if isinstance(exc, UpstreamError) else None
                delay = min(self.universe_every_s, self.gate.delay(failures, ra))
                failures += 1
                self.gate.report("exchangeInfo", exc, delay, "rest")

    # -- shards ---------------------------------------------------------------------------

    def _plan_shards(self) -> None:
        self.shards = []
        self._add_shards(self.mirrored())
        log.info(
            "mirroring %d symbols over %d connection(s) to %s",
            sum(len(s.symbols) for s in self.shards),
            len(self.shards),
            self.stream_url,
        )

    def _add_shards(self, symbols: list[str]) -> None:
        now = self.monotonic()
        for i in range(0, len(symbols), self.shard_size):
            chunk = symbols[i : i + self.shard_size]
            streams = "/".join(f"{s.lower()}@aggTrade" for s in chunk)
            url = f"{self.stream_url}/stream?streams={streams}"
            self.shards.append(Shard(len(self.shards), frozenset(chunk), url, now))
        self._shards_added.set()

    def _state(self, book: PriceBook) -> MirrorState:
        if self.state is None or self.state.book is not book:
            self.state = MirrorState(book, self._stats)
            self.state.record = None if self.recorder is None else self.recorder.record_event
        return self.state

    def _session_(self) -> aiohttp.ClientSession:
        if self._session is None:
            # trust_env off: the proxy (explicit or from the environment) is chosen per URL
            # by proxy_for, for ws(s) URLs too, which aiohttp's own lookup does not cover.
            connector = aiohttp.TCPConnector(ssl=self.ssl_context or True)
            self._session = aiohttp.ClientSession(trust_env=False, connector=connector)
        return self._session

    # -- events and snapshots ---------------------------------------------------------------

    def _on_event(self, shard: Shard, text: str, book: PriceBook) -> None:
        """Apply one combined-stream message (checks in :class:`MirrorState`)."""
        self._state(book).on_event(text, shard.symbols, self.monotonic(), self.clock.now_ms())

    async def _bootstrapper(self, book: PriceBook) -> None:
        failures = 0
        while True:
            await self._bootstrap_wanted.wait()
            await asyncio.sleep(self.bootstrap_delay_s)  # let reconnecting shards coalesce
            self._bootstrap_wanted.clear()
            while True:
                try:
                    await self._bootstrap(book)
                    failures = 0
                    break
                except RETRYABLE as e:
                    ra = e.retry_after_s if isinstance(e, UpstreamError) else None
                    delay = self.gate.delay(failures, ra)
                    failures += 1
                    self.gate.report("bootstrap", e, delay, "rest")
                    await asyncio.sleep(delay)

    async def _bootstrap(self, book: PriceBook) -> int:
        """Fetch every last price once and apply those newer than the book's; return how
        many were applied."""
        url = self.rest_url + TICKER_PATH
        body = await self._get(url)
        wanted = frozenset(self.mirrored()) if self.symbols is None else self.symbols
        applied = self._state(book).on_snapshot(body, wanted, self.clock.now_ms(), f"GET {url}")
        log.info("bootstrap: %d prices applied from %s", applied, url)
        return applied

    async def _get(self, url: str) -> bytes:
        await self.gate.hold("rest")
        return await http_get(
            self._session_(),
            url,
            proxy=self.proxy,
            timeout_s=self.bootstrap_timeout_s,
            max_bytes=self.max_bootstrap_bytes,
        )

    def _delay(self, failures: int, retry_after_s: int | None) -> float:
        """The backoff before retry number ``failures`` (see :class:`UpstreamGate`)."""
        return self.gate.delay(failures, retry_after_s)

    async def _watch_stale(self) -> None:
        period = min(1.0, self.stale_after_s / 4)
        while True:
            await asyncio.sleep(period)
            stale = frozenset(self.stale_symbols())
            new, back = stale - self._stale_reported, self._stale_reported - stale
            if new:
                log.warning(
                    "%d symbol(s) stale: no event for %g s (%s)",
                    len(new),
                    self.stale_after_s,
                    _names(new),
                )
            if back:
                log.info("%d symbol(s) live again (%s)", len(back), _names(back))
            self._stale_reported = stale


def _names(symbols: Collection[str]) -> str:
    names = sorted(symbols)
    more = len(names) - _MAX_STALE_LISTED
    return ", ".join(names[:_MAX_STALE_LISTED]) + (f" and {more} more" if more > 0 else "")

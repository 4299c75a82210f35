"""The live mirror: keeps the book equal to Binance's last USDⓈ-M Futures prices.

Sources (developers.binance.com/docs/derivatives/usds-margined-futures/...):
``websocket-market-streams`` (combined streams, lower-case names, 1024 streams and
10 incoming messages per second per connection, 24 h lifetime, a server ping every
3 minutes), ``websocket-market-streams/Aggregate-Trade-Streams`` (``p`` price, ``T`` trade
time, ``a`` aggregate trade id), ``market-data/rest-api/Symbol-Price-Ticker-v2``
(``GET /fapi/v2/ticker/price``: every symbol's last price and its time, weight 2) and
``error-code`` / ``general-info`` (429, 418 with ``Retry-After``; 451 for a restricted
location). Since 2026-04-23 aggTrade is served under ``/market`` only (BINANCE.md §7): the
legacy paths accept the handshake and then stay silent, which the stale marking exposes.

Theory of operation
-------------------
The mirrored symbols are cut into shards of at most ``shard_size`` streams (Binance's cap
is 1024; 200 keeps handshake URLs short). Each shard has one supervisor task that owns
one combined-stream connection, subscribed through the URL alone: the mirror never sends
a message of its own, so the 10 messages/s inbound limit only ever sees pongs.

* **Drop** (close frame, TCP reset, EOF, nothing heard for ``idle_timeout_s`` — Binance
  pings every 3 minutes, so a live socket is never that quiet): wait an exponential,
  jittered backoff (seeded ``random.Random``; reset once a connection has lived
  ``stable_after_s``), reconnect, then re-bootstrap from REST to cover the gap.
* **Rollover**: at ``rollover_after_s`` (23 h 50 min, before Binance's 24 h cut) open the
  successor first, then close the old connection: no gap, so no re-bootstrap. If the
  successor cannot be opened the old one is kept until it drops.
* **Bootstrap**: one ``GET /fapi/v2/ticker/price`` after every connect that followed a gap
  (the first connect included), coalesced over ``bootstrap_delay_s`` so shards that come
  back together cost one request. Connecting before the snapshot means no trade falls
  between the two. ``start`` also tries one bootstrap before the server opens its port.
* **Ordering**: a tick is applied only if it is not older than the book's tick for that
  symbol and, for stream events, its aggregate id is newer than the last one applied —
  the overlap of a rollover and a late snapshot never move a price backward.
* **Refusals**: HTTP 429/418/451 from REST and any refused handshake are logged at ERROR on
  ``tickerd.feeds.mirror`` with the status and ``Retry-After``. No request of any kind (REST
  or handshake, any shard) leaves before ``Retry-After`` seconds have passed — a ban is per
  IP — or, for a 429/418/451 without the header, before ``backoff_max_s``.
* **Staleness**: a symbol is stale when nothing arrived on its stream for
  ``stale_after_s`` since the later of its last event and its shard's last connect. Stale
  symbols are still served (Binance, too, answers its last price however old); they are
  listed by :meth:`MirrorFeed.stale_symbols` and in ``/healthz`` (docs/DECISIONS.md).

Client: aiohttp (``ClientSession.ws_connect``, ``heartbeat=None``, ``autoping=True``) rather
than picows: aiohttp is already a dependency for REST, one session serves the snapshot and
the streams, a refused handshake surfaces as ``WSServerHandshakeError`` carrying the status
and headers (``Retry-After``), and pings are answered automatically. A full mirror
receives a few thousand small events per second at peak, well within aiohttp's reach;
picows' speed matters on the serving side.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import aiohttp
import orjson

from ..backoff import jittered_backoff
from ..book import PriceBook, TickRejected
from ..errors import TickerdError
from ..symbols import SymbolUniverse
from .state import FeedState

log = logging.getLogger("tickerd.feeds.mirror")

TICKER_PATH = "/fapi/v2/ticker/price"
MAX_STREAMS_PER_CONNECTION = 1024  # websocket-market-streams
DEFAULT_SHARD_SIZE = 200
DEFAULT_ROLLOVER_S = 23 * 3600 + 50 * 60
# What each refusal means, for the log line (error-code, general-info).
REFUSALS: dict[int, str] = {
    418: "IP banned for ignoring 429s",
    429: "rate limited",
    451: "restricted location: Binance refuses service to this IP's location",
}
_MAX_WARNED = 256  # distinct (reason, symbol) pairs logged at WARNING; the rest at DEBUG
_MAX_STALE_LISTED = 20  # stale symbols named in status() and in log lines
_EXCERPT = 200  # characters of an upstream error body quoted in a log line


class UpstreamError(TickerdError):
    """Binance (or what stands at the configured URL) refused or failed a request."""

    def __init__(self, what: str, status: int, retry_after_s: int | None, detail: str = ""):
        meaning = REFUSALS.get(status, "")
        text = f"{what}: HTTP {status}" + (f" ({meaning})" if meaning else "")
        if detail:
            text += f": {detail}"
        super().__init__(text)
        self.status = status
        self.retry_after_s = retry_after_s


class UpstreamDataError(TickerdError):
    """The upstream answered 200 with something that is not what Binance sends."""


_RETRYABLE = (
    UpstreamError,
    UpstreamDataError,
    aiohttp.ClientError,
    OSError,
    TimeoutError,
    ValueError,
)


@dataclass
class MirrorStats:
    """Counters of what the mirror saw (all since start)."""

    events: int = 0  # stream messages received
    applied: int = 0  # ticks written to the book (stream and bootstrap)
    rejected: int = 0  # events or rows that could not become a tick
    skipped: int = 0  # duplicates and ticks older than the book's
    bootstraps: int = 0  # successful snapshots
    connects: int = 0  # successful handshakes
    drops: int = 0  # connections lost
    rollovers: int = 0  # connections replaced before the 24 h cut
    refusals: int = 0  # HTTP 429/418/451 and refused handshakes
    last_refusal: dict[str, Any] | None = None


@dataclass(eq=False)
class _Conn:
    ws: aiohttp.ClientWebSocketResponse
    opened: float
    reader: asyncio.Task[None] | None = None
    reason: str = "closed"

    @property
    def alive(self) -> bool:
        return self.reader is not None and not self.reader.done()

    async def close(self, timeout: float) -> None:
        if self.reader is not None and not self.reader.done():
            self.reader.cancel()
            await asyncio.gather(self.reader, return_exceptions=True)
        try:
            async with asyncio.timeout(timeout):
                await self.ws.close()
        except (TimeoutError, aiohttp.ClientError, OSError):
            pass


@dataclass(eq=False)
class _Shard:
    index: int
    symbols: frozenset[str]
    url: str
    subscribed_at: float
    failures: int = 0
    conns: list[_Conn] = field(default_factory=list)


class MirrorFeed:
    """Mirrors Binance's last prices into the book (see the module docstring).

    ``symbols``: the contracts to mirror; None until :func:`~tickerd.feeds.build_feeds`
    assigns the rest, and if still None at run time, every TRADING contract. Intervals are
    seconds; ``rng`` seeds the backoff jitter; ``monotonic`` is the clock of every interval.
    """

    name = "mirror"

    def __init__(
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
        max_message_bytes: int = 64 * 1024,
        max_bootstrap_bytes: int = 8 * 1024 * 1024,
        rng: random.Random | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if not 1 <= shard_size <= MAX_STREAMS_PER_CONNECTION:
            raise ValueError(f"shard_size must be 1..{MAX_STREAMS_PER_CONNECTION}")
        if min(rollover_after_s, stale_after_s, idle_timeout_s, backoff_initial_s) <= 0:
            raise ValueError("intervals must be positive")
        self.universe = universe
        self.rest_url = rest_url.rstrip("/")
        self.stream_url = stream_url.rstrip("/")
        self.symbols: frozenset[str] | None = None if symbols is None else frozenset(symbols)
        self.shard_size = shard_size
        self.rollover_after_s = rollover_after_s
        self.stale_after_s = stale_after_s
        self.idle_timeout_s = idle_timeout_s
        self.connect_timeout_s = connect_timeout_s
        self.close_timeout_s = close_timeout_s
        self.bootstrap_timeout_s = bootstrap_timeout_s
        self.bootstrap_delay_s = bootstrap_delay_s
        self.backoff_initial_s = backoff_initial_s
        self.backoff_max_s = backoff_max_s
        self.stable_after_s = stable_after_s
        self.max_message_bytes = max_message_bytes
        self.max_bootstrap_bytes = max_bootstrap_bytes
        self.rng = rng if rng is not None else random.Random(0)
        self.monotonic = monotonic
        self.stats = MirrorStats()
        self.shards: list[_Shard] = []
        self._last_event: dict[str, float] = {}
        self._last_agg: dict[str, int] = {}
        self._warned: set[tuple[str, str]] = set()
        self._stale_reported: frozenset[str] = frozenset()
        self._session: aiohttp.ClientSession | None = None
        self._bootstrap_wanted = asyncio.Event()
        # After a refusal with Retry-After, no request of any kind before this (monotonic)
        # time: a 418 ban is per IP, so REST and stream handshakes alike wait it out.
        self._hold_until = 0.0

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
        """Nothing to do synchronously: :meth:`start` fetches the first prices."""

    async def start(self, book: PriceBook) -> None:
        """Try one snapshot before the server opens its port; a failure is logged, not fatal
        (:meth:`run` keeps trying)."""
        self._plan_shards()
        try:
            await self._bootstrap(book)
        except _RETRYABLE as exc:
            self._report_failure("initial bootstrap", exc, None)

    async def run(self, book: PriceBook) -> None:
        """Stream forever: one supervisor per shard, one bootstrapper, one stale watchdog."""
        if not self.shards:
            self._plan_shards()
        tasks: list[asyncio.Task[None]] = []
        try:
            tasks.append(asyncio.create_task(self._bootstrapper(book), name="mirror-bootstrap"))
            tasks.append(asyncio.create_task(self._watch_stale(), name="mirror-stale"))
            for shard in self.shards:
                name = f"mirror-shard-{shard.index}"
                tasks.append(asyncio.create_task(self._run_shard(shard, book), name=name))
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for shard in self.shards:
                for conn in list(shard.conns):
                    await conn.close(self.close_timeout_s)
                shard.conns.clear()
            if self._session is not None:
                session, self._session = self._session, None
                await session.close()

    async def stop(self) -> None:
        """Close the HTTP session a :meth:`start` opened without a :meth:`run`."""
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()

    # -- status ---------------------------------------------------------------------------

    def stale_symbols(self) -> list[str]:
        """Mirrored symbols whose stream has been silent longer than ``stale_after_s``."""
        now = self.monotonic()
        last = self._last_event
        stale: list[str] = []
        for shard in self.shards:
            since = shard.subscribed_at
            for symbol in shard.symbols:
                if now - max(last.get(symbol, since), since) > self.stale_after_s:
                    stale.append(symbol)
        return sorted(stale)

    def status(self) -> dict[str, Any]:
        """What ``/healthz`` reports for this feed."""
        stale = self.stale_symbols()
        connected = sum(1 for s in self.shards if any(c.alive for c in s.conns))
        if not connected:
            state = FeedState.DOWN if self.stats.applied else FeedState.STARTING
        else:
            state = FeedState.STALE if stale or connected < len(self.shards) else FeedState.UP
        return {
            "state": state,
            "symbols": sum(len(s.symbols) for s in self.shards),
            "shards": len(self.shards),
            "connections": sum(1 for s in self.shards for c in s.conns if c.alive),
            "stale": len(stale),
            "stale_symbols": stale[:_MAX_STALE_LISTED],
            **asdict(self.stats),
        }

    # -- shards ---------------------------------------------------------------------------

    def _plan_shards(self) -> None:
        symbols = self.mirrored()
        now = self.monotonic()
        self.shards = []
        for i in range(0, len(symbols), self.shard_size):
            chunk = symbols[i : i + self.shard_size]
            streams = "/".join(f"{s.lower()}@aggTrade" for s in chunk)
            url = f"{self.stream_url}/stream?streams={streams}"
            self.shards.append(_Shard(len(self.shards), frozenset(chunk), url, now))
        log.info(
            "mirroring %d symbols over %d connection(s) to %s",
            len(symbols),
            len(self.shards),
            self.stream_url,
        )
        if "fstream.binance.com" in self.stream_url and not self.stream_url.endswith("/market"):
            log.warning(
                "%s is not the /market path: since 2026-04-23 Binance serves aggTrade only under "
                "wss://fstream.binance.com/market, and other paths stay silent",
                self.stream_url,
            )

    def _session_(self) -> aiohttp.ClientSession:
        if self._session is None:
            # trust_env off: the mirror goes where it is told, never through an env proxy.
            self._session = aiohttp.ClientSession(trust_env=False)
        return self._session

    async def _run_shard(self, shard: _Shard, book: PriceBook) -> None:
        previous: _Conn | None = None
        while True:
            conn = await self._open(shard, book)
            gap = previous is None or not previous.alive
            if previous is not None:
                # The successor is open: only now let the old connection go.
                shard.conns.remove(previous)
                await previous.close(self.close_timeout_s)
                if not gap:
                    self.stats.rollovers += 1
                    log.info("shard %d rolled over to a new connection", shard.index)
            previous = None
            if gap:
                self._bootstrap_wanted.set()
            remaining = conn.opened + self.rollover_after_s - self.monotonic()
            assert conn.reader is not None
            done, _ = await asyncio.wait({conn.reader}, timeout=max(0.0, remaining))
            if not done:
                previous = conn  # rollover due: open the successor first
                continue
            lived = self.monotonic() - conn.opened
            self.stats.drops += 1
            failure = None if conn.reader.cancelled() else conn.reader.exception()
            if failure is not None:  # a bug, not the network: say so, then carry on
                log.error("shard %d: reader failed", shard.index, exc_info=failure)
                conn.reason = f"reader failed: {failure!r}"
            shard.conns.remove(conn)
            await conn.close(self.close_timeout_s)
            if lived >= self.stable_after_s:
                shard.failures = 0
            delay = self._backoff(shard)
            log.warning(
                "shard %d: connection lost after %.1f s (%s); reconnecting in %.2f s",
                shard.index,
                lived,
                conn.reason,
                delay,
            )
            await asyncio.sleep(delay)

    async def _open(self, shard: _Shard, book: PriceBook) -> _Conn:
        """Connect ``shard`` (retrying with backoff until it works) and start its reader."""
        while True:
            await self._hold()
            retry_after: int | None = None
            try:
                async with asyncio.timeout(self.connect_timeout_s):
                    ws = await self._session_().ws_connect(
                        shard.url,
                        autoping=True,
                        heartbeat=None,
                        compress=0,
                        max_msg_size=self.max_message_bytes,
                    )
            except aiohttp.WSServerHandshakeError as exc:
                retry_after = _retry_after(exc.headers)
                where = f"stream handshake at {self.stream_url}/stream"
                error: BaseException = UpstreamError(where, exc.status, retry_after)
            except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                error = exc
            else:
                now = self.monotonic()
                conn = _Conn(ws, now)
                conn.reader = asyncio.create_task(self._read(shard, conn, book))
                shard.conns.append(conn)
                shard.subscribed_at = now
                self.stats.connects += 1
                log.info("shard %d connected (%d streams)", shard.index, len(shard.symbols))
                return conn
            delay = self._backoff(shard, retry_after)
            self._report_failure(f"stream connection (shard {shard.index})", error, delay)
            await asyncio.sleep(delay)

    async def _read(self, shard: _Shard, conn: _Conn, book: PriceBook) -> None:
        ws = conn.ws
        while True:
            try:
                msg = await ws.receive(timeout=self.idle_timeout_s)
            except TimeoutError:
                conn.reason = f"nothing received for {self.idle_timeout_s:g} s"
                return
            kind = msg.type
            if kind is aiohttp.WSMsgType.TEXT:
                self._on_event(shard, msg.data, book)
            elif kind is aiohttp.WSMsgType.BINARY:
                self._reject("binary", "-", "binary message ignored")
            else:
                code = ws.close_code
                if kind is aiohttp.WSMsgType.ERROR:
                    conn.reason = f"error: {msg.data!r}"
                else:
                    conn.reason = f"closed by upstream (code {code})"
                return

    # -- events ---------------------------------------------------------------------------

    def _on_event(self, shard: _Shard, text: str, book: PriceBook) -> None:
        """Apply one combined-stream message: ``{"stream": ..., "data": {aggTrade}}``."""
        self.stats.events += 1
        try:
            message = orjson.loads(text)
        except orjson.JSONDecodeError:
            self._reject("json", "-", f"not JSON: {text[:_EXCERPT]!r}")
            return
        data = message.get("data") if isinstance(message, dict) else None
        if not isinstance(data, dict) or data.get("e") != "aggTrade":
            self._reject("event", "-", f"not an aggTrade event: {text[:_EXCERPT]!r}")
            return
        symbol = data.get("s")
        if not isinstance(symbol, str) or symbol not in shard.symbols:
            self._reject("symbol", str(symbol), f"event for unsubscribed symbol {symbol!r}")
            return
        self._last_event[symbol] = self.monotonic()
        agg = data.get("a")
        if type(agg) is int and agg <= self._last_agg.get(symbol, -1):
            self.stats.skipped += 1  # seen already (rollover overlap)
            return
        trade_time = data.get("T")
        current = book.get(symbol)
        if current is not None and type(trade_time) is int and trade_time < current.time_ms:
            self.stats.skipped += 1
            return
        try:
            tick = book.make_tick(symbol, data.get("p"), trade_time)  # type: ignore[arg-type]
        except TickRejected as exc:
            self._reject("tick", symbol, str(exc))
            return
        book.update(tick)
        if type(agg) is int:
            self._last_agg[symbol] = agg
        self.stats.applied += 1

    def _reject(self, kind: str, symbol: str, text: str) -> None:
        self.stats.rejected += 1
        key = (kind, symbol)
        if key not in self._warned and len(self._warned) < _MAX_WARNED:
            self._warned.add(key)
            log.warning("ignored upstream data: %s (further ones logged at DEBUG)", text)
        else:
            log.debug("ignored upstream data: %s", text)

    # -- bootstrap ------------------------------------------------------------------------

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
                except _RETRYABLE as e:
                    retry_after = e.retry_after_s if isinstance(e, UpstreamError) else None
                    delay = self._delay(failures, retry_after)
                    failures += 1
                    self._report_failure("bootstrap", e, delay)
                    await asyncio.sleep(delay)

    async def _bootstrap(self, book: PriceBook) -> int:
        """Fetch every last price once and apply those newer than the book's; return how
        many were applied."""
        url = self.rest_url + TICKER_PATH
        await self._hold()
        async with asyncio.timeout(self.bootstrap_timeout_s):
            async with self._session_().get(url, allow_redirects=False) as response:
                body = await _read_bounded(response, self.max_bootstrap_bytes)
                if response.status != 200:
                    detail = body[:_EXCERPT].decode("utf-8", "replace")
                    raise UpstreamError(
                        f"GET {url}", response.status, _retry_after(response.headers), detail
                    )
        rows = orjson.loads(body)
        if not isinstance(rows, list):
            raise UpstreamDataError(f"GET {url}: not a JSON array")
        wanted = frozenset(self.mirrored()) if self.symbols is None else self.symbols
        ticks = []
        for row in rows:
            if not isinstance(row, dict):
                self._reject("row", "-", f"bootstrap row is not an object: {row!r:.{_EXCERPT}}")
                continue
            symbol = row.get("symbol")
            if not isinstance(symbol, str) or symbol not in wanted:
                continue  # a contract this feed does not mirror
            time_ms = row.get("time")
            current = book.get(symbol)
            if current is not None and type(time_ms) is int and time_ms <= current.time_ms:
                self.stats.skipped += 1
                continue
            try:
                ticks.append(book.make_tick(symbol, row.get("price"), time_ms))  # type: ignore[arg-type]
            except TickRejected as exc:
                self._reject("row", symbol, f"bootstrap: {exc}")
        book.apply(ticks)
        self.stats.applied += len(ticks)
        self.stats.bootstraps += 1
        log.info("bootstrap: %d prices applied from %s", len(ticks), url)
        return len(ticks)

    # -- backoff, refusals, staleness -------------------------------------------------------

    def _delay(self, failures: int, retry_after_s: int | None) -> float:
        """Exponential backoff with jitter (half to all of the step), at least Retry-After."""
        delay = jittered_backoff(failures, self.backoff_initial_s, self.backoff_max_s, self.rng)
        return max(delay, float(retry_after_s or 0))

    def _backoff(self, shard: _Shard, retry_after_s: int | None = None) -> float:
        delay = self._delay(shard.failures, retry_after_s)
        shard.failures += 1
        return delay

    async def _hold(self) -> None:
        """Wait out the last Retry-After, if it has not passed."""
        wait = self._hold_until - self.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)

    def _report_failure(self, what: str, exc: BaseException, delay: float | None) -> None:
        then = f"; retrying in {delay:.2f} s" if delay is not None else ""
        if isinstance(exc, UpstreamError):
            hold: float | None = exc.retry_after_s
            if hold is None and exc.status in REFUSALS:
                hold = self.backoff_max_s  # a refusal without Retry-After: the longest wait
            if hold:
                self._hold_until = max(self._hold_until, self.monotonic() + hold)
            self.stats.refusals += 1
            self.stats.last_refusal = {
                "what": what,
                "status": exc.status,
                "retry_after": exc.retry_after_s,
            }
            log.error(
                "upstream refused %s: %s; Retry-After %s%s",
                what,
                exc,
                exc.retry_after_s if exc.retry_after_s is not None else "none",
                then,
            )
        else:
            log.warning("%s failed: %s%s", what, _describe(exc), then)

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


def _retry_after(headers: Mapping[str, str] | None) -> int | None:
    """The ``Retry-After`` header in whole seconds, if it is one (dates are ignored)."""
    value = headers.get("Retry-After") if headers is not None else None
    if value is None or not value.strip().isdigit() or not value.isascii():
        return None
    return int(value.strip())


async def _read_bounded(response: aiohttp.ClientResponse, limit: int) -> bytes:
    """The response body, refusing one larger than ``limit`` bytes."""
    if response.content_length is not None and response.content_length > limit:
        raise UpstreamDataError(f"response body of {response.content_length} bytes; limit {limit}")
    body = bytearray()
    async for chunk in response.content.iter_chunked(64 * 1024):
        body += chunk
        if len(body) > limit:
            raise UpstreamDataError(f"response body over {limit} bytes")
    return bytes(body)


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__

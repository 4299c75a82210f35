"""A client of the Binance USDⓈ-M Futures WebSocket API: tickerd's, or Binance's own.

https://developers.binance.com/docs/derivatives/usds-margined-futures/websocket-api-general-info
https://developers.binance.com/docs/derivatives/usds-margined-futures/market-data/websocket-api/Symbol-Price-Ticker

Theory of operation
-------------------
One WebSocket connection (a :class:`~tickerd.client.link.Link`) carries every request. Each request gets a
string id (a random per-client prefix and a counter) and a future in the link's table of
requests in flight, so up to ``max_in_flight`` requests are outstanding at once and replies
are paired with callers whatever their order. A request waits at most ``timeout`` seconds
in all for its slot, its connection and its reply.

Replies are parsed with orjson. An ``error`` reply raises the :mod:`tickerd.errors` class
the server itself raised (:meth:`BinanceError.from_wire`); the last ``REQUEST_WEIGHT``
entry of ``rateLimits`` is kept as :attr:`Client.weight_used` / :attr:`Client.weight_limit`.
A 429 or 418 reply carrying ``retryAfter`` blocks the client until then (measured from the
reply's ``serverTime``, so clock skew does not matter): later requests sleep the block out
instead of earning a longer ban, or, when it lasts longer than ``max_wait``, raise the
stored error at once without sending anything.

Connections end: Binance's 24 h close, server restarts, a dropped TCP connection. When a
link goes down, every request in flight on it fails at once with
:class:`~tickerd.errors.ConnectionLost` (retrying is the caller's choice), and the client
reconnects in the background: exponential backoff with seeded jitter, at most
``connect_attempts`` attempts per cycle. A request that finds no link joins the running
cycle or starts one. picows answers server pings; the client pings an idle connection
itself, so a silently dead TCP connection is noticed. A ``serverShutdown`` event (sent by
Binance before planned restarts) moves new requests to a fresh connection while the old
one finishes the requests it carries.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import random
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any, Self, overload

import orjson
from picows import WSError, WSInvalidStatusError, WSInvalidURL, ws_connect

from ..backoff import jittered_backoff
from ..clock import Clock, SystemClock
from ..errors import BinanceError, ConnectionLost, ProtocolError, RequestTimeout
from ..models import PriceTicker
from ..timestamps import utc_stamp, with_utc
from .link import Link
from .replies import Final, copy_error, refusal, result_of, retrieve, weight_entry

__all__ = ["CLOSE_TIMEOUT_S", "DEFAULT_URL", "Client"]

log = logging.getLogger("tickerd.client")
wire_log = logging.getLogger("tickerd.client.wire")

#: tickerd's default WebSocket API address (Binance's: ``wss://ws-fapi.binance.com/ws-fapi/v1``).
DEFAULT_URL = "ws://127.0.0.1:9000/ws-fapi/v1"
#: Seconds :meth:`Client.close` waits for its connections to end.
CLOSE_TIMEOUT_S = 2.0

Sleep = Callable[[float], Awaitable[None]]

_MAX_BLOCK_WAITS = 100  # sleeps in one request while a 429/418 block lasts, at most


class Client:
    """An asyncio client of a Binance-compatible USDⓈ-M Futures WebSocket API.

    >>> async with Client("ws://127.0.0.1:9000/ws-fapi/v1") as client:  # doctest: +SKIP
    ...     btc = await client.ticker_price("BTCUSDT")   # PriceTicker
    ...     every = await client.ticker_price()          # list[PriceTicker]

    Works against tickerd and against ``wss://ws-fapi.binance.com/ws-fapi/v1``
    (https://developers.binance.com/docs/derivatives/usds-margined-futures/websocket-api-general-info).

    Options: ``timeout`` bounds each request (slot, connection and reply); at most
    ``max_in_flight`` requests are outstanding, more wait for a slot. With
    ``respect_retry_after`` a request that would meet a known 429/418 ``retryAfter`` sleeps
    until then, unless that is more than ``max_wait`` seconds away: then the stored error
    is raised without sending. A lost connection is reopened with exponential backoff
    (``backoff_base`` doubling up to ``backoff_max``, jittered by ``random.Random(seed)``),
    ``connect_attempts`` tries per cycle. ``clock`` and ``sleep`` are what the rate-limit
    and backoff waits read and call (tests inject a manual clock and a fake sleep).
    """

    def __init__(  # noqa: PLR0913 - keyword-only options
        self,
        url: str = DEFAULT_URL,
        *,
        timeout: float = 10.0,
        max_in_flight: int = 10_000,
        respect_retry_after: bool = True,
        max_wait: float = 60.0,
        connect_timeout: float = 10.0,
        connect_attempts: int = 5,
        backoff_base: float = 0.1,
        backoff_max: float = 10.0,
        reconnect: bool = True,
        ping_interval: float | None = 30.0,
        pong_timeout: float = 10.0,
        max_message_bytes: int = 16 * 1024 * 1024,
        seed: int | None = None,
        clock: Clock | None = None,
        sleep: Sleep | None = None,
    ) -> None:
        if timeout <= 0 or connect_timeout <= 0 or max_wait < 0:
            raise ValueError("timeouts must be positive and max_wait not negative")
        if max_in_flight < 1 or connect_attempts < 1 or max_message_bytes < 1:
            raise ValueError("max_in_flight, connect_attempts and max_message_bytes must be >= 1")
        if backoff_base < 0 or backoff_max < 0:
            raise ValueError("backoff must not be negative")
        self.url = url
        self.timeout = timeout
        self.max_in_flight = max_in_flight
        self.respect_retry_after = respect_retry_after
        self.max_wait = max_wait
        self.connect_timeout = connect_timeout
        self.connect_attempts = connect_attempts
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.reconnect = reconnect
        self.ping_interval = ping_interval
        self.pong_timeout = pong_timeout
        self.max_message_bytes = max_message_bytes
        self._rng = random.Random(seed)
        self._clock: Clock = clock or SystemClock()
        self._sleep: Sleep = sleep or asyncio.sleep
        self._id_prefix = f"{self._rng.getrandbits(32):08x}-"
        self._ids = itertools.count(1)
        self._slots = asyncio.Semaphore(max_in_flight)
        self._link: Link | None = None
        self._links: set[Link] = set()
        self._connecting: asyncio.Future[Link] | None = None
        self._connected_once = False
        self._closed = False
        self._blocked_until = 0
        self._blocked_error: BinanceError | None = None
        #: ``count`` of the last ``REQUEST_WEIGHT`` rate limit a reply showed (None: none yet).
        self.weight_used: int | None = None
        #: ``limit`` of that rate limit.
        self.weight_limit: int | None = None
        #: The last ``rateLimits`` array a reply carried, as sent.
        self.rate_limits: list[dict[str, Any]] = []
        #: How many times a connection was reopened after the first one.
        self.reconnects = 0

    # -- lifecycle ------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        await self.connect()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def connect(self) -> None:
        """Open the connection now (requests also open it on demand)."""
        await self._ready_link()

    async def close(self) -> None:
        """Close the connection; requests in flight fail with :class:`ConnectionLost`."""
        self._closed = True
        connecting, self._connecting = self._connecting, None
        if connecting is not None and not connecting.done():
            connecting.cancel()
            await asyncio.gather(connecting, return_exceptions=True)
        self._link = None
        links = list(self._links)
        for link in links:
            link.fail_all("client closed")
            link.close()
        if links:
            waits = [asyncio.ensure_future(link.disconnected.wait()) for link in links]
            _, late = await asyncio.wait(waits, timeout=CLOSE_TIMEOUT_S)
            for task in late:
                task.cancel()
            for link in links:
                if link.transport is not None and not link.transport.is_disconnected:
                    link.transport.disconnect(graceful=False)

    @property
    def connected(self) -> bool:
        """Whether a connection is open for new requests."""
        return self._link is not None and self._link.usable

    @property
    def in_flight(self) -> int:
        """Requests sent and not yet answered."""
        return sum(len(link.pending) for link in self._links)

    # -- requests -------------------------------------------------------------------------

    @overload
    async def ticker_price(self, symbol: str, *, timeout: float | None = None) -> PriceTicker: ...

    @overload
    async def ticker_price(
        self, symbol: None = None, *, timeout: float | None = None
    ) -> list[PriceTicker]: ...

    async def ticker_price(
        self, symbol: str | None = None, *, timeout: float | None = None
    ) -> PriceTicker | list[PriceTicker]:
        """The latest price of ``symbol``, or of every symbol (a list) without one.

        https://developers.binance.com/docs/derivatives/usds-margined-futures/market-data/websocket-api/Symbol-Price-Ticker
        (weight 1 with a symbol, 2 without). An unknown symbol raises
        :class:`~tickerd.errors.RequestError` with code -1121.
        """
        if symbol is None:
            result = await self.request("ticker.price", timeout=timeout)
            if type(result) is not list:
                raise ProtocolError(f"ticker.price without a symbol returned {result!r:.200}")
            return [PriceTicker.from_wire(item) for item in result]
        result = await self.request("ticker.price", {"symbol": symbol}, timeout=timeout)
        ticker = PriceTicker.from_wire(result)
        if ticker.symbol != symbol:
            raise ProtocolError(f"asked for {symbol}, the reply is for {ticker.symbol}")
        return ticker

    async def request(
        self,
        method: str,
        params: dict[str, Any] | None = None,
        *,
        timeout: float | None = None,
    ) -> Any:
        """Send one request and return its ``result`` (any method the server knows).

        Raises the :mod:`tickerd.errors` class of an ``error`` reply,
        :class:`~tickerd.errors.RequestTimeout`, :class:`~tickerd.errors.ConnectionLost`
        or :class:`~tickerd.errors.ProtocolError`.
        https://developers.binance.com/docs/derivatives/usds-margined-futures/websocket-api-general-info
        """
        if self._closed:
            raise ConnectionLost("the client is closed")
        await self._wait_out_block()
        limit = self.timeout if timeout is None else timeout
        request: dict[str, Any] = {"id": "", "method": method}
        if params:
            request["params"] = params
        deadline = asyncio.timeout(limit)
        try:
            async with deadline, self._slots:
                link = await self._ready_link()
                rid = f"{self._id_prefix}{next(self._ids)}"
                request["id"] = rid
                future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
                link.pending[rid] = future
                try:
                    link.send(orjson.dumps(request))
                    reply = await future
                finally:
                    link.pending.pop(rid, None)
        except TimeoutError:
            if deadline.expired():
                raise RequestTimeout(f"no reply to {method} within {limit} s") from None
            raise
        return result_of(reply)

    # -- replies --------------------------------------------------------------------------

    def _on_message(self, link: Link, payload: bytes) -> None:
        try:
            msg = orjson.loads(payload)
        except orjson.JSONDecodeError:
            log.warning("ignoring a frame that is not JSON: %r", payload[:200])
            return
        if type(msg) is not dict:
            log.warning("ignoring a frame that is not a JSON object: %r", payload[:200])
            return
        rid = msg.get("id")
        future = link.pending.pop(rid, None) if type(rid) is str else None
        if future is None:
            event = msg.get("event")
            if type(event) is dict and event.get("e") == "serverShutdown":
                self._drain(link)
            else:
                # e.g. an envelope error ("id": null): nothing to pair it with; the request
                # it belongs to times out.
                log.warning("ignoring a reply to no request in flight: %r", payload[:200])
            return
        self._observe(msg)
        if not future.done():
            future.set_result(msg)
        if link.draining and not link.pending:
            link.close()

    def _observe(self, msg: dict[str, Any]) -> None:
        """Note the weight a reply reports and any 429/418 block it announces."""
        weight = weight_entry(msg)
        if weight is not None:
            self.weight_used, self.weight_limit, self.rate_limits = weight
        status, error = msg.get("status"), msg.get("error")
        if status in (418, 429) and type(error) is dict:
            self._block(BinanceError.from_wire(status, error))

    def _block(self, error: BinanceError) -> None:
        if error.retry_after_ms is None:
            return
        now = self._clock.now_ms()
        if error.server_time_ms is not None:
            until = now + max(0, error.retry_after_ms - error.server_time_ms)
        else:
            until = error.retry_after_ms
        if until > self._blocked_until:
            self._blocked_until, self._blocked_error = until, error

    async def _wait_out_block(self) -> None:
        """Sleep out a known 429/418 block, or raise it when it outlasts ``max_wait``."""
        for _ in range(_MAX_BLOCK_WAITS):
            error = self._blocked_error
            if error is None or not self.respect_retry_after:
                return
            wait_ms = self._blocked_until - self._clock.now_ms()
            if wait_ms <= 0:
                self._blocked_error, self._blocked_until = None, 0
                return
            if wait_ms > self.max_wait * 1000:
                raise copy_error(error)
            log.info(
                "waiting %d ms for the rate limit, until %s: %s",
                wait_ms,
                utc_stamp(self._blocked_until),
                with_utc(error.msg),
            )
            await self._sleep(wait_ms / 1000)
        error = self._blocked_error
        if error is not None:
            raise copy_error(error)

    # -- connections ----------------------------------------------------------------------

    async def _ready_link(self) -> Link:
        link = self._link
        if link is not None and link.usable:
            return link
        if self._closed:
            raise ConnectionLost("the client is closed")
        self._start_cycle()
        assert self._connecting is not None
        # Shielded: one caller's timeout must not cancel the cycle others are waiting for.
        return await asyncio.shield(self._connecting)

    async def _connect_cycle(self) -> Link:
        last: Exception | None = None
        for attempt in range(self.connect_attempts):
            if attempt:
                await self._sleep(self._backoff(attempt))
            if self._closed:
                raise ConnectionLost("the client is closed")
            try:
                link = await self._open()
            except Final as final:
                raise final.error from None
            except ConnectionLost as exc:
                last = exc
                log.info("connect attempt %d to %s failed: %s", attempt + 1, self.url, exc)
                continue
            if self._closed:
                link.close()
                raise ConnectionLost("the client is closed")
            if self._connected_once:
                self.reconnects += 1
                log.info("reconnected to %s", self.url)
            self._connected_once = True
            self._link = link
            return link
        tries = f"{self.connect_attempts} attempts" if self.connect_attempts > 1 else "1 attempt"
        raise ConnectionLost(f"cannot connect to {self.url} ({tries}): {last}")

    def _backoff(self, attempt: int) -> float:
        """Seconds before attempt ``attempt`` (1, 2, ...): half fixed, half seeded jitter."""
        return jittered_backoff(attempt - 1, self.backoff_base, self.backoff_max, self._rng)

    async def _open(self) -> Link:
        try:
            async with asyncio.timeout(self.connect_timeout):
                _, listener = await ws_connect(
                    self._new_link,
                    self.url,
                    websocket_handshake_timeout=self.connect_timeout,
                    logger_name=wire_log,
                    enable_auto_ping=self.ping_interval is not None,
                    auto_ping_idle_timeout=self.ping_interval or 30.0,
                    auto_ping_reply_timeout=self.pong_timeout,
                    enable_auto_pong=True,
                    max_frame_size=self.max_message_bytes,
                )
        except WSInvalidStatusError as exc:
            error, block = refusal(exc, self.url, self._clock.now_ms())
            if block is not None:
                self._block(block)
            raise error from exc
        except (WSInvalidURL, ValueError) as exc:  # retrying cannot mend the URL
            raise Final(ConnectionLost(f"{self.url!r} is not a WebSocket URL: {exc}")) from exc
        except (OSError, WSError, TimeoutError) as exc:
            raise ConnectionLost(str(exc) or type(exc).__name__) from exc
        assert isinstance(listener, Link)
        self._links.add(listener)
        return listener

    def _new_link(self) -> Link:
        return Link(self.url, self.max_message_bytes, self._on_message, self._link_down)

    def _start_cycle(self) -> None:
        if not self._closed and (self._connecting is None or self._connecting.done()):
            self._connecting = asyncio.ensure_future(self._connect_cycle())
            self._connecting.add_done_callback(retrieve)

    def _link_down(self, link: Link) -> None:
        self._links.discard(link)
        if link is self._link:
            self._link = None
            if self.reconnect and not self._closed:
                log.info("connection to %s lost; reconnecting", self.url)
                self._start_cycle()

    def _drain(self, link: Link) -> None:
        """``serverShutdown``: new requests go to a new connection; this one finishes."""
        log.info("%s announced a shutdown; moving to a new connection", self.url)
        link.draining = link.closing = True
        if link is self._link:
            self._link = None
            self._start_cycle()
        if not link.pending:
            link.close()

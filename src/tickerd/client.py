"""A client of the Binance USDⓈ-M Futures WebSocket API: tickerd's, or Binance's own.

https://developers.binance.com/docs/derivatives/usds-margined-futures/websocket-api-general-info
https://developers.binance.com/docs/derivatives/usds-margined-futures/market-data/websocket-api/Symbol-Price-Ticker

Theory of operation
-------------------
One WebSocket connection (a :class:`_Link`) carries every request. Each request gets a
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
import concurrent.futures
import itertools
import logging
import random
import re
import threading
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from types import TracebackType
from typing import Any, Self, TypeVar, overload

import orjson
from picows import (
    WSCloseCode,
    WSError,
    WSFrame,
    WSInvalidStatusError,
    WSListener,
    WSMsgType,
    WSTransport,
    ws_connect,
)

from .backoff import jittered_backoff
from .clock import Clock, SystemClock
from .errors import (
    BinanceError,
    ConnectionLost,
    ProtocolError,
    RequestTimeout,
    TickerdError,
)

__all__ = ["DEFAULT_URL", "Client", "PriceTicker", "SyncClient"]

log = logging.getLogger("tickerd.client")
wire_log = logging.getLogger("tickerd.client.wire")

#: tickerd's default WebSocket API address (Binance's: ``wss://ws-fapi.binance.com/ws-fapi/v1``).
DEFAULT_URL = "ws://127.0.0.1:9000/ws-fapi/v1"

T = TypeVar("T")
Sleep = Callable[[float], Awaitable[None]]

_PRICE_RE = re.compile(r"-?[0-9]+(?:\.[0-9]+)?(?:[eE][-+]?[0-9]+)?")
_MAX_BLOCK_WAITS = 100  # sleeps in one request while a 429/418 block lasts, at most
_CLOSE_TIMEOUT_S = 2.0
_ECHOED_CLOSE_CODES = frozenset(
    c for c in WSCloseCode if c not in (WSCloseCode.NO_INFO, WSCloseCode.ABNORMAL_CLOSURE)
)


@dataclass(frozen=True, slots=True)
class PriceTicker:
    """One ``ticker.price`` result: the last trade price of ``symbol`` and its time.

    https://developers.binance.com/docs/derivatives/usds-margined-futures/market-data/websocket-api/Symbol-Price-Ticker

    ``price`` is exact: parsed from the JSON string Binance sends, never through a float.
    """

    symbol: str
    price: Decimal
    time_ms: int

    @classmethod
    def from_wire(cls, obj: Any) -> PriceTicker:
        """Parse ``{"symbol": str, "price": str, "time": int}``; :class:`ProtocolError` if not."""
        if type(obj) is not dict:
            raise ProtocolError(f"ticker.price result is not an object: {obj!r:.200}")
        symbol, price, time_ms = obj.get("symbol"), obj.get("price"), obj.get("time")
        if type(symbol) is not str or not symbol:
            raise ProtocolError(f"ticker.price symbol is not a string: {symbol!r:.100}")
        if type(price) is not str:
            raise ProtocolError(
                f"ticker.price price of {symbol} is not a JSON string: {price!r:.100}"
                " (Binance sends prices as strings; a JSON number may have lost digits)"
            )
        if not _PRICE_RE.fullmatch(price):
            raise ProtocolError(f"ticker.price price of {symbol} is not a decimal: {price!r:.100}")
        try:
            value = Decimal(price)
        except InvalidOperation:  # pragma: no cover - the pattern admits only decimals
            raise ProtocolError(f"ticker.price price of {symbol} is not a decimal") from None
        if type(time_ms) is not int or time_ms < 0:
            raise ProtocolError(f"ticker.price time of {symbol} is not an integer: {time_ms!r}")
        return cls(symbol, value, time_ms)


class _Link(WSListener):
    """One WebSocket connection: its requests in flight and its end."""

    def __init__(self, client: Client) -> None:
        super().__init__()
        self.client = client
        self.transport: WSTransport | None = None
        self.pending: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self.closing = False  # no new requests: a close frame passed, or it is draining
        self.draining = False  # serverShutdown: finish what is in flight, then close
        self.close_code: int | None = None
        self.close_reason = ""
        self.fragments: list[bytes] | None = None
        self.fragments_size = 0
        self.disconnected = asyncio.Event()

    @property
    def usable(self) -> bool:
        t = self.transport
        return not self.closing and t is not None and not t.is_disconnected

    @property
    def detail(self) -> str:
        """The close code and reason, as one string."""
        return f"{self.close_code} {self.close_reason}".strip()

    def send(self, payload: bytes) -> None:
        assert self.transport is not None
        self.transport.send(WSMsgType.TEXT, payload)

    def fail_all(self, why: str) -> None:
        """Fail every request in flight with :class:`ConnectionLost`."""
        pending, self.pending = self.pending, {}
        for fut in pending.values():
            if not fut.done():
                fut.set_exception(
                    ConnectionLost(why, close_code=self.close_code, close_reason=self.close_reason)
                )

    def close(self, code: WSCloseCode = WSCloseCode.OK) -> None:
        self.closing = True
        t = self.transport
        if t is not None and not t.is_disconnected:
            if not t.is_close_frame_sent:
                t.send_close(code)
            t.disconnect()

    # -- picows callbacks -----------------------------------------------------------------

    def on_ws_connected(self, transport: WSTransport) -> None:
        self.transport = transport

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        self.closing = True
        if self.close_code is not None:
            why = f"connection closed ({self.detail})"
        else:
            why = "connection lost"
        self.fail_all(why)
        self.disconnected.set()
        self.client._link_down(self)

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        kind = frame.msg_type
        if kind == WSMsgType.TEXT and frame.fin and self.fragments is None:
            self.client._on_message(self, frame.get_payload_as_bytes())
        elif kind == WSMsgType.CLOSE:
            self._closed_by_server(transport, frame)
        elif kind == WSMsgType.TEXT or (kind == WSMsgType.CONTINUATION and self.fragments):
            self._fragment(frame)
        elif kind == WSMsgType.BINARY:
            log.warning("ignoring a binary frame from %s", self.client.url)

    def _fragment(self, frame: WSFrame) -> None:
        if frame.msg_type == WSMsgType.TEXT:
            self.fragments, self.fragments_size = [], 0
        assert self.fragments is not None
        self.fragments_size += frame.payload_size
        if self.fragments_size > self.client.max_message_bytes:
            self.fragments = None
            self.close_code, self.close_reason = 1009, "reply larger than max_message_bytes"
            self.fail_all(f"the client closed the connection ({self.detail})")
            self.close(WSCloseCode.MESSAGE_TOO_BIG)
            return
        self.fragments.append(frame.get_payload_as_bytes())
        if frame.fin:
            payload = b"".join(self.fragments)
            self.fragments = None
            self.client._on_message(self, payload)

    def _closed_by_server(self, transport: WSTransport, frame: WSFrame) -> None:
        code = frame.get_close_code()
        self.close_code = code.value if isinstance(code, WSCloseCode) else int(code)
        try:
            self.close_reason = frame.get_close_reason()
        except UnicodeDecodeError:
            self.close_reason = ""
        self.closing = True
        # Replies precede the close frame on the wire: whatever is still pending is lost.
        self.fail_all(f"the server closed the connection ({self.detail})")
        if not transport.is_close_frame_sent:
            transport.send_close(code if code in _ECHOED_CLOSE_CODES else WSCloseCode.OK)
        transport.disconnect()


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

    def __init__(
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
        self._link: _Link | None = None
        self._links: set[_Link] = set()
        self._connecting: asyncio.Future[_Link] | None = None
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
            _, late = await asyncio.wait(waits, timeout=_CLOSE_TIMEOUT_S)
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
        return _result(reply)

    # -- replies --------------------------------------------------------------------------

    def _on_message(self, link: _Link, payload: bytes) -> None:
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
        limits = msg.get("rateLimits")
        if type(limits) is list:
            for entry in limits:
                if type(entry) is dict and entry.get("rateLimitType") == "REQUEST_WEIGHT":
                    count, limit = entry.get("count"), entry.get("limit")
                    if type(count) is int and type(limit) is int:
                        self.weight_used, self.weight_limit = count, limit
                        self.rate_limits = limits
                        if entry.get("interval") == "MINUTE":
                            break
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
                raise _copy(error)
            log.info("waiting %d ms for the rate limit (%s)", wait_ms, error.msg)
            await self._sleep(wait_ms / 1000)
        error = self._blocked_error
        if error is not None:
            raise _copy(error)

    # -- connections ----------------------------------------------------------------------

    async def _ready_link(self) -> _Link:
        link = self._link
        if link is not None and link.usable:
            return link
        if self._closed:
            raise ConnectionLost("the client is closed")
        self._start_cycle()
        assert self._connecting is not None
        # Shielded: one caller's timeout must not cancel the cycle others are waiting for.
        return await asyncio.shield(self._connecting)

    async def _connect_cycle(self) -> _Link:
        last: Exception | None = None
        for attempt in range(self.connect_attempts):
            if attempt:
                await self._sleep(self._backoff(attempt))
            if self._closed:
                raise ConnectionLost("the client is closed")
            try:
                link = await self._open()
            except _Final as final:
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

    async def _open(self) -> _Link:
        try:
            async with asyncio.timeout(self.connect_timeout):
                _, listener = await ws_connect(
                    lambda: _Link(self),
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
            raise self._refused(exc) from exc
        except (OSError, WSError, TimeoutError) as exc:
            raise ConnectionLost(str(exc) or type(exc).__name__) from exc
        assert isinstance(listener, _Link)
        self._links.add(listener)
        return listener

    def _refused(self, exc: WSInvalidStatusError) -> Exception:
        """The error for a refused handshake: Binance's own error when the body is one."""
        response = exc.response
        status = int(response.status) if response is not None else 0
        body = exc.raw_body or (response.body if response is not None else None) or b""
        try:
            wire = orjson.loads(body)
        except orjson.JSONDecodeError:
            wire = None
        if type(wire) is dict and "code" in wire:
            error = BinanceError.from_wire(status, wire)
            retry_s = response.headers.get("Retry-After") if response is not None else None
            if error.retry_after_ms is None and retry_s is not None and retry_s.isdigit():
                now = self._clock.now_ms()
                error.retry_after_ms, error.server_time_ms = now + int(retry_s) * 1000, now
            if status in (418, 429):
                self._block(error)
            if status >= 500:
                return ConnectionLost(f"handshake refused: {status} {error.code} {error.msg}")
            return _Final(error)
        if status >= 500:
            return ConnectionLost(f"handshake refused with HTTP {status}")
        return _Final(ConnectionLost(f"handshake refused with HTTP {status} by {self.url}"))

    def _start_cycle(self) -> None:
        if not self._closed and (self._connecting is None or self._connecting.done()):
            self._connecting = asyncio.ensure_future(self._connect_cycle())
            self._connecting.add_done_callback(_retrieve)

    def _link_down(self, link: _Link) -> None:
        self._links.discard(link)
        if link is self._link:
            self._link = None
            if self.reconnect and not self._closed:
                log.info("connection to %s lost; reconnecting", self.url)
                self._start_cycle()

    def _drain(self, link: _Link) -> None:
        """``serverShutdown``: new requests go to a new connection; this one finishes."""
        log.info("%s announced a shutdown; moving to a new connection", self.url)
        link.draining = link.closing = True
        if link is self._link:
            self._link = None
            self._start_cycle()
        if not link.pending:
            link.close()


class _Final(Exception):
    """A connection failure that retrying cannot fix (wraps the error to raise)."""

    def __init__(self, error: Exception) -> None:
        super().__init__(str(error))
        self.error = error


def _result(reply: dict[str, Any]) -> Any:
    status = reply.get("status")
    if "error" in reply:
        error = reply["error"]
        if type(status) is not int or type(error) is not dict:
            raise ProtocolError(f"malformed error reply: {reply!r:.300}")
        raise BinanceError.from_wire(status, error)
    if status != 200 or "result" not in reply:
        raise ProtocolError(f"reply without a result: {reply!r:.300}")
    return reply["result"]


def _copy(error: BinanceError) -> BinanceError:
    """A fresh instance of a stored error (raising one instance twice chains tracebacks)."""
    return type(error)(
        error.status,
        error.code,
        error.msg,
        retry_after_ms=error.retry_after_ms,
        server_time_ms=error.server_time_ms,
        used_weight=error.used_weight,
    )


def _retrieve(future: asyncio.Future[Any]) -> None:
    """Consume a background connect cycle's failure (callers see it when they await it)."""
    if not future.cancelled() and future.exception() is not None:
        log.debug("connect cycle failed: %s", future.exception())


# -- the sync wrapper ----------------------------------------------------------------------


def _new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on every POSIX system
        return asyncio.new_event_loop()
    loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
    return loop


class SyncClient:
    """:class:`Client` for code without an event loop: it runs one in a background thread.

    >>> with SyncClient("ws://127.0.0.1:9000/ws-fapi/v1") as client:  # doctest: +SKIP
    ...     print(client.ticker_price("BTCUSDT").price)

    Takes the same options as :class:`Client`; methods may be called from any thread.
    https://developers.binance.com/docs/derivatives/usds-margined-futures/market-data/websocket-api/Symbol-Price-Ticker
    """

    def __init__(self, url: str = DEFAULT_URL, **options: Any) -> None:
        self._loop = _new_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="tickerd-sync-client", daemon=True
        )
        self._thread.start()
        self._closed = False

        async def make() -> Client:
            return Client(url, **options)

        self._client: Client = self._call(make(), 5.0)
        c = self._client
        # Every wait inside the client is bounded; this outer bound only guards the thread.
        self._guard = (
            c.timeout + c.max_wait + c.connect_attempts * (c.connect_timeout + c.backoff_max) + 5
        )

    def _call(self, coro: Coroutine[Any, Any, T], guard: float | None = None) -> T:
        if self._closed:
            coro.close()
            raise ConnectionLost("the client is closed")
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            return future.result(guard if guard is not None else self._guard)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise RequestTimeout("the client's loop did not answer in time") from None

    def __enter__(self) -> Self:
        self.connect()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def url(self) -> str:
        """The WebSocket API URL."""
        return self._client.url

    @property
    def weight_used(self) -> int | None:
        """See :attr:`Client.weight_used`."""
        return self._client.weight_used

    @property
    def weight_limit(self) -> int | None:
        """See :attr:`Client.weight_limit`."""
        return self._client.weight_limit

    @property
    def reconnects(self) -> int:
        """See :attr:`Client.reconnects`."""
        return self._client.reconnects

    def connect(self) -> None:
        """See :meth:`Client.connect`."""
        self._call(self._client.connect())

    @overload
    def ticker_price(self, symbol: str, *, timeout: float | None = None) -> PriceTicker: ...

    @overload
    def ticker_price(
        self, symbol: None = None, *, timeout: float | None = None
    ) -> list[PriceTicker]: ...

    def ticker_price(
        self, symbol: str | None = None, *, timeout: float | None = None
    ) -> PriceTicker | list[PriceTicker]:
        """See :meth:`Client.ticker_price`."""
        if symbol is None:
            return self._call(self._client.ticker_price(timeout=timeout))
        return self._call(self._client.ticker_price(symbol, timeout=timeout))

    def request(
        self, method: str, params: dict[str, Any] | None = None, *, timeout: float | None = None
    ) -> Any:
        """See :meth:`Client.request`."""
        return self._call(self._client.request(method, params, timeout=timeout))

    def close(self) -> None:
        """Close the connection and stop the background loop."""
        if self._closed:
            return
        try:
            self._call(self._client.close(), _CLOSE_TIMEOUT_S + 5)
        except TickerdError:  # pragma: no cover - close is bounded; log and go on
            log.warning("closing the client timed out")
        finally:
            self._closed = True
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(5)
            if not self._thread.is_alive():
                self._loop.close()

"""The push ingest: the user's own system sends ticks over HTTP or a WebSocket.

An aiohttp server on its own address (``--push-host``, loopback by default, and
``--push-port``), separate from the public Binance surface, as DESIGN.md asks of admin and
push surfaces. Two paths:

* ``POST /ingest`` with ``{"ticks": [{"symbol": "BTCUSDT", "price": "97000.10",
  "time": 1700000000000}, ...]}`` → 200 ``{"accepted": N, "rejected": []}``, or 422 with
  every rejection and nothing applied.
* ``GET /ingest/ws`` (WebSocket): each text message is a batch of the same shape, each
  answered with one JSON message ``{"status": 200|4xx, "accepted": N, "rejected": [...]}``
  (an ``"id"`` in the batch is echoed back).

Auth: ``Authorization: Bearer <token>``, compared in constant time; missing or wrong →
401 and nothing read or applied (for the WebSocket, the handshake is refused).

A tick's fields follow the Binance shape served back by ``ticker.price``
(https://developers.binance.com/docs/derivatives/usds-margined-futures/market-data/websocket-api/Symbol-Price-Ticker):
``price`` a decimal *string* (a JSON number is refused: it would pass through a float),
on the symbol's tick grid (exchangeInfo PRICE_FILTER ``tickSize``); ``time`` a
non-negative 64-bit integer of epoch milliseconds at most
:data:`~tickerd.ticktime.FUTURE_SKEW_MS` ahead of the service clock, never older than the
stored tick, and non-decreasing per symbol within a batch. A WebSocket batch's ``"id"``
must be a string of at most :data:`MAX_ID_CHARS` characters or a 64-bit integer (or
null); any other id is answered 400 and the batch is not applied. A batch is validated whole, then applied in
one step with no ``await`` in between, so it lands entirely or not at all.

Bounds: ``max_batch`` ticks per batch, ``max_body_bytes`` per HTTP body and per WebSocket
message (413 / close 1009 above), ``max_connections`` simultaneous requests and sockets
(503 above), idle keep-alive connections closed after 75 s, WebSocket peers that stop
answering pings closed after ``HEARTBEAT_S``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import Collection
from typing import Any

import orjson
from aiohttp import WSMsgType, web

from ..book import PriceBook, TickRejected
from ..clock import Clock, SystemClock
from ..models import Tick
from ..symbols import SymbolUniverse
from ..ticktime import tick_time_problem
from ..transport.aio import Site, bearer_matches, netloc
from .state import FeedState

log = logging.getLogger("tickerd.feeds.push")

INGEST_PATH = "/ingest"
INGEST_WS_PATH = "/ingest/ws"
DEFAULT_MAX_BATCH = 10_000
DEFAULT_MAX_BODY_BYTES = 4 * 1024 * 1024
DEFAULT_MAX_CONNECTIONS = 64
HEARTBEAT_S = 30.0  # WebSocket ingest: ping after this much silence, close if unanswered
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
MAX_PRICE_CHARS = 40
MAX_ID_CHARS = 64
MAX_SYMBOL_ECHO = 64  # characters of a refused symbol echoed in its rejection
_DECIMAL = re.compile(r"-?[0-9]+(?:\.[0-9]+)?")


class BatchError(Exception):
    """A batch that cannot be read at all (not per-tick): its HTTP status and text."""

    def __init__(self, status: int, text: str) -> None:
        super().__init__(text)
        self.status = status
        self.text = text


def _rejection(index: int, symbol: Any, code: str, reason: str) -> dict[str, Any]:
    entry: dict[str, Any] = {"index": index}
    if isinstance(symbol, str):
        entry["symbol"] = printable(symbol[:MAX_SYMBOL_ECHO])
    entry["code"] = code
    entry["reason"] = reason
    return entry


class PushFeed:
    """Accepts authenticated batches of ticks and applies each one atomically.

    ``symbols``: the contracts this feed may write; None until
    :func:`~tickerd.feeds.build_feeds` assigns the rest, and if still None at run time, any
    contract of the universe.
    """

    name = "push"

    def __init__(  # noqa: PLR0913 - keyword-only options
        self,
        universe: SymbolUniverse,
        *,
        token: str,
        host: str = "127.0.0.1",
        port: int = 9002,
        symbols: Collection[str] | None = None,
        max_batch: int = DEFAULT_MAX_BATCH,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        clock: Clock | None = None,
    ) -> None:
        if not token:
            raise ValueError("the push ingest needs a token")
        self.universe = universe
        self._token = token.encode("utf-8")
        self.host = host
        self.port_setting = port
        self.symbols: frozenset[str] | None = None if symbols is None else frozenset(symbols)
        self.max_batch = max_batch
        self.max_body_bytes = max_body_bytes
        self.max_connections = max_connections
        self.clock = clock or SystemClock()  # the future-skew bound on tick times
        self.accepted = 0
        self.rejected_batches = 0
        self.unauthorized = 0
        self._active = 0
        self._book: PriceBook | None = None
        self.site = Site()

    # -- the Feed interface -------------------------------------------------------------

    @property
    def port(self) -> int:
        """The port listened on (useful when started on port 0)."""
        return self.site.port

    @property
    def url(self) -> str:
        """``http://host:port`` of the ingest."""
        return f"http://{netloc(self.host, self.port)}"

    def claim(self, symbols: frozenset[str]) -> None:
        """Accept only ``symbols`` (build_feeds gives it those no other feed declares)."""
        self.symbols = symbols

    def prime(self, book: PriceBook) -> None:
        """Nothing: pushed prices arrive once the ingest listens."""

    async def start(self, book: PriceBook) -> None:
        """Listen before the public port opens (a bind failure stops the server start)."""
        self._book = book
        await self.site.serve(
            self._handle, self.host, self.port_setting, max_body_bytes=self.max_body_bytes
        )
        log.info("tickerd push ready: %s", self.url)

    async def run(self, book: PriceBook) -> None:
        """Serve until cancelled, then close the ingest."""
        if not self.site.running:
            await self.start(book)
        try:
            await asyncio.Event().wait()
        finally:
            await self.stop()

    async def stop(self) -> None:
        """Stop listening and close the ingest's connections."""
        await self.site.stop()

    def status(self) -> dict[str, Any]:
        """What ``/healthz`` reports for this feed."""
        return {
            "state": FeedState.UP if self.site.running else FeedState.DOWN,
            "accepted": self.accepted,
            "rejected_batches": self.rejected_batches,
            "unauthorized": self.unauthorized,
        }

    # -- batches ------------------------------------------------------------------------

    def ingest(self, batch: Any, book: PriceBook) -> tuple[int, list[dict[str, Any]]]:
        """Validate ``batch`` (a parsed ``{"ticks": [...]}``) and apply it if every tick is
        valid. Returns (accepted, rejections); raises :class:`BatchError` for a batch that
        is not of that shape or too large."""
        if not isinstance(batch, dict):
            raise BatchError(400, 'the body must be a JSON object {"ticks": [...]}')
        items = batch.get("ticks")
        if not isinstance(items, list):
            raise BatchError(400, '"ticks" must be a JSON array')
        if len(items) > self.max_batch:
            raise BatchError(413, f"{len(items)} ticks in one batch; at most {self.max_batch}")
        ticks: list[Tick] = []
        rejected: list[dict[str, Any]] = []
        # Latest time per symbol: the stored tick's, then this batch's valid ticks'.
        latest: dict[str, tuple[int, int | None]] = {}
        now_ms = self.clock.now_ms()
        for index, item in enumerate(items):
            tick = self._check(index, item, book, latest, rejected, now_ms)
            if tick is not None:
                ticks.append(tick)
        if rejected:
            self.rejected_batches += 1
            return 0, rejected
        book.apply(ticks)
        self.accepted += len(ticks)
        return len(ticks), []

    def _check(
        self,
        index: int,
        item: Any,
        book: PriceBook,
        latest: dict[str, tuple[int, int | None]],
        rejected: list[dict[str, Any]],
        now_ms: int,
    ) -> Tick | None:
        if not isinstance(item, dict):
            rejected.append(_rejection(index, None, "not_an_object", "a tick must be an object"))
            return None
        symbol, price, time_ms = item.get("symbol"), item.get("price"), item.get("time")
        if not isinstance(symbol, str) or symbol not in self.universe:
            rejected.append(_rejection(index, symbol, "unknown_symbol", "unknown symbol"))
            return None
        if self.symbols is not None and symbol not in self.symbols:
            reason = f"{symbol} is fed by another feed, not by push"
            rejected.append(_rejection(index, symbol, "not_pushable", reason))
            return None
        if (
            not isinstance(price, str)
            or len(price) > MAX_PRICE_CHARS
            or not _DECIMAL.fullmatch(price)
        ):
            reason = 'price must be a decimal string such as "97000.10" (not a JSON number)'
            rejected.append(_rejection(index, symbol, "bad_price", reason))
            return None
        problem = tick_time_problem(time_ms, now_ms)
        if problem is not None or type(time_ms) is not int:
            reason = problem or f"time {time_ms!r} is not an integer"
            rejected.append(_rejection(index, symbol, "bad_time", reason))
            return None
        try:
            tick = book.make_tick(symbol, price, time_ms, now_ms)
        except TickRejected as exc:
            rejected.append(_rejection(index, symbol, "off_grid", str(exc)))
            return None
        if symbol not in latest:
            stored = book.get(symbol)
            latest[symbol] = (stored.time_ms, None) if stored is not None else (-1, None)
        last_time, last_index = latest[symbol]
        if time_ms < last_time:
            if last_index is None:
                reason = f"time {time_ms} is older than the stored tick's time {last_time}"
                code = "older_than_stored"
            else:
                reason = f"time {time_ms} is older than tick {last_index} of this batch"
                code = "out_of_order"
            rejected.append(_rejection(index, symbol, code, reason))
            return None
        latest[symbol] = (time_ms, index)
        return tick

    # -- HTTP -----------------------------------------------------------------------------

    def _authorized(self, request: web.BaseRequest) -> bool:
        ok = bearer_matches(request, self._token)
        if not ok:
            self.unauthorized += 1
        return ok

    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        if self._active >= self.max_connections:
            return _error(503, "too many concurrent ingest requests")
        self._active += 1
        try:
            return await self._route(request)
        finally:
            self._active -= 1

    async def _route(self, request: web.BaseRequest) -> web.StreamResponse:
        path = request.rel_url.path
        if path == INGEST_PATH:
            if request.method != "POST":
                return _error(405, "use POST", {"Allow": "POST"})
            if not self._authorized(request):
                return _unauthorized()
            return await self._post(request)
        if path == INGEST_WS_PATH:
            if request.method != "GET":
                return _error(405, "use GET with a WebSocket upgrade", {"Allow": "GET"})
            if not self._authorized(request):
                return _unauthorized()
            return await self._websocket(request)
        return _error(404, f"no such path; use POST {INGEST_PATH} or GET {INGEST_WS_PATH}")

    async def _post(self, request: web.BaseRequest) -> web.StreamResponse:
        book = self._book
        assert book is not None
        length = request.content_length
        if length is not None and length > self.max_body_bytes:
            return _error(413, f"body of {length} bytes; at most {self.max_body_bytes}")
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return _error(413, f"body over {self.max_body_bytes} bytes")
        try:
            accepted, rejected = self.ingest(_parse(body), book)
        except BatchError as exc:
            return _error(exc.status, exc.text)
        status = 422 if rejected else 200
        return _json(status, {"accepted": accepted, "rejected": rejected})

    async def _websocket(self, request: web.BaseRequest) -> web.StreamResponse:
        book = self._book
        assert book is not None
        ws = web.WebSocketResponse(
            autoping=True,
            heartbeat=HEARTBEAT_S,  # a peer gone without a word frees its slot
            max_msg_size=self.max_body_bytes,
            compress=False,
        )
        if not ws.can_prepare(request).ok:
            return _error(400, "expected a WebSocket upgrade")
        await ws.prepare(request)
        try:
            async for msg in ws:
                if msg.type is WSMsgType.TEXT:
                    await ws.send_str(self._answer(msg.data, book))
                elif msg.type is WSMsgType.BINARY:
                    await ws.send_str(_reply(400, None, error="send batches as text messages"))
        except Exception:
            # A defect here must still end the socket with a close frame, not a bare drop.
            log.exception("push ingest WebSocket from %s failed", request.remote)
            await ws.close(code=1011, message=b"internal error")
        return ws

    def _answer(self, text: str, book: PriceBook) -> str:
        """The reply to one WebSocket batch (applied only if its id can be echoed)."""
        batch_id: Any = None
        try:
            batch = _parse(text.encode("utf-8"))
            if isinstance(batch, dict):
                batch_id = batch.get("id")
                if not _echoable_id(batch_id):
                    raise BatchError(
                        400,
                        f'"id" must be a string of at most {MAX_ID_CHARS} characters, '
                        "a 64-bit integer or null",
                    )
            accepted, rejected = self.ingest(batch, book)
        except BatchError as exc:
            return _reply(exc.status, batch_id, error=exc.text)
        status = 422 if rejected else 200
        return _reply(status, batch_id, accepted=accepted, rejected=rejected)


def _parse(body: bytes) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        pass
    # orjson refuses integers beyond 64 bits; the standard parser reads them, so such a
    # time is rejected per tick with its reason instead of failing the whole body.
    try:
        return json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise BatchError(400, f"not JSON: {exc}") from None


def printable(text: str) -> str:
    """``text`` with any lone surrogate (from a ``"\\ud800"`` escape) written as an escape,
    so that it can be echoed as UTF-8 JSON."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _echoable_id(batch_id: Any) -> bool:
    if batch_id is None:
        return True
    if type(batch_id) is int:
        return INT64_MIN <= batch_id <= INT64_MAX
    return type(batch_id) is str and len(batch_id) <= MAX_ID_CHARS and batch_id.isprintable()


def _reply(status: int, batch_id: Any, **fields: Any) -> str:
    reply: dict[str, Any] = {"status": status}
    if _echoable_id(batch_id) and batch_id is not None:
        reply["id"] = batch_id
    reply.update(fields)
    return orjson.dumps(reply).decode()


def _json(status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        status=status, body=orjson.dumps(body), content_type="application/json", headers=headers
    )


def _error(status: int, text: str, headers: dict[str, str] | None = None) -> web.Response:
    return _json(status, {"error": text}, headers)


def _unauthorized() -> web.Response:
    return _error(401, "missing or wrong token", {"WWW-Authenticate": 'Bearer realm="tickerd"'})

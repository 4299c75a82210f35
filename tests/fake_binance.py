"""A fake Binance USDⓈ-M upstream for the mirror's tests, on 127.0.0.1 (never the internet).

It speaks what these pages describe (developers.binance.com/docs/derivatives/
usds-margined-futures/...):

* ``market-data/rest-api/Symbol-Price-Ticker-v2``: ``GET /fapi/v2/ticker/price`` answers
  ``[{"symbol": "BTCUSDT", "price": "6000.01", "time": 1589437530011}, ...]``;
* ``market-data/rest-api/Exchange-Information``: ``GET /fapi/v1/exchangeInfo`` answers
  :attr:`FakeBinance.exchange_info` (the bundled universe's document until a test edits it);
* ``websocket-market-streams``: combined streams at ``/market/stream?streams=a/b``, each
  event wrapped ``{"stream": "btcusdt@aggTrade", "data": {...}}``;
* ``websocket-market-streams/Aggregate-Trade-Streams``: ``{"e": "aggTrade", "E", "s",
  "a", "p", "q", "nq", "f", "l", "T", "m"}``;
* ``error-code`` / ``general-info``: 429 and 418 with ``Retry-After`` and a
  ``{"code": -1003, "msg": ...}`` body; 451 for a restricted location.

A test tells it to trade, drop connections (with or without a close frame), refuse the
next requests or handshakes, ping, and reads back what it saw: REST hits, handshake
attempts, connections with their streams, the order of opens and closes, and every frame
a client sent.
"""

from __future__ import annotations

import asyncio
import copy
import json
import ssl
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from importlib import resources
from typing import Any, TypeVar

import orjson
from aiohttp import WSMsgType, web

T = TypeVar("T")

REFUSAL_BODIES: dict[int, dict[str, Any]] = {
    429: {
        "code": -1003,
        "msg": "Too many requests; current limit of IP(127.0.0.1) is 2400 requests per "
        "minute. Please use the websocket for live updates to avoid polling the API.",
    },
    418: {
        "code": -1003,
        "msg": "Way too many requests; IP(127.0.0.1) banned until 1700000120000. Please use "
        "the websocket for live updates to avoid bans.",
    },
    451: {
        "code": 0,
        "msg": "Service unavailable from a restricted location according to 'b. Eligibility' "
        "in https://www.binance.com/en/terms. Please contact customer service if you believe "
        "you received this message in error.",
    },
}


_BUNDLED_INFO: dict[str, Any] = json.loads(
    resources.files("tickerd.data").joinpath("exchange_info.json").read_text("utf-8")
)


@dataclass(eq=False)
class FakeConn:
    """One combined-stream connection as the fake sees it."""

    id: int
    streams: list[str]
    ws: web.WebSocketResponse
    transport: asyncio.BaseTransport | None
    opened: float
    closed_at: float | None = None
    received: list[tuple[WSMsgType, Any]] = field(default_factory=list)

    @property
    def open(self) -> bool:
        return self.closed_at is None

    @property
    def pongs(self) -> list[bytes]:
        return [data for kind, data in self.received if kind is WSMsgType.PONG]

    @property
    def client_messages(self) -> list[Any]:
        """Data messages the client sent (Binance counts these against 10 per second)."""
        return [d for k, d in self.received if k in (WSMsgType.TEXT, WSMsgType.BINARY)]


class FakeBinance:
    """The fake upstream; ``await start()`` in a running loop, ``await stop()`` at the end."""

    def __init__(self, ssl_context: ssl.SSLContext | None = None) -> None:
        self.ssl_context = ssl_context  # serve https/wss with it (None: plain http/ws)
        self.prices: dict[str, tuple[str, int]] = {}
        self.conns: list[FakeConn] = []
        self.timeline: list[tuple[str, int]] = []  # ("open" | "close", connection id)
        self.rest_hits: list[float] = []
        self.ws_attempts: list[float] = []
        self.rest_refusals: deque[tuple[int, int | None]] = deque()
        self.ws_refusals: deque[tuple[int, int | None]] = deque()
        self.agg_id = 1000
        self.exchange_info: dict[str, Any] = copy.deepcopy(_BUNDLED_INFO)
        self.info_hits: list[float] = []
        self.peer_ports: list[int] = []  # client port of every request (REST and handshakes)
        self.info_refusals: deque[tuple[int, int | None]] = deque()
        self._runner: web.AppRunner | None = None
        self.port = 0

    # -- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/fapi/v2/ticker/price", self._ticker_price)
        app.router.add_get("/fapi/v1/exchangeInfo", self._exchange_info)
        app.router.add_get("/market/stream", self._stream)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0, ssl_context=self.ssl_context)
        await site.start()
        self.port = int(self._runner.addresses[0][1])

    async def stop(self) -> None:
        for conn in self.open_conns():
            if conn.transport is not None:
                conn.transport.abort()
        if self._runner is not None:
            await self._runner.cleanup()

    @property
    def rest_url(self) -> str:
        scheme = "https" if self.ssl_context else "http"
        return f"{scheme}://127.0.0.1:{self.port}"

    @property
    def stream_url(self) -> str:
        scheme = "wss" if self.ssl_context else "ws"
        return f"{scheme}://127.0.0.1:{self.port}/market"

    # -- what the fake saw ----------------------------------------------------------------

    def open_conns(self) -> list[FakeConn]:
        return [c for c in self.conns if c.open]

    # -- what a test makes it do ----------------------------------------------------------

    def set_price(self, symbol: str, price: str, time_ms: int) -> None:
        """The REST snapshot's entry for ``symbol``."""
        self.prices[symbol] = (price, time_ms)

    async def trade(
        self, symbol: str, price: str, time_ms: int, *, agg_id: int | None = None
    ) -> int:
        """An aggTrade for ``symbol`` on every open connection subscribed to it (and in the
        REST snapshot); returns how many connections it was sent on."""
        self.prices[symbol] = (price, time_ms)
        if agg_id is None:
            self.agg_id += 1
            agg_id = self.agg_id
        stream = f"{symbol.lower()}@aggTrade"
        event = {
            "stream": stream,
            "data": {
                "e": "aggTrade", "E": time_ms + 5, "s": symbol, "a": agg_id, "p": price,
                "q": "0.010", "nq": "0.010", "f": agg_id * 3, "l": agg_id * 3 + 2,
                "T": time_ms, "m": True,
            },
        }  # fmt: skip
        text = orjson.dumps(event).decode()
        sent = 0
        for conn in self.open_conns():
            if stream in conn.streams:
                await conn.ws.send_str(text)
                sent += 1
        return sent

    async def send_raw(self, text: str) -> None:
        """Send ``text`` as is on every open connection."""
        for conn in self.open_conns():
            await conn.ws.send_str(text)

    async def drop(self, conn: FakeConn, *, close_frame: bool, code: int = 1001) -> None:
        """End ``conn`` with a close frame, or by cutting TCP without one."""
        if close_frame:
            await conn.ws.close(code=code)
        elif conn.transport is not None:
            conn.transport.abort()

    async def ping(self, conn: FakeConn, payload: bytes) -> None:
        await conn.ws.ping(payload)

    def refuse_rest(self, status: int, retry_after: int | None = None, times: int = 1) -> None:
        """Answer the next ``times`` snapshot requests with ``status``."""
        self.rest_refusals.extend([(status, retry_after)] * times)

    def refuse_ws(self, status: int, retry_after: int | None = None, times: int = 1) -> None:
        """Refuse the next ``times`` handshakes with ``status``."""
        self.ws_refusals.extend([(status, retry_after)] * times)

    # -- handlers -------------------------------------------------------------------------

    @staticmethod
    def _refusal(status: int, retry_after: int | None) -> web.Response:
        headers = {"Retry-After": str(retry_after)} if retry_after is not None else {}
        body = REFUSAL_BODIES.get(status, {"code": -1000, "msg": "refused"})
        return web.json_response(body, status=status, headers=headers)

    def _seen(self, request: web.Request) -> None:
        peer = request.transport.get_extra_info("peername") if request.transport else None
        if peer:
            self.peer_ports.append(int(peer[1]))

    async def _ticker_price(self, request: web.Request) -> web.Response:
        self._seen(request)
        self.rest_hits.append(time.monotonic())
        if self.rest_refusals:
            return self._refusal(*self.rest_refusals.popleft())
        rows = [{"symbol": s, "price": p, "time": t} for s, (p, t) in sorted(self.prices.items())]
        return web.Response(body=orjson.dumps(rows), content_type="application/json")

    async def _exchange_info(self, request: web.Request) -> web.Response:
        self._seen(request)
        self.info_hits.append(time.monotonic())
        if self.info_refusals:
            return self._refusal(*self.info_refusals.popleft())
        return web.Response(body=orjson.dumps(self.exchange_info), content_type="application/json")

    def symbol_entry(self, symbol: str) -> dict[str, Any]:
        """The exchangeInfo entry of ``symbol`` (to edit: status, tickSize, pricePrecision)."""
        return next(e for e in self.exchange_info["symbols"] if e["symbol"] == symbol)

    def list_symbol(self, like: str, symbol: str, **changes: Any) -> dict[str, Any]:
        """Add ``symbol`` to exchangeInfo as a copy of ``like``'s entry with ``changes``."""
        entry = copy.deepcopy(self.symbol_entry(like))
        entry.update(symbol=symbol, **changes)
        self.exchange_info["symbols"].append(entry)
        return entry

    async def _stream(self, request: web.Request) -> web.StreamResponse:
        self._seen(request)
        self.ws_attempts.append(time.monotonic())
        if self.ws_refusals:
            return self._refusal(*self.ws_refusals.popleft())
        streams = request.query.get("streams", "").split("/")
        ws = web.WebSocketResponse(autoping=False, heartbeat=None)
        await ws.prepare(request)
        conn = FakeConn(len(self.conns), streams, ws, request.transport, time.monotonic())
        self.conns.append(conn)
        self.timeline.append(("open", conn.id))
        try:
            async for msg in ws:
                conn.received.append((msg.type, msg.data))
        finally:
            conn.closed_at = time.monotonic()
            self.timeline.append(("close", conn.id))
        return ws


async def eventually(
    check: Callable[[], bool], timeout: float = 5.0, what: str = "condition"
) -> None:
    """Poll ``check`` until it holds; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not hold within {timeout} s")
        await asyncio.sleep(0.01)


class ThreadedFake:
    """A :class:`FakeBinance` on its own event loop thread, for tests that drive a
    ``tickerd serve`` subprocess from synchronous code."""

    def __init__(self) -> None:
        self.fake = FakeBinance()
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.call(self.fake.start())

    def call(self, coro: Coroutine[Any, Any, T] | Awaitable[T], timeout: float = 10.0) -> T:
        async def wrap() -> T:
            return await coro

        return asyncio.run_coroutine_threadsafe(wrap(), self.loop).result(timeout)

    def close(self) -> None:
        self.call(self.fake.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()

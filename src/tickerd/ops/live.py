"""The dashboard's live channel: one snapshot a second to every open dashboard.

A snapshot is the ``/status`` document plus what only a moving picture needs: every price
with its tick age, its change since the dashboard channel first saw it (exact decimals, as
``tickerd watch`` shows it) and the direction of its last move, and requests per second
over the last interval. Snapshots are built only while a dashboard is connected, once per
interval for all of them, and sent to each with a timeout: a dashboard that does not read
is closed rather than buffered for. At most :data:`MAX_CLIENTS` dashboards at once.

What a snapshot is made of comes from a :data:`View`: one service's own state, or, under
``--workers``, the merged state of every worker (:mod:`tickerd.ops.group`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from decimal import Decimal
from typing import Any

import orjson
from aiohttp import WSMsgType, web

from .status import MAX_LISTED

log = logging.getLogger("tickerd.ops")

MAX_CLIENTS = 32
SEND_TIMEOUT_S = 5.0
#: Largest message accepted from a dashboard (it sends none; anything is read and dropped).
MAX_INBOUND_BYTES = 4096
_PERCENT = Decimal("0.01")

#: ``(symbol, price, time_ms)`` of one priced symbol.
PriceRow = tuple[str, str, int]
#: What a snapshot is built from, given how many clients to list: the ``/status``
#: document, every price (by symbol) and the requests answered so far.
View = Callable[[int], Awaitable[tuple[dict[str, Any], Sequence[PriceRow], int]]]


class Prices:
    """Each price's change since first seen and the direction of its last move."""

    def __init__(self) -> None:
        self.first: dict[str, Decimal] = {}
        self.last: dict[str, Decimal] = {}
        self.move: dict[str, int] = {}

    def rows(self, ticks: Sequence[PriceRow], now_ms: int) -> list[dict[str, Any]]:
        """One row per priced symbol, in the order given (at most :data:`MAX_LISTED`)."""
        rows = []
        for symbol, text, time_ms in ticks[:MAX_LISTED]:
            price = Decimal(text)
            first = self.first.setdefault(symbol, price)
            last = self.last.get(symbol)
            if last is not None and price != last:
                self.move[symbol] = 1 if price > last else -1
            self.last[symbol] = price
            change = price - first
            rows.append(
                {
                    "symbol": symbol,
                    "price": text,
                    "time": time_ms,
                    "age_ms": now_ms - time_ms,
                    "change": f"{change:+f}",
                    "change_pct": f"{(change * 100 / first).quantize(_PERCENT):+f}",
                    "move": self.move.get(symbol, 0),
                }
            )
        return rows


class LiveChannel:
    """Open dashboards and the task that feeds them (see the module docstring)."""

    def __init__(self, view: View, interval: float = 1.0) -> None:
        self.view = view
        self.interval = interval
        self.clients: set[web.WebSocketResponse] = set()
        self.prices = Prices()
        self._task: asyncio.Task[None] | None = None
        self._last: tuple[float, int] | None = None

    async def snapshot(self) -> dict[str, Any]:
        """What every dashboard receives now."""
        doc, ticks, total = await self.view(10)
        doc["prices"] = self.prices.rows(ticks, doc["now_ms"])
        now = time.monotonic()
        rate = 0.0
        if self._last is not None and now > self._last[0]:
            # max: the total dips while a worker of a group is down or restarting.
            rate = max(0.0, (total - self._last[1]) / (now - self._last[0]))
        self._last = (now, total)
        doc["requests_per_s"] = round(rate, 1)
        doc["requests_total"] = total
        return doc

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        """``GET /dashboard/live``: the WebSocket a dashboard listens on."""
        if len(self.clients) >= MAX_CLIENTS:
            raise web.HTTPServiceUnavailable(text=f"at most {MAX_CLIENTS} dashboards at once")
        ws = web.WebSocketResponse(heartbeat=30.0, max_msg_size=MAX_INBOUND_BYTES)
        await ws.prepare(request)
        self.clients.add(ws)
        try:
            await ws.send_str(orjson.dumps(await self.snapshot()).decode())
            if self._task is None or self._task.done():
                self._task = asyncio.create_task(self._broadcast(), name="tickerd-ops-live")
            async for msg in ws:  # a dashboard sends nothing; this waits for its close
                if msg.type in (WSMsgType.ERROR, WSMsgType.CLOSE):
                    break
        finally:
            self.clients.discard(ws)
        return ws

    async def _broadcast(self) -> None:
        while self.clients:
            await asyncio.sleep(self.interval)
            if not self.clients:
                break
            try:
                data = orjson.dumps(await self.snapshot()).decode()
            except Exception:  # a bad figure must not end the channel
                log.exception("dashboard snapshot failed")
                continue
            await asyncio.gather(*(self._send(ws, data) for ws in list(self.clients)))

    async def _send(self, ws: web.WebSocketResponse, data: str) -> None:
        try:
            await asyncio.wait_for(ws.send_str(data), SEND_TIMEOUT_S)
        except (TimeoutError, ConnectionError, RuntimeError):
            self.clients.discard(ws)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(ws.close(), 1.0)

    async def close(self) -> None:
        """Close every dashboard and stop the task."""
        for ws in list(self.clients):
            with contextlib.suppress(Exception):
                await asyncio.wait_for(ws.close(), 1.0)
        self.clients.clear()
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

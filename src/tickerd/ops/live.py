"""The dashboard's live channel: one snapshot a second to every open dashboard.

A snapshot is the ``/status`` document plus what only a moving picture needs: every price
with its tick age, its change since the dashboard channel first saw it (exact decimals, as
``tickerd watch`` shows it) and the direction of its last move, and requests per second
over the last interval. Snapshots are built only while a dashboard is connected, once per
interval for all of them, and sent to each with a timeout: a dashboard that does not read
is closed rather than buffered for. At most :data:`MAX_CLIENTS` dashboards at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import WSMsgType, web

from .status import MAX_LISTED, status
from .tracker import FeedTracker

if TYPE_CHECKING:
    from ..app import Service

log = logging.getLogger("tickerd.ops")

MAX_CLIENTS = 32
SEND_TIMEOUT_S = 5.0
#: Largest message accepted from a dashboard (it sends none; anything is read and dropped).
MAX_INBOUND_BYTES = 4096
_PERCENT = Decimal("0.01")


class Prices:
    """Each price's change since first seen and the direction of its last move."""

    def __init__(self) -> None:
        self.first: dict[str, Decimal] = {}
        self.last: dict[str, Decimal] = {}
        self.move: dict[str, int] = {}

    def rows(self, service: Service, now_ms: int) -> list[dict[str, Any]]:
        """One row per priced symbol, by symbol (at most :data:`MAX_LISTED`)."""
        rows = []
        for tick in service.book.ticks()[:MAX_LISTED]:
            price = Decimal(tick.price)
            first = self.first.setdefault(tick.symbol, price)
            last = self.last.get(tick.symbol)
            if last is not None and price != last:
                self.move[tick.symbol] = 1 if price > last else -1
            self.last[tick.symbol] = price
            change = price - first
            rows.append(
                {
                    "symbol": tick.symbol,
                    "price": tick.price,
                    "time": tick.time_ms,
                    "age_ms": now_ms - tick.time_ms,
                    "change": f"{change:+f}",
                    "change_pct": f"{(change * 100 / first).quantize(_PERCENT):+f}",
                    "move": self.move.get(tick.symbol, 0),
                }
            )
        return rows


class LiveChannel:
    """Open dashboards and the task that feeds them (see the module docstring)."""

    def __init__(self, service: Service, tracker: FeedTracker, started: float,
                 interval: float = 1.0) -> None:  # fmt: skip
        self.service = service
        self.tracker = tracker
        self.started = started
        self.interval = interval
        self.clients: set[web.WebSocketResponse] = set()
        self.prices = Prices()
        self._task: asyncio.Task[None] | None = None
        self._last: tuple[float, int] | None = None

    def snapshot(self) -> dict[str, Any]:
        """What every dashboard receives now."""
        service = self.service
        doc = status(service, self.tracker, time.monotonic() - self.started, top=10)
        doc["prices"] = self.prices.rows(service, doc["now_ms"])
        total = sum(n for *_, n in self._request_rows())
        now = time.monotonic()
        rate = 0.0
        if self._last is not None and now > self._last[0]:
            rate = (total - self._last[1]) / (now - self._last[0])
        self._last = (now, total)
        doc["requests_per_s"] = round(rate, 1)
        doc["requests_total"] = total
        return doc

    def _request_rows(self) -> list[tuple[str, int, int]]:
        rows = [(m, s, n) for (m, s), n in self.service.protocol.counters.requests().items()]
        if self.service.http is not None:
            rows += [(m, s, n) for (m, s), n in self.service.http.counters.requests().items()]
        return rows

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """``GET /dashboard/live``: the WebSocket a dashboard listens on."""
        if len(self.clients) >= MAX_CLIENTS:
            raise web.HTTPServiceUnavailable(text=f"at most {MAX_CLIENTS} dashboards at once")
        ws = web.WebSocketResponse(heartbeat=30.0, max_msg_size=MAX_INBOUND_BYTES)
        await ws.prepare(request)
        self.clients.add(ws)
        try:
            await ws.send_str(orjson.dumps(self.snapshot()).decode())
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
                data = orjson.dumps(self.snapshot()).decode()
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

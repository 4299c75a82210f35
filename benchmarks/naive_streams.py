"""The deliberately naive market-stream fan-out the stream benchmark compares tickerd against.

A plain ``websockets`` (asyncio) + stdlib ``json`` server of Binance's raw stream paths
``/market/ws/<symbol>@aggTrade`` and ``/market/ws/!miniTicker@arr`` (``/market`` optional), fed by its own trades at ``--rate``
a second over the symbols of an exchangeInfo file (a random walk, one tick per trade, as
tickerd's synthetic feed does). It does everything the obvious way on purpose: for each
trade, an event dict and ``json.dumps`` per subscriber of its ``@aggTrade`` stream and one
``send`` each; every second, the array of the symbols changed since the last one, built
and ``json.dumps``-ed per ``!miniTicker@arr`` subscriber and sent. Do not optimise it: it
is the yardstick.

    python benchmarks/naive_streams.py --port 0 --symbols-file exchange_info.json --rate 20000
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import signal
import time
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

ALL_MINI = "!miniTicker@arr"


@dataclass
class Market:
    """One symbol's walk and its figures since the start."""

    symbol: str
    decimals: int
    unit: int  # tick size in units of 10^-decimals
    ticks: int
    open: int = 0
    high: int = 0
    low: int = 0
    volume: float = 0.0
    quote: float = 0.0
    trade_id: int = 0
    subs: set[ServerConnection] = field(default_factory=set)

    def price(self, ticks: int) -> str:
        units = ticks * self.unit
        whole, frac = divmod(units, 10**self.decimals)
        return f"{whole}.{frac:0{self.decimals}d}" if self.decimals else str(units)


def load_markets(path: Path) -> dict[str, Market]:
    """The symbols of an exchangeInfo file, each starting at 1000 ticks."""
    info = json.loads(path.read_text())
    out: dict[str, Market] = {}
    for s in info["symbols"]:
        tick = next(
            Decimal(f["tickSize"]) for f in s["filters"] if f["filterType"] == "PRICE_FILTER"
        )
        places = len(str(tick.normalize()).partition(".")[2])
        decimals = int(s.get("pricePrecision", places))
        unit = int(tick * 10**decimals) or 1
        out[s["symbol"]] = Market(s["symbol"], decimals, unit, 1000 + len(out))
    for m in out.values():
        m.open = m.high = m.low = m.ticks
    return out


class Naive:
    def __init__(self, markets: dict[str, Market], rate: float) -> None:
        self.markets = markets
        self.names = list(markets)
        self.rate = rate
        self.all_mini: set[ServerConnection] = set()
        self.changed: set[str] = set()
        self.agg_id = 0

    async def handler(self, ws: ServerConnection) -> None:
        path = ws.request.path if ws.request is not None else ""
        name = path.removeprefix("/market").removeprefix("/ws/")
        if name == ALL_MINI:
            group = self.all_mini
        elif name.endswith("@aggTrade") and name[:-9].upper() in self.markets:
            group = self.markets[name[:-9].upper()].subs
        else:
            await ws.close(1008, "unknown stream")
            return
        group.add(ws)
        try:
            async for _ in ws:  # control messages are not served here
                pass
        except ConnectionClosed:
            pass
        finally:
            group.discard(ws)

    async def trade(self, symbol: str) -> None:
        m = self.markets[symbol]
        m.ticks = max(1, m.ticks + random.choice((-1, 1)))
        m.high, m.low = max(m.high, m.ticks), min(m.low, m.ticks)
        qty = random.randint(1, 1000) / 1000
        m.volume += qty
        m.quote += qty * float(m.price(m.ticks))
        m.trade_id += 1
        self.agg_id += 1
        self.changed.add(symbol)
        now = int(time.time() * 1000)
        for ws in list(m.subs):
            event = {"e": "aggTrade", "E": now, "s": symbol, "a": self.agg_id,
                     "p": m.price(m.ticks), "q": f"{qty:.3f}", "f": m.trade_id,
                     "l": m.trade_id, "T": now, "m": qty > 0.5}  # fmt: skip
            with contextlib.suppress(ConnectionClosed):
                await ws.send(json.dumps(event))

    def mini(self, m: Market, now: int) -> dict[str, Any]:
        return {"e": "24hrMiniTicker", "E": now, "s": m.symbol, "c": m.price(m.ticks),
                "o": m.price(m.open), "h": m.price(m.high), "l": m.price(m.low),
                "v": f"{m.volume:.3f}", "q": f"{m.quote:.2f}"}  # fmt: skip

    async def feed(self) -> None:
        """``rate`` trades a second on random symbols, paced like tickerd's synthetic feed."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        done = 0
        while True:
            await asyncio.sleep(0.001)
            due = min(int((loop.time() - started) * self.rate) - done, 10_000)
            for _ in range(due):
                await self.trade(random.choice(self.names))
            done += due

    async def arr(self) -> None:
        """Every second: the changed symbols' mini tickers to each ``!miniTicker@arr`` socket."""
        while True:
            await asyncio.sleep(1.0)
            changed, self.changed = sorted(self.changed), set()
            now = int(time.time() * 1000)
            for ws in list(self.all_mini):
                payload = [self.mini(self.markets[s], now) for s in changed]
                with contextlib.suppress(ConnectionClosed):
                    await ws.send(json.dumps(payload))


async def main_async(port: int, markets: dict[str, Market], rate: float) -> None:
    naive = Naive(markets, rate)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with serve(naive.handler, "127.0.0.1", port, max_size=1 << 20, compression=None) as srv:
        bound = next(iter(srv.sockets)).getsockname()[1]
        print(f"naive streams ready: ws://127.0.0.1:{bound}", flush=True)
        tasks = [asyncio.create_task(naive.feed()), asyncio.create_task(naive.arr())]
        await stop.wait()
        for task in tasks:
            task.cancel()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--port", type=int, default=9010)
    p.add_argument("--symbols-file", type=Path, required=True)
    p.add_argument("--rate", type=float, default=20_000.0, help="trades per second")
    a = p.parse_args()
    random.seed(7)
    asyncio.run(main_async(a.port, load_markets(a.symbols_file), a.rate))


if __name__ == "__main__":
    main()

"""The embedded default: a seeded, deterministic random walk per symbol on its tick grid.

Prices are kept as integer counts of ticks, so every price printed is exactly on the grid
and no float ever touches one. The sequence of (symbol, price) depends only on the seed and
the universe; the times come from the clock, so a :class:`~tickerd.clock.ManualClock`
makes the whole stream reproducible.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Collection
from decimal import Decimal
from typing import Any

from ..book import PriceBook
from ..clock import Clock
from ..models import SymbolInfo, Tick, Trade
from ..symbols import SymbolUniverse, reference_prices
from .state import FeedState

_MAX_BATCH = 10_000  # ticks applied per wake-up at most, however late the wake-up
# Wake-ups are at least this far apart: above 100 ticks/s the ticks of each 10 ms go to the
# book in one batch, so the feed's cost is its ticks, not a timer per tick (1 000 timers a
# second cost a few % of a core), and the feed changes the book 100 times a second at most.
_MIN_WAKE_S = 0.01
_MIX = 0x9E3779B97F4A7C15  # Fibonacci hashing: a trade's quantity from (seed, trade id)
_MASK = (1 << 64) - 1
_MAX_LOTS = 1000  # a trade is 1 to 1000 of the symbol's smallest quantity steps


class _Walker:
    """One symbol's price as a count of ticks, printed at its precision."""

    __slots__ = ("decimals", "lot_decimals", "scale", "step", "symbol", "ticks", "trade_id", "unit")

    def __init__(self, info: SymbolInfo, start: Decimal) -> None:
        self.symbol = info.symbol
        self.decimals = info.price_precision
        self.scale = 10**self.decimals
        # tick size in units of 10^-decimals: an integer, as precision covers the tick.
        self.unit = int(info.tick_size * self.scale)
        self.ticks = max(1, int(start / info.tick_size))
        self.step = max(1, self.ticks // 5000)  # about 2 basis points per move
        precision = info.raw.get("quantityPrecision", 3)
        self.lot_decimals = precision if isinstance(precision, int) and 0 <= precision < 19 else 3
        self.trade_id = 0  # this symbol's moves so far: each move is one trade

    def quantity(self, mixed: int) -> str:
        """A quantity of 1 to ``_MAX_LOTS`` lots chosen by ``mixed``, at the lot precision."""
        lots = 1 + mixed % _MAX_LOTS
        if not self.lot_decimals:
            return str(lots)
        whole, frac = divmod(lots, 10**self.lot_decimals)
        return f"{whole}.{frac:0{self.lot_decimals}d}"

    def price(self) -> str:
        units = self.ticks * self.unit
        if not self.decimals:
            return str(units)
        whole, frac = divmod(units, self.scale)
        return f"{whole}.{frac:0{self.decimals}d}"


class SyntheticMarket:
    """A deterministic stream of ticks for every TRADING symbol of ``universe``."""

    def __init__(self, universe: SymbolUniverse, seed: int) -> None:
        self.universe = universe
        self.seed = seed
        self.rng = random.Random(seed)
        refs = reference_prices()
        self.walkers: list[_Walker] = []
        for info in universe.trading():
            ref = refs.get(info.symbol)
            start = Decimal(ref) if ref else info.tick_size * self.rng.randint(10_000, 1_000_000)
            self.walkers.append(_Walker(info, start))

    def keep_only(self, symbols: Collection[str]) -> None:
        """Stop walking every symbol not in ``symbols`` (other feeds own them)."""
        self.walkers = [w for w in self.walkers if w.symbol in symbols]

    def snapshot(self, now_ms: int) -> list[Tick]:
        """The current price of every symbol, stamped ``now_ms``."""
        return [Tick(w.symbol, w.price(), now_ms) for w in self.walkers]

    def next_tick(self, now_ms: int, trade: bool = False) -> Tick:
        """Move one symbol, chosen by the seeded generator, and return its new tick; with
        ``trade``, as a :class:`Trade` whose quantity, ids and maker flag follow from the
        seed and the symbol's trade count alone (asking for them draws nothing more from
        the generator, so the prices are the same either way)."""
        rng = self.rng
        w = self.walkers[rng.randrange(len(self.walkers))]
        w.ticks = max(1, w.ticks + rng.randint(-w.step, w.step))
        w.trade_id += 1
        if not trade:
            return Tick(w.symbol, w.price(), now_ms)
        n = w.trade_id
        mixed = ((n ^ self.seed) * _MIX) & _MASK
        return Trade(
            w.symbol, w.price(), now_ms, w.quantity(mixed >> 8), n, n, n, bool(mixed >> 63)
        )


class SyntheticFeed:
    """Applies ``rate`` synthetic ticks per second to the book, paced by the event loop."""

    name = "synthetic"

    def __init__(self, market: SyntheticMarket, clock: Clock, rate: float) -> None:
        if rate < 0:
            raise ValueError("tick rate must not be negative")
        self.market = market
        self.clock = clock
        self.rate = rate
        self._symbols: frozenset[str] | None = None

    @property
    def symbols(self) -> frozenset[str] | None:
        """The symbols walked; None (all TRADING ones) until told to take fewer."""
        return self._symbols

    @symbols.setter
    def symbols(self, symbols: frozenset[str]) -> None:
        self.claim(symbols)

    def claim(self, symbols: frozenset[str]) -> None:
        """Walk only ``symbols`` (build_feeds gives it those no other feed declares)."""
        self._symbols = symbols
        self.market.keep_only(symbols)

    async def start(self, book: PriceBook) -> None:
        """Nothing to prepare: :meth:`prime` gave every symbol its price."""

    async def stop(self) -> None:
        """Nothing to release."""

    def status(self) -> dict[str, Any]:
        """What ``/healthz`` reports: always up (prices come from the seed)."""
        return {
            "state": FeedState.UP,
            "symbols": len(self.market.walkers),
            "seed": self.market.seed,
            "tick_rate": self.rate,
        }

    def reseed(self, seed: int, book: PriceBook) -> int:
        """Restart the walk of the feed's own symbols from ``seed``: each one's price goes
        back to where a fresh start with that seed puts it. Returns the symbols walked."""
        market = SyntheticMarket(self.market.universe, seed)
        if self._symbols is not None:
            market.keep_only(self._symbols)
        self.market = market
        book.apply(market.snapshot(self.clock.now_ms()))
        return len(market.walkers)

    def prime(self, book: PriceBook) -> None:
        """Give every symbol its starting price. A symbol the book already prices (restored
        from the store before priming) keeps its price, and its walk goes on from there."""
        now = self.clock.now_ms()
        fresh: list[Tick] = []
        for walker in self.market.walkers:
            held = book.get(walker.symbol)
            if held is None:
                fresh.append(Tick(walker.symbol, walker.price(), now))
            else:
                walker.ticks = max(1, int(Decimal(held.price) * walker.scale) // walker.unit)
        book.apply(fresh)

    async def run(self, book: PriceBook) -> None:
        """Tick forever at ``rate`` (a rate of 0 keeps prices still)."""
        if not self.market.walkers or self.rate == 0:
            await asyncio.Event().wait()
        loop = asyncio.get_running_loop()
        interval = max(_MIN_WAKE_S, 1.0 / self.rate)
        started = loop.time()
        emitted = 0
        while True:
            await asyncio.sleep(interval)
            due = min(int((loop.time() - started) * self.rate) - emitted, _MAX_BATCH)
            if due <= 0:
                continue
            now = self.clock.now_ms()
            trade = book.wants_trades
            book.apply([self.market.next_tick(now, trade) for _ in range(due)])
            emitted += due

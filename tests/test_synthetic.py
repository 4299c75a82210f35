"""The synthetic market: a seeded, reproducible random walk on every symbol's tick grid."""

from __future__ import annotations

import asyncio
import contextlib
from decimal import Decimal
from typing import Any

import pytest

from helpers_core import NOW, universe
from tickerd import ManualClock, PriceBook, SymbolUniverse
from tickerd.feeds.synthetic import SyntheticFeed, SyntheticMarket
from tickerd.models import Tick
from tickerd.symbols import format_price, on_tick_grid, reference_prices


def run(market: SyntheticMarket, n: int, now: int = NOW) -> list[Tick]:
    return [market.next_tick(now) for _ in range(n)]


def test_same_seed_same_ticks() -> None:
    a = SyntheticMarket(universe(), seed=7)
    b = SyntheticMarket(universe(), seed=7)
    assert a.snapshot(NOW) == b.snapshot(NOW)
    assert run(a, 500) == run(b, 500)
    assert a.snapshot(NOW) == b.snapshot(NOW)


def test_sequence_does_not_depend_on_the_time() -> None:
    a = SyntheticMarket(universe(), seed=7)
    b = SyntheticMarket(universe(), seed=7)
    ta = run(a, 200, now=NOW)
    tb = [b.next_tick(NOW + i * 1_000) for i in range(200)]
    assert [(t.symbol, t.price) for t in ta] == [(t.symbol, t.price) for t in tb]
    assert [t.time_ms for t in tb] == [NOW + i * 1_000 for i in range(200)]


def test_different_seeds_differ() -> None:
    a = run(SyntheticMarket(universe(), seed=1), 200)
    b = run(SyntheticMarket(universe(), seed=2), 200)
    assert a != b


def test_starts_at_the_reference_prices() -> None:
    u = universe()
    refs = reference_prices()
    snapshot = SyntheticMarket(u, seed=3).snapshot(NOW)
    assert [t.symbol for t in snapshot] == [s.symbol for s in u.trading()]
    assert all(t.price == refs[t.symbol] and t.time_ms == NOW for t in snapshot)


def test_every_price_on_the_grid_positive_and_canonical() -> None:
    u = universe()
    book = PriceBook(u)
    market = SyntheticMarket(u, seed=11)
    moved = set()
    for tick in run(market, 3_000):
        info = u.get(tick.symbol)
        assert info is not None and info.trading
        price = Decimal(tick.price)
        assert price > 0 and on_tick_grid(info, price), tick
        assert format_price(info, price) == tick.price, tick
        assert book.make_tick(tick.symbol, tick.price, tick.time_ms) == tick
        moved.add(tick.symbol)
    assert len(moved) > len(u.trading()) // 2  # the walk visits many symbols


def test_moves_are_small_steps() -> None:
    # A move is at most max(1 tick, ~2 basis points of the starting price).
    u = universe()
    market = SyntheticMarket(u, seed=5)
    start = {t.symbol: Decimal(t.price) for t in market.snapshot(NOW)}
    last = dict(start)
    for tick in run(market, 2_000):
        info = u.get(tick.symbol)
        assert info is not None
        price = Decimal(tick.price)
        bound = max(info.tick_size, start[tick.symbol] / 5_000)
        assert abs(price - last[tick.symbol]) <= bound, tick
        last[tick.symbol] = price
    assert last != start


def _doc(*entries: dict[str, Any]) -> dict[str, Any]:
    return {"symbols": list(entries)}


def _entry(symbol: str, tick: str, precision: int, status: str = "TRADING") -> dict[str, Any]:
    return {
        "symbol": symbol,
        "status": status,
        "pricePrecision": precision,
        "filters": [{"filterType": "PRICE_FILTER", "tickSize": tick}],
    }


def test_symbols_without_a_reference_price_start_on_their_grid() -> None:
    u = SymbolUniverse.from_exchange_info(
        _doc(
            _entry("NEWAUSDT", "0.0005", 4),
            _entry("NEWBUSDT", "5", 0),
            _entry("OLDUSDT", "1", 0, "CLOSE"),
        )
    )
    a, b = SyntheticMarket(u, seed=9), SyntheticMarket(u, seed=9)
    snap = a.snapshot(NOW)
    assert snap == b.snapshot(NOW)
    assert [t.symbol for t in snap] == ["NEWAUSDT", "NEWBUSDT"]  # CLOSE is not walked
    for tick in snap + run(a, 500):
        info = u.get(tick.symbol)
        assert info is not None
        assert on_tick_grid(info, Decimal(tick.price)), tick
        assert format_price(info, Decimal(tick.price)) == tick.price, tick
    assert snap != SyntheticMarket(u, seed=10).snapshot(NOW)


def test_price_never_reaches_zero() -> None:
    # One tick above zero: every step down is floored at one tick.
    u = SymbolUniverse.from_exchange_info(_doc(_entry("TINYUSDT", "1", 0)))
    market = SyntheticMarket(u, seed=1)
    market.walkers[0].ticks = 1
    market.walkers[0].step = 3
    prices = {t.price for t in run(market, 300)}
    assert all(int(p) >= 1 for p in prices)
    assert "1" in prices


def test_prime_fills_every_trading_symbol() -> None:
    u = universe()
    clock = ManualClock(NOW)
    feed = SyntheticFeed(SyntheticMarket(u, seed=1), clock, rate=20.0)
    book = PriceBook(u)
    feed.prime(book)
    trading = [s.symbol for s in u.trading()]
    assert [t.symbol for t in book.ticks()] == trading
    assert all(t.time_ms == NOW for t in book.ticks())
    assert all(book.body(s) is not None for s in trading)
    assert book.all_body().count(b'"symbol"') == len(trading)
    assert book.get("SRMUSDT") is None and book.get("BTCUSDT_250328") is None


def test_feed_rejects_a_negative_rate() -> None:
    market = SyntheticMarket(universe(), seed=1)
    with pytest.raises(ValueError):
        SyntheticFeed(market, ManualClock(NOW), rate=-1)
    assert SyntheticFeed(market, ManualClock(NOW), rate=0).name == "synthetic"


def test_manual_clock_moves_only_forward() -> None:
    clock = ManualClock(NOW)
    assert clock.now_ms() == NOW
    assert clock.advance(250) == NOW + 250 == clock.now_ms()
    assert clock.advance(0) == NOW + 250
    clock.set(NOW + 1_000)
    assert clock.now_ms() == NOW + 1_000
    with pytest.raises(ValueError):
        clock.advance(-1)
    with pytest.raises(ValueError):
        clock.set(NOW)
    assert clock.now_ms() == NOW + 1_000


def test_prime_stamps_the_clocks_time() -> None:
    u = universe()
    clock = ManualClock(NOW)
    market = SyntheticMarket(u, seed=1)
    book = PriceBook(u)
    clock.advance(5_000)
    SyntheticFeed(market, clock, rate=1.0).prime(book)
    assert {t.time_ms for t in book.ticks()} == {NOW + 5_000}


def test_fast_rates_tick_in_batches_at_most_every_10_ms() -> None:
    """At 1000 ticks/s the feed wakes every 10 ms, not every tick: a load that slows the
    loop only makes fewer, larger batches, so the bound on wake-ups cannot be missed."""
    u = universe()
    feed = SyntheticFeed(SyntheticMarket(u, seed=1), ManualClock(NOW), rate=1000.0)
    book = PriceBook(u)
    batches: list[int] = []
    book.subscribe(lambda ticks: batches.append(len(ticks)))

    async def run_for(seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(feed.run(book), seconds)

    asyncio.run(run_for(0.3))
    assert batches, "the feed applied nothing in 0.3 s"
    assert len(batches) <= 0.3 / 0.01 + 2
    assert sum(batches) > len(batches)  # more than one tick per wake-up on average

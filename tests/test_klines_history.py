"""Candles of every interval from one-minute candles, their bounded history, the REST rows
and the statistics' state for the store, sans I/O.

https://developers.binance.com/docs/derivatives/usds-margined-futures/market-data/rest-api/Kline-Candlestick-Data
"""

from __future__ import annotations

import random
from decimal import Decimal

import orjson
import pytest

from tickerd import PriceBook, SymbolUniverse
from tickerd.models import Tick, Trade
from tickerd.streams import StreamHub
from tickerd.streams.candles import Candle, candle_span
from tickerd.streams.klines import Klines
from tickerd.streams.names import KLINE_INTERVALS
from tickerd.streams.window import MINUTE_MS, SymbolWindow

NOW = 1_704_067_200_000  # 2024-01-01T00:00:00Z, a Monday
UNIVERSE = SymbolUniverse.default()


def walk(symbol: str, count: int, seed: int, span_ms: int) -> list[Trade]:
    """``count`` trades of ``symbol`` on its tick grid, in time order over ``span_ms``."""
    info = UNIVERSE.get(symbol)
    assert info is not None
    rnd = random.Random(seed)
    times = sorted(NOW + rnd.randrange(span_ms) for _ in range(count))
    steps = 10_000 + rnd.randrange(1000)
    out = []
    for n, t in enumerate(times):
        steps += rnd.randrange(-30, 31)
        price = f"{info.tick_size * steps:.{info.price_precision}f}"
        qty = str(Decimal(rnd.randrange(1, 5000)) / 1000)
        ids = (100 + 3 * n, 100 + 3 * n + rnd.randrange(3))
        out.append(Trade(symbol, price, t, qty, n + 1, *ids, rnd.random() < 0.5))
    return out


def expected_rows(trades: list[Trade], interval: str, precision: int) -> list[list[object]]:
    """Binance's kline rows of ``trades``, computed here from scratch."""
    groups: dict[int, list[Trade]] = {}
    for t in trades:
        groups.setdefault(candle_span(interval, t.time_ms)[0], []).append(t)
    rows: list[list[object]] = []
    for start in sorted(groups):
        g = groups[start]
        prices = [Decimal(t.price) for t in g]
        vol = sum(Decimal(t.qty) for t in g)
        quote = sum(Decimal(t.price) * Decimal(t.qty) for t in g)
        taker = [t for t in g if not t.maker]
        tv = sum((Decimal(t.qty) for t in taker), Decimal(0))
        tq = sum((Decimal(t.price) * Decimal(t.qty) for t in taker), Decimal(0))

        def p(x: Decimal) -> str:
            return f"{x:.{precision}f}"

        def a(x: Decimal) -> str:
            return format(x.normalize(), "f")

        rows.append([
            start, p(prices[0]), p(max(prices)), p(min(prices)), p(prices[-1]), a(vol),
            candle_span(interval, start)[1], a(quote),
            sum(t.last_id - t.first_id + 1 for t in g), a(tv), a(tq), "0",
        ])  # fmt: skip
    return rows


def rows_of(klines: Klines, symbol: str, interval: str, **kw: int) -> list[list[object]]:
    kw.setdefault("limit", 1500)
    return [orjson.loads(r) for r in klines.rows(symbol, interval, **kw)]


def test_every_interval_rolled_up_from_minutes_equals_candles_built_from_scratch() -> None:
    k = Klines(UNIVERSE)
    days = 40 * 86_400_000  # from a Monday: weeks, 3-day candles and a month boundary
    trades = {s: walk(s, 400, seed, days) for seed, s in
              enumerate(("BTCUSDT", "DOGEUSDT", "1000PEPEUSDT"))}  # fmt: skip
    merged = sorted((t for ts in trades.values() for t in ts), key=lambda t: t.time_ms)
    for i in range(0, len(merged), 7):  # in batches, as the book applies them
        k.add(merged[i : i + 7])
    for symbol, ts in trades.items():
        info = UNIVERSE.get(symbol)
        assert info is not None
        for interval in KLINE_INTERVALS:
            assert rows_of(k, symbol, interval) == expected_rows(
                ts, interval, info.price_precision
            ), (symbol, interval)


def test_a_plain_price_moves_the_candle_and_the_open_candle_is_its_minutes_so_far() -> None:
    k = Klines(UNIVERSE)
    k.add([Trade("ETHUSDT", "2000.00", NOW + 1_000, "1.5", 1, 10, 11, False)])
    k.add([Tick("ETHUSDT", "2010.00", NOW + 61_000)])  # a price without a trade
    k.add([Trade("ETHUSDT", "1990.00", NOW + 125_000, "0.5", 2, 12, 12, True)])
    assert rows_of(k, "ETHUSDT", "5m") == [[
        NOW, "2000.00", "2010.00", "1990.00", "1990.00", "2", NOW + 299_999, "3995", 3, "1.5",
        "3000", "0",
    ]]  # fmt: skip
    assert [r[0] for r in rows_of(k, "ETHUSDT", "1m")] == [NOW, NOW + 60_000, NOW + 120_000]
    assert rows_of(k, "ETHUSDT", "1m")[1][5] == "0"  # the plain price: no volume
    assert rows_of(k, "NOSUCHUSDT", "1m") == []


@pytest.mark.parametrize(
    ("kw", "opens"),
    [
        ({"limit": 3}, [7, 8, 9]),  # the most recent
        ({"limit": 3, "start_ms": NOW + 2 * MINUTE_MS}, [2, 3, 4]),  # from startTime on
        ({"limit": 3, "start_ms": NOW + 2 * MINUTE_MS + 1}, [3, 4, 5]),  # open time >= start
        ({"limit": 3, "end_ms": NOW + 5 * MINUTE_MS}, [3, 4, 5]),  # the last up to endTime
        ({"limit": 9, "start_ms": NOW + 4 * MINUTE_MS, "end_ms": NOW + 6 * MINUTE_MS}, [4, 5, 6]),
        ({"limit": 5, "start_ms": NOW + 20 * MINUTE_MS}, []),
    ],
)
def test_rows_selected_as_binance_selects_them(kw: dict[str, int], opens: list[int]) -> None:
    k = Klines(UNIVERSE)
    k.add([Trade("BTCUSDT", "42000.00", NOW + m * MINUTE_MS + 5, "1", m, m, m) for m in range(10)])
    assert [(r[0] - NOW) // MINUTE_MS for r in rows_of(k, "BTCUSDT", "1m", **kw)] == opens


def test_history_is_bounded_per_symbol_and_interval() -> None:
    k = Klines(UNIVERSE, history=4)
    k.add([Trade("BTCUSDT", "42000.00", NOW + m * MINUTE_MS, "1", m, m, m) for m in range(30)])
    series = k.series["BTCUSDT"]
    assert len(series.history["1m"]) == 4 and len(series.history["5m"]) == 4
    # four closed candles and the open one
    assert [(r[0] - NOW) // MINUTE_MS for r in rows_of(k, "BTCUSDT", "1m")] == [25, 26, 27, 28, 29]
    assert [(r[0] - NOW) // MINUTE_MS for r in rows_of(k, "BTCUSDT", "5m")] == [5, 10, 15, 20, 25]
    with pytest.raises(ValueError, match="at least 1"):
        Klines(UNIVERSE, history=0)


def test_candle_and_window_states_round_trip_and_refuse_garbage() -> None:
    c = Candle(candle_span("1h", NOW), Decimal("0.081230"))
    c.add(Decimal("0.081240"), Trade("DOGEUSDT", "0.081240", NOW + 5, "1000", 1, 7, 9, False))
    back = Candle.from_state(orjson.loads(orjson.dumps(c.state())))
    assert back.row(6) == c.row(6) and back.payload("DOGEUSDT", "1h", 6, NOW, False) == c.payload(
        "DOGEUSDT", "1h", 6, NOW, False
    )
    for bad in (
        None,
        [1, 2],
        [*c.state()[:2], "x", *c.state()[3:]],
        [*c.state()[:12], "3"],
        [*c.state()[:2], "-1", *c.state()[3:]],
        [*c.state()[:2], "NaN", *c.state()[3:]],
    ):
        with pytest.raises((ValueError, TypeError, ArithmeticError)):
            Candle.from_state(bad)  # type: ignore[arg-type]
    w = SymbolWindow(2)
    w.add(NOW, Decimal("100.00"), Decimal(1), 1, 1)
    w.add(NOW + 5 * MINUTE_MS, Decimal("120.00"), Decimal("0.5"), 2, 4)
    w.last_qty = "0.5"
    again = SymbolWindow(2)
    again.restore([(m, orjson.loads(orjson.dumps(s))) for m, s in w.minutes_since(-1)], "0.5")
    assert again.ticker(NOW + 6 * MINUTE_MS) == w.ticker(NOW + 6 * MINUTE_MS)
    with pytest.raises(ValueError, match="out of order"):
        SymbolWindow(2).restore([(5, w.minutes_since(-1)[0][1])] * 2, "0")


def test_statistics_start_once_seeded_with_the_books_prices() -> None:
    book = PriceBook(UNIVERSE)
    book.apply([Trade("BTCUSDT", "42000.10", NOW, "2", 1, 1, 1), Tick("ETHUSDT", "2300.00", NOW)])
    hub = StreamHub(book)
    assert not hub.started and not book.wants_trades and book._listeners == ()
    hub.start()
    hub.start()
    assert hub.started and book.wants_trades and book._listeners == (hub.on_ticks,)
    btc = hub.windows.get("BTCUSDT")
    assert btc is not None and btc.mini() == ("42000.10",) * 4 + ("0", "0")  # a plain price
    assert [orjson.loads(r)[5] for r in hub.klines.rows("ETHUSDT", "1h", limit=5)] == ["0"]

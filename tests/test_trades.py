"""The trade model: every feed hands the book trades (price, quantity, trade time,
aggregate id, first/last trade id, buyer-is-maker) while a market-stream subscriber listens,
and plain ticks otherwise; the prices are the same either way.

Fields as on the aggTrade stream page:
https://developers.binance.com/docs/derivatives/usds-margined-futures/websocket-market-streams/Aggregate-Trade-Streams
"""

from __future__ import annotations

import csv
from decimal import Decimal
from pathlib import Path

import orjson
import pytest

from tickerd import PriceBook, SymbolUniverse
from tickerd.clock import ManualClock
from tickerd.feeds.mirror_state import MirrorState
from tickerd.feeds.push import PushFeed
from tickerd.feeds.replay_source import ReplaySource
from tickerd.feeds.synthetic import SyntheticMarket
from tickerd.models import Tick, Trade

DATA = Path(__file__).parent / "data" / "replay"
NOW = 1_700_000_000_000


def test_a_trade_is_a_tick_with_the_stream_fields() -> None:
    trade = Trade("BTCUSDT", "42000.10", NOW, "0.015", 7, 10, 12, True)
    assert isinstance(trade, Tick)
    assert (trade.symbol, trade.price, trade.time_ms) == ("BTCUSDT", "42000.10", NOW)
    assert (trade.qty, trade.agg_id, trade.first_id, trade.last_id, trade.maker) == (
        "0.015", 7, 10, 12, True,
    )  # fmt: skip
    assert Trade.of(Tick("ETHUSDT", "2300.15", NOW), "1.5", 1, 2, 3, False) == Trade(
        "ETHUSDT", "2300.15", NOW, "1.5", 1, 2, 3, False
    )
    assert repr(trade).startswith("Trade(")


def test_synthetic_trades_follow_the_seed_and_leave_the_prices_alone() -> None:
    uni = SymbolUniverse.default()
    plain, traded, again = (SyntheticMarket(uni, 7) for _ in range(3))
    a = [plain.next_tick(NOW) for _ in range(500)]
    b = [traded.next_tick(NOW, True) for _ in range(500)]
    c = [again.next_tick(NOW, True) for _ in range(500)]
    assert [t[:3] for t in a] == [t[:3] for t in b]  # same prices with or without trades
    assert b == c  # quantities, ids and maker flags from the seed alone
    assert all(type(t) is Tick for t in a) and all(isinstance(t, Trade) for t in b)
    other = [SyntheticMarket(uni, 8).next_tick(NOW, True) for _ in range(1)]
    assert other != b[:1]
    per_symbol: dict[str, list[int]] = {}
    for t in b:
        assert isinstance(t, Trade)
        assert Decimal(t.qty) > 0 and t.first_id == t.last_id == t.agg_id
        info = uni.get(t.symbol)
        assert info is not None
        assert len(t.qty.partition(".")[2]) == info.raw["quantityPrecision"]
        per_symbol.setdefault(t.symbol, []).append(t.agg_id)
    assert len(per_symbol) > 3
    for ids in per_symbol.values():
        assert ids == list(range(1, len(ids) + 1))
    assert {t.maker for t in b if isinstance(t, Trade)} == {True, False}


@pytest.mark.parametrize(
    "name", ["ETHUSDT-aggTrades-2022-08-10.csv", "BTCUSDT-trades-2024-01-01.csv"]
)
def test_replay_passes_the_file_fields_through(name: str) -> None:
    uni = SymbolUniverse.default()
    source = ReplaySource([DATA / name], uni, trades=True)
    got, error = source.take(10_000)
    assert error is None
    with open(DATA / name, newline="") as f:
        rows = [r for r in csv.reader(f) if r and r[0][0].isdigit()]
    rows.sort(key=lambda r: int(r[5] if len(r) == 7 else r[4]))  # stable: file order ties
    assert len(got) == len(rows)
    symbol = name.split("-")[0]
    info = uni.get(symbol)
    assert info is not None
    for trade, row in zip(got, rows, strict=True):
        assert isinstance(trade, Trade)
        if len(row) == 7:  # agg_trade_id,price,quantity,first_trade_id,last_trade_id,time,maker
            ids, qty, time_ms, maker = (
                (int(row[0]), int(row[3]), int(row[4])),
                row[2],
                row[5],
                row[6],
            )
        else:  # id,price,qty,quote_qty,time,is_buyer_maker
            ids, qty, time_ms, maker = (int(row[0]),) * 3, row[2], row[4], row[5]
        assert (trade.agg_id, trade.first_id, trade.last_id) == ids
        assert trade.qty == qty and trade.time_ms == int(time_ms)
        assert trade.maker is (maker == "true")
        assert Decimal(trade.price) == Decimal(row[1])
        assert len(trade.price.partition(".")[2]) == info.price_precision
    plain, _ = ReplaySource([DATA / name], uni, trades=False).take(10_000)
    assert [t[:3] for t in got] == [tuple(t) for t in plain]


def _event(agg: int, price: str, qty: object = "0.010", maker: object = True) -> bytes:
    data = {"e": "aggTrade", "E": NOW + 5, "s": "BTCUSDT", "a": agg, "p": price, "q": qty,
            "nq": qty, "f": agg * 10, "l": agg * 10 + 2, "T": NOW + agg, "m": maker}  # fmt: skip
    return orjson.dumps({"stream": "btcusdt@aggTrade", "data": data})


def test_mirror_passes_the_upstream_fields_through_only_when_wanted() -> None:
    book = PriceBook(SymbolUniverse.default())
    state = MirrorState(book)
    state.on_event(_event(1, "42000.1"), {"BTCUSDT"}, 1.0, NOW + 10)
    assert type(book.get("BTCUSDT")) is Tick
    book.wants_trades = True
    state.on_event(_event(2, "42000.2"), {"BTCUSDT"}, 1.0, NOW + 10)
    assert book.get("BTCUSDT") == Trade("BTCUSDT", "42000.20", NOW + 2, "0.010", 2, 20, 22, True)
    state.on_event(_event(3, "42000.3", qty=0.5), {"BTCUSDT"}, 1.0, NOW + 10)  # a float qty
    assert book.get("BTCUSDT") == Tick("BTCUSDT", "42000.30", NOW + 3)  # price kept, no trade
    state.on_event(_event(4, "42000.4", maker="yes"), {"BTCUSDT"}, 1.0, NOW + 10)
    assert book.get("BTCUSDT") == Tick("BTCUSDT", "42000.40", NOW + 4)


def test_push_takes_an_optional_quantity() -> None:
    book = PriceBook(SymbolUniverse.default())
    feed = PushFeed(book.universe, token="t" * 16, port=0, clock=ManualClock(NOW))
    batch = {"ticks": [{"symbol": "BTCUSDT", "price": "42000.1", "time": NOW, "qty": "0.25"},
                       {"symbol": "ETHUSDT", "price": "2300.15", "time": NOW}]}  # fmt: skip
    assert feed.ingest(batch, book) == (2, [])
    assert type(book.get("BTCUSDT")) is Tick  # nobody listens: plain ticks
    book.wants_trades = True
    assert feed.ingest(batch, book) == (2, [])
    assert book.get("BTCUSDT") == Trade("BTCUSDT", "42000.10", NOW, "0.25", 1, 1, 1, False)
    assert book.get("ETHUSDT") == Trade("ETHUSDT", "2300.15", NOW, "0", 1, 1, 1, False)
    assert feed.ingest(batch, book) == (2, [])
    got = book.get("BTCUSDT")
    assert isinstance(got, Trade) and got.agg_id == 2
    for bad in (0.25, 1, "-1", "1e3", "", "1" * 41, ["1"]):
        item = {"symbol": "BTCUSDT", "price": "42000.1", "time": NOW, "qty": bad}
        accepted, rejected = feed.ingest({"ticks": [item]}, book)
        assert accepted == 0 and rejected[0]["code"] == "bad_qty", bad

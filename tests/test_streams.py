"""Market streams, sans I/O: stream names and routes, control messages with Binance's
replies and codes, the per-connection bounds, the 24-hour window and the fan-out hub.

https://developers.binance.com/docs/derivatives/usds-margined-futures/websocket-market-streams
"""

from __future__ import annotations

from decimal import Decimal

import orjson
import pytest

from tickerd import PriceBook, SymbolUniverse
from tickerd.models import Tick, Trade
from tickerd.streams import Route, StreamHub, StreamLimits, StreamSession, parse_name, parse_path
from tickerd.streams.klines import candle_span
from tickerd.streams.window import MINUTE_MS, SymbolWindow

NOW = 1_704_067_200_000  # 2024-01-01T00:00:00Z


class Sink:
    """A subscriber that keeps what it is handed."""

    def __init__(self, combined: bool = False) -> None:
        self.combined = combined
        self.deliveries: list[list[bytes]] = []

    def payloads(self) -> list[bytes]:
        out = []
        for frames in self.deliveries:
            for frame in frames:
                assert frame[0] == 0x81  # one unfragmented text frame each
                length = frame[1] & 0x7F
                start = 2 if length < 126 else 4 if length == 126 else 10
                out.append(frame[start:])
        return out

    def deliver(self, frames: list[bytes]) -> None:
        self.deliveries.append(frames)


def hub_and_book() -> tuple[StreamHub, PriceBook]:
    book = PriceBook(SymbolUniverse.default())
    return StreamHub(book), book


def session(
    hub: StreamHub, route: Route = Route.MARKET, combined: bool = False, **kw: int
) -> StreamSession:
    return StreamSession(hub, Sink(combined), route, combined, StreamLimits(**kw))


def ask(s: StreamSession, message: object) -> object:
    text = message if isinstance(message, bytes) else orjson.dumps(message)
    return orjson.loads(s.handle(text))


# -- names and paths ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "symbol", "kind", "route"),
    [
        ("btcusdt@aggTrade", "BTCUSDT", "aggTrade", Route.MARKET),
        ("btcusdt@trade", "BTCUSDT", "trade", Route.PUBLIC),
        ("1000pepeusdt@miniTicker", "1000PEPEUSDT", "miniTicker", Route.MARKET),
        ("!miniTicker@arr", "", "!miniTicker@arr", Route.MARKET),
        ("btcusdt@kline_1M", "BTCUSDT", "kline_1M", Route.MARKET),
        ("btcusdt@depth20@100ms", "BTCUSDT", "depth20@100ms", Route.PUBLIC),
        ("btcusdt@bookTicker", "BTCUSDT", "bookTicker", Route.PUBLIC),
        ("!bookTicker", "", "!bookTicker", Route.PUBLIC),
        ("btcusdt_perpetual@continuousKline_5m", "BTCUSDT_PERPETUAL", "continuousKline_5m",
         Route.MARKET),
        ("nosuchusdt@aggTrade", "NOSUCHUSDT", "aggTrade", Route.MARKET),
    ],
)  # fmt: skip
def test_well_formed_names(text: str, symbol: str, kind: str, route: Route) -> None:
    stream = parse_name(text)
    assert stream is not None
    assert (stream.name, stream.symbol, stream.kind, stream.route) == (text, symbol, kind, route)


@pytest.mark.parametrize(
    "text",
    ["BTCUSDT@aggTrade", "btcusdt@aggtrade", "btcusdt@", "@aggTrade", "btcusdt", "!miniTicker",
     "btcusdt@kline_2m", "btcusdt@depth7", "btcusdt@aggTrade ", "btc usdt@trade",
     "btcusdt_perpetual@aggTrade", "btcusdt@continuousKline_1m", "x" * 200 + "@trade", "",
     "btcusdt@trade@arr", 5, None, ["btcusdt@trade"]],
)  # fmt: skip
def test_malformed_names(text: object) -> None:
    assert parse_name(text) is None


@pytest.mark.parametrize(
    ("path", "query", "route", "combined", "names"),
    [
        ("/ws", "", Route.PUBLIC, False, ()),
        ("/ws/btcusdt@trade/ethusdt@trade", "", Route.PUBLIC, False,
         ("btcusdt@trade", "ethusdt@trade")),
        ("/stream", "streams=btcusdt@aggTrade/!miniTicker@arr", Route.PUBLIC, True,
         ("btcusdt@aggTrade", "!miniTicker@arr")),
        ("/market/ws/btcusdt@aggTrade", "", Route.MARKET, False, ("btcusdt@aggTrade",)),
        ("/market/stream", "streams=btcusdt@aggTrade&timeUnit=MILLISECOND", Route.MARKET, True,
         ("btcusdt@aggTrade",)),
        ("/public/ws", "", Route.PUBLIC, False, ()),
        ("/public/stream", "streams=btcusdt@trade", Route.PUBLIC, True, ("btcusdt@trade",)),
        ("/private/stream", "", Route.PRIVATE, True, ()),
    ],
)  # fmt: skip
def test_stream_paths(
    path: str, query: str, route: Route, combined: bool, names: tuple[str, ...]
) -> None:
    got = parse_path(path, query)
    assert got is not None
    assert (got.route, got.combined, got.names) == (route, combined, names)


@pytest.mark.parametrize("path", ["/", "/ws-fapi/v1", "/wsx", "/user/ws", "/market", "/fapi"])
def test_other_paths_are_no_stream_paths(path: str) -> None:
    assert parse_path(path, "") is None


# -- control messages -------------------------------------------------------------------------


def test_subscribe_list_unsubscribe() -> None:
    hub, _ = hub_and_book()
    s = session(hub)
    assert ask(s, {"method": "SUBSCRIBE", "params": ["btcusdt@aggTrade", "!miniTicker@arr"],
                   "id": 1}) == {"result": None, "id": 1}  # fmt: skip
    assert s.handle(b'{"method":"LIST_SUBSCRIPTIONS","id":3}') == (
        b'{"result":["btcusdt@aggTrade","!miniTicker@arr"],"id":3}'
    )
    assert ask(s, {"method": "UNSUBSCRIBE", "params": ["btcusdt@aggTrade"], "id": 2}) == {
        "result": None, "id": 2,
    }  # fmt: skip
    assert ask(s, {"method": "LIST_SUBSCRIPTIONS", "id": 4}) == {
        "result": ["!miniTicker@arr"], "id": 4,
    }  # fmt: skip
    assert hub.subscriptions == 1
    s.close()
    assert hub.subscriptions == 0


def test_string_ids_are_echoed_as_strings() -> None:
    hub, _ = hub_and_book()
    s = session(hub)
    rid = "1f0c9c6e-3b52-4c1e-9a53-6a4c2f0e7d10"
    assert s.handle(
        b'{"method":"SUBSCRIBE","params":["btcusdt@trade"],"id":"%s"}' % rid.encode()
    ) == (b'{"result":null,"id":"%s"}' % rid.encode())
    assert s.handle(b'{"method":"LIST_SUBSCRIPTIONS"}') == b'{"result":["btcusdt@trade"],"id":null}'
    assert ask(s, {"method": "GET_PROPERTY", "params": ["x"], "id": "7"}) == {
        "error": {"code": 0, "msg": "Unknown property"}, "id": "7",
    }  # fmt: skip


def test_combined_property() -> None:
    hub, _ = hub_and_book()
    s = session(hub)
    assert s.handle(b'{"method":"GET_PROPERTY","params":["combined"],"id":2}') == (
        b'{"result":false,"id":2}'
    )
    assert ask(s, {"method": "SET_PROPERTY", "params": ["combined", True], "id": 5}) == {
        "result": None, "id": 5,
    }  # fmt: skip
    assert ask(s, {"method": "GET_PROPERTY", "params": ["combined"], "id": 6}) == {
        "result": True, "id": 6,
    }  # fmt: skip
    assert s.combined is True


@pytest.mark.parametrize(
    ("message", "code", "msg", "rid"),
    [
        (b"nope", 3, "Invalid JSON: expected value at line 1 column 1", None),
        (b'{"method":"SUBSCRIBE",\n"params":[x]}', 3, ("Invalid JSON: expected value at line 2 "
         "column 11"), None),
        (b"[1]", 3, "Invalid JSON: expected value at line 1 column 1", None),
        (b'{"method":"FOO","params":[],"id":1}', 2, ("Invalid request: unknown variant `FOO`, "
         "expected one of SUBSCRIBE, UNSUBSCRIBE, LIST_SUBSCRIPTIONS, SET_PROPERTY, "
         "GET_PROPERTY at line 1 column 15"), 1),
        (b'{"params":["btcusdt@trade"],"id":7}', 2,
         "Invalid request: missing field `method` at line 1 column 35", 7),
        (b'{"method":"SUBSCRIBE","params":["btcusdt@trade"],"id":-1}', 2,
         "Invalid request: request ID must be an unsigned integer", None),
        (b'{"method":"SUBSCRIBE","params":["btcusdt@trade"],"id":"a b"}', 2,
         "Invalid request: request ID must be an unsigned integer", None),
        (b'{"method":"SUBSCRIBE","params":["btcusdt@trade"],"id":true}', 2,
         "Invalid request: request ID must be an unsigned integer", None),
        (b'{"method":"SUBSCRIBE","params":["btcusdt@trade"],"id":1.5}', 2,
         "Invalid request: request ID must be an unsigned integer", None),
        (b'{"method":"SUBSCRIBE","params":["BTCUSDT@trade"],"id":3}', 2,
         "Invalid request: invalid stream", 3),
        (b'{"method":"SUBSCRIBE","params":[],"id":3}', 2, "Invalid request: invalid stream", 3),
        (b'{"method":"SUBSCRIBE","params":"btcusdt@trade","id":3}', 2,
         "Invalid request: invalid stream", 3),
        (b'{"method":"UNSUBSCRIBE","params":[7],"id":3}', 2, "Invalid request: invalid stream", 3),
        (b'{"method":"SET_PROPERTY","params":["combined","yes"],"id":4}', 1,
         "Invalid value type: expected Boolean", 4),
        (b'{"method":"SET_PROPERTY","params":["compressed",true],"id":4}', 0, "Unknown property",
         4),
        (b'{"method":"SET_PROPERTY","params":[1,true],"id":4}', 2,
         "Invalid request: property name must be a string", 4),
        (b'{"method":"SET_PROPERTY","params":["combined",true,1],"id":4}', 2,
         "Invalid request: too many parameters", 4),
        (b'{"method":"GET_PROPERTY","params":["combined","x"],"id":4}', 2,
         "Invalid request: too many parameters", 4),
        (b'{"method":"GET_PROPERTY","params":["other"],"id":4}', 0, "Unknown property", 4),
        (b'{"method":"LIST_SUBSCRIPTIONS","params":["x"],"id":4}', 2,
         "Invalid request: too many parameters", 4),
    ],
)  # fmt: skip
def test_refusals_carry_binance_codes(message: bytes, code: int, msg: str, rid: int | None) -> None:
    hub, _ = hub_and_book()
    s = session(hub)
    reply = s.handle(message)
    assert orjson.loads(reply) == {"error": {"code": code, "msg": msg}, "id": rid}
    assert reply.startswith(b'{"error":{"code":')  # error first, then id
    assert s.streams == {}


def test_well_formed_names_not_published_are_acknowledged_and_silent() -> None:
    hub, book = hub_and_book()
    s = session(hub, Route.MARKET)
    names = ["btcusdt@bookTicker", "btcusdt@markPrice", "nosuchusdt@kline_1m", "btcusdt@trade"]
    assert ask(s, {"method": "SUBSCRIBE", "params": names, "id": 9}) == {"result": None, "id": 9}
    assert ask(s, {"method": "LIST_SUBSCRIPTIONS", "id": 10}) == {"result": names, "id": 10}
    assert hub.subscriptions == 0 and sorted(hub.status()["silent"]) == sorted(names)  # type: ignore[call-overload]
    assert not book.wants_trades  # nothing to publish: the book hands over no trades
    book.apply([Trade("BTCUSDT", "42000.10", NOW, "1", 1, 1, 1, False)])
    hub.flush(NOW)
    hub.tick(10.0, NOW)
    assert isinstance(s.sub, Sink) and s.sub.deliveries == []


# -- bounds ---------------------------------------------------------------------------------


def test_ten_messages_a_second_then_refused_and_the_next_second_resets() -> None:
    hub, _ = hub_and_book()
    s = session(hub)
    assert all(s.allow_message(100.0 + i / 100) for i in range(10))
    assert not s.allow_message(100.5)
    assert s.allow_message(101.0)
    tight = session(hub, messages_per_s=3)
    assert [tight.allow_message(5.0) for _ in range(4)] == [True, True, True, False]


def test_at_most_max_streams_per_connection() -> None:
    hub, _ = hub_and_book()
    s = session(hub)
    names = [f"sym{i}usdt@aggTrade" for i in range(1024)]
    assert ask(s, {"method": "SUBSCRIBE", "params": names, "id": 1}) == {"result": None, "id": 1}
    assert ask(s, {"method": "SUBSCRIBE", "params": names[:5], "id": 2}) == {
        "result": None, "id": 2,
    }  # fmt: skip  # already subscribed: no new stream
    assert ask(s, {"method": "SUBSCRIBE", "params": ["btcusdt@trade"], "id": 3}) == {
        "error": {"code": 2, "msg": "Invalid request: too many streams; at most 1024 per "
                  "connection"}, "id": 3,
    }  # fmt: skip
    assert len(s.streams) == 1024
    small = session(hub, max_streams=2)
    assert small.open_with(("a@trade", "b@trade", "c@trade")) == (
        "3 streams; at most 2 per connection"
    )
    assert small.open_with(("a@trade", "B@trade")) == "invalid stream name 'B@trade'"
    assert small.open_with(("a@trade", "a@trade", "b@trade")) is None
    assert list(small.streams) == ["a@trade", "b@trade"]


# -- the 24-hour window -------------------------------------------------------------------------


def test_window_rolls_by_whole_minutes() -> None:
    w = SymbolWindow(2)
    w.add(NOW, Decimal("100.00"), Decimal(1))
    w.add(NOW + 5 * MINUTE_MS, Decimal("120.00"), Decimal("0.5"))
    w.add(NOW + 10 * MINUTE_MS, Decimal("90.00"), Decimal(2))
    w.add(NOW + 11 * MINUTE_MS, Decimal("95.00"), Decimal(0))  # a plain price
    assert w.mini() == ("95.00", "100.00", "120.00", "90.00", "3.5", "340")
    day = 1440 * MINUTE_MS
    assert not w.expire(NOW + day - 1)  # the first minute is still in the window
    assert w.expire(NOW + day)  # ... and now it is not
    assert w.mini() == ("95.00", "120.00", "120.00", "90.00", "2.5", "240")
    assert w.expire(NOW + 6 * MINUTE_MS + day)  # the high leaves: recomputed
    assert w.mini() == ("95.00", "90.00", "95.00", "90.00", "2", "180")
    assert w.expire(NOW + 100 * day)  # everything old: the last price stands, no volume
    assert w.mini() == ("95.00", "95.00", "95.00", "95.00", "0", "0")
    assert not w.expire(NOW + 101 * day)


# -- the hub ----------------------------------------------------------------------------------


def trade(symbol: str, price: str, n: int, qty: str = "0.010", t: int = NOW) -> Trade:
    return Trade(symbol, price, t + n, qty, n, n * 10, n * 10 + 1, n % 2 == 0)


def test_hub_listens_to_the_book_only_once_a_published_stream_is_subscribed() -> None:
    hub, book = hub_and_book()
    assert not book.wants_trades and book._listeners == ()
    s = session(hub, Route.PUBLIC)
    ask(s, {"method": "SUBSCRIBE", "params": ["btcusdt@aggTrade"], "id": 1})  # market only
    assert not book.wants_trades and book._listeners == ()
    ask(s, {"method": "SUBSCRIBE", "params": ["btcusdt@trade"], "id": 2})
    assert book.wants_trades and book._listeners == (hub.on_ticks,)


def test_one_serialisation_shared_by_every_subscriber_and_coalesced_per_round() -> None:
    hub, book = hub_and_book()
    raws = [session(hub, Route.MARKET) for _ in range(3)]
    wrapped = [session(hub, Route.MARKET, combined=True) for _ in range(2)]
    for s in (*raws, *wrapped):
        assert s.open_with(("btcusdt@aggTrade", "dogeusdt@aggTrade")) is None
    pending: list[int] = []
    hub.on_pending = lambda: pending.append(1)
    book.apply([trade("BTCUSDT", "42000.10", 1), trade("DOGEUSDT", "0.081230", 2)])
    book.apply([trade("BTCUSDT", "42000.20", 3)])
    hub.flush(NOW + 10)
    assert pending == [] and all(not s.sub.deliveries for s in raws)  # type: ignore[attr-defined]
    hub.tick(0.0, NOW + 10)  # the 100 ms round
    first = raws[0].sub
    assert isinstance(first, Sink) and len(first.deliveries) == 1  # one write per round
    frames = first.deliveries[0]
    assert len(frames) == 3
    for s in raws[1:]:
        assert isinstance(s.sub, Sink)
        assert all(a is b for a, b in zip(s.sub.deliveries[0], frames, strict=True))
    w0, w1 = (s.sub for s in wrapped)
    assert isinstance(w0, Sink) and isinstance(w1, Sink)
    assert all(a is b for a, b in zip(w0.deliveries[0], w1.deliveries[0], strict=True))
    events = [orjson.loads(p) for p in first.payloads()]
    assert [e["p"] for e in events] == ["42000.10", "42000.20", "0.081230"]  # by stream
    assert events[0] == {"e": "aggTrade", "E": NOW + 1, "s": "BTCUSDT", "a": 1,
                         "p": "42000.10", "q": "0.010", "nq": "0.010", "f": 10, "l": 11,
                         "T": NOW + 1, "m": False}  # fmt: skip
    assert list(events[0]) == ["e", "E", "s", "a", "p", "q", "nq", "f", "l", "T", "m"]
    wrapped_events = [orjson.loads(p) for p in w0.payloads()]
    assert wrapped_events[0] == {"stream": "btcusdt@aggTrade", "data": events[0]}
    assert [e["stream"] for e in wrapped_events] == ["btcusdt@aggTrade"] * 2 + ["dogeusdt@aggTrade"]
    assert hub.events == 3


def test_trade_stream_goes_out_on_the_next_flush() -> None:
    hub, book = hub_and_book()
    s = session(hub, Route.PUBLIC)
    s.open_with(("ethusdt@trade",))
    pending: list[int] = []
    hub.on_pending = lambda: pending.append(1)
    book.apply([trade("ETHUSDT", "2300.15", 5, "1.5"), Tick("ETHUSDT", "2300.16", NOW + 6)])
    assert pending == [1]
    hub.flush(NOW + 3)  # a clock behind the trade: E is never before T
    assert isinstance(s.sub, Sink)
    assert [orjson.loads(p) for p in s.sub.payloads()] == [
        {"e": "trade", "E": NOW + 5, "T": NOW + 5, "s": "ETHUSDT", "t": 51, "p": "2300.15",
         "q": "1.5", "X": "MARKET", "m": False},
    ]  # fmt: skip  # the plain tick is no trade


def test_mini_tickers_every_second_and_two_seconds_changed_symbols_only() -> None:
    hub, book = hub_and_book()
    s = session(hub, Route.MARKET, combined=True)
    s.open_with(("!miniTicker@arr", "btcusdt@miniTicker"))
    sink = s.sub
    assert isinstance(sink, Sink)
    book.apply([trade("BTCUSDT", "42000.10", 1, "0.5"), trade("DOGEUSDT", "0.081230", 2, "100")])
    book.apply([trade("BTCUSDT", "41999.90", 3, "0.25")])
    hub.tick(10.0, NOW + 1000)
    got = [orjson.loads(p) for p in sink.payloads()]
    assert [g["stream"] for g in got] == ["!miniTicker@arr", "btcusdt@miniTicker"]
    arr = got[0]["data"]
    assert [m["s"] for m in arr] == ["BTCUSDT", "DOGEUSDT"]
    assert arr[0] == {"e": "24hrMiniTicker", "E": NOW + 1000, "s": "BTCUSDT", "c": "41999.90",
                      "o": "42000.10", "h": "42000.10", "l": "41999.90", "v": "0.75",
                      "q": "31500.025"}  # fmt: skip
    assert got[1]["data"] == arr[0]
    sink.deliveries.clear()
    hub.tick(10.5, NOW + 1500)
    assert sink.deliveries == []  # neither period has passed
    book.apply([trade("DOGEUSDT", "0.081240", 4, "1")])
    hub.tick(11.0, NOW + 2000)
    got = [orjson.loads(p) for p in sink.payloads()]
    assert [g["stream"] for g in got] == ["!miniTicker@arr"]  # BTC did not change
    assert [m["s"] for m in got[0]["data"]] == ["DOGEUSDT"]
    sink.deliveries.clear()
    hub.tick(12.0, NOW + 3000)  # second 2 s round: DOGE changed, but nobody asked for it
    assert sink.deliveries == []


def test_tickers_carry_the_full_24h_figures() -> None:
    hub, book = hub_and_book()
    s = session(hub, Route.MARKET)
    s.open_with(("!ticker@arr", "ethusdt@ticker"))
    sink = s.sub
    assert isinstance(sink, Sink)
    book.apply([
        Trade("ETHUSDT", "2000.00", NOW + 10, "1.000", 7, 10, 12, True),  # three trades
        Trade("ETHUSDT", "2100.00", NOW + MINUTE_MS, "3.000", 8, 13, 13, False),
        Tick("ETHUSDT", "2050.00", NOW + MINUTE_MS + 5),  # a price without a trade
    ])  # fmt: skip
    hub.tick(1.0, NOW + 2 * MINUTE_MS)
    arr, single = (orjson.loads(p) for p in sink.payloads())
    assert arr == [single]
    assert list(single) == ["e", "E", "s", "p", "P", "w", "c", "Q", "o", "h", "l", "v", "q",
                            "O", "C", "F", "L", "n"]  # fmt: skip
    assert single == {
        "e": "24hrTicker", "E": NOW + 2 * MINUTE_MS, "s": "ETHUSDT", "p": "50.00",
        "P": "2.500", "w": "2075.00", "c": "2050.00", "Q": "3.000", "o": "2000.00",
        "h": "2100.00", "l": "2000.00", "v": "4", "q": "8300",
        "O": NOW + 2 * MINUTE_MS - 1439 * MINUTE_MS, "C": NOW + 2 * MINUTE_MS, "F": 10, "L": 13,
        "n": 4,
    }  # fmt: skip
    sink.deliveries.clear()
    hub.tick(3.0, NOW + 2 * MINUTE_MS + 1440 * MINUTE_MS)  # a day later: every trade has left
    (arr,), (single,) = ([orjson.loads(p)] for p in sink.payloads())
    assert arr == [single]
    assert {k: single[k] for k in ("p", "P", "w", "c", "o", "h", "l", "v", "q", "F", "L", "n")} == {
        "p": "0.00", "P": "0.000", "w": "0.00", "c": "2050.00", "o": "2050.00", "h": "2050.00",
        "l": "2050.00", "v": "0", "q": "0", "F": -1, "L": -1, "n": 0,
    }  # fmt: skip


# -- klines ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("interval", "time_ms", "span"),
    [
        ("1m", NOW + 61_000, (NOW + 60_000, NOW + 119_999)),
        ("4h", NOW + 5 * 3_600_000, (NOW + 4 * 3_600_000, NOW + 8 * 3_600_000 - 1)),
        ("3d", NOW, (1_703_980_800_000, 1_704_239_999_999)),  # 2023-12-31 .. 2024-01-02
        ("1w", NOW - 1, (1_703_462_400_000, NOW - 1)),  # from Monday 2023-12-25
        ("1w", NOW + 3_600_000, (NOW, NOW + 7 * 86_400_000 - 1)),  # Monday 2024-01-01
        ("1M", 1_709_164_800_000, (1_706_745_600_000, 1_709_251_199_999)),  # 2024-02 (29 days)
        ("1M", 1_735_689_599_999, (1_733_011_200_000, 1_735_689_599_999)),  # December 2024
    ],
)
def test_candle_spans(interval: str, time_ms: int, span: tuple[int, int]) -> None:
    assert candle_span(interval, time_ms) == span


def test_klines_by_stream_closed_by_a_later_trade_or_by_the_clock() -> None:
    hub, book = hub_and_book()
    s = session(hub, Route.MARKET)
    s.open_with(("btcusdt@kline_1m", "dogeusdt@kline_1h"))
    sink = s.sub
    assert isinstance(sink, Sink)
    book.apply([
        Trade("BTCUSDT", "42000.10", NOW + 1_000, "0.5", 1, 10, 11, False),  # taker buy, 2 fills
        Trade("BTCUSDT", "42010.00", NOW + 2_000, "0.25", 2, 12, 12, True),  # taker sell
        Tick("BTCUSDT", "41990.00", NOW + 3_000),  # a price without a trade
        Trade("DOGEUSDT", "0.081230", NOW + 4_000, "1000", 3, 20, 20, False),
    ])  # fmt: skip
    hub.tick(0.0, NOW + 5_000)
    btc, doge = (orjson.loads(p) for p in sink.payloads())
    assert list(btc) == ["e", "E", "s", "k"] and list(btc["k"]) == [
        "t", "T", "s", "i", "f", "L", "o", "c", "h", "l", "v", "n", "x", "q", "V", "Q", "B",
    ]  # fmt: skip
    assert btc == {"e": "kline", "E": NOW + 5_000, "s": "BTCUSDT", "k": {
        "t": NOW, "T": NOW + 59_999, "s": "BTCUSDT", "i": "1m", "f": 10, "L": 12,
        "o": "42000.10", "c": "41990.00", "h": "42010.00", "l": "41990.00", "v": "0.75",
        "n": 3, "x": False, "q": "31502.55", "V": "0.5", "Q": "21000.05", "B": "0"}}  # fmt: skip
    assert doge["k"]["i"] == "1h" and doge["k"]["T"] == NOW + 3_599_999
    sink.deliveries.clear()
    hub.tick(0.1, NOW + 6_000)
    assert sink.deliveries == []  # nothing changed, and the 250 ms round has not come
    book.apply([Trade("BTCUSDT", "42001.00", NOW + 61_000, "1", 4, 13, 13, True)])
    hub.tick(0.3, NOW + 61_000)
    closed, current = (orjson.loads(p)["k"] for p in sink.payloads())
    assert (closed["t"], closed["x"], closed["c"], closed["n"]) == (NOW, True, "41990.00", 3)
    assert (current["t"], current["x"], current["o"], current["V"]) == (NOW + 60_000, False,
                                                                        "42001.00", "0")  # fmt: skip
    sink.deliveries.clear()
    hub.tick(0.6, NOW + 3_600_000)  # the clock passes both candles' ends: each closes, once
    ends = sorted((k["i"], k["x"]) for k in (orjson.loads(p)["k"] for p in sink.payloads()))
    assert ends == [("1h", True), ("1m", True)]
    sink.deliveries.clear()
    hub.tick(0.9, NOW + 3_700_000)
    assert sink.deliveries == []


def test_statistics_rounds_keep_their_period_when_the_timer_runs_late() -> None:
    # The rounds' timer fires late on a busy loop (here every 130 ms instead of 100 ms):
    # !miniTicker@arr still sends one array a second, @miniTicker one every two seconds.
    hub, book = hub_and_book()
    s = session(hub, Route.MARKET, combined=True)
    s.open_with(("!miniTicker@arr", "btcusdt@miniTicker"))
    sink = s.sub
    assert isinstance(sink, Sink)
    rounds = {"!miniTicker@arr": 0, "btcusdt@miniTicker": 0}
    for step in range(462):  # from 10.00 s to 69.93 s
        book.apply([trade("BTCUSDT", f"42000.{step % 10}0", step + 1, "0.5")])
        hub.tick(10.0 + step * 0.13, NOW + step * 130)
        for got in sink.payloads():
            rounds[orjson.loads(got)["stream"]] += 1
        sink.deliveries.clear()
    # Rounds due at 10, 11, … 69 and 10, 12, … 68; timers that slip lose 2 and 1 of them.
    assert rounds == {"!miniTicker@arr": 60, "btcusdt@miniTicker": 30}


def test_a_round_more_than_a_period_late_starts_a_new_grid() -> None:
    from tickerd.streams.hub import next_round

    assert next_round(10.0, 10.03, 1.0) == 11.0  # late by the timer: the grid holds
    assert next_round(10.0, 12.5, 1.0) == 13.5  # a stalled loop: no burst of missed rounds
    assert next_round(10.0, 11.0, 1.0) == 12.0

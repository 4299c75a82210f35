"""Market streams end to end: a real ``tickerd serve``, real sockets, unchanged clients.

Paths, payloads and limits as on
https://developers.binance.com/docs/derivatives/usds-margined-futures/websocket-market-streams
(the routes ``/market`` and ``/public``; a path without a route is served like ``/public``).
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import json
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from websockets.sync.client import ClientConnection
from websockets.sync.client import connect as ws_connect

from push_feed import push, push_server
from tickerd.control import ControlClient

pytestmark = pytest.mark.timeout(60)

TOKEN = "stream-test-token-0123456789"
DATA = Path(__file__).parent / "data" / "replay"
OP_TEXT, OP_CLOSE, OP_PING = 0x1, 0x8, 0x9


def open_stream(srv: Any, path: str) -> ClientConnection:
    return ws_connect(
        f"ws://127.0.0.1:{srv.port}{path}",
        proxy=None,
        open_timeout=5,
        close_timeout=2,
        ping_interval=None,
        compression=None,
    )


def ticker_price(srv: Any, symbol: str) -> dict[str, Any]:
    with srv.connect() as ws:
        ws.send(json.dumps({"id": 1, "method": "ticker.price", "params": {"symbol": symbol}}))
        result: dict[str, Any] = json.loads(ws.recv(timeout=5))["result"]
        return result


def recv_json(ws: ClientConnection, timeout: float = 5.0) -> Any:
    return json.loads(ws.recv(timeout=timeout))


def silent(ws: ClientConnection, seconds: float) -> bool:
    try:
        ws.recv(timeout=seconds)
    except TimeoutError:
        return True
    return False


def now_ms() -> int:
    return time.time_ns() // 1_000_000


# -- routes, payloads, several tick sizes ------------------------------------------------------


def test_pushed_trades_on_each_route_agree_with_ticker_price(server: Any) -> None:
    srv, port = push_server(server)
    with contextlib.ExitStack() as stack:
        market, legacy, public, wrong = (
            stack.enter_context(open_stream(srv, p))
            for p in (
                "/market/stream?streams=btcusdt@aggTrade/dogeusdt@aggTrade/1000pepeusdt@aggTrade",
                "/ws/btcusdt@trade",  # no route: served like /public
                "/public/ws/btcusdt@aggTrade",  # aggTrade lives on /market
                "/market/ws/btcusdt@trade",  # trade lives on /public
            )
        )
        check_routes(srv, port, market, legacy, public, wrong)


def check_routes(srv: Any, port: int, *sockets: ClientConnection) -> None:
    market, legacy, public, wrong = sockets
    public.send('{"method":"SUBSCRIBE","params":["btcusdt@trade"],"id":1}')
    assert recv_json(public) == {"result": None, "id": 1}
    t = now_ms()
    push(port, [
        {"symbol": "BTCUSDT", "price": "42000.1", "time": t, "qty": "0.250"},
        {"symbol": "DOGEUSDT", "price": "0.08123", "time": t + 1, "qty": "1000"},
        {"symbol": "1000PEPEUSDT", "price": "0.0012345", "time": t + 2},
    ])  # fmt: skip
    got = [recv_json(market) for _ in range(3)]
    by_stream = {g["stream"]: g["data"] for g in got}
    assert set(by_stream) == {"btcusdt@aggTrade", "dogeusdt@aggTrade", "1000pepeusdt@aggTrade"}
    btc = by_stream["btcusdt@aggTrade"]
    assert list(btc) == ["e", "E", "s", "a", "p", "q", "nq", "f", "l", "T", "m"]
    assert btc["e"] == "aggTrade" and btc["s"] == "BTCUSDT" and btc["T"] == t
    assert (btc["p"], btc["q"], btc["nq"]) == ("42000.10", "0.250", "0.250")
    assert btc["a"] == btc["f"] == btc["l"] == 1 and btc["m"] is False and btc["E"] >= btc["T"]
    assert by_stream["dogeusdt@aggTrade"]["p"] == "0.081230"
    assert by_stream["1000pepeusdt@aggTrade"]["p"] == "0.0012345"
    assert by_stream["1000pepeusdt@aggTrade"]["q"] == "0"
    for data in by_stream.values():
        assert isinstance(data["p"], str) and isinstance(data["E"], int)
        assert ticker_price(srv, data["s"]) == {"symbol": data["s"], "price": data["p"],
                                                "time": data["T"]}  # fmt: skip
    for ws in (legacy, public):
        trade = recv_json(ws)
        assert list(trade) == ["e", "E", "T", "s", "t", "p", "q", "X", "m"]
        assert trade["e"] == "trade" and trade["p"] == "42000.10" and trade["X"] == "MARKET"
    assert silent(wrong, 1.0) and silent(public, 0.3)  # acknowledged, never served


def test_url_parts_that_are_no_stream_names_are_passed_over(server: Any, raw: Any) -> None:
    srv = server("--tick-rate", "0")
    too_many = "/".join(f"s{i}usdt@trade" for i in range(1025))
    client = raw(srv, handshake=False)
    response = client.handshake("/stream?streams=" + too_many)
    assert response.status == 400, response.raw
    assert response.body == b"1025 streams; at most 1024 per connection"
    # a label (ccxt opens /public/ws/0) or a malformed name is no subscription
    with open_stream(srv, "/ws/0/BTCUSDT@trade/btcusdt@trade") as ws:
        ws.send('{"method":"LIST_SUBSCRIPTIONS","id":1}')
        assert recv_json(ws) == {"result": ["btcusdt@trade"], "id": 1}


def test_control_messages_over_the_socket(server: Any) -> None:
    srv = server("--tick-rate", "0")
    with open_stream(srv, "/market/ws") as ws:
        ws.send('{"method":"SUBSCRIBE","params":["btcusdt@aggTrade","btcusdt@depth"],"id":1}')
        assert ws.recv(timeout=5) == '{"result":null,"id":1}'
        ws.send('{"method":"LIST_SUBSCRIPTIONS","id":3}')
        assert recv_json(ws) == {"result": ["btcusdt@aggTrade", "btcusdt@depth"], "id": 3}
        ws.send('{"method":"GET_PROPERTY","params":["combined"],"id":2}')
        assert recv_json(ws) == {"result": False, "id": 2}
        ws.send('{"method":"SUBSCRIBE","params":["btcusdt@Trade"],"id":4}')
        assert recv_json(ws) == {"error": {"code": 2, "msg": "Invalid request: invalid stream"},
                                 "id": 4}  # fmt: skip
        ws.send("{")
        assert recv_json(ws)["error"]["code"] == 3
    with open_stream(srv, "/market/stream") as ws:
        ws.send('{"method":"GET_PROPERTY","params":["combined"],"id":2}')
        assert recv_json(ws) == {"result": True, "id": 2}


# -- limits ---------------------------------------------------------------------------------------


def test_eleven_messages_in_a_second_close_the_socket(server: Any, raw: Any) -> None:
    srv = server("--tick-rate", "0")
    client = raw(srv, path="/market/ws")
    # 4 pings and 7 control messages: the 11th message is one too many
    burst = client.frame(OP_PING, b"p") * 4
    burst += client.frame(OP_TEXT, b'{"method":"LIST_SUBSCRIPTIONS","id":1}') * 7
    client.send(burst)
    frames = [client.recv_frame() for _ in range(4 + 6)]
    assert [f.opcode for f in frames] == [0xA] * 4 + [OP_TEXT] * 6
    close = client.recv_frame()
    assert close.opcode == OP_CLOSE and close.close_code == 1008
    assert close.close_reason == b"Too many requests"


def test_messages_per_second_is_configurable(server: Any, raw: Any) -> None:
    srv = server("--tick-rate", "0", "--stream-messages-per-s", "3")
    client = raw(srv, path="/ws")
    client.send(client.frame(OP_TEXT, b'{"method":"LIST_SUBSCRIPTIONS","id":1}') * 4)
    assert [client.recv_frame().opcode for _ in range(3)] == [OP_TEXT] * 3
    assert client.recv_frame().close_code == 1008


def test_stream_sockets_ping_and_end_at_their_lifetime(server: Any, raw: Any) -> None:
    srv = server("--tick-rate", "0", "--stream-ping-interval", "0.5",
                 "--stream-max-lifetime", "3")  # fmt: skip
    client = raw(srv, path="/market/ws")
    started = time.monotonic()
    ping = client.recv_frame(timeout=5)
    assert ping.opcode == OP_PING and ping.payload.isdigit()
    api = raw(srv)  # a WS API socket keeps the WS API's timers (180 s pings)
    close = client.expect_close(timeout=10)
    assert close.close_code == 1001 and time.monotonic() - started >= 2.5
    api.send_text(b'{"id":1,"method":"ticker.price","params":{"symbol":"BTCUSDT"}}')
    assert api.recv_text().startswith(b'{"id":1,"status":200')


@pytest.mark.timeout(60)
def test_a_subscriber_that_does_not_read_is_cut_off(server: Any, raw: Any) -> None:
    srv, port = push_server(server, "--max-send-buffer-bytes", "65536")
    slow = raw(srv, path="/ws/btcusdt@trade", rcvbuf=4096)
    with open_stream(srv, "/ws/btcusdt@trade") as reader:
        t = now_ms()
        for batch in range(6):
            push(port, [{"symbol": "BTCUSDT", "price": f"{40000 + (i % 500) / 10:.1f}",
                         "time": t, "qty": "0.001"} for i in range(10_000)])  # fmt: skip
            if batch == 0:
                assert recv_json(reader)["e"] == "trade"  # a reader is served meanwhile
        srv.wait_log("cutting off 127.0.0.1", timeout=20)
    seen = slow.wait_closed(10)
    assert len(seen) < 8 * 1024 * 1024


def test_streams_off_serves_no_stream_path(server: Any, raw: Any) -> None:
    srv = server("--tick-rate", "0", "--streams", "off")
    for path in ("/ws/btcusdt@trade", "/market/stream?streams=btcusdt@aggTrade", "/public/ws"):
        client = raw(srv, handshake=False)
        assert client.handshake(path).status == 404


# -- replay: exact values from a known file --------------------------------------------------------


def test_replay_file_yields_exactly_its_aggtrades_tickers_and_kline(server: Any) -> None:
    path = DATA / "BTCUSDT-trades-2024-01-01.csv"
    with open(path, newline="") as f:
        rows = [r for r in csv.reader(f) if r and r[0].isdigit()]
    srv = server("--feed", "replay", "--replay-path", str(path), "--replay-speed", "step",
                 "--control-port", "0", "--control-token", TOKEN, minute_margin=0)  # fmt: skip
    names = ["btcusdt@aggTrade", "btcusdt@miniTicker", "btcusdt@ticker", "btcusdt@kline_1m"]
    with open_stream(srv, "/market/stream?streams=" + "/".join(names)) as ws:
        ws.send('{"method":"LIST_SUBSCRIPTIONS","id":1}')
        assert recv_json(ws)["result"] == names
        answer = ControlClient(srv.control_url, TOKEN).call("replay.step", count=len(rows))
        assert answer["stepped"] == len(rows)
        aggs: list[dict[str, Any]] = []
        stats: dict[str, dict[str, Any]] = {}
        deadline = time.monotonic() + 10
        while (len(aggs) < len(rows) or len(stats) < 3) and time.monotonic() < deadline:
            event = recv_json(ws)
            if event["stream"] == "btcusdt@aggTrade":
                aggs.append(event["data"])
            else:
                stats[event["stream"]] = event["data"]
    mini, ticker = stats.get("btcusdt@miniTicker"), stats.get("btcusdt@ticker")
    kline = stats.get("btcusdt@kline_1m")
    rows.sort(key=lambda r: int(r[4]))  # time order (stable: file order at equal times)
    expected = [
        {"e": "aggTrade", "s": "BTCUSDT", "a": int(r[0]), "p": f"{Decimal(r[1]):.2f}",
         "q": r[2], "nq": r[2], "f": int(r[0]), "l": int(r[0]), "T": int(r[4]),
         "m": r[5] == "true"}
        for r in rows
    ]  # fmt: skip
    assert [{k: v for k, v in a.items() if k != "E"} for a in aggs] == expected
    assert all(a["E"] >= a["T"] for a in aggs)
    prices = [Decimal(r[1]) for r in rows]
    assert mini is not None
    assert {k: mini[k] for k in ("e", "s", "c", "o", "h", "l")} == {
        "e": "24hrMiniTicker", "s": "BTCUSDT", "c": f"{prices[-1]:.2f}",
        "o": f"{prices[0]:.2f}", "h": f"{max(prices):.2f}", "l": f"{min(prices):.2f}",
    }  # fmt: skip
    assert Decimal(mini["v"]) == sum(Decimal(r[2]) for r in rows)
    assert Decimal(mini["q"]) == sum(Decimal(r[1]) * Decimal(r[2]) for r in rows)
    assert mini["c"] == ticker_price(srv, "BTCUSDT")["price"]
    assert ticker is not None
    volume = sum(Decimal(r[2]) for r in rows)
    quote = sum(Decimal(r[1]) * Decimal(r[2]) for r in rows)
    cent = Decimal("0.01")
    assert {k: ticker[k] for k in ("p", "P", "w", "c", "Q", "o", "h", "l", "F", "L", "n")} == {
        "p": f"{prices[-1] - prices[0]:.2f}",
        "P": f"{((prices[-1] - prices[0]) * 100 / prices[0]).quantize(Decimal('0.001')):f}",
        "w": f"{(quote / volume).quantize(cent):f}", "c": mini["c"], "Q": rows[-1][2],
        "o": mini["o"], "h": mini["h"], "l": mini["l"], "F": int(rows[0][0]),
        "L": int(rows[-1][0]), "n": len(rows),
    }  # fmt: skip
    assert (Decimal(ticker["v"]), Decimal(ticker["q"])) == (volume, quote)
    assert ticker["C"] - ticker["O"] == 1439 * 60_000 + ticker["C"] % 60_000
    # the file's 14 seconds are one 1m candle, still open at the replay clock
    assert kline is not None
    taker = [r for r in rows if r[5] == "false"]  # the buyer took
    start = int(rows[0][4]) // 60_000 * 60_000
    assert kline["k"] == {
        "t": start, "T": start + 59_999, "s": "BTCUSDT", "i": "1m", "f": int(rows[0][0]),
        "L": int(rows[-1][0]), "o": mini["o"], "c": mini["c"], "h": mini["h"], "l": mini["l"],
        "v": ticker["v"], "n": len(rows), "x": False, "q": ticker["q"],
        "V": kline["k"]["V"], "Q": kline["k"]["Q"], "B": "0",
    }  # fmt: skip
    assert Decimal(kline["k"]["V"]) == sum(Decimal(r[2]) for r in taker)
    assert Decimal(kline["k"]["Q"]) == sum(Decimal(r[1]) * Decimal(r[2]) for r in taker)


# -- unchanged clients ---------------------------------------------------------------------------


def test_python_binance_futures_multiplex_socket(server: Any, monkeypatch: Any) -> None:
    pytest.importorskip("binance")
    from binance import AsyncClient, BinanceSocketManager

    srv, port = push_server(server)
    # The only change: the futures stream host (python-binance adds market/stream?streams=).
    monkeypatch.setattr(BinanceSocketManager, "FSTREAM_URL", f"ws://127.0.0.1:{srv.port}/")

    async def scenario() -> list[dict[str, Any]]:
        client = AsyncClient()  # not .create(): that calls Binance's spot REST API
        try:
            bm = BinanceSocketManager(client)
            socket = bm.futures_multiplex_socket(["btcusdt@aggTrade", "ethusdt@aggTrade"])
            async with socket as s:
                t = now_ms()
                await asyncio.to_thread(push, port, [
                    {"symbol": "BTCUSDT", "price": "42000.3", "time": t, "qty": "0.5"},
                    {"symbol": "ETHUSDT", "price": "2300.15", "time": t, "qty": "1.25"},
                ])  # fmt: skip
                return [await asyncio.wait_for(s.recv(), 10) for _ in range(2)]
        finally:
            await client.close_connection()

    got = asyncio.run(scenario())
    by_symbol = {m["data"]["s"]: m for m in got}
    assert {m["stream"] for m in got} == {"btcusdt@aggTrade", "ethusdt@aggTrade"}
    assert by_symbol["BTCUSDT"]["data"]["p"] == "42000.30"
    assert by_symbol["ETHUSDT"]["data"]["q"] == "1.25"
    for symbol, message in by_symbol.items():
        assert ticker_price(srv, symbol)["price"] == message["data"]["p"]


def test_ccxt_pro_watch_trades(server: Any) -> None:
    pytest.importorskip("ccxt.pro")
    import ccxt.pro as ccxtpro

    srv, port = push_server(server)

    async def scenario() -> list[Any]:
        exchange = ccxtpro.binanceusdm({"options": {"fetchCurrencies": False}})
        # The only changes: the fapi REST URLs (markets from exchangeInfo) and the stream URL.
        api = exchange.urls["api"]
        for name, url in api.items():
            if name.startswith("fapi") and isinstance(url, str):
                api[name] = url.replace("https://fapi.binance.com", srv.rest_url)
        api["ws"]["linear"] = f"ws://127.0.0.1:{srv.port}/ws"
        try:
            task = asyncio.ensure_future(exchange.watch_trades("BTC/USDT:USDT"))
            await asyncio.sleep(2.0)  # markets loaded, @trade subscribed
            await asyncio.to_thread(push, port, [
                {"symbol": "BTCUSDT", "price": "42001.7", "time": now_ms(), "qty": "0.004"},
            ])  # fmt: skip
            return list(await asyncio.wait_for(task, 10))
        finally:
            await exchange.close()

    trades = asyncio.run(scenario())
    assert len(trades) == 1
    assert trades[0]["info"]["p"] == "42001.70"  # Binance's string, as on the wire
    assert trades[0]["amount"] == 0.004 and trades[0]["symbol"] == "BTC/USDT:USDT"
    assert ticker_price(srv, "BTCUSDT")["price"] == trades[0]["info"]["p"]


def test_ccxt_pro_watch_ticker_and_ohlcv(server: Any) -> None:
    pytest.importorskip("ccxt.pro")
    import ccxt.pro as ccxtpro

    srv, port = push_server(server)

    async def scenario() -> tuple[Any, Any]:
        exchange = ccxtpro.binanceusdm({"options": {"fetchCurrencies": False}})
        api = exchange.urls["api"]
        for name, url in api.items():
            if name.startswith("fapi") and isinstance(url, str):
                api[name] = url.replace("https://fapi.binance.com", srv.rest_url)
        api["ws"]["linear"] = f"ws://127.0.0.1:{srv.port}/ws"
        try:
            ticker = asyncio.ensure_future(exchange.watch_ticker("ETH/USDT:USDT"))
            ohlcv = asyncio.ensure_future(exchange.watch_ohlcv("ETH/USDT:USDT", "1m"))
            await asyncio.sleep(2.0)  # markets loaded, @miniTicker and @kline_1m subscribed
            t = now_ms()
            await asyncio.to_thread(push, port, [
                {"symbol": "ETHUSDT", "price": "2300.15", "time": t, "qty": "2"},
                {"symbol": "ETHUSDT", "price": "2301.5", "time": t + 1, "qty": "1"},
            ])  # fmt: skip
            return await asyncio.wait_for(ticker, 10), await asyncio.wait_for(ohlcv, 10)
        finally:
            await exchange.close()

    ticker, candles = asyncio.run(scenario())
    served = ticker_price(srv, "ETHUSDT")["price"]
    assert served == "2301.50"
    # this ccxt asks for @miniTicker (older ones for @ticker): both are served
    assert ticker["info"]["e"] == "24hrMiniTicker" and ticker["info"]["c"] == served
    assert (ticker["info"]["o"], ticker["info"]["h"], ticker["info"]["v"]) == ("2300.15",
                                                                               "2301.50", "3")  # fmt: skip
    assert ticker["symbol"] == "ETH/USDT:USDT"
    _, open_, high, low, close, volume = candles[-1]  # ccxt's floats
    assert (open_, high, low, close, volume) == (2300.15, 2301.5, 2300.15, 2301.5, 3.0)


def test_official_sdk_stream_client(server: Any) -> None:
    pytest.importorskip("binance_sdk_derivatives_trading_usds_futures")
    from binance_sdk_derivatives_trading_usds_futures.derivatives_trading_usds_futures import (
        ConfigurationWebSocketStreams,
        DerivativesTradingUsdsFutures,
    )

    srv, port = push_server(server)

    async def scenario() -> list[Any]:
        # The only change: the stream URL (the SDK opens /market, /public and /private).
        config = ConfigurationWebSocketStreams(stream_url=f"ws://127.0.0.1:{srv.port}")
        client = DerivativesTradingUsdsFutures(config_ws_streams=config)
        connection = await asyncio.wait_for(client.websocket_streams.create_connection(), 10)
        got: list[Any] = []
        try:
            stream = await asyncio.wait_for(
                connection.aggregate_trade_streams(symbol="btcusdt"), 10
            )
            stream.on("message", got.append)
            await asyncio.sleep(0.5)
            await asyncio.to_thread(push, port, [
                {"symbol": "BTCUSDT", "price": "42002.9", "time": now_ms(), "qty": "0.125"},
            ])  # fmt: skip
            deadline = time.monotonic() + 10
            while not got and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
        finally:
            await asyncio.wait_for(connection.close_connection(close_session=True), 10)
        return got

    got = asyncio.run(scenario())
    assert len(got) == 1
    event = got[0]
    assert (event.e, event.s, event.p, event.q) == ("aggTrade", "BTCUSDT", "42002.90", "0.125")
    assert ticker_price(srv, "BTCUSDT")["price"] == event.p


@pytest.mark.timeout(90)
def test_unicorn_binance_websocket_api_stream(server: Any) -> None:
    pytest.importorskip("unicorn_binance_websocket_api")
    from unicorn_binance_websocket_api import BinanceWebSocketApiManager

    srv, port = push_server(server)
    # The only change: the stream base URI (ubwa adds the route and the stream path).
    ubwa = BinanceWebSocketApiManager(
        exchange="binance.com-futures",
        websocket_base_uri=f"ws://127.0.0.1:{srv.port}/",
        warn_on_update=False,
    )
    events: list[dict[str, Any]] = []
    try:
        ubwa.create_stream(channels=["aggTrade"], markets=["dogeusdt"], output="dict")
        deadline = time.monotonic() + 20
        next_push = 0.0
        while not events and time.monotonic() < deadline:
            if time.monotonic() >= next_push:  # again each second until ubwa has subscribed
                push(port, [{"symbol": "DOGEUSDT", "price": "0.08124", "time": now_ms(),
                             "qty": "250"}])  # fmt: skip
                next_push = time.monotonic() + 1.0
            data = ubwa.pop_stream_data_from_stream_buffer()
            if not data:
                time.sleep(0.05)
                continue
            payload = data.get("data", data) if isinstance(data, dict) else None
            if isinstance(payload, dict) and payload.get("e") == "aggTrade":
                events.append(payload)
    finally:
        ubwa.stop_manager()
    assert events and (events[0]["s"], events[0]["p"], events[0]["q"]) == (
        "DOGEUSDT", "0.081240", "250",
    )  # fmt: skip
    assert ticker_price(srv, "DOGEUSDT")["price"] == events[0]["p"]

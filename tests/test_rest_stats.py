"""The REST twins of the stream statistics end to end: a real ``tickerd serve``, real
sockets, a replay of known trades files, the shared weight budget, and a restart with
``--store``.

https://developers.binance.com/docs/derivatives/usds-margined-futures/market-data/rest-api/24hr-Ticker-Price-Change-Statistics
https://developers.binance.com/docs/derivatives/usds-margined-futures/market-data/rest-api/Kline-Candlestick-Data
"""

from __future__ import annotations

import http.client
import json
import random
import signal
import time
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from websockets.sync.client import connect as ws_connect

from push_feed import PUSH_ENV, push, push_port
from tickerd.control import ControlClient

pytestmark = pytest.mark.timeout(120)

TOKEN = "stats-test-token-0123456789"
T0 = 1_704_067_200_000  # 2024-01-01T00:00:00Z
MINUTE = 60_000
# symbol -> (tick size, price precision): three grids
GRIDS = {"BTCUSDT": ("0.10", 2), "DOGEUSDT": ("0.000010", 6), "1000PEPEUSDT": ("0.0000001", 7)}
USED = "X-MBX-USED-WEIGHT-1M"


def get(srv: Any, target: str) -> tuple[int, dict[str, str], Any]:
    """GET ``target`` from the server's REST port: status, headers, parsed body."""
    url = urlsplit(srv.rest_url)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=10)
    try:
        conn.request("GET", target)
        response = conn.getresponse()
        body = response.read()
        return response.status, dict(response.getheaders()), json.loads(body)
    finally:
        conn.close()


def write_trades(folder: Path) -> dict[str, list[list[str]]]:
    """A day's trades file per symbol (Binance's columns, header row), over three hours,
    seeded; returns the rows by symbol."""
    out: dict[str, list[list[str]]] = {}
    for seed, (symbol, (tick, _)) in enumerate(GRIDS.items()):
        rnd = random.Random(seed)
        steps = 400_000 + rnd.randrange(10_000)
        rows = []
        times = sorted(T0 + rnd.randrange(3 * 3_600_000) for _ in range(150))
        for n, t in enumerate(times):
            steps += rnd.randrange(-40, 41)
            price = Decimal(tick) * steps
            qty = Decimal(rnd.randrange(1, 9000)) / 1000
            text = format(price.normalize(), "f")
            text = text if "." in text else text + ".0"
            rows.append([str(5_000_000 + 2 * n), text, str(qty), str(price * qty), str(t),
                         "true" if rnd.random() < 0.5 else "false"])  # fmt: skip
        out[symbol] = rows
        with open(folder / f"{symbol}-trades-2024-01-01.csv", "w", encoding="ascii") as f:
            f.write("id,price,qty,quote_qty,time,is_buyer_maker\n")
            f.writelines(",".join(r) + "\n" for r in rows)
    return out


def p(value: Decimal, precision: int) -> str:
    return f"{value:.{precision}f}"


def a(value: Decimal) -> str:
    return format(value.normalize(), "f")


def expected_24hr(symbol: str, rows: list[list[str]], close_ms: int) -> dict[str, Any]:
    precision = GRIDS[symbol][1]
    prices = [Decimal(r[1]) for r in rows]
    volume = sum(Decimal(r[2]) for r in rows)
    quote = sum(Decimal(r[1]) * Decimal(r[2]) for r in rows)
    change = prices[-1] - prices[0]
    return {
        "symbol": symbol, "priceChange": p(change, precision),
        "priceChangePercent": f"{(change * 100 / prices[0]).quantize(Decimal('0.001')):f}",
        "weightedAvgPrice": f"{(quote / volume).quantize(Decimal(1).scaleb(-precision)):f}",
        "lastPrice": p(prices[-1], precision), "lastQty": rows[-1][2],
        "openPrice": p(prices[0], precision), "highPrice": p(max(prices), precision),
        "lowPrice": p(min(prices), precision), "volume": a(volume), "quoteVolume": a(quote),
        "openTime": (close_ms // MINUTE - 1439) * MINUTE, "closeTime": close_ms,
        "firstId": int(rows[0][0]), "lastId": int(rows[-1][0]), "count": len(rows),
    }  # fmt: skip


def expected_klines(symbol: str, rows: list[list[str]], step_ms: int) -> list[list[Any]]:
    precision = GRIDS[symbol][1]
    groups: dict[int, list[list[str]]] = {}
    for r in rows:
        groups.setdefault(int(r[4]) // step_ms * step_ms, []).append(r)
    out: list[list[Any]] = []
    for start in sorted(groups):
        g = groups[start]
        prices = [Decimal(r[1]) for r in g]
        taker = [r for r in g if r[5] == "false"]  # the buyer took
        out.append([
            start, p(prices[0], precision), p(max(prices), precision),
            p(min(prices), precision), p(prices[-1], precision),
            a(sum(Decimal(r[2]) for r in g)), start + step_ms - 1,
            a(sum(Decimal(r[1]) * Decimal(r[2]) for r in g)), len(g),
            a(sum((Decimal(r[2]) for r in taker), Decimal(0))),
            a(sum((Decimal(r[1]) * Decimal(r[2]) for r in taker), Decimal(0))), "0",
        ])  # fmt: skip
    return out


def test_replay_yields_exactly_the_24hr_and_klines_of_its_files(
    server: Any, tmp_path: Path
) -> None:
    files = write_trades(tmp_path)
    paths = ",".join(str(tmp_path / f"{s}-trades-2024-01-01.csv") for s in GRIDS)
    srv = server("--feed", "replay", "--replay-path", paths, "--replay-speed", "step",
                 "--stats-start", "startup", "--control-port", "0", "--control-token", TOKEN)  # fmt: skip
    control = ControlClient(srv.control_url, TOKEN)
    total = sum(map(len, files.values()))
    assert control.call("replay.step", count=total - 1)["stepped"] == total - 1
    names = "/".join(f"{s.lower()}@ticker" for s in GRIDS)
    with ws_connect(f"ws://127.0.0.1:{srv.port}/market/stream?streams={names}", proxy=None,
                    open_timeout=5) as ws:  # fmt: skip
        assert control.call("replay.step", count=1)["stepped"] == 1  # the last trade
        event = json.loads(ws.recv(timeout=5))["data"]
    # the @ticker stream and the REST twin show the same figures
    _, _, same = get(srv, f"/fapi/v1/ticker/24hr?symbol={event['s']}")
    keys = {"p": "priceChange", "P": "priceChangePercent", "w": "weightedAvgPrice",
            "c": "lastPrice", "Q": "lastQty", "o": "openPrice", "h": "highPrice",
            "l": "lowPrice", "v": "volume", "q": "quoteVolume", "F": "firstId", "L": "lastId",
            "n": "count"}  # fmt: skip
    assert {k: event[k] for k in keys} == {k: same[v] for k, v in keys.items()}
    for symbol, rows in files.items():
        status, _, doc = get(srv, f"/fapi/v1/ticker/24hr?symbol={symbol}")
        assert status == 200, doc
        assert list(doc) == list(expected_24hr(symbol, rows, 0))  # Binance's keys, in order
        assert doc == expected_24hr(symbol, rows, doc["closeTime"])
        assert doc["closeTime"] >= max(int(r[4]) for r in rows)
        for interval, step in (("1m", MINUTE), ("5m", 5 * MINUTE), ("1h", 60 * MINUTE),
                               ("1d", 1440 * MINUTE)):  # fmt: skip
            status, _, got = get(srv, f"/fapi/v1/klines?symbol={symbol}&interval={interval}")
            assert status == 200
            assert got == expected_klines(symbol, rows, step), (symbol, interval)
        every = expected_klines(symbol, files[symbol], MINUTE)
        _, _, last3 = get(srv, f"/fapi/v1/klines?symbol={symbol}&interval=1m&limit=3")
        assert last3 == every[-3:]
        start = every[10][0]
        _, _, page = get(
            srv, f"/fapi/v1/klines?symbol={symbol}&interval=1m&startTime={start}&limit=4"
        )
        assert page == every[10:14]
        end = every[20][0]
        _, _, back = get(srv, f"/fapi/v1/klines?symbol={symbol}&interval=1m&endTime={end}&limit=2")
        assert back == every[19:21]
    # the same figures as ticker.price and the @ticker stream
    status, _, everything = get(srv, "/fapi/v1/ticker/24hr")
    assert status == 200 and [d["symbol"] for d in everything] == sorted(GRIDS)
    _, _, prices = get(srv, "/fapi/v1/ticker/price")
    assert [d["lastPrice"] for d in everything] == [d["price"] for d in prices]


def test_non_trading_symbols_are_left_out_as_ticker_price_leaves_them(
    server: Any, tmp_path: Path
) -> None:
    files = write_trades(tmp_path)
    paths = ",".join(str(tmp_path / f"{s}-trades-2024-01-01.csv") for s in GRIDS)
    srv = server("--feed", "replay", "--replay-path", paths, "--replay-speed", "step",
                 "--control-port", "0", "--control-token", TOKEN)  # fmt: skip
    control = ControlClient(srv.control_url, TOKEN)
    status, _, doc = get(srv, "/fapi/v1/ticker/24hr")  # the first request starts them
    assert status == 200
    total = sum(map(len, files.values()))
    control.call("replay.step", count=total)
    control.call("symbol.status", symbol="DOGEUSDT", status="SETTLING")
    _, _, everything = get(srv, "/fapi/v1/ticker/24hr")
    _, _, prices = get(srv, "/fapi/v1/ticker/price")
    assert [d["symbol"] for d in everything] == [d["symbol"] for d in prices]
    assert [d["symbol"] for d in everything] == ["1000PEPEUSDT", "BTCUSDT"]
    assert get(srv, "/fapi/v1/ticker/24hr?symbol=DOGEUSDT")[2] == {
        "code": -1121, "msg": "Invalid symbol."}  # fmt: skip
    # the first request started the statistics: every trade of the replay is in them
    btc = next(d for d in everything if d["symbol"] == "BTCUSDT")
    assert btc == expected_24hr("BTCUSDT", files["BTCUSDT"], btc["closeTime"])


MANDATORY = "Mandatory parameter '{}' was not sent, was empty/null, or malformed."
ILLEGAL = "Illegal characters found in parameter '{}'; legal range is '^[0-9]{{1,20}}$'."


@pytest.mark.parametrize(
    ("target", "code", "msg"),
    [
        ("/fapi/v1/klines?interval=1m", -1102, MANDATORY.format("symbol")),
        ("/fapi/v1/klines?symbol=BTCUSDT", -1102, MANDATORY.format("interval")),
        ("/fapi/v1/klines?symbol=&interval=1m", -1105, "Parameter 'symbol' was empty."),
        ("/fapi/v1/klines?symbol=BTCUSDT&interval=", -1105, "Parameter 'interval' was empty."),
        ("/fapi/v1/klines?symbol=BTCUSDT&interval=2m", -1120, "Invalid interval."),
        ("/fapi/v1/klines?symbol=btcusdt&interval=1m", -1121, "Invalid symbol."),
        ("/fapi/v1/klines?symbol=BTCUSDT&interval=1m&limit=abc", -1100, ILLEGAL.format("limit")),
        (
            "/fapi/v1/klines?symbol=BTCUSDT&interval=1m&startTime=-5",
            -1100,
            ILLEGAL.format("startTime"),
        ),
        (
            "/fapi/v1/klines?symbol=BTCUSDT&interval=1m&endTime=1.5",
            -1100,
            ILLEGAL.format("endTime"),
        ),
        (
            "/fapi/v1/klines?symbol=BTCUSDT&interval=1m&limit=0",
            -1130,
            "Data sent for parameter 'limit' is not valid.",
        ),
        (
            "/fapi/v1/klines?symbol=BTCUSDT&interval=1m&limit=1501",
            -1130,
            "Data sent for parameter 'limit' is not valid.",
        ),
        (
            "/fapi/v1/klines?symbol=BTCUSDT&interval=1m&startTime=9&endTime=8",
            -1023,
            "Start time is greater than end time.",
        ),
        (
            "/fapi/v1/klines?symbol=BTCUSDT&interval=1m&from=1",
            -1104,
            "Not all sent parameters were read; read '2' parameter(s) but was sent '3'.",
        ),
        ("/fapi/v1/ticker/24hr?symbol=NOSUCHUSDT", -1121, "Invalid symbol."),
        ("/fapi/v1/ticker/24hr?symbol=", -1105, "Parameter 'symbol' was empty."),
        (
            "/fapi/v1/ticker/24hr?symbol=BTCUSDT&symbol=ETHUSDT",
            -1101,
            "Duplicate values for a parameter detected.",
        ),
    ],
)
def test_bad_parameters_get_binances_answers(
    module_server: Any, target: str, code: int, msg: str
) -> None:
    srv = module_server("--tick-rate", "20")
    status, headers, body = get(srv, target)
    assert (status, body) == (400, {"code": code, "msg": msg})
    assert int(headers[USED]) >= 1


def test_weights_on_the_shared_budget_then_429(server: Any) -> None:
    limit = 100
    srv = server("--tick-rate", "20", "--weight-limit", str(limit))
    used = []
    for target in (
        "/fapi/v1/ticker/24hr?symbol=BTCUSDT",  # 1
        "/fapi/v1/ticker/24hr",  # 40
        "/fapi/v1/klines?symbol=BTCUSDT&interval=1m&limit=99",  # 1
        "/fapi/v1/klines?symbol=BTCUSDT&interval=1m&limit=100",  # 2
        "/fapi/v1/klines?symbol=BTCUSDT&interval=1m&limit=499",  # 2
        "/fapi/v1/klines?symbol=BTCUSDT&interval=1m",  # 5 (default 500)
        "/fapi/v1/klines?symbol=BTCUSDT&interval=1m&limit=1000",  # 5
        "/fapi/v1/klines?symbol=BTCUSDT&interval=1m&limit=1001",  # 10
        "/fapi/v1/klines?symbol=BTCUSDT&interval=1m&limit=1500",  # 10
        "/fapi/v1/klines?symbol=BTCUSDT&interval=1m&limit=x",  # 5: as the default
    ):
        status, headers, _ = get(srv, target)
        used.append((status, int(headers[USED])))
    weights = [b - a for (_, a), (_, b) in zip([(0, 0), *used], used, strict=False)]
    assert weights == [1, 40, 1, 2, 2, 5, 5, 10, 10, 5]
    assert [s for s, _ in used] == [200] * 9 + [400]
    with srv.connect() as ws:  # the WebSocket API charges the same budget (handshake: 5)
        ws.send('{"id":1,"method":"ticker.price","params":{"symbol":"BTCUSDT"}}')
        assert ws.recv(timeout=5).endswith(f'"count":{sum(weights) + 6}}}]}}')
    status, headers, body = get(srv, "/fapi/v1/ticker/24hr")  # 40 more: over the limit
    assert status == 429 and body["code"] == -1003 and "Retry-After" in headers
    assert int(headers[USED]) == sum(weights) + 6 + 40


def test_windows_and_candles_survive_a_killed_process_with_store(
    server: Any, tmp_path: Path
) -> None:
    store = str(tmp_path / "stats.sqlite")
    flags = ("--feed", "push", "--push-port", "0", "--store", store,
             "--store-flush-interval", "0.1")  # fmt: skip
    srv = server(*flags, "--stats-start", "startup", env=PUSH_ENV)
    port = push_port(srv)
    now = time.time_ns() // 1_000_000
    # three symbols, three grids, over the last few minutes (a candle per minute)
    ticks = [
        {"symbol": s, "price": price, "time": now - (6 - i) * MINUTE, "qty": qty}
        for i in range(6)
        for s, price, qty in (
            ("BTCUSDT", f"{42000 + i}.{i}", f"0.{i + 1}"),
            ("DOGEUSDT", f"0.0812{i}", f"{100 * (i + 1)}"),
            ("1000PEPEUSDT", f"0.001234{i}", "7"),
        )
    ]
    push(port, ticks)
    time.sleep(1.0)  # several flushes

    def snapshot(s: Any) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for symbol in GRIDS:
            _, _, doc = get(s, f"/fapi/v1/ticker/24hr?symbol={symbol}")
            doc.pop("closeTime"), doc.pop("openTime")
            out[symbol] = doc
            for interval in ("1m", "5m", "1h"):
                out[symbol, interval] = get(
                    s, f"/fapi/v1/klines?symbol={symbol}&interval={interval}"
                )[2]
        return out

    before = snapshot(srv)
    assert before["BTCUSDT"]["count"] == 6 and len(before["BTCUSDT", "1m"]) == 6
    assert before["DOGEUSDT"]["volume"] == "2100"
    srv.signal(signal.SIGKILL)
    srv.wait_exit()
    again = server(*flags, env=PUSH_ENV)  # first-use: the restored statistics start at once
    assert "the statistics of 3 symbols" in again.wait_log("tickerd store:")
    assert snapshot(again) == before
    again_port = push_port(again)
    with ws_connect(f"ws://127.0.0.1:{again.port}/market/ws/dogeusdt@miniTicker", proxy=None,
                    open_timeout=5) as ws:  # fmt: skip
        push(again_port, [{"symbol": "DOGEUSDT", "price": "0.08130",
                                "time": time.time_ns() // 1_000_000, "qty": "900"}])  # fmt: skip
        mini = json.loads(ws.recv(timeout=5))
    assert mini["e"] == "24hrMiniTicker" and mini["s"] == "DOGEUSDT"
    assert (mini["c"], mini["o"], mini["v"]) == ("0.081300", before["DOGEUSDT"]["openPrice"],
                                                 "3000")  # fmt: skip
    _, _, doge = get(again, "/fapi/v1/ticker/24hr?symbol=DOGEUSDT")
    assert (doge["lastPrice"], doge["volume"], doge["quoteVolume"]) == (
        mini["c"], mini["v"], mini["q"])  # fmt: skip

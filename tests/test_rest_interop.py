"""Real REST clients, unmodified but for their URLs, against a real ``tickerd serve``.

- ccxt ``binanceusdm`` (pip ``ccxt``): every ``fapi*`` URL pointed at tickerd;
  ``load_markets`` reads ``GET /fapi/v1/exchangeInfo`` (the USDⓈ-M class loads only
  ``linear`` markets), ``fetch_last_prices`` reads ``GET /fapi/v2/ticker/price``,
  ``fetch_time`` ``GET /fapi/v1/time``. (``fetch_ticker`` reads ``/fapi/v1/ticker/24hr``,
  which tickerd does not serve.)
- python-binance (pip ``python-binance``): ``Client(ping=False)`` with ``FUTURES_URL`` set;
  ``futures_symbol_ticker`` reads ``GET /fapi/v2/ticker/price`` (1.0.37; 1.0.29 reads
  ``/fapi/v1/ticker/price``), ``futures_exchange_info`` ``GET /fapi/v1/exchangeInfo``.

Checked with ccxt 4.3.1, 4.4.1 and 4.5.90 (4.2 has no USDⓈ-M ``fetch_last_prices``) and
python-binance 1.0.29 and 1.0.37.

Each test runs ``tickerd serve --tick-rate 0`` (prices stand still), so what a client
reports must equal, value for value, what a plain HTTP request returns.
"""

from __future__ import annotations

import json
import re
import time
import urllib.request
from decimal import Decimal
from importlib import resources
from typing import Any

import pytest

pytestmark = pytest.mark.timeout(60)

REST_READY_RE = re.compile(r"tickerd REST ready: (http://127\.0\.0\.1:\d+)$")
_EXCHANGE_INFO = json.loads(
    resources.files("tickerd.data").joinpath("exchange_info.json").read_text("utf-8")
)


def start(server: Any, *flags: str) -> str:
    """Start ``tickerd serve --tick-rate 0`` (+ ``flags``); return its REST base URL."""
    srv = server("--rest-port", "0", "--tick-rate", "0", *flags)
    m = REST_READY_RE.search(srv.wait_log("tickerd REST ready: "))
    assert m
    return m.group(1)


def raw_get(base: str, path: str) -> Any:
    with urllib.request.urlopen(base + path, timeout=5) as response:
        return json.loads(response.read())


def ccxt_usdm(base: str) -> Any:
    ccxt = pytest.importorskip("ccxt")
    exchange = ccxt.binanceusdm({"enableRateLimit": False, "timeout": 5000})
    api = exchange.urls["api"]
    pointed = []
    for name, url in list(api.items()):
        if name.startswith("fapi") and isinstance(url, str):
            # https://fapi.binance.com/fapi/v1 -> http://127.0.0.1:PORT/fapi/v1
            api[name] = base + url[len("https://fapi.binance.com") :]
            pointed.append(name)
    assert {"fapiPublic", "fapiPublicV2"} <= set(pointed), api
    return exchange


# -- ccxt --------------------------------------------------------------------------------


def test_ccxt_load_markets_fetch_last_prices_and_time(server):
    base = start(server)
    exchange = ccxt_usdm(base)
    markets = exchange.load_markets()
    assert len(markets) == len(_EXCHANGE_INFO["symbols"])
    btc = markets["BTC/USDT:USDT"]
    assert (btc["id"], btc["type"], btc["linear"], btc["settle"]) == (
        "BTCUSDT",
        "swap",
        True,
        "USDT",
    )
    assert btc["active"] is True
    # PRICE_FILTER tickSize 0.10 reached the client (whatever its precision mode).
    assert exchange.price_to_precision("BTC/USDT:USDT", 97000.1234) == "97000.1"
    assert Decimal(str(btc["limits"]["price"]["min"])) == Decimal("556.80")
    assert markets["SRM/USDT:USDT"]["active"] is False  # SETTLING
    assert exchange.last_response_headers["X-MBX-USED-WEIGHT-1M"] == "1"

    reference = {t["symbol"]: t for t in raw_get(base, "/fapi/v2/ticker/price")}
    wanted = ["BTC/USDT:USDT", "ETH/USDT:USDT"]
    prices = exchange.fetch_last_prices(wanted)
    assert sorted(prices) == wanted
    for symbol in wanted:
        ref = reference[markets[symbol]["id"]]
        got = prices[symbol]
        # Older ccxt versions keep numbers in ``info`` as strings.
        assert {k: str(v) for k, v in got["info"].items()} == {k: str(v) for k, v in ref.items()}
        assert Decimal(str(got["price"])) == Decimal(ref["price"])
        assert got["timestamp"] == ref["time"]
    every = exchange.fetch_last_prices()
    assert {markets_id(markets, s) for s in every} == set(reference)

    before = time.time_ns() // 1_000_000
    server_time = exchange.fetch_time()
    assert before - 1 <= server_time <= time.time_ns() // 1_000_000


def markets_id(markets: dict[str, Any], symbol: str) -> str:
    return str(markets[symbol]["id"])


def test_ccxt_sees_429_and_418(server):
    ccxt = pytest.importorskip("ccxt")
    from tickerd.weights import BAN_GRACE_REQUESTS

    base = start(server, "--weight-limit", "3")
    exchange = ccxt_usdm(base)
    for _ in range(3):
        exchange.fetch_time()
    # ccxt's binance turns both statuses into DDoSProtection (its back-off signal).
    with pytest.raises(ccxt.DDoSProtection, match=r"429 .*-1003.*current limit of IP"):
        exchange.fetch_time()
    assert exchange.last_response_headers["X-MBX-USED-WEIGHT-1M"] == "4"
    for _ in range(BAN_GRACE_REQUESTS):
        with pytest.raises(ccxt.DDoSProtection, match="429"):
            exchange.fetch_time()
    with pytest.raises(ccxt.DDoSProtection, match=r"418 .*-1003.*banned until"):
        exchange.fetch_time()


def test_ccxt_invalid_symbol_error(server):
    ccxt = pytest.importorskip("ccxt")
    base = start(server)
    exchange = ccxt_usdm(base)
    with pytest.raises(ccxt.BadSymbol):
        exchange.fapiPublicV2GetTickerPrice({"symbol": "NOPEUSDT"})


# -- python-binance ----------------------------------------------------------------------


def python_binance(base: str) -> Any:
    client_module = pytest.importorskip("binance.client")
    client = client_module.Client(ping=False)  # ping=True would call spot /api/v3/ping
    client.FUTURES_URL = base + "/fapi"
    return client


def test_python_binance_futures_symbol_ticker_and_exchange_info(server):
    base = start(server)
    client = python_binance(base)
    reference = {t["symbol"]: t for t in raw_get(base, "/fapi/v2/ticker/price")}

    one = client.futures_symbol_ticker(symbol="BTCUSDT")
    assert one == reference["BTCUSDT"]
    assert isinstance(one["price"], str) and isinstance(one["time"], int)
    every = client.futures_symbol_ticker()
    assert {t["symbol"]: t for t in every} == reference

    info = client.futures_exchange_info()
    expected = dict(_EXCHANGE_INFO)
    expected["serverTime"] = info["serverTime"]
    assert info == expected
    assert abs(info["serverTime"] - time.time_ns() // 1_000_000) < 5_000

    assert client.futures_ping() == {}
    assert abs(client.futures_time()["serverTime"] - time.time_ns() // 1_000_000) < 5_000
    # Weight: 2 (reference) + 1 + 2 + 1 + 1 + 1, read from the last reply's header.
    assert client.response.headers["X-MBX-USED-WEIGHT-1M"] == "8"


def test_python_binance_errors(server):
    exceptions = pytest.importorskip("binance.exceptions")
    base = start(server, "--weight-limit", "2")
    client = python_binance(base)
    with pytest.raises(exceptions.BinanceAPIException) as caught:
        client.futures_symbol_ticker(symbol="NOPEUSDT")
    assert (caught.value.status_code, caught.value.code, caught.value.message) == (
        400,
        -1121,
        "Invalid symbol.",
    )
    client.futures_ping()
    with pytest.raises(exceptions.BinanceAPIException) as caught:
        client.futures_ping()
    assert (caught.value.status_code, caught.value.code) == (429, -1003)
    assert 1 <= int(caught.value.response.headers["Retry-After"]) <= 60

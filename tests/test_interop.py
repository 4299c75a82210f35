"""Interop: unmodified real Binance clients work against tickerd when only their URL changes.

Clients (the ``interop`` extra of pyproject.toml; each test skips when its client is absent):

* ``binance-sdk-derivatives-trading-usds-futures`` — Binance's official SDK (aiohttp). It
  sends ``{"method":"ticker.price","params":{...},"id":"<uuid4>"}``, matches replies by the
  string id, validates them into strict pydantic models (string price, int time, int status)
  and, with ``return_rate_limits=False``, adds ``"returnRateLimits":"false"`` (a string).
* ``python-binance`` (``binance``) — ``AsyncClient.ws_futures_get_all_tickers`` (websockets).
  It sends ``{"id":"<≤22 hex>","method":"ticker.price","params":{...}}`` and raises
  :class:`BinanceAPIException` for any reply whose ``status`` is not 200.

Each test runs a ``tickerd serve --tick-rate 0`` process (prices stand still), so what a
client reports must equal, value for value, what a raw WebSocket request to the same server
returns just before and just after. The ``server`` and ``raw`` fixtures come from conftest.py.
pytest-asyncio is not used: each test drives its client with ``asyncio.run``, and every
await is bounded by :func:`bounded`.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Awaitable
from decimal import Decimal
from typing import Any, TypeVar

import pytest

from tickerd.symbols import SymbolUniverse

T = TypeVar("T")

AWAIT_TIMEOUT_S = 10.0
DECIMAL_RE = re.compile(r"[0-9]+(\.[0-9]+)?")  # plain fixed-point: no sign, no exponent
SDK = "binance_sdk_derivatives_trading_usds_futures"
INVALID_SYMBOL = {"code": -1121, "msg": "Invalid symbol."}
TRADING = sorted(info.symbol for info in SymbolUniverse.default().trading())

# The SDK passes aiohttp a float ws_connect timeout, which aiohttp >= 3.10 deprecates.
pytestmark = pytest.mark.filterwarnings(
    "ignore:parameter 'timeout' of type 'float' is deprecated:DeprecationWarning"
)


async def bounded(aw: Awaitable[T]) -> T:
    """``await aw``, failing the test if it takes longer than AWAIT_TIMEOUT_S."""
    return await asyncio.wait_for(aw, AWAIT_TIMEOUT_S)


def start(server: Any) -> Any:
    """A tickerd whose prices stand still, so reference and client values must be equal."""
    return server("--tick-rate", "0")


def raw_ticker(raw: Any, srv: Any, symbol: str | None = None) -> dict[str, Any]:
    """The reply to a hand-made ``ticker.price`` request on a fresh raw connection."""
    client = raw(srv)
    params = {} if symbol is None else {"symbol": symbol}
    client.send_text(json.dumps({"id": "reference", "method": "ticker.price", "params": params}))
    reply: dict[str, Any] = json.loads(client.recv_text())
    client.close()
    assert reply["id"] == "reference" and reply["status"] == 200, reply
    return reply


def reference(raw: Any, srv: Any) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """(BTCUSDT's result, every result by symbol) as a raw client sees them now."""
    one = raw_ticker(raw, srv, "BTCUSDT")["result"]
    every = {r["symbol"]: r for r in raw_ticker(raw, srv)["result"]}
    assert list(every) == TRADING  # every TRADING symbol, in symbol order, and nothing else
    return one, every


def check_price(price: Any, expected: str) -> None:
    """A decimal string (never a JSON number or exponent form) equal to the reference."""
    assert isinstance(price, str) and DECIMAL_RE.fullmatch(price), repr(price)
    assert Decimal(price) > 0
    assert price == expected


def check_tick(symbol: Any, price: Any, time_ms: Any, ref: dict[str, Any]) -> None:
    assert symbol == ref["symbol"]
    check_price(price, ref["price"])
    assert type(time_ms) is int and time_ms == ref["time"]


# -- Binance's official SDK -------------------------------------------------------------


async def sdk_connect(url: str, **config: Any) -> Any:
    """An SDK WebSocket API connection to ``url``; the api key and secret are dummies."""
    from binance_sdk_derivatives_trading_usds_futures.derivatives_trading_usds_futures import (
        ConfigurationWebSocketAPI,
        DerivativesTradingUsdsFutures,
    )

    cfg = ConfigurationWebSocketAPI(
        api_key="dummy-key", api_secret="dummy-secret", stream_url=url, **config
    )
    client = DerivativesTradingUsdsFutures(config_ws_api=cfg)
    connection = await bounded(client.websocket_api.create_connection())
    assert connection is not None, "the SDK logged a connection failure"  # it returns None
    return connection


def sdk_error(response: Any) -> Any:
    """The error object of a failed SDK call, whichever way the SDK surfaces it.

    The SDK (18.x) fails the request future with ``ValueError(error)`` and hands back a
    response whose ``data()`` is ``{"error": error}``; raising from ``data()`` is accepted
    too, should a later version do that instead.
    """
    try:
        data = response.data()
    except ValueError as exc:
        data = {"error": exc.args[0] if exc.args else str(exc)}
    assert isinstance(data, dict) and "error" in data, data
    return data["error"]


def check_sdk_rate_limits(response: Any) -> int:
    """The SDK parsed exactly one REQUEST_WEIGHT entry; returns its count."""
    assert len(response.rate_limits) == 1, response.rate_limits
    rl = response.rate_limits[0]
    assert (rl.rateLimitType, rl.interval, rl.intervalNum, rl.limit) == (
        "REQUEST_WEIGHT",
        "MINUTE",
        1,
        2400,
    )
    assert 1 <= rl.count <= 2400
    return int(rl.count)


def test_official_sdk_symbol_price_ticker(server: Any, raw: Any) -> None:
    pytest.importorskip(SDK)
    from binance_sdk_derivatives_trading_usds_futures.websocket_api.models import (
        SymbolPriceTickerResponse1,
        SymbolPriceTickerResponse2,
    )

    srv = start(server)
    ref_one, ref_all = reference(raw, srv)

    async def scenario() -> tuple[Any, Any, Any, Any, bool]:
        connection = await sdk_connect(srv.url)
        try:
            minute = int(time.time() // 60)
            one = await bounded(connection.symbol_price_ticker(symbol="BTCUSDT"))
            every = await bounded(connection.symbol_price_ticker())
            same_minute = minute == int(time.time() // 60)
            bad = await bounded(connection.symbol_price_ticker(symbol="NOPEUSDT"))
            # The connection survives the error reply.
            after = await bounded(connection.symbol_price_ticker(symbol="ETHUSDT"))
        finally:
            await bounded(connection.close_connection(close_session=True))
        return one, every, bad, after, same_minute

    one, every, bad, after, same_minute = asyncio.run(scenario())

    # One symbol: the strict model (string id, int status, string price, int time).
    reply = one.data().actual_instance
    assert isinstance(reply, SymbolPriceTickerResponse1), reply
    assert isinstance(reply.id, str) and reply.status == 200
    check_tick(reply.result.symbol, reply.result.price, reply.result.time, ref_one)
    count_one = check_sdk_rate_limits(one)

    # No symbol: the array model, every TRADING symbol once, each equal to the reference.
    reply = every.data().actual_instance
    assert isinstance(reply, SymbolPriceTickerResponse2), reply
    assert reply.status == 200 and reply.id != one.data().actual_instance.id
    assert [r.symbol for r in reply.result] == TRADING
    for r in reply.result:
        check_tick(r.symbol, r.price, r.time, ref_all[r.symbol])
    count_all = check_sdk_rate_limits(every)
    if same_minute:
        assert count_all == count_one + 2  # weight 2 without a symbol

    # Unknown symbol: the SDK's error surface carries Binance's -1121.
    assert sdk_error(bad) == INVALID_SYMBOL

    reply = after.data().actual_instance
    check_tick(reply.result.symbol, reply.result.price, reply.result.time, ref_all["ETHUSDT"])
    check_sdk_rate_limits(after)

    assert reference(raw, srv) == (ref_one, ref_all)  # still the same prices afterwards


def test_official_sdk_without_rate_limits(server: Any, raw: Any) -> None:
    """``return_rate_limits=False`` makes the SDK send ``"returnRateLimits":"false"``."""
    pytest.importorskip(SDK)
    from binance_sdk_derivatives_trading_usds_futures.websocket_api.models import (
        SymbolPriceTickerResponse1,
        SymbolPriceTickerResponse2,
    )

    srv = start(server)
    ref_one, ref_all = reference(raw, srv)

    async def scenario() -> tuple[Any, Any, Any]:
        connection = await sdk_connect(srv.url, return_rate_limits=False)
        try:
            one = await bounded(connection.symbol_price_ticker(symbol="BTCUSDT"))
            every = await bounded(connection.symbol_price_ticker())
            bad = await bounded(connection.symbol_price_ticker(symbol="NOPEUSDT"))
        finally:
            await bounded(connection.close_connection(close_session=True))
        return one, every, bad

    one, every, bad = asyncio.run(scenario())

    reply = one.data().actual_instance
    assert isinstance(reply, SymbolPriceTickerResponse1), reply
    check_tick(reply.result.symbol, reply.result.price, reply.result.time, ref_one)
    assert one.rate_limits == []
    assert reply.rate_limits is None  # tickerd honoured the string "false"

    reply = every.data().actual_instance
    assert isinstance(reply, SymbolPriceTickerResponse2), reply
    assert [r.symbol for r in reply.result] == TRADING
    for r in reply.result:
        check_tick(r.symbol, r.price, r.time, ref_all[r.symbol])
    assert every.rate_limits == [] and reply.rate_limits is None

    assert sdk_error(bad) == INVALID_SYMBOL


# -- python-binance ---------------------------------------------------------------------


def test_python_binance_ws_futures_tickers(
    server: Any, raw: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("binance")
    from binance import AsyncClient
    from binance.exceptions import BinanceAPIException

    srv = start(server)
    ref_one, ref_all = reference(raw, srv)
    # The only change: the futures WS API URL, read when the client is constructed.
    monkeypatch.setattr(AsyncClient, "WS_FUTURES_URL", srv.url)

    async def scenario() -> tuple[Any, Any, BinanceAPIException, Any]:
        client = AsyncClient()  # not .create(): that calls Binance's spot REST API
        # WebsocketAPI.close() waits for its read loop, which polls recv() with a TIMEOUT
        # of 10 s: shorten it so closing fits the 10 s bound (it also bounds each request).
        client.ws_future.TIMEOUT = 3
        try:
            one = await bounded(client.ws_futures_get_all_tickers(symbol="BTCUSDT"))
            every = await bounded(client.ws_futures_get_all_tickers())
            with pytest.raises(BinanceAPIException) as info:
                await bounded(client.ws_futures_get_all_tickers(symbol="NOPEUSDT"))
            # The connection survives the error reply.
            after = await bounded(client.ws_futures_get_all_tickers(symbol="ETHUSDT"))
        finally:
            await bounded(client.close_connection())
            # close_connection() leaves the futures WS API socket open: close it too.
            await bounded(client.ws_future.close())
        return one, every, info.value, after

    one, every, error, after = asyncio.run(scenario())

    assert set(one) == {"symbol", "price", "time"}
    check_tick(one["symbol"], one["price"], one["time"], ref_one)

    assert isinstance(every, list)
    assert [r["symbol"] for r in every] == TRADING
    for r in every:
        assert set(r) == {"symbol", "price", "time"}
        check_tick(r["symbol"], r["price"], r["time"], ref_all[r["symbol"]])

    assert (error.code, error.status_code, error.message) == (-1121, 400, "Invalid symbol.")
    assert error.response["error"] == INVALID_SYMBOL
    assert re.fullmatch(r"[0-9a-f]{1,22}", error.response["id"])  # its uuid22, echoed
    assert error.response["rateLimits"][0]["limit"] == 2400

    check_tick(after["symbol"], after["price"], after["time"], ref_all["ETHUSDT"])

    assert reference(raw, srv) == (ref_one, ref_all)

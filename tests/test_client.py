"""tickerd.Client and SyncClient against real servers.

Most tests run a ``tickerd serve`` process (conftest's ``server`` factory); the rate-limit
wait tests run an in-process server (:class:`tickerd.testing.TickerdServer`) whose manual
clock the client shares, with a fake sleep that moves that clock, so a 40 s wait takes no
time. A few behaviours tickerd never shows (a ``serverShutdown`` event, a numeric price, a
silent server) use a small ``websockets`` server written here. pytest-asyncio is not used:
each test drives its coroutine with :func:`run`, bounded in time.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import signal
import socket
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from decimal import Decimal
from typing import Any, TypeVar

import pytest
from websockets.asyncio.server import ServerConnection, serve

from tickerd import (
    BinanceError,
    Client,
    ConnectionLost,
    IPBannedError,
    PriceTicker,
    ProtocolError,
    RateLimitError,
    RequestError,
    RequestTimeout,
    SyncClient,
)
from tickerd.client.link import Link
from tickerd.testing import TickerdServer
from tickerd.weights import BAN_GRACE_REQUESTS

T = TypeVar("T")
RUN_TIMEOUT_S = 60.0


def run(coro: Awaitable[T], timeout: float = RUN_TIMEOUT_S) -> T:
    async def bounded() -> T:
        return await asyncio.wait_for(coro, timeout)

    return asyncio.run(bounded())


def still(server: Any, *flags: str) -> Any:
    """A tickerd process whose prices stand still, without REST (no second port)."""
    return server("--tick-rate", "0", "--rest-port", "-1", *flags)


def reference(srv: Any, symbol: str | None = None) -> Any:
    """The ``result`` of a plain websockets request to ``srv``."""
    with srv.connect() as ws:
        params = {} if symbol is None else {"symbol": symbol}
        ws.send(json.dumps({"id": "ref", "method": "ticker.price", "params": params}))
        reply = json.loads(ws.recv(timeout=5))
    assert reply["status"] == 200, reply
    return reply["result"]


def as_wire(t: PriceTicker) -> dict[str, Any]:
    return {"symbol": t.symbol, "price": f"{t.price:f}", "time": t.time_ms}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- results ------------------------------------------------------------------------------


def test_ticker_price_one_and_all(server: Any) -> None:
    srv = still(server)
    ref_one, ref_all = reference(srv, "BTCUSDT"), reference(srv)

    async def scenario() -> tuple[PriceTicker, list[PriceTicker], Client]:
        async with Client(srv.url) as client:
            return await client.ticker_price("BTCUSDT"), await client.ticker_price(), client

    one, every, client = run(scenario())
    assert isinstance(one, PriceTicker) and isinstance(one.price, Decimal)
    assert type(one.time_ms) is int
    assert as_wire(one) == ref_one
    assert [as_wire(t) for t in every] == ref_all
    assert client.weight_limit == 2400 and client.weight_used is not None
    assert client.rate_limits[0]["rateLimitType"] == "REQUEST_WEIGHT"
    with pytest.raises(dataclasses.FrozenInstanceError):
        one.price = Decimal(1)  # type: ignore[misc]


def test_500_requests_in_flight_at_once(server: Any) -> None:
    srv = still(server)
    every = {r["symbol"]: r for r in reference(srv)}
    symbols = sorted(every)

    async def scenario() -> tuple[int, list[Any], int, int, bool]:
        async with Client(srv.url) as client:
            minute = time.time() // 60
            await client.ticker_price("BTCUSDT")
            before = client.weight_used or 0
            tasks = [
                asyncio.ensure_future(
                    client.ticker_price()
                    if i % 50 == 0
                    else client.ticker_price(symbols[i % len(symbols)])
                )
                for i in range(500)
            ]
            await asyncio.sleep(0)  # every task sends before any reply can be read
            peak = client.in_flight
            results = await asyncio.gather(*tasks)
            used = (client.weight_used or 0) - before
            return peak, results, client.in_flight, used, minute == time.time() // 60

    peak, results, after, used, same_minute = run(scenario())
    assert peak == 500 and after == 0
    for i, result in enumerate(results):
        if i % 50 == 0:
            assert [as_wire(t) for t in result] == list(every.values())
        else:
            assert as_wire(result) == every[symbols[i % len(symbols)]]
    if same_minute:  # 490 one-symbol requests (weight 1) and 10 all-symbol ones (2)
        assert used == 510


def test_max_in_flight_bounds_requests_outstanding(server: Any) -> None:
    srv = still(server)

    async def scenario() -> tuple[int, list[PriceTicker]]:
        async with Client(srv.url, max_in_flight=10) as client:
            tasks = [asyncio.ensure_future(client.ticker_price("ETHUSDT")) for _ in range(50)]
            await asyncio.sleep(0)
            peak = client.in_flight
            return peak, list(await asyncio.gather(*tasks))

    peak, results = run(scenario())
    assert peak == 10
    assert len(results) == 50 and {t.symbol for t in results} == {"ETHUSDT"}


def test_sync_client(server: Any) -> None:
    srv = still(server)
    ref = reference(srv, "SOLUSDT")
    with SyncClient(srv.url) as client:
        assert as_wire(client.ticker_price("SOLUSDT")) == ref
        assert len(client.ticker_price()) == len(reference(srv))
        with pytest.raises(RequestError) as info:
            client.ticker_price("NOPEUSDT")
        assert (info.value.status, info.value.code) == (400, -1121)
        assert client.request("ticker.price", {"symbol": "SOLUSDT"}) == ref
        # Callable from several threads at once.
        out: list[PriceTicker] = []
        threads = [
            threading.Thread(target=lambda: out.append(client.ticker_price("SOLUSDT")))
            for _ in range(8)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
        assert [as_wire(t) for t in out] == [ref] * 8
        assert client.weight_limit == 2400
    with pytest.raises(ConnectionLost):
        client.ticker_price("SOLUSDT")
    client.close()  # idempotent


# -- errors -------------------------------------------------------------------------------


def test_invalid_symbol_raises_request_error_and_connection_survives(server: Any) -> None:
    srv = still(server)

    async def scenario() -> tuple[RequestError, PriceTicker, int]:
        async with Client(srv.url) as client:
            with pytest.raises(RequestError) as info:
                await client.ticker_price("NOPEUSDT")
            after = await client.ticker_price("BTCUSDT")
            return info.value, after, client.reconnects

    error, after, reconnects = run(scenario())
    assert type(error) is RequestError and isinstance(error, BinanceError)
    assert (error.status, error.code, error.msg) == (400, -1121, "Invalid symbol.")
    assert error.retry_after_ms is None
    assert after.symbol == "BTCUSDT" and reconnects == 0


def test_429_then_418_with_a_tiny_weight_limit(server: Any) -> None:
    srv = still(server, "--weight-limit", "10")

    async def scenario() -> tuple[list[int | None], RateLimitError, list[int], IPBannedError]:
        client = Client(srv.url, respect_retry_after=False)
        async with client:
            used = []
            for _ in range(5):  # the handshake cost 5
                await client.ticker_price("BTCUSDT")
                used.append(client.weight_used)
            with pytest.raises(RateLimitError) as first:
                await client.ticker_price("BTCUSDT")
            statuses = []
            for _ in range(BAN_GRACE_REQUESTS):
                with pytest.raises(RateLimitError) as again:
                    await client.ticker_price("BTCUSDT")
                statuses.append(again.value.status)
            with pytest.raises(IPBannedError) as banned:
                await client.ticker_price("BTCUSDT")
            return used, first.value, statuses, banned.value

    used, limited, statuses, banned = run(scenario())
    assert used == [6, 7, 8, 9, 10]
    assert type(limited) is RateLimitError
    assert (limited.status, limited.code) == (429, -1003)
    assert "current limit of IP(127.0.0.1) is 10 requests per minute" in limited.msg
    assert limited.retry_after_ms is not None and limited.server_time_ms is not None
    assert limited.retry_after_ms % 60_000 == 0  # the next minute window
    assert 0 < limited.retry_after_ms - limited.server_time_ms <= 60_000
    assert statuses == [429] * BAN_GRACE_REQUESTS
    assert type(banned) is IPBannedError and (banned.status, banned.code) == (418, -1003)
    assert banned.retry_after_ms is not None and banned.server_time_ms is not None
    assert banned.retry_after_ms - banned.server_time_ms == 120_000  # first ban: 2 minutes
    assert f"banned until {banned.retry_after_ms}" in banned.msg


class FakeSleep:
    """Records each sleep and moves the in-process server's manual clock instead."""

    def __init__(self, srv: TickerdServer) -> None:
        self.srv = srv
        self.calls: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)
        self.srv.advance(round(seconds * 1000))


def count_sends(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    sent: list[bytes] = []
    original = Link.send

    def spy(self: Link, payload: bytes) -> None:
        sent.append(payload)
        original(self, payload)

    monkeypatch.setattr(Link, "send", spy)
    return sent


@pytest.fixture
def limited_server() -> Iterator[TickerdServer]:
    # 1_700_000_000_000 is 20 s into a minute: the 429 window ends 40 s later.
    with TickerdServer(weight_limit=10) as srv:
        yield srv


def test_retry_after_is_waited_out_on_the_manual_clock(
    limited_server: TickerdServer,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="tickerd.client")
    srv = limited_server
    sleep = FakeSleep(srv)
    sent = count_sends(monkeypatch)

    async def scenario() -> tuple[RateLimitError, PriceTicker, int | None]:
        async with Client(srv.ws_url, clock=srv.clock, sleep=sleep, max_wait=60) as client:
            for _ in range(5):
                await client.ticker_price("BTCUSDT")
            with pytest.raises(RateLimitError) as info:
                await client.ticker_price("BTCUSDT")  # the server's answer: 429
            # The client knows the window ends in 40 s: it sleeps, then sends.
            after = await client.ticker_price("BTCUSDT")
            return info.value, after, client.weight_used

    error, after, used = run(scenario())
    assert error.status == 429
    assert sleep.calls == [40.0]
    assert after.symbol == "BTCUSDT"
    assert used == 1  # a fresh window
    assert len(sent) == 7  # nothing was sent while blocked
    # The wait is logged with its end in UTC and epoch ms: the next minute of the server.
    waits = [m for m in caplog.messages if m.startswith("waiting ")]
    assert waits == [
        "waiting 40000 ms for the rate limit, until 2023-11-14T22:14:00.000Z (1700000040000): "
        + error.msg
    ]


def test_retry_after_beyond_max_wait_raises_without_sending(
    limited_server: TickerdServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    srv = limited_server
    sleep = FakeSleep(srv)
    sent = count_sends(monkeypatch)

    async def full() -> dict[str, Any]:
        client = Client(srv.ws_url, clock=srv.clock, sleep=sleep, respect_retry_after=False)
        out: dict[str, Any] = {}
        async with client:
            for _ in range(5):
                await client.ticker_price("BTCUSDT")
            for _ in range(BAN_GRACE_REQUESTS + 1):
                with pytest.raises(RateLimitError):
                    await client.ticker_price("BTCUSDT")
            with pytest.raises(IPBannedError) as banned:
                await client.ticker_price("BTCUSDT")
            out["banned"] = banned.value
            client.respect_retry_after, client.max_wait = True, 60.0
            sends = len(sent)
            with pytest.raises(IPBannedError) as stored:
                await client.ticker_price("BTCUSDT")
            out["stored"], out["unsent"] = stored.value, len(sent) - sends == 0
            out["sleeps_before"] = list(sleep.calls)
        # A new connection is refused at the handshake while banned (HTTP 418).
        other = Client(srv.ws_url, clock=srv.clock, sleep=sleep, max_wait=300)
        with pytest.raises(IPBannedError) as handshake:
            await other.connect()
        out["handshake"] = handshake.value
        # ... and that client now sleeps out the ban (Retry-After) before trying again.
        out["after"] = await other.ticker_price("BTCUSDT")
        out["sleeps_after"] = list(sleep.calls)
        await other.close()
        return out

    out = run(full())
    banned, stored = out["banned"], out["stored"]
    assert banned.retry_after_ms - banned.server_time_ms == 120_000
    assert type(stored) is IPBannedError and stored is not banned
    assert (stored.status, stored.code, stored.msg) == (banned.status, banned.code, banned.msg)
    assert out["unsent"] and out["sleeps_before"] == []
    handshake = out["handshake"]
    assert (handshake.status, handshake.code) == (418, -1003)
    assert "banned until" in handshake.msg
    assert out["sleeps_after"] == [120.0]
    assert out["after"].symbol == "BTCUSDT"


# -- connections --------------------------------------------------------------------------


def test_server_pings_are_answered(server: Any) -> None:
    srv = still(server, "--ping-interval", "0.2", "--pong-timeout", "0.6")

    async def scenario() -> tuple[int, bool, PriceTicker]:
        async with Client(srv.url, ping_interval=None) as client:
            await asyncio.sleep(2.0)  # ~10 server pings; an unanswered one closes in 0.6 s
            return client.reconnects, client.connected, await client.ticker_price("BTCUSDT")

    reconnects, connected, ticker = run(scenario())
    assert reconnects == 0 and connected and ticker.symbol == "BTCUSDT"
    assert "no pong" not in srv.log()


def test_reconnects_after_the_server_closes_at_max_lifetime(server: Any) -> None:
    srv = still(server, "--max-lifetime", "1")

    async def scenario() -> tuple[int, PriceTicker]:
        async with Client(srv.url, backoff_base=0.05, backoff_max=0.2) as client:
            await client.ticker_price("BTCUSDT")
            for _ in range(100):  # the server closes (1001) after 1 s; the client reopens
                if client.reconnects:
                    break
                await asyncio.sleep(0.05)
            return client.reconnects, await client.ticker_price("BTCUSDT")

    reconnects, ticker = run(scenario())
    assert reconnects >= 1 and ticker.symbol == "BTCUSDT"


def test_restart_on_the_same_port_and_in_flight_requests_fail_fast(server: Any) -> None:
    port = free_port()
    first = still(server, "--port", str(port))
    assert first.port == port

    async def scenario() -> dict[str, Any]:
        out: dict[str, Any] = {}
        client = Client(
            first.url, timeout=30, connect_attempts=100, backoff_base=0.05, backoff_max=0.2
        )
        async with client:
            out["before"] = await client.ticker_price("BTCUSDT")
            first.signal(signal.SIGSTOP)  # requests now sit unanswered in the socket
            tasks = [asyncio.ensure_future(client.ticker_price("BTCUSDT")) for _ in range(20)]
            await asyncio.sleep(0.3)
            out["in_flight"] = client.in_flight
            started = time.monotonic()
            first.signal(signal.SIGKILL)
            results = await asyncio.gather(*tasks, return_exceptions=True)
            out["failed_after"] = time.monotonic() - started
            out["errors"] = results
            # The same port comes back (a restart); the client reconnects by itself.
            loop = asyncio.get_running_loop()
            second = await loop.run_in_executor(None, lambda: still(server, "--port", str(port)))
            out["after"] = await client.ticker_price("BTCUSDT")
            out["reconnects"] = client.reconnects
            out["second"] = second
        return out

    out = run(scenario())
    assert out["before"].symbol == "BTCUSDT"
    assert out["in_flight"] == 20
    assert all(isinstance(e, ConnectionLost) for e in out["errors"]), out["errors"]
    assert out["failed_after"] < 5  # fail fast, far inside the 30 s timeout
    assert "connection lost" in str(out["errors"][0])
    assert out["after"].symbol == "BTCUSDT"
    assert out["reconnects"] == 1
    assert out["second"].port == port


def test_after_a_graceful_stop_requests_fail_with_connection_lost(server: Any) -> None:
    srv = still(server)

    async def scenario() -> tuple[ConnectionLost, bool]:
        client = Client(srv.url, reconnect=False)
        async with client:
            await client.ticker_price("BTCUSDT")
            srv.signal(signal.SIGTERM)  # closes every connection with 1001
            for _ in range(100):
                if not client.connected:
                    break
                await asyncio.sleep(0.05)
            with pytest.raises(ConnectionLost) as info:
                await client.ticker_price("BTCUSDT")  # nothing listens any more
            return info.value, client.connected

    error, connected = run(scenario())
    assert not connected
    assert "cannot connect" in str(error)
    assert srv.wait_exit() == 0


def test_connect_failures_back_off_with_seeded_jitter() -> None:
    port = free_port()  # nothing listens here
    sleeps: list[list[float]] = []

    async def attempt(seed: int) -> ConnectionLost:
        calls: list[float] = []
        sleeps.append(calls)

        async def sleep(seconds: float) -> None:
            calls.append(seconds)

        client = Client(
            f"ws://127.0.0.1:{port}/ws-fapi/v1",
            connect_attempts=6,
            backoff_base=0.1,
            backoff_max=1.0,
            seed=seed,
            sleep=sleep,
        )
        with pytest.raises(ConnectionLost) as info:
            await client.connect()
        await client.close()
        return info.value

    error = run(attempt(7))
    run(attempt(7))
    run(attempt(8))
    assert "cannot connect" in str(error) and "6 attempts" in str(error)
    first, same, other = sleeps
    assert len(first) == 5 and first == same and first != other
    for n, delay in enumerate(first, start=1):
        cap = min(1.0, 0.1 * 2 ** (n - 1))
        assert cap / 2 <= delay <= cap


def test_closed_client_refuses_requests(server: Any) -> None:
    srv = still(server)

    async def scenario() -> None:
        client = Client(srv.url)
        await client.connect()
        await client.close()
        with pytest.raises(ConnectionLost, match="closed"):
            await client.ticker_price("BTCUSDT")

    run(scenario())


def test_option_validation() -> None:
    for bad in ({"timeout": 0}, {"max_in_flight": 0}, {"connect_attempts": 0}, {"max_wait": -1}):
        with pytest.raises(ValueError):
            Client("ws://127.0.0.1:1/ws-fapi/v1", **bad)


# -- what tickerd never does: a small server of our own ----------------------------------------


class FakeServer:
    """A websockets server that answers ticker.price as ``reply(request)`` says."""

    def __init__(self, reply: Callable[[dict[str, Any], ServerConnection], Any]) -> None:
        self.reply = reply
        self.connections = 0
        self.closed = 0

    async def handler(self, ws: ServerConnection) -> None:
        self.connections += 1
        try:
            async for message in ws:
                answer = self.reply(json.loads(message), ws)
                if answer is not None:
                    await ws.send(json.dumps(answer))
        finally:
            self.closed += 1

    async def __aenter__(self) -> str:
        self.server = await serve(self.handler, "127.0.0.1", 0, ping_interval=None)
        port = self.server.sockets[0].getsockname()[1]
        return f"ws://127.0.0.1:{port}/ws-fapi/v1"

    async def __aexit__(self, *exc: object) -> None:
        self.server.close()
        await self.server.wait_closed()


def ok(request: dict[str, Any], price: Any = "1.50") -> dict[str, Any]:
    return {
        "id": request["id"],
        "status": 200,
        "result": {"symbol": request["params"]["symbol"], "price": price, "time": 1},
        "rateLimits": [
            {
                "rateLimitType": "REQUEST_WEIGHT",
                "interval": "MINUTE",
                "intervalNum": 1,
                "limit": 2400,
                "count": 7,
            }
        ],
    }


def test_non_string_price_is_a_protocol_error() -> None:
    async def scenario() -> ProtocolError:
        async with FakeServer(lambda r, ws: ok(r, price=1.5)) as url, Client(url) as client:
            with pytest.raises(ProtocolError) as info:
                await client.ticker_price("BTCUSDT")
            return info.value

    error = run(scenario())
    assert "not a JSON string" in str(error)


def test_a_silent_server_times_out() -> None:
    async def scenario() -> tuple[float, int]:
        async with FakeServer(lambda r, ws: None) as url, Client(url, timeout=0.3) as client:
            started = time.monotonic()
            with pytest.raises(RequestTimeout):
                await client.ticker_price("BTCUSDT")
            return time.monotonic() - started, client.in_flight

    elapsed, in_flight = run(scenario())
    assert 0.25 <= elapsed < 2 and in_flight == 0
    assert issubclass(RequestTimeout, TimeoutError)


def test_server_shutdown_event_moves_to_a_new_connection() -> None:
    fake: FakeServer

    def reply(request: dict[str, Any], ws: ServerConnection) -> Any:
        if fake.connections == 1 and request["params"]["symbol"] == "ETHUSDT":
            # Binance's notice before a planned restart, then the reply still comes.
            asyncio.ensure_future(ws.send(json.dumps({"event": {"e": "serverShutdown"}})))
        return ok(request)

    fake = FakeServer(reply)

    async def scenario() -> tuple[PriceTicker, PriceTicker, int, int, int | None]:
        async with fake as url, Client(url) as client:
            await client.ticker_price("BTCUSDT")
            first = await client.ticker_price("ETHUSDT")
            for _ in range(100):
                if fake.closed:
                    break
                await asyncio.sleep(0.02)
            second = await client.ticker_price("BTCUSDT")
            return first, second, fake.connections, fake.closed, client.weight_used

    first, second, connections, closed, used = run(scenario())
    assert first.price == Decimal("1.50") and second.symbol == "BTCUSDT"
    assert connections == 2 and closed == 1  # the old connection was closed by the client
    assert used == 7


# -- parsing ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "wire",
    [
        {"symbol": "BTCUSDT", "price": 97000.1, "time": 1},
        {"symbol": "BTCUSDT", "price": "NaN", "time": 1},
        {"symbol": "BTCUSDT", "price": "1_000", "time": 1},
        {"symbol": "BTCUSDT", "price": " 1", "time": 1},
        {"symbol": "BTCUSDT", "price": "1", "time": True},
        {"symbol": "BTCUSDT", "price": "1", "time": "1"},
        {"symbol": "BTCUSDT", "price": "1", "time": -1},
        {"symbol": 1, "price": "1", "time": 1},
        {"price": "1", "time": 1},
        ["BTCUSDT", "1", 1],
    ],
)
def test_price_ticker_rejects_malformed_results(wire: Any) -> None:
    with pytest.raises(ProtocolError):
        PriceTicker.from_wire(wire)


def test_price_ticker_keeps_every_digit() -> None:
    t = PriceTicker.from_wire({"symbol": "X", "price": "0.00000010", "time": 5})
    assert t.price == Decimal("0.00000010") and f"{t.price:f}" == "0.00000010"
    big = PriceTicker.from_wire({"symbol": "X", "price": "123456789012345678.123456789", "time": 0})
    assert str(big.price) == "123456789012345678.123456789"


def test_fragmented_replies_are_reassembled_within_a_bound() -> None:
    def reply(request: dict[str, Any], ws: ServerConnection) -> Any:
        text = json.dumps(ok(request, price="1." + "0" * 150))
        pieces = [text[i : i + 40] for i in range(0, len(text), 40)]
        asyncio.ensure_future(ws.send(pieces))  # one message in several frames
        return None

    async def scenario() -> tuple[PriceTicker, ConnectionLost]:
        async with FakeServer(reply) as url:
            async with Client(url) as client:
                whole = await client.ticker_price("BTCUSDT")
            async with Client(url, max_message_bytes=200, reconnect=False) as small:
                with pytest.raises(ConnectionLost) as info:
                    await small.ticker_price("BTCUSDT")
        return whole, info.value

    whole, lost = run(scenario())
    assert whole.price == Decimal(1)
    assert f"{whole.price:f}" == "1." + "0" * 150
    assert lost.close_code == 1009 and "max_message_bytes" in str(lost)


def test_a_server_that_never_finishes_the_handshake_is_bounded() -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]

    async def scenario() -> tuple[float, ConnectionLost]:
        client = Client(
            f"ws://127.0.0.1:{port}/ws-fapi/v1", connect_timeout=0.3, connect_attempts=2
        )
        started = time.monotonic()
        with pytest.raises(ConnectionLost) as info:
            await client.connect()
        return time.monotonic() - started, info.value

    try:
        elapsed, error = run(scenario())
    finally:
        listener.close()
    assert elapsed < 3
    assert "2 attempts" in str(error)


@pytest.mark.parametrize("url", ["ws://127.0.0.1:99999/x", "ws://[::1/x", "http://127.0.0.1/x"])
def test_a_url_that_cannot_work_fails_at_once_without_retrying(url: str) -> None:
    sleeps: list[float] = []

    async def sleep(seconds: float) -> None:
        sleeps.append(seconds)

    async def attempt() -> None:
        async with Client(url, sleep=sleep, connect_attempts=5):
            pass

    with pytest.raises(ConnectionLost) as info:
        run(attempt())
    assert repr(url) in str(info.value)
    assert sleeps == []  # no backoff: retrying cannot mend a URL

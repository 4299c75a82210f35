"""The push ingest: token auth, per-tick validation with reasons, atomic batches, bounds, the
HTTP and WebSocket paths, pushed prices served on the public API of a real server, and the
rule by which several feeds share the symbols.

The tick shape is the one ``ticker.price`` serves
(https://developers.binance.com/docs/derivatives/usds-margined-futures/market-data/websocket-api/Symbol-Price-Ticker):
``price`` a decimal string on the PRICE_FILTER grid, ``time`` integer epoch ms.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import re
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import pytest

from tickerd import PriceBook, Settings, SymbolUniverse
from tickerd.feeds import FeedConfigError, build_feeds
from tickerd.feeds.push import PushFeed
from tickerd.feeds.synthetic import SyntheticFeed

pytestmark = pytest.mark.timeout(60)

TOKEN = "s3cret-token-for-tests"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
T0 = 1_700_000_000_000


def universe() -> SymbolUniverse:
    return SymbolUniverse.default()


def tick(symbol: str = "BTCUSDT", price: Any = "97000.1", time_ms: Any = T0) -> dict[str, Any]:
    return {"symbol": symbol, "price": price, "time": time_ms}


Scenario = Callable[[PushFeed, PriceBook, aiohttp.ClientSession], Awaitable[None]]


def with_push(scenario: Scenario, **kw: Any) -> None:
    async def main() -> None:
        book = PriceBook(universe())
        feed = PushFeed(book.universe, token=TOKEN, port=0, **kw)
        await feed.start(book)
        task = asyncio.create_task(feed.run(book))
        try:
            async with aiohttp.ClientSession(trust_env=False) as session:
                await scenario(feed, book, session)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    asyncio.run(main())


async def post(
    session: aiohttp.ClientSession, feed: PushFeed, body: Any, headers: dict[str, str] | None = AUTH
) -> tuple[int, Any]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    async with session.post(feed.url + "/ingest", data=data, headers=headers) as response:
        return response.status, await response.json(content_type=None)


# -- auth ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        None,
        {"Authorization": "Bearer wrong"},
        {"Authorization": f"Bearer {TOKEN}x"},
        {"Authorization": f"Basic {TOKEN}"},
        {"Authorization": TOKEN},
        {"Authorization": "Bearer"},
    ],
    ids=["missing", "wrong", "longer", "basic", "no-scheme", "empty"],
)
def test_http_without_the_right_token_is_401_and_applies_nothing(
    headers: dict[str, str] | None,
) -> None:
    async def scenario(feed: PushFeed, book: PriceBook, session: aiohttp.ClientSession) -> None:
        status, body = await post(session, feed, {"ticks": [tick()]}, headers)
        assert status == 401
        assert body == {"error": "missing or wrong token"}
        assert len(book) == 0 and feed.unauthorized == 1

    with_push(scenario)


def test_http_with_the_token_applies() -> None:
    async def scenario(feed: PushFeed, book: PriceBook, session: aiohttp.ClientSession) -> None:
        status, body = await post(
            session, feed, {"ticks": [tick()]}, {"Authorization": f"bearer {TOKEN}"}
        )
        assert (status, body) == (200, {"accepted": 1, "rejected": []})
        got = book.get("BTCUSDT")
        assert got is not None and (got.price, got.time_ms) == ("97000.10", T0)

    with_push(scenario)


@pytest.mark.parametrize(
    "headers", [None, {"Authorization": "Bearer nope"}], ids=["missing", "wrong"]
)
def test_websocket_handshake_without_the_right_token_is_401(headers: dict[str, str] | None) -> None:
    async def scenario(feed: PushFeed, book: PriceBook, session: aiohttp.ClientSession) -> None:
        with pytest.raises(aiohttp.WSServerHandshakeError) as info:
            await session.ws_connect(feed.url + "/ingest/ws", headers=headers)
        assert info.value.status == 401
        assert len(book) == 0

    with_push(scenario)


# -- the WebSocket path -------------------------------------------------------------------


def test_websocket_batches_each_answered() -> None:
    async def scenario(feed: PushFeed, book: PriceBook, session: aiohttp.ClientSession) -> None:
        async with session.ws_connect(feed.url + "/ingest/ws", headers=AUTH) as ws:
            await ws.send_str(
                json.dumps({"id": "b1", "ticks": [tick(), tick("ETHUSDT", "3150.5")]})
            )
            assert json.loads(await ws.receive_str()) == {
                "status": 200, "id": "b1", "accepted": 2, "rejected": [],
            }  # fmt: skip
            await ws.send_str(
                json.dumps({"id": 2, "ticks": [tick(price="97000.15", time_ms=T0 + 1)]})
            )
            reply = json.loads(await ws.receive_str())
            assert reply["status"] == 422 and reply["id"] == 2 and reply["accepted"] == 0
            assert reply["rejected"][0]["code"] == "off_grid"
            await ws.send_str("{not json")
            reply = json.loads(await ws.receive_str())
            assert reply["status"] == 400 and reply["error"].startswith("not JSON")
            await ws.send_bytes(b"{}")
            assert json.loads(await ws.receive_str())["status"] == 400
            await ws.send_str(json.dumps({"ticks": [tick(price="97001", time_ms=T0 + 2)]}))
            assert json.loads(await ws.receive_str()) == {
                "status": 200,
                "accepted": 1,
                "rejected": [],
            }
        got = book.get("BTCUSDT")
        assert got is not None and (got.price, got.time_ms) == ("97001.00", T0 + 2)

    with_push(scenario)


def test_websocket_message_size_bound() -> None:
    async def scenario(feed: PushFeed, book: PriceBook, session: aiohttp.ClientSession) -> None:
        async with session.ws_connect(feed.url + "/ingest/ws", headers=AUTH) as ws:
            await ws.send_str(json.dumps({"ticks": [tick()], "pad": "x" * 2000}))
            msg = await ws.receive()
            assert msg.type is aiohttp.WSMsgType.CLOSE and msg.data == 1009
        assert len(book) == 0

    with_push(scenario, max_body_bytes=1000)


# -- validation ---------------------------------------------------------------------------

BAD_TICKS = [
    ("unknown symbol", tick("NOPEUSDT"), "unknown_symbol"),
    ("lower-case symbol", tick("btcusdt"), "unknown_symbol"),
    ("symbol not a string", tick(5), "unknown_symbol"),  # type: ignore[arg-type]
    ("price as a JSON number", tick(price=97000.1), "bad_price"),
    ("price as a JSON integer", tick(price=97000), "bad_price"),
    ("price not decimal", tick(price="abc"), "bad_price"),
    ("price in exponent form", tick(price="9.7e4"), "bad_price"),
    ("price with spaces", tick(price=" 97000.1"), "bad_price"),
    ("price NaN", tick(price="NaN"), "bad_price"),
    ("price too long", tick(price="1" * 41), "bad_price"),
    ("price off the grid", tick(price="97000.15"), "off_grid"),
    ("price zero", tick(price="0"), "off_grid"),
    ("price negative", tick(price="-97000.1"), "off_grid"),
    ("time negative", tick(time_ms=-1), "bad_time"),
    ("time fractional", tick(time_ms=1.5), "bad_time"),
    ("time as float", tick(time_ms=float(T0)), "bad_time"),
    ("time bool", tick(time_ms=True), "bad_time"),
    ("time string", tick(time_ms=str(T0)), "bad_time"),
    ("time beyond int64", tick(time_ms=2**64), "bad_time"),
    ("time missing", {"symbol": "BTCUSDT", "price": "1.0"}, "bad_time"),
    ("not an object", ["BTCUSDT", "1.0", T0], "not_an_object"),
]


@pytest.mark.parametrize(
    ("item", "code"), [c[1:] for c in BAD_TICKS], ids=[c[0] for c in BAD_TICKS]
)
def test_each_bad_tick_is_rejected_with_a_reason(item: Any, code: str) -> None:
    async def scenario(feed: PushFeed, book: PriceBook, session: aiohttp.ClientSession) -> None:
        status, body = await post(session, feed, {"ticks": [item]})
        assert status == 422, body
        assert body["accepted"] == 0
        (rejection,) = body["rejected"]
        assert rejection["index"] == 0 and rejection["code"] == code
        assert rejection["reason"]
        assert len(book) == 0

    with_push(scenario)


def test_older_than_stored_and_out_of_order_within_a_batch() -> None:
    async def scenario(feed: PushFeed, book: PriceBook, session: aiohttp.ClientSession) -> None:
        assert (await post(session, feed, {"ticks": [tick(time_ms=T0)]}))[0] == 200
        status, body = await post(session, feed, {"ticks": [tick(price="1.0", time_ms=T0 - 1)]})
        assert status == 422 and body["rejected"][0]["code"] == "older_than_stored"
        assert str(T0) in body["rejected"][0]["reason"]
        batch = [
            tick(time_ms=T0 + 5),
            tick("ETHUSDT", "3000", T0),
            tick(time_ms=T0 + 4),  # before index 0 of this batch
        ]
        status, body = await post(session, feed, {"ticks": batch})
        assert status == 422
        assert body["rejected"] == [
            {"index": 2, "code": "out_of_order", "symbol": "BTCUSDT",
             "reason": f"time {T0 + 4} is older than tick 0 of this batch"},
        ]  # fmt: skip
        # Equal times are fine (several trades in one ms); the last of a batch wins.
        batch = [
            tick(time_ms=T0),
            tick(price="97000.2", time_ms=T0),
            tick(price="97000.3", time_ms=T0 + 1),
        ]
        assert await post(session, feed, {"ticks": batch}) == (200, {"accepted": 3, "rejected": []})
        got = book.get("BTCUSDT")
        assert got is not None and (got.price, got.time_ms) == ("97000.30", T0 + 1)

    with_push(scenario)


def test_a_batch_applies_whole_or_not_at_all() -> None:
    async def scenario(feed: PushFeed, book: PriceBook, session: aiohttp.ClientSession) -> None:
        seen: list[int] = []
        book.subscribe(lambda ticks: seen.append(len(ticks)))
        batch = [
            tick(),
            tick("ETHUSDT", "3150.5"),
            tick("NOPEUSDT"),
            tick("XRPUSDT", "0.5"),
            tick("ETHUSDT", 3150.5),
        ]
        status, body = await post(session, feed, {"ticks": batch})
        assert status == 422 and body["accepted"] == 0
        assert [(r["index"], r["code"]) for r in body["rejected"]] == [
            (2, "unknown_symbol"),
            (4, "bad_price"),
        ]
        assert len(book) == 0 and seen == []
        del batch[4], batch[2]
        assert await post(session, feed, {"ticks": batch}) == (200, {"accepted": 3, "rejected": []})
        assert len(book) == 3 and seen == [3]  # one book update for the whole batch
        assert feed.status() == {
            "state": "up",
            "accepted": 3,
            "rejected_batches": 1,
            "unauthorized": 0,
        }

    with_push(scenario)


@pytest.mark.parametrize(
    ("body", "status", "error"),
    [
        (b"{nope", 400, "not JSON"),
        (b"[1,2]", 400, "must be a JSON object"),
        (b'{"tick": []}', 400, '"ticks" must be a JSON array'),
        (b'{"ticks": {}}', 400, '"ticks" must be a JSON array'),
        (b"[" * 100_000, 400, "not JSON"),
    ],
    ids=["not-json", "array", "no-ticks", "ticks-object", "deep-nesting"],
)
def test_unreadable_batches(body: bytes, status: int, error: str) -> None:
    async def scenario(feed: PushFeed, book: PriceBook, session: aiohttp.ClientSession) -> None:
        got_status, got = await post(session, feed, body)
        assert got_status == status and error in got["error"], got

    with_push(scenario)


def test_empty_batch_is_fine() -> None:
    async def scenario(feed: PushFeed, book: PriceBook, session: aiohttp.ClientSession) -> None:
        assert await post(session, feed, {"ticks": []}) == (200, {"accepted": 0, "rejected": []})

    with_push(scenario)


# -- bounds -------------------------------------------------------------------------------


def test_batch_and_body_bounds_are_413() -> None:
    async def scenario(feed: PushFeed, book: PriceBook, session: aiohttp.ClientSession) -> None:
        ticks = [tick(time_ms=T0 + i) for i in range(11)]
        status, body = await post(session, feed, {"ticks": ticks})
        assert status == 413 and "at most 10" in body["error"]
        assert await post(session, feed, {"ticks": ticks[:10]}) == (
            200,
            {"accepted": 10, "rejected": []},
        )
        status, body = await post(session, feed, {"ticks": [tick()], "pad": "x" * 5000})
        assert status == 413 and "at most 4096" in body["error"]

        async def chunks() -> Any:  # no Content-Length: the bound holds while reading
            for _ in range(10):
                yield b" " * 1000

        async with session.post(feed.url + "/ingest", data=chunks(), headers=AUTH) as response:
            assert response.status == 413
        assert book.get("BTCUSDT") is not None and book.get("BTCUSDT").time_ms == T0 + 9  # type: ignore[union-attr]

    with_push(scenario, max_batch=10, max_body_bytes=4096)


def test_concurrent_connection_bound() -> None:
    async def scenario(feed: PushFeed, book: PriceBook, session: aiohttp.ClientSession) -> None:
        a = await session.ws_connect(feed.url + "/ingest/ws", headers=AUTH)
        b = await session.ws_connect(feed.url + "/ingest/ws", headers=AUTH)
        status, body = await post(session, feed, {"ticks": []})
        assert status == 503 and "too many" in body["error"]
        await a.close()
        await asyncio.sleep(0.05)
        assert (await post(session, feed, {"ticks": []}))[0] == 200
        await b.close()

    with_push(scenario, max_connections=2)


def test_paths_and_methods() -> None:
    async def scenario(feed: PushFeed, book: PriceBook, session: aiohttp.ClientSession) -> None:
        async with session.get(feed.url + "/ingest", headers=AUTH) as response:
            assert response.status == 405 and response.headers["Allow"] == "POST"
        async with session.get(feed.url + "/ws-fapi/v1", headers=AUTH) as response:
            assert response.status == 404
        async with session.get(feed.url + "/ingest/ws", headers=AUTH) as response:
            assert response.status == 400  # not an upgrade

    with_push(scenario)


def test_the_token_is_required() -> None:
    with pytest.raises(FeedConfigError, match="TICKERD_PUSH_TOKEN"):
        build_feeds(Settings(feed="push"), universe(), None)  # type: ignore[arg-type]
    with pytest.raises(FeedConfigError, match="needs a token"):
        build_feeds(Settings(feed="push", push_token=""), universe(), None)  # type: ignore[arg-type]


def test_cli_refuses_push_without_a_token() -> None:
    env = {"PATH": "/usr/bin:/bin"}
    result = subprocess.run(
        [sys.executable, "-m", "tickerd", "serve", "--port", "0", "--rest-port", "-1", "--feed", "push"],
        check=False, capture_output=True, text=True, timeout=30, env=env,
    )  # fmt: skip
    assert result.returncode == 1
    assert "the push feed needs a token" in result.stderr


# -- end to end: pushed prices on the public API ---------------------------------------------

PUSH_READY_RE = re.compile(r"tickerd push ready: http://127\.0\.0\.1:(\d+)")


def push_port(srv: Any) -> int:
    m = PUSH_READY_RE.search(srv.wait_log("tickerd push ready:"))
    assert m is not None
    return int(m.group(1))


def http_post(port: int, body: Any, token: str = TOKEN) -> tuple[int, Any]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("POST", "/ingest", json.dumps(body), {"Authorization": f"Bearer {token}"})
        response = conn.getresponse()
        return response.status, json.loads(response.read())
    finally:
        conn.close()


def ask(ws: Any, symbol: str | None = None) -> Any:
    params = {"params": {"symbol": symbol}} if symbol else {}
    ws.send(json.dumps({"id": 1, "method": "ticker.price", **params}))
    return json.loads(ws.recv())


def test_pushed_prices_are_served_on_the_public_api(server: Any) -> None:
    srv = server("--feed", "push", "--push-port", "0", env={"TICKERD_PUSH_TOKEN": TOKEN})
    port = push_port(srv)
    assert port not in (srv.port, int(srv.rest_url.rsplit(":", 1)[1]))
    with srv.connect() as ws:
        assert ask(ws, "BTCUSDT")["status"] == 400  # nothing pushed yet: no price
        assert http_post(port, {"ticks": [tick()]}, token="wrong")[0] == 401
        assert http_post(port, {"ticks": [tick(), tick("ETHUSDT", "3150.5", T0 + 1)]}) == (
            200,
            {"accepted": 2, "rejected": []},
        )
        assert ask(ws, "BTCUSDT")["result"] == {
            "symbol": "BTCUSDT",
            "price": "97000.10",
            "time": T0,
        }
        assert ask(ws)["result"] == [
            {"symbol": "BTCUSDT", "price": "97000.10", "time": T0},
            {"symbol": "ETHUSDT", "price": "3150.50", "time": T0 + 1},
        ]
    # The public API does not take pushes; the push port does not speak the public API.
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=5)
    conn.request("POST", "/ingest", "{}", {"Authorization": f"Bearer {TOKEN}"})
    assert conn.getresponse().status != 200
    conn.close()


def test_synthetic_and_push_share_the_symbols(server: Any) -> None:
    srv = server(
        "--feed", "synthetic,push", "--push-port", "0", "--push-symbols", "BTCUSDT",
        "--tick-rate", "2000", env={"TICKERD_PUSH_TOKEN": TOKEN},
    )  # fmt: skip
    port = push_port(srv)
    now = int(time.time() * 1000)
    with srv.connect() as ws:
        assert ask(ws, "BTCUSDT")["status"] == 400  # synthetic leaves BTCUSDT to push
        eth = ask(ws, "ETHUSDT")["result"]
        assert http_post(port, {"ticks": [tick(time_ms=now)]})[0] == 200
        status, body = http_post(port, {"ticks": [tick("ETHUSDT", "3150.5", now)]})
        assert status == 422 and body["rejected"][0]["code"] == "not_pushable"
        time.sleep(0.5)  # ~1000 synthetic ticks later
        assert ask(ws, "BTCUSDT")["result"] == {
            "symbol": "BTCUSDT",
            "price": "97000.10",
            "time": now,
        }
        assert ask(ws, "ETHUSDT")["result"] != eth  # synthetic keeps walking the rest


# -- several feeds at once ------------------------------------------------------------------


def test_synthetic_takes_the_symbols_no_other_feed_declares() -> None:
    uni = universe()
    settings = Settings(feed="synthetic,push", push_token=TOKEN, push_symbols="BTCUSDT,ETHUSDT")
    synthetic, push = build_feeds(settings, uni, None).feeds  # type: ignore[arg-type]
    assert isinstance(synthetic, SyntheticFeed) and isinstance(push, PushFeed)
    assert push.symbols == {"BTCUSDT", "ETHUSDT"}
    trading = {s.symbol for s in uni.trading()}
    assert synthetic.symbols == trading - {"BTCUSDT", "ETHUSDT"}
    assert {w.symbol for w in synthetic.market.walkers} == synthetic.symbols
    # The order of --feed does not matter.
    _, synthetic2 = build_feeds(
        Settings(feed="push,synthetic", push_token=TOKEN, push_symbols="BTCUSDT,ETHUSDT"),
        uni, None,  # type: ignore[arg-type]
    ).feeds  # fmt: skip
    assert synthetic2.symbols == synthetic.symbols  # type: ignore[attr-defined]
    # Push alone takes everything.
    (alone,) = build_feeds(Settings(feed="push", push_token=TOKEN), uni, None).feeds  # type: ignore[arg-type]
    assert alone.symbols == trading  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (
            Settings(feed="synthetic,push", push_token=TOKEN),
            "feeds synthetic and push would each take",
        ),
        (Settings(feed="mirror,push", push_token=TOKEN), "feeds mirror and push would each take"),
        (
            Settings(
                feed="mirror,push",
                push_token=TOKEN,
                mirror_symbols="BTCUSDT,ETHUSDT",
                push_symbols="ETHUSDT,XRPUSDT",
            ),
            "feeds mirror and push both claim ETHUSDT",
        ),
        (Settings(feed="push,push", push_token=TOKEN), "named twice"),
        (Settings(feed="push", push_token=TOKEN, push_symbols="BTCUSDT,FOO"), "unknown symbol"),
        (Settings(feed="nope"), "unknown feed 'nope'"),
    ],
)
def test_feed_conflicts_are_refused(settings: Settings, message: str) -> None:
    with pytest.raises(FeedConfigError, match=message):
        build_feeds(settings, universe(), None)  # type: ignore[arg-type]


def test_three_feeds_without_overlap() -> None:
    uni = universe()
    settings = Settings(
        feed="mirror,push,synthetic", push_token=TOKEN, mirror_symbols="BTCUSDT",
        push_symbols="ETHUSDT",
    )  # fmt: skip
    mirror, push, synthetic = build_feeds(settings, uni, None).feeds  # type: ignore[arg-type]
    assert mirror.symbols == {"BTCUSDT"} and push.symbols == {"ETHUSDT"}  # type: ignore[attr-defined]
    assert not synthetic.symbols & {"BTCUSDT", "ETHUSDT"}  # type: ignore[attr-defined]


# -- hostile input --------------------------------------------------------------------------

LONE_SURROGATE = b'{"ticks":[{"symbol":"\\ud800","price":"1.0","time":1700000000000}]}'


def test_lone_surrogate_symbol_is_refused_by_name_over_http_and_websocket() -> None:
    async def scenario(feed: PushFeed, book: PriceBook, session: aiohttp.ClientSession) -> None:
        status, body = await post(session, feed, LONE_SURROGATE)
        assert status == 422, body
        assert body["rejected"] == [
            {"index": 0, "symbol": "\\ud800", "code": "unknown_symbol", "reason": "unknown symbol"}
        ]
        async with session.ws_connect(feed.url + "/ingest/ws", headers=AUTH) as ws:
            await ws.send_str(LONE_SURROGATE.decode())
            reply = json.loads(await ws.receive_str())
            assert reply["status"] == 422 and reply["rejected"][0]["symbol"] == "\\ud800"
            await ws.send_str(json.dumps({"id": "\ud800", "ticks": [tick()]}))
            reply = json.loads(await ws.receive_str())
            assert reply["status"] == 400 and "id" not in reply
            # The socket is still usable and closes with a proper close handshake.
            await ws.send_str(json.dumps({"id": "ok", "ticks": [tick()]}))
            assert json.loads(await ws.receive_str())["status"] == 200
            await ws.close()
            assert ws.close_code == 1000
        assert len(book) == 1

    with_push(scenario)


@pytest.mark.parametrize(
    "batch_id", [10**400, 2**63, -(2**63) - 1, 1.5, [1], {"a": 1}, True, "x" * 65, "tab\there"]
)
def test_websocket_batch_with_an_id_that_cannot_be_echoed_is_400_and_not_applied(
    batch_id: Any,
) -> None:
    async def scenario(feed: PushFeed, book: PriceBook, session: aiohttp.ClientSession) -> None:
        async with session.ws_connect(feed.url + "/ingest/ws", headers=AUTH) as ws:
            await ws.send_str(json.dumps({"id": batch_id, "ticks": [tick()]}))
            reply = json.loads(await ws.receive_str())
            assert reply["status"] == 400 and "id" not in reply, reply
            assert '"id" must be a string' in reply["error"]
            assert len(book) == 0  # refused before anything was applied
            for good in (2**63 - 1, -(2**63), "x" * 64, None):
                await ws.send_str(json.dumps({"id": good, "ticks": []}))
                reply = json.loads(await ws.receive_str())
                assert reply["status"] == 200 and reply.get("id") == good
            await ws.close()
            assert ws.close_code == 1000

    with_push(scenario)


def test_pushed_times_follow_the_future_skew_rule() -> None:
    from tickerd.clock import ManualClock

    clock = ManualClock(T0)

    async def scenario(feed: PushFeed, book: PriceBook, session: aiohttp.ClientSession) -> None:
        for time_ms in (T0 + 10_001, 2**62, 2**63 - 1):
            status, body = await post(session, feed, {"ticks": [tick(time_ms=time_ms)]})
            assert status == 422 and body["rejected"][0]["code"] == "bad_time", body
            assert "ahead of the service clock" in body["rejected"][0]["reason"]
        assert len(book) == 0
        status, body = await post(session, feed, {"ticks": [tick(time_ms=T0 + 10_000)]})
        assert status == 200, body
        clock.advance(60_000)
        assert (await post(session, feed, {"ticks": [tick(time_ms=T0 + 20_000)]}))[0] == 200

    with_push(scenario, clock=clock)


def test_a_defect_while_answering_closes_the_websocket_with_1011(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def scenario(feed: PushFeed, book: PriceBook, session: aiohttp.ClientSession) -> None:
        def broken(text: str, book: PriceBook) -> str:
            raise RuntimeError("a defect")

        monkeypatch.setattr(feed, "_answer", broken)
        async with session.ws_connect(feed.url + "/ingest/ws", headers=AUTH) as ws:
            await ws.send_str(json.dumps({"ticks": []}))
            msg = await ws.receive()
            assert msg.type is aiohttp.WSMsgType.CLOSE and msg.data == 1011

    with_push(scenario)

"""The live mirror against a local fake Binance (tests/fake_binance.py): bootstrap, stream
updates into a real server's answers, drops and resumption with re-bootstrap, rollover
before the 24 h cut without a gap, sharding, refusals surfaced loudly and retried after
Retry-After, stale marking. Everything runs on 127.0.0.1; timers are shortened.

Binance pages: websocket-market-streams (combined streams, 1024 streams and 10 incoming
messages per second per connection, 24 h lifetime, pings), Aggregate-Trade-Streams,
Symbol-Price-Ticker-v2, error-code.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest

from fake_binance import FakeBinance, ThreadedFake, eventually
from tickerd import PriceBook, Settings, SymbolUniverse
from tickerd.feeds import FeedConfigError, build_feeds
from tickerd.feeds.mirror import MirrorFeed

pytestmark = pytest.mark.timeout(60)

T0 = 1_700_000_000_000
LOGGER = "tickerd.feeds.mirror"


def universe() -> SymbolUniverse:
    return SymbolUniverse.default()


def make_feed(fake: FakeBinance, uni: SymbolUniverse, **kw: Any) -> MirrorFeed:
    options: dict[str, Any] = {
        "symbols": ["BTCUSDT", "ETHUSDT"],
        "backoff_initial_s": 0.05,
        "backoff_max_s": 0.2,
        "bootstrap_delay_s": 0.02,
        "connect_timeout_s": 2.0,
        "close_timeout_s": 1.0,
        "rng": random.Random(7),
    }
    options.update(kw)
    return MirrorFeed(uni, rest_url=fake.rest_url, stream_url=fake.stream_url, **options)


@asynccontextmanager
async def running(feed: MirrorFeed, book: PriceBook) -> AsyncIterator[None]:
    await feed.start(book)
    task = asyncio.create_task(feed.run(book))
    try:
        yield
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


Scenario = Callable[[FakeBinance], Awaitable[None]]


def with_fake(scenario: Scenario) -> None:
    async def main() -> None:
        fake = FakeBinance()
        await fake.start()
        try:
            await scenario(fake)
        finally:
            await fake.stop()

    asyncio.run(main())


def price(book: PriceBook, symbol: str) -> tuple[str, int] | None:
    tick = book.get(symbol)
    return None if tick is None else (tick.price, tick.time_ms)


# -- bootstrap and updates ----------------------------------------------------------------


def test_bootstrap_then_stream_updates() -> None:
    async def scenario(fake: FakeBinance) -> None:
        fake.set_price("BTCUSDT", "97000.1", T0)
        fake.set_price("ETHUSDT", "3150.51", T0 + 1)
        fake.set_price("XRPUSDT", "0.5", T0)  # not mirrored: left alone
        book = PriceBook(universe())
        feed = make_feed(fake, book.universe)
        await feed.start(book)  # before the port would open
        assert len(fake.rest_hits) == 1 and not fake.ws_attempts
        assert price(book, "BTCUSDT") == ("97000.10", T0)
        assert price(book, "ETHUSDT") == ("3150.51", T0 + 1)
        assert book.get("XRPUSDT") is None
        async with running(feed, book):
            await eventually(lambda: len(fake.open_conns()) == 1, what="connected")
            conn = fake.open_conns()[0]
            # Combined stream on the /market path, lower-case names, subscribed by URL.
            assert conn.streams == ["btcusdt@aggTrade", "ethusdt@aggTrade"]
            assert await fake.trade("BTCUSDT", "97001.2", T0 + 10) == 1
            await eventually(lambda: price(book, "BTCUSDT") == ("97001.20", T0 + 10))
            await fake.trade("ETHUSDT", "3151", T0 + 11)
            await eventually(lambda: price(book, "ETHUSDT") == ("3151.00", T0 + 11))
            assert feed.stats.applied >= 4 and feed.stats.rejected == 0
            # The mirror never sends a message: nothing counts against 10 messages/s.
            assert conn.client_messages == []

    with_fake(scenario)


def test_default_symbols_are_every_trading_symbol() -> None:
    async def scenario(fake: FakeBinance) -> None:
        uni = universe()
        book = PriceBook(uni)
        feed = make_feed(fake, uni, symbols=None)
        async with running(feed, book):
            await eventually(lambda: len(fake.open_conns()) == 1)
            names = fake.open_conns()[0].streams
            assert names == [f"{s.symbol.lower()}@aggTrade" for s in uni.trading()]

    with_fake(scenario)


def test_updates_reach_a_real_server() -> None:
    websockets = pytest.importorskip("websockets.asyncio.client")
    from tickerd.app import Service

    async def ask(url: str, symbol: str) -> dict[str, Any]:
        async with websockets.connect(url, proxy=None) as ws:
            await ws.send(
                json.dumps({"id": 1, "method": "ticker.price", "params": {"symbol": symbol}})
            )
            reply: dict[str, Any] = json.loads(await ws.recv())
            return reply

    async def scenario(fake: FakeBinance) -> None:
        fake.set_price("BTCUSDT", "97000.1", T0)
        service = Service(Settings(port=0, rest_port=-1, ops_port=-1), feeds=[])
        service.feeds = [make_feed(fake, service.universe)]
        await service.start()
        try:
            # Bootstrapped before the port opened.
            reply = await ask(service.url, "BTCUSDT")
            assert reply["result"] == {"symbol": "BTCUSDT", "price": "97000.10", "time": T0}
            await eventually(lambda: len(fake.open_conns()) == 1)
            await fake.trade("BTCUSDT", "97005.5", T0 + 50)
            await eventually(lambda: price(service.book, "BTCUSDT") == ("97005.50", T0 + 50))
            reply = await ask(service.url, "BTCUSDT")
            assert reply["result"] == {"symbol": "BTCUSDT", "price": "97005.50", "time": T0 + 50}
            health = service.health()["feeds"]["mirror"]
            assert health["connections"] == 1 and health["shards"] == 1
        finally:
            await service.stop()

    with_fake(scenario)


def test_cli_serves_the_mirror(server: Any) -> None:
    """``tickerd serve --feed mirror`` with the upstream URLs pointed at the fake."""
    threaded = ThreadedFake()
    fake = threaded.fake
    try:
        fake.set_price("BTCUSDT", "97000.1", T0)
        srv = server(
            "--feed", "mirror",
            "--mirror-rest-url", fake.rest_url,
            "--mirror-stream-url", fake.stream_url,
        )  # fmt: skip
        with srv.connect() as ws:
            ws.send('{"id":1,"method":"ticker.price","params":{"symbol":"BTCUSDT"}}')
            assert json.loads(ws.recv())["result"]["price"] == "97000.10"
            threaded.call(eventually(lambda: len(fake.open_conns()) == 1))
            assert len(fake.open_conns()[0].streams) == len(universe().trading())
            threaded.call(fake.trade("BTCUSDT", "97123.4", T0 + 99))
            deadline = 50
            while deadline:
                ws.send('{"id":2,"method":"ticker.price","params":{"symbol":"BTCUSDT"}}')
                result = json.loads(ws.recv())["result"]
                if result["price"] == "97123.40":
                    break
                deadline -= 1
                threaded.call(asyncio.sleep(0.05))
            assert result == {"symbol": "BTCUSDT", "price": "97123.40", "time": T0 + 99}
        srv.wait_log("mirroring 88 symbols over 1 connection(s)")
    finally:
        threaded.close()


# -- sharding -----------------------------------------------------------------------------


def test_sharding_five_symbols_in_shards_of_two() -> None:
    symbols = ["ADAUSDT", "BNBUSDT", "BTCUSDT", "ETHUSDT", "XRPUSDT"]

    async def scenario(fake: FakeBinance) -> None:
        book = PriceBook(universe())
        feed = make_feed(fake, book.universe, symbols=symbols, shard_size=2)
        async with running(feed, book):
            await eventually(lambda: len(fake.open_conns()) == 3, what="3 connections")
            await asyncio.sleep(0.1)
            conns = fake.open_conns()
            assert len(conns) == 3 and len(fake.conns) == 3
            assert sorted(len(c.streams) for c in conns) == [1, 2, 2]
            streams = sorted(s for c in conns for s in c.streams)
            assert streams == [f"{s.lower()}@aggTrade" for s in symbols]
            for i, symbol in enumerate(symbols):
                assert await fake.trade(symbol, "1.0000", T0 + i) == 1  # exactly one shard
            await eventually(lambda: all(book.get(s) is not None for s in symbols))
            assert feed.status()["connections"] == 3

    with_fake(scenario)


def test_shard_size_bounded_by_binance_limit() -> None:
    uni = universe()
    for bad in (0, 1025):
        with pytest.raises(ValueError):
            MirrorFeed(uni, rest_url="http://x", stream_url="ws://x", shard_size=bad)
    MirrorFeed(uni, rest_url="http://x", stream_url="ws://x", shard_size=1024)


# -- drops, resumption, rollover ----------------------------------------------------------


@pytest.mark.parametrize("close_frame", [True, False], ids=["close-frame", "tcp-cut"])
def test_drop_reconnects_and_rebootstraps(close_frame: bool) -> None:
    async def scenario(fake: FakeBinance) -> None:
        fake.set_price("BTCUSDT", "97000.1", T0)
        book = PriceBook(universe())
        feed = make_feed(fake, book.universe)
        async with running(feed, book):
            await eventually(lambda: len(fake.open_conns()) == 1)
            await eventually(lambda: len(fake.rest_hits) == 2, what="bootstrap after connect")
            first = fake.open_conns()[0]
            await fake.drop(first, close_frame=close_frame)
            # A trade Binance made while the mirror was away: only REST can tell it.
            fake.set_price("BTCUSDT", "97100.0", T0 + 500)
            await eventually(lambda: len(fake.open_conns()) == 1 and len(fake.conns) == 2)
            await eventually(lambda: price(book, "BTCUSDT") == ("97100.00", T0 + 500))
            assert len(fake.rest_hits) == 3
            assert feed.stats.drops == 1 and feed.stats.connects == 2
            await fake.trade("BTCUSDT", "97200.0", T0 + 600)
            await eventually(lambda: price(book, "BTCUSDT") == ("97200.00", T0 + 600))

    with_fake(scenario)


def test_silent_connection_is_replaced() -> None:
    """Binance pings every 3 minutes; a socket quiet for longer than the idle timeout is
    presumed dead (here 0.3 s) and replaced."""

    async def scenario(fake: FakeBinance) -> None:
        book = PriceBook(universe())
        feed = make_feed(fake, book.universe, idle_timeout_s=0.3)
        async with running(feed, book):
            await eventually(lambda: len(fake.conns) >= 2, what="a second connection")
            assert feed.stats.drops >= 1

    with_fake(scenario)


def test_rollover_opens_the_successor_before_closing() -> None:
    async def scenario(fake: FakeBinance) -> None:
        fake.set_price("BTCUSDT", "97000.1", T0)
        book = PriceBook(universe())
        feed = make_feed(fake, book.universe, rollover_after_s=0.4)
        async with running(feed, book):
            await eventually(lambda: len(fake.conns) >= 4, timeout=10, what="3 rollovers")
            hits = len(fake.rest_hits)
            # Trades keep flowing across rollovers.
            for i in range(30):
                await fake.trade("BTCUSDT", f"{97000 + i}.0", T0 + 1000 + i)
                await asyncio.sleep(0.03)
            await eventually(lambda: price(book, "BTCUSDT") == ("97029.00", T0 + 1029))
            assert len(fake.rest_hits) == hits  # no gap, so no re-bootstrap
        assert feed.stats.rollovers >= 3 and feed.stats.drops == 0
        # Every connection k+1 was open before connection k closed.
        order = {event: i for i, event in enumerate(fake.timeline)}
        for k in range(len(fake.conns) - 1):
            if ("close", k) in order:
                assert order[("open", k + 1)] < order[("close", k)], fake.timeline
        assert max(_open_at_once(fake.timeline)) <= 2

    with_fake(scenario)


def _open_at_once(timeline: list[tuple[str, int]]) -> list[int]:
    n, counts = 0, []
    for kind, _ in timeline:
        n += 1 if kind == "open" else -1
        counts.append(n)
    return counts


def test_overlap_and_late_events_never_move_a_price_back() -> None:
    async def scenario(fake: FakeBinance) -> None:
        book = PriceBook(universe())
        feed = make_feed(fake, book.universe)
        async with running(feed, book):
            await eventually(lambda: len(fake.open_conns()) == 1 and feed.stats.bootstraps == 2)
            await fake.trade("BTCUSDT", "97000.0", T0 + 100, agg_id=50)
            await eventually(lambda: price(book, "BTCUSDT") == ("97000.00", T0 + 100))
            await fake.trade("BTCUSDT", "96000.0", T0 + 100, agg_id=50)  # duplicate id
            await fake.trade("BTCUSDT", "95000.0", T0 + 99, agg_id=60)  # older time
            await fake.trade("BTCUSDT", "97001.0", T0 + 100, agg_id=61)  # same ms, later
            await eventually(lambda: price(book, "BTCUSDT") == ("97001.00", T0 + 100))
            assert feed.stats.skipped == 2

    with_fake(scenario)


# -- backoff and refusals -----------------------------------------------------------------


def test_backoff_grows_with_jitter_and_is_seeded() -> None:
    uni = universe()
    a = MirrorFeed(uni, rest_url="http://x", stream_url="ws://x", rng=random.Random(3),
                   backoff_initial_s=1.0, backoff_max_s=8.0)  # fmt: skip
    b = MirrorFeed(uni, rest_url="http://x", stream_url="ws://x", rng=random.Random(3),
                   backoff_initial_s=1.0, backoff_max_s=8.0)  # fmt: skip
    delays = [a._delay(n, None) for n in range(8)]
    assert delays == [b._delay(n, None) for n in range(8)]
    for n, delay in enumerate(delays):
        step = min(8.0, 2.0**n)
        assert step / 2 <= delay <= step
    assert len(set(delays)) == len(delays)  # jittered
    assert a._delay(0, 30) == 30.0  # Retry-After wins when longer


def test_reconnect_attempts_back_off() -> None:
    async def scenario(fake: FakeBinance) -> None:
        fake.refuse_ws(503, times=4)
        book = PriceBook(universe())
        feed = make_feed(fake, book.universe, backoff_initial_s=0.1, backoff_max_s=1.0)
        async with running(feed, book):
            await eventually(lambda: len(fake.open_conns()) == 1, timeout=10)
        t = fake.ws_attempts
        gaps = [b - a for a, b in itertools.pairwise(t)]
        assert len(gaps) == 4
        for n, gap in enumerate(gaps):
            assert gap >= 0.1 * 2**n / 2 - 0.01, gaps

    with_fake(scenario)


REFUSAL_CASES = [
    (429, 1, "rate limited"),
    (418, 1, "IP banned"),
    (451, None, "restricted location"),
]


@pytest.mark.parametrize(("status", "retry_after", "meaning"), REFUSAL_CASES)
def test_rest_refusal_is_loud_and_retried_after_retry_after(
    caplog: pytest.LogCaptureFixture, status: int, retry_after: int | None, meaning: str
) -> None:
    async def scenario(fake: FakeBinance) -> None:
        fake.set_price("BTCUSDT", "97000.1", T0)
        fake.refuse_rest(status, retry_after, times=2)
        book = PriceBook(universe())
        feed = make_feed(fake, book.universe, backoff_initial_s=0.3, backoff_max_s=0.3)
        with caplog.at_level(logging.INFO, logger=LOGGER):
            await feed.start(book)  # refused: logged, not fatal
            assert book.get("BTCUSDT") is None
            task = asyncio.create_task(feed.run(book))
            try:
                await eventually(lambda: book.get("BTCUSDT") is not None, timeout=10)
            finally:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        hits = fake.rest_hits
        assert len(hits) == 3  # start (refused), run (refused), its retry (ok)
        # No snapshot request before Retry-After (or, without one, the longest backoff)
        # passed; the streams, limited separately by Binance, connect at once.
        hold = retry_after if retry_after is not None else 0.3
        assert fake.ws_attempts[0] - hits[0] < hold
        assert fake.ws_attempts[0] < hits[1]
        for a, b in itertools.pairwise(hits):
            assert b - a >= hold - 0.02, hits
        errors = [r for r in caplog.records if r.name == LOGGER and r.levelno == logging.ERROR]
        assert len(errors) == 2, [r.getMessage() for r in errors]
        text = errors[0].getMessage()
        assert f"HTTP {status}" in text and meaning in text
        assert f"Retry-After {retry_after if retry_after is not None else 'none'}" in text
        assert "/fapi/v2/ticker/price" in text
        assert feed.stats.refusals == 2
        assert feed.stats.last_refusal == {
            "what": "bootstrap",
            "status": status,
            "retry_after": retry_after,
        }

    with_fake(scenario)


@pytest.mark.parametrize("status", [429, 418, 451])
def test_handshake_refusal_is_loud_and_retried_after_retry_after(
    caplog: pytest.LogCaptureFixture, status: int
) -> None:
    async def scenario(fake: FakeBinance) -> None:
        fake.refuse_ws(status, 1)
        book = PriceBook(universe())
        feed = make_feed(fake, book.universe)
        with caplog.at_level(logging.INFO, logger=LOGGER):
            async with running(feed, book):
                await eventually(lambda: len(fake.open_conns()) == 1, timeout=10)
        t = fake.ws_attempts
        assert len(t) == 2 and t[1] - t[0] >= 0.98
        errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
        assert len(errors) == 1
        assert f"HTTP {status}" in errors[0] and "Retry-After 1" in errors[0]
        assert "stream handshake" in errors[0]

    with_fake(scenario)


# -- staleness, bad data, pings -------------------------------------------------------------


def test_stale_marking(caplog: pytest.LogCaptureFixture) -> None:
    async def scenario(fake: FakeBinance) -> None:
        fake.set_price("ETHUSDT", "3150.5", T0)
        book = PriceBook(universe())
        feed = make_feed(fake, book.universe, stale_after_s=0.3)
        with caplog.at_level(logging.INFO, logger=LOGGER):
            async with running(feed, book):
                await eventually(lambda: len(fake.open_conns()) == 1)
                assert feed.stale_symbols() == []
                for i in range(8):  # BTCUSDT trades, ETHUSDT stays silent
                    await fake.trade("BTCUSDT", "97000.0", T0 + i)
                    await asyncio.sleep(0.1)
                assert feed.stale_symbols() == ["ETHUSDT"]
                status = feed.status()
                assert status["stale"] == 1 and status["stale_symbols"] == ["ETHUSDT"]
                assert book.body("ETHUSDT") is not None  # a stale price is still served
                await fake.trade("ETHUSDT", "3151.0", T0 + 20)
                await eventually(lambda: feed.stale_symbols() == [])
                await eventually(lambda: any("live again" in m for m in caplog.messages))
        assert any("1 symbol(s) stale" in m and "ETHUSDT" in m for m in caplog.messages)

    with_fake(scenario)


def test_a_dead_shard_goes_stale() -> None:
    async def scenario(fake: FakeBinance) -> None:
        book = PriceBook(universe())
        feed = make_feed(fake, book.universe, stale_after_s=0.3)
        async with running(feed, book):
            await eventually(lambda: len(fake.open_conns()) == 1)
            fake.refuse_ws(503, times=1000)
            await fake.drop(fake.open_conns()[0], close_frame=False)
            await eventually(lambda: feed.stale_symbols() == ["BTCUSDT", "ETHUSDT"])
            assert feed.status()["connections"] == 0

    with_fake(scenario)


def test_bad_upstream_data_is_counted_never_fatal(caplog: pytest.LogCaptureFixture) -> None:
    async def scenario(fake: FakeBinance) -> None:
        book = PriceBook(universe())
        feed = make_feed(fake, book.universe)
        with caplog.at_level(logging.WARNING, logger=LOGGER):
            async with running(feed, book):
                await eventually(lambda: len(fake.open_conns()) == 1)
                await fake.send_raw("not json")
                await fake.send_raw('{"result":null,"id":1}')
                await fake.send_raw('{"stream":"x","data":{"e":"markPriceUpdate","s":"BTCUSDT"}}')
                await fake.trade("BTCUSDT", "97000.05", T0)  # off the 0.10 grid
                await fake.trade("BTCUSDT", "97000", T0 + 1, agg_id=None)
                await fake.send_raw(
                    '{"stream":"dogeusdt@aggTrade","data":{"e":"aggTrade","s":"DOGEUSDT",'
                    '"a":1,"p":"0.1","T":1}}'
                )
                await fake.send_raw(
                    '{"stream":"btcusdt@aggTrade","data":{"e":"aggTrade","s":"BTCUSDT",'
                    '"a":999999,"p":97000.1,"T":1700000000002}}'
                )  # price as a JSON number: never through a float
                await fake.trade("ETHUSDT", "3150.5", T0 + 3)
                await eventually(lambda: price(book, "ETHUSDT") == ("3150.50", T0 + 3))
        assert price(book, "BTCUSDT") == ("97000.00", T0 + 1)
        assert feed.stats.rejected == 6
        assert any("not a positive multiple" in m for m in caplog.messages)

    with_fake(scenario)


def test_answers_upstream_pings() -> None:
    async def scenario(fake: FakeBinance) -> None:
        book = PriceBook(universe())
        feed = make_feed(fake, book.universe)
        async with running(feed, book):
            await eventually(lambda: len(fake.open_conns()) == 1)
            conn = fake.open_conns()[0]
            await fake.ping(conn, b"1700000000000")
            await eventually(lambda: conn.pongs == [b"1700000000000"], what="pong")
            assert conn.client_messages == []

    with_fake(scenario)


# -- configuration --------------------------------------------------------------------------


def test_build_feeds_registers_the_mirror() -> None:
    uni = universe()
    plan = build_feeds(Settings(feed="mirror", mirror_symbols="btcusdt, ETHUSDT"), uni, None)  # type: ignore[arg-type]
    (feed,) = plan.feeds
    assert isinstance(feed, MirrorFeed)
    assert feed.symbols == frozenset({"BTCUSDT", "ETHUSDT"})
    assert feed.stream_url == "wss://fstream.binance.com/market"
    assert feed.rest_url == "https://fapi.binance.com"
    plan = build_feeds(Settings(feed="mirror"), uni, None)  # type: ignore[arg-type]
    assert plan.feeds[0].symbols == frozenset(s.symbol for s in uni.trading())  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (Settings(feed="mirror", mirror_symbols="BTCUSDT,NOPEUSDT"), "unknown symbol(s) NOPEUSDT"),
        (Settings(feed="mirror", mirror_rest_url="ftp://x"), "--mirror-rest-url"),
        (Settings(feed="mirror", mirror_stream_url="http://x"), "--mirror-stream-url"),
    ],
)
def test_mirror_configuration_errors(settings: Settings, message: str) -> None:
    with pytest.raises(FeedConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        build_feeds(settings, universe(), None)  # type: ignore[arg-type]


def test_a_stream_url_without_route_gets_market_and_a_wrong_route_is_refused() -> None:
    """Since 2026-04-23 the route-less and other-route paths accept the handshake and then
    send no aggTrade frames; a mirror pointed there would stall silently."""
    uni = universe()
    for given in ("wss://fstream.binance.com", "wss://fstream.binance.com/"):
        feed = MirrorFeed(uni, rest_url="http://x", stream_url=given)
        assert feed.stream_url == "wss://fstream.binance.com/market"
        feed._plan_shards()
        assert feed.shards[0].url.startswith("wss://fstream.binance.com/market/stream?streams=")
    for wrong in ("wss://fstream.binance.com/public", "wss://fstream.binance.com/ws"):
        with pytest.raises(FeedConfigError, match=r"served under the /market route"):
            build_feeds(Settings(feed="mirror", mirror_stream_url=wrong), uni, None)  # type: ignore[arg-type]


def test_a_failing_reader_is_reported_and_replaced(caplog: pytest.LogCaptureFixture) -> None:
    async def scenario(fake: FakeBinance) -> None:
        book = PriceBook(universe())
        feed = make_feed(fake, book.universe)
        original = feed._on_event
        calls: list[int] = []

        def flaky(*args: Any) -> None:
            calls.append(1)
            if len(calls) == 1:
                raise RuntimeError("boom")
            original(*args)

        feed._on_event = flaky  # type: ignore[method-assign]
        with caplog.at_level(logging.ERROR, logger=LOGGER):
            async with running(feed, book):
                await eventually(lambda: len(fake.open_conns()) == 1)
                await fake.trade("BTCUSDT", "97000.0", T0)
                await eventually(lambda: len(fake.conns) == 2 and len(fake.open_conns()) == 1)
                await fake.trade("BTCUSDT", "97000.1", T0 + 1)
                await eventually(lambda: price(book, "BTCUSDT") == ("97000.10", T0 + 1))
        assert any("reader failed" in m for m in caplog.messages)

    with_fake(scenario)

"""The mirror against what an upstream may really send: trades stamped in the future, ids
that are not integers, a base URL without Binance's route, a long ban on the first
snapshot, and a universe that changes under it (new listings, status and tick-size
changes). Every check goes through the fake upstream (tests/fake_binance.py) in Binance's
published formats and, where a user would see it, through a real server's socket."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path
from typing import Any

import pytest

from fake_binance import FakeBinance, eventually
from test_mirror import LOGGER, T0, make_feed, price, running, universe, with_fake
from tickerd import PriceBook, Settings
from tickerd.clock import ManualClock
from tickerd.config import setting_names
from tickerd.feeds import build_feeds
from tickerd.feeds.mirror import MirrorFeed
from tickerd.feeds.state import FeedState
from tickerd.ticktime import FUTURE_SKEW_MS

pytestmark = pytest.mark.timeout(60)

DAY_MS = 86_400_000


async def ask(url: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
    from websockets.asyncio.client import connect

    async with connect(url, proxy=None, compression=None) as ws:
        request: dict[str, Any] = {"id": 1, "method": "ticker.price"}
        if params is not None:
            request["params"] = params
        await ws.send(json.dumps(request))
        reply: dict[str, Any] = json.loads(await ws.recv())
        return reply


def agg_event(symbol: str, price_text: str, time_ms: Any, agg: Any) -> str:
    data: dict[str, Any] = {"e": "aggTrade", "E": T0, "s": symbol, "p": price_text,
                            "q": "0.010", "nq": "0.010", "f": 1, "l": 2, "T": time_ms, "m": True}  # fmt: skip
    if agg is not ...:
        data["a"] = agg
    return json.dumps({"stream": f"{symbol.lower()}@aggTrade", "data": data})


# -- trade times beyond the service clock ------------------------------------------------------


def test_a_future_trade_is_rejected_counted_never_served_nor_stored(tmp_path: Path) -> None:
    from tickerd.app import Service

    store = tmp_path / "prices.sqlite"

    async def scenario(fake: FakeBinance) -> None:
        clock = ManualClock(T0 + 1_000)
        fake.set_price("BTCUSDT", "97000.1", T0 + 1_000 + DAY_MS)  # the snapshot, too
        cfg = Settings(
            port=0, rest_port=-1, store=str(store), store_flush_interval=0.05, ops_port=-1
        )
        service = Service(cfg, clock=clock, feeds=[])
        service.feeds = [make_feed(fake, service.universe, clock=service.clock)]
        feed = service.feeds[0]
        assert isinstance(feed, MirrorFeed)
        await service.start()
        try:
            assert service.book.get("BTCUSDT") is None  # the future snapshot row: refused
            await eventually(lambda: len(fake.open_conns()) == 1)
            await fake.trade("BTCUSDT", "97100.0", T0 + 1_000 + DAY_MS)  # a day ahead
            edge = T0 + 1_000 + FUTURE_SKEW_MS
            await fake.trade("BTCUSDT", "97200.0", edge + 1)  # 1 ms past the skew
            # The snapshot row twice (before the port opened, after the first connect) and
            # the two trades.
            await eventually(lambda: feed.stats.future == 4, what="four future ticks")
            assert service.book.get("BTCUSDT") is None
            await fake.trade("BTCUSDT", "97300.0", edge)  # at the skew bound: accepted
            await eventually(lambda: price(service.book, "BTCUSDT") == ("97300.00", edge))
            reply = await ask(service.url, {"symbol": "BTCUSDT"})
            assert reply["result"] == {"symbol": "BTCUSDT", "price": "97300.00", "time": edge}
            assert feed.stats.rejected == 4 and feed.status()["future"] == 4
        finally:
            await service.stop()
        # What the store kept is the genuine tick, which a restart serves.
        again = Service(Settings(port=0, rest_port=-1, store=str(store), ops_port=-1), feeds=[])
        await again.start()
        try:
            assert price(again.book, "BTCUSDT") == ("97300.00", T0 + 1_000 + FUTURE_SKEW_MS)
        finally:
            await again.stop()

    with_fake(scenario)


# -- aggregate ids ------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [..., "1001", 1001.0, True, None, -1, [1]])
def test_an_aggregate_id_must_be_an_integer(bad: Any, caplog: pytest.LogCaptureFixture) -> None:
    async def scenario(fake: FakeBinance) -> None:
        book = PriceBook(universe())
        feed = make_feed(fake, book.universe)
        with caplog.at_level(logging.WARNING, logger=LOGGER):
            async with running(feed, book):
                await eventually(lambda: len(fake.open_conns()) == 1)
                await eventually(lambda: feed.stats.bootstraps == 2)  # start, first connect
                skipped = feed.stats.skipped
                await fake.send_raw(agg_event("BTCUSDT", "97000.0", T0, bad))
                await fake.trade("BTCUSDT", "97000.1", T0 + 1, agg_id=5)
                await eventually(lambda: price(book, "BTCUSDT") == ("97000.10", T0 + 1))
                # Duplicate detection works on the integer ids that were applied.
                await fake.send_raw(agg_event("BTCUSDT", "97000.2", T0 + 2, 5))
                await fake.trade("ETHUSDT", "3000.0", T0 + 3)
                await eventually(lambda: book.get("ETHUSDT") is not None)
        assert price(book, "BTCUSDT") == ("97000.10", T0 + 1)
        assert feed.stats.rejected == 1 and feed.stats.skipped == skipped + 1
        assert any("aggregate id" in m and "not an integer" in m for m in caplog.messages)

    with_fake(scenario)


# -- the stream route -------------------------------------------------------------------------


def test_a_base_url_without_route_subscribes_under_market(caplog: pytest.LogCaptureFixture) -> None:
    async def scenario(fake: FakeBinance) -> None:
        book = PriceBook(universe())
        bare = f"ws://127.0.0.1:{fake.port}"
        feed = MirrorFeed(book.universe, rest_url=fake.rest_url, stream_url=bare,
                          symbols=["BTCUSDT"], bootstrap_delay_s=0.01)  # fmt: skip
        with caplog.at_level(logging.INFO, logger=LOGGER):
            async with running(feed, book):
                await eventually(lambda: len(fake.open_conns()) == 1)
                await fake.trade("BTCUSDT", "97000.1", T0)
                await eventually(lambda: price(book, "BTCUSDT") == ("97000.10", T0))
        full = f"{bare}/market/stream?streams=btcusdt@aggTrade"
        connected = [r for r in caplog.records if "connected" in r.getMessage()]
        assert connected and connected[0].levelno == logging.INFO
        assert connected[0].getMessage().endswith(full)

    with_fake(scenario)


# -- a ban on the first snapshot -----------------------------------------------------------------


@pytest.mark.parametrize("status", [429, 418])
def test_a_long_ban_on_the_snapshot_does_not_hold_back_the_streams(status: int) -> None:
    from tickerd.app import Service

    async def scenario(fake: FakeBinance) -> None:
        fake.set_price("BTCUSDT", "97000.1", T0)
        fake.refuse_rest(status, retry_after=7200, times=5)  # two hours
        service = Service(Settings(port=0, rest_port=-1, ops_port=-1), feeds=[])
        service.feeds = [make_feed(fake, service.universe)]
        feed = service.feeds[0]
        assert isinstance(feed, MirrorFeed)
        await service.start()
        try:
            await eventually(lambda: len(fake.open_conns()) == 1, what="streams connected")
            await fake.trade("BTCUSDT", "97001.0", T0 + 5)
            await eventually(lambda: price(service.book, "BTCUSDT") == ("97001.00", T0 + 5))
            reply = await ask(service.url, {"symbol": "BTCUSDT"})
            assert reply["result"] == {"symbol": "BTCUSDT", "price": "97001.00", "time": T0 + 5}
            await asyncio.sleep(0.3)
            assert len(fake.rest_hits) == 1  # the snapshot waits its two hours
            assert feed.stats.last_refusal == {"what": "initial bootstrap", "status": status,
                                               "retry_after": 7200}  # fmt: skip
            assert feed.status()["state"] == FeedState.UP
        finally:
            await service.stop()

    with_fake(scenario)


# -- timers and proxy as settings; states ---------------------------------------------------------


def test_timers_universe_period_and_proxy_are_settings() -> None:
    cfg = Settings(feed="mirror", mirror_stale_after=5, mirror_rollover_after=120,
                   mirror_idle_timeout=7, mirror_universe_every=0,
                   mirror_proxy="http://127.0.0.1:3128")  # fmt: skip
    (feed,) = build_feeds(cfg, universe(), None).feeds  # type: ignore[arg-type]
    assert isinstance(feed, MirrorFeed)
    assert feed.stale_after_s == 5 and feed.universe_every_s == 0
    assert feed.timers.rollover_after_s == 120 and feed.timers.idle_timeout_s == 7
    assert feed.proxy == "http://127.0.0.1:3128"
    from tickerd.cli import build_parser
    from tickerd.validation import resolve

    args = build_parser({}).parse_args(
        ["serve", "--feed", "mirror", "--mirror-stale-after", "5", "--mirror-idle-timeout", "7",
         "--mirror-rollover-after", "120", "--mirror-universe-every", "0",
         "--mirror-proxy", "http://127.0.0.1:3128"]
    )  # fmt: skip
    read = resolve({n: getattr(args, n, None) for n in setting_names()}, {}).settings
    assert (read.mirror_stale_after, read.mirror_idle_timeout) == (5, 7)
    assert (read.mirror_rollover_after, read.mirror_universe_every) == (120, 0)
    assert read.mirror_proxy == "http://127.0.0.1:3128"


def test_states_starting_up_stale_down() -> None:
    async def scenario(fake: FakeBinance) -> None:
        book = PriceBook(universe())
        feed = make_feed(fake, book.universe, stale_after_s=0.3, backoff_initial_s=0.5,
                         backoff_max_s=0.5)  # fmt: skip
        assert feed.status()["state"] == FeedState.STARTING
        async with running(feed, book):
            await eventually(lambda: len(fake.open_conns()) == 1)
            await eventually(lambda: feed.status()["state"] == FeedState.UP)
            await eventually(lambda: feed.status()["state"] == FeedState.STALE, what="stale")
            await fake.drop(fake.open_conns()[0], close_frame=False)
            await eventually(lambda: feed.status()["state"] == FeedState.DOWN, what="down")
            await eventually(lambda: len(fake.open_conns()) == 1, timeout=5)
            await fake.trade("BTCUSDT", "97000.0", T0)
            await fake.trade("ETHUSDT", "3000.0", T0)
            await eventually(lambda: feed.status()["state"] == FeedState.UP, what="up again")

    with_fake(scenario)


# -- a universe that follows the upstream -----------------------------------------------------------


def test_the_universe_follows_exchange_info(caplog: pytest.LogCaptureFixture) -> None:
    from tickerd.app import Service

    async def scenario(fake: FakeBinance) -> None:
        service = Service(Settings(port=0, rest_port=0, ops_port=-1), feeds=[])
        uni = service.universe
        fake.set_price("BTCUSDT", "97000.1", T0)
        feed = make_feed(fake, uni, symbols=None, universe_every_s=0.2)
        service.feeds = [feed]
        # What the mirror takes when it takes every symbol.
        feed.symbols = frozenset(s.symbol for s in uni.trading())
        with caplog.at_level(logging.INFO, logger=LOGGER):
            await service.start()
            try:
                await eventually(lambda: len(fake.open_conns()) == 1)
                assert "NEWUSDT" not in uni
                # A listing, a status change and a tick-size change, all at once.
                fake.list_symbol("ETHUSDT", "NEWUSDT")
                fake.symbol_entry("BTCUSDT")["status"] = "SETTLING"
                eth = fake.symbol_entry("ETHUSDT")
                eth["pricePrecision"] = 3
                next(f for f in eth["filters"] if f["filterType"] == "PRICE_FILTER")["tickSize"] = (
                    "0.001"
                )
                await eventually(lambda: len(fake.open_conns()) == 2, what="a shard for NEWUSDT")
                new_conn = next(c for c in fake.open_conns() if c.id == 1)
                assert new_conn.streams == ["newusdt@aggTrade"]
                await fake.trade("NEWUSDT", "12.34", T0 + 1)
                await fake.trade("ETHUSDT", "3150.123", T0 + 2)
                await eventually(lambda: price(service.book, "ETHUSDT") == ("3150.123", T0 + 2))
                await eventually(lambda: price(service.book, "NEWUSDT") == ("12.34", T0 + 1))
                new = await ask(service.url, {"symbol": "NEWUSDT"})
                assert new["result"] == {"symbol": "NEWUSDT", "price": "12.34", "time": T0 + 1}
                eth_reply = await ask(service.url, {"symbol": "ETHUSDT"})
                assert eth_reply["result"]["price"] == "3150.123"
                btc = await ask(service.url, {"symbol": "BTCUSDT"})
                assert btc["status"] == 400 and btc["error"]["code"] == -1121
                everything = await ask(service.url)
                names = [r["symbol"] for r in everything["result"]]
                assert "BTCUSDT" not in names and "NEWUSDT" in names
                # The REST exchangeInfo twin serves the new document.
                info = service.rest.exchange_info_document(T0)
                statuses = {s["symbol"]: s["status"] for s in info["symbols"]}
                assert statuses["BTCUSDT"] == "SETTLING" and statuses["NEWUSDT"] == "TRADING"
                # Further refreshes of an unchanged document: no more lines.
                refreshes = feed.stats.universe_refreshes
                await eventually(lambda: feed.stats.universe_refreshes >= refreshes + 3)
            finally:
                await service.stop()
        text = caplog.text
        assert text.count("universe: 1 new symbol(s): NEWUSDT") == 1
        assert text.count("universe: 1 status change(s): BTCUSDT TRADING -> SETTLING") == 1
        assert (
            text.count("universe: 1 price grid change(s): ETHUSDT tick/precision 0.01/2 -> 0.001/3")
            == 1
        )

    with_fake(scenario)


def test_an_explicit_symbol_list_does_not_grow_with_listings() -> None:
    async def scenario(fake: FakeBinance) -> None:
        book = PriceBook(universe())
        feed = make_feed(fake, book.universe, universe_every_s=0.1)  # BTCUSDT, ETHUSDT
        async with running(feed, book):
            await eventually(lambda: len(fake.open_conns()) == 1)
            fake.list_symbol("ETHUSDT", "NEWUSDT")
            await eventually(lambda: "NEWUSDT" in book.universe)
            await asyncio.sleep(0.3)
            assert len(fake.conns) == 1 and feed.symbols == {"BTCUSDT", "ETHUSDT"}

    with_fake(scenario)

"""``/healthz`` tells the truth: which feeds are up, stale, down or failed, with HTTP 503
when the server cannot serve correct prices and 200 otherwise, on the WebSocket API port
and on the REST port alike.

Every test runs a real :class:`~tickerd.app.Service` on free ports of 127.0.0.1 with real
feeds (a replay of a file with a bad row, a mirror whose upstream is a closed port, a feed
whose task dies) and reads ``/healthz`` over HTTP as a load balancer would.
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tickerd.app import Service
from tickerd.book import PriceBook
from tickerd.config import Settings
from tickerd.feeds import FeedState
from tickerd.feeds.mirror import MirrorFeed
from tickerd.health import VERDICTS, FeedHealth, assess

pytestmark = pytest.mark.timeout(60)

TRADES = (
    "id,price,qty,quote_qty,time,is_buyer_maker\n"
    "1,42000.10,0.1,4200.01,1704067200000,true\n"
    "2,42000.20,0.1,4200.02,1704067200500,false\n"
)
BAD_ROW = "3,not-a-price,0.1,4200.10,1704067201000,true\n"


async def healthz(service: Service) -> list[tuple[int, dict[str, Any]]]:
    """``GET /healthz`` on the WebSocket port and on the REST port: status and document."""
    urls = [service.url.replace("ws://", "http://").split("/ws-fapi")[0] + "/healthz"]
    if service.rest_url is not None:
        urls.append(service.rest_url + "/healthz")
    answers = []
    async with aiohttp.ClientSession() as session:
        for url in urls:
            async with session.get(url) as response:
                assert response.content_type == "application/json"
                answers.append((response.status, json.loads(await response.read())))
    return answers


def run(settings: Settings, check: Callable[[Service], Awaitable[None]], **kw: Any) -> None:
    async def main() -> None:
        service = Service(settings, **kw)
        await service.start()
        try:
            await check(service)
        finally:
            await service.stop()

    asyncio.run(main())


async def eventually(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


SERVE = {"host": "127.0.0.1", "port": 0, "rest_port": 0, "tick_rate": 0.0, "ops_port": -1}


def test_synthetic_feed_up_is_200_ok_on_both_ports() -> None:
    async def check(service: Service) -> None:
        answers = await healthz(service)
        assert len(answers) == 2 and answers[0] == answers[1]
        status, doc = answers[0]
        assert status == 200 and doc["status"] == "ok"
        assert doc["feeds"]["synthetic"]["state"] == "up"
        assert doc["symbols"] == len(service.book) and "problems" not in doc

    run(Settings(**SERVE), check)


def test_healthz_on_rest_is_not_charged_and_ignores_forced_errors() -> None:
    async def check(service: Service) -> None:
        service.control.http429(count=5)
        for _ in range(3):
            assert (await healthz(service))[1][0] == 200
        assert service.limiter.usage(service.clock.now_ms()) == []
        assert service.faults.faults[1].remaining == 5  # type: ignore[attr-defined]

    run(Settings(**SERVE), check)


class DyingFeed:
    """A feed whose task dies after its first price (a bug, a lost upstream)."""

    name = "dying"

    def __init__(self) -> None:
        self.symbols: frozenset[str] | None = frozenset({"BTCUSDT"})
        self.died = asyncio.Event()

    def claim(self, symbols: frozenset[str]) -> None:
        self.symbols = symbols

    def prime(self, book: PriceBook) -> None:
        book.update(book.make_tick("BTCUSDT", "97000.10", 1_700_000_000_000))

    async def start(self, book: PriceBook) -> None:
        """Nothing to prepare."""

    async def run(self, book: PriceBook) -> None:
        self.died.set()
        raise RuntimeError("upstream exploded")

    async def stop(self) -> None:
        """Nothing to release."""

    def status(self) -> dict[str, Any]:
        return {"state": FeedState.UP}


def test_a_feed_task_that_dies_is_failed_and_503() -> None:
    feed = DyingFeed()

    async def check(service: Service) -> None:
        await feed.died.wait()
        await eventually(lambda: service.health()["status"] != "ok")
        for status, doc in await healthz(service):
            assert status == 503 and doc["status"] == "unavailable"
            assert doc["feeds"]["dying"]["state"] == "failed"
            assert doc["feeds"]["dying"]["failure"] == "RuntimeError: upstream exploded"
            assert doc["problems"] == ["feed dying is failed"]

    run(Settings(**SERVE), check, feeds=[feed])


def test_a_replay_stopped_on_a_bad_row_is_503(tmp_path: Path) -> None:
    (tmp_path / "BTCUSDT-trades-2024-01-01.csv").write_text(TRADES + BAD_ROW, encoding="ascii")
    settings = Settings(**SERVE, feed="replay", replay_path=str(tmp_path), replay_speed="max")

    async def check(service: Service) -> None:
        await eventually(lambda: service.health()["status"] == "unavailable")
        for status, doc in await healthz(service):
            assert status == 503
            replay = doc["feeds"]["replay"]
            assert replay["state"] == "failed" and replay["error"].endswith(
                ".csv:4: price 'not-a-price' is not a decimal number"
            )
        # The prices before the bad row are still served, but the server says it is broken.
        tick = service.book.get("BTCUSDT")
        assert tick is not None and tick.price == "42000.20"

    run(settings, check)


def test_a_replay_that_finished_is_200_ok(tmp_path: Path) -> None:
    (tmp_path / "BTCUSDT-trades-2024-01-01.csv").write_text(TRADES, encoding="ascii")
    settings = Settings(**SERVE, feed="replay", replay_path=str(tmp_path), replay_speed="max")

    async def check(service: Service) -> None:
        await eventually(lambda: service.health()["feeds"]["replay"]["state"] == "finished")
        for status, doc in await healthz(service):
            assert status == 200 and doc["status"] == "ok"

    run(settings, check)


def test_a_step_replay_waiting_for_its_first_step_is_up(tmp_path: Path) -> None:
    (tmp_path / "BTCUSDT-trades-2024-01-01.csv").write_text(TRADES, encoding="ascii")
    settings = Settings(**SERVE, feed="replay", replay_path=str(tmp_path), replay_speed="step")

    async def check(service: Service) -> None:
        for status, doc in await healthz(service):
            assert status == 200 and doc["feeds"]["replay"]["state"] == "up"

    run(settings, check)


def mirror_of_nothing() -> MirrorFeed:
    """A mirror whose upstream is a closed port: it never connects."""
    from tickerd.symbols import SymbolUniverse

    port = closed_port()
    return MirrorFeed(
        SymbolUniverse.default(),
        rest_url=f"http://127.0.0.1:{port}",
        stream_url=f"ws://127.0.0.1:{port}",
        symbols={"BTCUSDT", "ETHUSDT"},
        backoff_initial_s=5.0,
        bootstrap_timeout_s=1.0,
        connect_timeout_s=1.0,
    )


def test_a_mirror_down_with_no_prices_is_503() -> None:
    async def check(service: Service) -> None:
        for status, doc in await healthz(service):
            assert status == 503 and doc["status"] == "unavailable"
            assert doc["feeds"]["mirror"]["state"] == "starting"
            assert doc["problems"] == ["feed mirror is starting, no prices yet"]

    run(Settings(**SERVE), check, feeds=[mirror_of_nothing()])


def test_a_mirror_down_with_older_prices_is_degraded_200() -> None:
    feed = mirror_of_nothing()

    async def check(service: Service) -> None:
        # A price the mirror's symbols kept (restored from a store, say): still served.
        service.book.update(service.book.make_tick("BTCUSDT", "97000.10", 1_700_000_000_000))
        for status, doc in await healthz(service):
            assert status == 200 and doc["status"] == "degraded"
            assert doc["problems"] == ["feed mirror is starting"]

    run(Settings(**SERVE), check, feeds=[feed])


def test_a_push_feed_with_nothing_pushed_yet_is_up() -> None:
    settings = Settings(**SERVE, feed="push", push_token="t", push_port=0)

    async def check(service: Service) -> None:
        for status, doc in await healthz(service):
            assert status == 200 and doc["feeds"]["push"]["state"] == "up"
            assert doc["symbols"] == 0

    run(settings, check)


def test_no_feed_at_all_is_ok() -> None:
    async def check(service: Service) -> None:
        for status, doc in await healthz(service):
            assert (status, doc) == (200, {"status": "ok", "symbols": 0, "connections": 0})

    run(Settings(**SERVE), check, feeds=[])


# -- the verdict table, in process ----------------------------------------------------------------


@pytest.mark.parametrize("state", list(FeedState))
@pytest.mark.parametrize("priced", [True, False])
def test_every_state_has_a_verdict(state: FeedState, priced: bool) -> None:
    status, doc = assess(
        [FeedHealth("f", {"state": state}, priced)], symbols=int(priced), connections=0
    )
    expected = VERDICTS[state][0 if priced else 1]
    assert doc["status"] == expected
    assert status == (503 if expected == "unavailable" else 200)
    assert ("problems" in doc) == (expected != "ok")


def test_the_worst_feed_decides_and_an_unknown_state_is_degraded() -> None:
    feeds = [
        FeedHealth("a", {"state": "up"}, True),
        FeedHealth("b", {"state": "stale"}, True),
        FeedHealth("c", {}, True),
    ]
    status, doc = assess(feeds, symbols=3, connections=1)
    assert status == 200 and doc["status"] == "degraded"
    assert doc["problems"] == ["feed b is stale", "feed c reports no known state (None)"]
    feeds.append(FeedHealth("d", {"state": "failed"}, True))
    assert assess(feeds, symbols=3, connections=1)[0] == 503


def test_a_mirror_up_then_cut_off_then_back() -> None:
    """Connected and priced: ok; upstream connection cut (prices kept): degraded; back:
    ok again — against a local fake of Binance's REST and market streams."""
    import random

    from fake_binance import FakeBinance
    from tickerd.symbols import SymbolUniverse

    async def main() -> None:
        fake = FakeBinance()
        await fake.start()
        fake.set_price("BTCUSDT", "97000.1", 1_700_000_000_000)
        fake.set_price("ETHUSDT", "3150.5", 1_700_000_000_000)
        feed = MirrorFeed(
            SymbolUniverse.default(),
            rest_url=fake.rest_url,
            stream_url=fake.stream_url,
            symbols={"BTCUSDT", "ETHUSDT"},
            backoff_initial_s=4.0,  # down for 2 to 4 s: time enough to read it
            backoff_max_s=4.0,
            connect_timeout_s=2.0,
            close_timeout_s=1.0,
            rng=random.Random(7),
        )
        service = Service(Settings(**SERVE), feeds=[feed])
        await service.start()
        try:
            await eventually(lambda: len(fake.open_conns()) == 1)
            await eventually(lambda: service.health()["status"] == "ok")
            for status, doc in await healthz(service):
                assert status == 200 and doc["feeds"]["mirror"]["state"] == "up"
            [conn] = fake.open_conns()
            await fake.drop(conn, close_frame=False)
            await eventually(lambda: service.health()["feeds"]["mirror"]["state"] == "down")
            for status, doc in await healthz(service):
                assert (status, doc["status"]) == (200, "degraded")
                assert doc["problems"] == ["feed mirror is down"]
            await eventually(lambda: service.health()["status"] == "ok")
        finally:
            await service.stop()
            await fake.stop()

    asyncio.run(main())

"""Cluster mode against a real redis-server: two nodes × two workers answering as one.

Each test starts its own redis-server (no persistence) and its own ``tickerd serve
--workers 2 --redis URL`` nodes. A load balancer is played by loopback source addresses
(127.0.0.x, chosen so the reuseport pin sends each to a known worker) that the nodes trust
(``--trusted-proxy 127.0.0.0/8``) and an ``X-Forwarded-For`` naming the one client IP: so
one client spreads its requests over every worker of every node.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, suppress
from typing import Any

import pytest
import redis

from cluster_procs import Node, RedisServer, needs_redis, node, redis_server, sources_for, wait_for

pytestmark = [needs_redis, pytest.mark.timeout(120)]

TOKEN = "cluster-test-token"
PRICE = "/fapi/v1/ticker/price?symbol=BTCUSDT"
#: Margins for a loaded 2-core box; the measured bounds are in docs/CLUSTER.md.
SPREAD_S = 5.0


def _args(r: RedisServer, *extra: str) -> list[str]:
    return [
        "--redis", r.url, "--trusted-proxy", "127.0.0.0/8", "--feed-lease-ms", "1500",
        "--control-port", "0", "--control-token", TOKEN, *extra,
    ]  # fmt: skip


def control(n: Node, op: str, args: dict[str, Any]) -> dict[str, Any]:
    status, doc = control_status(n, op, args)
    assert status == 200, doc
    return doc


def control_status(n: Node, op: str, args: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    m = re.search(r"tickerd control ready: http://127\.0\.0\.1:(\d+)", n.text())
    assert m, n.text()
    conn = http.client.HTTPConnection("127.0.0.1", int(m.group(1)), timeout=5)
    try:
        conn.request(
            "POST",
            "/control/" + op.replace(".", "/"),
            body=json.dumps(args),
            headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
        )
        r = conn.getresponse()
        doc: dict[str, Any] = json.loads(r.read())
        return r.status, doc
    finally:
        conn.close()


class Cluster:
    def __init__(self, nodes: list[Node]) -> None:
        self.nodes = nodes
        self.sources = [s[0] for s in sources_for(2)]  # one source per worker

    def endpoints(self) -> Iterator[tuple[Node, str]]:
        for n in self.nodes:
            for source in self.sources:
                yield n, source

    def wait_ready(self) -> None:
        for n in self.nodes:
            n.wait_healthy(self.sources)
        wait_for(lambda: self.owners() == 1, 15, "one feed owner")

    def owners(self) -> int:
        return sum(n.health(s)["feeds"]["cluster"]["feeds"] == "here" for n, s in self.endpoints())

    def price(self, n: Node, source: str, symbol: str = "BTCUSDT") -> str:
        _, _, body = n.get(f"/fapi/v1/ticker/price?symbol={symbol}", source)
        return str(json.loads(body)["price"])


def cluster(stack: ExitStack, r: RedisServer, *extra: str) -> Cluster:
    nodes = [stack.enter_context(node(_args(r, *extra))) for _ in range(2)]
    c = Cluster(nodes)
    c.wait_ready()
    return c


def test_one_ip_over_every_worker_gets_its_429_at_the_cluster_limit() -> None:
    with redis_server() as r, ExitStack() as stack:
        c = cluster(stack, r, "--weight-limit", "40", "--tick-rate", "5")
        endpoints = list(c.endpoints())
        assert len({(n.rest_port, n.health(s)["worker"]["pid"]) for n, s in endpoints}) == 4
        statuses = []
        for i in range(70):
            n, source = endpoints[i % 4]
            status, _, _ = n.get(PRICE, source, {"X-Forwarded-For": "198.51.100.7"})
            statuses.append(status)
        assert statuses[:40] == [200] * 40
        assert statuses[40] == 429
        assert 200 not in statuses[40:]  # never admitted past the limit, on any worker
        granted = redis.Redis.from_url(r.url)
        keys = granted.keys("tickerd:w:198.51.100.7:*")
        assert sum(int(granted.get(k) or 0) for k in keys) == 40
        # The operator hears of it: one WARNING per worker that refused, at most.
        line = "WARNING tickerd.ratelimit: IP 198.51.100.7 over the weight limit"
        wait_for(lambda: any(line in n.text() for n in c.nodes), SPREAD_S, "the 429 log line")
        assert 1 <= sum(n.text().count(line) for n in c.nodes) <= 4


def test_a_ban_through_one_node_is_refused_by_every_worker() -> None:
    with redis_server() as r, ExitStack() as stack:
        c = cluster(stack, r, "--tick-rate", "5")
        client = {"X-Forwarded-For": "198.51.100.9"}
        for n, source in c.endpoints():
            assert n.get(PRICE, source, client)[0] == 200
        control(c.nodes[0], "limit.ban", {"ip": "198.51.100.9", "ms": 120_000})
        took = wait_for(
            lambda: all(n.get(PRICE, s, client)[0] == 418 for n, s in c.endpoints()),
            SPREAD_S,
            "the ban everywhere",
        )
        assert took < SPREAD_S
        # Another IP is untouched, and the ban is in Redis with its TTL.
        for n, source in c.endpoints():
            assert n.get(PRICE, source, {"X-Forwarded-For": "198.51.100.10"})[0] == 200
        assert 0 < redis.Redis.from_url(r.url).pttl("tickerd:ban:198.51.100.9") <= 120_000


def test_a_price_set_on_one_node_is_served_by_every_worker() -> None:
    with redis_server() as r, ExitStack() as stack:
        c = cluster(stack, r, "--tick-rate", "0")
        control(c.nodes[1], "price.set", {"symbol": "BTCUSDT", "price": "12345.6"})
        control(c.nodes[1], "price.set", {"symbol": "ETHUSDT", "price": "2345.67"})
        wait_for(
            lambda: all(
                c.price(n, s) == "12345.60" and c.price(n, s, "ETHUSDT") == "2345.67"
                for n, s in c.endpoints()
            ),
            SPREAD_S,
            "the price everywhere",
        )
        # Shared state beyond prices: the weight limit changes on every worker.
        control(c.nodes[0], "limit.weight", {"limit": 1234})
        wait_for(
            lambda: all(
                json.loads(n.get("/fapi/v1/exchangeInfo", s)[2])["rateLimits"][0]["limit"] == 1234
                for n, s in c.endpoints()
            ),
            SPREAD_S,
            "the limit everywhere",
        )
        # The clock, set through one node, is served by all; faults stay where they were armed.
        control(c.nodes[1], "clock.freeze", {"at_ms": 1_800_000_000_000})
        wait_for(
            lambda: all(
                json.loads(n.get("/fapi/v1/time", s)[2])["serverTime"] == 1_800_000_000_000
                for n, s in c.endpoints()
            ),
            SPREAD_S,
            "the clock everywhere",
        )
        control(c.nodes[0], "fault.http429", {"count": 1})
        assert c.nodes[1].get(PRICE, c.sources[0])[0] == 200
        assert c.nodes[0].get(PRICE, c.sources[0])[0] == 429
        # Feed operations act where the feeds run: elsewhere there is no feed (409).
        for n in c.nodes:  # the control plane is worker 0's
            here = n.health(c.sources[0])["feeds"]["cluster"]["feeds"] == "here"
            assert control_status(n, "market.reseed", {"seed": 7})[0] == (200 if here else 409)


def test_the_feed_owner_dies_and_another_node_takes_the_feeds_over() -> None:
    with redis_server() as r, ExitStack() as stack:
        c = cluster(stack, r, "--tick-rate", "50")
        owner = next(
            (n, s) for n, s in c.endpoints() if n.health(s)["feeds"]["cluster"]["feeds"] == "here"
        )
        dead = owner[0]
        survivor = next(n for n in c.nodes if n is not dead)
        pids = [dead.health(s)["worker"]["pid"] for s in c.sources]
        dead.proc.kill()  # the machine goes: supervisor and workers at once
        for pid in pids:
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        dead.proc.wait(5)
        took = wait_for(
            lambda: any(
                survivor.health(s)["feeds"]["cluster"]["feeds"] == "here" for s in c.sources
            ),
            10,
            "a takeover",
        )
        assert took < 1.5 * 4 / 3 + 3  # the lease's TTL plus one retry period, and margin
        # The new owner's feed moves the book every worker serves.
        before = {s: survivor.get(PRICE, s)[2] for s in c.sources}
        wait_for(
            lambda: all(survivor.get(PRICE, s)[2] != before[s] for s in c.sources),
            SPREAD_S,
            "ticks from the new owner",
        )


def test_redis_stopped_then_killed_and_restarted_mid_load() -> None:
    with redis_server() as r, ExitStack() as stack:
        c = cluster(stack, r, "--tick-rate", "20", "--weight-limit", "100000")
        pids = {(n.rest_port, s): n.health(s)["worker"]["pid"] for n, s in c.endpoints()}
        stop = threading.Event()
        worst = [0.0]
        failures: list[str] = []

        def load() -> None:
            i = 0
            while not stop.is_set():
                n, source = list(c.endpoints())[i % 4]
                i += 1
                t = time.monotonic()
                try:
                    status, _, _ = n.get(PRICE, source, {"X-Forwarded-For": "198.51.100.20"})
                    if status != 200:
                        failures.append(f"status {status}")
                except OSError as exc:
                    failures.append(repr(exc))
                worst[0] = max(worst[0], time.monotonic() - t)

        loader = threading.Thread(target=load, daemon=True)
        loader.start()
        time.sleep(0.5)
        r.signal(signal.SIGSTOP)
        wait_for(
            lambda: all(n.health(s)["status"] == "degraded" for n, s in c.endpoints()),
            SPREAD_S,
            "degraded health while Redis is stopped",
        )
        doc = c.nodes[0].health(c.sources[0])
        assert doc["feeds"]["cluster"]["redis"] == "unreachable"
        assert doc["symbols"] > 0  # the last book is served
        time.sleep(1.0)
        # The outage's weight, from an IP that only talks during it, on one worker.
        n0, s0 = c.nodes[0], c.sources[0]
        for _ in range(7):
            assert n0.get(PRICE, s0, {"X-Forwarded-For": "198.51.100.21"})[0] == 200
        minute = time.time() // 60
        r.kill()
        time.sleep(0.5)
        r.start()
        wait_for(
            lambda: all(n.health(s)["status"] == "ok" for n, s in c.endpoints()),
            SPREAD_S * 2,
            "healthy again after the restart",
        )
        stop.set()
        loader.join(10)
        assert failures == []
        assert worst[0] < 2.0  # nothing hung: a Redis call gives up after 50 ms
        fresh = redis.Redis.from_url(r.url)
        wait_for(lambda: fresh.hlen("tickerd:book") > 50, SPREAD_S, "the book republished")
        if time.time() // 60 == minute:  # the outage's minute is still the current one
            keys = fresh.keys("tickerd:w:198.51.100.21:*")
            assert sum(int(fresh.get(k) or 0) for k in keys) == 7
        for n, s in c.endpoints():  # no worker crashed or was restarted
            assert n.health(s)["worker"]["pid"] == pids[(n.rest_port, s)]
            assert "died" not in n.text()


def test_a_node_started_without_redis_is_unavailable_until_it_joins() -> None:
    r = RedisServer()  # its port, nothing listening yet
    try:
        with node(_args(r, "--tick-rate", "5")) as n:
            sources = [s[0] for s in sources_for(2)]
            for source in sources:
                # No book yet (the feeds run where the lease is held): 503 for balancers,
                # -1121 for clients, and no crash.
                wait_for(lambda s=source: _status(n, s) == 503, SPREAD_S * 2, "503 first")
                doc = n.health(source)
                assert doc["status"] == "unavailable"
                assert doc["feeds"]["cluster"]["redis"] == "unreachable"
                assert n.get(PRICE, source)[0] == 400
            r.start()
            wait_for(
                lambda: all(n.health(s)["status"] == "ok" for s in sources),
                SPREAD_S * 2,
                "joined once Redis is there",
            )
            fresh = redis.Redis.from_url(r.url)
            assert fresh.get("tickerd:feeds:owner") is not None  # ok needs a price: the feeds run
            assert fresh.hlen("tickerd:book") > 50
            assert all(n.get(PRICE, s)[0] == 200 for s in sources)
    finally:
        r.stop()


def _status(n: Node, source: str) -> int:
    try:
        return n.get("/healthz", source)[0]
    except OSError:
        return 0


@pytest.mark.parametrize(
    ("flags", "status", "line"),
    [
        (["--redis", "nonsense"], 2,
         "tickerd serve: --redis 'nonsense': expected a redis:// or rediss:// URL with a host"),
        (["--redis", "redis://127.0.0.1:1/0", "--feed-lease-ms", "0"], 2,
         "tickerd serve: --feed-lease-ms '0': expected an integer from 300 to 600000 ms"),
        (["--feed-lease-ms", "1500"], 2,
         "tickerd serve: --feed-lease-ms means nothing without --redis"),
        # Well formed, but redis-py refuses an option: still one line, at start-up.
        (["--redis", "redis://127.0.0.1:1/0?socket_timeout=abc"], 1,
         "tickerd: --redis: Invalid value for 'socket_timeout' in connection URL"),
    ],
)  # fmt: skip
def test_bad_cluster_flags_are_one_line(flags: list[str], status: int, line: str) -> None:
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-m", "tickerd", "serve", "--port", "0", "--rest-port", "-1", *flags],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert done.returncode == status
    assert done.stderr.strip().startswith(line) and "\n" not in done.stderr.strip()

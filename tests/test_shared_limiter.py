"""The cluster's leased limiter with an in-memory lease source playing Redis's part
(the Lua scripts' rules; tests/test_cluster_redis.py runs them in a real redis-server)."""

from __future__ import annotations

import contextlib
import random

import pytest

from tickerd.cluster.shared_limiter import SharedLimiter, Unreachable
from tickerd.errors import BinanceError
from tickerd.ratelimit import BANNED, REFUSED, UNBANNED, LimitEvent

MINUTE = 60_000
T0 = 1_700_000_000_000 - 1_700_000_000_000 % MINUTE


class FakeRedis:
    """``scripts.LEASE`` / ``REGISTER`` / ``BAN`` over dicts, with a switch to fail."""

    def __init__(self) -> None:
        self.now = T0 + 1_000
        self.granted: dict[tuple[str, int], int] = {}
        self.bans: dict[str, int] = {}
        self.down = False
        self.calls = 0
        self.grants: list[int] = []

    def _check(self) -> None:
        if self.down:
            raise Unreachable("timeout")

    def lease(self, ip: str, ask: int, limit: int, divisor: int, window_ms: int) -> list[int]:
        self._check()
        self.calls += 1
        start = self.now - self.now % window_ms
        if self.bans.get(ip, 0) > self.now:
            return [0, 0, self.now, start, self.bans[ip] - self.now]
        used = self.granted.get((ip, start), 0)
        left = limit - used
        grant = min(max(ask, left // divisor), left)
        if grant < ask:
            return [0, used, self.now, start, 0]
        self.granted[(ip, start)] = used + grant
        self.grants.append(grant)
        return [grant, used + grant, self.now, start, 0]

    def register(self, ip: str, weight: int, window_ms: int) -> None:
        self._check()
        start = self.now - self.now % window_ms
        self.granted[(ip, start)] = self.granted.get((ip, start), 0) + weight

    def ban(self, ip: str, duration_ms: int) -> None:
        self._check()
        self.bans[ip] = self.now + duration_ms

    def forget(self, ip: str | None) -> None:
        self._check()
        self.granted = {k: v for k, v in self.granted.items() if ip is not None and k[0] != ip}


def workers(redis: FakeRedis, n: int, limit: int, clock: list[float]) -> list[SharedLimiter]:
    return [SharedLimiter(redis, limit, monotonic=lambda: clock[0]) for _ in range(n)]


def test_one_worker_counts_exactly_and_grants_shrink() -> None:
    redis, clock = FakeRedis(), [0.0]
    (w,) = workers(redis, 1, 100, clock)
    counts = [w.charge("1.1.1.1", 1, T0 + 1_000) for _ in range(100)]
    assert counts == list(range(1, 101))
    assert redis.grants == sorted(redis.grants, reverse=True) and redis.grants[0] == 12
    assert sum(redis.grants) == 100
    with pytest.raises(BinanceError) as refused:
        w.charge("1.1.1.1", 1, T0 + 1_000)
    assert refused.value.status == 429 and refused.value.used_weight == 101
    calls = redis.calls
    with pytest.raises(BinanceError):
        w.charge("1.1.1.1", 1, T0 + 1_000)
    assert redis.calls == calls  # a spent minute is decided locally


@pytest.mark.parametrize("seed", range(20))
def test_never_past_the_limit_however_requests_spread(seed: int) -> None:
    rng = random.Random(seed)
    redis, clock = FakeRedis(), [0.0]
    ws = workers(redis, 4, 240, clock)
    admitted = 0
    for _ in range(400):
        try:
            rng.choice(ws).charge("2.2.2.2", rng.choice((1, 2, 5)), T0 + 1_000)
            admitted += 1
        except BinanceError:
            pass
    assert sum(redis.granted.values()) <= 240
    assert admitted > 0


def test_a_lease_ends_with_its_minute() -> None:
    redis, clock = FakeRedis(), [0.0]
    (w,) = workers(redis, 1, 10, clock)
    for _ in range(10):
        w.charge("3.3.3.3", 1, T0 + 1_000)
    clock[0] = 59.0  # the minute (59 s of it left at the lease) is over
    redis.now = T0 + MINUTE + 5
    assert w.charge("3.3.3.3", 1, T0 + MINUTE + 5) == 1


def test_an_outage_goes_local_and_recovery_registers_the_weight() -> None:
    redis, clock = FakeRedis(), [0.0]
    outages: list[bool] = []
    w = SharedLimiter(redis, 10, monotonic=lambda: clock[0], on_outage=lambda: outages.append(True))
    w.charge("4.4.4.4", 1, T0 + 1_000)
    redis.down = True
    w.charge("5.5.5.5", 3, T0 + 1_000)  # a new IP needs Redis: it goes local
    assert w.down and outages == [True]
    assert [w.charge("5.5.5.5", 3, T0 + 1_000) for _ in range(2)] == [6, 9]
    with pytest.raises(BinanceError):
        w.charge("5.5.5.5", 3, T0 + 1_000)  # local windows still limit
    with pytest.raises(Unreachable):
        w.recovered(T0 + 2_000)
    redis.down = False
    assert w.recovered(T0 + 2_000) == 1
    assert redis.granted[("5.5.5.5", T0)] == 9  # admitted during the outage, refused not
    assert not w.down


def test_bans_are_announced_and_leases_see_them() -> None:
    redis, clock = FakeRedis(), [0.0]
    a, b = workers(redis, 2, 100, clock)
    until = a.ban("6.6.6.6", T0 + 1_000, 60_000)
    assert redis.bans["6.6.6.6"] == T0 + 1_000 + 60_000 == until
    with pytest.raises(BinanceError) as banned:
        b.charge("6.6.6.6", 1, T0 + 1_000)  # b never heard the announcement: the lease says
    assert banned.value.status == 418
    b.remote_ban("7.7.7.7", 5_000, T0 + 1_000)
    with pytest.raises(BinanceError):
        b.charge("7.7.7.7", 1, T0 + 2_000)
    assert b.charge("7.7.7.7", 1, T0 + 7_000) == 1


def test_refusals_past_the_grace_ban_cluster_wide() -> None:
    redis, clock = FakeRedis(), [0.0]
    (w,) = workers(redis, 1, 5, clock)
    statuses = []
    for _ in range(5 + w.ban_grace + 3):
        try:
            w.charge("8.8.8.8", 1, T0 + 1_000)
            statuses.append(200)
        except BinanceError as err:
            statuses.append(err.status)
    assert statuses[:5] == [200] * 5 and statuses[5] == 429 and statuses[-1] == 418
    assert "8.8.8.8" in redis.bans


def test_the_listener_hears_a_first_429_a_ban_and_its_end_from_the_lease_path() -> None:
    redis, clock = FakeRedis(), [0.0]
    events: list[LimitEvent] = []
    w = SharedLimiter(redis, 5, monotonic=lambda: clock[0], listener=events.append)
    for _ in range(5 + w.ban_grace + 2):
        with contextlib.suppress(BinanceError):
            w.charge("9.9.9.9", 1, T0 + 1_000)
    assert [e.kind for e in events] == [REFUSED, BANNED]  # one 429 line per minute, one ban
    refused, banned = events
    assert (refused.key, refused.used, refused.limit, refused.until_ms) == (
        "9.9.9.9", 6, 5, T0 + MINUTE
    )  # fmt: skip
    assert banned.until_ms == redis.bans["9.9.9.9"] and banned.bans == 1
    # The ban ends; the client comes back in a later minute: one "unbanned", then served.
    clock[0] = 3 * MINUTE / 1000 + 1
    redis.now = banned.until_ms + 1
    assert w.charge("9.9.9.9", 1, banned.until_ms + 1) == 1
    assert [e.kind for e in events] == [REFUSED, BANNED, UNBANNED]
    assert events[-1].until_ms == banned.until_ms


def test_weight_charged_counts_leased_local_and_refused_weight_not_banned() -> None:
    # The ops metric tickerd_request_weight_total reads weight_charged(): leases and
    # outages both count, a refused request counts (as the base limiter's), a banned one not.
    redis, clock = FakeRedis(), [0.0]
    w = SharedLimiter(redis, 10, monotonic=lambda: clock[0], ban_grace=1)
    for _ in range(4):
        w.charge("5.5.5.5", 2, T0 + 1_000)
    assert w.weight_charged() == 8
    redis.down = True
    w.charge("6.6.6.6", 3, T0 + 1_000)  # local, during the outage
    assert w.weight_charged() == 11
    redis.down = False
    w.recovered(T0 + 1_000)
    w.charge("5.5.5.5", 2, T0 + 1_000)  # the last 2 of the 10
    refusals = 0
    while True:
        try:
            w.charge("5.5.5.5", 2, T0 + 1_000)
        except BinanceError as exc:
            if exc.status == 418:
                break
            refusals += 1
    assert refusals == 2
    banned_total = w.weight_charged()
    assert banned_total == 11 + 2 + 2 * 3  # two 429s and the request that earned the ban
    with pytest.raises(BinanceError):
        w.charge("5.5.5.5", 2, T0 + 1_000)
    assert w.weight_charged() == banned_total

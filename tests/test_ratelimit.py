"""RateLimiter and AttemptCounter, driven with explicit ``now_ms`` (no clock, no sleeping)."""

from __future__ import annotations

import pytest

from helpers_core import BANNED, IP, MINUTE, MINUTE_START, NEXT_MINUTE, NOW, RATE_LIMITED
from tickerd import weights
from tickerd.errors import IPBannedError, RateLimitError
from tickerd.ratelimit import AttemptCounter, ClientUsage, RateLimiter

DAY = 24 * 60 * MINUTE


def rate_limited_msg(limit: int, ip: str = IP) -> str:
    return RATE_LIMITED.format(ip=ip, limit=limit)


def banned_msg(until: int, ip: str = IP) -> str:
    return BANNED.format(ip=ip, until=until)


def provoke_ban(limiter: RateLimiter, key: str, now: int) -> int:
    """Send weight-1 requests at ``now`` until the limiter bans ``key``; return the ban end."""
    for _ in range(limiter.limit + limiter.ban_grace + 2):
        try:
            limiter.charge(key, 1, now)
        except IPBannedError as exc:
            assert exc.retry_after_ms is not None
            return exc.retry_after_ms
        except RateLimitError:
            pass
    raise AssertionError("no ban")


# -- settings ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        {"limit": 0},
        {"limit": -1},
        {"window_ms": 0},
        {"ban_steps_ms": ()},
        {"ban_grace": -1},
        {"max_clients": 0},
    ],
)
def test_invalid_settings(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        RateLimiter(**kwargs)  # type: ignore[arg-type]


def test_defaults_are_binances() -> None:
    limiter = RateLimiter()
    assert limiter.limit == 2400 == weights.REQUEST_WEIGHT_LIMIT
    assert limiter.window_ms == 60_000
    assert limiter.ban_steps_ms[0] == 2 * MINUTE  # "from 2 minutes ..."
    assert limiter.ban_steps_ms[-1] == 3 * DAY  # "... to 3 days"
    assert list(limiter.ban_steps_ms) == sorted(limiter.ban_steps_ms)


# -- counting ----------------------------------------------------------------------------


def test_exact_running_totals() -> None:
    limiter = RateLimiter(100)
    assert [limiter.charge(IP, w, NOW) for w in (1, 2, 3, 1, 5)] == [1, 3, 6, 7, 12]
    assert limiter.used(IP, NOW) == 12
    assert limiter.used("other", NOW) == 0


def test_exactly_at_the_limit_is_allowed() -> None:
    limiter = RateLimiter(10)
    assert limiter.charge(IP, 8, NOW) == 8
    assert limiter.charge(IP, 2, NOW) == 10


def test_windows_are_aligned_to_the_clock_minute() -> None:
    limiter = RateLimiter(100)
    assert limiter.charge(IP, 1, MINUTE_START - 1) == 1  # last ms of the previous minute
    assert limiter.charge(IP, 1, MINUTE_START) == 1
    assert limiter.charge(IP, 1, NEXT_MINUTE - 1) == 2
    assert limiter.used(IP, NEXT_MINUTE - 1) == 2
    assert limiter.used(IP, NEXT_MINUTE) == 0
    assert limiter.charge(IP, 1, NEXT_MINUTE) == 1
    # Not a sliding 60 s: a request one second after the next boundary starts afresh.
    assert limiter.charge(IP, 3, NEXT_MINUTE + MINUTE - 1_000) == 4
    assert limiter.charge(IP, 1, NEXT_MINUTE + MINUTE + 1_000) == 1


def test_custom_window() -> None:
    limiter = RateLimiter(100, window_ms=10_000)
    assert limiter.charge(IP, 1, 1_000_000) == 1
    assert limiter.charge(IP, 1, 1_009_999) == 2
    assert limiter.charge(IP, 1, 1_010_000) == 1


def test_clients_are_independent() -> None:
    limiter = RateLimiter(100)
    assert limiter.charge("a", 5, NOW) == 5
    assert limiter.charge("b", 1, NOW) == 1
    assert limiter.charge("a", 1, NOW) == 6


# -- 429 ---------------------------------------------------------------------------------


def test_429_at_the_boundary() -> None:
    limiter = RateLimiter(10)
    assert limiter.charge(IP, 10, NOW) == 10
    with pytest.raises(RateLimitError) as info:
        limiter.charge(IP, 1, NOW)
    exc = info.value
    assert type(exc) is RateLimitError  # not the 418 subclass
    assert (exc.status, exc.code, exc.msg) == (429, -1003, rate_limited_msg(10))
    assert exc.retry_after_ms == NEXT_MINUTE
    assert exc.server_time_ms == NOW
    assert exc.used_weight == 11
    assert exc.to_wire() == {
        "code": -1003,
        "msg": rate_limited_msg(10),
        "data": {"serverTime": NOW, "retryAfter": NEXT_MINUTE},
    }
    # The refused request counted.
    assert limiter.used(IP, NOW) == 11


def test_one_heavy_request_over_the_limit_is_refused() -> None:
    limiter = RateLimiter(10)
    with pytest.raises(RateLimitError) as info:
        limiter.charge(IP, 11, NOW)
    assert info.value.used_weight == 11


def test_429_ends_with_the_minute() -> None:
    limiter = RateLimiter(1)
    limiter.charge(IP, 1, NOW)
    with pytest.raises(RateLimitError):
        limiter.charge(IP, 1, NEXT_MINUTE - 1)
    assert limiter.charge(IP, 1, NEXT_MINUTE) == 1


def test_429_message_names_the_client_and_limit() -> None:
    limiter = RateLimiter(2400)
    limiter.charge("2001:db8::1", 2400, NOW)
    with pytest.raises(RateLimitError) as info:
        limiter.charge("2001:db8::1", 1, NOW)
    assert info.value.msg == rate_limited_msg(2400, "2001:db8::1")


# -- grace, 418, bans --------------------------------------------------------------------


def test_grace_then_418() -> None:
    limiter = RateLimiter(10, ban_grace=3)
    limiter.charge(IP, 10, NOW)
    # First refusal plus ``ban_grace`` further refusals are 429s ...
    for used in range(11, 15):
        with pytest.raises(RateLimitError) as info:
            limiter.charge(IP, 1, NOW)
        assert type(info.value) is RateLimitError
        assert info.value.used_weight == used
    # ... the next one is banned.
    with pytest.raises(IPBannedError) as banned:
        limiter.charge(IP, 1, NOW)
    exc = banned.value
    until = NOW + 2 * MINUTE
    assert (exc.status, exc.code, exc.msg) == (418, -1003, banned_msg(until))
    assert exc.retry_after_ms == until
    assert exc.server_time_ms == NOW
    assert exc.used_weight == 15
    assert isinstance(exc, RateLimitError)


def test_default_grace_is_ten_further_requests() -> None:
    limiter = RateLimiter(5)
    limiter.charge(IP, 5, NOW)
    refused = 0
    while True:
        try:
            limiter.charge(IP, 1, NOW)
        except IPBannedError:
            break
        except RateLimitError:
            refused += 1
    assert refused == 1 + weights.BAN_GRACE_REQUESTS == 11


def test_grace_zero_bans_on_the_second_refusal() -> None:
    limiter = RateLimiter(1, ban_grace=0)
    limiter.charge(IP, 1, NOW)
    with pytest.raises(RateLimitError) as first:
        limiter.charge(IP, 1, NOW)
    assert type(first.value) is RateLimitError
    with pytest.raises(IPBannedError):
        limiter.charge(IP, 1, NOW)


def test_refusals_do_not_carry_over_to_the_next_minute() -> None:
    limiter = RateLimiter(1, ban_grace=1)
    limiter.charge(IP, 1, NOW)
    for _ in range(2):
        with pytest.raises(RateLimitError) as info:
            limiter.charge(IP, 1, NOW)
        assert type(info.value) is RateLimitError
    limiter.charge(IP, 1, NEXT_MINUTE)
    with pytest.raises(RateLimitError) as again:
        limiter.charge(IP, 1, NEXT_MINUTE)
    assert type(again.value) is RateLimitError  # a fresh first refusal, not a ban


def test_banned_requests_cost_nothing_and_the_ban_expires() -> None:
    limiter = RateLimiter(2, ban_grace=0)
    until = provoke_ban(limiter, IP, NOW)
    assert until == NOW + 2 * MINUTE
    used = limiter.used(IP, NOW)
    assert used == 4
    for t in (NOW, NOW + 1, until - 1):
        with pytest.raises(IPBannedError) as info:
            limiter.charge(IP, 100, t)
        assert info.value.retry_after_ms == until
        assert info.value.server_time_ms == t
        assert info.value.msg == banned_msg(until)
        if t < NEXT_MINUTE:
            assert limiter.used(IP, t) == used == info.value.used_weight
        else:
            assert limiter.used(IP, t) == 0 == info.value.used_weight
    assert limiter.charge(IP, 1, until) == 1


@pytest.mark.parametrize("step", range(8))
def test_ban_escalation(step: int) -> None:
    expected = [2, 10, 60, 360, 1440, 4320, 4320, 4320]  # minutes; capped at 3 days
    limiter = RateLimiter(1, ban_grace=0)
    now = NOW
    durations = []
    for _ in range(step + 1):
        until = provoke_ban(limiter, IP, now)
        durations.append((until - now) // MINUTE)
        now = until  # come back the moment the ban ends
    assert durations == expected[: step + 1]
    assert tuple(d * MINUTE for d in expected[:6]) == weights.BAN_STEPS_MS


def test_custom_ban_steps() -> None:
    limiter = RateLimiter(1, ban_grace=0, ban_steps_ms=(1_000, 5_000))
    # The steps are shorter than the window here; each ban starts in a fresh minute.
    first = provoke_ban(limiter, IP, MINUTE_START)
    assert first == MINUTE_START + 1_000
    second = provoke_ban(limiter, IP, NEXT_MINUTE)
    assert second == NEXT_MINUTE + 5_000
    third = provoke_ban(limiter, IP, NEXT_MINUTE + MINUTE)
    assert third == NEXT_MINUTE + MINUTE + 5_000


def test_ban_memory_kept_for_a_day() -> None:
    limiter = RateLimiter(1, ban_grace=0)
    end = provoke_ban(limiter, IP, NOW)
    # Exactly a day after the last ban ended: still remembered, so the next step.
    assert provoke_ban(limiter, IP, end + DAY) == end + DAY + 10 * MINUTE


def test_ban_memory_forgotten_after_a_day() -> None:
    limiter = RateLimiter(1, ban_grace=0)
    end = provoke_ban(limiter, IP, NOW)
    end = provoke_ban(limiter, IP, end)  # 10 minutes
    later = end + weights.BAN_MEMORY_MS + 1
    assert provoke_ban(limiter, IP, later) == later + 2 * MINUTE  # back to the first step


def test_manual_ban() -> None:
    limiter = RateLimiter(100)
    until = limiter.ban(IP, NOW)
    assert until == NOW + 2 * MINUTE
    with pytest.raises(IPBannedError) as info:
        limiter.charge(IP, 1, NOW)
    assert info.value.retry_after_ms == until
    assert info.value.used_weight == 0
    # A manual ban is a step of the escalation.
    assert limiter.ban(IP, until) == until + 10 * MINUTE


def test_manual_ban_with_a_duration() -> None:
    limiter = RateLimiter(100)
    limiter.charge(IP, 7, NOW)
    until = limiter.ban(IP, NOW, 5_000)
    assert until == NOW + 5_000
    with pytest.raises(IPBannedError) as info:
        limiter.charge(IP, 1, NOW + 4_999)
    assert info.value.used_weight == 7
    assert limiter.charge(IP, 1, NOW + 5_000) == 8  # same minute: the count goes on


def test_reset_one_client() -> None:
    limiter = RateLimiter(1, ban_grace=0)
    provoke_ban(limiter, "a", NOW)
    limiter.charge("b", 1, NOW)
    limiter.reset("a")
    assert limiter.charge("a", 1, NOW) == 1  # unbanned, fresh count
    assert limiter.used("b", NOW) == 1  # untouched
    with pytest.raises(RateLimitError):
        limiter.charge("b", 1, NOW)
    # The ban history went too: the next ban is the first step again.
    limiter.reset("a")
    assert provoke_ban(limiter, "a", NOW) == NOW + 2 * MINUTE
    limiter.reset("never-seen")  # no error


def test_reset_everyone() -> None:
    limiter = RateLimiter(1, ban_grace=0)
    provoke_ban(limiter, "a", NOW)
    limiter.charge("b", 1, NOW)
    limiter.reset()
    assert limiter.usage(NOW) == []
    assert limiter.charge("a", 1, NOW) == 1
    assert limiter.charge("b", 1, NOW) == 1


def test_usage() -> None:
    limiter = RateLimiter(5, ban_grace=0)
    limiter.charge("b", 3, NOW)
    until = provoke_ban(limiter, "a", NOW)
    limiter.charge("c", 1, NOW - MINUTE)  # a previous minute
    assert limiter.usage(NOW) == [
        ClientUsage("a", 7, until, 1),
        ClientUsage("b", 3, None, 0),
        ClientUsage("c", 0, None, 0),
    ]
    assert limiter.usage(until) == [
        ClientUsage("a", 0, None, 1),
        ClientUsage("b", 0, None, 0),
        ClientUsage("c", 0, None, 0),
    ]


# -- bounded memory ----------------------------------------------------------------------


def test_client_table_is_bounded() -> None:
    limiter = RateLimiter(10, max_clients=3)
    for i in range(50):
        now = NOW + (i // 7) * MINUTE  # several minutes, several clients each
        limiter.charge(f"10.0.0.{i}", 1, now)
        assert len(limiter.usage(now)) <= 3


def test_table_bound_holds_with_banned_clients() -> None:
    limiter = RateLimiter(1, ban_grace=0, max_clients=3)
    for i in range(10):
        provoke_ban(limiter, f"10.0.0.{i}", NOW)
        limiter.ban(f"10.1.0.{i}", NOW)
        assert len(limiter.usage(NOW)) <= 3


def test_sweep_drops_idle_clients_before_active_ones() -> None:
    limiter = RateLimiter(10, max_clients=3)
    limiter.charge("old-1", 1, NOW)
    limiter.charge("old-2", 1, NOW)
    limiter.charge("active", 4, NEXT_MINUTE)
    limiter.charge("new", 1, NEXT_MINUTE)  # table full: the idle ones go
    assert [u.key for u in limiter.usage(NEXT_MINUTE)] == ["active", "new"]
    assert limiter.charge("active", 1, NEXT_MINUTE) == 5  # its count survived


def test_sweep_keeps_ban_history() -> None:
    limiter = RateLimiter(1, ban_grace=0, max_clients=3)
    provoke_ban(limiter, "offender", NOW)
    limiter.charge("idle", 1, NOW)
    later = NOW + 3 * MINUTE
    limiter.charge("x", 1, later)
    limiter.charge("y", 1, later)  # full: "idle" goes, "offender" stays
    keys = [u.key for u in limiter.usage(later)]
    assert "offender" in keys and "idle" not in keys
    assert provoke_ban(limiter, "offender", later) == later + 10 * MINUTE


def test_sweep_drops_everyone_with_nothing_to_remember() -> None:
    # Clients of a past minute have no weight left to count: all of them make room,
    # however recent that minute was relative to the others.
    limiter = RateLimiter(10, max_clients=3)
    for key in ("a", "b", "c"):
        limiter.charge(key, 1, NOW)
    later = NOW + 5 * MINUTE
    limiter.charge("d", 1, later)
    assert [u.key for u in limiter.usage(later)] == ["d"]


def test_sweep_never_drops_a_banned_client_while_others_can_go() -> None:
    limiter = RateLimiter(1, ban_grace=0, max_clients=3)
    until = provoke_ban(limiter, "offender", NOW)  # then it goes quiet
    during = NEXT_MINUTE + 1  # still banned
    assert during < until
    limiter.charge("p", 1, during)
    limiter.charge("q", 1, during)
    limiter.charge("r", 1, during)  # full of current clients: one of them must go
    assert len(limiter.usage(during)) <= 3
    with pytest.raises(IPBannedError) as info:
        limiter.charge("offender", 1, during)
    assert info.value.retry_after_ms == until


def test_sweep_makes_room_in_batches() -> None:
    # A flood of new keys in one minute must not cost a full sweep per key: an overflow
    # frees an eighth of the table at once.
    limiter = RateLimiter(10, max_clients=16)
    for i in range(16):
        limiter.charge(f"k{i}", 1, NOW)
    limiter.charge("new", 1, NOW)
    assert len(limiter.usage(NOW)) == 16 - 2 + 1


# -- AttemptCounter ----------------------------------------------------------------------


@pytest.mark.parametrize("args", [(-1, 1_000), (1, 0), (1, 1_000, 0)])
def test_attempt_counter_invalid_settings(args: tuple[int, ...]) -> None:
    with pytest.raises(ValueError):
        AttemptCounter(*args)


def test_attempt_counter_limit() -> None:
    counter = AttemptCounter(3, weights.CONNECT_WINDOW_MS)
    start = 1_700_000_100_000  # a multiple of 5 minutes
    assert start % weights.CONNECT_WINDOW_MS == 0
    assert [counter.allow(IP, start + i) for i in range(5)] == [True, True, True, False, False]
    assert counter.allow("other", start) is True
    # Same window until its last millisecond, then a fresh one.
    assert counter.allow(IP, start + weights.CONNECT_WINDOW_MS - 1) is False
    assert counter.allow(IP, start + weights.CONNECT_WINDOW_MS) is True


def test_attempt_counter_default_is_300_per_5_minutes() -> None:
    assert (weights.CONNECT_LIMIT, weights.CONNECT_WINDOW_MS) == (300, 5 * MINUTE)
    counter = AttemptCounter(weights.CONNECT_LIMIT, weights.CONNECT_WINDOW_MS)
    assert all(counter.allow(IP, NOW) for _ in range(300))
    assert counter.allow(IP, NOW) is False


def test_attempt_counter_zero_is_unlimited() -> None:
    counter = AttemptCounter(0, 1_000, max_keys=1)
    assert all(counter.allow(f"k{i % 7}", NOW) for i in range(1_000))
    assert counter._windows == {}  # nothing remembered at all


def test_attempt_counter_keys_are_bounded() -> None:
    counter = AttemptCounter(2, 1_000, max_keys=3)
    for i in range(40):
        counter.allow(f"k{i}", 5_000 + (i // 5) * 1_000)
        assert len(counter._windows) <= 3  # the bound under test is internal
    # A key of a past window is swept out to make room in a new one.
    counter2 = AttemptCounter(2, 1_000, max_keys=2)
    assert counter2.allow("a", 5_000) and counter2.allow("b", 5_000)
    assert counter2.allow("c", 6_000) is True
    assert set(counter2._windows) == {"c"}
    # Known keys keep counting normally.
    assert counter2.allow("c", 6_000) is True
    assert counter2.allow("c", 6_000) is False


def test_attempt_counter_full_table_does_not_lock_newcomers_out() -> None:
    # A flood of distinct addresses fills the table within one window; a newcomer must still
    # get its own allowance, not a refusal meant for clients over their limit.
    counter = AttemptCounter(3, weights.CONNECT_WINDOW_MS, max_keys=16)
    for i in range(16):
        assert counter.allow(f"flood-{i}", NOW)
    assert [counter.allow("newcomer", NOW) for _ in range(4)] == [True, True, True, False]
    assert len(counter._windows) <= 16


def test_attempt_counter_keeps_the_busiest_keys_when_full() -> None:
    counter = AttemptCounter(3, weights.CONNECT_WINDOW_MS, max_keys=8)
    for _ in range(4):
        counter.allow("abuser", NOW)  # over its limit
    for i in range(7):
        counter.allow(f"once-{i}", NOW)
    for i in range(20):
        counter.allow(f"new-{i}", NOW)
        assert len(counter._windows) <= 8
    assert counter.allow("abuser", NOW) is False  # still remembered, still refused

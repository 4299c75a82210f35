"""Who was refused: the limiter's events and the WARNING lines a server logs for them.

The limiter part is pure (events from ``charge`` and ``ban`` with a given ``now_ms``); the
server part drives a real ``tickerd serve`` process over WebSocket until 429 and 418 and
reads its log, and an in-process server with a manual clock past the end of a ban.
"""

from __future__ import annotations

import json
import logging
import re
from datetime import UTC, datetime

import pytest

from tickerd.errors import BANNED_MSG, IPBannedError, RateLimitError
from tickerd.limit_log import LimitLog
from tickerd.ratelimit import BANNED, REFUSED, UNBANNED, LimitEvent, RateLimiter
from tickerd.testing import TickerdServer
from tickerd.timestamps import iso_time
from tickerd.weights import BAN_GRACE_REQUESTS, BAN_STEPS_MS, MINUTE_MS

T0 = 1_700_000_000_000 - 1_700_000_000_000 % MINUTE_MS  # a window's start
UTC_RE = r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{3}Z \(([0-9]+)\)"


def charge(limiter: RateLimiter, key: str, now_ms: int, weight: int = 1) -> str:
    try:
        limiter.charge(key, weight, now_ms)
    except IPBannedError:
        return "418"
    except RateLimitError:
        return "429"
    return "ok"


def test_the_limiter_tells_each_change_once() -> None:
    events: list[LimitEvent] = []
    limiter = RateLimiter(10, listener=events.append)
    answers = [charge(limiter, "10.0.0.7", T0 + i) for i in range(10 + BAN_GRACE_REQUESTS + 5)]
    assert answers == ["ok"] * 10 + ["429"] * (BAN_GRACE_REQUESTS + 1) + ["418"] * 4
    assert charge(limiter, "10.0.0.8", T0 + 100) == "ok"  # another client is not affected
    refused_at, banned_at = T0 + 10, T0 + 10 + BAN_GRACE_REQUESTS + 1
    assert events == [
        LimitEvent(REFUSED, "10.0.0.7", refused_at, T0 + MINUTE_MS, 11, 10, 0),
        LimitEvent(BANNED, "10.0.0.7", banned_at, banned_at + BAN_STEPS_MS[0], 22, 10, 1),
    ]
    events.clear()
    # Banned requests tell nothing new; the first request after the ban tells its end.
    ban_end = banned_at + BAN_STEPS_MS[0]
    assert charge(limiter, "10.0.0.7", ban_end - 1) == "418"
    assert events == []
    assert charge(limiter, "10.0.0.7", ban_end) == "ok"
    assert events == [LimitEvent(UNBANNED, "10.0.0.7", ban_end, ban_end, 0, 10, 1)]
    assert charge(limiter, "10.0.0.7", ban_end + 1) == "ok"
    assert len(events) == 1
    # A new window's first 429 is told again; a ban by hand is told too.
    events.clear()
    next_window = ban_end - ban_end % MINUTE_MS + MINUTE_MS
    assert [charge(limiter, "10.0.0.7", next_window, 6) for _ in range(3)] == [
        "ok",
        "429",
        "429",
    ]
    until = limiter.ban("10.0.0.9", next_window, 5_000)
    assert [(e.kind, e.key) for e in events] == [(REFUSED, "10.0.0.7"), (BANNED, "10.0.0.9")]
    assert events[-1].until_ms == until == next_window + 5_000


def test_log_lines_name_the_ip_and_the_time_in_utc(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="tickerd.ratelimit")
    sink = LimitLog()
    sink(LimitEvent(REFUSED, "10.0.0.7", T0 + 5, T0 + MINUTE_MS, 2401, 2400, 0))
    sink(LimitEvent(BANNED, "10.0.0.7", T0 + 9, T0 + 9 + 120_000, 2412, 2400, 1))
    sink(LimitEvent(UNBANNED, "10.0.0.7", T0 + 200_000, T0 + 120_009, 1, 2400, 1))
    assert [(r.levelname, r.name) for r in caplog.records] == [("WARNING", "tickerd.ratelimit")] * 3
    end = T0 + MINUTE_MS
    assert caplog.messages == [
        (
            "IP 10.0.0.7 over the weight limit (2401 of 2400 this minute): answered 429 until "
            f"{iso_time(end)} ({end})"
        ),
        f"IP 10.0.0.7 banned (418) until {iso_time(T0 + 120_009)} ({T0 + 120_009}); ban 1 in a row",
        f"IP 10.0.0.7 no longer banned: its ban ended at {iso_time(T0 + 120_009)} ({T0 + 120_009})",
    ]


def test_log_lines_are_bounded_per_minute(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="tickerd.ratelimit")
    sink = LimitLog(max_lines=3)
    for i in range(1000):  # a flood of distinct addresses in one minute
        sink(LimitEvent(REFUSED, f"10.0.{i // 256}.{i % 256}", T0 + i, T0 + MINUTE_MS, 11, 10, 0))
    assert len(caplog.messages) == 3
    sink(LimitEvent(REFUSED, "10.9.9.9", T0 + MINUTE_MS, T0 + 2 * MINUTE_MS, 11, 10, 0))
    assert caplog.messages[3] == (
        f"997 more rate-limit events in the minute from {iso_time(T0)} ({T0}) were not logged"
    )
    assert caplog.messages[4].startswith("IP 10.9.9.9 over the weight limit")
    assert len(caplog.messages) == 5
    with pytest.raises(ValueError):
        LimitLog(max_lines=0)


def test_a_server_logs_who_was_refused_and_banned(server) -> None:  # type: ignore[no-untyped-def]
    # A machine in another zone still logs UTC.
    srv = server(
        "--weight-limit", "10", "--rest-port", "-1", "--tick-rate", "0",
        env={"TZ": "America/New_York"},
    )  # fmt: skip
    request = json.dumps({"id": "1", "method": "ticker.price", "params": {"symbol": "BTCUSDT"}})
    statuses, banned_msg = [], ""
    with srv.connect() as ws:  # handshake: weight 5
        for _ in range(5 + BAN_GRACE_REQUESTS + 1 + 3):
            ws.send(request)
            reply = json.loads(ws.recv(timeout=5))
            statuses.append(reply["status"])
            if reply["status"] == 418:
                banned_msg = reply["error"]["msg"]
    assert statuses == [200] * 5 + [429] * (BAN_GRACE_REQUESTS + 1) + [418] * 3
    refused = srv.wait_log("WARNING tickerd.ratelimit: IP 127.0.0.1 over the weight limit")
    assert re.search(r"\(11 of 10 this minute\): answered 429 until " + UTC_RE + "$", refused)
    banned = srv.wait_log("WARNING tickerd.ratelimit: IP 127.0.0.1 banned (418) until")
    m = re.search(r"until " + UTC_RE + "; ban 1 in a row$", banned)
    assert m, banned
    # The wire message keeps Binance's text byte for byte: epoch ms, no UTC form.
    assert banned_msg == BANNED_MSG.format(ip="127.0.0.1", until=int(m[1]))
    # Each change is logged once, however many requests were refused.
    log = srv.log()
    assert log.count("over the weight limit") == 1 and log.count("banned (418)") == 1
    stamp = re.match(r"([0-9-]{10}T[0-9:]{8}\.[0-9]{3})Z WARNING tickerd\.ratelimit: ", banned)
    assert stamp, banned
    logged = datetime.fromisoformat(stamp[1]).replace(tzinfo=UTC).timestamp()
    assert abs(logged - int(m[1]) / 1000 + BAN_STEPS_MS[0] / 1000) < 3600  # UTC, not UTC-5


@pytest.mark.tickerd(weight_limit=10)
def test_the_end_of_a_ban_is_logged_by_the_served_clock(
    tickerd_server: TickerdServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="tickerd.ratelimit")
    until = tickerd_server.control("limit.ban", ip="127.0.0.1", ms=120_000)["banned_until"]
    tickerd_server.advance(120_000)
    from tickerd import SyncClient

    with SyncClient(tickerd_server.ws_url) as client:
        assert str(client.ticker_price("BTCUSDT").price) == "97000.00"
    assert caplog.messages == [
        f"IP 127.0.0.1 banned (418) until {iso_time(until)} ({until}); ban 1 in a row",
        f"IP 127.0.0.1 no longer banned: its ban ended at {iso_time(until)} ({until})",
    ]

"""Bounds on the time of a tick entering the book, shared by every entry point.

A tick's ``time`` is served to clients as a JSON integer and decides which of two ticks of
a symbol is newer, so one bad time can do lasting harm: a trade stamped a day ahead is
served a day ahead and makes every genuine later trade of that symbol look older, and a
time past int64 cannot be stored in SQLite at all. Every source — the mirror, the push
ingest, the control plane and the store's restore — checks times with
:func:`tick_time_problem` before a tick is made.

The future bound is the service clock plus :data:`FUTURE_SKEW_MS`. Binance's own servers
accept a request timestamp up to 1 s ahead of theirs (``recvWindow`` rules,
https://developers.binance.com/docs/derivatives/usds-margined-futures/general-info); ten
seconds leaves room for an upstream host whose clock runs ahead of ours by NTP error or
network delay, and is still seconds, not days. See docs/DECISIONS.md.
"""

from __future__ import annotations

#: Largest time a tick may carry: the largest signed 64-bit integer (SQLite's INTEGER).
MAX_TICK_TIME_MS = 2**63 - 1
#: How far past the service clock a tick's time may be.
FUTURE_SKEW_MS = 10_000


def tick_time_problem(
    time_ms: object, now_ms: int | None = None, *, skew_ms: int = FUTURE_SKEW_MS
) -> str | None:
    """Why ``time_ms`` cannot be a tick's time, or None when it can.

    ``now_ms`` is the service clock; without it only the type and int64 range are checked
    (replays, whose clock follows the trades themselves).
    """
    if isinstance(time_ms, bool) or not isinstance(time_ms, int) or time_ms < 0:
        return f"time {time_ms!r} is not a non-negative integer of ms"
    if time_ms > MAX_TICK_TIME_MS:
        return f"time {time_ms} is past the largest 64-bit integer"
    if now_ms is not None and time_ms > now_ms + skew_ms:
        return (
            f"time {time_ms} is {time_ms - now_ms} ms ahead of the service clock "
            f"(at most {skew_ms} ms)"
        )
    return None

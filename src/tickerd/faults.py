"""The fault model of the control plane: whom a fault aims at and what it does, as values.

Nothing here touches a connection, a socket or a loop: ``transport/faults.py`` applies these
faults to live connections (:class:`~tickerd.transport.faults.FaultInjector`). A fault is
one of

* :class:`RequestFault`: the next requests are answered 429 or 418 (-1003), built by the
  same functions the rate limiter uses (``errors.rate_limited`` / ``errors.banned``);
* :class:`LatencyFault`: replies wait a fixed or a seeded random delay;
* :class:`PingFault`: client pings go unanswered;

each aimed by a :class:`Target` (all clients, one IP, and/or one connection id). At most
:data:`MAX_FAULTS` are armed at once.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from . import weights
from .errors import BinanceError, banned, rate_limited
from .ratelimit import RateLimiter

MAX_FAULTS = 100  # armed at once


@dataclass(frozen=True, slots=True)
class Target:
    """Who a fault or an action aims at: everyone, one IP, and/or one connection id."""

    ip: str | None = None
    conn: int | None = None

    def covers(self, ip: str, conn_id: int) -> bool:
        """Whether the WebSocket connection ``conn_id`` from ``ip`` is aimed at."""
        return (self.ip is None or ip == self.ip) and (self.conn is None or conn_id == self.conn)

    def covers_ip(self, ip: str) -> bool:
        """Whether a REST request from ``ip`` is aimed at (never by a connection id)."""
        return self.conn is None and (self.ip is None or self.ip == ip)

    def to_state(self) -> dict[str, Any]:
        """The target as the control plane's state shows it."""
        return {"ip": self.ip, "conn": self.conn}


class Fault:
    """An armed fault: its id, what kind, and whom it aims at."""

    kind = "fault"

    def __init__(self, target: Target) -> None:
        self.id = 0  # given when armed
        self.target = target

    def to_state(self) -> dict[str, Any]:
        """The fault as the control plane's state shows it."""
        return {"id": self.id, "kind": self.kind, "target": self.target.to_state()}


class RequestFault(Fault):
    """The next ``remaining`` requests are answered 429 or 418 (-1003) instead of served.

    ``retry_after_ms`` (429) is how long from now ``retryAfter`` lies (default: the start of
    the next rate-limit window, as a real 429); ``ban_ms`` (418) is the ban's length, shown
    in the message's ``banned until`` and in ``retryAfter``. The limiter is not charged or
    changed: the answers are pure fiction, and the client's real budget is untouched.
    """

    def __init__(
        self,
        status: int,
        count: int,
        target: Target,
        *,
        retry_after_ms: int | None = None,
        ban_ms: int = weights.BAN_STEPS_MS[0],
    ) -> None:
        if status not in (418, 429) or count < 1:
            raise ValueError("a request fault is 418 or 429 for at least one request")
        super().__init__(target)
        self.kind = f"http{status}"
        self.status = status
        self.remaining = count
        self.retry_after_ms = retry_after_ms
        self.ban_ms = ban_ms

    def error(self, ip: str, now_ms: int, limiter: RateLimiter) -> BinanceError:
        """The error to answer a request from ``ip`` with, at ``now_ms``."""
        used = limiter.used(ip, now_ms)
        if self.status == 418:
            return banned(ip, now_ms + self.ban_ms, now_ms, used)
        if self.retry_after_ms is None:
            window = limiter.window_ms
            retry = now_ms - now_ms % window + window
        else:
            retry = now_ms + self.retry_after_ms
        return rate_limited(ip, limiter.limit, retry, now_ms, used)

    def to_state(self) -> dict[str, Any]:
        state = super().to_state()
        state["remaining"] = self.remaining
        if self.status == 429:
            state["retry_after_ms"] = self.retry_after_ms
        else:
            state["ban_ms"] = self.ban_ms
        return state


class LatencyFault(Fault):
    """Replies wait ``ms`` milliseconds, or a seeded random ``min_ms``..``max_ms`` each."""

    kind = "latency"

    def __init__(
        self,
        target: Target,
        *,
        ms: int | None = None,
        min_ms: int | None = None,
        max_ms: int | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__(target)
        if ms is not None:
            min_ms = max_ms = ms
        if min_ms is None or max_ms is None or not 0 <= min_ms <= max_ms:
            raise ValueError("latency needs ms, or 0 <= min_ms <= max_ms")
        self.min_ms = min_ms
        self.max_ms = max_ms
        self.seed = seed
        self.rng = random.Random(seed)

    def next_delay_s(self) -> float:
        """The delay of the next reply, in seconds (whole milliseconds)."""
        if self.min_ms == self.max_ms:
            return self.min_ms / 1000
        return self.rng.randint(self.min_ms, self.max_ms) / 1000

    def to_state(self) -> dict[str, Any]:
        state = super().to_state()
        state.update(min_ms=self.min_ms, max_ms=self.max_ms, seed=self.seed)
        return state


class PingFault(Fault):
    """Client pings go unanswered (no pong); everything else is served as usual."""

    kind = "no_pong"


__all__ = ["MAX_FAULTS", "Fault", "LatencyFault", "PingFault", "RequestFault", "Target"]

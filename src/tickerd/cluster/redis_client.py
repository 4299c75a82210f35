"""Redis clients with the cluster's bounds: every call answers or fails within the timeout
(50 ms by default), with no retries, and every failure is one exception type.

This is the only module of the cluster that imports ``redis`` (the ``tickerd[cluster]``
extra); nothing on a single process's path imports it.
"""

from __future__ import annotations

from typing import Any

import redis
import redis.asyncio as aredis
from redis.backoff import NoBackoff
from redis.exceptions import RedisError
from redis.retry import Retry

from .scripts import BAN, LEASE, REGISTER, Keys
from .shared_limiter import Unreachable

TIMEOUT_S = 0.05
#: What counts as "Redis unreachable": its own errors and the socket's.
FAILURES: tuple[type[BaseException], ...] = (RedisError, OSError, TimeoutError)


def _bounds(timeout: float) -> dict[str, Any]:
    return {
        "socket_timeout": timeout,
        "socket_connect_timeout": timeout,
        "retry": Retry(NoBackoff(), 0),
        "retry_on_timeout": False,
        "health_check_interval": 0,
    }


def sync_client(url: str, timeout: float = TIMEOUT_S) -> redis.Redis:
    """A blocking client for the limiter's lease calls (one short round trip each)."""
    return redis.Redis.from_url(url, **_bounds(timeout))


def async_client(url: str, timeout: float | None = TIMEOUT_S) -> aredis.Redis:
    """An asyncio client; ``timeout`` None for the pub/sub reader, which waits for news."""
    if timeout is None:
        return aredis.Redis.from_url(
            url, socket_connect_timeout=TIMEOUT_S, retry=Retry(NoBackoff(), 0)
        )
    return aredis.Redis.from_url(url, **_bounds(timeout))


class RedisLeases:
    """The limiter's :class:`~.shared_limiter.LeaseSource` over a blocking client."""

    def __init__(self, client: redis.Redis, keys: Keys) -> None:
        self.client = client
        self.keys = keys
        self._lease = client.register_script(LEASE)
        self._register = client.register_script(REGISTER)
        self._ban = client.register_script(BAN)

    def lease(self, ip: str, ask: int, limit: int, divisor: int, window_ms: int) -> list[int]:
        """One grant (see ``scripts.LEASE``)."""
        k = self.keys
        try:
            reply = self._lease(
                keys=[k.weight(ip), k.ban(ip)], args=[ask, limit, divisor, window_ms]
            )
        except FAILURES as exc:
            raise Unreachable(str(exc)) from None
        return [int(v) for v in reply]

    def register(self, ip: str, weight: int, window_ms: int) -> None:
        """Add weight admitted during an outage."""
        try:
            self._register(keys=[self.keys.weight(ip)], args=[weight, window_ms])
        except FAILURES as exc:
            raise Unreachable(str(exc)) from None

    def ban(self, ip: str, duration_ms: int) -> None:
        """The ban key with its TTL, announced on the ban channel."""
        k = self.keys
        try:
            self._ban(keys=[k.ban(ip)], args=[max(1, duration_ms), k.ban_channel, ip])
        except FAILURES as exc:
            raise Unreachable(str(exc)) from None

    def forget(self, ip: str | None) -> None:
        """Drop windows and bans of ``ip``, or of everyone (a bounded SCAN)."""
        k = self.keys
        try:
            if ip is not None:
                names = [k.ban(ip), *self.client.scan_iter(match=k.weight(ip) + ":*", count=100)]
            else:
                names = [
                    *self.client.scan_iter(match=k.prefix + "w:*", count=1000),
                    *self.client.scan_iter(match=k.prefix + "ban:*", count=1000),
                ]
            for i in range(0, len(names), 500):
                self.client.delete(*names[i : i + 500])
        except FAILURES as exc:
            raise Unreachable(str(exc)) from None

"""The cluster's rate limiter: one REQUEST_WEIGHT budget per IP across every worker of
every node, decided locally.

Theory of operation
-------------------
Redis holds, per IP and minute (the minute of Redis ``TIME``), the weight *granted* to
workers. A worker never admits weight it was not granted: it takes a lease by one Lua call
(``scripts.LEASE``), spends it locally, and asks again only when the lease runs dry. Grants
shrink as the minute fills (``(limit - granted) / divisor``, at least the request's
weight), so late in the minute no worker sits on much. When a request's weight no longer
fits, the minute is spent: that worker answers 429 locally, without Redis, until the
minute ends. So while Redis is reachable the weight admitted per IP per minute never
exceeds the limit, cluster-wide.

A lease lives until its minute ends by the worker's monotonic clock, measured from before
the call: a lease can only end early, never be spent in the next minute.

``rateLimits.count`` is the weight granted cluster-wide at this worker's last lease, minus
what this worker has not spent yet, plus what it refused this minute. For an IP on one
worker (the reuseport pin, or one connection) that is exact. For an IP spread over workers
it leaves out what others admitted since this worker's last lease and counts what they hold
unspent; both are bounded by the others' outstanding leases.

The first 429 of a lease's minute, a ban made here and a ban's end go to the
``listener`` as :class:`~tickerd.ratelimit.LimitEvent` (as the base limiter's do); a ban
another worker made is its to report.

Bans are cluster-wide: :meth:`ban` sets a Redis key with the ban's TTL and announces it
(``BanSink``); a lease call for a banned IP returns the ban's remaining time.

When Redis cannot be reached (every call has a 50 ms timeout) the limiter decides with its
local windows (the base :class:`RateLimiter`) and remembers what it admitted; once Redis
is back, :meth:`recovered` adds that weight to the current minute and drops every lease.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol

from .. import weights
from ..errors import rate_limited
from ..ratelimit import REFUSED, UNBANNED, ClientUsage, LimitEvent, RateLimiter

GRANT_DIVISOR = 8
MAX_LEASES = 100_000


class Unreachable(Exception):
    """Redis did not answer in time (or refused the connection)."""


class LeaseSource(Protocol):
    """Where grants come from (Redis; a dict in unit tests)."""

    def lease(self, ip: str, ask: int, limit: int, divisor: int, window_ms: int) -> list[int]:
        """``[grant, granted_total, now_ms, window_start, ban_pttl]`` or raise Unreachable."""
        ...

    def register(self, ip: str, weight: int, window_ms: int) -> None:
        """Add weight admitted during an outage to the current window."""
        ...

    def ban(self, ip: str, duration_ms: int) -> None:
        """Set the ban key and announce it."""
        ...

    def forget(self, ip: str | None) -> None:
        """Drop the IP's (or everyone's) windows and bans."""
        ...


class Lease:
    """Weight one worker may still admit for one IP in one minute."""

    __slots__ = ("base", "deadline", "ends_ms", "left", "refusals", "refused", "spent_out")

    def __init__(self, deadline: float, ends_ms: int) -> None:
        self.deadline = deadline  # monotonic seconds: the lease's minute is over then
        self.ends_ms = ends_ms  # the same instant on the service clock (for retryAfter)
        self.left = 0
        self.base = 0  # granted cluster-wide after the last lease
        self.refused = 0
        self.refusals = 0
        self.spent_out = False


class SharedLimiter(RateLimiter):
    """A :class:`RateLimiter` whose budgets are leased from Redis (see the module)."""

    def __init__(
        self,
        source: LeaseSource,
        limit: int = weights.REQUEST_WEIGHT_LIMIT,
        *,
        on_outage: Callable[[], None] | None = None,
        listener: Callable[[LimitEvent], None] | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        divisor: int = GRANT_DIVISOR,
        window_ms: int = weights.MINUTE_MS,
        ban_grace: int = weights.BAN_GRACE_REQUESTS,
    ) -> None:
        super().__init__(limit, listener=listener, window_ms=window_ms, ban_grace=ban_grace)
        self.source = source
        self.on_outage = on_outage
        self.monotonic = monotonic
        self.divisor = divisor
        self.down = False
        self.lease_calls = 0
        self.weight_leased = 0  # ops: every weight charged here (see weight_charged)
        self._leases: dict[str, Lease] = {}
        self._outage: dict[str, list[int]] = {}  # ip → [local window start, weight admitted]

    # -- the hot path ----------------------------------------------------------------------

    def charge(self, key: str, weight: int, now_ms: int) -> int:
        """Charge ``weight`` (see :meth:`RateLimiter.charge`), from this worker's lease."""
        if self.down:
            return self._charge_local(key, weight, now_ms)
        c = self._clients.get(key)
        if c is not None and c.ban_until:
            if c.ban_until > now_ms:
                raise self._banned(key, c, now_ms)
            self._tell(UNBANNED, key, c, now_ms)
            c.ban_until = 0
        lease = self._leases.get(key)
        if lease is None or self.monotonic() >= lease.deadline:
            lease = self._renew(key, weight, now_ms, None)
            if lease is None:
                return self._charge_local(key, weight, now_ms)
        if lease.left < weight and not lease.spent_out:
            if self._renew(key, weight, now_ms, lease) is None:
                return self._charge_local(key, weight, now_ms)
            c = self._clients.get(key)
            if c is not None and c.ban_until > now_ms:
                raise self._banned(key, c, now_ms)
        self.weight_leased += weight  # ops: admitted or refused, as the base limiter counts
        if lease.left >= weight:
            lease.left -= weight
            return lease.base - lease.left + lease.refused
        lease.refused += weight
        lease.refusals += 1
        count = lease.base - lease.left + lease.refused
        if lease.refusals > self.ban_grace + 1:
            self.ban(key, now_ms)
            c = self._clients[key]
            c.used = count
            raise self._banned(key, c, now_ms)
        if lease.refusals == 1 and self.listener is not None:
            c = self._clients.get(key)
            bans = c.bans if c is not None else 0
            event = LimitEvent(REFUSED, key, now_ms, lease.ends_ms, count, self.limit, bans)
            self.listener(event)
        raise rate_limited(key, self.limit, lease.ends_ms, now_ms, count)

    def _renew(self, key: str, weight: int, now_ms: int, lease: Lease | None) -> Lease | None:
        """Ask Redis for weight; None when it cannot be reached (the limiter goes local)."""
        before = self.monotonic()
        try:
            grant, total, redis_now, start, ban_ms = self.source.lease(
                key, weight, self.limit, self.divisor, self.window_ms
            )
        except Unreachable:
            self._went_down()
            return None
        self.lease_calls += 1
        remaining = start + self.window_ms - redis_now
        if lease is None:
            if len(self._leases) >= MAX_LEASES:
                self._drop_expired(before)
            lease = self._leases[key] = Lease(before + remaining / 1000, now_ms + remaining)
        if ban_ms > 0:
            self.remote_ban(key, ban_ms, now_ms)
            return lease
        if grant == 0:
            lease.spent_out = True
            lease.base = total
            return lease
        lease.left += grant
        lease.base = total
        return lease

    def _drop_expired(self, mono: float) -> None:
        expired = [k for k, v in self._leases.items() if v.deadline <= mono]
        for k in expired or list(self._leases)[: MAX_LEASES // 8]:
            del self._leases[k]

    # -- outage ----------------------------------------------------------------------------

    def _went_down(self) -> None:
        if not self.down:
            self.down = True
            if self.on_outage is not None:
                self.on_outage()

    def _charge_local(self, key: str, weight: int, now_ms: int) -> int:
        c = self._clients.get(key)
        if c is None or c.ban_until <= now_ms:  # ops: what the base limiter counts
            self.weight_leased += weight
        count = super().charge(key, weight, now_ms)  # raises when refused: nothing admitted
        start = now_ms - now_ms % self.window_ms
        entry = self._outage.get(key)
        if entry is None or entry[0] != start:
            if entry is None and len(self._outage) >= MAX_LEASES:
                self._outage.clear()
            entry = self._outage[key] = [start, 0]
        entry[1] += weight
        return count

    def recovered(self, now_ms: int) -> int:
        """Redis is back: add the weight admitted meanwhile (this minute's) to Redis and
        lease afresh. Returns how many IPs were registered; raises Unreachable if Redis
        went away again (the limiter stays local)."""
        start = now_ms - now_ms % self.window_ms
        pending = {k: v[1] for k, v in self._outage.items() if v[0] == start and v[1]}
        for ip, weight in pending.items():
            self.source.register(ip, weight, self.window_ms)
            del self._outage[ip]
        self._outage.clear()
        self._leases.clear()
        self.down = False
        return len(pending)

    # -- bans, resets, views ---------------------------------------------------------------

    def ban(self, key: str, now_ms: int, duration_ms: int | None = None) -> int:
        """Ban ``key`` on every node: locally now, then the Redis key and the announcement."""
        until = super().ban(key, now_ms, duration_ms)
        if not self.down:
            try:
                self.source.ban(key, until - now_ms)
            except Unreachable:
                self._went_down()
        return until

    def remote_ban(self, key: str, duration_ms: int, now_ms: int) -> None:
        """Apply a ban another worker announced (or Redis reported): ``duration_ms`` more."""
        c = self._clients.get(key) or self._new_client(key, now_ms)
        if now_ms + duration_ms > c.ban_until:
            c.ban_until = now_ms + duration_ms
            c.last_ban_end = c.ban_until

    def reset(self, key: str | None = None) -> None:
        """Forget local usage, leases and bans of one client or everyone (this worker)."""
        super().reset(key)
        if key is None:
            self._leases.clear()
            self._outage.clear()
        else:
            self._leases.pop(key, None)
            self._outage.pop(key, None)

    def reset_shared(self, key: str | None = None) -> None:
        """Forget them in Redis too (the node an operator asked)."""
        self.reset(key)
        try:
            self.source.forget(key)
        except Unreachable:
            self._went_down()

    def used(self, key: str, now_ms: int) -> int:
        """This worker's view of ``key``'s weight this minute (see the module on count)."""
        if self.down:
            return super().used(key, now_ms)
        lease = self._leases.get(key)
        if lease is None or self.monotonic() >= lease.deadline:
            return 0
        return lease.base - lease.left + lease.refused

    def weight_charged(self) -> int:
        """All weight this worker charged (refused requests' too, banned ones' not), from its
        leases and locally during outages; counted as charged, since a banned client's
        window holds the cluster's count, not this worker's."""
        return self.weight_leased

    def usage(self, now_ms: int) -> list[ClientUsage]:
        """Every client known here (with a lease, a window or a ban)."""
        for key in self._leases:
            if key not in self._clients:
                self._new_client(key, now_ms)
        return super().usage(now_ms)

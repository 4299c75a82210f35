"""Per-IP request-weight limiting, 429 then 418 escalation, as Binance does it.

Theory of operation
-------------------
Every request costs weight (``weights.py``). Each client key (an IP address) has one
fixed window aligned to the clock minute, as Binance's ``REQUEST_WEIGHT`` / ``MINUTE`` /
``intervalNum 1`` limit is. A request is charged before it is answered; the running total
of the window, this request included, is what the reply's ``rateLimits[].count`` shows.

* total ≤ limit: allowed.
* total > limit: refused with 429 / -1003. The refused request still counts (Binance's
  used-weight keeps rising past the limit). ``retryAfter`` is the start of the next window.
* a client that keeps sending after its first 429 of a window — more than
  ``ban_grace`` further refused requests — is banned: 418 / -1003 until ``ban_until``.
  Consecutive bans lengthen along ``ban_steps_ms`` (2 minutes … 3 days); a day without a
  ban forgets the history.
* while banned every request gets the 418 answer and costs nothing.

The limiter is pure: callers pass ``now_ms``; nothing here reads a clock or does I/O. The
WebSocket API and the REST surface share one instance, so one budget covers both. What an
operator may want to hear of — a client's first 429 in a window, a ban, the end of a ban
(seen when the client next comes back) — goes to an optional ``listener`` as a
:class:`LimitEvent`; what to do with it (``limit_log.py`` logs it) is the caller's.
Memory is bounded: once the table holds ``max_clients`` keys, a new key first sweeps out
every client with nothing to remember, then (if still full) a batch of the least worth
keeping, banned clients last.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from mypy_extensions import mypyc_attr

from . import weights
from .errors import IPBannedError, banned, rate_limited


class ClientWindow:
    """One client's state: its current window and its ban history."""

    __slots__ = ("ban_until", "bans", "last_ban_end", "refused", "used", "window_start")

    def __init__(self) -> None:
        self.window_start = -1
        self.used = 0
        self.refused = 0
        self.ban_until = 0
        self.bans = 0
        self.last_ban_end = 0


@dataclass(frozen=True, slots=True)
class ClientUsage:
    """A read-only view of one client's usage, for status pages and the control plane."""

    key: str
    used: int
    banned_until: int | None
    bans: int


#: :attr:`LimitEvent.kind` values.
REFUSED, BANNED, UNBANNED = "refused", "banned", "unbanned"


@dataclass(frozen=True, slots=True)
class LimitEvent:
    """A change in how one client is served: its first 429 of a window (``refused``,
    ``until_ms`` the window's end), a ban (``banned``, until ``until_ms``; ``bans`` counts
    them in a row) or a ban's end (``unbanned``, ``until_ms`` when it ended)."""

    kind: str
    key: str
    now_ms: int
    until_ms: int
    used: int
    limit: int
    bans: int


@mypyc_attr(allow_interpreted_subclasses=True)  # compiled: the cluster limiter subclasses it
class RateLimiter:
    """Request-weight windows per client key (see the module docstring)."""

    def __init__(
        self,
        limit: int = weights.REQUEST_WEIGHT_LIMIT,
        *,
        window_ms: int = weights.MINUTE_MS,
        ban_steps_ms: tuple[int, ...] = weights.BAN_STEPS_MS,
        ban_grace: int = weights.BAN_GRACE_REQUESTS,
        ban_memory_ms: int = weights.BAN_MEMORY_MS,
        max_clients: int = 100_000,
        listener: Callable[[LimitEvent], None] | None = None,
    ) -> None:
        if limit < 1 or window_ms < 1 or not ban_steps_ms or ban_grace < 0 or max_clients < 1:
            raise ValueError("invalid rate limiter settings")
        self.limit = limit
        self.window_ms = window_ms
        self.ban_steps_ms = ban_steps_ms
        self.ban_grace = ban_grace
        self.ban_memory_ms = ban_memory_ms
        self.max_clients = max_clients
        self.weight_spent = 0  # ops: weight of windows ended or forgotten; see weight_charged
        self.listener = listener
        self._clients: dict[str, ClientWindow] = {}

    def charge(self, key: str, weight: int, now_ms: int) -> int:
        """Charge ``weight`` to ``key`` and return the window's total, this request included.

        Raises :class:`RateLimitError` (429) over the limit and :class:`IPBannedError` (418)
        while banned; both carry ``retry_after_ms`` and the total in ``count``.
        """
        c = self._clients.get(key)
        if c is None:
            c = self._new_client(key, now_ms)
        window_start = now_ms - now_ms % self.window_ms
        if c.window_start != window_start:
            self.weight_spent += c.used  # ops
            c.window_start = window_start
            c.used = 0
            c.refused = 0
        if c.ban_until:
            if c.ban_until > now_ms:
                raise self._banned(key, c, now_ms)
            self._tell(UNBANNED, key, c, now_ms)
            c.ban_until = 0
        used = c.used + weight
        c.used = used
        if used <= self.limit:
            return used
        c.refused += 1
        if c.refused > self.ban_grace + 1:
            self._ban(c, now_ms)
            self._tell(BANNED, key, c, now_ms)
            raise self._banned(key, c, now_ms)
        if c.refused == 1:
            self._tell(REFUSED, key, c, now_ms, window_start + self.window_ms)
        raise rate_limited(key, self.limit, window_start + self.window_ms, now_ms, used)

    def used(self, key: str, now_ms: int) -> int:
        """Weight ``key`` has used in the current window."""
        c = self._clients.get(key)
        if c is None or c.window_start != now_ms - now_ms % self.window_ms:
            return 0
        return c.used

    def ban(self, key: str, now_ms: int, duration_ms: int | None = None) -> int:
        """Ban ``key`` now (next escalation step, or ``duration_ms``); returns the ban's end."""
        c = self._clients.get(key) or self._new_client(key, now_ms)
        self._ban(c, now_ms, duration_ms)
        self._tell(BANNED, key, c, now_ms)
        return c.ban_until

    def reset(self, key: str | None = None) -> None:
        """Forget one client's usage and bans, or everyone's."""
        if key is None:
            self.weight_spent += sum(c.used for c in self._clients.values())  # ops
            self._clients.clear()
        else:
            self.weight_spent += self._clients[key].used if key in self._clients else 0  # ops
            self._clients.pop(key, None)

    def usage(self, now_ms: int) -> list[ClientUsage]:
        """Every known client's usage in the current window, by key."""
        return [
            ClientUsage(
                key,
                self.used(key, now_ms),
                c.ban_until if c.ban_until > now_ms else None,
                c.bans,
            )
            for key, c in sorted(self._clients.items())
        ]

    def weight_charged(self) -> int:
        """All weight ever charged (refused requests' too, banned ones' not): the windows
        that ended or were forgotten, plus every client's current one. Kept off the hot
        path: :meth:`charge` adds nothing; a window's weight is added when it ends."""
        return self.weight_spent + sum(c.used for c in self._clients.values())

    def _ban(self, c: ClientWindow, now_ms: int, duration_ms: int | None = None) -> None:
        if c.bans and now_ms - c.last_ban_end > self.ban_memory_ms:
            c.bans = 0
        if duration_ms is None:
            duration_ms = self.ban_steps_ms[min(c.bans, len(self.ban_steps_ms) - 1)]
        c.bans += 1
        c.ban_until = now_ms + duration_ms
        c.last_ban_end = c.ban_until

    def _tell(
        self, kind: str, key: str, c: ClientWindow, now_ms: int, until_ms: int | None = None
    ) -> None:
        if self.listener is not None:
            until = c.ban_until if until_ms is None else until_ms
            self.listener(LimitEvent(kind, key, now_ms, until, c.used, self.limit, c.bans))

    def _banned(self, key: str, c: ClientWindow, now_ms: int) -> IPBannedError:
        return banned(key, c.ban_until, now_ms, c.used)

    def _new_client(self, key: str, now_ms: int) -> ClientWindow:
        if len(self._clients) >= self.max_clients:
            self._sweep(now_ms)
        c = self._clients[key] = ClientWindow()
        return c

    def _sweep(self, now_ms: int) -> None:
        """Make room for one more client.

        First drop every client with nothing to remember at ``now_ms``: no weight in the
        current window, not banned, no ban within ``ban_memory_ms``. If the table is still
        full, drop a batch (an eighth of it, at least one): clients not banned before banned
        ones, oldest windows first. A batch keeps the cost of the sort amortised when a
        flood of new keys arrives; a banned client is never dropped while others can be.
        """
        clients = self._clients
        window_start = now_ms - now_ms % self.window_ms
        idle = [
            k
            for k, c in clients.items()
            if c.window_start < window_start
            and c.ban_until <= now_ms
            and (c.bans == 0 or now_ms - c.last_ban_end > self.ban_memory_ms)
        ]
        for k in idle:
            self.weight_spent += clients[k].used  # ops
            del clients[k]
        if len(clients) >= self.max_clients:
            batch = max(len(clients) - self.max_clients + 1, self.max_clients // 8)
            order = sorted(
                clients, key=lambda k: (clients[k].ban_until > now_ms, clients[k].window_start)
            )
            for k in order[:batch]:
                self.weight_spent += clients[k].used  # ops
                del clients[k]


class AttemptCounter:
    """Connection attempts per key in fixed windows (Binance: 300 per 5 minutes per IP).

    ``limit`` 0 turns the check off. Memory is bounded: once the table holds ``max_keys``
    entries, a new key sweeps out the past windows and, if the table is still full, a batch
    of the current window's entries with the fewest attempts. A new key is never refused
    only because many other keys were seen: that would lock every newcomer out for the rest
    of the window after a flood of distinct addresses.
    """

    def __init__(self, limit: int, window_ms: int, max_keys: int = 100_000) -> None:
        if limit < 0 or window_ms < 1 or max_keys < 1:
            raise ValueError("invalid attempt counter settings")
        self.limit = limit
        self.window_ms = window_ms
        self.max_keys = max_keys
        self._windows: dict[str, list[int]] = {}

    def allow(self, key: str, now_ms: int) -> bool:
        """Count one attempt by ``key``; False once its window holds more than ``limit``."""
        if self.limit == 0:
            return True
        start = now_ms - now_ms % self.window_ms
        w = self._windows.get(key)
        if w is None or w[0] != start:
            if w is None and len(self._windows) >= self.max_keys:
                self._sweep(start)
            w = self._windows[key] = [start, 0]
        w[1] += 1
        return w[1] <= self.limit

    def retry_after_ms(self, now_ms: int) -> int:
        """When the window that holds ``now_ms`` ends: a refused key may try again then."""
        return now_ms - now_ms % self.window_ms + self.window_ms

    def _sweep(self, start: int) -> None:
        windows = {k: v for k, v in self._windows.items() if v[0] == start}
        if len(windows) >= self.max_keys:
            batch = max(len(windows) - self.max_keys + 1, self.max_keys // 8)
            for k in sorted(windows, key=lambda k: windows[k][1])[:batch]:
                del windows[k]
        self._windows = windows

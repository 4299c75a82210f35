"""The runtime control plane: every operation of :data:`~tickerd.control.ops.OPS` as a
method, over the collaborators it needs and nothing else.

:class:`Control` is handed the price book, the rate limiter, the symbol universe, the
service clock, the fault injector and the feeds (whose optional capabilities, reseeding
and stepping, are typed protocols of :mod:`tickerd.feeds`); it never sees the service or
its settings. Methods must be called on the service's event loop thread.

Binance references for the behaviours reproduced:
https://developers.binance.com/docs/derivatives/usds-margined-futures/websocket-api-general-info
(429/418, the 24-hour limit, pings) and the spot ``web-socket-api.md`` (``serverShutdown``).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

from .. import weights
from ..book import PriceBook, TickRejected
from ..clock import ControlledClock
from ..errors import TickerdError
from ..feeds import FeedRegistry
from ..ratelimit import RateLimiter
from ..symbols import SymbolUniverse
from .errors import ControlError
from .hooks import FaultInjector, LatencyFault, PingFault, RequestFault, Target, connection_rows
from .ops import CLOSE_CODES, CONTRACT_STATUSES, OPS, Result, validate_args
from .scenario import Scenario, ScenarioRunner, parse_scenario

log = logging.getLogger("tickerd.control")

#: Entries listed per table in :meth:`Control.state` (the counts are always exact).
STATE_LIST_LIMIT = 1000


class Control:
    """The control plane of one service (see the module docstring).

    ``weight_limit`` is the limit :meth:`reset` goes back to; ``startup`` a scenario that
    :meth:`start` runs (``--scenario``).
    """

    def __init__(
        self,
        *,
        book: PriceBook,
        limiter: RateLimiter,
        universe: SymbolUniverse,
        clock: ControlledClock,
        faults: FaultInjector,
        feeds: FeedRegistry,
        weight_limit: int,
        startup: Scenario | None = None,
    ) -> None:
        self.book = book
        self.limiter = limiter
        self.universe = universe
        self.clock = clock
        self.faults = faults
        self.feeds = feeds
        self.weight_limit = weight_limit
        self.scenarios = ScenarioRunner(self.apply)
        self._statuses = {s.symbol: s.status for s in universe}
        self._startup = startup
        # Cluster hook: called with (op, args, result) after every operation applied here.
        self.relay: Callable[[str, dict[str, Any], Result], None] | None = None

    # -- lifecycle (called by the service) ---------------------------------------------------

    def start(self) -> None:
        """Start the ``--scenario`` file's run, if any (its 0 ms steps apply right now)."""
        if self._startup is not None:
            self.scenarios.start(self._startup)

    def stop(self) -> None:
        """Stop the running scenario (the service calls this as it stops)."""
        self.scenarios.stop()

    # -- one entry point for HTTP, scenarios and the fixture ------------------------------

    def apply(self, op: str, args: Any = None) -> Result:
        """Run operation ``op`` (a name from :data:`~tickerd.control.ops.OPS`) with JSON
        ``args``. Raises :class:`ControlError` with an HTTP status: 404 unknown operation,
        400 bad arguments, 409 nothing to act on (no replay or synthetic feed running)."""
        kwargs = validate_args(op, args)
        result = OPS[op].run(self, kwargs)
        log.info("control: %s %s", op, json.dumps(kwargs, sort_keys=True))
        if self.relay is not None:
            self.relay(op, kwargs, result)
        return result

    # -- prices and time -----------------------------------------------------------------

    def set_price(self, symbol: str, price: str, time_ms: int | None = None) -> Result:
        """Make ``price`` the symbol's last price at ``time_ms`` (default: the clock's now;
        at most the tick-time skew ahead of it, and an int64)."""
        now = self.clock.now_ms()
        try:
            tick = self.book.make_tick(symbol, price, now if time_ms is None else time_ms, now)
        except TickRejected as exc:
            raise ControlError(f"price.set: {exc}") from None
        self.book.update(tick)
        return {"symbol": tick.symbol, "price": tick.price, "time": tick.time_ms}

    def clear_price(self, symbol: str) -> Result:
        """Forget ``symbol``'s price: it answers -1121 until it gets one again."""
        if symbol not in self.universe:
            raise ControlError(f"price.clear: unknown symbol {symbol!r}")
        self.book.remove(symbol)
        return {"symbol": symbol}

    def reset_book(self) -> Result:
        """Forget every price (feeds keep running and refill the book as they tick)."""
        n = len(self.book)
        self.book.clear()
        return {"cleared": n}

    def reseed(self, seed: int) -> Result:
        """Restart every seeded feed from ``seed``: its own symbols go back to the prices a
        fresh start with that seed gives (symbols of other feeds are left alone)."""
        feeds = self.feeds.reseedable()
        if not feeds:
            raise ControlError("market.reseed: no synthetic feed running", 409)
        walked = sum(feed.reseed(seed, self.book) for feed in feeds)
        return {"seed": seed, "symbols": walked}

    def clock_state(self) -> Result:
        """The service clock: ``now_ms``, ``frozen``, ``offset_ms``."""
        c = self.clock
        return {"now_ms": c.now_ms(), "frozen": c.frozen, "offset_ms": c.offset_ms}

    def freeze_clock(self, at_ms: int | None = None) -> Result:
        """Stop the clock at ``at_ms`` (default: now)."""
        self.clock.freeze(at_ms)
        return self.clock_state()

    def unfreeze_clock(self) -> Result:
        """Let the clock run on from where it stands."""
        self.clock.unfreeze()
        return self.clock_state()

    def advance_clock(self, ms: int) -> Result:
        """Move the clock forward by ``ms``."""
        self.clock.advance(ms)
        return self.clock_state()

    def set_clock(self, now_ms: int) -> Result:
        """Set the clock to ``now_ms`` (backward too; a frozen clock stays frozen)."""
        self.clock.set(now_ms)
        return self.clock_state()

    def reset_clock(self) -> Result:
        """Follow the base clock again: no offset, not frozen."""
        self.clock.reset()
        return self.clock_state()

    def step_replay(self, count: int = 1) -> Result:
        """Apply the next ``count`` trades of a ``--replay-speed step`` replay (409 when no
        replay runs, or it runs by itself); returns how many were applied and the last."""
        feeds = self.feeds.steppable()
        if not feeds:
            raise ControlError("replay.step: no replay feed running", 409)
        feed = feeds[0]
        if not feed.stepped:
            raise ControlError(
                f"replay.step: the {feed.name} feed runs by itself; step needs --replay-speed step",
                409,
            )
        try:
            ticks = feed.step(count)
        except ValueError as exc:
            raise ControlError(f"replay.step: {exc}") from None
        except TickerdError as exc:  # a bad row: the rows before it were applied
            raise ControlError(f"replay.step: {exc}", 409) from None
        last = ticks[-1] if ticks else None
        return {
            "stepped": len(ticks),
            "last": None
            if last is None
            else {"symbol": last.symbol, "price": last.price, "time": last.time_ms},
            "finished": feed.finished,
            "clock": self.clock_state(),
        }

    # -- faults on requests --------------------------------------------------------------

    def http429(
        self,
        count: int = 1,
        retry_after_ms: int | None = None,
        ip: str | None = None,
        conn: int | None = None,
    ) -> Result:
        """Answer the next ``count`` requests 429 / -1003; ``retryAfter`` is now plus
        ``retry_after_ms`` (default: the next rate-limit window, as a real 429)."""
        fault = RequestFault(429, count, Target(ip, conn), retry_after_ms=retry_after_ms)
        return self._arm(fault)

    def http418(
        self,
        count: int = 1,
        ban_ms: int = weights.BAN_STEPS_MS[0],
        ip: str | None = None,
        conn: int | None = None,
    ) -> Result:
        """Answer the next ``count`` requests 418 / -1003, banned for ``ban_ms`` from then."""
        return self._arm(RequestFault(418, count, Target(ip, conn), ban_ms=ban_ms))

    def add_latency(
        self,
        ms: int | None = None,
        min_ms: int | None = None,
        max_ms: int | None = None,
        seed: int = 0,
        ip: str | None = None,
        conn: int | None = None,
    ) -> Result:
        """Delay WebSocket replies by ``ms``, or by a random ``min_ms``..``max_ms`` drawn
        from ``random.Random(seed)``; replies stay in order on each connection."""
        try:
            fault = LatencyFault(Target(ip, conn), ms=ms, min_ms=min_ms, max_ms=max_ms, seed=seed)
        except ValueError as exc:
            raise ControlError(f"fault.latency: {exc}") from None
        return self._arm(fault)

    def ignore_pings(self, ip: str | None = None, conn: int | None = None) -> Result:
        """Stop answering client pings (the server's own pings carry on)."""
        return self._arm(PingFault(Target(ip, conn)))

    def clear_faults(self, id: int | None = None) -> Result:
        """Disarm fault ``id``, or every fault."""
        cleared = self.faults.clear(id)
        if id is not None and not cleared:
            raise ControlError(f"fault.clear: no fault {id}", 404)
        return {"cleared": cleared}

    def _arm(self, fault: RequestFault | LatencyFault | PingFault) -> Result:
        try:
            armed = self.faults.arm(fault)
        except ValueError as exc:
            raise ControlError(str(exc), 409) from None
        return armed.to_state()

    # -- limits --------------------------------------------------------------------------

    def set_weight_limit(self, limit: int) -> Result:
        """Change REQUEST_WEIGHT per minute; ``rateLimits`` and exchangeInfo show it."""
        self.limiter.limit = limit
        return {"limit": limit}

    def ban(self, ip: str, ms: int | None = None) -> Result:
        """Ban ``ip`` in the limiter (next escalation step, or ``ms``): every request and
        handshake gets 418 until it ends."""
        until = self.limiter.ban(ip, self.clock.now_ms(), ms)
        return {"ip": ip, "banned_until": until}

    def reset_limits(self, ip: str | None = None) -> Result:
        """Forget one IP's (or everyone's) weight and bans."""
        self.limiter.reset(ip)
        return {"ip": ip}

    # -- connections ---------------------------------------------------------------------

    def close(
        self, code: int = 1000, reason: str = "", ip: str | None = None, conn: int | None = None
    ) -> Result:
        """Close the aimed-at connections with ``code`` (1000, 1001, 1008 or 1011); 409
        when no open connection is aimed at."""
        if code not in CLOSE_CODES:
            raise ControlError(f"conn.close: code must be one of {list(CLOSE_CODES)}")
        return {
            "closed": self._some("conn.close", self.faults.close(Target(ip, conn), code, reason))
        }

    def drop(self, ip: str | None = None, conn: int | None = None) -> Result:
        """Drop the aimed-at connections' TCP with no close frame; 409 when none is."""
        return {"dropped": self._some("conn.drop", self.faults.drop(Target(ip, conn)))}

    def rollover(self, ip: str | None = None, conn: int | None = None) -> Result:
        """The 24-hour cut now: close 1001 with no reason, as at ``--max-lifetime``; 409
        when no open connection is aimed at."""
        return {"closed": self._some("conn.rollover", self.faults.close(Target(ip, conn), 1001))}

    @staticmethod
    def _some(op: str, n: int) -> int:
        if not n:
            raise ControlError(f"{op}: no open connection is aimed at", 409)
        return n

    def server_shutdown(self, ip: str | None = None, conn: int | None = None) -> Result:
        """Send ``{"event":{"e":"serverShutdown","E":<now>}}`` (spot's planned-restart
        notice; the official SDK reconnects on it). The connection stays open; 409 when no
        open connection is aimed at."""
        payload = b'{"event":{"e":"serverShutdown","E":%d}}' % self.clock.now_ms()
        return {
            "sent": self._some("event.shutdown", self.faults.send_event(Target(ip, conn), payload))
        }

    def set_symbol_status(self, symbol: str, status: str) -> Result:
        """Set a contract's status (one of Binance's contract statuses): anything but
        TRADING answers -1121 and leaves it out of the all-symbols array; exchangeInfo
        shows the status."""
        if symbol not in self.universe:
            raise ControlError(f"symbol.status: unknown symbol {symbol!r}")
        if status not in CONTRACT_STATUSES:
            raise ControlError(f"symbol.status: 'status' must be one of {list(CONTRACT_STATUSES)}")
        self.universe.set_status(symbol, status)
        self.book.refresh_status()
        return {"symbol": symbol, "status": status}

    # -- everything at once --------------------------------------------------------------

    def reset(self) -> Result:
        """Faults, clock, weight limit, bans and symbol statuses back as the service started.
        Prices stay (``book.reset``, ``market.reseed``); a running scenario keeps running."""
        self.faults.clear()
        self.clock.reset()
        self.limiter.limit = self.weight_limit
        self.limiter.reset()
        changed = False
        for info in list(self.universe):
            original = self._statuses.get(info.symbol)
            if original is not None and info.status != original:
                self.universe.set_status(info.symbol, original)
                changed = True
        if changed:
            self.book.refresh_status()
        return {"reset": True}

    # -- scenarios -----------------------------------------------------------------------

    def run_scenario(self, scenario: Scenario, *, replace: bool = False) -> Result:
        """Run ``scenario``: its 0 ms steps now, the rest timed on the event loop's
        monotonic clock. 409 while another runs, unless ``replace``."""
        return self.scenarios.start(scenario, replace=replace)

    def run_scenario_doc(self, doc: Any, *, replace: bool = False) -> Result:
        """Validate a parsed scenario document (see :mod:`tickerd.control.scenario`) and
        run it."""
        return self.run_scenario(parse_scenario(doc, "scenario"), replace=replace)

    def stop_scenario(self) -> Result:
        """Stop the running scenario (steps already applied stay applied)."""
        return self.scenarios.stop()

    # -- state ---------------------------------------------------------------------------

    def state(self) -> Result:
        """Everything the control plane can tell: clock, prices, statuses changed from the
        start, weight limit, per-IP weight and bans, faults, connections, scenario.

        Tables list at most :data:`STATE_LIST_LIMIT` entries; counts are exact.
        """
        now = self.clock.now_ms()
        usage = self.limiter.usage(now)
        conns = connection_rows(self.faults)
        return {
            "clock": self.clock_state(),
            "prices": {t.symbol: {"price": t.price, "time": t.time_ms} for t in self.book.ticks()},
            "statuses": {
                s.symbol: s.status
                for s in self.universe
                if s.status != self._statuses.get(s.symbol)
            },
            "weight_limit": self.limiter.limit,
            "clients": [
                {"ip": u.key, "used": u.used, "banned_until": u.banned_until, "bans": u.bans}
                for u in usage[:STATE_LIST_LIMIT]
            ],
            "clients_total": len(usage),
            "faults": [f.to_state() for f in self.faults.faults.values()],
            "connections": conns[:STATE_LIST_LIMIT],
            "connections_total": len(conns),
            "scenario": self.scenarios.state(),
        }

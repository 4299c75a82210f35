"""The control plane: make every Binance misbehaviour reproducible on demand.

:class:`Control` is a plain Python API over a running :class:`~tickerd.app.Service`:
prices and time (set a price, reset the book, reseed the synthetic market, freeze or move
the clock, step a replay), faults aimed at all clients, one IP or one connection (forced
429/418, latency, unanswered pings, closes with a chosen code, TCP drops, the 24-hour
rollover, ``serverShutdown`` events, non-trading symbols, a new weight limit) and
scenarios (timed steps of all of the above, see :mod:`tickerd.scenario`).

Every operation has a name (``fault.http429``) and typed arguments in :data:`OPS`; the
HTTP surface (``transport/control_http.py``, ``POST /control/fault/http429``), scenario
files and :meth:`Control.apply` all go through the same table and the same validation.
Methods must be called on the service's event loop thread. :class:`ControlClient` calls a
server's control plane over HTTP (for a server in another process).

Binance references for the behaviours reproduced:
https://developers.binance.com/docs/derivatives/usds-margined-futures/websocket-api-general-info
(429/418, the 24-hour limit, pings) and the spot ``web-socket-api.md`` (``serverShutdown``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import urllib.error
import urllib.request
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from . import weights
from .book import TickRejected
from .clock import ControlledClock
from .errors import TickerdError
from .transport.faults import (
    MAX_FAULTS,
    FaultInjector,
    LatencyFault,
    PingFault,
    RequestFault,
    Target,
)

if TYPE_CHECKING:
    from .app import Service
    from .scenario import Scenario, Step
    from .transport.http import HTTPServer
    from .transport.ws import WSServer

log = logging.getLogger("tickerd.control")

#: Close codes the control plane may close connections with.
CLOSE_CODES = (1000, 1001, 1008, 1011)
#: Entries listed per table in :meth:`Control.state` (the counts are always exact).
STATE_LIST_LIMIT = 1000
_MAX_STR = 256
_MAX_MS = 366 * 86_400_000  # a year: bound on delays, bans and clock moves
_MAX_TIME_MS = 2**53  # epoch ms a client's JSON parser still reads exactly


class ControlError(TickerdError):
    """A control operation that cannot be done, with the HTTP status that says why."""

    def __init__(self, msg: str, status: int = 400) -> None:
        super().__init__(msg)
        self.msg = msg
        self.status = status


# -- the operations table -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Arg:
    """One argument of an operation: its JSON type (``int`` or ``str``) and bounds."""

    kind: type
    required: bool = False
    minimum: int | None = None
    maximum: int | None = None
    choices: tuple[int, ...] | None = None


@dataclass(frozen=True, slots=True)
class Op:
    """An operation: the :class:`Control` method it calls, its arguments, what it does."""

    method: str
    help: str
    args: dict[str, Arg] = field(default_factory=dict)


_TARGET = {"ip": Arg(str), "conn": Arg(int, minimum=1)}
_MS = Arg(int, required=True, minimum=0, maximum=_MAX_MS)
_TIME = Arg(int, required=True, minimum=0, maximum=_MAX_TIME_MS)

OPS: dict[str, Op] = {
    "price.set": Op(
        "set_price",
        "set a symbol's price (time: now)",
        {"symbol": Arg(str, True), "price": Arg(str, True), "time_ms": Arg(int, minimum=0)},
    ),
    "price.clear": Op("clear_price", "forget a symbol's price", {"symbol": Arg(str, True)}),
    "book.reset": Op("reset_book", "forget every price"),
    "market.reseed": Op(
        "reseed", "restart the synthetic market from a seed", {"seed": Arg(int, True)}
    ),
    "clock.freeze": Op(
        "freeze_clock",
        "stop the clock (at at_ms, default now)",
        {"at_ms": Arg(int, minimum=0, maximum=_MAX_TIME_MS)},
    ),
    "clock.unfreeze": Op("unfreeze_clock", "let the clock run on from where it stands"),
    "clock.advance": Op("advance_clock", "move the clock forward", {"ms": _MS}),
    "clock.set": Op("set_clock", "set the clock (also backward)", {"now_ms": _TIME}),
    "clock.reset": Op("reset_clock", "follow the real clock again"),
    "replay.step": Op(
        "step_replay",
        "apply the next trades of a step-mode replay",
        {"count": Arg(int, minimum=1, maximum=1_000_000)},
    ),
    "fault.http429": Op(
        "http429",
        "answer the next requests 429 / -1003",
        {
            "count": Arg(int, minimum=1),
            "retry_after_ms": Arg(int, minimum=0, maximum=_MAX_MS),
            **_TARGET,
        },
    ),
    "fault.http418": Op(
        "http418",
        "answer the next requests 418 / -1003 (banned)",
        {"count": Arg(int, minimum=1), "ban_ms": Arg(int, minimum=0, maximum=_MAX_MS), **_TARGET},
    ),
    "fault.latency": Op(
        "add_latency",
        "delay replies by ms, or by a seeded random min_ms..max_ms",
        {
            "ms": Arg(int, minimum=0, maximum=_MAX_MS),
            "min_ms": Arg(int, minimum=0, maximum=_MAX_MS),
            "max_ms": Arg(int, minimum=0, maximum=_MAX_MS),
            "seed": Arg(int),
            **_TARGET,
        },
    ),
    "fault.pings": Op("ignore_pings", "leave client pings unanswered", dict(_TARGET)),
    "fault.clear": Op("clear_faults", "disarm one fault (id) or all", {"id": Arg(int)}),
    "limit.weight": Op(
        "set_weight_limit",
        "change REQUEST_WEIGHT per minute",
        {"limit": Arg(int, True, minimum=1, maximum=2**31)},
    ),
    "limit.ban": Op(
        "ban",
        "ban an IP in the rate limiter (handshakes refused too)",
        {"ip": Arg(str, True), "ms": Arg(int, minimum=1, maximum=_MAX_MS)},
    ),
    "limit.reset": Op("reset_limits", "forget weight and bans (one IP or all)", {"ip": Arg(str)}),
    "conn.close": Op(
        "close",
        "close connections with a close code",
        {"code": Arg(int, choices=CLOSE_CODES), "reason": Arg(str), **_TARGET},
    ),
    "conn.drop": Op("drop", "drop connections' TCP without a close frame", dict(_TARGET)),
    "conn.rollover": Op("rollover", "the 24-hour cut now: close 1001", dict(_TARGET)),
    "symbol.status": Op(
        "set_symbol_status",
        "set a contract's status (not TRADING: -1121)",
        {"symbol": Arg(str, True), "status": Arg(str, True)},
    ),
    "event.shutdown": Op("server_shutdown", "send the serverShutdown event", dict(_TARGET)),
    "scenario.stop": Op("stop_scenario", "stop the running scenario"),
    "reset": Op("reset", "faults, clock, limits, bans and statuses back to the start"),
}


def validate_args(op: str, args: Any) -> dict[str, Any]:
    """Check ``args`` against operation ``op``; returns them as keyword arguments.

    Raises :class:`ControlError` (404 for an unknown operation, 400 for bad arguments) with
    a message naming the operation and the argument.
    """
    spec = OPS.get(op)
    if spec is None:
        raise ControlError(f"unknown operation {op!r}", 404)
    if args is None:
        args = {}
    if not isinstance(args, dict):
        raise ControlError(f"{op}: arguments must be a JSON object")
    for name, value in args.items():
        arg = spec.args.get(name)
        if arg is None:
            known = ", ".join(spec.args) or "none"
            raise ControlError(f"{op}: unknown argument {name!r} (known: {known})")
        if arg.kind is int:
            if type(value) is not int:
                raise ControlError(f"{op}: {name!r} must be an integer, got {value!r}")
            if arg.minimum is not None and value < arg.minimum:
                raise ControlError(f"{op}: {name!r} must be at least {arg.minimum}")
            if arg.maximum is not None and value > arg.maximum:
                raise ControlError(f"{op}: {name!r} must be at most {arg.maximum}")
            if arg.choices is not None and value not in arg.choices:
                raise ControlError(f"{op}: {name!r} must be one of {list(arg.choices)}")
        elif type(value) is not str or not 0 < len(value) <= _MAX_STR:
            raise ControlError(f"{op}: {name!r} must be a non-empty string, got {value!r}")
    for name, arg in spec.args.items():
        if arg.required and name not in args:
            raise ControlError(f"{op}: argument {name!r} is required")
    if op == "fault.latency":
        ranged = ("min_ms" in args) + ("max_ms" in args)
        if ("ms" in args) == bool(ranged) or ranged == 1:
            raise ControlError(f"{op}: give either 'ms' or both 'min_ms' and 'max_ms'")
        if ranged and args["min_ms"] > args["max_ms"]:
            raise ControlError(f"{op}: 'min_ms' must not exceed 'max_ms'")
    return dict(args)


# -- the control plane --------------------------------------------------------------------


@dataclass
class _ScenarioRun:
    scenario: Scenario
    rng: random.Random
    done: int = 0
    errors: deque[str] = field(default_factory=lambda: deque(maxlen=20))
    task: asyncio.Task[None] | None = None

    def to_state(self) -> dict[str, Any]:
        return {
            "name": self.scenario.name,
            "seed": self.scenario.seed,
            "steps": len(self.scenario.steps),
            "done": self.done,
            "finished": self.done == len(self.scenario.steps),
            "errors": list(self.errors),
        }


class Control:
    """The control plane of one :class:`~tickerd.app.Service` (see the module docstring).

    Built by the service itself (``service.control``); refuses settings that turn the HTTP
    surface on without a token, and loads the ``--scenario`` file, so a bad file stops the
    service before it listens.
    """

    def __init__(self, service: Service) -> None:
        self.service = service
        settings = service.settings
        if settings.control_port >= 0 and not settings.control_token:
            raise ControlError("the control plane needs a token: set --control-token")
        clock = service.clock
        if not isinstance(clock, ControlledClock):
            raise TypeError("the service clock must be a ControlledClock")
        self.clock = clock
        self.faults = FaultInjector(clock, service.limiter)
        self._statuses = {s.symbol: s.status for s in service.universe}
        self._scenario: _ScenarioRun | None = None
        self._startup: Scenario | None = None
        if settings.scenario:
            from .scenario import load_scenario

            self._startup = load_scenario(settings.scenario)

    # -- lifecycle (called by the service) ---------------------------------------------------

    def bind(self, ws: WSServer | None, http: HTTPServer | None) -> None:
        """Reach the servers' connections and requests once they are up."""
        self.faults.bind(ws, http)

    def start(self) -> None:
        """Start the ``--scenario`` file's run, if any (its 0 ms steps apply right now)."""
        if self._startup is not None:
            self.run_scenario(self._startup)

    def stop(self) -> None:
        """Stop the running scenario (the service calls this as it stops)."""
        self.stop_scenario()

    # -- one entry point for HTTP and scenarios ------------------------------------------

    def apply(self, op: str, args: Any = None) -> dict[str, Any]:
        """Run operation ``op`` (a name from :data:`OPS`) with JSON ``args``.

        Raises :class:`ControlError` with an HTTP status: 404 unknown operation, 400 bad
        arguments, 409 nothing to act on (no replay or synthetic feed running).
        """
        kwargs = validate_args(op, args)
        result: dict[str, Any] = getattr(self, OPS[op].method)(**kwargs)
        log.info("control: %s %s", op, json.dumps(kwargs, sort_keys=True))
        return result

    # -- prices and time -----------------------------------------------------------------

    def set_price(self, symbol: str, price: str, time_ms: int | None = None) -> dict[str, Any]:
        """Make ``price`` the symbol's last price at ``time_ms`` (default: the clock's now)."""
        book = self.service.book
        try:
            tick = book.make_tick(
                symbol, price, self.clock.now_ms() if time_ms is None else time_ms
            )
        except TickRejected as exc:
            raise ControlError(f"price.set: {exc}") from None
        book.update(tick)
        return {"symbol": tick.symbol, "price": tick.price, "time": tick.time_ms}

    def clear_price(self, symbol: str) -> dict[str, Any]:
        """Forget ``symbol``'s price: it answers -1121 until it gets one again."""
        if symbol not in self.service.universe:
            raise ControlError(f"price.clear: unknown symbol {symbol!r}")
        self.service.book.remove(symbol)
        return {"symbol": symbol}

    def reset_book(self) -> dict[str, Any]:
        """Forget every price (feeds keep running and refill the book as they tick)."""
        n = len(self.service.book)
        self.service.book.clear()
        return {"cleared": n}

    def reseed(self, seed: int) -> dict[str, Any]:
        """Replace the synthetic market with a fresh one from ``seed`` and re-prime the book."""
        from .feeds.synthetic import SyntheticFeed, SyntheticMarket

        feeds = [f for f in self.service.feeds if isinstance(f, SyntheticFeed)]
        if not feeds:
            raise ControlError("market.reseed: no synthetic feed running", 409)
        for feed in feeds:
            feed.market = SyntheticMarket(self.service.universe, seed)
            feed.prime(self.service.book)
        return {"seed": seed, "symbols": len(feeds[0].market.walkers)}

    def clock_state(self) -> dict[str, Any]:
        """The service clock: ``now_ms``, ``frozen``, ``offset_ms``."""
        c = self.clock
        return {"now_ms": c.now_ms(), "frozen": c.frozen, "offset_ms": c.offset_ms}

    def freeze_clock(self, at_ms: int | None = None) -> dict[str, Any]:
        """Stop the clock at ``at_ms`` (default: now)."""
        self.clock.freeze(at_ms)
        return self.clock_state()

    def unfreeze_clock(self) -> dict[str, Any]:
        """Let the clock run on from where it stands."""
        self.clock.unfreeze()
        return self.clock_state()

    def advance_clock(self, ms: int) -> dict[str, Any]:
        """Move the clock forward by ``ms``."""
        self.clock.advance(ms)
        return self.clock_state()

    def set_clock(self, now_ms: int) -> dict[str, Any]:
        """Set the clock to ``now_ms`` (backward too; a frozen clock stays frozen)."""
        self.clock.set(now_ms)
        return self.clock_state()

    def reset_clock(self) -> dict[str, Any]:
        """Follow the base clock again: no offset, not frozen."""
        self.clock.reset()
        return self.clock_state()

    def step_replay(self, count: int = 1) -> dict[str, Any]:
        """Apply the next ``count`` trades of a ``--replay-speed step`` replay (409 when no
        replay runs, or it runs by itself); returns how many were applied and the last."""
        from .feeds.replay import ReplayFeed

        feeds = [f for f in self.service.feeds if isinstance(f, ReplayFeed)]
        if not feeds:
            raise ControlError("replay.step: no replay feed running", 409)
        feed = feeds[0]
        if feed.speed.mode != "step":
            raise ControlError(
                f"replay.step: the replay runs by itself (speed {feed.speed}); "
                "step needs --replay-speed step",
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
    ) -> dict[str, Any]:
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
    ) -> dict[str, Any]:
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
    ) -> dict[str, Any]:
        """Delay WebSocket replies by ``ms``, or by a random ``min_ms``..``max_ms`` drawn
        from ``random.Random(seed)``; replies stay in order on each connection."""
        try:
            fault = LatencyFault(Target(ip, conn), ms=ms, min_ms=min_ms, max_ms=max_ms, seed=seed)
        except ValueError as exc:
            raise ControlError(f"fault.latency: {exc}") from None
        return self._arm(fault)

    def ignore_pings(self, ip: str | None = None, conn: int | None = None) -> dict[str, Any]:
        """Stop answering client pings (the server's own pings carry on)."""
        return self._arm(PingFault(Target(ip, conn)))

    def clear_faults(self, id: int | None = None) -> dict[str, Any]:
        """Disarm fault ``id``, or every fault."""
        cleared = self.faults.clear(id)
        if id is not None and not cleared:
            raise ControlError(f"fault.clear: no fault {id}", 404)
        return {"cleared": cleared}

    def _arm(self, fault: RequestFault | LatencyFault | PingFault) -> dict[str, Any]:
        try:
            armed = self.faults.arm(fault)
        except ValueError as exc:
            raise ControlError(str(exc), 409) from None
        return armed.to_state()

    # -- limits --------------------------------------------------------------------------

    def set_weight_limit(self, limit: int) -> dict[str, Any]:
        """Change REQUEST_WEIGHT per minute; ``rateLimits`` and exchangeInfo show it."""
        self.service.limiter.limit = limit
        return {"limit": limit}

    def ban(self, ip: str, ms: int | None = None) -> dict[str, Any]:
        """Ban ``ip`` in the limiter (next escalation step, or ``ms``): every request and
        handshake gets 418 until it ends."""
        until = self.service.limiter.ban(ip, self.clock.now_ms(), ms)
        return {"ip": ip, "banned_until": until}

    def reset_limits(self, ip: str | None = None) -> dict[str, Any]:
        """Forget one IP's (or everyone's) weight and bans."""
        self.service.limiter.reset(ip)
        return {"ip": ip}

    # -- connections ---------------------------------------------------------------------

    def close(
        self, code: int = 1000, reason: str = "", ip: str | None = None, conn: int | None = None
    ) -> dict[str, Any]:
        """Close the aimed-at connections with ``code`` (1000, 1001, 1008 or 1011)."""
        if code not in CLOSE_CODES:
            raise ControlError(f"conn.close: code must be one of {list(CLOSE_CODES)}")
        return {"closed": self.faults.close(Target(ip, conn), code, reason)}

    def drop(self, ip: str | None = None, conn: int | None = None) -> dict[str, Any]:
        """Drop the aimed-at connections' TCP with no close frame."""
        return {"dropped": self.faults.drop(Target(ip, conn))}

    def rollover(self, ip: str | None = None, conn: int | None = None) -> dict[str, Any]:
        """The 24-hour cut now: close 1001 with no reason, as at ``--max-lifetime``."""
        return {"closed": self.faults.close(Target(ip, conn), 1001)}

    def server_shutdown(self, ip: str | None = None, conn: int | None = None) -> dict[str, Any]:
        """Send ``{"event":{"e":"serverShutdown","E":<now>}}`` (spot's planned-restart
        notice; the official SDK reconnects on it). The connection stays open."""
        payload = b'{"event":{"e":"serverShutdown","E":%d}}' % self.clock.now_ms()
        return {"sent": self.faults.send_event(Target(ip, conn), payload)}

    def set_symbol_status(self, symbol: str, status: str) -> dict[str, Any]:
        """Set a contract's status: anything but TRADING answers -1121 and leaves it out of
        the all-symbols array; exchangeInfo shows the status."""
        universe = self.service.universe
        if symbol not in universe:
            raise ControlError(f"symbol.status: unknown symbol {symbol!r}")
        universe.set_status(symbol, status)
        self.service.book.refresh_status()
        return {"symbol": symbol, "status": status}

    # -- everything at once --------------------------------------------------------------

    def reset(self) -> dict[str, Any]:
        """Faults, clock, weight limit, bans and symbol statuses back as the service started.
        Prices stay (``book.reset``, ``market.reseed``); a running scenario keeps running."""
        self.faults.clear()
        self.clock.reset()
        limiter = self.service.limiter
        limiter.limit = self.service.settings.weight_limit
        limiter.reset()
        universe = self.service.universe
        changed = False
        for info in list(universe):
            original = self._statuses.get(info.symbol)
            if original is not None and info.status != original:
                universe.set_status(info.symbol, original)
                changed = True
        if changed:
            self.service.book.refresh_status()
        return {"reset": True}

    # -- scenarios -----------------------------------------------------------------------

    def run_scenario(self, scenario: Scenario) -> dict[str, Any]:
        """Run ``scenario`` (replacing a running one): its 0 ms steps now, the rest timed on
        the event loop's monotonic clock from now."""
        self.stop_scenario()
        run = _ScenarioRun(scenario, random.Random(scenario.seed))
        self._scenario = run
        steps = scenario.steps
        while run.done < len(steps) and steps[run.done].at_ms == 0:
            self._run_step(run, steps[run.done])
        if run.done < len(steps):
            run.task = asyncio.get_running_loop().create_task(
                self._run_timed(run), name="tickerd-scenario"
            )
        log.info("scenario %r started: %d steps", scenario.name, len(steps))
        return run.to_state()

    def run_scenario_doc(self, doc: Any) -> dict[str, Any]:
        """Validate a parsed scenario document (see :mod:`tickerd.scenario`) and run it."""
        from .scenario import parse_scenario

        return self.run_scenario(parse_scenario(doc, "scenario"))

    def stop_scenario(self) -> dict[str, Any]:
        """Stop the running scenario (steps already applied stay applied)."""
        run = self._scenario
        if run is not None and run.task is not None and not run.task.done():
            if run.task is not asyncio.current_task():
                run.task.cancel()
            return {"stopped": True}
        return {"stopped": False}

    async def _run_timed(self, run: _ScenarioRun) -> None:
        loop = asyncio.get_running_loop()
        start = loop.time()
        steps = run.scenario.steps
        while run.done < len(steps):
            step = steps[run.done]
            delay = start + step.at_ms / 1000 - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            self._run_step(run, step)
        log.info("scenario %r finished", run.scenario.name)

    def _run_step(self, run: _ScenarioRun, step: Step) -> None:
        args = dict(step.args)
        # Randomness a step leaves open comes from the scenario's seed, in step order.
        if step.op == "fault.latency" and "ms" not in args and "seed" not in args:
            args["seed"] = run.rng.randrange(2**32)
        try:
            self.apply(step.op, args)
        except ControlError as exc:
            msg = f"step {step.index} ({step.op}): {exc.msg}"
            log.warning("scenario %r: %s", run.scenario.name, msg)
            run.errors.append(msg)
        run.done += 1

    # -- state ---------------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        """Everything the control plane can tell: clock, prices, statuses changed from the
        start, weight limit, per-IP weight and bans, faults, connections, scenario.

        Tables list at most :data:`STATE_LIST_LIMIT` entries; counts are exact.
        """
        service = self.service
        now = self.clock.now_ms()
        usage = service.limiter.usage(now)
        ws = self.faults.ws
        conns = sorted(ws.connections, key=lambda c: c.conn_id) if ws is not None else []
        loop_now = ws.loop.time() if ws is not None else 0.0
        return {
            "clock": self.clock_state(),
            "prices": {
                t.symbol: {"price": t.price, "time": t.time_ms} for t in service.book.ticks()
            },
            "statuses": {
                s.symbol: s.status
                for s in service.universe
                if s.status != self._statuses.get(s.symbol)
            },
            "weight_limit": service.limiter.limit,
            "clients": [
                {"ip": u.key, "used": u.used, "banned_until": u.banned_until, "bans": u.bans}
                for u in usage[:STATE_LIST_LIMIT]
            ],
            "clients_total": len(usage),
            "faults": [f.to_state() for f in self.faults.faults.values()],
            "connections": [
                {
                    "id": c.conn_id,
                    "ip": c.session.client,
                    "port": _peer_port(c.ws),
                    "age_ms": int((loop_now - c.opened) * 1000),
                    "closing": bool(c.close_sent_at),
                }
                for c in conns[:STATE_LIST_LIMIT]
            ],
            "connections_total": len(conns),
            "scenario": self._scenario.to_state() if self._scenario is not None else None,
        }


def _peer_port(ws: Any) -> int | None:
    peer = ws.underlying_transport.get_extra_info("peername") if ws is not None else None
    return int(peer[1]) if isinstance(peer, tuple) and len(peer) > 1 else None


# -- calling a control plane over HTTP ----------------------------------------------------


class ControlClient:
    """A blocking client of a server's control plane (``--control-port``), for tests and
    scripts driving a tickerd in another process.

    >>> ctl = ControlClient("http://127.0.0.1:9003", "secret")    # doctest: +SKIP
    >>> ctl.call("fault.http429", count=2)                        # doctest: +SKIP
    """

    def __init__(self, url: str, token: str, *, timeout: float = 10.0) -> None:
        self.url = url.rstrip("/")
        self.token = token
        self.timeout = timeout

    def call(self, op: str, **args: Any) -> dict[str, Any]:
        """Run operation ``op`` (e.g. ``"fault.http429"``); raises :class:`ControlError`."""
        return self._request("POST", "/control/" + op.replace(".", "/"), args)

    def state(self) -> dict[str, Any]:
        """``GET /control/state``."""
        return self._request("GET", "/control/state", None)

    def run_scenario(self, doc: dict[str, Any]) -> dict[str, Any]:
        """``POST /control/scenario`` with a scenario document."""
        return self._request("POST", "/control/scenario", doc)

    def _request(self, method: str, path: str, body: Any) -> dict[str, Any]:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.url + path, data=data, method=method)
        request.add_header("Authorization", f"Bearer {self.token}")
        if data is not None:
            request.add_header("Content-Type", "application/json")
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        try:
            with opener.open(request, timeout=self.timeout) as response:
                doc = json.loads(response.read())
        except urllib.error.HTTPError as exc:
            try:
                msg = json.loads(exc.read()).get("error", exc.reason)
            except ValueError:
                msg = str(exc.reason)
            raise ControlError(str(msg), exc.code) from None
        if not isinstance(doc, dict):
            raise ControlError("the control plane answered something else than an object", 502)
        return doc


__all__ = ["CLOSE_CODES", "MAX_FAULTS", "OPS", "Control", "ControlClient", "ControlError"]

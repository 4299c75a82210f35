"""tickerd inside your test suite: an in-process server with a manual clock, and a fixture.

Installing tickerd registers this module as a pytest plugin (the ``pytest11`` entry point
``tickerd``), so any suite in that environment can ask for the ``tickerd_server`` fixture::

    def test_my_bot_reads_btc(tickerd_server):
        tickerd_server.set_price("BTCUSDT", "97000.10")
        tickerd_server.advance(1_000)
        bot = MyBot(ws_url=tickerd_server.ws_url, rest_url=tickerd_server.rest_url)
        ...

The server is the real :class:`tickerd.app.Service` — the same WebSocket API
(https://developers.binance.com/docs/derivatives/usds-margined-futures/market-data/websocket-api/Symbol-Price-Ticker)
and REST twins, rate limits included — on free ports of 127.0.0.1, run by its own event loop
in a background thread and timed by a :class:`~tickerd.clock.ManualClock`: prices, tick
times, ``serverTime`` and the rate-limit windows move only when the test says so. Options
for one test come from the ``tickerd`` marker: ``@pytest.mark.tickerd(weight_limit=10,
prices="none")`` (any :class:`~tickerd.config.Settings` field, plus the
:class:`TickerdServer` keywords).

Importing this module is cheap (pytest loads it for every run of an environment with
tickerd installed): the server's modules load only when a server starts. ``pytest -p
no:tickerd`` turns the plugin off.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Literal, Self, TypeVar

import pytest

if TYPE_CHECKING:
    from .app import Service
    from .clock import ControlledClock

__all__ = ["TickerdServer", "tickerd_server"]

T = TypeVar("T")

START_TIMEOUT_S = 10.0
CALL_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 10.0
DEFAULT_START_MS = 1_700_000_000_000  # 2023-11-14T22:13:20Z


class TickerdServer:
    """A tickerd :class:`~tickerd.app.Service` on a background thread with a manual clock.

    ``prices`` is ``"synthetic"`` (every TRADING symbol starts at its reference price, and
    prices stand still) or ``"none"`` (an empty book: every symbol answers -1121 until
    :meth:`set_price`). ``rest`` turns the REST twins on. Other keywords are
    :class:`~tickerd.config.Settings` fields (``weight_limit=10``, ``max_lifetime=5.0`` …);
    the ports are always free ones picked at start. Every method is thread-safe: changes run
    on the server's loop, and return once applied.
    """

    def __init__(
        self,
        *,
        start_ms: int = DEFAULT_START_MS,
        prices: Literal["synthetic", "none"] = "synthetic",
        rest: bool = True,
        **settings: Any,
    ) -> None:
        if prices not in ("synthetic", "none"):
            raise ValueError(f"prices must be 'synthetic' or 'none', not {prices!r}")
        self.start_ms = start_ms
        self.prices = prices
        self.rest = rest
        self.overrides = settings
        self.service: Service | None = None
        # The server's clock as clients see it (what the control plane's clock operations
        # move), over a manual base clock: pass it to a client as its clock.
        self.clock: ControlledClock | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stopping: asyncio.Event | None = None
        self._ready = threading.Event()
        self._failure: BaseException | None = None

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> Self:
        """Start the server; return once it listens (or raise why it could not)."""
        if self._thread is not None:
            raise RuntimeError("already started")
        self._thread = threading.Thread(target=self._run, name="tickerd-test-server", daemon=True)
        self._thread.start()
        if not self._ready.wait(START_TIMEOUT_S):
            raise RuntimeError(f"tickerd did not start within {START_TIMEOUT_S} s")
        if self._failure is not None:
            self._thread.join(STOP_TIMEOUT_S)
            raise RuntimeError(f"tickerd could not start: {self._failure}") from self._failure
        return self

    def stop(self) -> None:
        """Close every connection and stop the server (idempotent)."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None or not thread.is_alive():
            return
        stopping = self._stopping
        if stopping is not None:
            loop.call_soon_threadsafe(stopping.set)
        thread.join(STOP_TIMEOUT_S)
        if thread.is_alive():
            raise RuntimeError(f"tickerd did not stop within {STOP_TIMEOUT_S} s")

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self) -> None:
        from .loop import run

        try:
            run(self._serve())
        except BaseException as exc:  # noqa: BLE001 - reported to start()
            if self._failure is None:
                self._failure = exc
        finally:
            self._ready.set()

    async def _serve(self) -> None:
        from .app import Service
        from .config import Settings

        # No fixed port: the ops surface is off unless asked for (ops_port=0: a free port).
        fields: dict[str, Any] = {"host": "127.0.0.1", "tick_rate": 0.0, "ops_port": -1}
        fields.update(self.overrides)
        fields.update(port=0, rest_port=0 if self.rest else -1)
        settings = Settings(**fields)
        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        from .clock import ManualClock

        service = Service(
            settings,
            clock=ManualClock(self.start_ms),
            feeds=[] if self.prices == "none" else None,
        )
        self.service = service
        self.clock = service.controlled_clock
        await service.start()  # stops what it started if it fails
        try:
            self._ready.set()
            await self._stopping.wait()
        finally:
            await service.stop()

    # -- addresses ------------------------------------------------------------------------

    @property
    def ws_url(self) -> str:
        """The WebSocket API URL, ``ws://127.0.0.1:PORT/ws-fapi/v1``."""
        return self._service().url

    @property
    def rest_url(self) -> str:
        """The REST base URL, ``http://127.0.0.1:PORT`` (append ``/fapi/v1/...``)."""
        url = self._service().rest_url
        if url is None:
            raise RuntimeError("this server runs without REST (rest=False)")
        return url

    # -- prices and time ------------------------------------------------------------------

    def set_price(self, symbol: str, price: str | Decimal, time_ms: int | None = None) -> None:
        """Make ``price`` (an exact decimal string) ``symbol``'s last trade, at ``time_ms``
        (default: the clock's now; as the control plane's ``price.set``, at most the
        tick-time skew ahead of the clock). Raises :class:`~tickerd.book.TickRejected` for
        an unknown symbol, a price off the symbol's tick grid or a time out of bounds."""

        def apply() -> None:
            service = self._service()
            now = service.clock.now_ms()
            when = now if time_ms is None else time_ms
            service.book.update(service.book.make_tick(symbol, price, when, now))

        self.call(apply)

    def clear_price(self, symbol: str) -> None:
        """Forget ``symbol``'s price: it answers -1121 until it gets a new one."""
        self.call(lambda: self._service().book.remove(symbol))

    def price(self, symbol: str) -> str | None:
        """``symbol``'s price as served, or None."""

        def read() -> str | None:
            tick = self._service().book.get(symbol)
            return None if tick is None else tick.price

        return self.call(read)

    # The clock: the control plane's clock operations, with the same names and rules.

    def advance(self, ms: int) -> int:
        """Move the server clock forward by ``ms`` (``clock.advance``); returns the new time.
        Raises :class:`~tickerd.control.ControlError` for a negative ``ms``."""
        return int(self.control("clock.advance", ms=ms)["now_ms"])

    def set_time(self, now_ms: int) -> int:
        """Set the server clock to ``now_ms``, backward too (``clock.set``): clients are
        served exactly ``now_ms``, whatever moved the clock before. Returns it."""
        return int(self.control("clock.set", now_ms=now_ms)["now_ms"])

    def freeze(self, at_ms: int | None = None) -> int:
        """Stop the clock (``clock.freeze``), at ``at_ms`` or now; returns the time."""
        return int(self.control("clock.freeze", **_given(at_ms=at_ms))["now_ms"])

    def unfreeze(self) -> int:
        """Let the clock run on from where it stands (``clock.unfreeze``). The fixture's
        base clock is manual: the time still moves only by :meth:`advance`."""
        return int(self.control("clock.unfreeze")["now_ms"])

    def reset_clock(self) -> int:
        """Back to the fixture's manual clock (``clock.reset``): no offset, not frozen."""
        return int(self.control("clock.reset")["now_ms"])

    @property
    def now_ms(self) -> int:
        """The server clock's time, as clients see it (control-plane clock moves included)."""
        return self.call(lambda: self._service().clock.now_ms())

    # -- faults and the control plane (thin calls of tickerd.control.Control) -------------

    def control(self, op: str, **args: Any) -> dict[str, Any]:
        """Run control operation ``op`` (``"fault.http429"``, ``"conn.close"`` …: every name
        of :data:`tickerd.control.ops.OPS`) with ``args``; returns its result. Raises
        :class:`~tickerd.control.ControlError` for unknown operations or bad arguments."""
        return self.call(lambda: self._service().control.apply(op, args))

    def control_state(self) -> dict[str, Any]:
        """Clock, prices, faults, per-IP weight and bans, connections (with their ids)."""
        return self.call(lambda: self._service().control.state())

    def fail_requests(
        self,
        status: Literal[429, 418] = 429,
        count: int = 1,
        *,
        retry_after_ms: int | None = None,
        ban_ms: int | None = None,
        ip: str | None = None,
        conn: int | None = None,
    ) -> dict[str, Any]:
        """Answer the next ``count`` requests 429 (``retry_after_ms``) or 418 (``ban_ms``)."""
        extra = {"retry_after_ms": retry_after_ms} if status == 429 else {"ban_ms": ban_ms}
        return self.control(f"fault.http{status}", **_given(count=count, ip=ip, conn=conn, **extra))

    def add_latency(
        self,
        ms: int | None = None,
        *,
        min_ms: int | None = None,
        max_ms: int | None = None,
        seed: int | None = None,
        ip: str | None = None,
        conn: int | None = None,
    ) -> dict[str, Any]:
        """Delay replies by ``ms``, or by a seeded random ``min_ms``..``max_ms``."""
        args = _given(ms=ms, min_ms=min_ms, max_ms=max_ms, seed=seed, ip=ip, conn=conn)
        return self.control("fault.latency", **args)

    def ignore_pings(self, *, ip: str | None = None, conn: int | None = None) -> dict[str, Any]:
        """Leave client pings unanswered."""
        return self.control("fault.pings", **_given(ip=ip, conn=conn))

    def clear_faults(self, fault_id: int | None = None) -> dict[str, Any]:
        """Disarm one fault, or all of them."""
        return self.control("fault.clear", **_given(id=fault_id))

    def close_connections(
        self, code: int = 1000, *, reason: str | None = None, ip: str | None = None,
        conn: int | None = None,
    ) -> dict[str, Any]:  # fmt: skip
        """Close connections with ``code`` (1000, 1001, 1008, 1011); raises
        :class:`~tickerd.control.ControlError` (409) when none is open."""
        return self.control("conn.close", **_given(code=code, reason=reason, ip=ip, conn=conn))

    def drop_connections(self, *, ip: str | None = None, conn: int | None = None) -> dict[str, Any]:
        """Drop connections' TCP without a close frame (409 when none is open)."""
        return self.control("conn.drop", **_given(ip=ip, conn=conn))

    def server_shutdown(self, *, ip: str | None = None, conn: int | None = None) -> dict[str, Any]:
        """Send Binance's ``serverShutdown`` event (409 when no connection is open)."""
        return self.control("event.shutdown", **_given(ip=ip, conn=conn))

    def set_weight_limit(self, limit: int) -> dict[str, Any]:
        """Change REQUEST_WEIGHT per minute on the fly."""
        return self.control("limit.weight", limit=limit)

    def set_symbol_status(self, symbol: str, status: str) -> dict[str, Any]:
        """Set a contract's status, one of Binance's (anything but TRADING answers -1121)."""
        return self.control("symbol.status", symbol=symbol, status=status)

    def run_scenario(
        self, scenario: dict[str, Any] | str, *, replace: bool = False
    ) -> dict[str, Any]:
        """Run a scenario document, or a JSON scenario file given by path; ``replace`` stops
        a running scenario instead of raising :class:`~tickerd.control.ControlError` (409)."""
        from .control.scenario import load_scenario, parse_scenario

        parsed = parse_scenario(scenario) if isinstance(scenario, dict) else load_scenario(scenario)
        return self.call(lambda: self._service().control.run_scenario(parsed, replace=replace))

    def call(self, fn: Callable[[], T]) -> T:
        """Run ``fn()`` on the server's loop and return its result (or raise its error)."""
        loop = self._loop
        if loop is None or self._thread is None or not self._thread.is_alive():
            raise RuntimeError("the server is not running")
        done: concurrent.futures.Future[T] = concurrent.futures.Future()

        def run() -> None:
            try:
                done.set_result(fn())
            except BaseException as exc:  # noqa: BLE001 - re-raised in the caller
                done.set_exception(exc)

        loop.call_soon_threadsafe(run)
        return done.result(CALL_TIMEOUT_S)

    def _service(self) -> Service:
        if self.service is None:
            raise RuntimeError("the server is not started")
        return self.service


# -- the pytest plugin -----------------------------------------------------------------------


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "tickerd(**options): options of the tickerd_server fixture "
        "(TickerdServer keywords and Settings fields, e.g. weight_limit=10, prices='none')",
    )


@pytest.fixture
def tickerd_server(request: pytest.FixtureRequest) -> Iterator[TickerdServer]:
    """A running in-process tickerd (manual clock, free ports), stopped after the test.

    Options from ``@pytest.mark.tickerd(...)``; see :class:`TickerdServer`.
    """
    marker = request.node.get_closest_marker("tickerd")
    options: dict[str, Any] = dict(marker.kwargs) if marker is not None else {}
    server = TickerdServer(**options).start()
    try:
        yield server
    finally:
        server.stop()


def _given(**args: Any) -> dict[str, Any]:
    """The keyword arguments that were given (not None)."""
    return {k: v for k, v in args.items() if v is not None}

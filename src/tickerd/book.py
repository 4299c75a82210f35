"""The price book: the latest tick per symbol and the reply bodies built from it.

Reply bodies are cached as bytes so the protocol splices them into envelopes instead of
serialising per request: one body per symbol (``{"symbol":..,"price":..,"time":..}``) and
one all-symbols array. Updates only drop cache entries; a body is rebuilt on the first read
after a change, so a burst of ticks between two reads costs one rebuild, not one per tick.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from decimal import Decimal, InvalidOperation

from .errors import TickerdError
from .models import Tick
from .symbols import SymbolUniverse, format_price, on_tick_grid
from .ticktime import tick_time_problem

Listener = Callable[[Sequence[Tick]], None]


class TickRejected(TickerdError):
    """A tick that cannot enter the book, with the reason."""


class PriceBook:
    """Latest :class:`Tick` per symbol of a :class:`SymbolUniverse`."""

    def __init__(self, universe: SymbolUniverse) -> None:
        self.universe = universe
        self._ticks: dict[str, Tick] = {}
        #: The cache behind :meth:`body` (read it, never write it): a symbol missing here
        #: may still have a body; ask :meth:`body`. Changed in place, never replaced.
        self.bodies: dict[str, bytes] = {}
        self._all: bytes | None = None
        # The all-symbols array's parts, and each symbol's place in it (symbol order);
        # the places are recomputed when they may have changed (None after remove/clear/
        # refresh_status, or a first tick grew the book). Between, a rebuild re-prints only
        # the symbols in ``_changed``: the cost of a tick is not the size of the book.
        self._place: dict[str, int] | None = None
        self._place_size = 0
        self._parts: list[bytes] = []
        self._changed: set[str] = set()
        # Copy-on-write: a listener may (un)subscribe while the tuple is being iterated.
        self._listeners: tuple[Listener, ...] = ()
        self._trading: frozenset[str] = frozenset()
        # True while a market-stream subscriber listens: feeds then hand over
        # :class:`~tickerd.models.Trade` ticks (quantity, ids, maker); otherwise plain ticks.
        self.wants_trades = False
        self.refresh_status()

    # -- writing -------------------------------------------------------------------------

    def update(self, tick: Tick) -> None:
        """Make ``tick`` its symbol's latest price (the tick must come from :meth:`make_tick`
        or an equally validated source)."""
        self._ticks[tick.symbol] = tick
        self.bodies.pop(tick.symbol, None)
        self._changed.add(tick.symbol)
        self._all = None
        if self._listeners:
            for listener in self._listeners:
                listener((tick,))

    def apply(self, ticks: Sequence[Tick]) -> None:
        """Apply a batch of validated ticks in order (the last per symbol wins)."""
        store = self._ticks
        bodies = self.bodies
        changed = self._changed
        for tick in ticks:
            store[tick.symbol] = tick
            bodies.pop(tick.symbol, None)
            changed.add(tick.symbol)
        if ticks:
            self._all = None
            for listener in self._listeners:
                listener(ticks)

    def remove(self, symbol: str) -> None:
        """Forget ``symbol``'s price."""
        self._ticks.pop(symbol, None)
        self.bodies.pop(symbol, None)
        self._all = None
        self._place = None

    def clear(self) -> None:
        """Forget every price."""
        self._ticks.clear()
        self.bodies.clear()
        self._all = None
        self._place = None

    def refresh_status(self) -> None:
        """Re-read which symbols trade after the universe changed a status."""
        self._trading = frozenset(s.symbol for s in self.universe.trading())
        self.bodies.clear()
        self._all = None
        self._place = None

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        """Call ``listener`` with every applied batch; returns the unsubscribe function.

        A listener may subscribe or unsubscribe (itself or others) while being called; the
        change applies from the next batch on.
        """
        self._listeners = (*self._listeners, listener)

        def unsubscribe() -> None:
            listeners = list(self._listeners)
            listeners.remove(listener)
            self._listeners = tuple(listeners)

        return unsubscribe

    def make_tick(
        self, symbol: str, price: str | Decimal, time_ms: int, now_ms: int | None = None
    ) -> Tick:
        """Validate a tick against the universe and print its price canonically.

        Raises :class:`TickRejected` for an unknown symbol, a price that is not a positive
        decimal on the symbol's tick grid, or a time that :func:`tick_time_problem` refuses
        (not a non-negative int64; with ``now_ms``, further ahead of it than the skew).
        """
        info = self.universe.get(symbol) if isinstance(symbol, str) else None
        if info is None:
            raise TickRejected(f"unknown symbol {symbol!r}")
        if isinstance(price, float) or not isinstance(price, (str, Decimal)):
            raise TickRejected(f"price must be a decimal string, got {type(price).__name__}")
        try:
            value = Decimal(price)
        except InvalidOperation:
            raise TickRejected(f"price {price!r} is not a decimal number") from None
        if not on_tick_grid(info, value):
            raise TickRejected(f"price {price} is not a positive multiple of {info.tick_size}")
        problem = tick_time_problem(time_ms, now_ms)
        if problem is not None:
            raise TickRejected(problem)
        return Tick(symbol, format_price(info, value), time_ms)

    # -- reading -------------------------------------------------------------------------

    def get(self, symbol: str) -> Tick | None:
        """The latest tick of ``symbol``, or None."""
        return self._ticks.get(symbol)

    def ticks(self) -> list[Tick]:
        """Every latest tick, in symbol order."""
        return [self._ticks[s] for s in sorted(self._ticks)]

    def __len__(self) -> int:
        return len(self._ticks)

    def body(self, symbol: str) -> bytes | None:
        """The cached ``result`` body of a TRADING symbol that has a price, else None."""
        body = self.bodies.get(symbol)
        if body is None:
            tick = self._ticks.get(symbol)
            if tick is None or symbol not in self._trading:
                return None
            body = self.bodies[symbol] = _body(tick)
        return body

    def all_body(self) -> bytes:
        """The cached ``result`` array of every TRADING symbol with a price, by symbol."""
        body = self._all
        if body is None:
            ticks = self._ticks
            bodies = self.bodies
            parts = self._parts
            place = self._place
            changed: Iterable[str] = self._changed
            if place is None or self._place_size != len(ticks):
                changed = sorted(self._trading.intersection(ticks))
                place = self._place = {symbol: i for i, symbol in enumerate(changed)}
                self._place_size = len(ticks)
                parts[:] = [b""] * len(changed)
            for symbol in changed:
                i = place.get(symbol)
                if i is not None:
                    part = bodies.get(symbol)  # printed since, by a single-symbol read
                    if part is None:
                        part = bodies[symbol] = _body(ticks[symbol])
                    parts[i] = part
            self._changed.clear()
            body = self._all = b"[" + b",".join(parts) + b"]"
        return body


def _body(tick: Tick) -> bytes:
    # Symbols and prices are validated ASCII (names from the universe, prices printed by
    # format_price), so no JSON escaping is needed.
    return b'{"symbol":"%s","price":"%s","time":%d}' % (
        tick.symbol.encode(),
        tick.price.encode(),
        tick.time_ms,
    )

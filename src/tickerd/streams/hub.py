"""The market-stream fan-out: trades in from the book, each event printed once, the same
frame bytes handed to every subscriber.

Theory of operation
-------------------
The hub listens to the book only once statistics are needed (:meth:`StreamHub.start`: the
first stream subscription, the first REST statistics request, or the service's start when
told so; until then the book and the feeds do no stream work at all, and the feeds hand
over plain ticks); from then on it stays attached, so the 24-hour windows and the candles
run on without gaps while clients come and go. Each applied batch goes into the windows
and the candles, and each trade of a subscribed ``@trade`` or ``@aggTrade`` stream is
printed once, into a pending list per stream.

Output leaves in rounds. :meth:`StreamHub.flush` (the transport calls it once per
event-loop turn after :attr:`StreamHub.on_pending` asked) sends the ``@trade`` events;
:meth:`StreamHub.tick` (every 100 ms) sends the ``@aggTrade`` events, every second the
``!miniTicker@arr`` and ``!ticker@arr`` arrays of the symbols whose figures changed and
every two seconds each changed symbol's ``@miniTicker`` and ``@ticker``, every 250 ms the
changed and closed candles of the ``@kline_<interval>`` streams: Binance's update speeds
(https://developers.binance.com/docs/derivatives/usds-margined-futures/websocket-market-streams).
In a round, each event becomes at most two frames — bare for ``/ws`` sockets, wrapped
``{"stream","data"}`` for combined ones — and each subscriber gets one list of those
shared frames, written with one call.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Sequence
from typing import Protocol

from ..book import PriceBook
from ..models import Tick, Trade
from .events import agg_trade, combined_frame, mini_ticker, raw_frame, ticker, trade_event
from .klines import HISTORY, Klines
from .names import Route, StreamName
from .window import DayWindows, SymbolWindow

AGG_TRADE_S = 0.1  # @aggTrade: 100 ms
ARR_S = 1.0  # !miniTicker@arr, !ticker@arr: 1 s, changed symbols only
MINI_S = 2.0  # <symbol>@miniTicker, <symbol>@ticker: 2 s
KLINE_S = 0.25  # <symbol>@kline_<interval>: 250 ms
SILENT_LISTED = 1000  # silent names listed at most by status()
ALL_MINI = "!miniTicker@arr"
ALL_TICKER = "!ticker@arr"
#: The statistics streams: (all-market name, index of the per-symbol name, payload).
STATISTICS = ((ALL_MINI, 2, mini_ticker), (ALL_TICKER, 3, ticker))


class Subscriber(Protocol):
    """A stream socket as the hub sees it."""

    @property
    def combined(self) -> bool:
        """Whether events go out wrapped ``{"stream","data"}``."""

    def deliver(self, frames: list[bytes]) -> None:
        """Write ``frames`` (complete text frames; the list and its bytes are shared with
        other subscribers: read them, never change them)."""


class StreamHub:
    """Subscriptions of every stream socket, and the events they receive."""

    def __init__(self, book: PriceBook, kline_history: int = HISTORY) -> None:
        self.book = book
        self.windows = DayWindows(book.universe)
        self.klines = Klines(book.universe, kline_history)
        self.subs: dict[str, dict[Subscriber, None]] = {}  # stream -> subscribers, in order
        self.silent: dict[str, int] = {}  # acknowledged names tickerd does not publish
        self.on_pending: Callable[[], None] = _nothing  # the transport schedules flush()
        self.events = 0  # events printed
        self.frames = 0  # frames handed to subscribers
        self._attached = False
        self._names: dict[str, tuple[str, ...]] = {}  # symbol -> its stream names
        self._trades: dict[str, list[bytes]] = {}  # @trade payloads waiting for flush()
        self._aggs: dict[str, list[bytes]] = {}  # @aggTrade payloads waiting for tick()
        self._changed_arr: set[str] = set()
        self._changed_mini: set[str] = set()
        self._next_arr = 0.0
        self._next_mini = 0.0
        self._next_kline = 0.0
        self._now_ms = 0

    # -- subscriptions --------------------------------------------------------------------

    def publishes(self, stream: StreamName, route: Route) -> bool:
        """Whether ``stream`` has events for a socket on ``route``."""
        if not stream.published_on(route):
            return False
        return not stream.symbol or stream.symbol in self.book.universe

    def add(self, sub: Subscriber, stream: StreamName, route: Route) -> None:
        """Subscribe ``sub`` (the caller keeps the connection's own list and its bound)."""
        if not self.publishes(stream, route):
            self.silent[stream.name] = self.silent.get(stream.name, 0) + 1
            return
        self.subs.setdefault(stream.name, {})[sub] = None
        if stream.kind.startswith("kline_"):
            self.klines.track(stream.symbol, stream.kind[6:])
        self.start()

    def start(self) -> None:
        """Start the statistics (once; later calls do nothing): listen to the book, have the
        feeds hand over trades, and put every price the book holds into the windows and
        candles as a price without a trade, so each priced symbol has statistics from the
        start (those restored from the store are kept as they are)."""
        if self._attached:
            return
        self._attached = True
        have = self.windows.windows  # restored from a store: already there
        seed = [Tick(*t[:3]) for t in self.book.ticks() if t.symbol not in have]
        self.windows.add(seed)
        self.klines.add(seed)
        self.book.subscribe(self.on_ticks)
        self.book.wants_trades = True

    @property
    def started(self) -> bool:
        """Whether the statistics run (see :meth:`start`)."""
        return self._attached

    def remove(self, sub: Subscriber, name: str) -> None:
        """Unsubscribe ``sub`` from ``name`` (nothing if it was not subscribed)."""
        subs = self.subs.get(name)
        if subs is not None:
            subs.pop(sub, None)
            if not subs:
                del self.subs[name]
        elif name in self.silent:
            self.silent[name] -= 1
            if not self.silent[name]:
                del self.silent[name]

    @property
    def subscriptions(self) -> int:
        """Subscriptions with events, over every socket."""
        return sum(map(len, self.subs.values()))

    # -- input ----------------------------------------------------------------------------

    def on_ticks(self, ticks: Sequence[Tick]) -> None:
        """The book's listener: every applied batch."""
        self.windows.add(ticks)
        self.klines.add(ticks)
        subs = self.subs
        names = self._names
        now = self._now_ms
        pending = False
        for tick in ticks:
            symbol = tick.symbol
            self._changed_arr.add(symbol)
            self._changed_mini.add(symbol)
            if not isinstance(tick, Trade):
                continue
            own = names.get(symbol) or self._names_of(symbol)
            if own[0] in subs:
                self.events += 1
                self._aggs.setdefault(own[0], []).append(agg_trade(tick, max(now, tick.time_ms)))
            if own[1] in subs:
                self.events += 1
                self._trades.setdefault(own[1], []).append(
                    trade_event(tick, max(now, tick.time_ms))
                )
                pending = True
        if pending:
            self.on_pending()

    def _names_of(self, symbol: str) -> tuple[str, ...]:
        low = symbol.lower()
        kinds = ("aggTrade", "trade", "miniTicker", "ticker")
        own = self._names[symbol] = tuple(f"{low}@{kind}" for kind in kinds)
        return own

    # -- output ---------------------------------------------------------------------------

    def flush(self, now_ms: int) -> None:
        """Send the pending ``@trade`` events (once per event-loop turn)."""
        self._now_ms = now_ms
        if self._trades:
            batches, self._trades = self._trades, {}
            self._send(batches)

    def tick(self, monotonic_s: float, now_ms: int) -> None:
        """The timed rounds (call every :data:`AGG_TRADE_S`): ``@aggTrade`` events, then the
        statistics when their period has passed (see :func:`next_round`); windows move to
        the service clock."""
        self._now_ms = now_ms
        self.flush(now_ms)
        batches: dict[str, list[bytes]] = {}
        if self._aggs:
            batches, self._aggs = self._aggs, {}
        if monotonic_s >= self._next_kline:
            self._next_kline = next_round(self._next_kline, monotonic_s, KLINE_S)
            self._kline_round(batches, now_ms)
        if monotonic_s >= self._next_arr:
            self._next_arr = next_round(self._next_arr, monotonic_s, ARR_S)
            self._arr_round(batches, now_ms)
        if monotonic_s >= self._next_mini:
            self._next_mini = next_round(self._next_mini, monotonic_s, MINI_S)
            self._symbol_round(batches, now_ms)
        if batches:
            self._send(batches)

    def _kline_round(self, batches: dict[str, list[bytes]], now_ms: int) -> None:
        """The candles due, for the subscribed ``@kline_<interval>`` streams."""
        for symbol, interval, payload in self.klines.due(now_ms):
            name = f"{symbol.lower()}@kline_{interval}"
            if name in self.subs:
                self.events += 1
                batches.setdefault(name, []).append(payload)

    def expire(self, now_ms: int) -> None:
        """Move every window to ``now_ms``; a symbol whose figures changed goes out in the
        next statistics rounds."""
        for symbol in self.windows.expire(now_ms):
            self._changed_arr.add(symbol)
            self._changed_mini.add(symbol)

    def _arr_round(self, batches: dict[str, list[bytes]], now_ms: int) -> None:
        """The ``!…@arr`` streams: the symbols changed (or expired) since the last round."""
        self.expire(now_ms)
        changed, self._changed_arr = self._changed_arr, set()
        for name, _, payload_of in STATISTICS:
            if name in self.subs:
                parts = [self._stats(payload_of, s, now_ms) for s in sorted(changed)]
                payload = b"[" + b",".join(p for p in parts if p) + b"]"
                if payload != b"[]":
                    self.events += 1
                    batches[name] = [payload]

    def _symbol_round(self, batches: dict[str, list[bytes]], now_ms: int) -> None:
        """The per-symbol statistics streams of the symbols changed since the last round."""
        changed, self._changed_mini = self._changed_mini, set()
        for symbol in sorted(changed):
            own = self._names.get(symbol) or self._names_of(symbol)
            for _, index, payload_of in STATISTICS:
                if own[index] in self.subs:
                    payload = self._stats(payload_of, symbol, now_ms)
                    if payload:
                        self.events += 1
                        batches[own[index]] = [payload]

    def _stats(
        self, payload_of: Callable[[str, SymbolWindow, int], bytes], symbol: str, now_ms: int
    ) -> bytes:
        window = self.windows.get(symbol)
        return b"" if window is None else payload_of(symbol, window, now_ms)

    def _send(self, batches: dict[str, list[bytes]]) -> None:
        """Frame each payload at most twice (bare, wrapped) and hand every subscriber its
        frames in one list."""
        out: dict[Subscriber, list[bytes]] = {}
        for name, payloads in batches.items():
            subs = self.subs.get(name)
            if not subs:
                continue
            raw: list[bytes] | None = None
            wrapped: list[bytes] | None = None
            for sub in subs:
                if sub.combined:
                    if wrapped is None:
                        key = name.encode()
                        wrapped = [combined_frame(key, p) for p in payloads]
                    frames = wrapped
                else:
                    if raw is None:
                        raw = [raw_frame(p) for p in payloads]
                    frames = raw
                mine = out.get(sub)
                # The round's list of a stream is shared until a subscriber needs two.
                out[sub] = frames if mine is None else mine + frames
        for sub, frames in out.items():
            self.frames += len(frames)
            sub.deliver(frames)

    def by_type(self) -> dict[str, int]:
        """Subscriptions with events per stream type (``aggTrade``, ``kline`` for every
        interval, ``!miniTicker@arr`` ...)."""
        out: dict[str, int] = {}
        for name, subs in self.subs.items():
            kind = name if name.startswith("!") else name.partition("@")[2]
            kind = "kline" if kind.startswith("kline_") else kind
            out[kind] = out.get(kind, 0) + len(subs)
        return dict(sorted(out.items()))

    def status(self, top: int = SILENT_LISTED) -> dict[str, object]:
        """What ``/status`` shows of the streams (``silent``: the ``top`` acknowledged
        names tickerd does not publish with most subscriptions, and their counts)."""
        silent = heapq.nsmallest(top, self.silent.items(), key=lambda kv: (-kv[1], kv[0]))
        return {
            "streams": len(self.subs),
            "subscriptions": self.subscriptions,
            "by_type": self.by_type(),
            "silent": dict(silent),
            "silent_total": len(self.silent),
            "silent_subscriptions": sum(self.silent.values()),
            "events": self.events,
            "frames": self.frames,
            "symbols_in_window": len(self.windows.windows),
        }


def next_round(due: float, now: float, period: float) -> float:
    """When the round after one due at ``due`` (and run at ``now``) is due: on the period's
    grid, so rounds run late by the timer do not stretch the period (a 1 s stream stays at
    one event a second); a round more than a period late starts a new grid at ``now``."""
    due += period
    return due if due > now else now + period


def _nothing() -> None:
    pass

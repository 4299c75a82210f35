"""Candles of every symbol and interval, from the book's trades: the ``@kline_<interval>``
streams and ``GET /fapi/v1/klines`` read the same candles.

https://developers.binance.com/docs/derivatives/usds-margined-futures/websocket-market-streams/Kline-Candlestick-Streams

Theory of operation
-------------------
A trade goes only into its symbol's open one-minute candle (a trade older than the open
minute counts in it). When a later trade opens the next minute, the finished minute is
rolled up: it joins the history of ``1m`` and is merged into the candle being built for
each longer interval (every Binance interval, ``1M`` included, starts on a whole minute);
the candle of an interval closes, into that interval's history, when a minute past its end
is rolled up. So a trade costs one candle update whatever the number of intervals, and the
candle of any interval *now* is its rolled-up part merged with the open minute
(:meth:`Klines.pending`).

History is bounded: at most ``history`` closed candles per symbol and interval are kept,
each as its printed REST row (the oldest leave first).

Streams: :meth:`Klines.track` marks a (symbol, interval) as subscribed; :meth:`Klines.due`,
called every 250 ms (the streams' update speed), returns every subscribed candle that
changed since the last call, and each candle that closed — by a later trade or by the clock
passing ``T`` — once more with ``x`` true.
"""

from __future__ import annotations

import bisect
from collections import deque
from collections.abc import Iterable, Iterator
from decimal import Decimal

from ..models import Tick
from ..symbols import SymbolUniverse
from .candles import MINUTE_MS, Candle, candle_span
from .names import KLINE_INTERVALS

#: Closed candles kept per symbol and interval unless told otherwise (Binance's largest
#: ``limit`` of one klines request).
HISTORY = 1500
_ROLLED = tuple(i for i in KLINE_INTERVALS if i != "1m")


class Series:
    """One symbol's candles: the open minute, the rolled-up part of each longer interval's
    candle, and the closed candles of every interval as REST rows."""

    __slots__ = ("history", "minute", "precision", "rollup")

    def __init__(self, precision: int, history: int) -> None:
        self.precision = precision
        self.minute: Candle | None = None
        self.rollup: dict[str, Candle] = {}
        self.history: dict[str, deque[tuple[int, bytes]]] = {
            i: deque(maxlen=history) for i in KLINE_INTERVALS
        }

    def pending(self, interval: str) -> list[Candle]:
        """The candles of ``interval`` not in its history yet, oldest first: one, or two
        when the rolled-up candle has ended but no minute past it has rolled up yet."""
        minute = self.minute
        if interval == "1m":
            return [minute] if minute is not None else []
        acc = self.rollup.get(interval)
        if minute is None:
            return [acc] if acc is not None else []
        if acc is None:
            return [minute.spanned(candle_span(interval, minute.open_ms))]
        if minute.open_ms <= acc.close_ms:
            now = acc.spanned((acc.open_ms, acc.close_ms))
            now.merge(minute)
            return [now]
        return [acc, minute.spanned(candle_span(interval, minute.open_ms))]

    def open_state(self) -> dict[str, object]:
        """The candles being built as plain JSON values (what the store keeps)."""
        return {
            "minute": self.minute.state() if self.minute is not None else None,
            "rollup": {i: c.state() for i, c in self.rollup.items()},
        }

    def restore_open(self, state: object) -> None:
        """Put back what :meth:`open_state` gave (ValueError, TypeError or ArithmeticError
        on anything else)."""
        if not isinstance(state, dict) or not isinstance(state.get("rollup"), dict):
            raise ValueError("not the open candles of a symbol")
        minute = state.get("minute")
        self.minute = None if minute is None else Candle.from_state(minute)
        rollup = {}
        for interval, candle in state["rollup"].items():
            if interval not in _ROLLED:
                raise ValueError(f"interval {interval!r}")
            rollup[interval] = Candle.from_state(candle)
        self.rollup = rollup

    def rows_since(self, interval: str, open_ms: int) -> list[tuple[int, bytes]]:
        """(open time, row) of the closed ``interval`` candles opened after ``open_ms``."""
        history = self.history[interval]
        out: list[tuple[int, bytes]] = []
        for entry in reversed(history):
            if entry[0] <= open_ms:
                break
            out.append(entry)
        out.reverse()
        return out

    def times(self) -> list[int]:
        """The open times in the candles being built (for the store's time check)."""
        candles = [self.minute, *self.rollup.values()]
        return [c.open_ms for c in candles if c is not None]


class Klines:
    """The candles of every symbol with a price since statistics started."""

    def __init__(self, universe: SymbolUniverse, history: int = HISTORY) -> None:
        if history < 1:
            raise ValueError(f"kline history must be at least 1 candle, not {history}")
        self.universe = universe
        self.history = history
        self.series: dict[str, Series] = {}
        self.tracked: dict[str, dict[str, None]] = {}  # streams subscribed: symbol -> intervals
        self._changed: set[str] = set()
        self._closed: list[tuple[str, str, Candle]] = []
        self._sent_closed: dict[tuple[str, str], int] = {}  # open time sent with x true

    def track(self, symbol: str, interval: str) -> None:
        """Send ``symbol``'s ``interval`` candles from :meth:`due` from now on."""
        if symbol in self.universe:
            self.tracked.setdefault(symbol, {})[interval] = None

    def add(self, ticks: Iterable[Tick]) -> None:
        """Take a batch of applied ticks."""
        series = self.series
        changed = self._changed
        for tick in ticks:
            symbol = tick.symbol
            s = series.get(symbol)
            if s is None:
                info = self.universe.get(symbol)
                if info is None:
                    continue
                s = series[symbol] = Series(info.price_precision, self.history)
            price = Decimal(tick.price)
            minute = s.minute
            if minute is None or tick.time_ms > minute.close_ms:
                if minute is not None:
                    self._roll(symbol, s, minute)
                start = tick.time_ms // MINUTE_MS * MINUTE_MS
                minute = s.minute = Candle((start, start + MINUTE_MS - 1), price)
            minute.add(price, tick)
            changed.add(symbol)

    def _roll(self, symbol: str, s: Series, minute: Candle) -> None:
        """``minute`` has ended: into the history of ``1m`` and each longer candle."""
        self._close(symbol, s, "1m", minute)
        rollup = s.rollup
        for interval in _ROLLED:
            acc = rollup.get(interval)
            if acc is not None and minute.open_ms > acc.close_ms:
                self._close(symbol, s, interval, acc)
                acc = None
            if acc is None:
                rollup[interval] = minute.spanned(candle_span(interval, minute.open_ms))
            else:
                acc.merge(minute)

    def _close(self, symbol: str, s: Series, interval: str, candle: Candle) -> None:
        s.history[interval].append((candle.open_ms, candle.row(s.precision)))
        per = self.tracked.get(symbol)
        if (
            per is not None
            and interval in per
            and self._sent_closed.get((symbol, interval)) != candle.open_ms
        ):
            self._closed.append((symbol, interval, candle))

    # -- streams --------------------------------------------------------------------------

    def due(self, now_ms: int) -> list[tuple[str, str, bytes]]:
        """(symbol, interval, event) of every subscribed candle to send now, in time order
        per stream."""
        out: list[tuple[str, str, bytes]] = []
        sent = self._sent_closed
        for symbol, interval, done in self._closed:
            out.append((symbol, interval, self._payload(symbol, interval, done, now_ms, True)))
            sent[(symbol, interval)] = done.open_ms
        self._closed = []
        changed, self._changed = self._changed, set()
        for symbol, per in self.tracked.items():
            s = self.series.get(symbol)
            if s is None:
                continue
            for interval in per:
                candles = s.pending(interval)
                for candle in candles:
                    key = (symbol, interval)
                    if candle is not candles[-1] or now_ms > candle.close_ms:
                        if sent.get(key) != candle.open_ms:  # closed: sent once, closed
                            out.append(
                                (
                                    symbol,
                                    interval,
                                    self._payload(symbol, interval, candle, now_ms, True),
                                )
                            )
                            sent[key] = candle.open_ms
                    elif symbol in changed:
                        out.append(
                            (
                                symbol,
                                interval,
                                self._payload(symbol, interval, candle, now_ms, False),
                            )
                        )
        return out

    def _payload(
        self, symbol: str, interval: str, candle: Candle, now_ms: int, closed: bool
    ) -> bytes:
        s = self.series[symbol]
        return candle.payload(symbol, interval, s.precision, max(now_ms, candle.open_ms), closed)

    # -- history --------------------------------------------------------------------------

    def rows(
        self,
        symbol: str,
        interval: str,
        *,
        limit: int,
        start_ms: int | None = None,
        end_ms: int | None = None,
    ) -> list[bytes]:
        """``symbol``'s ``interval`` candles as REST rows, oldest first, as
        ``GET /fapi/v1/klines`` selects them: open time from ``start_ms`` and up to
        ``end_ms`` (both inclusive); with ``start_ms`` the first ``limit``, else the last."""
        s = self.series.get(symbol)
        if s is None:
            return []
        candles = [(c.open_ms, c) for c in s.pending(interval)]
        every: list[tuple[int, bytes | Candle]] = [*s.history[interval], *candles]
        times = [t for t, _ in every]
        lo = 0 if start_ms is None else bisect.bisect_left(times, start_ms)
        hi = len(times) if end_ms is None else bisect.bisect_right(times, end_ms)
        if start_ms is not None:
            hi = min(hi, lo + limit)
        else:
            lo = max(lo, hi - limit)
        return [row if isinstance(row, bytes) else row.row(s.precision) for _, row in every[lo:hi]]

    def restore(
        self, symbol: str, open_state: object, rows: dict[str, list[tuple[int, bytes]]]
    ) -> Series | None:
        """Put back ``symbol``'s candles as the store kept them (None: a symbol the universe
        does not have)."""
        info = self.universe.get(symbol)
        if info is None:
            return None
        s = Series(info.price_precision, self.history)
        s.restore_open(open_state)
        for interval, entries in rows.items():
            s.history[interval].extend(sorted(entries))
        self.series[symbol] = s
        return s

    def symbols(self) -> Iterator[str]:
        """The symbols with candles."""
        return iter(self.series)

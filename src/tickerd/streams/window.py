"""24-hour rolling statistics per symbol, from the trades the book takes.

The window of the ``@miniTicker`` and ``!miniTicker@arr`` streams
(https://developers.binance.com/docs/derivatives/usds-margined-futures/websocket-market-streams/Individual-Symbol-Mini-Ticker-Stream):
Binance keeps a rolling 24-hour window, not the UTC day. Here it is kept in whole minutes:
the window at service time ``now`` holds the trades of the 1440 minutes up to and including
``now``'s minute (so up to one minute more than 24 hours), each minute a bucket of open,
high, low, close, base volume and quote volume. Buckets leave the window as the service
clock moves on (:meth:`DayWindows.expire`); high and low are kept incrementally and
recomputed from the buckets only when the bucket that held them leaves.

Prices and quantities are exact decimals: volumes are summed in a 60-digit context and
printed without an exponent or trailing zeros, prices at the symbol's ``pricePrecision``. A plain tick
(a price without a trade: a control-plane ``price.set``, a snapshot) moves the close, high
and low like a trade of quantity 0, so the statistics agree with ``ticker.price``.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from decimal import Context, Decimal

from ..models import Tick, Trade
from ..symbols import SymbolUniverse

MINUTE_MS = 60_000
WINDOW_MINUTES = 1440
_CTX = Context(prec=60)
_ZERO = Decimal(0)
_PERCENT = Decimal("0.001")  # the change percentage's decimals


class _Minute:
    __slots__ = ("close", "count", "first_id", "high", "last_id", "low", "minute", "open",
                 "quote", "volume")  # fmt: skip

    def __init__(self, minute: int, price: Decimal) -> None:
        self.minute = minute
        self.open = self.high = self.low = self.close = price
        self.volume = self.quote = _ZERO
        self.first_id = self.last_id = -1  # no trade (only plain prices) in this minute
        self.count = 0

    def state(self) -> list[int | str]:
        """The minute as plain JSON values (what the store keeps)."""
        texts = (self.open, self.high, self.low, self.close, self.volume, self.quote)
        return [*(str(t) for t in texts), self.first_id, self.last_id, self.count]

    @classmethod
    def from_state(cls, minute: int, state: object) -> _Minute:
        """The minute :meth:`state` gave (ValueError, TypeError or ArithmeticError on
        anything else)."""
        if not isinstance(state, list) or len(state) != 9:
            raise ValueError("not a minute of a 24-hour window")
        texts, ids = state[:6], state[6:]
        if not all(type(t) is str for t in texts) or not all(type(n) is int for n in ids):
            raise TypeError("not a minute of a 24-hour window")
        values = [Decimal(t) for t in texts]
        if not all(v.is_finite() and v >= 0 for v in values):
            raise ValueError("a negative or infinite figure")
        bucket = cls(minute, values[0])
        bucket.high, bucket.low, bucket.close, bucket.volume, bucket.quote = values[1:]
        bucket.first_id, bucket.last_id, bucket.count = ids
        return bucket


class SymbolWindow:
    """One symbol's rolling window (see the module docstring)."""

    __slots__ = ("buckets", "count", "high", "last_qty", "low", "precision", "quote", "volume")

    def __init__(self, precision: int) -> None:
        self.precision = precision
        self.buckets: deque[_Minute] = deque()
        self.high = self.low = _ZERO
        self.volume = self.quote = _ZERO
        self.count = 0  # trades in the window
        self.last_qty = "0"

    def add(
        self, time_ms: int, price: Decimal, qty: Decimal, first_id: int = -1, last_id: int = -1
    ) -> None:
        """One trade of ids ``first_id``..``last_id`` (a plain price: ``qty`` 0, ids -1)."""
        minute = time_ms // MINUTE_MS
        buckets = self.buckets
        if not buckets:
            self.high = self.low = price
        if not buckets or minute > buckets[-1].minute:
            buckets.append(_Minute(minute, price))
        bucket = buckets[-1]  # an older trade counts in the newest minute
        bucket.close = price
        bucket.high = max(bucket.high, price)
        bucket.low = min(bucket.low, price)
        self.high = max(self.high, price)
        self.low = min(self.low, price)
        if first_id >= 0:
            if bucket.first_id < 0:
                bucket.first_id = first_id
            bucket.last_id = last_id
            trades = last_id - first_id + 1
            bucket.count += trades
            self.count += trades
        if qty:
            quote = _CTX.multiply(price, qty)
            bucket.volume = _CTX.add(bucket.volume, qty)
            bucket.quote = _CTX.add(bucket.quote, quote)
            self.volume = _CTX.add(self.volume, qty)
            self.quote = _CTX.add(self.quote, quote)

    def minutes_since(self, minute: int) -> list[tuple[int, list[int | str]]]:
        """(minute, state) of the buckets from ``minute`` on (what the store writes)."""
        out = []
        for bucket in reversed(self.buckets):  # the newest first: usually one or two
            if bucket.minute < minute:
                break
            out.append((bucket.minute, bucket.state()))
        out.reverse()
        return out

    def restore(self, minutes: list[tuple[int, object]], last_qty: str) -> None:
        """Put back the buckets :meth:`minutes_since` gave (in time order; the caller has
        checked their times), and the last trade's quantity."""
        for minute, state in minutes:
            bucket = _Minute.from_state(minute, state)
            if self.buckets and minute <= self.buckets[-1].minute:
                raise ValueError("minutes out of order")
            self.buckets.append(bucket)
            self.volume = _CTX.add(self.volume, bucket.volume)
            self.quote = _CTX.add(self.quote, bucket.quote)
            self.count += bucket.count
        if self.buckets:
            self.high = max(b.high for b in self.buckets)
            self.low = min(b.low for b in self.buckets)
        self.last_qty = last_qty

    def expire(self, now_ms: int) -> bool:
        """Drop the minutes before the window of ``now_ms``; True if any left.

        The last bucket stays even when old: the close is the last price however old.
        """
        first = now_ms // MINUTE_MS - WINDOW_MINUTES + 1
        buckets = self.buckets
        dropped = False
        while len(buckets) > 1 and buckets[0].minute < first:
            gone = buckets.popleft()
            self.volume = _CTX.subtract(self.volume, gone.volume)
            self.quote = _CTX.subtract(self.quote, gone.quote)
            self.count -= gone.count
            dropped = True
        if buckets and buckets[0].minute < first:  # only the last, stale minute is left
            last = buckets[0]
            if last.count or last.volume or last.open != last.close or last.high != last.low:
                buckets[0] = _Minute(first - 1, last.close)
                self.volume = self.quote = _ZERO
                self.count = 0
                dropped = True
        if dropped:
            self.high = max(b.high for b in buckets)
            self.low = min(b.low for b in buckets)
        return dropped

    def mini(self) -> tuple[str, str, str, str, str, str]:
        """(close, open, high, low, base volume, quote volume) as printed on the wire."""
        prec = self.precision
        buckets = self.buckets
        return (
            f"{buckets[-1].close:.{prec}f}",
            f"{buckets[0].open:.{prec}f}",
            f"{self.high:.{prec}f}",
            f"{self.low:.{prec}f}",
            format(self.volume.normalize(_CTX), "f"),
            format(self.quote.normalize(_CTX), "f"),
        )

    def ticker(self, now_ms: int) -> tuple[str, ...]:
        """The ``24hrTicker`` figures: change, change %, weighted average, close, last
        quantity, open, high, low, base and quote volume (texts), then window open and
        close time, first and last trade id and trade count (integers as texts)."""
        prec = self.precision
        buckets = self.buckets
        close, open_ = buckets[-1].close, buckets[0].open
        step = Decimal(1).scaleb(-prec)
        change = _CTX.subtract(close, open_)
        percent = (
            _CTX.divide(_CTX.multiply(change, Decimal(100)), open_).quantize(_PERCENT, context=_CTX)
            if open_
            else _PERCENT
        )
        average = (_CTX.divide(self.quote, self.volume) if self.volume else _ZERO).quantize(
            step, context=_CTX
        )
        ids = [b for b in buckets if b.first_id >= 0]
        first_id, last_id = (ids[0].first_id, ids[-1].last_id) if ids else (-1, -1)
        window_open = (now_ms // MINUTE_MS - WINDOW_MINUTES + 1) * MINUTE_MS
        mini = self.mini()
        return (
            f"{change:.{prec}f}", f"{percent:f}", f"{average:f}", mini[0], self.last_qty,
            *mini[1:], str(window_open), str(now_ms), str(first_id), str(last_id),
            str(self.count),
        )  # fmt: skip


class DayWindows:
    """Every symbol's :class:`SymbolWindow`, created at its first trade."""

    def __init__(self, universe: SymbolUniverse) -> None:
        self.universe = universe
        self.windows: dict[str, SymbolWindow] = {}

    def add(self, ticks: Iterable[Tick]) -> None:
        """Take a batch of applied ticks (a :class:`Trade` counts its quantity)."""
        windows = self.windows
        for tick in ticks:
            window = windows.get(tick.symbol)
            if window is None:
                info = self.universe.get(tick.symbol)
                if info is None:
                    continue
                window = windows[tick.symbol] = SymbolWindow(info.price_precision)
            if isinstance(tick, Trade):
                window.last_qty = tick.qty
                window.add(
                    tick.time_ms, Decimal(tick.price), Decimal(tick.qty), tick.first_id,
                    tick.last_id,
                )  # fmt: skip
            else:
                window.add(tick.time_ms, Decimal(tick.price), _ZERO)

    def expire(self, now_ms: int) -> list[str]:
        """Move every window to ``now_ms``; the symbols whose figures changed."""
        return [s for s, w in self.windows.items() if w.expire(now_ms)]

    def get(self, symbol: str) -> SymbolWindow | None:
        """``symbol``'s window, if it has traded."""
        return self.windows.get(symbol)

"""Candles of the ``<symbol>@kline_<interval>`` streams, from the book's trades.

https://developers.binance.com/docs/derivatives/usds-margined-futures/websocket-market-streams/Kline-Candlestick-Streams

A candle covers ``[t, T]`` with ``T = t + interval - 1`` ms; minutes to days are aligned to
the epoch, weeks start on Monday 00:00 UTC and months on the first day of the calendar
month. A (symbol, interval) is tracked from its first subscription on, so the first candle
holds the trades since then. A trade goes into the candle of its time; a trade older than
the open candle counts in it. ``V``/``Q`` are the taker-buy base and quote volumes (trades
whose buyer is not the maker); ``B`` is always ``"0"`` (documented as ignored). A plain
price (no trade) moves the prices like a trade of quantity 0, as in the 24-hour window.

:meth:`Klines.due` is called every 250 ms (the streams' update speed): it returns every
candle that changed since the last call, and each candle that closed — by a later trade or
by the clock passing ``T`` — once more with ``x`` true.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from decimal import Context, Decimal

from ..models import Tick, Trade
from ..symbols import SymbolUniverse
from .names import KLINE_INTERVALS

MINUTE_MS = 60_000
_DAY_MS = 1440 * MINUTE_MS
_WEEK_MS = 7 * _DAY_MS
_MONDAY_MS = -3 * _DAY_MS  # 1969-12-29, the Monday before the epoch (a Thursday)
#: Fixed-length intervals in ms (``1M`` follows the calendar).
INTERVAL_MS: dict[str, int] = {
    "1m": MINUTE_MS, "3m": 3 * MINUTE_MS, "5m": 5 * MINUTE_MS, "15m": 15 * MINUTE_MS,
    "30m": 30 * MINUTE_MS, "1h": 60 * MINUTE_MS, "2h": 120 * MINUTE_MS, "4h": 240 * MINUTE_MS,
    "6h": 360 * MINUTE_MS, "8h": 480 * MINUTE_MS, "12h": 720 * MINUTE_MS, "1d": _DAY_MS,
    "3d": 3 * _DAY_MS, "1w": _WEEK_MS,
}  # fmt: skip
assert set(INTERVAL_MS) | {"1M"} == set(KLINE_INTERVALS)
_CTX = Context(prec=60)
_ZERO = Decimal(0)
_KLINE = (
    b'{"e":"kline","E":%d,"s":"%s","k":{"t":%d,"T":%d,"s":"%s","i":"%s","f":%d,"L":%d,'
    b'"o":"%s","c":"%s","h":"%s","l":"%s","v":"%s","n":%d,"x":%s,"q":"%s","V":"%s",'
    b'"Q":"%s","B":"0"}}'
)


def candle_span(interval: str, time_ms: int) -> tuple[int, int]:
    """The open and close time (inclusive) of the ``interval`` candle holding ``time_ms``."""
    if interval == "1M":
        day = datetime.fromtimestamp(time_ms // 1000, UTC)
        first = datetime(day.year, day.month, 1, tzinfo=UTC)
        after = datetime(day.year + day.month // 12, day.month % 12 + 1, 1, tzinfo=UTC)
        return int(first.timestamp()) * 1000, int(after.timestamp()) * 1000 - 1
    step = INTERVAL_MS[interval]
    base = _MONDAY_MS if interval == "1w" else 0
    start = (time_ms - base) // step * step + base
    return start, start + step - 1


class Candle:
    """One candle being built."""

    __slots__ = ("close", "close_ms", "count", "first_id", "high", "last_id", "low", "open",
                 "open_ms", "quote", "taker_quote", "taker_volume", "volume")  # fmt: skip

    def __init__(self, span: tuple[int, int], price: Decimal) -> None:
        self.open_ms, self.close_ms = span
        self.open = self.high = self.low = self.close = price
        self.volume = self.quote = self.taker_volume = self.taker_quote = _ZERO
        self.first_id = self.last_id = -1
        self.count = 0

    def add(self, price: Decimal, tick: Tick) -> None:
        """One trade (or plain price) inside the candle."""
        self.close = price
        self.high = max(self.high, price)
        self.low = min(self.low, price)
        if not isinstance(tick, Trade):
            return
        if self.first_id < 0:
            self.first_id = tick.first_id
        self.last_id = tick.last_id
        self.count += tick.last_id - tick.first_id + 1
        qty = Decimal(tick.qty)
        if qty:
            quote = _CTX.multiply(price, qty)
            self.volume = _CTX.add(self.volume, qty)
            self.quote = _CTX.add(self.quote, quote)
            if not tick.maker:  # the buyer took: a taker buy
                self.taker_volume = _CTX.add(self.taker_volume, qty)
                self.taker_quote = _CTX.add(self.taker_quote, quote)

    def payload(
        self, symbol: str, interval: str, precision: int, event_ms: int, closed: bool
    ) -> bytes:
        """The ``kline`` event of this candle."""
        sym = symbol.encode()
        return _KLINE % (
            event_ms, sym, self.open_ms, self.close_ms, sym, interval.encode(), self.first_id,
            self.last_id, _price(self.open, precision), _price(self.close, precision),
            _price(self.high, precision), _price(self.low, precision), _amount(self.volume),
            self.count, b"true" if closed else b"false", _amount(self.quote),
            _amount(self.taker_volume), _amount(self.taker_quote),
        )  # fmt: skip


def _price(value: Decimal, precision: int) -> bytes:
    return f"{value:.{precision}f}".encode()


def _amount(value: Decimal) -> bytes:
    return format(value.normalize(_CTX), "f").encode()


class Klines:
    """The candles of every tracked (symbol, interval)."""

    def __init__(self, universe: SymbolUniverse) -> None:
        self.universe = universe
        self.tracked: dict[str, dict[str, Candle | None]] = {}
        self._changed: set[tuple[str, str]] = set()
        self._closed: list[tuple[str, str, Candle]] = []

    def track(self, symbol: str, interval: str) -> None:
        """Build ``symbol``'s ``interval`` candles from now on."""
        if symbol in self.universe:
            self.tracked.setdefault(symbol, {}).setdefault(interval, None)

    def add(self, ticks: Iterable[Tick]) -> None:
        """Take a batch of applied ticks."""
        tracked = self.tracked
        for tick in ticks:
            per = tracked.get(tick.symbol)
            if not per:
                continue
            price = Decimal(tick.price)
            for interval, held in per.items():
                candle = held
                if candle is None or tick.time_ms > candle.close_ms:
                    if candle is not None:
                        self._closed.append((tick.symbol, interval, candle))
                    candle = per[interval] = Candle(candle_span(interval, tick.time_ms), price)
                candle.add(price, tick)
                self._changed.add((tick.symbol, interval))

    def due(self, now_ms: int) -> list[tuple[str, str, bytes]]:
        """(symbol, interval, event) of every candle to send now, in time order per stream."""
        out: list[tuple[str, str, bytes]] = []
        for symbol, interval, done in self._closed:
            out.append((symbol, interval, self._payload(symbol, interval, done, now_ms, True)))
        self._closed = []
        for symbol, per in self.tracked.items():
            for interval, candle in per.items():
                if candle is None:
                    continue
                if now_ms > candle.close_ms:  # the clock closed it: sent once, closed
                    out.append(
                        (symbol, interval, self._payload(symbol, interval, candle, now_ms, True))
                    )
                    per[interval] = None
                    self._changed.discard((symbol, interval))
                elif (symbol, interval) in self._changed:
                    out.append(
                        (symbol, interval, self._payload(symbol, interval, candle, now_ms, False))
                    )
        self._changed.clear()
        return out

    def _payload(
        self, symbol: str, interval: str, candle: Candle, now_ms: int, closed: bool
    ) -> bytes:
        info = self.universe.get(symbol)
        precision = info.price_precision if info is not None else 8
        return candle.payload(symbol, interval, precision, max(now_ms, candle.open_ms), closed)

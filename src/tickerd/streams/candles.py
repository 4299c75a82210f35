"""One candle of the ``@kline_<interval>`` streams and of ``GET /fapi/v1/klines``: its span,
its figures, and how it prints.

https://developers.binance.com/docs/derivatives/usds-margined-futures/websocket-market-streams/Kline-Candlestick-Streams
https://developers.binance.com/docs/derivatives/usds-margined-futures/market-data/rest-api/Kline-Candlestick-Data

A candle covers ``[t, T]`` with ``T = t + interval - 1`` ms; minutes to days are aligned to
the epoch, weeks start on Monday 00:00 UTC and months on the first day of the calendar
month. ``V``/``Q`` are the taker-buy base and quote volumes (trades whose buyer is not the
maker); ``B`` (the REST row's last field) is always ``"0"`` (documented as ignored). A plain
price (no trade) moves the prices like a trade of quantity 0, as in the 24-hour window.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Context, Decimal

from ..models import Tick, Trade
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
_ROW = b'[%d,"%s","%s","%s","%s","%s",%d,"%s",%d,"%s","%s","0"]'
_PRICES = ("open", "high", "low", "close")
_AMOUNTS = ("volume", "quote", "taker_volume", "taker_quote")


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
        if price > self.high:
            self.high = price
        elif price < self.low:
            self.low = price
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

    def merge(self, later: Candle) -> None:
        """Take in ``later``, a candle of the trades after this one's (a minute rolled up
        into a longer interval)."""
        self.close = later.close
        self.high = max(self.high, later.high)
        self.low = min(self.low, later.low)
        if later.first_id >= 0:
            if self.first_id < 0:
                self.first_id = later.first_id
            self.last_id = later.last_id
        self.count += later.count
        if later.volume or later.quote:
            self.volume = _CTX.add(self.volume, later.volume)
            self.quote = _CTX.add(self.quote, later.quote)
            self.taker_volume = _CTX.add(self.taker_volume, later.taker_volume)
            self.taker_quote = _CTX.add(self.taker_quote, later.taker_quote)

    def spanned(self, span: tuple[int, int]) -> Candle:
        """A copy of this candle over ``span``."""
        copy = Candle(span, self.open)
        copy.merge(self)
        return copy

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

    def row(self, precision: int) -> bytes:
        """The candle as a row of ``GET /fapi/v1/klines``: open time, open, high, low,
        close, volume, close time, quote volume, trades, taker-buy base and quote volume,
        ``"0"``."""
        return _ROW % (
            self.open_ms, _price(self.open, precision), _price(self.high, precision),
            _price(self.low, precision), _price(self.close, precision), _amount(self.volume),
            self.close_ms, _amount(self.quote), self.count, _amount(self.taker_volume),
            _amount(self.taker_quote),
        )  # fmt: skip

    def state(self) -> list[int | str]:
        """The candle as plain JSON values (what the store keeps)."""
        return [
            self.open_ms, self.close_ms, *(str(getattr(self, k)) for k in _PRICES),
            *(str(getattr(self, k)) for k in _AMOUNTS), self.first_id, self.last_id, self.count,
        ]  # fmt: skip

    @classmethod
    def from_state(cls, state: list[int | str]) -> Candle:
        """The candle :meth:`state` gave (raises ValueError, TypeError or ArithmeticError on
        anything else)."""
        if not isinstance(state, list) or len(state) != 13:
            raise ValueError("not a candle")
        open_ms, close_ms, *texts = state[:10]
        first_id, last_id, count = state[10:]
        numbers = (open_ms, close_ms, first_id, last_id, count)
        if not all(type(n) is int for n in numbers) or not all(type(t) is str for t in texts):
            raise TypeError("not a candle")
        assert isinstance(open_ms, int) and isinstance(close_ms, int)
        candle = cls((open_ms, close_ms), _ZERO)
        for name, text in zip((*_PRICES, *_AMOUNTS), texts, strict=True):
            value = Decimal(str(text))
            if not value.is_finite() or value < 0:
                raise ValueError(f"{name} {text!r}")
            setattr(candle, name, value)
        candle.first_id, candle.last_id, candle.count = (int(n) for n in (first_id, last_id, count))
        return candle


def _price(value: Decimal, precision: int) -> bytes:
    return f"{value:.{precision}f}".encode()


def _amount(value: Decimal) -> bytes:
    return format(value.normalize(_CTX), "f").encode()

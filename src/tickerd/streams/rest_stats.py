"""The REST twins of the market-stream statistics, sans I/O: ``GET /fapi/v1/ticker/24hr``
and ``GET /fapi/v1/klines``, read from the hub's 24-hour windows and candles (the same
figures the ``@ticker``, ``@miniTicker`` and ``@kline_<interval>`` streams show).

Pages under https://developers.binance.com/docs/derivatives/usds-margined-futures/ :

- market-data/rest-api/24hr-Ticker-Price-Change-Statistics: ``symbol`` optional; one object
  or an array of them, keys ``symbol, priceChange, priceChangePercent, weightedAvgPrice,
  lastPrice, lastQty, openPrice, highPrice, lowPrice, volume, quoteVolume, openTime,
  closeTime, firstId, lastId, count`` (prices and volumes strings, times and ids integers)
- market-data/rest-api/Kline-Candlestick-Data: ``symbol``, ``interval`` mandatory;
  ``startTime``, ``endTime``, ``limit`` (default 500, max 1500); rows of open time, open,
  high, low, close, volume, close time, quote volume, trades, taker-buy base and quote
  volume, ignore
- error-code: -1100, -1102, -1105, -1120, -1121, -1130, -1023

The first request starts the statistics (:meth:`StreamHub.start`) if nothing else has.
The caller (:class:`~tickerd.rest.RestApi`) charges the weight and checks which parameter
names are read; this module checks their values and answers (status, body bytes).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import orjson

from ..errors import MESSAGES, ErrorCode
from .hub import StreamHub
from .names import KLINE_INTERVALS

#: ``GET /fapi/v1/klines``'s ``limit``: default and largest.
KLINES_DEFAULT_LIMIT = 500
KLINES_MAX_LIMIT = 1500
TICKER_PARAMS = frozenset({"symbol"})
KLINES_PARAMS = frozenset({"symbol", "interval", "startTime", "endTime", "limit"})
_NUMBER = "^[0-9]{1,20}$"  # the legal range Binance names for LONG and INT parameters
_NUMBER_RE = re.compile(r"[0-9]{1,20}\Z")
_INTERVALS = frozenset(KLINE_INTERVALS)
_TICKER = (
    b'{"symbol":"%s","priceChange":"%s","priceChangePercent":"%s","weightedAvgPrice":"%s",'
    b'"lastPrice":"%s","lastQty":"%s","openPrice":"%s","highPrice":"%s","lowPrice":"%s",'
    b'"volume":"%s","quoteVolume":"%s","openTime":%s,"closeTime":%s,"firstId":%s,'
    b'"lastId":%s,"count":%s}'
)
Answer = tuple[int, bytes]


def error(code: ErrorCode, *args: str) -> Answer:
    """HTTP 400 and Binance's bare ``{"code","msg"}``."""
    return 400, orjson.dumps({"code": int(code), "msg": MESSAGES[code].format(*args)})


def klines_limit(pairs: Sequence[tuple[str, str]]) -> int:
    """The ``limit`` a klines request asks for, as its weight counts it (the default when
    it sends none or one that is not a number)."""
    for name, value in pairs:
        if name == "limit" and _NUMBER_RE.match(value):
            return int(value)
    return KLINES_DEFAULT_LIMIT


class RestStatistics:
    """Answers the two statistics endpoints from a :class:`StreamHub`."""

    def __init__(self, hub: StreamHub) -> None:
        self.hub = hub
        self.universe = hub.book.universe

    def ticker_24hr(self, params: dict[str, str], now_ms: int) -> Answer:
        """``GET /fapi/v1/ticker/24hr``: one TRADING symbol with a price, or every one (by
        symbol); a symbol with no price, or not TRADING, is -1121 (as ``ticker/price``)."""
        hub = self.hub
        hub.start()
        hub.expire(now_ms)
        symbol = params.get("symbol")
        if symbol is None:
            names = sorted(s for s in hub.windows.windows if self._trading(s))
            return 200, b"[" + b",".join(self._ticker(s, now_ms) for s in names) + b"]"
        if not symbol:
            return error(ErrorCode.PARAM_EMPTY, "symbol")
        if not self._trading(symbol) or hub.windows.get(symbol) is None:
            return error(ErrorCode.BAD_SYMBOL)
        return 200, self._ticker(symbol, now_ms)

    def _trading(self, symbol: str) -> bool:
        info = self.universe.get(symbol)
        return info is not None and info.status == "TRADING"

    def _ticker(self, symbol: str, now_ms: int) -> bytes:
        window = self.hub.windows.windows[symbol]
        return _TICKER % (symbol.encode(), *(f.encode() for f in window.ticker(now_ms)))

    def klines(self, params: dict[str, str], now_ms: int) -> Answer:
        """``GET /fapi/v1/klines``: the candles kept, selected as Binance does."""
        for name in ("symbol", "interval"):
            value = params.get(name)
            if value is None:
                return error(ErrorCode.MANDATORY_PARAM_EMPTY_OR_MALFORMED, name)
            if not value:
                return error(ErrorCode.PARAM_EMPTY, name)
        numbers: dict[str, int] = {}
        for name in ("startTime", "endTime", "limit"):
            text = params.get(name)
            if text is None:
                continue
            if not _NUMBER_RE.match(text):
                return error(ErrorCode.ILLEGAL_CHARS, name, _NUMBER)
            numbers[name] = int(text)
        limit = numbers.get("limit", KLINES_DEFAULT_LIMIT)
        if not 1 <= limit <= KLINES_MAX_LIMIT:
            return error(ErrorCode.INVALID_PARAMETER, "limit")
        start, end = numbers.get("startTime"), numbers.get("endTime")
        if start is not None and end is not None and start > end:
            return error(ErrorCode.START_AFTER_END)
        symbol, interval = params["symbol"], params["interval"]
        if symbol not in self.universe:
            return error(ErrorCode.BAD_SYMBOL)
        if interval not in _INTERVALS:
            return error(ErrorCode.BAD_INTERVAL)
        self.hub.start()
        rows = self.hub.klines.rows(symbol, interval, limit=limit, start_ms=start, end_ms=end)
        return 200, b"[" + b",".join(rows) + b"]"

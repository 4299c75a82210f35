"""Request weights and limits, as data. Each row names the Binance page it copies.

Pages (developers.binance.com/docs/derivatives/usds-margined-futures/...):
- WS ``ticker.price``: market-data/websocket-api/Symbol-Price-Ticker
- REST ``/fapi/v1/ticker/price``, ``/fapi/v2/ticker/price``: market-data/rest-api/Symbol-Price-Ticker
- REST ``ping``, ``time``, ``exchangeInfo``, ``ticker/24hr``, ``klines``: market-data/rest-api/*
- limits and handshake cost: websocket-api-general-info, general-info
"""

from __future__ import annotations

from dataclasses import dataclass

MINUTE_MS = 60_000


@dataclass(frozen=True, slots=True)
class Weight:
    """The weight of one request: ``with_symbol`` when a symbol is named, else ``without``."""

    with_symbol: int
    without_symbol: int
    source: str

    def of(self, has_symbol: bool) -> int:
        """The weight for a request that does or does not name a symbol."""
        return self.with_symbol if has_symbol else self.without_symbol


WS_API: dict[str, Weight] = {
    "ticker.price": Weight(1, 2, "market-data/websocket-api/Symbol-Price-Ticker"),
}

REST: dict[str, Weight] = {
    "/fapi/v1/ticker/price": Weight(1, 2, "market-data/rest-api/Symbol-Price-Ticker"),
    "/fapi/v2/ticker/price": Weight(1, 2, "market-data/rest-api/Symbol-Price-Ticker-v2"),
    "/fapi/v1/ping": Weight(1, 1, "market-data/rest-api/Test-Connectivity"),
    "/fapi/v1/time": Weight(1, 1, "market-data/rest-api/Check-Server-Time"),
    "/fapi/v1/exchangeInfo": Weight(1, 1, "market-data/rest-api/Exchange-Information"),
    "/fapi/v1/ticker/24hr": Weight(
        1, 40, "market-data/rest-api/24hr-Ticker-Price-Change-Statistics"
    ),
    # By ``limit`` (KLINES_BY_LIMIT); this row is the weight of the default limit, 500.
    "/fapi/v1/klines": Weight(5, 5, "market-data/rest-api/Kline-Candlestick-Data"),
}
# ``GET /fapi/v1/klines`` by ``limit`` (market-data/rest-api/Kline-Candlestick-Data):
# (limits below this, weight), in order; a larger limit weighs KLINES_MAX_WEIGHT.
KLINES_BY_LIMIT: tuple[tuple[int, int], ...] = ((100, 1), (500, 2), (1001, 5))
KLINES_MAX_WEIGHT = 10


def klines_weight(limit: int) -> int:
    """The weight of a klines request for ``limit`` candles."""
    for below, weight in KLINES_BY_LIMIT:
        if limit < below:
            return weight
    return KLINES_MAX_WEIGHT


# A REST request no endpoint serves (unknown path, wrong method): Binance publishes no
# weight for it; tickerd charges this much, so such requests are not free (DECISIONS.md).
REST_UNROUTED_WEIGHT = 1

# REQUEST_WEIGHT per IP per minute, shared by REST and the WebSocket API (general-info).
REQUEST_WEIGHT_LIMIT = 2400
# Opening a WebSocket API connection costs this much weight (websocket-api-general-info).
WS_HANDSHAKE_WEIGHT = 5
# Connection attempts per IP per 5 minutes (spot's figure; futures publishes none).
CONNECT_LIMIT = 300
CONNECT_WINDOW_MS = 5 * MINUTE_MS

# IP ban lengths for the 1st, 2nd, ... ban; Binance states "from 2 minutes to 3 days"
# (general-info) without the steps between, so these steps are tickerd's choice.
BAN_STEPS_MS: tuple[int, ...] = (
    2 * MINUTE_MS,
    10 * MINUTE_MS,
    60 * MINUTE_MS,
    6 * 60 * MINUTE_MS,
    24 * 60 * MINUTE_MS,
    3 * 24 * 60 * MINUTE_MS,
)
# A ban is forgiven (the next one starts again at the first step) after a day without one.
BAN_MEMORY_MS = 24 * 60 * MINUTE_MS
# Requests still sent after a 429 in the same window before the IP is banned (418).
BAN_GRACE_REQUESTS = 10

"""tickerd: a self-hosted, Binance-compatible price service.

Serves the Binance USDⓈ-M Futures WebSocket API method ``ticker.price``
(https://developers.binance.com/docs/derivatives/usds-margined-futures/market-data/websocket-api/Symbol-Price-Ticker)
from a local price book.
"""

from .book import PriceBook, TickRejected
from .clock import Clock, ManualClock, SystemClock
from .config import Settings
from .errors import (
    BinanceError,
    ErrorCode,
    IPBannedError,
    RateLimitError,
    RequestError,
    ServerError,
    TickerdError,
)
from .models import SymbolInfo, Tick
from .protocol import Protocol, Session
from .ratelimit import RateLimiter
from .rest import RestApi, RestReply
from .symbols import SymbolUniverse

__all__ = [
    "BinanceError",
    "Clock",
    "ErrorCode",
    "IPBannedError",
    "ManualClock",
    "PriceBook",
    "Protocol",
    "RateLimitError",
    "RateLimiter",
    "RequestError",
    "RestApi",
    "RestReply",
    "ServerError",
    "Session",
    "Settings",
    "SymbolInfo",
    "SymbolUniverse",
    "SystemClock",
    "Tick",
    "TickRejected",
    "TickerdError",
]

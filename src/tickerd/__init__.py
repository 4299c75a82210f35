"""tickerd: a self-hosted, Binance-compatible price service.

Serves the Binance USDⓈ-M Futures WebSocket API method ``ticker.price``
(https://developers.binance.com/docs/derivatives/usds-margined-futures/market-data/websocket-api/Symbol-Price-Ticker)
from a local price book.
"""

from importlib import metadata
from typing import TYPE_CHECKING, Any

# First: it chooses between the compiled request path and its sources (hotpath.py).
from . import hotpath  # noqa: F401
from .book import PriceBook, TickRejected
from .clock import Clock, ControlledClock, ManualClock, ReplayClock, SystemClock
from .config import Settings
from .errors import (
    BinanceError,
    ConnectionLost,
    ErrorCode,
    IPBannedError,
    ProtocolError,
    RateLimitError,
    RequestError,
    RequestTimeout,
    ServerError,
    TickerdError,
)
from .models import PriceTicker, SymbolInfo, Tick
from .protocol import Protocol, Session
from .ratelimit import RateLimiter
from .rest import RestApi, RestReply
from .symbols import SymbolUniverse

if TYPE_CHECKING:
    from .client import Client, SyncClient

try:
    #: The installed distribution's version (``pip show tickerd``).
    __version__ = metadata.version("tickerd")
except metadata.PackageNotFoundError:  # pragma: no cover - run from a source tree never installed
    __version__ = "0+unknown"

__all__ = [
    "BinanceError",
    "Client",
    "Clock",
    "ConnectionLost",
    "ControlledClock",
    "ErrorCode",
    "IPBannedError",
    "ManualClock",
    "PriceBook",
    "PriceTicker",
    "Protocol",
    "ProtocolError",
    "RateLimitError",
    "RateLimiter",
    "ReplayClock",
    "RequestError",
    "RequestTimeout",
    "RestApi",
    "RestReply",
    "ServerError",
    "Session",
    "Settings",
    "SymbolInfo",
    "SymbolUniverse",
    "SyncClient",
    "SystemClock",
    "Tick",
    "TickRejected",
    "TickerdError",
    "__version__",
]

# The client (picows, asyncio) loads on first use, so ``import tickerd`` stays cheap for the
# pytest plugin (tickerd.testing), which every pytest run of an environment with tickerd loads.
_LAZY = {"Client", "SyncClient"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from . import client

        return getattr(client, name)
    raise AttributeError(f"module 'tickerd' has no attribute {name!r}")

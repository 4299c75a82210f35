"""Binance USDⓈ-M market streams, sans I/O: stream names and routes, per-socket sessions,
24-hour windows and the fan-out hub (the transport's side is ``transport/streams.py``).

https://developers.binance.com/docs/derivatives/usds-margined-futures/websocket-market-streams
"""

from .hub import StreamHub
from .names import Route, StreamName, parse_name, parse_path
from .session import StreamLimits, StreamSession

__all__ = [
    "Route",
    "StreamHub",
    "StreamLimits",
    "StreamName",
    "StreamSession",
    "parse_name",
    "parse_path",
]

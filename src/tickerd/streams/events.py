"""Market-stream event payloads, printed straight to bytes.

Keys, order and types as Binance documents them (prices and quantities JSON strings, times
integer milliseconds):

* aggTrade: https://developers.binance.com/docs/derivatives/usds-margined-futures/websocket-market-streams/Aggregate-Trade-Streams
* trade: the ``@trade`` stream of the ``/public`` route (the same trades, one event each)
* 24hrMiniTicker: https://developers.binance.com/docs/derivatives/usds-margined-futures/websocket-market-streams/Individual-Symbol-Mini-Ticker-Stream
  and .../All-Market-Mini-Tickers-Stream (an array of the same objects)
* 24hrTicker: .../Individual-Symbol-Ticker-Streams and .../All-Market-Tickers-Streams

Symbols come from the universe and prices, quantities from the validated trade, so every
text is plain ASCII that needs no JSON escaping. ``nq`` (the quantity without RPI orders)
equals ``q``: tickerd's trades have no RPI part.
"""

from __future__ import annotations

from ..frames import text_header
from ..models import Trade
from .window import SymbolWindow

_BOOL = (b"false", b"true")
_AGG = (
    b'{"e":"aggTrade","E":%d,"s":"%s","a":%d,"p":"%s","q":"%s","nq":"%s",'
    b'"f":%d,"l":%d,"T":%d,"m":%s}'
)
_TRADE = b'{"e":"trade","E":%d,"T":%d,"s":"%s","t":%d,"p":"%s","q":"%s","X":"MARKET","m":%s}'
_TICKER = (
    b'{"e":"24hrTicker","E":%d,"s":"%s","p":"%s","P":"%s","w":"%s","c":"%s","Q":"%s",'
    b'"o":"%s","h":"%s","l":"%s","v":"%s","q":"%s","O":%s,"C":%s,"F":%s,"L":%s,"n":%s}'
)
_MINI = (
    b'{"e":"24hrMiniTicker","E":%d,"s":"%s","c":"%s","o":"%s","h":"%s","l":"%s","v":"%s","q":"%s"}'
)


def agg_trade(trade: Trade, event_ms: int) -> bytes:
    """The ``aggTrade`` event of ``trade``."""
    qty = trade.qty.encode()
    return _AGG % (
        event_ms, trade.symbol.encode(), trade.agg_id, trade.price.encode(), qty, qty,
        trade.first_id, trade.last_id, trade.time_ms, _BOOL[trade.maker],
    )  # fmt: skip


def trade_event(trade: Trade, event_ms: int) -> bytes:
    """The ``trade`` event of ``trade`` (an aggregate shows as one trade: its last id)."""
    return _TRADE % (
        event_ms, trade.time_ms, trade.symbol.encode(), trade.last_id, trade.price.encode(),
        trade.qty.encode(), _BOOL[trade.maker],
    )  # fmt: skip


def mini_ticker(symbol: str, window: SymbolWindow, event_ms: int) -> bytes:
    """The ``24hrMiniTicker`` event of ``symbol``'s window."""
    close, open_, high, low, volume, quote = window.mini()
    return _MINI % (
        event_ms, symbol.encode(), close.encode(), open_.encode(), high.encode(),
        low.encode(), volume.encode(), quote.encode(),
    )  # fmt: skip


def ticker(symbol: str, window: SymbolWindow, event_ms: int) -> bytes:
    """The ``24hrTicker`` event of ``symbol``'s window (closing at ``event_ms``)."""
    fields = tuple(f.encode() for f in window.ticker(event_ms))
    return _TICKER % (event_ms, symbol.encode(), *fields)


def raw_frame(payload: bytes) -> bytes:
    """``payload`` as one text frame of a ``/ws`` socket."""
    return text_header(len(payload)) + payload


def combined_frame(name: bytes, payload: bytes) -> bytes:
    """``payload`` wrapped ``{"stream": name, "data": payload}`` as one text frame."""
    body = b'{"stream":"%s","data":%s}' % (name, payload)
    return text_header(len(body)) + body

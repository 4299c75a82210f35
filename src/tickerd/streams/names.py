"""Market-stream names and paths: which names are well formed, which route serves them.

Binance's USDⓈ-M market streams
(https://developers.binance.com/docs/derivatives/usds-margined-futures/websocket-market-streams):
raw streams at ``/ws/<stream>[/<stream>…]``, combined ones at ``/stream?streams=<a>/<b>``,
each also under a route, ``/public/…`` (high-frequency data: book tickers, depth, trades)
or ``/market/…`` (the rest); ``/private/…`` carries user data, which tickerd has none of (its
sockets open and stay silent: Binance's SDK opens all three). A path without a route is
served like ``/public``. Stream
names are a lower-case symbol, ``@`` and the stream type (whose case is kept:
``btcusdt@aggTrade``), or ``!`` and an all-market stream (``!miniTicker@arr``).

A well-formed name that tickerd does not publish — a stream type it does not make, a
symbol outside the universe, or a stream of the other route — is accepted and stays
silent, as Binance's servers do; a malformed one is refused.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum
from urllib.parse import parse_qsl

__all__ = [
    "PUBLISHED",
    "Route",
    "StreamName",
    "StreamPath",
    "parse_name",
    "parse_path",
]


class Route(Enum):
    """The route a stream socket was opened on."""

    PUBLIC = "public"  # also a path without a route
    MARKET = "market"
    PRIVATE = "private"  # user data: nothing of it is published


KLINE_INTERVALS = ("1m", "3m", "5m", "15m", "30m", "1h", "2h", "4h", "6h", "8h", "12h",
                   "1d", "3d", "1w", "1M")  # fmt: skip
_INTERVAL = "|".join(KLINE_INTERVALS)
_CONTRACT = "perpetual|current_quarter|next_quarter"

#: Binance's per-symbol stream types (the text after ``<symbol>@``) and their route.
SYMBOL_STREAMS: tuple[tuple[str, Route], ...] = (
    (r"aggTrade", Route.MARKET),
    (r"trade", Route.PUBLIC),
    (r"markPrice(?:@1s)?", Route.MARKET),
    (rf"kline_(?:{_INTERVAL})", Route.MARKET),
    (rf"continuousKline_(?:{_INTERVAL})", Route.MARKET),
    (r"miniTicker", Route.MARKET),
    (r"ticker", Route.MARKET),
    (r"bookTicker", Route.PUBLIC),
    (r"forceOrder", Route.MARKET),
    (r"depth(?:5|10|20)?(?:@(?:100|250|500)ms)?", Route.PUBLIC),
    (r"compositeIndex", Route.MARKET),
    (r"assetIndex(?:@1s)?", Route.MARKET),
)
#: Binance's all-market streams (the text after ``!``) and their route.
MARKET_STREAMS: tuple[tuple[str, Route], ...] = (
    (r"miniTicker@arr", Route.MARKET),
    (r"ticker@arr", Route.MARKET),
    (r"bookTicker", Route.PUBLIC),
    (r"markPrice@arr(?:@1s)?", Route.MARKET),
    (r"forceOrder@arr", Route.MARKET),
    (r"contractInfo", Route.MARKET),
    (r"assetIndex@arr(?:@1s)?", Route.MARKET),
)
#: What tickerd publishes: stream type -> the route it is served on.
PUBLISHED: dict[str, Route] = {
    "aggTrade": Route.MARKET,
    "trade": Route.PUBLIC,
    "miniTicker": Route.MARKET,
    "!miniTicker@arr": Route.MARKET,
    "ticker": Route.MARKET,
    "!ticker@arr": Route.MARKET,
    **{f"kline_{interval}": Route.MARKET for interval in KLINE_INTERVALS},
}

_SYMBOL = r"[a-z0-9_]{1,32}"  # a continuous-kline pair carries "_<contract>" in its name
_SYMBOL_RE = re.compile(
    rf"({_SYMBOL})@(" + "|".join(f"(?P<s{i}>{p})" for i, (p, _) in enumerate(SYMBOL_STREAMS)) + ")"
)
_MARKET_RE = re.compile(
    "!(" + "|".join(f"(?P<m{i}>{p})" for i, (p, _) in enumerate(MARKET_STREAMS)) + ")"
)
_PAIR_RE = re.compile(rf"[a-z0-9]+_(?:{_CONTRACT})")


@dataclass(frozen=True, slots=True)
class StreamName:
    """A well-formed stream name: ``symbol`` upper-cased ("" for an all-market stream),
    ``kind`` the stream type as written (``aggTrade``, ``kline_1m``, ``!miniTicker@arr``),
    ``route``
    the route Binance serves it on."""

    name: str
    symbol: str
    kind: str
    route: Route

    def published_on(self, route: Route) -> bool:
        """Whether tickerd sends events of this stream to a socket on ``route``."""
        return PUBLISHED.get(self.kind) is route and self.route is route


def parse_name(text: object) -> StreamName | None:
    """The stream ``text`` names, or None when it is not a well-formed name."""
    if type(text) is not str or len(text) > 100:
        return None
    m = _MARKET_RE.fullmatch(text)
    if m is not None:
        index = int(next(k for k, v in m.groupdict().items() if v is not None)[1:])
        return StreamName(text, "", text, MARKET_STREAMS[index][1])
    m = _SYMBOL_RE.fullmatch(text)
    if m is None:
        return None
    index = int(next(k for k, v in m.groupdict().items() if v is not None)[1:])
    symbol, kind = m.group(1), m.group(2)
    if ("_" in symbol) != kind.startswith("continuousKline_"):
        return None  # only a continuous kline names a pair with its contract type
    if "_" in symbol and not _PAIR_RE.fullmatch(symbol):
        return None
    return StreamName(text, symbol.upper(), kind, SYMBOL_STREAMS[index][1])


@dataclass(frozen=True, slots=True)
class StreamPath:
    """A stream socket's path: its route, whether events are wrapped (``/stream``) and
    the names it asks for (not yet checked: see :func:`parse_name`)."""

    route: Route
    combined: bool
    names: tuple[str, ...]


_ROUTE_PREFIXES = {
    "": Route.PUBLIC,
    "/public": Route.PUBLIC,
    "/market": Route.MARKET,
    "/private": Route.PRIVATE,
}


def parse_path(path: str, query: str) -> StreamPath | None:
    """The stream socket ``path`` (and URL ``query``) asks for; None if it is no stream
    path (``/ws``, ``/ws/<a>/<b>``, ``/stream?streams=<a>/<b>``, under ``/public``,
    ``/market``, ``/private`` or none)."""
    for prefix, route in _ROUTE_PREFIXES.items():
        if not path.startswith(prefix):
            continue
        rest = path[len(prefix) :]
        if rest in ("/ws", "/ws/"):
            return StreamPath(route, False, ())
        if rest.startswith("/ws/"):
            return StreamPath(route, False, tuple(n for n in rest[4:].split("/") if n))
        if rest in ("/stream", "/stream/"):
            streams = dict(parse_qsl(query)).get("streams", "")
            return StreamPath(route, True, tuple(n for n in streams.split("/") if n))
    return None

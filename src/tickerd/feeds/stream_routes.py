"""Which route of Binance's USDⓈ-M market-stream host serves which stream.

Since 2026-04-23 ``wss://fstream.binance.com`` splits its streams by route
(developers.binance.com/docs/derivatives/usds-margined-futures/websocket-market-streams):
``/market`` carries aggTrade, markPrice, tickers and klines; ``/public`` carries
bookTicker, depth and trade. The old route-less paths (``/stream``, ``/ws``) still accept the
handshake and the subscription but send no events, so a mirror pointed there stays silent.
"""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

#: Stream type → the route that serves it.
STREAM_ROUTES: dict[str, str] = {
    "aggTrade": "/market",
    "markPrice": "/market",
    "ticker": "/market",
    "kline": "/market",
    "bookTicker": "/public",
    "depth": "/public",
    "trade": "/public",
}
ROUTES = frozenset(STREAM_ROUTES.values())
#: Hosts that are Binance's own: there a path other than the stream's route is refused.
BINANCE_HOST_SUFFIX = ".binance.com"


class StreamRouteError(ValueError):
    """A stream base URL whose route does not serve the streams asked for."""


def routed_url(base: str, stream: str) -> str:
    """``base`` with the route that serves ``stream`` (a key of :data:`STREAM_ROUTES`).

    A base without a path gets the route appended (``wss://fstream.binance.com`` →
    ``wss://fstream.binance.com/market`` for aggTrade). A base ending in another route, or
    any other path on a Binance host, raises :class:`StreamRouteError` naming the right
    route. Other hosts keep their path (a relay may put Binance's routes under a prefix).
    """
    route = STREAM_ROUTES[stream]
    parts = urlsplit(base)
    path = parts.path.rstrip("/")
    if not path:
        return urlunsplit(parts._replace(path=route))
    last = "/" + path.rsplit("/", 1)[-1]
    if last == route:
        return urlunsplit(parts._replace(path=path))
    host = (parts.hostname or "").lower()
    if last in ROUTES or host == BINANCE_HOST_SUFFIX[1:] or host.endswith(BINANCE_HOST_SUFFIX):
        raise StreamRouteError(
            f"{base}: {stream} streams are served under the {route} route "
            f"(e.g. {urlunsplit(parts._replace(path=route))}), not under {path}"
        )
    return urlunsplit(parts._replace(path=path))

"""Market-stream settings: Binance's per-connection limits of stream sockets.

The defaults are Binance's
(https://developers.binance.com/docs/derivatives/usds-margined-futures/websocket-market-streams):
10 incoming messages a second, 1024 streams per connection, a ping every 3 minutes, a close
after 10 minutes without a pong, 24 hours at most per connection.
"""

from __future__ import annotations

from dataclasses import dataclass

from .schema import DAY_S, PORT_OR_OFF, SECONDS, setting


@dataclass
class StreamSettings:
    """Market streams (on the WebSocket API port or one of their own) and the bounds of
    their sockets."""

    streams: str = setting(
        "on",
        help="serve the market streams (/ws/…, /stream?streams=…, under /market or /public)",
        group="streams",
        kind="choice",
        choices=("on", "off"),
    )
    stream_port: int = setting(
        -1,
        help="a port of their own for the market streams (then the WebSocket API port serves none)",
        group="streams",
        kind="int",
        requires="streams",
        **PORT_OR_OFF,
        special={0: "any free port", -1: "on the WebSocket API port"},
    )
    stream_max_streams: int = setting(
        1024,
        help="streams per connection at most (more: the SUBSCRIBE is refused)",
        group="streams",
        kind="int",
        min=1,
        max=65_536,
    )
    stream_messages_per_s: int = setting(
        10,
        help="incoming messages per second per connection, pings and pongs too (more: close 1008)",
        group="streams",
        kind="int",
        min=1,
        max=100_000,
        units="per s",
    )
    stream_ping_interval: float = setting(
        180.0,
        help="time between server pings on stream sockets",
        group="streams",
        **SECONDS,
        min=0.2,
        max=DAY_S,
    )
    stream_pong_timeout: float = setting(
        600.0,
        help="close a stream socket (1008) when a ping stays unanswered this long",
        group="streams",
        **SECONDS,
        min=0.2,
        max=DAY_S,
    )
    stream_max_lifetime: float = setting(
        86_400.0,
        help="close (1001) stream sockets older than this",
        group="streams",
        **SECONDS,
        min=1.0,
        max=30 * DAY_S,
    )
    stats_start: str = setting(
        "first-use",
        help=(
            "when the 24-hour statistics and candles start: at the first stream subscription "
            "or statistics request (first-use), or at start-up"
        ),
        group="streams",
        kind="choice",
        choices=("first-use", "startup"),
    )
    kline_history: int = setting(
        1500,
        help="closed candles kept per symbol and interval for GET /fapi/v1/klines (~250 bytes each)",
        group="streams",
        kind="int",
        min=1,
        max=100_000,
        units="candles",
    )

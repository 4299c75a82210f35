"""Limit settings: Binance's request-weight limits and the bounds on every connection."""

from __future__ import annotations

from dataclasses import dataclass

from .. import weights
from .schema import DAY_S, SECONDS, setting


@dataclass
class LimitSettings:
    """Binance's request-weight limits and the bounds on every connection."""

    weight_limit: int = setting(
        weights.REQUEST_WEIGHT_LIMIT,
        help="REQUEST_WEIGHT per IP per minute",
        group="limits",
        kind="int",
        min=1,
        max=10**12,
        units="weight/min",
    )
    connect_limit: int = setting(
        weights.CONNECT_LIMIT,
        help="connection attempts per IP per 5 minutes",
        group="limits",
        kind="int",
        min=0,
        max=1_000_000_000,
        special={0: "no limit"},
        units="per 5 min",
    )
    max_connections: int = setting(
        20_000,
        help="open WebSocket connections at most (more: HTTP 503)",
        group="limits",
        kind="int",
        min=1,
        max=10_000_000,
    )
    max_message_bytes: int = setting(
        64 * 1024,
        help="largest request message (larger: close 1009)",
        group="limits",
        kind="int",
        min=1024,
        max=64 * 1024 * 1024,
        units="bytes",
    )
    max_send_buffer_bytes: int = setting(
        4 * 1024 * 1024,
        help="unsent reply bytes before a client that does not read is cut off",
        group="limits",
        kind="int",
        min=64 * 1024,
        max=1024 * 1024 * 1024,
        units="bytes",
    )
    ping_interval: float = setting(
        180.0,
        help="time between server pings",
        group="limits",
        **SECONDS,
        min=0.2,
        max=DAY_S,
    )
    pong_timeout: float = setting(
        600.0,
        help="close (1008) when a ping stays unanswered this long",
        group="limits",
        **SECONDS,
        min=0.2,
        max=DAY_S,
    )
    max_lifetime: float = setting(
        86_400.0,
        help="close (1001) connections older than this",
        group="limits",
        **SECONDS,
        min=1.0,
        max=30 * DAY_S,
    )
    handshake_timeout: float = setting(
        5.0,
        help="drop connections that do not finish the handshake",
        group="limits",
        **SECONDS,
        min=0.1,
        max=3600.0,
    )
    close_timeout: float = setting(
        5.0,
        help="drop peers that do not answer a close frame",
        group="limits",
        **SECONDS,
        min=0.1,
        max=3600.0,
    )
    max_total_send_buffer_bytes: int = setting(
        64 * 1024 * 1024,
        help="unsent reply bytes over all WebSocket connections; past it the largest backlogs "
        "are cut off first",
        group="limits",
        kind="int",
        min=1024 * 1024,
        max=1024**4,
        units="bytes",
    )
    http_idle_timeout: float = setting(
        15.0,
        help="close an idle or half-open REST connection after this",
        group="limits",
        **SECONDS,
        min=0.1,
        max=3600.0,
    )
    http_max_connections: int = setting(
        1024,
        help="open REST connections at most (more: HTTP 503)",
        group="limits",
        kind="int",
        min=1,
        max=10_000_000,
    )
    http_max_connections_per_ip: int = setting(
        128,
        help="open REST connections per client IP (more: HTTP 503)",
        group="limits",
        kind="int",
        min=1,
        max=10_000_000,
    )

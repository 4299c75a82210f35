"""The settings turned into the options of the WebSocket API port's servers.

Part of the wiring (with :mod:`tickerd.app`): the transports take their own option objects
and never read :class:`~tickerd.config.Settings`.
"""

from __future__ import annotations

import dataclasses
import ssl
from collections.abc import Callable
from typing import Any

from .book import PriceBook
from .clock import Clock
from .config import Settings
from .streams.hub import StreamHub
from .streams.session import StreamLimits
from .transport.streams import StreamGate
from .transport.ws import WSOptions, WSServer
from .wsconn import Limits

__all__ = ["stream_gate", "stream_hub", "stream_server", "ws_options"]


def ws_options(
    settings: Settings, sock: Any = None, tls: ssl.SSLContext | None = None
) -> WSOptions:
    """The WebSocket API server's options, from the settings (``sock``: a listening
    socket handed over by a supervisor; ``tls``: serve wss://)."""
    s = settings
    return WSOptions(
        sock=sock,
        host=s.host,
        port=s.port,
        path=s.path,
        max_connections=s.max_connections,
        max_message_bytes=s.max_message_bytes,
        max_send_buffer_bytes=s.max_send_buffer_bytes,
        ping_interval=s.ping_interval,
        pong_timeout=s.pong_timeout,
        max_lifetime=s.max_lifetime,
        handshake_timeout=s.handshake_timeout,
        close_timeout=s.close_timeout,
        connect_limit=s.connect_limit,
        ssl=tls,
        max_total_send_buffer_bytes=s.max_total_send_buffer_bytes,
    )


def stream_hub(settings: Settings, book: PriceBook) -> StreamHub:
    """The statistics and stream fan-out over ``book`` (started at once with
    ``--stats-start startup``, else at the first subscription or statistics request)."""
    hub = StreamHub(book, settings.kline_history)
    if settings.stats_start == "startup":
        hub.start()
    return hub


def stream_gate(settings: Settings, hub: StreamHub, clock: Clock) -> StreamGate:
    """The market streams of the WebSocket API port, from the settings."""
    s = settings
    limits = Limits(
        s.max_message_bytes,
        s.stream_ping_interval,
        s.stream_pong_timeout,
        s.stream_max_lifetime,
        s.close_timeout,
    )
    bounds = StreamLimits(s.stream_max_streams, s.stream_messages_per_s)
    return StreamGate(hub, clock, bounds, limits)


def stream_server(
    settings: Settings,
    api: WSServer,
    gate: StreamGate,
    sock: Any,
    health: Callable[[], tuple[int, dict[str, Any]]],
) -> WSServer:
    """The market streams' own port (``--stream-port``): the WebSocket API port's TLS,
    limits and load-balancer hooks, and one bound on unsent bytes with it."""
    options = dataclasses.replace(api.options, port=settings.stream_port, sock=sock, api=False)
    server = WSServer(api.protocol, api.clock, options, health=health)
    server.streams = gate
    server.budget = api.budget  # --max-total-send-buffer-bytes bounds the process
    server.client_of, server.wrap = api.client_of, api.wrap  # --trusted-proxy
    return server

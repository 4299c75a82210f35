"""Everything tickerd takes from picows, in one place (checked against picows 2.3.1).

The rest of tickerd imports picows names from here only, so an upgrade of picows touches one
module, and ``tests/test_picows_contract.py`` fails loudly when picows changes what is relied
on here:

* :func:`server_protocol`: picows' public ``ws_create_server`` cannot set the initial read
  buffer or disable auto-pong without its own per-connection logger child, so the server
  builds the private ``picows.picows.WSProtocol`` with its 15 positional arguments.
* :data:`wire_log`: picows' logger, with what a client causes demoted to DEBUG.
* :func:`accept_connection_token_list`: picows compares the whole ``Connection`` header with
  "upgrade"; Firefox sends ``keep-alive, Upgrade``.
* :func:`response` / :func:`refusal`: the handshake's HTTP answers.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

from picows import (
    WSCloseCode,
    WSFrame,
    WSListener,
    WSMsgType,
    WSTransport,
    WSUpgradeRequest,
    WSUpgradeResponse,
    WSUpgradeResponseWithListener,
)
from picows.picows import WSAutoPingStrategy, WSProtocol  # type: ignore[attr-defined]

__all__ = [
    "WSCloseCode",
    "WSFrame",
    "WSListener",
    "WSMsgType",
    "WSTransport",
    "WSUpgradeRequest",
    "accept_connection_token_list",
    "peer_of",
    "refusal",
    "response",
    "server_protocol",
    "wire_log",
]


class _WireLog(logging.LoggerAdapter):  # type: ignore[type-arg]
    """picows' logger: what a client causes (its protocol errors, connects, disconnects,
    handshake timeouts, full send buffers) goes to DEBUG, so one misbehaving client cannot
    flood the log; failures of tickerd's own callbacks keep their level."""

    CLIENT_CAUSED = (
        "WS parser error",
        "New connection accepted",
        "Disconnected",
        "Handshake timeout",
        "Disconnect because HTTP request",
        "Protocol writing",
    )

    def log(self, level: int, msg: object, *args: Any, **kwargs: Any) -> None:
        if isinstance(msg, str) and msg.startswith(self.CLIENT_CAUSED):
            level = logging.DEBUG
        super().log(level, msg, *args, **kwargs)


# A LoggerAdapter also keeps picows from creating a child logger per connection.
wire_log = _WireLog(logging.getLogger("tickerd.server.wire"))

Route = Callable[[WSUpgradeRequest], Any]


def server_protocol(
    route: Route, *, handshake_timeout: float, max_frame_size: int, read_buffer_bytes: int
) -> Any:
    """A picows server protocol for one accepted socket.

    ``route(request)`` answers the upgrade request: a listener (101), a
    :func:`response`/:func:`refusal`, or None (404). picows' own pings and pongs are off:
    the listener answers pings itself, since it must see (and count) every frame.
    """
    return WSProtocol(
        None,  # host_port (client side only)
        None,  # ws_path (client side only)
        False,  # is_client_side
        route,  # listener factory
        wire_log,
        True,  # disconnect_on_exception
        handshake_timeout,
        False,  # enable_auto_ping
        20.0,  # auto_ping_idle_timeout (unused)
        20.0,  # auto_ping_reply_timeout (unused)
        WSAutoPingStrategy.PING_WHEN_IDLE,
        False,  # enable_auto_pong
        max_frame_size,
        None,  # extra_headers
        read_buffer_bytes,
    )


def peer_of(proto: Any) -> Any:
    """The peer address of a protocol made by :func:`server_protocol`."""
    return proto.transport.underlying_transport.get_extra_info("peername")


def accept_connection_token_list(request: WSUpgradeRequest) -> None:
    """Let ``Connection: keep-alive, Upgrade`` (Firefox) through picows' exact-match check.

    The header is a comma-separated token list (RFC 7230 §6.1); picows 2.3 compares the
    whole value with "upgrade".
    """
    value = request.headers.get("Connection", "")
    if "," in value and "upgrade" in (t.strip().lower() for t in value.split(",")):
        request.headers["Connection"] = "Upgrade"


def response(body: bytes, content_type: str = "application/json") -> Any:
    """A 200 answer to a plain GET (``/healthz``)."""
    ok = WSUpgradeResponse.create_ok_response(body, {"Content-Type": content_type})
    return WSUpgradeResponseWithListener(ok, None)


def refusal(
    status: int,
    body: bytes,
    headers: Mapping[str, str] | None = None,
    content_type: str = "application/json",
) -> Any:
    """An error answer to an upgrade request; the connection closes after it."""
    all_headers = {"Content-Type": content_type, **(headers or {})}
    answer = WSUpgradeResponse.create_error_response(status, body, all_headers)
    return WSUpgradeResponseWithListener(answer, None)

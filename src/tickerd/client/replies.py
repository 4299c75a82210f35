"""What the client reads from replies: results, errors, refused handshakes.

https://developers.binance.com/docs/derivatives/usds-margined-futures/websocket-api-general-info
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import orjson
from picows import WSInvalidStatusError

from ..errors import BinanceError, ConnectionLost, ProtocolError

__all__ = ["Final", "copy_error", "refusal", "result_of", "retrieve", "weight_entry"]

log = logging.getLogger("tickerd.client")


class Final(Exception):
    """A connection failure that retrying cannot fix (wraps the error to raise)."""

    def __init__(self, error: Exception) -> None:
        super().__init__(str(error))
        self.error = error


def result_of(reply: dict[str, Any]) -> Any:
    """The ``result`` of a reply; raises the error class of an ``error`` reply."""
    status = reply.get("status")
    if "error" in reply:
        error = reply["error"]
        if type(status) is not int or type(error) is not dict:
            raise ProtocolError(f"malformed error reply: {reply!r:.300}")
        raise BinanceError.from_wire(status, error)
    if status != 200 or "result" not in reply:
        raise ProtocolError(f"reply without a result: {reply!r:.300}")
    return reply["result"]


def weight_entry(msg: dict[str, Any]) -> tuple[int, int, list[dict[str, Any]]] | None:
    """``(count, limit, rateLimits)`` of the reply's ``REQUEST_WEIGHT`` entry (the MINUTE
    one when there are several), or None when it shows none."""
    limits = msg.get("rateLimits")
    found = None
    if type(limits) is list:
        for entry in limits:
            if type(entry) is dict and entry.get("rateLimitType") == "REQUEST_WEIGHT":
                count, limit = entry.get("count"), entry.get("limit")
                if type(count) is int and type(limit) is int:
                    found = (count, limit, limits)
                    if entry.get("interval") == "MINUTE":
                        break
    return found


def copy_error(error: BinanceError) -> BinanceError:
    """A fresh instance of a stored error (raising one instance twice chains tracebacks)."""
    return type(error)(
        error.status,
        error.code,
        error.msg,
        retry_after_ms=error.retry_after_ms,
        server_time_ms=error.server_time_ms,
        used_weight=error.used_weight,
    )


def refusal(
    exc: WSInvalidStatusError, url: str, now_ms: int
) -> tuple[Exception, BinanceError | None]:
    """The error for a refused handshake (Binance's own error when the body is one), and
    the 429/418 error whose ``retryAfter`` the client should wait out, if any.

    A ``Retry-After`` header (seconds) stands in for a missing ``retryAfter``.
    """
    response = exc.response
    status = int(response.status) if response is not None else 0
    body = exc.raw_body or (response.body if response is not None else None) or b""
    try:
        wire = orjson.loads(body)
    except orjson.JSONDecodeError:
        wire = None
    if type(wire) is dict and "code" in wire:
        error = BinanceError.from_wire(status, wire)
        retry_s = response.headers.get("Retry-After") if response is not None else None
        if error.retry_after_ms is None and retry_s is not None and retry_s.isdigit():
            error.retry_after_ms, error.server_time_ms = now_ms + int(retry_s) * 1000, now_ms
        blocks = error if status in (418, 429) else None
        if status >= 500:
            return ConnectionLost(f"handshake refused: {status} {error.code} {error.msg}"), blocks
        return Final(error), blocks
    if status >= 500:
        return ConnectionLost(f"handshake refused with HTTP {status}"), None
    return Final(ConnectionLost(f"handshake refused with HTTP {status} by {url}")), None


def retrieve(future: asyncio.Future[Any]) -> None:
    """Consume a background connect cycle's failure (callers see it when they await it)."""
    if not future.cancelled() and future.exception() is not None:
        log.debug("connect cycle failed: %s", future.exception())

"""Errors in their Binance wire form.

Every error the server can answer with is a :class:`BinanceError` carrying the HTTP-like
``status``, Binance's numeric ``code`` and its ``msg``. The client raises the same classes
when a server answers with an error, so user code catches one hierarchy either way.

Texts come from the USDⓈ-M Futures error list:
https://developers.binance.com/docs/derivatives/usds-margined-futures/error-code
(punctuation and the "occured" misspelling kept as Binance prints them).
"""

from __future__ import annotations

from enum import IntEnum
from typing import Any


class ErrorCode(IntEnum):
    """Binance error codes used by tickerd."""

    UNKNOWN = -1000
    DISCONNECTED = -1001
    TOO_MANY_REQUESTS = -1003
    SERVER_BUSY = -1008
    INVALID_TIMESTAMP = -1021
    START_AFTER_END = -1023
    ILLEGAL_CHARS = -1100
    TOO_MANY_PARAMETERS = -1101
    MANDATORY_PARAM_EMPTY_OR_MALFORMED = -1102
    UNKNOWN_PARAM = -1103
    UNREAD_PARAMETERS = -1104
    PARAM_EMPTY = -1105
    BAD_INTERVAL = -1120
    BAD_SYMBOL = -1121
    INVALID_SYMBOL_STATUS = -1122
    INVALID_PARAMETER = -1130
    REJECTED_MBX_KEY = -2015
    # Not on the error-code page: fapi's gateway answer to a path/method it does not route
    # (HTTP 404), seen in live captures (see docs/DECISIONS.md).
    INVALID_PATH = -5000


MESSAGES: dict[ErrorCode, str] = {
    ErrorCode.UNKNOWN: "An unknown error occured while processing the request.",
    ErrorCode.DISCONNECTED: "Internal error; unable to process your request. Please try again.",
    ErrorCode.SERVER_BUSY: (
        "Server is currently overloaded with other requests. Please try again in a few minutes."
    ),
    ErrorCode.INVALID_TIMESTAMP: "Timestamp for this request is outside of the recvWindow.",
    ErrorCode.START_AFTER_END: "Start time is greater than end time.",
    ErrorCode.ILLEGAL_CHARS: "Illegal characters found in parameter '{0}'; legal range is '{1}'.",
    ErrorCode.TOO_MANY_PARAMETERS: "Too many parameters; expected '{0}' and received '{1}'.",
    ErrorCode.MANDATORY_PARAM_EMPTY_OR_MALFORMED: (
        "Mandatory parameter '{0}' was not sent, was empty/null, or malformed."
    ),
    ErrorCode.UNKNOWN_PARAM: "An unknown parameter was sent.",
    ErrorCode.UNREAD_PARAMETERS: (
        "Not all sent parameters were read; read '{0}' parameter(s) but was sent '{1}'."
    ),
    ErrorCode.PARAM_EMPTY: "Parameter '{0}' was empty.",
    ErrorCode.BAD_INTERVAL: "Invalid interval.",
    ErrorCode.BAD_SYMBOL: "Invalid symbol.",
    ErrorCode.INVALID_SYMBOL_STATUS: "Invalid symbol status.",
    ErrorCode.INVALID_PARAMETER: "Data sent for parameter '{0}' is not valid.",
    ErrorCode.REJECTED_MBX_KEY: "Invalid API-key, IP, or permissions for action.",
    ErrorCode.INVALID_PATH: "Path {0}, Method {1} is invalid",
}

# The -1101 text for a parameter sent twice (futures error-code page, TOO_MANY_PARAMETERS).
DUPLICATE_PARAM_MSG = "Duplicate values for a parameter detected."

# Futures wording (BINANCE.md §3); spot's differs and must not be mixed in.
RATE_LIMITED_MSG = (
    "Too many requests; current limit of IP({ip}) is {limit} requests per minute. "
    "Please use the websocket for live updates to avoid polling the API."
)
BANNED_MSG = (
    "Way too many requests; IP({ip}) banned until {until}. "
    "Please use the websocket for live updates to avoid bans."
)

# Binance publishes no futures text for this; see docs/DECISIONS.md.
CONNECT_LIMITED_MSG = "Too many connection attempts from IP({ip}); limit is {limit} per 5 minutes."

# Envelope-level failures of the WebSocket API (BINANCE.md §1, observed live).
INVALID_JSON_MSG = "Invalid JSON request."
INVALID_ID_MSG = (
    "Invalid 'id' in JSON request; expected an integer, a string matching "
    "'^[a-zA-Z0-9-_]{1,36}$', or null."
)
INVALID_PARAMS_MSG = "Invalid 'params' in JSON request; expected an object."
INVALID_METHOD_MSG = "Invalid 'method' in JSON request; expected a string."
UNKNOWN_METHOD_MSG = "Unknown method."


class TickerdError(Exception):
    """Root of every exception tickerd raises."""


class BinanceError(TickerdError):
    """An error as Binance puts it on the wire: ``status``, ``code`` and ``msg``.

    ``retry_after_ms`` and ``server_time_ms`` are set on 429/418 answers, where Binance adds
    ``"data": {"serverTime": ..., "retryAfter": ...}`` to the WebSocket API error object;
    ``used_weight`` is the client's weight this minute when the limiter refused it.
    """

    def __init__(
        self,
        status: int,
        code: int,
        msg: str,
        *,
        retry_after_ms: int | None = None,
        server_time_ms: int | None = None,
        used_weight: int | None = None,
    ) -> None:
        super().__init__(f"{status} {code}: {msg}")
        self.status = status
        self.code = code
        self.msg = msg
        self.retry_after_ms = retry_after_ms
        self.server_time_ms = server_time_ms
        self.used_weight = used_weight

    @classmethod
    def of(cls, code: ErrorCode, *args: str, status: int = 400) -> BinanceError:
        """Build the error for ``code`` with Binance's message, formatted with ``args``."""
        return error_class(status)(status, int(code), MESSAGES[code].format(*args))

    def retry_after_s(self, now_ms: int) -> int:
        """``retryAfter`` as an HTTP ``Retry-After`` value: whole seconds from ``now_ms``, at
        least 1 (rounded up, so a client that waits that long is never refused again)."""
        return retry_after_s(self.retry_after_ms or now_ms, now_ms)

    def to_wire(self) -> dict[str, Any]:
        """The ``error`` object of a WebSocket API reply (also the REST error body)."""
        wire: dict[str, Any] = {"code": self.code, "msg": self.msg}
        if self.retry_after_ms is not None:
            wire["data"] = {"serverTime": self.server_time_ms, "retryAfter": self.retry_after_ms}
        return wire

    @classmethod
    def from_wire(cls, status: int, error: dict[str, Any]) -> BinanceError:
        """Rebuild an error from a reply's ``status`` and ``error`` object.

        Fields of the wrong JSON type (a foreign server's reply) fall back to -1000, an empty
        message and no times, instead of raising.
        """
        data = error.get("data") if isinstance(error.get("data"), dict) else {}
        assert isinstance(data, dict)
        code, msg = error.get("code"), error.get("msg")
        retry = data.get("retryAfter")
        server_time = data.get("serverTime")
        return error_class(status)(
            status,
            code if type(code) is int else int(ErrorCode.UNKNOWN),
            msg if isinstance(msg, str) else "",
            retry_after_ms=retry if type(retry) is int else None,
            server_time_ms=server_time if type(server_time) is int else None,
        )


class RequestError(BinanceError):
    """The request was malformed or named something that does not exist (4xx)."""


class RateLimitError(BinanceError):
    """Too much request weight this minute (status 429): wait until ``retry_after_ms``."""


class IPBannedError(RateLimitError):
    """The IP is banned (status 418) until ``retry_after_ms`` for ignoring 429s."""


class ServerError(BinanceError):
    """The server failed or is overloaded (5xx)."""


# -- client-side failures (raised by tickerd.Client, never sent on the wire) ----------------


class ConnectionLost(TickerdError, ConnectionError):
    """The WebSocket connection closed, or could not be opened, before a reply arrived.

    ``close_code`` and ``close_reason`` are the server's close frame, when it sent one.
    """

    def __init__(self, msg: str, *, close_code: int | None = None, close_reason: str = "") -> None:
        super().__init__(msg)
        self.close_code = close_code
        self.close_reason = close_reason


class RequestTimeout(TickerdError, TimeoutError):
    """No reply arrived within the request's timeout."""


class ProtocolError(TickerdError):
    """A reply that breaks the Binance WebSocket API wire format (e.g. a non-string price)."""


def retry_after_s(retry_after_ms: int, now_ms: int) -> int:
    """Whole seconds from ``now_ms`` until ``retry_after_ms``, rounded up, at least 1."""
    return max(1, -(-(retry_after_ms - now_ms) // 1000))


def rate_limited(
    ip: str, limit: int, retry_after_ms: int, now_ms: int, used_weight: int
) -> RateLimitError:
    """The 429 / -1003 answer: ``ip`` is over ``limit`` weight; retry at ``retry_after_ms``.

    The one builder of this reply, for the limiter and for faults the control plane forces.
    """
    return RateLimitError(
        429,
        int(ErrorCode.TOO_MANY_REQUESTS),
        RATE_LIMITED_MSG.format(ip=ip, limit=limit),
        retry_after_ms=retry_after_ms,
        server_time_ms=now_ms,
        used_weight=used_weight,
    )


def banned(ip: str, until_ms: int, now_ms: int, used_weight: int) -> IPBannedError:
    """The 418 / -1003 answer: ``ip`` is banned until ``until_ms`` (also its ``retryAfter``).

    The one builder of this reply, for the limiter and for faults the control plane forces.
    """
    return IPBannedError(
        418,
        int(ErrorCode.TOO_MANY_REQUESTS),
        BANNED_MSG.format(ip=ip, until=until_ms),
        retry_after_ms=until_ms,
        server_time_ms=now_ms,
        used_weight=used_weight,
    )


def connect_limited(ip: str, limit: int, retry_after_ms: int, now_ms: int) -> RateLimitError:
    """The 429 / -1003 answer at the handshake: too many connection attempts from ``ip``."""
    return RateLimitError(
        429,
        int(ErrorCode.TOO_MANY_REQUESTS),
        CONNECT_LIMITED_MSG.format(ip=ip, limit=limit),
        retry_after_ms=retry_after_ms,
        server_time_ms=now_ms,
    )


def error_class(status: int) -> type[BinanceError]:
    """The exception class that stands for an error reply with this ``status``."""
    if status == 418:
        return IPBannedError
    if status == 429:
        return RateLimitError
    if status >= 500:
        return ServerError
    return RequestError

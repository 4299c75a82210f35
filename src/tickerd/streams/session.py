"""One market-stream socket, sans I/O: its subscriptions, its ``combined`` property, its
control messages and its incoming-message budget.

Control messages and replies as on
https://developers.binance.com/docs/derivatives/usds-margined-futures/websocket-market-streams/Live-Subscribing-or-Unsubscribing-to-streams
(``{"method": "SUBSCRIBE", "params": [...], "id": 1}`` → ``{"result": null, "id": 1}``;
errors ``{"error": {"code": N, "msg": "..."}, "id": N}``). ``id`` is an unsigned integer as
documented, or a string of up to 36 letters, digits, ``-`` and ``_`` (Binance's own SDK
sends UUIDs), echoed with its JSON type.
Limits from the same pages: at most ``messages_per_s`` incoming messages a second (text,
ping and pong frames alike; over it the socket closes) and ``max_streams`` streams.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

import orjson

from .hub import StreamHub, Subscriber
from .names import Route, StreamName, parse_name

_ID_RE = re.compile(r"[a-zA-Z0-9\-_]{1,36}")
METHODS = ("SUBSCRIBE", "UNSUBSCRIBE", "LIST_SUBSCRIPTIONS", "SET_PROPERTY", "GET_PROPERTY")
UINT64_MAX = 2**64 - 1


class StreamErrorCode(IntEnum):
    """The small positive codes of stream sockets (never used on the WS API)."""

    UNKNOWN_PROPERTY = 0
    INVALID_VALUE = 1
    INVALID_REQUEST = 2
    INVALID_JSON = 3


#: The messages of each refusal (Binance's texts; ``{}`` filled in per request).
MESSAGES: dict[str, tuple[StreamErrorCode, str]] = {
    "unknown_property": (StreamErrorCode.UNKNOWN_PROPERTY, "Unknown property"),
    "not_boolean": (StreamErrorCode.INVALID_VALUE, "Invalid value type: expected Boolean"),
    "property_name": (
        StreamErrorCode.INVALID_REQUEST,
        "Invalid request: property name must be a string",
    ),
    "bad_id": (StreamErrorCode.INVALID_REQUEST, "Invalid request: request ID must be an unsigned integer"),
    "unknown_method": (
        StreamErrorCode.INVALID_REQUEST,
        "Invalid request: unknown variant {}, expected one of " + ", ".join(METHODS) + " at line 1 column {}",
    ),
    "too_many_params": (StreamErrorCode.INVALID_REQUEST, "Invalid request: too many parameters"),
    "missing_method": (
        StreamErrorCode.INVALID_REQUEST,
        "Invalid request: missing field `method` at line 1 column {}",
    ),
    "invalid_stream": (StreamErrorCode.INVALID_REQUEST, "Invalid request: invalid stream"),
    "too_many_streams": (
        StreamErrorCode.INVALID_REQUEST,
        "Invalid request: too many streams; at most {} per connection",
    ),
    "bad_json": (StreamErrorCode.INVALID_JSON, "Invalid JSON: expected value at line {} column {}"),
}  # fmt: skip


@dataclass(frozen=True, slots=True)
class StreamLimits:
    """A stream socket's bounds (the timers are the connection's: wsconn.Limits)."""

    max_streams: int = 1024
    messages_per_s: int = 10


class StreamSession:
    """The stream side of one socket (see the module docstring).

    ``sub`` is what the hub delivers to (the transport's connection object).
    """

    def __init__(
        self,
        hub: StreamHub,
        sub: Subscriber,
        route: Route,
        combined: bool,
        limits: StreamLimits,
    ) -> None:
        self.hub = hub
        self.sub = sub
        self.route = route
        self.combined = combined
        self.limits = limits
        self.streams: dict[str, StreamName] = {}  # in subscription order
        self._second = -1
        self._count = 0

    # -- budget ---------------------------------------------------------------------------

    def allow_message(self, now: float) -> bool:
        """Count one incoming message (text, ping or pong frame) at monotonic ``now``;
        False once the second's budget is spent (the socket must then close)."""
        second = int(now)
        if second != self._second:
            self._second = second
            self._count = 0
        self._count += 1
        return self._count <= self.limits.messages_per_s

    # -- subscriptions --------------------------------------------------------------------

    def open_with(self, names: tuple[str, ...]) -> str | None:
        """Subscribe the names of the URL; the refusal's text when one is malformed or
        there are too many (then nothing is subscribed)."""
        parsed = [parse_name(n) for n in names]
        bad = next((n for n, p in zip(names, parsed, strict=True) if p is None), None)
        if bad is not None:
            return f"invalid stream name {bad[:100]!r}"
        if len(set(names)) > self.limits.max_streams:
            return f"{len(set(names))} streams; at most {self.limits.max_streams} per connection"
        for stream in parsed:
            assert stream is not None
            self._add(stream)
        return None

    def _add(self, stream: StreamName) -> None:
        if stream.name not in self.streams:
            self.streams[stream.name] = stream
            self.hub.add(self.sub, stream, self.route)

    def close(self) -> None:
        """The socket is gone: leave every stream."""
        for name in self.streams:
            self.hub.remove(self.sub, name)
        self.streams.clear()

    # -- control messages ------------------------------------------------------------------

    def handle(self, payload: bytes) -> bytes:
        """Answer one control message."""
        try:
            message = orjson.loads(payload)
        except orjson.JSONDecodeError as exc:
            return _error("bad_json", None, exc.lineno, exc.colno)
        if type(message) is not dict:
            return _error("bad_json", None, 1, 1)
        rid = message.get("id")
        if not _valid_id(rid):
            return _error("bad_id", None)
        method = message.get("method")
        if method is None:
            return _error("missing_method", rid, len(payload))
        if method not in METHODS:
            shown = orjson.dumps(method).decode() if type(method) is str else f"{method!r}"
            column = payload.find(shown.encode()) + len(shown) if type(method) is str else 0
            return _error("unknown_method", rid, f"`{method}`", column or len(payload))
        params = message.get("params", [])
        if type(params) is not list:
            return _error(
                "invalid_stream" if method.endswith("SUBSCRIBE") else "too_many_params", rid
            )
        handler = getattr(self, "_" + method.lower())
        reply: bytes = handler(params, rid)
        return reply

    def _subscribe(self, params: list[Any], rid: int | str | None) -> bytes:
        streams = [parse_name(p) for p in params]
        if not params or any(s is None for s in streams):
            return _error("invalid_stream", rid)
        new = {s.name for s in streams if s is not None and s.name not in self.streams}
        if len(self.streams) + len(new) > self.limits.max_streams:
            return _error("too_many_streams", rid, self.limits.max_streams)
        for stream in streams:
            assert stream is not None
            self._add(stream)
        return _result(b"null", rid)

    def _unsubscribe(self, params: list[Any], rid: int | str | None) -> bytes:
        if not params or any(parse_name(p) is None for p in params):
            return _error("invalid_stream", rid)
        for name in params:
            if self.streams.pop(name, None) is not None:
                self.hub.remove(self.sub, name)
        return _result(b"null", rid)

    def _list_subscriptions(self, params: list[Any], rid: int | str | None) -> bytes:
        if params:
            return _error("too_many_params", rid)
        return _result(orjson.dumps(list(self.streams)), rid)

    def _set_property(self, params: list[Any], rid: int | str | None) -> bytes:
        if len(params) > 2:
            return _error("too_many_params", rid)
        if not params or type(params[0]) is not str:
            return _error("property_name", rid)
        if params[0] != "combined":
            return _error("unknown_property", rid)
        if len(params) < 2 or type(params[1]) is not bool:
            return _error("not_boolean", rid)
        self.combined = params[1]
        return _result(b"null", rid)

    def _get_property(self, params: list[Any], rid: int | str | None) -> bytes:
        if len(params) > 1:
            return _error("too_many_params", rid)
        if not params or type(params[0]) is not str:
            return _error("property_name", rid)
        if params[0] != "combined":
            return _error("unknown_property", rid)
        return _result(b"true" if self.combined else b"false", rid)


def _valid_id(rid: object) -> bool:
    """An unsigned integer (Binance's docs), a short token string (what Binance's own SDK
    sends, a UUID) or null (absent)."""
    if type(rid) is int:
        return 0 <= rid <= UINT64_MAX
    return rid is None or (type(rid) is str and _ID_RE.fullmatch(rid) is not None)


def _id(rid: int | str | None) -> bytes:
    return orjson.dumps(rid)


def _result(result: bytes, rid: int | str | None) -> bytes:
    return b'{"result":%s,"id":%s}' % (result, _id(rid))


def _error(kind: str, rid: int | str | None, *args: object) -> bytes:
    code, text = MESSAGES[kind]
    body = {"error": {"code": int(code), "msg": text.format(*args)}}
    return orjson.dumps(body)[:-1] + b',"id":' + _id(rid) + b"}"

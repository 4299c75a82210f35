"""The WebSocket API, sans I/O: one request frame in, one reply frame's payload out.

https://developers.binance.com/docs/derivatives/usds-margined-futures/websocket-api-general-info
https://developers.binance.com/docs/derivatives/usds-margined-futures/market-data/websocket-api/Symbol-Price-Ticker

:meth:`Protocol.handle` takes the payload of a text frame, the connection's
:class:`Session` and the time, and returns the reply payload as a tuple of byte strings
whose concatenation is the JSON text (large cached bodies are passed through by reference,
never copied). Replies keep Binance's key order: ``id, status, result|error, rateLimits``.
Nothing here touches a socket, a clock or asyncio.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

import orjson
from mypy_extensions import mypyc_attr

from . import shapes, weights
from .book import PriceBook
from .counters import ApiCounters
from .errors import (
    INVALID_ID_MSG,
    INVALID_JSON_MSG,
    INVALID_METHOD_MSG,
    INVALID_PARAMS_MSG,
    UNKNOWN_METHOD_MSG,
    BinanceError,
    ErrorCode,
)
from .ratelimit import RateLimiter

Reply = tuple[bytes, ...]

_ID_CHARS: Final = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
# A \uD800-\uDFFF escape: JSON whose strings may hold a lone surrogate, which orjson refuses.
_SURROGATE_ESCAPE: Final = re.compile(rb"\\u[dD][89a-fA-F]")
_INT64_MIN: Final = -(2**63)
_INT64_MAX: Final = 2**63 - 1
_TRUE: Final = (True, "true")
_FALSE: Final = (False, "false")


class CloseConnection(Exception):
    """The frame breaks the WebSocket rules badly enough that the connection must close."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(f"{code} {reason}")
        self.code = code
        self.reason = reason


@dataclass(slots=True)
class Session:
    """Per-connection state the protocol reads: who the client is, and its URL options."""

    client: str
    return_rate_limits: bool = True

    @classmethod
    def from_query(cls, client: str, query: dict[str, str]) -> Session:
        """A session for a connection opened with URL query ``query`` (``returnRateLimits``)."""
        return cls(client, query.get("returnRateLimits", "true").lower() != "false")


def _wire(error: BinanceError) -> bytes:
    return orjson.dumps(error.to_wire())


def id_json(rid: Any) -> bytes | None:
    """The JSON text of a valid request id, or None if Binance would refuse it."""
    kind = type(rid)
    if kind is str:
        # ^[a-zA-Z0-9-_]{1,36}$: nothing left once those characters are deleted.
        if 0 < len(rid) <= 36 and rid.isascii():
            text = rid.encode()
            if not text.translate(None, _ID_CHARS):
                return b'"%s"' % text
        return None
    if kind is int:
        return b"%d" % rid if _INT64_MIN <= rid <= _INT64_MAX else None
    if rid is None:
        return b"null"
    return None


def id_token(payload: bytes, start: int, end: int) -> bool:
    """Whether ``payload[start:end]`` is one id token of the shortcut: what
    :data:`tickerd.shapes.ID_TOKEN` matches, checked with two C calls instead of a regex
    (the regex costs several times more, and every frame of the shortcut runs this)."""
    n = end - start
    if n <= 0:
        return False
    if payload[start] == 34:  # '"': a string of 1 to 36 id characters, nothing escaped
        return (
            3 <= n <= 38
            and payload[end - 1] == 34
            and not payload[start + 1 : end - 1].translate(None, _ID_CHARS)
        )
    token = payload[start:end]
    if token == b"0" or token == b"null":
        return True
    digits = token[1:] if token[0] == 45 else token  # after a '-'
    return 0 < len(digits) <= 18 and digits[0] != 48 and digits.isdigit()


def parse_fallback(payload: bytes) -> Any:
    """The request in a frame orjson refused, or ``_ABSENT`` when it is not JSON.

    Raises :class:`CloseConnection` (1007) on invalid UTF-8. orjson refuses JSON whose
    strings hold a lone surrogate escape (``"\\ud800"``), which is still JSON (RFC 8259
    §8.2) and which Binance parses and answers; such frames are read by the standard
    parser with orjson's other rules kept: no NaN or Infinity, no number that is infinite
    as a double (RFC 8259 §9 lets a parser limit numbers), no nesting beyond the
    recursion limit.
    """
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError:
        raise CloseConnection(1007, "invalid UTF-8 in text message") from None
    if _SURROGATE_ESCAPE.search(payload) is None:
        return _ABSENT
    try:
        return json.loads(
            text, parse_constant=_refuse_constant, parse_float=_finite_float, parse_int=_finite_int
        )
    except (ValueError, OverflowError, RecursionError):
        return _ABSENT


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise ValueError(f"{text} is infinite as a double")
    return value


def _finite_int(text: str) -> int:
    value = int(text)
    float(value)  # OverflowError (a ValueError's sibling) past the double range: refused
    return value


@mypyc_attr(allow_interpreted_subclasses=True)  # compiled: the benchmarks subclass it
class Protocol:
    """Answers WebSocket API requests from a :class:`PriceBook` under a :class:`RateLimiter`."""

    def __init__(self, book: PriceBook, limiter: RateLimiter) -> None:
        self.book = book
        self._bodies = book.bodies  # a dict lookup where a call of book.body() costs more
        self.limiter = limiter
        self._methods: dict[str, Callable[[bytes, dict[str, Any], Session, int], Reply]] = {
            "ticker.price": self._ticker_price,
        }
        self.counters = ApiCounters(self._methods)  # ops: read at scrape time
        self._weight_one, self._weight_all = (
            weights.WS_API["ticker.price"].of(True),
            weights.WS_API["ticker.price"].of(False),
        )
        self._tail_limit = -1
        self._tail_head = b""
        self._bad_symbol = _wire(BinanceError.of(ErrorCode.BAD_SYMBOL))
        self._bad_param = _wire(
            BinanceError.of(ErrorCode.MANDATORY_PARAM_EMPTY_OR_MALFORMED, "symbol")
        )
        self._bad_rl_param = _wire(
            BinanceError.of(ErrorCode.MANDATORY_PARAM_EMPTY_OR_MALFORMED, "returnRateLimits")
        )
        self._unknown_method = orjson.dumps({"code": -1000, "msg": UNKNOWN_METHOD_MSG})
        self._shaped = -1
        self._id_end = 6  # where the last id-first frame's id ended (see handle)
        self._tails: dict[bytes, Any] = {}
        self._heads: dict[bytes, Any] = {}
        self._build_shapes()

    # -- entry point ---------------------------------------------------------------------

    def handle(self, payload: bytes, session: Session, now_ms: int) -> Reply:
        """Answer one text frame. Raises :class:`CloseConnection` on invalid UTF-8."""
        if payload.startswith(_ID_FIRST):
            # A client's ids tend to keep one length (UUIDs, counters): where the last
            # frame's id ended is tried first, which spares a search most of the time.
            end = self._id_end
            if not (end < len(payload) and payload[end] == 44):  # ','
                end = self._id_end = payload.find(b",", 6)
            symbol = self._tails.get(payload[end:], _MISS)
            if symbol is not _MISS:
                start = 7 if payload[6] == 32 else 6
                if id_token(payload, start, end):
                    return self._price(payload[start:end], symbol, _NO_PARAMS, session, now_ms)
        elif payload.endswith(b"}"):
            reply = self._id_last(payload, session, now_ms)
            if reply is not None:
                return reply
        return self.handle_parsed(payload, session, now_ms)

    def handle_parsed(self, payload: bytes, session: Session, now_ms: int) -> Reply:
        """:meth:`handle` through the JSON parser alone, without the byte-shape shortcut."""
        if len(self.book.universe) != self._shaped:
            self._build_shapes()  # symbols listed later: their frames came here first
        try:
            request = orjson.loads(payload)
        except orjson.JSONDecodeError:
            request = parse_fallback(payload)
            if request is _ABSENT:
                return self.envelope_error(None, INVALID_JSON_MSG)
        if type(request) is not dict:
            return self.envelope_error(None, INVALID_JSON_MSG)
        rid = id_json(request.get("id", _ABSENT))
        if rid is None:
            return self.envelope_error(None, INVALID_ID_MSG)
        params = request.get("params", _NO_PARAMS)
        if type(params) is not dict:
            return self.envelope_error(rid, INVALID_PARAMS_MSG)
        method = request.get("method")
        if type(method) is not str:
            return self.envelope_error(rid, INVALID_METHOD_MSG)
        handler = self._methods.get(method)
        if handler is None:
            # Binance accepts an explicit version prefix, e.g. "v1/ticker.price".
            version, _, name = method.partition("/")
            digits = version[1:]
            if name and version[:1] == "v" and digits.isascii() and digits.isdigit():
                handler = self._methods.get(name)
            if handler is None:
                self.counters.unknown += 1  # ops
                return self._error(rid, 400, self._unknown_method, session, params, now_ms)
        return handler(rid, params, session, now_ms)

    def _build_shapes(self) -> None:
        names = [info.symbol for info in self.book.universe]
        self._shaped = len(names)
        self._tails = shapes.tails(names, _ABSENT)
        self._heads = shapes.heads(names, _ABSENT)

    def _id_last(self, payload: bytes, session: Session, now_ms: int) -> Reply | None:
        """The reply to an id-last frame of a common shape, or None (see :mod:`.shapes`)."""
        at = payload.rfind(_ID_MEMBER)
        symbol = self._heads.get(payload[:at], _MISS) if at > 0 else _MISS
        if symbol is _MISS:
            return None
        start = at + 6 if payload[at + 5] == 32 else at + 5
        end = len(payload) - 1
        if not id_token(payload, start, end):
            return None
        return self._price(payload[start:end], symbol, _NO_PARAMS, session, now_ms)

    def refused(self, payload: bytes, session: Session, error: BinanceError) -> Reply | None:
        """The reply refusing a request with ``error`` (429/418 forced by the control plane).

        The request's envelope is read as :meth:`handle` reads it, so the id is echoed and
        ``returnRateLimits`` obeyed; ``rateLimits.count`` is ``error.used_weight``. Returns
        None for a request whose envelope is invalid: :meth:`handle` answers those as usual.
        """
        try:
            request = orjson.loads(payload)
        except orjson.JSONDecodeError:
            try:
                request = parse_fallback(payload)
            except CloseConnection:
                return None
        if type(request) is not dict or "id" not in request:
            return None
        rid = id_json(request["id"])
        params = request.get("params", _NO_PARAMS)
        if rid is None or type(params) is not dict or type(request.get("method")) is not str:
            return None
        self.counters.refuse(request["method"], error.status)  # ops
        return self._limited(rid, error, session, params)

    def binary_frame(self) -> Reply:
        """The answer to a binary frame: the WS API speaks JSON text only."""
        # ops: not envelope_error, which counts an answer; the server builds this one once.
        body = orjson.dumps({"code": int(ErrorCode.UNKNOWN), "msg": INVALID_JSON_MSG})
        return (b'{"id":null,"status":400,"error":%s}' % body,)

    def envelope_error(self, rid: bytes | None, msg: str) -> Reply:
        """A request-level failure: status 400, code -1000, no ``rateLimits`` (as Binance)."""
        self.counters.invalid += 1  # ops
        body = orjson.dumps({"code": int(ErrorCode.UNKNOWN), "msg": msg})
        return (b'{"id":%s,"status":400,"error":%s}' % (rid or b"null", body),)

    # -- methods -------------------------------------------------------------------------

    def _ticker_price(self, rid: bytes, params: dict[str, Any], s: Session, now: int) -> Reply:
        return self._price(rid, params.get("symbol", _ABSENT), params, s, now)

    def _price(
        self, rid: bytes, symbol: Any, params: dict[str, Any], s: Session, now: int
    ) -> Reply:
        has_symbol = symbol is not _ABSENT
        weight = self._weight_one if has_symbol else self._weight_all
        self.counters.price += 1  # ops
        try:
            count = self.limiter.charge(s.client, weight, now)
        except BinanceError as err:
            self.counters.price_errors[err.status] += 1  # ops
            return self._limited(rid, err, s, params)
        show = s.return_rate_limits if "returnRateLimits" not in params else None
        if show is None:
            show = self._show_rate_limits(s, params)
            if show is None:
                self.counters.price_errors[400] += 1  # ops
                return self._error_counted(rid, 400, self._bad_rl_param, True, count)
        if has_symbol:
            body = None
            if type(symbol) is str:
                body = self._bodies.get(symbol)
                if body is None:
                    body = self.book.body(symbol)  # not cached yet, or no price to serve
            if body is None:
                error = self._bad_symbol if type(symbol) is str and symbol else self._bad_param
                self.counters.price_errors[400] += 1  # ops
                return self._error_counted(rid, 400, error, show, count)
        else:
            body = self.book.all_body()
        if len(body) < _SPLICE_ABOVE:
            # One formatting pass beats handing the transport four small pieces.
            if show:
                return (_OK_SHOW % (rid, body, self._rate_limits_head(), count),)
            return (_OK_HIDE % (rid, body),)
        head = b'{"id":%s,"status":200,"result":' % rid
        if show:
            return (head, body, b"%s%d}]}" % (self._rate_limits_head(), count))
        return (head, body, b"}")

    # -- envelope pieces -----------------------------------------------------------------

    @staticmethod
    def _show_rate_limits(s: Session, params: dict[str, Any]) -> bool | None:
        flag = params.get("returnRateLimits", _ABSENT)
        if flag is _ABSENT:
            return s.return_rate_limits
        if flag in _TRUE and type(flag) in (bool, str):
            return True
        if flag in _FALSE and type(flag) in (bool, str):
            return False
        return None

    def _rate_limits_head(self) -> bytes:
        """The fixed start of the ``rateLimits`` member; the count and closing follow it."""
        limit = self.limiter.limit
        if limit != self._tail_limit:
            self._tail_limit = limit
            self._tail_head = (
                b',"rateLimits":[{"rateLimitType":"REQUEST_WEIGHT","interval":"MINUTE",'
                b'"intervalNum":1,"limit":%d,"count":' % limit
            )
        return self._tail_head

    def _error(
        self, rid: bytes, status: int, error: bytes, s: Session, params: dict[str, Any], now: int
    ) -> Reply:
        """An error reply to a request that costs weight 1, like any request."""
        try:
            count = self.limiter.charge(s.client, 1, now)
        except BinanceError as err:
            self.counters.unknown_limited[err.status] += 1  # ops
            return self._limited(rid, err, s, params)
        show = self._show_rate_limits(s, params)
        return self._error_counted(rid, status, error, show is not False, count)

    def _error_counted(
        self, rid: bytes, status: int, error: bytes, show: bool, count: int
    ) -> Reply:
        head = b'{"id":%s,"status":%d,"error":%s' % (rid, status, error)
        if show:
            return (head, self._rate_limits_head(), b"%d}]}" % count)
        return (head, b"}")

    def _limited(self, rid: bytes, err: BinanceError, s: Session, params: dict[str, Any]) -> Reply:
        show = self._show_rate_limits(s, params)
        count = err.used_weight or 0
        return self._error_counted(rid, err.status, _wire(err), show is not False, count)


# Final: compiled code reads these as C constants, not from the module's dict.
_ABSENT: Final[Any] = object()
_MISS: Final[Any] = object()
_ID_FIRST: Final = shapes.ID_FIRST
_ID_MEMBER: Final = shapes.ID_MEMBER
# Bodies at least this large (the all-symbols array) are passed by reference, never copied.
_SPLICE_ABOVE: Final = 4096
_OK_SHOW: Final = b'{"id":%s,"status":200,"result":%s%s%d}]}'
_OK_HIDE: Final = b'{"id":%s,"status":200,"result":%s}'

_NO_PARAMS: Final[dict[str, Any]] = {}

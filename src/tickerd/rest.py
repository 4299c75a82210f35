"""The REST twins of ``ticker.price`` and their metadata endpoints, sans I/O.

Binance USDⓈ-M Futures REST (``https://fapi.binance.com``), pages under
https://developers.binance.com/docs/derivatives/usds-margined-futures/ :

- ``GET /fapi/v1/ticker/price``: market-data/rest-api/Symbol-Price-Ticker (deprecated there)
- ``GET /fapi/v2/ticker/price``: market-data/rest-api/Symbol-Price-Ticker-v2 (same parameter,
  same body ``{"symbol","price","time"}`` or an array of them; only the weight header is
  documented as inaccurate on Binance, tickerd's is exact)
- ``GET /fapi/v1/exchangeInfo``: market-data/rest-api/Exchange-Information
- ``GET /fapi/v1/ping``: market-data/rest-api/Test-Connectivity
- ``GET /fapi/v1/time``: market-data/rest-api/Check-Server-Time
- ``GET /fapi/v1/ticker/24hr`` and ``GET /fapi/v1/klines``: answered by
  :class:`~tickerd.streams.rest_stats.RestStatistics` when one is given
- general-info: HTTP return codes, the bare ``{"code","msg"}`` error payload, the
  ``X-MBX-USED-WEIGHT-(intervalNum)(intervalLetter)`` header on every reply, ``Retry-After``
- error-code: the texts of -1101, -1104, -1105, -1121

Theory of operation
-------------------
:meth:`RestApi.handle` takes what the HTTP layer read — method, raw path, raw query string,
client IP — and the time, and returns a :class:`RestReply` of status, headers and body
bytes. Nothing here touches a socket, a clock or asyncio.

1. Route by exact path and method. Anything else is fapi's gateway answer, HTTP 404
   ``{"code":-5000,"msg":"Path <path>, Method <method> is invalid"}`` (charged
   ``weights.REST_UNROUTED_WEIGHT``).
2. Charge the endpoint's weight to the client IP on the **same** :class:`RateLimiter` the
   WebSocket API charges, so one per-IP budget covers both surfaces. Over the limit: 429,
   then 418, with ``Retry-After`` in seconds and the futures -1003 texts.
3. Check the parameters: a name sent twice is -1101, a name the endpoint does not read is
   -1104 (``timestamp``, ``recvWindow`` and ``signature`` are read by every endpoint, as
   clients that sign every request send them), an empty ``symbol`` is -1105, a symbol
   with no price to serve is -1121.
4. Answer. Ticker bodies are the book's cached bytes, passed through unchanged; the
   exchangeInfo body is serialised once and only ``serverTime`` is spliced in per request;
   it is rebuilt when a symbol's status or the weight limit changes.

Every reply carries ``X-MBX-USED-WEIGHT-1M``: the client's weight this minute, this request
included. Where Binance publishes nothing, the choices are in docs/DECISIONS.md.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

import orjson

from . import weights
from .book import PriceBook
from .errors import DUPLICATE_PARAM_MSG, MESSAGES, BinanceError, ErrorCode
from .models import SymbolInfo
from .ratelimit import RateLimiter
from .streams.rest_stats import KLINES_PARAMS, TICKER_PARAMS, RestStatistics, klines_limit
from .symbols import SymbolUniverse

__all__ = ["USED_WEIGHT_HEADER", "RestApi", "RestReply"]

#: Binance's used-weight header for the REQUEST_WEIGHT / MINUTE / 1 limiter, spelled as
#: the general-info page builds it (intervalNum 1, intervalLetter M).
USED_WEIGHT_HEADER = "X-MBX-USED-WEIGHT-1M"
#: Parameters every endpoint reads (and ignores): clients that sign every request send them.
SIGNING_PARAMS = frozenset({"timestamp", "recvWindow", "signature"})
#: Most query parameters parsed; more is answered -1101 (the HTTP layer bounds the line too).
MAX_PARAMS = 100

_CONTENT_TYPE = ("Content-Type", "application/json")
_SERVER_TIME_MARK = "@@tickerd-serverTime@@"
# exchangeInfo's top-level keys in Binance's order (bundled capture, data/SOURCES.md).
_EXCHANGE_INFO_KEYS = (
    "timezone",
    "serverTime",
    "futuresType",
    "rateLimits",
    "exchangeFilters",
    "assets",
    "symbols",
)
_EXCHANGE_INFO_DEFAULTS: dict[str, Any] = {
    "timezone": "UTC",
    "futuresType": "U_MARGINED",
    "exchangeFilters": [],
    "assets": [],
}

Headers = list[tuple[str, str]]
Answer = Callable[[dict[str, str], int], tuple[int, bytes]]
Pairs = list[tuple[str, str]]


@dataclass(frozen=True, slots=True)
class RestReply:
    """One HTTP reply: ``status``, ``headers`` (name, value) in order, ``body`` bytes."""

    status: int
    headers: Headers
    body: bytes


@dataclass(frozen=True, slots=True)
class _Endpoint:
    method: str
    params: frozenset[str]
    weight: weights.Weight
    answer: Answer
    # The weight by the request's parameters (None: the weight table's row by symbol).
    weigh: Callable[[Pairs], int] | None = None


def _error_body(code: ErrorCode, *args: str) -> bytes:
    return orjson.dumps({"code": int(code), "msg": MESSAGES[code].format(*args)})


class RestApi:
    """Answers the REST twins from a :class:`PriceBook` under a shared :class:`RateLimiter`.

    Pass the limiter instance the WebSocket :class:`~tickerd.protocol.Protocol` uses: the
    budget is per IP across both surfaces, as on Binance (general-info: "REQUEST_WEIGHT
    ... shared between REST and the WebSocket API").
    """

    def __init__(
        self,
        book: PriceBook,
        limiter: RateLimiter,
        universe: SymbolUniverse | None = None,
        stats: RestStatistics | None = None,
    ) -> None:
        self.book = book
        self.limiter = limiter
        self.universe = universe if universe is not None else book.universe
        ticker = frozenset({"symbol"})
        none: frozenset[str] = frozenset()
        answers: dict[str, tuple[frozenset[str], Answer]] = {
            "/fapi/v1/ticker/price": (ticker, self._ticker_price),
            "/fapi/v2/ticker/price": (ticker, self._ticker_price),
            "/fapi/v1/exchangeInfo": (none, self._exchange_info),
            "/fapi/v1/ping": (none, self._ping),
            "/fapi/v1/time": (none, self._time),
        }
        self._routes = {
            path: _Endpoint("GET", params, weights.REST[path], answer)
            for path, (params, answer) in answers.items()
        }
        if stats is not None:  # the 24-hour statistics and candles of the market streams
            path = "/fapi/v1/ticker/24hr"
            self._routes[path] = _Endpoint(
                "GET", TICKER_PARAMS, weights.REST[path], stats.ticker_24hr
            )
            path = "/fapi/v1/klines"
            self._routes[path] = _Endpoint(
                "GET", KLINES_PARAMS, weights.REST[path], stats.klines, _klines_weight
            )
        self._bad_symbol = _error_body(ErrorCode.BAD_SYMBOL)
        self._empty_symbol = _error_body(ErrorCode.PARAM_EMPTY, "symbol")
        self._duplicate = orjson.dumps(
            {"code": int(ErrorCode.TOO_MANY_PARAMETERS), "msg": DUPLICATE_PARAM_MSG}
        )
        # exchangeInfo cache: the body around serverTime, and what it was built from.
        self._info_head = b""
        self._info_tail = b""
        self._info_limit = -1
        self._info_symbols: list[SymbolInfo] = []

    # -- entry point ---------------------------------------------------------------------

    def handle(self, method: str, path: str, query: str, client_ip: str, now_ms: int) -> RestReply:
        """Answer one request. ``path`` and ``query`` are raw (still percent-encoded)."""
        endpoint = self._routes.get(path)
        if endpoint is None or endpoint.method != method:
            return self._unrouted(method, path, client_ip, now_ms)
        try:
            pairs = (
                parse_qsl(query, keep_blank_values=True, max_num_fields=MAX_PARAMS) if query else []
            )
        except ValueError:  # more than MAX_PARAMS fields
            pairs = None
        has_symbol = pairs is not None and any(name == "symbol" for name, _ in pairs)
        if endpoint.weigh is None:
            weight = endpoint.weight.of(has_symbol)
        else:
            weight = endpoint.weigh(pairs or [])
        try:
            count = self.limiter.charge(client_ip, weight, now_ms)
        except BinanceError as err:
            return self.limited_reply(err, now_ms)
        if pairs is None:
            received = str(query.count("&") + 1)
            body = _error_body(ErrorCode.TOO_MANY_PARAMETERS, str(len(endpoint.params)), received)
            return self._reply(400, body, count)
        params = dict(pairs)
        if len(params) != len(pairs):
            return self._reply(400, self._duplicate, count)
        known = endpoint.params
        unread = sum(1 for name in params if name not in known and name not in SIGNING_PARAMS)
        if unread:
            sent = len(params)
            body = _error_body(ErrorCode.UNREAD_PARAMETERS, str(sent - unread), str(sent))
            return self._reply(400, body, count)
        status, body = endpoint.answer(params, now_ms)
        return self._reply(status, body, count)

    # -- endpoints -----------------------------------------------------------------------

    def _ticker_price(self, params: dict[str, str], now_ms: int) -> tuple[int, bytes]:
        symbol = params.get("symbol")
        if symbol is None:
            return 200, self.book.all_body()
        body = self.book.body(symbol)
        if body is not None:
            return 200, body
        return 400, self._bad_symbol if symbol else self._empty_symbol

    def _ping(self, params: dict[str, str], now_ms: int) -> tuple[int, bytes]:
        return 200, b"{}"

    def _time(self, params: dict[str, str], now_ms: int) -> tuple[int, bytes]:
        return 200, b'{"serverTime":%d}' % now_ms

    def _exchange_info(self, params: dict[str, str], now_ms: int) -> tuple[int, bytes]:
        symbols = list(self.universe)
        cached = self._info_symbols
        if (
            self.limiter.limit != self._info_limit
            or len(symbols) != len(cached)
            or any(a is not b for a, b in zip(symbols, cached, strict=True))
        ):
            self._build_exchange_info(symbols)
        return 200, b"%s%d%s" % (self._info_head, now_ms, self._info_tail)

    # -- exchangeInfo --------------------------------------------------------------------

    def exchange_info_document(self, now_ms: int) -> dict[str, Any]:
        """The exchangeInfo document served at ``now_ms``, parsed (for tools and tests)."""
        _, body = self._exchange_info({}, now_ms)
        doc = json.loads(body)
        assert isinstance(doc, dict)
        return doc

    def _build_exchange_info(self, symbols: list[SymbolInfo]) -> None:
        """Serialise the universe's document once, with the served statuses and limit."""
        limit = self.limiter.limit
        source = self.universe.exchange_info
        doc: dict[str, Any] = {}
        for key in _EXCHANGE_INFO_KEYS:
            if key == "serverTime":
                doc[key] = _SERVER_TIME_MARK
            elif key == "rateLimits":
                doc[key] = _rate_limits(source.get(key), limit)
            elif key == "symbols":
                continue
            elif key in source:
                doc[key] = source[key]
            elif key in _EXCHANGE_INFO_DEFAULTS:
                doc[key] = _EXCHANGE_INFO_DEFAULTS[key]
        for key, value in source.items():
            if key not in doc and key != "symbols":
                doc[key] = value
        doc["symbols"] = [info.raw or _minimal_entry(info) for info in _doc_order(source, symbols)]
        # json, not orjson: rebuilt rarely, and a user's file may hold integers past 64 bits.
        text = json.dumps(doc, separators=(",", ":"), ensure_ascii=False)
        head, mark, tail = text.partition(json.dumps(_SERVER_TIME_MARK))
        assert mark and _SERVER_TIME_MARK not in tail
        self._info_head, self._info_tail = head.encode(), tail.encode()
        self._info_limit = limit
        self._info_symbols = symbols

    # -- reply pieces --------------------------------------------------------------------

    @staticmethod
    def _reply(status: int, body: bytes, count: int) -> RestReply:
        return RestReply(status, [_CONTENT_TYPE, (USED_WEIGHT_HEADER, str(count))], body)

    def _unrouted(self, method: str, path: str, client_ip: str, now_ms: int) -> RestReply:
        try:
            count = self.limiter.charge(client_ip, weights.REST_UNROUTED_WEIGHT, now_ms)
        except BinanceError as err:
            return self.limited_reply(err, now_ms)
        # The path is echoed; lone surrogates (undecodable bytes) cannot go into JSON.
        safe = path.encode("utf-8", "replace").decode("utf-8")
        return self._reply(404, _error_body(ErrorCode.INVALID_PATH, safe, method), count)

    @staticmethod
    def limited_reply(err: BinanceError, now_ms: int) -> RestReply:
        """The REST answer to a 429 / 418 ``err`` at ``now_ms``: the -1003 body (no ``data``,
        as fapi), the used weight, and ``Retry-After`` in whole seconds (at least 1)."""
        headers = [
            _CONTENT_TYPE,
            (USED_WEIGHT_HEADER, str(err.used_weight or 0)),
            ("Retry-After", str(err.retry_after_s(now_ms))),
        ]
        return RestReply(err.status, headers, orjson.dumps({"code": err.code, "msg": err.msg}))


def _klines_weight(pairs: Pairs) -> int:
    return weights.klines_weight(klines_limit(pairs))


def _rate_limits(entries: Any, limit: int) -> list[Any]:
    """The document's rateLimits with REQUEST_WEIGHT / 1 MINUTE set to the served limit."""
    out: list[Any] = []
    found = False
    for entry in entries if isinstance(entries, list) else []:
        if (
            isinstance(entry, Mapping)
            and entry.get("rateLimitType") == "REQUEST_WEIGHT"
            and entry.get("interval") == "MINUTE"
            and entry.get("intervalNum") == 1
        ):
            entry = {**entry, "limit": limit}
            found = True
        out.append(entry)
    if not found:
        out.insert(
            0,
            {
                "rateLimitType": "REQUEST_WEIGHT",
                "interval": "MINUTE",
                "intervalNum": 1,
                "limit": limit,
            },
        )
    return out


def _doc_order(source: Mapping[str, Any], symbols: list[SymbolInfo]) -> list[SymbolInfo]:
    """``symbols`` in the order the loaded document listed them; any others after, by name."""
    by_name = {info.symbol: info for info in symbols}
    ordered: list[SymbolInfo] = []
    entries = source.get("symbols")
    for entry in entries if isinstance(entries, list) else []:
        name = entry.get("symbol") if isinstance(entry, Mapping) else None
        info = by_name.pop(name, None) if isinstance(name, str) else None
        if info is not None:
            ordered.append(info)
    ordered.extend(by_name.values())
    return ordered


def _minimal_entry(info: SymbolInfo) -> dict[str, Any]:
    """An exchangeInfo entry for a contract built without a document (tests, tools)."""
    return {
        "symbol": info.symbol,
        "status": info.status,
        "pricePrecision": info.price_precision,
        "filters": [{"filterType": "PRICE_FILTER", "tickSize": str(info.tick_size)}],
    }

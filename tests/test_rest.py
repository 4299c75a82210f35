"""The REST twins: the sans-I/O :class:`RestApi` byte for byte, then a real server over HTTP.

Pages (developers.binance.com/docs/derivatives/usds-margined-futures/...):
market-data/rest-api/Symbol-Price-Ticker (+ -v2), Exchange-Information, Test-Connectivity,
Check-Server-Time; general-info (error payload, ``X-MBX-USED-WEIGHT-1M``); error-code.
Answers Binance does not document are in docs/DECISIONS.md and are pinned here too.

The end-to-end tests start ``tickerd serve --rest-port 0`` through conftest's ``server``
fixture (which keeps each test clear of a clock-minute boundary, where weight windows
restart) and read the REST URL from the ``tickerd REST ready: http://...`` log line.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import re
import socket
import time
from decimal import Decimal
from importlib import resources
from typing import Any
from urllib.parse import urlsplit

import pytest

from helpers_core import BANNED, RATE_LIMITED
from tickerd import ManualClock, PriceBook, Protocol, RateLimiter, Session, SymbolUniverse
from tickerd.rest import USED_WEIGHT_HEADER, RestApi, RestReply
from tickerd.weights import BAN_GRACE_REQUESTS, BAN_STEPS_MS

pytestmark = pytest.mark.timeout(60)

IP = "1.2.3.4"
MINUTE = 60_000
MINUTE_START = 1_700_000_040_000  # the first millisecond of a clock minute
NOW = MINUTE_START + 12_345
TICK_TIME = 1_589_437_530_011

JSON = ("Content-Type", "application/json")
BAD_SYMBOL = b'{"code":-1121,"msg":"Invalid symbol."}'
EMPTY_SYMBOL = b'{"code":-1105,"msg":"Parameter \'symbol\' was empty."}'
DUPLICATE = b'{"code":-1101,"msg":"Duplicate values for a parameter detected."}'
TICKERS = ("/fapi/v1/ticker/price", "/fapi/v2/ticker/price")

_EXCHANGE_INFO = json.loads(
    resources.files("tickerd.data").joinpath("exchange_info.json").read_text("utf-8")
)
FILE_ORDER = [s["symbol"] for s in _EXCHANGE_INFO["symbols"]]
TRADING = sorted(s["symbol"] for s in _EXCHANGE_INFO["symbols"] if s["status"] == "TRADING")


def unread(read: int, sent: int) -> bytes:
    return (
        b'{"code":-1104,"msg":"Not all sent parameters were read; read \'%d\' parameter(s) '
        b"but was sent '%d'.\"}" % (read, sent)
    )


def invalid_path(path: str, method: str) -> bytes:
    return json.dumps(
        {"code": -5000, "msg": f"Path {path}, Method {method} is invalid"},
        separators=(",", ":"),
        ensure_ascii=False,
    ).encode()


def headers(count: int) -> list[tuple[str, str]]:
    return [JSON, (USED_WEIGHT_HEADER, str(count))]


def make_api(limit: int = 2400) -> tuple[RestApi, PriceBook, RateLimiter]:
    universe = SymbolUniverse.default()
    book = PriceBook(universe)
    book.apply(
        [
            book.make_tick("BTCUSDT", "97000.1", TICK_TIME),
            book.make_tick("ETHUSDT", "3150.5", TICK_TIME + 1),
            book.make_tick("SRMUSDT", "0.1000", TICK_TIME),  # SETTLING: never served
        ]
    )
    limiter = RateLimiter(limit)
    return RestApi(book, limiter, universe), book, limiter


def get(api: RestApi, path: str, query: str = "", now: int = NOW, ip: str = IP) -> RestReply:
    return api.handle("GET", path, query, ip, now)


# -- the endpoints -----------------------------------------------------------------------


@pytest.mark.parametrize("path", TICKERS)
def test_ticker_price_one_symbol_is_the_books_cached_body(path):
    api, book, _ = make_api()
    reply = get(api, path, "symbol=BTCUSDT")
    assert reply == RestReply(
        200, headers(1), b'{"symbol":"BTCUSDT","price":"97000.10","time":1589437530011}'
    )
    assert reply.body is book.body("BTCUSDT")  # passed through, not re-serialised
    assert get(api, path, "symbol=ETHUSDT").headers == headers(2)


@pytest.mark.parametrize("path", TICKERS)
def test_ticker_price_all_symbols_weighs_2_and_is_the_cached_array(path):
    api, book, _ = make_api()
    reply = get(api, path)
    assert reply.status == 200 and reply.headers == headers(2)
    assert reply.body is book.all_body()
    assert json.loads(reply.body) == [
        {"symbol": "BTCUSDT", "price": "97000.10", "time": TICK_TIME},
        {"symbol": "ETHUSDT", "price": "3150.50", "time": TICK_TIME + 1},
    ]
    assert get(api, path).headers == headers(4)


def test_ticker_price_follows_the_book():
    api, book, _ = make_api()
    book.update(book.make_tick("BTCUSDT", "97001.3", TICK_TIME + 5))
    assert get(api, "/fapi/v2/ticker/price", "symbol=BTCUSDT").body == (
        b'{"symbol":"BTCUSDT","price":"97001.30","time":1589437530016}'
    )


def test_ping_and_time():
    api, _, _ = make_api()
    assert get(api, "/fapi/v1/ping") == RestReply(200, headers(1), b"{}")
    assert get(api, "/fapi/v1/time", now=NOW) == RestReply(
        200, headers(2), b'{"serverTime":%d}' % NOW
    )
    assert get(api, "/fapi/v1/time", now=NOW + 7).body == b'{"serverTime":%d}' % (NOW + 7)


def test_percent_encoded_and_signing_parameters_are_read():
    api, _, _ = make_api()
    reply = get(api, "/fapi/v1/ticker/price", "symbol=BTC%55SDT&timestamp=1&recvWindow=5000")
    assert reply.status == 200 and reply.body.startswith(b'{"symbol":"BTCUSDT"')
    assert get(api, "/fapi/v1/ping", "timestamp=1&signature=abc").body == b"{}"


# -- exchangeInfo ------------------------------------------------------------------------


def test_exchange_info_document():
    api, _, _ = make_api(limit=1234)
    reply = get(api, "/fapi/v1/exchangeInfo", now=NOW)
    assert reply.status == 200 and reply.headers == headers(1)
    doc = json.loads(reply.body)
    assert list(doc) == [
        "timezone",
        "serverTime",
        "futuresType",
        "rateLimits",
        "exchangeFilters",
        "assets",
        "symbols",
    ]
    assert doc["timezone"] == "UTC" and doc["serverTime"] == NOW
    assert doc["rateLimits"][0] == {
        "rateLimitType": "REQUEST_WEIGHT",
        "interval": "MINUTE",
        "intervalNum": 1,
        "limit": 1234,
    }
    assert doc["rateLimits"][1:] == _EXCHANGE_INFO["rateLimits"][1:]
    assert doc["assets"] == _EXCHANGE_INFO["assets"]
    # Every symbol as the bundled file has it, in the file's order, numbers still strings.
    assert doc["symbols"] == _EXCHANGE_INFO["symbols"]
    assert [s["symbol"] for s in doc["symbols"]] == FILE_ORDER
    assert reply.body.startswith(b'{"timezone":"UTC","serverTime":%d,' % NOW)


def test_exchange_info_is_serialised_once_and_rebuilt_on_status_or_limit_change(monkeypatch):
    import tickerd.rest

    api, book, limiter = make_api()
    calls = []
    dumps = tickerd.rest.json.dumps

    def counting_dumps(*args: Any, **kw: Any) -> str:
        calls.append(1)
        return dumps(*args, **kw)

    monkeypatch.setattr(tickerd.rest.json, "dumps", counting_dumps)
    first = get(api, "/fapi/v1/exchangeInfo", now=NOW).body
    second = get(api, "/fapi/v1/exchangeInfo", now=NOW + 1).body
    builds = len(calls)
    assert builds > 0
    assert second == first.replace(b'"serverTime":%d' % NOW, b'"serverTime":%d' % (NOW + 1), 1)
    for i in range(5):
        get(api, "/fapi/v1/exchangeInfo", now=NOW + i)
    assert len(calls) == builds  # served from the cache

    book.universe.set_status("BTCUSDT", "SETTLING")
    book.refresh_status()
    doc = json.loads(get(api, "/fapi/v1/exchangeInfo").body)
    assert len(calls) == 2 * builds
    btc = next(s for s in doc["symbols"] if s["symbol"] == "BTCUSDT")
    assert btc["status"] == "SETTLING"
    assert [s["symbol"] for s in doc["symbols"]] == FILE_ORDER
    assert get(api, "/fapi/v1/ticker/price", "symbol=BTCUSDT").body == BAD_SYMBOL

    limiter.limit = 99
    doc = json.loads(get(api, "/fapi/v1/exchangeInfo").body)
    assert len(calls) == 3 * builds
    assert doc["rateLimits"][0]["limit"] == 99


def test_exchange_info_of_a_sparse_file_is_completed():
    doc = {
        "symbols": [
            {
                "symbol": "ZZZUSDT",
                "status": "TRADING",
                "pricePrecision": 2,
                "filters": [{"filterType": "PRICE_FILTER", "tickSize": "0.01"}],
            },
            {
                "symbol": "AAAUSDT",
                "status": "TRADING",
                "filters": [{"filterType": "PRICE_FILTER", "tickSize": "0.5"}],
            },
        ],
        "extra": 2**70,
    }
    universe = SymbolUniverse.from_exchange_info(doc)
    api = RestApi(PriceBook(universe), RateLimiter(77), universe)
    served = api.exchange_info_document(NOW)
    assert served == {
        "timezone": "UTC",
        "serverTime": NOW,
        "futuresType": "U_MARGINED",
        "rateLimits": [
            {"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1, "limit": 77}
        ],
        "exchangeFilters": [],
        "assets": [],
        "extra": 2**70,
        "symbols": doc["symbols"],  # the file's order, not by name
    }


# -- errors ------------------------------------------------------------------------------


@pytest.mark.parametrize("path", TICKERS)
@pytest.mark.parametrize(
    "symbol",
    ["NOPEUSDT", "btcusdt", "SRMUSDT", "BTCUSDT_250328", "XRPUSDT", "BTC%20USDT", "%FF"],
    ids=["unknown", "lower-case", "settling", "delivered", "no-price-yet", "space", "non-utf8"],
)
def test_symbol_without_a_price_to_serve_is_1121(path, symbol):
    api, _, _ = make_api()
    assert get(api, path, f"symbol={symbol}") == RestReply(400, headers(1), BAD_SYMBOL)


@pytest.mark.parametrize("query", ["symbol=", "symbol"])
def test_empty_symbol_is_1105(query):
    api, _, _ = make_api()
    assert get(api, "/fapi/v1/ticker/price", query) == RestReply(400, headers(1), EMPTY_SYMBOL)


@pytest.mark.parametrize(
    ("path", "query", "weight", "read", "sent"),
    [
        ("/fapi/v1/ticker/price", "symbol=BTCUSDT&foo=1", 1, 1, 2),
        ("/fapi/v2/ticker/price", "limit=5", 2, 0, 1),
        ("/fapi/v1/ticker/price", "Symbol=BTCUSDT", 2, 0, 1),  # names are case-sensitive
        ("/fapi/v1/ticker/price", "symbol=BTCUSDT&timestamp=1&a=&b=2", 1, 2, 4),
        ("/fapi/v1/exchangeInfo", "symbol=BTCUSDT", 1, 0, 1),
        ("/fapi/v1/ping", "=x", 1, 0, 1),
        ("/fapi/v1/time", "apiKey=k&signature=s", 1, 1, 2),
    ],
)
def test_parameter_the_endpoint_does_not_read_is_1104(path, query, weight, read, sent):
    api, _, _ = make_api()
    assert get(api, path, query) == RestReply(400, headers(weight), unread(read, sent))


def test_parameter_sent_twice_is_1101():
    api, _, _ = make_api()
    reply = get(api, "/fapi/v1/ticker/price", "symbol=BTCUSDT&symbol=BTCUSDT")
    assert reply == RestReply(400, headers(1), DUPLICATE)
    assert get(api, "/fapi/v1/ping", "x=1&x=1") == RestReply(400, headers(2), DUPLICATE)


def test_more_than_100_parameters_is_1101():
    api, _, _ = make_api()
    query = "&".join(f"p{i}=1" for i in range(101))
    assert get(api, "/fapi/v1/ticker/price", query) == RestReply(
        400,
        headers(2),
        b'{"code":-1101,"msg":"Too many parameters; expected \'1\' and received \'101\'."}',
    )


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/fapi/v1/nope"),
        ("GET", "/"),
        ("GET", "/fapi/v1/ping/"),
        ("GET", "/fapi/v3/ticker/price"),
        ("GET", "/fapi/v1/ticker/24hr"),
        ("GET", "/FAPI/v1/ping"),
        ("POST", "/fapi/v1/ticker/price"),
        ("DELETE", "/fapi/v1/exchangeInfo"),
        ("HEAD", "/fapi/v1/ping"),
        ("OPTIONS", "/fapi/v1/time"),
        ("GET", "/fapi/v1/ticker%2Fprice"),
        ("GET", '/a"b\\c\u00e9'),
    ],
)
def test_unrouted_path_or_method_is_404_5000(method, path):
    api, _, _ = make_api()
    reply = api.handle(method, path, "symbol=BTCUSDT", IP, NOW)
    assert reply == RestReply(404, headers(1), invalid_path(path, method))


def test_unrouted_path_with_undecodable_bytes_still_answers_json():
    api, _, _ = make_api()
    reply = api.handle("GET", "/x\udcff", "", IP, NOW)
    assert reply.status == 404 and json.loads(reply.body)["code"] == -5000


# -- weights, 429, 418 -------------------------------------------------------------------


def test_weights_per_endpoint_and_errors_are_charged():
    api, _, limiter = make_api()
    sequence = [
        ("/fapi/v1/ticker/price", "symbol=BTCUSDT", 1),
        ("/fapi/v2/ticker/price", "", 2),
        ("/fapi/v1/exchangeInfo", "", 1),
        ("/fapi/v1/ping", "", 1),
        ("/fapi/v1/time", "", 1),
        ("/fapi/v1/ticker/price", "symbol=NOPE", 1),
        ("/fapi/v2/ticker/price", "foo=1", 2),
        ("/nowhere", "", 1),
    ]
    total = 0
    for path, query, weight in sequence:
        total += weight
        reply = get(api, path, query)
        assert dict(reply.headers)[USED_WEIGHT_HEADER] == str(total), (path, query)
    assert limiter.used(IP, NOW) == total
    assert limiter.used("5.6.7.8", NOW) == 0  # per IP


def test_429_with_retry_after_then_418_ban():
    limit = 5
    api, _, _ = make_api(limit)
    for i in range(1, limit + 1):
        assert get(api, "/fapi/v1/ping").headers == headers(i)
    now = MINUTE_START + 59_000 + 1  # 59.001 s into the minute: 999 ms left, Retry-After 1
    limited = RATE_LIMITED.format(ip=IP, limit=limit)
    for i in range(BAN_GRACE_REQUESTS + 1):
        reply = get(api, "/fapi/v1/ticker/price", "symbol=BTCUSDT", now=now)
        assert reply == RestReply(
            429,
            [JSON, (USED_WEIGHT_HEADER, str(limit + 1 + i)), ("Retry-After", "1")],
            json.dumps({"code": -1003, "msg": limited}, separators=(",", ":")).encode(),
        )
    reply = get(api, "/fapi/v1/ping", now=now)
    until = now + BAN_STEPS_MS[0]
    assert reply == RestReply(
        418,
        [
            JSON,
            (USED_WEIGHT_HEADER, str(limit + BAN_GRACE_REQUESTS + 2)),
            ("Retry-After", str(BAN_STEPS_MS[0] // 1000)),
        ],
        json.dumps(
            {"code": -1003, "msg": BANNED.format(ip=IP, until=until)}, separators=(",", ":")
        ).encode(),
    )
    # Banned: every path answers 418, unknown ones too; the ban outlasts the window.
    later = now + MINUTE
    reply = api.handle("POST", "/nowhere", "", IP, later)
    assert reply.status == 418
    assert ("Retry-After", str((until - later + 999) // 1000)) in reply.headers
    assert get(api, "/fapi/v1/ping", now=until).status == 200


def test_429_retry_after_counts_whole_seconds_to_the_next_window():
    api, _, _ = make_api(1)
    get(api, "/fapi/v1/ping")
    reply = get(api, "/fapi/v1/ping", now=MINUTE_START + 12_345)
    assert reply.status == 429
    assert ("Retry-After", "48") in reply.headers  # 47.655 s left, rounded up


def test_one_budget_with_the_websocket_protocol():
    api, book, limiter = make_api(limit=10)
    protocol = Protocol(book, limiter)  # the same limiter instance
    session = Session(IP)
    reply = b"".join(protocol.handle(b'{"id":1,"method":"ticker.price"}', session, NOW))
    assert reply.endswith(b'"count":2}]}')
    assert get(api, "/fapi/v1/ping").headers == headers(3)
    assert get(api, "/fapi/v2/ticker/price").headers == headers(5)
    reply = b"".join(
        protocol.handle(
            b'{"id":2,"method":"ticker.price","params":{"symbol":"BTCUSDT"}}', session, NOW
        )
    )
    assert reply.endswith(b'"count":6}]}')
    for _ in range(4):
        get(api, "/fapi/v1/ping")
    assert get(api, "/fapi/v1/ping").status == 429  # 11 > 10
    reply = b"".join(protocol.handle(b'{"id":3,"method":"ticker.price"}', session, NOW))
    assert b'"status":429' in reply and reply.endswith(b'"count":13}]}')


# -- the HTTP server in-process: the server clock ------------------------------------------


def test_service_rest_follows_the_service_clock_and_exposes_rest_url():
    aiohttp = pytest.importorskip("aiohttp")
    from tickerd.app import Service
    from tickerd.config import Settings

    async def scenario() -> None:
        clock = ManualClock(NOW)
        service = Service(Settings(port=0, rest_port=0, ops_port=-1), clock=clock, feeds=[])
        await service.start()
        try:
            url = service.rest_url
            assert url is not None and re.fullmatch(r"http://127\.0\.0\.1:\d+", url)
            async with aiohttp.ClientSession() as session:
                async with session.get(url + "/fapi/v1/time") as response:
                    assert await response.read() == b'{"serverTime":%d}' % NOW
                clock.advance(61_000)
                async with session.get(url + "/fapi/v1/time") as response:
                    assert await response.read() == b'{"serverTime":%d}' % (NOW + 61_000)
                    # A new window on the manual clock: the count restarted.
                    assert response.headers[USED_WEIGHT_HEADER] == "1"
                async with session.get(url + "/fapi/v1/exchangeInfo") as response:
                    assert (await response.json())["serverTime"] == NOW + 61_000
        finally:
            await service.stop()

    asyncio.run(scenario())


def test_service_without_rest():
    from tickerd.app import Service
    from tickerd.config import Settings

    async def scenario() -> None:
        service = Service(Settings(port=0, rest_port=-1, ops_port=-1), feeds=[])
        await service.start()
        try:
            assert service.rest_url is None and service.http is None
        finally:
            await service.stop()

    asyncio.run(scenario())


# -- end to end: a real server over HTTP ---------------------------------------------------


REST_READY_RE = re.compile(r"tickerd REST ready: (http://127\.0\.0\.1:(\d+))$")


class Rest:
    """A plain HTTP/1.1 client for one server (keeps exact header names and bytes)."""

    def __init__(self, base: str) -> None:
        parts = urlsplit(base)
        assert parts.hostname is not None and parts.port is not None
        self.base = base
        self.host, self.port = parts.hostname, parts.port

    def request(
        self, path: str, method: str = "GET", body: bytes | None = None
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        conn = http.client.HTTPConnection(self.host, self.port, timeout=5)
        try:
            conn.request(method, path, body=body)
            response = conn.getresponse()
            return response.status, response.getheaders(), response.read()
        finally:
            conn.close()

    def weight(self, path: str = "/fapi/v1/ping") -> tuple[int, int]:
        status, hdrs, _ = self.request(path)
        return status, int(dict(hdrs)[USED_WEIGHT_HEADER])


def rest_of(srv: Any) -> Rest:
    line = srv.wait_log("tickerd REST ready: ")
    m = REST_READY_RE.search(line)
    assert m, line
    return Rest(m.group(1))


def header(hdrs: list[tuple[str, str]], name: str) -> str:
    values = [v for k, v in hdrs if k.lower() == name.lower()]
    assert len(values) == 1, hdrs
    return values[0]


def test_e2e_rest_ready_line_comes_before_the_ws_ready_line(server):
    srv = server("--rest-port", "0")
    rest = rest_of(srv)
    lines = srv.log().splitlines()
    rest_at = next(i for i, line in enumerate(lines) if "tickerd REST ready: " in line)
    ws_at = next(i for i, line in enumerate(lines) if "tickerd ready: ws://" in line)
    assert rest_at < ws_at
    assert rest.port != srv.port


def test_e2e_rest_port_minus_one_disables_rest(server):
    srv = server("--rest-port", "-1")
    assert "REST ready" not in srv.log()


def test_e2e_every_endpoint(server):
    srv = server("--rest-port", "0", "--tick-rate", "0")
    rest = rest_of(srv)
    count = 0

    def expect(path: str, weight: int) -> bytes:
        nonlocal count
        count += weight
        status, hdrs, body = rest.request(path)
        assert status == 200, (path, body)
        # The exact spelling: some clients look the header up case-sensitively.
        assert (USED_WEIGHT_HEADER, str(count)) in hdrs, hdrs
        assert header(hdrs, "Content-Type") == "application/json"
        return body

    for path in TICKERS:
        one = json.loads(expect(f"{path}?symbol=BTCUSDT", 1))
        assert list(one) == ["symbol", "price", "time"] and one["symbol"] == "BTCUSDT"
        assert isinstance(one["price"], str) and Decimal(one["price"]) > 0
        assert isinstance(one["time"], int)
        every = json.loads(expect(path, 2))
        assert [t["symbol"] for t in every] == TRADING
        assert next(t for t in every if t["symbol"] == "BTCUSDT") == one
    assert expect("/fapi/v1/ping", 1) == b"{}"
    before = time.time_ns() // 1_000_000
    server_time = json.loads(expect("/fapi/v1/time", 1))
    after = time.time_ns() // 1_000_000
    assert list(server_time) == ["serverTime"] and before <= server_time["serverTime"] <= after
    info = json.loads(expect("/fapi/v1/exchangeInfo", 1))
    assert info["rateLimits"][0]["limit"] == 2400
    assert [s["symbol"] for s in info["symbols"]] == FILE_ORDER
    assert before <= info["serverTime"] <= time.time_ns() // 1_000_000


def test_e2e_every_error(server):
    srv = server("--rest-port", "0")
    rest = rest_of(srv)
    cases = [
        ("GET", "/fapi/v1/ticker/price?symbol=NOPE", 1, 400, BAD_SYMBOL),
        ("GET", "/fapi/v2/ticker/price?symbol=SRMUSDT", 1, 400, BAD_SYMBOL),
        ("GET", "/fapi/v1/ticker/price?symbol=", 1, 400, EMPTY_SYMBOL),
        ("GET", "/fapi/v2/ticker/price?symbol=BTCUSDT&foo=bar", 1, 400, unread(1, 2)),
        ("GET", "/fapi/v1/exchangeInfo?limit=1", 1, 400, unread(0, 1)),
        ("GET", "/fapi/v1/ticker/price?symbol=A&symbol=B", 1, 400, DUPLICATE),
        ("GET", "/fapi/v1/fundingInfo?x=1", 1, 404, invalid_path("/fapi/v1/fundingInfo", "GET")),
        ("POST", "/fapi/v1/ticker/price", 1, 404, invalid_path("/fapi/v1/ticker/price", "POST")),
        ("PUT", "/fapi/v1/ping", 1, 404, invalid_path("/fapi/v1/ping", "PUT")),
        ("DELETE", "/fapi/v1/time", 1, 404, invalid_path("/fapi/v1/time", "DELETE")),
    ]
    count = 0
    for method, path, weight, status, body in cases:
        count += weight
        got_status, hdrs, got_body = rest.request(path, method)
        assert (got_status, got_body) == (status, body), (method, path)
        assert (USED_WEIGHT_HEADER, str(count)) in hdrs, hdrs
        assert header(hdrs, "Content-Type") == "application/json"
    # HEAD: the same answer, without the body (HTTP).
    status, hdrs, body = rest.request("/fapi/v1/ping", "HEAD")
    assert (status, body) == (404, b"")
    assert (USED_WEIGHT_HEADER, str(count + 1)) in hdrs


def test_e2e_429_then_418_with_retry_after(server):
    limit = 10
    srv = server("--rest-port", "0", "--weight-limit", str(limit))
    rest = rest_of(srv)
    for i in range(1, limit + 1):
        assert rest.weight() == (200, i)
    for i in range(BAN_GRACE_REQUESTS + 1):
        status, hdrs, body = rest.request("/fapi/v1/ticker/price?symbol=BTCUSDT")
        assert status == 429, body
        assert (
            body
            == json.dumps(
                {"code": -1003, "msg": RATE_LIMITED.format(ip="127.0.0.1", limit=limit)},
                separators=(",", ":"),
            ).encode()
        )
        assert header(hdrs, USED_WEIGHT_HEADER) == str(limit + 1 + i)
        assert 1 <= int(header(hdrs, "Retry-After")) <= 60
    status, hdrs, body = rest.request("/fapi/v1/exchangeInfo")
    assert status == 418, body
    m = re.fullmatch(
        rb'\{"code":-1003,"msg":"Way too many requests; IP\(127\.0\.0\.1\) banned until (\d+)\. '
        rb'Please use the websocket for live updates to avoid bans\."\}',
        body,
    )
    assert m, body
    retry_after = int(header(hdrs, "Retry-After"))
    assert BAN_STEPS_MS[0] // 1000 - 5 <= retry_after <= BAN_STEPS_MS[0] // 1000
    # The ban covers the WebSocket API too: its handshake is refused with 418.
    with pytest.raises(Exception, match="418"):
        srv.connect()


def test_e2e_weight_spent_on_ws_shows_in_rest_then_429_on_rest(server):
    limit = 20
    srv = server("--rest-port", "0", "--weight-limit", str(limit))
    rest = rest_of(srv)
    with srv.connect() as ws:  # handshake: 5
        ws.send('{"id":1,"method":"ticker.price","params":{"symbol":"BTCUSDT"}}')
        assert ws.recv(timeout=5).endswith('"count":6}]}')
        ws.send('{"id":2,"method":"ticker.price"}')
        assert ws.recv(timeout=5).endswith('"count":8}]}')
        assert rest.weight() == (200, 9)
        assert rest.weight("/fapi/v2/ticker/price") == (200, 11)
        ws.send('{"id":3,"method":"ticker.price","params":{"symbol":"ETHUSDT"}}')
        assert ws.recv(timeout=5).endswith('"count":12}]}')
        for expected in range(13, limit + 1):
            assert rest.weight() == (200, expected)
        ws.send('{"id":4,"method":"ticker.price","params":{"symbol":"BTCUSDT"}}')
        reply = ws.recv(timeout=5)
        assert reply.startswith('{"id":4,"status":429,'), reply
        assert reply.endswith('"count":21}]}')
        status, hdrs, _ = rest.request("/fapi/v1/ping")
        assert status == 429 and header(hdrs, USED_WEIGHT_HEADER) == "22"


def test_e2e_weight_spent_on_rest_shows_in_ws_then_429_on_ws(server):
    limit = 20
    srv = server("--rest-port", "0", "--weight-limit", str(limit))
    rest = rest_of(srv)
    assert rest.weight("/fapi/v1/ticker/price") == (200, 2)
    assert rest.weight("/fapi/v1/exchangeInfo") == (200, 3)
    with srv.connect() as ws:  # handshake: 5 -> 8
        ws.send('{"id":1,"method":"ticker.price","params":{"symbol":"BTCUSDT"}}')
        assert ws.recv(timeout=5).endswith('"count":9}]}')
        for expected in range(10, limit + 1):
            ws.send('{"id":1,"method":"ticker.price","params":{"symbol":"BTCUSDT"}}')
            assert ws.recv(timeout=5).endswith(f'"count":{expected}}}]}}')
        status, hdrs, body = rest.request("/fapi/v2/ticker/price?symbol=BTCUSDT")
        assert status == 429, body
        assert header(hdrs, USED_WEIGHT_HEADER) == "21"
        ws.send('{"id":2,"method":"ticker.price","params":{"symbol":"BTCUSDT"}}')
        reply = ws.recv(timeout=5)
        assert reply.startswith('{"id":2,"status":429,') and reply.endswith('"count":22}]}')
    # A new WebSocket handshake (weight 5) is refused as well.
    with pytest.raises(Exception, match="429"):
        srv.connect()


def test_e2e_keep_alive_serves_many_requests_on_one_connection(server):
    srv = server("--rest-port", "0")
    rest = rest_of(srv)
    conn = http.client.HTTPConnection(rest.host, rest.port, timeout=5)
    try:
        for i in range(1, 6):
            conn.request("GET", "/fapi/v1/ping")
            response = conn.getresponse()
            assert response.read() == b"{}"
            assert response.getheader(USED_WEIGHT_HEADER) == str(i)
    finally:
        conn.close()


def test_e2e_unread_request_body_closes_the_connection(server):
    srv = server("--rest-port", "0")
    rest = rest_of(srv)
    with socket.create_connection((rest.host, rest.port), timeout=5) as sock:
        sock.sendall(
            b"POST /fapi/v1/ping HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n"
            + b"x" * 1000
        )
        data = b""
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break  # closed by the server: it did not wait for the rest of the body
            data += chunk
    assert data.startswith(b"HTTP/1.1 404 "), data
    assert data.endswith(invalid_path("/fapi/v1/ping", "POST"))


def test_e2e_oversized_request_line_is_refused(server):
    srv = server("--rest-port", "0")
    rest = rest_of(srv)
    status, _, _ = rest.request("/fapi/v1/ping?x=" + "a" * 10_000)
    assert status in (400, 414, 431)
    assert rest.weight() == (200, 1)  # still serving; the refused line cost nothing

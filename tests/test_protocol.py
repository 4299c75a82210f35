"""The sans-I/O WebSocket API: exact reply bytes for every request shape.

Every test drives :meth:`Protocol.handle` with a frame, a :class:`Session` and a fixed
``now_ms`` and compares the concatenated reply with bytes written out by hand (or a golden
file under ``golden/``). Binance facts: /work/shared/BINANCE.md §1–§3.
"""

from __future__ import annotations

import json
from decimal import Decimal

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from helpers_core import (
    BANNED,
    BTC,
    ETH,
    GOLDEN,
    INT64_MAX,
    INT64_MIN,
    IP,
    MINUTE,
    MINUTE_START,
    NEXT_MINUTE,
    NOW,
    RATE_LIMITED,
    SEED_ID,
    TICK_TIME,
    body,
    err,
    golden,
    make_protocol,
    ok,
    ordered,
    rate_limits,
    reply,
    request,
    shape,
    standard_book,
    universe,
    valid_id,
)
from tickerd import PriceBook, Protocol, RateLimiter, Session
from tickerd.protocol import CloseConnection, id_json
from tickerd.symbols import reference_prices

INVALID_ID = (
    "Invalid 'id' in JSON request; expected an integer, a string matching "
    "'^[a-zA-Z0-9-_]{1,36}$', or null."
)
INVALID_ID_REPLY = (
    b'{"id":null,"status":400,"error":{"code":-1000,"msg":"Invalid \'id\' in JSON request; '
    b"expected an integer, a string matching '^[a-zA-Z0-9-_]{1,36}$', or null.\"}}"
)
INVALID_JSON_REPLY = (
    b'{"id":null,"status":400,"error":{"code":-1000,"msg":"Invalid JSON request."}}'
)
INVALID_PARAMS = "Invalid 'params' in JSON request; expected an object."
INVALID_METHOD = "Invalid 'method' in JSON request; expected a string."
MANDATORY_SYMBOL = "Mandatory parameter 'symbol' was not sent, was empty/null, or malformed."
MANDATORY_RRL = "Mandatory parameter 'returnRateLimits' was not sent, was empty/null, or malformed."
RATE_LIMITED_10 = RATE_LIMITED.format(ip=IP, limit=10)


def banned(until: int) -> str:
    return BANNED.format(ip=IP, until=until)


def limited_error(status: int, msg: str, server_time: int, retry_after: int) -> bytes:
    """The ``error`` object of a 429/418 reply: code, msg, data{serverTime, retryAfter}."""
    return b'{"code":-1003,"msg":"%s","data":{"serverTime":%d,"retryAfter":%d}}' % (
        msg.encode(),
        server_time,
        retry_after,
    )


def limited(
    rid: bytes, status: int, msg: str, count: int, retry_after: int, now: int = NOW
) -> bytes:
    return b'{"id":%s,"status":%d,"error":%s%s}' % (
        rid,
        status,
        limited_error(status, msg, now, retry_after),
        rate_limits(count, 10),
    )


@pytest.fixture
def proto() -> Protocol:
    return make_protocol()


# -- golden frames -----------------------------------------------------------------------


SEED_REQUEST = (
    b'{"id":"9d32157c-a556-4d27-9866-66760a174b57","method":"ticker.price",'
    b'"params":{"symbol":"BTCUSDT"}}'
)
SEED_REQUEST_ALL = b'{"id":"9d32157c-a556-4d27-9866-66760a174b57","method":"ticker.price"}'


def full_book() -> PriceBook:
    """Every TRADING contract at its reference price (time = seed time + index), plus the
    two non-TRADING contracts priced, which must not show."""
    book = PriceBook(universe())
    refs = reference_prices()
    trading = book.universe.trading()
    book.apply(
        [book.make_tick(s.symbol, refs[s.symbol], TICK_TIME + i) for i, s in enumerate(trading)]
    )
    book.apply([book.make_tick("SRMUSDT", "0.3", 1), book.make_tick("BTCUSDT_250328", "1.0", 1)])
    return book


def test_golden_single_symbol(proto: Protocol) -> None:
    assert reply(proto, SEED_REQUEST) == golden("ticker_price_single.json")


def test_golden_all_symbols() -> None:
    assert reply(make_protocol(full_book()), SEED_REQUEST_ALL) == golden("ticker_price_all.json")


@pytest.mark.parametrize(
    ("seed_file", "frame"),
    [("seed_single.json", SEED_REQUEST), ("seed_all.json", SEED_REQUEST_ALL)],
)
def test_reply_has_the_shape_of_the_seed_example(seed_file: str, frame: bytes) -> None:
    seed = json.loads((GOLDEN / seed_file).read_text())
    mine = json.loads(reply(make_protocol(full_book()), frame))
    assert shape(mine) == shape(seed)
    assert list(mine) == ["id", "status", "result", "rateLimits"]


def test_all_symbols_array_sorted_complete_and_trading_only() -> None:
    book = full_book()
    result = json.loads(reply(make_protocol(book), SEED_REQUEST_ALL))["result"]
    names = [r["symbol"] for r in result]
    assert names == sorted(names)
    assert names == [s.symbol for s in book.universe.trading()]
    assert "SRMUSDT" not in names and "BTCUSDT_250328" not in names
    assert all(list(r) == ["symbol", "price", "time"] for r in result)
    assert all(type(r["price"]) is str and type(r["time"]) is int for r in result)
    assert all("e" not in r["price"].lower() for r in result)


def test_all_symbols_only_those_with_a_price(proto: Protocol) -> None:
    # standard_book holds ETH then BTC (and two non-TRADING ones): sorted, two entries.
    assert reply(proto, request(params=b"{}")) == ok(b"1", b"[" + BTC + b"," + ETH + b"]", 2)


def test_all_symbols_of_an_empty_book() -> None:
    proto = make_protocol(PriceBook(universe()))
    assert reply(proto, request(params=None)) == ok(b"1", b"[]", 2)


def test_params_omitted_is_all_symbols(proto: Protocol) -> None:
    assert reply(proto, request(params=None)) == ok(b"1", b"[" + BTC + b"," + ETH + b"]", 2)


def test_reply_is_a_tuple_of_bytes(proto: Protocol) -> None:
    parts = proto.handle(SEED_REQUEST, Session(IP), NOW)
    assert type(parts) is tuple and all(type(p) is bytes for p in parts)


def test_price_changes_show_in_the_next_reply(proto: Protocol) -> None:
    assert reply(proto, request()) == ok(b"1", BTC, 1)
    proto.book.update(proto.book.make_tick("BTCUSDT", "97001", TICK_TIME + 5))
    new = body("BTCUSDT", "97001.00", TICK_TIME + 5)
    assert reply(proto, request()) == ok(b"1", new, 2)
    assert reply(proto, request(params=None)) == ok(b"1", b"[" + new + b"," + ETH + b"]", 4)


def test_request_key_order_does_not_matter(proto: Protocol) -> None:
    frame = b'{"params":{"symbol":"BTCUSDT"},"method":"ticker.price","id":"x"}'
    assert reply(proto, frame) == ok(b'"x"', BTC, 1)


def test_whitespace_in_the_request_is_fine(proto: Protocol) -> None:
    frame = b' {\n "id" : 7 ,\t"method":"ticker.price", "params": { "symbol" : "BTCUSDT" } }\n'
    assert reply(proto, frame) == ok(b"7", BTC, 1)


# -- ids ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw_id", "echo"),
    [
        (b'"9d32157c-a556-4d27-9866-66760a174b57"', None),  # UUID4, 36 chars
        (b'"3f2a9c0d1e4b5a6978c0d1"', None),  # python-binance uuid22: 22 hex chars
        (b'"a1b2c3d4e5"', None),  # a shorter uuid22 (leading zero bits)
        (b'"1"', None),
        (b'"2"', None),
        (b'"0"', None),
        (b'"_"', None),
        (b'"-"', None),
        (b'"A-Za-z0-9_-"', None),
        (b'"abcdefghijklmnopqrstuvwxyz0123456789"', None),  # exactly 36
        (b"0", None),
        (b"1", None),
        (b"-1", None),
        (b"-42", None),
        (str(INT64_MAX).encode(), None),
        (str(INT64_MIN).encode(), None),
        (b"null", None),
        (b'"\\u0031"', b'"1"'),  # an escaped "1" is the string "1"
        (b"-0", b"0"),
    ],
)
def test_id_echoed_with_its_json_type(proto: Protocol, raw_id: bytes, echo: bytes | None) -> None:
    assert reply(proto, request(raw_id)) == ok(echo or raw_id, BTC, 1)


def test_string_and_int_ids_are_not_confused(proto: Protocol) -> None:
    assert reply(proto, request(b'"1"')).startswith(b'{"id":"1",')
    assert reply(proto, request(b"1")).startswith(b'{"id":1,')


@pytest.mark.parametrize(
    "raw_id",
    [
        str(INT64_MAX + 1).encode(),
        str(INT64_MIN - 1).encode(),
        str(2**64 - 1).encode(),
        str(2**64).encode(),
        b"1" * 40,
        b"1.0",
        b"1.5",
        b"-0.0",
        b"1e3",
        b"true",
        b"false",
        b"[]",
        b"[1]",
        b"{}",
        b'{"id":1}',
        b'"abcdefghijklmnopqrstuvwxyz01234567890"',  # 37 chars
        b'"a.b"',
        b'"a b"',
        b'" 1"',
        b'"1 "',
        b'""',
        b'"abc\\n"',
        b'"id\\u0000"',
        b'"\xc3\xa9t\xc3\xa9"',  # "été": letters, but not ASCII
        b'"\xef\xbc\x91"',  # FULLWIDTH DIGIT ONE
        b'"a/b"',
        b'"a+b"',
        b'"{}"',
    ],
)
def test_invalid_id(proto: Protocol, raw_id: bytes) -> None:
    assert reply(proto, request(raw_id)) == INVALID_ID_REPLY
    # Not charged: the next good request is the first of the minute.
    assert reply(proto, request()) == ok(b"1", BTC, 1)


def test_invalid_id_reply_text() -> None:
    assert err(b"null", 400, -1000, INVALID_ID, None) == INVALID_ID_REPLY


def test_missing_id(proto: Protocol) -> None:
    # Binance's reply is not documented (BINANCE.md §1 [OPEN]): tickerd answers like a bad id.
    frame = b'{"method":"ticker.price","params":{"symbol":"BTCUSDT"}}'
    assert reply(proto, frame) == INVALID_ID_REPLY
    assert reply(proto, request()) == ok(b"1", BTC, 1)


def test_id_json_helper() -> None:
    assert id_json(None) == b"null"
    assert id_json(INT64_MIN) == b"-9223372036854775808"
    assert id_json(INT64_MAX + 1) is None
    assert id_json(True) is None
    assert id_json(1.0) is None
    assert id_json("x" * 36) == b'"' + b"x" * 36 + b'"'
    assert id_json("x" * 37) is None


# -- envelope errors ---------------------------------------------------------------------


@pytest.mark.parametrize("params", [b"[]", b'["BTCUSDT"]', b'"BTCUSDT"', b"null", b"1", b"true"])
def test_params_not_an_object(proto: Protocol, params: bytes) -> None:
    assert reply(proto, request(b"7", params)) == err(b"7", 400, -1000, INVALID_PARAMS, None)
    assert reply(proto, request(b'"s"', params)) == err(b'"s"', 400, -1000, INVALID_PARAMS, None)
    assert reply(proto, request()) == ok(b"1", BTC, 1)  # not charged


@pytest.mark.parametrize(
    "frame",
    [
        b"",
        b" ",
        b"{",
        b"}",
        b"hello",
        b'{"id":1,',
        b"{'id':1}",
        b'{"id":1,"method":"ticker.price",}',
        b'{"id":1}{"id":2}',
        b'{"id":NaN}',
        b'{"id":1e400}',
        b"[" * 2000,
        b'{"id":"\\ud800"',  # a lone surrogate escape in a frame that is not JSON anyway
        b'{"id":1,"method":"ticker.price","params":{"\\ud800":NaN}}',
        b'{"id":1,"method":"ticker.price","params":{"\\ud800":1e400}}',
        b'{"\\ud800":' * 2000,
        # Beyond the range of a double: orjson's limit on numbers, kept by the fallback.
        b'{"id":1,"method":"ticker.price","params":{"\\ud800":1%s}}' % (b"0" * 400),
    ],
)
def test_not_json(proto: Protocol, frame: bytes) -> None:
    assert reply(proto, frame) == INVALID_JSON_REPLY


def test_lone_surrogate_escapes_are_json_and_get_answered(proto: Protocol) -> None:
    # RFC 8259 §8.2: a lone surrogate escape is still JSON; Binance parses such a request
    # and answers it, ignoring the unknown param (orjson refuses it: a fallback reads it).
    frame = b'{"id":1,"method":"ticker.price","params":{"symbol":"BTCUSDT","\\ud800":1}}'
    assert reply(proto, frame) == ok(b"1", BTC, 1)
    frame = b'{"id":"a","method":"ticker.price","params":{"\\uDFFF":"\\ud800x"}}'
    assert reply(proto, frame) == ok(b'"a"', b"[" + BTC + b"," + ETH + b"]", 3)
    # In the id, the symbol or the method it is simply the wrong value.
    assert reply(proto, b'{"id":"\\ud800"}') == INVALID_ID_REPLY
    frame = b'{"id":2,"method":"ticker.price","params":{"symbol":"BTC\\ud800"}}'
    assert reply(proto, frame) == err(b"2", 400, -1121, "Invalid symbol.", 4)
    frame = b'{"id":3,"method":"ticker.price\\udc00"}'
    assert reply(proto, frame) == err(b"3", 400, -1000, "Unknown method.", 5)
    # A pair that makes one character is ordinary JSON, read by orjson.
    frame = b'{"id":4,"method":"ticker.price","params":{"symbol":"BTCUSDT","\\ud83d\\ude00":1}}'
    assert reply(proto, frame) == ok(b"4", BTC, 6)


def test_lone_surrogate_request_refused_by_a_forced_fault_echoes_its_id(proto: Protocol) -> None:
    from tickerd.errors import BinanceError

    error = BinanceError(429, -1003, "Too many requests.", used_weight=3)
    frame = b'{"id":7,"method":"ticker.price","params":{"\\ud800":1}}'
    refused = proto.refused(frame, Session(IP), error)
    assert refused is not None and b"".join(refused).startswith(b'{"id":7,"status":429,')
    assert proto.refused(b'{"id":7,"\\ud800":NaN}', Session(IP), error) is None


@pytest.mark.parametrize(
    "frame",
    [
        b"[]",
        b'[{"id":1,"method":"ticker.price"}]',
        b'"ticker.price"',
        b"1",
        b"-1.5",
        b"null",
        b"true",
    ],
)
def test_top_level_not_an_object(proto: Protocol, frame: bytes) -> None:
    assert reply(proto, frame) == INVALID_JSON_REPLY
    assert reply(proto, request()) == ok(b"1", BTC, 1)  # not charged


def test_binary_frame(proto: Protocol) -> None:
    assert b"".join(proto.binary_frame()) == INVALID_JSON_REPLY


@pytest.mark.parametrize(
    "frame",
    [
        b"\xff",
        b"\x80",
        b'{"id":1,"method":"ticker.price","params":{"symbol":"\xc3\x28"}}',
        b'{"id":1,"method":"ticker.price","params":{"symbol":"BTC\xed\xa0\x80"}}',  # surrogate
        b'"\xc0\xaf"',  # overlong "/"
        b'"\xf4\x90\x80\x80"',  # beyond U+10FFFF
        b"\xe2\x82",  # truncated sequence
        b'{"id":1,"method":"\xfe"}',
    ],
)
def test_invalid_utf8_closes_1007(proto: Protocol, frame: bytes) -> None:
    with pytest.raises(CloseConnection) as info:
        proto.handle(frame, Session(IP), NOW)
    assert info.value.code == 1007


def test_valid_non_ascii_utf8_is_no_reason_to_close(proto: Protocol) -> None:
    frame = request(b"1", '{"symbol":"BTCÜSDT","note":"\U0001f600"}'.encode())
    assert reply(proto, frame) == err(b"1", 400, -1121, "Invalid symbol.", 1)


@pytest.mark.parametrize("method", [b'"ticker.book"', b'"TICKER.PRICE"', b'"ticker.price "', b'""'])
def test_unknown_method(proto: Protocol, method: bytes) -> None:
    frame = b'{"id":1,"method":%s,"params":{"symbol":"BTCUSDT"}}' % method
    assert reply(proto, frame) == err(b"1", 400, -1000, "Unknown method.", 1)
    assert reply(proto, frame) == err(b"1", 400, -1000, "Unknown method.", 2)  # weight 1


@pytest.mark.parametrize("method", [b'"v1/ticker.price"', b'"v2/ticker.price"'])
def test_method_version_prefix_accepted(proto: Protocol, method: bytes) -> None:
    # docs/DECISIONS.md: "method version prefix (v1/ticker.price) | accepted" — the WS API
    # general info allows explicit versions ("v3/order.place"); python-binance sends them.
    frame = b'{"id":1,"method":%s,"params":{"symbol":"BTCUSDT"}}' % method
    assert reply(proto, frame) == ok(b"1", BTC, 1)
    frame = b'{"id":2,"method":%s}' % method
    assert reply(proto, frame) == ok(b"2", b"[" + BTC + b"," + ETH + b"]", 3)


@pytest.mark.parametrize(
    "method",
    [
        b'"v1/ticker.book"',
        b'"v/ticker.price"',
        b'"x1/ticker.price"',
        b'"v1/"',
        b'"v1"',
        # Only ASCII digits make a version: not Arabic-Indic, superscript or fullwidth ones.
        '"v\u0661/ticker.price"'.encode(),
        '"v\u00b2/ticker.price"'.encode(),
        '"v\uff11/ticker.price"'.encode(),
        b'"v\\u0661/ticker.price"',
    ],
)
def test_method_version_prefix_does_not_make_unknown_methods_known(
    proto: Protocol, method: bytes
) -> None:
    frame = b'{"id":1,"method":%s}' % method
    assert reply(proto, frame) == err(b"1", 400, -1000, "Unknown method.", 1)


def test_unknown_method_rate_limits_hidden_by_the_session(proto: Protocol) -> None:
    session = Session.from_query(IP, {"returnRateLimits": "false"})
    frame = b'{"id":"u","method":"time"}'
    assert reply(proto, frame, session) == err(b'"u"', 400, -1000, "Unknown method.", None)


@pytest.mark.parametrize(
    "frame",
    [
        b'{"id":1,"params":{"symbol":"BTCUSDT"}}',
        b'{"id":1,"method":null}',
        b'{"id":1,"method":5}',
        b'{"id":1,"method":["ticker.price"]}',
        b'{"id":1,"method":{"name":"ticker.price"}}',
        b'{"id":1,"method":true}',
    ],
)
def test_method_missing_or_not_a_string(proto: Protocol, frame: bytes) -> None:
    assert reply(proto, frame) == err(b"1", 400, -1000, INVALID_METHOD, None)
    assert reply(proto, request()) == ok(b"1", BTC, 1)  # not charged


def test_envelope_checks_come_in_order(proto: Protocol) -> None:
    # A bad id wins over bad params and a bad method; bad params over a bad method.
    assert reply(proto, b'{"id":1.5,"method":5,"params":[]}') == INVALID_ID_REPLY
    assert reply(proto, b'{"id":2,"method":5,"params":[]}') == err(
        b"2", 400, -1000, INVALID_PARAMS, None
    )


# -- returnRateLimits --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("flag", "shown"), [(b"false", False), (b'"false"', False), (b"true", True), (b'"true"', True)]
)
def test_return_rate_limits_per_request(proto: Protocol, flag: bytes, shown: bool) -> None:
    params = b'{"symbol":"BTCUSDT","returnRateLimits":%s}' % flag
    assert reply(proto, request(b"1", params)) == ok(b"1", BTC, 1 if shown else None)
    # Hidden or not, the request was charged.
    assert reply(proto, request()) == ok(b"1", BTC, 2)


def test_return_rate_limits_false_hides_them_on_errors_too(proto: Protocol) -> None:
    params = b'{"symbol":"NOPE","returnRateLimits":false}'
    assert reply(proto, request(b"1", params)) == err(b"1", 400, -1121, "Invalid symbol.", None)
    params = b'{"symbol":"","returnRateLimits":"false"}'
    assert reply(proto, request(b"1", params)) == err(b"1", 400, -1102, MANDATORY_SYMBOL, None)


@pytest.mark.parametrize("value", ["false", "False", "FALSE"])
def test_return_rate_limits_per_session(proto: Protocol, value: str) -> None:
    session = Session.from_query(IP, {"returnRateLimits": value})
    assert session.return_rate_limits is False
    assert reply(proto, request(), session) == ok(b"1", BTC, None)
    on = b'{"symbol":"BTCUSDT","returnRateLimits":true}'
    assert reply(proto, request(b"1", on), session) == ok(b"1", BTC, 2)
    on = b'{"symbol":"BTCUSDT","returnRateLimits":"true"}'
    assert reply(proto, request(b"1", on), session) == ok(b"1", BTC, 3)
    assert reply(proto, request(b"1", None), session) == ok(
        b"1", b"[" + BTC + b"," + ETH + b"]", None
    )


@pytest.mark.parametrize("query", [{}, {"returnRateLimits": "true"}, {"other": "false"}])
def test_session_shows_rate_limits_by_default(proto: Protocol, query: dict[str, str]) -> None:
    session = Session.from_query(IP, query)
    assert session.return_rate_limits is True
    assert session.client == IP
    assert reply(proto, request(), session) == ok(b"1", BTC, 1)


@pytest.mark.parametrize(
    "flag", [b"1", b"0", b'"yes"', b'"TRUE"', b'"False"', b"null", b"[]", b"{}", b"1.0", b'""']
)
def test_invalid_return_rate_limits(proto: Protocol, flag: bytes) -> None:
    params = b'{"symbol":"BTCUSDT","returnRateLimits":%s}' % flag
    assert reply(proto, request(b"1", params)) == err(b"1", 400, -1102, MANDATORY_RRL, 1)


# -- params ------------------------------------------------------------------------------


def test_signed_request_params_accepted(proto: Protocol) -> None:
    params = (
        b'{"symbol":"BTCUSDT","apiKey":"vmPUZE6mv9SD5VNHk4HlWFsOr6aKE2zvsw0MuIgwCIPy6utIco14y7Ju91duEh8A",'
        b'"timestamp":1589437530000,"recvWindow":5000,'
        b'"signature":"c8db56825ae71d6d79447849e617115f4a920fa2acdcab2b053c4b2838bd6b71"}'
    )
    assert reply(proto, request(b'"s1"', params)) == ok(b'"s1"', BTC, 1)


def test_unknown_params_ignored(proto: Protocol) -> None:
    params = b'{"symbol":"BTCUSDT","id":"caller-id","foo":[1,{"x":null}],"limit":5}'
    assert reply(proto, request(b"1", params)) == ok(b"1", BTC, 1)
    params = b'{"pair":"BTCUSDT","apiKey":"k"}'  # no symbol: all symbols, weight 2
    assert reply(proto, request(b"1", params)) == ok(b"1", b"[" + BTC + b"," + ETH + b"]", 3)


@pytest.mark.parametrize(
    "symbol", [b'""', b"null", b"123", b"[]", b'["BTCUSDT"]', b"{}", b"true", b"1.5"]
)
def test_symbol_empty_null_or_malformed(proto: Protocol, symbol: bytes) -> None:
    frame = request(b"1", b'{"symbol":%s}' % symbol)
    assert reply(proto, frame) == err(b"1", 400, -1102, MANDATORY_SYMBOL, 1)
    assert reply(proto, frame) == err(b"1", 400, -1102, MANDATORY_SYMBOL, 2)  # weight 1 each


@pytest.mark.parametrize(
    "symbol",
    [
        "btcusdt",
        "BtcUsdt",
        "NOPEUSDT",
        "BTCUSDT ",
        " BTCUSDT",
        "BTC",
        "BTCUSDT\\u0000",
        "SRMUSDT",  # SETTLING, priced in the book
        "BTCUSDT_250328",  # DELIVERED, priced in the book
        "XRPUSDT",  # TRADING but no price in this book
        "X" * 5000,
    ],
)
def test_invalid_symbol(proto: Protocol, symbol: str) -> None:
    frame = request(b'"r"', b'{"symbol":"%s"}' % symbol.encode())
    assert reply(proto, frame) == err(b'"r"', 400, -1121, "Invalid symbol.", 1)


def test_symbol_taken_out_of_trading_disappears() -> None:
    book = standard_book()
    proto = make_protocol(book)
    book.universe.set_status("BTCUSDT", "SETTLING")
    book.refresh_status()
    assert reply(proto, request()) == err(b"1", 400, -1121, "Invalid symbol.", 1)
    assert reply(proto, request(params=None)) == ok(b"1", b"[" + ETH + b"]", 3)


# -- weights and the minute window -------------------------------------------------------


def test_weights_accumulate_within_the_minute(proto: Protocol) -> None:
    assert reply(proto, request(), now_ms=MINUTE_START) == ok(b"1", BTC, 1)
    assert reply(proto, request(params=None), now_ms=MINUTE_START + 1) == ok(
        b"1", b"[" + BTC + b"," + ETH + b"]", 3
    )
    assert reply(proto, request(b"2", b'{"symbol":"nope"}'), now_ms=NOW) == err(
        b"2", 400, -1121, "Invalid symbol.", 4
    )
    assert reply(proto, request(), now_ms=NEXT_MINUTE - 1) == ok(b"1", BTC, 5)
    # The window is the clock minute, not 60 s since the first request.
    assert reply(proto, request(), now_ms=NEXT_MINUTE) == ok(b"1", BTC, 1)
    assert reply(proto, request(params=None), now_ms=NEXT_MINUTE + 1) == ok(
        b"1", b"[" + BTC + b"," + ETH + b"]", 3
    )


def test_window_resets_two_seconds_later_across_the_minute(proto: Protocol) -> None:
    assert reply(proto, request(), now_ms=NEXT_MINUTE - 1_000) == ok(b"1", BTC, 1)
    assert reply(proto, request(), now_ms=NEXT_MINUTE - 999) == ok(b"1", BTC, 2)
    assert reply(proto, request(), now_ms=NEXT_MINUTE + 1_000) == ok(b"1", BTC, 1)


def test_limits_are_per_client_and_shared_by_its_connections(proto: Protocol) -> None:
    a1, a2, b = Session(IP), Session(IP), Session("5.6.7.8")
    assert reply(proto, request(), a1) == ok(b"1", BTC, 1)
    assert reply(proto, request(), a2) == ok(b"1", BTC, 2)
    assert reply(proto, request(), b) == ok(b"1", BTC, 1)
    assert reply(proto, request(params=None), a1) == ok(b"1", b"[" + BTC + b"," + ETH + b"]", 4)


def test_limit_shown_is_the_limiters() -> None:
    proto = Protocol(standard_book(), RateLimiter(77))
    assert reply(proto, request()) == ok(b"1", BTC, 1, limit=77)
    proto = Protocol(standard_book(), RateLimiter())
    assert reply(proto, request()) == ok(b"1", BTC, 1, limit=2400)


# -- 429 and 418 -------------------------------------------------------------------------


def test_429_at_the_boundary_then_418() -> None:
    proto = make_protocol(limit=10)
    for count in range(1, 11):
        assert reply(proto, request()) == ok(b"1", BTC, count, limit=10)
    # The request that takes the count past the limit: 429, retryAfter = next minute.
    assert reply(proto, request()) == limited(b"1", 429, RATE_LIMITED_10, 11, NEXT_MINUTE)
    # Ten more refused requests are tolerated (BAN_GRACE_REQUESTS); they still count.
    for count in range(12, 22):
        assert reply(proto, request()) == limited(b"1", 429, RATE_LIMITED_10, count, NEXT_MINUTE)
    # The next one earns the first ban: 2 minutes.
    until = NOW + 2 * MINUTE
    assert reply(proto, request()) == limited(b"1", 418, banned(until), 22, until)
    # While banned, requests cost nothing and get the same answer.
    later = NOW + 1
    assert reply(proto, request(params=None), now_ms=later) == limited(
        b"1", 418, banned(until), 22, until, now=later
    )
    # In the next minute the window restarts, the ban goes on.
    assert reply(proto, request(), now_ms=NEXT_MINUTE) == limited(
        b"1", 418, banned(until), 0, until, now=NEXT_MINUTE
    )
    # At the ban's end everything is back to normal.
    assert reply(proto, request(), now_ms=until) == ok(b"1", BTC, 1, limit=10)


@pytest.mark.parametrize(
    ("grace", "rid", "expected"),
    [
        (
            None,
            b"1",
            (
                b'{"id":1,"status":429,"error":{"code":-1003,"msg":"Too many requests; current limit '
                b"of IP(1.2.3.4) is 10 requests per minute. Please use the websocket for live "
                b'updates to avoid polling the API.","data":{"serverTime":1700000052345,'
                b'"retryAfter":1700000100000}},"rateLimits":[{"rateLimitType":"REQUEST_WEIGHT",'
                b'"interval":"MINUTE","intervalNum":1,"limit":10,"count":11}]}'
            ),
        ),
        (
            0,
            b'"x"',
            (
                b'{"id":"x","status":418,"error":{"code":-1003,"msg":"Way too many requests; '
                b"IP(1.2.3.4) banned until 1700000172345. Please use the websocket for live updates "
                b'to avoid bans.","data":{"serverTime":1700000052345,"retryAfter":1700000172345}},'
                b'"rateLimits":[{"rateLimitType":"REQUEST_WEIGHT","interval":"MINUTE",'
                b'"intervalNum":1,"limit":10,"count":12}]}'
            ),
        ),
    ],
    ids=["429", "418"],
)
def test_limited_exact_bytes(grace: int | None, rid: bytes, expected: bytes) -> None:
    """The 429, then (grace 0: on the next refusal) the 418, byte for byte."""
    proto = make_protocol(limit=10) if grace is None else make_protocol(limit=10, ban_grace=grace)
    for _ in range(10 if grace is None else 11):
        reply(proto, request())
    assert reply(proto, request(rid)) == expected


def test_429_crossed_by_an_all_symbols_request() -> None:
    proto = make_protocol(limit=10)
    for count in range(1, 10):
        assert reply(proto, request()) == ok(b"1", BTC, count, limit=10)
    assert reply(proto, request(params=None)) == limited(
        b"1", 429, RATE_LIMITED_10, 11, NEXT_MINUTE
    )


def test_429_honours_return_rate_limits_false() -> None:
    proto = make_protocol(limit=1)
    assert reply(proto, request()) == ok(b"1", BTC, 1, limit=1)
    params = b'{"symbol":"BTCUSDT","returnRateLimits":false}'
    msg = RATE_LIMITED.format(ip=IP, limit=1)
    expected = b'{"id":1,"status":429,"error":%s}' % limited_error(429, msg, NOW, NEXT_MINUTE)
    assert reply(proto, request(b"1", params)) == expected


def test_unknown_method_is_rate_limited_too() -> None:
    proto = make_protocol(limit=1)
    assert reply(proto, b'{"id":1,"method":"x"}') == err(b"1", 400, -1000, "Unknown method.", 1, 1)
    msg = RATE_LIMITED.format(ip=IP, limit=1)
    assert reply(proto, b'{"id":1,"method":"x"}') == (
        b'{"id":1,"status":429,"error":%s%s}'
        % (limited_error(429, msg, NOW, NEXT_MINUTE), rate_limits(2, 1))
    )


def test_rate_limited_client_does_not_affect_another() -> None:
    proto = make_protocol(limit=1)
    reply(proto, request())
    assert b'"status":429' in reply(proto, request())
    assert reply(proto, request(), Session("9.9.9.9")) == ok(b"1", BTC, 1, limit=1)


# -- properties --------------------------------------------------------------------------

_PROPERTY_BOOK = standard_book()

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40)
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)
interesting_ids = st.one_of(
    st.sampled_from(
        [
            None,
            0,
            -1,
            INT64_MAX,
            INT64_MIN,
            INT64_MAX + 1,
            INT64_MIN - 1,
            2**64,
            SEED_ID,
            "1",
            "",
            "a.b",
            "a b",
            "x" * 36,
            "x" * 37,
            True,
            1.0,
            [],
            {},
        ]
    ),
    st.integers(),
    st.text(alphabet="abcXYZ019-_. é", max_size=40),
    json_values,
)
interesting_methods = st.one_of(
    st.sampled_from(["ticker.price", "ticker.book", "TICKER.PRICE", "", None, 1, [], {}]),
    st.text(max_size=15),
)
interesting_symbols = st.one_of(
    st.sampled_from(
        ["BTCUSDT", "ETHUSDT", "btcusdt", "SRMUSDT", "BTCUSDT_250328", "XRPUSDT", "", None, 1, []]
    ),
    st.text(alphabet="BTCUSD_1", max_size=10),
    json_values,
)
interesting_flags = st.sampled_from([True, False, "true", "false", "TRUE", 1, 0, None, [], "x"])
interesting_params = st.one_of(
    st.fixed_dictionaries(
        {},
        optional={
            "symbol": interesting_symbols,
            "returnRateLimits": interesting_flags,
            "apiKey": st.text(max_size=10),
            "timestamp": st.integers(),
            "signature": st.text(max_size=10),
        },
    ),
    st.dictionaries(st.text(max_size=8), json_values, max_size=3),
    json_values,
)
requests = st.fixed_dictionaries(
    {},
    optional={"id": interesting_ids, "method": interesting_methods, "params": interesting_params},
)


def _encode(value: object, ascii_only: bool) -> bytes:
    # The stdlib writes integers of any size and NaN-free floats; surrogatepass lets a lone
    # surrogate from st.text() become the invalid UTF-8 a broken client would send.
    return json.dumps(value, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")


def check_reply(proto: Protocol, payload: bytes, session: Session, now: int) -> bytes | None:
    """Handle ``payload``; check the reply's envelope. None when the connection closes."""
    try:
        payload.decode("utf-8")
        valid_utf8 = True
    except UnicodeDecodeError:
        valid_utf8 = False
    try:
        parts = proto.handle(payload, session, now)
    except CloseConnection as exc:
        assert exc.code == 1007
        assert not valid_utf8
        return None
    assert valid_utf8, "invalid UTF-8 must close the connection with 1007"
    text = b"".join(parts)
    pairs = ordered(text)
    assert orjson.loads(text) == json.loads(text)
    keys = [k for k, _ in pairs]
    assert keys[0] == "id"
    assert keys[1] == "status"
    obj = dict(pairs)
    assert type(obj["status"]) is int
    assert ("result" in obj) != ("error" in obj)
    assert keys[2] in ("result", "error")
    assert keys[3:] in ([], ["rateLimits"])
    if obj["status"] == 200:
        assert "result" in obj
    else:
        error = obj["error"]
        assert type(error["code"]) is int and type(error["msg"]) is str
        assert list(error)[:2] == ["code", "msg"]
    if "rateLimits" in obj:
        (entry,) = obj["rateLimits"]
        assert list(entry) == ["rateLimitType", "interval", "intervalNum", "limit", "count"]
        assert type(entry["count"]) is int and entry["count"] >= 0
    return text


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=200))
def test_property_arbitrary_bytes(payload: bytes) -> None:
    proto = Protocol(_PROPERTY_BOOK, RateLimiter())
    check_reply(proto, payload, Session(IP), NOW)


@settings(max_examples=300, deadline=None)
@given(json_values, st.booleans())
def test_property_arbitrary_json(value: object, ascii_only: bool) -> None:
    proto = Protocol(_PROPERTY_BOOK, RateLimiter())
    text = check_reply(proto, _encode(value, ascii_only), Session(IP), NOW)
    if text is not None and not isinstance(value, dict):
        assert text == INVALID_JSON_REPLY


@settings(max_examples=300, deadline=None)
@given(requests, st.booleans(), st.booleans(), st.integers(min_value=1, max_value=3))
def test_property_requests(
    req: dict[str, object], ascii_only: bool, session_flag: bool, repeat: int
) -> None:
    proto = Protocol(_PROPERTY_BOOK, RateLimiter(3, ban_grace=1))
    session = Session(IP, session_flag)
    payload = _encode(req, ascii_only)
    try:
        parsed = orjson.loads(payload)
    except orjson.JSONDecodeError:
        # A lone surrogate escape is JSON all the same: the standard parser reads it.
        try:
            parsed = json.loads(payload)
        except ValueError:
            parsed = None
    for _ in range(repeat):  # repeats run into 429 and 418 with this tiny limit
        text = check_reply(proto, payload, session, NOW)
        if text is None:
            return
        if parsed is None:
            assert text == INVALID_JSON_REPLY
        elif "id" in parsed and valid_id(parsed["id"]):
            echoed = json.loads(text)["id"]
            assert echoed == req["id"] and type(echoed) is type(req["id"])
        else:
            assert text == INVALID_ID_REPLY


def test_property_helpers_agree_on_a_valid_request() -> None:
    proto = Protocol(_PROPERTY_BOOK, RateLimiter())
    text = check_reply(proto, SEED_REQUEST, Session(IP), NOW)
    assert text is not None and json.loads(text)["result"]["price"] == "97000.10"
    assert Decimal(json.loads(text)["result"]["price"]) == Decimal("97000.1")

"""Errors in their wire form: codes, Binance's exact texts, classes by status, round trips.

Texts: developers.binance.com/docs/derivatives/usds-margined-futures/error-code
(BINANCE.md §5: punctuation and the "occured" misspelling kept).
"""

from __future__ import annotations

import orjson
import pytest

from tickerd import errors
from tickerd.errors import (
    BinanceError,
    ErrorCode,
    IPBannedError,
    RateLimitError,
    RequestError,
    ServerError,
    TickerdError,
    error_class,
)

FUTURES_TEXTS = {
    -1000: "An unknown error occured while processing the request.",
    -1001: "Internal error; unable to process your request. Please try again.",
    -1008: "Server is currently overloaded with other requests. Please try again in a few minutes.",
    -1021: "Timestamp for this request is outside of the recvWindow.",
    -1100: "Illegal characters found in parameter '{0}'; legal range is '{1}'.",
    -1101: "Too many parameters; expected '{0}' and received '{1}'.",
    -1102: "Mandatory parameter '{0}' was not sent, was empty/null, or malformed.",
    -1103: "An unknown parameter was sent.",
    -1121: "Invalid symbol.",
    -1122: "Invalid symbol status.",
    -2015: "Invalid API-key, IP, or permissions for action.",
}


@pytest.mark.parametrize(("code", "text"), sorted(FUTURES_TEXTS.items()))
def test_futures_error_texts(code: int, text: str) -> None:
    assert errors.MESSAGES[ErrorCode(code)] == text


def test_error_code_values() -> None:
    assert ErrorCode.UNKNOWN == -1000
    assert ErrorCode.TOO_MANY_REQUESTS == -1003
    assert ErrorCode.MANDATORY_PARAM_EMPTY_OR_MALFORMED == -1102
    assert ErrorCode.BAD_SYMBOL == -1121
    assert -1135 not in {int(c) for c in ErrorCode}  # spot's INVALID_JSON: not futures


def test_envelope_texts() -> None:
    assert errors.INVALID_JSON_MSG == "Invalid JSON request."
    assert errors.INVALID_ID_MSG == (
        "Invalid 'id' in JSON request; expected an integer, a string matching "
        "'^[a-zA-Z0-9-_]{1,36}$', or null."
    )
    assert errors.INVALID_PARAMS_MSG == "Invalid 'params' in JSON request; expected an object."


def test_rate_limit_texts_are_the_futures_ones() -> None:
    assert errors.RATE_LIMITED_MSG.format(ip="204.168.146.253", limit=2400) == (
        "Too many requests; current limit of IP(204.168.146.253) is 2400 requests per minute. "
        "Please use the websocket for live updates to avoid polling the API."
    )
    assert errors.BANNED_MSG.format(ip="194.127.199.97", until=1746327239762) == (
        "Way too many requests; IP(194.127.199.97) banned until 1746327239762. "
        "Please use the websocket for live updates to avoid bans."
    )
    for text in (errors.RATE_LIMITED_MSG, errors.BANNED_MSG):
        assert "WebSocket Streams" not in text and "request weight" not in text  # spot's


def test_of_formats_the_message_and_picks_the_class() -> None:
    e = BinanceError.of(ErrorCode.MANDATORY_PARAM_EMPTY_OR_MALFORMED, "symbol")
    assert type(e) is RequestError
    assert (e.status, e.code, e.msg) == (
        400,
        -1102,
        "Mandatory parameter 'symbol' was not sent, was empty/null, or malformed.",
    )
    assert type(e.code) is int and not isinstance(e.code, ErrorCode)
    e = BinanceError.of(ErrorCode.ILLEGAL_CHARS, "symbol", "^[A-Z0-9-_.]{1,20}$")
    assert (
        e.msg
        == "Illegal characters found in parameter 'symbol'; legal range is '^[A-Z0-9-_.]{1,20}$'."
    )
    e = BinanceError.of(ErrorCode.BAD_SYMBOL)
    assert (type(e), e.status, e.code, e.msg) == (RequestError, 400, -1121, "Invalid symbol.")
    assert str(e) == "400 -1121: Invalid symbol."
    e = BinanceError.of(ErrorCode.SERVER_BUSY, status=503)
    assert type(e) is ServerError and e.status == 503


@pytest.mark.parametrize(
    ("status", "cls"),
    [
        (400, RequestError),
        (401, RequestError),
        (403, RequestError),
        (404, RequestError),
        (409, RequestError),
        (418, IPBannedError),
        (429, RateLimitError),
        (500, ServerError),
        (503, ServerError),
    ],
)
def test_error_class_by_status(status: int, cls: type[BinanceError]) -> None:
    assert error_class(status) is cls


def test_hierarchy() -> None:
    assert issubclass(IPBannedError, RateLimitError)
    for cls in (RequestError, RateLimitError, IPBannedError, ServerError):
        assert issubclass(cls, BinanceError)
    assert issubclass(BinanceError, TickerdError) and issubclass(TickerdError, Exception)


def test_to_wire_plain() -> None:
    e = BinanceError.of(ErrorCode.BAD_SYMBOL)
    assert orjson.dumps(e.to_wire()) == b'{"code":-1121,"msg":"Invalid symbol."}'


def test_to_wire_with_retry_after() -> None:
    e = RateLimitError(429, -1003, "m", retry_after_ms=1_700_000_100_000, server_time_ms=17)
    assert orjson.dumps(e.to_wire()) == (
        b'{"code":-1003,"msg":"m","data":{"serverTime":17,"retryAfter":1700000100000}}'
    )


@pytest.mark.parametrize(
    "error",
    [
        BinanceError.of(ErrorCode.BAD_SYMBOL),
        BinanceError.of(ErrorCode.UNKNOWN, status=500),
        RateLimitError(429, -1003, "slow down", retry_after_ms=60_000, server_time_ms=1),
        IPBannedError(418, -1003, "banned", retry_after_ms=120_000, server_time_ms=2),
    ],
)
def test_wire_round_trip(error: BinanceError) -> None:
    back = BinanceError.from_wire(error.status, orjson.loads(orjson.dumps(error.to_wire())))
    assert type(back) is type(error)
    assert (back.status, back.code, back.msg) == (error.status, error.code, error.msg)
    assert (back.retry_after_ms, back.server_time_ms) == (
        error.retry_after_ms,
        error.server_time_ms,
    )


@pytest.mark.parametrize(
    "error",
    [
        {},
        {"code": "-1121", "msg": 5},
        {"code": None, "msg": None},
        {"code": True, "msg": ["x"]},
        {"code": 1.5, "data": {"retryAfter": "soon", "serverTime": True}},
        {"code": -1003, "msg": "m", "data": [1, 2]},
        {"code": -1003, "msg": "m", "data": {"retryAfter": 1.5}},
    ],
)
def test_from_wire_tolerates_foreign_replies(error: dict[str, object]) -> None:
    e = BinanceError.from_wire(429, error)
    assert type(e) is RateLimitError
    assert type(e.code) is int and type(e.msg) is str
    assert e.retry_after_ms is None and e.server_time_ms is None
    if type(error.get("code")) is not int:
        assert e.code == -1000


# -- the one builder of the -1003 answers -----------------------------------------------


@pytest.mark.parametrize("status", [429, 418])
def test_limited_builders_match_the_limiter(status: int) -> None:
    """The limiter's own refusals are built by ``errors.rate_limited`` / ``errors.banned``:
    what the control plane forces is the same object, field for field."""
    from helpers_core import BANNED, IP, NEXT_MINUTE, NOW, RATE_LIMITED
    from tickerd.ratelimit import RateLimiter

    limiter = RateLimiter(10, ban_grace=0)
    limiter.charge(IP, 10, NOW)
    refusals = []
    for _ in range(2):
        try:
            limiter.charge(IP, 1, NOW)
        except RateLimitError as exc:
            refusals.append(exc)
    real = refusals[0] if status == 429 else refusals[1]
    if status == 429:
        built: BinanceError = errors.rate_limited(IP, 10, NEXT_MINUTE, NOW, 11)
        msg = RATE_LIMITED.format(ip=IP, limit=10)
    else:
        until = real.retry_after_ms
        assert until is not None
        built = errors.banned(IP, until, NOW, 12)
        msg = BANNED.format(ip=IP, until=until)
    assert type(built) is type(real) is error_class(status)
    fields = ("status", "code", "msg", "retry_after_ms", "server_time_ms", "used_weight")
    assert [getattr(built, f) for f in fields] == [getattr(real, f) for f in fields]
    assert (built.status, built.code, built.msg) == (status, -1003, msg)
    assert built.to_wire()["data"] == {"serverTime": NOW, "retryAfter": real.retry_after_ms}


def test_connect_limited_text_and_retry() -> None:
    err = errors.connect_limited("10.0.0.1", 300, 1_700_000_100_000, 1_700_000_052_345)
    assert (err.status, err.code) == (429, -1003)
    assert err.msg == "Too many connection attempts from IP(10.0.0.1); limit is 300 per 5 minutes."
    assert err.retry_after_s(1_700_000_052_345) == 48  # 47.655 s, rounded up


@pytest.mark.parametrize(
    ("retry_after_ms", "now_ms", "seconds"),
    [(10_000, 10_000, 1), (10_001, 10_000, 1), (11_000, 10_000, 1), (11_001, 10_000, 2),
     (130_000, 10_000, 120), (5_000, 10_000, 1)],
)  # fmt: skip
def test_retry_after_seconds_round_up_at_least_one(
    retry_after_ms: int, now_ms: int, seconds: int
) -> None:
    assert errors.retry_after_s(retry_after_ms, now_ms) == seconds
    err = errors.rate_limited("ip", 1, retry_after_ms, now_ms, 2)
    assert err.retry_after_s(now_ms) == seconds

"""Shared helpers for the unit tests of the pure core (protocol, limiter, book, symbols).

Everything here is deterministic: fixed times, fixed prices, no clock, no sockets.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from tickerd import PriceBook, Protocol, RateLimiter, Session, SymbolUniverse

GOLDEN = Path(__file__).parent / "golden"

IP = "1.2.3.4"
# 1_700_000_040_000 is the first millisecond of a clock minute; NOW lies inside it.
MINUTE = 60_000
MINUTE_START = 1_700_000_040_000
NOW = MINUTE_START + 12_345
NEXT_MINUTE = MINUTE_START + MINUTE
TICK_TIME = 1_589_437_530_011  # the seed example's "time"
SEED_ID = "9d32157c-a556-4d27-9866-66760a174b57"

INT64_MAX = 2**63 - 1
INT64_MIN = -(2**63)
# Binance's futures -1003 texts, as templates (BINANCE.md §3).
RATE_LIMITED = (
    "Too many requests; current limit of IP({ip}) is {limit} requests per minute. "
    "Please use the websocket for live updates to avoid polling the API."
)
BANNED = (
    "Way too many requests; IP({ip}) banned until {until}. "
    "Please use the websocket for live updates to avoid bans."
)
ID_RE = re.compile(r"[a-zA-Z0-9\-_]{1,36}")


def universe() -> SymbolUniverse:
    """A fresh default universe (fresh, because tests may change statuses)."""
    return SymbolUniverse.default()


def book_with(
    prices: dict[str, str], time_ms: int = TICK_TIME, uni: SymbolUniverse | None = None
) -> PriceBook:
    """A book over the default universe holding ``prices`` (validated), all at ``time_ms``."""
    book = PriceBook(uni if uni is not None else universe())
    book.apply([book.make_tick(s, p, time_ms) for s, p in prices.items()])
    return book


def standard_book(uni: SymbolUniverse | None = None) -> PriceBook:
    """BTCUSDT and ETHUSDT priced, plus the two non-TRADING contracts of the bundled data."""
    return book_with(
        {
            "ETHUSDT": "3150.5",
            "BTCUSDT": "97000.1",
            "SRMUSDT": "0.3",  # SETTLING
            "BTCUSDT_250328": "97000.1",  # DELIVERED
        },
        uni=uni,
    )


def make_protocol(book: PriceBook | None = None, limit: int = 2400, **limiter_kw: Any) -> Protocol:
    """A Protocol over ``book`` (default :func:`standard_book`) with a fresh RateLimiter."""
    return Protocol(book if book is not None else standard_book(), RateLimiter(limit, **limiter_kw))


def reply(
    proto: Protocol, payload: bytes | str, session: Session | None = None, now_ms: int = NOW
) -> bytes:
    """The concatenated reply to one text frame."""
    data = payload.encode() if isinstance(payload, str) else payload
    parts = proto.handle(data, session if session is not None else Session(IP), now_ms)
    assert isinstance(parts, tuple) and parts
    assert all(type(p) is bytes for p in parts), parts
    return b"".join(parts)


def rate_limits(count: int, limit: int = 2400) -> bytes:
    """The ``rateLimits`` member of a reply (with its leading comma), as Binance orders it."""
    return (
        b',"rateLimits":[{"rateLimitType":"REQUEST_WEIGHT","interval":"MINUTE",'
        b'"intervalNum":1,"limit":%d,"count":%d}]' % (limit, count)
    )


def body(symbol: str, price: str, time_ms: int = TICK_TIME) -> bytes:
    """One ``result`` object of ticker.price."""
    return b'{"symbol":"%s","price":"%s","time":%d}' % (symbol.encode(), price.encode(), time_ms)


BTC = body("BTCUSDT", "97000.10")
ETH = body("ETHUSDT", "3150.50")


def ok(rid: bytes, result: bytes, count: int | None, limit: int = 2400) -> bytes:
    """A 200 reply; ``count`` None means without ``rateLimits``."""
    tail = rate_limits(count, limit) if count is not None else b""
    return b'{"id":%s,"status":200,"result":%s%s}' % (rid, result, tail)


def err(
    rid: bytes, status: int, code: int, msg: str, count: int | None, limit: int = 2400
) -> bytes:
    """An error reply; ``count`` None means without ``rateLimits``."""
    tail = rate_limits(count, limit) if count is not None else b""
    error = json.dumps({"code": code, "msg": msg}, separators=(",", ":"), ensure_ascii=False)
    return b'{"id":%s,"status":%d,"error":%s%s}' % (rid, status, error.encode(), tail)


def request(rid: bytes = b"1", params: bytes | None = b'{"symbol":"BTCUSDT"}') -> bytes:
    """A ticker.price request frame with the raw JSON ``rid`` and ``params`` (None: omitted)."""
    if params is None:
        return b'{"id":%s,"method":"ticker.price"}' % rid
    return b'{"id":%s,"method":"ticker.price","params":%s}' % (rid, params)


def ordered(text: bytes) -> list[tuple[str, Any]]:
    """Parse a JSON object into its (key, value) pairs in wire order; no duplicate keys."""

    def hook(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        keys = [k for k, _ in pairs]
        assert len(keys) == len(set(keys)), f"duplicate keys in {text!r}"
        return dict(pairs)  # dicts keep insertion order: the wire order

    obj = json.loads(text, object_pairs_hook=hook)
    assert isinstance(obj, dict)
    return list(obj.items())


def shape(value: Any) -> Any:
    """The structure of a parsed JSON value: key order and JSON types, not the values."""
    if isinstance(value, dict):
        return [(k, shape(v)) for k, v in value.items()]
    if isinstance(value, list):
        return [shape(value[0])] if value else []
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    return type(value).__name__


def valid_id(rid: Any) -> bool:
    """Independent oracle: is ``rid`` an id Binance accepts (int64, the pattern, or null)?"""
    if rid is None:
        return True
    if type(rid) is int:
        return INT64_MIN <= rid <= INT64_MAX
    if type(rid) is str:
        return ID_RE.fullmatch(rid) is not None
    return False


def golden(name: str) -> bytes:
    """A golden frame file's bytes, without the one trailing newline editors add."""
    data = (GOLDEN / name).read_bytes()
    return data[:-1] if data.endswith(b"\n") else data

"""The byte-shape shortcut before the JSON parser answers exactly as the parser would.

:meth:`Protocol.handle` first matches the raw frame against the tables of
:mod:`tickerd.shapes` and falls back to the JSON parser (:meth:`Protocol.handle_parsed`). The differential property
test feeds both the same request texts — the common shapes with random ids, symbols, key
orders and whitespace, and near-misses (duplicate keys, escapes, unicode, big ints, floats
and other wrong types as id, extra keys, other methods) — to two protocols in the same
state and requires the same reply bytes and the same limiter and ops-counter state after
every frame, through 429 and 418 as the small limit fills.
"""

from __future__ import annotations

import json
import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from helpers_core import IP, NOW, body, ok, standard_book
from tickerd import Protocol, RateLimiter, Session, shapes
from tickerd.protocol import CloseConnection, id_json, id_token

ID_TOKENS = st.one_of(
    st.integers(-(2**63), 2**63 - 1).map(str),
    st.integers(-(10**18), 10**18).map(str),
    st.sampled_from(
        [
            "0", "-0", "01", "-01", "00", "1.0", "1e3", "-1.5", "true", "false", "null",
            str(2**63), str(-(2**63) - 1), str(2**64), "123456789012345678", "9" * 18,
            "9" * 19, "-" + "9" * 18, '""', '"a"', '"' + "a" * 36 + '"', '"' + "a" * 37 + '"',
            '"a-b_c"', '"a b"', '"\\u0041"', '"é"', '"\\ud800"', '"a\\"b"', "[]", "{}",
            '"9d32157c-a556-4d27-9866-66760a174b57"', '"1"',
        ]
    ),
    st.text("abcXYZ019-_", min_size=1, max_size=40).map(lambda s: '"%s"' % s),
)  # fmt: skip
SYMBOL_TOKENS = st.sampled_from(
    [
        '"BTCUSDT"', '"ETHUSDT"', '"SOLUSDT"', '"SRMUSDT"', '"BTCUSDT_250328"', '"NOPEUSDT"',
        '"btcusdt"', '""', "null", "1", "true", '"BTC\\u0055SDT"', '"BTCUSDT "', '"BTCUSDTé"',
        '["BTCUSDT"]', '"' + "A" * 41 + '"', '"A.B-C_D"',
    ]
)  # fmt: skip
METHOD_TOKENS = st.sampled_from(
    [
        '"ticker.price"', '"ticker.price"', '"ticker.price"', '"v1/ticker.price"',
        '"ticker\\u002eprice"', '"ticker.pric"', '"TICKER.PRICE"', "null", "1", '"time"',
    ]
)  # fmt: skip
SPACE = st.sampled_from(["", "", "", " ", "  ", "\t", "\n", "\r\n", "\f", "\u00a0"])
EXTRA = st.sampled_from(
    [
        '"returnRateLimits":false', '"returnRateLimits":"false"', '"returnRateLimits":true',
        '"returnRateLimits":1', '"timestamp":1700000000000', '"apiKey":"k"',
    ]
)  # fmt: skip


@st.composite
def frames(draw: st.DrawFn) -> bytes:
    """One request text: a common shape, or a near-miss of one."""
    ws = lambda: draw(SPACE)  # noqa: E731
    params: list[str] = []
    if draw(st.booleans()) or draw(st.booleans()):
        params.append('"symbol"%s:%s%s' % (ws(), ws(), draw(SYMBOL_TOKENS)))
    if draw(st.integers(0, 4)) == 0:
        params.append(draw(EXTRA))
    if params and draw(st.integers(0, 6)) == 0:
        params.append(params[0])  # a duplicate key
    members = [
        '"id"%s:%s%s' % (ws(), ws(), draw(ID_TOKENS)),
        '"method"%s:%s%s' % (ws(), ws(), draw(METHOD_TOKENS)),
    ]
    if params or draw(st.integers(0, 5)) == 0:
        members.append('"params"%s:%s{%s%s%s}' % (ws(), ws(), ws(), ",".join(params), ws()))
    if draw(st.integers(0, 6)) == 0:
        members.append(draw(st.sampled_from(['"id":7', '"extra":{}', '"method":"time"'])))
    if draw(st.integers(0, 8)) == 0:
        members.remove(members[draw(st.integers(0, len(members) - 1))])
    order = draw(st.permutations(members))
    text = "%s{%s%s%s}%s" % (ws(), ws(), (ws() + "," + ws()).join(order), ws(), ws())
    return text.encode()


@st.composite
def common_frames(draw: st.DrawFn) -> bytes:
    """A common shape exactly: compact or json.dumps spacing, id first or last."""
    comma, colon = draw(st.sampled_from([(",", ":"), (", ", ": ")]))
    rid = draw(ID_TOKENS)
    method = '"method"%s"ticker.price"' % colon
    if draw(st.booleans()):
        symbol = draw(SYMBOL_TOKENS)
        method += '%s"params"%s{"symbol"%s%s}' % (comma, colon, colon, symbol)
    if draw(st.booleans()):
        return ('{"id"%s%s%s%s}' % (colon, rid, comma, method)).encode()
    return ('{%s%s"id"%s%s}' % (method, comma, colon, rid)).encode()


def state(proto: Protocol) -> object:
    counters = proto.counters
    c = proto.limiter._clients.get(IP)
    return (
        counters.requests(),
        dict(counters.price_errors),
        dict(counters.unknown_limited),
        None if c is None else (c.used, c.refused, c.ban_until, c.window_start),
    )


def answer(call: object, frame: bytes, session: Session, now: int) -> object:
    try:
        return b"".join(call(frame, session, now))  # type: ignore[operator]
    except CloseConnection as exc:
        return ("close", exc.code, exc.reason)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    batch=st.lists(st.one_of(frames(), common_frames()), min_size=1, max_size=12),
    hide=st.booleans(),
    limit=st.sampled_from([3, 6, 2400]),
)
def test_shortcut_and_parser_give_identical_replies_and_state(
    batch: list[bytes], hide: bool, limit: int
) -> None:
    book = standard_book()
    fast = Protocol(book, RateLimiter(limit, ban_grace=1))
    full = Protocol(book, RateLimiter(limit, ban_grace=1))
    s_fast, s_full = Session(IP, not hide), Session(IP, not hide)
    for i, frame in enumerate(batch):
        now = NOW + i * 7
        assert answer(fast.handle, frame, s_fast, now) == answer(
            full.handle_parsed, frame, s_full, now
        ), frame
        assert state(fast) == state(full), frame


class ParserRefused(Protocol):
    """A protocol whose JSON parser path fails the test: only the shortcut may answer."""

    def handle_parsed(self, payload: bytes, session: Session, now_ms: int) -> tuple[bytes, ...]:
        raise AssertionError("the frame went to the JSON parser")


UUID = b'"9d32157c-a556-4d27-9866-66760a174b57"'
CLIENT_SHAPES = [
    # hand-made and python-binance / ccxt style: id first, compact
    b'{"id":1,"method":"ticker.price","params":{"symbol":"BTCUSDT"}}',
    b'{"id":"a1b2c3d4e5f6a7b8c9d0e1","method":"ticker.price","params":{"symbol":"ETHUSDT"}}',
    b'{"id":-922337203685477580,"method":"ticker.price","params":{"symbol":"SRMUSDT"}}',
    # Python's json.dumps default separators
    json.dumps({"id": "2", "method": "ticker.price", "params": {"symbol": "BTCUSDT"}}).encode(),
    json.dumps({"id": 7, "method": "ticker.price"}).encode(),
    # the official SDK and unicorn: id last, a UUID4
    b'{"method":"ticker.price","params":{"symbol":"BTCUSDT"},"id":%s}' % UUID,
    json.dumps({"method": "ticker.price", "params": {"symbol": "ETHUSDT"}, "id": "x"}).encode(),
    b'{"id":null,"method":"ticker.price"}',
    b'{"method":"ticker.price","id":-42}',
]


@pytest.mark.parametrize("frame", CLIENT_SHAPES)
def test_common_client_shapes_take_the_shortcut(frame: bytes) -> None:
    book = standard_book()
    fast = ParserRefused(book, RateLimiter(2400))
    full = Protocol(book, RateLimiter(2400))
    assert answer(fast.handle, frame, Session(IP), NOW) == answer(
        full.handle_parsed, frame, Session(IP), NOW
    )


@pytest.mark.parametrize(
    "frame",
    [
        b'{"id":01,"method":"ticker.price"}',
        b'{"id":-0,"method":"ticker.price"}',
        b'{"id":1234567890123456789,"method":"ticker.price"}',  # 19 digits: the parser decides
        b'{"id":1.0,"method":"ticker.price"}',
        b'{"id":"\\u0041","method":"ticker.price"}',
        b'{"id":1,"method":"ticker.price","params":{"symbol":"BTC\\u0055SDT"}}',
        b'{"id":1,"method":"ticker.price","params":{"symbol":"BTCUSDT","symbol":"ETHUSDT"}}',
        b'{"id":1,"method":"ticker.price","params":{"symbol":"BTCUSDT","returnRateLimits":false}}',
        b'{"id":1,"id":2,"method":"ticker.price"}',
        b'{"id":5,"method":"ticker.price","id":6}',
        b'{"method":"ticker.price","id":"a","id":"b"}',
        b'{"id":1,"method":"ticker.price"}\f',
        b'{"id":"a,b","method":"ticker.price"}',
        b'{"id":"2","method":"ticker.price","params":{"symbol":"NOPEUSDT"}}',  # not a table key
    ],
)
def test_near_misses_go_to_the_parser(frame: bytes) -> None:
    with pytest.raises(AssertionError, match="JSON parser"):
        ParserRefused(standard_book(), RateLimiter(2400)).handle(frame, Session(IP), NOW)


class ParserCounted(Protocol):
    """A protocol that counts the frames its JSON parser path answers."""

    parsed = 0

    def handle_parsed(self, payload: bytes, session: Session, now_ms: int) -> tuple[bytes, ...]:
        self.parsed += 1
        return super().handle_parsed(payload, session, now_ms)


def test_symbols_listed_later_take_the_shortcut_after_their_first_request() -> None:
    book = standard_book()
    proto = ParserCounted(book, RateLimiter(2400))
    frame = b'{"id":3,"method":"ticker.price","params":{"symbol":"NEWUSDT"}}'
    entry = {
        "symbol": "NEWUSDT",
        "status": "TRADING",
        "pricePrecision": 3,
        "filters": [{"filterType": "PRICE_FILTER", "tickSize": "0.001"}],
    }
    assert book.universe.merge({"symbols": [entry]}).added == ["NEWUSDT"]
    book.refresh_status()
    book.apply([book.make_tick("NEWUSDT", "1.5", NOW - 5)])
    first = answer(proto.handle, frame, Session(IP), NOW)
    assert (proto.parsed, first) == (1, ok_reply(b"3", b"NEWUSDT", b"1.500", NOW - 5, 1))
    second = answer(proto.handle, frame, Session(IP), NOW)
    assert (proto.parsed, second) == (1, ok_reply(b"3", b"NEWUSDT", b"1.500", NOW - 5, 2))


def ok_reply(rid: bytes, symbol: bytes, price: bytes, time_ms: int, count: int) -> bytes:
    return ok(rid, body(symbol.decode(), price.decode(), time_ms), count)


_ID_BYTES = st.one_of(ID_TOKENS.map(str.encode), st.binary(max_size=42))


@settings(max_examples=3000, deadline=None)
@given(prefix=st.binary(max_size=8), token=_ID_BYTES, suffix=st.binary(max_size=8))
def test_the_id_check_takes_exactly_what_the_id_token_pattern_matches(
    prefix: bytes, token: bytes, suffix: bytes
) -> None:
    frame = prefix + token + suffix
    start, end = len(prefix), len(prefix) + len(token)
    assert id_token(frame, start, end) == (shapes.ID_TOKEN(frame, start, end) is not None)


@settings(max_examples=2000, deadline=None)
@given(rid=st.one_of(st.text(max_size=40), st.text("abcXYZ019-_ .", max_size=40)))
def test_a_string_id_is_accepted_exactly_as_binance_pattern_says(rid: str) -> None:
    valid = re.fullmatch(r"[a-zA-Z0-9\-_]{1,36}", rid) is not None
    assert id_json(rid) == (b'"%s"' % rid.encode() if valid else None)


def test_ids_of_changing_lengths_and_a_comma_inside_an_id_take_the_right_path() -> None:
    # The shortcut first tries where the last id ended: ids of another length, and an id
    # holding a comma exactly where the last one ended, must still get the parser's reply.
    uuid = '"9d32157c-a556-4d27-9866-66760a174b57"'
    tail = ',"method":"ticker.price","params":{"symbol":"BTCUSDT"}}'
    ids = [uuid, "7", uuid, '"ab' + "," * 34 + 'c"', '"' + "c," * 18 + '"', uuid, "123", "null"]
    book = standard_book()
    fast, full = Protocol(book, RateLimiter(2400)), Protocol(book, RateLimiter(2400))
    for i, rid in enumerate(ids):
        frame = ('{"id":%s%s' % (rid, tail)).encode()
        reply = answer(fast.handle, frame, Session(IP), NOW + i)
        assert reply == answer(full.handle_parsed, frame, Session(IP), NOW + i), frame
        assert (b'"status":200' in reply) == ("," not in rid), frame  # type: ignore[operator]

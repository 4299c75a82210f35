"""The price book: tick validation, canonical prices, cached bodies, listeners, statuses."""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from helpers_core import TICK_TIME, body, book_with, universe
from tickerd import PriceBook, SymbolUniverse, Tick, TickRejected


@pytest.fixture
def book() -> PriceBook:
    return PriceBook(universe())


# -- make_tick ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("symbol", "price", "printed"),
    [
        ("BTCUSDT", "97000.1", "97000.10"),
        ("BTCUSDT", "97000.10", "97000.10"),
        ("BTCUSDT", "97000.100000", "97000.10"),
        ("BTCUSDT", "97000", "97000.00"),
        ("BTCUSDT", "9.7E+4", "97000.00"),
        ("BTCUSDT", Decimal("97000.1"), "97000.10"),
        ("BTCUSDT", "0.1", "0.10"),
        ("YFIUSDT", "3850", "3850.0"),
        ("YFIUSDT", "3850.0", "3850.0"),
        ("YFIUSDT", "1E+3", "1000.0"),
        ("1000PEPEUSDT", "0.0045", "0.0045000"),
        ("1000PEPEUSDT", "4.5E-3", "0.0045000"),
        ("1000PEPEUSDT", "1E-7", "0.0000001"),
        ("DOGEUSDT", "0.15801", "0.158010"),  # tick 0.000010 (5 decimals), precision 6
        ("SRMUSDT", "0.3", "0.3000"),  # not trading, but known: accepted into the book
    ],
)
def test_make_tick_canonical_price(book: PriceBook, symbol: str, price: Any, printed: str) -> None:
    assert book.make_tick(symbol, price, TICK_TIME) == Tick(symbol, printed, TICK_TIME)


@pytest.mark.parametrize(
    ("symbol", "price"),
    [
        ("NOPEUSDT", "1"),  # unknown symbol
        ("btcusdt", "97000.1"),  # case-sensitive
        ("", "97000.1"),
        (123, "97000.1"),
        (None, "97000.1"),
        ("BTCUSDT", 97000.1),  # float
        ("BTCUSDT", 97000),  # int
        ("BTCUSDT", True),
        ("BTCUSDT", None),
        ("BTCUSDT", b"97000.1"),
        ("BTCUSDT", "abc"),  # not a decimal
        ("BTCUSDT", ""),
        ("BTCUSDT", "1,5"),
        ("BTCUSDT", "0x10"),
        ("BTCUSDT", "NaN"),
        ("BTCUSDT", "sNaN"),
        ("BTCUSDT", "Infinity"),
        ("BTCUSDT", "-Infinity"),
        ("BTCUSDT", "97000.15"),  # off the 0.10 grid
        ("BTCUSDT", "97000.01"),
        ("BTCUSDT", "0.05"),
        ("YFIUSDT", "3850.5"),  # tick 1
        ("1000PEPEUSDT", "0.00000001"),
        ("BTCUSDT", "0"),  # zero and negative
        ("BTCUSDT", "0.00"),
        ("BTCUSDT", "-0"),
        ("BTCUSDT", "-97000.1"),
        ("BTCUSDT", "1E+30"),  # too many ticks to check exactly
        ("BTCUSDT", "1E+999999999"),
    ],
)
def test_make_tick_rejects_bad_symbol_or_price(book: PriceBook, symbol: Any, price: Any) -> None:
    with pytest.raises(TickRejected):
        book.make_tick(symbol, price, TICK_TIME)


@pytest.mark.parametrize("time_ms", [True, False, -1, 1.5, 1e12, "1589437530011", None, Decimal(1)])
def test_make_tick_rejects_bad_time(book: PriceBook, time_ms: Any) -> None:
    with pytest.raises(TickRejected):
        book.make_tick("BTCUSDT", "97000.1", time_ms)


@pytest.mark.parametrize("time_ms", [0, 1, TICK_TIME, 2**63 - 1])
def test_make_tick_accepts_any_non_negative_int_time(book: PriceBook, time_ms: int) -> None:
    assert book.make_tick("BTCUSDT", "97000.1", time_ms).time_ms == time_ms


# -- reading -----------------------------------------------------------------------------


def test_empty_book(book: PriceBook) -> None:
    assert len(book) == 0
    assert book.get("BTCUSDT") is None
    assert book.ticks() == []
    assert book.body("BTCUSDT") is None
    assert book.all_body() == b"[]"


def test_body_bytes(book: PriceBook) -> None:
    book.update(book.make_tick("BTCUSDT", "97000.1", TICK_TIME))
    assert book.body("BTCUSDT") == b'{"symbol":"BTCUSDT","price":"97000.10","time":1589437530011}'
    assert book.all_body() == b'[{"symbol":"BTCUSDT","price":"97000.10","time":1589437530011}]'


def test_all_body_sorted_trading_and_priced_only(book: PriceBook) -> None:
    ticks = [
        book.make_tick("XRPUSDT", "2.15", 3),
        book.make_tick("BTCUSDT_250328", "97000.1", 9),  # DELIVERED
        book.make_tick("1INCHUSDT", "0.185", 2),
        book.make_tick("SRMUSDT", "0.3", 9),  # SETTLING
        book.make_tick("1000PEPEUSDT", "0.0045", 1),
    ]
    book.apply(ticks)
    assert book.all_body() == b"[%s]" % b",".join(
        [
            body("1000PEPEUSDT", "0.0045000", 1),
            body("1INCHUSDT", "0.1850", 2),
            body("XRPUSDT", "2.1500", 3),
        ]
    )
    assert book.body("SRMUSDT") is None and book.body("BTCUSDT_250328") is None
    assert book.body("ETHUSDT") is None  # TRADING, no price
    assert book.body("NOPE") is None
    # The non-trading ticks are stored all the same.
    assert len(book) == 5
    assert [t.symbol for t in book.ticks()] == sorted(t.symbol for t in ticks)
    sr = book.get("SRMUSDT")
    assert sr is not None and sr.price == "0.3000"


def test_apply_last_tick_per_symbol_wins(book: PriceBook) -> None:
    book.apply(
        [
            book.make_tick("BTCUSDT", "1", 1),
            book.make_tick("ETHUSDT", "2", 2),
            book.make_tick("BTCUSDT", "3", 3),
        ]
    )
    assert book.get("BTCUSDT") == Tick("BTCUSDT", "3.00", 3)
    assert book.body("BTCUSDT") == body("BTCUSDT", "3.00", 3)


# -- caching -----------------------------------------------------------------------------


def test_bodies_are_cached_until_a_change() -> None:
    book = book_with({"BTCUSDT": "97000.1", "ETHUSDT": "3150.5"})
    btc, eth, every = book.body("BTCUSDT"), book.body("ETHUSDT"), book.all_body()
    assert btc is book.body("BTCUSDT")
    assert eth is book.body("ETHUSDT")
    assert every is book.all_body()

    # A change to ETH rebuilds ETH and the array, not BTC.
    book.update(book.make_tick("ETHUSDT", "3151", 5))
    assert book.body("BTCUSDT") is btc
    new_eth = book.body("ETHUSDT")
    assert new_eth == body("ETHUSDT", "3151.00", 5) and new_eth is not eth
    new_every = book.all_body()
    assert new_every is not every and new_every == b"[%s,%s]" % (btc, new_eth)
    assert book.all_body() is new_every


@pytest.mark.parametrize("change", ["update", "apply", "remove", "clear", "refresh_status"])
def test_every_change_rebuilds_the_bodies(change: str) -> None:
    book = book_with({"BTCUSDT": "97000.1", "ETHUSDT": "3150.5"})
    btc, every = book.body("BTCUSDT"), book.all_body()
    if change == "update":
        book.update(book.make_tick("BTCUSDT", "97000.2", 7))
        assert book.body("BTCUSDT") == body("BTCUSDT", "97000.20", 7)
    elif change == "apply":
        book.apply([book.make_tick("BTCUSDT", "97000.2", 7)])
        assert book.body("BTCUSDT") == body("BTCUSDT", "97000.20", 7)
    elif change == "remove":
        book.remove("BTCUSDT")
        assert book.body("BTCUSDT") is None and book.get("BTCUSDT") is None
        assert book.all_body() == b"[%s]" % body("ETHUSDT", "3150.50")
    elif change == "clear":
        book.clear()
        assert book.body("BTCUSDT") is None and len(book) == 0
        assert book.all_body() == b"[]"
    else:
        book.refresh_status()
        assert book.body("BTCUSDT") == btc and book.body("BTCUSDT") is not btc
    assert book.all_body() is not every


def test_remove_unknown_symbol_is_harmless(book: PriceBook) -> None:
    book.remove("NOPE")
    assert book.all_body() == b"[]"


def test_empty_apply_keeps_the_cache() -> None:
    book = book_with({"BTCUSDT": "97000.1"})
    every = book.all_body()
    book.apply([])
    assert book.all_body() is every


_BUNDLED = SymbolUniverse.default()
_NAMES = [info.symbol for info in _BUNDLED]
_op = st.one_of(
    st.tuples(st.just("update"), st.sampled_from(_NAMES), st.integers(1, 10**6)),
    st.tuples(st.just("apply"), st.lists(st.sampled_from(_NAMES), max_size=8), st.integers(1, 10**6)),
    st.tuples(st.just("remove"), st.sampled_from(_NAMES), st.just(0)),
    st.tuples(st.just("status"), st.sampled_from(_NAMES), st.sampled_from(["TRADING", "SETTLING"])),
    st.tuples(st.just("clear"), st.just(""), st.just(0)),
    st.tuples(st.just("read"), st.just(""), st.just(0)),
)  # fmt: skip


def _tick(book: PriceBook, symbol: str, units: int, time_ms: int) -> Tick:
    info = book.universe.get(symbol)
    assert info is not None
    return book.make_tick(symbol, str(info.tick_size * units), time_ms)


@settings(max_examples=200, deadline=None)
@given(st.lists(_op, max_size=40))
def test_all_body_after_any_changes_is_a_fresh_print(ops: list[tuple[str, Any, Any]]) -> None:
    """The array re-prints only what changed since the last read: after any sequence of
    changes over the bundled universe (symbols of every grid and precision) it is the
    array printed from scratch, and the single-symbol bodies agree with it."""
    book = PriceBook(SymbolUniverse.default())
    book.apply([_tick(book, name, 1000, 0) for name in _NAMES])  # every symbol priced
    _check_bodies(book)
    for step, (op, arg, value) in enumerate(ops):
        if op == "update":
            book.update(_tick(book, arg, value, step))
        elif op == "apply":
            book.apply([_tick(book, name, value + i, step) for i, name in enumerate(arg)])
        elif op == "remove":
            book.remove(arg)
        elif op == "status":
            book.universe.set_status(arg, value)
            book.refresh_status()
        elif op == "clear":
            book.clear()
        else:  # a read between changes: the next read re-prints only what changed since
            _check_bodies(book)
    _check_bodies(book)


def _check_bodies(book: PriceBook) -> None:
    trading = {info.symbol for info in book.universe.trading()}
    expected = [body(t.symbol, t.price, t.time_ms) for t in book.ticks() if t.symbol in trading]
    assert book.all_body() == b"[%s]" % b",".join(expected)
    assert [book.body(t.symbol) for t in book.ticks() if t.symbol in trading] == expected


# -- listeners ---------------------------------------------------------------------------


def test_listeners_get_every_batch(book: PriceBook) -> None:
    seen: list[Sequence[Tick]] = []
    also: list[Sequence[Tick]] = []
    unsubscribe = book.subscribe(seen.append)
    book.subscribe(also.append)

    one = book.make_tick("BTCUSDT", "97000.1", 1)
    book.update(one)
    batch = [book.make_tick("ETHUSDT", "3150.5", 2), book.make_tick("BTCUSDT", "97000.2", 3)]
    book.apply(batch)
    book.apply([])  # nothing applied, nobody called
    assert [tuple(b) for b in seen] == [(one,), tuple(batch)]
    assert seen == also

    unsubscribe()
    book.update(book.make_tick("BTCUSDT", "97000.3", 4))
    assert len(seen) == 2 and len(also) == 3


def test_listener_sees_the_book_already_updated(book: PriceBook) -> None:
    seen: list[bytes | None] = []
    book.subscribe(lambda ticks: seen.append(book.body(ticks[-1].symbol)))
    book.update(book.make_tick("BTCUSDT", "97000.1", 1))
    book.apply([book.make_tick("BTCUSDT", "97000.2", 2)])
    assert seen == [body("BTCUSDT", "97000.10", 1), body("BTCUSDT", "97000.20", 2)]


# -- statuses ----------------------------------------------------------------------------


def test_status_change_takes_effect_on_refresh() -> None:
    book = book_with({"BTCUSDT": "97000.1", "ETHUSDT": "3150.5"})
    btc = body("BTCUSDT", "97000.10")
    eth = body("ETHUSDT", "3150.50")
    book.universe.set_status("BTCUSDT", "SETTLING")
    book.refresh_status()
    assert book.body("BTCUSDT") is None
    assert book.all_body() == b"[%s]" % eth
    assert book.get("BTCUSDT") is not None  # the price is kept, just not served

    book.universe.set_status("BTCUSDT", "TRADING")
    book.refresh_status()
    assert book.body("BTCUSDT") == btc
    assert book.all_body() == b"[%s,%s]" % (btc, eth)


def test_contract_back_to_trading_serves_its_stored_price() -> None:
    book = book_with({"SRMUSDT": "0.3"})
    assert book.all_body() == b"[]"
    book.universe.set_status("SRMUSDT", "TRADING")
    book.refresh_status()
    assert book.all_body() == b"[%s]" % body("SRMUSDT", "0.3000")


@pytest.mark.parametrize("via", ["update", "apply"])
def test_listener_may_unsubscribe_itself(book: PriceBook, via: str) -> None:
    calls: list[str] = []

    def once(ticks: Sequence[Tick]) -> None:
        calls.append("once")
        unsubscribe()

    unsubscribe = book.subscribe(once)
    book.subscribe(lambda ticks: calls.append("always"))
    for price in ("97000.1", "97000.2"):
        tick = book.make_tick("BTCUSDT", price, 1)
        book.update(tick) if via == "update" else book.apply([tick])
    assert calls == ["once", "always", "always"]

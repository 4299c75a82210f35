"""The recorder's rows: each field printed as Binance's files print it, whatever the
symbol's grid and whatever odd field an event carries, in bounded memory."""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tickerd.aggtrade_rows import FALSE_END, TRUE_END, csv_text, shortest_fragment
from tickerd.clock import ManualClock
from tickerd.feeds.recording import (
    _PLAIN_DECIMAL,
    HEADER,
    TradeRecorder,
    day_of,
    decimal_text,
    shortest,
)


def _record(rec: TradeRecorder, symbol: str, event: dict[str, Any]) -> None:
    """Record ``event`` as the mirror does: its id, time and price passed as read."""
    rec.record_event(symbol, event.get("a"), event.get("T"), event.get("p"), event)


def _printed(fragment: orjson.Fragment) -> bytes:
    return orjson.dumps([fragment])[1:-1]


@pytest.mark.parametrize(
    ("text", "printed"),
    [
        ("97000.10", b"97000.1"),
        ("3", b"3.0"),
        ("3.00", b"3.0"),
        ("0.000", b"0.0"),
        ("0.00001000", b"0.00001"),
        ("007.50", b"007.5"),
        ("42290.0", b"42290.0"),
    ],
)
def test_plain_decimals_are_printed_shortest(text: str, printed: bytes) -> None:
    fragment = shortest_fragment(text)
    assert fragment is not None and _printed(fragment) == printed


@pytest.mark.parametrize("text", ["", ".5", "5.", "1.2.3", "-1", "1e5", " 1", "1 ", "١", "１"])
def test_other_texts_are_left_to_the_slow_printer(text: str) -> None:
    assert shortest_fragment(text) is None


@settings(max_examples=500, deadline=None)
@given(st.text(alphabet=st.sampled_from("0123456789.0000-eE ١"), max_size=12))
def test_the_fast_printer_agrees_with_the_files_printer(text: str) -> None:
    fragment = shortest_fragment(text)
    if _PLAIN_DECIMAL.fullmatch(text) is None:
        assert fragment is None
    else:
        assert fragment is not None and _printed(fragment) == decimal_text(text).encode()


def test_rows_print_as_csv_lines() -> None:
    one, two = orjson.Fragment(b"1.5"), orjson.Fragment(b"0.01")
    items = [7, one, two, 8, 9, 1_704_067_200_000, TRUE_END,
             10, one, one, 11, 11, 1_704_067_200_001, FALSE_END]  # fmt: skip
    assert bytes(csv_text(items)) == (
        b"7,1.5,0.01,8,9,1704067200000,true\n10,1.5,1.5,11,11,1704067200001,false\n"
    )


def test_odd_event_fields_are_printed_as_the_files_print_them(tmp_path: Path) -> None:
    clock = ManualClock(1_704_067_200_000)
    rec = TradeRecorder(tmp_path, clock)
    t = clock.now_ms()
    odd = [
        {"a": 1, "p": "42000.10", "q": "0.010", "f": 5, "l": 6, "T": t, "m": True},
        {"a": 2, "p": "4.20001E4", "q": [1], "T": t + 1, "m": "yes"},  # no f/l, odd q and m
        {"a": 3, "p": "42000.1", "q": "1E-3", "f": "7", "l": None, "T": t + 2, "m": False},
    ]
    for event in odd:
        _record(rec, "BTCUSDT", event)
    rec.close()
    path = tmp_path / "futures/um/daily/aggTrades/BTCUSDT/BTCUSDT-aggTrades-2024-01-01.csv"
    assert path.read_bytes() == HEADER + (
        b"1,42000.1,0.01,5,6,1704067200000,true\n"
        b"2,42000.1,0.0,2,2,1704067200001,false\n"
        b"3,42000.1,0.001,3,3,1704067200002,false\n"
    )


def _expected_row(event: dict[str, Any]) -> str:
    """An event's row computed here, field by field, as the published files print it."""
    agg = event["a"]
    qty = event.get("q")
    first, last, maker = event.get("f"), event.get("l"), event.get("m")
    return ",".join([
        str(agg), shortest(event["p"]),
        shortest(qty) if isinstance(qty, str) else "0.0",
        str(first if type(first) is int else agg), str(last if type(last) is int else agg),
        str(event["T"]), "true" if maker is True else "false",
    ])  # fmt: skip


# Symbols of other price grids, as the mirror would apply them (text at the tick's decimals).
_GRIDS = {"BTCUSDT": 1, "ETHUSDT": 2, "DOGEUSDT": 5, "1000BONKUSDT": 6, "YFIUSDT": 0}


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    picks=st.lists(
        st.tuples(
            st.sampled_from(sorted(_GRIDS)),
            st.integers(1, 10**7),  # price in tick units
            st.sampled_from(["0.010", "1", "12.500", 7, None, ["odd"]]),  # quantity
            st.sampled_from([True, False, 1, "yes"]),  # maker flag
            st.booleans(),  # trade ids present and integers
            st.integers(0, 40_000),  # ms after the last trade of the symbol
            st.booleans(),  # flush after this event
        ),
        min_size=1,
        max_size=60,
    )
)
def test_events_of_many_symbols_are_printed_row_by_row_as_computed_here(
    tmp_path_factory: pytest.TempPathFactory, picks: list[tuple[Any, ...]]
) -> None:
    # Batches mix symbols of every grid, odd fields, flushes anywhere and a UTC midnight:
    # the files hold exactly the rows computed here, in order, each day in its own file.
    root = tmp_path_factory.mktemp("rec")
    t0 = 1_704_153_600_000 - 300_000  # five minutes before 2024-01-02T00:00Z
    clock = ManualClock(t0)
    rec = TradeRecorder(root, clock)
    last: dict[str, tuple[int, int]] = {}
    expected: dict[tuple[str, str], list[str]] = {}
    for symbol, units, qty, maker, with_ids, gap, flush in picks:
        agg, t = last.get(symbol, (0, t0))
        agg, t = agg + 1, t + gap
        last[symbol] = (agg, t)
        decimals = _GRIDS[symbol]
        whole, frac = divmod(units, 10**decimals)
        price = f"{whole}.{frac:0{decimals}d}" if decimals else str(whole)
        event: dict[str, Any] = {"e": "aggTrade", "s": symbol, "a": agg, "p": price, "T": t}
        event.update({"q": qty, "m": maker})
        if with_ids:
            event.update({"f": agg * 2, "l": agg * 2 + 1})
        _record(rec, symbol, event)
        expected.setdefault((symbol, day_of(t)), []).append(_expected_row(event))
        if flush:
            rec.flush()
    rec.flush()
    base = root / "futures/um/daily/aggTrades"
    for (symbol, day), rows in expected.items():
        csv_path = base / symbol / f"{symbol}-aggTrades-{day}.csv"
        if csv_path.exists():
            text = csv_path.read_bytes()
        else:  # a day finished by a later row: zipped
            with zipfile.ZipFile(csv_path.with_suffix(".zip")) as zf:
                text = zf.read(csv_path.name)
        assert text.decode().splitlines() == [HEADER.decode().strip(), *rows]
    assert rec.rows == len(picks) and rec.duplicates == rec.late == 0
    rec.close()


def test_event_buffer_and_printed_decimals_are_bounded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tickerd.feeds import recording

    monkeypatch.setattr(recording, "MAX_BUFFER_ROWS", 5)
    monkeypatch.setattr(recording, "MAX_DECIMALS_CACHED", 3)
    clock = ManualClock(1_704_067_200_000)
    rec = TradeRecorder(tmp_path, clock)
    path = tmp_path / "futures/um/daily/aggTrades/BTCUSDT/BTCUSDT-aggTrades-2024-01-01.csv"
    t = clock.now_ms()
    for i in range(1, 13):
        event = {"s": "BTCUSDT", "a": i, "p": f"42000.{i}0", "q": f"0.{i:03d}", "f": i, "l": i,
                 "T": t + i, "m": False}  # fmt: skip
        _record(rec, "BTCUSDT", event)
        assert len(rec._events.printed) <= 3  # noqa: SLF001 - the bound under test
        if i == 4:
            assert not path.exists()  # buffered: fewer than 5 events
    assert path.read_bytes().count(b"\n") == 1 + 10  # written at 5 and at 10 events
    rec.close()
    rows = path.read_bytes().decode().splitlines()[1:]
    assert rows == [
        f"{i},{shortest(f'42000.{i}0')},{shortest(f'0.{i:03d}')},{i},{i},{t + i},false"
        for i in range(1, 13)
    ]

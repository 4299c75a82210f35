"""The symbol universe: bundled default, loading exchangeInfo files, price printing."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tickerd import SymbolInfo, SymbolUniverse
from tickerd.symbols import SymbolFileError, format_price, on_tick_grid, reference_prices


def entry(
    symbol: str = "BTCUSDT", tick: Any = "0.10", precision: Any = 2, **extra: Any
) -> dict[str, Any]:
    """One exchangeInfo symbol entry in Binance's shape (only what tickerd reads)."""
    e: dict[str, Any] = {
        "symbol": symbol,
        "status": "TRADING",
        "pricePrecision": precision,
        "filters": [
            {
                "filterType": "PRICE_FILTER",
                "minPrice": "0.10",
                "maxPrice": "4529764",
                "tickSize": tick,
            },
            {"filterType": "LOT_SIZE", "stepSize": "0.001"},
        ],
    }
    e.update(extra)
    return e


def write(tmp_path: Path, doc: Any, name: str = "exchange_info.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(doc), encoding="utf-8")
    return path


def info(tick: str, precision: int) -> SymbolInfo:
    return SymbolInfo("XUSDT", "TRADING", Decimal(tick), precision)


# -- the bundled default -----------------------------------------------------------------


def test_default_universe() -> None:
    u = SymbolUniverse.default()
    trading = u.trading()
    assert len(trading) >= 50
    assert all(s.status == "TRADING" and s.trading for s in trading)
    names = [s.symbol for s in u]
    assert names == sorted(names)
    assert [s.symbol for s in trading] == sorted(s.symbol for s in trading)
    assert len(u) == len(names) == len(set(names))
    assert u.exchange_info["symbols"] and u.exchange_info["timezone"] == "UTC"


def test_default_universe_values() -> None:
    u = SymbolUniverse.default()
    btc = u.get("BTCUSDT")
    assert btc is not None
    assert (btc.status, btc.tick_size, btc.price_precision) == ("TRADING", Decimal("0.10"), 2)
    yfi = u.get("YFIUSDT")
    assert yfi is not None and (yfi.tick_size, yfi.price_precision) == (Decimal(1), 1)
    assert btc.raw["pricePrecision"] == 2 and btc.raw["symbol"] == "BTCUSDT"


def test_non_trading_contracts_are_known_but_not_trading() -> None:
    u = SymbolUniverse.default()
    srm, delivered = u.get("SRMUSDT"), u.get("BTCUSDT_250328")
    assert srm is not None and srm.status == "SETTLING" and not srm.trading
    assert delivered is not None and delivered.status == "DELIVERED" and not delivered.trading
    assert "SRMUSDT" in u and "SRMUSDT" not in {s.symbol for s in u.trading()}


def test_lookup_is_case_sensitive() -> None:
    u = SymbolUniverse.default()
    assert "BTCUSDT" in u and "btcusdt" not in u and 5 not in u
    assert u.get("btcusdt") is None and u.get("NOPE") is None


def test_every_trading_symbol_has_a_reference_price_on_its_grid() -> None:
    u = SymbolUniverse.default()
    refs = reference_prices()
    for s in u.trading():
        ref = refs[s.symbol]
        assert on_tick_grid(s, Decimal(ref)), (s.symbol, ref)
        assert format_price(s, Decimal(ref)) == ref, (s.symbol, ref)  # printed canonically
    assert set(refs) <= {s.symbol for s in u}


def test_precision_never_below_the_tick_decimals() -> None:
    for s in SymbolUniverse.default():
        decimals = max(0, -s.tick_size.normalize().as_tuple().exponent)  # type: ignore[operator]
        assert s.price_precision >= decimals, s.symbol


def test_set_status() -> None:
    u = SymbolUniverse.default()
    before = len(u.trading())
    u.set_status("BTCUSDT", "SETTLING")
    btc = u.get("BTCUSDT")
    assert btc is not None and btc.status == "SETTLING" and btc.raw["status"] == "SETTLING"
    assert btc.tick_size == Decimal("0.10") and btc.price_precision == 2
    assert len(u.trading()) == before - 1
    u.set_status("BTCUSDT", "TRADING")
    assert len(u.trading()) == before
    with pytest.raises(KeyError):
        u.set_status("NOPE", "TRADING")


# -- loading -----------------------------------------------------------------------------


def test_load_a_valid_file(tmp_path: Path) -> None:
    doc = {
        "timezone": "UTC",
        "symbols": [entry("ETHUSDT", "0.01", 2), entry(), entry("YFIUSDT", "1", 1)],
    }
    u = SymbolUniverse.load(write(tmp_path, doc))
    assert [s.symbol for s in u] == ["BTCUSDT", "ETHUSDT", "YFIUSDT"]
    assert u.exchange_info["timezone"] == "UTC"
    yfi = u.get("YFIUSDT")
    assert yfi is not None and yfi.price_precision == 1


def test_load_accepts_a_str_path(tmp_path: Path) -> None:
    path = write(tmp_path, {"symbols": [entry()]})
    assert len(SymbolUniverse.load(str(path))) == 1


@pytest.mark.parametrize(
    ("precision", "tick", "expected"),
    [
        (None, "0.10", 1),  # missing: the tick's decimals ("0.10" normalises to 0.1)
        (-1, "0.001", 3),
        ("2", "0.01", 2),  # not an int: the tick's decimals
        (0, "0.01", 2),  # too few to print the grid: raised to the tick's decimals
        (5, "0.01", 5),  # more than the tick needs: kept
        (0, "10", 0),
    ],
)
def test_price_precision_rules(tmp_path: Path, precision: Any, tick: str, expected: int) -> None:
    e = entry(tick=tick, precision=precision)
    if precision is None:
        del e["pricePrecision"]
    u = SymbolUniverse.load(write(tmp_path, {"symbols": [e]}))
    s = u.get("BTCUSDT")
    assert s is not None and s.price_precision == expected


def _no_price_filter() -> dict[str, Any]:
    e = entry()
    e["filters"] = [{"filterType": "LOT_SIZE", "stepSize": "0.001"}]
    return e


@pytest.mark.parametrize(
    ("doc", "reason"),
    [
        ([], "no 'symbols' list"),
        ({"symbols": {}}, "no 'symbols' list"),
        ({}, "no 'symbols' list"),
        ({"symbols": []}, "lists no symbols"),
        ({"symbols": ["BTCUSDT"]}, "not an object"),
        ({"symbols": [_no_price_filter()]}, "no PRICE_FILTER"),
        ({"symbols": [entry(filters=None)]}, "no PRICE_FILTER"),
        ({"symbols": [entry(filters=7)]}, "no PRICE_FILTER"),
        ({"symbols": [entry(filters="PRICE_FILTER")]}, "no PRICE_FILTER"),
        ({"symbols": [entry(tick=None)]}, "tickSize"),
        ({"symbols": [entry(tick="abc")]}, "tickSize"),
        ({"symbols": [entry(tick="0")]}, "tickSize"),
        ({"symbols": [entry(tick="-0.1")]}, "tickSize"),
        ({"symbols": [entry(tick="NaN")]}, "tickSize"),
        ({"symbols": [entry(tick="Infinity")]}, "tickSize"),
        ({"symbols": [entry(symbol="")]}, "invalid symbol name"),
        ({"symbols": [entry(symbol="btcusdt")]}, "invalid symbol name"),
        ({"symbols": [entry(symbol="BTC-USDT")]}, "invalid symbol name"),
        ({"symbols": [entry(symbol='BTC"USDT')]}, "invalid symbol name"),
        ({"symbols": [entry(symbol="X" * 33)]}, "invalid symbol name"),
        ({"symbols": [entry(symbol=123)]}, "invalid symbol name"),  # type: ignore[arg-type]
        ({"symbols": [{"status": "TRADING"}]}, "invalid symbol name"),
        ({"symbols": [entry(status=None)]}, "no status"),
        ({"symbols": [entry(), entry()]}, "duplicate symbol names"),
    ],
)
def test_load_errors_name_the_file_and_the_reason(tmp_path: Path, doc: Any, reason: str) -> None:
    path = write(tmp_path, doc)
    with pytest.raises(SymbolFileError) as info:
        SymbolUniverse.load(path)
    assert str(path) in str(info.value)
    assert reason in str(info.value)


@pytest.mark.parametrize("text", [b"", b"{", b"not json", b'{"symbols": [}', b"\xff\xfe{}"])
def test_load_bad_json_names_the_file(tmp_path: Path, text: bytes) -> None:
    path = tmp_path / "broken.json"
    path.write_bytes(text)
    with pytest.raises(SymbolFileError) as info:
        SymbolUniverse.load(path)
    assert str(path) in str(info.value)


def test_load_missing_file_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "absent.json"
    with pytest.raises(SymbolFileError) as info:
        SymbolUniverse.load(path)
    assert str(path) in str(info.value)
    with pytest.raises(SymbolFileError):
        SymbolUniverse.load(tmp_path)  # a directory


def test_from_exchange_info_errors_are_symbol_file_errors() -> None:
    with pytest.raises(SymbolFileError):
        SymbolUniverse.from_exchange_info(None)
    with pytest.raises(SymbolFileError):
        SymbolUniverse.from_exchange_info({"symbols": [entry(filters=None)]})


# -- printing and the grid ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("tick", "precision", "price", "printed"),
    [
        ("0.10", 2, "97000.1", "97000.10"),
        ("0.10", 2, "9.7E+4", "97000.00"),
        ("0.10", 2, "1E+30", "1000000000000000000000000000000.00"),
        ("1", 1, "3850", "3850.0"),
        ("1", 0, "12", "12"),
        ("0.0000001", 7, "1E-7", "0.0000001"),
        ("0.0000001", 7, "4.5E-3", "0.0045000"),
        ("0.000001", 6, "0.000157", "0.000157"),
        ("0.01", 2, "1E-20", "0.00"),  # below the precision: zero, never exponent form
        ("0.01", 2, "123456789012345678901234567890.12", "123456789012345678901234567890.12"),
    ],
)
def test_format_price(tick: str, precision: int, price: str, printed: str) -> None:
    assert format_price(info(tick, precision), Decimal(price)) == printed


@settings(max_examples=200, deadline=None)
@given(
    st.decimals(allow_nan=False, allow_infinity=False, places=None),
    st.integers(min_value=0, max_value=10),
)
def test_format_price_never_uses_exponent_form(price: Decimal, precision: int) -> None:
    printed = format_price(info("1", precision), price)
    assert "e" not in printed.lower()
    if precision:
        assert len(printed.rsplit(".", 1)[1]) == precision
    else:
        assert "." not in printed


@pytest.mark.parametrize(
    ("tick", "price", "on"),
    [
        ("0.10", "97000.1", True),
        ("0.10", "97000.10000", True),
        ("0.10", "0.1", True),
        ("0.10", "97000.15", False),
        ("0.10", "97000.01", False),
        ("0.10", "0", False),
        ("0.10", "-0", False),
        ("0.10", "-0.1", False),
        ("0.10", "NaN", False),
        ("0.10", "sNaN", False),
        ("0.10", "Infinity", False),
        ("1", "3850", True),
        ("1", "3850.5", False),
        ("0.10", "1E+20", True),
        ("0.10", "1E+30", False),  # more ticks than Decimal can count exactly: no exception
        ("0.10", "1E+999999999", False),
    ],
)
def test_on_tick_grid(tick: str, price: str, on: bool) -> None:
    assert on_tick_grid(info(tick, 2), Decimal(price)) is on


def test_symbol_info_equality_ignores_raw() -> None:
    a = SymbolInfo("BTCUSDT", "TRADING", Decimal("0.10"), 2, {"x": 1})
    b = SymbolInfo("BTCUSDT", "TRADING", Decimal("0.10"), 2, {"y": 2})
    assert a == b
    with pytest.raises(AttributeError):
        a.status = "SETTLING"  # type: ignore[misc]

"""The recorder's compiled row printing: decimals printed as Binance's files print them."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tickerd.aggtrade_rows import FALSE_END, TRUE_END, csv_text, shortest_fragment
from tickerd.feeds.recording import _PLAIN_DECIMAL, decimal_text


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

"""The CSV rows of recorded aggTrades, made as the trades come (the recorder's work per trade;
compiled by mypyc with the request path, see :mod:`tickerd.hotpath`). It belongs to
:mod:`tickerd.feeds.recording`, but sits at the package's top level: the build type-checks
the packages of what it compiles, and ``tickerd.feeds`` imports what the build environment
lacks (aiohttp, redis).

Rows are kept flat, seven fields each, ready for one ``orjson.dumps`` of the lot: the
aggregate id, the price and the quantity as printed fragments, the first and last trade
ids, the trade time, and the maker flag as a ``true\\n``/``false\\n`` fragment that ends the
line. orjson prints ``[1,97000.1,0.01,1,1,1704067200000,true\\n,2,...]``: the CSV is that
without the brackets and the comma after each newline. orjson's integers and fragments are
much cheaper to print than Python's ``str`` and f-strings, and a flat list allocates
nothing per row.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

import orjson
from mypy_extensions import i64

TRUE_END: Final = orjson.Fragment(b"true\n")
FALSE_END: Final = orjson.Fragment(b"false\n")
FIELDS: Final = 7  # items per row

# orjson's dicts keep their keys in a generic table (a lookup compares texts unless the
# very key object is found), and its parser reuses one string object per key it has seen
# (its key cache): lookups with those objects match by identity. Any other object finds
# the same entries, a little slower.
_KEYS: Final = tuple(orjson.loads(b'{"q":0,"f":0,"l":0,"m":0}'))
_Q: Final[str] = _KEYS[0]
_F: Final[str] = _KEYS[1]
_L: Final[str] = _KEYS[2]
_M: Final[str] = _KEYS[3]


def shortest_fragment(text: str) -> orjson.Fragment | None:
    """A plain decimal text (ASCII digits, at most one ``.`` with digits on both sides) as
    Binance's files print it, for orjson: no trailing zeros, one fraction digit at least
    (``"97000.10"`` → ``97000.1``, ``"3"`` → ``3.0``). None for any other text."""
    if not text.isascii():
        return None
    raw = text.encode("ascii")
    n: i64 = len(raw)
    dot: i64 = -1
    for k in range(n):
        c = raw[k]
        if c == 46:  # "."
            if dot >= 0:
                return None
            dot = k
        elif c < 48 or c > 57:
            return None
    if n == 0 or dot == 0 or dot == n - 1:
        return None
    if dot < 0:
        return orjson.Fragment(raw + b".0")
    end: i64 = n
    while raw[end - 1] == 48:
        end -= 1
    if end == dot + 1:
        end += 1  # "3.00" -> "3.0"
    return orjson.Fragment(raw if end == n else raw[:end])


def csv_text(items: list[Any]) -> memoryview:
    """Flat rows (see the module docstring) as CSV lines, each ending in a newline."""
    # Both maker fragments end in "e\n": a longer pattern is found faster than "\n,".
    # The brackets are left out by the view, not by a copy.
    return memoryview(orjson.dumps(items).replace(b"e\n,", b"e\n"))[1:-1]


class _Rows:
    """A symbol's flat rows: ``items[:n]``. The list doubles when full, by repeating itself
    (the copies are overwritten; cheaper than appending one by one or extending with
    ``None``s), and is cut to ``n`` when taken."""

    def __init__(self) -> None:
        self.items: list[Any] = [None] * (FIELDS * 16)
        self.n: i64 = 0  # a machine integer when compiled: no overflow checks

    def taken(self) -> list[Any]:
        items = self.items
        del items[self.n :]
        return items


class RowBuffer:
    """Recorded aggTrade events made into flat rows as they come, by symbol (the recorder's
    per-trade work: seven lookups and seven stores).

    :attr:`printed` maps a received price or quantity text to its printed fragment (at most
    ``max_printed`` texts; cleared when full): plain decimals are printed here, any other
    text by ``show``. An event that lacks a field or has one of another
    type than Binance sends (integers ``a``, ``f``, ``l``, ``T``; texts ``p``, ``q``; a
    boolean ``m``) goes to ``odd`` instead, to be made row by row. ``full`` runs when
    ``limit`` rows are buffered.
    """

    def __init__(
        self,
        show: Callable[[str], orjson.Fragment],
        odd: Callable[[str, dict[str, Any]], None],
        full: Callable[[], None],
        limit: int,
        max_printed: int,
    ) -> None:
        self.printed: dict[str, orjson.Fragment] = {}
        self.max_printed: i64 = max_printed
        self.show = show
        self.odd = odd
        self.full = full
        self.limit: i64 = limit
        self.count: i64 = 0  # rows buffered
        self.rows: dict[str, _Rows] = {}  # symbol -> its rows, in arrival order

    def add(self, symbol: str, a: object, t: object, p: object, event: dict[str, Any]) -> None:
        """Buffer the row of one applied event of ``symbol``: its aggregate id ``a``, trade
        time ``t`` and price ``p`` as the caller read them from ``event``, the rest read
        here."""
        q = event.get(_Q)
        first = event.get(_F)
        last = event.get(_L)
        maker = event.get(_M)
        if not (
            isinstance(p, str)
            and isinstance(q, str)
            and isinstance(maker, bool)
            and _is_int(a)
            and _is_int(t)
            and _is_int(first)
            and _is_int(last)
        ):
            self.odd(symbol, event)
            return
        printed = self.printed
        price = printed.get(p)
        qty = printed.get(q)
        rows = self.rows.get(symbol)
        if rows is None:
            rows = self.rows[symbol] = _Rows()
        items = rows.items
        i: i64 = rows.n
        if i == len(items):
            items *= 2
        items[i] = a
        items[i + 1] = self.printed_of(p) if price is None else price
        items[i + 2] = self.printed_of(q) if qty is None else qty
        items[i + 3] = first
        items[i + 4] = last
        items[i + 5] = t
        items[i + 6] = TRUE_END if maker else FALSE_END
        rows.n = i + FIELDS
        self.count += 1
        if self.count >= self.limit:
            self.full()

    def printed_of(self, text: str) -> orjson.Fragment:
        """``text`` (a received price or quantity) as printed, remembered."""
        printed = self.printed
        shown = printed.get(text)
        if shown is None:
            shown = shortest_fragment(text)
            if shown is None:
                shown = self.show(text)
            if len(printed) >= self.max_printed:
                printed.clear()
            printed[text] = shown
        return shown

    def take(self) -> dict[str, list[Any]]:
        """Every symbol's rows, leaving none."""
        rows = self.rows
        self.rows = {}
        self.count = 0
        return {symbol: r.taken() for symbol, r in rows.items()}

    def pop(self, symbol: str) -> list[Any]:
        """``symbol``'s rows, leaving the others."""
        rows = self.rows.pop(symbol, None)
        if rows is None:
            return []
        self.count -= rows.n // FIELDS
        return rows.taken()


def _is_int(value: object) -> bool:
    """An integer that is not a boolean (JSON's numbers without a fraction)."""
    return isinstance(value, int) and not isinstance(value, bool)

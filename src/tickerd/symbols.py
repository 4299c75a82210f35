"""The symbol universe: which contracts exist, their status, tick size and price precision.

The bundled default (``data/exchange_info.json``) holds the main USDⓈ-M perpetuals in the
shape of ``GET /fapi/v1/exchangeInfo``
(https://developers.binance.com/docs/derivatives/usds-margined-futures/market-data/rest-api/Exchange-Information);
a user may load any file of that shape instead, e.g. one saved from Binance itself.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from importlib import resources
from pathlib import Path
from typing import Any

from .errors import TickerdError
from .models import SymbolInfo

SYMBOL_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_")
MAX_SYMBOL_LEN = 32


class SymbolFileError(TickerdError):
    """An exchangeInfo document that cannot be used, with the reason."""


def _price_filter(entry: Mapping[str, Any]) -> Mapping[str, Any]:
    filters = entry.get("filters")
    for f in filters if isinstance(filters, list) else ():
        if isinstance(f, Mapping) and f.get("filterType") == "PRICE_FILTER":
            return f
    raise SymbolFileError(f"symbol {entry.get('symbol')!r} has no PRICE_FILTER")


def _parse_entry(entry: Any) -> SymbolInfo:
    if not isinstance(entry, Mapping):
        raise SymbolFileError(f"symbol entry is not an object: {entry!r}")
    name = entry.get("symbol")
    if (
        not isinstance(name, str)
        or not 0 < len(name) <= MAX_SYMBOL_LEN
        or not SYMBOL_CHARS.issuperset(name)
    ):
        raise SymbolFileError(f"invalid symbol name {name!r}")
    status = entry.get("status")
    if not isinstance(status, str):
        raise SymbolFileError(f"symbol {name!r} has no status")
    try:
        tick = Decimal(str(_price_filter(entry)["tickSize"]))
    except (KeyError, InvalidOperation) as exc:
        raise SymbolFileError(f"symbol {name!r} has no valid tickSize") from exc
    if not tick.is_finite() or tick <= 0:
        raise SymbolFileError(f"symbol {name!r} has tickSize {tick}")
    precision = entry.get("pricePrecision")
    tick_decimals = max(0, -tick.normalize().as_tuple().exponent)  # type: ignore[operator]
    if not isinstance(precision, int) or precision < 0:
        precision = tick_decimals
    # A price on the tick grid must print exactly: never fewer decimals than the tick has.
    precision = max(precision, tick_decimals)
    return SymbolInfo(name, status, tick, precision, dict(entry))


class SymbolUniverse:
    """The contracts tickerd knows, by name, in name order."""

    def __init__(self, symbols: list[SymbolInfo], exchange_info: Mapping[str, Any] | None = None):
        self._by_name = {s.symbol: s for s in sorted(symbols, key=lambda s: s.symbol)}
        if len(self._by_name) != len(symbols):
            raise SymbolFileError("duplicate symbol names")
        self.exchange_info: dict[str, Any] = dict(exchange_info or {})

    @classmethod
    def from_exchange_info(cls, doc: Any) -> SymbolUniverse:
        """Build from a parsed exchangeInfo document."""
        if not isinstance(doc, Mapping) or not isinstance(doc.get("symbols"), list):
            raise SymbolFileError("not an exchangeInfo document: no 'symbols' list")
        symbols = [_parse_entry(e) for e in doc["symbols"]]
        if not symbols:
            raise SymbolFileError("exchangeInfo lists no symbols")
        return cls(symbols, doc)

    @classmethod
    def load(cls, path: str | Path) -> SymbolUniverse:
        """Load an exchangeInfo JSON file."""
        try:
            doc = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise SymbolFileError(f"{path}: {exc}") from exc
        try:
            return cls.from_exchange_info(doc)
        except SymbolFileError as exc:
            raise SymbolFileError(f"{path}: {exc}") from exc

    @classmethod
    def default(cls) -> SymbolUniverse:
        """The bundled universe of the main USDⓈ-M contracts."""
        text = resources.files("tickerd.data").joinpath("exchange_info.json").read_text("utf-8")
        return cls.from_exchange_info(json.loads(text))

    def __contains__(self, symbol: object) -> bool:
        return symbol in self._by_name

    def __iter__(self) -> Iterator[SymbolInfo]:
        return iter(self._by_name.values())

    def __len__(self) -> int:
        return len(self._by_name)

    def get(self, symbol: str) -> SymbolInfo | None:
        """The contract named ``symbol`` (case-sensitive, as Binance), or None."""
        return self._by_name.get(symbol)

    def trading(self) -> list[SymbolInfo]:
        """Contracts whose status is TRADING, in name order."""
        return [s for s in self._by_name.values() if s.trading]

    def merge(self, doc: Any) -> UniverseChange:
        """Take in a newer exchangeInfo document: new symbols are added, the status, tick
        size and precision of known ones replaced; symbols it does not list are kept.
        Entries that cannot be used are skipped and listed in the result."""
        return _merge(self, doc)

    def set_status(self, symbol: str, status: str) -> None:
        """Change a contract's status (e.g. to take it out of trading)."""
        info = self._by_name[symbol]
        raw = dict(info.raw, status=status)
        self._by_name[symbol] = SymbolInfo(
            symbol, status, info.tick_size, info.price_precision, raw
        )


@dataclass
class UniverseChange:
    """What :meth:`SymbolUniverse.merge` changed: new symbols, status changes
    ``(symbol, old, new)``, grid changes ``(symbol, "tick/precision" old, new)``, and entries
    of the document that could not be used."""

    added: list[str] = field(default_factory=list)
    status: list[tuple[str, str, str]] = field(default_factory=list)
    grid: list[tuple[str, str, str]] = field(default_factory=list)
    unusable: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.added or self.status or self.grid)


def _merge(universe: SymbolUniverse, doc: Any) -> UniverseChange:
    if not isinstance(doc, Mapping) or not isinstance(doc.get("symbols"), list):
        raise SymbolFileError("not an exchangeInfo document: no 'symbols' list")
    change = UniverseChange()
    by_name = universe._by_name
    for entry in doc["symbols"]:
        try:
            info = _parse_entry(entry)
        except SymbolFileError as exc:
            change.unusable.append(str(exc))
            continue
        old = by_name.get(info.symbol)
        if old is None:
            change.added.append(info.symbol)
        else:
            if old.status != info.status:
                change.status.append((info.symbol, old.status, info.status))
            if (old.tick_size, old.price_precision) != (info.tick_size, info.price_precision):
                change.grid.append(
                    (info.symbol, f"{old.tick_size}/{old.price_precision}",
                     f"{info.tick_size}/{info.price_precision}")
                )  # fmt: skip
            elif old.status == info.status and old.raw == info.raw:
                continue  # unchanged: keep the same object (REST caches by identity)
        by_name[info.symbol] = info
    if change.added:
        universe._by_name = dict(sorted(by_name.items()))
    return change


def format_price(info: SymbolInfo, price: Decimal) -> str:
    """Print ``price`` fixed-point with the contract's precision, never in exponent form."""
    return f"{price:.{info.price_precision}f}"


def on_tick_grid(info: SymbolInfo, price: Decimal) -> bool:
    """Whether ``price`` is a positive whole multiple of the contract's tick size.

    A price with more ticks than the decimal context can count exactly (28 digits) is
    reported off the grid rather than raising :class:`decimal.InvalidOperation`.
    """
    try:
        return price.is_finite() and price > 0 and (price % info.tick_size) == 0
    except InvalidOperation:
        return False


def reference_prices() -> dict[str, str]:
    """Bundled illustrative starting prices for the synthetic market, by symbol."""
    text = resources.files("tickerd.data").joinpath("reference_prices.json").read_text("utf-8")
    prices = json.loads(text)
    assert isinstance(prices, dict)
    return {str(k): str(v) for k, v in prices.items()}

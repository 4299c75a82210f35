"""Value objects shared by every layer."""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, NamedTuple


class Tick(NamedTuple):
    """The last trade of one symbol: ``price`` an exact decimal string, ``time_ms`` its time."""

    symbol: str
    price: str
    time_ms: int


TRADING = "TRADING"


@dataclass(frozen=True, slots=True)
class SymbolInfo:
    """One contract of the symbol universe, as exchangeInfo describes it.

    ``tick_size`` is the PRICE_FILTER step; ``price_precision`` the number of decimals
    Binance prints prices with; ``raw`` the exchangeInfo entry as loaded (served back by the
    REST exchangeInfo endpoint).
    """

    symbol: str
    status: str
    tick_size: Decimal
    price_precision: int
    raw: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def trading(self) -> bool:
        """Whether the contract trades, and so has a price to serve."""
        return self.status == TRADING

"""Value objects shared by every layer."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any, NamedTuple, Self

from .errors import ProtocolError


class Tick(NamedTuple):
    """The last trade of one symbol: ``price`` an exact decimal string, ``time_ms`` its time."""

    symbol: str
    price: str
    time_ms: int


_FIELD: Any = tuple.__getitem__


class Trade(Tick):
    """A tick that is a trade: the :class:`Tick` fields, then what a market stream shows.

    ``qty`` is an exact decimal string; ``agg_id``, ``first_id`` and ``last_id`` the aggregate
    and trade ids (a single trade has ``first_id == last_id``); ``maker`` whether the buyer
    was the maker. A Trade is a Tick (the book stores and serves it unchanged); the fields
    follow those of the aggTrade stream:
    https://developers.binance.com/docs/derivatives/usds-margined-futures/websocket-market-streams/Aggregate-Trade-Streams
    """

    __slots__ = ()

    def __new__(  # noqa: PLR0917 - the fields of the tuple, in order
        cls,
        symbol: str,
        price: str,
        time_ms: int,
        qty: str = "0",
        agg_id: int = 0,
        first_id: int = 0,
        last_id: int = 0,
        maker: bool = False,
    ) -> Self:
        return tuple.__new__(cls, (symbol, price, time_ms, qty, agg_id, first_id, last_id, maker))

    @classmethod
    def of(
        cls, tick: Tick, qty: str, agg_id: int, first_id: int, last_id: int, maker: bool
    ) -> Trade:
        """The trade behind ``tick`` (a validated tick: its price is canonical)."""
        return tuple.__new__(cls, (*tick[:3], qty, agg_id, first_id, last_id, maker))

    def __repr__(self) -> str:
        return f"Trade{tuple.__repr__(self)}"

    @property
    def qty(self) -> str:
        """The traded quantity, an exact decimal string."""
        value: str = _FIELD(self, 3)
        return value

    @property
    def agg_id(self) -> int:
        """The aggregate trade id."""
        value: int = _FIELD(self, 4)
        return value

    @property
    def first_id(self) -> int:
        """The first trade id of the aggregate."""
        value: int = _FIELD(self, 5)
        return value

    @property
    def last_id(self) -> int:
        """The last trade id of the aggregate."""
        value: int = _FIELD(self, 6)
        return value

    @property
    def maker(self) -> bool:
        """Whether the buyer was the maker."""
        value: bool = _FIELD(self, 7)
        return value


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


_PRICE_RE = re.compile(r"-?[0-9]+(?:\.[0-9]+)?(?:[eE][-+]?[0-9]+)?")


@dataclass(frozen=True, slots=True)
class PriceTicker:
    """One ``ticker.price`` result: the last trade price of ``symbol`` and its time.

    https://developers.binance.com/docs/derivatives/usds-margined-futures/market-data/websocket-api/Symbol-Price-Ticker

    ``price`` is exact: parsed from the JSON string Binance sends, never through a float.
    """

    symbol: str
    price: Decimal
    time_ms: int

    @classmethod
    def from_wire(cls, obj: Any) -> PriceTicker:
        """Parse ``{"symbol": str, "price": str, "time": int}``; :class:`ProtocolError` if not."""
        if type(obj) is not dict:
            raise ProtocolError(f"ticker.price result is not an object: {obj!r:.200}")
        symbol, price, time_ms = obj.get("symbol"), obj.get("price"), obj.get("time")
        if type(symbol) is not str or not symbol:
            raise ProtocolError(f"ticker.price symbol is not a string: {symbol!r:.100}")
        if type(price) is not str:
            raise ProtocolError(
                f"ticker.price price of {symbol} is not a JSON string: {price!r:.100}"
                " (Binance sends prices as strings; a JSON number may have lost digits)"
            )
        if not _PRICE_RE.fullmatch(price):
            raise ProtocolError(f"ticker.price price of {symbol} is not a decimal: {price!r:.100}")
        try:
            value = Decimal(price)
        except InvalidOperation:  # pragma: no cover - the pattern admits only decimals
            raise ProtocolError(f"ticker.price price of {symbol} is not a decimal") from None
        if type(time_ms) is not int or time_ms < 0:
            raise ProtocolError(f"ticker.price time of {symbol} is not an integer: {time_ms!r}")
        return cls(symbol, value, time_ms)

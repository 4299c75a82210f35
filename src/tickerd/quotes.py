"""Prices for the terminal commands: asking for named symbols, plain tables, error lines.

https://developers.binance.com/docs/derivatives/usds-margined-futures/market-data/websocket-api/Symbol-Price-Ticker
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from .client import Client
from .errors import BinanceError
from .models import PriceTicker
from .timestamps import utc_stamp, with_utc

__all__ = ["SymbolError", "describe", "fetch_each", "table"]


class SymbolError(Exception):
    """The server refused the request for one named symbol."""

    def __init__(self, symbol: str, error: BinanceError) -> None:
        super().__init__(describe(symbol, error))
        self.symbol = symbol
        self.error = error


def describe(subject: str, error: BinanceError) -> str:
    """One line for a person: ``NOPEUSDT: Invalid symbol. (-1121)``; a 429/418 adds when
    it may be retried, in UTC with the epoch ms beside it."""
    line = f"{subject or repr(subject)}: {with_utc(error.msg)} ({error.code})"
    if error.status in (418, 429) and error.retry_after_ms is not None:
        line += f"; retry after {utc_stamp(error.retry_after_ms)}"
    return line


async def fetch_each(
    client: Client, symbols: Sequence[str]
) -> list[tuple[str, PriceTicker | BinanceError]]:
    """Ask for each symbol at once (one connection); each symbol with its ticker or the
    error the server answered for it. Other failures (connection, timeout) are raised."""
    results = await asyncio.gather(
        *(client.ticker_price(s) for s in symbols), return_exceptions=True
    )
    paired: list[tuple[str, PriceTicker | BinanceError]] = []
    for symbol, result in zip(symbols, results, strict=True):
        if isinstance(result, (PriceTicker, BinanceError)):
            paired.append((symbol, result))
        else:
            raise result
    return paired


def table(header: Sequence[str], rows: Sequence[Sequence[str]], right: Sequence[int] = ()) -> str:
    """Columns padded to their widest cell; ``right`` lists right-aligned columns."""
    widths = [len(h) for h in header]
    for row in rows:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))

    def line(cells: Sequence[str]) -> str:
        return "  ".join(
            c.rjust(w) if i in right else c.ljust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()

    return "\n".join([line(header), *(line(r) for r in rows)])

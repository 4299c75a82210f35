"""The mirror's universe follows the upstream's ``GET /fapi/v1/exchangeInfo``.

(developers.binance.com/docs/derivatives/usds-margined-futures/market-data/rest-api/Exchange-Information.)
Symbols Binance lists later are added, status changes applied (a symbol that stops
TRADING leaves the all-symbols answer and answers -1121), tick-size and precision changes
adopted so new prices are checked and printed on the new grid. Each change is logged once,
at INFO, when it is seen; an unchanged document logs nothing.
"""

from __future__ import annotations

import logging

import orjson

from ..symbols import SymbolFileError, SymbolUniverse, UniverseChange
from .mirror_state import UpstreamDataError

EXCHANGE_INFO_PATH = "/fapi/v1/exchangeInfo"
_LISTED = 20  # symbols named per log line


def apply_exchange_info(universe: SymbolUniverse, body: bytes, *, where: str) -> UniverseChange:
    """Merge an exchangeInfo body into ``universe``; :class:`UpstreamDataError` if it is not
    an exchangeInfo document."""
    try:
        doc = orjson.loads(body)
        return universe.merge(doc)
    except (orjson.JSONDecodeError, SymbolFileError) as exc:
        raise UpstreamDataError(f"{where}: {exc}") from None


def log_change(change: UniverseChange, log: logging.Logger) -> None:
    """One line per kind of change."""
    if change.added:
        log.info("universe: %d new symbol(s): %s", len(change.added), _list(change.added))
    if change.status:
        moves = [f"{s} {a} -> {b}" for s, a, b in change.status]
        log.info("universe: %d status change(s): %s", len(moves), _list(moves))
    if change.grid:
        moves = [f"{s} tick/precision {a} -> {b}" for s, a, b in change.grid]
        log.info("universe: %d price grid change(s): %s", len(moves), _list(moves))
    if change.unusable:
        log.warning(
            "universe: %d exchangeInfo entries skipped: %s",
            len(change.unusable),
            _list(change.unusable),
        )


def _list(items: list[str]) -> str:
    more = len(items) - _LISTED
    return ", ".join(items[:_LISTED]) + (f" and {more} more" if more > 0 else "")

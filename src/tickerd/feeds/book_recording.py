"""Recording the push ingest: its ticks, taken from the book, as Binance's aggTrades files.

A pushed tick carries a price and a time only, so each row gets the symbol's next
aggregate id (:meth:`.recording.TradeRecorder.record_tick`); the files, their rotation
and their durability are those of :mod:`.recording`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from ..book import PriceBook
from ..models import Tick
from .recording import TradeRecorder
from .state import FeedState


class BookRecording:
    """Records what another feed applies to the book (the push ingest, whose ticks carry
    no trade details), as a companion in the feed list: it claims no symbol, listens to
    the book for the source feed's symbols, and runs the recorder's flush loop."""

    name = "record"

    def __init__(self, recorder: TradeRecorder, source: Any) -> None:
        self.recorder = recorder
        self.source = source  # a feed with ``symbols`` (assigned before prime)
        self.symbols: frozenset[str] = frozenset()
        self._unsubscribe: Callable[[], None] | None = None

    def claim(self, symbols: frozenset[str]) -> None:
        """Claims nothing: it declares an empty set, so it is never given symbols."""

    async def start(self, book: PriceBook) -> None:
        """Nothing to prepare before the port opens."""

    async def stop(self) -> None:
        """Nothing to undo: :meth:`run` closes the recorder when cancelled."""

    def prime(self, book: PriceBook) -> None:
        """Start listening to the book."""
        if self._unsubscribe is None:
            self._unsubscribe = book.subscribe(self._on_ticks)

    async def run(self, book: PriceBook) -> None:
        """Flush and zip until cancelled; then the last rows."""
        self.prime(book)
        try:
            await self.recorder.run()
        finally:
            if self._unsubscribe is not None:
                self._unsubscribe()
                self._unsubscribe = None
            self.recorder.close()

    def status(self) -> dict[str, Any]:
        """The recorder's counters, for ``/healthz``."""
        return {"state": FeedState.UP, "feed": getattr(self.source, "name", "?"),
                **self.recorder.status()}  # fmt: skip

    def _on_ticks(self, ticks: Sequence[Tick]) -> None:
        wanted = getattr(self.source, "symbols", None) or frozenset()
        record = self.recorder.record_tick
        for tick in ticks:
            if tick.symbol in wanted:
                record(tick)

"""Price sources. Each feed writes ticks into a :class:`~tickerd.book.PriceBook`."""

from __future__ import annotations

from typing import Protocol

from ..book import PriceBook


class Feed(Protocol):
    """A source of ticks. ``run`` applies ticks to the book until cancelled."""

    name: str

    def prime(self, book: PriceBook) -> None:
        """Put the feed's first prices into the book before the server opens its port."""
        ...

    async def run(self, book: PriceBook) -> None:
        """Keep the book current; return only when the source is exhausted."""
        ...

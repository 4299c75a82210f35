"""Price sources. Each feed writes ticks into a :class:`~tickerd.book.PriceBook`.

``tickerd serve --feed a,b`` builds feeds by name from :data:`BUILDERS`; several feeds may
run at once as long as their symbols do not overlap.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from ..book import PriceBook
from ..clock import Clock
from ..config import Settings
from ..errors import TickerdError
from ..symbols import SymbolUniverse


class Feed(Protocol):
    """A source of ticks. ``run`` applies ticks to the book until cancelled."""

    name: str

    def prime(self, book: PriceBook) -> None:
        """Put the feed's first prices into the book before the server opens its port."""
        ...

    async def run(self, book: PriceBook) -> None:
        """Keep the book current; return only when the source is exhausted."""
        ...


class FeedConfigError(TickerdError):
    """Feeds that cannot be built as configured, with the reason."""


@dataclass
class FeedPlan:
    """The feeds to run and the clock the server should follow (a replay brings its own)."""

    feeds: list[Feed] = field(default_factory=list)
    clock: Clock | None = None


Builder = Callable[[Settings, SymbolUniverse, Clock, FeedPlan], None]


def _synthetic(settings: Settings, universe: SymbolUniverse, clock: Clock, plan: FeedPlan) -> None:
    from .synthetic import SyntheticFeed, SyntheticMarket

    market = SyntheticMarket(universe, settings.seed)
    plan.feeds.append(SyntheticFeed(market, plan.clock or clock, settings.tick_rate))


BUILDERS: dict[str, Builder] = {"synthetic": _synthetic}


def build_feeds(settings: Settings, universe: SymbolUniverse, clock: Clock) -> FeedPlan:
    """Build the feeds named by ``settings.feed`` (comma-separated) in order."""
    names = [n.strip() for n in settings.feed.split(",") if n.strip()]
    if not names:
        raise FeedConfigError("no feed named (--feed)")
    plan = FeedPlan()
    for name in names:
        builder = BUILDERS.get(name)
        if builder is None:
            raise FeedConfigError(f"unknown feed {name!r}; known: {', '.join(BUILDERS)}")
        builder(settings, universe, clock, plan)
    return plan

"""What the ops surface knows of the feeds: ticks applied per feed, states, newest tick age.

Ticks are counted by a book listener, per applied batch: with one feed every tick is its
own (one addition per batch); with several, each tick goes to the feed that owns its symbol
(feeds' symbol sets are disjoint, see :func:`tickerd.feeds.assign_symbols`), ticks of
symbols no feed owns (a control-plane ``price.set`` on a symbol outside every feed) to
:data:`UNOWNED`.

A feed's state is the one it reports (``status()["state"]``, a
:class:`~tickerd.feeds.state.FeedState` value); a feed that reports none is ``starting``
before the service starts, ``up`` while it runs, and ``finished`` or ``failed`` once its
task ended (the service tells :meth:`FeedTracker.ended`). A task that died is ``failed``
whatever the feed says of itself. :meth:`FeedTracker.watch` logs every change of state
(from ``starting`` on), checked once per ``interval``: INFO into ``up`` or ``finished``,
WARNING into any other state.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import Any

from ..book import PriceBook
from ..feeds import Feed
from ..feeds.state import FeedState
from ..models import Tick

log = logging.getLogger("tickerd.feeds")

#: The feed label of ticks for symbols no feed owns.
UNOWNED = "unowned"
#: States an operator need not act on; changes into any other state log a WARNING.
HEALTHY = frozenset({FeedState.UP, FeedState.FINISHED})
_STATES = frozenset(s.value for s in FeedState)


class FeedTracker:
    """Per-feed tick counts and states of one service's feeds (see the module docstring)."""

    def __init__(self, feeds: Sequence[Feed], book: PriceBook) -> None:
        self.feeds = list(feeds)
        self.book = book
        self.ticks: dict[str, int] = {f.name: 0 for f in self.feeds}
        self.ticks[UNOWNED] = 0
        self.running = False
        self._ended: dict[str, FeedState] = {}
        self._logged: dict[str, str] = {}
        self._owner: dict[str, str] = {}
        self._unsubscribe: Callable[[], None] | None = None

    # -- ticks ---------------------------------------------------------------------------

    def attach(self) -> None:
        """Count every batch the book applies from now on."""
        if self._unsubscribe is not None:
            return
        for feed in self.feeds:
            symbols = getattr(feed, "symbols", None)
            if symbols is not None:
                self._owner.update(dict.fromkeys(symbols, feed.name))
        listener = self._one if len(self.feeds) == 1 else self._many
        self._unsubscribe = self.book.subscribe(listener)

    def detach(self) -> None:
        """Stop counting."""
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None

    def _one(self, ticks: Sequence[Tick]) -> None:
        self.ticks[self.feeds[0].name] += len(ticks)

    def _many(self, ticks: Sequence[Tick]) -> None:
        owner = self._owner
        counts = self.ticks
        for tick in ticks:
            name = owner.get(tick.symbol, UNOWNED)
            counts[name] += 1

    def owner(self, symbol: str) -> str:
        """The feed whose ticks ``symbol``'s are counted as."""
        if len(self.feeds) == 1:
            return self.feeds[0].name
        return self._owner.get(symbol, UNOWNED)

    def newest(self) -> dict[str, int]:
        """The newest tick time (ms) in the book per feed, for feeds with a price."""
        out: dict[str, int] = {}
        for tick in self.book.ticks():
            name = self.owner(tick.symbol)
            if tick.time_ms > out.get(name, -1):
                out[name] = tick.time_ms
        return out

    # -- states --------------------------------------------------------------------------

    def ended(self, name: str, failed: bool) -> None:
        """Record that feed ``name``'s task returned (``failed``: raised)."""
        self._ended[name] = FeedState.FAILED if failed else FeedState.FINISHED

    def details(self, feed: Feed) -> dict[str, Any]:
        """What the feed reports of itself (``{}`` for a feed without ``status()``)."""
        status = getattr(feed, "status", None)
        if not callable(status):
            return {}
        doc = status()
        return doc if isinstance(doc, dict) else {}

    def state(self, feed: Feed, details: dict[str, Any] | None = None) -> str:
        """The feed's state now (a :class:`FeedState` value)."""
        ended = self._ended.get(feed.name)
        if ended is FeedState.FAILED:
            return ended.value
        reported = (self.details(feed) if details is None else details).get("state")
        if isinstance(reported, str) and reported in _STATES:
            return reported
        if ended is not None:
            return ended.value
        return FeedState.UP.value if self.running else FeedState.STARTING.value

    def check(self) -> None:
        """Log every feed whose state changed since the last check."""
        for feed in self.feeds:
            state = self.state(feed)
            before = self._logged.get(feed.name, FeedState.STARTING.value)
            if state == before:
                continue
            self._logged[feed.name] = state
            level = logging.INFO if state in HEALTHY else logging.WARNING
            log.log(level, "feed %s: %s -> %s", feed.name, before, state)

    async def watch(self, interval: float) -> None:
        """Check the states every ``interval`` seconds, until cancelled."""
        failing = False
        while True:
            try:
                self.check()
                failing = False
            except Exception:  # a feed's status() must not stop the watch
                if not failing:  # once per run of failures, not once per interval
                    log.exception("feed state check failed")
                failing = True
            await asyncio.sleep(interval)

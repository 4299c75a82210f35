"""Rate-limit events as WARNING lines, so the operator of a shared price cache can tell
which client was refused or banned, and when it may come back.

The limiter (:mod:`tickerd.ratelimit`) reports each client at most once per window for a
429 and once per ban and ban end; :class:`LimitLog` also bounds the lines in all, so a flood
of distinct addresses cannot flood the log: past ``max_lines`` in a minute of the served
clock the rest are counted, and the count is logged at the next event of a later minute.
Times are the served clock's, in UTC with the epoch milliseconds beside them.
"""

from __future__ import annotations

import logging

from .ratelimit import BANNED, REFUSED, UNBANNED, LimitEvent
from .timestamps import utc_stamp
from .weights import MINUTE_MS

__all__ = ["LimitLog"]

log = logging.getLogger("tickerd.ratelimit")


class LimitLog:
    """A :class:`~tickerd.ratelimit.RateLimiter` listener that logs its events."""

    def __init__(self, logger: logging.Logger = log, max_lines: int = 100) -> None:
        if max_lines < 1:
            raise ValueError("max_lines must be >= 1")
        self.logger = logger
        self.max_lines = max_lines
        self._minute = -1
        self._lines = 0
        self._unlogged = 0

    def __call__(self, event: LimitEvent) -> None:
        minute = event.now_ms // MINUTE_MS
        if minute != self._minute:
            if self._unlogged:
                self.logger.warning(
                    "%d more rate-limit events in the minute from %s were not logged",
                    self._unlogged,
                    utc_stamp(self._minute * MINUTE_MS),
                )
            self._minute, self._lines, self._unlogged = minute, 0, 0
        if self._lines >= self.max_lines:
            self._unlogged += 1
            return
        self._lines += 1
        self.logger.warning(_TEXT[event.kind](event))


def _refused(e: LimitEvent) -> str:
    return (
        f"IP {e.key} over the weight limit ({e.used} of {e.limit} this minute): "
        f"answered 429 until {utc_stamp(e.until_ms)}"
    )


def _banned(e: LimitEvent) -> str:
    return f"IP {e.key} banned (418) until {utc_stamp(e.until_ms)}; ban {e.bans} in a row"


def _unbanned(e: LimitEvent) -> str:
    return f"IP {e.key} no longer banned: its ban ended at {utc_stamp(e.until_ms)}"


_TEXT = {REFUSED: _refused, BANNED: _banned, UNBANNED: _unbanned}

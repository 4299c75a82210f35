"""Clocks: the only source of "now" (milliseconds since the epoch) for the core.

The protocol core never reads time itself; the server passes ``clock.now_ms()`` in.
Tests use :class:`ManualClock` to step time exactly.
"""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    """Anything that tells the time in epoch milliseconds."""

    def now_ms(self) -> int:
        """Milliseconds since the Unix epoch."""
        ...


class SystemClock:
    """Wall-clock time."""

    def now_ms(self) -> int:
        """Milliseconds since the Unix epoch, from the system clock."""
        return time.time_ns() // 1_000_000


class ManualClock:
    """A clock that moves only when told to (tests, paused simulations)."""

    def __init__(self, start_ms: int = 1_700_000_000_000) -> None:
        self._now = start_ms

    def now_ms(self) -> int:
        """The time last set."""
        return self._now

    def advance(self, ms: int) -> int:
        """Move forward by ``ms`` (never backward) and return the new time."""
        if ms < 0:
            raise ValueError("a clock does not run backward")
        self._now += ms
        return self._now

    def set(self, now_ms: int) -> None:
        """Jump to ``now_ms``, which must not be earlier than the current time."""
        if now_ms < self._now:
            raise ValueError("a clock does not run backward")
        self._now = now_ms

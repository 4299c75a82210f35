"""Clocks: the only source of "now" (milliseconds since the epoch) for the core.

The protocol core never reads time itself; the server passes ``clock.now_ms()`` in.
Tests use :class:`ManualClock` to step time exactly; during a replay of Binance history the
server follows :class:`ReplayClock`, the replay's trade time.
"""

from __future__ import annotations

import time
from collections.abc import Callable
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


class ControlledClock:
    """The service clock as the control plane sees it: a base clock, an offset, a freeze.

    ``now_ms`` is the base clock's time plus ``offset_ms``, or the frozen time while frozen.
    Every reader of the service's time (the WebSocket API, REST ``/fapi/v1/time``, the
    rate-limit windows, server ping payloads) goes through it, so moving it moves them all.
    Over :class:`SystemClock` it reads ``time.time_ns`` itself: one method call, as before.
    Unlike :class:`ManualClock`, it may be set backward: a test tool, on purpose.
    """

    __slots__ = ("_base_now", "_frozen", "_offset", "_system", "base")

    def __init__(self, base: Clock) -> None:
        self.base = base
        self._base_now = base.now_ms
        self._system = type(base) is SystemClock
        self._offset = 0
        self._frozen: int | None = None

    def now_ms(self) -> int:
        """The base clock's time plus the offset, or the frozen time."""
        frozen = self._frozen
        if frozen is not None:
            return frozen
        if self._system:
            return time.time_ns() // 1_000_000 + self._offset
        return self._base_now() + self._offset

    @property
    def frozen(self) -> bool:
        """Whether the clock stands still."""
        return self._frozen is not None

    @property
    def offset_ms(self) -> int:
        """How far the clock is ahead of its base (negative: behind), while running."""
        return self._offset

    def freeze(self, at_ms: int | None = None) -> int:
        """Stop the clock at ``at_ms`` (default: now); returns the frozen time."""
        self._frozen = self.now_ms() if at_ms is None else at_ms
        return self._frozen

    def unfreeze(self) -> int:
        """Let the clock run again from the frozen time (no jump); returns now."""
        if self._frozen is not None:
            self._offset = self._frozen - self._base_now()
            self._frozen = None
        return self.now_ms()

    def advance(self, ms: int) -> int:
        """Move forward by ``ms`` (frozen or not); returns the new time."""
        if ms < 0:
            raise ValueError("advance takes a non-negative number of ms")
        if self._frozen is not None:
            self._frozen += ms
        else:
            self._offset += ms
        return self.now_ms()

    def set(self, now_ms: int) -> int:
        """Jump to ``now_ms`` (also backward); a frozen clock stays frozen there."""
        if self._frozen is not None:
            self._frozen = now_ms
        else:
            self._offset = now_ms - self._base_now()
        return self.now_ms()

    def reset(self) -> int:
        """Follow the base clock again: no offset, not frozen; returns now."""
        self._offset = 0
        self._frozen = None
        return self.now_ms()


class ReplayClock:
    """The server's clock during a replay of Binance history: the replay's trade time.

    Theory of operation
    -------------------
    The clock maps monotonic time onto replay time: ``base_ms + (mono - base_s) * rate``,
    where ``rate`` is replay milliseconds per second (``speed * 1000``; 0 = standing
    still). The replay feed drives it:

    * stepped and as-fast-as-possible replays :meth:`hold` it at the last applied trade's
      time, so what a request sees depends only on which trades were applied;
    * real-time and N× replays :meth:`run` it at ``speed``: between two trades the clock
      moves on by elapsed time × speed, so rate-limit windows (aligned to the clock minute)
      open and close as they would have, but never past ``cap`` — the time of the next
      trade not yet applied — so the clock cannot run ahead of the prices it serves.

    It never runs backward: ``now_ms`` returns at least what it returned before. Start:
    the first trade's time. ``monotonic`` (seconds) is injectable for tests.
    """

    __slots__ = ("_base_ms", "_base_s", "_cap", "_mono", "_rate", "_shown")

    def __init__(self, start_ms: int, *, monotonic: Callable[[], float] = time.monotonic) -> None:
        self._mono = monotonic
        self._base_ms = start_ms
        self._base_s = monotonic()
        self._rate = 0.0
        self._cap: int | None = None
        self._shown = start_ms

    def now_ms(self) -> int:
        """The replay's current time in epoch milliseconds (see the class docstring)."""
        ms = self._base_ms
        if self._rate:
            ms += int((self._mono() - self._base_s) * self._rate)
            cap = self._cap
            if cap is not None and ms > cap:
                ms = cap
        if ms < self._shown:
            return self._shown
        self._shown = ms
        return ms

    def schedule_ms(self) -> int:
        """The replay time the schedule has reached (``now_ms`` without the cap)."""
        if not self._rate:
            return max(self._base_ms, self._shown)
        return self._base_ms + int((self._mono() - self._base_s) * self._rate)

    @property
    def running(self) -> bool:
        """Whether the clock moves by itself (real-time and N× replays, or after the end)."""
        return bool(self._rate)

    def hold(self, at_ms: int) -> int:
        """Stand still at ``at_ms`` (or at the current time, if that is later)."""
        self._base_ms = max(at_ms, self.now_ms())
        self._rate = 0.0
        self._cap = None
        self._shown = self._base_ms
        return self._base_ms

    def run(self, speed: float, *, cap_ms: int | None = None) -> None:
        """Move on from the current time at ``speed`` × real time, never past ``cap_ms``."""
        if not speed > 0:
            raise ValueError("a running replay clock needs a speed > 0")
        self._base_ms = self.now_ms()
        self._base_s = self._mono()
        self._rate = speed * 1000.0
        self._cap = cap_ms

    def cap(self, cap_ms: int | None) -> None:
        """Never show a time past ``cap_ms`` (None: no cap) while running."""
        self._cap = cap_ms

"""Replay of Binance's historical trades: the book follows the trades of the files in time order.

Files are the USDⓈ-M ``trades`` / ``aggTrades`` files of data.binance.vision
(binance/binance-public-data README; parsing in :mod:`.binance_files`). The served price is
the trade's price at the symbol's precision and the served ``time`` the trade's own time
(``T`` of the aggTrade stream, "transaction time" on the Symbol-Price-Ticker page:
https://developers.binance.com/docs/derivatives/usds-margined-futures/market-data/websocket-api/Symbol-Price-Ticker).

Theory of operation
-------------------
* Files are grouped by symbol. One symbol's files are read one after another in date order
  (their days must not overlap), so one file per symbol is open at a time; the symbols are
  merged in time order (equal times: symbols in name order; :func:`.trade_order.merged`).
* The feed owns a :class:`~tickerd.clock.ReplayClock`, which the server follows: it starts
  at the first trade's time. Speeds:

  - ``step``: nothing moves until :meth:`ReplayFeed.step` applies the next ``n`` trades; the
    clock stands at the last applied trade's time;
  - ``max``: trades are applied in batches of ``batch`` as fast as possible, yielding to the
    event loop between batches; the clock stands at the last applied trade's time;
  - ``N`` (``1`` = real time): trade ``k`` is applied when ``(time_k - first) / N`` seconds
    have passed; the clock runs at N × real time, never past the next unapplied trade.

* Each file is parsed, checked and printed on its own symbol's grid (tick size and
  ``pricePrecision`` from the universe), whatever the other symbols of the replay.
* A bad row stops the replay: every row before it (in its file) has been applied, the bad
  row and everything after it have not, and :class:`~.binance_files.ReplayFileError` names
  the file, the line and the reason; one ERROR line says so and :meth:`ReplayFeed.status`
  turns ``failed``.
* Progress: INFO when each file is opened and when it is done; while the replay runs by
  itself, every ``progress_every_s`` seconds the share of CSV bytes read, trades applied,
  the replay clock (UTC) and an estimate of the time left; the same figures in
  :meth:`ReplayFeed.status` (``/healthz``).
* When the files are exhausted the feed returns and the book keeps the last prices; the
  clock then runs on from the last trade's time (at N × for an N× replay, real time
  otherwise) so rate-limit windows and bans keep expiring.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from ..book import PriceBook
from ..clock import ReplayClock
from ..models import Tick
from ..symbols import SymbolUniverse
from .binance_files import ReplayFileError
from .errors import FeedConfigError
from .replay_source import ReplaySource, utc_text
from .state import FeedState
from .trade_rows import BLOCK_BYTES, parse_rows

__all__ = ["ReplayFeed", "ReplayOptions", "ReplaySource", "ReplaySpeed", "parse_rows"]

log = logging.getLogger("tickerd.feeds.replay")

DEFAULT_BATCH = 4096  # trades applied per book update (and per event-loop turn at "max")
MAX_STEP = 1_000_000  # trades one step() may apply
DEFAULT_PROGRESS_S = 5.0  # seconds between progress lines of a replay running by itself


@dataclass(frozen=True, slots=True)
class ReplaySpeed:
    """How fast a replay runs: ``mode`` "paced" (``factor`` × real time), "max" or "step"."""

    mode: Literal["paced", "max", "step"]
    factor: float = 1.0

    @classmethod
    def parse(cls, text: str) -> ReplaySpeed:
        """``"1"`` (real time), ``"N"`` (N times faster, any float > 0), ``"max"``, ``"step"``."""
        word = text.strip().lower()
        if word in ("max", "step"):
            return cls(word)  # type: ignore[arg-type]
        try:
            factor = float(word)
        except ValueError:
            factor = math.nan
        if not (math.isfinite(factor) and factor > 0):
            raise FeedConfigError(
                f"--replay-speed must be a number > 0, 'max' or 'step', not {text!r}"
            )
        return cls("paced", factor)

    def __str__(self) -> str:
        return f"{self.factor:g}" if self.mode == "paced" else self.mode


@dataclass(frozen=True, slots=True)
class ReplayOptions:
    """What a replay is told: the files or folders, the speed and how often to report."""

    paths: tuple[str, ...]
    speed: ReplaySpeed = ReplaySpeed("paced")
    progress_every_s: float = DEFAULT_PROGRESS_S
    block_bytes: int = BLOCK_BYTES
    batch: int = DEFAULT_BATCH
    trades: bool = True  # quantities, ids and maker flags for the market streams

    @classmethod
    def parse(
        cls, paths: str | None, speed: str = "1", progress_every_s: float = DEFAULT_PROGRESS_S
    ) -> ReplayOptions:
        """Options from the flags' texts: comma-separated paths and a speed word."""
        names = tuple(p.strip() for p in (paths or "").split(",") if p.strip())
        if not names:
            raise FeedConfigError(
                "the replay feed needs --replay-path: Binance trades or aggTrades files "
                "(.csv or .zip) or folders of them, comma-separated"
            )
        if not (math.isfinite(progress_every_s) and progress_every_s > 0):
            raise FeedConfigError(
                f"--replay-progress-every must be a number of seconds > 0, not {progress_every_s}"
            )
        return cls(names, ReplaySpeed.parse(speed), progress_every_s)


class ReplayFeed:
    """Applies a :class:`ReplaySource` to the book at a :class:`ReplaySpeed`.

    ``symbols`` (the files' symbols) tells :func:`~tickerd.feeds.assign_symbols` what this
    feed writes; :attr:`clock` is the clock the server follows during the replay.
    """

    name = "replay"

    def __init__(
        self,
        source: ReplaySource,
        speed: ReplaySpeed,
        *,
        clock: ReplayClock | None = None,
        batch: int = DEFAULT_BATCH,
        progress_every_s: float = DEFAULT_PROGRESS_S,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if batch < 1:
            raise ValueError("batch must be at least 1")
        self.source = source
        self.speed = speed
        self.clock = clock or ReplayClock(source.first_time_ms)
        self.batch = batch
        self.symbols: frozenset[str] = source.symbols
        self.applied = 0
        self.last: Tick | None = None
        self.error: ReplayFileError | None = None
        self.finished = False
        self.progress_every_s = progress_every_s
        self.monotonic = monotonic
        self._started_at: float | None = None  # monotonic time the replay began to run
        self._next_report = 0.0
        self._book: PriceBook | None = None
        self._ahead: deque[Tick] = deque()  # read, not yet applied (paced mode)
        self._done = asyncio.Event()

    @classmethod
    def from_options(cls, options: ReplayOptions, universe: SymbolUniverse) -> ReplayFeed:
        """The feed ``--feed replay --replay-path P --replay-speed S`` asks for."""
        source = ReplaySource(
            options.paths, universe, block_bytes=options.block_bytes, trades=options.trades
        )
        feed = cls(
            source,
            options.speed,
            batch=options.batch,
            progress_every_s=options.progress_every_s,
        )
        log.info(
            "replay of %d file(s) (%d bytes of CSV), %d symbol(s) from %s at speed %s",
            len(source.files), source.total_bytes, len(feed.symbols),
            utc_text(source.first_time_ms), options.speed,
        )  # fmt: skip
        return feed

    # -- the Feed protocol ---------------------------------------------------------------

    def prime(self, book: PriceBook) -> None:
        """Nothing to prime: prices appear as their trades come. Remembers the book for
        :meth:`step`."""
        self._book = book

    def claim(self, symbols: frozenset[str]) -> None:
        """Never needed: a replay declares its files' symbols."""
        self.symbols = symbols

    async def start(self, book: PriceBook) -> None:
        """Nothing to prepare before the port opens."""
        self._book = book

    async def stop(self) -> None:
        """Nothing to release (files are closed as they are read)."""

    @property
    def stepped(self) -> bool:
        """Whether trades advance only by :meth:`step` (``--replay-speed step``)."""
        return self.speed.mode == "step"

    async def run(self, book: PriceBook) -> None:
        """Replay at the feed's speed; return when the files are exhausted or a bad row
        stopped the replay (then one ERROR line has said why, :attr:`error` holds it and
        :meth:`status` says ``failed``)."""
        self._book = book
        if self.finished:
            return
        if self.speed.mode == "step":
            await self._done.wait()
        elif self.speed.mode == "max":
            await self._run_max(book)
        else:
            await self._run_paced(book, self.speed.factor)

    def state(self) -> FeedState:
        """starting (nothing applied yet), up, finished, or failed (stopped by a bad row).

        A step replay is up from the start: it waits for its caller, not for data.
        """
        if self.error is not None:
            return FeedState.FAILED
        if self.finished:
            return FeedState.FINISHED
        return FeedState.UP if self.applied or self.stepped else FeedState.STARTING

    def progress(self) -> dict[str, Any]:
        """How far the replay is: bytes, trades, replay clock (UTC) and the time left."""
        source = self.source
        share = source.share_done
        clock_ms = self.clock.now_ms()
        return {
            "files": len(source.files),
            "files_done": source.files_done,
            "reading": sorted(source.open_files.values())[:20],
            "bytes_read": source.read.bytes,
            "bytes_total": source.total_bytes,
            "done": round(share, 4),
            "applied": self.applied,
            "clock": clock_ms,
            "clock_utc": utc_text(clock_ms),
            "eta_s": self._eta_s(share),
        }

    def status(self) -> dict[str, Any]:
        """The replay's state and progress, for ``/healthz``."""
        return {
            "state": self.state(),
            "speed": str(self.speed),
            "last_trade_time": self.last.time_ms if self.last else None,
            "finished": self.finished,
            "error": str(self.error) if self.error else None,
            **self.progress(),
        }

    def _eta_s(self, share: float) -> float | None:
        """Seconds left at the pace so far (by bytes read); None when it cannot be told."""
        if self.finished:
            return 0.0
        if self._started_at is None or share <= 0 or self.speed.mode == "step":
            return None
        elapsed = self.monotonic() - self._started_at
        return round(elapsed * (1.0 - share) / share, 1)

    def _report(self, force: bool = False) -> None:
        """Log progress when ``progress_every_s`` has passed since the last line."""
        now = self.monotonic()
        if not force and now < self._next_report:
            return
        self._next_report = now + self.progress_every_s
        p = self.progress()
        eta = "unknown" if p["eta_s"] is None else f"{p['eta_s']:.0f} s"
        log.info(
            "replay: %.1f%% of %d bytes read, %d trades applied, replay clock %s, "
            "about %s left at speed %s",
            100 * p["done"], p["bytes_total"], p["applied"], p["clock_utc"], eta, self.speed,
        )  # fmt: skip

    # -- stepping ------------------------------------------------------------------------

    def step(self, n: int = 1) -> list[Tick]:
        """Apply the next ``n`` trades now and return them (fewer at the end of the files).

        Meant for ``--replay-speed step`` (tests, a control plane); synchronous and bounded
        by :data:`MAX_STEP`, so it is safe to call from the event loop. Raises
        :class:`~.binance_files.ReplayFileError` after applying the rows before a bad one.
        """
        if not 1 <= n <= MAX_STEP:
            raise ValueError(f"step takes 1 to {MAX_STEP} trades")
        if self._book is None:
            raise RuntimeError("the feed has no book yet: prime() or run() it first")
        if self.finished:
            return []
        ticks = self._take(n)
        if ticks:
            self._apply(self._book, ticks)
            self.clock.hold(ticks[-1].time_ms)
        if self.error is not None or self.source.exhausted:
            self._finish()
        if self.error is not None:
            raise self.error
        return ticks

    async def wait_finished(self) -> None:
        """Wait until the files are exhausted (or a bad row stopped the replay)."""
        await self._done.wait()

    # -- internals -----------------------------------------------------------------------

    def _take(self, n: int) -> list[Tick]:
        ahead = self._ahead
        out = [ahead.popleft() for _ in range(min(n, len(ahead)))]
        if len(out) == n:
            return out
        more, error = self.source.take(n - len(out))
        if error is not None:
            self.error = error
        out.extend(more)
        return out

    def _apply(self, book: PriceBook, ticks: Sequence[Tick]) -> None:
        book.apply(ticks)
        self.applied += len(ticks)
        self.last = ticks[-1]

    def _finish(self) -> None:
        if self.finished:
            return
        self.finished = True
        if self.speed.mode == "paced":
            self.clock.cap(None)
        else:
            self.clock.run(1.0)
        self._done.set()
        if self.error is not None:
            log.error("replay stopped by a bad row after %d trades: %s", self.applied, self.error)
        else:
            last = self.last.time_ms if self.last else None
            log.info("replay finished: %d trades, the last at %s", self.applied, last)

    def _begin(self) -> None:
        self._started_at = self.monotonic()
        self._next_report = self._started_at + self.progress_every_s

    async def _run_max(self, book: PriceBook) -> None:
        self._begin()
        while True:
            ticks = self._take(self.batch)
            if ticks:
                self._apply(book, ticks)
                self.clock.hold(ticks[-1].time_ms)
            if self.error is not None or self.source.exhausted and not self._ahead:
                break
            self._report()
            await asyncio.sleep(0)
        self._finish()

    async def _run_paced(self, book: PriceBook, speed: float) -> None:
        clock = self.clock
        rate = speed * 1000.0  # replay ms per second
        self._begin()
        nxt = self._peek()
        clock.run(speed, cap_ms=nxt.time_ms if nxt else None)
        while nxt is not None:
            now = clock.schedule_ms()
            due: list[Tick] = []
            while nxt is not None and nxt.time_ms <= now and len(due) < self.batch:
                due.append(self._ahead.popleft())
                nxt = self._peek()
            if due:
                self._apply(book, due)
            if nxt is None:
                break
            clock.cap(nxt.time_ms)
            self._report()
            delay = 0.0 if len(due) >= self.batch else (nxt.time_ms - now) / rate
            # Re-checked at least every progress period, so the progress lines keep coming.
            await asyncio.sleep(min(delay, 60.0, self.progress_every_s))
        self._finish()

    def _peek(self) -> Tick | None:
        """The next trade without applying it (None at the end or at a bad row)."""
        if not self._ahead:
            if self.error is not None or self.source.exhausted:
                return None
            more, error = self.source.take(self.batch)
            if error is not None:
                self.error = error
            self._ahead.extend(more)
            if not more:
                return None
        return self._ahead[0]

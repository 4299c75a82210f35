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
  merged in time order with :func:`heapq.merge` (equal times: symbols in name order).
* The feed owns a :class:`~tickerd.clock.ReplayClock`, which the server follows: it starts
  at the first trade's time. Speeds:

  - ``step``: nothing moves until :meth:`ReplayFeed.step` applies the next ``n`` trades; the
    clock stands at the last applied trade's time;
  - ``max``: trades are applied in batches of ``batch`` as fast as possible, yielding to the
    event loop between batches; the clock stands at the last applied trade's time;
  - ``N`` (``1`` = real time): trade ``k`` is applied when ``(time_k - first) / N`` seconds
    have passed; the clock runs at N × real time, never past the next unapplied trade.

* A bad row stops the replay: every row before it (in its file) has been applied, the bad
  row and everything after it have not, and :class:`~.binance_files.ReplayFileError` names
  the file, the line and the reason.
* When the files are exhausted the feed returns and the book keeps the last prices; the
  clock then runs on from the last trade's time (at N × for an N× replay, real time
  otherwise) so rate-limit windows and bans keep expiring.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import math
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from itertools import chain, islice, pairwise
from operator import itemgetter
from pathlib import Path
from typing import Any, Literal

from ..book import PriceBook
from ..clock import ReplayClock
from ..config import Settings
from ..models import Tick
from ..symbols import SymbolUniverse
from . import FeedConfigError
from .binance_files import (
    BLOCK_BYTES,
    FileSpec,
    ReplayFileError,
    discover,
    ordered,
    read_blocks,
)
from .state import FeedState

log = logging.getLogger("tickerd.feeds.replay")

DEFAULT_BATCH = 4096  # trades applied per book update (and per event-loop turn at "max")
MAX_STEP = 1_000_000  # trades one step() may apply
_TIME = itemgetter(2)  # Tick.time_ms


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


class ReplaySource:
    """The trades of a set of files, merged in time order, read on demand.

    Opening reads each symbol's first rows (so a file that cannot be used fails here, before
    the server opens its port) and fixes :attr:`first_time_ms`. ``block_bytes`` is both the
    read size and the reorder window (see :func:`.binance_files.ordered`); memory is about
    three blocks per symbol.
    """

    def __init__(
        self,
        paths: Iterable[str | Path],
        universe: SymbolUniverse,
        *,
        block_bytes: int = BLOCK_BYTES,
    ) -> None:
        self.files = discover(paths)
        groups: dict[str, list[FileSpec]] = {}
        for spec in self.files:
            groups.setdefault(spec.symbol, []).append(spec)
        streams: list[Iterator[Tick]] = []
        for symbol in sorted(groups):
            info = universe.get(symbol)
            if info is None:
                raise ReplayFileError(
                    groups[symbol][0].path, f"symbol {symbol} is not in the symbol universe"
                )
            specs = sorted(groups[symbol], key=lambda s: (s.first_day, s.last_day))
            for a, b in pairwise(specs):
                if a.overlaps(b):
                    raise ReplayFileError(
                        b.path, f"covers days that {a.path.name} covers too: replay one of them"
                    )
            blocks = chain.from_iterable(
                read_blocks(s, info, block_bytes=block_bytes) for s in specs
            )
            window = f"the reorder window ({block_bytes} bytes of rows)"
            streams.append(chain.from_iterable(ordered(blocks, window=window)))
        self.symbols = frozenset(groups)
        merged = streams[0] if len(streams) == 1 else heapq.merge(*streams, key=_TIME)
        first = next(merged, None)
        if first is None:
            raise ReplayFileError(self.files[0].path, "no trades in the replay files")
        self.first_time_ms: int = first.time_ms
        self._it: Iterator[Tick] = chain((first,), merged)
        self.exhausted = False

    def take(self, n: int) -> tuple[list[Tick], ReplayFileError | None]:
        """The next ``n`` trades (fewer at the end), and the error that stopped them, if any."""
        out: list[Tick] = []
        try:
            out.extend(islice(self._it, n))
        except ReplayFileError as exc:
            self.exhausted = True
            return out, exc
        if len(out) < n:
            self.exhausted = True
        return out, None


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
        self._book: PriceBook | None = None
        self._ahead: deque[Tick] = deque()  # read, not yet applied (paced mode)
        self._done = asyncio.Event()

    @classmethod
    def from_settings(cls, settings: Settings, universe: SymbolUniverse) -> ReplayFeed:
        """The feed ``--feed replay --replay-path P --replay-speed S`` asks for."""
        raw = settings.replay_path or ""
        paths = [p.strip() for p in raw.split(",") if p.strip()]
        if not paths:
            raise FeedConfigError(
                "the replay feed needs --replay-path: Binance trades or aggTrades files "
                "(.csv or .zip) or folders of them, comma-separated"
            )
        speed = ReplaySpeed.parse(settings.replay_speed)
        feed = cls(ReplaySource(paths, universe), speed)
        log.info(
            "replay of %d file(s), %d symbol(s) from %d at speed %s",
            len(feed.source.files), len(feed.symbols), feed.source.first_time_ms, speed,
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
        """Replay at the feed's speed; return when the files are exhausted."""
        self._book = book
        if self.finished:
            return
        if self.speed.mode == "step":
            await self._done.wait()
        elif self.speed.mode == "max":
            await self._run_max(book)
        else:
            await self._run_paced(book, self.speed.factor)
        if self.error is not None:
            raise self.error

    def status(self) -> dict[str, Any]:
        """The replay's progress, for ``/healthz``."""
        state = FeedState.UP if not self.finished else FeedState.FINISHED
        if self.error is not None:
            state = FeedState.FAILED
        return {
            "state": state,
            "speed": str(self.speed),
            "applied": self.applied,
            "last_trade_time": self.last.time_ms if self.last else None,
            "clock": self.clock.now_ms(),
            "finished": self.finished,
            "error": str(self.error) if self.error else None,
        }

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
            log.error("replay stopped after %d trades: %s", self.applied, self.error)
        else:
            last = self.last.time_ms if self.last else None
            log.info("replay finished: %d trades, the last at %s", self.applied, last)

    async def _run_max(self, book: PriceBook) -> None:
        while True:
            ticks = self._take(self.batch)
            if ticks:
                self._apply(book, ticks)
                self.clock.hold(ticks[-1].time_ms)
            if self.error is not None or self.source.exhausted and not self._ahead:
                break
            await asyncio.sleep(0)
        self._finish()

    async def _run_paced(self, book: PriceBook, speed: float) -> None:
        clock = self.clock
        rate = speed * 1000.0  # replay ms per second
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
            delay = 0.0 if len(due) >= self.batch else (nxt.time_ms - now) / rate
            await asyncio.sleep(min(delay, 60.0))  # re-checked at least every minute
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

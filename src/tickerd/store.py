"""Persistence of last prices: the latest tick per symbol in SQLite, so a restart serves them.

Theory of operation
-------------------
* The store listens to the book (:meth:`PriceBook.subscribe`). The listener only records the
  changed ticks in a dict keyed by symbol — one C-level ``dict.update`` per batch, no I/O —
  so the dict holds at most one tick per symbol of the universe, however fast prices move.
* Every ``flush_interval`` seconds a flush swaps that dict for an empty one and writes its
  ticks in one transaction on the store's own thread (a single-worker executor, so writes
  never overlap and the event loop never waits on the disk). A write that fails is logged
  and its ticks go back into the dict (unless newer ones arrived) for the next flush.
* SQLite runs in WAL mode with ``synchronous=NORMAL``: a committed flush survives the
  process being killed (SIGKILL loses at most the ticks since the last flush, i.e. up to
  one interval); a power cut may lose the last transactions but never corrupts the file.
* Prices are stored as the exact decimal TEXT the book serves (never REAL), times as
  INTEGER milliseconds.
* Start: :meth:`restore` puts the stored ticks back into the book before the server opens
  its port; rows for symbols the universe no longer has, or whose price no longer fits the
  symbol's tick grid, are skipped with a log line. Stop: :meth:`close` flushes one last
  time, so a clean shutdown (SIGTERM) loses nothing.

All SQLite calls run on the store's thread; the connection never changes threads.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from operator import itemgetter
from pathlib import Path
from time import perf_counter_ns
from typing import Any, TypeVar

from .book import PriceBook, TickRejected
from .counters import StoreCounters
from .errors import TickerdError
from .models import Tick

log = logging.getLogger("tickerd.store")

SCHEMA_VERSION = 1
MAX_ROWS = 100_000  # rows read back at most (a universe has hundreds of symbols)
MAX_SKIP_LOGS = 20  # skipped rows logged one by one at start; the rest are counted
_SYMBOL = itemgetter(0)
_T = TypeVar("_T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS last_tick (
    symbol  TEXT    PRIMARY KEY NOT NULL,
    price   TEXT    NOT NULL,
    time_ms INTEGER NOT NULL
) WITHOUT ROWID
"""
_UPSERT = "INSERT OR REPLACE INTO last_tick (symbol, price, time_ms) VALUES (?, ?, ?)"
_SELECT = "SELECT symbol, price, time_ms FROM last_tick ORDER BY symbol LIMIT ?"


class StoreError(TickerdError):
    """A store file that cannot be opened or read, with the reason."""


class PriceStore:
    """The last tick per symbol in a SQLite file (see the module docstring)."""

    def __init__(self, path: str | Path, *, flush_interval: float = 1.0) -> None:
        if not flush_interval > 0:
            raise StoreError(f"the store flush interval must be > 0 s, not {flush_interval}")
        self.path = Path(path)
        self.flush_interval = flush_interval
        self.flushes = 0
        self.written = 0
        self.counters = StoreCounters()  # ops: flush durations and failed writes
        self._dirty: dict[str, Tick] = {}
        self._conn: sqlite3.Connection | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._unsubscribe: Callable[[], None] | None = None
        self._task: asyncio.Task[None] | None = None

    # -- lifecycle -----------------------------------------------------------------------

    async def open(self) -> None:
        """Open (or create) the file, in WAL mode."""
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tickerd-store")
        try:
            await self._call(self._open)
        except BaseException:
            self._executor.shutdown(wait=False)
            self._executor = None
            raise

    async def restore(self, book: PriceBook) -> int:
        """Put the stored ticks into ``book`` (validated by :meth:`PriceBook.make_tick`).

        Returns how many were restored; rows the universe cannot take are skipped and
        logged. Call before :meth:`attach`, so restored ticks are not written back.
        """
        rows = await self._call(self._load)
        ticks: list[Tick] = []
        skipped = 0
        for symbol, price, time_ms in rows:
            try:
                if not isinstance(price, str):
                    raise TickRejected(f"price {price!r} is not stored as text")
                ticks.append(book.make_tick(symbol, price, time_ms))
            except TickRejected as exc:
                skipped += 1
                if skipped <= MAX_SKIP_LOGS:
                    log.warning("store %s: skipping %r: %s", self.path, symbol, exc)
        if skipped > MAX_SKIP_LOGS:
            log.warning("store %s: %d more rows skipped", self.path, skipped - MAX_SKIP_LOGS)
        if len(rows) >= MAX_ROWS:
            log.warning("store %s: only the first %d rows were read", self.path, MAX_ROWS)
        book.apply(ticks)
        log.info("restored %d last prices from %s", len(ticks), self.path)
        return len(ticks)

    def attach(self, book: PriceBook) -> None:
        """Record every tick the book applies from now on; start flushing every interval."""
        if self._unsubscribe is None:
            self._unsubscribe = book.subscribe(self._record)
        if self._task is None:
            self._task = asyncio.create_task(self._flush_loop(), name="store-flush")

    async def close(self) -> None:
        """Stop recording, flush what is left, close the file."""
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        if self._executor is None:
            return
        try:
            await self.flush()
        finally:
            try:
                await self._call(self._close)
            finally:
                self._executor.shutdown(wait=True)
                self._executor = None

    # -- writing -------------------------------------------------------------------------

    def _record(self, ticks: Sequence[Tick]) -> None:
        # The book's listener: on the hot path, so one C-level update and nothing else.
        self._dirty.update(zip(map(_SYMBOL, ticks), ticks))

    @property
    def pending(self) -> int:
        """Symbols changed since the last flush."""
        return len(self._dirty)

    async def flush(self) -> int:
        """Write every changed tick in one transaction; returns how many were written."""
        if not self._dirty:
            return 0
        batch, self._dirty = self._dirty, {}
        started = perf_counter_ns()  # ops
        try:
            await self._call(self._write, list(batch.values()))
        except BaseException as exc:
            # Put the batch back under anything newer, and try again next time.
            batch.update(self._dirty)
            self._dirty = batch
            if isinstance(exc, sqlite3.Error | OSError):
                self.counters.failures += 1  # ops
                log.error("store %s: write failed, retrying: %s", self.path, exc)
                return 0
            raise
        self.counters.duration.observe(perf_counter_ns() - started)  # ops
        self.flushes += 1
        self.written += len(batch)
        return len(batch)

    async def _flush_loop(self) -> None:
        # On a fixed schedule (no drift by the time writes take): at most one interval
        # (plus one write) passes between a change and the flush that stores it.
        loop = asyncio.get_running_loop()
        due = loop.time() + self.flush_interval
        while True:
            await asyncio.sleep(max(0.0, due - loop.time()))
            due = max(due + self.flush_interval, loop.time())
            await self.flush()

    # -- the store's thread --------------------------------------------------------------

    async def _call(self, fn: Callable[..., _T], *args: Any) -> _T:
        if self._executor is None:
            raise StoreError("the store is not open")
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    def _open(self) -> None:
        try:
            conn = sqlite3.connect(self.path, isolation_level=None)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open store {self.path}: {exc}") from exc
        try:
            mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise StoreError(f"store {self.path}: cannot switch to WAL mode ({mode})")
            conn.execute("PRAGMA synchronous=NORMAL")
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise StoreError(
                    f"store {self.path} has schema version {version}; this tickerd knows "
                    f"{SCHEMA_VERSION}"
                )
            conn.execute(_SCHEMA)
            conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        except sqlite3.Error as exc:
            conn.close()
            raise StoreError(f"store {self.path} is not a usable SQLite file: {exc}") from exc
        except BaseException:
            conn.close()
            raise
        self._conn = conn

    def _load(self) -> list[tuple[Any, Any, Any]]:
        assert self._conn is not None
        try:
            return self._conn.execute(_SELECT, (MAX_ROWS,)).fetchall()
        except sqlite3.Error as exc:
            raise StoreError(f"cannot read store {self.path}: {exc}") from exc

    def _write(self, ticks: list[Tick]) -> None:
        conn = self._conn
        assert conn is not None
        conn.execute("BEGIN")
        try:
            conn.executemany(_UPSERT, ticks)
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def _close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

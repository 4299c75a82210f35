"""Persistence of last prices: the latest tick per symbol in SQLite, so a restart serves them.

Theory of operation
-------------------
* The store listens to the book (:meth:`PriceBook.subscribe`). The listener only records the
  changed ticks in a dict keyed by symbol — one C-level ``dict.update`` per batch, no I/O —
  so the dict holds at most one tick per symbol of the universe, however fast prices move.
* Every ``flush_interval`` seconds a flush swaps that dict for an empty one and writes its
  ticks in one transaction on the store's own thread (a single-worker executor, so writes
  never overlap and the event loop never waits on the disk). A write that fails is logged
  and its ticks go back into the dict (unless newer ones arrived) for the next flush; a
  tick SQLite cannot hold (a time past int64) is written around and dropped with a log
  line, so one bad tick never blocks the others. The flush loop outlives any exception:
  persistence resumes as soon as the disk does.
* Every transaction ends: a failed statement *or* a failed ``COMMIT`` (disk full at the
  write-ahead log) is rolled back, so the next flush starts afresh.
* SQLite runs in WAL mode with ``synchronous=NORMAL``: a committed flush survives the
  process being killed (SIGKILL loses at most the ticks since the last flush, i.e. up to
  one interval); a power cut may lose the last transactions but never corrupts the file.
* Prices are stored as the exact decimal TEXT the book serves (never REAL), times as
  INTEGER milliseconds.
* Start: :meth:`open` refuses a file that holds tables other than tickerd's (another
  application's database) or a ``last_tick`` table of another shape. :meth:`restore` puts
  the stored ticks back into the book before the server opens its port; rows for symbols
  the universe no longer has, whose price no longer fits the symbol's tick grid or whose
  time :func:`~tickerd.ticktime.tick_time_problem` refuses (beyond int64, or ahead of the
  service clock by more than the skew) are skipped with a log line. Stop: :meth:`close` flushes one last
  time, so a clean shutdown (SIGTERM) loses nothing.

With :meth:`PriceStore.keep_statistics`, the same transactions also keep the 24-hour
windows and candles of the market streams (:mod:`tickerd.stats_store`), and
:meth:`PriceStore.restore_statistics` puts them back at start.

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
from .stats_store import SCHEMA as STATS_SCHEMA
from .stats_store import TABLES as STATS_TABLES
from .stats_store import Loaded, Snapshot, StatsTables
from .streams.hub import StreamHub

log = logging.getLogger("tickerd.store")

SCHEMA_VERSION = 2  # 2: the statistics tables
TABLE = "last_tick"
OURS = frozenset({TABLE, *STATS_TABLES})
COLUMNS = (("symbol", "TEXT"), ("price", "TEXT"), ("time_ms", "INTEGER"))
MAX_ROWS = 100_000  # rows read back at most (a universe has hundreds of symbols)
MAX_STAT_ROWS = 10_000_000  # statistics rows read back at most, per table
MAX_SKIP_LOGS = 20  # skipped rows logged one by one at start; the rest are counted
FAILURE_LOG_EVERY = 60  # while writes keep failing, one log line per this many flushes
# Errors of one row's values (not of the file): the row is dropped, the others written.
_ROW_ERRORS = (OverflowError, ValueError, TypeError, sqlite3.InterfaceError)
_SYMBOL = itemgetter(0)
_ROW = itemgetter(0, 1, 2)  # (symbol, price, time_ms) of a Tick, or of a Trade's first fields
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
_OBJECTS = "SELECT type, name FROM sqlite_master WHERE name NOT LIKE 'sqlite\\_%' ESCAPE '\\'"


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
        self.dropped = 0
        self.failures = 0  # flushes in a row that failed
        self._dirty: dict[str, Tick] = {}
        self._conn: sqlite3.Connection | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._unsubscribe: Callable[[], None] | None = None
        self._task: asyncio.Task[None] | None = None
        self.stats: StatsTables | None = None

    def keep_statistics(self, hub: StreamHub) -> None:
        """Keep ``hub``'s windows and candles too (call before :meth:`open`)."""
        self.stats = StatsTables(hub)

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

    async def restore(self, book: PriceBook, now_ms: int | None = None) -> int:
        """Put the stored ticks into ``book`` (validated by :meth:`PriceBook.make_tick`
        against the service clock's ``now_ms``).

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
                ticks.append(book.make_tick(symbol, price, time_ms, now_ms))
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

    async def restore_statistics(self, now_ms: int) -> int:
        """Put the stored windows and candles back (see :mod:`tickerd.stats_store`); returns
        how many symbols' statistics came back (then the statistics run from now on)."""
        if self.stats is None:
            return 0
        loaded = await self._call(self._load_stats)
        restored = self.stats.restore(loaded, now_ms)
        if restored:
            log.info("restored the statistics of %d symbols from %s", restored, self.path)
        return restored

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
        self._dirty.update(zip(map(_SYMBOL, ticks), ticks, strict=False))

    @property
    def pending(self) -> int:
        """Symbols changed since the last flush."""
        return len(self._dirty)

    async def flush(self) -> int:
        """Write every changed tick in one transaction; returns how many were written.

        Never raises but for cancellation: a failed write is logged and its ticks kept for
        the next flush.
        """
        if not self._dirty:
            return 0
        batch, self._dirty = self._dirty, {}
        snap = self.stats.snapshot(batch) if self.stats is not None else None
        started = perf_counter_ns()  # ops
        try:
            ticks = list(batch.values())
            if snap is None:
                dropped = await self._call(self._write, ticks)
            else:
                dropped = await self._call(self._write, ticks, snap)
        except BaseException as exc:
            # Put the batch back under anything newer, and try again next time.
            batch.update(self._dirty)
            self._dirty = batch
            if not isinstance(exc, Exception):
                raise
            self.counters.failures += 1  # ops
            self._failed(exc)
            return 0
        self.counters.duration.observe(perf_counter_ns() - started)  # ops
        if snap is not None and self.stats is not None:
            self.stats.commit(snap)
        if self.failures:
            log.warning("store %s: writes resumed after %d failed", self.path, self.failures)
            self.failures = 0
        for tick, reason in dropped[:MAX_SKIP_LOGS]:
            log.error("store %s: cannot store %r, dropped: %s", self.path, tick, reason)
        self.flushes += 1
        self.dropped += len(dropped)
        self.written += len(batch) - len(dropped)
        return len(batch) - len(dropped)

    def _failed(self, exc: Exception) -> None:
        self.failures += 1
        if (self.failures - 1) % FAILURE_LOG_EVERY:
            return
        if isinstance(exc, sqlite3.Error | OSError | StoreError):
            log.error("store %s: write failed, retrying: %s", self.path, exc)
        else:
            log.error("store %s: write failed, retrying", self.path, exc_info=exc)

    async def _flush_loop(self) -> None:
        # On a fixed schedule (no drift by the time writes take): at most one interval
        # (plus one write) passes between a change and the flush that stores it.
        loop = asyncio.get_running_loop()
        due = loop.time() + self.flush_interval
        while True:
            await asyncio.sleep(max(0.0, due - loop.time()))
            due = max(due + self.flush_interval, loop.time())
            try:
                await self.flush()
            except Exception:  # flush() handles its own; this guards the loop itself
                log.exception("store %s: flush failed; the next one follows", self.path)

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
            self._check_tables(conn)  # before anything is written to the file
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
            for statement in STATS_SCHEMA:
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        except sqlite3.Error as exc:
            conn.close()
            raise StoreError(f"store {self.path} is not a usable SQLite file: {exc}") from exc
        except BaseException:
            conn.close()
            raise
        self._conn = conn

    def _check_tables(self, conn: sqlite3.Connection) -> None:
        """Refuse a file that holds anything but tickerd's table, or that table reshaped."""
        foreign = sorted(
            f"{kind} {name}" for kind, name in conn.execute(_OBJECTS) if name not in OURS
        )
        if foreign:
            shown = ", ".join(foreign[:5]) + (" ..." if len(foreign) > 5 else "")
            raise StoreError(
                f"store {self.path} is another application's database (it holds {shown}); "
                "give --store a file of its own"
            )
        columns = tuple(
            (str(name), str(kind).upper())
            for _, name, kind, *_ in conn.execute(f"PRAGMA table_info({TABLE})")
        )
        if columns and columns != COLUMNS:
            got = ", ".join(f"{n} {k}" for n, k in columns)
            raise StoreError(
                f"store {self.path}: table {TABLE} has columns ({got}), not tickerd's; "
                "give --store a file of its own"
            )

    def _load(self) -> list[tuple[Any, Any, Any]]:
        assert self._conn is not None
        try:
            return self._conn.execute(_SELECT, (MAX_ROWS,)).fetchall()
        except sqlite3.Error as exc:
            raise StoreError(f"cannot read store {self.path}: {exc}") from exc

    def _load_stats(self) -> Loaded:
        assert self._conn is not None and self.stats is not None
        try:
            return self.stats.load(self._conn, MAX_STAT_ROWS)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot read store {self.path}: {exc}") from exc

    def _write(self, ticks: list[Tick], snap: Snapshot | None = None) -> list[tuple[Tick, str]]:
        """One transaction; returns the ticks SQLite cannot hold, with the reason."""
        conn = self._conn
        assert conn is not None
        dropped: list[tuple[Tick, str]] = []
        conn.execute("BEGIN")
        try:
            try:
                conn.executemany(_UPSERT, map(_ROW, ticks))
            except _ROW_ERRORS:
                # A tick that cannot be stored: write row by row around it (the rows before
                # it are rewritten, which INSERT OR REPLACE makes harmless).
                for tick in ticks:
                    try:
                        conn.execute(_UPSERT, _ROW(tick))
                    except _ROW_ERRORS as exc:
                        dropped.append((tick, str(exc)))
            if snap is not None:
                StatsTables.write(conn, snap)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        return dropped

    def _close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

"""The store's statistics tables: what a restart needs to serve the same 24-hour windows and
candles (``GET /fapi/v1/ticker/24hr``, ``GET /fapi/v1/klines``, the ``@ticker``,
``@miniTicker`` and ``@kline_<interval>`` streams) as before it.

Theory of operation
-------------------
Three tables beside ``last_tick``, written in the same transaction as it, only for the
symbols whose price changed since the last flush, and only what changed:

* ``stat_minute``: the one-minute buckets of each symbol's 24-hour window, keyed by
  (symbol, minute). A flush writes the buckets from the last one it wrote on (usually one
  row), and drops a symbol's rows older than its window's first minute.
* ``stat_symbol``: per symbol, the last trade's quantity and the candles being built (the
  open minute and the rolled-up part of each longer interval), as JSON.
* ``kline``: the closed candles as the REST rows served, keyed by (symbol, interval, open
  time); a flush adds those closed since the last one and drops what the in-memory
  history has let go (``--kline-history``).

:meth:`StatsTables.snapshot` runs on the event loop (the statistics change there) and
:meth:`StatsTables.write` on the store's thread; the marks of what was written move only
once the transaction committed (:meth:`StatsTables.commit`), so a failed write is written
again by the next flush. On start, :meth:`StatsTables.restore` puts the rows back; a row
whose time :func:`~tickerd.ticktime.tick_time_problem` refuses against the service clock
(ahead of it by more than the skew) is skipped, as are symbols the universe no longer has
and rows that do not parse, each with a log line.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson

from .streams.hub import StreamHub
from .streams.names import KLINE_INTERVALS
from .streams.window import MINUTE_MS, SymbolWindow
from .ticktime import tick_time_problem

log = logging.getLogger("tickerd.store")

TABLES = ("stat_minute", "stat_symbol", "kline")
SCHEMA = (
    "CREATE TABLE IF NOT EXISTS stat_minute (symbol TEXT NOT NULL, minute INTEGER NOT NULL,"
    " state TEXT NOT NULL, PRIMARY KEY (symbol, minute)) WITHOUT ROWID",
    "CREATE TABLE IF NOT EXISTS stat_symbol (symbol TEXT PRIMARY KEY NOT NULL,"
    " last_qty TEXT NOT NULL, open TEXT NOT NULL) WITHOUT ROWID",
    "CREATE TABLE IF NOT EXISTS kline (symbol TEXT NOT NULL, interval TEXT NOT NULL,"
    " open_ms INTEGER NOT NULL, row TEXT NOT NULL, PRIMARY KEY (symbol, interval, open_ms))"
    " WITHOUT ROWID",
)
MAX_LOGS = 20  # skipped rows logged one by one at start; the rest are counted
_ERRORS = (ValueError, TypeError, ArithmeticError, KeyError, orjson.JSONDecodeError)


@dataclass
class Snapshot:
    """What one flush writes, and the marks it moves once written."""

    minutes: list[tuple[str, int, str]] = field(default_factory=list)
    first_minutes: list[tuple[str, int]] = field(default_factory=list)
    symbols: list[tuple[str, str, str]] = field(default_factory=list)
    rows: list[tuple[str, str, int, str]] = field(default_factory=list)
    trims: list[tuple[str, str, int]] = field(default_factory=list)
    minute_marks: dict[str, tuple[int, int]] = field(default_factory=dict)
    row_marks: dict[tuple[str, str], int] = field(default_factory=dict)


@dataclass
class Loaded:
    """The statistics rows read back at start."""

    minutes: list[tuple[Any, ...]]
    symbols: list[tuple[Any, ...]]
    rows: list[tuple[Any, ...]]


class StatsTables:
    """The statistics of a :class:`StreamHub` in the store's SQLite file."""

    def __init__(self, hub: StreamHub) -> None:
        self.hub = hub
        self._minute_marks: dict[str, tuple[int, int]] = {}  # symbol -> (first, last) written
        self._row_marks: dict[tuple[str, str], int] = {}  # (symbol, interval) -> open time

    # -- writing (snapshot on the loop, write on the store's thread) ---------------------------

    def snapshot(self, symbols: Iterable[str]) -> Snapshot | None:
        """What changed for ``symbols`` since the last committed write (None: the
        statistics have not started)."""
        hub = self.hub
        if not hub.started:
            return None
        snap = Snapshot()
        for symbol in symbols:
            window = hub.windows.get(symbol)
            if window is not None and window.buckets:
                first, last = self._minute_marks.get(symbol, (-1, -1))
                for minute, state in window.minutes_since(last):
                    snap.minutes.append((symbol, minute, orjson.dumps(state).decode()))
                now_first = window.buckets[0].minute
                if now_first > first:
                    snap.first_minutes.append((symbol, now_first))
                snap.minute_marks[symbol] = (now_first, window.buckets[-1].minute)
            series = hub.klines.series.get(symbol)
            if series is None:
                continue
            qty = window.last_qty if window is not None else "0"
            snap.symbols.append((symbol, qty, orjson.dumps(series.open_state()).decode()))
            for interval in KLINE_INTERVALS:
                history = series.history[interval]
                if not history:
                    continue
                new = series.rows_since(interval, self._row_marks.get((symbol, interval), -1))
                if not new:
                    continue
                snap.rows.extend((symbol, interval, t, row.decode()) for t, row in new)
                snap.row_marks[(symbol, interval)] = new[-1][0]
                if len(history) == history.maxlen:
                    snap.trims.append((symbol, interval, history[0][0]))
        return snap

    @staticmethod
    def write(conn: sqlite3.Connection, snap: Snapshot) -> None:
        """Write ``snap`` (inside the caller's transaction)."""
        conn.executemany("INSERT OR REPLACE INTO stat_minute VALUES (?, ?, ?)", snap.minutes)
        conn.executemany(
            "DELETE FROM stat_minute WHERE symbol = ? AND minute < ?", snap.first_minutes
        )
        conn.executemany("INSERT OR REPLACE INTO stat_symbol VALUES (?, ?, ?)", snap.symbols)
        conn.executemany("INSERT OR REPLACE INTO kline VALUES (?, ?, ?, ?)", snap.rows)
        conn.executemany(
            "DELETE FROM kline WHERE symbol = ? AND interval = ? AND open_ms < ?", snap.trims
        )

    def commit(self, snap: Snapshot) -> None:
        """``snap`` is on disk: the next snapshot starts after it."""
        self._minute_marks.update(snap.minute_marks)
        self._row_marks.update(snap.row_marks)

    # -- reading back ----------------------------------------------------------------------

    @staticmethod
    def load(conn: sqlite3.Connection, max_rows: int) -> Loaded:
        """Every statistics row (at most ``max_rows`` of each table), in order."""
        return Loaded(
            conn.execute(
                "SELECT symbol, minute, state FROM stat_minute ORDER BY symbol, minute LIMIT ?",
                (max_rows,),
            ).fetchall(),
            conn.execute(
                "SELECT symbol, last_qty, open FROM stat_symbol ORDER BY symbol LIMIT ?",
                (max_rows,),
            ).fetchall(),
            conn.execute(
                "SELECT symbol, interval, open_ms, row FROM kline"
                " ORDER BY symbol, interval, open_ms LIMIT ?",
                (max_rows,),
            ).fetchall(),
        )

    def restore(self, loaded: Loaded, now_ms: int) -> int:
        """Put the rows back into the hub and start its statistics (when there were any);
        returns how many symbols came back."""
        minutes: dict[str, list[tuple[int, Any]]] = {}
        skipped = _Skips()
        for symbol, minute, state in loaded.minutes:
            if skipped.time(symbol, minute * MINUTE_MS if type(minute) is int else minute, now_ms):
                continue
            minutes.setdefault(symbol, []).append((minute, state))
        rows: dict[str, dict[str, list[tuple[int, bytes]]]] = {}
        for symbol, interval, open_ms, row in loaded.rows:
            if interval not in KLINE_INTERVALS or not isinstance(row, str):
                skipped.bad(symbol, f"kline row {row!r} of interval {interval!r}")
            elif not skipped.time(symbol, open_ms, now_ms):
                rows.setdefault(symbol, {}).setdefault(interval, []).append((open_ms, row.encode()))
        opened = {symbol: (qty, text) for symbol, qty, text in loaded.symbols}
        restored = 0
        for symbol in sorted(set(minutes) | set(opened) | set(rows)):
            try:
                if self._restore_symbol(symbol, minutes, opened, rows, now_ms, skipped):
                    restored += 1
            except _ERRORS as exc:
                self.hub.windows.windows.pop(symbol, None)
                self.hub.klines.series.pop(symbol, None)
                skipped.bad(symbol, f"statistics that do not parse ({exc})")
        skipped.summary()
        if restored:
            self.hub.start()
            self.hub.expire(now_ms)
        return restored

    def _restore_symbol(
        self,
        symbol: str,
        minutes: dict[str, list[tuple[int, Any]]],
        opened: dict[str, tuple[Any, Any]],
        rows: dict[str, dict[str, list[tuple[int, bytes]]]],
        now_ms: int,
        skipped: _Skips,
    ) -> bool:
        info = self.hub.book.universe.get(symbol) if isinstance(symbol, str) else None
        if info is None:
            skipped.bad(symbol, "a symbol the universe does not have")
            return False
        qty, text = opened.get(symbol, ("0", None))
        if not isinstance(qty, str):
            raise TypeError(f"last quantity {qty!r}")
        own = minutes.get(symbol, [])
        if own:
            window = SymbolWindow(info.price_precision)
            window.restore([(m, orjson.loads(state)) for m, state in own], qty)
            self.hub.windows.windows[symbol] = window
            self._minute_marks[symbol] = (own[0][0], own[-1][0])
        state = orjson.loads(text) if isinstance(text, str) else {"minute": None, "rollup": {}}
        series = self.hub.klines.restore(symbol, state, rows.get(symbol, {}))
        if series is not None:
            if any(skipped.time(symbol, t, now_ms) for t in series.times()):
                series.restore_open({"minute": None, "rollup": {}})
            for interval, entries in rows.get(symbol, {}).items():
                self._row_marks[(symbol, interval)] = max(t for t, _ in entries)
        return True


class _Skips:
    """Rows skipped at restore, logged up to :data:`MAX_LOGS`."""

    def __init__(self) -> None:
        self.count = 0

    def bad(self, symbol: object, why: str) -> None:
        self.count += 1
        if self.count <= MAX_LOGS:
            log.warning("store: skipping statistics of %r: %s", symbol, why)

    def time(self, symbol: object, time_ms: object, now_ms: int) -> bool:
        """True (and logged) when ``time_ms`` cannot be restored."""
        problem = tick_time_problem(time_ms, now_ms)
        if problem is None:
            return False
        self.bad(symbol, problem)
        return True

    def summary(self) -> None:
        if self.count > MAX_LOGS:
            log.warning("store: %d more statistics rows skipped", self.count - MAX_LOGS)

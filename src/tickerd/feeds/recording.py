"""Recording applied trades as Binance's daily aggTrades files, which a replay plays back.

Layout and format are those of data.binance.vision (binance/binance-public-data README,
"FUTURES" → "AggTrades" and "CHECKSUM"):
``DIR/futures/um/daily/aggTrades/<SYMBOL>/<SYMBOL>-aggTrades-<YYYY-MM-DD>.csv`` with the header
``agg_trade_id,price,quantity,first_trade_id,last_trade_id,transact_time,is_buyer_maker``,
numbers as the shortest decimal with one fraction digit at least (``97000.1``), booleans
``true``/``false``. A finished day becomes ``<name>.zip`` holding the CSV, with
``<name>.zip.CHECKSUM`` in ``sha256sum`` format beside it, and the CSV is removed.

Theory of operation
-------------------
* Per mirrored trade, :class:`tickerd.aggtrade_rows.RowBuffer` (compiled with the request
  path) stores the row's fields in the symbol's flat list: the price and quantity as printed
  fragments from a bounded cache. At each write a symbol's rows join its open file at once
  when they fall in its day after its last id, and one ``orjson.dumps`` prints them.
  Events with a missing or odd field, rows that reach past the open file, and the push
  ingest's ticks go row by row. Rows are written at least every :data:`FLUSH_S` seconds,
  and at once when :data:`MAX_BUFFER_ROWS` rows wait in the buffer or in the files (each):
  memory is bounded whatever the rate. A write hands whole lines to the OS, so a SIGKILL
  loses at most the last second.
* The days of a symbol only move forward (the mirror applies a trade only if not older
  than the symbol's last), so a row for a later day closes the symbol's file; a file whose
  day has been over for :data:`FINISH_GRACE_MS` by the service clock is closed too. A
  closed day is zipped (temporary file, fsync, rename), its checksum written the same way,
  then the CSV removed; a CSV of a past day found at start (a crash in between) is zipped
  again from the CSV, which stays the source until its zip is complete. A row for a day
  already finished is dropped and counted (``late``): a zip is never reopened.
* Restart: before the first row of a symbol, its newest CSV is opened, a torn last line
  (no newline: the process died mid-write) is cut off, and the last aggregate id read back;
  rows with an id not above it are dropped, so nothing is written twice.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import IO, Any

import orjson

from ..aggtrade_rows import FALSE_END, FIELDS, TRUE_END, RowBuffer, csv_text
from ..clock import Clock
from ..models import Tick
from .recording_files import HEADER, last_id_in, repair, zip_day

log = logging.getLogger("tickerd.feeds.recording")

SUBDIR = ("futures", "um", "daily", "aggTrades")
FLUSH_S = 0.5  # seconds between writes of buffered rows (the bound is one second)
MAX_BUFFER_ROWS = 16_384  # mirrored rows, and rows made one by one, buffered before a write
MAX_DECIMALS_CACHED = 1 << 16  # distinct price and quantity texts remembered
FINISH_GRACE_MS = 60_000  # a day's file stays open this long past midnight, for late rows
MAX_OPEN_FILES = 4096  # open CSVs at most (one per symbol); beyond it the oldest is closed
DAY_MS = 86_400_000
_FIELD_NAMES = ("p", "q", "f", "l", "m")  # besides "a" and "T", checked by the mirror
_ZERO = orjson.Fragment(b"0.0")  # a price or quantity that is not a text
_PLAIN_DECIMAL = re.compile(r"[0-9]+(?:\.[0-9]+)?")
#: ``TradeRecorder.record_event``: ``(symbol, a, T, p, event)``.
RecordEvent = Callable[[str, int, object, object, dict[str, Any]], None]
_NAME_RE = re.compile(r"(?P<symbol>[A-Z0-9_]+)-aggTrades-(?P<day>\d{4}-\d{2}-\d{2})\.csv")


def day_of(time_ms: int) -> str:
    """The UTC day (ISO date) of ``time_ms``."""
    return datetime.fromtimestamp(time_ms / 1000, UTC).date().isoformat()


def decimal_text(value: object) -> str:
    """A received price or quantity as the files print it (:func:`shortest`); a text Decimal
    reads but the files do not (``9.7E4``) is printed fixed-point; anything else is "0.0"."""
    if isinstance(value, str) and _PLAIN_DECIMAL.fullmatch(value):
        return shortest(value)
    try:
        number = Decimal(value) if isinstance(value, str) else None
    except InvalidOperation:
        number = None
    if number is None or not number.is_finite() or number < 0:
        return "0.0"
    return shortest(format(number, "f"))


def printed_fragment(text: str) -> orjson.Fragment:
    """``text`` printed (:func:`decimal_text`) as a fragment for orjson."""
    return orjson.Fragment(decimal_text(text).encode("ascii"))


def shortest(text: str) -> str:
    """A decimal string as Binance's files print it: no trailing zeros, one fraction digit
    at least (``"97000.10"`` → ``"97000.1"``, ``"3"`` → ``"3.0"``)."""
    if "." not in text:
        return text + ".0"
    text = text.rstrip("0")
    return text + "0" if text.endswith(".") else text


@dataclass(eq=False, slots=True)
class _File:
    symbol: str
    day: str
    path: Path
    handle: IO[bytes]
    start: int  # the day's first ms
    end: int  # the next day's first ms
    last_id: int  # the last aggregate id written or buffered for the symbol
    # The rows not yet written, flat (:mod:`tickerd.aggtrade_rows`): one list of numbers and
    # fragments, not a tuple per row for the garbage collector to track.
    items: list[Any] = field(default_factory=list)


class TradeRecorder:
    """Writes every recorded trade under ``root`` (see the module docstring).

    ``clock`` is the service clock (for closing files of days that are over); call
    :meth:`tick` at least every :data:`FLUSH_S` seconds and :meth:`close` at the end.
    """

    def __init__(self, root: str | Path, clock: Clock) -> None:
        self.root = Path(root)
        self.clock = clock
        self.rows = 0  # rows written
        self.duplicates = 0  # rows dropped: id not above the last written
        self.late = 0  # rows dropped: their day's file was finished already
        self.files_finished = 0
        self._files: dict[str, _File] = {}
        self._last_id: dict[str, int] = {}
        self._buffered = 0  # rows in the files' items, not yet written
        self._events = RowBuffer(
            printed_fragment, self._add_odd, self.flush, MAX_BUFFER_ROWS, MAX_DECIMALS_CACHED
        )
        #: Buffer the row of an applied aggTrade ``event``: ``(symbol, a, T, p, event)``,
        #: the aggregate id, trade time and price as the mirror read and checked them
        #: (``a`` an integer above the symbol's last, ``T`` an integer not before the last).
        #: Called once per trade: the compiled :meth:`tickerd.aggtrade_rows.RowBuffer.add`.
        self.record_event: RecordEvent = self._events.add
        self.pending: list[Path] = []  # closed CSVs of finished days, to zip
        try:
            self.base.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OSError(f"--record {root}: cannot create {self.base}: {exc}") from exc
        self._finish_leftovers()

    @property
    def base(self) -> Path:
        """``root/futures/um/daily/aggTrades``."""
        return self.root.joinpath(*SUBDIR)

    # -- recording ------------------------------------------------------------------------

    def _add_odd(self, symbol: str, event: dict[str, Any]) -> None:
        """An event the buffer cannot take as it is: the symbol's rows so far, then its."""
        self._add_items(symbol, self._events.pop(symbol))
        self._add_event(symbol, event)

    def _add_items(self, symbol: str, items: list[Any]) -> None:
        """Buffer a symbol's flat rows (in order) in its file: all at once when they fall in
        its open file after its last id, else one by one."""
        if not items:
            return
        f = self._files.get(symbol)
        if f is not None and items[0] > f.last_id and f.start <= items[5] and items[-2] < f.end:
            if f.items:
                f.items += items
            else:  # as at most writes: no copy
                f.items = items
            f.last_id = items[-FIELDS]
            self._buffered += len(items) // FIELDS
            return
        for i in range(0, len(items), FIELDS):
            self._add_row(symbol, items[i : i + FIELDS])

    def _add_row(self, symbol: str, row: Sequence[Any]) -> None:
        """Buffer one row (``a``, printed ``p`` and ``q``, ``f``, ``l``, ``T``, the maker's end)
        in the symbol's file of its day; dropped (and counted) if not above the last id."""
        f = self._file_at(symbol, row[5])
        if f is None:
            return
        if row[0] <= f.last_id:
            self.duplicates += 1
            return
        f.last_id = row[0]
        f.items += row
        self._buffered += 1

    def _add_event(self, symbol: str, event: dict[str, Any]) -> None:
        """One event's row, each odd field replaced as the files print it (by :meth:`record`)."""
        fields: list[Any] = [event.get(name) for name in _FIELD_NAMES]  # None if missing
        p, q, first, last, maker = fields
        self.record(Tick(symbol, p, event["T"]), event["a"], q, first, last, maker)

    def record(
        self, tick: Tick, agg_id: int, quantity: str, first_id: int, last_id: int, maker: bool
    ) -> None:
        """Buffer one row; rows whose id is not above the symbol's last are dropped. A price
        or quantity that is not a text is written ``0.0``, a trade id that is not an integer
        as the aggregate id, a maker flag that is not ``True`` as false."""
        self._add_row(tick.symbol, (
            agg_id, self._shown(tick.price), self._shown(quantity),
            first_id if type(first_id) is int else agg_id,
            last_id if type(last_id) is int else agg_id, tick.time_ms,
            TRUE_END if maker is True else FALSE_END,
        ))  # fmt: skip
        if self._buffered >= MAX_BUFFER_ROWS:
            self.flush()

    def record_tick(self, tick: Tick) -> None:
        """Buffer a tick that came without trade details (the push ingest): its aggregate id
        is the symbol's last plus one, quantity ``0.0``, trade ids the aggregate id."""
        f = self._file_at(tick.symbol, tick.time_ms)
        if f is None:
            return
        agg = max(f.last_id, 0) + 1
        self.record(tick, agg, "0", agg, agg, False)

    def _shown(self, value: object) -> orjson.Fragment:
        """A received price or quantity as printed (``0.0`` if not a text)."""
        return self._events.printed_of(value) if type(value) is str else _ZERO

    def _file_at(self, symbol: str, time_ms: int) -> _File | None:
        """The symbol's file of the day of ``time_ms``, opened if need be; None (the row
        counted as a duplicate or late) when that day is over for the symbol."""
        f = self._files.get(symbol)
        if f is None or not f.start <= time_ms < f.end:
            if f is not None and time_ms < f.start:
                self.duplicates += 1  # a symbol's days only move forward; never reopen one
                return None
            f = self._open(symbol, time_ms)
            if f is None:
                self.late += 1
        return f

    def flush(self) -> None:
        """Write every buffered row (whole lines) to its file."""
        if self._events.count:
            for symbol, items in self._events.take().items():
                self._add_items(symbol, items)
        for f in self._files.values():
            if f.items:
                self._write(f)

    def _write(self, f: _File) -> None:
        f.handle.write(csv_text(f.items))
        f.handle.flush()
        written = len(f.items) // FIELDS
        self.rows += written
        self._buffered -= written
        f.items = []

    def tick(self) -> None:
        """Flush, then close and zip the files of days over by :data:`FINISH_GRACE_MS`."""
        self.flush()
        now = self.clock.now_ms()
        over = day_of(now - FINISH_GRACE_MS)
        for symbol, f in list(self._files.items()):
            if f.day < over:
                self._finish(symbol)

    async def run(self) -> None:
        """Flush every :data:`FLUSH_S` seconds and zip finished days in a worker thread
        (a day of a busy symbol is tens of MB: not on the event loop)."""
        while True:
            await asyncio.sleep(FLUSH_S)
            self.tick()
            while self.pending:
                path = self.pending.pop(0)
                await asyncio.to_thread(self._zip, path)

    def close(self) -> None:
        """Flush and close every file (today's stay CSVs; finished days are zipped)."""
        self.tick()
        for f in self._files.values():
            self._last_id[f.symbol] = f.last_id
            f.handle.close()
        self._files.clear()
        while self.pending:
            self._zip(self.pending.pop(0))

    def _zip(self, path: Path) -> None:
        try:
            zip_day(path)
        except OSError as exc:  # the CSV stays; the next start zips it
            log.error("recording: cannot zip %s: %s", path, exc)
            return
        self.files_finished += 1
        log.info("recording: finished %s", path.with_suffix(".zip"))

    def status(self) -> dict[str, Any]:
        """Counters for ``/healthz``."""
        return {
            "dir": str(self.root),
            "rows": self.rows,
            "duplicates": self.duplicates,
            "late": self.late,
            "open_files": len(self._files),
            "files_finished": self.files_finished,
        }

    # -- files ----------------------------------------------------------------------------

    def _open(self, symbol: str, time_ms: int) -> _File | None:
        """The symbol's file of the day of ``time_ms``; None (the row is late) when that day
        has been finished already."""
        start = time_ms - time_ms % DAY_MS
        day = day_of(start)
        stem = f"{symbol}-aggTrades-{day}"
        if (self.base / symbol / f"{stem}.zip").exists() or any(
            p.stem == stem for p in self.pending
        ):
            return None
        if symbol in self._files:
            self._finish(symbol)  # a later day: the symbol's days only move forward
        elif len(self._files) >= MAX_OPEN_FILES:
            self.flush()
            oldest = self._files.pop(next(iter(self._files)))
            self._last_id[oldest.symbol] = oldest.last_id
            oldest.handle.close()  # flushed above  # reopened (appended) when it trades
        folder = self.base / symbol
        folder.mkdir(parents=True, exist_ok=True)
        if symbol not in self._last_id:
            self._last_id[symbol] = last_id_in(folder, symbol)
        path = folder / f"{symbol}-aggTrades-{day}.csv"
        new = not path.exists() or path.stat().st_size == 0
        if not new:
            repair(path)
        handle = open(path, "ab")  # noqa: SIM115 - kept open across calls, closed in _finish
        if new:
            handle.write(HEADER)
            handle.flush()
        f = _File(symbol, day, path, handle, start, start + DAY_MS, self._last_id[symbol])
        self._files[symbol] = f
        return f

    def _finish(self, symbol: str) -> None:
        f = self._files.pop(symbol)
        self._last_id[symbol] = f.last_id
        if f.items:
            self._write(f)
        f.handle.close()
        self.pending.append(f.path)

    def _finish_leftovers(self) -> None:
        """Zip the CSVs of past days left by an earlier run (a crash before the zip)."""
        today = day_of(self.clock.now_ms() - FINISH_GRACE_MS)
        for path in sorted(self.base.glob("*/*-aggTrades-*.csv")):
            m = _NAME_RE.fullmatch(path.name)
            if m and m["day"] < today:
                repair(path)
                self.pending.append(path)  # left by an earlier run

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
* The mirror's events are kept as received, by symbol, and turned into rows at each write,
  a symbol's batch at once with C calls (columns by ``itemgetter``, printed prices and
  quantities from a bounded cache, one ``orjson.dumps`` of the rows): per trade, the mirror
  only appends. Events with a missing or odd field, or that reach past the symbol's open
  file, take the row-by-row path. Rows are written at least every :data:`FLUSH_S` seconds,
  and at once when :data:`MAX_BUFFER_ROWS` events and rows are buffered: memory is bounded
  whatever the rate. A write hands whole lines to the OS, so a SIGKILL loses at most the
  last second.
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
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from operator import itemgetter
from pathlib import Path
from typing import IO, Any

import orjson

from ..clock import Clock
from ..models import Tick
from .recording_files import HEADER, last_id_in, repair, zip_day

log = logging.getLogger("tickerd.feeds.recording")

SUBDIR = ("futures", "um", "daily", "aggTrades")
FLUSH_S = 0.5  # seconds between writes of buffered rows (the bound is one second)
MAX_BUFFER_ROWS = 16_384  # events and rows buffered (about 11 MB) before a write at once
MAX_DECIMALS_CACHED = 1 << 16  # distinct price and quantity texts remembered
FINISH_GRACE_MS = 60_000  # a day's file stays open this long past midnight, for late rows
MAX_OPEN_FILES = 4096  # open CSVs at most (one per symbol); beyond it the oldest is closed
DAY_MS = 86_400_000
_FIELD_NAMES = ("p", "q", "f", "l", "m")  # besides "a" and "T", checked by the mirror
# orjson's parser reuses one string object per key it has seen (its key cache): lookups
# with those very objects match by identity, without comparing texts (any other key
# object finds the same entries, a little slower).
_KEYS = tuple(orjson.loads(b'{"a":0,"T":0,"p":0,"q":0,"f":0,"l":0,"m":0}'))
_AGG, _TIME, *_COLUMNS = map(itemgetter, _KEYS)
_INT, _BOOL = frozenset({int}), frozenset({bool})
_ZERO = orjson.Fragment(b"0.0")  # a price or quantity that is not a text
_PLAIN_DECIMAL = re.compile(r"[0-9]+(?:\.[0-9]+)?")
_NAME_RE = re.compile(r"(?P<symbol>[A-Z0-9_]+)-aggTrades-(?P<day>\d{4}-\d{2}-\d{2})\.csv")


def _csv(rows: list[tuple[Any, ...]]) -> bytes:
    """Rows as CSV lines. orjson prints them as ``[[1,97000.1,0.01,1,1,1704067200000,true],
    ...]`` (the decimals are pre-printed fragments): the CSV is that without the brackets."""
    return orjson.dumps(rows)[2:-2].replace(b"],[", b"\n") + b"\n"


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


def shortest(text: str) -> str:
    """A decimal string as Binance's files print it: no trailing zeros, one fraction digit
    at least (``"97000.10"`` → ``"97000.1"``, ``"3"`` → ``"3.0"``)."""
    if "." not in text:
        return text + ".0"
    text = text.rstrip("0")
    return text + "0" if text.endswith(".") else text


class _PrintedDecimals(dict[object, orjson.Fragment]):
    """A price or quantity as received -> its printed form (:func:`decimal_text`), ready
    for orjson; a miss prints and remembers it (at most :data:`MAX_DECIMALS_CACHED`)."""

    def __missing__(self, received: object) -> orjson.Fragment:
        if len(self) >= MAX_DECIMALS_CACHED:
            self.clear()
        shown = self[received] = orjson.Fragment(decimal_text(received).encode("ascii"))
        return shown


@dataclass(eq=False, slots=True)
class _File:
    symbol: str
    day: str
    path: Path
    handle: IO[bytes]
    start: int  # the day's first ms
    end: int  # the next day's first ms
    last_id: int  # the last aggregate id written or buffered for the symbol
    # Rows made one by one, not yet written: (a, p, q, f, l, T, m) ready to print (p and q
    # as pre-printed fragments; a tuple of numbers leaves the garbage collector's lists).
    events: list[tuple[Any, ...]] = field(default_factory=list)
    printed: list[bytes] = field(default_factory=list)  # CSV lines not yet written, in order
    printed_rows: int = 0


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
        self._buffered = 0  # rows and events
        self._received: dict[str, list[Mapping[str, Any]]] = {}  # events, by symbol
        self._printed = _PrintedDecimals()
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

    def record_event(self, symbol: str, event: Mapping[str, Any]) -> None:
        """Buffer an applied aggTrade event of ``symbol``. The mirror has checked it: ``a``
        an integer above the symbol's last, ``T`` an integer not before the last.

        It runs once per mirrored trade, so it only keeps the event: :meth:`flush` makes
        the rows of each symbol's events at once, with C calls over the whole batch.
        """
        try:
            self._received[symbol].append(event)
        except KeyError:
            self._received[symbol] = [event]
        self._buffered += 1
        if self._buffered >= MAX_BUFFER_ROWS:
            self.flush()

    def _add_events(self, symbol: str, events: list[Mapping[str, Any]]) -> None:
        """Buffer the rows of ``events`` (one symbol's, in order): all at once when they
        fall in the symbol's open file after its last id and have the types Binance sends,
        else one by one."""
        f = self._files.get(symbol)
        if f is not None and events[0]["a"] > f.last_id:
            start, end = events[0]["T"], events[-1]["T"]
            if f.start <= start and end < f.end:
                rows = self._rows(events)
                if rows is not None:
                    self._print(f, rows)
                    f.last_id = events[-1]["a"]
                    return
        for event in events:
            self._add_event(symbol, event)

    def _rows(self, events: list[Mapping[str, Any]]) -> list[tuple[Any, ...]] | None:
        """The rows of ``events`` (a, p, q, f, l, T, m), or None if a field is missing or
        of another type than Binance sends (those go through :meth:`_add_event`)."""
        try:
            prices, qtys, firsts, lasts, makers = (list(map(g, events)) for g in _COLUMNS)
        except KeyError:
            return None
        if not _INT.issuperset(map(type, firsts)) or not _INT.issuperset(map(type, lasts)):
            return None
        if not _BOOL.issuperset(map(type, makers)):
            return None
        printed = self._printed.__getitem__
        try:
            shown_prices, shown_qtys = map(printed, prices), map(printed, qtys)
            ids, times = map(_AGG, events), map(_TIME, events)
            return list(
                zip(ids, shown_prices, shown_qtys, firsts, lasts, times, makers, strict=True)
            )
        except TypeError:  # unhashable: not a text
            return None

    def _add_event(self, symbol: str, event: Mapping[str, Any]) -> None:
        """One event's row, each odd field replaced as the files print it."""
        t: int = event["T"]
        f = self._files.get(symbol)
        if f is None or not f.start <= t < f.end:
            if f is not None and t < f.start:
                self.duplicates += 1
                return
            f = self._open(symbol, t)
            if f is None:
                self.late += 1
                return
        agg: int = event["a"]
        if agg <= f.last_id:
            self.duplicates += 1
            return
        f.last_id = agg
        p, q, first, last, maker = map(event.get, _FIELD_NAMES)
        price, qty = self._shown(p), self._shown(q)
        if type(first) is not int:
            first = agg
        if type(last) is not int:
            last = agg
        if type(maker) is not bool:
            maker = False
        f.events.append((agg, price, qty, first, last, t, maker))

    def record(
        self, tick: Tick, agg_id: int, quantity: str, first_id: int, last_id: int, maker: bool
    ) -> None:
        """Buffer one row; rows whose id is not above the symbol's last are dropped."""
        f = self._file_for(tick)
        if f is None:
            return
        if agg_id <= f.last_id:
            self.duplicates += 1
            return
        f.last_id = agg_id
        f.events.append((
            agg_id, self._shown(tick.price), self._shown(quantity),
            first_id if type(first_id) is int else agg_id,
            last_id if type(last_id) is int else agg_id, tick.time_ms, maker is True,
        ))  # fmt: skip
        self._buffered += 1
        if self._buffered >= MAX_BUFFER_ROWS:
            self.flush()

    def record_tick(self, tick: Tick) -> None:
        """Buffer a tick that came without trade details (the push ingest): its aggregate id
        is the symbol's last plus one, quantity ``0.0``, trade ids the aggregate id."""
        f = self._file_for(tick)
        if f is None:
            return
        agg = max(f.last_id, 0) + 1
        self.record(tick, agg, "0", agg, agg, False)

    def _shown(self, value: object) -> orjson.Fragment:
        """A received price or quantity as printed (``0.0`` if not a text)."""
        return self._printed[value] if type(value) is str else _ZERO

    def _file_for(self, tick: Tick) -> _File | None:
        f = self._files.get(tick.symbol)
        t = tick.time_ms
        if f is None or not f.start <= t < f.end:
            if f is not None and t < f.start:
                self.duplicates += 1  # a symbol's days only move forward; never reopen one
                return None
            f = self._open(tick.symbol, t)
            if f is None:
                self.late += 1
        return f

    def flush(self) -> None:
        """Write every buffered row (whole lines) to its file."""
        received = self._received
        if received:
            self._received = {}
            for symbol, events in received.items():
                self._add_events(symbol, events)
        for f in self._files.values():
            if f.events or f.printed:
                self._write(f)
        self._buffered = 0

    def _print(self, f: _File, rows: list[tuple[Any, ...]] | None = None) -> None:
        """Print ``f``'s rows made one by one, then ``rows``, as its next CSV text."""
        for batch in (f.events, rows):
            if batch:
                f.printed.append(_csv(batch))
                f.printed_rows += len(batch)
        f.events = []

    def _write(self, f: _File) -> None:
        self._print(f)
        f.handle.writelines(f.printed)
        f.handle.flush()
        self.rows += f.printed_rows
        f.printed, f.printed_rows = [], 0

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
        if f.events or f.printed:
            self._buffered -= len(f.events)
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

"""Rows of Binance's trade files parsed fast and strictly, each symbol on its own grid.

File format (binance/binance-public-data README, sections "FUTURES" → "Trades" and
"AggTrades"; names and columns in :mod:`.binance_files`):

* a header row only from 2022-08-11 on (binance-public-data issues #177, #278): a header is
  recognised by a first line of names, not numbers;
* times in milliseconds (spot data switched to microseconds on 2025-01-01): the unit is
  taken per file from the first row's magnitude, µs are turned into ms;
* prices printed as the shortest decimal (``29223.0``): re-rendered at the symbol's
  precision exactly as :meth:`tickerd.book.PriceBook.make_tick` would, never via float,
  on the tick grid of the file's own symbol (:class:`PriceGrid`).

Theory of operation (the hot loop)
----------------------------------
A file is read in chunks of whole lines (``block_bytes``, 1 MiB by default). A chunk is
parsed column-wise with C-level calls only: newlines become commas, one ``split`` gives
every field, and the columns are slices of that list. Each column is checked as a whole
(ids and times all digits, booleans ``true``/``false``, quantities made of digits and
dots). Distinct price texts are few — trades repeat prices — so each new text is checked
against the tick grid with integer arithmetic once and cached with its canonical form.
Times go through one ``orjson.loads`` of the joined column. Any failed check sends the
chunk to a row-by-row parser that finds the first bad row and says why; the fast path never
decides that a row is bad. The cyclic garbage collector is paused while a chunk's ticks are
built (they form no cycles); it costs a third of the time otherwise.
"""

from __future__ import annotations

import gc
import re
import zipfile
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import chain, repeat
from operator import floordiv
from pathlib import Path
from typing import IO, NamedTuple

import orjson

from ..models import SymbolInfo, Tick
from ..symbols import SymbolUniverse
from .binance_files import FileSpec, Layout, ReplayFileError, describe, open_csv
from .trade_order import Block, ordered

BLOCK_BYTES = 1 << 20  # bytes of CSV parsed at once; also the reorder window (see ordered)
MAX_LINE_BYTES = 64 * 1024  # a longer line is an error, not a reason to buffer forever
MAX_PRICE_CACHE = 1 << 16  # distinct price texts remembered per symbol
MS_END = 10**14  # ms counts stay below this until the year 5138; µs counts start above it
US_END = 10**17

# A header: column names only (a data row starts with a number; a row that is neither is bad).
_HEADER_RE = re.compile(rb" *[A-Za-z_][A-Za-z0-9_ ]*(?:, *[A-Za-z_][A-Za-z0-9_ ]*)*")
_BOOLS = frozenset((b"true", b"false", b"True", b"False"))
_DECIMAL_CHARS = b"0123456789."
_BOM = b"\xef\xbb\xbf"
_new_tick: Callable[[type[Tick], tuple[str, str, int]], Tick] = tuple.__new__


@dataclass(slots=True)
class ReadCount:
    """Bytes of CSV read so far, across every file it is handed to (for progress)."""

    bytes: int = 0


class PriceGrid:
    """One symbol's price texts made canonical, as :meth:`PriceBook.make_tick` would.

    A text must be ``digits[.digits]``, positive, on the tick grid, and count fewer than
    10^28 ticks (beyond that ``make_tick``'s decimal context gives up too). Integer
    arithmetic on the digits, no Decimal and no float; results are cached by text.
    """

    __slots__ = ("_prec", "_scale", "_tick_units", "cache", "info")

    def __init__(self, info: SymbolInfo) -> None:
        self.info = info
        self._prec = info.price_precision
        self._scale = 10**self._prec
        # symbols.py keeps price_precision ≥ the tick's decimals, so this is exact.
        self._tick_units = int(info.tick_size * self._scale)
        self.cache: dict[bytes, str] = {}

    def canonical(self, text: bytes) -> str:
        """The canonical price of ``text``; ValueError (with the reason) when not valid."""
        whole, dot, frac = text.partition(b".")
        if not whole.isdigit() or (dot and not frac.isdigit()):
            raise ValueError(f"price {_show(text)} is not a decimal number")
        prec = self._prec
        if len(frac) > prec:
            if frac[prec:].strip(b"0"):
                raise ValueError(self._off_grid(text))
            frac = frac[:prec]
        units = int(whole + frac + b"0" * (prec - len(frac)))
        count, rest = divmod(units, self._tick_units)
        if rest or count <= 0 or count >= 10**28:
            raise ValueError(self._off_grid(text))
        if not prec:
            return str(units)
        int_part, frac_part = divmod(units, self._scale)
        return f"{int_part}.{frac_part:0{prec}d}"

    def fill(self, texts: set[bytes]) -> None:
        """Cache the canonical form of every text in ``texts`` (ValueError at a bad one)."""
        cache = self.cache
        if len(cache) + len(texts) > MAX_PRICE_CACHE:
            cache.clear()
        canonical = self.canonical
        for text in texts:
            cache[text] = canonical(text)

    def _off_grid(self, text: bytes) -> str:
        return f"price {_show(text)} is not a positive multiple of {self.info.tick_size}"


@contextmanager
def _gc_paused() -> Iterator[None]:
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


class _LongLine(Exception):
    pass


def _chunks(f: IO[bytes], size: int) -> Iterator[bytes]:
    """Whole lines of ``f``, about ``size`` bytes at a time, without the final newline."""
    rest = b""
    while True:
        buf = f.read(size)
        if not buf:
            break
        if rest:
            buf = rest + buf
        cut = buf.rfind(b"\n")
        if cut < 0:
            if len(buf) > MAX_LINE_BYTES:
                raise _LongLine
            rest = buf
            continue
        yield buf[:cut]
        rest = buf[cut + 1 :]
        if len(rest) > MAX_LINE_BYTES:
            raise _LongLine
    if rest:
        yield rest


def read_blocks(
    spec: FileSpec,
    info: SymbolInfo,
    *,
    block_bytes: int = BLOCK_BYTES,
    count: ReadCount | None = None,
) -> Iterator[Block]:
    """Every data row of one file, validated, in file order, a chunk at a time.

    ``info`` is the file's own symbol (its tick size and precision). At the first bad row
    the rows before it are yielded, then :class:`ReplayFileError` names the file, the line
    and the reason; nothing of the bad row is produced. Blank lines are skipped. ``count``,
    if given, is advanced by the bytes read.
    """
    if info.symbol != spec.symbol:
        raise ValueError(f"{spec.path.name} is read on the grid of {info.symbol}")
    if block_bytes < 1024:
        raise ValueError("block_bytes must be at least 1024")
    layout = spec.layout
    grid = PriceGrid(info)
    path = str(spec.path)
    line_no = 1
    time_range = _MS_TIMES
    first, unit_known = True, False
    try:
        with open_csv(spec) as f:
            for raw in _chunks(f, block_bytes):
                if count is not None:
                    count.bytes += len(raw) + 1
                chunk = raw
                if b"\r" in chunk:  # CRLF line ends (the chunk's last "\n" was cut already)
                    chunk = chunk.replace(b"\r\n", b"\n").removesuffix(b"\r")
                if first:
                    first = False
                    chunk = chunk.removeprefix(_BOM)
                    head, more, body = chunk.partition(b"\n")
                    if _HEADER_RE.fullmatch(head):
                        _check_header(head, layout, spec)
                        line_no, chunk = 2, body
                        if not more:
                            continue  # the chunk was the header alone
                if not unit_known and chunk.strip():
                    unit_known = True
                    time_range = _time_unit(next(x for x in chunk.split(b"\n") if x), layout)
                with _gc_paused():
                    fast = _parse_fast(chunk, layout, spec.symbol, grid, time_range)
                if fast is not None:
                    ticks, in_order = fast
                    yield Block(ticks, in_order, path, line_no)
                    line_no += len(ticks)
                    continue
                block, bad, reason, lines_seen = _parse_slow(
                    chunk, layout, spec.symbol, grid, time_range, path=path, line_no=line_no
                )
                if block.ticks:
                    yield block
                if bad is not None:
                    raise ReplayFileError(path, reason, bad)
                line_no += lines_seen
    except _LongLine:
        raise ReplayFileError(path, f"a line longer than {MAX_LINE_BYTES} bytes", line_no) from None
    except (OSError, zipfile.BadZipFile, zlib.error, EOFError) as exc:
        raise ReplayFileError(path, f"read failed after line {line_no - 1}: {exc}") from exc


def _check_header(head: bytes, layout: Layout, spec: FileSpec) -> None:
    names = head.split(b",")
    if len(names) != len(layout.names):
        raise ReplayFileError(
            spec.path,
            f"header has {len(names)} columns; a {spec.kind} file has {len(layout.names)} "
            f"({','.join(layout.names)})",
            1,
        )


class TimeRange(NamedTuple):
    """The valid raw times of a file: ``lo`` <= time < ``hi``, in µs when ``us``."""

    lo: int
    hi: int
    us: bool


_MS_TIMES = TimeRange(0, MS_END, False)


def _time_unit(row: bytes, layout: Layout) -> TimeRange:
    """The valid times of a file, from the first data row's magnitude."""
    fields = row.split(b",")
    text = fields[layout.time] if len(fields) > layout.time else b""
    if text.isdigit() and int(text) >= MS_END:
        return TimeRange(MS_END, US_END, True)
    return _MS_TIMES


def _parse_fast(
    chunk: bytes, layout: Layout, symbol: str, grid: PriceGrid, time_range: TimeRange
) -> tuple[list[Tick], bool] | None:
    """Parse a chunk of well-formed rows column-wise; None sends it to :func:`_parse_slow`."""
    lo, hi, us = time_range
    ncol = len(layout.names)
    rows = chunk.count(b"\n") + 1
    fields = chunk.replace(b"\n", b",").split(b",")
    if len(fields) != rows * ncol:
        return None
    isdigit = bytes.isdigit
    for col in layout.ints:
        if not all(map(isdigit, fields[col::ncol])):
            return None
    times_text = fields[layout.time :: ncol]
    if not all(map(isdigit, times_text)) or not _BOOLS.issuperset(fields[layout.maker :: ncol]):
        return None
    commas = b"," * (rows - 1)
    for col in layout.decimals:
        column = fields[col::ncol]
        if b"" in column or b",".join(column).translate(None, _DECIMAL_CHARS) != commas:
            return None
    prices_text = fields[layout.price :: ncol]
    cache = grid.cache
    missing = set(prices_text).difference(cache)
    if missing:
        if len(cache) + len(missing) > MAX_PRICE_CACHE:
            missing = set(prices_text)
        try:
            grid.fill(missing)
        except ValueError:
            return None
    prices = list(map(cache.__getitem__, prices_text))
    try:
        times: list[int] = orjson.loads(b"[" + b",".join(times_text) + b"]")
    except orjson.JSONDecodeError:
        return None  # e.g. leading zeros or more than 64 bits
    in_order = times == sorted(times)
    first, last = (times[0], times[-1]) if in_order else (min(times), max(times))
    if first < lo or last >= hi:
        return None
    if us:
        times = list(map(floordiv, times, repeat(1000)))
    return list(map(_new_tick, repeat(Tick), zip(repeat(symbol), prices, times))), in_order


def _parse_slow(
    chunk: bytes,
    layout: Layout,
    symbol: str,
    grid: PriceGrid,
    time_range: TimeRange,
    *,
    path: str,
    line_no: int,
) -> tuple[Block, int | None, str, int]:
    """Row by row: (valid rows before the first bad one, its line or None, why, lines read)."""
    lo, hi, us = time_range
    ticks: list[Tick] = []
    lines: list[int] = []
    split = chunk.split(b"\n")
    for index, line in enumerate(split):
        if not line:
            continue
        try:
            price, time_ms = _parse_row(line, layout, grid, lo, hi)
        except ValueError as exc:
            return _block(ticks, lines, path), line_no + index, str(exc), index
        ticks.append(Tick(symbol, price, time_ms // 1000 if us else time_ms))
        lines.append(line_no + index)
    return _block(ticks, lines, path), None, "", len(split)


def _block(ticks: list[Tick], lines: list[int], path: str) -> Block:
    times = [t.time_ms for t in ticks]
    return Block(ticks, times == sorted(times), path, lines[0] if lines else 0, lines)


def _parse_row(line: bytes, layout: Layout, grid: PriceGrid, lo: int, hi: int) -> tuple[str, int]:
    """One row's canonical price and raw time, or ValueError saying what is wrong."""
    names = layout.names
    f = line.split(b",")
    if len(f) != len(names):
        raise ValueError(f"{len(f)} fields; a row has {len(names)} ({','.join(names)})")
    for col in layout.ints:
        if not f[col].isdigit():
            raise ValueError(f"{names[col]} {_show(f[col])} is not a whole number")
    price = grid.cache.get(f[layout.price]) or grid.canonical(f[layout.price])
    for col in layout.decimals:
        if not f[col] or f[col].translate(None, _DECIMAL_CHARS):
            raise ValueError(f"{names[col]} {_show(f[col])} is not a decimal number")
    t_text = f[layout.time]
    if not t_text.isdigit():
        raise ValueError(f"{names[layout.time]} {_show(t_text)} is not a whole number")
    t = int(t_text)
    if not lo <= t < hi:
        unit = "µs" if lo else "ms"
        raise ValueError(
            f"{names[layout.time]} {t} is not in {unit}, the unit of the file's first row"
        )
    if f[layout.maker] not in _BOOLS:
        raise ValueError(f"{names[layout.maker]} {_show(f[layout.maker])} is not true or false")
    return price, t


def _show(text: bytes) -> str:
    shown = text[:40].decode("ascii", "replace")
    return repr(shown + ("…" if len(text) > 40 else ""))


def parse_rows(
    path: str | Path,
    universe: SymbolUniverse | None = None,
    *,
    block_bytes: int = BLOCK_BYTES,
) -> Iterator[Tick]:
    """Every trade of one Binance file as ticks in time order (the replay's parser).

    ``universe`` supplies the symbol's tick size and precision (default: the bundled one).
    Raises :class:`ReplayFileError` for a file that cannot be used, and at the first bad
    row after the rows before it.
    """
    spec = describe(path)
    info = (universe or SymbolUniverse.default()).get(spec.symbol)
    if info is None:
        raise ReplayFileError(spec.path, f"symbol {spec.symbol} is not in the symbol universe")
    blocks = read_blocks(spec, info, block_bytes=block_bytes)
    return chain.from_iterable(ordered(blocks, window=f"{block_bytes} bytes of rows"))

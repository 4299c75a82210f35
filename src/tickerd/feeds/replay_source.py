"""The trades of a replay's files, merged in time order and read on demand.

Files are grouped by symbol. One symbol's files are read one after another in date order
(their days must not overlap), each on that symbol's own grid, so one file per symbol is
open at a time; the symbols are merged in time order by :func:`.trade_order.merged`
(equal times: symbols in name order).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from itertools import chain, islice, pairwise
from pathlib import Path

from ..models import SymbolInfo, Tick
from ..symbols import SymbolUniverse
from .binance_files import FileSpec, ReplayFileError, csv_size, discover
from .trade_order import Block, merged, ordered
from .trade_rows import BLOCK_BYTES, ReadCount, read_blocks

log = logging.getLogger("tickerd.feeds.replay")


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
        trades: bool = False,
    ) -> None:
        self.files = discover(paths)
        self.trades = trades  # hand out Trade ticks (quantity, ids, maker) for the streams
        self.read = ReadCount()
        self.total_bytes = sum(csv_size(spec) for spec in self.files)
        self.block_bytes = block_bytes
        self.open_files: dict[str, str] = {}  # symbol -> the file being read
        self.files_done = 0
        groups: dict[str, list[FileSpec]] = {}
        for spec in self.files:
            groups.setdefault(spec.symbol, []).append(spec)
        streams: list[Iterator[list[Tick]]] = []
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
            # A function call binds this symbol's grid now (a generator expression here
            # would read ``info`` late, when the last symbol's grid is in it).
            blocks = self._symbol_blocks(specs, info)
            window = f"the reorder window ({block_bytes} bytes of rows)"
            streams.append(ordered(blocks, window=window))
        self.symbols = frozenset(groups)
        lists = streams[0] if len(streams) == 1 else merged(streams)
        ticks = chain.from_iterable(lists)
        first = next(ticks, None)
        if first is None:
            raise ReplayFileError(self.files[0].path, "no trades in the replay files")
        self.first_time_ms: int = first.time_ms
        self._it: Iterator[Tick] = chain((first,), ticks)
        self.exhausted = False

    def _symbol_blocks(self, specs: list[FileSpec], info: SymbolInfo) -> Iterator[Block]:
        """One symbol's files, one after another, on that symbol's grid."""
        for spec in specs:
            yield from self._file_blocks(spec, info)

    def _file_blocks(self, spec: FileSpec, info: SymbolInfo) -> Iterator[Block]:
        """One file's blocks on its own symbol's grid, logged when opened and when done."""
        log.info("replay: reading %s", spec.path)
        self.open_files[spec.symbol] = spec.path.name
        rows = 0
        blocks = read_blocks(
            spec, info, block_bytes=self.block_bytes, count=self.read, trades=self.trades
        )
        for block in blocks:
            rows += len(block.ticks)
            yield block
        self.open_files.pop(spec.symbol, None)
        self.files_done += 1
        log.info("replay: done with %s (%d trades)", spec.path, rows)

    @property
    def share_done(self) -> float:
        """The share of the files' CSV bytes read so far (0.0 to 1.0)."""
        if self.exhausted or not self.total_bytes:
            return 1.0 if self.exhausted else 0.0
        return min(1.0, self.read.bytes / self.total_bytes)

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


def utc_text(time_ms: int) -> str:
    """``time_ms`` as an ISO 8601 UTC time with milliseconds."""
    return datetime.fromtimestamp(time_ms / 1000, UTC).isoformat(timespec="milliseconds")

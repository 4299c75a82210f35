"""Rows of one symbol's files put back in time order, in bounded memory.

:func:`ordered` holds one block back, so rows out of order by up to about one block
are put back in time order (rows with equal times keep their file order, which is trade-id
order in Binance's files; monthly files hold rows out of order). A row older than rows
already handed on is an error naming its line: memory stays bounded by two blocks per file
whatever its size.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from itertools import chain
from typing import NamedTuple

from ..models import Tick
from .binance_files import ReplayFileError


class Block(NamedTuple):
    """Consecutive valid rows of one file, as ticks, in file order."""

    ticks: list[Tick]
    in_order: bool  # times never decrease inside the block
    path: str
    first_line: int  # line number of ticks[0]
    lines: list[int] | None = None  # each tick's line number, when not consecutive

    def line_of(self, index: int) -> int:
        """The line number of ``ticks[index]``."""
        return self.lines[index] if self.lines is not None else self.first_line + index


def ordered(blocks: Iterable[Block], *, window: str = "one block") -> Iterator[list[Tick]]:
    """The rows of ``blocks`` in time order, a list at a time.

    One block is held back: rows out of order by up to about a block are merged back into
    place (a stable sort: equal times keep their file order). A row older than a row
    already handed on raises :class:`ReplayFileError` at its line. When ``blocks`` raises,
    the rows held back are handed on first, so every valid row before a bad one is seen.
    """
    held: list[Tick] = []
    floor = -1
    it = iter(blocks)
    while True:
        try:
            block = next(it)
        except StopIteration:
            break
        except ReplayFileError:
            if held:
                yield held
            raise
        ticks = block.ticks
        if not ticks:
            continue
        if block.in_order and (not held or ticks[0].time_ms >= held[-1].time_ms):
            if held:
                yield held
                floor = held[-1].time_ms
            held = ticks
            continue
        for index, tick in enumerate(ticks):
            if tick.time_ms < floor:
                if held:
                    yield held
                raise ReplayFileError(
                    block.path,
                    f"time {tick.time_ms} is older than trades already replayed (up to "
                    f"{floor}): the file is out of order by more than {window}",
                    block.line_of(index),
                )
        merged = sorted(chain(held, ticks), key=_time_of)
        if held:
            out = merged[: len(held)]
            yield out
            floor = out[-1].time_ms
        held = merged[len(held) :]
    if held:
        yield held


def _time_of(tick: Tick) -> int:
    return tick.time_ms

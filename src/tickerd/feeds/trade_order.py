"""Rows of one symbol's files put back in time order, in bounded memory.

:func:`ordered` holds one block back, so rows out of order by up to about one block
are put back in time order (rows with equal times keep their file order, which is trade-id
order in Binance's files; monthly files hold rows out of order). A row older than rows
already handed on is an error naming its line: memory stays bounded by two blocks per file
whatever its size.

:func:`merged` merges several symbols' lists into one time order, a batch at a time, with
the semantics of :func:`heapq.merge` over the streams in order (equal times: the earlier
stream first; an error of a stream raised right after its last good row, nothing of a
later stream at that time before it) but with C-level sorts instead of a Python-level
heap step per row.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable, Iterator
from itertools import chain
from operator import itemgetter
from typing import NamedTuple

from ..models import Tick
from .binance_files import ReplayFileError

_TIME = itemgetter(2)  # Tick.time_ms


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


def merged(streams: list[Iterator[list[Tick]]]) -> Iterator[list[Tick]]:
    """The ticks of ``streams`` (each yielding lists in time order) in one time order.

    Each round emits every held tick older than ``bound``, the smallest "last held time"
    of the streams still running, sorted stably (so equal times keep stream order). Ticks
    at ``bound`` wait until every stream holding them has shown what follows: a stream
    whose held ticks are all at ``bound`` reads its next list first. When a stream raises,
    its held ticks and the other streams' ticks that :func:`heapq.merge` would have handed
    on before it are emitted, then the error is raised.
    """
    held: list[list[Tick]] = [[] for _ in streams]
    live = [True] * len(streams)
    for i in range(len(streams)):
        error = _read_more(streams, held, live, i)
        if error is not None:
            raise error
    while True:
        running = [i for i, alive in enumerate(live) if alive]
        if not running:
            rest = [t for h in held for t in h]
            if rest:
                rest.sort(key=_TIME)
                yield rest
            return
        bound = min(held[i][-1].time_ms for i in running)
        batch: list[Tick] = []
        for i, h in enumerate(held):
            cut = bisect_left(h, bound, key=_TIME)
            if cut:
                batch.extend(h[:cut])
                held[i] = h[cut:]
        if batch:
            batch.sort(key=_TIME)
            yield batch
        for i in running:
            # All held at bound: see what follows first (this holds at most the ticks of
            # one millisecond of one symbol more than a list).
            while live[i] and held[i][-1].time_ms == bound:
                error = _read_more(streams, held, live, i)
                if error is not None:
                    # heapq.merge would have handed on the ticks at bound of the streams
                    # before this one, then this one's, then raised.
                    last = [t for j in range(i) for t in held[j] if t.time_ms == bound]
                    last.extend(held[i])
                    if last:
                        yield last
                    raise error


def _read_more(
    streams: list[Iterator[list[Tick]]], held: list[list[Tick]], live: list[bool], i: int
) -> ReplayFileError | None:
    """Append stream ``i``'s next non-empty list to ``held[i]`` (or mark it ended)."""
    while True:
        try:
            more = next(streams[i])
        except StopIteration:
            live[i] = False
            return None
        except ReplayFileError as exc:
            live[i] = False
            return exc
        if more:
            held[i] = held[i] + more if held[i] else more
            return None

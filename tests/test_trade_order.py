"""The k-way merge of symbols' tick lists against :func:`heapq.merge`, the reference it
must agree with tick for tick: equal times in stream order, and a stream's error raised
right after its last good tick with exactly what the heap would have handed on before."""

from __future__ import annotations

import heapq
from collections.abc import Iterator
from itertools import chain
from operator import itemgetter

from hypothesis import given, settings
from hypothesis import strategies as st

from tickerd.feeds.binance_files import ReplayFileError
from tickerd.feeds.trade_order import merged
from tickerd.models import Tick

_TIME = itemgetter(2)

# A stream: lists of non-decreasing times (few distinct values: many ties), and whether a
# bad row follows them.
stream_st = st.tuples(
    st.lists(st.lists(st.integers(0, 6), min_size=0, max_size=5), max_size=5),
    st.booleans(),
)


def build(spec: tuple[list[list[int]], bool], index: int) -> tuple[list[list[Tick]], bool]:
    pieces, fails = spec
    flat = sorted(t for piece in pieces for t in piece)
    out, k = [], 0
    for piece in pieces:  # the same split sizes, over the sorted times
        out.append(
            [Tick(f"S{index}", f"{k + j}", t) for j, t in enumerate(flat[k : k + len(piece)])]
        )
        k += len(piece)
    return out, fails


def lists_of(lists: list[list[Tick]], fails: bool, name: str) -> Iterator[list[Tick]]:
    yield from lists
    if fails:
        raise ReplayFileError(name, "bad row")


def ticks_of(lists: list[list[Tick]], fails: bool, name: str) -> Iterator[Tick]:
    yield from chain.from_iterable(lists)
    if fails:
        raise ReplayFileError(name, "bad row")


def run(it: Iterator[Tick]) -> tuple[list[Tick], str | None]:
    out: list[Tick] = []
    try:
        out.extend(it)  # the ticks before an error stay in the list
    except ReplayFileError as exc:
        return out, exc.path
    return out, None


@settings(max_examples=400, deadline=None)
@given(st.lists(stream_st, min_size=2, max_size=5))
def test_merged_agrees_with_heapq_merge(specs: list[tuple[list[list[int]], bool]]) -> None:
    built = [build(spec, i) for i, spec in enumerate(specs)]
    expected = run(
        heapq.merge(*(ticks_of(lists, f, f"s{i}") for i, (lists, f) in enumerate(built)), key=_TIME)
    )
    got = run(
        chain.from_iterable(
            merged([lists_of(lists, f, f"s{i}") for i, (lists, f) in enumerate(built)])
        )
    )
    assert got == expected


def test_batches_are_big_not_one_tick_each() -> None:
    streams = [iter([[Tick(f"S{s}", "1", t) for t in range(k * 1000, (k + 1) * 1000)]
                     for k in range(5)]) for s in range(3)]  # fmt: skip
    batches = list(merged(streams))  # type: ignore[arg-type]
    assert sum(map(len, batches)) == 15_000 and len(batches) <= 6

"""In-process micro-benchmarks: the book's apply and the replay's parse."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .config import SERVER_CPU, Result

# -- in-process micro-benchmarks (7, 8) ------------------------------------------------------


@contextmanager
def on_cpu(cpu: int | None) -> Iterator[None]:
    """Run the body pinned to ``cpu`` (None: as is), then restore the affinity."""
    if cpu is None:
        yield
        return
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {cpu})
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


def rate(step: Callable[[list[Any]], None], batches: list[list[Any]], seconds: float) -> float:
    """Items per second through ``step``, batch after batch, for about ``seconds``."""
    n = 0
    t0 = time.perf_counter()
    deadline = t0 + seconds
    while True:
        for batch in batches:
            step(batch)
            n += len(batch)
        now = time.perf_counter()
        if now >= deadline:
            return n / (now - t0)


def book_updates(symbols_file: Path, seconds: float, pin: bool) -> Result:
    """Ticks per second through PriceBook.apply, and against a plain dict loop."""
    from tickerd.book import PriceBook
    from tickerd.models import Tick
    from tickerd.symbols import SymbolUniverse

    universe = SymbolUniverse.load(symbols_file)
    names = [s.symbol for s in universe.trading()]
    batches = [
        [Tick(names[(b * 1000 + i) % len(names)], f"{100 + i % 997}.10", 1_700_000_000_000 + i)
         for i in range(1000)]
        for b in range(50)
    ]  # fmt: skip
    book = PriceBook(universe)
    plain: dict[str, Any] = {}

    def dict_loop(batch: list[Any]) -> None:
        for tick in batch:
            plain[tick.symbol] = tick

    with on_cpu(SERVER_CPU if pin else None):
        apply_rate = rate(book.apply, batches, seconds)
        dict_rate = rate(dict_loop, batches, seconds)
    return {
        "apply_ticks_per_s": round(apply_rate),
        "dict_ticks_per_s": round(dict_rate),
        "ratio_to_dict": round(apply_rate / dict_rate, 3),
    }

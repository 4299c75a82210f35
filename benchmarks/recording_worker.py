#!/usr/bin/env python3
"""The workload of the mirror-recording scenario, run under callgrind by the harness.

It builds ``--events`` combined-stream aggTrade messages (text, as the mirror receives them)
of several symbols whose tick sizes and precisions differ, warms both variants up (the
recorder's files opened), then,
for each phase, prints ``READY <phase>`` and waits for a line on stdin (the harness zeroes
callgrind's counters meanwhile), applies every message through a fresh
:class:`tickerd.feeds.mirror_state.MirrorState` — ``plain``: no listener; ``recorded``: a
:class:`tickerd.feeds.recording.TradeRecorder` attached as the mirror attaches it, its rows
flushed to the files inside the phase — prints ``DONE <phase> <applied>`` and waits again
(the harness dumps the counters). Nothing here reads a wall clock: the service clock is a
:class:`tickerd.clock.ManualClock`.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import orjson

from tickerd.book import PriceBook
from tickerd.clock import ManualClock
from tickerd.feeds.mirror_state import MirrorState
from tickerd.feeds.recording import TradeRecorder
from tickerd.symbols import SymbolUniverse

T0_MS = 1_704_067_200_000  # 2024-01-01T00:00:00Z
WARM = 2_000  # messages applied before the counts (each variant)
# Ids in the billions, as a busy symbol's are after years of trading (its trade ids here
# three times its aggregate ids): above 2**30 an integer takes CPython's multi-digit form,
# which costs more to print than a small one (about 230 instructions per id through orjson).
FIRST_AGG_ID = 2_500_000_000
# symbol, first price in tick units, decimals of the price text (its tick: one unit)
SYMBOLS = (
    ("BTCUSDT", 970_000, 1),
    ("ETHUSDT", 340_000, 2),
    ("DOGEUSDT", 31_000, 5),
    ("1000BONKUSDT", 21_000, 6),
)
SUBSCRIBED = frozenset(s[0] for s in SYMBOLS)


def price_text(units: int, decimals: int) -> str:
    """``units`` of 10**-decimals as a fixed-point decimal string."""
    whole, frac = divmod(units, 10**decimals)
    return f"{whole}.{frac:0{decimals}d}"


def messages(count: int, first_id: int, t0_ms: int) -> list[str]:
    """``count`` aggTrade messages, the symbols interleaved, ids and times ascending."""
    out = []
    for i in range(count):
        symbol, start, decimals = SYMBOLS[i % len(SYMBOLS)]
        n = i // len(SYMBOLS)
        agg = first_id + n
        data = {
            "e": "aggTrade", "E": t0_ms + n + 5, "s": symbol, "a": agg,
            "p": price_text(start + (n * 7) % 500, decimals), "q": f"{1 + n % 40}.{n % 1000:03d}",
            "f": agg * 3, "l": agg * 3 + n % 3, "T": t0_ms + n, "m": n % 3 == 0,
        }  # fmt: skip
        stream = f"{symbol.lower()}@aggTrade"
        out.append(orjson.dumps({"stream": stream, "data": data}).decode())
    return out


def mirror(recorder: TradeRecorder | None) -> MirrorState:
    """A fresh MirrorState on a fresh book, with ``recorder`` attached as the mirror does."""
    state = MirrorState(PriceBook(SymbolUniverse.default()))
    state.record = None if recorder is None else recorder.record_event
    return state


def apply_all(
    state: MirrorState, texts: list[str], recorder: TradeRecorder | None, now: int
) -> int:
    """Every message through ``state``, then the recorder's rows written; how many applied."""
    on_event = state.on_event
    for text in texts:
        on_event(text, SUBSCRIBED, 1.0, now)
    if recorder is not None:
        recorder.flush()
    return state.stats.applied


def wait(line: str) -> None:
    """Tell the harness where we are, and wait for its go-ahead."""
    print(line, flush=True)
    if not sys.stdin.readline():
        raise SystemExit("recording_worker: stdin closed")


def main(argv: list[str] | None = None) -> int:
    """Run the phases; exit 1 if a phase applied fewer messages than it was given."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000)
    args = parser.parse_args(argv)
    clock = ManualClock(T0_MS + 3_600_000)
    now = clock.now_ms()
    warm = messages(WARM, FIRST_AGG_ID, T0_MS)
    texts = messages(args.events, FIRST_AGG_ID + WARM, T0_MS + 1_000)
    with tempfile.TemporaryDirectory(prefix="tickerd-rec-") as tmp:
        apply_all(mirror(None), warm, None, now)
        # The recorder's files are open before the count, as in a running mirror: the
        # count is the steady cost per trade, not the day's first row.
        recorder = TradeRecorder(Path(tmp) / "rec", clock)
        apply_all(mirror(recorder), warm, recorder, now)
        phases: dict[str, TradeRecorder | None] = {"plain": None, "recorded": recorder}
        for phase, attached in phases.items():
            state = mirror(attached)
            wait(f"READY {phase}")
            applied = apply_all(state, texts, attached, now)
            wait(f"DONE {phase} {applied}")
            if applied != len(texts):
                return 1
        recorder.close()
        rows = recorder.rows
    print(f"ROWS {rows}", flush=True)
    return 0 if rows == len(warm) + len(texts) else 1


if __name__ == "__main__":
    sys.exit(main())

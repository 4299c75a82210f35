"""The replay-parse scenario: a replay of several symbols' files, parsed and merged.

The files are Binance USDⓈ-M trades CSVs (no header, ms times) of symbols whose tick sizes
and price precisions differ (BTCUSDT 0.10, ETHUSDT 0.01, DOGEUSDT 0.000010,
1000BONKUSDT 0.0000010 in the bundled universe), all in one folder, read the way a
``--replay-path`` folder is: :class:`tickerd.feeds.replay_source.ReplaySource` discovers
them, parses each symbol's rows on its own grid and merges the symbols in time order.
"""

from __future__ import annotations

import time
from pathlib import Path

from .config import Result

DAY_MS = 1_704_067_200_000  # 2024-01-01T00:00:00Z
TAKE = 10_000  # ticks per take(), as the replay feed asks for them
# The folder is read this many times and the fastest read counts (as timeit does): on a
# shared VM a slower read measures the neighbours, not the parser.
ATTEMPTS = 3
# symbol, price in tick units at the start, tick size as (units, decimals of the text)
SYMBOLS: tuple[tuple[str, int, int, int], ...] = (
    ("BTCUSDT", 970_000, 1, 1),  # 97000.0, tick 0.1
    ("ETHUSDT", 340_000, 1, 2),  # 3400.00, tick 0.01
    ("DOGEUSDT", 31_000, 1, 5),  # 0.31000, tick 0.00001
    ("1000BONKUSDT", 21_000, 1, 6),  # 0.021000, tick 0.000001
)


def price_text(units: int, decimals: int) -> str:
    """``units`` of 10**-decimals as a fixed-point decimal string (no float involved)."""
    whole, frac = divmod(units, 10**decimals)
    return f"{whole}.{frac:0{decimals}d}"


def write_replay_folder(directory: Path, rows: int) -> Path:
    """A folder of one trades file per symbol of :data:`SYMBOLS`, ``rows`` rows in all.

    Each symbol's trades walk its grid and share the day's timeline with the others (several
    trades per millisecond, the symbols interleaved), as a real day's files do.
    """
    folder = directory / "replay-multi"
    folder.mkdir(parents=True, exist_ok=True)
    per = rows // len(SYMBOLS)
    for k, (symbol, start, step, decimals) in enumerate(SYMBOLS):
        count = per + (rows - per * len(SYMBOLS) if k == 0 else 0)
        lines = []
        for i in range(count):
            units = start + step * (i % 500)
            price = price_text(units, decimals)
            maker = "true" if (i + k) % 3 else "false"
            lines.append(f"{i + 1},{price},0.010,{price},{DAY_MS + (i * 7 + k) // 10},{maker}\n")
        path = folder / f"{symbol}-trades-2024-01-01.csv"
        path.write_text("".join(lines), encoding="ascii")
    return folder


def replay_parse(directory: Path, rows: int) -> Result:
    """Rows per second through the replay's reading of a multi-symbol folder."""
    from tickerd.feeds.binance_files import ReplayFileError
    from tickerd.feeds.replay_source import ReplaySource
    from tickerd.symbols import SymbolUniverse

    folder = write_replay_folder(directory, rows)
    universe = SymbolUniverse.default()
    names = [s[0] for s in SYMBOLS]
    missing = [n for n in names if universe.get(n) is None]
    if missing:
        return {"status": f"not measured: {', '.join(missing)} not in the bundled universe"}
    fastest = float("inf")
    for _ in range(ATTEMPTS):
        t0 = time.perf_counter()
        try:
            source = ReplaySource([folder], universe)
            parsed = 0
            last = -1
            ordered = True
            while not source.exhausted:
                ticks, error = source.take(TAKE)
                if error is not None:
                    raise error
                parsed += len(ticks)
                if ticks:
                    ordered = ordered and last <= ticks[0].time_ms
                    last = ticks[-1].time_ms
            fastest = min(fastest, time.perf_counter() - t0)
        except (ReplayFileError, OSError, ValueError) as exc:
            return {"status": f"failed: {exc}"[:300], "failed": str(exc)[:300]}
        if parsed != rows or not ordered:
            why = f"ReplaySource gave {parsed} of {rows} rows" + (
                "" if ordered else ", out of order"
            )
            return {"status": f"failed: {why}", "failed": why}
    return {
        "status": f"measured: ReplaySource (a --replay-path folder), fastest of {ATTEMPTS} reads",
        "symbols": ", ".join(names),
        "rows": rows,
        "rows_per_s": round(rows / fastest),
    }

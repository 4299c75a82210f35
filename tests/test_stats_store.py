"""The statistics in the store, with a real SQLite file: written incrementally beside the
last prices, bounded like the in-memory history, restored with the future-skew rule of the
ticks (docs/DECISIONS.md), and rows that cannot come back skipped with a log line.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from pathlib import Path

import orjson
import pytest

from tickerd import PriceBook, SymbolUniverse
from tickerd.models import Trade
from tickerd.store import PriceStore
from tickerd.streams import StreamHub
from tickerd.ticktime import FUTURE_SKEW_MS

pytestmark = pytest.mark.timeout(60)

NOW = 1_704_067_200_000 + 90 * 60_000  # 2024-01-01T01:30:00Z
MINUTE = 60_000


def trades(n: int) -> list[Trade]:
    """``n`` minutes of BTCUSDT and DOGEUSDT trades up to NOW."""
    out = []
    for m in range(n):
        t = NOW - (n - m) * MINUTE + 7
        out.append(Trade("BTCUSDT", f"{42000 + m}.10", t, "0.5", m, 2 * m, 2 * m + 1, m % 2 == 0))
        out.append(Trade("DOGEUSDT", f"0.08{m:03d}0", t + 1, "100", m, m, m, True))
    return out


def figures(hub: StreamHub) -> dict[str, object]:
    hub.expire(NOW)
    out: dict[str, object] = {}
    for symbol in ("BTCUSDT", "DOGEUSDT"):
        window = hub.windows.get(symbol)
        assert window is not None
        out[symbol] = window.ticker(NOW)
        for interval in ("1m", "15m", "1h", "1d"):
            out[symbol, interval] = hub.klines.rows(symbol, interval, limit=1500)
    return out


def run(path: Path, history: int, batches: list[list[Trade]]) -> dict[str, object]:
    """A book, hub and store: apply ``batches`` with a flush after each; the figures."""

    async def scenario() -> dict[str, object]:
        book = PriceBook(SymbolUniverse.default())
        hub = StreamHub(book, history)
        store = PriceStore(path, flush_interval=60)
        store.keep_statistics(hub)
        await store.open()
        assert await store.restore_statistics(NOW) == 0
        store.attach(book)
        hub.start()
        for batch in batches:
            book.apply(batch)
            await store.flush()
        await store.close()
        return figures(hub)

    return asyncio.run(scenario())


def restore(path: Path, history: int, now: int = NOW) -> tuple[StreamHub, int]:
    async def scenario() -> tuple[StreamHub, int]:
        book = PriceBook(SymbolUniverse.default())
        hub = StreamHub(book, history)
        store = PriceStore(path)
        store.keep_statistics(hub)
        await store.open()
        await store.restore(book, now)
        count = await store.restore_statistics(now)
        await store.close()
        return hub, count

    return asyncio.run(scenario())


def test_written_incrementally_bounded_and_restored_the_same(tmp_path: Path) -> None:
    path = tmp_path / "stats.db"
    every = trades(80)
    before = run(path, 5, [every[i : i + 6] for i in range(0, len(every), 6)])
    with sqlite3.connect(path) as conn:
        minutes = conn.execute("SELECT COUNT(*) FROM stat_minute").fetchone()[0]
        per = dict(conn.execute("SELECT interval, COUNT(*) FROM kline GROUP BY interval"))
        assert conn.execute("PRAGMA user_version").fetchone() == (2,)
    assert minutes == 2 * 80  # every minute of both symbols, once
    assert per["1m"] == 2 * 5 and per["15m"] == 2 * 5  # bounded as the history (5 each)
    assert per["1h"] == 2 * 1 and "1d" not in per  # one hour closed; the day is open
    hub, count = restore(path, 5)
    assert count == 2 and hub.started
    assert figures(hub) == before


def test_rows_ahead_of_the_clock_or_unusable_are_skipped_with_a_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "stats.db"
    before = run(path, 1500, [trades(30)])
    ahead = NOW + FUTURE_SKEW_MS + MINUTE
    with sqlite3.connect(path) as conn:
        state = conn.execute("SELECT state FROM stat_minute LIMIT 1").fetchone()[0]
        conn.execute("INSERT INTO stat_minute VALUES ('BTCUSDT', ?, ?)", (ahead // MINUTE, state))
        row = orjson.dumps([ahead, "1", "1", "1", "1", "1", ahead + 59_999, "1", 1, "1", "1", "0"])
        conn.execute("INSERT INTO kline VALUES ('BTCUSDT', '1m', ?, ?)", (ahead, row.decode()))
        conn.execute("INSERT INTO stat_minute VALUES ('NOSUCHUSDT', 1, ?)", (state,))
        conn.execute("UPDATE stat_symbol SET open = 'not json' WHERE symbol = 'DOGEUSDT'")
    with caplog.at_level(logging.WARNING, "tickerd.store"):
        hub, count = restore(path, 1500)
    assert count == 1  # BTCUSDT; DOGEUSDT's row does not parse, NOSUCHUSDT is gone
    text = caplog.text
    assert "skipping statistics of 'BTCUSDT'" in text and "ahead of the service clock" in text
    assert "skipping statistics of 'NOSUCHUSDT': a symbol the universe does not have" in text
    assert "skipping statistics of 'DOGEUSDT': statistics that do not parse" in text
    hub.expire(NOW)
    btc = hub.windows.get("BTCUSDT")
    assert btc is not None and btc.ticker(NOW) == before["BTCUSDT"]  # the future rows left out
    for interval in ("1m", "15m", "1h", "1d"):
        assert hub.klines.rows("BTCUSDT", interval, limit=1500) == before["BTCUSDT", interval]
    doge = hub.windows.get("DOGEUSDT")  # from its last price, as a price without a trade
    assert doge is not None and doge.mini()[4:] == ("0", "0")

"""Persistence of last prices: SQLite in WAL mode, batched writes off the event loop, restore
before the port opens, and restarts — clean (SIGTERM) and killed (SIGKILL) mid-stream.

The store's content is read back with the sqlite3 module directly, not through tickerd.
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from tickerd import PriceBook, Settings, SymbolUniverse
from tickerd.app import Service
from tickerd.models import Tick
from tickerd.store import PriceStore, StoreError

pytestmark = pytest.mark.timeout(60)

DATA = Path(__file__).parent / "data" / "replay"


def rows(path: Path) -> dict[str, tuple[str, int]]:
    """The store's table, read without tickerd: symbol -> (price, time_ms)."""
    with sqlite3.connect(path) as conn:
        got = conn.execute("SELECT symbol, price, time_ms FROM last_tick").fetchall()
    return {s: (p, t) for s, p, t in got}


def book() -> PriceBook:
    return PriceBook(SymbolUniverse.default())


def tick(b: PriceBook, symbol: str, price: str, time_ms: int) -> Tick:
    return b.make_tick(symbol, price, time_ms)


# -- the store on its own ----------------------------------------------------------------


def test_roundtrip_text_prices_wal_and_synchronous_normal(tmp_path: Path) -> None:
    path = tmp_path / "prices.db"

    async def scenario() -> None:
        store = PriceStore(path, flush_interval=3600)
        await store.open()
        b = book()
        store.attach(b)
        b.apply([tick(b, "BTCUSDT", "97000.1", 1_700_000_000_001), tick(b, "XRPUSDT", "0.5", 7)])
        assert await store.flush() == 2
        sync = await store._call(lambda: store._conn.execute("PRAGMA synchronous").fetchone())  # type: ignore[union-attr]
        assert sync == (1,)  # NORMAL
        await store.close()

    asyncio.run(scenario())
    assert rows(path) == {
        "BTCUSDT": ("97000.10", 1_700_000_000_001),
        "XRPUSDT": ("0.5000", 7),
    }
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        types = conn.execute("SELECT DISTINCT typeof(price), typeof(time_ms) FROM last_tick")
        assert types.fetchall() == [("text", "integer")]


def test_changes_are_coalesced_per_symbol(tmp_path: Path) -> None:
    async def scenario() -> None:
        store = PriceStore(tmp_path / "p.db", flush_interval=3600)
        await store.open()
        b = book()
        store.attach(b)
        for i in range(1, 5001):
            b.update(tick(b, "ETHUSDT", f"{3000 + i % 7}.01", i))
            b.apply([tick(b, "BTCUSDT", f"{90000 + i}.0", i), tick(b, "SOLUSDT", "150.001", i)])
        assert store.pending == 3  # one entry per symbol, however many updates
        assert await store.flush() == 3
        assert await store.flush() == 0  # nothing changed since
        b.update(tick(b, "SOLUSDT", "151", 6000))
        assert await store.flush() == 1
        assert (store.flushes, store.written) == (2, 4)
        await store.close()

    asyncio.run(scenario())
    assert rows(tmp_path / "p.db") == {
        "BTCUSDT": ("95000.00", 5000),
        "ETHUSDT": (f"{3000 + 5000 % 7}.01", 5000),
        "SOLUSDT": ("151.0000", 6000),
    }


def test_writes_run_on_the_store_thread_and_never_block_the_loop(tmp_path: Path) -> None:
    async def scenario() -> None:
        store = PriceStore(tmp_path / "p.db", flush_interval=3600)
        await store.open()
        threads: list[str] = []
        write = store._write

        def slow_write(ticks: list[Tick]) -> list[tuple[Tick, str]]:
            threads.append(threading.current_thread().name)
            time.sleep(0.3)  # a slow disk
            return write(ticks)

        store._write = slow_write  # type: ignore[method-assign]
        b = book()
        store.attach(b)
        b.update(tick(b, "BTCUSDT", "1.0", 1))
        turns = 0

        async def ticker() -> None:
            nonlocal turns
            while True:
                turns += 1
                await asyncio.sleep(0.01)

        side = asyncio.create_task(ticker())
        await store.flush()
        side.cancel()
        assert threads and threads[0].startswith("tickerd-store")
        assert threading.current_thread().name not in threads
        assert turns >= 10  # the loop kept running during the 0.3 s write
        await store.close()

    asyncio.run(scenario())


def test_periodic_flush_and_final_flush_on_close(tmp_path: Path) -> None:
    async def periodic(path: Path) -> None:
        store = PriceStore(path, flush_interval=0.05)
        await store.open()
        b = book()
        store.attach(b)
        b.update(tick(b, "BTCUSDT", "100.0", 1))
        for _ in range(500):
            if store.flushes:
                break
            await asyncio.sleep(0.01)
        assert rows(path) == {"BTCUSDT": ("100.00", 1)}  # written by the flush task
        await store.close()

    async def final(path: Path) -> None:
        store = PriceStore(path, flush_interval=3600)
        await store.open()
        b = book()
        store.attach(b)
        b.update(tick(b, "BTCUSDT", "101.0", 2))
        await asyncio.sleep(0.05)
        assert store.flushes == 0
        await store.close()  # the next periodic flush is an hour away, but close flushes

    asyncio.run(periodic(tmp_path / "a.db"))
    asyncio.run(final(tmp_path / "b.db"))
    assert rows(tmp_path / "b.db") == {"BTCUSDT": ("101.00", 2)}


def test_failed_write_is_retried_and_newer_ticks_win(tmp_path: Path, caplog: Any) -> None:
    path = tmp_path / "p.db"

    async def scenario() -> None:
        store = PriceStore(path, flush_interval=3600)
        await store.open()
        write = store._write
        failures = [sqlite3.OperationalError("disk I/O error")]

        def flaky(ticks: list[Tick]) -> list[tuple[Tick, str]]:
            if failures:
                raise failures.pop()
            return write(ticks)

        store._write = flaky  # type: ignore[method-assign]
        b = book()
        store.attach(b)
        b.apply([tick(b, "BTCUSDT", "100.0", 1), tick(b, "ETHUSDT", "10.00", 1)])
        with caplog.at_level(logging.ERROR, logger="tickerd.store"):
            assert await store.flush() == 0
        assert "write failed, retrying: disk I/O error" in caplog.text
        assert store.pending == 2
        b.update(tick(b, "ETHUSDT", "11.00", 2))
        assert await store.flush() == 2
        await store.close()

    asyncio.run(scenario())
    assert rows(path) == {"BTCUSDT": ("100.00", 1), "ETHUSDT": ("11.00", 2)}


def test_restore_skips_unknown_symbols_and_bad_rows(tmp_path: Path, caplog: Any) -> None:
    path = tmp_path / "p.db"
    with sqlite3.connect(path) as conn:
        conn.execute(
            "CREATE TABLE last_tick (symbol TEXT PRIMARY KEY NOT NULL, price TEXT NOT NULL,"
            " time_ms INTEGER NOT NULL) WITHOUT ROWID"
        )
        conn.executemany(
            "INSERT INTO last_tick VALUES (?, ?, ?)",
            [
                ("BTCUSDT", "42283.40", 1_704_067_200_012),
                ("ETHUSDT", "2282.45", 1_704_067_200_020),
                ("GONEUSDT", "1.0", 5),  # the universe no longer has it
                ("XRPUSDT", "0.12345", 5),  # off XRPUSDT's 0.0001 grid
                ("SOLUSDT", b"150.5", 5),  # a BLOB, not TEXT
            ],
        )

    async def scenario() -> PriceBook:
        store = PriceStore(path)
        await store.open()
        b = book()
        with caplog.at_level(logging.INFO, logger="tickerd.store"):
            assert await store.restore(b) == 2
        await store.close()
        return b

    b = asyncio.run(scenario())
    assert b.ticks() == [
        Tick("BTCUSDT", "42283.40", 1_704_067_200_012),
        Tick("ETHUSDT", "2282.45", 1_704_067_200_020),
    ]
    assert "skipping 'GONEUSDT': unknown symbol 'GONEUSDT'" in caplog.text
    assert "skipping 'XRPUSDT': price 0.12345 is not a positive multiple of 0.0001" in caplog.text
    assert "skipping 'SOLUSDT'" in caplog.text
    assert "restored 2 last prices" in caplog.text


def test_bad_store_files_and_settings(tmp_path: Path) -> None:
    garbage = tmp_path / "not.db"
    garbage.write_bytes(b"this is not a database" * 100)
    with pytest.raises(StoreError, match="not a usable SQLite file"):
        asyncio.run(PriceStore(garbage).open())
    with pytest.raises(StoreError, match="cannot open store"):
        asyncio.run(PriceStore(tmp_path / "missing" / "dir" / "p.db").open())
    with pytest.raises(StoreError, match="flush interval must be > 0"):
        PriceStore(tmp_path / "p.db", flush_interval=0)


# -- in the service ----------------------------------------------------------------------


def settings(store: Path, **kw: Any) -> Settings:
    base: dict[str, Any] = {
        "host": "127.0.0.1", "port": 0, "rest_port": -1, "tick_rate": 0.0, "ops_port": -1,
        "store": str(store), "store_flush_interval": 3600.0,
    }  # fmt: skip
    base.update(kw)
    return Settings(**base)


def test_service_restores_before_the_port_opens_and_synthetic_keeps_it(
    tmp_path: Path, caplog: Any
) -> None:
    path = tmp_path / "p.db"
    with sqlite3.connect(path) as conn:
        conn.execute(
            "CREATE TABLE last_tick (symbol TEXT PRIMARY KEY NOT NULL, price TEXT NOT NULL,"
            " time_ms INTEGER NOT NULL) WITHOUT ROWID"
        )
        conn.execute("INSERT INTO last_tick VALUES ('BTCUSDT', '12345.60', 1600000000000)")

    async def scenario() -> None:
        service = Service(settings(path))
        with caplog.at_level(logging.INFO):
            await service.start()
        try:
            # The stored price survives the synthetic feed's priming (the others are primed).
            assert service.book.get("BTCUSDT") == Tick("BTCUSDT", "12345.60", 1_600_000_000_000)
            assert len(service.book) == len(service.universe.trading())
            # … and the random walk goes on from it.
            walker = next(
                w
                for w in service.feeds[0].market.walkers  # type: ignore[attr-defined]
                if w.symbol == "BTCUSDT"
            )
            assert walker.price() == "12345.60"
        finally:
            await service.stop()
        messages = [r.getMessage() for r in caplog.records]
        restored = next(i for i, m in enumerate(messages) if m.startswith("restored 1 "))
        ready = next(i for i, m in enumerate(messages) if m.startswith("tickerd ready"))
        assert restored < ready

    asyncio.run(scenario())
    stored = rows(path)
    assert stored["BTCUSDT"] == ("12345.60", 1_600_000_000_000)  # not rewritten by the restore
    assert len(stored) == len(SymbolUniverse.default().trading())  # the primed ones, at stop


def test_service_without_store_writes_nothing(tmp_path: Path) -> None:
    async def scenario() -> None:
        service = Service(
            Settings(host="127.0.0.1", port=0, rest_port=-1, tick_rate=0, ops_port=-1)
        )
        assert service.store is None
        await service.start()
        await service.stop()

    asyncio.run(scenario())
    assert list(tmp_path.iterdir()) == []


# -- restarts of a real server process ---------------------------------------------------


def all_prices(srv: Any) -> dict[str, tuple[str, int]]:
    """Every served price over the WebSocket API: symbol -> (price, time)."""
    with srv.connect() as ws:
        ws.send(json.dumps({"id": 1, "method": "ticker.price"}))
        answer = json.loads(ws.recv(timeout=5))
    assert answer["status"] == 200, answer
    return {r["symbol"]: (r["price"], r["time"]) for r in answer["result"]}


def test_sigkill_mid_stream_loses_at_most_the_flush_interval(server: Any, tmp_path: Path) -> None:
    path = tmp_path / "prices.db"
    flush_s = 1.0
    srv = server(
        "--tick-rate", "4000", "--store", str(path), "--store-flush-interval", str(flush_s),
        "--weight-limit", "10000000",
    )  # fmt: skip
    observed: list[tuple[float, dict[str, tuple[str, int]]]] = []
    with srv.connect() as ws:
        deadline = time.monotonic() + 3.0
        rid = 0
        while time.monotonic() < deadline:
            rid += 1
            ws.send(json.dumps({"id": rid, "method": "ticker.price"}))
            answer = json.loads(ws.recv(timeout=5))
            assert answer["status"] == 200
            observed.append(
                (time.time(), {r["symbol"]: (r["price"], r["time"]) for r in answer["result"]})
            )
        killed_at = time.time()
        srv.signal(signal.SIGKILL)
    assert srv.wait_exit() == -signal.SIGKILL
    stored = rows(path)
    assert len(stored) == len(observed[-1][1])

    # Whatever was served more than one flush interval (plus slack for the write itself)
    # before the kill is in the store: no stored tick is older than such an observation.
    slack = 0.5
    early = [prices for at, prices in observed if at <= killed_at - flush_s - slack]
    assert early, "no observation early enough: the test ran too briefly"
    for prices in early:
        for symbol, (_, served_time) in prices.items():
            assert stored[symbol][1] >= served_time, symbol
    # The stream really moved during the last interval, and the newest stored tick is recent.
    assert observed[-1][1] != early[-1]
    newest = max(t for _, t in stored.values())
    assert newest >= (killed_at - flush_s - slack) * 1000

    # Restarted on the same store (prices kept still), it serves exactly the stored ticks.
    again = server("--tick-rate", "0", "--store", str(path))
    assert all_prices(again) == stored


def test_sigterm_restart_loses_nothing(server: Any, tmp_path: Path) -> None:
    path = tmp_path / "prices.db"
    # A replay at full speed, a flush interval of an hour: only the final flush can write.
    srv = server(
        "--feed", "replay,synthetic", "--replay-path", str(DATA), "--replay-speed", "max",
        "--tick-rate", "0", "--store", str(path), "--store-flush-interval", "3600",
    )  # fmt: skip
    srv.wait_log("replay finished: 950 trades")
    served = all_prices(srv)
    assert served["BTCUSDT"] == ("42283.70", 1_704_067_213_967)
    assert served["ETHUSDT"] == ("2282.70", 1_704_067_215_991)
    srv.signal(signal.SIGTERM)
    assert srv.wait_exit() == 0
    assert rows(path) == served

    # Restart without the replay: the synthetic feed keeps every restored price.
    again = server("--tick-rate", "0", "--store", str(path))
    assert all_prices(again) == served


def test_sigterm_during_a_fast_stream_keeps_the_newest(server: Any, tmp_path: Path) -> None:
    path = tmp_path / "prices.db"
    srv = server("--tick-rate", "4000", "--store", str(path), "--store-flush-interval", "3600")
    time.sleep(0.3)
    last = all_prices(srv)
    srv.signal(signal.SIGTERM)
    assert srv.wait_exit() == 0
    stored = rows(path)
    for symbol, (_, served_time) in last.items():
        assert stored[symbol][1] >= served_time, symbol  # nothing older than what was served
    again = server("--tick-rate", "0", "--store", str(path))
    assert all_prices(again) == stored


# -- failures that must not stop persistence ---------------------------------------------


def test_flush_loop_survives_any_exception_and_unstorable_ticks(
    tmp_path: Path, caplog: Any
) -> None:
    path = tmp_path / "p.db"

    async def scenario() -> PriceStore:
        store = PriceStore(path, flush_interval=0.02)
        await store.open()
        write = store._write
        failures = [RuntimeError("a defect in a write")]

        def flaky(ticks: list[Tick]) -> list[tuple[Tick, str]]:
            if failures:
                raise failures.pop()
            return write(ticks)

        store._write = flaky  # type: ignore[method-assign]
        b = book()
        store.attach(b)
        # A time past int64 that bypassed make_tick: SQLite cannot hold it.
        b.apply([Tick("BTCUSDT", "1.00", 2**64), tick(b, "ETHUSDT", "10.00", 1)])
        deadline = time.monotonic() + 10
        while store.written < 1 and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        b.update(tick(b, "XRPUSDT", "0.5000", 2))
        while store.written < 2 and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        assert store._task is not None and not store._task.done()
        await store.close()
        return store

    with caplog.at_level(logging.WARNING, logger="tickerd.store"):
        store = asyncio.run(scenario())
    assert rows(path) == {"ETHUSDT": ("10.00", 1), "XRPUSDT": ("0.5000", 2)}
    assert store.dropped == 1 and store.pending == 0
    assert "write failed, retrying" in caplog.text and "a defect in a write" in caplog.text
    assert "writes resumed after 1 failed" in caplog.text
    assert "cannot store Tick(symbol='BTCUSDT'" in caplog.text and "dropped" in caplog.text


def test_restore_refuses_times_past_int64_or_ahead_of_the_clock(
    tmp_path: Path, caplog: Any
) -> None:
    path = tmp_path / "p.db"
    now = 1_700_000_000_000
    with sqlite3.connect(path) as conn:
        conn.execute(
            "CREATE TABLE last_tick (symbol TEXT PRIMARY KEY NOT NULL, price TEXT NOT NULL,"
            " time_ms INTEGER NOT NULL) WITHOUT ROWID"
        )
        conn.executemany(
            "INSERT INTO last_tick VALUES (?, ?, ?)",
            [
                ("BTCUSDT", "42283.40", 2**62),
                ("ETHUSDT", "2282.45", 2**63 - 1),
                ("SOLUSDT", "150.5000", now + 10_001),
                ("XRPUSDT", "0.5000", -5),
                ("BNBUSDT", "300.000", now + 10_000),
                ("DOGEUSDT", "0.100000", now - 1),
            ],
        )

    async def scenario() -> PriceBook:
        store = PriceStore(path)
        await store.open()
        b = book()
        with caplog.at_level(logging.INFO, logger="tickerd.store"):
            assert await store.restore(b, now) == 2
        await store.close()
        return b

    b = asyncio.run(scenario())
    assert [t.symbol for t in b.ticks()] == ["BNBUSDT", "DOGEUSDT"]
    for symbol in ("BTCUSDT", "ETHUSDT", "SOLUSDT"):
        assert f"skipping '{symbol}': time " in caplog.text
        assert "ahead of the service clock" in caplog.text
    assert "skipping 'XRPUSDT': time -5 is not a non-negative integer" in caplog.text


@pytest.mark.parametrize(
    "schema",
    [
        ["CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT)"],
        [
            (
                "CREATE TABLE last_tick (symbol TEXT PRIMARY KEY NOT NULL, price TEXT NOT NULL,"
                " time_ms INTEGER NOT NULL) WITHOUT ROWID"
            ),
            "CREATE TABLE orders (id INTEGER)",
        ],
        ["CREATE TABLE last_tick (symbol TEXT, price REAL, time_ms INTEGER)"],
        ["CREATE VIEW v AS SELECT 1"],
    ],
    ids=["foreign-table", "ours-and-foreign", "ours-reshaped", "a-view"],
)
def test_another_applications_database_is_refused_untouched(
    tmp_path: Path, schema: list[str]
) -> None:
    path = tmp_path / "app.db"
    with sqlite3.connect(path) as conn:
        for statement in schema:
            conn.execute(statement)
    before = path.read_bytes()
    with pytest.raises(StoreError, match="give --store a file of its own"):
        asyncio.run(PriceStore(path).open())
    assert path.read_bytes() == before  # not a table, not a pragma added
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone() == (0,)


def test_cli_refuses_another_applications_database_in_one_line(tmp_path: Path) -> None:
    import subprocess
    import sys

    path = tmp_path / "app.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT)")
    done = subprocess.run(
        [sys.executable, "-m", "tickerd", "serve", "--port", "0", "--rest-port", "-1",
         "--store", str(path)],
        check=False, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1] == (
        f"tickerd: store {path} is another application's database (it holds table users); "
        "give --store a file of its own"
    )
    assert "Traceback" not in done.stderr


def test_failed_commit_is_rolled_back_and_writes_resume_then_sigterm_exits_0(
    server: Any, tmp_path: Path
) -> None:
    """A disk that fills up (RLIMIT_FSIZE on the server process: writes past it fail with
    EFBIG, which SQLite reports at COMMIT, when the write-ahead log grows) and frees up."""
    import resource

    from tickerd.control import ControlClient

    path = tmp_path / "prices.db"
    srv = server(
        "--tick-rate", "0", "--store", str(path), "--store-flush-interval", "0.05",
        "--control-port", "0", "--control-token", "t0ken",
    )  # fmt: skip
    control = ControlClient(srv.control_url, "t0ken")
    wal = Path(str(path) + "-wal")
    deadline = time.monotonic() + 10
    while not (wal.exists() and wal.stat().st_size) and time.monotonic() < deadline:
        time.sleep(0.02)
    size = wal.stat().st_size
    unlimited = resource.prlimit(srv.pid, resource.RLIMIT_FSIZE)
    resource.prlimit(srv.pid, resource.RLIMIT_FSIZE, (size, unlimited[1]))
    try:
        control.call("price.set", symbol="BTCUSDT", price="12345.60", time_ms=1_700_000_000_000)
        srv.wait_log("write failed, retrying", timeout=10)
    finally:
        resource.prlimit(srv.pid, resource.RLIMIT_FSIZE, unlimited)
    srv.wait_log("writes resumed after", timeout=10)
    control.call("price.set", symbol="ETHUSDT", price="3150.25", time_ms=1_700_000_000_001)
    srv.signal(signal.SIGTERM)
    assert srv.wait_exit() == 0, srv.log()
    assert "Traceback" not in srv.log()
    stored = rows(path)
    assert stored["BTCUSDT"] == ("12345.60", 1_700_000_000_000)
    assert stored["ETHUSDT"] == ("3150.25", 1_700_000_000_001)

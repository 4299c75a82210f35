"""Recording (``--record DIR``): a mirror of the fake upstream writes Binance's daily
aggTrades files, survives a SIGKILL and a torn last line without a duplicate or a torn
row, and a replay of the folder serves every symbol's final price and time exactly as the
mirror served them."""

from __future__ import annotations

import asyncio
import csv
import hashlib
import io
import json
import signal
import time
import zipfile
from pathlib import Path
from typing import Any

import pytest

from fake_binance import ThreadedFake, eventually
from tickerd import Settings
from tickerd.book import PriceBook
from tickerd.clock import ManualClock
from tickerd.feeds.mirror_state import MirrorState
from tickerd.feeds.recording import HEADER, TradeRecorder, day_of, shortest
from tickerd.models import Tick, Trade
from tickerd.symbols import SymbolUniverse

pytestmark = pytest.mark.timeout(90)

SYMBOLS = {"BTCUSDT": "97000.10", "ETHUSDT": "3150.01", "YFIUSDT": "8123.0", "VETUSDT": "0.031234"}
LATER = {"BTCUSDT": "97001.20", "ETHUSDT": "3151.00", "YFIUSDT": "8125.0", "VETUSDT": "0.031300"}
AGG_HEADER = HEADER.decode().strip().split(",")


def _record(rec: TradeRecorder, symbol: str, event: dict[str, Any]) -> None:
    """Record ``event`` as the mirror does: its id, time and price passed as read."""
    rec.record_event(symbol, event.get("a"), event.get("T"), event.get("p"), event)


def rows_of(folder: Path) -> dict[str, list[list[str]]]:
    """Every recorded row per symbol, in file (date) order, csv or zip."""
    out: dict[str, list[list[str]]] = {}
    for sym_dir in sorted((folder / "futures/um/daily/aggTrades").iterdir()):
        rows: list[list[str]] = []
        for f in sorted(sym_dir.iterdir()):
            if f.suffix == ".csv":
                text = f.read_text()
            elif f.suffix == ".zip":
                with zipfile.ZipFile(f) as zf:
                    text = zf.read(f.stem + ".csv").decode()
            else:
                continue
            assert text.endswith("\n"), f  # no torn last line
            table = list(csv.reader(io.StringIO(text)))
            assert table[0] == AGG_HEADER, f
            rows.extend(table[1:])
        out[sym_dir.name] = rows
    return out


def ask_all(srv: Any, symbols: list[str]) -> dict[str, dict[str, Any]]:
    answers = {}
    with srv.connect() as ws:
        for i, symbol in enumerate(symbols):
            ws.send(json.dumps({"id": i, "method": "ticker.price", "params": {"symbol": symbol}}))
            answers[symbol] = json.loads(ws.recv())["result"]
    return answers


def test_record_kill_restart_then_replay_the_folder(tmp_path: Path, server: Any) -> None:
    threaded = ThreadedFake()
    fake = threaded.fake
    record = tmp_path / "rec"
    names = sorted(SYMBOLS)
    now = int(time.time() * 1000) - 2_000
    today = now - 200
    midnight = today - today % 86_400_000
    yesterday = midnight - 3_600_000  # 23:00 the day before
    flags = ("--feed", "mirror", "--mirror-symbols", ",".join(names),
             "--mirror-rest-url", fake.rest_url, "--mirror-stream-url", fake.stream_url,
             "--record", str(record))  # fmt: skip
    try:
        srv = server(*flags)
        threaded.call(eventually(lambda: len(fake.open_conns()) == 1, timeout=10))
        for k in range(3):  # yesterday, then today: the symbols' first days get finished
            for symbol in names:
                threaded.call(fake.trade(symbol, SYMBOLS[symbol], yesterday + k))
        for k in range(2):
            for symbol in names:
                threaded.call(fake.trade(symbol, SYMBOLS[symbol], today + k))
        for symbol in names:
            zipped = (
                record
                / f"futures/um/daily/aggTrades/{symbol}/{symbol}-aggTrades-{day_of(yesterday)}.zip"
            )
            threaded.call(eventually(zipped.exists, timeout=10, what=f"{zipped.name}"))
        csv_today = {s: record / f"futures/um/daily/aggTrades/{s}/{s}-aggTrades-{day_of(today)}.csv"
                     for s in names}  # fmt: skip
        threaded.call(eventually(lambda: all(p.exists() and p.read_text().count("\n") == 3
                                             for p in csv_today.values()), timeout=10,
                                 what="today's rows flushed"))  # fmt: skip
        last_btc = fake.agg_id - 3  # BTCUSDT is the first symbol of the last round
        srv.signal(signal.SIGKILL)
        srv.wait_exit(10)
        with open(csv_today["ETHUSDT"], "ab") as f:
            f.write(b"99999999,3150.0")  # a write the kill tore
        srv = server(*flags)
        threaded.call(eventually(lambda: len(fake.open_conns()) == 1, timeout=10))
        # The last recorded BTCUSDT trade again (same id, same time): applied, not recorded.
        threaded.call(fake.trade("BTCUSDT", SYMBOLS["BTCUSDT"], today + 1, agg_id=last_btc))
        for k, symbol in enumerate(names):
            threaded.call(fake.trade(symbol, LATER[symbol], today + 10 + k))
        expected = {
            s: {"symbol": s, "price": LATER[s], "time": today + 10 + k} for k, s in enumerate(names)
        }
        for symbol in names:
            p = csv_today[symbol]
            threaded.call(eventually(lambda p=p: p.read_text().count("\n") == 4, timeout=10))
        answers = ask_all(srv, names)
        assert answers == expected
        srv.signal(signal.SIGTERM)
        assert srv.wait_exit(10) == 0
    finally:
        threaded.close()
    rows = rows_of(record)
    assert sorted(rows) == names
    for symbol, table in rows.items():
        ids = [int(r[0]) for r in table]
        assert ids == sorted(ids) and len(set(ids)) == len(ids) == 6, (symbol, ids)
        assert all(len(r) == 7 and r[6] in ("true", "false") for r in table)
        assert [r[1] for r in table][:5] == [shortest(SYMBOLS[symbol])] * 5
    for checksum in record.rglob("*.CHECKSUM"):
        digest, name = checksum.read_text().split()
        assert hashlib.sha256(checksum.with_name(name).read_bytes()).hexdigest() == digest
    assert len(list(record.rglob("*.zip"))) == len(names)
    replayed = asyncio.run(replay_answers(record, names))
    assert replayed == expected


async def replay_answers(folder: Path, symbols: list[str]) -> dict[str, dict[str, Any]]:
    from websockets.asyncio.client import connect

    from tickerd.app import Service
    from tickerd.feeds.replay import ReplayFeed

    service = Service(Settings(port=0, rest_port=-1, feed="replay", replay_path=str(folder),
                               replay_speed="max", ops_port=-1))  # fmt: skip
    await service.start()
    try:
        feed = service.feeds[0]
        assert isinstance(feed, ReplayFeed)
        await asyncio.wait_for(feed.wait_finished(), 30)
        assert feed.status()["state"] == "finished"
        answers = {}
        async with connect(service.url, proxy=None, compression=None) as ws:
            for i, symbol in enumerate(symbols):
                await ws.send(json.dumps({"id": i, "method": "ticker.price",
                                          "params": {"symbol": symbol}}))  # fmt: skip
                answers[symbol] = json.loads(await ws.recv())["result"]
        return answers
    finally:
        await service.stop()


# -- the recorder's own bounds -------------------------------------------------------------------


def test_buffer_is_bounded_and_flushed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tickerd.feeds import recording

    monkeypatch.setattr(recording, "MAX_BUFFER_ROWS", 5)
    clock = ManualClock(1_704_067_200_000)
    rec = TradeRecorder(tmp_path, clock)
    path = tmp_path / "futures/um/daily/aggTrades/BTCUSDT/BTCUSDT-aggTrades-2024-01-01.csv"
    for i in range(3):
        rec.record(Tick("BTCUSDT", "42000.10", clock.now_ms() + i), i, "0.5", i, i, False)
    assert path.read_bytes() == HEADER  # buffered: fewer than 5 rows
    for i in range(3, 10):
        rec.record(Tick("BTCUSDT", "42000.10", clock.now_ms() + i), i, "0.5", i, i, True)
    assert path.read_bytes().count(b"\n") > 1  # written once the bound was reached
    rec.tick()
    assert path.read_bytes().count(b"\n") == 11
    assert rec.status()["rows"] == 10
    rec.close()


def test_restart_drops_duplicates_and_repairs_a_torn_line(tmp_path: Path) -> None:
    clock = ManualClock(1_704_067_200_000)
    rec = TradeRecorder(tmp_path, clock)
    for i in range(5):
        rec.record(Tick("ETHUSDT", "2281.50", clock.now_ms() + i), 100 + i, "1.0", 1, 2, False)
    rec.close()
    path = tmp_path / "futures/um/daily/aggTrades/ETHUSDT/ETHUSDT-aggTrades-2024-01-01.csv"
    with open(path, "ab") as f:
        f.write(b"105,2281.5,1.0,1,2,17040")  # torn
    rec = TradeRecorder(tmp_path, clock)
    for i in range(3, 8):  # 103 and 104 again, then 105..107
        rec.record(Tick("ETHUSDT", "2281.60", clock.now_ms() + 10 + i), 100 + i, "1.0", 1, 2, True)
    rec.close()
    ids = [int(line.split(b",")[0]) for line in path.read_bytes().splitlines()[1:]]
    assert ids == [100, 101, 102, 103, 104, 105, 106, 107]
    assert rec.duplicates == 2


def test_mirror_events_after_a_restart_skip_what_was_written(tmp_path: Path) -> None:
    # The mirror re-applies the ids around a restart: a batch that starts at or below the
    # last id written (into a closed file, then into the open one) drops those rows.
    clock = ManualClock(1_704_067_200_000)
    t = clock.now_ms()

    def event(symbol: str, agg: int, price: str) -> dict[str, Any]:
        return {"s": symbol, "a": agg, "p": price, "q": "1.0", "f": agg, "l": agg,
                "T": t + agg, "m": False}  # fmt: skip

    rec = TradeRecorder(tmp_path, clock)
    for agg in range(100, 105):
        _record(rec, "ETHUSDT", event("ETHUSDT", agg, "2281.50"))
        _record(rec, "DOGEUSDT", event("DOGEUSDT", agg, "0.063920"))
    rec.close()
    rec = TradeRecorder(tmp_path, clock)
    for first, last in ((103, 106), (105, 111)):  # 103, 104, then 105 again
        for agg in range(first, last):
            _record(rec, "ETHUSDT", event("ETHUSDT", agg, "2281.60"))
            _record(rec, "DOGEUSDT", event("DOGEUSDT", agg, "0.063930"))
        rec.flush()
    rec.close()
    base = tmp_path / "futures/um/daily/aggTrades"
    for symbol, old, new in (("ETHUSDT", "2281.5", "2281.6"), ("DOGEUSDT", "0.06392", "0.06393")):
        rows = (base / symbol / f"{symbol}-aggTrades-2024-01-01.csv").read_text().splitlines()
        assert rows[1:] == [
            f"{agg},{old if agg < 105 else new},1.0,{agg},{agg},{t + agg},false"
            for agg in range(100, 111)
        ]
    assert rec.duplicates == 6 and rec.rows == 12


def test_a_finished_day_left_as_csv_is_zipped_at_start(tmp_path: Path) -> None:
    clock = ManualClock(1_704_067_200_000 + 3_600_000)
    rec = TradeRecorder(tmp_path, clock)
    rec.record(Tick("BTCUSDT", "42000.10", 1_704_067_200_000 - 5), 7, "0.5", 7, 7, False)
    rec.flush()
    # Killed before the day was closed: the next start finishes it.
    rec2 = TradeRecorder(tmp_path, clock)
    rec2.close()
    folder = tmp_path / "futures/um/daily/aggTrades/BTCUSDT"
    assert sorted(p.name for p in folder.iterdir()) == [
        "BTCUSDT-aggTrades-2023-12-31.zip",
        "BTCUSDT-aggTrades-2023-12-31.zip.CHECKSUM",
    ]


def test_a_row_for_a_finished_day_is_late_never_reopening_its_zip(tmp_path: Path) -> None:
    day2 = 1_704_067_200_000  # 2024-01-01T00:00Z
    clock = ManualClock(day2 - 10_000)
    rec = TradeRecorder(tmp_path, clock)
    rec.record(Tick("BTCUSDT", "42000.10", day2 - 20_000), 1, "0.5", 1, 1, False)
    clock.advance(120_000)  # past midnight by more than the grace: the day is over
    rec.tick()
    assert rec.pending and rec.status()["open_files"] == 0
    rec.record(Tick("BTCUSDT", "42000.20", day2 - 5_000), 2, "0.5", 2, 2, False)
    rec.close()
    assert rec.late == 1 and rec.files_finished == 1
    folder = tmp_path / "futures/um/daily/aggTrades/BTCUSDT"
    with zipfile.ZipFile(folder / "BTCUSDT-aggTrades-2023-12-31.zip") as zf:
        text = zf.read("BTCUSDT-aggTrades-2023-12-31.csv")
    assert text == HEADER + b"1,42000.1,0.5,1,1,1704067180000,false\n"
    again = TradeRecorder(tmp_path, clock)  # after a restart too
    again.record(Tick("BTCUSDT", "42000.20", day2 - 4_000), 3, "0.5", 3, 3, False)
    again.close()
    assert again.late == 1 and sorted(p.name for p in folder.iterdir()) == [
        "BTCUSDT-aggTrades-2023-12-31.zip",
        "BTCUSDT-aggTrades-2023-12-31.zip.CHECKSUM",
    ]


def test_the_mirror_records_trades_while_a_stream_subscriber_listens(tmp_path: Path) -> None:
    # With a market-stream subscriber the book wants trades and stores Trade ticks; the
    # recording of the same events stays as without one.
    clock = ManualClock(1_704_067_200_000)
    t = clock.now_ms()
    book = PriceBook(SymbolUniverse.default())
    state = MirrorState(book)
    rec = TradeRecorder(tmp_path, clock)
    state.record = rec.record_event
    for wants, agg in ((False, 1), (True, 2)):
        book.wants_trades = wants
        data = {"e": "aggTrade", "E": t + agg, "s": "BTCUSDT", "a": agg, "p": f"42000.{agg}0",
                "q": "0.010", "f": agg * 10, "l": agg * 10 + 1, "T": t + agg, "m": True}  # fmt: skip
        message = json.dumps({"stream": "btcusdt@aggTrade", "data": data})
        assert state.on_event(message, {"BTCUSDT"}, 1.0, t + 10) is not None
    assert isinstance(book.get("BTCUSDT"), Trade)
    rec.close()
    path = tmp_path / "futures/um/daily/aggTrades/BTCUSDT/BTCUSDT-aggTrades-2024-01-01.csv"
    assert path.read_bytes() == HEADER + (
        b"1,42000.1,0.01,10,11,1704067200001,true\n2,42000.2,0.01,20,21,1704067200002,true\n"
    )


def test_the_push_ingest_is_recorded_and_replays(tmp_path: Path) -> None:
    import aiohttp

    from tickerd.app import Service
    from tickerd.feeds.push import PushFeed

    record = tmp_path / "rec"
    token = "t0ken-for-the-test"
    now = int(time.time() * 1000) - 5_000
    pushed = [
        {"symbol": "BTCUSDT", "price": "97000.1", "time": now},
        {"symbol": "YFIUSDT", "price": "8123", "time": now + 1},
        {"symbol": "BTCUSDT", "price": "97000.3", "time": now + 2},
        {"symbol": "VETUSDT", "price": "0.031234", "time": now + 3},
    ]
    expected = {
        "BTCUSDT": {"symbol": "BTCUSDT", "price": "97000.30", "time": now + 2},
        "YFIUSDT": {"symbol": "YFIUSDT", "price": "8123.0", "time": now + 1},
        "VETUSDT": {"symbol": "VETUSDT", "price": "0.031234", "time": now + 3},
    }

    async def scenario() -> None:
        cfg = Settings(port=0, rest_port=-1, feed="push", push_token=token, push_port=0,
                       record=str(record), ops_port=-1)  # fmt: skip
        service = Service(cfg)
        await service.start()
        try:
            push = next(f for f in service.feeds if isinstance(f, PushFeed))
            async with aiohttp.ClientSession() as session:
                for batch in (pushed[:2], pushed[2:]):
                    async with session.post(
                        push.url + "/ingest", json={"ticks": batch},
                        headers={"Authorization": f"Bearer {token}"},
                    ) as response:  # fmt: skip
                        assert response.status == 200, await response.text()
            health = service.health()["feeds"]["record"]
            assert health["state"] == "up" and health["feed"] == "push"
        finally:
            await service.stop()

    asyncio.run(scenario())
    rows = rows_of(record)
    assert {s: [(r[0], r[1], r[5]) for r in t] for s, t in rows.items()} == {
        "BTCUSDT": [("1", "97000.1", str(now)), ("2", "97000.3", str(now + 2))],
        "VETUSDT": [("1", "0.031234", str(now + 3))],
        "YFIUSDT": [("1", "8123.0", str(now + 1))],
    }
    assert asyncio.run(replay_answers(record, sorted(expected))) == expected


def test_record_needs_a_feed_to_record(tmp_path: Path) -> None:
    from tickerd import SymbolUniverse
    from tickerd.feeds import FeedConfigError, build_feeds

    with pytest.raises(
        FeedConfigError, match="--record records the trades of --feed mirror or push"
    ):
        build_feeds(Settings(feed="synthetic", record=str(tmp_path)), SymbolUniverse.default(),
                    ManualClock())  # fmt: skip
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(FeedConfigError, match="cannot create"):
        build_feeds(Settings(feed="mirror", record=str(blocker / "x")), SymbolUniverse.default(),
                    ManualClock())  # fmt: skip


def test_the_readme_shows_the_header_and_a_row_as_recorded() -> None:
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
    block = readme.split("```text recording-format\n", 1)[1].split("```", 1)[0]
    header, row = block.splitlines()
    assert header.split(",") == AGG_HEADER
    assert len(row.split(",")) == len(AGG_HEADER) and row.endswith(("true", "false"))

"""Replays of several symbols at once, each on its own tick size and ``pricePrecision``.

The files are written here in Binance's published layouts (binance/binance-public-data
README: daily and monthly, trades and aggTrades, zipped with a ``.CHECKSUM`` or plain, with
and without the header row) for symbols of the bundled universe whose grids differ; the
expected answers are computed with :class:`decimal.Decimal` from the rows written, not
with tickerd's parser, and read back through a real server on a real socket.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
import zipfile
from dataclasses import dataclass
from decimal import Decimal
from importlib import resources
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tickerd import Settings, SymbolUniverse
from tickerd.feeds.replay import ReplayFeed, ReplaySource
from tickerd.feeds.state import FeedState

pytestmark = pytest.mark.timeout(120)

_INFO = json.loads(resources.files("tickerd.data").joinpath("exchange_info.json").read_text())
GRID = {
    s["symbol"]: (
        Decimal(next(f for f in s["filters"] if f["filterType"] == "PRICE_FILTER")["tickSize"]),
        int(s["pricePrecision"]),
    )
    for s in _INFO["symbols"]
}
# One symbol per grid the bundled universe has, from 0.10 to 1 and 0.0000010.
GRIDS_UNDER_TEST = {
    "BTCUSDT": ("0.10", 2),
    "ETHUSDT": ("0.01", 2),
    "LINKUSDT": ("0.001", 3),
    "TRXUSDT": ("0.00001", 5),
    "VETUSDT": ("0.000001", 6),
    "YFIUSDT": ("1", 1),
    "DOGEUSDT": ("0.000010", 6),
    "1000BONKUSDT": ("0.0000010", 7),
}
HEADERS = {
    "trades": "id,price,qty,quote_qty,time,is_buyer_maker",
    "aggTrades": "agg_trade_id,price,quantity,first_trade_id,last_trade_id,transact_time,"
    "is_buyer_maker",
}
DAY_MS = 86_400_000
DEC_2023 = 1_701_388_800_000  # 2023-12-01T00:00:00Z
JAN_1_2024 = 1_704_067_200_000


def binance_text(price: Decimal) -> str:
    """A price as Binance's files print it: the shortest decimal, one fraction digit at least."""
    text = format(price.normalize(), "f")
    return text if "." in text else text + ".0"


def served(symbol: str, price_text: str) -> str:
    """The price as tickerd must serve it: at the symbol's pricePrecision, fixed-point."""
    precision = GRID[symbol][1]
    return format(Decimal(price_text).quantize(Decimal(1).scaleb(-precision)), "f")


@dataclass
class Written:
    """The rows of one file as written: (price text, time ms) in file order."""

    path: Path
    rows: list[tuple[str, int]]


def write_file(
    folder: Path,
    symbol: str,
    kind: str,
    period: str,
    rows: list[tuple[str, int]],
    *,
    header: bool,
    zipped: bool,
    checksum: bool,
) -> Written:
    """One file in Binance's layout (``kind`` trades or aggTrades)."""
    lines = [HEADERS[kind]] if header else []
    for i, (price, t) in enumerate(rows):
        if kind == "trades":
            lines.append(f"{5000 + i},{price},0.010,{price},{t},{'true' if i % 2 else 'false'}")
        else:
            lines.append(f"{700 + i},{price},1.5,{9000 + 2 * i},{9001 + 2 * i},{t},false")
    body = ("\n".join(lines) + "\n").encode()
    stem = f"{symbol}-{kind}-{period}"
    target = folder / symbol
    target.mkdir(parents=True, exist_ok=True)
    if not zipped:
        path = target / f"{stem}.csv"
        path.write_bytes(body)
        return Written(path, rows)
    path = target / f"{stem}.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(f"{stem}.csv", body)
    if checksum:
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        (target / f"{path.name}.CHECKSUM").write_text(f"{digest}  {path.name}\n")
    return Written(path, rows)


def on_grid_rows(
    rng: random.Random, symbol: str, start_ms: int, span_ms: int, n: int
) -> list[tuple[str, int]]:
    """``n`` rows of on-grid prices at distinct, increasing times inside the span."""
    tick = GRID[symbol][0]
    times = sorted(rng.sample(range(start_ms, start_ms + span_ms), n))
    return [(binance_text(tick * rng.randint(1, 5_000_000)), t) for t in times]


def write_symbol(folder: Path, symbol: str, index: int, rng: random.Random) -> list[Written]:
    """A monthly file and two daily files of one symbol, every layout variant among them."""
    first, second = ("trades", "aggTrades") if index % 2 else ("aggTrades", "trades")
    monthly_rows = on_grid_rows(rng, symbol, DEC_2023, 31 * DAY_MS, 40)
    # Monthly files hold rows out of order: swap two neighbours, as Binance's do.
    monthly_rows[5], monthly_rows[6] = monthly_rows[6], monthly_rows[5]
    return [
        write_file(folder, symbol, first, "2023-12", monthly_rows,
                   header=index % 3 == 0, zipped=True, checksum=True),
        write_file(folder, symbol, second, "2024-01-01",
                   on_grid_rows(rng, symbol, JAN_1_2024, DAY_MS, 30),
                   header=index % 2 == 0, zipped=False, checksum=False),
        write_file(folder, symbol, "trades", "2024-01-02",
                   on_grid_rows(rng, symbol, JAN_1_2024 + DAY_MS, DAY_MS, 30),
                   header=index % 2 == 1, zipped=True, checksum=index % 2 == 0),
    ]  # fmt: skip


def final_answers(written: dict[str, list[Written]]) -> dict[str, dict[str, object]]:
    """Each symbol's last trade (latest time) as ``ticker.price`` must answer it."""
    out: dict[str, dict[str, object]] = {}
    for symbol, files in written.items():
        price, t = max((row for f in files for row in f.rows), key=lambda r: r[1])
        out[symbol] = {"symbol": symbol, "price": served(symbol, price), "time": t}
    return out


def test_the_grids_under_test_are_the_bundled_ones() -> None:
    for symbol, (tick, precision) in GRIDS_UNDER_TEST.items():
        assert GRID[symbol] == (Decimal(tick), precision), symbol


def test_six_grids_in_one_replay_served_exactly_over_a_socket(tmp_path: Path) -> None:
    from websockets.asyncio.client import connect

    from tickerd.app import Service

    rng = random.Random(13)
    written = {s: write_symbol(tmp_path, s, i, rng) for i, s in enumerate(GRIDS_UNDER_TEST)}
    expected = final_answers(written)
    # The case of a symbol whose precision exceeds another's (BTCUSDT vs 1000BONKUSDT).
    assert expected["BTCUSDT"]["price"].count(".") == 1  # type: ignore[union-attr]

    async def scenario() -> None:
        cfg = Settings(host="127.0.0.1", port=0, rest_port=-1, feed="replay",
                       replay_path=str(tmp_path), replay_speed="max", ops_port=-1)  # fmt: skip
        service = Service(cfg)
        await service.start()
        try:
            feed = service.feeds[0]
            assert isinstance(feed, ReplayFeed)
            await asyncio.wait_for(feed.wait_finished(), 60)
            status = feed.status()
            assert status["state"] == FeedState.FINISHED and status["error"] is None
            assert status["applied"] == 100 * len(GRIDS_UNDER_TEST)
            assert status["files"] == status["files_done"] == 3 * len(GRIDS_UNDER_TEST)
            assert status["done"] == 1.0
            async with connect(service.url, proxy=None, compression=None) as ws:
                for rid, symbol in enumerate(expected):
                    await ws.send(json.dumps({"id": rid, "method": "ticker.price",
                                              "params": {"symbol": symbol}}))  # fmt: skip
                    answer = json.loads(await ws.recv())
                    assert answer["status"] == 200, answer
                    assert answer["result"] == expected[symbol]
                await ws.send(json.dumps({"id": "all", "method": "ticker.price"}))
                everything = json.loads(await ws.recv())
                got = {r["symbol"]: r for r in everything["result"] if r["symbol"] in expected}
                assert got == expected
        finally:
            await service.stop()

    asyncio.run(scenario())


def test_every_row_of_every_symbol_is_on_its_own_grid(tmp_path: Path) -> None:
    """Not only the final answers: every trade, in time order, at its symbol's precision."""
    rng = random.Random(7)
    written = {s: write_symbol(tmp_path, s, i, rng) for i, s in enumerate(GRIDS_UNDER_TEST)}
    source = ReplaySource([tmp_path], SymbolUniverse.default())
    ticks, error = source.take(10_000)
    assert error is None and source.exhausted
    rows = sorted(
        ((t, s, served(s, p)) for s, files in written.items() for f in files for p, t in f.rows),
        key=lambda r: (r[0], r[1]),
    )
    assert [(t.time_ms, t.symbol, t.price) for t in ticks] == rows


def test_an_off_grid_price_names_its_own_symbols_tick(tmp_path: Path) -> None:
    # 0.06963 is on DOGEUSDT's grid (0.00001) but not on ETHUSDT's (0.01): no mix-up.
    write_file(tmp_path, "DOGEUSDT", "trades", "2024-01-01", [("0.06963", JAN_1_2024)],
               header=True, zipped=False, checksum=False)  # fmt: skip
    write_file(tmp_path, "ETHUSDT", "trades", "2024-01-01", [("2281.5", JAN_1_2024 + 1)],
               header=True, zipped=False, checksum=False)  # fmt: skip
    ticks, error = ReplaySource([tmp_path], SymbolUniverse.default()).take(10)
    assert error is None
    assert [(t.symbol, t.price) for t in ticks] == [
        ("DOGEUSDT", "0.069630"),
        ("ETHUSDT", "2281.50"),
    ]
    write_file(tmp_path, "ETHUSDT", "trades", "2024-01-02", [("2281.555", JAN_1_2024 + DAY_MS)],
               header=True, zipped=False, checksum=False)  # fmt: skip
    source = ReplaySource([tmp_path], SymbolUniverse.default())
    _, error = source.take(10)
    assert error is not None
    assert (
        "ETHUSDT-trades-2024-01-02.csv:2: price '2281.555' is not a positive multiple of 0.01"
        in str(error)
    )


ALL_SYMBOLS = sorted(GRID)


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    symbols=st.lists(st.sampled_from(ALL_SYMBOLS), min_size=1, max_size=12, unique=True),
    seed=st.integers(0, 2**32 - 1),
)
def test_any_symbol_set_of_the_universe_replays_on_its_own_grids(
    tmp_path_factory: pytest.TempPathFactory, symbols: list[str], seed: int
) -> None:
    folder = tmp_path_factory.mktemp("grids")
    rng = random.Random(seed)
    written: dict[str, list[Written]] = {}
    for i, symbol in enumerate(symbols):
        kind = "trades" if rng.random() < 0.5 else "aggTrades"
        rows = on_grid_rows(rng, symbol, JAN_1_2024, DAY_MS, rng.randint(1, 20))
        written[symbol] = [write_file(folder, symbol, kind, "2024-01-01", rows,
                                      header=rng.random() < 0.5, zipped=i % 2 == 1,
                                      checksum=rng.random() < 0.5)]  # fmt: skip
    source = ReplaySource([folder], SymbolUniverse.default())
    ticks, error = source.take(10_000)
    assert error is None and source.symbols == set(symbols)
    last = {t.symbol: {"symbol": t.symbol, "price": t.price, "time": t.time_ms} for t in ticks}
    assert last == final_answers(written)

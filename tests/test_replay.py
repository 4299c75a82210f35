"""Replay of Binance history: the files' format, exact prices and times, speeds, bad rows.

Expected values come from two places that do not use tickerd's parser: literal constants
read off the sample files (``tests/data/replay``, see its SOURCES.md), and :func:`oracle`,
which reads a file with the csv module and :class:`decimal.Decimal`.

Bad rows, as the replay defines them: the replay stops at the first bad row; every row
before it in its file has been applied (in time order with the other files up to then),
the bad row and everything after it have not; the error names the file, the line and why.
"""

from __future__ import annotations

import asyncio
import csv
import hashlib
import io
import json
import re
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Sequence
from decimal import Decimal
from importlib import resources
from itertools import pairwise
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tickerd import PriceBook, Settings, SymbolUniverse, TickRejected
from tickerd.clock import ReplayClock
from tickerd.feeds import FeedConfigError, build_feeds
from tickerd.feeds.binance_files import ReplayFileError, describe, discover
from tickerd.feeds.replay import MAX_STEP, ReplayFeed, ReplaySource, ReplaySpeed
from tickerd.feeds.trade_rows import PriceGrid, parse_rows
from tickerd.models import Tick

pytestmark = pytest.mark.timeout(60)

DATA = Path(__file__).parent / "data" / "replay"
BTC_DAY = DATA / "BTCUSDT-trades-2024-01-01.csv"  # header
ETH_AGG = DATA / "ETHUSDT-aggTrades-2022-08-10.csv"  # no header
BTC_MONTH = DATA / "BTCUSDT-trades-2023-12.zip"  # zip + .CHECKSUM, two rows out of order
ETH_US = DATA / "ETHUSDT-trades-2024-01-01.csv"  # µs times

_INFO = json.loads(resources.files("tickerd.data").joinpath("exchange_info.json").read_text())
PRECISION = {s["symbol"]: s["pricePrecision"] for s in _INFO["symbols"]}
NAME_RE = re.compile(r"([A-Z0-9_]+)-(trades|aggTrades)-[\d-]+\.(csv|zip)")


# -- an independent reader ---------------------------------------------------------------


def oracle(path: Path) -> list[Tick]:
    """A file's rows in file order, read with csv + Decimal (no tickerd code)."""
    m = NAME_RE.fullmatch(path.name)
    assert m, path
    symbol, kind = m.group(1), m.group(2)
    if path.suffix == ".zip":
        with zipfile.ZipFile(path) as zf:
            text = zf.read(path.stem + ".csv").decode()
    else:
        text = path.read_text()
    rows = [r for r in csv.reader(io.StringIO(text)) if r]
    if not rows[0][0].isdigit():
        rows = rows[1:]
    time_col = 4 if kind == "trades" else 5
    quantum = Decimal(1).scaleb(-PRECISION[symbol])
    out = []
    for r in rows:
        t = int(r[time_col])
        out.append(
            Tick(symbol, str(Decimal(r[1]).quantize(quantum)), t // 1000 if t >= 10**14 else t)
        )
    return out


def by_time(ticks: Sequence[Tick]) -> list[Tick]:
    return sorted(ticks, key=lambda t: t.time_ms)  # stable: equal times keep file order


def last_per_symbol(ticks: Sequence[Tick]) -> dict[str, Tick]:
    return {t.symbol: t for t in ticks}


def copy_sample(tmp_path: Path, src: Path, name: str | None = None) -> Path:
    dst = tmp_path / (name or src.name)
    shutil.copy(src, dst)
    return dst


def rewrite_line(path: Path, line_no: int, new: str) -> None:
    lines = path.read_text().split("\n")
    lines[line_no - 1] = new
    path.write_text("\n".join(lines))


def universe() -> SymbolUniverse:
    return SymbolUniverse.default()


# -- the format --------------------------------------------------------------------------


def test_trades_file_with_header() -> None:
    ticks = list(parse_rows(BTC_DAY))
    assert len(ticks) == 300
    # Row 1: 4385000000,42283.4,0.001,42.2834,1704067200012,true — re-rendered at 2 decimals.
    assert ticks[0] == Tick("BTCUSDT", "42283.40", 1_704_067_200_012)
    assert ticks[-1] == Tick("BTCUSDT", "42283.70", 1_704_067_213_967)
    assert ticks == by_time(oracle(BTC_DAY))


def test_agg_trades_file_without_header() -> None:
    ticks = list(parse_rows(ETH_AGG))
    assert len(ticks) == 250
    # Row 1: 1112000000,1702.41,12.0,2589000000,2589000000,1660089600105,false
    assert ticks[0] == Tick("ETHUSDT", "1702.41", 1_660_089_600_105)
    assert ticks[2] == Tick("ETHUSDT", "1702.44", 1_660_089_600_385)
    assert ticks == by_time(oracle(ETH_AGG))


def test_microsecond_times_become_milliseconds() -> None:
    ticks = list(parse_rows(ETH_US))
    # Row 1: 3580000000,2282.45,0.005,11.4122,1704067200020063,true
    assert ticks[0] == Tick("ETHUSDT", "2282.45", 1_704_067_200_020)
    assert all(10**12 < t.time_ms < 10**13 for t in ticks)
    assert ticks == by_time(oracle(ETH_US))


def test_zip_with_checksum_and_rows_out_of_order() -> None:
    ticks = list(parse_rows(BTC_MONTH))
    assert len(ticks) == 200
    times = [t.time_ms for t in ticks]
    assert times == sorted(times)
    assert ticks == by_time(oracle(BTC_MONTH))
    # Lines 44/45 of the CSV hold ids 53 (…326 ms, 37799.8) and 54 (…321 ms, 37800.0):
    # id 54 traded first, so its price is the older one.
    i = times.index(1_701_686_925_321)
    assert ticks[i : i + 2] == [
        Tick("BTCUSDT", "37800.00", 1_701_686_925_321),
        Tick("BTCUSDT", "37799.80", 1_701_686_925_326),
    ]
    assert all(1_701_388_800_000 <= t < 1_704_067_200_000 for t in times)  # December 2023


def test_zip_without_checksum_file_is_read(tmp_path: Path) -> None:
    z = copy_sample(tmp_path, BTC_MONTH)
    assert list(parse_rows(z)) == list(parse_rows(BTC_MONTH))


def test_zip_checksum_mismatch_is_a_clear_error(tmp_path: Path) -> None:
    z = copy_sample(tmp_path, BTC_MONTH)
    side = tmp_path / (z.name + ".CHECKSUM")
    side.write_text(f"{'0' * 64}  {z.name}\n")
    with pytest.raises(ReplayFileError) as err:
        list(parse_rows(z))
    assert err.value.path == str(z)
    assert "sha256" in err.value.reason and "does not match" in err.value.reason


def test_damaged_zip_fails_its_checksum(tmp_path: Path) -> None:
    z = copy_sample(tmp_path, BTC_MONTH)
    copy_sample(tmp_path, DATA / (BTC_MONTH.name + ".CHECKSUM"))
    data = bytearray(z.read_bytes())
    data[len(data) // 2] ^= 0xFF
    z.write_bytes(bytes(data))
    with pytest.raises(ReplayFileError, match="sha256 .* does not match"):
        list(parse_rows(z))


def test_checksum_file_naming_another_file(tmp_path: Path) -> None:
    z = copy_sample(tmp_path, BTC_MONTH)
    digest = hashlib.sha256(z.read_bytes()).hexdigest()
    (tmp_path / (z.name + ".CHECKSUM")).write_text(f"{digest}  ETHUSDT-trades-2023-12.zip\n")
    with pytest.raises(ReplayFileError, match="names 'ETHUSDT-trades-2023-12.zip'"):
        list(parse_rows(z))
    (tmp_path / (z.name + ".CHECKSUM")).write_text("not a checksum\n")
    with pytest.raises(ReplayFileError, match="not a sha256sum line"):
        list(parse_rows(z))


def test_zip_must_hold_the_csv_of_its_name(tmp_path: Path) -> None:
    z = tmp_path / "BTCUSDT-trades-2023-11.zip"
    with zipfile.ZipFile(z, "w") as zf:
        zf.writestr("something-else.csv", BTC_DAY.read_bytes())
    with pytest.raises(ReplayFileError, match=r"holds no BTCUSDT-trades-2023-11\.csv"):
        list(parse_rows(z))
    z.write_bytes(b"not a zip at all")
    with pytest.raises(ReplayFileError, match="not a readable zip"):
        list(parse_rows(z))


def test_crlf_bom_blank_lines_and_header_only(tmp_path: Path) -> None:
    f = tmp_path / BTC_DAY.name
    lines = BTC_DAY.read_text().splitlines()
    f.write_bytes(b"\xef\xbb\xbf" + "\r\n".join(lines[:50] + [""] + lines[50:] + ["", ""]).encode())
    assert list(parse_rows(f)) == list(parse_rows(BTC_DAY))
    f.write_text(lines[0] + "\n")
    assert list(parse_rows(f)) == []
    f.write_text("")
    assert list(parse_rows(f)) == []


@pytest.mark.parametrize("block_bytes", [1024, 4096, 1 << 20])
def test_block_size_does_not_change_the_result(block_bytes: int) -> None:
    for path in (BTC_DAY, ETH_AGG, BTC_MONTH, ETH_US):
        assert list(parse_rows(path, block_bytes=block_bytes)) == by_time(oracle(path))


def test_file_names() -> None:
    spec = describe("/x/BTCUSDT-aggTrades-2024-01.zip")
    assert (spec.symbol, spec.kind, spec.period) == ("BTCUSDT", "aggTrades", "2024-01")
    assert (spec.first_day, spec.last_day) == ("2024-01-01", "2024-01-31")
    assert describe("1000PEPEUSDT-trades-2024-03-05.csv").symbol == "1000PEPEUSDT"
    for bad in ("btcusdt-trades-2024-01-01.csv", "BTCUSDT-klines-2024-01.zip", "trades.csv",
                "BTCUSDT-trades-2024-01-01.csv.gz", "BTCUSDT-trades-2024.csv"):  # fmt: skip
        with pytest.raises(ReplayFileError, match="not a Binance trades file name"):
            describe(bad)


def test_discover_walks_folders_prefers_zips_and_reports_missing(tmp_path: Path) -> None:
    sub = tmp_path / "um" / "monthly"
    sub.mkdir(parents=True)
    copy_sample(sub, BTC_MONTH)
    (sub / BTC_MONTH.with_suffix(".csv").name).write_text("an unzipped copy\n")
    copy_sample(tmp_path, ETH_AGG)
    (tmp_path / "notes.md").write_text("not data")
    specs = discover([tmp_path])
    assert [s.path.name for s in specs] == [ETH_AGG.name, BTC_MONTH.name]
    with pytest.raises(ReplayFileError, match="no such file or folder"):
        discover([tmp_path / "missing"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(ReplayFileError, match="holds no trades"):
        discover([tmp_path / "empty"])


def test_unknown_symbol_and_overlapping_days(tmp_path: Path) -> None:
    f = copy_sample(tmp_path, BTC_DAY, "FOOUSDT-trades-2024-01-01.csv")
    with pytest.raises(ReplayFileError, match="FOOUSDT is not in the symbol universe"):
        ReplaySource([f], universe())
    with pytest.raises(ReplayFileError, match="FOOUSDT is not in the symbol universe"):
        list(parse_rows(f))
    month = copy_sample(tmp_path, BTC_DAY, "BTCUSDT-trades-2024-01.csv")
    with pytest.raises(ReplayFileError, match="covers days that .* covers too"):
        ReplaySource([BTC_DAY, month], universe())


# -- prices: make_tick semantics without Decimal -----------------------------------------

UNIVERSE = SymbolUniverse.default()
GRID_SYMBOLS = ["BTCUSDT", "ETHUSDT", "YFIUSDT", "1000PEPEUSDT", "ADAUSDT", "OPUSDT"]


@settings(max_examples=400, deadline=None)
@given(
    symbol=st.sampled_from(GRID_SYMBOLS),
    whole=st.text("0123456789", min_size=0, max_size=8),
    frac=st.none() | st.text("0123456789", min_size=0, max_size=9),
)
def test_price_grid_agrees_with_make_tick(symbol: str, whole: str, frac: str | None) -> None:
    text = whole if frac is None else f"{whole}.{frac}"
    book = PriceBook(UNIVERSE)
    grid = PriceGrid(UNIVERSE.get(symbol))  # type: ignore[arg-type]
    try:
        expected: str | None = book.make_tick(symbol, text, 0).price
    except TickRejected:
        expected = None
    try:
        got: str | None = grid.canonical(text.encode())
    except ValueError:
        got = None
    if re.fullmatch(r"\d+(\.\d+)?", text):
        assert got == expected, text
    else:  # Decimal also takes "5." and ".5"; Binance never writes them, tickerd refuses them
        assert got is None, text


def test_price_cache_is_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tickerd.feeds import trade_rows

    monkeypatch.setattr(trade_rows, "MAX_PRICE_CACHE", 16)
    grids: list[PriceGrid] = []
    real = trade_rows.PriceGrid

    def spy(info: object) -> PriceGrid:
        grids.append(real(info))  # type: ignore[arg-type]
        return grids[-1]

    monkeypatch.setattr(trade_rows, "PriceGrid", spy)
    # Hundreds of distinct prices, in blocks that each hold more than the bound.
    ticks = list(parse_rows(BTC_DAY, block_bytes=1024)) + list(parse_rows(ETH_US))
    assert ticks == by_time(oracle(BTC_DAY)) + oracle(ETH_US)
    assert len({t.price for t in ticks if t.symbol == "BTCUSDT"}) > 16
    # Cleared when full: at most the bound, or one block's distinct prices (a 1 KiB block
    # holds fewer than 1024 / 40 rows), which the block needs at once.
    assert len(grids[0].cache) <= max(16, 1024 // 40)


def test_price_grid_examples() -> None:
    btc = PriceGrid(UNIVERSE.get("BTCUSDT"))  # type: ignore[arg-type]
    assert btc.canonical(b"29223.0") == "29223.00"
    assert btc.canonical(b"0042283.40000") == "42283.40"
    for bad, why in [(b"29223.05", "not a positive multiple of 0.10"), (b"0.0", "positive"),
                     (b"1e5", "not a decimal number"), (b"-1.0", "not a decimal number"),
                     (b"", "not a decimal number"), (b"nan", "not a decimal number")]:  # fmt: skip
        with pytest.raises(ValueError, match=why):
            btc.canonical(bad)
    yfi = PriceGrid(UNIVERSE.get("YFIUSDT"))  # type: ignore[arg-type]
    assert yfi.canonical(b"5123.0") == "5123.0"  # tick 1, pricePrecision 1


# -- bad rows ----------------------------------------------------------------------------

# Line 101 of the BTCUSDT daily sample (its 100th trade) replaced by a bad row.
GOOD_101 = BTC_DAY.read_text().split("\n")[100]
BAD_ROWS = [
    ("4385000200,42283.4,0.001,42.2834,1704067201000", "5 fields; a row has 6"),
    ("4385000200,42283.4,0.001,42.2834,1704067201000,true,x", "7 fields"),
    ("4385000200,42283.45,0.001,42.2834,1704067201000,true", "not a positive multiple of 0.10"),
    ("4385000200,abc,0.001,42.2834,1704067201000,true", "price 'abc' is not a decimal number"),
    ("4385000200,-42283.4,0.001,42.2834,1704067201000,true", "is not a decimal number"),
    ("4385000200,0.0,0.001,42.2834,1704067201000,true", "not a positive multiple"),
    ("4385000200,42283.4,0.001,42.2834,17040672010x0,true", "time '17040672010x0'"),
    ("4385000200,42283.4,0.001,42.2834,1704067201000000,true", "not in ms"),
    ("4385000200,42283.4,0.001,42.2834,1704067201000,yes", "is_buyer_maker 'yes'"),
    ("-4385000200,42283.4,0.001,42.2834,1704067201000,true", "id '-4385000200'"),
    ("4385000200,42283.4,,42.2834,1704067201000,true", "qty '' is not a decimal number"),
    ("4385000200,42283.4,0.001,4x,1704067201000,true", "quote_qty '4x'"),
    ("4385000200;42283.4;0.001;42.2834;1704067201000;true", "1 fields"),
]


@pytest.mark.parametrize("block_bytes", [1024, 1 << 20])
@pytest.mark.parametrize(("row", "why"), BAD_ROWS)
def test_bad_row_named_by_file_and_line(
    tmp_path: Path, row: str, why: str, block_bytes: int
) -> None:
    f = copy_sample(tmp_path, BTC_DAY)
    rewrite_line(f, 101, row)
    seen: list[Tick] = []
    with pytest.raises(ReplayFileError) as err:
        seen.extend(parse_rows(f, block_bytes=block_bytes))
    assert (err.value.path, err.value.line) == (str(f), 101)
    assert why in err.value.reason, err.value.reason
    assert str(err.value).startswith(f"{f}:101: ")
    # Every row before the bad one came out, in time order; nothing of it or after it did.
    assert seen == by_time(oracle(BTC_DAY)[:99])


def test_a_bad_first_row_is_not_taken_for_a_header(tmp_path: Path) -> None:
    f = copy_sample(tmp_path, ETH_AGG)  # no header: line 1 is a trade
    rewrite_line(f, 1, "x1112000000,1702.41,12.0,2589000000,2589000000,1660089600105,false")
    with pytest.raises(ReplayFileError, match=r":1: agg_trade_id 'x1112000000' is not a whole"):
        list(parse_rows(f))


def test_bad_header_and_overlong_line(tmp_path: Path) -> None:
    f = copy_sample(tmp_path, BTC_DAY)
    rewrite_line(f, 1, "id,price,qty,time,is_buyer_maker")
    with pytest.raises(ReplayFileError, match=r":1: header has 5 columns; a trades file has 6"):
        list(parse_rows(f))
    rewrite_line(f, 1, "id,price,qty,quote_qty,time,is_buyer_maker")
    rewrite_line(f, 7, "9" * 70_000)
    # Inside a block a long line is just a bad row; across blocks it is never buffered
    # beyond 64 KiB.
    with pytest.raises(ReplayFileError, match=":7: 1 fields"):
        list(parse_rows(f))
    with pytest.raises(ReplayFileError, match=":7: a line longer than 65536 bytes"):
        list(parse_rows(f, block_bytes=1024))


def test_rows_out_of_order_beyond_the_window(tmp_path: Path) -> None:
    f = copy_sample(tmp_path, BTC_DAY)
    lines = f.read_text().split("\n")
    # Line 101's trade now comes after line 102's: a local disorder, put right.
    row = lines[100].split(",")
    row[4] = str(int(lines[101].split(",")[4]) + 1)
    lines[100] = ",".join(row)
    f.write_text("\n".join(lines))
    assert list(parse_rows(f, block_bytes=1024)) == by_time(oracle(f))
    assert by_time(oracle(f)) != oracle(f)
    # A row older than rows one block back cannot be put right: an error at its line.
    row = lines[250].split(",")
    row[4] = "1704067200000"
    rewrite_line(f, 251, ",".join(row))
    with pytest.raises(ReplayFileError) as err:
        list(parse_rows(f, block_bytes=1024))
    assert err.value.line == 251
    assert "older than trades already replayed" in err.value.reason


def test_bad_row_through_the_feed_step_mode(tmp_path: Path) -> None:
    f = copy_sample(tmp_path, BTC_DAY)
    rewrite_line(f, 101, BAD_ROWS[2][0])
    feed = ReplayFeed(ReplaySource([f], universe()), ReplaySpeed.parse("step"))
    book = PriceBook(universe())
    feed.prime(book)
    assert len(feed.step(50)) == 50
    with pytest.raises(ReplayFileError, match=r":101: price '42283.45'"):
        feed.step(100)
    good = by_time(oracle(BTC_DAY)[:99])
    assert book.get("BTCUSDT") == good[-1]  # rows up to line 100 applied, line 101 not
    assert feed.applied == 99 and feed.finished
    assert feed.clock.now_ms() >= good[-1].time_ms
    assert feed.step(1) == []


def test_bad_row_through_the_feed_max_mode(tmp_path: Path) -> None:
    f = copy_sample(tmp_path, BTC_DAY)
    rewrite_line(f, 201, BAD_ROWS[0][0])
    feed = ReplayFeed(ReplaySource([f, ETH_AGG], universe()), ReplaySpeed.parse("max"), batch=7)
    book = PriceBook(universe())
    asyncio.run(feed.run(book))  # returns: the ERROR line and status() tell why it stopped
    assert isinstance(feed.error, ReplayFileError) and ":201: 5 fields" in str(feed.error)
    assert feed.status()["state"] == "failed" and feed.finished
    assert book.get("BTCUSDT") == by_time(oracle(BTC_DAY)[:199])[-1]
    assert book.get("ETHUSDT") == oracle(ETH_AGG)[-1]  # the 2022 file, entirely earlier


def test_bad_first_row_fails_before_the_replay_starts(tmp_path: Path) -> None:
    f = copy_sample(tmp_path, BTC_DAY)
    rewrite_line(f, 2, BAD_ROWS[2][0])
    with pytest.raises(ReplayFileError, match=":2: "):
        ReplaySource([f], universe())
    g = copy_sample(tmp_path, BTC_DAY, "BTCUSDT-trades-2024-01-02.csv")
    g.write_text(BTC_DAY.read_text().split("\n")[0] + "\n")
    with pytest.raises(ReplayFileError, match="no trades in the replay files"):
        ReplaySource([g], universe())


# -- several files and symbols -----------------------------------------------------------


def test_folder_replay_merges_symbols_in_time_order() -> None:
    source = ReplaySource([DATA], universe())
    assert source.symbols == {"BTCUSDT", "ETHUSDT"}
    ticks, error = source.take(10_000)
    assert error is None and source.exhausted and len(ticks) == 950
    times = [t.time_ms for t in ticks]
    assert times == sorted(times)
    btc = [t for t in ticks if t.symbol == "BTCUSDT"]
    eth = [t for t in ticks if t.symbol == "ETHUSDT"]
    assert btc == by_time(oracle(BTC_MONTH)) + oracle(BTC_DAY)
    assert eth == oracle(ETH_AGG) + oracle(ETH_US)
    day = [t.symbol for t in ticks if t.time_ms >= 1_704_067_200_000]
    switches = sum(a != b for a, b in pairwise(day))
    assert switches > 100  # the two 2024-01-01 files really interleave


def test_equal_times_across_symbols_in_name_order(tmp_path: Path) -> None:
    head = "id,price,qty,quote_qty,time,is_buyer_maker\n"
    (tmp_path / "ETHUSDT-trades-2024-01-01.csv").write_text(
        head + "1,2000.0,1.0,2000.0,1704067200000,true\n2,2000.5,1.0,2000.5,1704067200005,true\n"
    )
    (tmp_path / "BTCUSDT-trades-2024-01-01.csv").write_text(
        head
        + "7,42000.0,1.0,42000.0,1704067200000,true\n8,42000.1,1.0,42000.1,1704067200005,true\n"
    )
    ticks, _ = ReplaySource([tmp_path], universe()).take(10)
    assert [t.symbol for t in ticks] == ["BTCUSDT", "ETHUSDT", "BTCUSDT", "ETHUSDT"]


# -- speeds ------------------------------------------------------------------------------


def test_speed_parsing() -> None:
    assert ReplaySpeed.parse("1") == ReplaySpeed("paced", 1.0)
    assert ReplaySpeed.parse(" 2.5 ") == ReplaySpeed("paced", 2.5)
    assert ReplaySpeed.parse("0.5") == ReplaySpeed("paced", 0.5)
    assert ReplaySpeed.parse("MAX").mode == "max"
    assert ReplaySpeed.parse("step").mode == "step"
    assert str(ReplaySpeed.parse("10")) == "10"
    for bad in ("0", "-1", "nan", "inf", "fast", ""):
        with pytest.raises(FeedConfigError, match="--replay-speed"):
            ReplaySpeed.parse(bad)


def test_step_mode_exact_prices_and_times_at_chosen_instants() -> None:
    feed = ReplayFeed(ReplaySource([DATA], universe()), ReplaySpeed.parse("step"))
    book = PriceBook(universe())
    feed.prime(book)
    assert feed.clock.now_ms() == 1_660_089_600_105  # the first trade's time, before any step
    assert book.get("ETHUSDT") is None
    assert feed.step() == [Tick("ETHUSDT", "1702.41", 1_660_089_600_105)]
    assert book.get("ETHUSDT") == Tick("ETHUSDT", "1702.41", 1_660_089_600_105)
    feed.step(2)
    assert book.get("ETHUSDT") == Tick("ETHUSDT", "1702.44", 1_660_089_600_385)
    assert feed.clock.now_ms() == 1_660_089_600_385
    feed.step(247)  # the rest of the 2022 aggTrades file
    assert book.get("ETHUSDT") == oracle(ETH_AGG)[-1]
    assert book.get("BTCUSDT") is None
    assert feed.step() == [Tick("BTCUSDT", "37800.00", 1_701_388_800_321)]  # monthly zip
    assert feed.clock.now_ms() == 1_701_388_800_321
    feed.step(199 + 1)  # the month, then the first trade of 2024-01-01 (BTCUSDT, …012 ms)
    assert book.get("BTCUSDT") == Tick("BTCUSDT", "42283.40", 1_704_067_200_012)
    assert feed.clock.now_ms() == 1_704_067_200_012
    # BTCUSDT's second trade of the day (…015 ms), then ETHUSDT's first (1704067200020063 µs).
    assert feed.step(2) == [
        Tick("BTCUSDT", "42283.40", 1_704_067_200_015),
        Tick("ETHUSDT", "2282.45", 1_704_067_200_020),
    ]
    assert book.get("ETHUSDT") == Tick("ETHUSDT", "2282.45", 1_704_067_200_020)
    assert feed.clock.now_ms() == 1_704_067_200_020
    assert feed.applied == 453 and not feed.finished
    rest = feed.step(MAX_STEP)
    assert len(rest) == 950 - 453 and feed.finished
    assert book.get("BTCUSDT") == Tick("BTCUSDT", "42283.70", 1_704_067_213_967)
    assert book.get("ETHUSDT") == Tick("ETHUSDT", "2282.70", 1_704_067_215_991)
    assert feed.clock.now_ms() >= 1_704_067_215_991  # after the end it runs on in real time
    with pytest.raises(ValueError):
        feed.step(0)


def test_step_needs_a_book() -> None:
    feed = ReplayFeed(ReplaySource([BTC_DAY], universe()), ReplaySpeed.parse("step"))
    with pytest.raises(RuntimeError, match="no book"):
        feed.step()


def test_step_mode_run_returns_when_stepped_to_the_end() -> None:
    async def scenario() -> None:
        feed = ReplayFeed(ReplaySource([BTC_DAY], universe()), ReplaySpeed.parse("step"))
        book = PriceBook(universe())
        task = asyncio.create_task(feed.run(book))
        await asyncio.sleep(0)
        assert not task.done()
        feed.step(299)
        await asyncio.sleep(0.01)
        assert not task.done()
        feed.step(5)
        await asyncio.wait_for(task, 5)
        assert book.get("BTCUSDT") == Tick("BTCUSDT", "42283.70", 1_704_067_213_967)

    asyncio.run(scenario())


def test_max_mode_final_state_order_and_yielding() -> None:
    async def scenario() -> None:
        feed = ReplayFeed(ReplaySource([DATA], universe()), ReplaySpeed.parse("max"), batch=50)
        book = PriceBook(universe())
        seen: list[Tick] = []
        clocks: list[tuple[int, int]] = []

        def listen(ticks: Sequence[Tick]) -> None:
            seen.extend(ticks)
            clocks.append((ticks[-1].time_ms, feed.clock.now_ms()))

        book.subscribe(listen)
        turns = 0

        async def other() -> None:
            nonlocal turns
            while True:
                turns += 1
                await asyncio.sleep(0)

        bystander = asyncio.create_task(other())
        await feed.run(book)
        bystander.cancel()
        assert turns >= 950 // 50 - 1  # the loop ran other tasks between batches
        assert len(seen) == 950 and seen == by_time(seen)
        assert last_per_symbol(seen) == {
            "BTCUSDT": Tick("BTCUSDT", "42283.70", 1_704_067_213_967),
            "ETHUSDT": Tick("ETHUSDT", "2282.70", 1_704_067_215_991),
        }
        assert book.get("BTCUSDT") == Tick("BTCUSDT", "42283.70", 1_704_067_213_967)
        # While a batch is applied the clock still shows the previous batch's last trade.
        assert all(now <= last for last, now in clocks)
        assert [now for _, now in clocks[1:]] == [last for last, _ in clocks[:-1]]
        assert feed.finished and feed.clock.now_ms() >= 1_704_067_215_991

    asyncio.run(scenario())


def short_file(tmp_path: Path, offsets: Sequence[int]) -> Path:
    f = tmp_path / "BTCUSDT-trades-2024-02-01.csv"
    rows = [
        f"{100 + i},{42000 + i}.0,0.001,42.0,{1_706_745_600_000 + off},true"
        for i, off in enumerate(offsets)
    ]
    f.write_text("id,price,qty,quote_qty,time,is_buyer_maker\n" + "\n".join(rows) + "\n")
    return f


@pytest.mark.parametrize("speed", ["1", "4"])
def test_paced_replay_order_final_state_and_clock(tmp_path: Path, speed: str) -> None:
    offsets = [0, 0, 40, 90, 91, 150, 240, 300]
    f = short_file(tmp_path, offsets)
    factor = float(speed)

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        feed = ReplayFeed(ReplaySource([f], universe()), ReplaySpeed.parse(speed))
        book = PriceBook(universe())
        batches: list[tuple[list[Tick], float, int]] = []
        book.subscribe(
            lambda ticks: batches.append((list(ticks), loop.time(), feed.clock.now_ms()))
        )
        started = loop.time()
        await feed.run(book)
        seen = [t for b, _, _ in batches for t in b]
        assert seen == oracle(f)  # every trade, in order
        assert book.get("BTCUSDT") == Tick("BTCUSDT", "42007.00", 1_706_745_600_300)
        first = 1_706_745_600_000
        for ticks, at, now in batches:
            # Never early: a trade is applied once (its time - first) / speed has passed.
            assert at - started >= (ticks[-1].time_ms - first) / 1000 / factor - 0.005
            # The clock shows the batch's time: interpolated, capped at the next trade.
            assert now == ticks[0].time_ms
        assert feed.finished and feed.clock.running

    asyncio.run(scenario())


def test_paced_replay_of_a_sample_file_at_high_speed() -> None:
    async def scenario() -> None:
        feed = ReplayFeed(ReplaySource([BTC_DAY, ETH_US], universe()), ReplaySpeed.parse("200"))
        book = PriceBook(universe())
        seen: list[Tick] = []
        book.subscribe(seen.extend)
        await asyncio.wait_for(feed.run(book), 20)
        assert seen == by_time(oracle(BTC_DAY) + oracle(ETH_US))
        assert book.get("ETHUSDT") == Tick("ETHUSDT", "2282.70", 1_704_067_215_991)

    asyncio.run(scenario())


# -- the replay clock --------------------------------------------------------------------


class FakeMonotonic:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_replay_clock_holds_runs_caps_and_never_goes_back() -> None:
    mono = FakeMonotonic()
    clock = ReplayClock(1_000_000, monotonic=mono)
    assert clock.now_ms() == 1_000_000 and not clock.running
    mono.now += 5
    assert clock.now_ms() == 1_000_000  # held: time does not move by itself
    clock.run(2.0, cap_ms=1_003_000)
    mono.now += 1.0
    assert clock.now_ms() == 1_002_000  # 1 s at 2×
    assert clock.schedule_ms() == 1_002_000
    mono.now += 1.0
    assert clock.now_ms() == 1_003_000  # capped at the next trade …
    assert clock.schedule_ms() == 1_004_000  # … while the schedule moves on
    clock.cap(None)
    assert clock.now_ms() == 1_004_000
    clock.hold(1_001_000)  # earlier than shown: the clock does not run backward
    assert clock.now_ms() == 1_004_000
    clock.hold(1_010_000)
    mono.now += 10
    assert clock.now_ms() == 1_010_000
    with pytest.raises(ValueError):
        clock.run(0)


# -- wiring: builders, the server's clock, the command line ------------------------------


def test_builder_needs_a_path_and_brings_the_replay_clock() -> None:
    with pytest.raises(FeedConfigError, match="--replay-path"):
        build_feeds(Settings(feed="replay"), universe(), ReplayClock(0))
    plan = build_feeds(
        Settings(feed="replay,synthetic", replay_path=f"{BTC_DAY}, {ETH_AGG}", replay_speed="step"),
        universe(),
        ReplayClock(0),
    )
    replay, synthetic = plan.feeds
    assert isinstance(replay, ReplayFeed) and plan.clock is replay.clock
    assert replay.symbols == {"BTCUSDT", "ETHUSDT"}
    others = getattr(synthetic, "symbols", None)
    assert others is not None and "BTCUSDT" not in others and "XRPUSDT" in others
    assert plan.clock.now_ms() == 1_660_089_600_105


def test_server_clock_follows_the_replay() -> None:
    """Rate-limit windows, 429 serverTime/retryAfter and /fapi/v1/time use replay time."""
    from websockets.asyncio.client import connect

    from tickerd.app import Service

    async def http_get(port: int, path: str) -> bytes:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        data = await reader.read()
        writer.close()
        return data.partition(b"\r\n\r\n")[2]

    async def scenario() -> None:
        cfg = Settings(
            host="127.0.0.1", port=0, rest_port=0, feed="replay", replay_path=str(DATA),
            replay_speed="step", weight_limit=10, ops_port=-1,
        )  # fmt: skip
        service = Service(cfg)
        await service.start()
        try:
            feed = service.feeds[0]
            assert isinstance(feed, ReplayFeed)
            feed.step(3)
            first_minute = 1_660_089_600_385
            assert json.loads(await http_get(service.http.port, "/fapi/v1/time")) == {  # type: ignore[union-attr]
                "serverTime": first_minute
            }
            async with connect(service.url, proxy=None, compression=None) as ws:
                counts = []
                for rid in range(5):  # REST 1 + handshake 5 + 1 each: 7..10 allowed, then 429
                    await ws.send(json.dumps({"id": rid, "method": "ticker.price",
                                              "params": {"symbol": "ETHUSDT"}}))  # fmt: skip
                    answer = json.loads(await ws.recv())
                    if answer["status"] == 200:
                        assert answer["result"] == {"symbol": "ETHUSDT", "price": "1702.44",
                                                    "time": first_minute}  # fmt: skip
                    counts.append((answer["status"], answer["rateLimits"][0]["count"]))
                assert counts == [(200, 7), (200, 8), (200, 9), (200, 10), (429, 11)]
                assert answer["error"]["data"] == {
                    "serverTime": first_minute,
                    "retryAfter": (first_minute // 60_000 + 1) * 60_000,
                }
                # Step the replay into the next minute: a fresh window, whatever the wall clock.
                for _ in range(1000):  # the 2022 file, then December 2023 begins
                    if feed.clock.now_ms() >= answer["error"]["data"]["retryAfter"]:
                        break
                    feed.step()
                await ws.send(json.dumps({"id": 9, "method": "ticker.price",
                                          "params": {"symbol": "BTCUSDT"}}))  # fmt: skip
                again = json.loads(await ws.recv())
                assert again["status"] == 200 and again["rateLimits"][0]["count"] == 1
                assert again["result"] == {"symbol": "BTCUSDT", "price": "37800.00",
                                           "time": 1_701_388_800_321}  # fmt: skip
                assert feed.clock.now_ms() == 1_701_388_800_321
        finally:
            await service.stop()

    asyncio.run(scenario())


def test_cli_reports_a_bad_replay_file(tmp_path: Path) -> None:
    f = copy_sample(tmp_path, BTC_DAY)
    rewrite_line(f, 2, BAD_ROWS[3][0])
    result = subprocess.run(
        [sys.executable, "-m", "tickerd", "serve", "--port", "0", "--rest-port", "-1",
         "--feed", "replay", "--replay-path", str(f)],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert result.returncode == 1
    assert f"{f}:2: price 'abc' is not a decimal number" in result.stderr

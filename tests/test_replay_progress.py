"""Replay progress: file lines, periodic lines, the same figures in status and /healthz, and
one ERROR line (no traceback) with a ``failed`` state when a bad row stops the replay."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from conftest import ServerFactory
from tickerd import PriceBook, SymbolUniverse
from tickerd.feeds.replay import ReplayFeed, ReplayOptions, ReplaySource, ReplaySpeed
from tickerd.feeds.state import FeedState

pytestmark = pytest.mark.timeout(60)

DATA = Path(__file__).parent / "data" / "replay"
BTC_DAY = DATA / "BTCUSDT-trades-2024-01-01.csv"  # 300 rows, header
ETH_AGG = DATA / "ETHUSDT-aggTrades-2022-08-10.csv"


class Ticking:
    """A monotonic clock that moves ``step`` seconds at every read."""

    def __init__(self, step: float) -> None:
        self.now = 0.0
        self.step = step

    def __call__(self) -> float:
        self.now += self.step
        return self.now


def test_each_file_is_logged_when_opened_and_done(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "tickerd.feeds.replay")
    feed = ReplayFeed(
        ReplaySource([BTC_DAY, ETH_AGG], SymbolUniverse.default()), ReplaySpeed("max")
    )
    asyncio.run(feed.run(PriceBook(SymbolUniverse.default())))
    text = caplog.text
    for path, rows in ((BTC_DAY, 300), (ETH_AGG, 250)):
        assert text.count(f"replay: reading {path}") == 1
        assert text.count(f"replay: done with {path} ({rows} trades)") == 1


def test_periodic_progress_lines_and_status_figures(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "tickerd.feeds.replay")
    source = ReplaySource([BTC_DAY], SymbolUniverse.default(), block_bytes=1024)
    total = BTC_DAY.stat().st_size
    assert source.total_bytes == total
    clock = Ticking(1.0)  # one second per read: a report every few batches
    feed = ReplayFeed(source, ReplaySpeed("max"), batch=10, progress_every_s=5.0, monotonic=clock)
    before = feed.status()
    assert before["state"] == FeedState.STARTING and before["applied"] == 0
    assert before["eta_s"] is None and before["bytes_total"] == total
    assert before["clock_utc"] == "2024-01-01T00:00:00.012+00:00"
    asyncio.run(feed.run(PriceBook(SymbolUniverse.default())))
    lines = [r.getMessage() for r in caplog.records if "bytes read" in r.getMessage()]
    assert len(lines) >= 3
    pattern = re.compile(
        r"replay: (\d+\.\d)% of (\d+) bytes read, (\d+) trades applied, replay clock "
        r"(2024-01-01T00:00:\d\d\.\d{3}\+00:00), about (\d+) s left at speed max"
    )
    shares, applied = [], []
    for line in lines:
        m = pattern.fullmatch(line)
        assert m, line
        assert int(m[2]) == total
        shares.append(float(m[1]))
        applied.append(int(m[3]))
    assert shares == sorted(shares) and 0 < shares[0] < 100
    assert applied == sorted(applied) and 0 < applied[0] < 300
    after = feed.status()
    assert after["state"] == FeedState.FINISHED
    assert after["done"] == 1.0 and after["eta_s"] == 0.0 and after["applied"] == 300
    assert after["bytes_read"] == total and after["files_done"] == 1
    # After the end the clock runs on in real time from the last trade.
    assert after["last_trade_time"] == 1_704_067_213_967
    assert 0 <= after["clock"] - 1_704_067_213_967 < 60_000
    assert after["clock_utc"].startswith("2024-01-01T00:")


def test_progress_period_is_a_setting() -> None:
    options = ReplayOptions.parse(f"{BTC_DAY}, {ETH_AGG}", "max", 0.5)
    assert options.paths == (str(BTC_DAY), str(ETH_AGG)) and options.progress_every_s == 0.5
    for bad in (0.0, -1.0, float("nan")):
        with pytest.raises(Exception, match="--replay-progress-every"):
            ReplayOptions.parse(str(BTC_DAY), "max", bad)


def _healthz(rest_or_ws: str) -> tuple[int, dict[str, object]]:
    """The HTTP status and document of ``/healthz`` (503 is an answer, not an error)."""
    url = rest_or_ws.replace("ws://", "http://").rsplit("/ws-fapi", 1)[0] + "/healthz"
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            status, body = response.status, response.read()
    except urllib.error.HTTPError as exc:
        status, body = exc.code, exc.read()
    result: dict[str, object] = json.loads(body)
    return status, result


def test_a_bad_row_is_one_error_line_and_healthz_says_failed(
    tmp_path: Path, server: ServerFactory
) -> None:
    # A bad row past the first 1 MiB block: the server starts, replays up to it, then stops.
    f = tmp_path / BTC_DAY.name
    rows = [f"{i},42283.{i % 10},0.001,42.2834,{1_704_067_200_000 + i},true" for i in range(40_000)]
    rows[35_000] = "35000,4228x.1,0.001,42.2,1704067235000,true"
    f.write_text("id,price,qty,quote_qty,time,is_buyer_maker\n" + "\n".join(rows) + "\n")
    srv = server("--feed", "replay", "--replay-path", str(f), "--replay-speed", "max")
    srv.wait_log("replay stopped by a bad row")
    status, health = _healthz(srv.url)
    assert (status, health["status"]) == (503, "unavailable")  # prices stop at the bad row
    replay = health["feeds"]["replay"]  # type: ignore[index]
    assert replay["state"] == "failed" and replay["applied"] == 35_000
    assert replay["last_trade_time"] == 1_704_067_200_000 + 34_999
    assert f"{f}:35002: price '4228x.1' is not a decimal number" in replay["error"]
    log = srv.log()
    errors = [line for line in log.splitlines() if "ERROR" in line]
    assert len(errors) == 1, log
    assert f"{f}:35002: price '4228x.1' is not a decimal number" in errors[0]
    assert "Traceback" not in log

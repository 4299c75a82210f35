"""``tickerd price`` and ``tickerd watch`` through ``main([...])`` and as real processes.

The target is the in-process test server (``tickerd_server``, this package's own pytest
plugin): prices are set exactly and stand still; its clock is manual.
"""

from __future__ import annotations

import os
import re
import select
import signal
import subprocess
import sys
import time
from decimal import Decimal

import pytest

import tickerd
from tickerd.cli import main
from tickerd.client import PriceTicker
from tickerd.quotes import table
from tickerd.testing import TickerdServer
from tickerd.timestamps import iso_time, utc_stamp, with_utc
from tickerd.watch import WatchTable, rest_url_for

# -- price --------------------------------------------------------------------------------


def test_price_of_one_symbol(
    tickerd_server: TickerdServer, capsys: pytest.CaptureFixture[str]
) -> None:
    tickerd_server.set_price("BTCUSDT", "97000.10")
    assert main(["price", "BTCUSDT", "--url", tickerd_server.ws_url]) == 0
    assert capsys.readouterr() == ("BTCUSDT 97000.10\n", "")
    # Lower case is accepted on the command line (Binance itself is case-sensitive).
    assert main(["price", "btcusdt", "--url", tickerd_server.ws_url]) == 0
    assert capsys.readouterr().out == "BTCUSDT 97000.10\n"


def test_price_prints_fixed_point_never_exponents(
    tickerd_server: TickerdServer, capsys: pytest.CaptureFixture[str]
) -> None:
    tickerd_server.set_price("1000PEPEUSDT", "0.0000001")
    assert main(["price", "1000PEPEUSDT", "--url", tickerd_server.ws_url]) == 0
    assert capsys.readouterr().out == "1000PEPEUSDT 0.0000001\n"


@pytest.mark.tickerd(prices="none")
def test_price_table_of_all(
    tickerd_server: TickerdServer, capsys: pytest.CaptureFixture[str]
) -> None:
    tickerd_server.set_price("ETHUSDT", "3150.25")
    tickerd_server.set_price("BTCUSDT", "97000.10", time_ms=1_700_000_000_123)
    assert main(["price", "--url", tickerd_server.ws_url]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    assert out.splitlines() == [
        "SYMBOL      PRICE  TIME",
        "BTCUSDT  97000.10  2023-11-14T22:13:20.123Z",
        "ETHUSDT   3150.25  2023-11-14T22:13:20.000Z",
    ]


def test_price_url_from_the_environment(
    tickerd_server: TickerdServer,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    tickerd_server.set_price("SOLUSDT", "141.2500")
    monkeypatch.setenv("TICKERD_URL", tickerd_server.ws_url)
    assert main(["price", "SOLUSDT"]) == 0
    assert capsys.readouterr().out == "SOLUSDT 141.2500\n"


def test_price_unknown_symbol_prints_the_binance_error_naming_it(
    tickerd_server: TickerdServer, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["price", "NOPEUSDT", "--url", tickerd_server.ws_url]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err == "tickerd: NOPEUSDT: Invalid symbol. (-1121)\n"


def test_price_of_several_symbols(
    tickerd_server: TickerdServer, capsys: pytest.CaptureFixture[str]
) -> None:
    tickerd_server.set_price("BTCUSDT", "97000.10")
    tickerd_server.set_price("1000PEPEUSDT", "0.0000001")
    url = tickerd_server.ws_url
    assert main(["price", "BTCUSDT", "ethusdt", "1000PEPEUSDT", "--url", url]) == 0
    assert capsys.readouterr() == (
        "BTCUSDT 97000.10\nETHUSDT 3150.00\n1000PEPEUSDT 0.0000001\n",
        "",
    )


def test_price_of_several_symbols_names_each_refused_one(
    tickerd_server: TickerdServer, capsys: pytest.CaptureFixture[str]
) -> None:
    tickerd_server.set_price("BTCUSDT", "97000.10")
    tickerd_server.control("symbol.status", symbol="SOLUSDT", status="SETTLING")
    url = tickerd_server.ws_url
    assert main(["price", "NOPEUSDT", "BTCUSDT", "SOLUSDT", "--url", url]) == 1
    out, err = capsys.readouterr()
    assert out == "BTCUSDT 97000.10\n"
    assert err.splitlines() == [
        "tickerd: NOPEUSDT: Invalid symbol. (-1121)",
        "tickerd: SOLUSDT: Invalid symbol. (-1121)",
    ]


@pytest.mark.tickerd(weight_limit=5)
def test_price_rate_limited_prints_the_binance_error(
    tickerd_server: TickerdServer, capsys: pytest.CaptureFixture[str]
) -> None:
    # The handshake costs 5: the request itself is the one over the limit.
    assert main(["price", "BTCUSDT", "--url", tickerd_server.ws_url]) == 1
    err = capsys.readouterr().err
    assert err.startswith("tickerd: BTCUSDT: Too many requests; current limit of IP(127.0.0.1)")
    # retryAfter is the next minute of the server's (manual) clock, for people and machines
    assert err.endswith(" (-1003); retry after 2023-11-14T22:14:00.000Z (1700000040000)\n"), err
    assert err.count("\n") == 1


@pytest.mark.tickerd(weight_limit=5)
def test_price_banned_prints_the_ban_end_in_utc(
    tickerd_server: TickerdServer, capsys: pytest.CaptureFixture[str]
) -> None:
    until = tickerd_server.control("limit.ban", ip="127.0.0.1", ms=120_000)["banned_until"]
    assert main(["price", "BTCUSDT", "--url", tickerd_server.ws_url]) == 1
    err = capsys.readouterr().err
    # The handshake itself is refused (418): the wire text keeps its epoch ms, the line
    # adds the UTC time beside it.
    assert f"banned until {until} ({iso_time(until)})." in err, err
    assert err.startswith("tickerd: ") and err.count("\n") == 1
    assert "Traceback" not in err


def test_price_unreachable_url(capsys: pytest.CaptureFixture[str]) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"ws://127.0.0.1:{port}/ws-fapi/v1"
    assert main(["price", "BTCUSDT", "--url", url]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"tickerd: cannot connect to {url}")


def test_price_wrong_path_is_a_clear_error(
    tickerd_server: TickerdServer, capsys: pytest.CaptureFixture[str]
) -> None:
    url = tickerd_server.ws_url.replace("/ws-fapi/v1", "/nope")
    assert main(["price", "BTCUSDT", "--url", url]) == 1
    assert "handshake refused with HTTP 404" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["watch", "--interval", "0"], "argument --interval: '0' is not a positive number"),
        (["watch", "--interval", "nan"], "argument --interval: 'nan' is not a positive number"),
        (["price", "--timeout", "-1"], "argument --timeout: '-1' is not a positive number"),
        (["watch", "--count", "0"], "argument --count: '0' is not a whole number"),
        (["watch", "--count", "-1"], "argument --count: '-1' is not a whole number"),
        (["watch", "--count", "2.5"], "argument --count: '2.5' is not a whole number"),
        (["price", "--url", "foo"], "argument --url: 'foo': expected a ws:// or wss:// URL"),
        (["price", "--url", "http://h/x"], "argument --url: 'http://h/x': expected a ws://"),
        (["price", "--url", "ws://h:99999/"], "argument --url: 'ws://h:99999/': expected a ws"),
        (["watch", "--url", "ws://[::1/x"], "argument --url: 'ws://[::1/x': expected a ws://"),
        (["watch", "--rest-url", "ws://h"], "argument --rest-url: 'ws://h': expected a http://"),
    ],
)
def test_bad_arguments_exit_2(
    args: list[str], says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        main(args)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1, err
    assert err.startswith(f"tickerd {args[0]}: {says}"), err
    assert "Traceback" not in err


def test_a_bad_url_from_the_environment_is_named(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("TICKERD_URL", "127.0.0.1:9000")
    with pytest.raises(SystemExit) as info:
        main(["price", "BTCUSDT"])
    assert info.value.code == 2
    assert capsys.readouterr().err == (
        "tickerd price: argument --url: '127.0.0.1:9000' (from TICKERD_URL): expected a ws:// "
        "or wss:// URL with a host (see tickerd price --help)\n"
    )


def test_version() -> None:
    from importlib.metadata import version

    assert tickerd.__version__ == version("tickerd")
    assert re.fullmatch(r"[0-9]+\.[0-9]+\.[0-9]+\S*", tickerd.__version__)
    done = subprocess.run(
        [sys.executable, "-m", "tickerd", "--version"],
        check=False,
        capture_output=True,
        text=True,
        timeout=30,
        env=child_env(),
        stdin=subprocess.DEVNULL,
    )
    assert (done.returncode, done.stdout, done.stderr) == (
        0,
        f"tickerd {tickerd.__version__}\n",
        "",
    )


# -- watch --------------------------------------------------------------------------------


def test_watch_count_prints_plain_frames(
    tickerd_server: TickerdServer, capsys: pytest.CaptureFixture[str]
) -> None:
    tickerd_server.set_price("BTCUSDT", "97000.10")
    url = tickerd_server.ws_url
    rest = ["--rest-url", tickerd_server.rest_url]
    args = [
        "watch",
        "BTCUSDT",
        "ethusdt",
        "--url",
        url,
        *rest,
        "--interval",
        "0.05",
        "--count",
        "3",
    ]
    assert main(args) == 0
    out, err = capsys.readouterr()
    assert err == "" and "\x1b" not in out  # not a terminal: no escape codes
    frames = out.split("\n\n")
    assert len(frames) == 3
    for n, frame in enumerate(frames, start=1):
        lines = frame.strip("\n").splitlines()
        assert re.fullmatch(rf"tickerd watch  {re.escape(url)}  \S+Z  refresh {n}", lines[0])
        assert lines[1].split() == ["SYMBOL", "PRICE", "CHANGE", "CHANGE%", "AGE", "s"]
        btc, eth = (line.split() for line in lines[2:])
        assert btc[:4] == ["BTCUSDT", "97000.10", "+0.00", "+0.00%"]
        assert eth[:4] == ["ETHUSDT", "3150.00", "+0.00", "+0.00%"]
        # seconds since the tick by the server's clock (manual: it stands still)
        assert btc[4] == eth[4] == "0.0"


def test_watch_many_symbols_uses_the_all_symbols_request(
    tickerd_server: TickerdServer, capsys: pytest.CaptureFixture[str]
) -> None:
    symbols = ["BTCUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT"]
    url = tickerd_server.ws_url
    rest = ["--rest-url", tickerd_server.rest_url]
    assert main(["watch", *symbols, "--url", url, *rest, "--interval", "0.05", "--count", "2"]) == 0
    frames = capsys.readouterr().out.split("\n\n")
    assert [line.split()[0] for line in frames[1].strip().splitlines()[2:]] == symbols


def test_watch_unknown_symbol_fails_with_the_binance_error_naming_it(
    tickerd_server: TickerdServer, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["watch", "BTCUSDT", "NOPEUSDT", "ETHUSDT", "--url", tickerd_server.ws_url]
    assert main([*args, "--count", "2"]) == 1
    assert capsys.readouterr().err == "tickerd: NOPEUSDT: Invalid symbol. (-1121)\n"


def test_watch_ages_follow_the_served_clock(
    tickerd_server: TickerdServer, capsys: pytest.CaptureFixture[str]
) -> None:
    # The server's clock is years behind this machine's, as during a replay.
    now = tickerd_server.now_ms
    tickerd_server.set_price("BTCUSDT", "97000.10", time_ms=now - 2_500)
    tickerd_server.set_price("ETHUSDT", "3150.25", time_ms=now - 61_000)
    args = ["watch", "BTCUSDT", "ETHUSDT", "--url", tickerd_server.ws_url]
    assert main([*args, "--rest-url", tickerd_server.rest_url, "--count", "1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].endswith(f"  {iso_time(now)}  refresh 1")
    assert [line.split()[4] for line in lines[2:]] == ["2.5", "61.0"]


def test_watch_without_the_served_clock_says_so(
    tickerd_server: TickerdServer, capsys: pytest.CaptureFixture[str]
) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"
    args = ["watch", "BTCUSDT", "--url", tickerd_server.ws_url, "--rest-url", dead]
    assert main([*args, "--count", "1"]) == 0
    out = capsys.readouterr().out
    assert f"! ages use this machine's clock: {dead}/fapi/v1/time: " in out


def test_rest_url_beside_the_websocket_api() -> None:
    assert rest_url_for("ws://127.0.0.1:9000/ws-fapi/v1") == "http://127.0.0.1:9001"
    assert rest_url_for("wss://example.test/ws-fapi/v1") == "https://example.test:444"
    assert rest_url_for("ws://[::1]:7000/x") == "http://[::1]:7001"
    assert rest_url_for("wss://ws-fapi.binance.com/ws-fapi/v1") == "https://fapi.binance.com"
    assert (
        rest_url_for("wss://testnet.binancefuture.com/ws-fapi/v1")
        == "https://testnet.binancefuture.com"
    )


def ticker(symbol: str, price: str, time_ms: int) -> PriceTicker:
    return PriceTicker(symbol, Decimal(price), time_ms)


def test_watch_table_change_since_start_and_age() -> None:
    view = WatchTable(["BTCUSDT", "ETHUSDT", "DOGEUSDT"])
    view.update([ticker("BTCUSDT", "100.00", 1_000), ticker("ETHUSDT", "0.00000010", 1_000)])
    view.update([ticker("BTCUSDT", "97.50", 2_000), ticker("ETHUSDT", "0.00000011", 2_500)])
    lines = view.lines("ws://x", now_ms=4_750)
    assert lines[0] == "tickerd watch  ws://x  1970-01-01T00:00:04.750Z  refresh 2"
    assert (
        view.title("ws://x", 4_750) == "tickerd watch  1970-01-01T00:00:04.750Z  refresh 2  ws://x"
    )
    assert [line.split() for line in lines[2:]] == [
        ["BTCUSDT", "97.50", "-2.50", "-2.50%", "2.7"],
        ["ETHUSDT", "0.00000011", "+0.00000001", "+10.00%", "2.2"],
        ["DOGEUSDT", "-", "-", "-", "-"],  # no price yet
    ]


def test_table_and_iso_time() -> None:
    assert table(("A", "BB"), [("xyz", "1"), ("q", "22")], right=(1,)) == (
        "A    BB\nxyz   1\nq    22"
    )
    assert iso_time(1_700_000_000_123) == "2023-11-14T22:13:20.123Z"
    assert iso_time(0) == "1970-01-01T00:00:00.000Z"
    assert iso_time(-1) == "-1 ms"  # out of datetime's range: the number, not a traceback
    assert iso_time(2**63 - 1) == f"{2**63 - 1} ms"
    assert utc_stamp(1_796_280_507_958) == "2026-12-03T06:48:27.958Z (1796280507958)"
    banned = "Way too many requests; IP(10.0.0.7) banned until 1796280507958. Please use"
    assert with_utc(banned) == (
        "Way too many requests; IP(10.0.0.7) banned until 1796280507958"
        " (2026-12-03T06:48:27.958Z). Please use"
    )
    assert with_utc("no times here 42") == "no times here 42"


# -- real processes -----------------------------------------------------------------------


def child_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TICKERD_")}
    env["PYTHONUNBUFFERED"] = "1"
    return env


def test_price_in_a_real_process(tickerd_server: TickerdServer) -> None:
    tickerd_server.set_price("BTCUSDT", "97000.10")
    done = subprocess.run(
        [sys.executable, "-m", "tickerd", "price", "BTCUSDT", "--url", tickerd_server.ws_url],
        check=False,
        capture_output=True,
        text=True,
        timeout=30,
        env=child_env(),
        stdin=subprocess.DEVNULL,
    )
    assert (done.returncode, done.stdout, done.stderr) == (0, "BTCUSDT 97000.10\n", "")


def test_watch_in_a_real_process_exits_0_on_ctrl_c(tickerd_server: TickerdServer) -> None:
    args = ["watch", "BTCUSDT", "--url", tickerd_server.ws_url, "--interval", "0.1"]
    process = subprocess.Popen(
        [sys.executable, "-m", "tickerd", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        env=child_env(),
        text=True,
    )
    try:
        assert process.stdout is not None
        ready, _, _ = select.select([process.stdout], [], [], 15)
        assert ready, "watch printed nothing in 15 s"
        first = process.stdout.readline()
        assert first.startswith("tickerd watch  ")
        time.sleep(0.3)
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, err
    assert err == ""
    assert "BTCUSDT" in out and "Traceback" not in out


def test_readme_documents_every_serve_flag():
    """Every setting is a `tickerd serve` flag, and the README's flags table names each."""
    from pathlib import Path

    from tickerd.cli import build_parser
    from tickerd.config import setting_names

    readme = (Path(__file__).parents[1] / "README.md").read_text(encoding="utf-8")
    serve_help = build_parser({}).parse_args(["serve"])
    for name in setting_names():
        assert hasattr(serve_help, name), name
        assert f"| `--{name.replace('_', '-')}` |" in readme, name


def test_watch_against_a_replay_ages_by_the_replay_clock(server) -> None:  # type: ignore[no-untyped-def]
    from pathlib import Path

    trades = Path(__file__).parent / "data" / "replay" / "BTCUSDT-trades-2024-01-01.csv"
    srv = server("--feed", "replay", "--replay-path", str(trades), "--replay-speed", "max")
    done = subprocess.run(
        [sys.executable, "-m", "tickerd", "watch", "BTCUSDT", "--url", srv.url]
        + ["--rest-url", srv.rest_url, "--count", "1"],
        check=False,
        capture_output=True,
        text=True,
        timeout=30,
        env=child_env(),
        stdin=subprocess.DEVNULL,
    )
    assert (done.returncode, done.stderr) == (0, ""), done.stderr
    head, _, row = done.stdout.splitlines()
    # After the files the replay's clock runs on from its last trade (1704067213967, the
    # served tick's time): the age is that clock's distance from it, not this machine's.
    m = re.fullmatch(r"tickerd watch  \S+  (2024-01-01T[0-9:.]+Z)  refresh 1", head)
    assert m, head
    from datetime import UTC, datetime, timedelta

    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    served = (datetime.fromisoformat(m[1]) - epoch) // timedelta(milliseconds=1)
    age = served - 1_704_067_213_967
    assert 0 <= age < 60_000, head
    assert row.split() == [
        "BTCUSDT",
        "42283.70",
        "+0.00",
        "+0.00%",
        f"{age // 1000}.{age % 1000 // 100}",
    ]

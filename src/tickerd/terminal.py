"""The terminal commands ``tickerd price`` and ``tickerd watch``: the client, printed.

Both speak the Binance USDⓈ-M Futures WebSocket API method ``ticker.price``
(https://developers.binance.com/docs/derivatives/usds-margined-futures/market-data/websocket-api/Symbol-Price-Ticker)
through :class:`tickerd.client.Client`, so they work against tickerd and against any
Binance-compatible URL (``--url``, or the ``TICKERD_URL`` environment variable).

``watch`` redraws its table in place with ANSI cursor codes when stdout is a terminal and
prints plain tables one after another otherwise; it stops cleanly (status 0) on Ctrl-C or
SIGTERM, or after ``--count`` refreshes. Prices are Decimals end to end and printed in
fixed-point notation, never through a float.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import threading
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, TextIO

from .client import DEFAULT_URL, Client, PriceTicker, _new_loop
from .errors import (
    BinanceError,
    ConnectionLost,
    ProtocolError,
    RequestTimeout,
    TickerdError,
)
from .validation import is_decimal, read_url

URL_ENV = "TICKERD_URL"
MAX_FAILED_REFRESHES = 5  # watch gives up after this many refreshes in a row fail
_HIDE_CURSOR, _SHOW_CURSOR, _CLEAR_BELOW = "\x1b[?25l", "\x1b[?25h", "\x1b[J"
_PERCENT = Decimal("0.01")


def add_commands(sub: Any, env: dict[str, str]) -> None:
    """Add ``price`` and ``watch`` to the ``tickerd`` subcommands."""
    url = env.get(URL_ENV) or DEFAULT_URL
    url_help = f"WebSocket API URL (env {URL_ENV}; default {url})"
    ws_url = _ws_url_type(env.get(URL_ENV))

    price = sub.add_parser("price", help="print the latest price of a symbol, or of all")
    price.add_argument("symbol", nargs="?", help="e.g. BTCUSDT (default: every symbol)")
    price.add_argument("--url", default=url, type=ws_url, help=url_help)
    price.add_argument("--timeout", type=_positive, default=10.0, help="seconds (default 10)")

    watch = sub.add_parser("watch", help="a live table of prices (Ctrl-C to stop)")
    watch.add_argument("symbols", nargs="*", help="e.g. BTCUSDT ETHUSDT (default: every symbol)")
    watch.add_argument("--url", default=url, type=ws_url, help=url_help)
    watch.add_argument(
        "--interval", type=_positive, default=1.0, help="seconds between refreshes (default 1)"
    )
    watch.add_argument("--count", type=int, default=None, help="stop after N refreshes")
    watch.add_argument("--timeout", type=_positive, default=10.0, help="seconds (default 10)")


def _positive(text: str) -> float:
    if not is_decimal(text) or not float(text) > 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive number of seconds")
    return float(text)


def _ws_url_type(from_env: str | None) -> Any:
    def ws_url(text: str) -> str:
        try:
            return read_url(text, {"schemes": ("ws", "wss")})
        except ValueError as exc:
            where = f" (from {URL_ENV})" if text == from_env else ""
            raise argparse.ArgumentTypeError(f"{text!r}{where}: {exc}") from None

    return ws_url


def run_command(
    args: argparse.Namespace, out: TextIO | None = None, err: TextIO | None = None
) -> int:
    """Run ``price`` or ``watch``; returns the exit status (errors: 1, with code and msg)."""
    out = out or sys.stdout
    err = err or sys.stderr
    coro = _price(args, out) if args.command == "price" else _watch(args, out)
    try:
        with asyncio.Runner(loop_factory=_new_loop) as runner:
            return runner.run(coro)
    except KeyboardInterrupt:  # a Ctrl-C that arrived before the handler was in place
        return 0
    except BinanceError as exc:
        print(f"tickerd: error {exc.code}: {exc.msg} (status {exc.status})", file=err)
    except ConnectionLost as exc:
        print(f"tickerd: {exc}", file=err)
    except RequestTimeout as exc:
        print(f"tickerd: {exc} ({args.url})", file=err)
    except ProtocolError as exc:
        print(f"tickerd: not a Binance-compatible reply: {exc}", file=err)
    except TickerdError as exc:  # pragma: no cover - every client error is one of the above
        print(f"tickerd: {exc}", file=err)
    return 1


def _client(args: argparse.Namespace, connect_attempts: int) -> Client:
    return Client(
        args.url,
        timeout=args.timeout,
        connect_timeout=args.timeout,
        connect_attempts=connect_attempts,
        max_wait=30.0,
        backoff_max=2.0,
    )


# -- price ------------------------------------------------------------------------------


async def _price(args: argparse.Namespace, out: TextIO) -> int:
    async with _client(args, connect_attempts=1) as client:
        if args.symbol:
            ticker = await client.ticker_price(args.symbol.upper())
            print(f"{ticker.symbol} {ticker.price:f}", file=out)
        else:
            tickers = await client.ticker_price()
            rows = [(t.symbol, f"{t.price:f}", iso_time(t.time_ms)) for t in tickers]
            print(table(("SYMBOL", "PRICE", "TIME"), rows, right=(1,)), file=out)
    return 0


def iso_time(ms: int) -> str:
    """Epoch milliseconds as ISO 8601 UTC with milliseconds, computed without floats."""
    seconds, millis = divmod(ms, 1000)
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S") + f".{millis:03d}Z"


def table(header: Sequence[str], rows: Sequence[Sequence[str]], right: Sequence[int] = ()) -> str:
    """Columns padded to their widest cell; ``right`` lists right-aligned columns."""
    widths = [len(h) for h in header]
    for row in rows:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))

    def line(cells: Sequence[str]) -> str:
        return "  ".join(
            c.rjust(w) if i in right else c.ljust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()

    return "\n".join([line(header), *(line(r) for r in rows)])


# -- watch ------------------------------------------------------------------------------


class WatchTable:
    """What ``watch`` shows: each symbol's price, change since the first refresh, tick age."""

    def __init__(self, symbols: Sequence[str]) -> None:
        self.symbols = list(symbols)
        self.first: dict[str, PriceTicker] = {}
        self.last: dict[str, PriceTicker] = {}
        self.refreshes = 0
        self.status = ""

    def update(self, tickers: Sequence[PriceTicker]) -> None:
        for t in tickers:
            self.first.setdefault(t.symbol, t)
            self.last[t.symbol] = t
        self.refreshes += 1

    def lines(self, url: str, now_ms: int) -> list[str]:
        rows = []
        for symbol in self.symbols or sorted(self.last):
            t = self.last.get(symbol)
            if t is None:
                rows.append((symbol, "-", "-", "-", "-"))
                continue
            start = self.first[symbol].price
            change = t.price - start
            pct = (change * 100 / start).quantize(_PERCENT) if start else Decimal(0)
            age = max(0, now_ms - t.time_ms)
            rows.append(
                (
                    symbol,
                    f"{t.price:f}",
                    f"{change:+f}",
                    f"{pct:+.2f}%",
                    f"{age // 1000}.{age % 1000 // 100}",
                )
            )
        head = f"tickerd watch  {url}  {iso_time(now_ms)}  refresh {self.refreshes}"
        body = table(("SYMBOL", "PRICE", "CHANGE", "CHANGE%", "AGE s"), rows, right=(1, 2, 3, 4))
        return [head, *body.split("\n"), *([self.status] if self.status else [])]


class Screen:
    """Draws frames: in place on a terminal (ANSI), one after another on anything else."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.tty = out.isatty()
        self.drawn = 0

    def draw(self, lines: list[str]) -> None:
        if self.tty:
            prefix = _HIDE_CURSOR if not self.drawn else f"\x1b[{self.drawn}F{_CLEAR_BELOW}"
            self.out.write(prefix + "".join(line + "\n" for line in lines))
        else:
            self.out.write(("\n" if self.drawn else "") + "".join(line + "\n" for line in lines))
        self.out.flush()
        self.drawn = len(lines)

    def close(self) -> None:
        if self.tty and self.drawn:
            self.out.write(_SHOW_CURSOR)
            self.out.flush()


async def _watch(args: argparse.Namespace, out: TextIO) -> int:
    symbols = [s.upper() for s in args.symbols]
    view = WatchTable(symbols)
    screen = Screen(out)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    # Signal handlers can only be set from the main thread (tests call main() elsewhere).
    handled = (
        [signal.SIGINT, signal.SIGTERM]
        if threading.current_thread() is threading.main_thread()
        else []
    )
    for sig in handled:
        loop.add_signal_handler(sig, stop.set)
    failures = 0
    try:
        async with _client(args, connect_attempts=5) as client:
            while not stop.is_set():
                try:
                    tickers = await _fetch(client, symbols, first=view.refreshes == 0)
                except (ConnectionLost, RequestTimeout) as exc:
                    failures += 1
                    if failures >= MAX_FAILED_REFRESHES:
                        raise
                    view.status = f"! {exc}; retrying"
                else:
                    failures = 0
                    view.status = ""
                    view.update(tickers)
                screen.draw(view.lines(args.url, time.time_ns() // 1_000_000))
                if args.count is not None and view.refreshes >= args.count:
                    break
                try:
                    await asyncio.wait_for(stop.wait(), args.interval)
                except TimeoutError:
                    pass
    finally:
        screen.close()
        for sig in handled:
            loop.remove_signal_handler(sig)
    return 0


async def _fetch(client: Client, symbols: list[str], *, first: bool) -> list[PriceTicker]:
    """One refresh. Named symbols are asked one by one the first time (so an unknown one
    fails with the server's -1121) and while that weighs no more than the all-symbols
    request (weight 2); otherwise one all-symbols request serves them all."""
    if not symbols:
        return await client.ticker_price()
    if first or len(symbols) <= 2:
        return list(await asyncio.gather(*(client.ticker_price(s) for s in symbols)))
    wanted = set(symbols)
    return [t for t in await client.ticker_price() if t.symbol in wanted]

"""``tickerd watch``: a live table of prices, full screen on a terminal.

Speaks the Binance USDⓈ-M Futures WebSocket API method ``ticker.price``
(https://developers.binance.com/docs/derivatives/usds-margined-futures/market-data/websocket-api/Symbol-Price-Ticker)
through :class:`tickerd.client.Client`, and reads the server's clock from the REST twin
``GET /fapi/v1/time``
(https://developers.binance.com/docs/derivatives/usds-margined-futures/market-data/rest-api/Check-Server-Time)
so tick ages are measured against the time the server serves — a replay's time during a
replay — not this machine's.

On a terminal the table is drawn by ``rich`` on the alternate screen, redrawn in place at
every refresh and on every resize, cut to the terminal's size (a table taller than the
screen ends with "… N more"); the terminal is given back as it was on exit, whether by
``--count``, Ctrl-C, SIGTERM or an error. Anything else (a pipe, a file) gets plain tables
one after another, separated by a blank line.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import threading
import time
from collections.abc import Iterator, Sequence
from decimal import Decimal
from typing import Self, TextIO
from urllib.parse import urlsplit

import aiohttp
import orjson
from rich.console import Console, ConsoleOptions, RenderResult
from rich.live import Live
from rich.table import Table
from rich.text import Text

from .client import Client
from .errors import BinanceError, ConnectionLost, RequestTimeout
from .models import PriceTicker
from .quotes import SymbolError, fetch_each, table
from .timestamps import iso_time

__all__ = ["ServedClock", "WatchTable", "WatchView", "rest_url_for", "watch"]

MAX_FAILED_REFRESHES = 5  # watch gives up after this many refreshes in a row fail
_PERCENT = Decimal("0.01")
_HEADER = ("SYMBOL", "PRICE", "CHANGE", "CHANGE%", "AGE s")

#: REST hosts of WebSocket API hosts that do not follow tickerd's layout (REST on port + 1).
KNOWN_REST_URLS = {
    "ws-fapi.binance.com": "https://fapi.binance.com",
    "testnet.binancefuture.com": "https://testnet.binancefuture.com",
}


def rest_url_for(ws_url: str) -> str:
    """The REST base URL beside a WebSocket API URL: Binance's own hosts by name, otherwise
    tickerd's layout (the same host, the WebSocket API port + 1: 9000 → 9001)."""
    parts = urlsplit(ws_url)
    host = parts.hostname or "127.0.0.1"
    if host in KNOWN_REST_URLS:
        return KNOWN_REST_URLS[host]
    secure = parts.scheme == "wss"
    port = parts.port or (443 if secure else 80)
    shown = f"[{host}]" if ":" in host else host
    return f"{'https' if secure else 'http'}://{shown}:{port + 1}"


class ServedClock:
    """The server's clock, read from ``GET /fapi/v1/time`` at every refresh.

    A refresh is shown at the time the server said (the tick prices were fetched alongside);
    when a read fails, the last reading is carried forward by the time since, and until one
    succeeds this machine's clock stands in (``served`` is False).
    """

    def __init__(self, rest_url: str, timeout: float) -> None:
        self.url = rest_url.rstrip("/") + "/fapi/v1/time"
        self.timeout = timeout
        self.served = False
        self.fresh = False  # the last read succeeded
        self.problem = ""
        self._server_ms = 0
        self._at = 0.0

    async def sync(self, http: aiohttp.ClientSession) -> None:
        """Read the server's time once; on failure keep the last reading and say why."""
        self.fresh = False
        try:
            async with asyncio.timeout(self.timeout):
                async with http.get(self.url) as response:
                    body = await response.read()
            server_ms = orjson.loads(body).get("serverTime") if response.status == 200 else None
        except (aiohttp.ClientError, OSError, TimeoutError, orjson.JSONDecodeError) as exc:
            self.problem = f"{type(exc).__name__}: {exc}".rstrip(": ")
            return
        except AttributeError:  # a JSON body that is not an object
            server_ms = None
        if type(server_ms) is not int:
            self.problem = f"HTTP {response.status} without serverTime"
            return
        self._server_ms, self._at = server_ms, time.monotonic()
        self.served, self.fresh, self.problem = True, True, ""

    def now_ms(self) -> int:
        """The time to show a refresh at: the reading just made, else the last one moved on
        by the time since, else this machine's clock."""
        if self.fresh:
            return self._server_ms
        if not self.served:
            return time.time_ns() // 1_000_000
        return self._server_ms + int((time.monotonic() - self._at) * 1000)


class WatchTable:
    """What ``watch`` shows: each symbol's price, change since the first refresh, tick age."""

    def __init__(self, symbols: Sequence[str]) -> None:
        self.symbols = list(symbols)
        self.first: dict[str, PriceTicker] = {}
        self.last: dict[str, PriceTicker] = {}
        self.refreshes = 0
        self.status = ""
        self.now_ms = 0  # the served time of the last refresh

    def update(self, tickers: Sequence[PriceTicker]) -> None:
        """Take one refresh's tickers."""
        for t in tickers:
            self.first.setdefault(t.symbol, t)
            self.last[t.symbol] = t
        self.refreshes += 1

    def rows(self, now_ms: int) -> list[tuple[str, str, str, str, str]]:
        """One row per symbol (named ones in their order, else all by name); ``-`` without
        a price yet. Ages are ``now_ms`` (the served clock) minus the tick's time."""
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
            rows.append((symbol, f"{t.price:f}", f"{change:+f}", f"{pct:+.2f}%", _seconds(age)))
        return rows

    def title(self, url: str, now_ms: int) -> str:
        """The title line of the full-screen view."""
        return f"tickerd watch  {iso_time(now_ms)}  refresh {self.refreshes}  {url}"

    def lines(self, url: str, now_ms: int) -> list[str]:
        """The plain (not a terminal) frame."""
        head = f"tickerd watch  {url}  {iso_time(now_ms)}  refresh {self.refreshes}"
        body = table(_HEADER, self.rows(now_ms), right=(1, 2, 3, 4))
        return [head, *body.split("\n"), *([self.status] if self.status else [])]


def _seconds(ms: int) -> str:
    return f"{ms // 1000}.{ms % 1000 // 100}"


class WatchView:
    """The full-screen frame: a rich renderable cut to the size it is given."""

    def __init__(self, view: WatchTable, url: str, clock: ServedClock) -> None:
        self.view = view
        self.url = url
        self.clock = clock

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        width = options.max_width
        height = options.height or console.height
        now_ms = self.view.now_ms
        yield _line(self.view.title(self.url, now_ms), "bold", width)
        notes = [n for n in (self.view.status, self.clock_note()) if n]
        rows = self.view.rows(now_ms)
        room = max(0, height - 2 - len(notes))  # title, column header
        shown = rows if len(rows) <= room else rows[: max(0, room - 1)]
        if room > 0:
            grid = Table(box=None, pad_edge=False, show_edge=False, padding=(0, 1))
            for i, name in enumerate(_HEADER):
                grid.add_column(
                    name,
                    justify="left" if i == 0 else "right",
                    no_wrap=True,
                    overflow="ellipsis",
                    header_style="bold",
                )
            for row in shown:
                grid.add_row(*row[:2], Text(row[2], style=_trend(row[2])), *row[3:])
            yield grid
        if len(shown) < len(rows) and room > 0:
            yield _line(f"… {len(rows) - len(shown)} more", "dim", width)
        for note in notes:
            yield _line(note, "yellow", width)

    def clock_note(self) -> str:
        """A line saying the ages are not by the server's clock, and why (else empty)."""
        if self.clock.served or not self.clock.problem:
            return ""
        return f"! ages use this machine's clock: {self.clock.url}: {self.clock.problem}"


def _line(text: str, style: str, width: int) -> Text:
    line = Text(text, style=style, no_wrap=True, overflow="ellipsis")
    line.truncate(width, overflow="ellipsis")
    return line


def _trend(change: str) -> str:
    return "red" if change.startswith("-") else "green" if change.strip("+0.") else ""


class Screen:
    """Draws frames: full screen on a terminal (rich), one after another on anything else."""

    def __init__(self, out: TextIO, frame: WatchView) -> None:
        self.out = out
        self.frame = frame
        self.tty = out.isatty()
        self.drawn = 0
        self._live: Live | None = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        live = self._live
        if live is not None:
            self._live = None
            live.stop()  # leaves the alternate screen, shows the cursor

    def draw(self) -> None:
        """Show the current frame: redrawn in place (terminal; the first draw enters the
        alternate screen), appended (anything else)."""
        if self.tty:
            live = self._live
            if live is None:
                console = Console(file=self.out, highlight=False)
                live = Live(
                    self.frame,
                    console=console,
                    screen=True,
                    auto_refresh=False,
                    redirect_stdout=False,
                    redirect_stderr=False,
                )
                live.start(refresh=False)
                self._live = live
            self.redraw()
        else:
            frame = self.frame
            lines = frame.view.lines(frame.url, frame.view.now_ms)
            note = frame.clock_note()
            if note:
                lines.append(note)
            self.out.write(("\n" if self.drawn else "") + "".join(f"{line}\n" for line in lines))
            self.out.flush()
        self.drawn += 1

    def redraw(self) -> None:
        """Draw the frame again at the terminal's current size (on a resize)."""
        live = self._live
        if live is not None:
            with contextlib.suppress(OSError):  # a terminal that cannot tell its size
                live.console.size = os.get_terminal_size(self.out.fileno())
            live.refresh()


def _iter_signals() -> Iterator[signal.Signals]:
    # Signal handlers can only be set from the main thread (tests call main() elsewhere).
    if threading.current_thread() is threading.main_thread():
        yield from (signal.SIGINT, signal.SIGTERM)


async def watch(args: argparse.Namespace, client: Client, out: TextIO) -> int:
    """Run ``tickerd watch`` until ``--count`` refreshes, Ctrl-C or SIGTERM; returns 0."""
    symbols = [s.upper() for s in args.symbols]
    view = WatchTable(symbols)
    clock = ServedClock(args.rest_url or rest_url_for(args.url), args.timeout)
    screen = Screen(out, WatchView(view, args.url, clock))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    handled = list(_iter_signals())
    for sig in handled:
        loop.add_signal_handler(sig, stop.set)
    failures = 0
    timeout = aiohttp.ClientTimeout(total=args.timeout)
    try:
        async with aiohttp.ClientSession(timeout=timeout) as http, client:
            with screen:
                if screen.tty and handled:
                    loop.add_signal_handler(signal.SIGWINCH, screen.redraw)
                    handled.append(signal.SIGWINCH)
                while not stop.is_set():
                    fetched, _ = await asyncio.gather(
                        _fetch(client, symbols, first=view.refreshes == 0),
                        clock.sync(http),
                        return_exceptions=True,
                    )
                    if isinstance(fetched, (ConnectionLost, RequestTimeout)):
                        failures += 1
                        if failures >= MAX_FAILED_REFRESHES:
                            raise fetched
                        view.status = f"! {fetched}; retrying"
                    elif isinstance(fetched, BaseException):
                        raise fetched
                    else:
                        failures = 0
                        view.status = ""
                        view.update(fetched)
                    view.now_ms = clock.now_ms()
                    screen.draw()
                    if args.count is not None and view.refreshes >= args.count:
                        break
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), args.interval)
    finally:
        for sig in handled:
            loop.remove_signal_handler(sig)
    return 0


async def _fetch(client: Client, symbols: list[str], *, first: bool) -> list[PriceTicker]:
    """One refresh. Named symbols are asked one by one the first time (so an unknown one
    fails with the server's -1121, naming it) and while that weighs no more than the
    all-symbols request (weight 2); otherwise one all-symbols request serves them all."""
    if not symbols:
        return await client.ticker_price()
    if first or len(symbols) <= 2:
        tickers = []
        for symbol, result in await fetch_each(client, symbols):
            if isinstance(result, BinanceError):
                raise SymbolError(symbol, result)
            tickers.append(result)
        return tickers
    wanted = set(symbols)
    return [t for t in await client.ticker_price() if t.symbol in wanted]

"""The terminal commands ``tickerd price`` and ``tickerd watch``: the client, printed.

Both speak the Binance USDⓈ-M Futures WebSocket API method ``ticker.price``
(https://developers.binance.com/docs/derivatives/usds-margined-futures/market-data/websocket-api/Symbol-Price-Ticker)
through :class:`tickerd.client.Client`, so they work against tickerd and against any
Binance-compatible URL (``--url``, or the ``TICKERD_URL`` environment variable). ``watch``
itself lives in :mod:`tickerd.watch`.

A failure is one line on stderr naming what it is about — the symbol, the URL or the
argument — and a non-zero exit: 1 for what the server or the network said, 2 for a bad
argument. Prices are Decimals end to end and printed in fixed-point notation, never
through a float.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any, TextIO

from .client import DEFAULT_URL, Client
from .errors import BinanceError, ConnectionLost, ProtocolError, RequestTimeout, TickerdError
from .loop import run
from .quotes import SymbolError, describe, fetch_each, table
from .timestamps import iso_time, with_utc
from .validation import is_decimal, read_url

__all__ = ["REST_URL_ENV", "URL_ENV", "add_commands", "run_command"]

URL_ENV = "TICKERD_URL"
REST_URL_ENV = "TICKERD_REST_URL"


def add_commands(sub: Any, env: dict[str, str]) -> None:
    """Add ``price`` and ``watch`` to the ``tickerd`` subcommands."""
    url = env.get(URL_ENV) or DEFAULT_URL
    url_help = f"WebSocket API URL (env {URL_ENV}; default {url})"
    ws_url = _url_type(("ws", "wss"), URL_ENV, env.get(URL_ENV))
    timeout_help = "seconds to wait for a connection or a reply (default 10)"

    price = sub.add_parser(
        "price",
        help="print the latest price of symbols, or of all",
        description="Print the latest price of each SYMBOL, or a table of every symbol.",
        epilog="examples:\n  tickerd price BTCUSDT ETHUSDT\n"
        "  tickerd price --url wss://ws-fapi.binance.com/ws-fapi/v1 BTCUSDT",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    price.add_argument("symbols", nargs="*", help="e.g. BTCUSDT ETHUSDT (default: every symbol)")
    price.add_argument("--url", type=ws_url, default=url, help=url_help)
    price.add_argument(
        "--timeout", type=_positive, default=10.0, metavar="SECONDS", help=timeout_help
    )

    watch_cmd = sub.add_parser(
        "watch",
        help="a live full-screen table of prices (Ctrl-C to stop)",
        description="A live full-screen table: price, change since start and tick age by\n"
        "the server's clock (read from GET /fapi/v1/time on the REST URL).",
        epilog="examples:\n  tickerd watch\n  tickerd watch BTCUSDT ETHUSDT --interval 0.5\n"
        "  tickerd watch --url ws://10.0.0.5:9000/ws-fapi/v1 --rest-url http://10.0.0.5:9001",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    watch_cmd.add_argument(
        "symbols", nargs="*", help="e.g. BTCUSDT ETHUSDT (default: every symbol)"
    )
    watch_cmd.add_argument("--url", type=ws_url, default=url, help=url_help)
    rest = env.get(REST_URL_ENV) or None
    watch_cmd.add_argument(
        "--rest-url",
        type=_url_type(("http", "https"), REST_URL_ENV, rest),
        default=rest,
        metavar="URL",
        help=f"REST base URL whose /fapi/v1/time is the server's clock (env {REST_URL_ENV}; "
        f"default {rest or 'the WebSocket API host, port + 1 (tickerd) or Binance REST'})",
    )
    watch_cmd.add_argument(
        "--interval",
        type=_positive,
        default=1.0,
        metavar="SECONDS",
        help="seconds between refreshes (default 1)",
    )
    watch_cmd.add_argument(
        "--count",
        type=_count,
        default=None,
        metavar="N",
        help="stop after N refreshes (default: never)",
    )
    watch_cmd.add_argument(
        "--timeout", type=_positive, default=10.0, metavar="SECONDS", help=timeout_help
    )


def _positive(text: str) -> float:
    if not is_decimal(text) or not float(text) > 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive number of seconds")
    return float(text)


def _url_type(schemes: tuple[str, ...], variable: str, from_env: str | None) -> Any:
    """An argparse type for a URL flag; its error names ``variable`` when the value came
    from there."""

    def url(text: str) -> str:
        try:
            return read_url(text, {"schemes": schemes})
        except ValueError as exc:
            where = f" (from {variable})" if text == from_env else ""
            raise argparse.ArgumentTypeError(f"{text!r}{where}: {exc}") from None

    return url


def _count(text: str) -> int:
    if not is_decimal(text) or "." in text or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of refreshes, 1 or more")
    return int(text)


def run_command(
    args: argparse.Namespace, out: TextIO | None = None, err: TextIO | None = None
) -> int:
    """Run ``price`` or ``watch``; returns the exit status (a failure: 1 and one line)."""
    out = out or sys.stdout
    err = err or sys.stderr
    args.symbols = [s.upper() for s in args.symbols]
    try:
        client = _client(args, connect_attempts=1 if args.command == "price" else 5)
        if args.command == "price":
            return run(_price(args, client, out, err))
        from .watch import watch  # rich and aiohttp load only for watch

        return run(watch(args, client, out))
    except KeyboardInterrupt:  # a Ctrl-C that arrived before the handler was in place
        return 0
    except SymbolError as exc:
        print(f"tickerd: {exc}", file=err)
    except BinanceError as exc:
        print(f"tickerd: {describe(args.url, exc)}", file=err)
    except ConnectionLost as exc:
        print(f"tickerd: {with_utc(str(exc))}", file=err)
    except RequestTimeout as exc:
        print(f"tickerd: {exc} ({args.url})", file=err)
    except ProtocolError as exc:
        print(f"tickerd: not a Binance-compatible reply from {args.url}: {exc}", file=err)
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


async def _price(args: argparse.Namespace, client: Client, out: TextIO, err: TextIO) -> int:
    """Each named symbol on a line of its own (refused ones on stderr, exit 1), or a table
    of every symbol."""
    async with client:
        if not args.symbols:
            tickers = await client.ticker_price()
            rows = [(t.symbol, f"{t.price:f}", iso_time(t.time_ms)) for t in tickers]
            print(table(("SYMBOL", "PRICE", "TIME"), rows, right=(1,)), file=out)
            return 0
        status = 0
        for symbol, result in await fetch_each(client, args.symbols):
            if isinstance(result, BinanceError):
                print(f"tickerd: {describe(symbol, result)}", file=err)
                status = 1
            else:
                print(f"{result.symbol} {result.price:f}", file=out)
        return status

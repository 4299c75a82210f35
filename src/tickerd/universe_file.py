"""``tickerd symbols fetch``: save a Binance-compatible exchangeInfo document as a file.

The document is ``GET /fapi/v1/exchangeInfo``
(https://developers.binance.com/docs/derivatives/usds-margined-futures/market-data/rest-api/Exchange-Information),
weight 1, from Binance's USDⓈ-M REST API by default or any compatible URL (a relay, a
testnet, another tickerd). It is checked the way ``--symbols-file`` will load it before it
is written, and written whole (a temporary file renamed into place), so the file named
by ``--out`` is always either the old one or a complete new one.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, TextIO

from .symbols import SymbolFileError, SymbolUniverse

DEFAULT_REST_URL = "https://fapi.binance.com"
EXCHANGE_INFO_PATH = "/fapi/v1/exchangeInfo"
MAX_BYTES = 32 * 1024 * 1024  # Binance's full document is a few MB


class FetchError(Exception):
    """The document could not be fetched, checked or written; the text says why."""


def add_commands(sub: Any) -> None:
    """Add ``symbols fetch`` to the ``tickerd`` subcommands."""
    symbols = sub.add_parser("symbols", help="the symbol universe: fetch an exchangeInfo file")
    actions = symbols.add_subparsers(dest="symbols_command", required=True)
    fetch = actions.add_parser(
        "fetch", help="write GET /fapi/v1/exchangeInfo of a REST URL to a file (--symbols-file)"
    )
    fetch.add_argument(
        "--url", default=DEFAULT_REST_URL, help=f"REST base URL (default {DEFAULT_REST_URL})"
    )
    fetch.add_argument("--out", required=True, help="file to write (replaced whole)")
    fetch.add_argument(
        "--proxy", default=None, help="http(s) proxy URL (default: HTTPS_PROXY/NO_PROXY)"
    )
    fetch.add_argument("--timeout", type=float, default=30.0, help="seconds (default 30)")


def fetch(url: str, *, proxy: str | None = None, timeout: float = 30.0) -> bytes:
    """The exchangeInfo body of the REST base ``url``; :class:`FetchError` on any failure."""
    target = url.rstrip("/") + EXCHANGE_INFO_PATH
    if not target.startswith(("http://", "https://")):
        raise FetchError(f"--url must be an http(s) URL, not {url!r}")
    handlers: list[urllib.request.BaseHandler] = []
    if proxy is not None:
        handlers.append(urllib.request.ProxyHandler({"http": proxy, "https": proxy}))
    opener = urllib.request.build_opener(*handlers)
    request = urllib.request.Request(target, headers={"Accept": "application/json"})
    try:
        with opener.open(request, timeout=timeout) as response:
            body: bytes = response.read(MAX_BYTES + 1)
    except urllib.error.HTTPError as exc:
        detail = exc.read(200).decode("utf-8", "replace")
        raise FetchError(f"GET {target}: HTTP {exc.code}: {detail}") from None
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        reason = getattr(exc, "reason", exc)
        raise FetchError(f"GET {target}: {reason}") from None
    if len(body) > MAX_BYTES:
        raise FetchError(f"GET {target}: more than {MAX_BYTES} bytes")
    return body


def save(body: bytes, out: str | Path) -> SymbolUniverse:
    """Check ``body`` as an exchangeInfo document and write it to ``out`` atomically."""
    try:
        doc = json.loads(body)
        universe = SymbolUniverse.from_exchange_info(doc)
    except (ValueError, SymbolFileError) as exc:
        raise FetchError(f"not a usable exchangeInfo document: {exc}") from None
    path = Path(out)
    try:
        fd, tmp = tempfile.mkstemp(prefix=path.name + ".", dir=path.parent or Path("."))
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(doc, f, indent=1, ensure_ascii=False)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        raise FetchError(f"cannot write {out}: {exc}") from None
    return universe


def run(args: argparse.Namespace, out: TextIO | None = None, err: TextIO | None = None) -> int:
    """Run ``symbols fetch``; 0 on success, 1 with one line on stderr otherwise."""
    out = out or sys.stdout
    err = err or sys.stderr
    try:
        universe = save(fetch(args.url, proxy=args.proxy, timeout=args.timeout), args.out)
    except FetchError as exc:
        print(f"tickerd: {exc}", file=err)
        return 1
    trading = len(universe.trading())
    print(f"wrote {len(universe)} symbols ({trading} TRADING) to {args.out}", file=out)
    return 0

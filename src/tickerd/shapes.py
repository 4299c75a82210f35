"""The common ``ticker.price`` request shapes, recognised on the bytes before any JSON parser.

https://developers.binance.com/docs/derivatives/usds-margined-futures/market-data/websocket-api/Symbol-Price-Ticker

Real clients send a handful of byte shapes: ``{"id":…,"method":"ticker.price","params":
{"symbol":"BTCUSDT"}}`` with the id first (python-binance, ccxt, hand-made requests, with or
without the spaces of Python's ``json.dumps``) or last (the official SDK, unicorn), and the
same without ``params`` for all symbols.

Theory of operation
-------------------
Everything in such a frame but the id is one of a few texts per symbol, so the texts are
built once, as dict keys: the *tail* after the id (``,"method":…}``) for id-first frames and
the *head* before it (``{"method":…,"id":``) for id-last ones, each mapped to its symbol.
A frame takes the shortcut when its tail or head is one of those keys exactly and the bytes
between are one id token that :func:`tickerd.protocol.id_json` accepts and prints back
unchanged (:data:`ID_TOKEN`: an int64 with no leading zero and at most 18 digits, an
unescaped ``[A-Za-z0-9-_]{1,36}`` string, or ``null``). A key matched exactly holds every
member once, with no escape, so the frame cannot mean anything else; anything else (other
spacing, extra keys, escapes, symbols added to the universe later) goes to the JSON parser,
whose reply is the same, byte for byte (a differential property test holds the two paths to
it). A dict lookup and a check of the id's bytes cost a fraction of a JSON parse.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

#: The request ids the shortcut takes, matched between two offsets of the frame (the
#: definition; :func:`tickerd.protocol.id_token` checks the same without a regex).
ID_TOKEN = re.compile(rb'-?[1-9][0-9]{0,17}|0|"[A-Za-z0-9_\-]{1,36}"|null').fullmatch
#: The start of an id-first frame; the id follows, after at most one space.
ID_FIRST = b'{"id":'
#: What an id-last frame's head ends with; the id follows, after at most one space.
ID_MEMBER = b'"id":'

# (member separator, key-value separator): compact, and Python's json.dumps default.
_SPACINGS = ((b",", b":"), (b", ", b": "))


def tails(symbols: Iterable[str], all_symbols: Any) -> dict[bytes, Any]:
    """The texts after the id of an id-first frame, each mapped to its symbol.

    The frame without ``params`` maps to ``all_symbols``.
    """
    table: dict[bytes, Any] = {}
    for comma, colon in _SPACINGS:
        method = b'%s"method"%s"ticker.price"' % (comma, colon)
        table[method + b"}"] = all_symbols
        for symbol in symbols:
            params = b'%s"params"%s{"symbol"%s"%s"}' % (comma, colon, colon, symbol.encode())
            table[method + params + b"}"] = symbol
    return table


def heads(symbols: Iterable[str], all_symbols: Any) -> dict[bytes, Any]:
    """The texts before ``"id":`` of an id-last frame, each mapped to its symbol."""
    table: dict[bytes, Any] = {}
    for comma, colon in _SPACINGS:
        method = b'{"method"%s"ticker.price"%s' % (colon, comma)
        table[method] = all_symbols
        for symbol in symbols:
            params = b'"params"%s{"symbol"%s"%s"}%s' % (colon, colon, symbol.encode(), comma)
            table[method + params] = symbol
    return table

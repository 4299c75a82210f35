"""What the mirror does with what the upstream sends, without any I/O: bytes and now in.

:class:`MirrorState` applies aggTrade stream messages and ``GET /fapi/v2/ticker/price``
snapshots to the book, with the checks Binance's published formats allow
(developers.binance.com/docs/derivatives/usds-margined-futures/websocket-market-streams/Aggregate-Trade-Streams,
.../market-data/rest-api/Symbol-Price-Ticker-v2):

* an event must be a combined-stream ``{"stream", "data": {"e": "aggTrade", ...}}`` of a
  subscribed symbol, with an integer aggregate id ``a`` (anything else — missing, a string,
  a float, a boolean — is a rejected event: ids are what duplicate detection relies on);
* its trade time ``T`` must pass :func:`tickerd.ticktime.tick_time_problem` against the
  service clock (:data:`~tickerd.ticktime.FUTURE_SKEW_MS` at most ahead): a trade stamped
  in the future is rejected and counted, never applied, so it can neither be served nor
  stored nor make later genuine trades look older;
* a tick is applied only if not older than the book's for that symbol and, for stream
  events, its aggregate id is newer than the last applied — a rollover's overlap and a late
  snapshot never move a price backward.

Every rejection is counted in :class:`MirrorStats`; the first of each (reason, symbol) is
logged at WARNING, the rest at DEBUG, so a flood costs no log volume.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from ..book import PriceBook, TickRejected
from ..errors import TickerdError
from ..models import Tick, Trade
from ..ticktime import FUTURE_SKEW_MS
from .recording import RecordEvent

log = logging.getLogger("tickerd.feeds.mirror")

# What each refusal means, for the log line (error-code, general-info).
REFUSALS: dict[int, str] = {
    418: "IP banned for ignoring 429s",
    429: "rate limited",
    451: "restricted location: Binance refuses service to this IP's location",
}
EXCERPT = 200  # characters of upstream text quoted in a log line
_QTY = re.compile(r"[0-9]{1,30}(?:\.[0-9]{1,30})?")  # an exact decimal quantity text
_MAX_WARNED = 256  # distinct (reason, symbol) pairs logged at WARNING; the rest at DEBUG


class UpstreamError(TickerdError):
    """Binance (or what stands at the configured URL) refused or failed a request."""

    def __init__(self, what: str, status: int, retry_after_s: int | None, detail: str = ""):
        meaning = REFUSALS.get(status, "")
        text = f"{what}: HTTP {status}" + (f" ({meaning})" if meaning else "")
        if detail:
            text += f": {detail}"
        super().__init__(text)
        self.status = status
        self.retry_after_s = retry_after_s


class UpstreamDataError(TickerdError):
    """The upstream answered 200 with something that is not what Binance sends."""


@dataclass
class MirrorStats:
    """Counters of what the mirror saw (all since start)."""

    events: int = 0  # stream messages received
    applied: int = 0  # ticks written to the book (stream and bootstrap)
    rejected: int = 0  # events or rows that could not become a tick
    future: int = 0  # of the rejected: trade times beyond the service clock + skew
    skipped: int = 0  # duplicates and ticks older than the book's
    bootstraps: int = 0  # successful snapshots
    connects: int = 0  # successful handshakes
    drops: int = 0  # connections lost
    rollovers: int = 0  # connections replaced before the 24 h cut
    refusals: int = 0  # HTTP 429/418/451 and refused handshakes
    universe_refreshes: int = 0  # exchangeInfo documents applied
    last_refusal: dict[str, Any] | None = None


def retry_after(headers: Mapping[str, str] | None) -> int | None:
    """The ``Retry-After`` header in whole seconds, if it is one (dates are ignored)."""
    value = headers.get("Retry-After") if headers is not None else None
    if value is None or not value.strip().isdigit() or not value.isascii():
        return None  # isdigit() is also true of "²" or "١", which int() refuses
    return int(value.strip())


class MirrorState:
    """The mirror's bookkeeping: last event time and aggregate id per symbol, counters.

    ``monotonic`` seconds (for staleness) and the service clock's ``now_ms`` (for the
    future bound) are passed into every call; nothing here reads a clock or a socket.
    """

    def __init__(self, book: PriceBook, stats: MirrorStats | None = None) -> None:
        self.book = book
        self.stats = stats if stats is not None else MirrorStats()
        self.last_event: dict[str, float] = {}
        self.last_agg: dict[str, int] = {}
        self.record: RecordEvent | None = None  # a TradeRecorder's, for every applied event
        self._warned: set[tuple[str, str]] = set()

    # -- stream events --------------------------------------------------------------------

    def on_event(
        self, text: str | bytes, subscribed: Collection[str], monotonic_s: float, now_ms: int
    ) -> Tick | None:
        """Apply one combined-stream message; return the tick applied, or None."""
        self.stats.events += 1
        try:
            message = orjson.loads(text)
        except orjson.JSONDecodeError:
            self.reject("json", "-", f"not JSON: {_excerpt(text)!r}")
            return None
        data = message.get("data") if isinstance(message, dict) else None
        if not isinstance(data, dict) or data.get("e") != "aggTrade":
            self.reject("event", "-", f"not an aggTrade event: {_excerpt(text)!r}")
            return None
        symbol = data.get("s")
        if not isinstance(symbol, str) or symbol not in subscribed:
            self.reject("symbol", str(symbol), f"event for unsubscribed symbol {symbol!r}")
            return None
        self.last_event[symbol] = monotonic_s
        agg = data.get("a")
        if type(agg) is not int or agg < 0:
            self.reject(
                "id", symbol, f"aggTrade of {symbol} with aggregate id {agg!r}, not an integer"
            )
            return None
        if agg <= self.last_agg.get(symbol, -1):
            self.stats.skipped += 1  # seen already (rollover overlap)
            return None
        trade_time = data.get("T")
        book = self.book
        current = book.get(symbol)
        if current is not None and type(trade_time) is int and trade_time < current.time_ms:
            self.stats.skipped += 1
            return None
        price = data.get("p")
        tick = self._make(symbol, price, trade_time, now_ms, "aggTrade")
        if tick is None:
            return None
        book.update(_trade_of(tick, agg, data) if book.wants_trades else tick)
        self.last_agg[symbol] = agg
        self.stats.applied += 1
        record = self.record
        if record is not None:
            record(symbol, agg, trade_time, price, data)
        return tick

    # -- snapshots --------------------------------------------------------------------------

    def on_snapshot(self, body: bytes, wanted: Collection[str], now_ms: int, where: str) -> int:
        """Apply a ``/fapi/v2/ticker/price`` body: every wanted symbol's price newer than
        the book's. Returns how many were applied; :class:`UpstreamDataError` if the body is
        not a JSON array."""
        try:
            rows = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise UpstreamDataError(f"{where}: not JSON: {exc}") from None
        if not isinstance(rows, list):
            raise UpstreamDataError(f"{where}: not a JSON array")
        book = self.book
        ticks: list[Tick] = []
        for row in rows:
            if not isinstance(row, dict):
                self.reject("row", "-", f"bootstrap row is not an object: {row!r:.{EXCERPT}}")
                continue
            symbol = row.get("symbol")
            if not isinstance(symbol, str) or symbol not in wanted:
                continue  # a contract this feed does not mirror
            time_ms = row.get("time")
            current = book.get(symbol)
            if current is not None and type(time_ms) is int and time_ms <= current.time_ms:
                self.stats.skipped += 1
                continue
            tick = self._make(symbol, row.get("price"), time_ms, now_ms, "bootstrap")
            if tick is not None:
                ticks.append(tick)
        book.apply(ticks)
        self.stats.applied += len(ticks)
        self.stats.bootstraps += 1
        return len(ticks)

    # -- staleness ----------------------------------------------------------------------------

    def stale(
        self, groups: Iterable[tuple[Collection[str], float]], monotonic_s: float, after_s: float
    ) -> list[str]:
        """Symbols silent longer than ``after_s``: ``groups`` pairs each shard's symbols with
        the monotonic time it last connected (silence counts from the later of the two)."""
        last = self.last_event
        return sorted(
            symbol
            for symbols, since in groups
            for symbol in symbols
            if monotonic_s - max(last.get(symbol, since), since) > after_s
        )

    # -- rejections ---------------------------------------------------------------------------

    def reject(self, kind: str, symbol: str, text: str) -> None:
        """Count a rejected event or row and log it (WARNING once per kind and symbol)."""
        self.stats.rejected += 1
        key = (kind, symbol)
        if key not in self._warned and len(self._warned) < _MAX_WARNED:
            self._warned.add(key)
            log.warning("ignored upstream data: %s (further ones logged at DEBUG)", text)
        else:
            log.debug("ignored upstream data: %s", text)

    def _make(self, symbol: str, price: Any, time_ms: Any, now_ms: int, what: str) -> Tick | None:
        try:
            return self.book.make_tick(symbol, price, time_ms, now_ms=now_ms)
        except TickRejected as exc:
            text = str(exc)
            future = type(time_ms) is int and time_ms > now_ms + FUTURE_SKEW_MS
            if future:
                self.stats.future += 1
            self.reject("future" if future else what, symbol, f"{what} of {symbol}: {text}")
            return None


def _trade_of(tick: Tick, agg: int, data: Mapping[str, Any]) -> Tick:
    """The upstream trade behind ``tick``: quantity, ids and maker flag passed through as
    received when they have the types Binance sends; otherwise the plain tick (its price
    is served either way)."""
    qty, first, last, maker = data.get("q"), data.get("f"), data.get("l"), data.get("m")
    if (
        type(qty) is str
        and _QTY.fullmatch(qty)
        and type(first) is int
        and type(last) is int
        and type(maker) is bool
    ):
        return Trade.of(tick, qty, agg, first, last, maker)
    return tick


def _excerpt(text: str | bytes) -> str:
    shown = text if isinstance(text, str) else text.decode("utf-8", "replace")
    return shown[:EXCERPT]

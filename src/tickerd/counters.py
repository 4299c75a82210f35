"""Counters kept where requests are handled, read by the ops surface when it is asked.

Pure data: nothing here reads a clock or does I/O (callers pass durations in).

Theory of operation
-------------------
The hot path pays one integer addition per event (``counters.price += 1``): no label
lookup, no lock, no call. Labelled metrics are built from these integers only when
``/metrics``, ``/status`` or the dashboard reads them (:mod:`tickerd.ops.metrics`). Rare
events (errors, closes, refusals) may index a small dict whose keys are bounded by
construction (a status from a fixed set, a close code bucketed by :func:`close_code_label`).

Nothing here holds a client IP or a request id: every key has a bounded set of values.
Every figure is a plain number or a dict of numbers, so the counters of several processes
add up: a supervisor aggregating workers sums their :meth:`~ApiCounters.requests` dicts,
histogram ``counts`` and ``total``, and the collector renders the sums as it renders one
process's figures.
"""

from __future__ import annotations

import logging
from bisect import bisect_left
from collections.abc import Iterable, Sequence
from typing import Any

log = logging.getLogger("tickerd.server")

#: Upper bounds (ns) of the reply-latency buckets: 10 µs to 1 s.
LATENCY_BOUNDS_NS = (
    10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000, 2_500_000, 5_000_000, 10_000_000, 25_000_000, 50_000_000,
    100_000_000, 250_000_000, 1_000_000_000,
)  # fmt: skip
#: A socket read is timed for the latency histogram when the service clock's millisecond
#: at its first request frame has none of these bits set: one millisecond in 16. Timing
#: every read (two clock reads and a bucket) would cost an unpipelined request ~10 %; the
#: test reuses the clock value every read already takes, so an untimed read pays one
#: bit test. While the service clock stands still, every read or none is timed.
LATENCY_SAMPLE_MASK = 15
#: Upper bounds (ns) of the store flush-duration buckets: 1 ms to 10 s.
FLUSH_BOUNDS_NS = (
    1_000_000, 2_500_000, 5_000_000, 10_000_000, 25_000_000, 50_000_000,
    100_000_000, 250_000_000, 500_000_000, 1_000_000_000, 2_500_000_000, 10_000_000_000,
)  # fmt: skip
#: The method label of a WebSocket API request whose envelope is invalid (no method read).
INVALID = "invalid"
#: The method label of a request naming a method tickerd does not serve.
UNKNOWN = "unknown"
#: The method label of REST requests no endpoint serves (unknown path or HTTP method).
UNROUTED = "unrouted"
#: Why a WebSocket handshake was refused, and the HTTP status it got.
REFUSALS = {"max_connections": 503, "connect_limit": 429, "rate_limited": 429, "banned": 418}


class Histogram:
    """Observations in fixed integer buckets (``bisect`` on the upper bounds), plus their sum.

    ``counts[i]`` holds observations ≤ ``bounds[i]`` and > ``bounds[i - 1]``; the last slot
    holds those above every bound. Cumulative (Prometheus) buckets are built at read time.
    """

    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: Sequence[int]) -> None:
        if list(bounds) != sorted(set(bounds)) or not bounds:
            raise ValueError("histogram bounds must be distinct and ascending")
        self.bounds = tuple(bounds)
        self.counts = [0] * (len(self.bounds) + 1)
        self.total = 0

    def observe(self, value: int) -> None:
        """Count one observation of ``value``."""
        self.counts[bisect_left(self.bounds, value)] += 1
        self.total += value

    @property
    def count(self) -> int:
        """How many observations were counted."""
        return sum(self.counts)


class ApiCounters:
    """WebSocket API requests by outcome (kept by :class:`~tickerd.protocol.Protocol`).

    ``price`` counts every ``ticker.price`` request; ``price_errors`` those of them answered
    400, 429 or 418, so the 200s are the difference. ``unknown`` counts requests naming a
    method not served (400 unless the limiter refused them: ``unknown_limited``);
    ``invalid`` requests with no valid envelope (400, nothing charged); ``forced`` the
    answers a control-plane fault forced, by method label and status.
    """

    __slots__ = ("forced", "invalid", "methods", "price", "price_errors", "unknown",
                 "unknown_limited")  # fmt: skip

    def __init__(self, methods: Iterable[str] = ("ticker.price",)) -> None:
        self.methods = frozenset(methods)
        self.price = 0
        self.price_errors = {400: 0, 429: 0, 418: 0}
        self.unknown = 0
        self.unknown_limited = {429: 0, 418: 0}
        self.invalid = 0
        self.forced: dict[tuple[str, int], int] = {}

    def refuse(self, method: str, status: int) -> None:
        """Count an answer forced by a fault (``method`` as the request named it)."""
        name = method.rpartition("/")[2]
        key = (name if name in self.methods else UNKNOWN, status)
        self.forced[key] = self.forced.get(key, 0) + 1

    def requests(self) -> dict[tuple[str, int], int]:
        """Requests so far by (method label, status)."""
        errors = self.price_errors
        limited = self.unknown_limited
        out = {
            ("ticker.price", 200): self.price - sum(errors.values()),
            **{("ticker.price", status): n for status, n in errors.items()},
            (UNKNOWN, 400): self.unknown - sum(limited.values()),
            **{(UNKNOWN, status): n for status, n in limited.items()},
            (INVALID, 400): self.invalid,
        }
        for key, n in self.forced.items():
            out[key] = out.get(key, 0) + n
        return out


class RestCounters:
    """REST requests by (method label, status), kept by the REST server.

    The method label is the endpoint's path, or :data:`UNROUTED`. An aiohttp request costs
    some thousand times the dict update, so REST counts by key directly.
    """

    __slots__ = ("by_key", "routes")

    def __init__(self, routes: Iterable[str]) -> None:
        self.routes = frozenset(routes)
        self.by_key: dict[tuple[str, int], int] = {}

    def count(self, path: str, status: int) -> None:
        """Count one answered request."""
        key = (path if path in self.routes else UNROUTED, status)
        self.by_key[key] = self.by_key.get(key, 0) + 1

    def requests(self) -> dict[tuple[str, int], int]:
        """Requests so far by (method label, status)."""
        return dict(self.by_key)


def close_code_label(code: int | None) -> str:
    """A close code as a bounded label: the code, ``3xxx``/``4xxx`` for application
    ranges, ``none`` for a connection that ended without a close frame."""
    if code is None:
        return "none"
    if 3000 <= code <= 4999:
        return f"{code // 1000}xxx"
    return str(code)


class ConnectionCounters:
    """WebSocket connections (kept by the WebSocket server) and its reply latency.

    ``latency`` holds one observation per timed socket read that carried requests (see
    :data:`LATENCY_SAMPLE_MASK`): from the first request frame of the read to the write of
    the replies.
    """

    __slots__ = ("closed", "latency", "opened", "refused")

    def __init__(self) -> None:
        self.opened = 0
        self.closed: dict[tuple[str, str], int] = {}
        self.refused = dict.fromkeys(REFUSALS, 0)
        self.latency = Histogram(LATENCY_BOUNDS_NS)

    def open(self, conn_id: int, client: str) -> None:
        """Count (and log at DEBUG) a connection that completed its handshake."""
        self.opened += 1
        log.debug("connection %d from %s opened", conn_id, client)

    def close(self, conn_id: int, client: str, handshake: Any) -> None:
        """Count (and log at DEBUG) a connection that ended, from picows' close handshake
        record (None when no close frame went either way)."""
        sent = getattr(handshake, "sent", None)
        recv = getattr(handshake, "recv", None)
        if handshake is None or (sent is None and recv is None):
            side, info = "none", None
        elif sent is not None and not handshake.recv_then_sent:
            side, info = "server", sent
        else:
            side, info = "client", recv if recv is not None else sent
        code = int(info.code) if info is not None else None
        key = (close_code_label(code), side)
        self.closed[key] = self.closed.get(key, 0) + 1
        if code is None:
            log.debug("connection %d from %s closed without a close frame", conn_id, client)
        else:
            reason = getattr(info, "reason", None) or ""
            if isinstance(reason, bytes):
                reason = reason.decode("utf-8", "replace")
            log.debug(
                "connection %d from %s closed by the %s: %d %r", conn_id, client, side, code, reason
            )


class StoreCounters:
    """Store flushes: their duration and the failed writes (kept by the price store)."""

    __slots__ = ("duration", "failures")

    def __init__(self) -> None:
        self.duration = Histogram(FLUSH_BOUNDS_NS)
        self.failures = 0

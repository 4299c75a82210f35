"""``GET /metrics``: the service's counters as Prometheus metrics, built at scrape time.

Theory of operation
-------------------
Requests are counted as plain integers where they are handled (:mod:`tickerd.counters`).
A scrape runs :func:`figures`, which reads those integers and the live state (connections,
bans, feeds) into one JSON-able dict of numbers, then :func:`families` turns that dict into
labelled metric families. The two steps are apart on purpose: a supervisor of several
worker processes can collect each worker's :func:`figures` (it is plain data), add them up,
and render the sum with the same :func:`families`.

No label carries a client IP or a request id: label values come from fixed sets (surface,
method names served, statuses, refusal reasons, feed names and states) or are bucketed
(close codes, :func:`tickerd.counters.close_code_label`). Per-IP figures are in ``/status``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, GCCollector, PlatformCollector, ProcessCollector
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from ..counters import REFUSALS, Histogram
from ..feeds.state import FeedState
from .status import tickerd_version
from .tracker import FeedTracker

if TYPE_CHECKING:
    from ..app import Service

_NS = 1_000_000_000


def _histogram(h: Histogram) -> dict[str, Any]:
    return {"bounds_ns": list(h.bounds), "counts": list(h.counts), "total_ns": h.total}


def figures(service: Service, tracker: FeedTracker) -> dict[str, Any]:
    """Every figure ``/metrics`` shows, as plain JSON-able data (see the module docstring)."""
    requests: list[list[Any]] = [
        ["ws", method, str(status), n]
        for (method, status), n in sorted(service.protocol.counters.requests().items())
    ]
    if service.http is not None:
        requests += [
            ["rest", method, str(status), n]
            for (method, status), n in sorted(service.http.counters.requests().items())
        ]
    ws = service.ws
    now = service.clock.now_ms()
    usage = service.limiter.usage(now)
    newest = tracker.newest()
    store = service.store
    return {
        "requests": requests,
        "weight": service.limiter.weight_charged(),
        "bans_active": sum(1 for u in usage if u.banned_until is not None),
        "clients_tracked": len(usage),
        "connections_open": len(ws.connections) if ws is not None else 0,
        "connections_opened": ws.counters.opened if ws is not None else 0,
        "connections_closed": (
            [[code, side, n] for (code, side), n in sorted(ws.counters.closed.items())]
            if ws is not None
            else []
        ),
        "connections_refused": (
            [[reason, n] for reason, n in ws.counters.refused.items()] if ws is not None else []
        ),
        "slow_readers_cut": ws.slow_readers_cut if ws is not None else 0,
        "latency": _histogram(ws.counters.latency) if ws is not None else None,
        "feed_ticks": sorted([name, n] for name, n in tracker.ticks.items()),
        "feed_states": [[f.name, tracker.state(f)] for f in tracker.feeds],
        "feed_age_ms": sorted([name, max(0, now - t)] for name, t in newest.items()),
        "store": (
            {
                "flush": _histogram(store.counters.duration),
                "failures": store.counters.failures,
                "written": store.written,
            }
            if store is not None
            else None
        ),
        "streams": _streams(service),
        "symbols": len(service.book),
        "faults_armed": len(service.faults.faults),
        "version": tickerd_version(),
    }


def _streams(service: Service) -> dict[str, Any] | None:
    gate = service.streams
    if gate is None:
        return None
    hub = gate.hub
    return {
        "open": len(gate.sockets),
        "opened": gate.opened,
        "by_type": sorted(hub.by_type().items()),
        "silent": sum(hub.silent.values()),
        "events": hub.events,
        "frames": hub.frames,
        "cut": sorted(gate.cut.items()),
    }


def _stream_families(fig: dict[str, Any]) -> Iterator[Metric]:
    yield _gauge("tickerd_stream_connections_open", "open market-stream sockets", fig["open"])
    yield CounterMetricFamily(
        "tickerd_stream_connections_opened",
        "market-stream sockets that completed the handshake",
        value=fig["opened"],
    )
    subs = GaugeMetricFamily(
        "tickerd_stream_subscriptions",
        "subscriptions to published streams, by stream type (kline: every interval)",
        labels=["type"],
    )
    for kind, n in fig["by_type"]:
        subs.add_metric([kind], n)
    yield subs
    yield _gauge(
        "tickerd_stream_silent_subscriptions",
        "subscriptions acknowledged to well-formed streams tickerd does not publish",
        fig["silent"],
    )
    yield CounterMetricFamily(
        "tickerd_stream_events", "stream events printed (each once)", value=fig["events"]
    )
    yield CounterMetricFamily(
        "tickerd_stream_frames",
        "stream frames handed to subscribers (one event to N subscribers: N frames)",
        value=fig["frames"],
    )
    yield _counter(
        "tickerd_stream_subscribers_cut",
        "stream sockets cut off, by reason (slow_reader, send_budget, too_many_messages)",
        ["reason"],
        [[reason, n] for reason, n in fig["cut"]],
    )


def _buckets(h: dict[str, Any]) -> tuple[list[tuple[str, float]], float]:
    """Cumulative Prometheus buckets (upper bounds in seconds) and the sum in seconds."""
    out: list[tuple[str, float]] = []
    running = 0
    for bound, n in zip(h["bounds_ns"], h["counts"], strict=False):
        running += n
        out.append((repr(bound / _NS), float(running)))
    running += h["counts"][-1]
    out.append(("+Inf", float(running)))
    return out, h["total_ns"] / _NS


def _counter(name: str, doc: str, labels: list[str], rows: list[list[Any]]) -> Metric:
    family = CounterMetricFamily(name, doc, labels=labels)
    for row in rows:
        family.add_metric([str(v) for v in row[:-1]], row[-1])
    return family


def _gauge(name: str, doc: str, value: float) -> Metric:
    return GaugeMetricFamily(name, doc, value=value)


def families(fig: dict[str, Any]) -> Iterator[Metric]:
    """The metric families of :func:`figures`' dict (of one process, or a sum of them)."""
    info = InfoMetricFamily("tickerd_build", "the running tickerd")
    info.add_metric([], {"version": fig["version"]})
    yield info
    yield _counter(
        "tickerd_requests",
        "requests answered, by surface (ws, rest), method (REST: the path) and status",
        ["surface", "method", "status"],
        fig["requests"],
    )
    limited: dict[tuple[str, str], float] = {}
    for surface, _, status, n in fig["requests"]:
        if status in ("429", "418"):
            limited[(surface, status)] = limited.get((surface, status), 0) + n
    for reason, n in fig["connections_refused"]:
        if REFUSALS[reason] in (429, 418):
            key = ("handshake", str(REFUSALS[reason]))
            limited[key] = limited.get(key, 0) + n
    yield _counter(
        "tickerd_rate_limited_answers",
        "429 (over the weight limit) and 418 (banned) answers, by surface and status",
        ["surface", "status"],
        [[s, st, n] for (s, st), n in sorted(limited.items())],
    )
    yield CounterMetricFamily(
        "tickerd_request_weight",
        "REQUEST_WEIGHT charged to clients (requests, refused ones included, and handshakes)",
        value=fig["weight"],
    )
    yield _gauge("tickerd_bans_active", "client IPs banned (418) right now", fig["bans_active"])
    yield _gauge(
        "tickerd_rate_limit_clients", "client IPs the rate limiter tracks", fig["clients_tracked"]
    )
    yield _gauge(
        "tickerd_ws_connections_open", "open WebSocket API connections", fig["connections_open"]
    )
    yield CounterMetricFamily(
        "tickerd_ws_connections_opened",
        "WebSocket API connections that completed the handshake",
        value=fig["connections_opened"],
    )
    yield _counter(
        "tickerd_ws_connections_closed",
        "WebSocket API connections ended, by close code (none: no close frame) and by the "
        "side that sent the close first",
        ["code", "side"],
        fig["connections_closed"],
    )
    yield _counter(
        "tickerd_ws_connections_refused",
        "WebSocket API handshakes refused, by reason",
        ["reason"],
        fig["connections_refused"],
    )
    yield CounterMetricFamily(
        "tickerd_ws_slow_readers_cut",
        "connections cut off for not reading their replies",
        value=fig["slow_readers_cut"],
    )
    if fig["latency"] is not None:
        buckets, total = _buckets(fig["latency"])
        yield HistogramMetricFamily(
            "tickerd_ws_reply_latency_seconds",
            "per socket read carrying requests: first request frame to the write of the replies",
            buckets=buckets,
            sum_value=total,
        )
    yield _counter(
        "tickerd_feed_ticks",
        "ticks applied to the book, by the feed owning the symbol",
        ["feed"],
        fig["feed_ticks"],
    )
    states = GaugeMetricFamily(
        "tickerd_feed_state",
        "1 for each feed's current state, 0 for the others",
        labels=["feed", "state"],
    )
    for name, current in fig["feed_states"]:
        for state in FeedState:
            states.add_metric([name, state.value], 1.0 if state.value == current else 0.0)
    yield states
    ages = GaugeMetricFamily(
        "tickerd_feed_newest_tick_age_seconds",
        "age of the newest tick in the book, per feed (service clock)",
        labels=["feed"],
    )
    for name, age_ms in fig["feed_age_ms"]:
        ages.add_metric([name], age_ms / 1000)
    yield ages
    store = fig["store"]
    if store is not None:
        buckets, total = _buckets(store["flush"])
        yield HistogramMetricFamily(
            "tickerd_store_flush_duration_seconds",
            "time of each successful write of changed prices to the store",
            buckets=buckets,
            sum_value=total,
        )
        yield CounterMetricFamily(
            "tickerd_store_flush_failures", "store writes that failed", value=store["failures"]
        )
        yield CounterMetricFamily(
            "tickerd_store_ticks_written", "ticks written to the store", value=store["written"]
        )
    if fig.get("streams") is not None:
        yield from _stream_families(fig["streams"])
    yield _gauge("tickerd_symbols_priced", "symbols with a price in the book", fig["symbols"])
    yield _gauge("tickerd_faults_armed", "control-plane faults armed", fig["faults_armed"])


class TickerdCollector(Collector):
    """A Prometheus collector reading one service's counters at scrape time."""

    def __init__(self, service: Service, tracker: FeedTracker) -> None:
        self.service = service
        self.tracker = tracker

    def collect(self) -> Iterator[Metric]:
        """The families of this scrape."""
        return families(figures(self.service, self.tracker))


def registry(service: Service, tracker: FeedTracker) -> CollectorRegistry:
    """A registry of its own (not prometheus-client's global one): the service's collector
    and the standard process, platform and garbage-collector metrics."""
    reg = CollectorRegistry(auto_describe=False)
    reg.register(TickerdCollector(service, tracker))
    ProcessCollector(registry=reg)
    PlatformCollector(registry=reg)
    GCCollector(registry=reg)
    return reg

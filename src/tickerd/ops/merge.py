"""The process group's ops view under ``--workers N``: the workers' views merged.

Pure data: texts and dicts in, families and dicts out; nothing here does I/O.

Theory of operation
-------------------
Each worker keeps its own counters, limiter and connections; the supervisor's ops process
reads every worker's ``/metrics`` text and ``/status`` document (:mod:`tickerd.ops.group`)
and merges them here.

* Metrics: every worker's text is parsed with prometheus-client's parser, and samples of the
  same name and labels are added up: counters, histogram buckets, sums and counts, and
  gauges that count things (connections open, clients tracked). A few gauges are not
  amounts and combine by :data:`COMBINE` instead (a start time is the earliest, a feed's
  newest tick age the freshest). Worker-IP or worker labels are never added to them;
  ``tickerd_worker_up{worker}`` alone says which workers answered.
* Status: every client IP is pinned to one worker (the reuseport program), so the per-IP
  lists of the workers are disjoint and their union sorted again is exact; each entry
  names its ``worker``. The stream figures add up (a silent stream name's subscriptions
  summed over the workers). Lists stay bounded: clients and IPs to ``top``, bans and faults to
  :data:`~tickerd.ops.status.MAX_LISTED`, prices too.
* A worker that did not answer within its fetch timeout is listed as ``down`` with the
  reason. Its gauges leave the sums; its counters stay in them at the values it last
  answered, and when a restarted worker (a new ``process_start_time_seconds``) starts
  again from zero, the old process's totals are carried into its new ones
  (:class:`CounterCarry`), so a group counter never goes down: Prometheus would read a
  drop as a reset and count the whole total again as new.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from ..feeds.state import FeedState
from .live import PriceRow
from .status import MAX_LISTED, iso_utc, tickerd_version

#: Samples that are not amounts: how the workers' values of one sample combine (the
#: others add up). A feed's state gauge is 1 when any worker's feed is in that state.
COMBINE: dict[str, Callable[[Iterable[float]], float]] = {
    "process_start_time_seconds": min,
    "python_info": max,
    "tickerd_build_info": max,
    "tickerd_feed_state": max,
    "tickerd_feed_newest_tick_age_seconds": min,
    "tickerd_symbols_priced": max,
}
#: With ``--redis`` every worker learns every ban (they are announced), so the bans
#: active in the group are the most any worker knows of, not their sum.
SHARED_COMBINE: dict[str, Callable[[Iterable[float]], float]] = {
    "tickerd_bans_active": max,
}
#: Feed states from the most to the least in need of an operator: the state of a feed
#: whose workers disagree is the first of theirs in this order.
_WORST_FIRST = [
    FeedState.FAILED.value,
    FeedState.DOWN.value,
    FeedState.STALE.value,
    FeedState.STARTING.value,
    FeedState.UP.value,
    FeedState.FINISHED.value,
]


#: Metric types whose samples are running totals (``_created`` samples aside).
_TOTALS = frozenset({"counter", "histogram", "summary"})
_START = "process_start_time_seconds"

SampleKey = tuple[str, tuple[tuple[str, str], ...]]


@dataclass(frozen=True, slots=True)
class WorkerView:
    """What one worker answered (``doc``: its ``/group`` document), or why it did not."""

    index: int
    doc: dict[str, Any] | None
    error: str | None = None


def _key(sample: Sample) -> SampleKey:
    return sample.name, tuple(sorted(sample.labels.items()))


def _is_total(family: Metric, sample: Sample) -> bool:
    return family.type in _TOTALS and not sample.name.endswith("_created")


def _parsed(view: WorkerView) -> list[Metric]:
    return [] if view.doc is None else list(text_string_to_metric_families(view.doc["metrics"]))


class CounterCarry:
    """Keeps the group's totals from going down when a worker is down or restarted.

    Per worker it remembers the total samples of its last answer and, once it restarted,
    the totals of its earlier processes (``carried``), added to what it answers now. It
    lives as long as the ops process; one scrape at a time goes through it.
    """

    def __init__(self) -> None:
        self._start: dict[int, float] = {}
        self._last: dict[int, list[Metric]] = {}
        self._carried: dict[int, dict[str, Metric]] = {}

    def families(self, view: WorkerView) -> list[Metric]:
        """The worker's families as the group sums them: the answer with the carried
        totals added, or, for a worker that did not answer, its last totals."""
        i = view.index
        answer = self._last.get(i, []) if view.doc is None else self._answered(i, _parsed(view))
        carried = dict(self._carried.get(i, {}))
        out = [_plus(f, carried.pop(f.name, None)) for f in answer]
        return out + list(carried.values())

    def _answered(self, i: int, families: list[Metric]) -> list[Metric]:
        start = next((s.value for f in families if f.name == _START for s in f.samples), None)
        if start is not None and self._start.get(i, start) != start:
            carried = self._carried.setdefault(i, {})
            for family in self._last.get(i, []):
                carried[family.name] = _plus(family, carried.get(family.name))
        if start is not None:
            self._start[i] = start
        self._last[i] = [_totals_of(f) for f in families if f.type in _TOTALS]
        return families


def _totals_of(family: Metric) -> Metric:
    out = Metric(family.name, family.documentation, family.type, family.unit)
    out.samples = [s for s in family.samples if _is_total(family, s)]
    return out


def _plus(family: Metric, carried: Metric | None) -> Metric:
    """``family`` with the ``carried`` totals added, sample by sample."""
    if carried is None:
        return family
    extra = {_key(s): s for s in carried.samples}
    out = Metric(family.name, family.documentation, family.type, family.unit)
    for s in family.samples:
        c = extra.pop(_key(s), None) if _is_total(family, s) else None
        out.add_sample(s.name, s.labels, s.value if c is None else s.value + c.value)
    out.samples.extend(extra.values())
    return out


def merge_metrics(
    views: Sequence[WorkerView], *, shared: bool = False, carry: CounterCarry | None = None
) -> list[Metric]:
    """The group's metric families: the workers' samples merged (see the module); with
    ``carry``, the totals of down or restarted workers kept in the sums."""
    rules = COMBINE | SHARED_COMBINE if shared else COMBINE
    families: dict[str, Metric] = {}
    values: dict[str, dict[SampleKey, list[float]]] = {}
    labels_of: dict[SampleKey, dict[str, str]] = {}
    for view in views:
        for fam in carry.families(view) if carry is not None else _parsed(view):
            if fam.name not in families:
                families[fam.name] = Metric(fam.name, fam.documentation, fam.type, fam.unit)
                values[fam.name] = {}
            samples = values[fam.name]
            for sample in fam.samples:
                key = _key(sample)
                samples.setdefault(key, []).append(sample.value)
                labels_of.setdefault(key, sample.labels)
    out = []
    for name, family in families.items():
        for key, vals in values[name].items():
            combine = rules.get(key[0], rules.get(name, sum))
            family.add_sample(key[0], labels_of[key], float(combine(vals)))
        out.append(family)
    up = GaugeMetricFamily(
        "tickerd_worker_up",
        "1 for a worker whose figures were read for this scrape, 0 for one that did not answer",
        labels=["worker"],
    )
    for view in views:
        up.add_metric([str(view.index)], 1.0 if view.doc is not None else 0.0)
    out.append(up)
    return out


def _status_docs(views: Sequence[WorkerView]) -> list[tuple[int, dict[str, Any]]]:
    return [(v.index, v.doc["status"]) for v in views if v.doc is not None]


def _tagged(docs: Sequence[tuple[int, dict[str, Any]]], key: str) -> list[dict[str, Any]]:
    return [item | {"worker": i} for i, doc in docs for item in doc[key]]


def _bans(docs: Sequence[tuple[int, dict[str, Any]]]) -> tuple[list[dict[str, Any]], int]:
    latest: dict[str, dict[str, Any]] = {}
    for ban in _tagged(docs, "bans"):
        known = latest.get(ban["ip"])
        if known is None or ban["until_ms"] > known["until_ms"]:
            latest[ban["ip"]] = ban
    listed = heapq.nsmallest(MAX_LISTED, latest.values(), key=lambda b: (b["until_ms"], b["ip"]))
    complete = all(len(doc["bans"]) == doc["bans_total"] for _, doc in docs)
    # Every list complete: the distinct IPs are the count (a ban several workers know of,
    # announced through Redis, counts once); otherwise the workers' totals, at most.
    total = len(latest) if complete else sum(doc["bans_total"] for _, doc in docs)
    return listed, total


def _feeds(docs: Sequence[tuple[int, dict[str, Any]]]) -> list[dict[str, Any]]:
    merged: dict[str, dict[str, Any]] = {}
    for i, doc in docs:
        for feed in doc["feeds"]:
            m = merged.get(feed["name"])
            if m is None:
                m = merged[feed["name"]] = {
                    "name": feed["name"],
                    "state": None,
                    "ticks": 0,
                    "newest_tick_ms": None,
                    "newest_tick": None,
                    "newest_tick_age_ms": None,
                    "symbols": feed.get("symbols"),
                    "workers": [],
                }
            m["ticks"] += feed["ticks"]
            newest = feed["newest_tick_ms"]
            if newest is not None and (m["newest_tick_ms"] is None or newest > m["newest_tick_ms"]):
                m["newest_tick_ms"], m["newest_tick"] = newest, feed["newest_tick"]
            age = feed["newest_tick_age_ms"]
            if age is not None and (
                m["newest_tick_age_ms"] is None or age < m["newest_tick_age_ms"]
            ):
                m["newest_tick_age_ms"] = age
            m["workers"].append(
                {"worker": i, "state": feed["state"], "details": feed.get("details", {})}
            )
    for m in merged.values():
        states = {w["state"] for w in m["workers"] if w["state"] is not None}
        ranked = [s for s in _WORST_FIRST if s in states]
        m["state"] = ranked[0] if ranked else None
    return list(merged.values())


def _connections(docs: Sequence[tuple[int, dict[str, Any]]], top: int) -> dict[str, Any]:
    per_ip: dict[str, int] = {}
    worker_of: dict[str, int] = {}
    for i, doc in docs:
        for row in doc["connections"]["by_ip"]:
            per_ip[row["ip"]] = per_ip.get(row["ip"], 0) + row["open"]
            worker_of.setdefault(row["ip"], i)
    busiest = heapq.nsmallest(top, per_ip.items(), key=lambda kv: (-kv[1], kv[0]))
    conns = [doc["connections"] for _, doc in docs]
    maxima = [c["max"] for c in conns if c["max"] is not None]
    return {
        "open": sum(c["open"] for c in conns),
        "max": sum(maxima) if maxima else None,
        "opened_total": sum(c["opened_total"] for c in conns),
        "by_ip": [{"ip": ip, "open": n, "worker": worker_of[ip]} for ip, n in busiest],
        "ips_total": sum(c["ips_total"] for c in conns),
    }


def _streams(docs: Sequence[tuple[int, dict[str, Any]]], top: int) -> dict[str, Any] | None:
    """The workers' stream figures added up; the silent names summed by name and listed
    to ``top`` again (their count exact when every worker listed all of its own)."""
    parts = [doc["streams"] for _, doc in docs if doc.get("streams") is not None]
    if not parts:
        return None
    merged: dict[str, Any] = {"port": parts[0]["port"]}
    for key in ("connections", "connections_opened", "streams", "subscriptions",
                "silent_subscriptions", "events", "frames"):  # fmt: skip
        merged[key] = sum(p[key] for p in parts)
    by_type: dict[str, int] = {}
    cut: dict[str, int] = {}
    silent: dict[str, int] = {}
    for p in parts:
        for table, into in ((p["by_type"], by_type), (p["cut"], cut), (p["silent"], silent)):
            for name, n in table.items():
                into[name] = into.get(name, 0) + n
    complete = all(len(p["silent"]) == p["silent_total"] for p in parts)
    listed = heapq.nsmallest(top, silent.items(), key=lambda kv: (-kv[1], kv[0]))
    merged |= {
        "by_type": dict(sorted(by_type.items())),
        "silent": dict(listed),
        "silent_total": len(silent) if complete else sum(p["silent_total"] for p in parts),
        "cut": cut,
        "symbols_in_window": max(p["symbols_in_window"] for p in parts),
    }
    return merged


def merge_status(
    views: Sequence[WorkerView], top: int, *, uptime_s: float, now_ms: int
) -> dict[str, Any]:
    """The group's ``/status`` document (``now_ms``: used when no worker answered)."""
    top = max(1, min(top, MAX_LISTED))
    docs = _status_docs(views)
    if docs:
        now_ms = max(doc["now_ms"] for _, doc in docs)
    clients = heapq.nsmallest(top, _tagged(docs, "clients"), key=lambda c: (-c["used"], c["ip"]))
    bans, bans_total = _bans(docs)
    faults = _tagged(docs, "faults")[:MAX_LISTED]
    return {
        "version": tickerd_version(),
        "uptime_s": round(uptime_s, 3),
        "now_ms": now_ms,
        "now": iso_utc(now_ms),
        "symbols": max((doc["symbols"] for _, doc in docs), default=0),
        "weight_limit": docs[0][1]["weight_limit"] if docs else None,
        "clients": clients,
        "clients_total": sum(doc["clients_total"] for _, doc in docs),
        "bans": bans,
        "bans_total": bans_total,
        "feeds": _feeds(docs),
        "connections": _connections(docs, top),
        "streams": _streams(docs, top),
        "faults": faults,
        "faults_total": sum(doc["faults_total"] for _, doc in docs),
        "workers": [
            {"worker": v.index, "state": "up" if v.doc is not None else "down", "error": v.error}
            for v in views
        ],
        "workers_up": len(docs),
        "workers_total": len(views),
    }


def merge_prices(views: Sequence[WorkerView]) -> list[PriceRow]:
    """Each symbol's newest price among the workers, by symbol (at most MAX_LISTED)."""
    newest: dict[str, PriceRow] = {}
    for view in views:
        if view.doc is None:
            continue
        for symbol, price, time_ms in view.doc["prices"]:
            known = newest.get(symbol)
            if known is None or time_ms > known[2]:
                newest[symbol] = (symbol, price, time_ms)
    return [newest[s] for s in sorted(newest)[:MAX_LISTED]]


def merge_requests(views: Sequence[WorkerView]) -> int:
    """Requests answered by the workers that answered."""
    return sum(v.doc["requests"] for v in views if v.doc is not None)

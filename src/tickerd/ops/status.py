"""``GET /status``: what an operator asks first, as one JSON document.

Per-IP used weight against the limit (the heaviest ``top``), active bans with their end
(epoch ms on the service clock and ISO 8601 UTC), feeds and their states, connections
(open, bound, the IPs with most), the market streams' figures, armed faults, uptime and
version. Every list is bounded
(``top``, :data:`MAX_LISTED`) and carries an exact ``*_total`` count beside it. Per-IP
figures live here and never in ``/metrics``, whose labels must stay bounded.
"""

from __future__ import annotations

import heapq
from collections import Counter
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

from .. import hotpath
from ..ratelimit import ClientUsage
from .tracker import UNOWNED, FeedTracker

if TYPE_CHECKING:
    from ..app import Service

#: Entries listed at most per table (bans, faults); ``top`` is clamped to it too.
MAX_LISTED = 1000
DEFAULT_TOP = 20


def tickerd_version() -> str:
    """The installed tickerd's version."""
    try:
        return version("tickerd")
    except PackageNotFoundError:  # pragma: no cover - running from a bare source tree
        return "unknown"


def iso_utc(ms: int) -> str:
    """Epoch milliseconds as ISO 8601 UTC with milliseconds (integer arithmetic only)."""
    seconds, millis = divmod(ms, 1000)
    try:
        text = datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    except (OverflowError, OSError, ValueError):  # beyond what datetime can print
        return str(ms)
    return f"{text}.{millis:03d}Z"


def clients(usage: list[ClientUsage], limit: int, top: int) -> list[dict[str, Any]]:
    """The ``top`` clients with most weight this window (ties by IP)."""
    heavy = heapq.nsmallest(top, (u for u in usage if u.used), key=lambda u: (-u.used, u.key))
    return [
        {
            "ip": u.key,
            "used": u.used,
            "limit": limit,
            "percent": round(u.used * 100 / limit, 1),
            "banned_until_ms": u.banned_until,
            "bans": u.bans,
        }
        for u in heavy
    ]


def bans(usage: list[ClientUsage], now_ms: int, top: int) -> list[dict[str, Any]]:
    """Active bans, soonest end first."""
    banned = [u for u in usage if u.banned_until is not None]
    listed = heapq.nsmallest(top, banned, key=lambda u: (u.banned_until, u.key))
    return [
        {
            "ip": u.key,
            "until_ms": u.banned_until,
            "until": iso_utc(u.banned_until),
            "remaining_ms": u.banned_until - now_ms,
            "bans": u.bans,
        }
        for u in listed
        if u.banned_until is not None
    ]


def feeds(service: Service, tracker: FeedTracker, now_ms: int) -> list[dict[str, Any]]:
    """Every feed: state, symbols, ticks applied, newest tick and its age, own report."""
    newest = tracker.newest()
    out = []
    for feed in tracker.feeds:
        details = tracker.details(feed)
        symbols = getattr(feed, "symbols", None)
        out.append(
            _feed_doc(feed.name, tracker.state(feed, details), tracker, newest, now_ms)
            | {"symbols": len(symbols) if symbols is not None else None, "details": details}
        )
    if tracker.ticks[UNOWNED] or UNOWNED in newest:
        out.append(_feed_doc(UNOWNED, None, tracker, newest, now_ms))
    return out


def _feed_doc(
    name: str, state: str | None, tracker: FeedTracker, newest: dict[str, int], now_ms: int
) -> dict[str, Any]:
    time_ms = newest.get(name)
    return {
        "name": name,
        "state": state,
        "ticks": tracker.ticks.get(name, 0),
        "newest_tick_ms": time_ms,
        "newest_tick": iso_utc(time_ms) if time_ms is not None else None,
        "newest_tick_age_ms": now_ms - time_ms if time_ms is not None else None,
    }


def connections(service: Service, top: int) -> dict[str, Any]:
    """Open WebSocket API connections: how many, the bound, the IPs holding most."""
    ws = service.ws
    conns = list(ws.connections) if ws is not None else []
    per_ip = Counter(c.session.client for c in conns)
    busiest = heapq.nsmallest(top, per_ip.items(), key=lambda kv: (-kv[1], kv[0]))
    return {
        "open": len(conns),
        "max": ws.options.max_connections if ws is not None else None,
        "opened_total": ws.counters.opened if ws is not None else 0,
        "by_ip": [{"ip": ip, "open": n} for ip, n in busiest],
        "ips_total": len(per_ip),
    }


def streams(service: Service, top: int) -> dict[str, Any] | None:
    """The market streams: sockets, subscriptions by type, the acknowledged names tickerd
    does not publish (the ``top`` most subscribed), events and frames sent, subscribers cut
    off; None when the streams are off. ``port``: their own (``--stream-port``), or None on
    the WebSocket API port."""
    gate = service.streams
    if gate is None:
        return None
    own = service.stream_ws
    return {"port": own.port if own is not None else None, **gate.status(top)}


def faults(service: Service) -> list[dict[str, Any]]:
    """The armed control-plane faults, as the control plane describes them."""
    armed = service.faults.faults.values()
    return [f.to_state() for f in list(armed)[:MAX_LISTED]]


def status(
    service: Service, tracker: FeedTracker, uptime_s: float, top: int = DEFAULT_TOP
) -> dict[str, Any]:
    """The ``GET /status`` document (``top``: clients and IPs listed, 1 to MAX_LISTED)."""
    top = max(1, min(top, MAX_LISTED))
    now = service.clock.now_ms()
    limiter = service.limiter
    usage = limiter.usage(now)
    banned = sum(1 for u in usage if u.banned_until is not None)
    listed_faults = faults(service)
    return {
        "version": tickerd_version(),
        "hot_path": hotpath.describe(),  # compiled (mypyc) or pure Python
        "uptime_s": round(uptime_s, 3),
        "now_ms": now,
        "now": iso_utc(now),
        "symbols": len(service.book),
        "weight_limit": limiter.limit,
        "clients": clients(usage, limiter.limit, top),
        "clients_total": sum(1 for u in usage if u.used),
        "bans": bans(usage, now, MAX_LISTED),
        "bans_total": banned,
        "feeds": feeds(service, tracker, now),
        "connections": connections(service, top),
        "streams": streams(service, top),
        "faults": listed_faults,
        "faults_total": len(service.faults.faults),
    }

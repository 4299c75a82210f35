"""What ``GET /healthz`` answers: whether the server can serve correct prices, feed by feed.

Every feed reports a :class:`~tickerd.feeds.state.FeedState` in ``status()["state"]``;
the service adds whether any of the feed's symbols has a price, and marks a feed whose
task died ``failed``. The verdict, per feed, comes from :data:`VERDICTS`; the worst one is
the server's:

- ``ok`` (HTTP 200): every feed up (or a replay finished);
- ``degraded`` (HTTP 200): prices are served, but something is wrong — a feed stale,
  disconnected or still starting while its symbols have (older) prices;
- ``unavailable`` (HTTP 503): the server cannot serve correct prices — a feed failed (its
  task died, a replay stopped on a bad row), or is down or starting with no price at all.

Load balancers and probes read the HTTP status; people read ``problems``. See README
("Health") and docs/DECISIONS.md.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from .feeds.state import FeedState

OK = "ok"
DEGRADED = "degraded"
UNAVAILABLE = "unavailable"
#: HTTP status of each verdict.
HTTP_STATUS = {OK: 200, DEGRADED: 200, UNAVAILABLE: 503}
_RANK = {OK: 0, DEGRADED: 1, UNAVAILABLE: 2}
#: Per feed state: the verdict while some of the feed's symbols have a price, and while
#: none has.
VERDICTS: dict[FeedState, tuple[str, str]] = {
    FeedState.UP: (OK, OK),
    FeedState.FINISHED: (OK, OK),
    FeedState.STALE: (DEGRADED, UNAVAILABLE),
    FeedState.STARTING: (DEGRADED, UNAVAILABLE),
    FeedState.DOWN: (DEGRADED, UNAVAILABLE),
    FeedState.FAILED: (UNAVAILABLE, UNAVAILABLE),
}

#: What a ``/healthz`` route calls: the HTTP status and the JSON document.
HealthCheck = Callable[[], tuple[int, dict[str, Any]]]


@dataclass(frozen=True, slots=True)
class FeedHealth:
    """One feed as health sees it: its name, its ``status()`` and whether it has prices."""

    name: str
    status: dict[str, Any]
    priced: bool


def verdict(feed: FeedHealth) -> tuple[str, str | None]:
    """The feed's verdict and, unless ``ok``, the reason in a few words."""
    raw = feed.status.get("state")
    try:
        state = FeedState(str(raw))
    except ValueError:
        return DEGRADED, f"feed {feed.name} reports no known state ({raw!r})"
    result = VERDICTS[state][0 if feed.priced else 1]
    if result == OK:
        return OK, None
    prices = "" if feed.priced else ", no prices yet"
    return result, f"feed {feed.name} is {state.value}{prices}"


def assess(
    feeds: Sequence[FeedHealth], *, symbols: int, connections: int
) -> tuple[int, dict[str, Any]]:
    """The HTTP status and the ``/healthz`` document for these feeds."""
    overall = OK
    problems: list[str] = []
    for feed in feeds:
        result, why = verdict(feed)
        if _RANK[result] > _RANK[overall]:
            overall = result
        if why is not None:
            problems.append(why)
    doc: dict[str, Any] = {"status": overall, "symbols": symbols, "connections": connections}
    if feeds:
        doc["feeds"] = {f.name: f.status for f in feeds}
    if problems:
        doc["problems"] = problems
    return HTTP_STATUS[overall], doc

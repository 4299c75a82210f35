"""The state a feed reports of itself in ``status()["state"]``, read by ``/healthz``."""

from __future__ import annotations

from enum import StrEnum


class FeedState(StrEnum):
    """How far a feed's prices can be trusted right now.

    ``UP`` and ``FINISHED`` (a replay that reached the end of its files; its last prices
    stay correct) are healthy. ``STARTING`` (before its first prices), ``STALE`` (connected
    but some symbols silent past the feed's stale bound) and ``DOWN`` (disconnected,
    reconnecting) are degraded. ``FAILED`` (stopped for good: a replay stopped by a bad
    row, a feed task that died) means its symbols will not move again.
    """

    STARTING = "starting"
    UP = "up"
    STALE = "stale"
    DOWN = "down"
    FAILED = "failed"
    FINISHED = "finished"

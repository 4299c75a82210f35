"""Reconnect delays: exponential backoff with seeded jitter, shared by the client and the
live mirror."""

from __future__ import annotations

import random


def jittered_backoff(step: int, base: float, cap: float, rng: random.Random) -> float:
    """Seconds to wait before retry number ``step`` (0, 1, 2, ...): ``base`` doubling per
    step up to ``cap``, then a random half to all of it, so reconnecting peers spread out."""
    full = min(cap, base * 2.0 ** min(step, 64))
    return full * (0.5 + 0.5 * rng.random())

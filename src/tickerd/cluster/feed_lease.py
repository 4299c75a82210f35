"""Feeds run once per cluster: a Redis lease names the member that runs them.

Every member tries ``scripts.LEASE_FEEDS`` every ``ttl / 3``: the holder renews it, the
others take it once it has expired. So when the owner dies the lease runs out within
``ttl`` of its last renewal and another member holds it within ``ttl + ttl / 3``, then
starts the feeds (priming over the book it already serves). An owner that cannot renew for
a whole ``ttl`` (Redis unreachable) stops its feeds, so two members never both believe
they own them for longer than one renewal period; one that stops cleanly releases the
lease and a successor follows within ``ttl / 3``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from .redis_client import FAILURES
from .scripts import LEASE_FEEDS, RELEASE_FEEDS, Keys

log = logging.getLogger("tickerd.cluster")

Action = Callable[[], Awaitable[None]]


class FeedLease:
    """Holds or waits for the feed lease; calls ``acquired`` / ``lost`` as it changes."""

    def __init__(
        self, client: object, keys: Keys, member: str, ttl_ms: int, acquired: Action, lost: Action
    ) -> None:
        self.client = client
        self.keys = keys
        self.member = member
        self.ttl_ms = ttl_ms
        self.acquired = acquired
        self.lost = lost
        self.owner = False
        self.takeovers = 0
        self._renewed_at = 0.0
        self._try = client.register_script(LEASE_FEEDS)  # type: ignore[attr-defined]
        self._release = client.register_script(RELEASE_FEEDS)  # type: ignore[attr-defined]

    async def run(self) -> None:
        """Try, renew or give up the lease until cancelled."""
        loop = asyncio.get_running_loop()
        period = self.ttl_ms / 3000
        while True:
            try:
                held: bool | None = bool(
                    await self._try(keys=[self.keys.feed_lease], args=[self.member, self.ttl_ms])
                )
            except FAILURES:
                held = None
            now = loop.time()
            if held:
                self._renewed_at = now
                if not self.owner:
                    self.owner = True
                    self.takeovers += 1
                    log.info("cluster: %s runs the feeds", self.member)
                    await self.acquired()
            elif self.owner and (held is False or now - self._renewed_at > self.ttl_ms / 1000):
                self.owner = False
                log.warning("cluster: %s lost the feed lease; its feeds stop", self.member)
                await self.lost()
            await asyncio.sleep(period)

    async def release(self) -> None:
        """Give the lease up (a clean stop), so a successor need not wait for its TTL."""
        if self.owner:
            with contextlib.suppress(*FAILURES):
                await self._release(keys=[self.keys.feed_lease], args=[self.member])
            self.owner = False

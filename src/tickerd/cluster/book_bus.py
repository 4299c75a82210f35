"""The book shared through Redis: local ticks published batched per millisecond, other
members' ticks applied as they arrive, the snapshot reloaded on a gap.

Theory of operation
-------------------
Every tick that enters this member's book from here (its feeds, ``price.set``) is kept in
a pending map, latest per symbol; one millisecond after the first, the whole map goes out
in one Lua call (``scripts.PUBLISH``) that writes the snapshot hash, raises the sequence
number and publishes ``"<seq> <member> <ticks JSON>"`` together. Every member subscribes:
a message with the next sequence number is applied (unless it is its own), and cached
bodies are rebuilt on the next read, as for any tick. A sequence gap (a lost message, a
reconnect) reloads the snapshot with the sequence number it matches, in one call, and
skips messages it already holds. While Redis is unreachable nothing is published; the
feed owner publishes its whole book when Redis is back, every other member reloads.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import Any

import orjson

from ..book import PriceBook, TickRejected
from ..models import Tick
from .redis_client import FAILURES
from .scripts import PUBLISH, SNAPSHOT, Keys

log = logging.getLogger("tickerd.cluster")

BATCH_S = 0.001
MAX_BATCH = 1000  # symbols per Lua call (Lua's unpack has a stack bound)


class BookBus:
    """Publishes and applies ticks for one member (see the module)."""

    def __init__(
        self,
        book: PriceBook,
        client: Any,
        keys: Keys,
        member: str,
        on_failure: Callable[[], None] | None = None,
    ) -> None:
        self.book = book
        self.on_failure = on_failure  # a publish failed: Redis is treated as unreachable
        self.client = client
        self.keys = keys
        self.member = member
        self.seq = 0  # the last sequence number applied or published
        self.published = 0
        self.applied = 0
        self.reloads = 0
        self.connected = False  # False while Redis is unreachable: publish nothing
        self._pending: dict[str, Tick] = {}
        self._flush: asyncio.TimerHandle | None = None
        self._remote = False
        self._tasks: set[asyncio.Task[None]] = set()
        self._publish = client.register_script(PUBLISH)
        self._snapshot = client.register_script(SNAPSHOT)
        self._unsubscribe = book.subscribe(self._on_ticks)

    def close(self) -> None:
        """Stop listening to the book; cancel a pending flush."""
        self._unsubscribe()
        if self._flush is not None:
            self._flush.cancel()
        for task in self._tasks:
            task.cancel()

    # -- publishing ------------------------------------------------------------------------

    def _on_ticks(self, ticks: Sequence[Tick]) -> None:
        if self._remote or not self.connected:
            return
        pending = self._pending
        for tick in ticks:
            pending[tick.symbol] = tick
        if self._flush is None:
            self._flush = asyncio.get_running_loop().call_later(BATCH_S, self._send)

    def _send(self) -> None:
        self._flush = None
        ticks, self._pending = list(self._pending.values()), {}
        task = asyncio.get_running_loop().create_task(self.publish(ticks))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def publish(self, ticks: Sequence[Tick]) -> None:
        """Publish ``ticks`` (chunked); a failure is logged and left to the recovery."""
        k = self.keys
        for i in range(0, len(ticks), MAX_BATCH):
            chunk = ticks[i : i + MAX_BATCH]
            payload = orjson.dumps([[t.symbol, t.price, t.time_ms] for t in chunk])
            try:
                seq = await self._publish(
                    keys=[k.snapshot, k.seq], args=[k.book_channel, self.member, payload]
                )
            except FAILURES as exc:
                if self.connected:  # once per outage: nothing is published until it ends
                    log.warning("cluster: publishing %d ticks failed: %s", len(chunk), exc)
                self.connected = False
                if self.on_failure is not None:
                    self.on_failure()
                return
            self.published += len(chunk)
            if int(seq) == self.seq + 1:
                self.seq = int(seq)

    async def publish_all(self) -> None:
        """Publish the whole book (the feed owner, once Redis is back)."""
        await self.publish(self.book.ticks())

    # -- applying --------------------------------------------------------------------------

    async def on_message(self, data: bytes) -> None:
        """One book message from the channel."""
        head, _, rest = data.partition(b" ")
        origin, _, payload = rest.partition(b" ")
        try:
            seq = int(head)
        except ValueError:
            log.warning("cluster: book message without a sequence number dropped")
            return
        if seq <= self.seq:
            return  # already in a snapshot this member loaded (or its own, published)
        if seq != self.seq + 1:
            await self.reload()
            return
        self.seq = seq
        if origin.decode() == self.member:
            return
        try:
            rows = orjson.loads(payload)
        except orjson.JSONDecodeError:
            log.warning("cluster: malformed book message %d dropped", seq)
            return
        self._apply([(r[0], r[1], r[2]) for r in rows if isinstance(r, list) and len(r) == 3])

    def _apply(self, rows: Sequence[tuple[Any, Any, Any]]) -> None:
        ticks: list[Tick] = []
        for symbol, price, time_ms in rows:
            try:
                ticks.append(self.book.make_tick(symbol, price, time_ms))
            except TickRejected as exc:
                log.warning("cluster: tick dropped: %s", exc)
        self._remote = True
        try:
            self.book.apply(ticks)
        finally:
            self._remote = False
        self.applied += len(ticks)

    async def reload(self) -> bool:
        """Load the snapshot and its sequence number; False when Redis cannot be reached."""
        try:
            seq, flat = await self._snapshot(keys=[self.keys.snapshot, self.keys.seq])
        except FAILURES as exc:
            log.warning("cluster: snapshot reload failed: %s", exc)
            return False
        rows = []
        for i in range(0, len(flat) - 1, 2):
            price, _, time_ms = flat[i + 1].decode().partition(" ")
            rows.append((flat[i].decode(), price, int(time_ms) if time_ms.isdigit() else -1))
        self._apply(rows)
        self.seq = int(seq)
        self.reloads += 1
        return True

    def status(self) -> dict[str, Any]:
        """Counters for ``/healthz``."""
        return {
            "seq": self.seq,
            "published": self.published,
            "applied": self.applied,
            "reloads": self.reloads,
        }

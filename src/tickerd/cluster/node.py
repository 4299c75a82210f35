"""One member of a Redis cluster: the shared limiter, the book bus, the feed lease, the
control plane's cluster-wide operations and the outage logic, wired around one service.

Members are worker processes (``tickerd serve --redis URL``, with or without
``--workers``); each has its own id, ``<host>:<pid>``. A probe pings Redis every
``probe_interval`` with the 50 ms timeout: on a failure (or a lease call that timed out)
the member is *degraded*: it serves its last book, limits with local windows, publishes
nothing and reports ``degraded`` on ``/healthz``. When the ping answers again it
re-subscribes, re-registers the weight admitted meanwhile, and reloads the book (the feed
owner publishes its own instead).

Which control operations apply cluster-wide is the table :data:`SHARED_OPS`; every other
operation (faults, connections, scenarios) stays on the member that was asked.
``price.set`` and ``limit.ban`` need no entry: the tick goes out on the book bus and the
ban through Redis like any other.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson

from ..book import PriceBook
from ..clock import Clock
from ..errors import TickerdError
from ..feeds import FeedRegistry
from ..feeds.state import FeedState
from ..health import FeedHealth
from .book_bus import BookBus
from .feed_lease import FeedLease
from .redis_client import FAILURES, RedisLeases, async_client, sync_client
from .scripts import Keys
from .shared_limiter import SharedLimiter, Unreachable

if TYPE_CHECKING:
    from ..control.runtime import Control

log = logging.getLogger("tickerd.cluster")
_FAILED: tuple[type[BaseException], ...] = (*FAILURES, asyncio.TimeoutError)

#: Control operations every member applies (the rest stay on the member asked), and what
#: the member asked also changes in Redis.
SHARED_OPS: dict[str, str] = {
    "price.clear": "snapshot",
    "book.reset": "snapshot",
    "clock.freeze": "",
    "clock.unfreeze": "",
    "clock.advance": "",
    "clock.set": "",
    "clock.reset": "",
    "limit.weight": "",
    "limit.reset": "windows",
    "symbol.status": "",
    "reset": "windows",
}


@dataclass(frozen=True, slots=True)
class NodeOptions:
    """What a member needs to know (the wiring builds it from settings)."""

    url: str
    weight_limit: int
    feed_lease_ms: int = 3000
    probe_interval: float = 0.25
    prefix: str = "tickerd:"
    timeout: float = 0.05
    member: str = ""


class ClusterNode:
    """The cluster side of one service (see the module)."""

    def __init__(self, options: NodeOptions, book: PriceBook, clock: Clock) -> None:
        self.options = options
        self.member = options.member or f"{socket.gethostname()}:{os.getpid()}"
        self.keys = Keys(options.prefix)
        self.book = book
        self.clock = clock
        self.sync = sync_client(options.url, options.timeout)
        self.limiter = SharedLimiter(
            RedisLeases(self.sync, self.keys), options.weight_limit, on_outage=self._lost_redis
        )
        self.up = False
        self.outages = 0
        self.control: Control | None = None
        self._start_feeds: Callable[[], Awaitable[None]] | None = None
        self._stop_feeds: Callable[[], Awaitable[None]] | None = None
        self._remote_op = False
        self._registry: FeedRegistry | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._reader: asyncio.Task[None] | None = None
        self.client: Any = None
        self.bus: BookBus | None = None
        self.lease: FeedLease | None = None

    def bind(
        self,
        control: Control,
        start_feeds: Callable[[], Awaitable[None]],
        stop_feeds: Callable[[], Awaitable[None]],
    ) -> None:
        """Hand over the control plane (its shared operations get relayed) and the feeds.

        Feed operations (``market.reseed``, ``replay.step``) find no feed (409) while
        another member runs the feeds."""
        self.control = control
        control.relay = self.relay
        self._registry = control.feeds
        control.feeds = FeedRegistry([])
        self._start_feeds = start_feeds
        self._stop_feeds = stop_feeds

    @property
    def owner(self) -> bool:
        """Whether this member runs the feeds."""
        return self.lease is not None and self.lease.owner

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Connect (or start degraded), then run the probe and the feed lease."""
        o = self.options
        self.client = async_client(o.url, o.timeout)
        self.bus = BookBus(self.book, self.client, self.keys, self.member, self._lost_redis)
        self.lease = FeedLease(
            self.client, self.keys, self.member, o.feed_lease_ms, self._acquired, self._lost
        )
        if await self._ping():
            await self._connect()
        else:
            self._lost_redis()
        self._tasks.append(asyncio.create_task(self._probe(), name="tickerd-cluster-probe"))
        self._tasks.append(asyncio.create_task(self.lease.run(), name="tickerd-cluster-lease"))

    async def stop(self) -> None:
        """Release the feed lease, stop every task, close the clients."""
        if self.lease is not None:
            await self.lease.release()
        tasks = [*self._tasks, *([self._reader] if self._reader else [])]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self.bus is not None:
            self.bus.close()
        if self.client is not None:
            with contextlib.suppress(*FAILURES):
                await self.client.aclose()
        self.sync.close()

    async def _acquired(self) -> None:
        if self.control is not None and self._registry is not None:
            self.control.feeds = self._registry
        if self._start_feeds is not None:
            await self._start_feeds()

    async def _lost(self) -> None:
        if self.control is not None:
            self.control.feeds = FeedRegistry([])
        if self._stop_feeds is not None:
            await self._stop_feeds()

    # -- Redis up and down -----------------------------------------------------------------

    async def _ping(self) -> bool:
        try:
            await asyncio.wait_for(self.client.ping(), self.options.timeout)
        except _FAILED:
            return False
        return True

    async def _probe(self) -> None:
        while True:
            await asyncio.sleep(self.options.probe_interval)
            ok = await self._ping()
            if not ok and self.up:
                self._lost_redis()
            elif ok and (not self.up or self.limiter.down):
                await self._connect()

    def _lost_redis(self) -> None:
        if not self.up and self.limiter.down and self._reader is None:
            return  # already degraded
        if self.up:
            log.warning("cluster: Redis unreachable; serving the last book with local limits")
        self.up = False
        self.outages += 1
        self.limiter.down = True
        if self.bus is not None:
            self.bus.connected = False
        if self._reader is not None:
            self._reader.cancel()
            self._reader = None

    async def _connect(self) -> None:
        try:
            registered = self.limiter.recovered(self.clock.now_ms())
        except Unreachable:  # gone again: stay degraded, the probe retries
            self.limiter.down = True
            return
        if registered:
            log.info("cluster: re-registered the weight of %d IPs", registered)
        ready = asyncio.Event()
        self._reader = asyncio.create_task(self._read(ready), name="tickerd-cluster-reader")
        await ready.wait()
        if self._reader is not None and not self._reader.done():
            self.up = True
            log.info("cluster: %s connected to Redis", self.member)

    async def _read(self, ready: asyncio.Event) -> None:
        """Subscribe, bring the book in line, then dispatch messages until cancelled."""
        assert self.bus is not None
        k = self.keys
        pubsub = async_client(self.options.url, None).pubsub()
        try:
            try:
                await asyncio.wait_for(
                    pubsub.subscribe(k.book_channel, k.ban_channel, k.ops_channel),
                    self.options.timeout,
                )
                bus = self.bus
                bus.connected = True
                if self.owner:
                    seq = await self.client.get(k.seq)
                    bus.seq = int(seq or 0)
                    await bus.publish_all()
                elif not await bus.reload():
                    raise ConnectionError("snapshot reload failed")
            except _FAILED as exc:
                log.warning("cluster: subscribing failed: %s", exc)
                self._reader = None
                self.bus.connected = False
                return
            finally:
                ready.set()
            while True:
                message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                if message is not None:
                    await self._dispatch(message["channel"], message["data"])
        except asyncio.CancelledError:
            raise
        except FAILURES as exc:
            log.warning("cluster: subscription lost: %s", exc)
            self._reader = None
            self._lost_redis()
        finally:
            with contextlib.suppress(*FAILURES):
                # Typed as of redis 8.2, untyped before: name its type so both check.
                close: Callable[[], Awaitable[None]] = pubsub.aclose
                await close()

    async def _dispatch(self, channel: bytes, data: bytes) -> None:
        k = self.keys
        name = channel.decode()
        assert self.bus is not None
        if name == k.book_channel:
            await self.bus.on_message(data)
        elif name == k.ban_channel:
            ip, _, ms = data.decode().rpartition(" ")
            if ip and ms.isdigit():
                self.limiter.remote_ban(ip, int(ms), self.clock.now_ms())
        elif name == k.ops_channel:
            self._apply_op(data)

    # -- control operations ----------------------------------------------------------------

    def relay(self, op: str, args: dict[str, Any], result: dict[str, Any]) -> None:
        """After a control operation here: if it is shared, change Redis and tell the
        other members (called by :meth:`Control.apply`)."""
        effect = SHARED_OPS.get(op)
        if effect is None or self._remote_op:
            return
        if op == "clock.freeze" and args.get("at_ms") is None:
            args = {"at_ms": result["now_ms"]}
        if effect == "windows":
            self.limiter.reset_shared(args.get("ip"))
        message = orjson.dumps({"from": self.member, "op": op, "args": args})
        task = asyncio.get_running_loop().create_task(self._announce(op, args, message))
        self._tasks.append(task)
        task.add_done_callback(self._tasks.remove)

    async def _announce(self, op: str, args: dict[str, Any], message: bytes) -> None:
        k = self.keys
        try:
            if op == "price.clear":
                await self.client.hdel(k.snapshot, args["symbol"])
            elif op == "book.reset":
                await self.client.delete(k.snapshot)
            await self.client.publish(k.ops_channel, message)
        except FAILURES as exc:
            log.warning("cluster: %s applied here only (Redis unreachable: %s)", op, exc)

    def _apply_op(self, data: bytes) -> None:
        try:
            doc = orjson.loads(data)
            origin, op, args = doc["from"], doc["op"], doc["args"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            log.warning("cluster: malformed control message dropped")
            return
        if origin == self.member or op not in SHARED_OPS or self.control is None:
            return
        self._remote_op = True
        try:
            self.control.apply(op, args)
        except TickerdError as exc:  # the member asked has answered already
            log.warning("cluster: %s from %s not applied here: %s", op, origin, exc)
        finally:
            self._remote_op = False

    # -- health ----------------------------------------------------------------------------

    def health_feeds(self, feeds: list[FeedHealth]) -> list[FeedHealth]:
        """What ``/healthz`` weighs: this member's feeds if it runs them, and the cluster
        link (``down`` while Redis is unreachable: degraded, the last book served)."""
        status: dict[str, Any] = {
            # Up with an empty book: the feeds have not reached it yet (503 until they do).
            "state": (FeedState.UP if len(self.book) else FeedState.STARTING)
            if self.up
            else FeedState.DOWN,
            "member": self.member,
            "feeds": "here" if self.owner else "elsewhere",
            "redis": "up" if self.up else "unreachable",
            "outages": self.outages,
            "lease_calls": self.limiter.lease_calls,
        }
        if self.bus is not None:
            status.update(self.bus.status())
        link = FeedHealth("cluster", status, len(self.book) > 0)
        return [*feeds, link] if self.owner else [link]

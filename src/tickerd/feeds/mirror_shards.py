"""The mirror's stream connections: one supervisor per shard of at most 1024 streams.

Binance's combined streams (developers.binance.com/docs/derivatives/usds-margined-futures/
websocket-market-streams): 1024 streams and 10 incoming messages a second per connection,
a 24 h lifetime, a server ping every 3 minutes. Each shard is subscribed through its URL
alone, so the mirror sends nothing but pongs.

* **Drop** (close frame, TCP reset, EOF, nothing heard for ``idle_timeout_s`` — Binance
  pings every 3 minutes, so a live socket is never that quiet): wait an exponential,
  jittered backoff (reset once a connection has lived ``stable_after_s``), reconnect, then
  ask for a snapshot to cover the gap.
* **Rollover**: at ``rollover_after_s`` (23 h 50 min, before Binance's 24 h cut) open the
  successor first, then close the old connection: no gap, so no snapshot. If the successor
  cannot be opened the old one is kept until it drops.

Client: aiohttp (``ws_connect``, ``heartbeat=None``, ``autoping=True``) rather than picows:
one session serves the snapshot and the streams, a refused handshake surfaces as
``WSServerHandshakeError`` with its status and headers (``Retry-After``), and pings are
answered automatically. A full mirror receives a few thousand small events a second at
peak, well within aiohttp's reach; picows' speed matters on the serving side.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import aiohttp

from .mirror_state import MirrorStats, UpstreamError, retry_after
from .proxy import proxy_for
from .upstream import UpstreamGate

log = logging.getLogger("tickerd.feeds.mirror")


@dataclass(frozen=True, slots=True)
class StreamTimers:
    """The stream connections' intervals (seconds) and the message bound (bytes)."""

    rollover_after_s: float
    idle_timeout_s: float
    connect_timeout_s: float
    close_timeout_s: float
    stable_after_s: float
    max_message_bytes: int


@dataclass(eq=False)
class Conn:
    """One combined-stream connection and the task reading it."""

    ws: aiohttp.ClientWebSocketResponse
    opened: float
    reader: asyncio.Task[None] | None = None
    reason: str = "closed"

    @property
    def alive(self) -> bool:
        """Whether its reader still runs."""
        return self.reader is not None and not self.reader.done()

    async def close(self, timeout: float) -> None:
        """Stop the reader and close the socket (bounded by ``timeout``)."""
        if self.reader is not None and not self.reader.done():
            self.reader.cancel()
            await asyncio.gather(self.reader, return_exceptions=True)
        try:
            async with asyncio.timeout(timeout):
                await self.ws.close()
        except (TimeoutError, aiohttp.ClientError, OSError):
            pass


@dataclass(eq=False)
class Shard:
    """Up to ``shard_size`` symbols on one connection (two during a rollover)."""

    index: int
    symbols: frozenset[str]
    url: str
    subscribed_at: float
    failures: int = 0
    conns: list[Conn] = field(default_factory=list)


class ShardSupervisor:
    """Keeps shards connected; hands each text message to ``on_text`` and calls ``on_gap``
    after every connect that followed a gap (the first included)."""

    def __init__(  # noqa: PLR0913 - keyword-only options
        self,
        *,
        timers: StreamTimers,
        gate: UpstreamGate,
        stats: MirrorStats,
        session: Callable[[], aiohttp.ClientSession],
        proxy: str | None,
        on_text: Callable[[Shard, str], None],
        on_binary: Callable[[], None],
        on_gap: Callable[[], None],
        monotonic: Callable[[], float],
    ) -> None:
        self.timers = timers
        self.gate = gate
        self.stats = stats
        self.session = session
        self.proxy = proxy
        self.on_text = on_text
        self.on_binary = on_binary
        self.on_gap = on_gap
        self.monotonic = monotonic

    async def run(self, shard: Shard) -> None:
        """Keep ``shard`` connected forever (until cancelled)."""
        timers = self.timers
        previous: Conn | None = None
        while True:
            conn = await self._open(shard)
            gap = previous is None or not previous.alive
            if previous is not None:
                # The successor is open: only now let the old connection go.
                shard.conns.remove(previous)
                await previous.close(timers.close_timeout_s)
                if not gap:
                    self.stats.rollovers += 1
                    log.info("shard %d rolled over to a new connection", shard.index)
            previous = None
            if gap:
                self.on_gap()
            remaining = conn.opened + timers.rollover_after_s - self.monotonic()
            assert conn.reader is not None
            done, _ = await asyncio.wait({conn.reader}, timeout=max(0.0, remaining))
            if not done:
                previous = conn  # rollover due: open the successor first
                continue
            lived = self.monotonic() - conn.opened
            self.stats.drops += 1
            failure = None if conn.reader.cancelled() else conn.reader.exception()
            if failure is not None:  # a bug, not the network: say so, then carry on
                log.error("shard %d: reader failed", shard.index, exc_info=failure)
                conn.reason = f"reader failed: {failure!r}"
            shard.conns.remove(conn)
            await conn.close(timers.close_timeout_s)
            if lived >= timers.stable_after_s:
                shard.failures = 0
            delay = self._backoff(shard)
            log.warning(
                "shard %d: connection lost after %.1f s (%s); reconnecting in %.2f s",
                shard.index,
                lived,
                conn.reason,
                delay,
            )
            await asyncio.sleep(delay)

    def _backoff(self, shard: Shard, retry_after_s: int | None = None) -> float:
        delay = self.gate.delay(shard.failures, retry_after_s)
        shard.failures += 1
        return delay

    async def _open(self, shard: Shard) -> Conn:
        """Connect ``shard`` (retrying with backoff until it works) and start its reader."""
        timers = self.timers
        while True:
            await self.gate.hold("stream")
            ra: int | None = None
            try:
                async with asyncio.timeout(timers.connect_timeout_s):
                    ws = await self.session().ws_connect(
                        shard.url,
                        autoping=True,
                        heartbeat=None,
                        compress=0,
                        max_msg_size=timers.max_message_bytes,
                        proxy=proxy_for(shard.url, self.proxy),
                    )
            except aiohttp.WSServerHandshakeError as exc:
                ra = retry_after(exc.headers)
                where = f"stream handshake at {shard.url.partition('?')[0]}"
                error: BaseException = UpstreamError(where, exc.status, ra)
            except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                error = exc
            else:
                now = self.monotonic()
                conn = Conn(ws, now)
                conn.reader = asyncio.create_task(self._read(shard, conn))
                shard.conns.append(conn)
                shard.subscribed_at = now
                self.stats.connects += 1
                log.info(
                    "shard %d connected (%d streams): %s",
                    shard.index,
                    len(shard.symbols),
                    shard.url,
                )
                return conn
            delay = self._backoff(shard, ra)
            self.gate.report(f"stream connection (shard {shard.index})", error, delay, "stream")
            await asyncio.sleep(delay)

    async def _read(self, shard: Shard, conn: Conn) -> None:
        ws = conn.ws
        idle = self.timers.idle_timeout_s
        while True:
            try:
                msg = await ws.receive(timeout=idle)
            except TimeoutError:
                conn.reason = f"nothing received for {idle:g} s"
                return
            kind = msg.type
            if kind is aiohttp.WSMsgType.TEXT:
                self.on_text(shard, msg.data)
            elif kind is aiohttp.WSMsgType.BINARY:
                self.on_binary()
            else:
                if kind is aiohttp.WSMsgType.ERROR:
                    conn.reason = f"error: {msg.data!r}"
                else:
                    conn.reason = f"closed by upstream (code {ws.close_code})"
                return

"""Faults applied to live connections: forced 429/418 answers, delayed replies, unanswered
pings, closes, TCP drops and ``serverShutdown`` events.

The faults themselves are values (``tickerd/faults.py``); this module applies them.

Theory of operation
-------------------
A WebSocket connection has one slot a fault replaces: its *stage*
(:meth:`~tickerd.wsconn.WSConnection.use_stage`), which turns each complete text message
into output, answers client pings and queues replies. While no fault aims at a connection
its stage is the connection itself, and the frame path has no fault check in it. When a
fault aims at it, :class:`FaultInjector` installs a :class:`FaultStage` for it; when none
does any more (and no delayed reply waits), it puts the connection back.

* forced 429/418 (:class:`RequestFault`): the stage answers the next requests with the error,
  then hands over to the protocol again. For REST, ``HTTPServer.handle`` is swapped the same
  way while a fault aims at all clients or at an IP (REST has no connection ids).
* latency (:class:`LatencyFault`): replies wait in a bounded per-connection FIFO
  (:class:`_Delay`), each due at ``max(now + delay, previous due)`` so they stay in order;
  one ``loop.call_at`` timer per connection writes the due ones and re-arms itself for the
  next. Replies still waiting when the latency is cleared are written first (new replies
  queue behind them until the FIFO is empty); replies still waiting when the connection
  closes are dropped. Too many waiting replies (:data:`MAX_DELAYED_REPLIES`, or bytes past
  ``max_send_buffer_bytes``) cut the client off, as a slow reader is.
* unanswered pings (:class:`PingFault`): clean client pings are dropped; every other frame
  passes on. The server's own pings and the client's pongs to them are untouched.

Every fault has a :class:`Target`: all clients, one IP, and optionally one connection id.
New connections are wired as they open (:meth:`FaultInjector.attach`), so a fault aimed at
an IP also catches that IP's reconnects. At most :data:`MAX_FAULTS` faults are armed.
Times in error bodies come from the service clock; delays run on the loop's clock.
"""

from __future__ import annotations

import itertools
import logging
from collections import deque
from typing import TYPE_CHECKING

from ..clock import Clock
from ..faults import MAX_FAULTS, Fault, LatencyFault, PingFault, RequestFault, Target
from ..protocol import CloseConnection, Reply
from ..ratelimit import RateLimiter
from ..rest import RestApi, RestReply
from ..wsconn import State

if TYPE_CHECKING:
    import asyncio

    from .http import HTTPServer
    from .ws import Connection, WSServer

__all__ = ["MAX_DELAYED_REPLIES", "FaultInjector", "FaultStage"]

log = logging.getLogger("tickerd.control")

MAX_DELAYED_REPLIES = 10_000  # waiting replies per connection before it is cut off
_EARLY_S = 0.0005  # a timer may fire this early (loop clock resolution): deliver anyway


class FaultStage:
    """A connection's stage while a fault aims at it (see the module docstring)."""

    __slots__ = ("conn", "delay", "injector", "no_pong", "requests")

    def __init__(self, conn: Connection, injector: FaultInjector) -> None:
        self.conn = conn
        self.injector = injector
        self.requests = False  # a 429/418 fault aims here
        self.no_pong = False  # client pings go unanswered
        self.delay: _Delay | None = None  # replies wait

    def text(self, payload: bytes, now_ms: int) -> None:
        """Answer a text message: a forced 429/418 if one is due, else the protocol."""
        conn = self.conn
        try:
            if self.requests:
                reply = self.injector.answer(conn, payload, now_ms)
            else:
                reply = conn.conn.handler(payload, conn.session, now_ms)
        except CloseConnection as exc:
            conn.conn.close(exc.code, exc.reason)
            return
        self.send_reply(reply)

    def ping(self, payload: bytes, now: float) -> None:
        """Drop the ping under a no-pong fault; answer it as usual otherwise."""
        if not self.no_pong:
            self.conn.conn.ping(payload, now)

    def send_reply(self, reply: Reply) -> None:
        """Hold the reply in the delay FIFO under a latency fault; queue it otherwise."""
        if self.delay is not None:
            self.delay.queue(reply)
        else:
            self.conn.conn.send_reply(reply)

    @property
    def idle(self) -> bool:
        """Whether the stage does nothing any more (the connection can run alone)."""
        return not (self.requests or self.no_pong or self.delay is not None)


class _Delay:
    """One connection's delayed replies: a bounded FIFO drained by one timer."""

    __slots__ = ("conn", "injector", "latency", "pending", "pending_bytes", "timer")

    def __init__(self, conn: Connection, injector: FaultInjector) -> None:
        self.conn = conn
        self.injector = injector
        self.latency: LatencyFault | None = None
        self.pending: deque[tuple[float, Reply, int]] = deque()
        self.pending_bytes = 0
        self.timer: asyncio.TimerHandle | None = None

    def queue(self, reply: Reply) -> None:
        """Hold the reply until it is due."""
        conn = self.conn
        loop = conn.server.loop
        pending = self.pending
        size = 0
        for part in reply:
            size += len(part)
        if (
            len(pending) >= MAX_DELAYED_REPLIES
            or self.pending_bytes + size > conn.server.options.max_send_buffer_bytes
        ):
            log.warning("cutting off %s: too many delayed replies", conn.session.client)
            conn.server.slow_readers_cut += 1
            self.cancel()
            if conn.ws is not None:
                conn.ws.disconnect(graceful=False)
            return
        latency = self.latency
        due = loop.time() + (latency.next_delay_s() if latency is not None else 0.0)
        if pending and pending[-1][0] > due:
            due = pending[-1][0]
        pending.append((due, reply, size))
        self.pending_bytes += size
        if self.timer is None:
            self.timer = loop.call_at(due, self.deliver)

    def deliver(self) -> None:
        """Write every reply that is due (in order), then wait for the next one."""
        self.timer = None
        conn = self.conn
        if conn.ws is None or conn.conn.state is not State.OPEN:
            self.cancel()
        else:
            loop = conn.server.loop
            now = loop.time() + _EARLY_S
            pending = self.pending
            while pending and pending[0][0] <= now:
                _, reply, size = pending.popleft()
                self.pending_bytes -= size
                conn.conn.send_reply(reply)
            conn.flush()
            if pending:
                self.timer = loop.call_at(pending[0][0], self.deliver)
                return
        if self.latency is None:
            self.injector.release_delay(conn)

    def cancel(self) -> None:
        """Drop what waits and stop the timer."""
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.pending.clear()
        self.pending_bytes = 0


class FaultInjector:
    """Arms and disarms faults on the servers' live connections (see the module docstring)."""

    def __init__(self, clock: Clock, limiter: RateLimiter) -> None:
        self.clock = clock
        self.limiter = limiter
        self.faults: dict[int, Fault] = {}
        self.ws: WSServer | None = None
        self.http: HTTPServer | None = None
        self._ids = itertools.count(1)
        self._request: tuple[RequestFault, ...] = ()
        self.stages: dict[Connection, FaultStage] = {}  # connections a fault aims at

    @property
    def delays(self) -> dict[Connection, _Delay]:
        """Connections whose replies wait, with their FIFO."""
        return {c: s.delay for c, s in self.stages.items() if s.delay is not None}

    @property
    def no_pong(self) -> set[Connection]:
        """Connections whose pings go unanswered."""
        return {c for c, s in self.stages.items() if s.no_pong}

    def bind(self, ws: WSServer | None, http: HTTPServer | None) -> None:
        """Serve the connections of ``ws`` and the requests of ``http`` (either may be None)."""
        self.ws = ws
        self.http = http
        if ws is not None:
            ws.faults = self
        self._rewire_all()

    # -- arming ---------------------------------------------------------------------------

    def arm(self, fault: Fault) -> Fault:
        """Arm ``fault`` (raises ValueError past :data:`MAX_FAULTS`); returns it with its id."""
        if len(self.faults) >= MAX_FAULTS:
            raise ValueError(f"{MAX_FAULTS} faults are armed already; clear some first")
        fault.id = next(self._ids)
        self.faults[fault.id] = fault
        self._rewire_all()
        return fault

    def clear(self, fault_id: int | None = None) -> int:
        """Disarm one fault, or all of them; returns how many were disarmed."""
        if fault_id is None:
            n = len(self.faults)
            self.faults.clear()
        else:
            n = 1 if self.faults.pop(fault_id, None) is not None else 0
        if n:
            self._rewire_all()
        return n

    def attach(self, conn: Connection) -> None:
        """Wire a connection that just opened (the WebSocket server calls this)."""
        if self.faults:
            self._rewire(conn)

    def detach(self, conn: Connection) -> None:
        """Forget a connection that closed (the WebSocket server calls this)."""
        stage = self.stages.pop(conn, None)
        if stage is not None and stage.delay is not None:
            stage.delay.cancel()
        conn.conn.use_stage(conn.conn)

    def release_delay(self, conn: Connection) -> None:
        """Stop delaying ``conn``'s replies once no latency aims at it and none waits."""
        stage = self.stages.get(conn)
        if stage is not None and stage.delay is not None:
            stage.delay.cancel()
            stage.delay = None
            self._settle(conn, stage)

    # -- immediate actions ----------------------------------------------------------------

    def connections(self, target: Target) -> list[Connection]:
        """Open connections (no close frame sent yet) that ``target`` aims at, by id."""
        if self.ws is None:
            return []
        found = [
            c
            for c in self.ws.connections
            if c.ws is not None
            and c.conn.state is State.OPEN
            and target.covers(c.session.client, c.conn_id)
        ]
        return sorted(found, key=lambda c: c.conn_id)

    def close(self, target: Target, code: int, reason: str = "") -> int:
        """Close the aimed-at connections with ``code``, after their queued replies."""
        conns = self.connections(target)
        for conn in conns:
            conn.close(code, reason)
        return len(conns)

    def drop(self, target: Target) -> int:
        """Drop the aimed-at connections' TCP at once: no close frame, nothing flushed."""
        conns = self.connections(target)
        for conn in conns:
            assert conn.ws is not None
            conn.ws.disconnect(graceful=False)
        return len(conns)

    def send_event(self, target: Target, payload: bytes) -> int:
        """Send a text frame (an event, not a reply: never delayed) to the aimed-at clients."""
        conns = self.connections(target)
        for conn in conns:
            conn.conn.send_reply((payload,))
            conn.flush()
        return len(conns)

    # -- wiring ---------------------------------------------------------------------------

    def _rewire_all(self) -> None:
        self._request = tuple(f for f in self.faults.values() if isinstance(f, RequestFault))
        if self.ws is not None:
            for conn in list(self.ws.connections):
                self._rewire(conn)
        http = self.http
        if http is not None:
            rest = any(f.target.conn is None for f in self._request)
            http.handle = self._rest if rest else http.api.handle

    def _rewire(self, conn: Connection) -> None:
        ip, conn_id = conn.session.client, conn.conn_id
        faults = [f for f in self.faults.values() if f.target.covers(ip, conn_id)]
        stage = self.stages.get(conn)
        if stage is None:
            if not faults:
                return
            stage = self.stages[conn] = FaultStage(conn, self)
        stage.requests = any(isinstance(f, RequestFault) for f in faults)
        stage.no_pong = any(isinstance(f, PingFault) for f in faults)
        latency = [f for f in faults if isinstance(f, LatencyFault)]
        delay = stage.delay
        if latency:
            if delay is None:
                delay = stage.delay = _Delay(conn, self)
            delay.latency = latency[-1]  # the latest armed wins
        elif delay is not None:
            delay.latency = None
            if not delay.pending:
                delay.cancel()
                stage.delay = None
        self._settle(conn, stage)

    def _settle(self, conn: Connection, stage: FaultStage) -> None:
        """Install ``stage`` while it has work, else give the connection back to itself."""
        if stage.idle:
            self.stages.pop(conn, None)
            conn.conn.use_stage(conn.conn)
        elif conn.conn.stage is not stage:
            conn.conn.use_stage(stage)

    # -- stand-ins ------------------------------------------------------------------------

    def answer(self, conn: Connection, payload: bytes, now_ms: int) -> Reply:
        """The reply to a request on ``conn`` while a 429/418 fault aims at it."""
        protocol = conn.server.protocol
        session = conn.session
        for fault in self._request:
            if fault.remaining > 0 and fault.target.covers(session.client, conn.conn_id):
                error = fault.error(session.client, now_ms, self.limiter)
                reply = protocol.refused(payload, session, error)
                if reply is None:
                    break  # an envelope error: answered as always, and not counted
                self._consume(fault)
                return reply
        return protocol.handle(payload, session, now_ms)

    def _rest(self, method: str, path: str, query: str, ip: str, now_ms: int) -> RestReply:
        """Stands in for ``RestApi.handle`` while a 429/418 fault aims at REST clients."""
        assert self.http is not None
        for fault in self._request:
            if fault.remaining > 0 and fault.target.covers_ip(ip):
                self._consume(fault)
                return RestApi.limited_reply(fault.error(ip, now_ms, self.limiter), now_ms)
        return self.http.api.handle(method, path, query, ip, now_ms)

    def _consume(self, fault: RequestFault) -> None:
        fault.remaining -= 1
        if fault.remaining == 0:
            self.clear(fault.id)

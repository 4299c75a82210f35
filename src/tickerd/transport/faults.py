"""Faults the control plane injects into live connections: forced 429/418 answers, delayed
replies, unanswered pings, closes, TCP drops and ``serverShutdown`` events.

Theory of operation
-------------------
The WebSocket hot path (:meth:`Connection.on_ws_frame` → ``handle`` → ``queue`` →
``flush``) has no fault check in it. A fault is armed by *swapping* what the connections it
aims at run, and disarmed by swapping the originals back:

* forced 429/418 (:class:`RequestFault`): the value of ``conn.handle`` (an attribute every
  connection has) becomes :meth:`FaultInjector._handle`, which answers the next requests
  with the error, then hands over to the protocol again. For REST, ``HTTPServer.handle`` is
  swapped the same way while a fault aims at all clients or at an IP (REST has no
  connection ids).
* latency and unanswered pings: the connection's class becomes :class:`FaultedConnection`
  (``conn.__class__``, same layout), whose ``queue`` and ``other_frame`` consult the
  injector, and goes back to :class:`Connection` when no such fault aims at it any more.
  Swapping the class rather than adding instance attributes leaves the instance dict as it
  was, so a connection that had a fault runs exactly as fast as one that never had one.
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
import random
from collections import deque
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

from picows import WSFrame, WSMsgType

from .. import weights
from ..clock import Clock
from ..errors import (
    BANNED_MSG,
    RATE_LIMITED_MSG,
    BinanceError,
    ErrorCode,
    IPBannedError,
    RateLimitError,
)
from ..protocol import Reply, Session
from ..ratelimit import RateLimiter
from ..rest import RestApi, RestReply
from .ws import Connection

if TYPE_CHECKING:
    import asyncio

    from .http import HTTPServer
    from .ws import WSServer

log = logging.getLogger("tickerd.control")

MAX_FAULTS = 100  # armed at once
MAX_DELAYED_REPLIES = 10_000  # waiting replies per connection before it is cut off
_EARLY_S = 0.0005  # a timer may fire this early (loop clock resolution): deliver anyway


@dataclass(frozen=True, slots=True)
class Target:
    """Who a fault or an action aims at: everyone, one IP, and/or one connection id."""

    ip: str | None = None
    conn: int | None = None

    def covers(self, conn: Connection) -> bool:
        """Whether the WebSocket connection ``conn`` is aimed at."""
        return (self.ip is None or conn.session.client == self.ip) and (
            self.conn is None or conn.conn_id == self.conn
        )

    def covers_ip(self, ip: str) -> bool:
        """Whether a REST request from ``ip`` is aimed at (never by a connection id)."""
        return self.conn is None and (self.ip is None or self.ip == ip)

    def to_state(self) -> dict[str, Any]:
        """The target as the control plane's state shows it."""
        return {"ip": self.ip, "conn": self.conn}


class Fault:
    """An armed fault: its id, what kind, and whom it aims at."""

    kind = "fault"

    def __init__(self, target: Target) -> None:
        self.id = 0  # given when armed
        self.target = target

    def to_state(self) -> dict[str, Any]:
        """The fault as the control plane's state shows it."""
        return {"id": self.id, "kind": self.kind, "target": self.target.to_state()}


class RequestFault(Fault):
    """The next ``remaining`` requests are answered 429 or 418 (-1003) instead of served.

    ``retry_after_ms`` (429) is how long from now ``retryAfter`` lies (default: the start of
    the next rate-limit window, as a real 429); ``ban_ms`` (418) is the ban's length, shown
    in the message's ``banned until`` and in ``retryAfter``. The limiter is not charged or
    changed: the answers are pure fiction, and the client's real budget is untouched.
    """

    def __init__(
        self,
        status: int,
        count: int,
        target: Target,
        *,
        retry_after_ms: int | None = None,
        ban_ms: int = weights.BAN_STEPS_MS[0],
    ) -> None:
        if status not in (418, 429) or count < 1:
            raise ValueError("a request fault is 418 or 429 for at least one request")
        super().__init__(target)
        self.kind = f"http{status}"
        self.status = status
        self.remaining = count
        self.retry_after_ms = retry_after_ms
        self.ban_ms = ban_ms

    def error(self, ip: str, now_ms: int, limiter: RateLimiter) -> BinanceError:
        """The error to answer a request from ``ip`` with, at ``now_ms``."""
        used = limiter.used(ip, now_ms)
        code = int(ErrorCode.TOO_MANY_REQUESTS)
        if self.status == 418:
            until = now_ms + self.ban_ms
            msg = BANNED_MSG.format(ip=ip, until=until)
            return IPBannedError(
                418, code, msg, retry_after_ms=until, server_time_ms=now_ms, used_weight=used
            )
        if self.retry_after_ms is None:
            window = limiter.window_ms
            retry = now_ms - now_ms % window + window
        else:
            retry = now_ms + self.retry_after_ms
        msg = RATE_LIMITED_MSG.format(ip=ip, limit=limiter.limit)
        return RateLimitError(
            429, code, msg, retry_after_ms=retry, server_time_ms=now_ms, used_weight=used
        )

    def to_state(self) -> dict[str, Any]:
        state = super().to_state()
        state["remaining"] = self.remaining
        if self.status == 429:
            state["retry_after_ms"] = self.retry_after_ms
        else:
            state["ban_ms"] = self.ban_ms
        return state


class LatencyFault(Fault):
    """Replies wait ``ms`` milliseconds, or a seeded random ``min_ms``..``max_ms`` each."""

    kind = "latency"

    def __init__(
        self,
        target: Target,
        *,
        ms: int | None = None,
        min_ms: int | None = None,
        max_ms: int | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__(target)
        if ms is not None:
            min_ms = max_ms = ms
        if min_ms is None or max_ms is None or not 0 <= min_ms <= max_ms:
            raise ValueError("latency needs ms, or 0 <= min_ms <= max_ms")
        self.min_ms = min_ms
        self.max_ms = max_ms
        self.seed = seed
        self.rng = random.Random(seed)

    def next_delay_s(self) -> float:
        """The delay of the next reply, in seconds (whole milliseconds)."""
        if self.min_ms == self.max_ms:
            return self.min_ms / 1000
        return self.rng.randint(self.min_ms, self.max_ms) / 1000

    def to_state(self) -> dict[str, Any]:
        state = super().to_state()
        state.update(min_ms=self.min_ms, max_ms=self.max_ms, seed=self.seed)
        return state


class PingFault(Fault):
    """Client pings go unanswered (no pong); everything else is served as usual."""

    kind = "no_pong"


class FaultedConnection(Connection):
    """A :class:`Connection` while a latency or no-pong fault aims at it (class swapped in
    and out by :class:`FaultInjector`)."""

    def queue(self, reply: Reply) -> None:
        """Hold the reply in the connection's delay FIFO, if it has one."""
        faults = self.server.faults
        delay = faults.delays.get(self) if faults is not None else None
        if delay is None:
            Connection.queue(self, reply)
        else:
            delay.queue(reply)

    def other_frame(self, frame: WSFrame) -> None:
        """Drop clean client pings while a no-pong fault aims here; pass the rest on."""
        faults = self.server.faults
        if (
            faults is not None
            and self in faults.no_pong
            and frame.msg_type == WSMsgType.PING
            and not (frame.rsv1 or frame.rsv2 or frame.rsv3)
        ):
            return
        Connection.other_frame(self, frame)


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
        """Stands in for :meth:`Connection.queue`: hold the reply until it is due."""
        conn = self.conn
        loop = conn.server.loop
        pending = self.pending
        size = 0
        for part in reply:
            size += len(part)
        if (
            len(pending) >= MAX_DELAYED_REPLIES
            or self.pending_bytes + size > conn.server.settings.max_send_buffer_bytes
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
        if conn.ws is None or conn.close_sent_at:
            self.cancel()
        else:
            loop = conn.server.loop
            now = loop.time() + _EARLY_S
            pending = self.pending
            while pending and pending[0][0] <= now:
                _, reply, size = pending.popleft()
                self.pending_bytes -= size
                Connection.queue(conn, reply)
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
        self.delays: dict[Connection, _Delay] = {}  # connections whose replies wait
        self.no_pong: set[Connection] = set()  # connections whose pings go unanswered

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
        delay = self.delays.pop(conn, None)
        if delay is not None:
            delay.cancel()
        self.no_pong.discard(conn)
        conn.handle = conn.server.protocol.handle
        self._set_class(conn)

    def release_delay(self, conn: Connection) -> None:
        """Stop delaying ``conn``'s replies once no latency aims at it and none waits."""
        delay = self.delays.pop(conn, None)
        if delay is not None:
            delay.cancel()
        self._set_class(conn)

    # -- immediate actions ----------------------------------------------------------------

    def connections(self, target: Target) -> list[Connection]:
        """Open connections (no close frame sent yet) that ``target`` aims at, by id."""
        if self.ws is None:
            return []
        found = [
            c
            for c in self.ws.connections
            if c.ws is not None and not c.close_sent_at and target.covers(c)
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
            Connection.queue(conn, (payload,))
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
        faults = [f for f in self.faults.values() if f.target.covers(conn)]
        if any(isinstance(f, RequestFault) for f in faults):
            conn.handle = partial(self._handle, conn)
        else:
            conn.handle = conn.server.protocol.handle
        latency = [f for f in faults if isinstance(f, LatencyFault)]
        delay = self.delays.get(conn)
        if latency:
            if delay is None:
                delay = self.delays[conn] = _Delay(conn, self)
            delay.latency = latency[-1]  # the latest armed wins
        elif delay is not None:
            delay.latency = None
            if not delay.pending:
                self.delays.pop(conn)
                delay.cancel()
        if any(isinstance(f, PingFault) for f in faults):
            self.no_pong.add(conn)
        else:
            self.no_pong.discard(conn)
        self._set_class(conn)

    def _set_class(self, conn: Connection) -> None:
        """:class:`FaultedConnection` while replies wait or pings go unanswered, else back."""
        faulted = conn in self.delays or conn in self.no_pong
        kind = type(conn)
        if faulted and kind is Connection:
            conn.__class__ = FaultedConnection
        elif not faulted and kind is FaultedConnection:
            conn.__class__ = Connection

    # -- stand-ins ------------------------------------------------------------------------

    def _handle(self, conn: Connection, payload: bytes, session: Session, now_ms: int) -> Reply:
        """Stands in for ``Protocol.handle`` while a 429/418 fault aims at ``conn``."""
        protocol = conn.server.protocol
        for fault in self._request:
            if fault.remaining > 0 and fault.target.covers(conn):
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
                # RestApi's own 429/418 reply: -1003 body, Retry-After in seconds.
                return RestApi._limited(fault.error(ip, now_ms, self.limiter), now_ms)
        return self.http.api.handle(method, path, query, ip, now_ms)

    def _consume(self, fault: RequestFault) -> None:
        fault.remaining -= 1
        if fault.remaining == 0:
            self.clear(fault.id)

"""Market-stream sockets (on the WebSocket API's port, or on one of their own): the picows
side of :mod:`tickerd.streams`.

:class:`StreamGate` is what the WS server asks when an upgrade names a stream path
(``/ws/…``, ``/stream?streams=…``, under ``/market`` or ``/public``): it checks the names
and makes a :class:`StreamConnection`, a WS API connection whose text messages go to a
:class:`~tickerd.streams.session.StreamSession` instead of the protocol, and which counts
every incoming text, ping and pong frame against Binance's 10 a second (over it: close
1008 ``Too many requests``). The gate runs the hub's rounds: one flush per event-loop turn
after trades arrived, one timed round every 100 ms. Events are written with the same
coalesced, bounded writes as replies, so a subscriber that stops reading is cut off at
``max_send_buffer_bytes`` like a WS API client.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING

from ..clock import Clock
from ..protocol import Reply, Session
from ..streams.hub import AGG_TRADE_S, SILENT_LISTED, StreamHub, next_round
from ..streams.names import StreamPath, parse_name, parse_path
from ..streams.session import StreamLimits, StreamSession
from ..wsconn import Limits, State, WSConnection
from .picows_adapter import WSFrame, WSMsgType, WSTransport
from .ws import Connection

if TYPE_CHECKING:
    from .ws import WSServer

_COUNTED = (WSMsgType.TEXT, WSMsgType.BINARY, WSMsgType.PING, WSMsgType.PONG,
            WSMsgType.CONTINUATION)  # fmt: skip
#: Why a subscriber was cut off: it stopped reading (its own send buffer bound, or the
#: largest backlog when all connections together passed theirs), or it sent more than its
#: messages a second.
CUT_REASONS = ("slow_reader", "send_budget", "too_many_messages")
_BINARY_REPLY: Reply = (
    b'{"error":{"code":3,"msg":"Invalid JSON: expected value at line 1 column 1"},"id":null}',
)


class StreamConnection(Connection):
    """One stream socket (see the module docstring)."""

    def __init__(
        self, server: WSServer, session: Session, gate: StreamGate, path: StreamPath
    ) -> None:
        super().__init__(server, session)
        self.gate = gate
        self.path = path
        self.stream = StreamSession(gate.hub, self, path.route, path.combined, gate.limits)
        self.conn = WSConnection(
            self._handle, session, gate.conn_limits, server.loop.time(), binary_reply=_BINARY_REPLY
        )

    @property
    def combined(self) -> bool:
        """Whether events go out wrapped ``{"stream","data"}`` (the socket's property)."""
        return self.stream.combined

    def _handle(self, payload: bytes, session: Session, now_ms: int) -> Reply:
        return (self.stream.handle(payload),)

    def on_ws_connected(self, transport: WSTransport) -> None:
        super().on_ws_connected(transport)
        self.gate.sockets.add(self)
        self.gate.opened += 1
        names = tuple(n for n in self.path.names if parse_name(n) is not None)
        self.stream.open_with(names)  # counted by the gate before the upgrade

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        if self.server.budget.was_cut(transport.underlying_transport):
            self.gate.cut["send_budget"] += 1
        super().on_ws_disconnected(transport)
        self.gate.sockets.discard(self)
        self.stream.close()

    def count_cut(self) -> None:
        super().count_cut()
        self.gate.cut["slow_reader"] += 1

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if (
            frame.msg_type in _COUNTED
            and self.conn.state is State.OPEN
            and not self.stream.allow_message(self.server.loop.time())
        ):
            self.gate.cut["too_many_messages"] += 1
            self.conn.close(1008, "Too many requests", self.server.loop.time())
            self.flush()
            return
        super().on_ws_frame(transport, frame)

    def deliver(self, frames: list[bytes]) -> None:
        """Queue ``frames`` after what is queued and write them now."""
        c = self.conn
        if self.ws is None or c.state is not State.OPEN:
            return
        if c.out:
            c.parts.append(bytes(c.out))
            c.out.clear()
        c.parts.extend(frames)
        self.flush()


class StreamGate:
    """The stream paths of a WS server, and the hub's rounds."""

    def __init__(
        self, hub: StreamHub, clock: Clock, limits: StreamLimits, conn_limits: Limits
    ) -> None:
        self.hub = hub
        self.clock = clock
        self.limits = limits
        self.conn_limits = conn_limits
        self.sockets: set[StreamConnection] = set()  # open stream sockets (ops)
        self.opened = 0  # stream sockets that completed the handshake (ops)
        self.cut: dict[str, int] = dict.fromkeys(CUT_REASONS, 0)  # subscribers cut off (ops)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.Task[None] | None = None
        self._flush_due = False

    def status(self, top: int = SILENT_LISTED) -> dict[str, object]:
        """What ``/status`` shows of the streams: sockets, subscriptions, silent names (the
        ``top`` most subscribed), events and frames sent, subscribers cut off by reason."""
        return {
            "connections": len(self.sockets),
            "connections_opened": self.opened,
            **self.hub.status(top),
            "cut": dict(self.cut),
        }

    @staticmethod
    def match(path: str, query: str) -> StreamPath | None:
        """The stream request of an upgrade to ``path``, or None (not a stream path)."""
        return parse_path(path, query)

    def problem(self, path: StreamPath) -> str | None:
        """Why the names of ``path`` cannot be served (too many), or None. A path part that
        is no stream name is passed over: clients put connection labels there (ccxt opens
        ``/public/ws/0``)."""
        count = len({n for n in path.names if parse_name(n) is not None})
        if count > self.limits.max_streams:
            return f"{count} streams; at most {self.limits.max_streams} per connection"
        return None

    def connection(self, server: WSServer, ip: str, path: StreamPath) -> StreamConnection:
        """A stream socket for client ``ip``."""
        return StreamConnection(server, Session(ip), self, path)

    async def start(self) -> None:
        """Run the hub's rounds."""
        self._loop = asyncio.get_running_loop()
        self.hub.on_pending = self._schedule
        self._timer = asyncio.create_task(self._rounds(), name="tickerd-stream-rounds")

    async def stop(self) -> None:
        """Stop the rounds."""
        if self._timer is not None:
            self._timer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._timer

    def _schedule(self) -> None:
        if not self._flush_due and self._loop is not None:
            self._flush_due = True
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_due = False
        self.hub.flush(self.clock.now_ms())

    async def _rounds(self) -> None:
        """The hub's rounds every :data:`AGG_TRADE_S`, on a grid: the time a round takes
        does not add to the period."""
        loop = self._loop
        assert loop is not None
        due = loop.time()
        while True:
            due = next_round(due, loop.time(), AGG_TRADE_S)
            await asyncio.sleep(due - loop.time())
            self.hub.tick(loop.time(), self.clock.now_ms())

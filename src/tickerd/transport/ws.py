"""The WebSocket API server: picows underneath, the sans-I/O :class:`Protocol` on top.

Theory of operation
-------------------
picows parses frames and calls :meth:`Connection.on_ws_frame` once per frame, flagging the
last complete frame of each socket read with ``last_in_buffer``. Replies are not written
one by one: their frames are collected and written once per read (small replies copied
into one buffer, large cached bodies passed by reference to ``writelines``). Pipelining
clients thereby cost ~one syscall per read instead of one per reply.

picows does masking, the handshake and its timeout; this adapter does the rest of RFC 6455
that a server owes: reassembly of fragmented messages under a size bound, 1002 for
RSV bits, stray continuations and interleaved data frames or bad close codes, 1007 for
invalid UTF-8, and 1009 (picows' frame bound, set to ours) for oversize frames. It also
keeps Binance's connection lifecycle — a ping every ``ping_interval``, a close when a ping
stays unanswered for ``pong_timeout``, a close at ``max_lifetime`` — with one sweeper task
for all connections rather than timers per connection, and cuts off a client whose unsent
replies exceed ``max_send_buffer_bytes``.

Fault injection (the control plane, ``transport/faults.py``) costs nothing while no fault
is armed: it never adds a check to the frame path. Arming a fault swaps what the targeted
:class:`Connection` objects run — the value of ``handle`` (forced 429/418 answers), or
their class for one whose ``queue`` and ``other_frame`` delay replies and drop pings — and
clearing it swaps the originals back. The server only tells the injector about
connections coming and going.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Callable
from time import perf_counter_ns
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

import orjson
from picows import (
    WSCloseCode,
    WSFrame,
    WSListener,
    WSMsgType,
    WSTransport,
    WSUpgradeRequest,
    WSUpgradeResponse,
    WSUpgradeResponseWithListener,
)
from picows.picows import WSAutoPingStrategy, WSProtocol  # type: ignore[attr-defined]

from .. import weights
from ..clock import Clock
from ..config import Settings
from ..counters import LATENCY_SAMPLE_MASK, ConnectionCounters
from ..errors import BinanceError, ErrorCode
from ..protocol import CloseConnection, Protocol, Reply, Session
from ..ratelimit import AttemptCounter
from .frames import text_header, valid_close_code

if TYPE_CHECKING:
    from .faults import FaultInjector

log = logging.getLogger("tickerd.server")


class _WireLog(logging.LoggerAdapter):  # type: ignore[type-arg]
    """picows' logger: what a client causes (its protocol errors, connects, disconnects,
    handshake timeouts, full send buffers) goes to DEBUG, so one misbehaving client cannot
    flood the log; failures of tickerd's own callbacks keep their level."""

    _CLIENT_CAUSED = (
        "WS parser error",
        "New connection accepted",
        "Disconnected",
        "Handshake timeout",
        "Disconnect because HTTP request",
        "Protocol writing",
    )

    def log(self, level: int, msg: object, *args: Any, **kwargs: Any) -> None:
        if isinstance(msg, str) and msg.startswith(self._CLIENT_CAUSED):
            level = logging.DEBUG
        super().log(level, msg, *args, **kwargs)


# A LoggerAdapter also keeps picows from creating a child logger per connection.
wire_log = _WireLog(logging.getLogger("tickerd.server.wire"))

_TEXT = WSMsgType.TEXT
_BIG = 16 * 1024  # replies at least this large are written by reference, not copied
_CONTROL_FRAMES_PER_S = 5  # Binance: at most 5 ping/pong frames per second
# picows' initial read buffer per connection; it doubles when a read needs more. Requests
# are small, so a small start keeps 10 000 idle connections cheap.
_READ_BUFFER_BYTES = 4096


def client_ip(peer: Any) -> str:
    """The rate-limit key of a peer address: its IP, IPv4-mapped IPv6 unwrapped."""
    host = str(peer[0]) if isinstance(peer, tuple) and peer else "unknown"
    return host.removeprefix("::ffff:")


class Connection(WSListener):
    """One WebSocket API connection: frames in, coalesced reply frames out."""

    def __init__(self, server: WSServer, session: Session) -> None:
        super().__init__()
        self.server = server
        self.session = session
        self.conn_id = next(server.ids)  # shown by the control plane, which can aim at it
        self.handle = server.protocol.handle
        self.now_ms = server.clock.now_ms
        self.ws: WSTransport | None = None
        self.out = bytearray()
        self.parts: list[bytes] = []
        self.fragments: list[bytes] | None = None
        self.fragments_size = 0
        self.fragment_type = _TEXT
        self.opened = 0.0
        self.last_ping = 0.0
        self.unanswered_since = 0.0  # when the oldest ping still without a pong was sent
        self.close_sent_at = 0.0
        self.batch_now = 0  # the clock, read at the first frame of a socket read
        self.read_ns = 0  # ops: when the first request frame of a timed read was seen
        self.control_window = 0
        self.control_count = 0

    # -- picows callbacks -----------------------------------------------------------------

    def on_ws_connected(self, transport: WSTransport) -> None:
        self.ws = transport
        self.opened = self.last_ping = self.server.loop.time()
        self.server.add(self)

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        self.server.discard(self)

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if transport.is_close_frame_sent:  # by us (close()) or by picows itself
            if frame.msg_type == WSMsgType.CLOSE:
                transport.disconnect()
            return
        if (
            frame.msg_type is _TEXT
            and frame.fin
            and self.fragments is None
            and not (frame.rsv1 or frame.rsv2 or frame.rsv3)
        ):
            now = self.batch_now or self.read_time()
            try:
                reply = self.handle(frame.get_payload_as_bytes(), self.session, now)
            except CloseConnection as exc:
                self.close(exc.code, exc.reason)
                return
            self.queue(reply)
        else:
            self.other_frame(frame)
        if frame.last_in_buffer:
            self.batch_now = 0
            self.flush()
            if self.read_ns:  # ops: reply latency of a timed read
                self.server.counters.latency.observe(perf_counter_ns() - self.read_ns)
                self.read_ns = 0

    def read_time(self) -> int:
        """The time for every frame of the current socket read: read once per read."""
        now = self.batch_now = self.now_ms()
        if not now & LATENCY_SAMPLE_MASK:  # ops: reads in one clock millisecond in 16 are timed
            self.read_ns = perf_counter_ns()
        return now

    # -- replies --------------------------------------------------------------------------

    def queue(self, reply: Reply) -> None:
        """Add a reply frame to what the next :meth:`flush` writes."""
        if len(reply) == 1 and len(reply[0]) < _BIG:  # the common case: one small piece
            body = reply[0]
            out = self.out
            out += text_header(len(body))
            out += body
            return
        size = 0
        for part in reply:
            size += len(part)
        out = self.out
        out += text_header(size)
        for part in reply:
            if len(part) < _BIG:
                out += part
            else:  # a large cached body goes out by reference, between the small pieces
                self.parts.append(bytes(out))
                out.clear()
                self.parts.append(part)

    def flush(self) -> None:
        """Write every queued frame at once; cut the client off if it stopped reading."""
        ws = self.ws
        if ws is None:
            return
        if ws.is_close_frame_sent:
            # picows closed the connection itself (a malformed frame after this batch):
            # nothing may follow a close frame.
            self.out.clear()
            self.parts.clear()
            return
        transport = ws.underlying_transport
        if self.parts:
            if self.out:
                self.parts.append(bytes(self.out))
                self.out.clear()
            transport.writelines(self.parts)
            self.parts = []
        elif self.out:
            transport.write(self.out)
            self.out = bytearray()
        else:
            return
        if transport.get_write_buffer_size() > self.server.settings.max_send_buffer_bytes:
            log.warning("cutting off %s: it is not reading its replies", self.session.client)
            self.server.slow_readers_cut += 1
            ws.disconnect(graceful=False)

    # -- everything but the plain text frame ------------------------------------------------

    def other_frame(self, frame: WSFrame) -> None:
        """Control frames, fragments, binary frames and protocol violations."""
        if frame.rsv1 or frame.rsv2 or frame.rsv3:
            return self.close(1002, "RSV bits set without a negotiated extension")
        kind = frame.msg_type
        if kind == WSMsgType.PONG and self.unanswered_since:
            # Any pong while our ping is outstanding answers it: some clients answer with
            # an empty payload.
            self.unanswered_since = 0.0
        elif kind == WSMsgType.PING or kind == WSMsgType.PONG:
            # Client pings and unsolicited pongs (allowed, but proof of nothing) count
            # against Binance's 5 ping/pong frames per second.
            if not self.control_allowed():
                return self.close(1008, "too many ping/pong frames")
            if kind == WSMsgType.PING:
                self.flush()
                self.ws.send_pong(frame.get_payload_as_bytes())  # type: ignore[union-attr]
        elif kind == WSMsgType.CLOSE:
            self.peer_closed(frame)
        elif kind == WSMsgType.CONTINUATION:
            if self.fragments is None:
                return self.close(1002, "continuation frame without a message to continue")
            self.add_fragment(frame)
        elif self.fragments is not None:
            return self.close(1002, "new data frame inside a fragmented message")
        elif frame.fin:
            self.dispatch(kind, frame.get_payload_as_bytes())
        else:
            self.fragments = []
            self.fragments_size = 0
            self.fragment_type = kind
            self.add_fragment(frame)

    def add_fragment(self, frame: WSFrame) -> None:
        assert self.fragments is not None
        self.fragments_size += frame.payload_size
        if self.fragments_size > self.server.settings.max_message_bytes:
            return self.close(1009, "message too big")
        self.fragments.append(frame.get_payload_as_bytes())
        if frame.fin:
            payload = b"".join(self.fragments)
            self.fragments = None
            self.dispatch(self.fragment_type, payload)

    def dispatch(self, kind: WSMsgType, payload: bytes) -> None:
        if kind != _TEXT:
            self.queue(self.server.protocol.binary_frame())
            return
        try:
            self.queue(self.handle(payload, self.session, self.batch_now or self.read_time()))
        except CloseConnection as exc:
            self.close(exc.code, exc.reason)

    def control_allowed(self) -> bool:
        """Whether this ping/pong frame is within Binance's 5 per second."""
        second = int(self.server.loop.time())
        if second != self.control_window:
            self.control_window = second
            self.control_count = 0
        self.control_count += 1
        return self.control_count <= _CONTROL_FRAMES_PER_S

    def peer_closed(self, frame: WSFrame) -> None:
        ws = self.ws
        assert ws is not None
        self.flush()
        if frame.payload_size == 0:
            ws.send_close(WSCloseCode.OK)
        else:
            code: int = frame.get_close_code().value
            if valid_close_code(code):
                ws.send_close(WSCloseCode(code))
            else:
                ws.send_close(WSCloseCode.PROTOCOL_ERROR, b"invalid close code")
        ws.disconnect()

    # -- lifecycle ------------------------------------------------------------------------

    def close(self, code: int, reason: str = "") -> None:
        """Send a close frame after what is queued; the sweeper drops a peer that stays."""
        ws = self.ws
        if ws is None or self.close_sent_at:
            return
        self.flush()
        self.fragments = None
        ws.send_close(WSCloseCode(code), reason.encode())
        self.close_sent_at = self.server.loop.time()

    def sweep(self, now: float) -> None:
        """Ping, pong timeout, lifetime and close timeout, checked by the server's sweeper."""
        ws = self.ws
        if ws is None:
            return
        s = self.server.settings
        if self.close_sent_at:
            if now - self.close_sent_at >= s.close_timeout:
                ws.disconnect(graceful=False)
        elif now - self.opened >= s.max_lifetime:
            self.close(1001)
        elif self.unanswered_since and now - self.unanswered_since >= s.pong_timeout:
            log.info("closing %s: no pong in %.0f s", self.session.client, s.pong_timeout)
            self.close(1008, "pong timeout")
        elif now - self.last_ping >= s.ping_interval:
            self.flush()
            ws.send_ping(b"%d" % self.now_ms())
            self.last_ping = now
            self.unanswered_since = self.unanswered_since or now


class WSServer:
    """Serves :class:`Protocol` over WebSocket at ``settings.path`` (and ``/healthz``)."""

    def __init__(
        self,
        protocol: Protocol,
        clock: Clock,
        settings: Settings,
        *,
        health: Callable[[], dict[str, Any]] | None = None,
    ) -> None:
        self.protocol = protocol
        self.clock = clock
        self.settings = settings
        self.health = health or (lambda: {"status": "ok"})
        self.connections: set[Connection] = set()
        self.attempts = AttemptCounter(settings.connect_limit, weights.CONNECT_WINDOW_MS)
        self.slow_readers_cut = 0
        self.counters = ConnectionCounters()  # ops: read at scrape time
        self.ids = itertools.count(1)
        self.faults: FaultInjector | None = None  # set by the control plane
        self.loop = asyncio.get_running_loop()
        self._server: asyncio.Server | None = None
        self._sweeper: asyncio.Task[None] | None = None

    @property
    def port(self) -> int:
        """The port listened on (useful when started on port 0)."""
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        """Listen on ``settings.host:settings.port``."""
        s = self.settings
        self._server = await self.loop.create_server(
            self._make_protocol, s.host, s.port, backlog=4096, reuse_address=True
        )
        self._sweeper = asyncio.create_task(self._sweep_forever(), name="tickerd-ws-sweeper")

    async def stop(self, code: int = 1001) -> None:
        """Stop listening, close every connection with ``code``, drop those that linger."""
        if self._server is not None:
            self._server.close()
        for conn in list(self.connections):
            conn.close(code)
        deadline = self.loop.time() + min(self.settings.close_timeout, 2.0)
        while self.connections and self.loop.time() < deadline:
            await asyncio.sleep(0.02)
        for conn in list(self.connections):
            if conn.ws is not None:
                conn.ws.disconnect(graceful=False)
        if self._sweeper is not None:
            self._sweeper.cancel()
        if self._server is not None:
            await self._server.wait_closed()

    def add(self, conn: Connection) -> None:
        self.connections.add(conn)
        self.counters.open(conn.conn_id, conn.session.client)  # ops
        if self.faults is not None:
            self.faults.attach(conn)

    def discard(self, conn: Connection) -> None:
        if conn in self.connections:  # ops
            handshake = conn.ws.close_handshake if conn.ws is not None else None
            self.counters.close(conn.conn_id, conn.session.client, handshake)
        self.connections.discard(conn)
        if self.faults is not None:
            self.faults.detach(conn)

    # -- handshake ------------------------------------------------------------------------

    def _make_protocol(self) -> Any:
        s = self.settings
        proto: Any = None

        def route(request: WSUpgradeRequest) -> Any:
            transport = proto.transport.underlying_transport
            return self._route(request, client_ip(transport.get_extra_info("peername")))

        proto = WSProtocol(
            None, None, False, route, wire_log, True, s.handshake_timeout,
            False, 20.0, 20.0, WSAutoPingStrategy.PING_WHEN_IDLE,
            False,  # pings are answered by Connection, which must see every frame
            s.max_message_bytes, None, _READ_BUFFER_BYTES,
        )  # fmt: skip
        return proto

    def _route(self, request: WSUpgradeRequest, ip: str) -> Any:
        path, _, query = request.path.decode("latin-1").partition("?")
        if path == "/healthz":
            body = orjson.dumps(self.health())
            ok = WSUpgradeResponse.create_ok_response(body, {"Content-Type": "application/json"})
            return WSUpgradeResponseWithListener(ok, None)
        if path != self.settings.path:
            return None  # 404
        _accept_connection_token_list(request)
        now = self.clock.now_ms()
        if len(self.connections) >= self.settings.max_connections:
            self.counters.refused["max_connections"] += 1  # ops
            return _refuse(503, BinanceError.of(ErrorCode.SERVER_BUSY, status=503).to_wire())
        if not self.attempts.allow(ip, now):
            self.counters.refused["connect_limit"] += 1  # ops
            return _refuse(
                429,
                {
                    "code": -1003,
                    "msg": f"Too many connection attempts from "
                    f"IP({ip}); limit is {self.settings.connect_limit} per 5 minutes.",
                },
            )
        try:
            self.protocol.limiter.charge(ip, weights.WS_HANDSHAKE_WEIGHT, now)
        except BinanceError as err:
            self.counters.refused["banned" if err.status == 418 else "rate_limited"] += 1  # ops
            retry_s = max(1, -(-((err.retry_after_ms or now) - now) // 1000))
            return _refuse(err.status, {"code": err.code, "msg": err.msg}, retry_s)
        return Connection(self, Session.from_query(ip, dict(parse_qsl(query))))

    # -- lifecycle ------------------------------------------------------------------------

    async def _sweep_forever(self) -> None:
        s = self.settings
        shortest = min(s.ping_interval, s.pong_timeout, s.max_lifetime, s.close_timeout)
        period = min(1.0, max(0.01, shortest / 4))
        while True:
            await asyncio.sleep(period)
            now = self.loop.time()
            for conn in list(self.connections):
                conn.sweep(now)


def _accept_connection_token_list(request: WSUpgradeRequest) -> None:
    """Let ``Connection: keep-alive, Upgrade`` (Firefox) through picows' exact-match check.

    The header is a comma-separated token list (RFC 7230 §6.1); picows 2.3 compares the
    whole value with "upgrade".
    """
    value = request.headers.get("Connection", "")
    if "," in value and "upgrade" in (t.strip().lower() for t in value.split(",")):
        request.headers["Connection"] = "Upgrade"


def _refuse(status: int, body: dict[str, Any], retry_after_s: int | None = None) -> Any:
    headers = {"Content-Type": "application/json"}
    if retry_after_s is not None:
        headers["Retry-After"] = str(retry_after_s)
    response = WSUpgradeResponse.create_error_response(status, orjson.dumps(body), headers)
    return WSUpgradeResponseWithListener(response, None)

"""The WebSocket API server: picows underneath, :class:`~tickerd.wsconn.WSConnection` and
the sans-I/O :class:`Protocol` on top.

Theory of operation
-------------------
picows parses frames and calls :meth:`Connection.on_ws_frame` once per frame, flagging the
last complete frame of each socket read with ``last_in_buffer``. A plain complete text frame
goes straight to the connection's ``respond`` (the protocol, by default); every other frame
goes to :meth:`WSConnection.receive_frame`, which owns the RFC 6455 rules picows leaves to
us and Binance's connection lifecycle. Output is not written frame by frame: it is written
once per read (small frames copied into one buffer, large cached bodies passed by reference
to ``writelines``), then a close frame if one is due. Pipelining clients thereby cost ~one
syscall per read instead of one per reply. One sweeper task runs every connection's timers
(:meth:`WSConnection.tick`) rather than timers per connection, and a client whose unsent
replies exceed ``max_send_buffer_bytes`` is cut off, as are the largest backlogs when all
connections' together pass ``max_total_send_buffer_bytes`` (``budget.py``). The listening
socket accepts through ``resources.Listener``, which answers 503 at the fd limit.

Fault injection (``transport/faults.py``) replaces a connection's stage
(:meth:`WSConnection.use_stage`) while a fault aims at it; the server only tells the
injector about connections coming and going. picows itself is reached only through
``picows_adapter.py``.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from time import perf_counter_ns
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

import orjson

from .. import weights
from ..clock import Clock
from ..counters import LATENCY_SAMPLE_MASK, ConnectionCounters
from ..errors import BinanceError, ErrorCode, connect_limited
from ..protocol import Protocol, Session
from ..ratelimit import AttemptCounter
from ..wsconn import End, Limits, State, WSConnection
from .budget import SendBudget
from .picows_adapter import (
    WSCloseCode,
    WSFrame,
    WSListener,
    WSMsgType,
    WSTransport,
    WSUpgradeRequest,
    accept_connection_token_list,
    peer_of,
    refusal,
    response,
    server_protocol,
)
from .resources import Listener, listen

if TYPE_CHECKING:
    from .faults import FaultInjector
    from .streams import StreamGate

log = logging.getLogger("tickerd.server")

_TEXT = WSMsgType.TEXT
_CLOSE = WSMsgType.CLOSE
# picows' initial read buffer per connection; it doubles when a read needs more. Requests
# are small, so a small start keeps 10 000 idle connections cheap.
_READ_BUFFER_BYTES = 4096
WS_VERSION = "13"  # the only version RFC 6455 defines


@dataclass(frozen=True, slots=True)
class WSOptions:
    """What the WebSocket API server needs to know (the wiring builds it from settings)."""

    host: str = "127.0.0.1"
    port: int = 9000
    path: str = "/ws-fapi/v1"
    max_connections: int = 20_000
    max_message_bytes: int = 64 * 1024
    max_send_buffer_bytes: int = 4 * 1024 * 1024
    ping_interval: float = 180.0
    pong_timeout: float = 600.0
    max_lifetime: float = 86_400.0
    handshake_timeout: float = 5.0
    close_timeout: float = 5.0
    connect_limit: int = weights.CONNECT_LIMIT
    ssl: ssl.SSLContext | None = None  # serve wss:// with this context
    max_total_send_buffer_bytes: int = 64 * 1024 * 1024  # over all connections (budget.py)
    sock: Any = None  # a listening socket handed over (a supervisor's worker), else bind
    api: bool = True  # serve the WS API at ``path`` (False: a port of the streams alone)

    def limits(self) -> Limits:
        """The per-connection bounds and timers."""
        return Limits(
            self.max_message_bytes,
            self.ping_interval,
            self.pong_timeout,
            self.max_lifetime,
            self.close_timeout,
        )


def peer_client(peer: Any, headers: Any) -> str:
    """The client of a request: its TCP peer (``--trusted-proxy`` swaps this out)."""
    return client_ip(peer)


def client_ip(peer: Any) -> str:
    """The rate-limit key of a peer address: its IP, IPv4-mapped IPv6 unwrapped."""
    host = str(peer[0]) if isinstance(peer, tuple) and peer else "unknown"
    return host.removeprefix("::ffff:")


class Connection(WSListener):
    """One WebSocket API connection: picows' callbacks in, coalesced writes out."""

    def __init__(self, server: WSServer, session: Session) -> None:
        super().__init__()
        self.server = server
        self.session = session
        self.conn_id = next(server.ids)  # shown by the control plane, which can aim at it
        self.now_ms = server.clock.now_ms
        self.ws: WSTransport | None = None
        self.conn = WSConnection(
            server.protocol.handle,
            session,
            server.limits,
            server.loop.time(),
            binary_reply=server.binary_reply,
        )
        self.batch_now = 0  # the clock, read at the first frame of a socket read
        self.read_ns = 0  # ops: when the first request frame of a timed read was seen

    @property
    def opened(self) -> float:
        """When the connection opened (loop clock)."""
        return self.conn.opened

    @property
    def close_sent_at(self) -> float:
        """Non-zero once a close frame is queued or sent (loop clock, when known)."""
        c = self.conn
        return 0.0 if c.state is State.OPEN else c.closing_since if c.closing_since > 0 else 1.0

    # -- picows callbacks -----------------------------------------------------------------

    def on_ws_connected(self, transport: WSTransport) -> None:
        self.ws = transport
        self.conn.opened = self.conn.last_ping = self.server.loop.time()
        self.server.add(self)

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        self.conn.lost()
        self.server.discard(self)

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if transport.is_close_frame_sent:  # by us, or by picows itself (a malformed frame)
            if frame.msg_type is _CLOSE:
                transport.disconnect()
            return
        c = self.conn
        if (
            frame.msg_type is _TEXT
            and frame.fin
            and c.plain
            and not (frame.rsv1 or frame.rsv2 or frame.rsv3)
        ):
            c.respond(frame.get_payload_as_bytes(), self.batch_now or self.read_time())
        else:
            c.receive_frame(
                frame.msg_type.value,
                bool(frame.fin),  # picows gives an int; a compiled WSConnection checks types
                frame.rsv1 << 2 | frame.rsv2 << 1 | frame.rsv3,
                frame.get_payload_as_bytes(),
                self.server.loop.time(),
                self.batch_now or self.read_time(),
            )
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

    # -- output ---------------------------------------------------------------------------

    def flush(self) -> None:
        """Write what the connection queued at once; cut the client off if it stopped
        reading; end the TCP connection when the connection says so."""
        ws = self.ws
        if ws is None:
            return
        c = self.conn
        if ws.is_close_frame_sent:
            # picows closed the connection itself (a malformed frame after this batch):
            # nothing may follow a close frame.
            c.discard_output()
            if not c.plain:
                self._end(ws, c)
            return
        transport = ws.underlying_transport
        budget = self.server.budget  # a stalled writer's bytes past the total are dropped
        if len(c.out) > budget.room and budget.refuse(transport, len(c.out)):
            c.discard_output()
            return
        if c.parts:
            parts = c.parts
            if c.out:
                parts.append(bytes(c.out))
                c.out.clear()
            transport.writelines(parts)
            c.parts = []
        elif c.out:
            transport.write(c.out)
            c.out = bytearray()
        elif c.plain:
            return
        if not c.plain:  # closing, or inside a fragmented message
            if c.close_frame is not None:
                code, reason = c.close_frame
                c.close_frame = None
                ws.send_close(WSCloseCode(code), reason)
            self._end(ws, c)
        size = transport.get_write_buffer_size()
        if size:
            budget.note(transport, size)
        if size > self.server.options.max_send_buffer_bytes:
            log.warning("cutting off %s: it is not reading its replies", self.session.client)
            self.count_cut()
            ws.disconnect(graceful=False)

    def count_cut(self) -> None:
        """Count this connection as cut off for not reading (ops)."""
        self.server.slow_readers_cut += 1

    @staticmethod
    def _end(ws: WSTransport, c: WSConnection) -> None:
        end = c.end
        if end is not End.NONE:
            c.end = End.NONE
            ws.disconnect(graceful=end is End.CLOSE)

    def close(self, code: int, reason: str = "") -> None:
        """Send a close frame after what is queued; the sweeper drops a peer that stays."""
        if self.ws is None:
            return
        self.conn.close(code, reason, self.server.loop.time())
        self.flush()

    def sweep(self, now: float, now_ms: int) -> None:
        """Run the connection's timers (the server's sweeper calls this)."""
        if self.ws is not None:
            self.conn.tick(now, now_ms)
            self.flush()


class WSServer:
    """Serves :class:`Protocol` over WebSocket at ``options.path`` (and ``/healthz``)."""

    def __init__(
        self,
        protocol: Protocol,
        clock: Clock,
        options: WSOptions,
        *,
        health: Callable[[], tuple[int, dict[str, Any]]] | None = None,
    ) -> None:
        self.protocol = protocol
        self.clock = clock
        self.options = options
        self.limits = options.limits()
        self.binary_reply = protocol.binary_frame()
        self.health = health or (lambda: (200, {"status": "ok"}))
        self.connections: set[Connection] = set()
        self.attempts = AttemptCounter(options.connect_limit, weights.CONNECT_WINDOW_MS)
        self.slow_readers_cut = 0
        self.counters = ConnectionCounters()  # ops: read at scrape time
        self.ids = itertools.count(1)
        self.faults: FaultInjector | None = None  # set by the control plane
        self.streams: StreamGate | None = None  # market-stream paths, when served
        # Load-balancer hooks: who a request's client is, and a protocol in front of
        # picows' (the PROXY protocol); set before start().
        self.client_of: Callable[[Any, Any], str] = peer_client
        self.wrap: Callable[[Callable[[], Any]], Callable[[], Any]] | None = None
        self.loop = asyncio.get_running_loop()
        self.budget = SendBudget(options.max_total_send_buffer_bytes)
        self._server: Listener | None = None
        self._sweeper: asyncio.Task[None] | None = None

    @property
    def port(self) -> int:
        """The port listened on (useful when started on port 0)."""
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        """Listen on ``options.host:options.port`` (TLS when ``options.ssl`` is set)."""
        o = self.options
        factory = self._make_protocol if self.wrap is None else self.wrap(self._make_protocol)
        # Our own accept loop: at the fd limit a handshake is still answered 503.
        self._server = await listen(
            self.loop, factory, o.host, o.port, backlog=4096, ssl_context=o.ssl, sock=o.sock
        )
        self._sweeper = asyncio.create_task(self._sweep_forever(), name="tickerd-ws-sweeper")

    async def stop(self, code: int = 1001) -> None:
        """Stop listening, close every connection with ``code``, drop those that linger."""
        if self._server is not None:
            self._server.close()
        for conn in list(self.connections):
            conn.close(code)
        deadline = self.loop.time() + min(self.options.close_timeout, 2.0)
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
        if conn.ws is not None:
            self.budget.forget(conn.ws.underlying_transport)
        if self.faults is not None:
            self.faults.detach(conn)

    # -- handshake ------------------------------------------------------------------------

    def _make_protocol(self) -> Any:
        proto: Any = None

        def route(request: WSUpgradeRequest) -> Any:
            return self.route(request, self.client_of(peer_of(proto), request.headers))

        proto = server_protocol(
            route,
            handshake_timeout=self.options.handshake_timeout,
            max_frame_size=self.options.max_message_bytes,
            read_buffer_bytes=_READ_BUFFER_BYTES,
        )
        return proto

    def route(self, request: WSUpgradeRequest, ip: str) -> Any:
        """Answer an upgrade request from ``ip``: a :class:`Connection` or a refusal.

        Checked in order: ``Host`` (exactly one, RFC 7230 §5.4: else 400), the path
        (``/healthz``, the WS API's unless ``options.api`` is off, a market-stream path when
        :attr:`streams` is set — 400 for too many names —, else 404), ``Sec-WebSocket-Version`` (13, else 426 naming it, RFC
        6455 §4.4), then the limits (503 open connections, 429 attempts, 429/418 weight).
        """
        hosts = request.headers.getall("Host", [])
        if len(hosts) != 1 or not hosts[0].strip():
            return refusal(400, b"exactly one Host header is required", None, "text/plain")
        path, _, query = request.path.decode("latin-1").partition("?")
        if path == "/healthz":
            status, doc = self.health()
            body = orjson.dumps(doc)
            return response(body) if status == 200 else refusal(status, body)
        stream = None
        if path != self.options.path or not self.options.api:
            stream = None if self.streams is None else self.streams.match(path, query)
            if stream is None:
                return None  # 404
            assert self.streams is not None
            problem = self.streams.problem(stream)
            if problem is not None:
                return refusal(400, problem.encode(), None, "text/plain")
        if request.headers.getall("Sec-WebSocket-Version", []) != [WS_VERSION]:
            return refusal(
                426,
                b"Sec-WebSocket-Version must be 13",
                {"Sec-WebSocket-Version": WS_VERSION, "Upgrade": "websocket"},
                "text/plain",
            )
        accept_connection_token_list(request)
        now = self.clock.now_ms()
        if len(self.connections) >= self.options.max_connections:
            self.counters.refused["max_connections"] += 1  # ops
            return _refuse(BinanceError.of(ErrorCode.SERVER_BUSY, status=503), now)
        if not self.attempts.allow(ip, now):
            self.counters.refused["connect_limit"] += 1  # ops
            limit = self.options.connect_limit
            return _refuse(connect_limited(ip, limit, self.attempts.retry_after_ms(now), now), now)
        if stream is not None:  # stream sockets spend no request weight
            assert self.streams is not None
            return self.streams.connection(self, ip, stream)
        try:
            self.protocol.limiter.charge(ip, weights.WS_HANDSHAKE_WEIGHT, now)
        except BinanceError as err:
            self.counters.refused["banned" if err.status == 418 else "rate_limited"] += 1  # ops
            return _refuse(err, now)
        return Connection(self, Session.from_query(ip, dict(parse_qsl(query))))

    # -- lifecycle ------------------------------------------------------------------------

    async def _sweep_forever(self) -> None:
        o = self.options
        shortest = min(o.ping_interval, o.pong_timeout, o.max_lifetime, o.close_timeout)
        period = min(1.0, max(0.01, shortest / 4))
        while True:
            await asyncio.sleep(period)
            now = self.loop.time()
            now_ms = self.clock.now_ms()
            for conn in list(self.connections):
                conn.sweep(now, now_ms)


def _refuse(err: BinanceError, now_ms: int) -> Any:
    """A handshake refused with ``err``: its status, ``{code, msg}`` and, for 429/418,
    ``Retry-After`` in whole seconds."""
    body = orjson.dumps({"code": err.code, "msg": err.msg})
    headers = None
    if err.retry_after_ms is not None:
        headers = {"Retry-After": str(err.retry_after_s(now_ms))}
    return refusal(err.status, body, headers)

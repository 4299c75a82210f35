"""Faults: the pure model (``tickerd.faults``) and the injector's one slot per connection
(``transport/faults.py``), driven in process through a real picows protocol fed from memory.
The control plane's end-to-end tests are in ``tests/test_control.py``.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from helpers_core import BANNED, BTC, IP, NEXT_MINUTE, NOW, RATE_LIMITED, ok, request
from tickerd import PriceBook, Protocol, RateLimiter, SymbolUniverse
from tickerd.clock import ManualClock
from tickerd.errors import IPBannedError, RateLimitError
from tickerd.faults import MAX_FAULTS, LatencyFault, PingFault, RequestFault, Target
from tickerd.rest import RestApi
from tickerd.transport.faults import FaultInjector
from tickerd.transport.ws import Connection, WSOptions, WSServer

# -- the model ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("target", "ip", "conn_id", "covered"),
    [
        (Target(), "1.1.1.1", 7, True),
        (Target(ip="1.1.1.1"), "1.1.1.1", 7, True),
        (Target(ip="1.1.1.1"), "2.2.2.2", 7, False),
        (Target(conn=7), "2.2.2.2", 7, True),
        (Target(conn=7), "2.2.2.2", 8, False),
        (Target("1.1.1.1", 7), "1.1.1.1", 8, False),
    ],
)
def test_target_covers(target: Target, ip: str, conn_id: int, covered: bool) -> None:
    assert target.covers(ip, conn_id) is covered
    assert target.covers_ip(ip) is (covered and target.conn is None)


@pytest.mark.parametrize("status", [429, 418])
def test_request_fault_errors_are_the_limiters(status: int) -> None:
    limiter = RateLimiter(2400)
    limiter.charge(IP, 7, NOW)
    error = RequestFault(status, 1, Target()).error(IP, NOW, limiter)
    assert (error.status, error.code, error.server_time_ms, error.used_weight) == (
        status,
        -1003,
        NOW,
        7,
    )
    if status == 429:
        assert type(error) is RateLimitError
        assert error.msg == RATE_LIMITED.format(ip=IP, limit=2400)
        assert error.retry_after_ms == NEXT_MINUTE  # a real 429's: the next window
    else:
        assert type(error) is IPBannedError
        until = NOW + 120_000  # the first ban step
        assert error.msg == BANNED.format(ip=IP, until=until)
        assert error.retry_after_ms == until
    assert limiter.used(IP, NOW) == 7  # fiction: the budget is untouched


@pytest.mark.parametrize(
    ("fault", "retry"),
    [
        (RequestFault(429, 1, Target(), retry_after_ms=1500), NOW + 1500),
        (RequestFault(418, 1, Target(), ban_ms=5000), NOW + 5000),
    ],
    ids=["429", "418"],
)
def test_request_fault_times(fault: RequestFault, retry: int) -> None:
    assert fault.error(IP, NOW, RateLimiter()).retry_after_ms == retry
    reply = RestApi.limited_reply(fault.error(IP, NOW, RateLimiter()), NOW)
    assert reply.status == fault.status
    assert dict(reply.headers)["Retry-After"] == str(-(-(retry - NOW) // 1000))
    body = json.loads(reply.body)
    assert body["code"] == -1003 and "data" not in body


@pytest.mark.parametrize(
    ("args", "kw"),
    [((500, 1), {}), ((429, 0), {}), ((418, -1), {})],
)
def test_request_fault_refuses_nonsense(args: tuple[int, int], kw: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        RequestFault(*args, Target(), **kw)


@pytest.mark.parametrize(
    "kw", [{}, {"min_ms": 5}, {"max_ms": 5}, {"min_ms": 6, "max_ms": 5}, {"ms": -1}]
)
def test_latency_fault_refuses_nonsense(kw: dict[str, int]) -> None:
    with pytest.raises(ValueError):
        LatencyFault(Target(), **kw)


def test_latency_fault_is_seeded() -> None:
    def draws(seed: int) -> list[float]:
        fault = LatencyFault(Target(), min_ms=10, max_ms=500, seed=seed)
        return [fault.next_delay_s() for _ in range(20)]

    assert draws(1) == draws(1) != draws(2)
    assert all(0.01 <= d <= 0.5 and round(d * 1000) == d * 1000 for d in draws(3))
    assert LatencyFault(Target(), ms=250).next_delay_s() == 0.25


def test_fault_states() -> None:
    fault = RequestFault(429, 3, Target(ip=IP))
    assert fault.to_state() == {
        "id": 0,
        "kind": "http429",
        "target": {"ip": IP, "conn": None},
        "remaining": 3,
        "retry_after_ms": None,
    }
    assert PingFault(Target(conn=2)).to_state()["kind"] == "no_pong"
    assert LatencyFault(Target(), ms=5, seed=9).to_state()["min_ms"] == 5


# -- the injector, in process -------------------------------------------------------------


class _Transport(asyncio.Transport):
    """Stands in for the socket's transport: collects what is written."""

    def __init__(self, sock: socket.socket) -> None:
        super().__init__()
        self.sock = sock
        self.data = bytearray()
        self.closed = False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        extra = {"socket": self.sock, "peername": (IP, 50000), "sockname": None}
        return extra.get(name, default)

    def write(self, data: Any) -> None:
        self.data += data

    def writelines(self, parts: Any) -> None:
        for p in parts:
            self.data += p

    def get_write_buffer_size(self) -> int:
        return 0

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = True


def _masked(opcode: int, payload: bytes) -> bytes:
    key = os.urandom(4)
    return (
        bytes((0x80 | opcode, 0x80 | len(payload)))
        + key
        + bytes(b ^ key[i % 4] for i, b in enumerate(payload))
    )


class Client:
    """One in-memory WebSocket client of ``server``."""

    def __init__(self, server: WSServer, sock: socket.socket) -> None:
        self.proto = server._make_protocol()
        self.transport = _Transport(sock)
        self.proto.connection_made(self.transport)
        key = base64.b64encode(os.urandom(16)).decode()
        self.feed(
            (
                f"GET /ws-fapi/v1 HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                "Sec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
        assert self.transport.data.startswith(b"HTTP/1.1 101"), self.transport.data
        self.transport.data.clear()
        self.conn: Connection = self.proto.listener

    def feed(self, data: bytes) -> None:
        view = self.proto.get_buffer(-1)
        view[: len(data)] = data
        self.proto.buffer_updated(len(data))

    def send(self, opcode: int, payload: bytes) -> None:
        self.feed(_masked(opcode, payload))

    def take(self) -> list[tuple[int, bytes]]:
        """The frames written so far (opcode, payload); unmasked, under 64 KiB each."""
        data, frames = bytes(self.transport.data), []
        self.transport.data.clear()
        pos = 0
        while pos < len(data):
            n, head = data[pos + 1], 2
            assert n < 127
            if n == 126:
                n, head = int.from_bytes(data[pos + 2 : pos + 4], "big"), 4
            frames.append((data[pos] & 0xF, data[pos + head : pos + head + n]))
            pos += head + n
        return frames


def run(test: Callable[[WSServer, FaultInjector, Client], Awaitable[None]]) -> None:
    async def main() -> None:
        book = PriceBook(SymbolUniverse.default())
        book.apply([book.make_tick("BTCUSDT", "97000.1", 1_589_437_530_011)])
        clock = ManualClock(NOW)
        protocol = Protocol(book, RateLimiter(2400))
        server = WSServer(protocol, clock, WSOptions())
        injector = FaultInjector(clock, protocol.limiter)
        injector.bind(server, None)
        listener = socket.create_server(("127.0.0.1", 0))
        peer = socket.create_connection(listener.getsockname())
        sock, _ = listener.accept()
        listener.close()
        try:
            await test(server, injector, Client(server, sock))
        finally:
            sock.close()
            peer.close()

    asyncio.run(main())


def at_rest(client: Client) -> bool:
    """The connection runs as if no fault had ever been armed: its own stage, bound."""
    c = client.conn.conn
    return c.stage is c and c.respond == c.text


def test_unarmed_connection_runs_alone() -> None:
    async def test(server: WSServer, injector: FaultInjector, client: Client) -> None:
        assert at_rest(client) and not injector.stages
        client.send(0x1, request(b"1"))
        assert client.take() == [(0x1, ok(b"1", BTC, 6))]

    run(test)


@pytest.mark.parametrize("status", [429, 418])
def test_request_fault_answers_then_puts_the_connection_back(status: int) -> None:
    async def test(server: WSServer, injector: FaultInjector, client: Client) -> None:
        injector.arm(RequestFault(status, 2, Target(ip=IP)))
        assert not at_rest(client)
        for rid in (b"1", b"2"):
            client.send(0x1, request(rid))
            [(_, payload)] = client.take()
            answer = json.loads(payload)
            assert (answer["status"], answer["error"]["code"]) == (status, -1003)
        assert at_rest(client) and not injector.faults  # used up: disarmed
        client.send(0x1, request(b"3"))
        assert client.take() == [(0x1, ok(b"3", BTC, 6))]  # the fiction cost nothing

    run(test)


def test_ping_fault_drops_pings_until_cleared() -> None:
    async def test(server: WSServer, injector: FaultInjector, client: Client) -> None:
        fault = injector.arm(PingFault(Target(conn=client.conn.conn_id)))
        client.send(0x9, b"a")
        client.send(0x1, request(b"1"))
        assert client.take() == [(0x1, ok(b"1", BTC, 6))]  # no pong
        injector.clear(fault.id)
        assert at_rest(client)
        client.send(0x9, b"b")
        assert client.take() == [(0xA, b"b")]

    run(test)


def test_latency_fault_delays_in_order_then_releases() -> None:
    async def test(server: WSServer, injector: FaultInjector, client: Client) -> None:
        fault = injector.arm(LatencyFault(Target(), ms=30))
        client.send(0x1, request(b"1"))
        client.send(0x1, request(b"2"))
        assert client.take() == []
        injector.clear(fault.id)  # waiting replies still go out, first
        assert not at_rest(client)
        await asyncio.sleep(0.5)
        assert client.take() == [(0x1, ok(b"1", BTC, 6)), (0x1, ok(b"2", BTC, 7))]
        assert at_rest(client) and not injector.stages

    run(test)


def test_fault_aimed_elsewhere_leaves_the_connection_alone() -> None:
    async def test(server: WSServer, injector: FaultInjector, client: Client) -> None:
        injector.arm(RequestFault(429, 5, Target(ip="9.9.9.9")))
        injector.arm(LatencyFault(Target(conn=client.conn.conn_id + 1), ms=10))
        assert at_rest(client) and not injector.stages

    run(test)


def test_at_most_max_faults() -> None:
    async def test(server: WSServer, injector: FaultInjector, client: Client) -> None:
        for _ in range(MAX_FAULTS):
            injector.arm(PingFault(Target()))
        with pytest.raises(ValueError, match="armed already"):
            injector.arm(PingFault(Target()))
        assert injector.clear() == MAX_FAULTS
        assert at_rest(client)

    run(test)


def test_disconnect_forgets_the_stage() -> None:
    async def test(server: WSServer, injector: FaultInjector, client: Client) -> None:
        injector.arm(LatencyFault(Target(), ms=1000))
        client.send(0x1, request(b"1"))
        client.proto.connection_lost(None)
        assert not server.connections and not injector.stages
        assert at_rest(client)

    run(test)

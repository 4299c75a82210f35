"""In-process cost of the WebSocket frame path: bytes into picows, reply bytes out.

A real picows server protocol is fed a handshake and then client frames from memory; its
writes go to a counting stand-in transport. No socket I/O, no event-loop turns per frame:
what is timed is picows' parser, the listener's frame path, the protocol and the coalesced
write. Run: ``python benchmarks/frame_path.py [--faults] [ROUNDS BATCH]`` (``--faults`` arms and clears a
fault first, the "armed-never / armed-then-cleared" comparison).
"""

from __future__ import annotations

import asyncio
import base64
import os
import socket
import sys
import time
from typing import Any

from tickerd import PriceBook, Protocol, RateLimiter, SymbolUniverse
from tickerd.clock import SystemClock
from tickerd.faults import LatencyFault, Target
from tickerd.transport import ws as wsmod
from tickerd.transport.faults import FaultInjector


class _Transport(asyncio.Transport):
    def __init__(self, sock: socket.socket) -> None:
        super().__init__()
        self.sock = sock
        self.written = 0
        self.writes = 0

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"socket": self.sock, "peername": ("127.0.0.1", 50000), "sockname": None}.get(
            name, default
        )

    def write(self, data: Any) -> None:
        self.written += len(data)
        self.writes += 1

    def writelines(self, parts: Any) -> None:
        for p in parts:
            self.written += len(p)
        self.writes += 1

    def get_write_buffer_size(self) -> int:
        return 0

    def is_closing(self) -> bool:
        return False

    def close(self) -> None:
        pass

    def abort(self) -> None:
        pass


def _frame(payload: bytes) -> bytes:
    key = b"\x01\x02\x03\x04"
    masked = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
    return bytes((0x81, 0x80 | len(payload))) + key + masked


def _feed(proto: Any, data: bytes) -> None:
    view = proto.get_buffer(-1)
    view[: len(data)] = data
    proto.buffer_updated(len(data))


async def main(faults: bool, rounds_arg: int = 0, batch_arg: int = 1) -> None:
    book = PriceBook(SymbolUniverse.default())
    book.apply([book.make_tick("BTCUSDT", "97000.1", 1_700_000_000_000)])
    protocol = Protocol(book, RateLimiter(10**15))
    server = wsmod.WSServer(protocol, SystemClock(), wsmod.WSOptions())
    if faults:
        injector = FaultInjector(SystemClock(), protocol.limiter)
        injector.bind(server, None)
    listener = socket.create_server(("127.0.0.1", 0))
    b = socket.create_connection(listener.getsockname())
    a, _ = listener.accept()
    listener.close()
    proto = server._make_protocol()
    transport = _Transport(a)
    proto.connection_made(transport)
    key = base64.b64encode(os.urandom(16)).decode()
    _feed(
        proto,
        (
            "GET /ws-fapi/v1 HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n"
        ).encode(),
    )
    assert server.connections, "handshake failed"
    if faults:
        fault = injector.arm(LatencyFault(Target(ip="127.0.0.1"), ms=0))
        injector.clear(fault.id)
    one = _frame(b'{"id":1,"method":"ticker.price","params":{"symbol":"BTCUSDT"}}')
    cases = [("1 frame per read", 1, 200_000), ("40 per read", 40, 5_000)]
    if rounds_arg:
        cases = [(f"{batch_arg} per read", batch_arg, rounds_arg)]
    for label, batch, rounds in cases:
        data = one * batch
        for _ in range(min(rounds // 10, 1000)):  # warm up
            _feed(proto, data)
        writes = transport.writes
        t0 = time.perf_counter()
        for _ in range(rounds):
            _feed(proto, data)
        dt = time.perf_counter() - t0
        assert transport.writes - writes == rounds  # one write per read
        print(f"{label:>18}: {dt / (rounds * batch) * 1e9:7.0f} ns per request")
    a.close()
    b.close()


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    rounds, batch = (int(args[0]), int(args[1])) if len(args) == 2 else (0, 1)
    asyncio.run(main("--faults" in sys.argv, rounds, batch))

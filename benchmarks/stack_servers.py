"""Reference servers on tickerd's own transport, for the benchmark's ceilings.

``echo``: every request frame comes back as it is — the transport's cost with no protocol.
``constant``: every request gets an all-symbols-sized reply spliced around its id, as
tickerd does, but without the protocol's validation, limiter or book — the cost of moving
an equally large frame on the same stack.

Usage: python stack_servers.py {echo|constant} --port N [--body-bytes N]
Prints ``READY <port>`` when listening; stops on SIGINT/SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys

import orjson
import uvloop

from tickerd.book import PriceBook
from tickerd.clock import SystemClock
from tickerd.protocol import Protocol, Reply, Session, id_json
from tickerd.ratelimit import RateLimiter
from tickerd.symbols import SymbolUniverse


class EchoProtocol(Protocol):
    """Answers each frame with itself."""

    def handle(self, payload: bytes, session: Session, now_ms: int) -> Reply:
        return (payload,)


class ConstantProtocol(Protocol):
    """Answers each frame with a fixed body spliced after its id."""

    body = b"[]"

    def handle(self, payload: bytes, session: Session, now_ms: int) -> Reply:
        rid = id_json(orjson.loads(payload).get("id")) or b"null"
        return (b'{"id":%s,"status":200,"result":' % rid, self.body, b"}")


def constant_body(size: int) -> bytes:
    """A JSON array of ticker entries about ``size`` bytes long."""
    entry = b'{"symbol":"SYM%04dUSDT","price":"12345.67","time":1700000000000}'
    count = max(1, size // (len(entry % 0) + 1))
    return b"[" + b",".join(entry % i for i in range(count)) + b"]"


async def main(kind: str, port: int, body_bytes: int) -> None:
    universe = SymbolUniverse.default()
    cls = EchoProtocol if kind == "echo" else ConstantProtocol
    protocol = cls(PriceBook(universe), RateLimiter(10**12))
    if isinstance(protocol, ConstantProtocol):
        protocol.body = constant_body(body_bytes)
    from tickerd.transport.ws import WSOptions, WSServer

    options = WSOptions(port=port, connect_limit=0, max_connections=50_000)
    server = WSServer(protocol, SystemClock(), options)
    await server.start()
    print(f"READY {server.port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("kind", choices=("echo", "constant"))
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--body-bytes", type=int, default=40_000)
    args = parser.parse_args()
    uvloop.run(main(args.kind, args.port, args.body_bytes))
    sys.exit(0)

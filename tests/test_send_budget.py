"""The bound on unsent reply bytes across connections, end to end: real sockets that stop
reading, a real server process, its log and its resident memory."""

from __future__ import annotations

import contextlib
import copy
import json
import re
import socket
import time
from importlib import resources
from pathlib import Path

import pytest

from conftest import OP_TEXT, Closed, RawClient, Server, frame_bytes

pytestmark = pytest.mark.timeout(90)

MIB = 1024 * 1024
ALL = b'{"id":%d,"method":"ticker.price"}'
CUT_RE = re.compile(r"cutting off (\S+): (\d+) unsent reply bytes, the largest")


def big_universe(path: Path, count: int = 1200) -> Path:
    """An exchangeInfo file of ``count`` TRADING symbols cloned from the bundled ones
    (their tick sizes and precisions vary), so one all-symbols reply is ~80 KB."""
    info = json.loads(resources.files("tickerd.data").joinpath("exchange_info.json").read_text())
    base = [s for s in info["symbols"] if s["status"] == "TRADING"]
    symbols = []
    for i in range(count):
        s = copy.deepcopy(base[i % len(base)])
        s["symbol"] = s["pair"] = f"C{i:04d}{s['symbol']}"
        symbols.append(s)
    info["symbols"] = symbols
    path.write_text(json.dumps(info))
    return path


def pipeline(client: RawClient, first_id: int, count: int) -> None:
    """Send ``count`` all-symbols requests in one write, reading nothing."""
    client.send(b"".join(frame_bytes(OP_TEXT, ALL % (first_id + i)) for i in range(count)))


def stalled(srv: Server, source: str) -> RawClient:
    """A WebSocket client from ``source`` whose receive window stays small."""
    client = RawClient(srv.port, rcvbuf=4096, source=source, timeout=20)
    assert client.handshake().status == 101
    return client


def cuts(srv: Server) -> list[tuple[str, int]]:
    return [(m.group(1), int(m.group(2))) for m in map(CUT_RE.search, srv.log().splitlines()) if m]


def serve_well(client: RawClient, rid: int, symbols: int = 1200) -> None:
    """One request answered in full: a well-behaved client keeps being served."""
    client.send_text(ALL % rid)
    reply = json.loads(client.recv_text(timeout=20))
    assert reply["id"] == rid and reply["status"] == 200
    assert len(reply["result"]) == symbols


def test_largest_backlog_is_cut_first_and_the_rest_are_served(server, tmp_path) -> None:
    """Two clients stop reading with moderate backlogs, then a third piles up a large
    one: the total passes the bound and only the largest is cut; the two others then
    read every reply they asked for, and a client that reads is served throughout."""
    srv = server(
        "--symbols-file", str(big_universe(tmp_path / "big.json")),
        "--weight-limit", "100000000", "--connect-limit", "0",
        "--max-send-buffer-bytes", str(256 * MIB),
        "--max-total-send-buffer-bytes", str(24 * MIB),
    )  # fmt: skip
    good = RawClient(srv.port, source="127.0.0.5", timeout=20)
    assert good.handshake().status == 101
    small = [stalled(srv, "127.0.0.3"), stalled(srv, "127.0.0.4")]
    for client in small:
        pipeline(client, 0, 100)  # ~8 MB each, some of it in kernel buffers
    serve_well(good, 1)
    time.sleep(0.5)
    assert cuts(srv) == []
    big = stalled(srv, "127.0.0.2")
    for i in range(6):
        try:
            pipeline(big, i * 100, 100)
        except OSError:  # cut off: a reset
            break
        serve_well(good, 2 + i)
    line = srv.wait_log("cutting off", timeout=20)
    assert "127.0.0.2" in line, line
    assert [ip for ip, _size in cuts(srv)] == ["127.0.0.2"]
    with pytest.raises(Closed):
        big.wait_closed(timeout=20)
        big.recv_frame(timeout=1)
    for client in small:  # every reply arrives, in order
        for rid in range(100):
            reply = json.loads(client.recv_text(timeout=20))
            assert reply["id"] == rid and len(reply["result"]) == 1200
    serve_well(good, 100)


def test_many_stalled_clients_stay_under_the_bound_and_memory_is_given_back(server) -> None:
    """100 clients pipeline all-symbols requests and never read (the bundled universe: each
    reply is copied into its connection's buffer). Each stays under its own 4 MiB bound, so
    without a total bound the server grew by 170 to 250 MiB (measured); with a 32 MiB total
    the largest are cut, the peak stays within three times the bound (measured: ~55 MiB
    over the start), and once the clients are gone the resident memory returns near where
    it started (measured: within 1 MiB)."""
    srv = server(
        "--weight-limit", "100000000", "--connect-limit", "0",
        "--max-total-send-buffer-bytes", str(32 * MIB),
    )  # fmt: skip
    good = RawClient(srv.port, source="127.0.0.5", timeout=20)
    assert good.handshake().status == 101
    serve_well(good, 0, symbols=srv.symbols)
    start_kb = srv.rss_kb()
    clients = [stalled(srv, f"127.0.1.{i}") for i in range(100)]
    for round_ in range(12):
        for client in clients:
            with contextlib.suppress(OSError):  # already cut off
                pipeline(client, round_ * 100, 100)  # ~550 KB of replies a round
    serve_well(good, 1, symbols=srv.symbols)
    srv.wait_log("cutting off", timeout=20)
    time.sleep(1)
    peak_kb = srv.rss_kb("VmHWM")
    for client in clients:
        client.sock.close()
    deadline = time.monotonic() + 20
    while True:  # connections closing, buffers freed, the heap trimmed
        end_kb = srv.rss_kb()
        if end_kb - start_kb < 24 * 1024 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    print(f"RSS start {start_kb // 1024} MiB, peak {peak_kb // 1024} MiB, end {end_kb // 1024} MiB")
    assert len(cuts(srv)) >= 50
    # The 32 MiB bound, and twice that again for allocator overhead and everything else.
    assert peak_kb - start_kb < 3 * 32 * 1024, (start_kb, peak_kb)
    assert end_kb - start_kb < 24 * 1024, (start_kb, peak_kb, end_kb)
    serve_well(good, 10, symbols=srv.symbols)


def test_the_sum_of_unsent_bytes_never_passes_the_bound() -> None:
    """In process, so every transport's write buffer can be read: stalled clients pile up
    replies, and at every check the sum over all connections is within the bound."""
    import asyncio
    import base64
    import os

    import uvloop

    from tickerd.app import Service
    from tickerd.config import Settings

    limit = 8 * MIB

    async def main() -> tuple[int, int]:
        settings = Settings(
            port=0, rest_port=-1, weight_limit=10**9, connect_limit=0,
            max_total_send_buffer_bytes=limit,
        )  # fmt: skip
        service = Service(settings)
        await service.start()
        loop = asyncio.get_running_loop()
        assert service.ws is not None
        socks = []
        try:
            for _ in range(40):
                sock = socket.socket()
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
                sock.setblocking(False)
                await loop.sock_connect(sock, ("127.0.0.1", service.ws.port))
                key = base64.b64encode(os.urandom(16)).decode()
                await loop.sock_sendall(sock, (
                    f"GET /ws-fapi/v1 HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                    f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                    f"Sec-WebSocket-Version: 13\r\n\r\n"
                ).encode())  # fmt: skip
                socks.append(sock)
            await asyncio.sleep(0.3)
            burst = b"".join(frame_bytes(OP_TEXT, ALL % i) for i in range(100))
            most = 0
            for _ in range(12):
                for sock in socks:
                    with contextlib.suppress(OSError):
                        sock.send(burst)
                for _ in range(5):
                    await asyncio.sleep(0.01)
                    unsent = sum(
                        c.ws.underlying_transport.get_write_buffer_size()
                        for c in service.ws.connections
                        if c.ws is not None
                    )
                    most = max(most, unsent)
                    assert unsent <= limit, unsent
            return most, service.ws.budget.cut
        finally:
            for sock in socks:
                sock.close()
            await service.stop()

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        most, cut = runner.run(main())
    assert cut > 0
    assert most > limit // 2  # the bound was really pressed

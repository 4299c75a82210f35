"""Descriptor bounds, end to end: a real ``tickerd serve`` process under a low open-file
limit, raw sockets from several loopback addresses (each one a client IP)."""

from __future__ import annotations

import asyncio
import json
import logging
import resource
import time

import pytest

from conftest import Closed, RawClient, Server
from tickerd.config import Settings
from tickerd.transport.aio import HttpLimits
from tickerd.transport.resources import RESERVED_FDS, fd_warning, raise_fd_limit

pytestmark = pytest.mark.timeout(60)

BUSY = {"code": -1008, "msg": "Server is currently overloaded with other requests. "
        "Please try again in a few minutes."}  # fmt: skip
PING = b"GET /fapi/v1/ping HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"


def rest_port(srv: Server) -> int:
    assert srv.rest_url is not None
    return int(srv.rest_url.rsplit(":", 1)[1])


def open_fds(pid: int) -> int:
    import os

    return len(os.listdir(f"/proc/{pid}/fd"))


def ping(client: RawClient) -> int:
    """One keep-alive ``GET /fapi/v1/ping``; the status (the connection stays open on 200)."""
    client.send(PING)
    return client.read_http().status


def refused(client: RawClient) -> None:
    """The next request on ``client`` is answered 503 / -1008, then the server closes."""
    client.send(PING)
    response = client.read_http()
    assert response.status == 503, response.raw
    assert json.loads(response.body) == BUSY
    assert response.headers["connection"] == "close"
    assert response.headers["retry-after"] == "1"
    client.wait_closed()


def test_settings_and_http_limits_share_defaults() -> None:
    """The push ingest uses ``HttpLimits()``: the same values the REST flags default to."""
    s = Settings()
    assert HttpLimits() == HttpLimits(
        s.http_idle_timeout, s.http_max_connections, s.http_max_connections_per_ip
    )


def test_raise_fd_limit_takes_the_hard_limit(server) -> None:
    """``serve`` starts with its soft limit raised to the hard one."""
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    assert raise_fd_limit()[0] == hard  # in this process too (harmless for the tests)
    srv = server(nofile=(256, hard))
    with open(f"/proc/{srv.pid}/limits", encoding="ascii") as f:
        line = next(line for line in f if line.startswith("Max open files"))
    assert line.split()[3:5] == [str(hard), str(hard)], line


def test_fd_warning_names_the_numbers() -> None:
    assert fd_warning(100, 200, 1024) is None
    assert fd_warning(1024 - RESERVED_FDS - 200, 200, 1024) is None
    line = fd_warning(20000, 4096, 1024)
    assert line is not None and "\n" not in line
    assert "--max-connections 20000" in line and "RLIMIT_NOFILE is 1024" in line
    assert "about 0 WebSocket connections" in line


def test_one_ip_holding_rest_sockets_cannot_lock_out_the_websocket_api(server, raw) -> None:
    """Under a 256-descriptor limit one IP opens 10 REST sockets up to its cap and 40 more
    past it, and leaves the first ten idle: the forty are answered 503, the WebSocket API
    still takes handshakes from another IP, and the total cap refuses a fifth IP once
    four have filled it."""
    srv = server(
        "--http-max-connections", "40", "--http-max-connections-per-ip", "10",
        "--http-idle-timeout", "60", "--max-connections", "150",
        nofile=(256, 256),
    )  # fmt: skip
    port = rest_port(srv)
    hog = [RawClient(port, source="127.0.0.2") for _ in range(50)]
    try:
        for client in hog[:10]:
            assert ping(client) == 200
        for client in hog[10:]:
            refused(client)
        # The admitted ten are still served, and the WebSocket API takes new clients.
        assert ping(hog[0]) == 200
        for _ in range(5):
            with srv.connect() as ws:
                ws.send('{"id":1,"method":"ticker.price","params":{"symbol":"BTCUSDT"}}')
                assert json.loads(ws.recv(timeout=5))["status"] == 200
        others = [RawClient(port, source=f"127.0.0.{3 + i // 10}") for i in range(30)]
        try:
            for client in others:  # 10 + 30 = the total cap of 40
                assert ping(client) == 200
            refused(RawClient(port, source="127.0.0.9"))
        finally:
            for client in others:
                client.sock.close()
        assert "answered 503" in srv.wait_log("from 127.0.0.2 answered 503")
        # 41 refusals, logged at most once per 10 s (with a count): a line or two, not 41.
        assert 1 <= srv.log().count("answered 503") <= 2
    finally:
        for client in hog:
            client.sock.close()
    # The startup line: 150 WebSocket connections do not fit beside 2 × 40 HTTP and 64.
    assert "--max-connections 150 exceeds" in srv.wait_log("exceeds what the open-file limit")


def test_a_flood_past_the_caps_is_closed_and_descriptors_stay_bounded(server) -> None:
    """300 sockets from one IP that send nothing, against caps of 10 per IP and 40 refused
    waiting: the server closes every one past those (each sent a 503 first, as a best
    effort), keeps its descriptors bounded, and the WebSocket API stays reachable."""
    srv = server(
        "--http-max-connections", "40", "--http-max-connections-per-ip", "10",
        "--http-idle-timeout", "60", nofile=(256, 256),
    )  # fmt: skip
    port = rest_port(srv)
    baseline = open_fds(srv.pid)
    flood: list[RawClient] = []
    try:
        flood.extend(RawClient(port, source="127.0.0.2", timeout=10) for _ in range(300))
        closed = 0
        for client in flood[50:]:  # past the 10 admitted and the 40 refused waiting
            seen = client.wait_closed(timeout=10)
            assert seen == b"" or seen.startswith(b"HTTP/1.1 503 "), seen
            closed += 1
            client.sock.close()
        assert closed == 250
        assert open_fds(srv.pid) <= baseline + 50 + 5
        with srv.connect() as ws:
            ws.send('{"id":1,"method":"ticker.price","params":{"symbol":"BTCUSDT"}}')
            assert json.loads(ws.recv(timeout=5))["status"] == 200
    finally:
        for client in flood:
            client.sock.close()


def test_idle_and_half_open_http_sockets_are_closed_after_the_idle_timeout(server) -> None:
    """With ``--http-idle-timeout 1`` idle, half-open and refused sockets are all closed
    by the server, which then admits the same IP again."""
    srv = server("--http-max-connections-per-ip", "3", "--http-idle-timeout", "1")
    port = rest_port(srv)
    idle = RawClient(port, timeout=15)  # never sends anything
    served = RawClient(port, timeout=15)  # one request, then idle
    assert ping(served) == 200
    half = RawClient(port, timeout=15)  # a request cut off halfway through its headers
    half.send(b"GET /fapi/v1/ping HTTP/1.1\r\nHost: 127.0.0.1\r\n")
    extra = RawClient(port, timeout=15)  # past the cap, sends nothing: closed too
    started = time.monotonic()
    for client in (idle, served, half, extra):
        assert client.wait_closed(timeout=15) == b""
        client.sock.close()
    assert time.monotonic() - started < 14
    again = RawClient(port)
    assert ping(again) == 200
    again.sock.close()


def test_websocket_handshake_at_the_fd_limit_is_answered_503_and_logged(server, raw) -> None:
    """Under a 128-descriptor limit and a much larger ``--max-connections``, WebSocket
    clients are taken until descriptors run out; the next handshake is answered 503 with
    Binance's -1008 body (not dropped), a log line says why, and once clients leave,
    handshakes succeed again."""
    limit = 128
    srv = server("--max-connections", "1000", "--connect-limit", "0", nofile=(limit, limit))
    held: list[RawClient] = []
    answer = None
    try:
        for _ in range(limit + 10):
            client = RawClient(srv.port)
            try:
                response = client.handshake()
            except (Closed, TimeoutError, ConnectionError):
                pytest.fail(f"handshake {len(held) + 1} got no answer:\n{srv.log()}")
            if response.status != 101:
                answer = response
                client.sock.close()
                break
            held.append(client)
        assert answer is not None, "the descriptor limit was never reached"
        assert answer.status == 503
        assert json.loads(answer.body) == BUSY
        assert limit - RESERVED_FDS < len(held) < limit
        assert "open-file limit reached (RLIMIT_NOFILE 128)" in srv.wait_log(
            "open-file limit reached"
        )
        # Several more at the limit: each one answered, none left waiting.
        for _ in range(5):
            client = RawClient(srv.port)
            assert client.handshake().status == 503
            client.sock.close()
        for client in held[:10]:
            client.sock.close()
        held = held[10:]
        deadline = time.monotonic() + 10
        while True:  # the server notices the ten closed sockets on its next reads
            client = RawClient(srv.port)
            try:
                status = client.handshake().status
            finally:
                client.sock.close()
            if status == 101 or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert status == 101
    finally:
        for client in held:
            client.sock.close()


def test_listener_binds_every_address_of_a_name_on_one_port() -> None:
    """``localhost`` may resolve to 127.0.0.1 and ::1: with port 0 both get the same port."""
    import asyncio

    from tickerd.transport.resources import listen

    async def main() -> list[tuple[int, int]]:
        loop = asyncio.get_running_loop()
        listener = await listen(loop, asyncio.Protocol, "localhost", 0)
        try:
            return [(s.family, s.getsockname()[1]) for s in listener.sockets]
        finally:
            listener.close()
            await listener.wait_closed()

    bound = asyncio.run(main())
    assert bound and len({port for _family, port in bound}) == 1


def test_rest_request_at_the_fd_limit_is_answered_503(server) -> None:
    """The HTTP ports accept through the same spare-descriptor loop: with caps above what
    the descriptors allow, the connection that finds none left is answered 503 too."""
    srv = server(
        "--http-max-connections", "1000", "--http-max-connections-per-ip", "1000",
        nofile=(128, 128),
    )  # fmt: skip
    port = rest_port(srv)
    held: list[RawClient] = []
    try:
        for _ in range(140):
            client = RawClient(port)
            client.send(PING)
            response = client.read_http()
            if response.status != 200:
                break
            held.append(client)
        assert response.status == 503, response.raw
        assert json.loads(response.body) == BUSY
        assert "HTTP requests answered 503" in srv.wait_log("open-file limit reached")
    finally:
        for client in held:
            client.sock.close()


def test_idle_control_plane_sockets_are_closed_after_the_default_idle_timeout(server) -> None:
    """The control plane's idle sockets go after 15 s too (aiohttp's own default is an
    hour); a push or REST socket has the same default."""
    srv = server("--control-port", "0", "--control-token", "T")
    assert srv.control_url is not None
    port = int(srv.control_url.rsplit(":", 1)[1])
    client = RawClient(port, timeout=40)
    started = time.monotonic()
    assert client.wait_closed(timeout=40) == b""
    assert time.monotonic() - started < 35
    client.sock.close()


def test_a_handler_defect_is_answered_500_in_binances_shape_and_logged(caplog) -> None:
    """Every HTTP surface (REST, push, control, ops) sits behind this gate."""
    from aiohttp import web

    from tickerd.transport.aio import Site

    async def broken(request: web.BaseRequest) -> web.StreamResponse:
        if request.path == "/missing":
            raise web.HTTPNotFound()
        raise KeyError("a defect")

    async def main() -> list[tuple[int, str, bytes]]:
        site = Site()
        await site.serve(broken, "127.0.0.1", 0, max_body_bytes=1024)
        answers = []
        try:
            for path in ("/broken", "/missing"):
                reader, writer = await asyncio.open_connection("127.0.0.1", site.port)
                writer.write(
                    f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode()
                )
                raw = await asyncio.wait_for(reader.read(), 10)
                writer.close()
                head, _, body = raw.partition(b"\r\n\r\n")
                status = int(head.split()[1])
                kind = next(
                    (line.split(b":", 1)[1].strip().decode() for line in head.split(b"\r\n")
                     if line.lower().startswith(b"content-type:")), "",
                )  # fmt: skip
                answers.append((status, kind, body))
        finally:
            await site.stop()
        return answers

    with caplog.at_level(logging.ERROR, logger="tickerd.http"):
        (status, kind, body), (missing, _, _) = asyncio.run(main())
    assert status == 500 and kind == "application/json"
    assert json.loads(body) == {
        "code": -1000,
        "msg": "An unknown error occured while processing the request.",
    }
    assert missing == 404  # aiohttp's own answers pass through
    (record,) = [r for r in caplog.records if r.name == "tickerd.http"]
    assert "GET /broken failed" in record.getMessage() and record.exc_info is not None

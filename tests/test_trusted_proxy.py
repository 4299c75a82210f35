"""``--trusted-proxy``: forwarding headers and the PROXY protocol believed from load
balancers only, against a real ``tickerd serve`` process.

The server trusts 127.0.0.2 alone; requests come from 127.0.0.2 (the balancer) or
127.0.0.1 (anyone else). Whose budget a request spends is read off a ban: 203.0.113.5 is
banned, so a request the server attributes to it gets 418.
"""

from __future__ import annotations

import base64
import http.client
import ipaddress
import json
import os
import re
import socket
import struct
import subprocess
import sys
from typing import Any

import pytest

from cluster_procs import Node, node
from tickerd.cluster.proxy import (
    NEED_MORE,
    NOT_PROXY,
    V2_SIGNATURE,
    ProxyError,
    TrustedProxies,
    parse_header,
    parse_networks,
)

pytestmark = pytest.mark.timeout(60)
TOKEN = "proxy-test-token"
LB, OTHER = "127.0.0.2", "127.0.0.1"
BANNED = "203.0.113.5"
PRICE = "/fapi/v1/ticker/price?symbol=BTCUSDT"


def _ban(n: Node, ip: str) -> None:
    m = re.search(r"tickerd control ready: http://127\.0\.0\.1:(\d+)", n.text())
    assert m
    conn = http.client.HTTPConnection("127.0.0.1", int(m.group(1)), timeout=5)
    conn.request(
        "POST", "/control/limit/ban", json.dumps({"ip": ip, "ms": 600_000}),
        {"Authorization": f"Bearer {TOKEN}"},
    )  # fmt: skip
    assert conn.getresponse().status == 200
    conn.close()


@pytest.fixture(scope="module")
def server() -> Any:
    args = ["--trusted-proxy", f"{LB}/32", "--control-port", "0", "--control-token", TOKEN,
            "--tick-rate", "5"]  # fmt: skip
    with node(args, workers=1) as n:
        n.wait_healthy([OTHER])
        _ban(n, BANNED)
        _ban(n, "2001:db8::1")
        yield n


def v1(source: str) -> bytes:
    return f"PROXY TCP4 {source} 127.0.0.1 40000 9001\r\n".encode()


def v2(source: str) -> bytes:
    addrs = ipaddress.IPv4Address(source).packed + bytes(4) + struct.pack("!HH", 40000, 9001)
    return V2_SIGNATURE + bytes([0x21, 0x11]) + struct.pack("!H", len(addrs)) + addrs


def raw(port: int, source: str, data: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), 5, (source, 0)) as s:
        s.sendall(data)
        chunks = []
        while True:
            try:
                chunk = s.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            chunks.append(chunk)
            if b"\r\n\r\n" in b"".join(chunks):
                break
        return b"".join(chunks)


def status_of(reply: bytes) -> int:
    return int(reply.split(b" ", 2)[1]) if reply.startswith(b"HTTP/1.") else 0


GET = b"GET " + PRICE.encode() + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"


def upgrade() -> bytes:
    key = base64.b64encode(os.urandom(16))
    return (
        b"GET /ws-fapi/v1 HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: " + key + b"\r\nSec-WebSocket-Version: 13\r\n"
    )


@pytest.mark.parametrize(
    ("source", "headers", "status"),
    [
        (LB, {"X-Forwarded-For": BANNED}, 418),
        (OTHER, {"X-Forwarded-For": BANNED}, 200),  # anyone else's header: ignored
        (LB, {"X-Forwarded-For": f"{BANNED}, 198.51.100.1"}, 200),  # spoofed leftmost
        (LB, {"X-Forwarded-For": f"198.51.100.1, {BANNED}"}, 418),
        (LB, {"X-Forwarded-For": f"{BANNED}, {LB}"}, 418),  # a trusted hop is skipped
        (LB, {"X-Forwarded-For": "not-an-ip"}, 200),  # junk: the balancer is the client
        (LB, {"Forwarded": f'for="{BANNED}:4711";proto=https'}, 418),
        (LB, {"Forwarded": 'for="[2001:db8::1]:4711"'}, 418),
        (LB, {"Forwarded": "for=198.51.100.3", "X-Forwarded-For": BANNED}, 200),
        (OTHER, {"Forwarded": f"for={BANNED}"}, 200),
    ],
)
def test_rest_believes_forwarding_headers_only_from_trusted_peers(
    server: Node, source: str, headers: dict[str, str], status: int
) -> None:
    assert server.get(PRICE, source, headers)[0] == status


def test_the_websocket_handshake_believes_them_only_from_trusted_peers(server: Node) -> None:
    xff = f"X-Forwarded-For: {BANNED}\r\n\r\n".encode()
    assert status_of(raw(server.ws_port, LB, upgrade() + xff)) == 418
    assert status_of(raw(server.ws_port, OTHER, upgrade() + xff)) == 101


@pytest.mark.parametrize("header", [v1, v2])
def test_proxy_protocol_from_a_trusted_peer(server: Node, header: Any) -> None:
    assert status_of(raw(server.rest_port, LB, header(BANNED) + GET)) == 418
    assert status_of(raw(server.rest_port, LB, header("198.51.100.4") + GET)) == 200
    assert status_of(raw(server.ws_port, LB, header(BANNED) + upgrade() + b"\r\n")) == 418
    assert status_of(raw(server.ws_port, LB, header("198.51.100.4") + upgrade() + b"\r\n")) == 101
    # Split over several writes: the gate waits for the whole header.
    with socket.create_connection(("127.0.0.1", server.rest_port), 5, (LB, 0)) as s:
        data = header(BANNED) + GET
        for i in range(0, len(data), 7):
            s.sendall(data[i : i + 7])
        assert status_of(s.recv(4096)) == 418


def test_proxy_protocol_from_anyone_else_is_not_believed(server: Node) -> None:
    # The PROXY line is taken for the request itself: a bad request, never a new identity.
    assert status_of(raw(server.rest_port, OTHER, v1(BANNED) + GET)) == 400
    assert status_of(raw(server.ws_port, OTHER, v2(BANNED) + upgrade() + b"\r\n")) != 418


def test_a_malformed_proxy_header_from_a_trusted_peer_drops_the_connection(server: Node) -> None:
    assert raw(server.rest_port, LB, b"PROXY TCP4 nonsense\r\n" + GET) == b""
    assert raw(server.rest_port, LB, V2_SIGNATURE + b"\x99\x11\x00\x0c" + bytes(12) + GET) == b""
    # Still serving.
    assert server.get(PRICE, OTHER)[0] == 200


def test_a_bad_trusted_proxy_is_one_line_and_exit_2() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "tickerd", "serve", "--port", "0", "--rest-port", "-1",
         "--trusted-proxy", "10.0.0.0/8,banana"],
        check=False, capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert done.returncode == 2
    assert done.stderr == (
        "tickerd serve: --trusted-proxy '10.0.0.0/8,banana': "
        "'banana' is not an IP address or CIDR\n"
    )


# -- the rules alone -----------------------------------------------------------------------


def test_the_rightmost_untrusted_address_is_the_client() -> None:
    t = TrustedProxies(parse_networks("10.0.0.0/8, 192.168.1.1"))
    assert t.client("10.1.1.1", ["1.1.1.1, 2.2.2.2, 10.3.3.3"], []) == "2.2.2.2"
    assert t.client("10.1.1.1", ["10.2.2.2", "10.3.3.3"], []) == "10.2.2.2"
    assert t.client("8.8.8.8", ["1.1.1.1"], []) == "8.8.8.8"
    assert t.client("10.1.1.1", ["::ffff:1.2.3.4"], []) == "1.2.3.4"
    assert t.client("10.1.1.1", ["1.1.1.1, garbage, 10.3.3.3"], []) == "10.3.3.3"
    assert t.client("10.1.1.1", [], ['for=unknown, for="[::1]:80"']) == "::1"
    assert t.client("10.1.1.1", [], []) == "10.1.1.1"


def test_proxy_header_parsing() -> None:
    assert parse_header(b"PRO") == (NEED_MORE, None, 0)
    assert parse_header(b"GET / HTTP/1.1\r\n") == (NOT_PROXY, None, 0)
    assert parse_header(b"PROXY UNKNOWN\r\nrest") == ("v1", None, 15)
    line = b"PROXY TCP6 2001:db8::5 ::1 1 2\r\n"
    assert parse_header(line + b"x") == ("v1", "2001:db8::5", len(line))
    assert parse_header(V2_SIGNATURE[:5]) == (NEED_MORE, None, 0)
    assert parse_header(v2("1.2.3.4")[:20]) == (NEED_MORE, None, 0)
    assert parse_header(v2("1.2.3.4") + b"GET") == ("v2", "1.2.3.4", 28)
    local = V2_SIGNATURE + b"\x20\x00\x00\x00"
    assert parse_header(local) == ("v2", None, 16)
    for bad in (
        b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n",
        b"PROXY TCP4 ::1 ::1 1 2\r\n",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 1 99999\r\n",
        b"PROXY " + b"x" * 120,
        V2_SIGNATURE + b"\x21\x11\xff\xff",
    ):
        with pytest.raises(ProxyError):
            parse_header(bad)

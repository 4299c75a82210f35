"""A raw WebSocket client: the handshake and frames by hand."""

from __future__ import annotations

import base64
import json
import os
import socket

from .config import HOST, WS_PATH

# -- a raw WebSocket client (handshake and frames by hand) -----------------------------------


def handshake_request(port: int) -> bytes:
    """A WebSocket upgrade request with a fresh key."""
    key = base64.b64encode(os.urandom(16)).decode()
    return (
        f"GET {WS_PATH} HTTP/1.1\r\nHost: {HOST}:{port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    ).encode()


def masked_text(payload: bytes) -> bytes:
    """One masked client text frame."""
    n = len(payload)
    if n < 126:
        head = bytes((0x81, 0x80 | n))
    elif n < 65536:
        head = bytes((0x81, 0x80 | 126)) + n.to_bytes(2, "big")
    else:
        head = bytes((0x81, 0x80 | 127)) + n.to_bytes(8, "big")
    mask = os.urandom(4)
    key = int.from_bytes((mask * (n // 4 + 1))[:n], "big")
    body = (int.from_bytes(payload, "big") ^ key).to_bytes(n, "big")
    return head + mask + body


def recv_exact(sock: socket.socket, n: int) -> bytes:
    """Exactly ``n`` bytes from ``sock``."""
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("server closed the connection")
        buf += chunk
    return bytes(buf)


def open_raw(port: int, timeout: float = 10.0) -> socket.socket:
    """A TCP connection to the server with the WebSocket handshake done."""
    sock = socket.create_connection((HOST, port), timeout=timeout)
    sock.sendall(handshake_request(port))
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionError("closed during the handshake")
        head += chunk
    if b" 101 " not in head.split(b"\r\n", 1)[0]:
        raise ConnectionError(f"handshake refused: {head[:200]!r}")
    return sock


def read_frame(sock: socket.socket) -> bytes:
    """The payload of the next (unfragmented, unmasked) server frame."""
    _, b1 = recv_exact(sock, 2)
    n = b1 & 127
    if n == 126:
        n = int.from_bytes(recv_exact(sock, 2), "big")
    elif n == 127:
        n = int.from_bytes(recv_exact(sock, 8), "big")
    return recv_exact(sock, n)


def all_symbols_reply(port: int) -> tuple[int, int, int]:
    """(symbols, bytes of the result array, bytes of the whole reply) of one all-symbols call."""
    with open_raw(port) as sock:
        sock.sendall(masked_text(b'{"id":"1","method":"ticker.price"}'))
        payload = read_frame(sock)
    start = payload.index(b'"result":') + len(b'"result":')
    end = payload.rindex(b',"rateLimits"')
    return len(json.loads(payload)["result"]), end - start, len(payload)

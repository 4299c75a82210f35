"""Connection lifecycle with shortened timers: server pings, pong timeout, maximum lifetime,
close timeout and handshake timeout, observed from raw sockets.

Binance (websocket-api-general-info): the server pings every 3 minutes, disconnects when
no pong comes back within 10 minutes, allows unsolicited pongs, and ends every connection
after 24 hours. Here the same rules run on a 0.2 s / 0.5 s / 1.5 s scale. The server's
sweeper looks every 0.05 s at these settings, so bounds below allow for it and for a
loaded machine. The same rules at their exact edges, with times as arguments, are in
``tests/test_wsconn.py``.
"""

from __future__ import annotations

import re
import time
from typing import Any

import pytest

from helpers_core import request

pytestmark = pytest.mark.timeout(30)

OP_TEXT, OP_CLOSE, OP_PING, OP_PONG = 0x1, 0x8, 0x9, 0xA
PING_INTERVAL = 0.2
PONG_TIMEOUT = 0.5
MAX_LIFETIME = 1.5
CLOSE_TIMEOUT = 0.5
HANDSHAKE_TIMEOUT = 0.5
SLACK = 0.6  # scheduling slack allowed on top of every deadline


@pytest.fixture(scope="module")
def srv(module_server):
    return module_server(
        "--ping-interval", str(PING_INTERVAL),
        "--pong-timeout", str(PONG_TIMEOUT),
        "--max-lifetime", str(MAX_LIFETIME),
        "--close-timeout", str(CLOSE_TIMEOUT),
        "--handshake-timeout", str(HANDSHAKE_TIMEOUT),
        minute_margin=0,
    )  # fmt: skip


def req(rid: int) -> bytes:
    return request(b"%d" % rid)


def answered(client, rid: int) -> None:
    """Send a request; its reply must come (pings on the way are answered)."""
    client.send_text(req(rid))
    reply = client.recv_data(timeout=2)
    assert reply.opcode == OP_TEXT, reply
    assert reply.payload.startswith(b'{"id":%d,"status":200,"result":' % rid), reply


def finish_close(client, code: int) -> None:
    """Answer the server's close frame; the server then drops TCP, with nothing after."""
    client.send_close(code)
    assert client.wait_closed(3) == b""


def test_server_pings_with_a_timestamp_payload(srv, raw):
    t0 = time.monotonic()
    client = raw(srv)
    ping = client.recv_frame(timeout=PING_INTERVAL + SLACK)
    elapsed = time.monotonic() - t0
    assert ping.opcode == OP_PING and ping.fin and not ping.masked, ping
    assert PING_INTERVAL * 0.8 <= elapsed <= PING_INTERVAL + SLACK, elapsed
    # Binance's pings carry 13 bytes; tickerd sends the epoch milliseconds in ASCII.
    assert re.fullmatch(rb"[0-9]{13}", ping.payload), ping.payload
    assert abs(int(ping.payload) - time.time() * 1000) < 5_000
    client.send_frame(OP_PONG, ping.payload)
    answered(client, 1)


def test_client_answering_pings_stays_connected(srv, raw):
    client = raw(srv)
    t0 = time.monotonic()
    pings: list[bytes] = []
    while time.monotonic() - t0 < MAX_LIFETIME - 0.4:  # several ping intervals
        frame = client.recv_frame(timeout=PING_INTERVAL + SLACK)
        assert frame.opcode == OP_PING, f"unexpected {frame} after {time.monotonic() - t0} s"
        client.send_frame(OP_PONG, frame.payload)
        pings.append(frame.payload)
    assert len(pings) >= 3, pings
    assert pings == sorted(pings) and len(set(pings)) == len(pings)  # fresh payload each time
    answered(client, 2)


def test_empty_pong_counts_as_an_answer(srv, raw):
    """Older official SDK versions answer ``pong()`` with no payload: they stay connected."""
    client = raw(srv)
    t0 = time.monotonic()
    pings = 0
    while time.monotonic() - t0 < 1.0:
        frame = client.recv_frame(timeout=PING_INTERVAL + SLACK)
        assert frame.opcode == OP_PING, frame
        client.send_frame(OP_PONG, b"")
        pings += 1
    assert pings >= 3
    answered(client, 3)


def close_after_unanswered_pings(client) -> tuple[Any, float, int]:
    """Never answer pings; return the frame that ends them, the seconds from the first
    ping to it, and how many pings came."""
    ping = client.recv_frame(timeout=PING_INTERVAL + SLACK)
    assert ping.opcode == OP_PING, ping
    first_ping = time.monotonic()
    pings = 1
    while True:
        frame = client.recv_frame(timeout=MAX_LIFETIME + SLACK)
        if frame.opcode != OP_PING:
            return frame, time.monotonic() - first_ping, pings
        pings += 1  # more pings may come while the first is unanswered; still no pong


def test_client_never_answering_pings_closed_1008(srv, raw):
    """The pong timeout runs from the first unanswered ping, even when the server sends
    further pings meanwhile (the ping interval is shorter than the pong timeout, as
    Binance's 3 minutes are shorter than its 10)."""
    client = raw(srv)
    frame, waited, pings = close_after_unanswered_pings(client)
    assert frame.opcode == OP_CLOSE, frame
    assert (frame.close_code, frame.close_reason) == (1008, b"pong timeout"), (frame, pings)
    assert PONG_TIMEOUT * 0.8 <= waited <= PONG_TIMEOUT + SLACK, waited
    finish_close(client, 1008)


def test_unsolicited_pongs_tolerated(srv, raw):
    client = raw(srv)
    client.send_frame(OP_PONG, b"")  # before any ping
    client.send_frame(OP_PONG, b"heartbeat")
    t0 = time.monotonic()
    pings = 0
    while time.monotonic() - t0 < 1.0:
        frame = client.recv_frame(timeout=PING_INTERVAL + SLACK)
        # Nothing answers a pong: only the server's own pings arrive.
        assert frame.opcode == OP_PING, frame
        pings += 1
        client.send_frame(OP_PONG, frame.payload)
        if pings <= 2:  # one client sends an extra pong per ping (pings come every 3 min)
            client.send_frame(OP_PONG, b"extra")
    assert pings >= 3
    answered(client, 4)


def test_closed_1001_at_max_lifetime(srv, raw):
    t0 = time.monotonic()
    client = raw(srv)
    while True:
        frame = client.recv_frame(timeout=MAX_LIFETIME + SLACK)
        if frame.opcode != OP_PING:
            break
        client.send_frame(OP_PONG, frame.payload)
    elapsed = time.monotonic() - t0
    assert frame.opcode == OP_CLOSE and frame.payload == b"\x03\xe9", frame  # 1001, no reason
    assert MAX_LIFETIME * 0.9 <= elapsed <= MAX_LIFETIME + SLACK, elapsed
    finish_close(client, 1001)


def test_peer_not_answering_close_dropped_after_close_timeout(srv, raw):
    client = raw(srv)
    while True:  # answer pings until the lifetime close; then go silent
        frame = client.recv_frame(timeout=MAX_LIFETIME + SLACK)
        if frame.opcode != OP_PING:
            break
        client.send_frame(OP_PONG, frame.payload)
    assert frame.opcode == OP_CLOSE and frame.close_code == 1001
    closed_at = time.monotonic()
    assert client.wait_closed(CLOSE_TIMEOUT + SLACK + 1) == b""
    waited = time.monotonic() - closed_at
    assert CLOSE_TIMEOUT * 0.8 <= waited <= CLOSE_TIMEOUT + SLACK, waited


def test_silent_peer_after_pong_timeout_dropped_after_close_timeout(srv, raw):
    client = raw(srv)
    frame, _, _ = close_after_unanswered_pings(client)
    assert frame.opcode == OP_CLOSE, frame  # 1008 (see above), whatever the cause, go silent
    closed_at = time.monotonic()
    assert client.wait_closed(CLOSE_TIMEOUT + SLACK + 1) == b""
    assert time.monotonic() - closed_at <= CLOSE_TIMEOUT + SLACK


def test_requests_after_server_close_not_answered(srv, raw):
    client = raw(srv)
    frame, _, _ = close_after_unanswered_pings(client)
    assert frame.opcode == OP_CLOSE, frame
    client.send_text(req(5))
    client.send_frame(OP_PING, b"late")
    # No reply, no pong: TCP is closed after the close timeout with nothing sent.
    assert client.wait_closed(CLOSE_TIMEOUT + SLACK + 1) == b""


@pytest.mark.parametrize(
    "sent",
    [b"", b"GET /ws-fapi/v1 HTTP/1.1\r\nHost: 127.0.0.1\r\n"],
    ids=["nothing", "half-a-request"],
)
def test_handshake_timeout_drops_silent_tcp_client(srv, raw, sent):
    client = raw(srv, handshake=False)
    t0 = time.monotonic()
    if sent:
        client.send(sent)
    seen = client.wait_closed(HANDSHAKE_TIMEOUT + SLACK + 2)
    waited = time.monotonic() - t0
    assert HANDSHAKE_TIMEOUT * 0.8 <= waited <= HANDSHAKE_TIMEOUT + SLACK, waited
    assert b"101" not in seen, seen


def test_completed_handshake_not_subject_to_handshake_timeout(srv, raw):
    client = raw(srv)
    deadline = time.monotonic() + HANDSHAKE_TIMEOUT + 0.3
    while (left := deadline - time.monotonic()) > 0:
        try:
            frame = client.recv_frame(timeout=left)
        except TimeoutError:
            break
        assert frame.opcode == OP_PING, frame
        client.send_frame(OP_PONG, frame.payload)
    answered(client, 6)

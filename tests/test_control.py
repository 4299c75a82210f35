"""The control plane over HTTP against a real ``tickerd serve`` process: every fault as a
client sees it on the wire, the way back to normal, and the token guard.

The module's server runs with ``--control-port 0 --control-token T --tick-rate 0``; before
each test the control plane is ``reset`` and the clock frozen at ``T0``, and BTCUSDT and
ETHUSDT get known prices, so every reply below is compared byte for byte. Raw-socket
clients (conftest's ``raw``) show exactly which frames arrive: close codes, a missing
pong, the ``serverShutdown`` event, a TCP drop with no close frame.

Binance behaviours reproduced: websocket-api-general-info (429/418 with -1003, the 24-hour
cut, pings), spot web-socket-api.md (``serverShutdown``, ``retryAfter`` in ``error.data``).
"""

from __future__ import annotations

import asyncio
import http.client
import json
import socket
import struct
import subprocess
import sys
import time
import urllib.error
import urllib.request
from typing import Any
from urllib.parse import urlsplit

import pytest

from helpers_core import BANNED, RATE_LIMITED, body, err, rate_limits, request
from helpers_core import ok as ok_reply
from tickerd.control import CONTRACT_STATUSES, OPS, ControlClient, ControlError
from tickerd.control.client import TIMED_OUT, UNREACHABLE
from tickerd.feeds.synthetic import SyntheticMarket
from tickerd.symbols import SymbolUniverse

pytestmark = pytest.mark.timeout(60)

OP_TEXT, OP_CLOSE, OP_PING, OP_PONG = 0x1, 0x8, 0x9, 0xA
TOKEN = "T0ken-for-tests"
MINUTE_START = 1_700_000_040_000
T0 = MINUTE_START + 12_345
CONTROL_FLAGS = ("--control-port", "0", "--control-token", TOKEN, "--tick-rate", "0")
IP = "127.0.0.1"


def req(rid: int, symbol: str | None = "BTCUSDT") -> bytes:
    """A ticker.price request (all symbols when ``symbol`` is None)."""
    return request(b"%d" % rid, None if symbol is None else b'{"symbol":"%s"}' % symbol.encode())


def ok(
    rid: int,
    count: int,
    symbol: str = "BTCUSDT",
    price: str = "97000.10",
    time_ms: int = T0,
    limit: int = 2400,
) -> bytes:
    """A one-symbol ticker.price answer with ``rateLimits``."""
    return ok_reply(b"%d" % rid, body(symbol, price, time_ms), count, limit)


def refused(
    status: int, rid: int, count: int, until: int, now: int = T0, limit: int = 2400
) -> bytes:
    """A forced 429 (``until``: retryAfter) or 418 (``until``: the ban's end) on the WS API."""
    text = (
        RATE_LIMITED.format(ip=IP, limit=limit)
        if status == 429
        else BANNED.format(ip=IP, until=until)
    )
    error = {"code": -1003, "msg": text, "data": {"serverTime": now, "retryAfter": until}}
    wire = json.dumps(error, separators=(",", ":")).encode()
    return b'{"id":%d,"status":%d,"error":%s%s}' % (rid, status, wire, rate_limits(count, limit))


def too_many(rid: int, count: int, retry_after: int, now: int = T0, limit: int = 2400) -> bytes:
    return refused(429, rid, count, retry_after, now, limit)


def banned(rid: int, count: int, until: int, now: int = T0) -> bytes:
    return refused(418, rid, count, until, now)


def bad_symbol(rid: int, count: int) -> bytes:
    return err(b"%d" % rid, 400, -1121, "Invalid symbol.", count)


def rest_get(srv: Any, path: str) -> tuple[int, dict[str, str], bytes]:
    """GET on the REST twin: status, lower-cased headers, body."""
    parts = urlsplit(srv.rest_url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=5)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


def control_raw(
    srv: Any, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None
) -> tuple[int, Any]:
    """A control request with exactly the given headers: status and parsed JSON body."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(srv.control_url + path, data=data, method=method)
    for name, value in (headers or {}).items():
        request.add_header(name, value)
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(request, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def local_port(client: Any) -> int:
    return int(client.sock.getsockname()[1])


def conn_id(ctl: ControlClient, client: Any) -> int:
    """The server's id of a raw client's connection (matched by the client's port)."""
    port = local_port(client)
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        for c in ctl.state()["connections"]:
            if c["port"] == port:
                return int(c["id"])
        time.sleep(0.02)
    raise AssertionError(f"no connection from port {port} in the control state")


def no_frame(client: Any, within: float) -> None:
    """Nothing (but server pings, answered) arrives within ``within`` seconds."""
    with pytest.raises(TimeoutError):
        frame = client.recv_data(timeout=within)
        raise AssertionError(f"unexpected frame {frame}")


def wait_gone(ctl: ControlClient, timeout: float = 5.0) -> None:
    """Wait until the server lists no open connection."""
    deadline = time.monotonic() + timeout
    while ctl.state()["connections_total"]:
        assert time.monotonic() < deadline, ctl.state()["connections"]
        time.sleep(0.02)


# -- fixtures ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def srv(module_server):
    return module_server(*CONTROL_FLAGS, minute_margin=0)


@pytest.fixture
def ctl(srv) -> ControlClient:
    """The control plane as every test starts with it, whatever the test before did: no
    scenario, no connection left, faults, limits and statuses reset, the clock frozen at
    T0, and only BTCUSDT and ETHUSDT priced."""
    client = ControlClient(srv.control_url, TOKEN)
    client.call("scenario.stop")
    client.call("reset")
    wait_gone(client)
    client.call("book.reset")
    client.call("clock.freeze", at_ms=T0)
    client.call("price.set", symbol="BTCUSDT", price="97000.10")
    client.call("price.set", symbol="ETHUSDT", price="3150.50")
    return client


# -- start-up ------------------------------------------------------------------------------


def test_control_plane_refuses_to_start_without_a_token():
    cmd = [sys.executable, "-m", "tickerd", "serve", "--port", "0", "--rest-port", "-1"]
    done = subprocess.run(
        [*cmd, "--control-port", "0"], check=False, capture_output=True, timeout=20, text=True
    )
    assert done.returncode == 1
    assert "control plane needs a token" in done.stderr
    assert "tickerd ready" not in done.stderr


def test_control_ready_is_logged_before_the_final_ready_line(srv):
    lines = [line for line in srv.log().splitlines() if "tickerd " in line and " ready: " in line]
    assert "tickerd control ready: http://127.0.0.1:" in lines[-2]
    assert "tickerd ready: ws://" in lines[-1]
    assert srv.control_url is not None


def test_control_plane_is_off_by_default(server):
    plain = server("--tick-rate", "0", minute_margin=0)
    assert plain.control_url is None
    assert "control ready" not in plain.log()


# -- auth ----------------------------------------------------------------------------------

# One valid call of every operation: each would change the state if it were let through.
SAMPLE_ARGS: dict[str, dict[str, Any]] = {
    "price.set": {"symbol": "BTCUSDT", "price": "1.00"},
    "price.clear": {"symbol": "BTCUSDT"},
    "book.reset": {},
    "market.reseed": {"seed": 9},
    "clock.freeze": {"at_ms": 1},
    "clock.unfreeze": {},
    "clock.advance": {"ms": 1000},
    "clock.set": {"now_ms": 5},
    "clock.reset": {},
    "replay.step": {},
    "fault.http429": {"count": 5},
    "fault.http418": {"count": 5},
    "fault.latency": {"ms": 100},
    "fault.pings": {},
    "fault.clear": {},
    "limit.weight": {"limit": 7},
    "limit.ban": {"ip": "10.0.0.1"},
    "limit.reset": {},
    "conn.close": {"code": 1011},
    "conn.drop": {},
    "conn.rollover": {},
    "symbol.status": {"symbol": "ETHUSDT", "status": "CLOSE"},
    "event.shutdown": {},
    "scenario.stop": {},
    "reset": {},
}
SCENARIO = {"steps": [{"at_ms": 0, "op": "limit.weight", "args": {"limit": 3}}]}
BAD_AUTH = [
    {},
    {"Authorization": "Bearer wrong"},
    {"Authorization": f"Bearer {TOKEN}x"},
    {"Authorization": f"Bearer {TOKEN[:-1]}"},
    {"Authorization": f"Basic {TOKEN}"},
    {"Authorization": TOKEN},
    {"X-Token": TOKEN},
]


def test_every_operation_has_an_auth_sample():
    assert set(SAMPLE_ARGS) == set(OPS)


def test_every_endpoint_refuses_a_missing_or_wrong_token_and_changes_nothing(srv, ctl):
    client_requests = [("GET", "/control/state", None), ("GET", "/control/ops", None)]
    client_requests += [
        ("POST", "/control/" + op.replace(".", "/"), args) for op, args in SAMPLE_ARGS.items()
    ]
    client_requests += [
        ("POST", "/control/scenario", SCENARIO),
        ("GET", "/nowhere", None),
        ("POST", "/control/no/such/op", {}),
    ]
    wait_gone(ctl)
    before = ctl.state()
    for method, path, payload in client_requests:
        for headers in BAD_AUTH:
            status, answer = control_raw(srv, method, path, payload, headers)
            assert status == 401, (method, path, headers, answer)
            assert answer == {"error": "missing or wrong control token"}
    assert ctl.state() == before
    # The comparison would have seen a change: the same call with the token makes one.
    status, _ = control_raw(
        srv,
        "POST",
        "/control/limit/weight",
        {"limit": 7},
        {"Authorization": f"Bearer {TOKEN}"},
    )
    assert status == 200
    assert ctl.state()["weight_limit"] == 7


def test_errors_are_json_with_a_status(srv, ctl):
    auth = {"Authorization": f"Bearer {TOKEN}"}
    assert control_raw(srv, "POST", "/control/no/such", {}, auth) == (
        404,
        {"error": "unknown operation 'no.such'"},
    )
    status, answer = control_raw(srv, "POST", "/control/fault/http429", {"cnt": 1}, auth)
    assert status == 400 and "unknown argument 'cnt'" in answer["error"]
    status, answer = control_raw(srv, "POST", "/control/conn/close", {"code": 1006}, auth)
    assert status == 400 and "'code' must be one of [1000, 1001, 1008, 1011]" in answer["error"]
    status, answer = control_raw(srv, "POST", "/control/price/set", {"symbol": "BTCUSDT"}, auth)
    assert status == 400 and "'price' is required" in answer["error"]
    status, answer = control_raw(
        srv, "POST", "/control/price/set", {"symbol": "BTCUSDT", "price": "1.001"}, auth
    )
    assert status == 400 and "not a positive multiple of 0.10" in answer["error"]
    status, answer = control_raw(srv, "GET", "/control/fault/http429", None, auth)
    assert status == 405 and "error" in answer
    big = {"steps": [{"at_ms": 0, "op": "reset", "note": "x" * 2_000_000}]}
    status, answer = control_raw(srv, "POST", "/control/scenario", big, auth)
    assert status == 413 and "error" in answer
    assert ctl.state()["scenario"] is None
    with pytest.raises(ControlError) as err:
        ctl.call("replay.step")
    assert err.value.status == 409 and "no replay feed running" in err.value.msg
    assert ctl.state()["faults"] == []


# -- forced 429 / 418 ----------------------------------------------------------------------


# The 429 / 418 twins: (operation arguments, the time in the answer, Retry-After on REST).
FORCED = {
    429: ({"retry_after_ms": 4_500}, T0 + 4_500, "5"),
    418: ({"ban_ms": 120_000}, T0 + 120_000, "120"),
}


@pytest.mark.parametrize("status", sorted(FORCED))
def test_forced_error_answers_the_next_n_requests_then_serves_again(srv, raw, ctl, status):
    client = raw(srv)
    args, until, _ = FORCED[status]
    armed = ctl.call(f"fault.http{status}", count=2, **args)
    assert armed["remaining"] == 2 and armed["target"] == {"ip": None, "conn": None}
    assert armed["kind"] == f"http{status}"
    client.send(b"".join(client.frame(OP_TEXT, req(i)) for i in (1, 2, 3)))
    # The handshake's 5 weight shows; refused requests are not charged.
    assert client.recv_text() == refused(status, 1, 5, until)
    assert client.recv_text() == refused(status, 2, 5, until)
    assert client.recv_text() == ok(3, 6)
    assert ctl.state()["faults"] == []
    client.send_text(req(4))
    assert client.recv_text() == ok(4, 7)


def test_http429_default_retry_after_is_the_next_window(srv, raw, ctl):
    client = raw(srv)
    ctl.call("fault.http429")
    client.send_text(req(1))
    assert client.recv_text() == too_many(1, 5, MINUTE_START + 60_000)
    client.send_text(req(2))
    assert client.recv_text() == ok(2, 6)


def test_forced_errors_keep_request_ids_and_return_rate_limits_false(srv, raw, ctl):
    client = raw(srv)
    ctl.call("fault.http429", count=2)
    client.send_text(b'{"id":"abc-1","method":"ticker.price","params":{"returnRateLimits":false}}')
    reply = client.recv_text()
    assert reply.startswith(b'{"id":"abc-1","status":429,"error":{"code":-1003,')
    assert reply.endswith(b"}}") and b"rateLimits" not in reply
    # An envelope error is answered as always, and does not use up the fault.
    client.send_text(b"not json")
    assert client.recv_text() == (
        b'{"id":null,"status":400,"error":{"code":-1000,"msg":"Invalid JSON request."}}'
    )
    assert ctl.state()["faults"][0]["remaining"] == 1


@pytest.mark.parametrize("status", sorted(FORCED))
def test_forced_error_on_rest_then_normal(srv, ctl, status):
    args, until, retry_after = FORCED[status]
    ctl.call(f"fault.http{status}", count=1, **args)
    code, headers, answer = rest_get(srv, "/fapi/v1/ticker/price?symbol=BTCUSDT")
    assert code == status
    assert headers["retry-after"] == retry_after
    assert headers["x-mbx-used-weight-1m"] == "0"
    text = (
        RATE_LIMITED.format(ip=IP, limit=2400)
        if status == 429
        else BANNED.format(ip=IP, until=until)
    )
    assert answer == b'{"code":-1003,"msg":"%s"}' % text.encode()
    code, headers, answer = rest_get(srv, "/fapi/v1/ticker/price?symbol=BTCUSDT")
    assert code == 200 and headers["x-mbx-used-weight-1m"] == "1"
    assert answer == b'{"symbol":"BTCUSDT","price":"97000.10","time":%d}' % T0
    assert rest_get(srv, "/fapi/v1/time")[0] == 200


def test_fault_aimed_at_another_ip_spares_this_one(srv, raw, ctl):
    client = raw(srv)
    ctl.call("fault.http429", count=1, ip="10.9.9.9")
    client.send_text(req(1))
    assert client.recv_text() == ok(1, 6)
    assert rest_get(srv, "/fapi/v1/ping")[0] == 200
    [fault] = ctl.state()["faults"]
    assert fault["remaining"] == 1 and fault["target"] == {"ip": "10.9.9.9", "conn": None}
    ctl.call("fault.http429", count=1, ip="127.0.0.1")
    client.send_text(req(2))
    assert client.recv_text() == too_many(2, 7, MINUTE_START + 60_000)


def test_fault_aimed_at_one_connection(srv, raw, ctl):
    a, b = raw(srv), raw(srv)
    target = conn_id(ctl, a)
    assert target != conn_id(ctl, b)
    ctl.call("fault.http429", count=1, conn=target)
    b.send_text(req(1))
    assert b.recv_text() == ok(1, 11)  # two handshakes: 10
    assert rest_get(srv, "/fapi/v1/ping")[0] == 200  # REST has no connection ids
    a.send_text(req(2))
    assert a.recv_text() == too_many(2, 12, MINUTE_START + 60_000)  # + 1 for the ping
    a.send_text(req(3))
    assert a.recv_text() == ok(3, 13)


# -- limits ----------------------------------------------------------------------------------


def test_weight_limit_changes_on_the_fly(srv, raw, ctl):
    client = raw(srv)
    ctl.call("limit.weight", limit=8)
    client.send_text(req(1))
    assert client.recv_text() == ok(1, 6, limit=8)
    status, _, body = rest_get(srv, "/fapi/v1/exchangeInfo")  # weight 1: 7
    assert status == 200
    [weight] = [r for r in json.loads(body)["rateLimits"] if r["rateLimitType"] == "REQUEST_WEIGHT"]
    assert weight["limit"] == 8
    client.send_text(req(2))
    assert client.recv_text() == ok(2, 8, limit=8)
    client.send_text(req(3))
    assert client.recv_text() == too_many(3, 9, MINUTE_START + 60_000, limit=8)
    ctl.call("limit.weight", limit=2400)
    client.send_text(req(4))
    assert client.recv_text() == ok(4, 10)


def test_windows_follow_the_controlled_clock(srv, raw, ctl):
    client = raw(srv)
    client.send_text(req(1))
    assert client.recv_text() == ok(1, 6)
    ctl.call("clock.advance", ms=60_000)  # the next minute: a fresh window
    client.send_text(req(2))
    assert client.recv_text() == ok(2, 1)


def test_limiter_ban_refuses_handshakes_until_reset(srv, raw, ctl):
    answer = ctl.call("limit.ban", ip="127.0.0.1", ms=60_000)
    assert answer["banned_until"] == T0 + 60_000
    [client] = [c for c in ctl.state()["clients"] if c["ip"] == "127.0.0.1"]
    assert client["banned_until"] == T0 + 60_000 and client["bans"] == 1
    refused = raw(srv, handshake=False).handshake()
    assert refused.status == 418 and refused.headers["retry-after"] == "60"
    ctl.call("limit.reset", ip="127.0.0.1")
    raw(srv)


# -- connections ------------------------------------------------------------------------------


@pytest.mark.parametrize("code", [1000, 1001, 1008, 1011])
def test_close_with_a_chosen_code(srv, raw, ctl, code):
    client = raw(srv)
    client.send_text(req(1))
    assert client.recv_text() == ok(1, 6)
    assert ctl.call("conn.close", code=code, reason="bye")["closed"] == 1
    frame = client.expect_close()
    assert (frame.close_code, frame.close_reason) == (code, b"bye")
    client.send_close(code)
    assert client.wait_closed(3) == b""
    fresh = raw(srv)
    fresh.send_text(req(2))
    assert fresh.recv_text() == ok(2, 12)


def test_rollover_closes_1001_as_at_24_hours(srv, raw, ctl):
    client = raw(srv)
    assert ctl.call("conn.rollover")["closed"] == 1
    frame = client.expect_close()
    assert frame.payload == struct.pack("!H", 1001)
    client.send_close(1001)
    assert client.wait_closed(3) == b""


def test_drop_ends_tcp_without_a_close_frame(srv, raw, ctl):
    client = raw(srv)
    client.send_text(req(1))
    assert client.recv_text() == ok(1, 6)
    assert ctl.call("conn.drop")["dropped"] == 1
    assert client.wait_closed(3) == b""  # EOF (or reset) with not one byte before it
    fresh = raw(srv)
    fresh.send_text(req(2))
    assert fresh.recv_text() == ok(2, 12)


def test_close_aimed_at_one_connection(srv, raw, ctl):
    a, b = raw(srv), raw(srv)
    assert ctl.call("conn.close", code=1008, conn=conn_id(ctl, a))["closed"] == 1
    assert a.expect_close().close_code == 1008
    b.send_text(req(1))
    assert b.recv_text() == ok(1, 11)


def test_server_shutdown_event(srv, raw, ctl):
    a, b = raw(srv), raw(srv)
    assert ctl.call("event.shutdown", conn=conn_id(ctl, a))["sent"] == 1
    event = b'{"event":{"e":"serverShutdown","E":%d}}' % T0
    assert a.recv_text() == event
    no_frame(b, 0.3)
    ctl.call("clock.advance", ms=1)
    assert ctl.call("event.shutdown")["sent"] == 2
    event = b'{"event":{"e":"serverShutdown","E":%d}}' % (T0 + 1)
    assert a.recv_text() == event and b.recv_text() == event
    # The connection stays open: closing is the client's move (or a later close step).
    a.send_text(req(1))
    assert a.recv_text() == ok(1, 11)


# -- latency -----------------------------------------------------------------------------------


def test_fixed_latency_delays_replies_in_order_not_pongs(srv, raw, ctl):
    client = raw(srv)
    ctl.call("fault.latency", ms=1_000)
    t0 = time.monotonic()
    client.send(b"".join(client.frame(OP_TEXT, req(i)) for i in range(1, 6)))
    client.send_frame(OP_PING, b"still there?")
    pong = client.recv_frame(timeout=2)  # the pong overtakes the delayed replies
    assert pong.opcode == OP_PONG and pong.payload == b"still there?"
    replies = [client.recv_text(timeout=5) for _ in range(5)]
    assert time.monotonic() - t0 >= 0.99  # a timer may fire up to 0.5 ms early: delivered
    assert replies == [ok(i, 5 + i) for i in range(1, 6)]
    ctl.call("fault.clear")
    t1 = time.monotonic()
    client.send_text(req(6))
    assert client.recv_text() == ok(6, 11)
    assert time.monotonic() - t1 < 0.9


def test_random_latency_keeps_order(srv, raw, ctl):
    client = raw(srv)
    armed = ctl.call("fault.latency", min_ms=0, max_ms=150, seed=7)
    assert (armed["min_ms"], armed["max_ms"], armed["seed"]) == (0, 150, 7)
    client.send(b"".join(client.frame(OP_TEXT, req(i)) for i in range(1, 31)))
    assert [client.recv_text(timeout=5) for _ in range(30)] == [ok(i, 5 + i) for i in range(1, 31)]


def test_latency_aimed_at_one_connection(srv, raw, ctl):
    slow, fast = raw(srv), raw(srv)
    ctl.call("fault.latency", ms=1_200, conn=conn_id(ctl, slow))
    t0 = time.monotonic()
    slow.send_text(req(1))
    time.sleep(0.1)  # charged first: count 11
    fast.send_text(req(2))
    assert fast.recv_text() == ok(2, 12)
    assert time.monotonic() - t0 < 1.1
    assert slow.recv_text(timeout=5) == ok(1, 11)
    assert time.monotonic() - t0 >= 1.19  # a timer may fire up to 0.5 ms early


def test_replies_still_delayed_when_cleared_arrive_in_order(srv, raw, ctl):
    client = raw(srv)
    [fault] = [ctl.call("fault.latency", ms=700)]
    client.send_text(req(1))
    time.sleep(0.1)
    ctl.call("fault.clear", id=fault["id"])
    client.send_text(req(2))  # answered at once, but queued behind the delayed one
    assert client.recv_text(timeout=3) == ok(1, 6)
    assert client.recv_text(timeout=3) == ok(2, 7)


# -- pings -----------------------------------------------------------------------------------


def test_unanswered_pings(server, raw):
    srv = server(*CONTROL_FLAGS, "--ping-interval", "0.3", "--pong-timeout", "5", minute_margin=0)
    ctl = ControlClient(srv.control_url, TOKEN)
    client = raw(srv)
    ctl.call("fault.pings")
    client.send_frame(OP_PING, b"p1")
    seen: list[int] = []
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline:
        try:
            frame = client.recv_frame(timeout=deadline - time.monotonic())
        except TimeoutError:
            break
        seen.append(frame.opcode)
        if frame.opcode == OP_PING:  # the server's own pings carry on; answer them
            client.send_frame(OP_PONG, frame.payload)
    assert OP_PONG not in seen and OP_PING in seen, seen
    client.send_text(req(1))
    assert client.recv_data().payload.startswith(b'{"id":1,"status":200,')
    ctl.call("fault.clear")
    client.send_frame(OP_PING, b"p2")
    while (frame := client.recv_frame()).opcode == OP_PING:
        client.send_frame(OP_PONG, frame.payload)
    assert (frame.opcode, frame.payload) == (OP_PONG, b"p2")


# -- symbols, prices, time ---------------------------------------------------------------------


def test_symbol_status_makes_it_1121_and_back(srv, raw, ctl):
    client = raw(srv)
    ctl.call("symbol.status", symbol="ETHUSDT", status="SETTLING")
    client.send_text(req(1, "ETHUSDT"))
    assert client.recv_text() == bad_symbol(1, 6)
    ctl.call("book.reset")
    ctl.call("price.set", symbol="BTCUSDT", price="97000.10")
    ctl.call("price.set", symbol="ETHUSDT", price="3150.50")
    client.send_text(req(2, None))
    reply = client.recv_text()
    assert reply.startswith(b'{"id":2,"status":200,"result":[{"symbol":"BTCUSDT",')
    assert b"ETHUSDT" not in reply
    _, _, body = rest_get(srv, "/fapi/v1/exchangeInfo")
    [eth] = [s for s in json.loads(body)["symbols"] if s["symbol"] == "ETHUSDT"]
    assert eth["status"] == "SETTLING"
    assert rest_get(srv, "/fapi/v1/ticker/price?symbol=ETHUSDT")[2] == (
        b'{"code":-1121,"msg":"Invalid symbol."}'
    )
    assert ctl.state()["statuses"] == {"ETHUSDT": "SETTLING"}
    ctl.call("symbol.status", symbol="ETHUSDT", status="TRADING")
    client.send_text(req(3, "ETHUSDT"))
    assert client.recv_text() == ok(3, 11, "ETHUSDT", "3150.50")
    assert ctl.state()["statuses"] == {}


def test_prices_book_and_reseed(srv, raw, ctl):
    client = raw(srv)
    assert ctl.call("price.set", symbol="BTCUSDT", price="1.2", time_ms=42) == {
        "ok": True,
        "symbol": "BTCUSDT",
        "price": "1.20",
        "time": 42,
    }
    client.send_text(req(1))
    assert client.recv_text() == ok(1, 6, price="1.20", time_ms=42)
    ctl.call("price.clear", symbol="BTCUSDT")
    client.send_text(req(2))
    assert client.recv_text() == bad_symbol(2, 7)
    ctl.call("book.reset")
    client.send_text(req(3, None))
    assert client.recv_text() == b'{"id":3,"status":200,"result":[]' + rate_limits(9) + b"}"
    assert ctl.state()["prices"] == {}
    answer = ctl.call("market.reseed", seed=5)
    assert answer["seed"] == 5 and answer["symbols"] > 50
    client.send_text(req(4))  # the reference price, stamped with the frozen clock
    assert client.recv_text() == ok(4, 10, price="97000.00")


def test_clock_freeze_advance_set_unfreeze(srv, raw, ctl):
    def server_time() -> int:
        return int(json.loads(rest_get(srv, "/fapi/v1/time")[2])["serverTime"])

    assert server_time() == T0
    assert ctl.call("clock.advance", ms=1_500)["now_ms"] == T0 + 1_500
    assert server_time() == T0 + 1_500
    ctl.call("clock.set", now_ms=1_600_000_000_000)  # backward is allowed
    assert server_time() == 1_600_000_000_000
    client = raw(srv)
    ctl.call("price.set", symbol="BTCUSDT", price="97000.10")
    client.send_text(req(1))
    assert client.recv_text() == ok(1, 7, time_ms=1_600_000_000_000)  # 1 REST + 5 + 1
    state = ctl.call("clock.unfreeze")
    assert state["frozen"] is False
    time.sleep(0.05)
    assert 1_600_000_000_000 < server_time() < 1_600_000_000_000 + 10_000
    ctl.call("clock.reset")
    assert abs(server_time() - time.time() * 1000) < 5_000
    assert ctl.state()["clock"]["offset_ms"] == 0


# -- replay ---------------------------------------------------------------------------------------

TRADES = (
    "id,price,qty,quote_qty,time,is_buyer_maker\n"
    "1,42000.10,0.1,4200.01,1704067200000,true\n"
    "2,42000.20,0.1,4200.02,1704067200500,false\n"
    "3,42001.00,0.1,4200.10,1704067201000,true\n"
)


def test_replay_step_applies_trades_and_moves_the_clock(server, tmp_path):
    (tmp_path / "BTCUSDT-trades-2024-01-01.csv").write_text(TRADES, encoding="ascii")
    replay = ("--feed", "replay", "--replay-path", str(tmp_path))
    srv = server(*CONTROL_FLAGS, *replay, "--replay-speed", "step", minute_margin=0)
    ctl = ControlClient(srv.control_url, TOKEN)
    answer = ctl.call("replay.step", count=2)
    assert answer["stepped"] == 2 and answer["finished"] is False
    assert answer["last"] == {"symbol": "BTCUSDT", "price": "42000.20", "time": 1704067200500}
    assert rest_get(srv, "/fapi/v1/time")[2] == b'{"serverTime":1704067200500}'
    assert rest_get(srv, "/fapi/v1/ticker/price?symbol=BTCUSDT")[2] == (
        b'{"symbol":"BTCUSDT","price":"42000.20","time":1704067200500}'
    )
    # The control clock sits on top of the replay's: an offset moves what clients see.
    ctl.call("clock.advance", ms=1_000)
    assert rest_get(srv, "/fapi/v1/time")[2] == b'{"serverTime":1704067201500}'
    answer = ctl.call("replay.step", count=5)
    assert answer["stepped"] == 1 and answer["finished"] is True
    with pytest.raises(ControlError) as err:
        ctl.call("replay.step", count=0)
    assert err.value.status == 400


def test_replay_step_needs_step_mode(server, tmp_path):
    (tmp_path / "BTCUSDT-trades-2024-01-01.csv").write_text(TRADES, encoding="ascii")
    replay = ("--feed", "replay", "--replay-path", str(tmp_path))
    srv = server(*CONTROL_FLAGS, *replay, "--replay-speed", "max", minute_margin=0)
    with pytest.raises(ControlError) as err:
        ControlClient(srv.control_url, TOKEN).call("replay.step")
    assert err.value.status == 409 and "step needs --replay-speed step" in err.value.msg


# -- state ---------------------------------------------------------------------------------------


def test_state_shows_connections_clients_and_faults(srv, raw, ctl):
    client = raw(srv)
    state = ctl.state()
    [mine] = [c for c in state["connections"] if c["port"] == local_port(client)]
    assert mine["ip"] == "127.0.0.1" and mine["age_ms"] >= 0 and mine["closing"] is False
    assert state["connections_total"] >= 1
    [usage] = [c for c in state["clients"] if c["ip"] == "127.0.0.1"]
    assert usage == {"ip": "127.0.0.1", "used": 5, "banned_until": None, "bans": 0}
    assert state["clock"] == {"now_ms": T0, "frozen": True, "offset_ms": 0}
    assert state["prices"]["BTCUSDT"] == {"price": "97000.10", "time": T0}
    assert state["weight_limit"] == 2400 and state["scenario"] is None
    ctl.call("fault.http429", count=3, ip="127.0.0.1")
    ctl.call("fault.pings", conn=mine["id"])
    faults = ctl.state()["faults"]
    assert [(f["kind"], f["target"]) for f in faults] == [
        ("http429", {"ip": "127.0.0.1", "conn": None}),
        ("no_pong", {"ip": None, "conn": mine["id"]}),
    ]
    assert ctl.call("fault.clear", id=faults[0]["id"]) == {"ok": True, "cleared": 1}
    assert [f["kind"] for f in ctl.state()["faults"]] == ["no_pong"]
    with pytest.raises(ControlError) as err:
        ctl.call("fault.clear", id=faults[0]["id"])
    assert err.value.status == 404


def test_ops_lists_every_operation(srv, ctl):
    auth = {"Authorization": f"Bearer {TOKEN}"}
    status, ops = control_raw(srv, "GET", "/control/ops", None, auth)
    assert status == 200 and set(ops) == set(OPS)
    assert ops["fault.http429"]["path"] == "/control/fault/http429"
    assert ops["fault.http429"]["args"]["count"] == {"type": "int", "required": False}
    assert ctl.ops() == ops


# -- in process: the bound on delayed replies ------------------------------------------------


def test_delayed_replies_are_bounded(monkeypatch):
    """A client whose delayed replies pile up past the bound is cut off like a slow reader."""
    from tickerd.app import Service
    from tickerd.config import Settings
    from tickerd.transport import faults

    monkeypatch.setattr(faults, "MAX_DELAYED_REPLIES", 5)

    async def main() -> None:
        import websockets

        service = Service(Settings(port=0, rest_port=-1, tick_rate=0, ops_port=-1))
        await service.start()
        try:
            service.control.add_latency(ms=10_000)
            async with websockets.connect(service.url, proxy=None) as ws:
                for i in range(6):
                    await ws.send(req(i).decode())
                with pytest.raises(websockets.ConnectionClosed) as closed:
                    await asyncio.wait_for(ws.recv(), 5)
                assert closed.value.rcvd is None  # no close frame: TCP cut
            assert service.ws is not None and service.ws.slow_readers_cut == 1
        finally:
            await service.stop()

    asyncio.run(main())


# -- the pytest plugin's server object delegates to the same Control --------------------------


def test_plugin_server_has_the_control_methods():
    from websockets.exceptions import ConnectionClosed
    from websockets.sync.client import connect

    from tickerd.testing import TickerdServer

    with TickerdServer(prices="none") as srv:
        srv.set_price("BTCUSDT", "97000.10")
        now = srv.now_ms
        srv.fail_requests(429, 1, retry_after_ms=1_000)
        with connect(srv.ws_url, proxy=None) as ws:
            ws.send(req(1).decode())
            assert ws.recv() == too_many(1, 5, now + 1_000, now=now).decode()
            ws.send(req(2).decode())
            assert ws.recv() == ok(2, 6, time_ms=now).decode()
            [conn] = srv.control_state()["connections"]
            assert srv.server_shutdown(conn=conn["id"]) == {"sent": 1}
            assert ws.recv() == f'{{"event":{{"e":"serverShutdown","E":{now}}}}}'
            srv.set_symbol_status("BTCUSDT", "CLOSE")
            ws.send(req(3).decode())
            assert ws.recv() == bad_symbol(3, 7).decode()
            assert srv.close_connections(1011) == {"closed": 1}
            with pytest.raises(ConnectionClosed) as closed:
                ws.recv(timeout=5)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1011
        started = srv.run_scenario(
            {"steps": [{"at_ms": 0, "op": "limit.weight", "args": {"limit": 9}}]}
        )
        assert started["finished"] is True
        assert srv.control_state()["weight_limit"] == 9
        with pytest.raises(ControlError):
            srv.control("fault.nope")


# -- refusals that must agree with the README --------------------------------------------------


def test_symbol_status_accepts_only_binance_contract_statuses(srv, ctl):
    for bad in ("BOGUS", "trading", "Trading", "SETTLED"):
        with pytest.raises(ControlError) as refused_status:
            ctl.call("symbol.status", symbol="ETHUSDT", status=bad)
        assert refused_status.value.status == 400
        assert "'status' must be one of ['PENDING_TRADING', 'TRADING'," in refused_status.value.msg
    assert ctl.state()["statuses"] == {}
    for status in CONTRACT_STATUSES:
        assert ctl.call("symbol.status", symbol="ETHUSDT", status=status)["status"] == status
    assert ctl.state()["statuses"] == {"ETHUSDT": "CLOSE"}


@pytest.mark.parametrize(
    ("op", "args"),
    [
        ("conn.close", {"code": 1000}),
        ("conn.drop", {}),
        ("conn.rollover", {}),
        ("event.shutdown", {}),
        ("conn.close", {"conn": 999_999}),
        ("conn.close", {"ip": "10.1.2.3"}),
    ],
)
def test_connection_operations_with_nothing_to_act_on_are_409(srv, raw, ctl, op, args):
    if "ip" in args:
        raw(srv)  # a connection, but not from the IP aimed at
    with pytest.raises(ControlError) as nothing:
        ctl.call(op, **args)
    assert nothing.value.status == 409
    assert nothing.value.msg == f"{op}: no open connection is aimed at"


def test_price_set_refuses_times_past_int64_or_the_skew(srv, raw, ctl):
    for time_ms, why in (
        (2**63, "past the largest 64-bit integer"),
        (2**64 - 1, "past the largest 64-bit integer"),
        (T0 + 10_001, "10001 ms ahead of the service clock (at most 10000 ms)"),
    ):
        with pytest.raises(ControlError) as late:
            ctl.call("price.set", symbol="BTCUSDT", price="1.00", time_ms=time_ms)
        assert late.value.status == 400 and why in late.value.msg, late.value.msg
    client = raw(srv)
    client.send_text(req(1))
    assert client.recv_text() == ok(1, 6)  # the price from before, untouched
    assert ctl.call("price.set", symbol="BTCUSDT", price="1.00", time_ms=T0 + 10_000)["time"] == (
        T0 + 10_000
    )
    # The skew follows the controlled clock, not the wall clock.
    ctl.call("clock.set", now_ms=1_000)
    with pytest.raises(ControlError, match="ahead of the service clock"):
        ctl.call("price.set", symbol="BTCUSDT", price="1.00", time_ms=T0)


def test_reseed_restarts_the_synthetic_prices_from_the_seed(srv, ctl):
    ctl.call("price.set", symbol="ETHUSDT", price="1.00")
    answer = ctl.call("market.reseed", seed=5)
    market = SyntheticMarket(SymbolUniverse.default(), 5)
    expected = {t.symbol: {"price": t.price, "time": T0} for t in market.snapshot(T0)}
    assert answer == {"ok": True, "seed": 5, "symbols": len(expected)}
    assert ctl.state()["prices"] == expected
    assert expected["ETHUSDT"]["price"] != "1.00"


def test_reseed_walks_only_the_synthetic_feeds_own_symbols(server):
    srv = server(
        *CONTROL_FLAGS[:4],
        "--tick-rate", "400",
        "--feed", "synthetic,push",
        "--push-symbols", "BTCUSDT",
        "--push-port", "0",
        env={"TICKERD_PUSH_TOKEN": "push-secret"},
        minute_margin=0,
    )  # fmt: skip
    ctl = ControlClient(srv.control_url, TOKEN)
    ctl.call("clock.freeze", at_ms=T0)
    ctl.call("price.set", symbol="BTCUSDT", price="50000.00")
    answer = ctl.call("market.reseed", seed=3)
    trading = [s.symbol for s in SymbolUniverse.default().trading()]
    assert answer["symbols"] == len(trading) - 1
    before = ctl.state()["prices"]
    deadline = time.monotonic() + 10
    while ctl.state()["prices"] == before:  # the synthetic feed walks on...
        assert time.monotonic() < deadline
        time.sleep(0.05)
    time.sleep(0.3)
    # ... but never BTCUSDT, which the push feed owns.
    assert ctl.state()["prices"]["BTCUSDT"] == {"price": "50000.00", "time": T0}


def test_a_second_scenario_while_one_runs_is_409_unless_replace(srv, ctl):
    first = {
        "name": "first",
        "steps": [{"at_ms": 60_000, "op": "limit.weight", "args": {"limit": 3}}],
    }
    second = {"name": "second", "steps": [{"at_ms": 0, "op": "limit.weight", "args": {"limit": 9}}]}
    assert ctl.run_scenario(first)["name"] == "first"
    with pytest.raises(ControlError) as busy:
        ctl.run_scenario(second)
    assert busy.value.status == 409
    assert "scenario 'first' is running" in busy.value.msg and '"replace": true' in busy.value.msg
    assert ctl.state()["scenario"]["name"] == "first" and ctl.state()["weight_limit"] == 2400
    auth = {"Authorization": f"Bearer {TOKEN}"}
    status, answer = control_raw(srv, "POST", "/control/scenario", {**second, "replace": 1}, auth)
    assert status == 400 and answer == {"error": "'replace' must be true or false, got 1"}
    started = ctl.run_scenario(second, replace=True)
    assert started["name"] == "second" and started["finished"] is True
    assert ctl.state()["weight_limit"] == 9
    # A finished run is no obstacle; a replaced one never applies its steps.
    assert ctl.run_scenario(second)["finished"] is True
    assert ctl.call("scenario.stop") == {"ok": True, "stopped": False}


# -- the client: every failure is a ControlError -------------------------------------------------


def test_control_client_raises_control_error_for_connection_refused():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    # Nothing listens on the port now: the connection is refused.
    with pytest.raises(ControlError) as refused_conn:
        ControlClient(f"http://127.0.0.1:{port}", TOKEN, timeout=5).state()
    assert refused_conn.value.status == UNREACHABLE
    assert f"control plane http://127.0.0.1:{port}:" in refused_conn.value.msg
    assert "refused" in refused_conn.value.msg.lower()
    with pytest.raises(ControlError) as bad_url:
        ControlClient("127.0.0.1:9003", TOKEN).call("reset")
    assert bad_url.value.status == UNREACHABLE


def test_control_client_raises_control_error_for_answers_that_are_not_the_control_plane(srv):
    # The REST port answers, but not as the control plane: a status and a message still.
    with pytest.raises(ControlError) as not_control:
        ControlClient(srv.rest_url, TOKEN).state()
    assert not_control.value.status >= 400
    ws_port = srv.port
    with pytest.raises(ControlError) as not_http:
        ControlClient(f"http://127.0.0.1:{ws_port}", TOKEN).state()
    assert not_http.value.status == 404


def test_control_client_raises_control_error_on_timeout():
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)  # accepts TCP, never answers HTTP
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        with pytest.raises(ControlError) as slow:
            ControlClient(url, TOKEN, timeout=0.5).state()
    assert slow.value.status == TIMED_OUT and "no answer in 0.5 s" in slow.value.msg

"""End to end: a real ``tickerd serve`` process, real sockets, the exact bytes a client sees.

Counts in ``rateLimits`` are exact: each server is fresh, the WebSocket handshake costs
5 weight (websocket-api-general-info), ``ticker.price`` 1 with a symbol and 2 without
(market-data/websocket-api/Symbol-Price-Ticker), and the server fixture never starts a test
within 3 s of a clock-minute boundary, where the limiter's window restarts.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from decimal import Decimal
from importlib import resources
from pathlib import Path

import pytest
from websockets.exceptions import ConnectionClosed

import helpers_core
from helpers_core import BANNED, RATE_LIMITED

pytestmark = pytest.mark.timeout(30)

OP_TEXT, OP_CLOSE = 0x1, 0x8
HANDSHAKE_WEIGHT = 5
IP = "127.0.0.1"

# The bundled universe, read straight from the data file (not through tickerd's code).
_EXCHANGE_INFO = json.loads(
    resources.files("tickerd.data").joinpath("exchange_info.json").read_text("utf-8")
)
SYMBOLS = {s["symbol"]: s for s in _EXCHANGE_INFO["symbols"]}
TRADING = sorted(name for name, s in SYMBOLS.items() if s["status"] == "TRADING")
NOT_TRADING = sorted(name for name, s in SYMBOLS.items() if s["status"] != "TRADING")

RESULT_RE = re.compile(rb'\{"symbol":"([A-Z0-9_]+)","price":"([0-9.]+)","time":(\d+)\}')
INVALID_JSON = b'{"id":null,"status":400,"error":{"code":-1000,"msg":"Invalid JSON request."}}'


def rate_limits(count: int, limit: int = 2400) -> bytes:
    """The ``rateLimits`` tail of a reply, closing brace included."""
    return helpers_core.rate_limits(count, limit) + b"}"


def request(rid: str, symbol: str | None = None, **params: object) -> str:
    """A ``ticker.price`` request frame; ``rid`` is the id's JSON text."""
    p: dict[str, object] = {} if symbol is None else {"symbol": symbol}
    p.update(params)
    return f'{{"id":{rid},"method":"ticker.price","params":{json.dumps(p)}}}'


def check_result(body: bytes, now_ms: int) -> tuple[str, str, int]:
    """Check one ``{"symbol","price","time"}`` object's exact shape; return its fields."""
    m = RESULT_RE.fullmatch(body)
    assert m, body
    symbol, price, time_ms = m.group(1).decode(), m.group(2).decode(), int(m.group(3))
    info = SYMBOLS[symbol]
    precision = info["pricePrecision"]
    pattern = rf"[0-9]+\.[0-9]{{{precision}}}" if precision else r"[0-9]+"
    assert re.fullmatch(pattern, price), (symbol, price, precision)
    tick = next(f for f in info["filters"] if f["filterType"] == "PRICE_FILTER")["tickSize"]
    assert Decimal(price) > 0 and Decimal(price) % Decimal(tick) == 0, (symbol, price, tick)
    assert now_ms - 120_000 < time_ms <= now_ms + 1_000, (symbol, time_ms, now_ms)
    return symbol, price, time_ms


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def wait_for_connections(raw, srv, n: int, timeout: float = 5.0) -> None:
    """Poll ``/healthz`` until the server counts ``n`` open connections."""
    deadline = time.monotonic() + timeout
    while True:
        body = json.loads(raw(srv, handshake=False).get("/healthz").body)
        if body["connections"] == n:
            return
        assert time.monotonic() < deadline, body
        time.sleep(0.05)


# -- ticker.price ------------------------------------------------------------------------


def test_single_symbol_exact_reply(server):
    srv = server()
    with srv.connect() as ws:
        ws.send(request("1", "BTCUSDT"))
        reply = ws.recv(timeout=5, decode=False)
    head = b'{"id":1,"status":200,"result":'
    tail = rate_limits(HANDSHAKE_WEIGHT + 1)
    assert reply.startswith(head) and reply.endswith(tail), reply
    symbol, _, _ = check_result(reply[len(head) : -len(tail)], now_ms())
    assert symbol == "BTCUSDT"


def test_readme_30_second_example(server):
    """The README's first client example, run as printed against a real server."""
    readme = (Path(__file__).parents[1] / "README.md").read_text(encoding="utf-8")
    section = readme.split("## 30 seconds", 1)[1]
    match = re.search(r"<<'PY'\n(.*?)\nPY\n", section, re.DOTALL)
    assert match, "the README lost its 30-second example"
    srv = server()
    code = match.group(1).replace("ws://127.0.0.1:9000/ws-fapi/v1", srv.url)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=20, check=True)
    reply = done.stdout.strip()
    head = b'{"id":"1","status":200,"result":'
    tail = rate_limits(HANDSHAKE_WEIGHT + 1)
    assert reply.startswith(head) and reply.endswith(tail), reply
    symbol, _, _ = check_result(reply[len(head) : -len(tail)], now_ms())
    assert symbol == "BTCUSDT"


def test_all_symbols_sorted_every_trading_symbol(server):
    srv = server()
    assert srv.symbols == len(TRADING)
    with srv.connect() as ws:
        ws.send('{"id":"all","method":"ticker.price"}')  # params may be omitted
        reply = ws.recv(timeout=5, decode=False)
        ws.send(request('"all2"'))  # params present but empty
        reply2 = ws.recv(timeout=5, decode=False)
    head = b'{"id":"all","status":200,"result":['
    tail = b"]" + rate_limits(HANDSHAKE_WEIGHT + 2)
    assert reply.startswith(head) and reply.endswith(tail), reply[:200]
    body = reply[len(head) : -len(tail)]
    items = RESULT_RE.findall(body)
    assert b",".join(b'{"symbol":"%s","price":"%s","time":%s}' % i for i in items) == body
    now = now_ms()
    symbols = [check_result(b'{"symbol":"%s","price":"%s","time":%s}' % i, now)[0] for i in items]
    assert symbols == TRADING  # sorted, every TRADING symbol, nothing else
    assert not set(symbols) & set(NOT_TRADING)
    assert reply2.startswith(b'{"id":"all2","status":200,"result":[{"symbol":"')
    assert reply2.endswith(b"}]" + rate_limits(HANDSHAKE_WEIGHT + 4))


IDS = [
    "0",
    "-1",
    "42",
    "9223372036854775807",
    "-9223372036854775808",
    '"1"',
    '"a-b_C-9"',
    '"0f8b1c2d3e4f5a6b7c8d9e"',  # python-binance uuid22
    '"3b241101-e2bb-4255-8caf-4136c566a962"',  # official SDK uuid4 (36 chars)
    "null",
]


def test_ids_echoed_with_their_json_type(server):
    srv = server()
    with srv.connect() as ws:
        for n, rid in enumerate(IDS, 1):
            # The official SDK's key order: method, params, id.
            ws.send(f'{{"method":"ticker.price","params":{{"symbol":"ETHUSDT"}},"id":{rid}}}')
            reply = ws.recv(timeout=5, decode=False)
            assert reply.startswith(
                b'{"id":%s,"status":200,"result":{"symbol":"ETHUSDT",' % (rid.encode())
            ), reply
            assert reply.endswith(rate_limits(HANDSHAKE_WEIGHT + n)), reply
            assert json.loads(reply)["id"] == json.loads(rid)


@pytest.mark.parametrize("symbol", ["NOPEUSDT", "btcusdt", *NOT_TRADING])
def test_invalid_symbol_1121_with_rate_limits(server, symbol):
    srv = server()
    with srv.connect() as ws:
        ws.send(request('"x1"', symbol))
        reply = ws.recv(timeout=5, decode=False)
    assert reply == (
        b'{"id":"x1","status":400,"error":{"code":-1121,"msg":"Invalid symbol."}'
        + rate_limits(HANDSHAKE_WEIGHT + 1)
    )


@pytest.mark.parametrize(
    "frame",
    ["{not json", "", "[1,2]", '"text"', '{"id":1,"method":"ticker.price"', "\u00e9t\u00e9"],
)
def test_invalid_json_answered_and_connection_stays_open(server, frame):
    srv = server()
    with srv.connect() as ws:
        ws.send(frame)
        assert ws.recv(timeout=5, decode=False) == INVALID_JSON
        ws.send(request("7", "BTCUSDT"))
        assert ws.recv(timeout=5, decode=False).startswith(b'{"id":7,"status":200,"result":')


def test_return_rate_limits_false_on_the_url(server):
    srv = server()
    with srv.connect("returnRateLimits=false") as ws:
        ws.send(request("1", "BTCUSDT"))
        hidden = ws.recv(timeout=5, decode=False)
        ws.send(request("2", "BTCUSDT", returnRateLimits=True))  # a request may override
        shown = ws.recv(timeout=5, decode=False)
        ws.send(request("3", "NOPE"))
        error = ws.recv(timeout=5, decode=False)
    assert re.fullmatch(rb'\{"id":1,"status":200,"result":\{[^{}]*\}\}', hidden), hidden
    assert b"rateLimits" not in hidden
    check_result(hidden[len(b'{"id":1,"status":200,"result":') : -1], now_ms())
    # Requests stay counted while the counts are hidden: 5 + 1 + 1.
    assert shown.startswith(b'{"id":2,"status":200,"result":{"symbol":"BTCUSDT",')
    assert shown.endswith(rate_limits(HANDSHAKE_WEIGHT + 2)), shown
    assert error == b'{"id":3,"status":400,"error":{"code":-1121,"msg":"Invalid symbol."}}'


def test_500_pipelined_requests_in_one_write_answered_in_order(server, raw):
    srv = server()
    client = raw(srv)
    symbols = ["BTCUSDT", "ETHUSDT", "XRPUSDT", "SOLUSDT", "DOGEUSDT"]
    assert set(symbols) <= set(TRADING)
    frames, expected = [], []
    count = HANDSHAKE_WEIGHT
    for i in range(500):
        rid = str(i) if i % 2 else f'"r{i}"'
        if i % 10 == 0:
            text, count, symbol = request(rid), count + 2, None
        else:
            symbol = symbols[i % len(symbols)]
            text, count = request(rid, symbol), count + 1
        frames.append(client.frame(OP_TEXT, text.encode()))
        expected.append((rid.encode(), symbol, count))
    client.send(b"".join(frames))
    for rid, symbol, count in expected:
        reply = client.recv_text(timeout=10)
        if symbol is None:
            head = b'{"id":%s,"status":200,"result":[{"symbol":"' % rid
        else:
            head = b'{"id":%s,"status":200,"result":{"symbol":"%s",' % (rid, symbol.encode())
        assert reply.startswith(head), (rid, reply[:100])
        assert reply.endswith(rate_limits(count)), (rid, reply[-120:])
    with pytest.raises(TimeoutError):
        client.recv_frame(timeout=0.3)  # exactly one reply per request


# -- rate limits and bans ----------------------------------------------------------------


def test_429_then_418_ban_then_handshake_refused_418(server, raw):
    from tickerd.weights import BAN_GRACE_REQUESTS, BAN_STEPS_MS

    limit = 20
    srv = server("--weight-limit", str(limit))
    allowed = limit - HANDSHAKE_WEIGHT  # 15 requests of weight 1 fit after the handshake
    refused = BAN_GRACE_REQUESTS + 1  # then 429s, until the grace runs out
    with srv.connect() as ws:
        for i in range(1, allowed + 1):
            ws.send(request(str(i), "BTCUSDT"))
            reply = ws.recv(timeout=5, decode=False)
            assert reply.startswith(b'{"id":%d,"status":200,"result":' % i), reply
            assert reply.endswith(rate_limits(HANDSHAKE_WEIGHT + i, limit)), reply
        for i in range(allowed + 1, allowed + refused + 1):
            ws.send(request(str(i), "BTCUSDT"))
            reply = ws.recv(timeout=5, decode=False)
            msg = RATE_LIMITED.format(ip=IP, limit=limit)
            m = re.fullmatch(
                rb'\{"id":%d,"status":429,"error":\{"code":-1003,"msg":"%s",'
                rb'"data":\{"serverTime":(\d+),"retryAfter":(\d+)\}\}'
                % (i, re.escape(msg.encode()))
                + re.escape(rate_limits(HANDSHAKE_WEIGHT + i, limit)),
                reply,
            )
            assert m, reply
            server_time, retry_after = int(m.group(1)), int(m.group(2))
            assert retry_after % 60_000 == 0 and server_time < retry_after <= server_time + 60_000
        banned_count = HANDSHAKE_WEIGHT + allowed + refused + 1
        until = None
        for i in range(allowed + refused + 1, allowed + refused + 4):
            ws.send(request(str(i), "BTCUSDT"))
            reply = ws.recv(timeout=5, decode=False)
            m = re.fullmatch(
                rb'\{"id":%d,"status":418,"error":\{"code":-1003,"msg":"Way too many requests; '
                rb"IP\(127\.0\.0\.1\) banned until (\d+)\. Please use the websocket for live "
                rb'updates to avoid bans\.","data":\{"serverTime":(\d+),"retryAfter":(\d+)\}\}'
                % i
                + re.escape(rate_limits(banned_count, limit)),
                reply,
            )
            assert m, reply
            ban_until, server_time, retry_after = map(int, m.groups())
            assert retry_after == ban_until
            if until is None:
                until = ban_until
                assert ban_until - server_time == BAN_STEPS_MS[0]  # first ban: 2 minutes
            assert ban_until == until  # requests while banned do not extend the ban
    # A new connection while banned: refused at the handshake, HTTP 418 with a JSON body.
    client = raw(srv, handshake=False)
    response = client.handshake()
    assert response.status == 418, response.raw
    assert response.headers["content-type"] == "application/json"
    assert (
        response.body
        == json.dumps(
            {"code": -1003, "msg": BANNED.format(ip=IP, until=until)}, separators=(",", ":")
        ).encode()
    )
    retry_after_s = int(response.headers["retry-after"])
    assert 0 < retry_after_s <= BAN_STEPS_MS[0] // 1000
    assert client.wait_closed(5) == b""


def test_connect_limit_4th_attempt_gets_429(server, raw):
    srv = server("--connect-limit", "3")
    for _ in range(3):
        client = raw(srv)
        client.send_close(1000)
        assert client.expect_close().close_code == 1000
        client.wait_closed()
    client = raw(srv, handshake=False)
    response = client.handshake()
    assert response.status == 429, response.raw
    assert response.headers["content-type"] == "application/json"
    assert response.body == (
        b'{"code":-1003,"msg":"Too many connection attempts from IP(127.0.0.1); '
        b'limit is 3 per 5 minutes."}'
    )
    # Like the weight 429/418: when the attempt window (5 clock minutes) frees, in seconds.
    left_s = 300 - time.time() % 300
    assert left_s - 2 <= int(response.headers["retry-after"]) <= left_s + 2, response.headers


def test_max_connections_4th_concurrent_gets_503(server, raw):
    srv = server("--max-connections", "3")
    with contextlib.ExitStack() as stack:
        open_ = [stack.enter_context(srv.connect()) for _ in range(3)]
        client = raw(srv, handshake=False)
        response = client.handshake()
        assert response.status == 503, response.raw
        assert response.body == (
            b'{"code":-1008,"msg":"Server is currently overloaded with other requests. '
            b'Please try again in a few minutes."}'
        )
        # The three are still served; once one leaves, a newcomer gets in.
        for n, ws in enumerate(open_):
            ws.send(request(str(n), "BTCUSDT"))
            assert ws.recv(timeout=5, decode=False).startswith(b'{"id":%d,"status":200' % n)
        open_.pop().close()
        wait_for_connections(raw, srv, 2)
        with srv.connect() as ws:
            ws.send(request("9", "BTCUSDT"))
            assert ws.recv(timeout=5, decode=False).startswith(b'{"id":9,"status":200')


# -- HTTP surface of the handshake ---------------------------------------------------------


def test_healthz(server, raw):
    srv = server()
    response = raw(srv, handshake=False).get("/healthz")
    assert response.status == 200
    assert response.headers["content-type"] == "application/json"
    assert response.body == (
        b'{"status":"ok","symbols":%d,"connections":0,"feeds":{"synthetic":'
        b'{"state":"up","symbols":%d,"seed":1,"tick_rate":20.0}}}' % (len(TRADING), len(TRADING))
    )
    with srv.connect():
        wait_for_connections(raw, srv, 1)


@pytest.mark.parametrize(
    ("path", "flags"),
    [("/", ()), ("/ws", ("--streams", "off")), ("/wsx", ()), ("/ws-fapi/v2", ()),
     ("/ws-fapi/v1/extra", ()), ("/fapi/v1/ws", ()), ("/user/ws", ())],
)  # fmt: skip
def test_wrong_path_404_at_handshake(server, raw, path, flags):
    # /ws is a market-stream path unless the streams are off (tests/test_streams_e2e.py)
    srv = server(*flags)
    client = raw(srv, handshake=False)
    response = client.handshake(path)
    assert response.status == 404, response.raw
    assert client.wait_closed(5) == b""


def test_firefox_connection_header_token_list(server, raw):
    srv = server()
    client = raw(srv, headers={"Connection": "keep-alive, Upgrade"})  # asserts 101
    client.send_text(request("1", "BTCUSDT"))
    assert client.recv_text().startswith(b'{"id":1,"status":200,"result":{"symbol":"BTCUSDT",')


def upgrade_request(headers: dict[str, str | None], path: str = "/ws-fapi/v1") -> bytes:
    """An upgrade request with the usual headers; a None value leaves that header out."""
    base: dict[str, str | None] = {
        "Host": "127.0.0.1",
        "Upgrade": "websocket",
        "Connection": "Upgrade",
        "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
        "Sec-WebSocket-Version": "13",
    }
    base.update(headers)
    lines = "".join(f"{k}: {v}\r\n" for k, v in base.items() if v is not None)
    return f"GET {path} HTTP/1.1\r\n{lines}\r\n".encode("latin-1")


@pytest.mark.parametrize("version", ["8", "7", "12", "14", "", "13, 8", None])
def test_unsupported_websocket_version_gets_426_naming_13(server, raw, version):
    """RFC 6455 §4.4: a version the server does not speak gets 426 and the version it does;
    the refused attempt costs no weight (the next connection's count starts at 5)."""
    srv = server()
    client = raw(srv, handshake=False)
    client.send(upgrade_request({"Sec-WebSocket-Version": version}))
    response = client.read_http()
    assert response.status == 426, response.raw
    assert response.headers["sec-websocket-version"] == "13"
    assert response.headers["upgrade"] == "websocket"
    assert client.wait_closed(5) == b""
    ok_client = raw(srv)
    ok_client.send_text(request("1", "BTCUSDT"))
    assert ok_client.recv_text().endswith(rate_limits(HANDSHAKE_WEIGHT + 1))


def test_two_version_headers_get_426(server, raw):
    srv = server()
    client = raw(srv, handshake=False)
    client.send(upgrade_request({}).replace(b"\r\n\r\n", b"\r\nSec-WebSocket-Version: 8\r\n\r\n"))
    assert client.read_http().status == 426


@pytest.mark.parametrize("host", [None, "", "twice"], ids=["missing", "empty", "twice"])
@pytest.mark.parametrize("path", ["/ws-fapi/v1", "/healthz"])
def test_request_without_exactly_one_host_gets_400(server, raw, host, path):
    """RFC 7230 §5.4: an HTTP/1.1 request without a Host header, or with two, is a 400."""
    srv = server()
    client = raw(srv, handshake=False)
    data = upgrade_request({"Host": None if host in (None, "twice") else host}, path)
    if host == "twice":
        data = data.replace(b"\r\n\r\n", b"\r\nHost: a\r\nHost: b\r\n\r\n")
    client.send(data)
    response = client.read_http()
    assert response.status == 400, response.raw
    assert b"Host" in response.body
    assert client.wait_closed(5) == b""


def test_query_string_with_path_is_accepted(server, raw):
    srv = server()
    client = raw(srv, path=srv.path + "?returnRateLimits=true")
    client.send_text(request("1", "BTCUSDT"))
    assert client.recv_text().endswith(rate_limits(HANDSHAKE_WEIGHT + 1))


# -- configuration from the environment ----------------------------------------------------


def test_tickerd_env_vars(server):
    srv = server(env={"TICKERD_WEIGHT_LIMIT": "37", "TICKERD_PATH": "/custom/ws"})
    assert srv.url.endswith(f":{srv.port}/custom/ws")
    with srv.connect() as ws:
        ws.send(request("1", "BTCUSDT"))
        assert ws.recv(timeout=5, decode=False).endswith(rate_limits(6, 37))


def test_flag_overrides_env_var(server):
    srv = server("--weight-limit", "41", env={"TICKERD_WEIGHT_LIMIT": "37"})
    with srv.connect() as ws:
        ws.send(request("1", "BTCUSDT"))
        assert ws.recv(timeout=5, decode=False).endswith(rate_limits(6, 41))


# -- slow readers --------------------------------------------------------------------------


@pytest.mark.timeout(30)
def test_slow_reader_cut_off_memory_bounded_others_served(server, raw):
    srv = server("--max-send-buffer-bytes", "262144", "--weight-limit", "100000000")
    with srv.connect() as ws:  # warm the caches so the baseline includes them
        ws.send(request("0"))
        ws.recv(timeout=5)
    baseline_kb = srv.rss_kb()
    client = raw(srv, rcvbuf=4096)
    frame = client.frame(OP_TEXT, request("1").encode())
    batch = frame * 500
    write_failed = False
    for _ in range(10):  # 5000 all-symbols requests (~25 MB of replies), never read
        try:
            client.send(batch)
        except (BrokenPipeError, ConnectionResetError):
            write_failed = True
            break
    # The client starts reading: it must see the end of the stream (EOF or reset), not
    # the 25 MB of replies it asked for.
    seen = client.wait_closed(10)
    assert len(seen) < 8 * 1024 * 1024, len(seen)
    srv.wait_log("cutting off 127.0.0.1")  # and says so
    grown_kb = srv.rss_kb() - baseline_kb
    peak_kb = srv.rss_kb("VmHWM") - baseline_kb
    assert grown_kb < 50 * 1024, f"RSS grew by {grown_kb} kB (write failed: {write_failed})"
    assert peak_kb < 50 * 1024, f"peak RSS grew by {peak_kb} kB"
    with srv.connect() as ws:
        ws.send(request("2", "BTCUSDT"))
        assert ws.recv(timeout=5, decode=False).startswith(b'{"id":2,"status":200,"result":')


# -- stopping ------------------------------------------------------------------------------


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_stops_cleanly_clients_get_1001(server, raw, sig):
    srv = server()
    with srv.connect() as ws:
        ws.send(request("1", "BTCUSDT"))
        ws.recv(timeout=5)
        stubborn = raw(srv)  # never answers the close frame
        wait_for_connections(raw, srv, 2)
        t0 = time.monotonic()
        srv.signal(sig)
        with pytest.raises(ConnectionClosed) as info:
            ws.recv(timeout=5)
        assert info.value.rcvd is not None and info.value.rcvd.code == 1001
        frame = stubborn.recv_frame(timeout=5)
        assert (frame.opcode, frame.payload) == (OP_CLOSE, b"\x03\xe9")  # 1001, no reason
        stubborn.wait_closed(5)  # dropped although it never answered
        assert srv.wait_exit(5) == 0
        assert time.monotonic() - t0 < 5
    srv.wait_log("tickerd stopping")
    assert "Traceback" not in srv.log(), srv.log()
    with pytest.raises(OSError):  # the port is closed
        socket.create_connection((IP, srv.port), timeout=1).close()


def test_exits_nonzero_on_port_in_use(server):
    srv = server()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TICKERD_")}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "tickerd",
            "serve",
            "--host",
            IP,
            "--port",
            str(srv.port),
            "--rest-port",
            "0",
        ],
        capture_output=True,
        check=False,
        timeout=10,
        env=env,
    )
    assert done.returncode == 1, done
    assert done.stderr.decode().startswith("tickerd: "), done.stderr

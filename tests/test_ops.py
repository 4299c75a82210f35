"""The ops surface end to end: a real ``tickerd serve``, real sockets, exact counter values.

``/metrics`` is scraped before and after known traffic and the difference checked to the
unit; ``/status`` is read after the same traffic. The dashboard's live channel is opened
with a raw socket in Firefox's handshake form.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from conftest import OP_CLOSE, OP_TEXT, RawClient, Server, close_payload

DATA = Path(__file__).parent / "data" / "replay"
Labels = tuple[tuple[str, str], ...]


def get(url: str, timeout: float = 5.0) -> tuple[int, dict[str, str], bytes]:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=timeout) as r:
            return r.status, {k.lower(): v for k, v in r.headers.items()}, r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, {k.lower(): v for k, v in exc.headers.items()}, exc.read()


def scrape(srv: Server) -> dict[tuple[str, Labels], float]:
    """Every sample of ``/metrics`` by (name, sorted labels)."""
    assert srv.ops_url is not None
    status, headers, body = get(srv.ops_url + "/metrics")
    assert status == 200
    assert headers["content-type"].startswith("text/plain")
    out: dict[tuple[str, Labels], float] = {}
    for family in text_string_to_metric_families(body.decode()):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(m: dict[tuple[str, Labels], float], name: str, **labels: str) -> float:
    return m.get((name, tuple(sorted(labels.items()))), 0.0)


def status_doc(srv: Server, query: str = "") -> dict[str, Any]:
    assert srv.ops_url is not None
    code, _, body = get(srv.ops_url + "/status" + query)
    assert code == 200, body
    doc: dict[str, Any] = json.loads(body)
    return doc


def price_request(rid: int, symbol: str = "BTCUSDT") -> str:
    return json.dumps({"id": rid, "method": "ticker.price", "params": {"symbol": symbol}})


def wait_for(check: Any, timeout: float = 5.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result or time.monotonic() > deadline:
            return result
        time.sleep(0.05)


# -- /metrics ------------------------------------------------------------------------------


def test_metrics_count_known_traffic_exactly(server):
    srv = server()
    before = scrape(srv)
    with srv.connect() as ws:
        for rid in range(7):
            ws.send(price_request(rid, ("BTCUSDT", "ETHUSDT", "SOLUSDT")[rid % 3]))
            assert json.loads(ws.recv())["status"] == 200
        ws.send(json.dumps({"id": 99, "method": "depth"}))
        assert json.loads(ws.recv())["status"] == 400
        ws.send("{not json")
        assert json.loads(ws.recv())["status"] == 400
        ws.send(price_request(100, "NOPEUSDT"))
        assert json.loads(ws.recv())["status"] == 400
    assert srv.rest_url is not None
    assert get(srv.rest_url + "/fapi/v1/ticker/price?symbol=BTCUSDT")[0] == 200
    assert get(srv.rest_url + "/fapi/v2/ticker/price")[0] == 200
    assert get(srv.rest_url + "/fapi/v1/nothing-here")[0] == 404
    after = wait_for(
        lambda: (
            m
            if value(
                m := scrape(srv), "tickerd_ws_connections_closed_total", code="1000", side="client"
            )
            else None
        )
    )
    assert after

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    req = "tickerd_requests_total"
    assert delta(req, surface="ws", method="ticker.price", status="200") == 7
    assert delta(req, surface="ws", method="ticker.price", status="400") == 1
    assert delta(req, surface="ws", method="unknown", status="400") == 1
    assert delta(req, surface="ws", method="invalid", status="400") == 1
    assert delta(req, surface="rest", method="/fapi/v1/ticker/price", status="200") == 1
    assert delta(req, surface="rest", method="/fapi/v2/ticker/price", status="200") == 1
    assert delta(req, surface="rest", method="unrouted", status="404") == 1
    total = sum(v for (name, _), v in after.items() if name == req)
    assert total - sum(v for (name, _), v in before.items() if name == req) == 13
    # handshake 5, 7 + 1 (bad symbol) + 1 (unknown method) on the WS API; REST 1 + 2 + 1
    assert delta("tickerd_request_weight_total") == 5 + 9 + 4
    assert delta("tickerd_ws_connections_opened_total") == 1
    assert delta("tickerd_ws_connections_closed_total", code="1000", side="client") == 1
    assert value(after, "tickerd_ws_connections_open") == 0
    assert value(after, "tickerd_feed_state", feed="synthetic", state="up") == 1
    assert value(after, "tickerd_feed_state", feed="synthetic", state="failed") == 0
    assert value(after, "tickerd_feed_ticks_total", feed="synthetic") >= 88  # primed symbols
    assert value(after, "tickerd_symbols_priced") == srv.symbols
    assert value(after, "process_resident_memory_bytes") > 0
    assert value(after, "tickerd_build_info", version=status_doc(srv)["version"]) == 1


def test_no_metric_label_carries_an_ip_or_a_request_id(server):
    srv = server()
    with srv.connect() as ws:
        ws.send(price_request(424242))
        ws.recv()
    _, _, body = get(srv.ops_url + "/metrics")  # type: ignore[operator]
    text = body.decode()
    assert "127.0.0.1" not in text
    assert "424242" not in text
    ip = re.compile(r"^\d{1,3}(\.\d{1,3}){3}$|:.*:")
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            for label, v in sample.labels.items():
                assert not ip.search(v), (sample.name, label, v)
                assert label not in ("ip", "client", "id", "conn"), sample.name


def test_429_and_418_answers_and_bans_are_counted(server):
    srv = server("--weight-limit", "10")
    before = scrape(srv)
    statuses: list[int] = []
    banned_until = None
    with srv.connect() as ws:  # the handshake costs 5 of the 10
        for rid in range(40):
            ws.send(price_request(rid))
            reply = json.loads(ws.recv())
            statuses.append(reply["status"])
            if reply["status"] == 418:
                banned_until = reply["error"]["data"]["retryAfter"]
    assert statuses[:5] == [200] * 5
    assert 429 in statuses and 418 in statuses and banned_until is not None
    n429, n418 = statuses.count(429), statuses.count(418)
    # A banned IP's next handshake is refused 418 before it opens.
    with pytest.raises(Exception, match="418"):
        srv.connect()
    after = wait_for(
        lambda: m if value(m := scrape(srv), "tickerd_ws_connections_open") == 0 else None
    )

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    req = "tickerd_requests_total"
    assert delta(req, surface="ws", method="ticker.price", status="200") == 5
    assert delta(req, surface="ws", method="ticker.price", status="429") == n429
    assert delta(req, surface="ws", method="ticker.price", status="418") == n418
    ans = "tickerd_rate_limited_answers_total"
    assert delta(ans, surface="ws", status="429") == n429
    assert delta(ans, surface="ws", status="418") == n418
    assert delta(ans, surface="handshake", status="418") == 1
    assert delta("tickerd_ws_connections_refused_total", reason="banned") == 1
    assert value(after, "tickerd_bans_active") == 1
    # Refused (429) requests still count, and so does the one that earns the ban; requests
    # while banned cost nothing.
    assert delta("tickerd_request_weight_total") == 5 + 5 + n429 + 1

    doc = status_doc(srv)
    assert doc["bans_total"] == 1
    (ban,) = doc["bans"]
    assert ban["ip"] == "127.0.0.1"
    assert ban["until_ms"] == banned_until
    seconds, millis = divmod(banned_until, 1000)
    assert ban["until"] == time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + (
        f".{millis:03d}Z"
    )
    assert 0 < ban["remaining_ms"] <= 120_000
    (client,) = doc["clients"]
    assert client == {
        "ip": "127.0.0.1",
        "used": 10 + n429 + 1,
        "limit": 10,
        "percent": round((10 + n429 + 1) * 10, 1),
        "banned_until_ms": banned_until,
        "bans": 1,
    }


def test_connections_closed_by_code_and_side(server):
    srv = server()
    before = scrape(srv)
    rsv = RawClient(srv.port)
    rsv.handshake()
    rsv.send(rsv.frame(OP_TEXT, price_request(1).encode(), rsv=4))  # RSV1: close 1002
    assert rsv.recv_frame().close_code == 1002
    rsv.send(rsv.frame(OP_CLOSE, close_payload(1002)))
    polite = RawClient(srv.port)
    polite.handshake()
    polite.send(polite.frame(OP_CLOSE, close_payload(4001, b"bye")))
    assert polite.recv_frame().close_code == 4001
    rude = RawClient(srv.port)
    rude.handshake()
    rude.sock.close()
    for c in (rsv, polite):
        c.sock.close()

    def closed() -> dict[tuple[str, Labels], float] | None:
        m = scrape(srv)
        done = value(m, "tickerd_ws_connections_closed_total", code="none", side="none")
        return m if value(m, "tickerd_ws_connections_open") == 0 and done else None

    after = wait_for(closed)
    assert after

    def delta(**labels: str) -> float:
        name = "tickerd_ws_connections_closed_total"
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta(code="1002", side="server") == 1
    assert delta(code="4xxx", side="client") == 1
    assert delta(code="none", side="none") == 1


def test_reply_latency_histogram_times_reads_of_sampled_milliseconds(server):
    srv = server("--control-port", "0", "--control-token", "t")
    from tickerd.control import ControlClient

    assert srv.control_url is not None
    ctl = ControlClient(srv.control_url, "t")
    # The clock frozen on a millisecond the sample takes: every read is timed.
    ctl.call("clock.freeze", at_ms=1_700_000_000_000)
    before = scrape(srv)
    with srv.connect() as ws:
        for rid in range(5):
            ws.send(price_request(rid))
            ws.recv()
        timed = scrape(srv)  # before the close frame's read
        # ... and frozen on one it skips: no read is (this connection's close included).
        ctl.call("clock.freeze", at_ms=1_700_000_000_001)
    count = "tickerd_ws_reply_latency_seconds_count"
    assert value(timed, count) - value(before, count) == 5
    inf = value(timed, "tickerd_ws_reply_latency_seconds_bucket", le="+Inf")
    assert inf == value(timed, count)
    assert value(timed, "tickerd_ws_reply_latency_seconds_sum") > 0
    with srv.connect() as ws:
        for rid in range(5):
            ws.send(price_request(rid))
            ws.recv()
    assert value(scrape(srv), count) == value(timed, count)


# -- /status -------------------------------------------------------------------------------


def test_status_shows_weight_per_ip_feeds_connections_and_faults(server):
    srv = server("--control-port", "0", "--control-token", "t")
    from tickerd.control import ControlClient

    assert srv.control_url is not None
    ctl = ControlClient(srv.control_url, "t")
    ctl.call("fault.latency", ms=5)
    with srv.connect() as ws:
        for rid in range(7):
            ws.send(price_request(rid))
            ws.recv()
        doc = status_doc(srv, "?top=5")
        assert doc["clients"][0]["ip"] == "127.0.0.1"
        assert doc["clients"][0]["used"] == 5 + 7
        assert doc["clients"][0]["limit"] == doc["weight_limit"] == 2400
        assert doc["clients_total"] == 1
        assert doc["connections"]["open"] == 1
        assert doc["connections"]["by_ip"] == [{"ip": "127.0.0.1", "open": 1}]
    (feed,) = doc["feeds"]
    assert feed["name"] == "synthetic" and feed["state"] == "up"
    assert feed["symbols"] == srv.symbols and feed["ticks"] >= srv.symbols
    assert feed["newest_tick_age_ms"] >= 0
    (fault,) = doc["faults"]
    assert fault["kind"] == "latency" and fault["min_ms"] == 5
    assert doc["faults_total"] == 1
    assert doc["bans"] == [] and doc["bans_total"] == 0
    assert doc["symbols"] == srv.symbols
    assert doc["uptime_s"] > 0 and doc["version"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", doc["now"])


@pytest.mark.parametrize("query", ["?top=0", "?top=1001", "?top=abc", "?top=" + "9" * 5000])
def test_status_refuses_a_bad_top(server, query):
    srv = server()
    code, _, body = get(srv.ops_url + "/status" + query)  # type: ignore[operator]
    assert code in (400, 414)
    if code == 400:
        assert json.loads(body) == {"error": "top must be a whole number from 1 to 1000"}


def test_ops_surface_serves_only_its_routes_and_redirects_to_the_dashboard(server):
    srv = server()
    assert srv.ops_url is not None
    assert get(srv.ops_url + "/nothing")[0] == 404
    code, headers, body = get(srv.ops_url + "/")
    assert code == 200 and b"tickerd dashboard" in body  # followed the redirect
    code, headers, body = get(srv.ops_url + "/dashboard")
    assert headers["content-type"].startswith("text/html")
    assert "default-src 'none'" in headers["content-security-policy"]
    # Everything the page loads comes from the ops port itself.
    assert not re.search(rb"(src|href)=\"(https?:)?//", body)
    for asset in (b"/dashboard/dashboard.js", b"/dashboard/dashboard.css"):
        assert asset in body
        assert get(srv.ops_url + asset.decode())[0] == 200


def test_ops_port_answers_405_to_other_methods(server):
    srv = server()
    request = urllib.request.Request(srv.ops_url + "/status", data=b"{}", method="POST")
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=5)
    assert refused.value.code == 405 and refused.value.headers["Allow"] == "GET,HEAD"


def _ops_get(port: int, source: str) -> bytes:
    """The status line of one ``GET /status`` on a new connection from ``source``."""
    with socket.create_connection(("127.0.0.1", port), 5, (source, 0)) as sock:
        sock.sendall(b"GET /status?top=1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    return data.split(b"\r\n", 1)[0]


def test_ops_port_caps_connections_per_ip_and_in_all(server):
    from tickerd.ops.surface import OPS_LIMITS

    srv = server()
    port = int(srv.ops_url.rsplit(":", 1)[1])
    per_ip, total = OPS_LIMITS.max_connections_per_ip, OPS_LIMITS.max_connections
    held: list[socket.socket] = []
    try:
        held += [
            socket.create_connection(("127.0.0.1", port), 5, ("127.0.0.2", 0))
            for _ in range(per_ip)
        ]
        assert get(srv.ops_url + "/status?top=1")[0] == 200  # other IPs are not held back
        assert _ops_get(port, "127.0.0.2") == b"HTTP/1.1 503 Service Unavailable"
        held.pop().close()
        wait_for(lambda: _ops_get(port, "127.0.0.2").endswith(b"200 OK"))
        held += [  # up to the total, from other addresses
            socket.create_connection(("127.0.0.1", port), 5, (f"127.0.0.{3 + k // per_ip}", 0))
            for k in range(total - per_ip + 1)
        ]
        assert _ops_get(port, "127.0.1.1") == b"HTTP/1.1 503 Service Unavailable"
    finally:
        for sock in held:
            sock.close()
    wait_for(lambda: get(srv.ops_url + "/status?top=1")[0] == 200)


# -- the dashboard's live channel ---------------------------------------------------------


def test_live_channel_accepts_firefoxs_handshake(server):
    srv = server()
    assert srv.ops_url is not None
    port = int(srv.ops_url.rsplit(":", 1)[1])
    client = RawClient(port)
    response = client.handshake(  # checks Sec-WebSocket-Accept too
        "/dashboard/live",
        {
            "User-Agent": "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0",
            "Connection": "keep-alive, Upgrade",
            "Origin": f"http://127.0.0.1:{port}",
        },
    )
    assert response.status == 101, response.raw
    assert response.headers["upgrade"].lower() == "websocket"
    frame = client.recv_frame()
    assert frame.opcode == OP_TEXT
    snapshot = json.loads(frame.payload)
    assert {"prices", "requests_per_s", "clients", "bans", "feeds", "faults"} <= set(snapshot)
    assert len(snapshot["prices"]) == srv.symbols
    row = snapshot["prices"][0]
    assert set(row) == {"symbol", "price", "time", "age_ms", "change", "change_pct", "move"}
    assert isinstance(row["price"], str)  # exact decimal text, never a float
    second = client.recv_frame(timeout=5)  # the next second's snapshot
    assert json.loads(second.payload)["now_ms"] >= snapshot["now_ms"]
    client.close()


# -- logs ------------------------------------------------------------------------------------


def test_json_logs_one_object_per_line_with_connection_lines(server):
    srv = server("--log-format", "json", "--log-level", "DEBUG")
    with srv.connect() as ws:
        ws.send(price_request(1))
        ws.recv()
    srv.wait_log("closed by the client: 1000")
    lines = srv.log().splitlines()
    docs = [json.loads(line) for line in lines]  # every line is one JSON object
    assert all(set(d) >= {"time", "level", "logger", "message"} for d in docs)
    messages = {d["message"]: d for d in docs}
    ready = [m for m in messages if m.startswith("tickerd ready: ")]
    assert ready and messages[ready[0]]["level"] == "INFO"
    opened = [
        d for d in docs if re.fullmatch(r"connection \d+ from 127\.0\.0\.1 opened", d["message"])
    ]
    closed = [d for d in docs if d["message"].endswith("closed by the client: 1000 ''")]
    assert opened and closed
    assert opened[0]["level"] == closed[0]["level"] == "DEBUG"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", docs[0]["time"])


def test_feed_state_changes_are_logged(server, tmp_path):
    good = tmp_path / "good" / "BTCUSDT-trades-2024-01-01.csv"
    good.parent.mkdir()
    shutil.copy(DATA / "BTCUSDT-trades-2024-01-01.csv", good)
    srv = server("--feed", "replay", "--replay-path", str(good), "--replay-speed", "max")
    line = srv.wait_log("feed replay: starting -> ")  # not the start-up summary's line
    assert "feed replay: starting -> finished" in line or "starting -> up" in line
    srv.wait_log("-> finished")
    assert wait_for(lambda: status_doc(srv)["feeds"][0]["state"] == "finished")

    bad = tmp_path / "bad" / "BTCUSDT-trades-2024-01-01.csv"
    bad.parent.mkdir()
    rows = (DATA / "BTCUSDT-trades-2024-01-01.csv").read_text().splitlines(keepends=True)
    rows[150] = "1,abc,1,1,1704067300000,true\n"
    bad.write_text("".join(rows))
    broken = server("--feed", "replay", "--replay-path", str(bad), "--replay-speed", "max")
    warning = broken.wait_log("-> failed")
    assert "WARNING tickerd.feeds: feed replay:" in warning
    m = scrape(broken)
    assert value(m, "tickerd_feed_state", feed="replay", state="failed") == 1
    assert value(m, "tickerd_feed_ticks_total", feed="replay") >= 149


# -- flags ---------------------------------------------------------------------------------


def run_serve(*flags: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TICKERD_")}
    cmd = [sys.executable, "-m", "tickerd", "serve", "--port", "0", "--rest-port", "-1", *flags]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=30, env=env, check=False)


def test_bad_log_format_and_level_stop_with_one_line():
    done = run_serve("--log-format", "xml")
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert "--log-format" in done.stderr and "text, json" in done.stderr
    done = run_serve("--log-level", "LOUD")
    assert done.returncode == 2 and "--log-level" in done.stderr


def test_taken_ops_port_stops_the_server_with_a_clear_message():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = run_serve("--ops-port", str(port))
    assert done.returncode == 1
    assert f"cannot listen on the ops port 127.0.0.1:{port}" in done.stderr
    assert "--ops-port -1 turns the ops surface off" in done.stderr
    assert "Traceback" not in done.stderr


def test_ops_port_minus_one_turns_the_surface_off(server):
    srv = server("--ops-port", "-1")
    assert srv.ops_url is None
    assert "tickerd ops ready" not in srv.log()


def test_live_channel_bounds_dashboards_and_their_messages(server):
    from tickerd.ops.live import MAX_CLIENTS, MAX_INBOUND_BYTES

    srv = server()
    assert srv.ops_url is not None
    port = int(srv.ops_url.rsplit(":", 1)[1])
    pages = []
    try:
        for _ in range(MAX_CLIENTS):
            page = RawClient(port)
            pages.append(page)
            assert page.handshake("/dashboard/live").status == 101
            assert page.recv_frame().opcode == OP_TEXT
        extra = RawClient(port)
        pages.append(extra)
        refused = extra.handshake("/dashboard/live")
        assert refused.status == 503
        assert f"at most {MAX_CLIENTS} dashboards".encode() in refused.body
        # A page may send nothing of size: an oversized message closes it (1009).
        chatty = pages[0]
        chatty.send(chatty.frame(OP_TEXT, b"x" * (MAX_INBOUND_BYTES + 1)))
        assert chatty.expect_close().close_code == 1009
    finally:
        for page in pages:
            page.close()


def test_json_log_line_carries_a_traceback_as_one_string():
    import logging

    from tickerd.ops.logs import JsonFormatter

    record = logging.LogRecord(
        "tickerd.store", logging.ERROR, __file__, 1, "failed %s", ("now",), None
    )
    try:
        raise ValueError("boom\nsecond line")
    except ValueError:
        record.exc_info = sys.exc_info()
    line = JsonFormatter().format(record)
    assert "\n" not in line
    doc = json.loads(line)
    assert doc["message"] == "failed now" and doc["level"] == "ERROR"
    assert doc["logger"] == "tickerd.store"
    assert "ValueError: boom\nsecond line" in doc["exception"]


def test_store_flush_durations_and_failures_are_scraped(tmp_path):
    import asyncio
    import sqlite3

    import aiohttp

    from tickerd.app import Service
    from tickerd.config import Settings

    async def scenario() -> str:
        settings = Settings(
            host="127.0.0.1", port=0, rest_port=-1, tick_rate=0.0, ops_port=0,
            store=str(tmp_path / "p.db"), store_flush_interval=3600.0,
        )  # fmt: skip
        service = Service(settings)
        await service.start()
        try:
            store = service.store
            assert store is not None and service.ops.url is not None
            write = store._write
            failures = [sqlite3.OperationalError("disk I/O error")]

            def flaky(ticks: Any) -> Any:
                if failures:
                    raise failures.pop()
                return write(ticks)

            store._write = flaky  # type: ignore[method-assign]
            book = service.book
            book.apply(
                [book.make_tick("BTCUSDT", "97000.10", 1), book.make_tick("ETHUSDT", "3000.01", 1)]
            )
            assert await store.flush() == 0  # fails, kept for the next flush
            assert await store.flush() == service.store.written  # every primed symbol too
            async with (
                aiohttp.ClientSession() as http,
                http.get(service.ops.url + "/metrics") as r,
            ):
                return await r.text()
        finally:
            await service.stop()

    text = asyncio.run(scenario())
    m = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
    }
    assert value(m, "tickerd_store_flush_failures_total") == 1
    assert value(m, "tickerd_store_flush_duration_seconds_count") == 1
    assert value(m, "tickerd_store_flush_duration_seconds_sum") > 0
    assert value(m, "tickerd_store_ticks_written_total") >= 2

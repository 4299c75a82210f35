"""``--stream-port``: the market streams on a port of their own (one process, TLS, and a
process group of workers), and the stream figures of the ops port's ``/status`` and
``/metrics`` (real processes, real sockets)."""

from __future__ import annotations

import json
import re
import socket
import ssl
import time
import urllib.request
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
import trustme
from prometheus_client.parser import text_string_to_metric_families
from websockets.sync.client import ClientConnection
from websockets.sync.client import connect as ws_connect

from cluster_procs import node, sources_for, wait_for
from conftest import Closed, RawClient
from push_feed import push, push_server

pytestmark = pytest.mark.timeout(90)

OP_TEXT = 0x1
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1].split("/")[0])


def open_ws(url: str, **kw: Any) -> ClientConnection:
    return ws_connect(url, proxy=None, open_timeout=5, close_timeout=2, ping_interval=None,
                      compression=None, **kw)  # fmt: skip


def ticker_price(ws: ClientConnection, symbol: str) -> dict[str, Any]:
    ws.send(json.dumps({"id": 1, "method": "ticker.price", "params": {"symbol": symbol}}))
    reply: dict[str, Any] = json.loads(ws.recv(timeout=5))
    assert reply["status"] == 200, reply
    result: dict[str, Any] = reply["result"]
    return result


def handshake_status(port: int, path: str) -> int:
    client = RawClient(port)
    try:
        return client.handshake(path).status
    finally:
        client.close()


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=20) as reply:
        return json.loads(reply.read())


def scrape(url: str) -> Samples:
    with urllib.request.urlopen(url + "/metrics", timeout=20) as reply:
        text = reply.read().decode()
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(m: Samples, name: str, **labels: str) -> float:
    return m.get((name, tuple(sorted(labels.items()))), 0.0)


def now_ms() -> int:
    return time.time_ns() // 1_000_000


# -- one process ----------------------------------------------------------------------------


def test_streams_on_their_own_port_and_the_api_on_its_own(server: Any) -> None:
    srv, port = push_server(server, "--stream-port", "0")
    assert srv.stream_url is not None and port_of(srv.stream_url) != srv.port
    streams = port_of(srv.stream_url)
    # Each port answers its own paths only; /healthz on both.
    assert handshake_status(srv.port, "/market/ws/btcusdt@aggTrade") == 404
    assert handshake_status(srv.port, "/stream?streams=btcusdt@trade") == 404
    assert handshake_status(streams, srv.path) == 404
    assert handshake_status(streams, "/healthz") == 200
    symbols = ("BTCUSDT", "DOGEUSDT")
    with (
        open_ws(
            srv.stream_url + "/market/stream?streams=btcusdt@aggTrade/dogeusdt@aggTrade"
        ) as sub,
        open_ws(srv.stream_url + "/public/ws/btcusdt@trade") as trades,
        srv.connect() as api,
    ):
        t = now_ms()
        push(port, [{"symbol": "BTCUSDT", "price": "43000.1", "time": t, "qty": "0.5"},
                    {"symbol": "DOGEUSDT", "price": "0.081230", "time": t + 1, "qty": "100"}])  # fmt: skip
        got = {}
        while len(got) < 2:
            event = json.loads(sub.recv(timeout=5))
            got[event["data"]["s"]] = event["data"]
        trade = json.loads(trades.recv(timeout=5))
        for symbol in symbols:
            price = ticker_price(api, symbol)
            assert got[symbol]["e"] == "aggTrade" and got[symbol]["p"] == price["price"]
            assert got[symbol]["T"] == price["time"]
        assert (trade["e"], trade["p"], trade["q"]) == ("trade", "43000.10", "0.5")


def test_stream_port_keeps_the_per_connection_bounds(server: Any) -> None:
    srv = server("--tick-rate", "0", "--stream-port", "0", "--stream-messages-per-s", "3",
                 "--stream-max-streams", "2")  # fmt: skip
    assert srv.stream_url is not None
    streams = port_of(srv.stream_url)
    client = RawClient(streams)
    try:
        assert client.handshake("/ws").status == 101
        client.send(client.frame(OP_TEXT, b'{"method":"LIST_SUBSCRIPTIONS","id":1}') * 4)
        assert [client.recv_frame().opcode for _ in range(3)] == [OP_TEXT] * 3
        assert client.recv_frame().close_code == 1008
    finally:
        client.close()
    too_many = RawClient(streams)
    try:
        response = too_many.handshake("/stream?streams=btcusdt@trade/ethusdt@trade/dogeusdt@trade")
        assert (response.status, response.body) == (400, b"3 streams; at most 2 per connection")
    finally:
        too_many.close()


def test_stream_port_serves_wss_with_the_api_ports_certificate(server: Any, tmp_path: Path) -> None:
    ca = trustme.CA()
    leaf = ca.issue_cert("127.0.0.1")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.write_bytes(b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
    leaf.private_key_pem.write_to_path(str(key))
    srv = server("--tick-rate", "200", "--stream-port", "0", "--tls-cert", str(cert),
                 "--tls-key", str(key))  # fmt: skip
    assert srv.stream_url is not None and srv.stream_url.startswith("wss://127.0.0.1:")
    context = ssl.create_default_context()
    ca.configure_trust(context)
    with open_ws(srv.stream_url + "/market/ws/!miniTicker@arr", ssl=context) as sub:
        tickers = json.loads(sub.recv(timeout=10))
    assert tickers and {t["e"] for t in tickers} == {"24hrMiniTicker"}
    plain = RawClient(port_of(srv.stream_url))
    try:
        with pytest.raises((Closed, OSError)):  # no TLS: no handshake at all
            plain.handshake("/market/ws/!miniTicker@arr", timeout=2)
    finally:
        plain.close()


# -- /status and /metrics -------------------------------------------------------------------


@pytest.mark.parametrize("own_port", [True, False])
def test_status_and_metrics_count_stream_sockets_subscriptions_and_cuts(
    server: Any, own_port: bool
) -> None:
    flags = ("--stream-port", "0") if own_port else ()
    srv, port = push_server(server, "--stream-messages-per-s", "3", *flags)
    base = srv.stream_url or f"ws://127.0.0.1:{srv.port}"
    assert srv.ops_url is not None
    with ExitStack() as stack:
        aggs = [stack.enter_context(open_ws(base + "/market/ws/btcusdt@aggTrade"))
                for _ in range(3)]  # fmt: skip
        mixed = stack.enter_context(open_ws(
            base + "/market/stream?streams=btcusdt@kline_1m/ethusdt@kline_5m/!miniTicker@arr"
            "/btcusdt@markPrice/btcusdt@trade"))  # fmt: skip
        mixed.send('{"method":"SUBSCRIBE","params":["ethusdt@depth5","btcusdt@markPrice"],"id":7}')
        assert json.loads(mixed.recv(timeout=5)) == {"result": None, "id": 7}
        push(port, [{"symbol": "BTCUSDT", "price": f"4300{i}.5", "time": now_ms(), "qty": "1"}
                    for i in range(5)])  # fmt: skip
        for sub in aggs:
            assert json.loads(sub.recv(timeout=5))["e"] == "aggTrade"
        # One socket over its messages a second: closed 1008, counted as cut off.
        flood = RawClient(port_of(base))
        flood.handshake("/ws")
        flood.send(flood.frame(OP_TEXT, b'{"method":"LIST_SUBSCRIPTIONS","id":1}') * 4)
        assert [flood.recv_frame().opcode for _ in range(3)] == [OP_TEXT] * 3
        assert flood.expect_close(timeout=5).close_code == 1008
        flood.close()
        doc = wait_for_streams(srv.ops_url, lambda s: s["cut"]["too_many_messages"] == 1
                               and s["events"] >= 5 and s["connections"] == 4)  # fmt: skip
        metrics = scrape(srv.ops_url)
    s = doc["streams"]
    assert s["port"] == (port_of(base) if own_port else None)
    assert (s["connections"], s["connections_opened"]) == (4, 5)
    assert s["by_type"] == {"!miniTicker@arr": 1, "aggTrade": 3, "kline": 2}
    assert s["subscriptions"] == 6 and s["streams"] == 4
    # /market carries no @trade: acknowledged, silent, listed with the unpublished names.
    assert s["silent"] == {"btcusdt@markPrice": 1, "btcusdt@trade": 1, "ethusdt@depth5": 1}
    assert (s["silent_total"], s["silent_subscriptions"]) == (3, 3)
    assert s["events"] >= 5 and s["frames"] >= 15  # 5 aggTrades, one frame to each of 3
    assert s["cut"] == {"slow_reader": 0, "send_budget": 0, "too_many_messages": 1}
    assert value(metrics, "tickerd_stream_connections_open") == 4
    assert value(metrics, "tickerd_stream_subscriptions", type="aggTrade") == 3
    assert value(metrics, "tickerd_stream_subscriptions", type="kline") == 2
    assert value(metrics, "tickerd_stream_silent_subscriptions") == 3
    assert value(metrics, "tickerd_stream_events_total") == s["events"]
    assert value(metrics, "tickerd_stream_frames_total") >= s["frames"]
    assert value(metrics, "tickerd_stream_subscribers_cut_total", reason="too_many_messages") == 1
    # Once the sockets are gone, so are their subscriptions; the totals stay.
    doc = wait_for_streams(srv.ops_url, lambda s: s["connections"] == 0)
    assert doc["streams"]["subscriptions"] == 0 and doc["streams"]["silent"] == {}
    assert doc["streams"]["connections_opened"] == 5


def wait_for_streams(url: str, check: Any, timeout: float = 10.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        doc: dict[str, Any] = get_json(url + "/status")
        if check(doc["streams"]) or time.monotonic() > deadline:
            return doc
        time.sleep(0.1)


def test_a_subscriber_that_does_not_read_is_counted_cut_off(server: Any) -> None:
    srv, port = push_server(server, "--max-send-buffer-bytes", "65536", "--stream-port", "0")
    assert srv.stream_url is not None and srv.ops_url is not None
    slow = RawClient(port_of(srv.stream_url), rcvbuf=4096)
    assert slow.handshake("/ws/btcusdt@trade").status == 101
    t = now_ms()
    for _ in range(6):
        push(port, [{"symbol": "BTCUSDT", "price": f"{40000 + (i % 500) / 10:.1f}",
                     "time": t, "qty": "0.001"} for i in range(10_000)])  # fmt: skip
    srv.wait_log("cutting off 127.0.0.1", timeout=20)
    doc = wait_for_streams(srv.ops_url, lambda s: s["cut"]["slow_reader"] == 1)
    assert doc["streams"]["cut"]["slow_reader"] == 1
    slow.close()


def test_status_shows_no_streams_when_they_are_off(server: Any) -> None:
    srv = server("--tick-rate", "0", "--streams", "off")
    assert srv.ops_url is not None
    assert get_json(srv.ops_url + "/status")["streams"] is None
    assert "tickerd_stream_" not in urllib.request.urlopen(srv.ops_url + "/metrics").read().decode()


# -- a process group ------------------------------------------------------------------------

_STREAM_PORT = re.compile(r"stream port (\d+)")


def test_workers_share_the_stream_port_and_the_group_status_adds_them_up() -> None:
    (a,), (b,) = sources_for(2)
    with node(["--tick-rate", "50", "--stream-port", "0", "--ops-port", "0"]) as n:
        n.wait_healthy([a, b])
        found = _STREAM_PORT.search(n.text())
        assert found is not None, n.text()
        streams = int(found.group(1))
        wait_for(lambda: "tickerd ops ready" in n.text(), 30, "the ops process is ready")
        ops = re.search(r"tickerd ops ready: (http://\S+)", n.text())
        assert ops is not None
        with ExitStack() as stack:
            subs = []
            for source in (a, b):  # one subscriber on each worker (the pin decides)
                sock = socket.create_connection(("127.0.0.1", streams), 5, (source, 0))
                subs.append(stack.enter_context(open_ws(
                    f"ws://127.0.0.1:{streams}/market/stream?streams=!miniTicker@arr"
                    "/btcusdt@markPrice", sock=sock)))  # fmt: skip
            for sub in subs:
                event = json.loads(sub.recv(timeout=10))
                assert event["stream"] == "!miniTicker@arr" and event["data"]
            with open_ws(f"ws://127.0.0.1:{n.ws_port}/ws-fapi/v1") as api:
                assert ticker_price(api, "BTCUSDT")["symbol"] == "BTCUSDT"
            doc = get_json(ops.group(1) + "/status")
            metrics = scrape(ops.group(1))
    s = doc["streams"]
    assert (s["connections"], s["port"]) == (2, streams)
    assert s["by_type"] == {"!miniTicker@arr": 2}
    assert s["silent"] == {"btcusdt@markPrice": 2} and s["silent_total"] == 1
    assert s["events"] >= 2 and s["frames"] >= 2
    assert value(metrics, "tickerd_stream_connections_open") == 2
    assert value(metrics, "tickerd_stream_subscriptions", type="!miniTicker@arr") == 2

"""The ops port of ``tickerd serve --workers N``: the supervisor's ops process merges the
workers' views (real supervisor, worker and ops processes on real sockets), and the merge
rules and bounds on their own."""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from websockets.sync.client import connect

from cluster_procs import Node, needs_redis, node, redis_server, sources_for, wait_for
from tickerd.cluster.reuseport import pin_index
from tickerd.ops import group
from tickerd.ops.merge import CounterCarry, WorkerView, merge_metrics, merge_prices, merge_status
from tickerd.ops.status import MAX_LISTED
from tickerd.weights import WS_HANDSHAKE_WEIGHT

pytestmark = pytest.mark.timeout(120)
PRICE = "/fapi/v1/ticker/price?symbol=BTCUSDT"
REST_200 = ("tickerd_requests_total", {"surface": "rest", "method": "/fapi/v1/ticker/price",
                                       "status": "200"})  # fmt: skip
WS_200 = ("tickerd_requests_total", {"surface": "ws", "method": "ticker.price", "status": "200"})
_OPS = re.compile(r"tickerd ops ready: (http://\S+)")
_PID = re.compile(r"tickerd worker (\d+): pid (\d+)")


def ops_url(n: Node) -> str:
    wait_for(lambda: _OPS.search(n.text()) is not None, 30, "the ops process is ready")
    found = _OPS.search(n.text())
    assert found is not None
    return found.group(1)


def fetch(url: str, timeout: float = 20) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as reply:
        body: bytes = reply.read()
        return body


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(metrics: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str,
          labels: dict[str, str] | None = None) -> float:  # fmt: skip
    return metrics.get((name, tuple(sorted((labels or {}).items()))), 0.0)


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return samples(fetch(url + "/metrics").decode())


def status(url: str) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(fetch(url + "/status?top=50"))
    return doc


def ws_requests(stack: ExitStack, source: str, port: int, count: int) -> None:
    sock = socket.create_connection(("127.0.0.1", port), 5, (source, 0))
    ws = stack.enter_context(
        connect(f"ws://127.0.0.1:{port}/ws-fapi/v1", sock=sock, open_timeout=5)
    )
    for i in range(count):
        ws.send(json.dumps({"id": str(i), "method": "ticker.price",
                            "params": {"symbol": "ETHUSDT"}}))  # fmt: skip
        assert json.loads(ws.recv(timeout=10))["status"] == 200


def test_group_metrics_and_status_add_up_every_workers_traffic() -> None:
    (a0, a1), (b0, b1) = sources_for(2, per_worker=2)
    sources = [a0, a1, b0, b1]
    with node(["--tick-rate", "5", "--ops-port", "0"]) as n:
        n.wait_healthy(sources)
        url = ops_url(n)
        before = scrape(url)
        for k, source in enumerate(sources):  # 1 + 2 + 3 + 4 REST requests
            for _ in range(k + 1):
                assert n.get(PRICE, source)[0] == 200
        with ExitStack() as stack:
            for source in (a0, b0):  # 3 WebSocket requests each, connections kept open
                ws_requests(stack, source, n.ws_port, 3)
            after = scrape(url)
            doc = status(url)
        # Exact sums over both workers, sample by sample.
        assert value(after, *REST_200) - value(before, *REST_200) == 10
        assert value(after, *WS_200) - value(before, *WS_200) == 6
        weight = "tickerd_request_weight_total"
        handshakes = 2 * WS_HANDSHAKE_WEIGHT
        assert value(after, weight) - value(before, weight) == 10 + 6 + handshakes
        assert value(after, "tickerd_ws_connections_open") == 2
        assert value(after, "tickerd_ws_connections_opened_total") >= 2
        for w in ("0", "1"):
            assert value(after, "tickerd_worker_up", {"worker": w}) == 1
        latency = "tickerd_ws_reply_latency_seconds_count"
        assert value(after, latency) >= value(before, latency)
        # No client IP in any label; the worker label only on tickerd_worker_up.
        for name, labels in after:
            assert not any("127.0.0." in v for _, v in labels), (name, labels)
            assert "worker" not in dict(labels) or name == "tickerd_worker_up", name
        # /status: both workers' clients, each IP on the worker it is pinned to.
        used = {c["ip"]: c for c in doc["clients"]}
        for k, source in enumerate(sources):
            extra = 3 + WS_HANDSHAKE_WEIGHT if source in (a0, b0) else 0
            assert used[source]["used"] == k + 1 + extra, source
            assert used[source]["worker"] == pin_index(source, 2)
        assert {used[s]["worker"] for s in sources} == {0, 1}
        assert [w["state"] for w in doc["workers"]] == ["up", "up"]
        assert doc["connections"]["open"] == 2
        assert {(c["ip"], c["worker"]) for c in doc["connections"]["by_ip"]} == {
            (a0, pin_index(a0, 2)),
            (b0, pin_index(b0, 2)),
        }
        (feed,) = doc["feeds"]
        assert feed["name"] == "synthetic" and feed["state"] == "up"
        assert [w["worker"] for w in feed["workers"]] == [0, 1]
        assert feed["ticks"] >= value(after, "tickerd_feed_ticks_total", {"feed": "synthetic"}) > 0


def test_a_worker_that_does_not_answer_is_shown_down() -> None:
    (a,), (b,) = sources_for(2)
    with node(["--tick-rate", "5", "--ops-port", "0"]) as n:
        n.wait_healthy([a, b])
        url = ops_url(n)
        assert n.get(PRICE, a)[0] == 200 and n.get(PRICE, b)[0] == 200
        assert value(scrape(url), *REST_200) == 2
        pids = {int(i): int(p) for i, p in _PID.findall(n.text())}
        stopped = pin_index(b, 2)
        os.kill(pids[stopped], signal.SIGSTOP)  # accepts (the kernel does), never answers
        try:
            doc = status(url)
            metrics = scrape(url)
            assert n.get(PRICE, a)[0] == 200
            later = scrape(url)
        finally:
            os.kill(pids[stopped], signal.SIGCONT)
        workers = {w["worker"]: w for w in doc["workers"]}
        assert workers[stopped]["state"] == "down"
        assert workers[stopped]["error"] == f"no answer within {group.FETCH_TIMEOUT_S:g} s"
        assert workers[1 - stopped]["state"] == "up"
        assert doc["workers_up"] == 1 and doc["workers_total"] == 2
        assert [c["ip"] for c in doc["clients"]] == [a]
        assert value(metrics, "tickerd_worker_up", {"worker": str(stopped)}) == 0
        assert value(metrics, "tickerd_worker_up", {"worker": str(1 - stopped)}) == 1
        # The silent worker's counters stay in the sums at what it last answered (a drop
        # would be a counter reset to Prometheus); the answering worker's move on.
        assert value(metrics, *REST_200) == 2
        assert value(later, *REST_200) == 3
        assert n.get(PRICE, b)[0] == 200
        wait_for(lambda: value(scrape(url), *REST_200) == 4, 30, "both workers counted again")


def test_a_restarted_workers_old_totals_stay_in_the_group_counters() -> None:
    (a,), (b,) = sources_for(2)
    with node(["--tick-rate", "5", "--ops-port", "0"]) as n:
        n.wait_healthy([a, b])
        url = ops_url(n)
        killed = pin_index(b, 2)
        source = (a, b)[killed == pin_index(b, 2)]
        for _ in range(3):
            assert n.get(PRICE, source)[0] == 200
        assert value(scrape(url), *REST_200) == 3
        pids = {int(i): int(p) for i, p in _PID.findall(n.text())}
        os.kill(pids[killed], signal.SIGKILL)
        wait_for(lambda: len(_PID.findall(n.text())) == 3, 30, "the worker restarted")
        n.wait_healthy([a, b])
        assert value(scrape(url), *REST_200) == 3  # the new process starts from zero
        assert n.get(PRICE, source)[0] == 200
        assert value(scrape(url), *REST_200) == 4


def test_the_dashboard_channel_reads_the_merged_view() -> None:
    (a,), (b,) = sources_for(2)
    with node(["--tick-rate", "5", "--ops-port", "0"]) as n:
        n.wait_healthy([a, b])
        url = ops_url(n)
        assert n.get(PRICE, a)[0] == 200 and n.get(PRICE, b)[0] == 200
        assert b"<html" in fetch(url + "/dashboard").lower()
        with connect(url.replace("http://", "ws://") + "/dashboard/live", open_timeout=10) as ws:
            snap = json.loads(ws.recv(timeout=20))
        assert [w["state"] for w in snap["workers"]] == ["up", "up"]
        assert {c["ip"] for c in snap["clients"]} == {a, b}
        assert snap["requests_total"] >= 2
        symbols = [p["symbol"] for p in snap["prices"]]
        assert "BTCUSDT" in symbols and symbols == sorted(symbols)
        assert n.stop() == 0  # SIGTERM: the workers and the ops process stop cleanly


def test_the_ops_process_is_restarted_on_the_same_port() -> None:
    (a,), (b,) = sources_for(2)
    with node(["--tick-rate", "5", "--ops-port", "0"]) as n:
        n.wait_healthy([a, b])
        url = ops_url(n)
        found = re.search(r"tickerd ops process: pid (\d+)", n.text())
        assert found is not None
        os.kill(int(found.group(1)), signal.SIGKILL)
        wait_for(lambda: "tickerd ops process died (signal SIGKILL)" in n.text(), 10, "logged")
        # The supervisor kept the socket: the new ops process answers on the same port.
        assert n.get(PRICE, a)[0] == 200
        wait_for(lambda: n.text().count("tickerd ops ready: " + url) == 2, 30, "restarted")
        assert value(scrape(url), *REST_200) == 1


def test_the_ops_port_taken_stops_the_supervisor_with_one_line() -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        done = subprocess.run(
            [sys.executable, "-m", "tickerd", "serve", "--workers", "2", "--port", "0",
             "--rest-port", "-1", "--ops-port", str(port)],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
    assert done.returncode == 1
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith(f"tickerd: cannot listen on the ops port 127.0.0.1:{port}: ")
    assert last.endswith("(--ops-port -1 turns the ops surface off)")


def _control(n: Node, op: str, args: dict[str, Any]) -> None:
    found = re.search(r"tickerd control ready: http://127\.0\.0\.1:(\d+)", n.text())
    assert found, n.text()
    conn = http.client.HTTPConnection("127.0.0.1", int(found.group(1)), timeout=5)
    try:
        headers = {"Authorization": "Bearer ops-token", "Content-Type": "application/json"}
        conn.request("POST", "/control/" + op.replace(".", "/"), json.dumps(args), headers)
        assert conn.getresponse().status == 200
    finally:
        conn.close()


@needs_redis
def test_with_redis_the_group_counts_the_shared_limiter_and_each_ban_once() -> None:
    (a,), (b,) = sources_for(2)
    with redis_server() as r:
        args = ["--redis", r.url, "--trusted-proxy", "127.0.0.0/8", "--weight-limit", "20",
                "--tick-rate", "5", "--control-port", "0", "--control-token", "ops-token",
                "--ops-port", "0"]  # fmt: skip
        with node(args) as n:
            n.wait_healthy([a, b])
            url = ops_url(n)
            before = scrape(url)
            client = {"X-Forwarded-For": "198.51.100.7"}  # one client over both workers
            statuses = [n.get(PRICE, (a, b)[i % 2], client)[0] for i in range(30)]
            assert statuses[:20] == [200] * 20 and 200 not in statuses[20:]
            after = scrape(url)
            ok = value(after, *REST_200) - value(before, *REST_200)
            assert ok == 20
            limited = {st: statuses.count(int(st)) for st in ("429", "418")}
            for st, count in limited.items():
                labels = {"surface": "rest", "status": st}
                assert value(after, "tickerd_rate_limited_answers_total", labels) == count
            weight = "tickerd_request_weight_total"  # refused requests count, banned ones not
            assert value(after, weight) - value(before, weight) == 20 + limited["429"]
            banned_before = value(after, "tickerd_bans_active")
            _control(n, "limit.ban", {"ip": "198.51.100.9", "ms": 120_000})
            other = {"X-Forwarded-For": "198.51.100.9"}
            wait_for(lambda: all(n.get(PRICE, s, other)[0] == 418 for s in (a, b)), 10, "ban")
            # Both workers know of the ban: the group counts it once.
            assert value(scrape(url), "tickerd_bans_active") == banned_before + 1
            doc = status(url)
            assert [x["ip"] for x in doc["bans"]].count("198.51.100.9") == 1
            assert doc["bans_total"] == len(doc["bans"]) == banned_before + 1


# -- the merge on its own ------------------------------------------------------------------

_TEXT = """# HELP tickerd_requests_total requests
# TYPE tickerd_requests_total counter
tickerd_requests_total{{surface="ws",method="ticker.price",status="200"}} {req}
# HELP tickerd_ws_connections_open open
# TYPE tickerd_ws_connections_open gauge
tickerd_ws_connections_open {conns}
# HELP tickerd_bans_active bans
# TYPE tickerd_bans_active gauge
tickerd_bans_active {bans}
# HELP process_start_time_seconds start
# TYPE process_start_time_seconds gauge
process_start_time_seconds {start}
# HELP tickerd_feed_newest_tick_age_seconds age
# TYPE tickerd_feed_newest_tick_age_seconds gauge
tickerd_feed_newest_tick_age_seconds{{feed="synthetic"}} {age}
# HELP tickerd_ws_reply_latency_seconds latency
# TYPE tickerd_ws_reply_latency_seconds histogram
tickerd_ws_reply_latency_seconds_bucket{{le="0.001"}} {b1}
tickerd_ws_reply_latency_seconds_bucket{{le="+Inf"}} {b2}
tickerd_ws_reply_latency_seconds_count {b2}
tickerd_ws_reply_latency_seconds_sum {s}
"""


def _view(index: int, **figures: float) -> WorkerView:
    doc = {"metrics": _TEXT.format(**figures), "status": {}, "prices": [], "requests": 0}
    return WorkerView(index, doc)


def _render(views: list[WorkerView], shared: bool = False) -> dict[Any, float]:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(group._Merged(merge_metrics(views, shared=shared)))
    return samples(generate_latest(registry).decode())


def test_metrics_add_up_sample_by_sample_and_combine_the_rest() -> None:
    views = [
        _view(0, req=7, conns=2, bans=1, start=100, age=0.5, b1=3, b2=4, s=0.25),
        _view(1, req=5, conns=1, bans=1, start=90, age=2.0, b1=1, b2=6, s=0.5),
        WorkerView(2, None, "no answer within 2 s"),
    ]
    got = _render(views)
    assert value(got, *WS_200) == 12
    assert value(got, "tickerd_ws_connections_open") == 3
    assert value(got, "tickerd_bans_active") == 2  # pinned IPs: disjoint bans
    assert value(got, "process_start_time_seconds") == 90
    assert value(got, "tickerd_feed_newest_tick_age_seconds", {"feed": "synthetic"}) == 0.5
    bucket = "tickerd_ws_reply_latency_seconds_bucket"
    assert value(got, bucket, {"le": "0.001"}) == 4 and value(got, bucket, {"le": "+Inf"}) == 10
    assert value(got, "tickerd_ws_reply_latency_seconds_count") == 10
    assert value(got, "tickerd_ws_reply_latency_seconds_sum") == 0.75
    assert [value(got, "tickerd_worker_up", {"worker": w}) for w in "012"] == [1, 1, 0]
    # With --redis every worker knows every (announced) ban.
    assert value(_render(views, shared=True), "tickerd_bans_active") == 1


def test_the_counter_carry_keeps_group_totals_from_going_down() -> None:
    carry = CounterCarry()
    fig = {"conns": 1, "bans": 0, "age": 0.5, "b1": 1, "b2": 2, "s": 0.25}

    def scrape_of(*views: WorkerView) -> dict[Any, float]:
        registry = CollectorRegistry(auto_describe=False)
        registry.register(group._Merged(merge_metrics(list(views), carry=carry)))
        return samples(generate_latest(registry).decode())

    got = scrape_of(_view(0, req=4, start=100, **fig), _view(1, req=5, start=90, **fig))
    assert value(got, *WS_200) == 9 and value(got, "tickerd_ws_connections_open") == 2
    # Worker 1 silent: its totals stay, its gauges leave.
    got = scrape_of(_view(0, req=6, start=100, **fig), WorkerView(1, None, "no answer"))
    assert value(got, *WS_200) == 11 and value(got, "tickerd_ws_connections_open") == 1
    assert value(got, "tickerd_ws_reply_latency_seconds_count") == 4
    # Worker 1 restarted (a new start time) and counting from zero: 5 carried.
    got = scrape_of(_view(0, req=6, start=100, **fig), _view(1, req=1, start=95, **fig))
    assert value(got, *WS_200) == 12
    assert value(got, "tickerd_ws_reply_latency_seconds_bucket", {"le": "+Inf"}) == 6
    assert value(got, "tickerd_ws_reply_latency_seconds_sum") == 0.75
    got = scrape_of(_view(0, req=6, start=100, **fig), _view(1, req=3, start=95, **fig))
    assert value(got, *WS_200) == 14
    # Without a carry the merge is of the answers only.
    assert value(_render([_view(1, req=3, start=95, **fig)]), *WS_200) == 3


def _status_doc(now: int, clients: list[tuple[str, int]], bans: list[tuple[str, int]]) -> dict:
    return {
        "now_ms": now, "symbols": 3, "weight_limit": 2400,
        "clients": [{"ip": ip, "used": u, "limit": 2400} for ip, u in clients],
        "clients_total": len(clients),
        "bans": [{"ip": ip, "until_ms": t} for ip, t in bans], "bans_total": len(bans),
        "feeds": [], "faults": [{"kind": "drop"}] * 600, "faults_total": 600,
        "connections": {"open": 1, "max": 10, "opened_total": 4, "ips_total": 1,
                        "by_ip": [{"ip": clients[0][0], "open": 1}]},
    }  # fmt: skip


def test_merged_status_lists_are_bounded_and_exact() -> None:
    many = [(f"10.0.{i // 250}.{i % 250}", i + 1) for i in range(1200)]
    w0 = _status_doc(1_000, many[::2], [(ip, 5_000 + i) for i, (ip, _) in enumerate(many[:900])])
    w1 = _status_doc(2_000, many[1::2], [(ip, 9_000) for ip, _ in many[800:1100]])
    views = [WorkerView(0, {"status": w0}), WorkerView(1, {"status": w1}),
             WorkerView(2, None, "ConnectionRefusedError: gone")]  # fmt: skip
    doc = merge_status(views, 20, uptime_s=1.0, now_ms=0)
    assert [c["used"] for c in doc["clients"]] == list(range(1200, 1180, -1))
    assert {c["worker"] for c in doc["clients"]} == {0, 1}
    assert doc["clients_total"] == 1200
    assert len(doc["bans"]) == MAX_LISTED
    assert doc["bans_total"] == 1100  # IPs 800..899 banned on both count once
    assert len(doc["faults"]) == MAX_LISTED and doc["faults_total"] == 1200
    assert doc["now_ms"] == 2_000
    assert doc["connections"]["open"] == 2 and doc["connections"]["max"] == 20
    assert doc["workers"][2] == {"worker": 2, "state": "down",
                                 "error": "ConnectionRefusedError: gone"}  # fmt: skip
    top = merge_status(views, MAX_LISTED + 5, uptime_s=1.0, now_ms=0)
    assert len(top["clients"]) == MAX_LISTED


def test_merged_prices_take_each_symbols_newest() -> None:
    views = [
        WorkerView(0, {"prices": [["BTCUSDT", "1.0", 5], ["ETHUSDT", "2.00", 9]]}),
        WorkerView(1, {"prices": [["BTCUSDT", "1.5", 7], ["ADAUSDT", "0.3000", 1]]}),
    ]
    assert merge_prices(views) == [
        ("ADAUSDT", "0.3000", 1), ("BTCUSDT", "1.5", 7), ("ETHUSDT", "2.00", 9)
    ]  # fmt: skip


def _unix_server(path: str, reply: bytes | None) -> Any:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        if reply is None:
            await asyncio.sleep(30)  # never answers
        else:
            writer.write(reply)
            await writer.drain()
        writer.close()

    return asyncio.start_unix_server(handle, path)


@pytest.mark.parametrize(
    ("reply", "error"),
    [
        (None, "no answer within 0.3 s"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 5000\r\n\r\n" + b"x" * 5000,
         "answered more than 1024 bytes"),
        (b"HTTP/1.1 500 Oops\r\nContent-Length: 0\r\n\r\n", "answered 500"),
    ],
)  # fmt: skip
def test_a_worker_fetch_is_bounded_in_time_and_size(
    reply: bytes | None, error: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(group, "MAX_WORKER_BYTES", 1024)

    async def scenario() -> WorkerView:
        with tempfile.TemporaryDirectory() as tmp:
            path = str(Path(tmp) / "worker-0.sock")
            server = await _unix_server(path, reply)
            with socket.socket() as unused:
                surface = group.GroupSurface(unused, "127.0.0.1", [path], timeout=0.3)
                start = time.monotonic()
                view = await surface.fetch(0, 1)
                assert time.monotonic() - start < 15
            server.close()
            return view

    view = asyncio.run(scenario())
    assert view.doc is None and view.error == error
    with socket.socket() as unused:
        gone = group.GroupSurface(unused, "127.0.0.1", ["/nonexistent/w.sock"])
        missing = asyncio.run(gone.fetch(0, 1))
    assert missing.doc is None and missing.error is not None
